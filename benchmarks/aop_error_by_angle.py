"""Which way the AoP errs, by the size of the angle: a shipped model's signed AoP error on the
validation blocks, per band of the published reference AoP (PSFHS aop_reference.csv).

    python benchmarks/aop_error_by_angle.py models/dssau-net-s-heldout.onnx [--tta] [--data ../shared/data/psfhs]

Prints, per block and band, the frames, the mean signed error (prediction - reference; negative
reads low) and the median |error|, through ipp-seg's own inference path (ellipse AoP method).
The bands follow the clinical reading of the angle: below ~110 deg the head has barely
descended, above ~120 deg a spontaneous delivery becomes likely. A model that reads large
angles low shows a falling mean here and a negative proportional bias in its model card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ipp_seg.evaluate import evaluate_arrays, read_reference_aop
from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.registry import ModelSpec
from ipp_seg.io import read_frame
from ipp_seg.train.data import find_pairs, load_cases
from ipp_seg.train.ship import PSFHS_VALIDATION_BLOCKS as BLOCKS, REFERENCE_AOP_FILE, segment_by_id

REPO = Path(__file__).resolve().parents[1]
BANDS_DEG = ((0, 100), (100, 110), (110, 120), (120, 140), (140, 360))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    parser.add_argument("--tta", action="store_true", help="with test-time mirroring")
    args = parser.parse_args()
    reference = read_reference_aop(args.data / REFERENCE_AOP_FILE)
    images = {cid: img for cid, img, _ in find_pairs(args.data)}
    ids = sorted(c for c in images if any(first <= c <= last for first, last in BLOCKS.values()))
    truth = {c.case_id: c for c in load_cases(args.data, set(ids))}
    segmenter = OnnxSegmenter(ModelSpec(args.onnx.stem, args.onnx, None, None), threads=None)
    predictions = segment_by_id(segmenter, {cid: read_frame(images[cid]) for cid in ids}, args.tta)
    report = evaluate_arrays([(cid, predictions[cid], truth[cid].labels, None) for cid in ids],
                             reference_aop=reference)
    print(f"{args.onnx.name}{' --tta' if args.tta else ''}: AoP prediction - aop_reference.csv, ellipse method\n")
    print("| block | reference AoP (deg) | frames | mean signed error (deg) | median abs error (deg) |")
    print("|---|---|---|---|---|")
    for name, (first, last) in BLOCKS.items():
        cases = [c for c in report.cases if first <= c.case_id <= last
                 and c.aop_pred is not None and c.aop_reference is not None]
        for low, high in BANDS_DEG:
            errors = np.array([c.aop_pred - c.aop_reference for c in cases if low <= c.aop_reference < high])
            if errors.size:
                band = f"{low}-{high}" if high < 360 else f">= {low}"
                print(f"| {name} | {band} | {errors.size} | {errors.mean():+.1f} | {np.median(np.abs(errors)):.1f} |")


if __name__ == "__main__":
    main()
