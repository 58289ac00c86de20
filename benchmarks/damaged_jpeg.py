"""JPEG files damaged in transfer or storage: which ones ipp-seg refuses, and does it refuse sound ones?

Every PSFHS frame saved as JPEG (grey at quality 20, 50, 75 and 95, and in a colour palette at
75) is read by ipp-seg's own reader: a sound file must never be refused. Then a random sample of
frames (grey and colour, quality 50-90) is damaged in five ways inside its entropy-coded data,
at a random point between 10 % and 90 % of it: cut short and closed with an end-of-image marker,
a comment marker put in, a restart marker put in, 200 bytes zeroed, one byte changed. For each
kind: how many files ipp-seg refuses (and by which check), and how many it reads.

    python benchmarks/damaged_jpeg.py [--data ../shared/data/psfhs] [--sample 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.io import ScanReadError, read_frame  # noqa: E402


def _grey(path: Path) -> np.ndarray:
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return pixels[0] if pixels.ndim == 3 else pixels


def _outcome(data: bytes, scratch: Path) -> str:
    scratch.write_bytes(data)
    try:
        read_frame(scratch)
    except ScanReadError as exc:
        if "ends before the image does" in exc.reason:
            return "refused: ends in grey fill"
        if "does not decode whole" in exc.reason:
            return "refused: does not decode whole"
        return "refused: other"
    return "read"


def _damaged(data: bytes, where: float) -> dict[str, bytes]:
    scan = data.index(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2:scan + 4], "big")
    k = start + int((len(data) - 2 - start) * where)
    return {
        "cut short, EOI": data[:k] + b"\xff\xd9",
        "comment marker put in": data[:k] + b"\xff\xfe\x00\x04ab" + data[k:],
        "restart marker put in": data[:k] + b"\xff\xd3" + data[k:],
        "200 bytes zeroed": data[:k] + bytes(200) + data[k + 200:],
        "one byte changed": data[:k] + bytes([data[k] ^ 0x5A]) + data[k + 1:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/psfhs")
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted((args.data / "image_mha").glob("*.mha"))
    if not files:
        sys.exit(f"no frames under {args.data / 'image_mha'}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "frame.jpg"
        sound: Counter = Counter()
        for path in files:
            grey = _grey(path)
            for quality in (20, 50, 75, 95):
                sound[_outcome(cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes(),
                               scratch)] += 1
            colour = cv2.applyColorMap(grey, cv2.COLORMAP_BONE)
            sound[_outcome(cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes(), scratch)] += 1
        print(f"sound files ({len(files)} frames x 5 encodings): {dict(sound)}")
        rng = random.Random(args.seed)
        damaged: dict[tuple[str, str], Counter] = {}
        for path in rng.sample(files, min(args.sample, len(files))):
            grey = _grey(path)
            for kind, image in (("grey", grey), ("colour", cv2.applyColorMap(grey, cv2.COLORMAP_BONE))):
                data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.choice([50, 75, 90])])[1].tobytes()
                for damage, bad in _damaged(data, rng.uniform(0.1, 0.9)).items():
                    damaged.setdefault((damage, kind), Counter())[_outcome(bad, scratch)] += 1
    print("| damage | frames | refused: ends in grey fill | refused: does not decode whole | read |")
    print("|---|---|---|---|---|")
    for (damage, kind), counts in damaged.items():
        print(f"| {damage} | {kind} | {counts['refused: ends in grey fill']} | "
              f"{counts['refused: does not decode whole']} | {counts['read']} |")


if __name__ == "__main__":
    main()
