"""Agreement of the AoP methods with the PSFHS reference, and their stability under mirror/rotation.

Usage:
    python benchmarks/measure_reference_agreement.py [--data ../shared/data/psfhs] [--no-rotation]

For each method (ellipse, challenge, contour) on every ground-truth mask it prints:
* |AoP - aop_reference.csv|: median, 95th percentile, max, share within 0.5 deg;
* mirror: |AoP(mask) - AoP(mask mirrored left-right, orientation "mirrored")|;
* rotation: |AoP(mask) - AoP(mask rotated +/-15 deg, nearest neighbour, padded canvas)|.
All figures in degrees. The reference is the FH-PS-AOP 2023 evaluator's number, an unsigned
(law-of-cosines) angle; the ellipse and contour methods measure the angle turning towards the
head and can exceed 180 deg, so their difference is also given with such values folded back
(360 - AoP), and the count of cases above 180 deg is shown.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ipp_seg.measure import METHODS, measure_progress  # noqa: E402


def load(data: Path):
    import SimpleITK as sitk

    with (data / "aop_reference.csv").open(newline="") as fh:
        ref = {row["case"]: float(row["aop_deg"]) for row in csv.DictReader(fh)}
    cases = sorted(ref)
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(data / "label_mha" / f"{c}.mha"))) for c in cases]
    return cases, masks, np.array([ref[c] for c in cases])


def rotate_nn(mask: np.ndarray, deg: float, pad: int = 64) -> np.ndarray:
    p = np.pad(mask, pad)
    h, w = p.shape
    rot = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), deg, 1.0)
    return cv2.warpAffine(p, rot, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)


def aop(mask: np.ndarray, method: str, orientation: str = "standard") -> float:
    r = measure_progress(mask, method=method, orientation=orientation)
    return np.nan if r.aop_deg is None else r.aop_deg


def fmt(x: float) -> str:
    return f"{x:.3f}" if x >= 0.01 or x == 0 else f"{x:.1e}"


def summary(d: np.ndarray, within: float) -> str:
    return (f"median {fmt(np.nanmedian(d))}  p95 {fmt(np.nanpercentile(d, 95))}  max {fmt(np.nanmax(d))}  "
            f"<= {within:g}: {100 * np.nanmean(d <= within):.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/psfhs")
    ap.add_argument("--no-rotation", action="store_true", help="skip the (slower) rotation check")
    args = ap.parse_args()
    if not (args.data / "aop_reference.csv").is_file():
        sys.exit(f"no PSFHS data at {args.data}")
    cases, masks, ref = load(args.data)
    print(f"{len(cases)} ground-truth masks from {args.data}")
    for method in METHODS:
        t0 = time.perf_counter()
        base = np.array([aop(m, method) for m in masks])
        per_mask_ms = 1000 * (time.perf_counter() - t0) / len(masks)
        folded = np.where(base > 180.0, 360.0 - base, base)
        mirror = np.array([aop(np.ascontiguousarray(m[:, ::-1]), method, "mirrored") for m in masks])
        print(f"\n[{method}]  ({per_mask_ms:.2f} ms per mask incl. overhead; {np.sum(base > 180)} cases > 180 deg;"
              f" {np.sum(np.isnan(base))} without a value)")
        print(f"  vs reference        : {summary(np.abs(base - ref), 0.5)}")
        print(f"  vs reference, folded: {summary(np.abs(folded - ref), 0.5)}")
        print(f"  mirror change       : {summary(np.abs(mirror - base), 0.01)};"
              f"  > 0.5: {100 * np.nanmean(np.abs(mirror - base) > 0.5):.1f} %")
        if not args.no_rotation:
            rot = np.concatenate([np.abs(np.array([aop(rotate_nn(m, d), method) for m in masks]) - base)
                                  for d in (15.0, -15.0)])
            print(f"  rotation +/-15 change: {summary(rot, 1.0)}")


if __name__ == "__main__":
    main()
