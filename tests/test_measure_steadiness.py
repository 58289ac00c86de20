"""The cine steadiness check: a frame's AoP against its neighbours' in time (aop_unsteady)."""

from __future__ import annotations

import numpy as np
import pytest

from ipp_seg.inference.batch import FrameFailure, steadiness_checked
from ipp_seg.inference.pipeline import FrameResult
from ipp_seg.io import Provenance, UltrasoundFrame
from ipp_seg.measure import Landmarks, Measurement
from ipp_seg.measure.result import ANGLE_IN_DOUBT, REASON_ACTIONS, REASON_TITLES, REASONS
from ipp_seg.measure.steadiness import (AOP_UNSTEADY, AOP_UNSTEADY_DEG, STEADINESS_WINDOW_MS, aop_off_its_neighbours,
                                        aop_unsteady)

FRAME_MS = 40.0  # 25 frames a second


def test_the_one_frame_far_from_its_neighbours_is_flagged_and_no_other():
    aops = [120.0, 121.0, 119.5, 120.5, 135.0, 120.0, 121.5, 119.0]
    times = [k * FRAME_MS for k in range(len(aops))]
    assert aop_unsteady(times, aops) == [k == 4 for k in range(len(aops))]
    # Within the limit, nothing: a frame 9 degrees off its neighbours is within what a cine may show.
    assert not any(aop_unsteady(times, [*aops[:4], 129.0, *aops[5:]]))


def test_a_frame_without_a_time_or_an_angle_is_never_flagged_nor_a_neighbour():
    times = [0.0, 40.0, None, 120.0, 160.0]
    assert aop_unsteady(times, [120.0, 121.0, 170.0, 120.0, 119.0]) == [False] * 5
    # A frame not measured is nobody's neighbour: frame 2 has but one measured neighbour left.
    assert aop_unsteady([0.0, 40.0, 80.0], [None, 120.0, 150.0]) == [False, False, False]
    assert aop_unsteady([0.0, 40.0, 80.0, 120.0], [None, 120.0, 121.0, 150.0]) == [False, False, False, True]


def test_where_the_neighbours_disagree_no_frame_is_blamed():
    # Frames 0 and 2 have two neighbours 30 degrees apart: which one is wrong cannot be told from them. Frame 1's
    # two agree, and it lies off both.
    assert aop_unsteady([0.0, 40.0, 80.0], [120.0, 150.0, 121.0]) == [False, True, False]
    # A model that reads two angles by turns: each frame's neighbours hold more of the other reading, and every
    # frame is flagged, as none of them is steady.
    assert aop_unsteady([0.0, 40.0, 80.0, 120.0], [120.0, 150.0, 121.0, 151.0]) == [True] * 4


def test_neighbours_lie_within_the_window_only():
    # Frames a second apart: each has no neighbour in the window, so a labour's changes over seconds are never
    # taken for a jump.
    times = [k * 1000.0 for k in range(5)]
    assert aop_unsteady(times, [100.0, 130.0, 100.0, 140.0, 100.0]) == [False] * 5
    # The window's edge is inside it.
    assert aop_unsteady([0.0, STEADINESS_WINDOW_MS, 2 * STEADINESS_WINDOW_MS], [100.0, 150.0, 100.0]) == \
        [False, True, False]


def test_a_steady_change_is_not_a_jump():
    # 10 degrees a second, faster than a push moves the head: no frame lies off the median of those around it.
    times = [k * FRAME_MS for k in range(60)]
    assert not any(aop_unsteady(times, [110.0 + t / 100.0 for t in times]))


def test_the_check_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="one time per AoP"):
        aop_unsteady([0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="window_ms"):
        aop_unsteady([0.0], [1.0], window_ms=0)
    with pytest.raises(ValueError, match="limit_deg"):
        aop_unsteady([0.0], [1.0], limit_deg=float("nan"))


def test_the_reason_is_a_warning_that_doubts_the_angle_with_a_title_and_an_action():
    assert REASONS[AOP_UNSTEADY][0] == "warning"
    assert f"{AOP_UNSTEADY_DEG:g}°" in REASONS[AOP_UNSTEADY][1] and AOP_UNSTEADY in ANGLE_IN_DOUBT
    assert AOP_UNSTEADY in REASON_TITLES and AOP_UNSTEADY in REASON_ACTIONS


def _result(aop: float | None, time_ms: float | None, index: int = 0, path: str = "cine.dcm") -> FrameResult:
    measurement = Measurement(aop, None, None, None, None, "ok" if aop is not None else "failed",
                              () if aop is not None else ("ps_missing",), "ellipse", "standard", None, Landmarks())
    provenance = Provenance(path, "dicom", frame_number=index + 1, frame_time_ms=time_ms)
    frame = UltrasoundFrame(np.zeros((4, 4), np.uint8), None, (), index, 1000, provenance)
    return FrameResult(frame, np.zeros((4, 4), np.uint8), measurement, "model")


def test_results_keep_their_order_and_the_odd_frame_carries_the_warning():
    aops = [120.0, 121.0, 150.0, 120.0, None, 119.0, 120.5]
    cine = [(0, _result(a, k * FRAME_MS, k)) for k, a in enumerate(aops)]
    failure = (0, FrameFailure(7, "damaged", "unreadable", None, 100))
    still = (1, _result(80.0, None, 0, "still.png"))
    other = [(2, _result(a, k * FRAME_MS, k, "other.dcm")) for k, a in enumerate([80.0, 81.0])]
    entries = [*cine, failure, still, *other]
    given = list(steadiness_checked(entries))

    def where(entry):
        item, result = entry
        if isinstance(result, FrameResult):
            return item, result.frame.provenance.path, result.frame.frame_index
        return item, "", result.frame_index
    assert [where(entry) for entry in given] == [where(entry) for entry in entries]
    flagged = [r for _, r in given if isinstance(r, FrameResult) and AOP_UNSTEADY in r.measurement.reasons]
    assert [r.frame.frame_index for r in flagged] == [2]
    assert flagged[0].measurement.status == "warning" and flagged[0].measurement.aop_deg == 150.0
    assert given[2][1] is not cine[2][1] and given[2][1].labels is cine[2][1].labels  # (the same result otherwise)
    assert all(r.measurement.status == "ok" for _, r in given if isinstance(r, FrameResult) and r not in flagged
               and r.measurement.aop_deg is not None)


def test_each_file_is_judged_alone():
    # The same times in two files: a file's frames are not the next file's neighbours.
    first = [(0, _result(a, k * FRAME_MS, k, "a.dcm")) for k, a in enumerate([100.0, 100.0, 100.0])]
    second = [(1, _result(a, k * FRAME_MS, k, "b.dcm")) for k, a in enumerate([140.0, 141.0, 139.0])]
    assert not any(AOP_UNSTEADY in r.measurement.reasons for _, r in steadiness_checked([*first, *second]))


def _given_as_taken(entries, **options) -> list[tuple]:
    """(file index, result, how many entries had been taken when it came) of steadiness_checked over ``entries``."""
    taken = 0

    def source():
        nonlocal taken
        for entry in entries:
            taken += 1
            yield entry
    return [(item, result, taken) for item, result in steadiness_checked(source(), **options)]


def test_a_cines_results_are_held_back_no_longer_than_the_window():
    n = 100
    cine = [(0, _result(120.0, k * FRAME_MS, k)) for k in range(n)]
    lags = [taken - 1 - result.frame.frame_index for _, result, taken in _given_as_taken(cine)]
    # A frame is given once a frame beyond its window is measured: a few frames at a cine's rate, never the
    # whole cine; the last ones at its end.
    assert max(lags[: n - 20]) == int(STEADINESS_WINDOW_MS // FRAME_MS) + 1
    assert len(lags) == n


def test_a_still_and_a_cine_without_timing_are_given_at_once():
    entries = [(0, _result(120.0, None, k)) for k in range(5)] + [(1, _result(90.0, None, 0, "still.png"))]
    for _, result, taken in _given_as_taken(entries):
        assert entries[taken - 1][1] is result


def test_closing_the_checked_results_closes_what_they_come_from():
    # The batch closes its results when it stops early, so that the reader's files close at once.
    closed = []

    def source():
        try:
            for k in range(50):
                yield 0, _result(120.0, k * FRAME_MS, k)
        finally:
            closed.append(True)
    held = source()  # (held here: not closed by being collected)
    checked = steadiness_checked(held)
    next(checked)
    checked.close()
    assert closed == [True]


def test_a_files_start_can_be_said_before_its_first_result_is_held():
    # The batch gives a file's rows once the next file starts: a cine's first frame, held for the frames after it,
    # had held the rows of the still before it, and a stop meanwhile lost them.
    still = (0, _result(90.0, None, 0, "still.png"))
    cine = [(1, _result(120.0, k * FRAME_MS, k)) for k in range(30)]
    given = [(item, None if result is None else result.frame.frame_index, taken)
             for item, result, taken in _given_as_taken([still, *cine], say_file_starts=True)]
    assert given[:2] == [(0, None, 1), (0, 0, 1)] and given[2] == (1, None, 2)  # said as the cine's first comes
    assert [g[:2] for g in given[3:]] == [(1, k) for k in range(30)]
    assert all(result is not None for _, result in steadiness_checked([still, *cine]))  # (unless asked)


def test_frames_measured_before_are_neighbours_of_those_measured_now():
    # A resumed run measures frame 3 of a cine alone: the angles its CSV holds of frames 0-2 and 4-6 judge it.
    now = [(0, _result(150.0, 3 * FRAME_MS, 3))]
    before = [(k * FRAME_MS, 120.0 + 0.5 * k) for k in (0, 1, 2, 4, 5, 6)] + [(5000.0, 150.0)]  # (one far off)
    (_, alone), = steadiness_checked(now)
    (_, judged), = steadiness_checked(now, known={0: before})
    assert AOP_UNSTEADY not in alone.measurement.reasons and AOP_UNSTEADY in judged.measurement.reasons
    (_, steady), = steadiness_checked([(0, _result(121.0, 3 * FRAME_MS, 3))], known={0: before})
    assert AOP_UNSTEADY not in steady.measurement.reasons
    # Another file's are not.
    (_, other), = steadiness_checked(now, known={1: before})
    assert AOP_UNSTEADY not in other.measurement.reasons


def test_one_frame_is_judged_on_the_others_in_its_window():
    others = [(0.0, 120.0), (40.0, 121.0), (80.0, None), (120.0, 119.5), (900.0, 160.0)]
    assert aop_off_its_neighbours(60.0, 135.0, others)  # 15 degrees off 120 (the frame at 900 ms is too far)
    assert not aop_off_its_neighbours(60.0, 129.0, others)  # 9 degrees off
    assert not aop_off_its_neighbours(60.0, 135.0, others[1:3])  # one measured neighbour in the window: not judged
    assert not aop_off_its_neighbours(60.0, 135.0, [(0.0, 120.0), (40.0, 150.0)])  # neighbours that disagree


def test_a_cine_whose_frames_all_lie_in_one_window_is_held_a_bounded_number_of_frames():
    # A reviewer's find: a header's frame time in seconds read as ms (0.033) put a whole cine in one window: every
    # result held until the file ended (its pixels and masks in memory), each judged on every other.
    from ipp_seg.inference.batch import MAX_HELD_FRAMES

    n = 3 * MAX_HELD_FRAMES
    cine = [(0, _result(150.0 if k == n // 2 else 120.0 + 0.1 * (k % 3), k * 0.033, k)) for k in range(n)]
    given = _given_as_taken(cine)
    lags = [taken - 1 - result.frame.frame_index for _, result, taken in given]
    flagged = [result.frame.frame_index for _, result, _ in given if AOP_UNSTEADY in result.measurement.reasons]
    assert len(lags) == n and max(lags[: n - MAX_HELD_FRAMES - 1]) == MAX_HELD_FRAMES
    assert flagged == [n // 2]  # (judged on the frames held around it)


def test_a_resume_takes_each_known_frame_once():
    # A reviewer's find: a row repeated (as a spreadsheet's copy repeats it) had counted as a second neighbour.
    from ipp_seg.inference.batch import _known_cine_angles

    row = {"file": "cine.dcm", "frame": "2", "frame_time_ms": "80.0", "aop_deg": "120.5"}
    rows = [row, dict(row), {**row, "frame": "4", "frame_time_ms": "160.0", "aop_deg": ""},
            {**row, "frame": "5", "frame_time_ms": "", "aop_deg": "121"}, {**row, "frame": "7"},
            {**row, "file": "other.dcm"}]
    assert _known_cine_angles(rows, {"cine.dcm": frozenset({2, 4, 5})}) == (("cine.dcm", ((80.0, 120.5),)),)


def test_the_cine_frames_no_check_could_judge_are_counted():
    from ipp_seg.inference.batch import cine_frames_not_checked

    def row(frame: int, time_ms, aop="120.0", n_frames="50") -> dict:
        return {"frame": str(frame), "frame_time_ms": "" if time_ms is None else str(time_ms), "aop_deg": aop,
                "n_frames": n_frames}
    loop = [row(k, k * FRAME_MS) for k in range(5)]
    assert cine_frames_not_checked(loop) == (0, 0)
    assert cine_frames_not_checked([row(3, 120.0), row(30, 1200.0)]) == (2, 0)  # picked frames, far apart
    assert cine_frames_not_checked([row(3, 120.0), row(4, 160.0)]) == (2, 0)  # one neighbour each
    assert cine_frames_not_checked([row(3, 120.0)], known=[(80.0, 119.0), (160.0, 121.0)]) == (0, 0)
    assert cine_frames_not_checked([row(k, None) for k in range(4)]) == (0, 4)  # no frame times
    # Stills and frames without an angle are no cine frames to check.
    assert cine_frames_not_checked([row(0, None, n_frames="1"), row(3, 120.0, aop="")]) == (0, 0)
    # Over several scans, each judged alone (the same times in two files are no neighbours).
    from ipp_seg.inference.batch import cine_frames_not_checked_of_scans

    two = [{**row(3, 120.0), "file": "a.dcm"}, {**row(4, 160.0), "file": "b.dcm"}, {**row(9, None), "file": "c.dcm"}]
    assert cine_frames_not_checked_of_scans(two) == (2, 1)
