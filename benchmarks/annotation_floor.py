"""How far apart the expert's own angles lie on near-identical frames: a floor under any
model's AoP error against those annotations.

    python benchmarks/annotation_floor.py [--data ../shared/data/psfhs] [--min-similarity 0.95]
        [--model models/dssau-net-s-heldout.onnx [--tta]]

Consecutive case IDs often come from one examination. Where two consecutive frames look the
same around the pubic symphysis (Pearson correlation of the greyscale in a window around both
frames' PS masks, 24 px margin, at least ``--min-similarity``), the anatomy has barely moved,
so most of the difference between the two frames' AoP is the annotation: where the expert's
outline fell this time. Per block of IDs the script prints the median and mean |AoP(frame) -
AoP(next frame)| over such pairs, for the published reference (aop_reference.csv) and for the
default (ellipse) method on the expert masks; with ``--model``, the same for the model's
predictions (through ipp-seg's inference path) and the model's median / mean |error| against the
reference on the whole block.

If each annotation's error is independent and normal with spread sigma, |difference| of two
frames has median about 0.95 sigma and |error| of a perfect reader about 0.67 sigma: a reader
that matched the truth exactly would still differ from this expert by about median|difference|
/ sqrt(2) (the "floor" column). Real motion between the frames adds to the difference, so the
floor is an upper estimate; the model's own difference on the same pairs shows how much of it
is motion.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from ipp_seg.evaluate import read_reference_aop
from ipp_seg.measure import measure_progress
from ipp_seg.train.data import find_pairs, load_cases
from ipp_seg.train.ship import PSFHS_VALIDATION_BLOCKS, REFERENCE_AOP_FILE

REPO = Path(__file__).resolve().parents[1]
PS_WINDOW_MARGIN_PX = 24
ALL = "all frames"
DEFAULT_BLOCKS = {**PSFHS_VALIDATION_BLOCKS, "seen by the held-out twin (04402-04601)": ("04402", "04601")}


def ps_window_similarity(image_a: np.ndarray, image_b: np.ndarray, ps_a: np.ndarray, ps_b: np.ndarray) -> float:
    """Pearson correlation of two greyscale frames inside the box around both PS masks."""
    rows, cols = np.nonzero(ps_a | ps_b)
    top, left = max(rows.min() - PS_WINDOW_MARGIN_PX, 0), max(cols.min() - PS_WINDOW_MARGIN_PX, 0)
    bottom, right = rows.max() + PS_WINDOW_MARGIN_PX + 1, cols.max() + PS_WINDOW_MARGIN_PX + 1
    a = image_a[top:bottom, left:right].astype(np.float64).ravel()
    b = image_b[top:bottom, left:right].astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _parse_block(text: str) -> tuple[str, tuple[str, str]]:
    name, _, span = text.rpartition("=")
    first, _, last = span.partition("-")
    return (name or span), (first, last)


def _median_mean(values: list[float]) -> str:
    return "-" if not values else f"{np.median(values):.2f} / {np.mean(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    parser.add_argument("--min-similarity", type=float, default=0.95)
    parser.add_argument("--block", action="append", default=None, metavar="NAME=FIRST-LAST",
                        help="blocks of IDs to report (default: the validation blocks and 04402-04601)")
    parser.add_argument("--model", type=Path, help="an ONNX model to compare on the same pairs")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    blocks = dict(_parse_block(b) for b in args.block) if args.block else DEFAULT_BLOCKS
    blocks = {ALL: ("", "~"), **blocks}

    reference = read_reference_aop(args.data / REFERENCE_AOP_FILE)
    cases = load_cases(args.data)
    ids = [c.case_id for c in cases]
    expert_aop = {c.case_id: measure_progress(c.labels).aop_deg for c in cases}
    similar = []  # consecutive pairs that look the same around the PS
    for a, b in zip(cases[:-1], cases[1:]):
        if ps_window_similarity(a.image, b.image, a.labels == 1, b.labels == 1) >= args.min_similarity:
            similar.append((a.case_id, b.case_id))

    model_aop = {}
    if args.model:
        from ipp_seg.inference.backends import OnnxSegmenter
        from ipp_seg.inference.registry import ModelSpec
        from ipp_seg.io import read_frame
        from ipp_seg.train.ship import segment_by_id

        wanted = [c for c in ids if any(first <= c <= last for first, last in list(blocks.values())[1:])]
        images = {cid: img for cid, img, _ in find_pairs(args.data)}
        segmenter = OnnxSegmenter(ModelSpec(args.model.stem, args.model, None, None), threads=None)
        masks = segment_by_id(segmenter, {cid: read_frame(images[cid]) for cid in wanted}, args.tta)
        model_aop = {cid: measure_progress(mask).aop_deg for cid, mask in masks.items()}

    print(f"consecutive frames with PS-window correlation >= {args.min_similarity}: {len(similar)} of "
          f"{len(ids) - 1} pairs; |AoP difference| within a pair, median / mean (deg)"
          + (f"; model {args.model.name}{' --tta' if args.tta else ''}" if args.model else "") + "\n")
    print("| block | pairs | reference | expert mask, ellipse | floor (reference / sqrt 2) | model "
          "| model vs reference, whole block |")
    print("|---|---|---|---|---|---|---|")
    for name, (first, last) in blocks.items():
        pairs = [(a, b) for a, b in similar if first <= a and b <= last]
        d_ref = [abs(reference[a] - reference[b]) for a, b in pairs if a in reference and b in reference]
        d_exp = [abs(expert_aop[a] - expert_aop[b]) for a, b in pairs
                 if expert_aop[a] is not None and expert_aop[b] is not None]
        floor = f"{np.median(d_ref) / math.sqrt(2):.2f}" if d_ref else "-"
        d_model, errors = [], []
        if name != ALL:  # the model runs on the named blocks only
            d_model = [abs(model_aop[a] - model_aop[b]) for a, b in pairs
                       if model_aop.get(a) is not None and model_aop.get(b) is not None]
            errors = [abs(v - reference[c]) for c, v in model_aop.items()
                      if first <= c <= last and v is not None and c in reference]
        print(f"| {name} | {len(pairs)} | {_median_mean(d_ref)} | {_median_mean(d_exp)} | {floor} | "
              f"{_median_mean(d_model)} | {_median_mean(errors)} |")


if __name__ == "__main__":
    main()
