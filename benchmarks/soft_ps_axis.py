"""An inference-time angle lever, measured: the pubic symphysis's ellipse from the network's
soft PS probability instead of its hard (argmax) mask.

The default method fits an ellipse to the hard PS mask's outline; its long axis and inferior end
carry most of the angle's error. Here the PS is redrawn, before measuring, as the ellipse of
second moments of (a) the hard mask's largest PS component (isolates moments from the outline
fit), (b) the PS probability within 3 px of that component, (c) the same where the probability
exceeds 0.2; every variant is then measured by the default method. Validation blocks of the
model's card (wide 04602-04801, narrow 04372-04401), against the expert mask's angle (same
method) and against ``aop_reference.csv``. Inference only; needs the shared data.

    python benchmarks/soft_ps_axis.py [MODEL]      # default: dssau-net-s-heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from ipp_seg.evaluate.report import read_label_mask, read_reference_aop
from ipp_seg.inference.backends import load_segmenter
from ipp_seg.inference.pipeline import prepare_input
from ipp_seg.inference.registry import resolve_model
from ipp_seg.io import read_frame
from ipp_seg.measure import measure_progress

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "psfhs"
BLOCKS = {"wide": range(4602, 4802), "narrow": range(4372, 4402)}
BATCH = 8


def probabilities_on_frame(logits: np.ndarray, placement, shape: tuple[int, int]) -> np.ndarray:
    """[K, h, w] logits -> (H, W, K) softmax on the frame's grid, as labels_from_logits places them."""
    k, side = logits.shape[0], placement.side
    up = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (side, side), interpolation=cv2.INTER_LINEAR)
    up = up.reshape(side, side, k)[:placement.square_height, :placement.square_width]
    if (placement.square_height, placement.square_width) != (placement.height, placement.width):
        up = cv2.resize(np.ascontiguousarray(up), (placement.width, placement.height),
                        interpolation=cv2.INTER_LINEAR).reshape(placement.height, placement.width, k)
    exp = np.exp(up - up.max(-1, keepdims=True))
    out = np.zeros((*shape, k), np.float32)
    out[..., 0] = 1
    out[placement.y0:placement.y0 + placement.height, placement.x0:placement.x0 + placement.width] = \
        exp / exp.sum(-1, keepdims=True)
    return out


def with_moment_ellipse(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``labels`` with the PS (1) redrawn as the ellipse of the second moments of ``weights``
    (semi-axes twice the roots of the covariance's eigenvalues: a filled ellipse's own)."""
    ys, xs = np.nonzero(weights > 0)
    w = weights[ys, xs].astype(np.float64)
    if w.sum() <= 0:
        return labels
    cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
    dx, dy = xs - cx, ys - cy
    cov = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]]) / w.sum()
    values, vectors = np.linalg.eigh(cov)
    long_axis, short_axis = 4 * np.sqrt(max(values[1], 1e-6)), 4 * np.sqrt(max(values[0], 1e-6))
    angle = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])))
    redrawn = labels.copy()
    redrawn[redrawn == 1] = 0
    ellipse = np.zeros(labels.shape, np.uint8)
    cv2.ellipse(ellipse, ((float(cx), float(cy)), (float(long_axis), float(short_axis)), angle), 1, -1)
    redrawn[(ellipse > 0) & (redrawn == 0)] = 1
    return redrawn


def largest_component(mask: np.ndarray) -> np.ndarray:
    n, labelled, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    return mask.astype(bool) if n <= 1 else labelled == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="dssau-net-s-heldout")
    args = parser.parse_args()
    segmenter = load_segmenter(resolve_model(args.model), "onnx", "cpu", 2, BATCH)
    reference = read_reference_aop(DATA / "aop_reference.csv")
    ids = [f"{i:05d}" for block in BLOCKS.values() for i in block]
    angles: dict[str, dict[str, float | None]] = {}
    for start in range(0, len(ids), BATCH):
        chunk = [(case, read_frame(DATA / "image_mha" / f"{case}.mha")) for case in ids[start:start + BATCH]]
        prepared = [prepare_input(frame, segmenter.info.input_size, segmenter.info.in_channels,
                                  segmenter.info.normalisation) for _, frame in chunk]
        batch = np.stack([x for x, _ in prepared])
        batch = np.concatenate([batch, np.repeat(batch[-1:], BATCH - len(batch), 0)])  # (calls of 8, as batch)
        for (case, frame), logits, (_, placement) in zip(chunk, segmenter.logits(batch), prepared):
            probability = probabilities_on_frame(logits, placement, frame.pixels.shape)
            labels = probability.argmax(-1).astype(np.uint8)
            ps = largest_component(labels == 1)
            near = cv2.dilate(ps.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            variants = {"hard mask (shipped)": labels,
                        "moments of the hard PS": with_moment_ellipse(labels, ps.astype(np.float32)),
                        "moments of p(PS)": with_moment_ellipse(labels, np.where(near, probability[..., 1], 0)),
                        "moments of p(PS) > 0.2": with_moment_ellipse(
                            labels, np.where(near & (probability[..., 1] > 0.2), probability[..., 1], 0)),
                        "expert": read_label_mask(DATA / "label_mha" / f"{case}.mha")[0]}
            angles[case] = {name: measure_progress(mask).aop_deg for name, mask in variants.items()}
    print("| PS drawn as | block | vs the expert mask: mean / median abs dAoP (deg) | vs aop_reference.csv | n |")
    print("|---|---|---|---|---|")
    for name in [key for key in next(iter(angles.values())) if key != "expert"]:
        for block, cases in BLOCKS.items():
            pairs = [(angles[c][name], angles[c]["expert"], reference.get(c)) for c in (f"{i:05d}" for i in cases)]
            pairs = [p for p in pairs if p[0] is not None and p[1] is not None and p[2] is not None]
            to_expert = np.abs([a - e for a, e, _ in pairs])
            to_reference = np.abs([a - r for a, _, r in pairs])
            print(f"| {name} | {block} | {to_expert.mean():.2f} / {np.median(to_expert):.2f} | "
                  f"{to_reference.mean():.2f} / {np.median(to_reference):.2f} | {len(pairs)} |")


if __name__ == "__main__":
    main()
