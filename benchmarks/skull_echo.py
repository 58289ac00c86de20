"""Is there a skull where the network drew the head? The ``fh_not_seen`` check (``skull_echo`` and
``MIN_SKULL_ECHO`` in ``ipp_seg/inference/pipeline.py``).

    python benchmarks/skull_echo.py [--model dssau-net-s-heldout] [--data ../shared/data/psfhs]

Prints the skull echo (the brightest pixel within 4 px of each point of the head's outline, at the
outline's 75th percentile, over the frame's 99th percentile) of the expert heads of every PSFHS
frame, and of the model's heads on the validation frames; then, on the validation frames changed
so that no head is in view, what the model reads: the tissue below the expert PS replaced by
dark speckle (Rayleigh, scale 10: a head out of view, behind fluid), and the expert head painted
out with the tissue around it (OpenCV Telea inpainting of the mask dilated by 4 px, as
benchmarks/head_out_of_view.py does): the skull echo's range, and how many fail ``fh_not_seen``
or carry ``low_confidence``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ipp_seg.inference import Predictor
from ipp_seg.inference.pipeline import MIN_SKULL_ECHO, skull_echo
from ipp_seg.io import read_frame
from psfhs_frames import case_pairs, validation_frame_arguments


def head_out_of_view(image: np.ndarray, truth: np.ndarray, seed: int) -> np.ndarray:
    """The tissue below the expert PS (5 px below its lowest row) as dark speckle."""
    below = np.arange(image.shape[0])[:, None] > np.nonzero(truth == 1)[0].max() + 5
    tissue = below & (image > 0)
    out = image.copy()
    out[tissue] = np.clip(np.random.default_rng(seed).rayleigh(10, np.count_nonzero(tissue)), 0, 255)
    return out


def head_painted_out(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    hole = cv2.dilate((truth == 2).astype(np.uint8), np.ones((9, 9), np.uint8))
    return cv2.inpaint(image, hole, 7, cv2.INPAINT_TELEA)


def main() -> None:
    args, ids = validation_frame_arguments(__doc__)
    pairs = case_pairs(args.data)
    experts = []
    for image_path, label_path in pairs.values():
        image, truth = read_frame(image_path).pixels, read_frame(label_path).pixels.astype(np.uint8)
        experts.append(skull_echo(truth == 2, truth == 1, image))
    experts = np.array([e for e in experts if e is not None])
    print(f"limit MIN_SKULL_ECHO = {MIN_SKULL_ECHO}")
    print(f"expert heads, {len(experts)} frames: min {experts.min():.2f}, p1 {np.percentile(experts, 1):.2f}, "
          f"median {np.median(experts):.2f}")
    predictor = Predictor(args.model)
    seen, changed = [], {"head out of view": [], "head painted out": []}
    for k, case in enumerate(ids):
        image = read_frame(pairs[case][0]).pixels.astype(np.uint8)
        truth = read_frame(pairs[case][1]).pixels.astype(np.uint8)
        result = predictor.predict_pixels(image)
        seen.append(skull_echo(result.labels == 2, result.labels == 1, image))
        for name, frame in (("head out of view", head_out_of_view(image, truth, k)),
                            ("head painted out", head_painted_out(image, truth))):
            out = predictor.predict_pixels(frame)
            changed[name].append((skull_echo(out.labels == 2, out.labels == 1, frame), out.measurement.reasons))
    seen = np.array([e for e in seen if e is not None])
    print(f"{args.model}'s heads, {len(seen)} validation frames: min {seen.min():.2f}, p1 "
          f"{np.percentile(seen, 1):.2f}, below the limit {int(np.sum(seen < MIN_SKULL_ECHO))}")
    for name, results in changed.items():
        echoes = np.array([e for e, _ in results if e is not None])
        unseen = sum("fh_not_seen" in reasons for _, reasons in results)
        doubted = sum("low_confidence" in reasons and "fh_not_seen" not in reasons for _, reasons in results)
        print(f"{name}, {len(results)} frames: skull echo median {np.median(echoes):.2f}, p95 "
              f"{np.percentile(echoes, 95):.2f}; fh_not_seen {unseen}, else low_confidence {doubted}, neither "
              f"{len(results) - unseen - doubted}")


if __name__ == "__main__":
    main()
