"""How far off is the AoP when the frame's edge cuts a structure? The ``ps_cut_off`` /
``fh_cut_off`` limits, and the round-PS limit, on expert masks and on the networks' masks.

    python benchmarks/frame_edge_cuts.py [MODEL ...] [--data ../shared/data/psfhs]

No PSFHS expert structure touches the frame's edge; frames from other machines (zoomed,
cropped, a screen capture's crop) may cut one. Every tenth expert mask is cut from each
side (top, left, right, bottom) by 2-30 % of one structure's extent, where the cut leaves the
other structure whole, and measured again (ellipse method, pixels of side 1). The |AoP change|
is printed by band of :func:`ipp_seg.measure.progress.share_beyond_frame` (the share of the
ellipse fitted to the structure's outline inside the frame that lies beyond it), per structure.
Then, for each MODEL (default: the held-out twin), how many validation frames the limits fail,
as recorded.
"""

from __future__ import annotations

import numpy as np

from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.registry import resolve_model
from ipp_seg.io import read_frame
from ipp_seg.measure import measure_progress
from ipp_seg.measure.geometry import region_axis_ratio
from ipp_seg.measure.geometry import boundary_points
from ipp_seg.measure.progress import MAX_BEYOND_FRAME, MAX_MEASURABLE_PS_AXIS_RATIO, share_beyond_frame
from psfhs_frames import case_pairs, is_validation, model_arguments

MODELS = ("dssau-net-s-heldout",)
EVERY = 10  # every tenth expert mask: 106 masks, ~5,000 cuts
SIDES = ("top", "left", "right", "bottom")
FRACTIONS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
SHARE_BANDS = ((0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.5, 1.01))


def cut(mask: np.ndarray, label: int, side: str, fraction: float) -> np.ndarray:
    """``mask`` with the frame's ``side`` moved in by ``fraction`` of structure ``label``'s extent."""
    ys, xs = np.nonzero(mask == label)
    if side == "top":
        return mask[int(ys.min() + fraction * np.ptp(ys)):]
    if side == "bottom":
        return mask[:int(ys.max() - fraction * np.ptp(ys)) + 1]
    if side == "left":
        return mask[:, int(xs.min() + fraction * np.ptp(xs)):]
    return mask[:, :int(xs.max() - fraction * np.ptp(xs)) + 1]


def on_edge(mask: np.ndarray, label: int) -> bool:
    return bool(np.any(np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]]) == label))


def main() -> None:
    args = model_arguments(__doc__, MODELS)
    every = EVERY
    from head_confidence import confidences, plain  # the same model calls, one definition

    pairs = case_pairs(args.data)
    ids = sorted(pairs)[::every]
    changes: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for case_id in ids:
        mask = read_frame(pairs[case_id][1]).pixels.astype(np.uint8)
        whole = measure_progress(mask)
        if whole.aop_deg is None:
            continue
        for label in (1, 2):
            for side in SIDES:
                for fraction in FRACTIONS:
                    part = np.ascontiguousarray(cut(mask, label, side, fraction))
                    if on_edge(part, 3 - label) or min((part == 1).sum(), (part == 2).sum()) < 30:
                        continue  # the other structure cut too, or too little left
                    # The share as the measurement takes it (one component here, so the whole label).
                    share = share_beyond_frame(boundary_points(part == label), part.shape)
                    # Measured as if nothing were cut off: the limit under study must not hide the value.
                    moved = _aop_ignoring_cuts(part)
                    if moved is not None:
                        changes[label].append((share, abs(moved - whole.aop_deg)))
    print(f"{len(ids)} expert masks (every {every}th), cut from {', '.join(SIDES)} by "
          f"{', '.join(f'{f:.0%}' for f in FRACTIONS)} of one structure's extent")
    for label, name in ((1, "PS"), (2, "FH")):
        rows = np.array(changes[label])
        print(f"{name} (cut off at a share beyond the frame of {MAX_BEYOND_FRAME}): {len(rows)} cuts")
        for lo, hi in SHARE_BANDS:
            band = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)]
            if len(band):
                print(f"  share {lo:.2f}-{hi:.2f}: n {len(band):4d}, |AoP change| median {np.median(band[:, 1]):.1f}, "
                      f"p90 {np.percentile(band[:, 1], 90):.1f} deg, over 5 deg {np.mean(band[:, 1] > 5):.0%}")

    val_ids = sorted(filter(is_validation, pairs))
    frames = [plain(read_frame(pairs[c][0]).pixels) for c in val_ids]
    truth = [read_frame(pairs[c][1]).pixels.astype(np.uint8) for c in val_ids]
    truth_ratios = [region_axis_ratio(t == 1) for t in truth]
    print(f"\nexpert masks of the {len(val_ids)} validation frames: PS axis ratio max {np.nanmax(truth_ratios):.2f}")
    for name in args.models:
        segmenter = OnnxSegmenter(resolve_model(name), threads=2)
        masks = [np.ascontiguousarray(m) for _, _, m in confidences(segmenter, frames)]
        results = [measure_progress(m) for m in masks]
        ratios = [region_axis_ratio(m == 1) for m in masks]
        counts = {code: sum(code in r.reasons for r in results)
                  for code in ("ps_round", "ps_cut_off", "fh_cut_off", "ps_at_frame_edge", "fh_at_frame_edge")}
        print(f"{name}: PS axis ratio max {np.nanmax(ratios):.2f} (ps_round above {MAX_MEASURABLE_PS_AXIS_RATIO}); "
              + ", ".join(f"{code} {n}" for code, n in counts.items()))


def _aop_ignoring_cuts(mask: np.ndarray) -> float | None:
    """The AoP as measured with the cut-off limits set aside (the limits' own evidence)."""
    from unittest import mock

    with mock.patch("ipp_seg.measure.progress.MAX_BEYOND_FRAME", np.inf):
        return measure_progress(mask).aop_deg


if __name__ == "__main__":
    main()
