"""A frame without the pubic symphysis: is it still read as a transperineal view?

``anatomy_unrecognised`` fails a frame where the network draws neither structure it is sure of:
each drawn below its confidence floor or not drawn at all. A report's screen capture gives an
unsure head and no PS; a transperineal frame with the PS out of view must not be taken for one.
The validation frames (230), each in two forms: cropped just below the expert's PS (the PS above
the field of view), and with the PS's box blacked out (a shadow). For each form: how many frames
have no PS drawn, the lowest head confidence among them, and how many are failed
``anatomy_unrecognised``, and of those how many had no PS drawn (the new rule's case).

    python benchmarks/ps_out_of_view.py [--model dssau-net-s-heldout]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from psfhs_frames import validation_frame_arguments  # noqa: E402


def without_ps(image: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """The frame cropped 6 px below the expert's PS, and with the PS's box (4 px around) black."""
    ys, xs = np.nonzero(truth == 1)
    shadow = image.copy()
    shadow[max(0, ys.min() - 4):ys.max() + 5, max(0, xs.min() - 4):xs.max() + 5] = 0
    return {"cropped below the PS": image[ys.max() + 6:], "PS blacked out": shadow}


def main() -> None:
    args, ids = validation_frame_arguments(__doc__)
    predictor = Predictor(args.model)
    counts: dict[str, list] = {}
    for case in ids:
        image = read_frame(args.data / "image_mha" / f"{case}.mha").pixels.astype(np.uint8)
        truth = read_frame(args.data / "label_mha" / f"{case}.mha").pixels
        for form, pixels in without_ps(image, truth).items():
            result = predictor.predict_pixels(pixels)
            counts.setdefault(form, []).append((result.ps_confidence, result.head_confidence,
                                                "anatomy_unrecognised" in result.measurement.reasons))
    print(f"{len(ids)} validation frames, model {args.model}")
    for form, seen in counts.items():
        no_ps = [head for ps, head, _ in seen if ps is None]
        failed = [ps for ps, _, unrecognised in seen if unrecognised]
        lowest = f"{min(h for h in no_ps if h is not None):.3f}" if any(h is not None for h in no_ps) else "none"
        print(f"{form}: no PS drawn in {len(no_ps)}, their lowest head confidence {lowest}; "
              f"anatomy_unrecognised {len(failed)}, {sum(ps is None for ps in failed)} of them without a PS drawn")


if __name__ == "__main__":
    main()
