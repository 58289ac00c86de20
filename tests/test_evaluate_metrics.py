"""ipp_seg.evaluate.metrics: hand-computed Dice, Hausdorff and surface distances, empty masks,
the FH-PS-AOP score, and agreement with the challenge evaluator's SimpleITK procedures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ipp_seg.evaluate.metrics import (
    EMPTY_STRUCTURE_DISTANCE_PX,
    average_surface_distance,
    boundary,
    challenge_score,
    dice,
    hausdorff_distance,
    structure_masks,
    surface_distances,
)


def square(top, left, size, shape=(12, 12)):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


# ----------------------------------------------------------------------------- hand-computed


def test_two_shifted_squares_hand_computed():
    # Two 4x4 squares, the second shifted 2 px right: overlap 4x2 = 8 px of 16 + 16.
    a = square(2, 2, 4)
    b = square(2, 4, 4)
    assert dice(a, b) == pytest.approx(0.5)
    # Boundary of each square: its 12 outer pixels. Farthest boundary pixel from the other's
    # boundary: the far column, 2 px away.
    assert hausdorff_distance(a, b) == pytest.approx(2.0)
    # a's boundary to b's: far column 4 x 2 = 8; near column (cols 5): 0, 1, 1, 0 = 2;
    # top and bottom rows' inner pixels (col 3): 1 + 1 = 2; the rest 0 -> 12 over 12 pixels,
    # and the same from b to a: (12 + 12) / 24 = 1.
    assert average_surface_distance(a, b) == pytest.approx(1.0)
    assert surface_distances(a, b) == pytest.approx((2.0, 1.0))


def test_distances_are_euclidean():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[2, 2] = True
    b[5, 6] = True  # 3 rows and 4 columns away: a 3-4-5 triangle
    assert hausdorff_distance(a, b) == pytest.approx(5.0, abs=1e-4)
    assert average_surface_distance(a, b) == pytest.approx(5.0, abs=1e-4)
    assert dice(a, b) == 0.0


def test_identical_masks_score_perfectly():
    a = square(1, 3, 6)
    assert dice(a, a) == 1.0
    assert hausdorff_distance(a, a) == 0.0
    assert average_surface_distance(a, a) == 0.0


def test_directed_distances_are_symmetrised():
    # A small square inside a big one: the big one's corners are far from the small one.
    big = square(1, 1, 11, shape=(16, 16))
    small = square(5, 5, 3, shape=(16, 16))
    hd = hausdorff_distance(small, big)
    assert hd == hausdorff_distance(big, small)
    # big's corner (1, 1) is farthest; nearest small boundary pixel is (5, 5): 4*sqrt(2)
    # (the other way the largest distance is only 4).
    assert hd == pytest.approx(4 * math.sqrt(2), abs=1e-4)
    assert average_surface_distance(small, big) == pytest.approx(average_surface_distance(big, small))


def test_boundary_uses_8_neighbours_and_not_the_frame_edge():
    m = np.zeros((6, 6), dtype=bool)
    m[0:3, :] = True  # a band along the top edge and across the frame
    m[3, 2] = True  # a bump: (2, 2) now has background only diagonally
    b = boundary(m)
    assert not b[0].any(), "the frame edge is not a boundary"
    assert not b[1].any()
    assert b[2, 2], "a pixel with background only among its diagonal neighbours is boundary"
    assert b[2, 0] and b[2, 5] and b[3, 2]


# ----------------------------------------------------------------------------- empty masks


def test_empty_prediction_is_dice_0_and_hd_asd_100():
    truth = square(2, 2, 5)
    empty = np.zeros_like(truth)
    assert EMPTY_STRUCTURE_DISTANCE_PX == 100.0
    assert dice(empty, truth) == 0.0
    assert hausdorff_distance(empty, truth) == 100.0
    assert average_surface_distance(empty, truth) == 100.0
    # Symmetric: a structure predicted where the truth has none.
    assert hausdorff_distance(truth, empty) == 100.0


def test_two_empty_masks_agree():
    empty = np.zeros((8, 8), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert surface_distances(empty, empty) == (0.0, 0.0)


def test_shape_mismatch_and_non_2d_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        hausdorff_distance(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="2-D"):
        average_surface_distance(np.ones((2, 4, 4)), np.ones((2, 4, 4)))


def test_structure_masks_all_is_both_labels():
    labels = np.array([[0, 1, 2, 3]])
    s = structure_masks(labels)
    assert s["ps"].tolist() == [[False, True, False, False]]
    assert s["fh"].tolist() == [[False, False, True, False]]
    assert s["all"].tolist() == [[False, True, True, False]]
    s78 = structure_masks(np.array([[7, 8, 1]]), ps_label=7, fh_label=8)
    assert s78["all"].tolist() == [[True, True, False]]


# ----------------------------------------------------------------------------- score


def test_challenge_score_known_values():
    assert challenge_score(1.0, 0.0, 0.0, 0.0) == pytest.approx(1.0)
    # 0.25*0.9 + 0.125*0.8 + 0.125*0.96 + 0.5*0.95 = 0.225 + 0.1 + 0.12 + 0.475
    assert challenge_score(0.9, 20.0, 4.0, 9.0) == pytest.approx(0.92)
    assert challenge_score(0.0, 100.0, 100.0, 180.0) == pytest.approx(0.0)
    # Not clipped: HD beyond 100 px lowers the score further.
    assert challenge_score(0.0, 200.0, 100.0, 180.0) == pytest.approx(-0.125)


def test_challenge_score_rejects_non_numbers():
    with pytest.raises(ValueError):
        challenge_score(0.9, float("nan"), 1.0, 1.0)
    with pytest.raises(TypeError):
        challenge_score(0.9, None, 1.0, 1.0)


# ----------------------------------------------------------------------------- vs SimpleITK


def _ellipse(shape, cx, cy, a, b, angle_deg):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    t = math.radians(angle_deg)
    u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / a
    v = (-(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)) / b
    return u * u + v * v <= 1.0


def _sitk_asd(a, b, sitk):
    """The FH-PS-AOP 2023 evaluator's ASD: signed Maurer maps, their zero sets as surfaces."""
    f = sitk.SignedMaurerDistanceMapImageFilter()
    f.SetUseImageSpacing(True)
    f.SetSquaredDistance(False)
    da = np.abs(sitk.GetArrayFromImage(f.Execute(sitk.GetImageFromArray(a.astype(np.uint8)))))
    db = np.abs(sitk.GetArrayFromImage(f.Execute(sitk.GetImageFromArray(b.astype(np.uint8)))))
    ea, eb = da == 0, db == 0
    return (da[eb].sum() + db[ea].sum()) / (ea.sum() + eb.sum())


def _sitk_hd(a, b, sitk):
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(sitk.GetImageFromArray(a.astype(np.uint8)), sitk.GetImageFromArray(b.astype(np.uint8)))
    return f.GetHausdorffDistance()


def test_agrees_with_the_challenge_simpleitk_procedures():
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(7)
    shape = (96, 96)
    for _ in range(8):
        cx, cy = rng.uniform(30, 66, size=2)
        a_ax, b_ax = rng.uniform(8, 30), rng.uniform(5, 20)
        angle = rng.uniform(0, 180)
        truth = _ellipse(shape, cx, cy, a_ax, b_ax, angle)
        pred = _ellipse(
            shape,
            cx + rng.uniform(-4, 4),
            cy + rng.uniform(-4, 4),
            a_ax * rng.uniform(0.8, 1.2),
            b_ax * rng.uniform(0.8, 1.2),
            angle + rng.uniform(-15, 15),
        )
        hd, asd = surface_distances(pred, truth)
        assert asd == pytest.approx(_sitk_asd(pred, truth, sitk), rel=1e-5)
        assert hd == pytest.approx(_sitk_hd(pred, truth, sitk), rel=1e-5)


def test_hausdorff_is_the_challenge_filter_on_masks_with_slits_and_holes():
    # A slit or hole in the prediction inside the truth moves the prediction's outline far
    # from the truth's, but no predicted pixel is outside the truth: the challenge's
    # (SimpleITK's) HD counts pixels as sets, so the slit costs only its own width.
    sitk = pytest.importorskip("SimpleITK")
    truth = square(20, 20, 60, shape=(100, 100))
    slit = truth.copy()
    slit[20:60, 49:52] = False  # 3 px wide, 40 px deep
    holed = truth.copy()
    holed[40:60, 40:60] = False
    assert hausdorff_distance(slit, truth) == pytest.approx(2.0)  # 2 px from the slit's middle to its edge
    assert hausdorff_distance(holed, truth) == pytest.approx(10.0)  # the hole's centre to its rim
    rng = np.random.default_rng(11)
    for _ in range(20):
        pred, ref = (_ellipse((96, 96), *rng.uniform(30, 66, 2), rng.uniform(8, 30), rng.uniform(5, 20),
                              rng.uniform(0, 180)) for _ in range(2))
        pred[rng.integers(0, 96):, rng.integers(0, 96)] = False  # a slit through part of it
        if pred.any():
            assert hausdorff_distance(pred, ref) == pytest.approx(_sitk_hd(pred, ref, sitk), abs=1e-4)
    for mask in (slit, holed):
        assert hausdorff_distance(mask, truth) == pytest.approx(_sitk_hd(mask, truth, sitk), abs=1e-4)


def test_challenge_score_refuses_a_dice_in_percent():
    with pytest.raises(ValueError, match="percentage"):
        challenge_score(93.0, 10.0, 3.0, 5.0)
