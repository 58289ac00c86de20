"""Does a frame look as if it were displayed the other way round? The ``orientation_doubtful``
check, on expert outlines and on the networks' masks of frames shown as recorded and mirrored.

    python benchmarks/orientation_check.py [MODEL ...] [--data ../shared/data/psfhs]

Prints percentiles of :func:`ipp_seg.measure.progress.orientation_score` on the expert masks of
the training frames (every PSFHS frame outside the validation blocks), which set
``MIN_ORIENTATION_SCORE``; the share of expert masks below it as recorded (false alarms) and
mirrored left-right (caught); then, for each MODEL (default: the two held-out twins), the same
on the network's masks of the validation frames as recorded, mirrored, upside down and turned
by 180 degrees, with the median |AoP error| (ellipse method, against the expert mask) of the
frames it flags as recorded against the rest.
"""

from __future__ import annotations

import numpy as np

from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.registry import resolve_model
from ipp_seg.io import read_frame
from ipp_seg.measure import measure_progress
from ipp_seg.measure.progress import MIN_ORIENTATION_SCORE, mask_orientation_score
from psfhs_frames import case_pairs, is_validation, model_arguments

MODELS = ("dssau-net-s-heldout", "star-dssau-net-s-heldout")
VIEWS = {
    "as recorded": lambda p: p,
    "mirrored": lambda p: p[:, ::-1],
    "upside down": lambda p: p[::-1],
    "turned 180 deg": lambda p: p[::-1, ::-1],
}


def scores(masks: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """Orientation score (NaN where no PS ends were found) and measurement of each mask."""
    measured = [measure_progress(np.ascontiguousarray(m)) for m in masks]
    values = [mask_orientation_score(np.ascontiguousarray(m), r) for m, r in zip(masks, measured)]
    return np.array([np.nan if v is None else v for v in values]), measured


def flagged(values: np.ndarray) -> str:
    n = int(np.sum(values < MIN_ORIENTATION_SCORE))
    without = int(np.isnan(values).sum())
    return f"{n} of {len(values)} ({100 * n / len(values):.1f} %) flagged, {without} without PS ends"


def main() -> None:
    args = model_arguments(__doc__, MODELS)
    from head_confidence import confidences, plain  # the same model calls, one definition

    pairs = case_pairs(args.data)
    truth = {c: read_frame(pairs[c][1]).pixels.astype(np.uint8) for c in sorted(pairs)}
    train_ids = [c for c in sorted(pairs) if not is_validation(c)]
    val_ids = sorted(filter(is_validation, pairs))
    print(f"cut-off MIN_ORIENTATION_SCORE = {MIN_ORIENTATION_SCORE}")
    train_scores, _ = scores([truth[c] for c in train_ids])
    pct = (0.5, 1, 2, 5, 50)
    print(f"expert masks, {len(train_ids)} training frames: score p{pct} = "
          f"{np.nanpercentile(train_scores, pct).round(3).tolist()}")
    for label, ids in (("training frames", train_ids), ("validation frames", val_ids)):
        for view in ("as recorded", "mirrored"):
            values, _ = scores([VIEWS[view](truth[c]) for c in ids])
            print(f"expert masks, {label} {view}: {flagged(values)}")

    frames = [read_frame(pairs[c][0]).pixels for c in val_ids]
    truth_aop = [measure_progress(truth[c]).aop_deg for c in val_ids]
    for name in args.models:
        segmenter = OnnxSegmenter(resolve_model(name), threads=2)
        print(f"\n{name}, {len(val_ids)} validation frames")
        for view, turn in VIEWS.items():
            masks = [m for _, _, m in confidences(segmenter, [plain(np.ascontiguousarray(turn(p))) for p in frames])]
            values, measured = scores(masks)
            failed = sum(r.status == "failed" for r in measured)
            line = f"  {view}: {flagged(values)}, {failed} failed measurements"
            if view == "as recorded":
                errors = np.array([abs(r.aop_deg - t) if r.aop_deg is not None and t is not None else np.nan
                                   for r, t in zip(measured, truth_aop)])
                low = values < MIN_ORIENTATION_SCORE
                if low.any():
                    line += (f"; median |dAoP| of the flagged {np.nanmedian(errors[low]):.1f} deg vs the rest "
                             f"{np.nanmedian(errors[~low]):.1f} deg")
            print(line)


if __name__ == "__main__":
    main()
