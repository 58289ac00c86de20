"""How a line drawn around the frame moves the AoP, with and without covering it.

The 230 frames of the validation blocks (04602-04801, 04372-04401), each framed by a line as
a screen capture draws one: white 1, 2 and 4 pixels wide, and grey (128) 1 pixel wide. For
each: the AoP the model reads on the frame as recorded and on the framed frame, as ipp-seg now
shows it to the network (the line covered by the row or column inward of it,
``ipp_seg.inference.pipeline.cover_border_lines``) and as it did before (the line shown: the
covering replaced by nothing, in this process only).

    python benchmarks/border_lines.py [--model dssau-net-s-heldout] [--data ../shared/data/psfhs]

Prints, per line and way, the median / mean / max |change of AoP| from the frame as recorded,
and the frames whose measurement failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ipp_seg.inference.pipeline as pipeline  # noqa: E402
from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from psfhs_frames import REPO, is_validation  # noqa: E402

LINES = {"white, 1 px": (1, 255), "white, 2 px": (2, 255), "white, 4 px": (4, 255), "grey, 1 px": (1, 128)}


def framed(pixels: np.ndarray, width: int, level: int) -> np.ndarray:
    """``pixels`` with its ``width`` outermost rows and columns at each side set to ``level``."""
    out = pixels.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = level, level, level, level
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dssau-net-s-heldout")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    args = parser.parse_args()
    ids = sorted(p.stem for p in (args.data / "image_mha").glob("*.mha") if is_validation(p.stem))
    predictor = Predictor(args.model)
    covered = pipeline.cover_border_lines
    shown = lambda crop, most=None: crop  # noqa: E731 - the line shown, as before
    changes = {(line, way): [] for line in LINES for way in ("covered", "shown")}
    failed = dict.fromkeys(changes, 0)
    for case in ids:
        pixels = read_frame(args.data / "image_mha" / f"{case}.mha").pixels
        own = predictor.predict_pixels(pixels).measurement.aop_deg
        for line, (width, level) in LINES.items():
            frame = framed(pixels, width, level)
            for way, cover in (("covered", covered), ("shown", shown)):
                pipeline.cover_border_lines = cover
                try:
                    aop = predictor.predict_pixels(frame).measurement.aop_deg
                finally:
                    pipeline.cover_border_lines = covered
                if aop is None:
                    failed[line, way] += 1
                elif own is not None:
                    changes[line, way].append(abs(aop - own))
    print(f"{len(ids)} validation frames, model {args.model}")
    print("| line | way | median / mean / max abs AoP change (deg) | failed |")
    print("|---|---|---|---|")
    for (line, way), values in changes.items():
        v = np.array(values)
        print(f"| {line} | {way} | {np.median(v):.2f} / {v.mean():.2f} / {v.max():.1f} | {failed[line, way]} |")


if __name__ == "__main__":
    main()
