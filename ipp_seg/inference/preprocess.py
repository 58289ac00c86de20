"""Input normalisation and resizing, shared by training and inference.

The normalisation is described by a small dict stored in every model's metadata, so that
inference applies exactly what training applied.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Per-frame percentile normalisation: robust to another machine's gain and depth settings.
#: The bright end is not clipped hard: bone (the symphysis) is among the brightest pixels.
DEFAULT_NORMALISATION = {"kind": "percentile", "low_percentile": 1.0, "high_percentile": 99.0,
                         "clip_low": -0.5, "clip_high": 2.0, "offset": 0.5}


def with_local_contrast(normalisation: dict, clip_limit: float, tile_grid: int = 8) -> dict:
    """``normalisation`` plus local contrast equalisation (CLAHE, OpenCV's clip limit and a
    ``tile_grid`` x ``tile_grid`` grid of tiles), which :func:`normalise_frame` then applies."""
    if not clip_limit > 0 or int(tile_grid) < 1:
        raise ValueError(f"local contrast needs clip_limit > 0 and tile_grid >= 1, got {clip_limit}, {tile_grid}")
    return {**normalisation, "local_contrast": {"clip_limit": float(clip_limit), "tile_grid": int(tile_grid)}}


def normalise_frame(pixels: np.ndarray, normalisation: dict | None = None) -> np.ndarray:
    """Greyscale frame (any numeric dtype, H x W) -> float32 network input.

    ``percentile``: map the frame's low/high percentiles to 0/1, clip to [clip_low, clip_high],
    subtract ``offset``. Unitless. With ``local_contrast`` ({"clip_limit", "tile_grid"}), the
    change CLAHE makes to the frame's 0-1 range is added before the clip, so that a region's
    brightness counts relative to its neighbourhood (another machine's depth gain or a brighter
    examination) while the bright tail above the high percentile (bone) is kept.
    """
    norm = normalisation or DEFAULT_NORMALISATION
    if norm.get("kind") != "percentile":
        raise ValueError(f"unknown normalisation kind {norm.get('kind')!r}")
    x = np.asarray(pixels, dtype=np.float32)
    lo, hi = np.percentile(x, [norm["low_percentile"], norm["high_percentile"]])
    # The floor keeps a flat frame's noise from being blown up; relative to the frame's own spread of
    # values below 1, as a float frame's whole range may be a millionth, on any offset (its AoP had read
    # 3-31 deg off). A frame spreading a grey level or more (every 8- or 16-bit one) keeps 1e-3.
    spread = float(x.max() - x.min()) if x.size else 0.0
    scale = 1.0 / max(float(hi - lo), 1e-3 * (min(1.0, spread) if spread > 0 else 1.0))
    x = (x - np.float32(lo)) * np.float32(scale)
    local = norm.get("local_contrast")
    if local:
        unit = np.clip(x, 0.0, 1.0)
        grid = int(local["tile_grid"])
        clahe = cv2.createCLAHE(clipLimit=float(local["clip_limit"]), tileGridSize=(grid, grid))
        equalised = clahe.apply(np.round(unit * 255.0).astype(np.uint8)).astype(np.float32) / np.float32(255.0)
        x += equalised - unit
    np.clip(x, norm["clip_low"], norm["clip_high"], out=x)
    x -= np.float32(norm["offset"])
    return x


def pad_to_square(pixels: np.ndarray, fill: float | None = None) -> np.ndarray:
    """Pad a 2-D array (or one with channels last) at the bottom or right to a square of its
    longer side, so that resizing it to a square network input keeps the frame's aspect ratio.

    ``fill``: the value of the padding; by default the array's darkest finite value, its
    background (0 for an 8-bit frame; a frame in dB or with an offset has another black, and
    padding brighter or darker than it would change what the network sees and how the frame is
    normalised). Give 0 for a label mask."""
    h, w = pixels.shape[:2]
    if h == w:
        return pixels
    if fill is None:
        finite = pixels[np.isfinite(pixels)] if np.issubdtype(pixels.dtype, np.floating) else pixels
        fill = finite.min() if finite.size else 0
    side = max(h, w)
    return np.pad(pixels, ((0, side - h), (0, side - w)) + ((0, 0),) * (pixels.ndim - 2), constant_values=fill)


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image to (height, width) with area averaging when shrinking, linear otherwise."""
    h, w = size
    if pixels.shape[:2] == (h, w):
        return pixels
    shrinking = pixels.shape[0] > h or pixels.shape[1] > w
    return cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label mask to (height, width) by nearest neighbour (labels are not averaged), pixel
    centres aligned as :func:`resize_image` aligns them (OpenCV's plain nearest neighbour takes
    each block's first pixel: a mask resized so lay 0.3-0.6 px down and right of its image)."""
    h, w = size
    if labels.shape[:2] == (h, w):
        return labels
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
