"""Frame -> label mask -> measurement.

Pre-processing: crop to the ultrasound imaging region when the scan gives one, pad to a square
(the anatomy keeps its aspect ratio; training frames are square), resize to the network input,
normalise as the model's metadata says. Post-processing: the logits are resized back to the
crop before the argmax, and the labels are placed on the frame's own pixel grid, where the
measurement is made with the frame's physical spacing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..io import UltrasoundFrame
from ..measure import Measurement, measure_progress
from .preprocess import normalise_frame, pad_to_square, resize_image


@dataclass(frozen=True)
class FrameResult:
    """One frame's outcome: the label mask at the frame's size, its measurement, timings (s)."""

    frame: UltrasoundFrame
    labels: np.ndarray
    measurement: Measurement
    model: str
    timings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Placement:
    """Where the network input came from: crop box in the frame and the square side."""

    x0: int
    y0: int
    width: int
    height: int
    side: int


def _crop_box(frame: UltrasoundFrame) -> tuple[int, int, int, int]:
    region = frame.imaging_region
    h, w = frame.pixels.shape
    if region is None:
        return 0, 0, w, h
    x0, y0 = max(0, region.x0), max(0, region.y0)
    x1, y1 = min(w, region.x1), min(h, region.y1)
    if x1 - x0 < 16 or y1 - y0 < 16:  # a degenerate region box: use the whole frame
        return 0, 0, w, h
    return x0, y0, x1, y1


def prepare_input(frame: UltrasoundFrame, input_size: tuple[int, int], in_channels: int,
                  normalisation: dict) -> tuple[np.ndarray, _Placement]:
    """Network input [C, H, W] float32 for one frame, and how to map the output back."""
    x0, y0, x1, y1 = _crop_box(frame)
    crop = np.asarray(frame.pixels[y0:y1, x0:x1], dtype=np.float32)
    square = pad_to_square(crop)
    side = square.shape[0]
    size_h, size_w = input_size
    # The same padding and resizing as training (train.data.on_inference_grid, resize_image).
    x = normalise_frame(resize_image(square, (size_h, size_w)), normalisation)
    x = np.broadcast_to(x, (in_channels, size_h, size_w))
    return x, _Placement(x0, y0, x1 - x0, y1 - y0, side)


def labels_from_logits(logits: np.ndarray, placement: _Placement, frame_shape: tuple[int, int]) -> np.ndarray:
    """[K, h, w] logits -> uint8 labels on the frame's grid (logits resized, then argmax)."""
    k = logits.shape[0]
    side = placement.side
    up = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (side, side), interpolation=cv2.INTER_LINEAR)
    up = up.reshape(side, side, k)[: placement.height, : placement.width]
    labels = np.zeros(frame_shape, dtype=np.uint8)
    labels[placement.y0:placement.y0 + placement.height, placement.x0:placement.x0 + placement.width] = \
        up.argmax(axis=-1).astype(np.uint8)
    return labels


def segment_frames(frames: list[UltrasoundFrame], segmenter, tta: bool = False) -> tuple[list[np.ndarray], float, float]:
    """Label masks for a batch of frames. Returns (masks, pre-processing s, model s).

    With ``tta``, the logits of the frame and of its mirror image are averaged.
    """
    info = segmenter.info
    started = time.perf_counter()
    prepared = [prepare_input(f, info.input_size, info.in_channels, info.normalisation) for f in frames]
    batch = np.stack([p[0] for p in prepared])
    prep_s = time.perf_counter() - started
    started = time.perf_counter()
    logits = segmenter.logits(batch)
    if tta:
        logits = (logits + segmenter.logits(batch[..., ::-1].copy())[..., ::-1]) / 2
    model_s = time.perf_counter() - started
    started = time.perf_counter()
    masks = [labels_from_logits(lg, p[1], f.pixels.shape) for lg, p, f in zip(logits, prepared, frames)]
    # Resizing the logits back and the argmax count as pre/post-processing, not model time.
    prep_s += time.perf_counter() - started
    return masks, prep_s, model_s


def predict_frame(frame: UltrasoundFrame, segmenter, *, method: str = "ellipse", orientation: str = "standard",
                  tta: bool = False) -> FrameResult:
    """Segment and measure one frame."""
    (labels,), prep_s, model_s = segment_frames([frame], segmenter, tta)
    started = time.perf_counter()
    measurement = measure_frame(labels, frame, method=method, orientation=orientation)
    return FrameResult(frame, labels, measurement, segmenter.info.name,
                       {"preprocess_s": prep_s, "model_s": model_s, "measure_s": time.perf_counter() - started})


def measure_frame(labels: np.ndarray, frame: UltrasoundFrame, *, method: str, orientation: str,
                  ps_label: int = 1, fh_label: int = 2) -> Measurement:
    """Measure with the spacing of the imaging region that holds the anatomy (the PS)."""
    spacing = frame.spacing_mm
    ys, xs = np.nonzero(labels == ps_label)
    if len(xs):
        spacing = frame.spacing_at(float(xs.mean()), float(ys.mean())) or spacing
    return measure_progress(labels, spacing, method=method, orientation=orientation,
                            ps_label=ps_label, fh_label=fh_label)
