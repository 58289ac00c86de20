"""What ipp-seg says of frames displayed in a way the models never saw: the validation frames
as recorded, turned by 180 degrees, flipped top to bottom, mirrored left-right, and turned by 90
degrees either way (the probe at a side).

    python benchmarks/display_faults.py [MODEL ...] [--data ../shared/data/psfhs]

Per model and display: frames failed, frames measured with no warning about the frame (any
reason besides spacing_unknown, hsd_undefined and hsd_unstable, which say nothing of it), frames where the
network is unsure of the symphysis or draws none (ps_low_confidence, ps_missing, ps_too_small:
what the run-level advice of predict and batch counts), and the commonest reasons. Frames go
through ipp-seg's own reading, pre-processing and measurement (the Python API).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from psfhs_frames import case_pairs, is_validation, model_arguments

from ipp_seg.inference import Predictor
from ipp_seg.inference.batch import row_symphysis_unsure
from ipp_seg.io import read_frame

DISPLAYS = {
    "as recorded": lambda a: a,
    "turned 180": lambda a: a[::-1, ::-1],
    "flipped top-bottom": lambda a: a[::-1],
    "mirrored left-right": lambda a: a[:, ::-1],
    # The probe at a side: some sites show transperineal frames so (the symphysis level, the head
    # to its right or left).
    "turned 90 clockwise": lambda a: np.rot90(a, -1),
    "turned 90 anticlockwise": lambda a: np.rot90(a, 1),
}
SAYS_NOTHING_OF_THE_FRAME = {"spacing_unknown", "hsd_undefined", "hsd_unstable"}


def main() -> None:
    args = model_arguments(__doc__, ["dssau-net-s-heldout", "star-dssau-net-s-heldout"])
    images = [img for cid, (img, _) in sorted(case_pairs(args.data).items()) if is_validation(cid)]
    frames = [read_frame(path) for path in images]
    print(f"{len(frames)} validation frames")
    print("| model | display | failed | measured, no warning about the frame | PS unsure or none | commonest reasons |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        predictor = Predictor(model)
        for display, turn in DISPLAYS.items():
            failed = unflagged = unsure = 0
            reasons: collections.Counter = collections.Counter()
            for frame in frames:
                shown = dataclasses.replace(frame, pixels=np.ascontiguousarray(turn(frame.pixels)))
                m = predictor.predict_frame(shown).measurement
                failed += m.status == "failed"
                unflagged += m.status != "failed" and not set(m.reasons) - SAYS_NOTHING_OF_THE_FRAME
                unsure += row_symphysis_unsure({"reasons": ";".join(m.reasons)})
                reasons.update(r for r in m.reasons if r not in SAYS_NOTHING_OF_THE_FRAME)
            common = ", ".join(f"{r} {n}" for r, n in reasons.most_common(4))
            print(f"| `{model}` | {display} | {failed} | {unflagged} | {unsure} | {common} |", flush=True)


if __name__ == "__main__":
    main()
