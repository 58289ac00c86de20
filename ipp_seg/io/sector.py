"""The imaged sector of an ultrasound frame, told from the frame itself.

A transperineal frame is taken with a curved (convex) probe: its echoes fill a sector whose apex,
the probe, is at the top of the displayed frame, and which widens with depth. Outside the sector
the frame is black. The sector is found here as the largest region above the frame's own black
level (the median of its outer ring, or its 5th percentile where that is darker, so that the rule
holds under gain changes and on a grey background), with dark regions inside it (fluid, shadow)
closed, and then as that region's convex hull. Text, scale bars and tick marks more than a few
pixels (6 % of the frame) from it are separate regions, and are left out.

The frame is first resized to 256 x 256 (the PSFHS size), so that the kernel sizes hold for any
input size and every width is a fraction of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ABOVE_BLACK", "CONTENT_ABOVE_BLACK", "MAX_SECTOR_NARROWING", "WORK_SIZE", "SectorProfile", "black_level",
           "content_box", "sector_narrowing", "sector_profile", "to_grey", "working_grey"]

WORK_SIZE = 256  # pixels; the frame is resized to this square before its sector is read
_RING_PX = 3
# A blurred pixel counts as echo when it is this many grey levels (0-255 scale) above the black level.
ABOVE_BLACK = 2.0
_CLOSE_KERNEL = np.ones((15, 15), np.uint8)  # fills dark regions inside the sector (fluid, shadow)
# Where the sector's width is read, as fractions of its height from its top: near the probe,
# and deep in it (not at its very ends: the probe face's arc, and the far edge's).
_NEAR_ROWS = (0.10, 0.25)
_DEEP_ROWS = (0.75, 0.90)

#: A sector wider near the top of the frame than deep in it by more than this is upside down
#: (the probe at the bottom). On the 1,058 PSFHS frames as recorded the ratio is at most 1.07
#: (99th percentile 0.87, median 0.59; read even where the sector meets the top edge, as there
#: the probe face does), and at most 1.16 on upright frames put into screen captures, padding and
#: other exports that a helper built to make the check fail; turned by 180 degrees (or flipped top
#: to bottom), 81 % of them are read and exceed it, and so do all 20 of the validation frames that
#: the default's twin measures turned with no other warning about the frame (1.49 or more;
#: benchmarks/sector_orientation.py, RESULTS.md).
MAX_SECTOR_NARROWING = 1.3


@dataclass(frozen=True)
class SectorProfile:
    """What :func:`sector_profile` reads of a frame's imaged sector.

    ``narrowing``: the sector's median width over rows 10-25 % of its height from its top, over
    that over rows 75-90 % (unitless; below 1 for a sector widening with depth, as a probe at the
    top gives it). ``meets_top``: whether the sector reaches the frame's top edge.
    """

    narrowing: float
    meets_top: bool


def to_grey(image: np.ndarray) -> np.ndarray:
    """A frame as one float32 (H, W) plane: (H, W, C) and (C, H, W) arrays with C in 1, 3, 4
    (colour, or the PSFHS frame stored three times) are averaged over their colour planes."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
            arr = arr[..., :3] if arr.shape[-1] == 4 else arr  # alpha carries no echo
            arr = arr.mean(axis=-1)
        elif arr.shape[0] in (1, 3, 4):
            arr = (arr[:3] if arr.shape[0] == 4 else arr).mean(axis=0)
        else:
            raise ValueError(f"image must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; got {arr.shape}")
    elif arr.ndim != 2:
        raise ValueError(f"image must be a 2-D greyscale frame, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("image is empty")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"image must hold numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def black_level(grey: np.ndarray) -> float:
    """Median grey level of the frame's outer ring: the black border (0 or 1 in PSFHS, more on
    a machine with a raised floor or after a gain change)."""
    r = _RING_PX
    ring = np.concatenate([grey[:r].ravel(), grey[-r:].ravel(), grey[r:-r, :r].ravel(), grey[r:-r, -r:].ravel()])
    return float(np.median(ring))


#: A pixel is content, for :func:`content_box`, this many grey levels (0-255 scale) above the
#: frame's black level: above JPEG's ringing beside a black edge, below the faintest echoes.
CONTENT_ABOVE_BLACK = 16.0


def content_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), pixels with x1 and y1 exclusive: the smallest box holding every pixel
    brighter than the frame's black level (:func:`black_level`) by :data:`CONTENT_ABOVE_BLACK`
    (of the 0-255 scale, a frame of another scale mapped onto it as :func:`working_grey` does;
    (H, W) or with colour planes, :func:`to_grey`), or None for a frame with no
    such pixel. Rows and columns beyond it are black: a border, or a crop padded back to its
    size. A box, not the sector's outline: experts draw the PS across the sector's slanted edge."""
    grey = _on_255_scale(to_grey(image))
    bright = grey > black_level(grey) + CONTENT_ABOVE_BLACK
    rows, columns = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    if not len(rows):
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def _on_255_scale(grey: np.ndarray) -> np.ndarray:
    """A float plane on the 0-255 scale the thresholds here are grey levels of: one of another
    scale (floats of 0-1, or beyond 255; the readers pass float files through as they are) is
    mapped from its own range onto 0-255. NaN and infinities count as 0."""
    grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(grey.min()), float(grey.max())
    if (low < 0 or high > 255 or high <= 1.0) and high > low:
        grey = (grey - low) * (255.0 / (high - low))
    return grey


def working_grey(image: np.ndarray) -> np.ndarray:
    """:func:`to_grey` of ``image`` on the 0-255 scale, resized to WORK_SIZE x WORK_SIZE. A frame
    of another scale (floats of 0-1, or beyond 255; the readers pass float files through as they
    are) is first mapped from its own range onto 0-255: the thresholds are grey levels of that scale."""
    grey = _on_255_scale(to_grey(image))
    if grey.shape != (WORK_SIZE, WORK_SIZE):
        grey = cv2.resize(grey, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA)
    return grey


def sector_profile(image: np.ndarray) -> SectorProfile | None:
    """The shape of the imaged sector of a greyscale frame (0-255 scale; (H, W) or with colour
    planes, :func:`to_grey`), or None when the frame shows none (blank, or a strip)."""
    grey = working_grey(image)
    black = min(black_level(grey), float(np.percentile(grey, 5)))
    echo = (cv2.GaussianBlur(grey, (5, 5), 0) > black + ABOVE_BLACK).astype(np.uint8)
    echo = cv2.morphologyEx(echo, cv2.MORPH_CLOSE, _CLOSE_KERNEL)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(echo, connectivity=8)
    if count < 2:
        return None
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # The hull of a region is that of its outline: far fewer points than its pixels (0.1 ms, not 2).
    outline, _ = cv2.findContours(largest, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    sector = np.zeros_like(largest)
    cv2.fillConvexPoly(sector, cv2.convexHull(np.concatenate(outline)), 1)
    rows = np.flatnonzero(sector.any(axis=1))
    top, height = int(rows[0]), int(rows[-1] - rows[0])
    widths = sector.sum(axis=1).astype(np.float64)
    if height < WORK_SIZE // 4:  # a strip: no sector's shape to read
        return None

    def median_width(band: tuple[float, float]) -> float:
        return float(np.median(widths[top + int(band[0] * height): top + int(band[1] * height) + 1]))

    deep = median_width(_DEEP_ROWS)
    return SectorProfile(median_width(_NEAR_ROWS) / deep, top <= _RING_PX) if deep > 0 else None


def sector_narrowing(image: np.ndarray) -> float | None:
    """:attr:`SectorProfile.narrowing` of a frame's sector where it tells how the frame is
    displayed, else None: also where the sector reaches the frame's top edge. A probe at the top
    puts it there (the probe face meets the top edge of every PSFHS frame), and so do a crop or
    zoom that cuts the sector, echoes from edge to edge (a linear probe) and a banner or text the
    sector joins at the top of a screen capture, none of which shows where the probe is. A frame
    turned upside down shows the sector's far end there instead, short of the edge."""
    profile = sector_profile(image)
    return None if profile is None or profile.meets_top else profile.narrowing
