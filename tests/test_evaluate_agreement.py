"""ipp_seg.evaluate.agreement: Bland-Altman bias, limits of agreement and proportional bias,
and their place in the block summaries and the JSON report."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from ipp_seg.evaluate import bland_altman, evaluate_case, summarise_block, write_summary_json
from ipp_seg.evaluate.agreement import LIMITS_Z
from ipp_seg.measure import measure_progress



def scene(dx=0, dy=0):
    """A PS ellipse near the top, roughly horizontal, and the head below it (128 x 128)."""
    m = np.zeros((128, 128), dtype=np.uint8)
    cv2.circle(m, (44 + dx, 78 + dy), 34, 2, thickness=-1)
    cv2.ellipse(m, (52 + dx, 18 + dy), (15, 5), 8, 0, 360, 1, thickness=-1)
    return m


def test_hand_computed_bias_limits_and_slope():
    # Differences 1, 2, 3: bias 2, SD 1; the pairs' means 9.5, 11, 12.5 rise with the
    # difference: slope = sum((m - 11)(d - 2)) / sum((m - 11)^2) = 3 / 4.5.
    a = bland_altman([10.0, 12.0, 14.0], [9.0, 10.0, 11.0])
    assert a.n == 3 and a.bias == pytest.approx(2.0) and a.sd == pytest.approx(1.0)
    assert (a.lower, a.upper) == pytest.approx((2.0 - LIMITS_Z, 2.0 + LIMITS_Z))
    assert a.proportional_slope == pytest.approx(2 / 3)


def test_sign_says_which_way_the_measurement_errs():
    truth = [100.0, 120.0, 140.0, 160.0]
    low = bland_altman([t - 5 for t in truth], truth)
    assert low.bias == pytest.approx(-5.0) and low.sd == pytest.approx(0.0)
    assert low.proportional_slope == pytest.approx(0.0, abs=1e-12)
    # Reading 20 % low of a large angle: a negative proportional bias (d = -0.2 t, m = 0.9 t).
    shrunk = bland_altman([0.8 * t for t in truth], truth)
    assert shrunk.bias < 0 and shrunk.proportional_slope == pytest.approx(-0.2 / 0.9)


def test_missing_and_non_finite_pairs_are_left_out_never_filled():
    a = bland_altman([1.0, None, 3.0, math.nan, 5.0], [0.0, 2.0, None, 1.0, 4.0])
    assert a.n == 2 and a.bias == pytest.approx(1.0) and a.sd == pytest.approx(0.0)
    assert a.proportional_slope is None  # two pairs give no slope worth the name
    one = bland_altman([3.0], [1.0])
    assert one.n == 1 and one.bias == 2.0 and one.sd is None and one.lower is None and one.upper is None
    assert bland_altman([None, 1.0], [1.0, None]) is None
    assert bland_altman([], []) is None
    # The same quantity three times: no spread of means, so no slope.
    assert bland_altman([2.0, 3.0, 4.0], [4.0, 3.0, 2.0]).proportional_slope is None
    with pytest.raises(ValueError, match="differ in length"):
        bland_altman([1.0, 2.0], [1.0])


def test_block_summary_reports_the_signed_agreement_of_aop_hsd_and_reference():
    gt = scene()
    truth_aop = measure_progress(gt).aop_deg
    exact = evaluate_case(gt, gt, case_id="a", reference_aop_deg=truth_aop + 2.0, spacing_mm=(0.3, 0.3))
    moved = evaluate_case(scene(dx=4), gt, case_id="b", reference_aop_deg=truth_aop - 1.0, spacing_mm=(0.3, 0.3))
    failed = evaluate_case(np.zeros_like(gt), gt, case_id="c", reference_aop_deg=truth_aop, spacing_mm=(0.3, 0.3))
    block = summarise_block("x", [exact, moved, failed])
    aop = block.agreement["aop"]
    # The failed case has no AoP: it is left out here (the score charges it instead).
    assert aop.n == 2
    assert aop.bias == pytest.approx(((exact.aop_pred - exact.aop_gt) + (moved.aop_pred - moved.aop_gt)) / 2)
    reference = block.agreement["aop_reference"]
    assert reference.n == 2
    assert reference.bias == pytest.approx((exact.aop_pred - truth_aop - 2.0 + moved.aop_pred - truth_aop + 1.0) / 2)
    hsd = block.agreement["hsd_mm"]
    assert hsd.n == 2 and hsd.bias == pytest.approx(block.agreement["hsd_px"].bias * 0.3)
    # Without a reference or a spacing there is nothing to agree with: None, not zeros.
    plain = summarise_block("y", [evaluate_case(gt, gt)])
    assert plain.agreement["aop_reference"] is None and plain.agreement["hsd_mm"] is None
    assert plain.agreement["aop"].bias == 0.0


def test_agreement_is_in_the_json_summary(tmp_path):
    from ipp_seg.evaluate import evaluate_arrays

    gt = scene()
    report = evaluate_arrays([("a", gt, gt, None), ("b", scene(dx=3), gt, None), ("c", scene(dy=2), gt, None)])
    summary = json.loads(write_summary_json(report, tmp_path / "s.json").read_text())
    aop = summary["blocks"]["overall"]["agreement"]["aop"]
    assert aop["n"] == 3 and aop["bias"] == pytest.approx(report.overall.agreement["aop"].bias)
    assert aop["lower"] <= aop["bias"] <= aop["upper"]
    assert summary["blocks"]["overall"]["agreement"]["aop_reference"] is None
    assert "agreement" in summary["conventions"]
