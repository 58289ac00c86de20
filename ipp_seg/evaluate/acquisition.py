"""Acquisition style of an ultrasound frame, told from the frame itself (not from case IDs).

The PSFHS / FH-PS-AOP frames come from at least two acquisition styles:

* ``"wide"``: a wide sector whose curved far end lies well above the bottom of the frame;
* ``"narrow"``: a narrow, deep sector in a black border, still widening where it meets the
  bottom of the frame (IDs 04302-04401 of the shared data).

The sector is found as the convex hull of the non-black pixels: after a light blur, pixels
2 grey levels above the black level (the median of the frame's outer ring) count, a
morphological opening removes text, scale bars and tick marks, and components below a
minimum area are dropped. Measuring from the frame's own black level keeps the rule stable
under gain changes (checked on every narrow and every third wide shared frame: all keep
their style under gains x0.4 to x4). The hull, unlike the raw threshold, is not fooled by
anechoic regions inside the sector, which are as black as the border in the wide style.

What tells the styles apart is the sector's width deep in the frame, at
:data:`DEEP_ROW_FRACTION` of its height: on the 1,058 shared frames it is 0.90-0.95 of the
frame width for every narrow frame and at most 0.61 for every wide one (all 1,058 are
classified as their ID ranges say); the share of the frame inside the sector (0.71-0.77
narrow, 0.54-0.78 wide) does not separate them.

The frame is first resized to 256 x 256 (the PSFHS size), so widths and heights are fractions
of the frame and the kernel sizes below hold for any input size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..io.sector import ABOVE_BLACK as _ABOVE_BLACK
from ..io.sector import WORK_SIZE as _WORK_SIZE
from ..io.sector import black_level as _black_level
from ..io.sector import working_grey

__all__ = [
    "DEEP_ROW_FRACTION",
    "DEEP_WIDTH_THRESHOLD",
    "STYLES",
    "SectorShape",
    "acquisition_style",
    "sector_shape",
]

logger = logging.getLogger(__name__)

STYLES: tuple[str, ...] = ("wide", "narrow", "unknown")

DEEP_ROW_FRACTION = 0.85  # row (fraction of the frame height) where the sector width is read
# Between the widest wide-style sector (0.61) and the narrowest narrow-style one (0.90)
# measured on the shared frames at DEEP_ROW_FRACTION.
DEEP_WIDTH_THRESHOLD = 0.74

_OPEN_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_MIN_COMPONENT_PX = 100  # at the working size; smaller bright specks are annotations


@dataclass(frozen=True)
class SectorShape:
    """Shape of the imaged sector (its convex hull), as fractions of the frame (unitless, 0-1).

    ``sector_share``: share of the frame's area inside the sector. ``deep_width``: sector width
    at :data:`DEEP_ROW_FRACTION` of the frame height over the frame width. ``bottom_reach``:
    lowest sector row over the frame height.
    """

    sector_share: float
    deep_width: float
    bottom_reach: float


def sector_shape(image: np.ndarray) -> SectorShape | None:
    """Shape of the sector of a greyscale frame (0-255 scale), or None when none is visible.

    ``image``: (H, W) uint8 or float array; (H, W, C) and (C, H, W) arrays with C in 1, 3, 4
    (colour, or the PSFHS frame stored three times) are averaged over their colour planes.
    """
    grey = working_grey(image)
    smooth = cv2.GaussianBlur(grey, (5, 5), 0)
    inside = (smooth > _black_level(grey) + _ABOVE_BLACK).astype(np.uint8)
    inside = cv2.morphologyEx(inside, cv2.MORPH_OPEN, _OPEN_KERNEL)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=8)
    kept = 1 + np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= _MIN_COMPONENT_PX)
    if kept.size == 0:
        return None
    ys, xs = np.nonzero(np.isin(labels, kept))
    hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
    sector = np.zeros((_WORK_SIZE, _WORK_SIZE), dtype=np.uint8)
    cv2.fillPoly(sector, [hull], 1)
    rows = np.flatnonzero(sector.any(axis=1))
    deep_row = int(DEEP_ROW_FRACTION * _WORK_SIZE)
    return SectorShape(
        sector_share=float(sector.mean()),
        deep_width=float(sector[deep_row].sum()) / _WORK_SIZE,
        bottom_reach=float(rows[-1] + 1) / _WORK_SIZE,
    )


def acquisition_style(image: np.ndarray) -> str:
    """``"narrow"`` or ``"wide"`` acquisition style of a greyscale frame (0-255 scale).

    ``"unknown"`` when the frame shows no sector (for example an all-black frame). See the
    module docstring for the rule and its calibration.
    """
    shape = sector_shape(image)
    if shape is None:
        logger.debug("no imaged sector found: acquisition style unknown")
        return "unknown"
    return "narrow" if shape.deep_width >= DEEP_WIDTH_THRESHOLD else "wide"
