"""Segmentation metrics on label masks (numpy + OpenCV only) and the FH-PS-AOP 2023 score.

Conventions:

* Masks are 2-D arrays; anything non-zero is foreground. Distances are in pixels of the mask
  (Euclidean, pixel centres).
* The boundary of a mask is its foreground pixels with at least one background pixel among
  their 8 neighbours. Pixels beyond the frame edge do not count as background, so an object
  cut by the frame edge has no boundary along that edge. This is the zero set of ITK's signed
  Maurer distance map, which the FH-PS-AOP 2023 evaluator uses for its surface distance, so
  :func:`average_surface_distance` reproduces that evaluator's ASD. Its Hausdorff distance is
  SimpleITK's, between the masks as pixel sets, which :func:`hausdorff_distance` reproduces.
* An empty structure on exactly one side scores Dice 0 and HD = ASD =
  :data:`EMPTY_STRUCTURE_DISTANCE_PX` (the challenge's convention for an empty prediction,
  applied symmetrically). Two empty masks agree perfectly: Dice 1, HD = ASD = 0.
* "all" is both structures as one foreground (PS or FH label), see :func:`structure_masks`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "EMPTY_STRUCTURE_DISTANCE_PX",
    "STRUCTURES",
    "average_surface_distance",
    "boundary",
    "challenge_score",
    "dice",
    "hausdorff_distance",
    "structure_masks",
    "surface_distances",
]

# Distance (pixels) charged when one of the two masks is empty: the FH-PS-AOP 2023 value.
EMPTY_STRUCTURE_DISTANCE_PX = 100.0

STRUCTURES: tuple[str, ...] = ("ps", "fh", "all")

_SQUARE_3X3 = np.ones((3, 3), dtype=np.uint8)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (unitless, 0-1). Two empty masks score 1."""
    p = np.asarray(prediction, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def structure_masks(label_mask: np.ndarray, ps_label: int = 1, fh_label: int = 2) -> dict[str, np.ndarray]:
    """Boolean masks ``{"ps", "fh", "all"}`` of a label mask; "all" = PS or FH (other labels ignored)."""
    labels = np.asarray(label_mask)
    ps = labels == ps_label
    fh = labels == fh_label
    return {"ps": ps, "fh": fh, "all": ps | fh}


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels (bool, same shape) of a 2-D mask: foreground with a background 8-neighbour.

    The frame edge is not background (see the module docstring).
    """
    m = _as_binary_2d(mask, "mask")
    # cv2.erode's default border leaves pixels on the frame edge untouched, as ITK does.
    eroded = cv2.erode(m.view(np.uint8), _SQUARE_3X3)
    return m & ~eroded.view(bool)


def hausdorff_distance(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric Hausdorff distance (pixels) between two 2-D masks, as pixel sets.

    The larger of the two directed distances: the farthest pixel of one mask from the nearest
    pixel of the other (0 for a pixel inside it). This is SimpleITK's
    HausdorffDistanceImageFilter, which the FH-PS-AOP 2023 evaluator uses: a slit or a hole in
    one mask inside the other does not count, only pixels outside the other mask do. One
    empty mask: :data:`EMPTY_STRUCTURE_DISTANCE_PX`; both empty: 0.
    """
    return surface_distances(pred, truth)[0]


def average_surface_distance(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric average surface distance (pixels) of two 2-D masks.

    Mean over the boundary pixels of both masks of each one's distance to the other mask's
    boundary (pooled, as the FH-PS-AOP 2023 evaluator computes it). One empty mask:
    :data:`EMPTY_STRUCTURE_DISTANCE_PX`; both empty: 0.
    """
    return surface_distances(pred, truth)[1]


def surface_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Hausdorff distance, average surface distance) in pixels, sharing one pair of distance
    transforms; the same values as :func:`hausdorff_distance` and :func:`average_surface_distance`."""
    distances = _distance_maps(pred, truth)
    if isinstance(distances, float):
        return distances, distances
    p, t, bp, bt, to_truth_boundary, to_pred_boundary = distances
    # Outside a mask, the nearest of its pixels lies on its boundary: so the distance to the
    # boundary, zeroed inside the mask, is the distance to the mask as a pixel set.
    hd = float(max(to_truth_boundary[p & ~t].max(initial=0.0), to_pred_boundary[t & ~p].max(initial=0.0)))
    on_p, on_t = to_truth_boundary[bp], to_pred_boundary[bt]
    asd = float(on_p.sum(dtype=np.float64) + on_t.sum(dtype=np.float64)) / (on_p.size + on_t.size)
    return hd, asd


def challenge_score(mean_dice: float, mean_hd: float, mean_asd: float, mean_abs_delta_aop: float) -> float:
    """FH-PS-AOP 2023 score (unitless; 1 is perfect).

    0.25·mDice + 0.125·(1 − mHD/100) + 0.125·(1 − mASD/100) + 0.5·(1 − mΔAoP/180), with HD and
    ASD in pixels and |ΔAoP| in degrees. The challenge averages Dice, HD and ASD over PS, FH
    and "all" and over cases before this formula. Terms are not clipped (HD > 100 px lowers
    the score below what a 100 px HD gives), as in the challenge.
    """
    values = {
        "mean_dice": mean_dice,
        "mean_hd": mean_hd,
        "mean_asd": mean_asd,
        "mean_abs_delta_aop": mean_abs_delta_aop,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if not 0.0 <= float(mean_dice) <= 1.0:
        raise ValueError(f"mean_dice is a fraction in 0-1, got {mean_dice!r} (a percentage?)")
    return (
        0.25 * float(mean_dice)
        + 0.125 * (1.0 - float(mean_hd) / 100.0)
        + 0.125 * (1.0 - float(mean_asd) / 100.0)
        + 0.5 * (1.0 - float(mean_abs_delta_aop) / 180.0)
    )


def _as_binary_2d(mask: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {m.shape}")
    return np.ascontiguousarray(m != 0)


def _distance_maps(pred: np.ndarray, truth: np.ndarray) -> tuple | float:
    """(pred, truth, pred's boundary, truth's boundary, distance map to truth's boundary,
    distance map to pred's boundary), or the empty-mask convention's value when a mask is empty."""
    p = _as_binary_2d(pred, "pred")
    t = _as_binary_2d(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same shape, got {p.shape} and {t.shape}")
    p_empty, t_empty = not p.any(), not t.any()
    if p_empty and t_empty:
        return 0.0
    if p_empty or t_empty:
        return EMPTY_STRUCTURE_DISTANCE_PX
    bp, bt = boundary(p), boundary(t)
    # A mask filling the whole frame has no boundary (the frame edge is not one): its
    # distances are measured to its pixels instead, so the value stays defined.
    if not bp.any():
        bp = p
    if not bt.any():
        bt = t
    # Exact Euclidean distance of every pixel to the nearest boundary pixel (zeros of the input).
    dist_to_t = cv2.distanceTransform((~bt).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist_to_p = cv2.distanceTransform((~bp).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return p, t, bp, bt, dist_to_t, dist_to_p
