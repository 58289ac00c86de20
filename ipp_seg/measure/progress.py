"""Angle of progression (AoP) and head-symphysis distance (HSD) from a PS/FH label mask.

Conventions (see the measurement issue):

* The inferior end of the pubic symphysis (PS) is the end of its long axis on the right of
  the displayed frame (larger x) for ``orientation="standard"``, the left one for
  ``"mirrored"``. This is the display convention of the FH-PS-AOP 2023 and IUGC 2024 data.
* All geometry is done in physical space: pixel coordinates are multiplied by the spacing
  (mm per pixel along x and y) first. Unknown spacing means square pixels of side 1, and
  distances in pixels only.
* AoP: angle at the inferior end from the PS axis (pointing to the superior end) to the line
  tangent to the fetal head (FH), of the two tangents the one giving the larger angle. The
  ``ellipse`` and ``contour`` methods measure the angle turning from the PS axis towards the
  head, so it can exceed 180 deg when the head has passed the axis' extension (9 of the 1,058
  PSFHS ground-truth masks); ``challenge`` keeps the evaluator's law-of-cosines angle, which
  folds such angles back below 180 deg.
* HSD: distance from the inferior end to the FH contour along the infrapubic line (through
  the inferior end, perpendicular to the PS axis, towards the head; Youssef et al. 2013).

Methods:

* ``ellipse`` (default): ``cv2.fitEllipse`` on the whole sub-pixel boundary of the largest
  component of each structure (midpoints between foreground pixels and their background
  4-neighbours, i.e. the marching-squares contour). PS ends are the PS ellipse's long-axis
  ends; the tangent to the FH ellipse is exact (closed form). Mirror-invariant to rounding
  error and stable under rotation.
* ``challenge``: the FH-PS-AOP 2023 evaluator: the external contour with most points,
  ``approxPolyDP`` (epsilon 1 px), ``fitEllipse``; its PS end formula (including its
  0.01745 rad/deg factor) and the larger law-of-cosines tangent angle. It reproduces the
  published reference AoP but inherits its instability: the few polygon vertices left on the
  small PS make the fit swing when the mask is mirrored or rotated.
* ``contour``: no ellipse: PS ends are the farthest pair of PS boundary points (convex hull),
  the tangent point is the FH boundary point whose line through the inferior end leaves the
  whole head on one side (the IUGC 2024 kit's approach).

Measured on the 1,058 PSFHS ground-truth masks (benchmarks/measure_reference_agreement.py;
rotation = nearest-neighbour +/-15 deg on a padded canvas; degrees):

* ellipse:   vs reference median 1.1, p95 5.4; mirror change max 1e-5;
             rotation change median 0.17, p95 0.58, 99.6 % within 1.
* challenge: vs reference median 3e-5 (its own procedure); mirror change > 0.5 in 19 % of
             cases, max 11.4; rotation change median 1.6, p95 6.6, max 20.
* contour:   vs reference median 3.5, p95 12.6; mirror change 0 (tied farthest pairs are
             averaged); rotation change median 1.2, p95 5.9, max 23.

HSD and the shortest PS-FH distance are measured to the FH boundary (marching-squares
contour of its largest component, holes filled) with every method.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import IppSegError
from . import geometry as geo
from .result import (METHODS, ORIENTATIONS, REASONS, SPACING_SOURCES, Landmarks, Measurement, check_spacing,
                     failing_reasons_first)

__all__ = ["measure_progress", "geometry_scale", "MAX_PIXEL_ASPECT", "MIN_AREA_PX", "FRAGMENT_FRACTION",
           "MIN_FH_ELLIPSE_IOU", "AOP_RANGE_DEG", "AOP_IMPOSSIBLE_ABOVE_DEG", "MAX_PS_AXIS_RATIO",
           "MAX_MEASURABLE_PS_AXIS_RATIO", "MAX_BEYOND_FRAME", "share_beyond_frame",
           "PLAUSIBLE_SPACING_MM", "MIN_FIELD_OF_VIEW_MM", "MAX_FIELD_OF_VIEW_MM",
           "check_plausible_spacing", "check_choice", "check_image_box", "check_label_values", "MIN_IMAGE_BOX_SIDE",
           "MIN_ORIENTATION_SCORE",
           "orientation_score", "mask_orientation_score"]

logger = logging.getLogger(__name__)

MIN_AREA_PX = 30  # components smaller than this (pixels) carry no usable shape
FRAGMENT_FRACTION = 0.10  # another component above this fraction of the kept one is reported
MIN_FH_ELLIPSE_IOU = 0.85
AOP_RANGE_DEG = (60.0, 200.0)
# Above this the display convention assumed cannot be the frame's: the largest AoP of the 1,058
# PSFHS expert masks is 199.5 deg by the ellipse method (194.6 by the contour one); an upside-down
# frame gives 230-360. Swept as the default method sweeps for every method: the challenge
# method's unsigned angle never exceeds 180, and folds such a head into a plausible number.
AOP_IMPOSSIBLE_ABOVE_DEG = 240.0
NEAR_VERTICAL_DEG = 10.0
# A PS rounder than this (short/long axis ratio from second moments, physical units) has no
# well-defined long axis: a few boundary pixels turn it, and the AoP with it. 0.70 is the
# 99.5th percentile of the expert PS outlines of the 828 PSFHS training frames (median 0.56,
# max 0.75; 7 of all 1,058 expert masks exceed it). On the held-out blocks the held-out models'
# PS exceeds it in 4-6 of 230 frames, 4-5 of them with an AoP error above 10 deg
# (benchmarks/RESULTS.md).
MAX_PS_AXIS_RATIO = 0.70
# Rounder still, the long axis is not the shape's but the outline's noise: a disc's turns with a
# one-pixel shift. No expert PS outline of the 1,058 comes near it (max 0.75).
MAX_MEASURABLE_PS_AXIS_RATIO = 0.90
# Thinner than a quarter of its length, a PS is a sliver or a line (no expert outline of the 1,058 is under 0.38,
# nor the default model's on them under 0.42): an ellipse fitted to its straight sides runs past its ends (by 12 px
# for a 60 x 4 px bar, 5.5 deg off the angle at its end), and its axis hangs on a few pixels (a reviewer's pass).
MIN_PS_AXIS_RATIO = 0.25
# A structure the frame's edge cuts: the share of the ellipse fitted to its outline inside the
# frame that lies beyond the frame. On 106 PSFHS expert masks cut by 2-30 % from each side, the
# AoP moved by a median 0.2-1.8 deg where less than 0.10 of the PS lay beyond, and 3.3-12.0 deg
# (over 5 deg in 31-86 % of frames) where more; for the head 0.3-1.3 against 2.1-3.1 deg (20-34 %
# over 5): benchmarks/frame_edge_cuts.py. Beyond it the structure measured is not the one imaged.
MAX_BEYOND_FRAME = 0.10
# The HSD is where a ray meets a curve: the infrapubic line meets the head at a grazing angle when
# the AoP is just above 90 deg (below it the line passes the head: hsd_undefined), and then a
# small turn of the PS axis moves the HSD far. Turned by HSD_AXIS_TURN_DEG either way (less than
# the 2.4 deg that separates two expert readings of the same frame, benchmarks/annotation_floor.py),
# the axis moves the HSD by less than 14 % in 99 % of the 933 PSFHS expert masks that give one; by
# more than HSD_MAX_TURN_CHANGE, or off the head, in 16 (1.7 %), all with an AoP of 89-93 deg
# (benchmarks/hsd_stability.py). On the validation frames, the held-out twins' HSDs so flagged
# are off the expert mask's by a median 14-20 px, the others by 5.5-6.2 px.
HSD_AXIS_TURN_DEG = 2.0
HSD_MAX_TURN_CHANGE = 0.20
# mm per pixel of a transperineal frame: about 0.1-0.5 in practice. A calibration outside this
# range is a unit slip (mm written where cm belong, a thumbnail's region) or a damaged header:
# distances from it are withheld, not reported.
PLAUSIBLE_SPACING_MM = (0.01, 2.0)
# A transperineal image that shows a symphysis and a head is several centimetres across (PSFHS:
# about 9 cm at 0.35 mm per pixel). One calibrated to less than this across, at its widest, has
# a unit slip of ten inside the per-pixel range (0.0035 cm written for 0.035 cm: 0.035 mm per
# pixel made a 256-pixel frame 9 mm deep, and an HSD of 0.5 mm).
MIN_FIELD_OF_VIEW_MM = 30.0
# ...and less than this: scanners image 20-30 cm deep at most, and a transperineal view much less. One
# calibrated to more, at its widest, has a unit slip the per-pixel range lets pass (a clinical safety
# pass: 1.5 mm for 0.15 mm per pixel made an 800 x 600 frame 1.2 m across and its HSD 206 mm, status
# ok; --spacing-mm 2 on a 256-pixel frame, an HSD of 112 mm).
MAX_FIELD_OF_VIEW_MM = 400.0
# Scan-converted B-mode pixels are square or nearly so. A calibration whose pixels are more than
# this many times taller than wide (or wider than tall) is a damaged one: inference does not
# reshape the frame by it, and the measurement does not stretch the geometry by it either.
MAX_PIXEL_ASPECT = 4.0


def _pixel_aspect_plausible(spacing_mm: tuple[float, float]) -> bool:
    return max(spacing_mm) <= MAX_PIXEL_ASPECT * min(spacing_mm)


def geometry_scale(spacing_mm: tuple[float, float] | None) -> tuple[float, float]:
    """The (x, y) mm per pixel the measurement's geometry is taken in: the spacing, or (1, 1)
    (the stored pixel grid) when it is unknown or its pixels are more than
    :data:`MAX_PIXEL_ASPECT` to 1, or, outside :data:`PLAUSIBLE_SPACING_MM`, its aspect ratio
    alone (the finer axis 1). A drawing of the measurement uses the same."""
    if spacing_mm is None or not _pixel_aspect_plausible(spacing_mm):
        return (1.0, 1.0)
    if not _in_plausible_range(spacing_mm):
        # A unit slip's millimetres are withheld: its aspect alone, on the finer axis's pixels (a
        # header's 1e160 mm had overflowed the ellipse fits: failed, with numpy's warnings).
        finer = min(spacing_mm)
        return (float(spacing_mm[0] / finer), float(spacing_mm[1] / finer))
    return (float(spacing_mm[0]), float(spacing_mm[1]))


def _in_plausible_range(spacing_mm: tuple[float, float]) -> bool:
    return all(PLAUSIBLE_SPACING_MM[0] <= v <= PLAUSIBLE_SPACING_MM[1] for v in spacing_mm)


def _plausible_spacing(spacing_mm: tuple[float, float]) -> bool:
    return _in_plausible_range(spacing_mm) and _pixel_aspect_plausible(spacing_mm)


def _plausible_field(spacing_mm: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    """Whether an image of ``box`` (x0, y0, x1, y1 pixels) at ``spacing_mm`` is at least
    :data:`MIN_FIELD_OF_VIEW_MM` and at most :data:`MAX_FIELD_OF_VIEW_MM` across at its widest."""
    x0, y0, x1, y1 = box
    return MIN_FIELD_OF_VIEW_MM <= max((x1 - x0) * spacing_mm[0], (y1 - y0) * spacing_mm[1]) <= MAX_FIELD_OF_VIEW_MM


def check_plausible_spacing(spacing_mm: tuple[float, float] | None) -> None:
    """Refuse (ValueError) a caller's spacing that no ultrasound pixel has: a calibration in
    another unit (cm, or pixels per mm) would give HSDs off by 10x or more, and pixels more than
    :data:`MAX_PIXEL_ASPECT` times taller than wide (or the reverse) a distorted geometry. None
    passes."""
    if spacing_mm is None or _plausible_spacing(spacing_mm):
        return
    low, high = PLAUSIBLE_SPACING_MM
    if _in_plausible_range(spacing_mm):
        raise ValueError(f"pixels of {float(spacing_mm[0])!r} x {float(spacing_mm[1])!r} mm are more than "
                         f"{MAX_PIXEL_ASPECT:g} "
                         "times taller than wide or wider than tall, which no ultrasound image has (a mistyped or "
                         "damaged calibration): check the x and y mm per pixel")
    raise ValueError(f"an ultrasound pixel is {low}-{high} mm; give millimetres per pixel (a calibration in cm "
                     "per pixel times 10)")


# Which end is inferior is a display convention the mask does not state, but the anatomy leans
# one way on the display: with the standard convention the PS's inferior end lies higher than
# its superior end, and the head's centre lies on the inferior end's side of the PS's centre.
# A frame shown mirrored reverses both. The score (see orientation_score) is below
# MIN_ORIENTATION_SCORE for 1 % of the expert outlines of the 828 PSFHS training frames, and
# for about 3 in 4 of the same outlines mirrored (benchmarks/orientation_check.py): a warning
# worth heeding, not a test a single frame can pass or fail with certainty.
ORIENTATION_HEAD_SIDE_WEIGHT = 0.25
MIN_ORIENTATION_SCORE = -0.18
# The FH-PS-AOP 2023 evaluator converts degrees to radians with this truncated factor; the
# published reference values depend on it (to ~0.01 deg), so the challenge method keeps it.
_CHALLENGE_DEG2RAD = 0.01745


@dataclass(frozen=True)
class _Structure:
    """Largest component of one label, holes filled, with its sub-pixel boundary (pixel coords)."""

    filled: np.ndarray  # bool, tight crop of the component
    origin: tuple[int, int]  # pixel (x, y) of filled[0, 0]
    centroid_px: np.ndarray  # (2,) x, y
    points_px: np.ndarray  # (N, 2) marching-squares vertices
    segments_px: np.ndarray  # (M, 2, 2) marching-squares segments


# ----------------------------------------------------------------------------- validation


def _check_mask(label_mask) -> np.ndarray:
    mask = np.asarray(label_mask)
    if mask.ndim != 2:
        raise ValueError(f"label_mask must be a 2-D (rows, columns) array, got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"label_mask must hold integer labels, got dtype {mask.dtype}")
    if min(mask.shape) < 2:
        raise ValueError(f"label_mask is too small to measure: shape {mask.shape}")
    return mask


def check_choice(value, allowed: tuple[str, ...], name: str) -> str:
    """``value`` if it is one of the strings ``allowed``; else ValueError naming ``name``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_label_values(ps_label, fh_label) -> tuple[int, int]:
    """The PS and FH label values as ints: two different positive integers; else ValueError."""
    for name, v in (("ps_label", ps_label), ("fh_label", fh_label)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{name} must be an integer label value, got {v!r}")
        if int(v) <= 0:
            raise ValueError(f"{name} must be a positive label value (0 is background), got {v!r}")
    if int(ps_label) == int(fh_label):
        raise ValueError(f"ps_label and fh_label must differ, both are {int(ps_label)}")
    return int(ps_label), int(fh_label)


# An image box narrower or lower than this (pixels) holds no image: the whole frame is taken.
MIN_IMAGE_BOX_SIDE = 16


def check_image_box(box, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``box`` (x0, y0, x1, y1) clipped to a frame of ``shape`` (rows, columns), as ints; None
    (the whole frame) for None or a box under :data:`MIN_IMAGE_BOX_SIDE` either way, as
    inference then shows the network the whole frame."""
    if box is None:
        return None
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"image_box must be (x0, y0, x1, y1) or None, got {box!r}") from None
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)
    return (x0, y0, x1, y1) if x1 - x0 >= MIN_IMAGE_BOX_SIDE and y1 - y0 >= MIN_IMAGE_BOX_SIDE else None


# ----------------------------------------------------------------------------- structures


def share_beyond_frame(points_px: np.ndarray, frame_shape: tuple[int, int], scale=(1.0, 1.0),
                       image_box: tuple[int, int, int, int] | None = None) -> float:
    """How much of a structure the frame's edge cuts off (dimensionless, 0-1): fit an ellipse to
    its outline ``points_px`` ((N, 2) pixel x, y, as :func:`~ipp_seg.measure.geometry.boundary_points`
    gives them) where they lie inside the frame of ``frame_shape`` (rows, columns), the part
    along the frame's edge left out, and return the share of that ellipse's area beyond the
    frame. Fitted in physical units (``scale``: x, y units per pixel). ``image_box`` (x0, y0,
    x1, y1; x1 and y1 excluded) is the part of the frame that holds the image, where it is not
    the whole frame (a DICOM screen capture's ultrasound region): its edges are the frame's.
    0 for an outline that meets no edge; 1 when too little of it is left to fit."""
    pts = np.asarray(points_px, dtype=np.float64)
    x0, y0, x1, y1 = image_box if image_box is not None else (0, 0, frame_shape[1], frame_shape[0])
    inside = (pts[:, 0] > x0) & (pts[:, 1] > y0) & (pts[:, 0] < x1 - 1) & (pts[:, 1] < y1 - 1)
    if inside.all():
        return 0.0
    sx, sy = float(scale[0]), float(scale[1])
    ell = geo.fit_ellipse(pts[inside] * (sx, sy))
    if ell is None:
        return 1.0
    # The ellipse's area sampled on a polar grid of equal-area cells, then put back in pixels.
    radius = np.sqrt((np.arange(24) + 0.5) / 24)[:, None]
    turn = (np.arange(96) + 0.5) * (2 * np.pi / 96)
    u, v = (radius * np.cos(turn)).ravel(), (radius * np.sin(turn)).ravel()
    (mx, my), (nx, ny) = ell.major_dir, ell.minor_dir
    x = (ell.center[0] + ell.semi_major * u * mx + ell.semi_minor * v * nx) / sx
    y = (ell.center[1] + ell.semi_major * u * my + ell.semi_minor * v * ny) / sy
    beyond = (x < x0 - 0.5) | (y < y0 - 0.5) | (x > x1 - 0.5) | (y > y1 - 0.5)
    return float(beyond.mean())


def _extract(binary: np.ndarray, prefix: str, reasons: list[str], scale=(1.0, 1.0),
             image_box: tuple[int, int, int, int] | None = None) -> _Structure | None:
    """Keep the largest 8-connected component of ``binary``; note missing / small / fragmented,
    at the frame's edge, or cut off by it (``scale``: x, y units per pixel, to judge the cut;
    ``image_box``: the part of the frame holding the image, see :func:`share_beyond_frame`)."""
    u8 = binary.view(np.uint8)
    n, labels = cv2.connectedComponents(u8, connectivity=8)
    if n < 2:
        reasons.append(f"{prefix}_missing")
        return None
    areas = np.bincount(labels.ravel(), minlength=n)[1:]
    order = np.argsort(areas)[::-1]
    keep = int(order[0]) + 1
    area = int(areas[order[0]])
    if n > 2 and areas[order[1]] > FRAGMENT_FRACTION * area:
        reasons.append(f"{prefix}_fragmented")
    if area < MIN_AREA_PX:
        reasons.append(f"{prefix}_too_small")
        return None
    comp = (labels == keep).view(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    x0, y0, w, h = cv2.boundingRect(contours[0])
    bx0, by0, bx1, by1 = image_box if image_box is not None else (0, 0, binary.shape[1], binary.shape[0])
    at_edge = x0 <= bx0 or y0 <= by0 or x0 + w >= bx1 or y0 + h >= by1
    crop = np.zeros((h, w), dtype=np.uint8)
    # Filling the outer contour closes holes, so the boundary is the outline only.
    cv2.drawContours(crop, contours, -1, 1, thickness=cv2.FILLED, offset=(-x0, -y0))
    mom = cv2.moments(crop, binaryImage=True)
    filled = crop.view(bool)
    points = geo.boundary_points(filled, (x0, y0))
    if at_edge:
        cut_off = share_beyond_frame(points, binary.shape, scale, image_box) >= MAX_BEYOND_FRAME
        reasons.append(f"{prefix}_cut_off" if cut_off else f"{prefix}_at_frame_edge")
    return _Structure(
        filled=filled,
        origin=(x0, y0),
        centroid_px=np.array([x0 + mom["m10"] / mom["m00"], y0 + mom["m01"] / mom["m00"]]),
        points_px=points,
        segments_px=geo.boundary_segments(filled, (x0, y0)),
    )


def structures_touch(a: _Structure, b: _Structure) -> bool:
    """Whether a pixel of ``a`` lies next to one of ``b`` (the 8 pixels around it): two
    structures drawn touching, whose boundary there is one label's against the other's."""
    (ax, ay), (ah, aw) = a.origin, a.filled.shape
    (bx, by), (bh, bw) = b.origin, b.filled.shape
    # ``a`` grown by a pixel, on a canvas one pixel larger on every side than its crop.
    grown = np.zeros((ah + 2, aw + 2), dtype=np.uint8)
    grown[1:-1, 1:-1] = a.filled
    grown = cv2.dilate(grown, np.ones((3, 3), np.uint8)).view(bool)
    x0, y0 = max(ax - 1, bx), max(ay - 1, by)
    x1, y1 = min(ax + aw + 1, bx + bw), min(ay + ah + 1, by + bh)
    if x0 >= x1 or y0 >= y1:
        return False
    return bool((grown[y0 - ay + 1:y1 - ay + 1, x0 - ax + 1:x1 - ax + 1]
                 & b.filled[y0 - by:y1 - by, x0 - bx:x1 - bx]).any())


def _challenge_ellipse_box(binary: np.ndarray, scale: np.ndarray, reasons: list[str], prefix: str):
    """The FH-PS-AOP 2023 evaluator's fit: the external contour with most points, approxPolyDP(1), fitEllipse.

    Simplification is done on the pixel grid as the evaluator does; vertices are then scaled
    to physical space. Returns the cv2 box or None when 5 or fewer vertices remain. Where the
    contour of most points is not that of the largest piece (a thin speck outlined by more
    points than the structure), ``{prefix}_fragmented`` is noted: the angle is the evaluator's,
    measured on that speck (a reviewer's pass: 69 deg for 105, with no word).
    """
    contours, _ = cv2.findContours(binary.view(np.uint8) * np.uint8(255), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    # First contour with the largest point count, as the evaluator's strict ">" picks it.
    chosen = int(np.argmax([c.shape[0] for c in contours]))
    largest = contours[chosen]
    if chosen != int(np.argmax([cv2.contourArea(c) for c in contours])) and f"{prefix}_fragmented" not in reasons:
        reasons.append(f"{prefix}_fragmented")
    approx = cv2.approxPolyDP(largest, 1, closed=True)
    if approx.shape[0] <= 5:
        return None
    pts = approx.reshape(-1, 2).astype(np.float64) * scale
    box = cv2.fitEllipse(pts.astype(np.float32))
    (cx, cy), (w, h), ang = box
    if not (np.isfinite([cx, cy, w, h, ang]).all() and w > 0 and h > 0):
        return None
    return box


def _challenge_ps_ends(box) -> tuple[np.ndarray, np.ndarray]:
    """Evaluator's PS end points: along the ``h`` axis at angle - 90 deg (its deg->rad factor kept)."""
    (cx, cy), (_, h), ang = box
    th = (ang - 90.0) * _CHALLENGE_DEG2RAD
    d = 0.5 * h * np.array([math.cos(th), math.sin(th)])
    c = np.array([cx, cy], dtype=np.float64)
    return c - d, c + d


def _ellipse_iou(e: geo.Ellipse, st: _Structure, shape: tuple[int, int], scale: np.ndarray) -> float:
    """IoU (pixel counts inside the frame) of a structure and an ellipse given in physical coordinates."""
    (ux, uy), (vx, vy) = e.major_dir, e.minor_dir
    half = np.array(
        [math.hypot(e.semi_major * ux, e.semi_minor * vx), math.hypot(e.semi_major * uy, e.semi_minor * vy)]
    ) / scale
    c = np.asarray(e.center) / scale
    sx0, sy0 = st.origin
    sh, sw = st.filled.shape
    x0 = max(0, min(sx0, int(math.floor(c[0] - half[0]))))
    x1 = min(shape[1] - 1, max(sx0 + sw - 1, int(math.ceil(c[0] + half[0]))))
    y0 = max(0, min(sy0, int(math.floor(c[1] - half[1]))))
    y1 = min(shape[0] - 1, max(sy0 + sh - 1, int(math.ceil(c[1] + half[1]))))
    region = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
    region[sy0 - y0 : sy0 - y0 + sh, sx0 - x0 : sx0 - x0 + sw] = st.filled
    # Pixel centres in the ellipse's own frame, by broadcasting a column of y against a row of x.
    dx = (np.arange(x0, x1 + 1) * scale[0] - e.center[0])[None, :]
    dy = (np.arange(y0, y1 + 1) * scale[1] - e.center[1])[:, None]
    u = (dx * ux + dy * uy) / e.semi_major
    v = (dx * vx + dy * vy) / e.semi_minor
    inside = u * u + v * v <= 1.0
    union = np.count_nonzero(inside | region)
    return float(np.count_nonzero(inside & region)) / union if union else 0.0


# ----------------------------------------------------------------------------- main entry


def orientation_score(inferior: np.ndarray, superior: np.ndarray, ps_centroid: np.ndarray,
                      fh_centroid: np.ndarray, fh_area: float, orientation: str) -> float:
    """How much a measurement's geometry looks like the display convention it assumed.

    All inputs in physical units (x right, y down): the PS's inferior and superior ends as the
    orientation chose them, the centroids of the kept PS and FH, and the FH's area. The score is
    the rise of the inferior end above the superior end per unit of axis length, plus
    :data:`ORIENTATION_HEAD_SIDE_WEIGHT` times how far the head's centre lies towards the
    inferior end's side of the display (horizontally, from the PS's centre, in head radii).
    Mirroring a mask and flipping ``orientation`` leaves it unchanged; mirroring the mask alone
    negates it. Typical standard frames score about +0.3; below :data:`MIN_ORIENTATION_SCORE`
    the frame looks as if it were displayed the other way round.
    """
    axis = inferior - superior
    rise = float(-axis[1] / np.hypot(*axis))
    toward_inferior = 1.0 if orientation == "standard" else -1.0
    head_radius = math.sqrt(fh_area / math.pi)
    head_side = toward_inferior * float(fh_centroid[0] - ps_centroid[0]) / head_radius
    return rise + ORIENTATION_HEAD_SIDE_WEIGHT * head_side


def head_across_axis_mostly_beyond(swept: Sequence[float]) -> bool:
    """Whether a head whose span (between its tangents' ``swept`` angles, :func:`far_tangent`)
    reaches across the line of the PS axis lies more on its far side than on the side the AoP
    sweeps towards: its span's middle short of the axis. Such a head is above the symphysis, as
    in a frame upside down: its far tangent's few degrees are no angle of progression (a QA
    pass: 1 deg for a head 58 deg past the axis, where it had failed ``aop_impossible``)."""
    first, second = swept
    return abs(first - second) > 180.0 and first + second < 360.0


def far_tangent(swept: Sequence[float]) -> int:
    """Which of the two tangents from the PS's inferior end to the head (their angles swept from
    the PS axis, degrees in [0, 360)) ends the head's span in the sweep: seen from a point outside
    it, the head lies between its tangents on the arc of under 180 degrees between them. The
    larger angle is that end unless the arc crosses the PS axis's own line (a head reaching
    across the axis past the superior end: its near tangent a few degrees short of the axis, at
    355 degrees), where the smaller is (the larger had been taken there, and the frame failed
    ``aop_impossible``: a reviewer's pass)."""
    first, second = swept
    larger = 0 if first >= second else 1
    return larger if abs(first - second) <= 180.0 else 1 - larger


def mask_orientation_score(label_mask: np.ndarray, measurement: Measurement, *, ps_label: int = 1,
                           fh_label: int = 2) -> float | None:
    """:func:`orientation_score` of a measurement made on ``label_mask`` (None without PS ends).

    For studying the check (benchmarks/orientation_check.py): it recomputes the kept components
    that :func:`measure_progress` used, with the measurement's own spacing and orientation.
    """
    marks = measurement.landmarks
    if marks.ps_inferior_end is None or marks.ps_superior_end is None:
        return None
    mask = _check_mask(label_mask)
    # (The scale the measurement was taken in: its raw spacing had scored frames past the aspect limit otherwise.)
    scale = np.array(geometry_scale(measurement.spacing_mm), dtype=np.float64)
    ps = _extract(mask == ps_label, "ps", [])
    fh = _extract(mask == fh_label, "fh", [])
    if ps is None or fh is None:
        return None
    return _structures_orientation_score(np.array(marks.ps_inferior_end) * scale,
                                         np.array(marks.ps_superior_end) * scale, ps, fh, scale,
                                         measurement.orientation)


def _structures_orientation_score(inferior: np.ndarray, superior: np.ndarray, ps: _Structure, fh: _Structure,
                                  scale: np.ndarray, orientation: str) -> float:
    fh_area = float(fh.filled.sum()) * float(scale[0] * scale[1])
    return orientation_score(inferior, superior, ps.centroid_px * scale, fh.centroid_px * scale, fh_area,
                             orientation)


def _status(reasons: list[str]) -> str:
    sev = {REASONS[r][0] for r in reasons}
    if "failed" in sev:
        return "failed"
    return "warning" if sev else "ok"


def _to_px(p: np.ndarray | None, scale: np.ndarray) -> tuple[float, float] | None:
    if p is None:
        return None
    q = np.asarray(p, dtype=np.float64) / scale
    return (float(q[0]), float(q[1]))


def _ellipse_px(e: geo.Ellipse | None, box, scale: np.ndarray) -> tuple | None:
    if box is not None and scale[0] == 1.0 and scale[1] == 1.0:
        (cx, cy), (w, h), ang = box  # unit spacing: report OpenCV's own box unchanged
        return ((float(cx), float(cy)), (float(w), float(h)), float(ang))
    if e is None:
        return None
    ((cx, cy), (w, h), ang) = geo.ellipse_to_cv2(geo.transform_ellipse_axes(e, 1.0 / scale))
    return ((float(cx), float(cy)), (float(w), float(h)), float(ang))


def hsd_turn_change(inferior: np.ndarray, infrapubic: np.ndarray, fh_segments: np.ndarray, hsd: float,
                    turn_deg: float = HSD_AXIS_TURN_DEG) -> float:
    """How far the HSD moves when the infrapubic line is turned by ``turn_deg`` either way: the
    larger change as a fraction of ``hsd`` (unitless), ``inf`` when a turned line misses the head.

    Args:
        inferior: the PS's inferior end, (x, y) in physical units (mm, or pixels of side 1).
        infrapubic: unit direction of the infrapubic line from it.
        fh_segments: the head's contour as [N, 2, 2] segments, same units.
        hsd: the distance along the untouched line to the contour, same units.
    """
    change = 0.0
    for sign in (1.0, -1.0):
        a = math.radians(sign * turn_deg)
        turned = np.array([math.cos(a) * infrapubic[0] - math.sin(a) * infrapubic[1],
                           math.sin(a) * infrapubic[0] + math.cos(a) * infrapubic[1]])
        hit = geo.ray_segments_hit(inferior, turned, fh_segments)
        if hit is None:
            return math.inf
        change = max(change, abs(hit[0] - hsd) / hsd)
    return change


class MaskLabelsError(IppSegError, ValueError):
    """A label mask that holds values but neither of the two labels it is measured by, or an
    image given as a mask."""


#: More distinct values than this and a "mask" is an image: a label mask holds a handful.
MAX_MASK_VALUES = 32


def _refuse_other_labels_alone(mask: np.ndarray, ps_label: int, fh_label: int) -> None:
    """Raise :class:`MaskLabelsError` (a ``ValueError``) for a mask that holds neither label but
    other values (IUGC's 7 and 8, a 0/255 binary mask): measured, it would read as a frame
    without PS or FH (a library user's loop had recorded every case as ``ps_missing``), where
    the labels given are what is wrong; and for a greyscale image given as a mask (more than
    :data:`MAX_MASK_VALUES` values: a scan's path swapped for its mask's had been measured, its
    grey levels 1 and 2 taken for the structures, and an angle given)."""
    others = (mask != 0) & (mask != ps_label) & (mask != fh_label)
    if others.any() and len(np.unique(mask[others])) + 2 > MAX_MASK_VALUES:
        raise MaskLabelsError(f"the mask holds {len(np.unique(mask))} different values: a greyscale image rather "
                              "than a label mask (a scan is segmented by ipp_seg.inference.Predictor), or a mask "
                              "saved lossy (such as JPEG)")
    if (mask == ps_label).any() or (mask == fh_label).any() or not mask.any():  # (nearly every mask: no sort)
        return
    others = [int(v) for v in np.unique(mask) if v != 0]
    if others:
        raise MaskLabelsError(f"the mask holds label values {', '.join(map(str, others[:5]))} but neither the "
                              f"PS's ({ps_label}) nor the FH's ({fh_label}): give the values it uses as ps_label and "
                              "fh_label")


def measure_progress(
    label_mask: np.ndarray,
    spacing_mm: tuple[float, float] | None = None,
    *,
    method: str = "ellipse",
    orientation: str = "standard",
    ps_label: int = 1,
    fh_label: int = 2,
    spacing_source: str | None = None,
    image_box: tuple[int, int, int, int] | None = None,
) -> Measurement:
    """Measure AoP (deg) and HSD (mm and px) on a 2-D label mask.

    Args:
        label_mask: (rows, columns) integer array; ``ps_label`` marks the pubic symphysis,
            ``fh_label`` the fetal head, anything else is ignored.
        spacing_mm: (x, y) millimetres per pixel, or None when unknown (then distances are
            reported in pixels only and the status carries ``spacing_unknown``). A spacing
            outside :data:`PLAUSIBLE_SPACING_MM`, or that makes the image (``image_box``, else
            the mask) less than :data:`MIN_FIELD_OF_VIEW_MM` or more than :data:`MAX_FIELD_OF_VIEW_MM`
            across, still sets the pixels'
            aspect ratio for the geometry, but its distances in mm are withheld
            (``spacing_implausible``); one whose
            pixels are more than :data:`MAX_PIXEL_ASPECT` to 1 is damaged, and the geometry is
            then taken on the stored pixel grid (``spacing_implausible`` too).
        method: "ellipse" (default, stable), "challenge" (FH-PS-AOP 2023 evaluator) or
            "contour" (no ellipse fit).
        orientation: "standard" (inferior PS end = right-hand end of the displayed frame) or
            "mirrored" (left-hand end).
        ps_label, fh_label: label values of the two structures (1 and 2 in PSFHS, 7 and 8 in
            IUGC/JNU-IFM masks). A mask that holds other values but neither of these is refused.
        spacing_source: where ``spacing_mm`` came from, one of :data:`SPACING_SOURCES`
            (recorded in the result for audit; ignored, and recorded as None, when the spacing
            is unknown).
        image_box: (x0, y0, x1, y1), x1 and y1 excluded: the part of the frame that holds the
            image where it is not the whole frame, such as the ultrasound region of a DICOM
            screen capture. A structure at its edges is at the frame's edge (``*_at_frame_edge``,
            ``*_cut_off``). None: the whole mask.

    Returns:
        A :class:`Measurement`; its landmarks are in pixel coordinates of ``label_mask``.

    Raises:
        ValueError: on a malformed mask, unknown method/orientation, invalid labels/spacing, or a
            mask with values but none of the two labels.
    """
    mask = _check_mask(label_mask)
    method = check_choice(method, METHODS, "method")
    orientation = check_choice(orientation, ORIENTATIONS, "orientation")
    ps_label, fh_label = check_label_values(ps_label, fh_label)
    _refuse_other_labels_alone(mask, ps_label, fh_label)
    spacing = check_spacing(spacing_mm)
    if spacing_source is not None:
        spacing_source = check_choice(spacing_source, tuple(SPACING_SOURCES), "spacing_source")
    if spacing is None:
        spacing_source = None
    scale = np.array(geometry_scale(spacing), dtype=np.float64)

    box = check_image_box(image_box, mask.shape)
    reasons: list[str] = []
    in_mm = spacing is not None and _plausible_spacing(spacing) and _plausible_field(
        spacing, box or (0, 0, mask.shape[1], mask.shape[0]))
    if spacing is None:
        reasons.append("spacing_unknown")
    elif not in_mm:
        reasons.append("spacing_implausible")
        if not _pixel_aspect_plausible(spacing):
            # The angle is then taken on the stored grid as square: right if the calibration is what is damaged,
            # wrong if the pixels truly are not square, which nothing here can tell (a physicist's pass: 168° for
            # a true 126°, its AoP not marked doubtful).
            reasons.append("pixel_aspect_implausible")
    marks: dict = {}

    def result(values: dict | None = None) -> Measurement:
        status = _status(reasons)
        v = values if (values is not None and status != "failed") else {}
        if status == "failed":
            logger.debug("measurement failed: %s", ";".join(reasons))
            marks.clear()  # no axis, tangent or end of a frame that could not be measured (see Measurement)
        return Measurement(
            aop_deg=v.get("aop_deg"),
            hsd_mm=v.get("hsd_mm"),
            hsd_px=v.get("hsd_px"),
            psfh_shortest_px=v.get("psfh_shortest_px"),
            psfh_shortest_mm=v.get("psfh_shortest_mm"),
            status=status,
            reasons=failing_reasons_first(reasons),  # a failed row's cause before its warnings, in every output
            method=method,
            orientation=orientation,
            spacing_mm=spacing,
            landmarks=Landmarks(**marks),
            spacing_source=spacing_source,
        )

    ps_bin = mask == ps_label
    fh_bin = mask == fh_label
    ps = _extract(ps_bin, "ps", reasons, scale, box)
    fh = _extract(fh_bin, "fh", reasons, scale, box)
    if ps is None or fh is None:
        return result()
    ps_axis_ratio = geo.region_axis_ratio(ps.filled, scale)
    if ps_axis_ratio > MAX_MEASURABLE_PS_AXIS_RATIO:
        reasons.append("ps_round")
    elif ps_axis_ratio > MAX_PS_AXIS_RATIO:
        reasons.append("ps_nearly_round")
    elif ps_axis_ratio < MIN_PS_AXIS_RATIO:
        reasons.append("ps_thin")
    if _status(reasons) == "failed":  # cut off, or round: nothing to measure on it
        return result()
    if ps.centroid_px[1] >= fh.centroid_px[1]:
        # In every PSFHS frame the PS's centre lies above the head's (by 61 px or more at
        # 256 x 256): a frame upside down or in another display convention puts the inferior
        # end somewhere the orientation option does not expect.
        reasons.append("ps_below_head")
    if structures_touch(ps, fh):
        # No expert mask of the 1,058 PSFHS frames has them nearer than 2.8 px: where they meet, one label took the
        # other's pixels, and the inferior end and the tangent from it are read at a boundary no one drew.
        reasons.append("ps_touches_head")

    # --- PS axis ends and FH model -------------------------------------------------------
    fh_ell: geo.Ellipse | None = None
    if method == "contour":
        ends = geo.farthest_pair(ps.points_px * scale)
        # No ellipse is measured on, but a head is one nearly: a bar or a box is no head.
        fh_ell = geo.fit_ellipse(fh.points_px * scale)
    else:
        if method == "challenge":
            ps_box = _challenge_ellipse_box(ps_bin, scale, reasons, "ps")
            fh_box = _challenge_ellipse_box(fh_bin, scale, reasons, "fh")
            # No box: the simplified outline kept 5 vertices or fewer (a straight-sided blob, or a
            # line), or the fit was degenerate; the component itself passed the size check above.
            if ps_box is None:
                reasons.append("ps_fit_failed")
            if fh_box is None:
                reasons.append("fh_fit_failed")
            if ps_box is None or fh_box is None:
                return result()
            ps_ell, fh_ell = geo.ellipse_from_cv2(ps_box), geo.ellipse_from_cv2(fh_box)
            ends = _challenge_ps_ends(ps_box)
        else:
            ps_ell = geo.fit_ellipse(ps.points_px * scale)
            fh_ell = geo.fit_ellipse(fh.points_px * scale)
            ps_box = fh_box = None
            if ps_ell is None:
                reasons.append("ps_fit_failed")
            if fh_ell is None:
                reasons.append("fh_fit_failed")
            if ps_ell is None or fh_ell is None:
                return result()
            ends = ps_ell.major_axis_ends()
        marks["ps_ellipse"] = _ellipse_px(ps_ell, ps_box, scale)
        marks["fh_ellipse"] = _ellipse_px(fh_ell, fh_box, scale)
    if fh_ell is None or _ellipse_iou(fh_ell, fh, mask.shape, scale) < MIN_FH_ELLIPSE_IOU:
        reasons.append("fh_ellipse_poor_fit")
    if ends is None:
        reasons.append("ps_too_small")
        return result()

    # --- inferior end by display convention ---------------------------------------------
    a, b = ends
    right_first = a[0] > b[0]
    if orientation == "standard":
        inferior, superior = (a, b) if right_first else (b, a)
    else:
        inferior, superior = (b, a) if right_first else (a, b)
    marks["ps_inferior_end"] = _to_px(inferior, scale)
    marks["ps_superior_end"] = _to_px(superior, scale)
    axis = superior - inferior
    axis_len = float(np.hypot(*axis))
    if axis_len == 0.0:
        reasons.append("ps_too_small")
        return result()
    if math.degrees(math.atan2(abs(axis[0]), abs(axis[1]))) < NEAR_VERTICAL_DEG:
        reasons.append("ps_axis_near_vertical")
    if _structures_orientation_score(inferior, superior, ps, fh, scale, orientation) < MIN_ORIENTATION_SCORE:
        reasons.append("orientation_doubtful")

    # --- tangent and AoP -----------------------------------------------------------------
    fh_segs = fh.segments_px * scale
    tangents = None
    if not geo.point_in_segments_polygon(inferior, fh_segs):
        if method == "contour":
            tangents = geo.hull_tangent_points(fh.points_px * scale, inferior)
        else:
            tangents = geo.ellipse_tangent_points(fh_ell, inferior)
    if tangents is None:
        reasons.append("tangent_undefined")
        return result()
    # Turn from the PS axis towards the head, which lies below the symphysis on the display:
    # from +x towards -y (image rows grow downwards) when the inferior end is on the right, the
    # other way when the frame is mirrored.
    sweep = -1 if orientation == "standard" else 1
    swept = [geo.oriented_angle_deg(axis, t - inferior, sweep) for t in tangents]
    far = far_tangent(swept)
    if method == "challenge":  # (the evaluator's: the larger unsigned angle)
        angles = [geo.unsigned_angle_deg(axis, t - inferior) for t in tangents]
        k = int(np.argmax(angles))
    else:
        angles, k = swept, far
    aop = float(angles[k])
    marks["fh_tangent_point"] = _to_px(tangents[k], scale)
    if swept[far] > AOP_IMPOSSIBLE_ABOVE_DEG or head_across_axis_mostly_beyond(swept):
        # Not a value with a warning: no angle of progression at all. (The challenge method's unsigned angle folds
        # such a head back into a plausible number.)
        reasons.append("aop_impossible")
        return result()
    if not AOP_RANGE_DEG[0] <= aop <= AOP_RANGE_DEG[1]:
        reasons.append("aop_out_of_range")
    if method == "challenge" and swept[far] > 180.0:
        # The evaluator's unsigned angle: a head past the line of the PS axis reads as one short of it by as much.
        reasons.append("aop_folded")

    values: dict = {"aop_deg": aop}

    # --- distances to the FH contour ----------------------------------------------------
    short_d, short_pt = geo.closest_point_on_segments(inferior, fh_segs)
    marks["shortest_point"] = _to_px(short_pt, scale)
    values["psfh_shortest_px"] = float(np.hypot(*((short_pt - inferior) / scale)))
    values["psfh_shortest_mm"] = short_d if in_mm else None

    normal = np.array([-axis[1], axis[0]]) / axis_len
    if normal @ (fh.centroid_px * scale - inferior) < 0:  # the infrapubic line runs towards the head
        normal = -normal
    hit = geo.ray_segments_hit(inferior, normal, fh_segs)
    if hit is None:
        reasons.append("hsd_undefined")
    else:
        t, hsd_pt = hit
        if hsd_turn_change(inferior, normal, fh_segs, t) > HSD_MAX_TURN_CHANGE:
            reasons.append("hsd_unstable")
        marks["hsd_point"] = _to_px(hsd_pt, scale)
        values["hsd_px"] = float(np.hypot(*((hsd_pt - inferior) / scale)))
        values["hsd_mm"] = float(t) if in_mm else None
    return result(values)
