"""Vectorised plane geometry used by the measurements.

Every function here works on float64 numpy arrays of (x, y) points in one Euclidean frame.
The caller decides the unit: ``ipp_seg.measure.progress`` passes physical coordinates (mm,
or isotropic pixels when the spacing is unknown), so angles and lengths come out undistorted.
Nothing here loops in Python over points or point pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Ellipse",
    "ellipse_from_cv2",
    "fit_ellipse",
    "ellipse_to_cv2",
    "transform_ellipse_axes",
    "ellipse_contains",
    "ellipse_tangent_points",
    "hull_tangent_points",
    "farthest_pair",
    "region_axis_ratio",
    "boundary_points",
    "boundary_segments",
    "ray_segments_hit",
    "closest_point_on_segments",
    "point_in_segments_polygon",
    "oriented_angle_deg",
    "unsigned_angle_deg",
]


@dataclass(frozen=True)
class Ellipse:
    """Ellipse as centre, semi-axes and the unit direction of the major axis (same unit as input)."""

    center: tuple[float, float]
    semi_major: float
    semi_minor: float
    major_dir: tuple[float, float]

    @property
    def minor_dir(self) -> tuple[float, float]:
        ux, uy = self.major_dir
        return (-uy, ux)

    def major_axis_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """The two ends of the long axis, ``center -/+ semi_major * major_dir``."""
        c = np.asarray(self.center)
        d = self.semi_major * np.asarray(self.major_dir)
        return c - d, c + d


def ellipse_from_cv2(box) -> Ellipse:
    """Convert a ``cv2.fitEllipse`` result ((cx, cy), (w, h), angle_deg) to an :class:`Ellipse`.

    OpenCV puts the ``w`` axis along ``angle`` and ``h`` along ``angle + 90``; the larger of the
    two is taken as the major axis, whatever the OpenCV version's ordering convention.
    """
    (cx, cy), (w, h), ang = box
    t = math.radians(ang)
    w_dir = (math.cos(t), math.sin(t))
    h_dir = (-math.sin(t), math.cos(t))
    if w >= h:
        return Ellipse((float(cx), float(cy)), w / 2.0, h / 2.0, w_dir)
    return Ellipse((float(cx), float(cy)), h / 2.0, w / 2.0, h_dir)


def ellipse_to_cv2(e: Ellipse) -> tuple:
    """OpenCV-style ((cx, cy), (w, h), angle_deg) with ``w <= h`` and ``w`` along ``angle`` in [0, 180)."""
    mx, my = e.minor_dir
    ang = math.degrees(math.atan2(my, mx)) % 180.0
    return ((e.center[0], e.center[1]), (2.0 * e.semi_minor, 2.0 * e.semi_major), ang)


def fit_ellipse(points: np.ndarray) -> Ellipse | None:
    """Least-squares ellipse (``cv2.fitEllipse``) through ``points`` (N, 2).

    The points are centred before the float32 hand-over to OpenCV so that the fit does not
    depend on where the structure sits in the frame (mirror and translation equivariance).
    Returns None when fewer than 5 points or the fit is degenerate.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[0] < 5:
        return None
    mean = pts.mean(axis=0)
    try:
        (cx, cy), (w, h), ang = cv2.fitEllipse((pts - mean).astype(np.float32))
    except cv2.error:
        return None
    if not (np.isfinite([cx, cy, w, h, ang]).all() and w > 0 and h > 0):
        return None
    return ellipse_from_cv2(((cx + mean[0], cy + mean[1]), (w, h), ang))


def transform_ellipse_axes(e: Ellipse, inv_scale: np.ndarray) -> Ellipse:
    """Map an ellipse through the diagonal linear map ``diag(inv_scale)`` (e.g. mm -> pixels).

    The image of an ellipse under a linear map is an ellipse; its semi-axes are the singular
    values of the mapped axis matrix.
    """
    s = np.asarray(inv_scale, dtype=np.float64)
    axes = np.column_stack(
        [e.semi_major * np.asarray(e.major_dir), e.semi_minor * np.asarray(e.minor_dir)]
    )
    u, sv, _ = np.linalg.svd(s[:, None] * axes)
    c = np.asarray(e.center) * s
    return Ellipse((float(c[0]), float(c[1])), float(sv[0]), float(sv[1]), (float(u[0, 0]), float(u[1, 0])))


def _ellipse_canonical(e: Ellipse, pts: np.ndarray) -> np.ndarray:
    """Coordinates of ``pts`` in the frame where ``e`` is the unit circle."""
    d = np.asarray(pts, dtype=np.float64) - np.asarray(e.center)
    return np.stack(
        [d @ np.asarray(e.major_dir) / e.semi_major, d @ np.asarray(e.minor_dir) / e.semi_minor],
        axis=-1,
    )


def ellipse_contains(e: Ellipse, pts: np.ndarray) -> np.ndarray:
    """Boolean array: which of ``pts`` (..., 2) lie inside or on the ellipse."""
    q = _ellipse_canonical(e, pts)
    return (q * q).sum(axis=-1) <= 1.0


def ellipse_tangent_points(e: Ellipse, p: np.ndarray) -> np.ndarray | None:
    """The two points where lines through ``p`` touch ellipse ``e`` (2, 2), or None if ``p`` is not outside.

    Closed form: in the frame where the ellipse is the unit circle, the tangent points from
    q (|q| > 1) are (q +/- sqrt(|q|^2 - 1) * perp(q)) / |q|^2; an affine map keeps tangency.
    """
    q = _ellipse_canonical(e, np.asarray(p, dtype=np.float64)[None, :])[0]
    n2 = float(q @ q)
    if not n2 > 1.0 + 1e-12:
        return None
    perp = np.array([-q[1], q[0]])
    r = math.sqrt(n2 - 1.0)
    t = np.stack([(q + r * perp) / n2, (q - r * perp) / n2])
    c = np.asarray(e.center)
    return c + e.semi_major * t[:, :1] * np.asarray(e.major_dir) + e.semi_minor * t[:, 1:] * np.asarray(e.minor_dir)


def hull_tangent_points(points: np.ndarray, p: np.ndarray) -> np.ndarray | None:
    """Points of the set touched by the two lines through ``p`` that leave the whole set on one side.

    These are the convex-hull vertices with the extreme bearing seen from ``p``. Returns
    (2, 2) or None when ``p`` lies inside or on the hull (no such line exists).
    """
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32)).reshape(-1, 2).astype(np.float64)
    if hull.shape[0] < 3:
        return None
    if cv2.pointPolygonTest(hull.astype(np.float32), (float(p[0]), float(p[1])), False) >= 0:
        return None
    d = hull - np.asarray(p, dtype=np.float64)
    ref = d.mean(axis=0)  # direction to a point inside the hull: bearings stay within (-180, 180)
    bearing = np.arctan2(ref[0] * d[:, 1] - ref[1] * d[:, 0], d @ ref)
    dist2 = (d * d).sum(axis=1)
    # Hull vertices on the same tangent line tie; take the one nearest p, whatever the order.
    lo = np.flatnonzero(bearing <= bearing.min() + 1e-12)
    hi = np.flatnonzero(bearing >= bearing.max() - 1e-12)
    return np.stack([hull[lo[np.argmin(dist2[lo])]], hull[hi[np.argmin(dist2[hi])]]])


def farthest_pair(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two points of the set farthest apart (both are convex-hull vertices)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[0] < 2:
        return None
    idx = cv2.convexHull(pts.astype(np.float32), returnPoints=False).reshape(-1)
    # The hull has far fewer vertices than the contour, so comparing all its pairs is cheap.
    h = pts[idx]
    d2 = ((h[:, None, :] - h[None, :, :]) ** 2).sum(axis=-1)
    i0, j0 = np.unravel_index(int(np.argmax(d2)), d2.shape)
    # On a pixel lattice several pairs are often exactly as far apart; averaging the tied
    # pairs (ends matched by direction) keeps the result independent of the traversal order,
    # hence mirror-symmetric.
    ii, jj = np.nonzero(np.triu(d2 >= d2[i0, j0] * (1.0 - 1e-9), k=1))
    a, b = h[ii], h[jj]
    flip = ((b - a) @ (h[j0] - h[i0])) < 0
    a, b = np.where(flip[:, None], b, a), np.where(flip[:, None], a, b)
    return a.mean(axis=0), b.mean(axis=0)


# Marching squares at level 0.5 on a binary image: each 2x2 cell of pixel centres with mixed
# values contributes one or two segments joining midpoints of its sides. Columns: which side
# pairs (top-left, top-right, right-bottom, left-bottom, left-right, top-bottom) each of the 16
# corner codes (tl*8 + tr*4 + br*2 + bl) connects. Saddles (5, 10) join the foreground diagonal,
# matching the 8-connectivity used for components and contours.
_MS_PAIRS = ((0, 3), (0, 1), (1, 2), (3, 2), (3, 1), (0, 2))  # sides: 0 top, 1 right, 2 bottom, 3 left
_MS_LUT = np.zeros((16, 6), dtype=bool)
for _codes, _col in (((8, 7, 5), 0), ((4, 11, 10), 1), ((2, 13, 5), 2), ((1, 14, 10), 3), ((12, 3), 4), ((9, 6), 5)):
    _MS_LUT[list(_codes), _col] = True
_MS_LUT.setflags(write=False)
# Side midpoints relative to the cell's top-left pixel centre.
_MS_SIDE_OFFSET = np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]])


def region_axis_ratio(region: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> float:
    """Short-to-long axis ratio of a binary region from its second moments (dimensionless).

    The square root of the ratio of the eigenvalues of the covariance of the region's pixel
    coordinates, each scaled by ``scale`` (x, y units per pixel, e.g. mm) first, so that it
    describes the physical shape: 1 for a disc, b/a for a filled ellipse with semi-axes
    a >= b, 0 for a straight line of pixels. NaN for an empty region.
    """
    mom = cv2.moments(np.ascontiguousarray(region, dtype=np.uint8), binaryImage=True)
    if mom["m00"] == 0:
        return math.nan
    sx, sy = float(scale[0]), float(scale[1])
    cov = np.array([[mom["mu20"] * sx * sx, mom["mu11"] * sx * sy],
                    [mom["mu11"] * sx * sy, mom["mu02"] * sy * sy]])
    low, high = np.linalg.eigvalsh(cov)
    if high <= 0.0:  # a single pixel: no extent along any direction
        return 1.0
    return float(math.sqrt(max(low, 0.0) / high))


def _pad(region: np.ndarray) -> np.ndarray:
    padded = np.zeros((region.shape[0] + 2, region.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = region
    return padded


def boundary_points(region: np.ndarray, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Sub-pixel boundary samples of a binary region, (N, 2) pixel (x, y).

    ``region[i, j]`` is the pixel at (origin[0] + j, origin[1] + i), so a tight crop can be
    passed. The samples are the midpoints between every foreground pixel and each background
    4-neighbour: the vertices of the marching-squares (level 0.5) contour. Unlike the centres
    of the boundary pixels, which lie half a pixel inside the region, they sit on its edge,
    and they are exactly mirror-symmetric.
    """
    crop = _pad(region)
    ox, oy = origin[0] - 1.0, origin[1] - 1.0
    iy, ix = np.nonzero(crop[:, :-1] != crop[:, 1:])
    hy, hx = np.nonzero(crop[:-1, :] != crop[1:, :])
    xs = np.concatenate([ix + 0.5, hx.astype(np.float64)]) + ox
    ys = np.concatenate([iy.astype(np.float64), hy + 0.5]) + oy
    return np.column_stack([xs, ys])


def boundary_segments(region: np.ndarray, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Marching-squares (level 0.5) contour of a binary region as unordered segments (M, 2, 2), pixel (x, y).

    ``origin`` as in :func:`boundary_points`; the segment ends are exactly those points.
    """
    crop = _pad(region).view(np.uint8)
    code = crop[:-1, :-1] * np.uint8(8) + crop[:-1, 1:] * np.uint8(4) + crop[1:, 1:] * np.uint8(2) + crop[1:, :-1]
    iy, ix = np.nonzero((code != 0) & (code != 15))
    sel = _MS_LUT[code[iy, ix]]
    # Cell (iy, ix) has its top-left pixel centre at crop pixel (ix, iy).
    base = np.column_stack([ix + (origin[0] - 1.0), iy + (origin[1] - 1.0)]).astype(np.float64)
    parts = []
    for k, (sa, sb) in enumerate(_MS_PAIRS):
        b = base[sel[:, k]]
        parts.append(np.stack([b + _MS_SIDE_OFFSET[sa], b + _MS_SIDE_OFFSET[sb]], axis=1))
    return np.concatenate(parts, axis=0)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def ray_segments_hit(p: np.ndarray, direction: np.ndarray, segs: np.ndarray) -> tuple[float, np.ndarray] | None:
    """First crossing of the ray ``p + t * direction`` (t > 0, unit direction) with any segment.

    Returns (t, point) or None when the ray meets no segment.
    """
    a = segs[:, 0, :]
    ab = segs[:, 1, :] - a
    ap = a - p
    denom = _cross(direction, ab)
    ok = np.abs(denom) > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        t = _cross(ap, ab) / denom
        s = _cross(ap, direction) / denom
    hit = ok & (s >= 0.0) & (s <= 1.0) & (t > 1e-9)
    if not hit.any():
        return None
    t_min = float(t[hit].min())
    return t_min, np.asarray(p, dtype=np.float64) + t_min * np.asarray(direction)


def closest_point_on_segments(p: np.ndarray, segs: np.ndarray) -> tuple[float, np.ndarray]:
    """Distance from ``p`` to the nearest segment, and the nearest point."""
    a = segs[:, 0, :]
    ab = segs[:, 1, :] - a
    len2 = (ab * ab).sum(axis=1)
    s = np.clip(((p - a) * ab).sum(axis=1) / np.where(len2 > 0, len2, 1.0), 0.0, 1.0)
    foot = a + s[:, None] * ab
    d2 = ((foot - p) ** 2).sum(axis=1)
    i = int(np.argmin(d2))
    return math.sqrt(float(d2[i])), foot[i]


def point_in_segments_polygon(p: np.ndarray, segs: np.ndarray) -> bool:
    """Even-odd test of ``p`` against a closed polygon given as unordered segments."""
    a = segs[:, 0, :]
    b = segs[:, 1, :]
    straddle = (a[:, 1] > p[1]) != (b[:, 1] > p[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0] + (p[1] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return bool(np.count_nonzero(straddle & (x_at > p[0])) % 2)


def unsigned_angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between two vectors, degrees in [0, 180]."""
    return math.degrees(math.atan2(abs(float(_cross(u, v))), float(u @ v)))


def oriented_angle_deg(u: np.ndarray, v: np.ndarray, sweep: int) -> float:
    """Angle swept from ``u`` to ``v`` turning in direction ``sweep`` (+1 or -1), degrees in [0, 360).

    ``sweep = +1`` turns from +x towards +y.
    """
    return math.degrees(math.atan2(sweep * float(_cross(u, v)), float(u @ v))) % 360.0
