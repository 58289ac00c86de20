"""How far does the AoP move on a frame much smaller than the network's 256-pixel input? The
``frame_small`` check (``MIN_FRAME_SIDE_MEASURED`` in ``ipp_seg/inference/pipeline.py``).

    python benchmarks/small_frames.py [--model dssau-net-s-heldout] [--data ../shared/data/psfhs]

Each validation frame (every second one of the wide block, every one of the narrow block) is
scaled down (OpenCV INTER_AREA) to a square of 40 to 160 pixels, as a thumbnail or a reduced
export is, and measured; printed per size: the frames measured, the median and 90th percentile
of |AoP - the full frame's AoP|, how many carry a reason other than ``frame_small`` that puts the
angle in doubt or fail, and how many are more than 10 degrees off with neither.
"""

from __future__ import annotations

import cv2
import numpy as np

from ipp_seg.inference import Predictor
from ipp_seg.io import read_frame
from ipp_seg.measure.result import angle_in_doubt
from psfhs_frames import validation_frame_arguments

SIDES = (40, 48, 64, 96, 128, 160)


def main() -> None:
    args, ids = validation_frame_arguments(__doc__)
    ids = [case for case in ids if case < "04602" or int(case) % 2 == 0]  # (half of the wide block: 130 in all)
    predictor = Predictor(args.model)
    found: dict[int, list[tuple[float | None, bool]]] = {side: [] for side in SIDES}
    for case in ids:
        pixels = read_frame(args.data / "image_mha" / f"{case}.mha").pixels
        full = predictor.predict_pixels(pixels).measurement.aop_deg
        if full is None:
            continue
        for side in SIDES:
            m = predictor.predict_pixels(cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)).measurement
            change = None if m.aop_deg is None else abs(m.aop_deg - full)
            # (Flagged by any other reason: what frame_small adds where nothing else says it.)
            others = set(m.reasons) - {"frame_small"}
            found[side].append((change, m.status == "failed" or angle_in_doubt(others)))
    print(f"{args.model}, {len(ids)} validation frames")
    for side, results in found.items():
        changes = np.array([change for change, _ in results if change is not None])
        unflagged = np.array([change for change, flagged in results if change is not None and not flagged])
        print(f"{side:4d} px: {len(changes)} measured, |change| median {np.median(changes):.1f}, p90 "
              f"{np.percentile(changes, 90):.1f}; flagged or failed {sum(f for _, f in results)}; unflagged and "
              f"more than 10 deg off {int(np.sum(unflagged > 10))}")


if __name__ == "__main__":
    main()
