"""How black bands beside the image move the AoP, with and without trimming them.

The 230 frames of the validation blocks (04602-04801, 04372-04401), each padded with black
columns at both sides (40-100 each, seeded), as a screen capture exports them, and at one side
(40-140), as a crop padded back to its size does; and likewise with rows above and below. For
each: the AoP the model reads on the frame as recorded and on the padded frame, as ipp-seg now
shows it to the network (the
bands trimmed, ``ipp_seg.inference.pipeline.trim_uniform_bands``) and as it did before (the bands
shown: the trimming replaced by the box as given, in this process only).

    python benchmarks/letterbox_bands.py [--model dssau-net-s-heldout] [--data ../shared/data/psfhs]

Prints, per padding and way, the median / mean / max |change of AoP| from the frame as
recorded, and the frames whose measurement failed.

Also (0.2.12) each frame inside a margin on all four sides, as a screen capture centres it: of
one width (30-100) all round, and of four widths (20-120, the canvas kept square), where the
bands shown are what ipp-seg did before 0.2.12 (it cut only the bands of a longer side); and
placed anywhere on a black 16:9 screen (where "shown" is the frame with all its bands, not
what 0.2.11 did: it cut the longer side's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ipp_seg.inference.pipeline as pipeline  # noqa: E402
from psfhs_frames import aop_change_benchmark  # noqa: E402


PADDINGS = {  # where the bands go: (sideways, both ends)
    "left and right": (True, True), "one side": (True, False),
    "top and bottom": (False, True), "top or bottom": (False, False),
}


def padded(pixels: np.ndarray, rng: np.random.Generator, sideways: bool, both: bool) -> np.ndarray:
    """``pixels`` with black bands at both ends (40-100 each) or at one (40-140)."""
    if both:
        first, second = (int(n) for n in rng.integers(40, 101, size=2))
    else:
        width = int(rng.integers(40, 141))
        first, second = (width, 0) if rng.integers(2) else (0, width)
    widths = ((0, 0), (first, second)) if sideways else ((first, second), (0, 0))
    return np.pad(pixels, widths, constant_values=0)


def surrounded(pixels: np.ndarray, rng: np.random.Generator, even: bool) -> np.ndarray:
    """``pixels`` inside a black margin on every side: of one width (30-100) all round, or of
    four (20-120 above, below and left, the right one keeping the canvas square)."""
    if even:
        return np.pad(pixels, int(rng.integers(30, 101)), constant_values=0)
    top, bottom, left = (int(n) for n in rng.integers(20, 121, size=3))
    right = max(20, top + bottom - left + pixels.shape[0] - pixels.shape[1])
    return np.pad(pixels, ((top, bottom), (left, right)), constant_values=0)


def off_centre(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` placed anywhere on a black 16:9 screen 1.4 times its height (a capture of a
    scanner's display with the image off its centre)."""
    height = int(round(pixels.shape[0] * 1.4))
    width = int(round(height * 16 / 9))
    top = int(rng.integers(0, height - pixels.shape[0] + 1))
    left = int(rng.integers(0, width - pixels.shape[1] + 1))
    return np.pad(pixels, ((top, height - pixels.shape[0] - top), (left, width - pixels.shape[1] - left)),
                  constant_values=0)


def main() -> None:
    rng = np.random.default_rng(0)
    shown = lambda pixels, box, spacing_mm=None: box  # noqa: E731 - the bands shown, as before
    variants = {side: (lambda pixels, sideways=sideways, both=both: padded(pixels, rng, sideways, both))
                for side, (sideways, both) in PADDINGS.items()}
    variants["all four sides, one width"] = lambda pixels: surrounded(pixels, rng, True)
    variants["all four sides, four widths"] = lambda pixels: surrounded(pixels, rng, False)
    variants["off-centre on a 16:9 screen"] = lambda pixels: off_centre(pixels, rng)
    aop_change_benchmark(__doc__, variants, pipeline, "trim_uniform_bands", shown, ("trimmed", "shown"), "bands at")


if __name__ == "__main__":
    main()
