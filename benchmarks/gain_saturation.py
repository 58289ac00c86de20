"""How an over-gained frame reads, and whether the share of saturated tissue tells it.

Every 6th PSFHS frame (177), as recorded and with its grey values multiplied by a gain and
clipped to 255, as a machine whose gain is turned too high shows it. For each: the share of
the imaged tissue (pixels above the black level 8; the whole frame, which is all a PSFHS
frame shows the network) at 250 or more, and the default model's AoP against its AoP on the frame as recorded.

    python benchmarks/gain_saturation.py [--every 6] [--model dssau-net-s]

Prints, per gain, the saturated share's percentiles, the median / p90 |change of AoP|, and
the share of frames over the limit ipp-seg warns at (FRAME_SATURATED_SHARE).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.inference.pipeline import FRAME_SATURATED_SHARE, saturated_share  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from psfhs_frames import sampled_frame_arguments  # noqa: E402

def main() -> None:
    args, ids = sampled_frame_arguments(__doc__)
    predictor = Predictor(args.model)
    data = args.data
    gains = (1.0, 1.5, 2.0, 2.5, 3.0)
    shares = {g: [] for g in gains}
    changes = {g: [] for g in gains}
    for case in ids:
        pixels = read_frame(data / "image_mha" / f"{case}.mha").pixels.astype(np.float32)
        base = None
        for gain in gains:
            frame = np.clip(pixels * gain, 0, 255).astype(np.uint8)
            shares[gain].append(saturated_share(frame))
            aop = predictor.predict_pixels(frame).measurement.aop_deg
            if gain == 1.0:
                base = aop
            elif aop is not None and base is not None:
                changes[gain].append(abs(aop - base))
    print(f"{len(ids)} PSFHS frames, model {args.model}; limit {FRAME_SATURATED_SHARE:.0%}")
    print("| gain | saturated share p1 / median / max | over the limit | median / p90 abs AoP change (deg) |")
    print("|---|---|---|---|")
    for gain in gains:
        s = np.array(shares[gain])
        c = np.array(changes[gain]) if changes[gain] else None
        moved = "-" if c is None else f"{np.median(c):.1f} / {np.percentile(c, 90):.1f}"
        print(f"| {gain:g} | {np.percentile(s, 1):.2%} / {np.median(s):.2%} / {s.max():.2%} | "
              f"{(s > FRAME_SATURATED_SHARE).mean():.0%} | {moved} |")


if __name__ == "__main__":
    main()
