"""Is there a skull where the network drew the head? The ``fh_not_seen`` check (``skull_echo``,
``skull_not_seen`` in ``ipp_seg/inference/pipeline.py``).

    python benchmarks/skull_echo.py [--model dssau-net-s-heldout] [--data ../shared/data/psfhs]

Prints the skull echo (the brightest pixel within 4 px of each point of the head's outline, at the
outline's 75th percentile, against the frame's 99th percentile of echoes and against the same of
the head's core) of the expert heads of every PSFHS frame, as recorded and through display
curves of gamma 0.7, 1.5 and 2, and of the model's heads on the validation frames (gamma 1 and
1.5): how many show no skull by the rule. Then, on the validation frames changed so that no head
is in view, what the model reads: the tissue below the expert PS replaced by dark speckle
(Rayleigh, scale 6: a head out of view, behind fluid) or brighter speckle (gamma-distributed,
mean 15), and the expert head painted out with the tissue around it (OpenCV Telea inpainting of
the mask dilated by 4 px, as benchmarks/head_out_of_view.py does): how many fail
``fh_not_seen`` or carry ``low_confidence``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ipp_seg.inference import Predictor
from ipp_seg.inference.pipeline import MIN_SKULL_ECHO, MIN_SKULL_RIM_CONTRAST, skull_echo, skull_not_seen
from ipp_seg.io import read_frame
from psfhs_frames import case_pairs, validation_frame_arguments


def head_out_of_view(image: np.ndarray, truth: np.ndarray, speckle: np.ndarray) -> np.ndarray:
    """The tissue below the expert PS (5 px below its lowest row) as ``speckle``."""
    below = np.arange(image.shape[0])[:, None] > np.nonzero(truth == 1)[0].max() + 5
    tissue = below & (image > 0)
    out = image.copy()
    out[tissue] = np.clip(speckle[tissue], 0, 255)
    return out


def head_painted_out(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    hole = cv2.dilate((truth == 2).astype(np.uint8), np.ones((9, 9), np.uint8))
    return cv2.inpaint(image, hole, 7, cv2.INPAINT_TELEA)


def curved(image: np.ndarray, gamma: float) -> np.ndarray:
    """``image`` through a display curve of ``gamma`` (above 1: darker mid-tones)."""
    return (255.0 * (image.astype(np.float32) / 255.0) ** gamma).astype(np.uint8)


def main() -> None:
    args, ids = validation_frame_arguments(__doc__)
    pairs = case_pairs(args.data)
    print(f"fh_not_seen: against the frame below {MIN_SKULL_ECHO} and against the inside below "
          f"{MIN_SKULL_RIM_CONTRAST}")
    experts: dict[float, list] = {gamma: [] for gamma in (0.7, 1.0, 1.5, 2.0)}
    for case, (image_path, label_path) in sorted(pairs.items()):
        image, truth = read_frame(image_path).pixels.astype(np.uint8), read_frame(label_path).pixels.astype(np.uint8)
        for gamma, found in experts.items():
            found.append((case, skull_echo(truth == 2, truth == 1, curved(image, gamma))))
    for gamma, found in experts.items():
        against = np.array([echo.against_frame for _, echo in found if echo is not None])
        unseen = [case for case, echo in found if skull_not_seen(echo)]
        print(f"expert heads at gamma {gamma}, {len(found)} frames: against the frame min {against.min():.2f}, p1 "
              f"{np.percentile(against, 1):.2f}; no skull by the rule: {len(unseen)} {unseen}")
    predictor = Predictor(args.model)
    rng = np.random.default_rng(0)
    seen: dict[float, list] = {1.0: [], 1.5: []}
    changed: dict[str, list] = {"dark speckle below the PS": [], "brighter speckle below the PS": [],
                                "head painted out": []}
    for case in ids:
        image = read_frame(pairs[case][0]).pixels.astype(np.uint8)
        truth = read_frame(pairs[case][1]).pixels.astype(np.uint8)
        for gamma, found in seen.items():
            frame = curved(image, gamma)
            result = predictor.predict_pixels(frame)
            found.append(skull_not_seen(skull_echo(result.labels == 2, result.labels == 1, frame)))
        for name, frame in (("dark speckle below the PS", head_out_of_view(image, truth, rng.rayleigh(6, image.shape))),
                            ("brighter speckle below the PS",
                             head_out_of_view(image, truth, rng.gamma(1.5, 10.0, image.shape))),
                            ("head painted out", head_painted_out(image, truth))):
            changed[name].append(predictor.predict_pixels(frame.astype(np.uint8)).measurement.reasons)
    for gamma, found in seen.items():
        print(f"{args.model}'s heads at gamma {gamma}, {len(found)} validation frames: no skull by the rule "
              f"{sum(found)}")
    for name, results in changed.items():
        unseen = sum("fh_not_seen" in reasons for reasons in results)
        doubted = sum("low_confidence" in reasons and "fh_not_seen" not in reasons for reasons in results)
        print(f"{name}, {len(results)} frames: fh_not_seen {unseen}, else low_confidence {doubted}, neither "
              f"{len(results) - unseen - doubted}")


if __name__ == "__main__":
    main()
