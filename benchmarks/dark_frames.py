"""How an under-gained (dark) frame reads, and which brightness of the frame tells it.

Every 6th PSFHS frame (177), as recorded and with its grey values multiplied by a gain below 1
and rounded to the 8-bit levels a machine would store, as a machine whose gain is turned down
shows it. For each: the 99th percentile of the frame's grey (the brightest echoes: bone and the
skull, which a dark display map leaves bright but a low gain does not), the number of distinct
grey levels, the default model's AoP against its AoP on the frame as recorded, and the
reasons its measurement gives that the frame as recorded did not.

    python benchmarks/dark_frames.py [--every 6] [--model dssau-net-s]

Prints, per gain, the brightness's percentiles, the median / p90 |change of AoP|, how many
measurements failed, and the reasons the darkening added (``frame_dark`` below DARK_FRAME_LEVEL).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from psfhs_frames import sampled_frame_arguments  # noqa: E402

GAINS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03)


def main() -> None:
    args, ids = sampled_frame_arguments(__doc__)
    predictor = Predictor(args.model)
    brightest = {g: [] for g in GAINS}
    levels = {g: [] for g in GAINS}
    changes = {g: [] for g in GAINS}
    failed = {g: 0 for g in GAINS}
    reasons = {g: Counter() for g in GAINS}
    for case in ids:
        pixels = read_frame(args.data / "image_mha" / f"{case}.mha").pixels.astype(np.float32)
        base = None
        for gain in GAINS:
            frame = np.clip(np.round(pixels * gain), 0, 255).astype(np.uint8)
            brightest[gain].append(float(np.percentile(frame, 99)))
            levels[gain].append(len(np.unique(frame)))
            m = predictor.predict_pixels(frame).measurement
            if gain == 1.0:
                base, recorded = m.aop_deg, set(m.reasons)
            reasons[gain].update(set(m.reasons) - recorded)  # what the frame as recorded did not carry
            if m.aop_deg is None:
                failed[gain] += 1
            elif gain != 1.0 and base is not None:
                changes[gain].append(abs(m.aop_deg - base))
    print(f"{len(ids)} PSFHS frames, model {args.model}")
    print("| gain | grey p99: min / median / max | grey levels: min / median | median / p90 abs AoP change (deg) "
          "| failed | reasons the frame as recorded lacks (frames) |")
    print("|---|---|---|---|---|---|")
    for gain in GAINS:
        b = np.array(brightest[gain])
        c = np.array(changes[gain]) if changes[gain] else None
        moved = "-" if c is None else f"{np.median(c):.2f} / {np.percentile(c, 90):.2f}"
        said = ", ".join(f"{r} {n}" for r, n in reasons[gain].most_common())
        print(f"| {gain:g} | {b.min():.0f} / {np.median(b):.0f} / {b.max():.0f} | {min(levels[gain])} / "
              f"{np.median(levels[gain]):.0f} | {moved} | {failed[gain]} | {said or '-'} |")


if __name__ == "__main__":
    main()
