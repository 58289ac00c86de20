"""Whether a frame turned by 90 degrees (the probe at a side) can be told from its sector's shape.

For each PSFHS frame, as recorded and turned by 90 degrees either way: the sector's narrowing
(:func:`ipp_seg.io.sector.sector_profile`: its width near the top over its width deep in it)
as the frame is shown, over the smallest narrowing of the frame turned back by 90 degrees
either way among those whose sector then meets the top edge (a probe at the top). A frame shown
as recorded widens with depth, and turned back it does not: the ratio is low; a turned frame,
turned back the right way, widens with depth again: the ratio is high. No network runs.

    python benchmarks/sector_turned.py [--data ../shared/data/psfhs]

Prints the ratio's percentiles per display, and for a few cut-offs how many frames as recorded
exceed it against the share of turned ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.io import read_frame  # noqa: E402
from ipp_seg.io.sector import sector_profile  # noqa: E402

DISPLAYS = {"as recorded": lambda a: a, "turned 90 clockwise": lambda a: np.rot90(a, -1),
            "turned 90 anticlockwise": lambda a: np.rot90(a, 1)}


def turned_ratio(pixels: np.ndarray) -> float | None:
    """The frame's narrowing over the smallest narrowing of it turned back by 90 degrees with its
    sector meeting the top edge; None where no such turn, or the frame itself, gives a sector."""
    own = sector_profile(pixels)
    turned = [sector_profile(np.rot90(pixels, k)) for k in (1, -1)]
    upright = [p.narrowing for p in turned if p is not None and p.meets_top]
    return None if own is None or not upright else own.narrowing / min(upright)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/psfhs")
    args = parser.parse_args()
    paths = sorted((args.data / "image_mha").glob("*.mha"))
    ratios = {name: [] for name in DISPLAYS}
    for path in paths:
        pixels = read_frame(path).pixels
        for name, turn in DISPLAYS.items():
            ratio = turned_ratio(np.ascontiguousarray(turn(pixels)))
            ratios[name].append(np.nan if ratio is None else ratio)
    print(f"{len(paths)} PSFHS frames")
    print("| display | ratio p1 / p5 / median / p95 / p99 / max | not read |")
    print("|---|---|---|")
    for name, values in ratios.items():
        v = np.array(values)
        p = np.nanpercentile(v, [1, 5, 50, 95, 99, 100])
        print(f"| {name} | {' / '.join(f'{x:.2f}' for x in p)} | {int(np.isnan(v).sum())} |")
    print("| cut-off | frames as recorded above it | turned clockwise above it | turned anticlockwise above it |")
    print("|---|---|---|---|")
    for cut in (1.3, 1.4, 1.6, 1.8):
        rec, cw, ccw = (np.nan_to_num(np.array(ratios[name])) > cut for name in DISPLAYS)
        print(f"| {cut:g} | {int(rec.sum())} | {cw.mean():.0%} | {ccw.mean():.0%} |")


if __name__ == "__main__":
    main()
