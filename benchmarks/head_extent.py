"""Is the anatomy as large in the frame as the models learnt it? The ``head_small_in_frame``
check (``MIN_HEAD_EXTENT`` in ``ipp_seg/inference/pipeline.py``), on the expert masks and on
validation frames shrunk inside a black margin, as in a screen capture around the image.

    python benchmarks/head_extent.py [MODEL ...] [--data ../shared/data/psfhs]

Prints percentiles of the head extent (the diameter of a disc of the head's area over the side
of the network's square input) of the expert masks of all PSFHS frames and the share below the
limit; then, for each MODEL (default: the default's held-out twin), the validation frames
centred in a black square margin at 1.0 to 0.5 of its side: the head extent the network gives,
how many frames fall below the limit, and the median |AoP error| (ellipse method, against the
expert mask at full size) with the number of failed measurements.
"""

from __future__ import annotations

import numpy as np

from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.pipeline import MIN_HEAD_EXTENT, segment_frames
from ipp_seg.inference.registry import resolve_model
from ipp_seg.io import Provenance, UltrasoundFrame, read_frame
from ipp_seg.measure import measure_progress
from psfhs_frames import case_pairs, is_validation, model_arguments

SCALES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def in_margin(pixels: np.ndarray, scale: float) -> UltrasoundFrame:
    """The frame centred in a black square canvas 1/scale times its longer side."""
    side = int(round(max(pixels.shape) / scale))
    canvas = np.zeros((side, side), dtype=pixels.dtype)
    y0, x0 = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
    canvas[y0:y0 + pixels.shape[0], x0:x0 + pixels.shape[1]] = pixels
    return UltrasoundFrame(canvas, None, (), 0, 1, Provenance("synthetic", "image"))


def main() -> None:
    args = model_arguments(__doc__, ["dssau-net-s-heldout"])
    pairs = case_pairs(args.data)
    extents = []
    for img, lab in pairs.values():
        mask = read_frame(lab).pixels
        extents.append(np.sqrt(4 * np.sum(mask == 2) / (np.pi * max(mask.shape) ** 2)))
    extents = np.array(extents)
    pct = (0, 0.3, 0.5, 1, 5, 50)
    print(f"limit MIN_HEAD_EXTENT = {MIN_HEAD_EXTENT}")
    print(f"expert masks, {len(extents)} frames: head extent p{pct} = {np.percentile(extents, pct).round(3).tolist()}, "
          f"{np.sum(extents < MIN_HEAD_EXTENT)} below the limit")

    ids = sorted(filter(is_validation, pairs))
    frames = [read_frame(pairs[c][0]).pixels for c in ids]
    truth = [measure_progress(read_frame(pairs[c][1]).pixels.astype(np.uint8)).aop_deg for c in ids]
    for name in args.models:
        segmenter = OnnxSegmenter(resolve_model(name), threads=2)
        print(f"\n{name}, {len(ids)} validation frames")
        for scale in SCALES:
            masks, extent = [], []
            for start in range(0, len(frames), 8):
                out = segment_frames([in_margin(p, scale) for p in frames[start:start + 8]], segmenter)
                masks += out.masks
                extent += out.head_extent
            errors = []
            for mask, t in zip(masks, truth):
                aop = measure_progress(mask).aop_deg
                errors.append(np.nan if aop is None or t is None else abs(aop - t))
            errors, extent = np.array(errors), np.array(extent)
            spread = np.percentile(extent, (1, 5, 50)).round(3).tolist()
            print(f"  scale {scale:.1f}: head extent p(1, 5, 50) = {spread}, "
                  f"{np.sum(extent < MIN_HEAD_EXTENT)} below the limit; median |dAoP| {np.nanmedian(errors):.1f} deg, "
                  f"{int(np.isnan(errors).sum())} failed")


if __name__ == "__main__":
    main()
