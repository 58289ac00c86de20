"""A frame without the fetal head: does anything ipp-seg reads say so?

Every 6th PSFHS frame (177) with its expert head painted out with the tissue around it (OpenCV
Telea inpainting of the head mask dilated by 4 px): an approximation of a frame with the head
out of view, since real ones are not in the data. For each, the default model's head
confidence (below 0.90: ``low_confidence``), and a skull-rim contrast of the head it draws:
the brightest tenth of a 4 px band inside its outline against its core (eroded 12 px), and
against the frame's median tissue. The same contrast on the network's masks of the frames as
recorded is the reference.

    python benchmarks/head_out_of_view.py [--every 6] [--model dssau-net-s]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipp_seg.inference import Predictor  # noqa: E402
from ipp_seg.inference.pipeline import MIN_HEAD_CONFIDENCE  # noqa: E402
from ipp_seg.io import read_frame  # noqa: E402
from psfhs_frames import sampled_frame_arguments  # noqa: E402

def rim_contrast(image: np.ndarray, head: np.ndarray) -> tuple[float, float] | None:
    """(rim / core, rim / tissue) of a head mask on its frame; None for a head too small."""
    head = head.astype(np.uint8)
    if head.sum() < 50:
        return None
    kernel = np.ones((3, 3), np.uint8)
    rim = head - cv2.erode(head, kernel, iterations=4)
    core = cv2.erode(head, kernel, iterations=12)
    inside = core if core.any() else cv2.erode(head, kernel, iterations=4)
    tissue = image[image > 8]
    rim_p90 = float(np.percentile(image[rim > 0], 90))
    return (rim_p90 + 1) / (float(image[inside > 0].mean()) + 1), (rim_p90 + 1) / (float(np.median(tissue)) + 1)


def main() -> None:
    args, ids = sampled_frame_arguments(__doc__)
    predictor = Predictor(args.model)
    data = args.data
    recorded, painted, confidences = [], [], []
    for case in ids:
        image = read_frame(data / "image_mha" / f"{case}.mha").pixels.astype(np.uint8)
        truth = read_frame(data / "label_mha" / f"{case}.mha").pixels.astype(np.uint8)
        recorded.append(rim_contrast(image, predictor.predict_pixels(image).labels == 2))
        hole = cv2.dilate((truth == 2).astype(np.uint8), np.ones((9, 9), np.uint8))
        no_head = cv2.inpaint(image, hole, 7, cv2.INPAINT_TELEA)
        result = predictor.predict_pixels(no_head)
        painted.append(rim_contrast(no_head, result.labels == 2))
        confidences.append(result.head_confidence if result.head_confidence is not None else 0.0)
    print(f"{len(ids)} PSFHS frames, model {args.model}")
    print(f"head painted out: a head drawn in {sum(c > 0 for c in confidences)}, low_confidence (below "
          f"{MIN_HEAD_CONFIDENCE:.2f}) in {np.mean(np.array(confidences) < MIN_HEAD_CONFIDENCE):.0%}")
    for k, name in enumerate(("rim / core", "rim / tissue")):
        as_recorded = np.array([r[k] for r in recorded if r is not None])
        without = np.array([r[k] for r in painted if r is not None])
        print(f"{name}: as recorded p1 / p5 / median {np.percentile(as_recorded, [1, 5, 50]).round(2)}; "
              f"head painted out median / p95 {np.percentile(without, [50, 95]).round(2)}")


if __name__ == "__main__":
    main()
