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

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ipp_seg.inference.pipeline as pipeline  # noqa: E402
from psfhs_frames import aop_change_benchmark  # noqa: E402

LINES = {"white, 1 px": (1, 255), "white, 2 px": (2, 255), "white, 4 px": (4, 255), "grey, 1 px": (1, 128)}


def framed(pixels: np.ndarray, width: int, level: int) -> np.ndarray:
    """``pixels`` with its ``width`` outermost rows and columns at each side set to ``level``."""
    out = pixels.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = level, level, level, level
    return out


def main() -> None:
    shown = lambda crop, most=None: crop  # noqa: E731 - the line shown, as before
    variants = {line: (lambda pixels, width=width, level=level: framed(pixels, width, level))
                for line, (width, level) in LINES.items()}
    aop_change_benchmark(__doc__, variants, pipeline, "cover_border_lines", shown, ("covered", "shown"), "line")


if __name__ == "__main__":
    main()
