"""How far a model's AoP wanders within half a second of a still cine, and so where the
``aop_unsteady`` warning's limit lies.

No cine loops with expert masks are at hand. Each validation frame (never trained on by the
held-out twin) is made into a synthetic cine of ``--frames`` frames at ``--fps``: a hand-held
probe's drift (a random walk of the whole frame: shift ``--drift-px`` px and turn
``--turn-deg`` degrees per frame, standard deviations), and fresh noise on every frame
(multiplicative speckle with standard deviation ``--speckle``, as independent frames' speckle
is). The anatomy itself stays still, so every frame's AoP should be one number: what the model
reads differently is its own wander, which a warning must not flag. Each frame's deviation from
the median AoP of the others within ``STEADINESS_WINDOW_MS`` (``ipp_seg.measure.steadiness``)
is collected.

Every frame's AoP is also compared with the expert's (the default method on the expert's mask):
are the frames the warning flags the ones read wrong?

Then the opposite: in each cine one frame is swapped for a frame of another examination (an
AoP from other masks, as a frame whose PS was mistaken is), and the script counts how often the
warning flags it, by how far its AoP lies from the cine's.

    python benchmarks/cine_steadiness.py [--model dssau-net-s-heldout] [--frames 9] [--fps 30]

Prints the deviations' percentiles, the share of still frames flagged at several limits with
the median |AoP error| of the flagged and the other frames, and the share of swapped frames
flagged by the size of their jump.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from ipp_seg.measure import measure_progress  # noqa: E402
from ipp_seg.measure.steadiness import AOP_UNSTEADY_DEG, STEADINESS_WINDOW_MS, aop_unsteady  # noqa: E402
from psfhs_frames import REPO, is_validation  # noqa: E402

LIMITS = (4.0, 6.0, 8.0, 10.0, 12.0, 15.0)


def drifted(pixels: np.ndarray, dx: float, dy: float, turn_deg: float, rng: np.random.Generator,
            speckle: float) -> np.ndarray:
    """``pixels`` shifted by (dx, dy) px and turned by ``turn_deg`` about the centre, with fresh
    multiplicative speckle; 8-bit as a machine stores it."""
    h, w = pixels.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), turn_deg, 1.0)
    matrix[:, 2] += (dx, dy)
    moved = cv2.warpAffine(pixels, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    noisy = moved * rng.gamma(1 / speckle**2, speckle**2, size=moved.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dssau-net-s-heldout")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--drift-px", type=float, default=0.7)
    parser.add_argument("--turn-deg", type=float, default=0.3)
    parser.add_argument("--speckle", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    predictor = Predictor(args.model)
    ids = sorted(p.stem for p in (args.data / "image_mha").glob("*.mha") if is_validation(p.stem))
    times = [k * 1000.0 / args.fps for k in range(args.frames)]
    deviations: list[float] = []
    cines: list[list[float | None]] = []
    truths: list[float | None] = []
    failed = 0
    for case in ids:
        pixels = read_frame(args.data / "image_mha" / f"{case}.mha").pixels.astype(np.float32)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(args.data / "label_mha" / f"{case}.mha")))
        truths.append(measure_progress(np.squeeze(labels).astype(np.uint8)).aop_deg)
        steps = rng.normal(0.0, 1.0, size=(args.frames, 3)) * (args.drift_px, args.drift_px, args.turn_deg)
        path = np.cumsum(steps, axis=0)
        aops = [predictor.predict_pixels(drifted(pixels, *path[k], rng, args.speckle)).measurement.aop_deg
                for k in range(args.frames)]
        failed += sum(a is None for a in aops)
        cines.append(aops)
        for k, aop in enumerate(aops):
            others = [a for j, a in enumerate(aops) if j != k and a is not None
                      and abs(times[j] - times[k]) <= STEADINESS_WINDOW_MS]
            if aop is not None and len(others) >= 2:
                deviations.append(abs(aop - float(np.median(others))))
    dev = np.array(deviations)
    print(f"{len(ids)} validation frames, each a still cine of {args.frames} frames at {args.fps:g} fps "
          f"(drift {args.drift_px} px, turn {args.turn_deg} deg per frame, speckle {args.speckle}); model "
          f"{args.model}; {failed} frames not measured")
    print(f"|deviation from the neighbours' median AoP| (deg): median {np.median(dev):.2f}, p90 "
          f"{np.percentile(dev, 90):.2f}, p99 {np.percentile(dev, 99):.2f}, p99.9 {np.percentile(dev, 99.9):.2f}, "
          f"max {dev.max():.2f} ({len(dev)} frames)")
    print("| limit (deg) | still frames flagged | median abs AoP error vs the expert's: flagged / the others (deg) |")
    print("|---|---|---|")
    for limit in LIMITS:
        errors: dict[bool, list[float]] = {True: [], False: []}
        for aops, truth in zip(cines, truths):
            for aop, flag in zip(aops, aop_unsteady(times, aops, limit_deg=limit)):
                if aop is not None and truth is not None:
                    errors[flag].append(abs(aop - truth))
        flagged = len(errors[True])
        print(f"| {limit:g}{' (shipped)' if limit == AOP_UNSTEADY_DEG else ''} | {flagged} of {len(dev)} "
              f"({100 * flagged / len(dev):.2f} %) | {np.median(errors[True]) if flagged else float('nan'):.1f} / "
              f"{np.median(errors[False]):.1f} |")
    # One frame of each cine swapped for the middle frame of another examination's cine (its AoP,
    # as if that frame's masks were another anatomy's): does the shipped limit flag it?
    jumps, caught = [], []
    middle = args.frames // 2
    for n, aops in enumerate(cines):
        other = cines[(n + len(cines) // 2) % len(cines)][middle]
        if other is None or aops[middle] is None:
            continue
        swapped = [*aops[:middle], other, *aops[middle + 1:]]
        rest = [a for j, a in enumerate(aops) if j != middle and a is not None]
        jumps.append(abs(other - float(np.median(rest))))
        caught.append(aop_unsteady(times, swapped)[middle])
    jumps_a, caught_a = np.array(jumps), np.array(caught)
    print(f"\nswapped frames flagged at {AOP_UNSTEADY_DEG:g} deg, by their jump from the cine's median:")
    print("| jump (deg) | swapped frames | flagged |")
    print("|---|---|---|")
    for low, high in ((0, 5), (5, 10), (10, 15), (15, 25), (25, 400)):
        inside = (jumps_a >= low) & (jumps_a < high)
        print(f"| {low}-{high if high < 400 else ''} | {inside.sum()} | {caught_a[inside].sum()} |")


if __name__ == "__main__":
    main()
