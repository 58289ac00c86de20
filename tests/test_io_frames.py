"""Frame data types, frame selections and format dispatch."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipp_seg.io import (
    SUPPORTED_SUFFIXES,
    FrameSelection,
    ImagingRegion,
    Provenance,
    ScanReadError,
    UltrasoundFrame,
    parse_frame_selection,
    source_format,
)


def make_frame(regions=(), spacing=None) -> UltrasoundFrame:
    return UltrasoundFrame(
        pixels=np.zeros((100, 200), np.uint8),
        spacing_mm=spacing,
        regions=tuple(regions),
        frame_index=0,
        n_frames=1,
        provenance=Provenance("x.dcm", "dicom", "1.2.3", 1),
    )


def test_spacing_at_uses_the_containing_region():
    left = ImagingRegion(0, 0, 100, 100, (0.2, 0.2))
    right = ImagingRegion(100, 0, 200, 100, (0.5, 0.4))
    frame = make_frame([left, right])
    assert frame.spacing_at(10, 10) == (0.2, 0.2)
    assert frame.spacing_at(99.9, 50) == (0.2, 0.2)
    assert frame.spacing_at(100, 50) == (0.5, 0.4)  # x1 is exclusive
    assert frame.spacing_at(250, 50) is None


def test_uncalibrated_region_falls_back_to_frame_spacing():
    frame = make_frame([ImagingRegion(0, 0, 50, 50, None)], spacing=(0.3, 0.3))
    assert frame.spacing_at(10, 10) == (0.3, 0.3)


def test_calibration_at_names_the_source_of_the_spacing_it_gives():
    frame = dataclasses.replace(
        make_frame([ImagingRegion(0, 0, 50, 50, (0.2, 0.2)), ImagingRegion(50, 0, 100, 50, None)], (0.3, 0.3)),
        spacing_source="given")
    assert frame.calibration_at(10, 10) == ((0.2, 0.2), "ultrasound_region")
    assert frame.calibration_at(60, 10) == ((0.3, 0.3), "given")  # an uncalibrated region: the frame's
    assert make_frame().calibration_at(10, 10) == (None, None)


def test_an_unknown_spacing_source_is_refused():
    with pytest.raises(ValueError, match="spacing_source must be one of"):
        dataclasses.replace(make_frame(spacing=(0.3, 0.3)), spacing_source="guessed")


def test_imaging_region_is_the_largest():
    small = ImagingRegion(0, 0, 10, 10)
    big = ImagingRegion(20, 0, 120, 90)
    assert make_frame([small, big]).imaging_region is big
    assert make_frame().imaging_region is None
    assert big.area == 9000 and big.width == 100 and big.height == 90


def test_types_are_frozen():
    frame = make_frame()
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.frame_index = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ImagingRegion(0, 0, 1, 1).x0 = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, expected",
    [("all", FrameSelection()), (" ALL ", FrameSelection()), ("7", FrameSelection(7, 8)),
     ("2-5", FrameSelection(2, 6)), ("3 - 3", FrameSelection(3, 4)),
     # Every S-th frame from the first, as a cron field's step reads.
     ("all/10", FrameSelection(step=10)), ("5-50/5", FrameSelection(5, 51, 5)),
     (" 2 - 9 / 3 ", FrameSelection(2, 10, 3)),
     ("all/1", FrameSelection()), ("4/3", FrameSelection(4, 5)), ("4-5/3", FrameSelection(4, 5)),
     ("4-7/3", FrameSelection(4, 8, 3))],
)
def test_parse_frame_selection(text, expected):
    assert parse_frame_selection(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "5-2", "1-", "a", "1;2", "1.5", "all-3", "all/0", "1-3/", "/2", "1-3/2/2",
                                  "1-3/-2", "all/1.5"])
def test_parse_frame_selection_rejects(text):
    with pytest.raises(ValueError):
        parse_frame_selection(text)


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 1000))
def test_selection_indices(a, length, n_frames):
    b = a + length
    selection = parse_frame_selection(f"{a}-{b}")
    assert parse_frame_selection(str(selection)) == selection
    if a < n_frames:  # the frames of the range that the source has
        assert list(selection.indices(n_frames)) == list(range(a, min(b + 1, n_frames)))
    else:
        with pytest.raises(IndexError):
            selection.indices(n_frames)


@given(st.integers(0, 300), st.integers(0, 300), st.integers(1, 40), st.integers(1, 400), st.integers(-1, 400))
def test_a_stepped_selection_takes_every_step_th_frame_and_reads_on_after_any_frame(a, length, step, n_frames, index):
    b = a + length
    selection = parse_frame_selection(f"{a}-{b}/{step}")
    assert parse_frame_selection(str(selection)) == selection
    every = list(range(a, b + 1, step))
    if a < n_frames:
        assert list(selection.indices(n_frames)) == [i for i in every if i < n_frames]
    else:
        with pytest.raises(IndexError):
            selection.indices(n_frames)
    # After a damaged frame the cine is read on at the selection's next frame, never between its steps.
    after = selection.after(index)
    later = [i for i in every if i > index]
    assert (after is None) == (not later)
    if after is not None:
        assert list(after.indices(b + 1)) == later
    everything = parse_frame_selection(f"all/{step}")
    assert list(everything.indices(n_frames)) == list(range(0, n_frames, step))
    assert list(everything.after(index).indices(n_frames + index + step + 1))[0] == index + 1 + (-(index + 1) % step)


@pytest.mark.parametrize("text, listed, shown", [
    ("0,5,9", (0, 5, 9), "0,5,9"), ("9, 5,0,5", (0, 5, 9), "0,5,9"), ("3,5", (3, 5), "3,5"),
    ("0-4,10,20-40/10", (0, 1, 2, 3, 4, 10, 20, 30, 40), "0-4,10,20,30,40"), ("1-2 ,7", (1, 2, 7), "1-2,7")])
def test_a_list_of_frames_takes_those_frames_in_order(text, listed, shown):
    # A research midwife's wish: the frames a viewer showed her, by number.
    selection = parse_frame_selection(text)
    assert selection == FrameSelection(listed=listed) and not selection.is_all
    assert str(selection) == shown and parse_frame_selection(shown) == selection  # (runs of frames as ranges)
    # The frames of it that a source has, as for a range; a source with none of them has none.
    assert list(selection.indices(100)) == list(listed)
    if len(listed) > 1:
        assert list(selection.indices(listed[-1])) == list(listed[:-1])
    later = FrameSelection(listed=tuple(i + 1 for i in listed))
    with pytest.raises(IndexError, match=f"frames {later} requested, the source has 1 frame"):
        later.indices(1)
    # After a damaged frame: the listed frames after it.
    assert selection.after(listed[0]) == (FrameSelection(listed=listed[1:]) if len(listed) > 1 else None)
    assert selection.after(-1) == selection and selection.after(listed[-1]) is None


@pytest.mark.parametrize("text, said", [("0,,5", "empty item"), ("5,", "empty item"), ("0,all", "no last frame"),
                                        ("2-end,4", "no last frame"), ("1,x", "'x' is not a frame"),
                                        ("0-20000,1", "at most 10,000 frames"), ("4-2,1", "'4-2' is not a frame")])
def test_a_list_of_frames_refuses_what_it_cannot_hold(text, said):
    with pytest.raises(ValueError, match=said):
        parse_frame_selection(text)


def test_a_list_of_one_run_of_frames_is_that_range():
    assert parse_frame_selection("3,3") == FrameSelection(3, 4) == parse_frame_selection("3") == \
        FrameSelection(listed=(3,))
    assert parse_frame_selection("5,3,4") == FrameSelection(3, 6) == FrameSelection(listed=[4, 5, 3])


def test_a_long_list_is_said_short():
    # A reviewer's find: a still image's failed row quoted all 10,000 frames of --frames 1-9999,20000 (49 KB).
    selection = parse_frame_selection("1-9999,20000")
    assert str(selection) == "1-9999,20000"
    with pytest.raises(IndexError) as none_held:
        selection.indices(1)
    assert len(str(none_held.value)) < 80


def test_a_listed_selection_is_checked_as_it_is_made():
    with pytest.raises(ValueError, match="either listed frames or start"):
        FrameSelection(2, listed=(3,))
    with pytest.raises(ValueError, match="no frame listed"):
        FrameSelection(listed=())
    with pytest.raises(ValueError, match="whole numbers >= 0"):
        FrameSelection(listed=(1, -2))
    with pytest.raises(ValueError, match="frame indices"):
        FrameSelection(listed="0,5")  # type: ignore[arg-type]
    assert FrameSelection(listed=[np.int64(4), 2]).listed == (2, 4)  # (numpy indices, as analysis code holds them)


def test_all_selection_indices():
    assert FrameSelection().indices(4) == range(4)
    assert FrameSelection().is_all and str(FrameSelection()) == "all"
    with pytest.raises(ValueError):
        FrameSelection(3, 3)


def test_scan_read_error_text():
    error = ScanReadError("/data/a.dcm", "no pixel data")
    assert str(error) == "cannot read /data/a.dcm: no pixel data"
    assert error.path == "/data/a.dcm" and error.reason == "no pixel data"


def test_supported_suffixes_and_dispatch(tmp_path):
    expected = {".dcm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".mha", ".mhd", ".nrrd", ".nii", ".nii.gz"}
    assert expected <= SUPPORTED_SUFFIXES
    assert source_format("a/b/scan.DCM") == "dicom"
    assert source_format("x.PNG") == "image"
    assert source_format("vol.nii.gz") == "itk"
    (tmp_path / "blob").write_bytes(b"\x00" * 300)
    with pytest.raises(ScanReadError, match="unsupported file type"):
        source_format(tmp_path / "blob")


def test_a_colour_frame_is_refused_with_a_way_out():
    with pytest.raises(ValueError, match="luminance_rgb"):
        UltrasoundFrame(np.zeros((4, 5, 3), np.uint8), None, (), 0, 1, Provenance("x.png", "image", None, None))


def test_a_frame_built_by_hand_is_checked_as_it_is_made():
    # A library user's pass: these were accepted, and failed later deep in a measurement as a bare TypeError or
    # AttributeError (a scalar spacing, a list of pixels, no provenance) or as a ValueError at predict time.
    pixels, made = np.zeros((8, 8), np.uint8), Provenance("<memory>", "array")
    for arguments, error, said in (
            ((pixels, 0.3, (), 0, 1, made), ValueError, "spacing_mm must be two numbers"),
            ((pixels, (-0.3, 0.3), (), 0, 1, made), ValueError, "spacing_mm must be positive and finite"),
            ((pixels.tolist(), None, (), 0, 1, made), TypeError, "pixels are a numpy array, got list"),
            ((pixels.astype(complex), None, (), 0, 1, made), ValueError, "hold real numbers"),
            ((pixels, None, (), 0, 1, None), TypeError, "provenance is a Provenance, got NoneType"),
            ((pixels, None, ("region",), 0, 1, made), TypeError, "regions are ImagingRegion objects"),
            ((pixels, None, (), -1, 1, made), ValueError, "frame_index is an integer from 0, got -1"),
            ((pixels, None, (), 0, 0, made), ValueError, "n_frames is an integer from 1, got 0"),
            # (A QA pass: these still got through, or failed late.)
            ((pixels, None, None, 0, 1, made), TypeError, "regions are a tuple of ImagingRegion objects"),
            ((pixels, None, (), 5, 1, made), ValueError, "frame_index (5) must be below its n_frames (1)"),
            ((pixels, None, (), 0, 1, made, None, [[False] * 8] * 8), TypeError, "colour_marks are a boolean numpy")):
        with pytest.raises(error, match=re.escape(said)):
            UltrasoundFrame(*arguments)
    for spacing, said in ((-0.3, "spacing_mm must be two numbers"), ((-0.3, 0.3), "positive and finite"),
                          ((float("nan"), 0.3), "positive and finite"), ("0.3", "spacing_mm must be two numbers")):
        with pytest.raises(ValueError, match=re.escape(said)):
            ImagingRegion(0, 0, 8, 8, spacing)
    with pytest.raises(TypeError, match="x1 is a whole number of pixels"):
        ImagingRegion(0, 0, 8.5, 8)
    corners = ImagingRegion(*(np.uint16(v) for v in (0, 0, 256, 256)))  # (a QA pass: the area overflowed to 0)
    assert corners.area == 65536 and type(corners.x1) is int
    frame = UltrasoundFrame(pixels, [0.3, np.float32(0.25)], [], np.int64(0), 1, made)
    assert frame.spacing_mm == (0.3, 0.25) and isinstance(frame.spacing_mm[1], float) and frame.regions == ()


@pytest.mark.parametrize("suffix", [".dcm", ".png", ""])
def test_a_pipe_or_a_device_is_refused_without_reading_it(tmp_path, suffix):
    # A reader would wait on a pipe for ever, or read a device such as /dev/zero until memory ran out.
    import os

    from ipp_seg.io import ScanReadError, count_frames, read_frames

    pipe = tmp_path / f"pipe{suffix}"
    os.mkfifo(pipe)
    device = tmp_path / f"zero{suffix}"
    device.symlink_to("/dev/zero")
    for path, kind in ((pipe, "a pipe (FIFO), not a file"), (device, "a device, not a file")):
        with pytest.raises(ScanReadError, match=re.escape(kind)):
            next(iter(read_frames(path)))
        with pytest.raises(ScanReadError, match=re.escape(kind)):
            count_frames(path)


def test_frames_compare_by_identity_not_by_their_arrays(sample_png):
    # A library user's pass: == of two frames raised numpy's "truth value ... is ambiguous", and hash() failed.
    from ipp_seg.io import read_frame

    first, again = read_frame(sample_png), read_frame(sample_png)
    assert first == first and first != again and len({first, again}) == 2


def test_every_error_ipp_seg_raises_on_purpose_has_one_base():
    # A library user's pass: ScanReadError, NotUltrasoundFrameError, ModelNotFoundError, ... had to be caught apart.
    from ipp_seg import IppSegError
    from ipp_seg.evaluate.report import ReferenceAopError
    from ipp_seg.inference import ModelNotFoundError, NotUltrasoundFrameError, Predictor
    from ipp_seg.inference.backends import BackendError
    from ipp_seg.inference.batch import NoScansError, OutputLockedError, ResumeError, WorkerDiedError
    from ipp_seg.io import NotAnImageError, ScanReadError, read_frame
    from ipp_seg.io.dicom_results import DicomResultError
    from ipp_seg.train.loop import RunWriteError, TrainingDiverged

    kinds = (ReferenceAopError, ModelNotFoundError, NotUltrasoundFrameError, BackendError, NoScansError,
             OutputLockedError, ResumeError, WorkerDiedError, ScanReadError, NotAnImageError, DicomResultError,
             RunWriteError, TrainingDiverged)
    assert all(issubclass(kind, IppSegError) for kind in kinds)
    # ... and each is still the built-in kind it was, for code that catches those.
    assert issubclass(ModelNotFoundError, LookupError) and issubclass(NoScansError, ValueError)
    assert issubclass(BackendError, RuntimeError) and issubclass(NotUltrasoundFrameError, ValueError)
    with pytest.raises(IppSegError, match="cannot read"):
        read_frame("/nonexistent/scan.dcm")
    with pytest.raises(IppSegError):
        Predictor("no-such-model")


def test_a_provenance_made_by_hand_is_checked_and_its_numbers_are_pythons():
    # A library user's pass: a NaN frame time (or a numpy number) had made predict's report no strict JSON writer takes.
    import json

    made = Provenance("x.dcm", "dicom", frame_number=np.int64(2), frame_time_ms=np.float32(40.0))
    assert (made.frame_number, made.frame_time_ms) == (2, 40.0)
    assert type(made.frame_number) is int and type(made.frame_time_ms) is float
    json.dumps({"frame_number": made.frame_number, "frame_time_ms": made.frame_time_ms}, allow_nan=False)
    for bad in (float("nan"), float("inf"), -5.0, "40", True):
        with pytest.raises(ValueError, match="frame_time_ms"):
            Provenance("x.dcm", "dicom", frame_number=1, frame_time_ms=bad)
    for bad in (0, -1, 1.5, "1", True):
        with pytest.raises(ValueError, match="frame_number"):
            Provenance("x.dcm", "dicom", frame_number=bad)
    frame = UltrasoundFrame(np.zeros((8, 8), np.uint8), None, (), np.int64(1), np.int64(3),
                            Provenance("x.dcm", "dicom", frame_number=2, frame_time_ms=40))
    assert type(frame.frame_index) is int and type(frame.n_frames) is int


def test_a_selection_reads_back_from_its_text_and_takes_only_whole_numbers():
    # A library user's pass: str(FrameSelection(5)) was '5-end', which nothing parsed; 1.5 or True made a selection
    # that failed later, printed as '1.5-end'; Arabic-Indic digits were taken as a frame number.
    for selection in (FrameSelection(5), FrameSelection(5, None, 3), FrameSelection(0, None, 4), FrameSelection(2, 9, 3),
                      FrameSelection(np.int64(1), np.int64(4))):
        assert parse_frame_selection(str(selection)) == selection
    assert parse_frame_selection("5-END") == FrameSelection(5) and list(FrameSelection(5).indices(8)) == [5, 6, 7]
    assert type(FrameSelection(np.int64(1)).start) is int
    for bad in ({"start": 1.5}, {"start": True}, {"stop": 2.5}, {"step": 2.0}):
        with pytest.raises(ValueError, match="whole number"):
            FrameSelection(**bad)
    with pytest.raises(ValueError):
        parse_frame_selection("\u0663")  # ARABIC-INDIC DIGIT THREE


def test_a_source_of_no_frame_is_said_so():
    with pytest.raises(IndexError, match="the source has no frame$"):
        FrameSelection().indices(0)
