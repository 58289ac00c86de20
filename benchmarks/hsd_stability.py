"""How steady is the HSD? The ``hsd_unstable`` check, on expert outlines and on the networks'
masks of the validation frames.

    python benchmarks/hsd_stability.py [MODEL ...] [--data ../shared/data/psfhs]

The HSD is where the infrapubic line (perpendicular to the PS axis at its inferior end) meets
the head's contour. Where it meets it at a grazing angle, a small turn of the axis moves the
HSD far. For every PSFHS expert mask this prints how many give an HSD at all, by band of their
AoP; the percentiles of :func:`ipp_seg.measure.progress.hsd_turn_change` (the axis turned by
``HSD_AXIS_TURN_DEG`` either way) over those that do; and how many the check flags, with their
AoP. Then, for each MODEL (default: the two held-out twins), the same count on the network's
masks of the validation frames, and the |HSD error| in px (prediction vs expert mask) of the
frames flagged against the rest.
"""

from __future__ import annotations

import math

import numpy as np

from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.registry import resolve_model
from ipp_seg.io import read_frame
from ipp_seg.measure import measure_progress
from ipp_seg.measure.progress import HSD_AXIS_TURN_DEG, HSD_MAX_TURN_CHANGE, _extract, hsd_turn_change
from psfhs_frames import case_pairs, is_validation, model_arguments

MODELS = ("dssau-net-s-heldout", "star-dssau-net-s-heldout")
AOP_BANDS = ((0, 90), (90, 92), (92, 95), (95, 100), (100, 110), (110, 130), (130, 360))


def turn_change(mask: np.ndarray, measured) -> float | None:
    """The HSD's change under a turned axis (spacing unknown: pixels of side 1), None without an HSD."""
    marks = measured.landmarks
    if measured.hsd_px is None:
        return None
    head = _extract(mask == 2, "fh", [])  # the head's outline as the measurement takes it
    inferior = np.array(marks.ps_inferior_end)
    line = np.array(marks.hsd_point) - inferior
    return hsd_turn_change(inferior, line / np.linalg.norm(line), head.segments_px, measured.hsd_px)


def describe(masks: list[np.ndarray]) -> tuple[list, list]:
    measured = [measure_progress(np.ascontiguousarray(m)) for m in masks]
    return measured, [turn_change(m, r) if r.aop_deg is not None else None for m, r in zip(masks, measured)]


def main() -> None:
    args = model_arguments(__doc__, MODELS)
    from head_confidence import confidences, plain  # the same model calls, one definition

    pairs = case_pairs(args.data)
    truth = {c: read_frame(pairs[c][1]).pixels.astype(np.uint8) for c in sorted(pairs)}
    print(f"axis turned by {HSD_AXIS_TURN_DEG} deg either way; hsd_unstable above a change of {HSD_MAX_TURN_CHANGE}")
    measured, changes = describe(list(truth.values()))
    print(f"expert masks: {len(truth)}")
    for lo, hi in AOP_BANDS:
        band = [i for i, r in enumerate(measured) if r.aop_deg is not None and lo <= r.aop_deg < hi]
        with_hsd = [i for i in band if changes[i] is not None]
        flagged = [i for i in with_hsd if "hsd_unstable" in measured[i].reasons]
        print(f"  AoP {lo}-{hi} deg: {len(band)} masks, {len(with_hsd)} with an HSD, {len(flagged)} hsd_unstable")
    finite = np.array([c for c in changes if c is not None and math.isfinite(c)])
    pct = (50, 90, 95, 99)
    print(f"  change p{pct}: {np.percentile(finite, pct).round(3).tolist()} of {len(finite)}; "
          f"{sum(c is not None and not math.isfinite(c) for c in changes)} turned off the head")
    flagged = [(c, r.aop_deg) for c, r in zip(truth, measured) if "hsd_unstable" in r.reasons]
    print(f"  flagged: {len(flagged)} of {sum(c is not None for c in changes)} with an HSD; AoP "
          f"{', '.join(f'{a:.1f}' for _, a in sorted(flagged, key=lambda x: x[1]))}")

    val_ids = sorted(filter(is_validation, pairs))
    frames = [plain(read_frame(pairs[c][0]).pixels) for c in val_ids]
    truth_hsd = [measure_progress(truth[c]).hsd_px for c in val_ids]
    for name in args.models:
        segmenter = OnnxSegmenter(resolve_model(name), threads=2)
        masks = [m for _, _, m in confidences(segmenter, frames)]
        results = [measure_progress(np.ascontiguousarray(m)) for m in masks]
        unstable = np.array(["hsd_unstable" in r.reasons for r in results])
        errors = np.array([abs(r.hsd_px - t) if r.hsd_px is not None and t is not None else np.nan
                           for r, t in zip(results, truth_hsd)])
        line = (f"\n{name}, {len(val_ids)} validation frames: {sum(r.hsd_px is not None for r in results)} with an "
                f"HSD, {int(unstable.sum())} hsd_unstable")
        if unstable.any() and np.isfinite(errors[unstable]).any():
            line += (f"; median |HSD error| of those {np.nanmedian(errors[unstable]):.1f} px vs the rest "
                     f"{np.nanmedian(errors[~unstable]):.1f} px")
        print(line)


if __name__ == "__main__":
    main()
