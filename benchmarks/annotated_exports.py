"""Frames as another site may export them: annotated in colour, in a tinted palette, stretched.

The 230 validation frames (never trained on by the default's twin), each as recorded and as an
export that changes it: the sonographer's calipers drawn on in yellow (a dotted line along the
PS the twin finds and past its inferior end, one from that end to the head's tangent point, and
a cross at each end), the same calipers drawn in white, the frame in a sepia palette (RGB), and
the frame stretched 4:3 (a PNG of non-square pixels, no calibration to say so). For each, how
many frames ipp-seg flags (failed, or an AoP in doubt; ``marks_over_anatomy`` counted apart),
and, over the frames it does not flag, the median |AoP - aop_reference.csv| and how many are
more than 15 deg from the reference, or moved more than 15 deg from the frame as recorded: a
number that looks sound and is not.

    python benchmarks/annotated_exports.py [--model dssau-net-s-heldout] [--data ../shared/data/psfhs]
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from ipp_seg.io.greyscale import colour_marks  # noqa: E402
from psfhs_frames import validation_frame_arguments  # noqa: E402

YELLOW, WHITE = (255, 255, 0), (255, 255, 255)


def _dotted(rgb: np.ndarray, start: np.ndarray, end: np.ndarray, colour: tuple) -> None:
    length = float(np.linalg.norm(end - start))
    for t in np.arange(0.0, length, 6.0):
        x, y = (start + (end - start) * t / max(length, 1e-6)).round().astype(int)
        cv2.circle(rgb, (int(x), int(y)), 1, colour, -1)


def calipers(pixels: np.ndarray, landmarks, colour: tuple) -> np.ndarray:
    """``pixels`` as RGB with a sonographer's AoP drawn on at ``landmarks`` (the twin's own)."""
    rgb = np.repeat(pixels[..., None], 3, axis=-1).astype(np.uint8)
    inferior, superior = np.array(landmarks.ps_inferior_end), np.array(landmarks.ps_superior_end)
    tangent = np.array(landmarks.fh_tangent_point)
    along = (inferior - superior) / max(float(np.linalg.norm(inferior - superior)), 1e-6)
    _dotted(rgb, superior - 10 * along, inferior + 25 * along, colour)
    _dotted(rgb, inferior, tangent, colour)
    for x, y in (superior, inferior, tangent):
        cv2.drawMarker(rgb, (int(round(x)), int(round(y))), colour, cv2.MARKER_CROSS, 9, 1)
    return rgb


def sepia(pixels: np.ndarray) -> np.ndarray:
    grey = pixels.astype(np.float32)[..., None]
    return np.clip(grey * np.array([1.05, 0.86, 0.70], np.float32), 0, 255).astype(np.uint8)


def stretched(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape
    return cv2.resize(pixels, (round(w * 4 / 3), h), interpolation=cv2.INTER_LINEAR)


def main() -> None:
    args, ids = validation_frame_arguments(__doc__)
    predictor = Predictor(args.model)
    with open(args.data / "aop_reference.csv", newline="") as fh:
        reference = {row["case"]: float(row["aop_deg"]) for row in csv.DictReader(fh)}
    exports = {"as recorded": None, "yellow calipers": YELLOW, "white calipers": WHITE, "sepia palette": sepia,
               "stretched 4:3": stretched}
    rows = {name: [] for name in exports}
    seconds = []
    for case in ids:
        pixels = read_frame(args.data / "image_mha" / f"{case}.mha").pixels
        recorded = predictor.predict_pixels(pixels).measurement
        for name, how in exports.items():
            if how is None:
                measured = recorded
            else:
                if isinstance(how, tuple):
                    if recorded.status == "failed":
                        continue  # (no landmarks to draw at)
                    changed = calipers(pixels, recorded.landmarks, how)
                else:
                    changed = how(pixels)
                if changed.ndim == 3:
                    started = time.perf_counter()
                    colour_marks(changed)
                    seconds.append(time.perf_counter() - started)
                measured = predictor.predict_pixels(changed).measurement
            rows[name].append((case, measured, recorded))
    print(f"{len(ids)} validation frames, model {args.model}")
    print("| export | frames | flagged (failed or AoP in doubt) | of them marks_over_anatomy | "
          "median abs dAoP vs reference, unflagged (deg) | unflagged > 15 deg from the reference | "
          "unflagged moved > 15 deg from the frame as recorded |")
    print("|---|---|---|---|---|---|---|")
    for name, measured in rows.items():
        flagged = [m for _, m, _ in measured if m.status == "failed" or m.aop_doubtful]
        marked = [m for m in flagged if "marks_over_anatomy" in m.reasons]
        clean = [(c, m, r) for c, m, r in measured if not (m.status == "failed" or m.aop_doubtful)]
        off = [abs(m.aop_deg - reference[c]) for c, m, _ in clean if c in reference]
        moved = [c for c, m, r in clean if r.aop_deg is not None and abs(m.aop_deg - r.aop_deg) > 15]
        median = f"{np.median(off):.1f}" if off else "-"
        print(f"| {name} | {len(measured)} | {len(flagged)} | {len(marked)} | {median} | "
              f"{sum(d > 15 for d in off)} | {len(moved)}{' (' + ', '.join(moved[:4]) + ')' if moved else ''} |")
    print(f"colour_marks of a {pixels.shape[1]} x {pixels.shape[0]} RGB frame: median "
          f"{np.median(seconds) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
