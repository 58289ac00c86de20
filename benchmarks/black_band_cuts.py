"""A PS hidden by a black band at the image's edge (`ps_at_black_band`): how near the PS lies to
such a band on real frames, and on frames whose PS a crop padded back to size cuts.

    python benchmarks/black_band_cuts.py [MODEL ...] [--data ../shared/data/psfhs]

A crop padded back to its size (or a screen capture's black border) cuts a structure with a
black band inside the frame, which the frame-edge rules (`ps_cut_off`) do not see. For every
expert mask of the 1,058 PSFHS frames, and for each MODEL's (default: the held-out twin's) masks
of the 230 validation frames, this prints the spread of
:func:`ipp_seg.inference.pipeline.ps_black_band_gap`. Then every fourth validation frame has
the top or the left 10, 20 or 30 % of its expert PS's extent blacked out (the whole rows or
columns, as a padded crop), and the model's gap, the warning and the AoP change against the
unpadded frame are printed.
"""

from __future__ import annotations

import numpy as np

from ipp_seg.evaluate.report import read_label_mask
from ipp_seg.inference import Predictor
from ipp_seg.inference.pipeline import MAX_PS_BLACK_BAND_GAP, ps_black_band_gap
from ipp_seg.io import read_frame
from psfhs_frames import case_pairs, is_validation, model_arguments

MODELS = ("dssau-net-s-heldout",)
EVERY = 4
FRACTIONS = (0.1, 0.2, 0.3)


def spread(values: list[float]) -> str:
    v = np.asarray(values)
    return (f"n {len(v)}, min {v.min():.3f}, 1st pct {np.percentile(v, 1):.3f}, 5th {np.percentile(v, 5):.3f}, "
            f"median {np.median(v):.3f}, below {MAX_PS_BLACK_BAND_GAP}: {(v < MAX_PS_BLACK_BAND_GAP).sum()}")


def padded(pixels: np.ndarray, ps: np.ndarray, side: str, fraction: float) -> np.ndarray:
    """``pixels`` with the top (or left) ``fraction`` of the PS's extent blacked out edge to edge."""
    ys, xs = np.nonzero(ps)
    out = pixels.copy()
    if side == "top":
        out[:int(ys.min() + fraction * np.ptp(ys))] = 0
    else:
        out[:, :int(xs.min() + fraction * np.ptp(xs))] = 0
    return out


def main() -> None:
    args = model_arguments(__doc__, list(MODELS))
    pairs = case_pairs(args.data)
    expert = []
    for image, label in pairs.values():
        gap = ps_black_band_gap(read_label_mask(label)[0] == 1, read_frame(image).pixels)
        expert.append(1.0 if gap is None else gap)  # (no black band at any side: nothing to lie against)
    print(f"expert PS, all {len(expert)} frames: {spread(expert)}")
    validation = sorted((cid, pair) for cid, pair in pairs.items() if is_validation(cid))
    for model in args.models:
        predictor = Predictor(model)
        own, cut = [], {}
        for k, (cid, (image, label)) in enumerate(validation):
            frame = read_frame(image)
            result = predictor.predict_frame(frame)
            gap = ps_black_band_gap(result.labels == 1, frame.pixels)
            own.append(1.0 if gap is None else gap)
            if k % EVERY:
                continue
            ps = read_label_mask(label)[0] == 1
            for side in ("top", "left"):
                for fraction in FRACTIONS:
                    shown = predictor.predict_pixels(padded(frame.pixels, ps, side, fraction))
                    gap = ps_black_band_gap(shown.labels == 1, shown.frame.pixels)
                    warned = "ps_at_black_band" in shown.measurement.reasons
                    moved = (abs(shown.measurement.aop_deg - result.measurement.aop_deg)
                             if shown.measurement.aop_deg is not None and result.measurement.aop_deg is not None
                             else None)
                    cut.setdefault((side, fraction), []).append((gap, warned, moved))
        print(f"\n{model}, its PS on the {len(own)} validation frames: {spread(own)}")
        print("| blacked out | frames | gap median / max | warned | median abs AoP change (deg): warned / not |")
        print("|---|---|---|---|---|")
        for (side, fraction), rows in sorted(cut.items()):
            gaps = np.array([g for g, _, _ in rows if g is not None])
            moved = [np.median(m) if m else float("nan") for m in (
                [m for _, w, m in rows if w and m is not None], [m for _, w, m in rows if not w and m is not None])]
            print(f"| {side} {fraction:.0%} | {len(rows)} | {np.median(gaps):.3f} / {gaps.max():.3f} | "
                  f"{sum(w for _, w, _ in rows)} | {moved[0]:.1f} / {moved[1]:.1f} |")


if __name__ == "__main__":
    main()
