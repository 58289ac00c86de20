"""The Python API: a Predictor measures files, frames and arrays as ``ipp-seg predict`` does."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ipp_seg.cli import app
from ipp_seg.inference import FrameFailure, FrameResult, ModelNotFoundError, NotUltrasoundFrameError, Predictor
from ipp_seg.io import read_frame

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def test_a_file_measures_as_the_command_line_does(predictor, sample_dicom):
    (result,) = list(predictor.predict(sample_dicom))
    assert isinstance(result, FrameResult)
    cli = CliRunner().invoke(app, ["predict", str(sample_dicom), "--json"])
    assert cli.exit_code == 0, cli.output
    (report,) = json.loads(cli.stdout)
    m = result.measurement
    assert (m.status, list(m.reasons), m.spacing_source) == (report["status"], report["reasons"],
                                                            report["spacing_source"])
    assert m.aop_deg == pytest.approx(report["aop_deg"], abs=1e-9)
    assert m.hsd_mm == pytest.approx(report["hsd_mm"], abs=1e-9)
    assert result.labels.shape == result.frame.pixels.shape and set(np.unique(result.labels)) == {0, 1, 2}
    assert predictor.model_name == report["model"] and predictor.provider == report["provider"]
    # The library gives the same JSON object (all but the time, which the command line measures).
    library = predictor.report(result)
    assert library.keys() == report.keys() and library["time_ms"] is None
    timed = ("time_ms", "measured_at")  # (the second each was made may differ)
    assert {k: v for k, v in library.items() if k not in timed} == {k: v for k, v in report.items() if k not in timed}
    assert library["file_sha256"] == hashlib.sha256(sample_dicom.read_bytes()).hexdigest()
    # What it ran on, as a batch run's record names it (a QA auditor: predict's report had named no machine).
    import onnxruntime

    assert report["runtime"]["onnxruntime"] == onnxruntime.__version__ and report["runtime"]["processor"]
    assert set(report["runtime"]) - {"torch"} == {"python", "onnxruntime", "system", "processor"}


def test_a_failure_reports_as_the_command_line_does(predictor, tmp_path):
    missing = tmp_path / "absent.png"
    (failure,) = list(predictor.predict(missing))
    cli = CliRunner().invoke(app, ["predict", str(missing), "--json"])
    (report,) = json.loads(cli.stdout)
    library = predictor.report(failure, missing)
    timed = ("time_ms", "measured_at")
    assert {k: v for k, v in library.items() if k not in timed} == {k: v for k, v in report.items() if k not in timed}
    assert library["time_ms"] is None and report["time_ms"] >= 0  # the command line times the refusal too
    timed = predictor.predict_pixels(cv2.imread(str(SAMPLES / "psfhs_04750.png"), cv2.IMREAD_GRAYSCALE))
    assert predictor.report(timed)["time_ms"] > 0  # a frame segmented on its own has its time
    # ...and no file: its file's keys are null (a file of the same name in the working folder is not it).
    assert {k: predictor.report(timed)[k] for k in ("file_bytes", "file_modified", "file_sha256")} == dict.fromkeys(
        ("file_bytes", "file_modified", "file_sha256"))
    # A measurement alone (or None) is no result to report: said so, not an AttributeError from deep inside.
    for wrong in (timed.measurement, None):
        with pytest.raises(TypeError, match=f"takes a FrameResult or FrameFailure.*not a {type(wrong).__name__}"):
            predictor.report(wrong)


def test_the_predictor_names_its_weights_by_checksum(predictor, sample_dicom):
    from ipp_seg.inference.registry import resolve_model, sha256_of

    assert predictor.model_sha256 == sha256_of(resolve_model("dssau-net-s").onnx_path)
    (result,) = list(predictor.predict(sample_dicom))
    assert result.model_sha256 == predictor.model_sha256


def test_many_files_share_model_calls_and_keep_their_order(predictor, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a scan")
    paths = [SAMPLES / "psfhs_04700.png", bad, SAMPLES / "psfhs_04750.png", SAMPLES / "psfhs_04700_us.dcm"]
    results = list(predictor.predict_files(paths))
    assert [path for path, _ in results] == paths
    assert isinstance(results[1][1], FrameFailure)
    for path, result in results[::2] + results[3:]:
        (alone,) = list(predictor.predict(path))
        assert result.measurement.aop_deg == pytest.approx(alone.measurement.aop_deg, abs=0.2)
        assert result.frame.provenance.path == str(path)
    # Several unreadable files among the readable ones keep their places too: a later failure
    # must not release an earlier one ahead of frames still waiting for their model call.
    mixed = [SAMPLES / "psfhs_04700.png", tmp_path / "missing1.png", SAMPLES / "psfhs_04750.png",
             tmp_path / "missing2.png", bad, SAMPLES / "psfhs_04700_us.dcm", tmp_path / "missing3.png"]
    assert [path for path, _ in predictor.predict_files(mixed)] == mixed
    with pytest.raises(TypeError, match="takes a list of paths"):
        predictor.predict_files(str(SAMPLES / "psfhs_04700.png"))  # at the call, not at the first result


def test_an_unreadable_file_is_a_failure_not_an_exception(predictor, tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    (result,) = list(predictor.predict(bad))
    assert isinstance(result, FrameFailure) and result.frame_index is None and result.reason
    (missing,) = list(predictor.predict(tmp_path / "absent.dcm"))
    assert isinstance(missing, FrameFailure) and "no such file" in missing.reason.lower()


def test_pixels_measure_as_the_file_they_came_from(predictor):
    path = SAMPLES / "psfhs_04750.png"
    from_file = next(iter(predictor.predict(path)))
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    from_array = predictor.predict_pixels(grey)
    assert from_array.measurement.aop_deg == pytest.approx(from_file.measurement.aop_deg, abs=1e-9)
    np.testing.assert_array_equal(from_array.labels, from_file.labels)
    assert from_array.frame.provenance.source_format == "array"
    # RGB arrays are taken as their luma; a grey image stored as RGB is the same image.
    rgb = np.repeat(grey[..., None], 3, axis=2)
    assert predictor.predict_pixels(rgb).measurement.aop_deg == pytest.approx(from_file.measurement.aop_deg)


@pytest.mark.parametrize("name", ["psfhs_04700.png", "psfhs_04750.png", "psfhs_04380.png"])
def test_a_head_drawn_where_the_frame_shows_none_fails_as_not_seen(predictor, name):
    # A clinical safety pass: with the tissue below the symphysis replaced by dark speckle (the head out of view,
    # behind fluid), the network drew a head anyway, sure of it, and the frame got an AoP and an HSD, status ok.
    from ipp_seg.inference.pipeline import skull_echo, skull_not_seen

    grey = cv2.imread(str(SAMPLES / name), cv2.IMREAD_GRAYSCALE)
    for curve in (1.0, 1.5):  # (a darker display curve dims a faint skull against the frame: not failed for it)
        shown = (255 * (grey / 255.0) ** curve).astype(np.uint8)
        seen = predictor.predict_pixels(shown)
        assert "fh_not_seen" not in seen.measurement.reasons and seen.measurement.aop_deg is not None
        assert not skull_not_seen(skull_echo(seen.labels == 2, seen.labels == 1, shown))
    below_ps = np.arange(grey.shape[0])[:, None] > np.nonzero(seen.labels == 1)[0].max() + 5
    hidden = grey.copy()
    tissue = below_ps & (grey > 0)
    hidden[tissue] = np.clip(np.random.default_rng(0).rayleigh(6, np.count_nonzero(tissue)), 0, 255)
    unseen = predictor.predict_pixels(hidden)
    assert unseen.measurement.status == "failed" and unseen.measurement.reasons[0] == "fh_not_seen"
    assert unseen.measurement.aop_deg is None and unseen.measurement.hsd_px is None


def test_the_skull_echo_is_the_brightness_along_a_heads_outline():
    from ipp_seg.inference.pipeline import skull_echo, skull_not_seen

    image = np.full((128, 128), 40, np.uint8)
    head, ps = np.zeros((128, 128), np.uint8), np.zeros((128, 128), bool)
    cv2.circle(head, (64, 80), 30, 1, -1)
    cv2.circle(image, (64, 80), 31, 200, 2)  # a skull's echo along the outline, 200 of a frame whose top is 200
    skull = skull_echo(head.astype(bool), ps, image)
    assert skull.against_frame == pytest.approx(1.0) and skull.against_inside == pytest.approx(200 / 40)
    assert not skull_not_seen(skull)
    dark = np.full((128, 128), 40, np.uint8)
    dark[5:25, 5:25] = 200  # the frame's bright part elsewhere
    none = skull_echo(head.astype(bool), ps, dark)
    assert (none.against_frame, none.against_inside) == pytest.approx((40 / 200, 1.0)) and skull_not_seen(none)
    faint = np.full((128, 128), 30, np.uint8)  # a faint skull: dark against the frame, twice its inside
    cv2.circle(faint, (64, 80), 31, 60, 2)
    faint[5:25, 5:25] = 249
    faint_skull = skull_echo(head.astype(bool), ps, faint)
    assert faint_skull.against_frame == pytest.approx(60 / 249) and faint_skull.against_inside == pytest.approx(2.0)
    assert not skull_not_seen(faint_skull)
    ps[40:52, 40:90] = True  # the outline near the PS is left out; what remains is still the skull's
    assert skull_echo(head.astype(bool), ps, image).against_frame == pytest.approx(1.0)
    assert skull_echo(np.zeros((128, 128), bool), ps, image) is None  # no head
    edge = np.zeros((128, 128), bool)
    edge[:, :2] = True  # an outline along the image's edge alone: nothing to judge
    assert skull_echo(edge, ps, image) is None


@pytest.mark.parametrize("convert", [
    lambda g: g.astype(np.int64), lambda g: g.tolist(), lambda g: g.astype(np.int32), lambda g: g.astype(np.uint32),
    lambda g: g[None], lambda g: g[..., None], lambda g: np.dstack([g, g, g, np.full_like(g, 255)]),
    lambda g: g.astype(np.uint16) * 257,  # the same image in 16 bits
], ids=["int64", "list", "int32", "uint32", "1xHxW", "HxWx1", "rgba", "uint16"])
def test_an_8_bit_image_in_any_integer_type_or_layout_measures_as_uint8_does(predictor, convert):
    # int64 (what a list becomes) was scaled from its type's range: every pixel read as 127.5,
    # and the frame was refused as "blank".
    grey = cv2.imread(str(SAMPLES / "psfhs_04750.png"), cv2.IMREAD_GRAYSCALE)
    expected = predictor.predict_pixels(grey).measurement.aop_deg
    assert predictor.predict_pixels(convert(grey)).measurement.aop_deg == pytest.approx(expected, abs=0.5)


def test_integer_pixels_beyond_16_bits_are_refused(predictor):
    with pytest.raises(ValueError, match="0-65535"):
        predictor.predict_pixels(np.arange(256 * 256, dtype=np.int64).reshape(256, 256) - 5)


def test_a_frame_with_nan_outside_the_field_of_view_measures(predictor):
    from ipp_seg.io import Provenance, UltrasoundFrame

    grey = cv2.imread(str(SAMPLES / "psfhs_04750.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    holed = np.where(grey < 10, np.nan, grey).astype(np.float32)
    result = predictor.predict_frame(UltrasoundFrame(holed, None, (), 0, 1, Provenance("x", "array")))
    assert result.measurement.status != "failed"


def test_a_non_square_frame_measures_alike_whatever_its_black_level(predictor):
    # Padded to a square with 0 before normalising, a frame in dB (black -60) or with an offset
    # (black 1000) had read 137 and 92 deg for 146: only the relative grey levels may count.
    grey = cv2.imread(str(SAMPLES / "psfhs_04700.png"), cv2.IMREAD_GRAYSCALE)[:220]
    as_stored = predictor.predict_pixels(grey).measurement.aop_deg
    # Nor the scale: a float frame whose range is a millionth had been squeezed by the normalisation's floor (3-31 deg).
    for shifted in (grey.astype(np.float32) / 255 * 60 - 60, grey.astype(np.float32) + 1000,
                    grey.astype(np.float32) / 255 * 1e-6):
        # (Within onnxruntime's last bits, which take 0.08 deg here on an AVX2 CPU, 0.03 on one with AVX-512.)
        assert predictor.predict_pixels(shifted).measurement.aop_deg == pytest.approx(as_stored, abs=0.2)
    # On an offset too (a QA pass: 0.5 + a millionth per grey level had read 123.5 for 126.9, status ok). float32
    # holds such a frame to about a 16th of a grey level, so a little more room.
    for offset in (0.5, -0.5):
        tiny = np.float32(offset) + grey.astype(np.float32) * np.float32(1e-6)
        assert predictor.predict_pixels(tiny).measurement.aop_deg == pytest.approx(as_stored, abs=0.5)


def test_the_report_says_which_view_of_a_dual_view_was_measured(predictor):
    from ipp_seg.io import ImagingRegion, Provenance, UltrasoundFrame

    grey = cv2.imread(str(SAMPLES / "psfhs_04750.png"), cv2.IMREAD_GRAYSCALE)
    h, w = grey.shape
    views = np.hstack([grey, np.zeros_like(grey)])  # two equal regions: the first is measured
    regions = (ImagingRegion(0, 0, w, h, (0.2, 0.2)), ImagingRegion(w, 0, 2 * w, h, (0.2, 0.2)))
    dual = predictor.report(predictor.predict_frame(UltrasoundFrame(views, None, regions, 0, 1,
                                                                    Provenance("dual", "dicom"))))
    assert dual["segmented_box"] == [0, 0, w, h] and dual["tissue_regions"] == 2 and dual["aop_deg"]
    single = predictor.report(predictor.predict_pixels(grey))
    assert single["segmented_box"] == [0, 0, w, h] and single["tissue_regions"] == 0
    assert dual["aop_deg"] == pytest.approx(single["aop_deg"], abs=1e-6)  # the view, not the black half


def test_a_spacing_given_with_pixels_gives_millimetres_and_says_so(predictor):
    grey = read_frame(SAMPLES / "psfhs_04700.png").pixels
    plain = predictor.predict_pixels(grey).measurement
    assert plain.spacing_source is None and plain.psfh_shortest_mm is None and "spacing_unknown" in plain.reasons
    given = predictor.predict_pixels(grey, spacing_mm=(0.2, 0.2))
    assert given.measurement.spacing_source == "given" and given.measurement.spacing_mm == (0.2, 0.2)
    assert given.measurement.psfh_shortest_mm == pytest.approx(0.2 * given.measurement.psfh_shortest_px)
    # Its report names the spacing given, as a row of --spacing-mm does (it had said null beside "given").
    report = predictor.report(given)
    assert report["spacing_source"] == "given" and report["spacing_given_mm"] == [0.2, 0.2]
    assert predictor.report(predictor.predict_pixels(grey))["spacing_given_mm"] is None
    wide = Predictor(spacing_mm=(0.3, 0.3))  # the predictor's own spacing, where the call gives none
    assert wide.report(wide.predict_pixels(grey))["spacing_given_mm"] == [0.3, 0.3]
    assert wide.report(wide.predict_pixels(grey, spacing_mm=(0.2, 0.2)))["spacing_given_mm"] == [0.2, 0.2]


def test_arrays_that_are_no_ultrasound_frame_are_refused_with_the_reason(predictor):
    # With the code a CSV row of such a frame has (it had been a bare ValueError, told apart by its words alone).
    for pixels, words in ((np.zeros((256, 256), np.uint8), "blank image"),
                          (np.repeat(np.arange(3, dtype=np.uint8), 256 * 86)[: 256 * 256].reshape(256, 256),
                           "label mask"),
                          (np.arange(100, dtype=np.uint8).reshape(10, 10), "too small"),
                          (np.full((64, 64), np.nan), "no pixel holds a finite value")):
        with pytest.raises(NotUltrasoundFrameError, match=words) as refused:
            predictor.predict_pixels(pixels)
        assert isinstance(refused.value, ValueError) and refused.value.code == "not_ultrasound_frame"
    with pytest.raises(ValueError, match="shape"):
        predictor.predict_pixels(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(3, 64, 64\): channels first\? np.moveaxis\(pixels, 0, -1\)"):
        predictor.predict_pixels(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="real numbers"):
        predictor.predict_pixels(np.full((64, 64), "a"))
    with pytest.raises(ValueError, match="spacing_mm"):
        predictor.predict_pixels(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8),
                                 spacing_mm=(0.0, 0.2))


@pytest.mark.parametrize("options, words", [
    ({"method": "angle"}, "method must be one of"),
    ({"orientation": "left"}, "orientation must be one of"),
    ({"backend": "tflite"}, "backend must be one of"),
    ({"device": "gpu"}, "device must be one of"),
    ({"frames": "first"}, "frame selection"),
    ({"threads": 0}, "threads"),
    ({"spacing_mm": (0.2, -1)}, "spacing_mm"),
    ({"spacing_mm": (3, 3)}, "an ultrasound pixel is 0.01-2.0 mm"),  # as the command line refuses it
    ({"spacing_mm": "12"}, "two numbers"),  # not 1 x 2 mm
    ({"spacing_mm": (True, True)}, "two numbers"),
    ({"threads": 10**6}, "threads must be an integer from 1 to"),  # took 23 GB before failing
    ({"tta": "no"}, "tta must be True or False"),
    ({"model": ""}, "model must be"),
    ({"model": 123}, "model must be"),
    ({"frames": 1.5}, "frames must be"),
    ({"frames": "all/0"}, "steps by 0 frames"),
])
def test_bad_options_are_refused_before_a_model_is_loaded(monkeypatch, options, words):
    import ipp_seg.inference.batch as batch

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(batch, "load_segmenter", no_model)
    with pytest.raises(ValueError, match=words):
        Predictor(**options)


def test_a_frame_index_is_a_frame_selection():
    assert Predictor(frames=2).options.frames == "2"
    # A numpy index, and a FrameSelection (as read_frames takes them), as the text the command line takes.
    from ipp_seg.io import FrameSelection

    assert Predictor(frames=np.int64(2)).options.frames == "2"
    assert Predictor(frames=FrameSelection(step=2)).options.frames == "all/2"
    assert Predictor(frames=FrameSelection(5)).options.frames == "5-end"
    assert Predictor(frames="5-end/3").options.frames == "5-end/3"


def test_the_library_prints_nothing_when_logging_is_not_configured(tmp_path, sample_dicom):
    # A calibrated file given another spacing: a logged warning, which Python's last-resort
    # handler used to print to stderr in a program that set up no logging.
    code = ("from ipp_seg.inference import Predictor; "
            f"r = list(Predictor(spacing_mm=(0.5, 0.5)).predict({str(sample_dicom)!r})); "
            "assert r[0].measurement.spacing_source == 'ultrasound_region'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""


def test_the_library_prints_nothing_of_a_damaged_header_or_an_odd_nifti(tmp_path, sample_dicom):
    # pydicom warned of a bad Number of Frames by quoting it (a header value: perhaps a name),
    # and ITK printed its own lines about a NIfTI's sform, both on stderr.
    import struct

    import pydicom
    import SimpleITK as sitk

    ds = pydicom.dcmread(sample_dicom)
    ds.NumberOfFrames = "123456789012"
    ds.save_as(tmp_path / "frames.dcm")
    raw = (tmp_path / "frames.dcm").read_bytes()
    (tmp_path / "frames.dcm").write_bytes(raw.replace(b"123456789012", b"SECRETNAME12"))
    sitk.WriteImage(sitk.GetImageFromArray(cv2.imread(str(SAMPLES / "psfhs_04700.png"), cv2.IMREAD_GRAYSCALE)),
                    str(tmp_path / "skew.nii"))
    nifti = bytearray((tmp_path / "skew.nii").read_bytes())
    struct.pack_into("<h", nifti, 254, 1)  # sform_code 1, and a sheared sform
    struct.pack_into("<12f", nifti, 280, 0.2, 0.15, 0, 0, 0, 0.2, 0, 0, 0, 0, 1, 0)
    (tmp_path / "skew.nii").write_bytes(bytes(nifti))
    code = ("from ipp_seg.inference import Predictor; p = Predictor(); "
            "r = list(p.predict('frames.dcm')) + list(p.predict('skew.nii')); "
            "assert len(r) == 2 and r[1].measurement.aop_deg, r")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""


def test_a_predictor_says_what_to_do_instead_of_pickling_and_of_a_bare_array(predictor):
    import pickle

    with pytest.raises(TypeError, match="make one in each worker process"):
        pickle.dumps(predictor)
    with pytest.raises(TypeError, match="predict_pixels"):
        predictor.predict_frame(np.zeros((64, 64), np.uint8))


def test_an_empty_path_is_refused_not_read_as_the_current_folder(predictor, tmp_path):
    # Path("") is "."; predict("") had failed with "is a directory", and a reader with "cannot read : no such file".
    from ipp_seg.io import ScanReadError, read_frame

    for call in (lambda: predictor.predict(""), lambda: predictor.predict_files([""]),
                 lambda: predictor.predict_scans([""], tmp_path)):
        with pytest.raises(ValueError, match="an empty path names no scan"):
            call()  # when called, not at the first frame (predict had been a generator: a bad path failed lazily)
    for call in (lambda: predictor.predict(None), lambda: predictor.predict_files([None])):
        with pytest.raises(TypeError, match="the scan must be a file path .str or Path., got NoneType"):
            call()
    with pytest.raises(ScanReadError, match="no file name given"):
        read_frame("")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):  # had been a bare "File exists"
        predictor.predict_scans(["x.png"], tmp_path / "a-file")


def test_pytorch_weights_given_as_the_model_say_how_to_run_them_in_python_too(tmp_path):
    import shutil

    from ipp_seg.inference.backends import BackendError

    shutil.copy(REPO / "models" / "dssau-net-s.pt", tmp_path / "x.pt")
    with pytest.raises(BackendError, match=r"backend='torch' in Python"):  # it had given the CLI's words only
        Predictor(model=str(tmp_path / "x.pt"))


def test_an_unknown_model_names_itself():
    with pytest.raises(ModelNotFoundError):
        Predictor("no-such-model")


def test_importing_the_api_loads_neither_torch_nor_a_runtime():
    code = ("import sys; from ipp_seg.inference import Predictor; "
            "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_readme_python_example_runs_as_written():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"### From Python.*?```python\n(.*?)```", readme, re.S)
    assert match, "README has no Python example under 'From Python'"
    run = subprocess.run([sys.executable, "-c", match.group(1)], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    first = run.stdout.splitlines()[0].split()
    # The quick start's AoP: 146.28 on an AVX2 CPU, 146.18 on one with AMX (onnxruntime's kernels
    # differ between CPU families in the last bits; README says so).
    assert first[0] == "ok" and float(first[2]) == pytest.approx(146.23, abs=0.1)


def test_predict_scans_does_what_the_command_line_does(predictor, sample_dicom, sample_png, tmp_path):
    """The run ``ipp-seg predict --out`` makes, from Python: the same rows and reports, the same
    files, and its errors and warnings as values (said once per scan), not printed."""
    pytest.importorskip("highdicom")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / sample_dicom.name  # a second scan of the same name: its outputs must not collide
    twin.write_bytes(sample_dicom.read_bytes())
    missing = tmp_path / "absent.dcm"
    scans = [sample_dicom, sample_png, missing, twin]
    frames = list(predictor.predict_scans(scans, tmp_path / "lib", dicom_seg=True))
    assert [f.scan for f in frames] == scans
    assert [f.unusable for f in frames] == [False, False, True, False]
    assert frames[2].errors == (f"cannot read {missing}: no such file",) and frames[2].row["status"] == "failed"
    assert frames[1].warnings == (f"no DICOM SEG for {sample_png}: it is not a DICOM file",)
    assert not frames[0].warnings and not frames[0].errors and not frames[0].outputs_refused
    assert all(f.row["time_ms"] > 0 for f in frames)
    assert all(f.report["time_ms"] == round(f.row["time_ms"], 1) for f in frames)  # a refused scan's too

    cli = CliRunner().invoke(app, ["predict", *map(str, scans), "--out", str(tmp_path / "cli"), "--dicom-seg",
                                   "--json"])
    assert cli.exit_code == 2  # the missing scan
    reports = json.loads(cli.stdout)
    drop = ("time_ms", "measured_at")
    assert [{k: v for k, v in f.report.items() if k not in drop} for f in frames] == \
        [{k: v for k, v in r.items() if k not in drop} for r in reports]
    written = sorted(p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "cli").as_posix()
                             for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert sum(name.endswith("_seg.dcm") for name in written) == 2  # both DICOM scans, under names of their own
    with pytest.raises(ValueError, match="need out_dir"):  # when called, not at the first frame
        predictor.predict_scans([sample_dicom], dicom_sr=True)
    with pytest.raises(TypeError, match="list of paths"):
        predictor.predict_scans(sample_dicom)
    from ipp_seg.inference.masks import measure_masks

    with pytest.raises(TypeError, match="list of paths"):
        measure_masks(str(sample_png))
    # Bad options fail the call, not every mask as if the masks were at fault.
    for bad, words in (({"orientation": "mirror"}, "orientation must be"), ({"method": "foo"}, "method must be"),
                       ({"labels": {"ps": 1, "fh": 2}}, "labels must be"), ({"spacing_mm": 0.3}, "spacing"),
                       ({"spacing_mm": (5, 5)}, "an ultrasound pixel is"),  # refused as measure --spacing-mm 5 is
                       ({"scans": "folder"}, "ScanIndex")):
        with pytest.raises((TypeError, ValueError), match=words):
            measure_masks([sample_png], **bad)


def test_the_library_entry_points_refuse_an_empty_folder_as_the_command_line_does(tmp_path, monkeypatch):
    # Path("") is Path("."): an unset variable in a script had walked, evaluated or trained on the current folder.
    from ipp_seg.evaluate import evaluate_folders
    from ipp_seg.inference.batch import BatchOptions, run_batch
    from ipp_seg.io.folders import given_path

    monkeypatch.chdir(tmp_path)
    assert given_path(b"scans", "scan") == Path("scans")
    for call, what in ((lambda: evaluate_folders("", tmp_path), "predictions folder"),
                       (lambda: evaluate_folders(tmp_path, ""), "ground-truth folder"),
                       (lambda: evaluate_folders(tmp_path, tmp_path, images_dir=""), "images folder"),
                       (lambda: run_batch(BatchOptions(in_dir="", out_dir=tmp_path / "out")), "scans folder"),
                       (lambda: run_batch(BatchOptions(in_dir=tmp_path, out_dir="")), "output folder")):
        with pytest.raises(ValueError, match=f"an empty path names no {what} "):
            call()
    assert list(tmp_path.iterdir()) == []  # nothing was written where the run stood


def test_onnxruntime_keeps_no_device_identifier_and_sends_no_telemetry(tmp_path, sample_dicom):
    # onnxruntime 1.32 on Linux had written ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}
    # (a device ID and a queued ProcessInfo event) on every run, and warned in colour where HOME was not writeable.
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", str(sample_dicom)], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "telemetry" not in run.stderr.lower()
    assert [p.relative_to(home) for p in home.rglob("*")] == []
    # A program that imports ipp_seg, then onnxruntime itself: onnxruntime reads the setting at its own import.
    run = subprocess.run([sys.executable, "-c", "import ipp_seg, onnxruntime; onnxruntime.InferenceSession("
                          f"{str(REPO / 'models' / 'dssau-net-s.onnx')!r}, providers=['CPUExecutionProvider'])"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert [p.relative_to(home) for p in home.rglob("*")] == []
    # A user who wants onnxruntime's telemetry says so, and ipp-seg leaves it on.
    run = subprocess.run([sys.executable, "-c", "import os, ipp_seg; print(os.environ['ORT_DISABLE_TELEMETRY'])"],
                         capture_output=True, text=True, env={**env, "ORT_DISABLE_TELEMETRY": "0"})
    assert run.stdout.strip() == "0", run.stderr
    # An empty value (`export ORT_DISABLE_TELEMETRY=` in a profile) is no such choice: onnxruntime
    # had taken it for telemetry on, and queued an event under ~/.cache.
    for empty in ("", " "):
        run = subprocess.run([sys.executable, "-c", "import os, ipp_seg; print(os.environ['ORT_DISABLE_TELEMETRY'])"],
                             capture_output=True, text=True, env={**env, "ORT_DISABLE_TELEMETRY": empty})
        assert run.stdout.strip() == "1", run.stderr


def test_black_bands_beside_the_image_are_not_shown_to_the_network(predictor):
    """A frame exported with black bands at its sides (a screen capture, a crop padded back) had
    been shrunk into the square the bands widen: 138.1 deg for the sample's 146.2, no warning."""
    from ipp_seg.inference.pipeline import segmented_box, trim_uniform_bands

    grey = cv2.imread(str(SAMPLES / "psfhs_04700.png"), cv2.IMREAD_GRAYSCALE)
    own = predictor.predict_pixels(grey)
    banded = cv2.copyMakeBorder(grey, 0, 0, 71, 71, cv2.BORDER_CONSTANT, value=0)
    result = predictor.predict_pixels(banded)
    assert result.measurement.aop_deg == pytest.approx(own.measurement.aop_deg, abs=0.5)
    x0, y0, x1, y1 = segmented_box(result.frame)
    assert (y0, y1) == (0, 256) and x1 - x0 == 256 and 0 < x0 <= 71 + 2
    np.testing.assert_array_equal(result.labels[:, :x0], 0)  # nothing drawn in the bands
    # Tall frames lose rows alike; bands with text in them, and square frames, are kept whole.
    tall = cv2.copyMakeBorder(grey, 60, 60, 0, 0, cv2.BORDER_CONSTANT, value=0)
    assert trim_uniform_bands(tall, (0, 0, 256, 376))[3] - trim_uniform_bands(tall, (0, 0, 256, 376))[1] == 256
    # Bands added at one end are cut there alone: the cut shared with the frame's own 22 rows below its sector had
    # shown it 22 rows low (an inference review: 04722 read 30.8 deg off; benchmarks/letterbox_bands.py).
    above = cv2.copyMakeBorder(grey, 60, 0, 0, 0, cv2.BORDER_CONSTANT, value=0)
    assert trim_uniform_bands(above, (0, 0, 256, 316)) == (0, 60, 256, 316)
    beside = cv2.copyMakeBorder(grey, 0, 0, 0, 60, cv2.BORDER_CONSTANT, value=0)
    assert trim_uniform_bands(beside, (0, 0, 316, 256)) == (0, 0, 256, 256)
    labelled = banded.copy()
    cv2.putText(labelled, "L", (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, 255, 2)  # a mark in the left band
    x0, _, x1, _ = trim_uniform_bands(labelled, (0, 0, banded.shape[1], 256))
    mark = int(np.flatnonzero(labelled.max(axis=0) > 16)[0])
    assert x0 <= mark < 20 and x1 < banded.shape[1]  # the mark kept: the rest from the right band
    assert trim_uniform_bands(grey, (0, 0, 256, 256)) == (0, 0, 256, 256)
    # Bands of one grey level are bands too: they had switched the trimming off (AoP 137.8 for 146.2).
    greyed = cv2.copyMakeBorder(grey, 0, 0, 60, 60, cv2.BORDER_CONSTANT, value=40)
    assert trim_uniform_bands(greyed, (0, 0, 376, 256)) == (60, 0, 316, 256)
    assert predictor.predict_pixels(greyed).measurement.aop_deg == pytest.approx(own.measurement.aop_deg, abs=0.01)
    # So are black bands inside a 1-pixel white border line, which crosses every column.
    bordered = cv2.copyMakeBorder(cv2.copyMakeBorder(grey, 0, 0, 60, 60, cv2.BORDER_CONSTANT, value=0),
                                  1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    x0, y0, x1, y1 = trim_uniform_bands(bordered, (0, 0, 378, 258))
    assert (y0, y1) == (0, 258) and x1 - x0 == 258 and x0 <= 61 and x1 >= 317
    # In physical size: pixels twice as tall as wide make a 512 x 256 frame square, nothing to trim.
    stretched = cv2.copyMakeBorder(cv2.resize(grey, (400, 256)), 0, 0, 56, 56, cv2.BORDER_CONSTANT, value=0)
    assert trim_uniform_bands(stretched, (0, 0, 512, 256), (0.1, 0.2)) == (0, 0, 512, 256)
    x0, _, x1, _ = trim_uniform_bands(stretched, (0, 0, 512, 256))  # on square pixels: the bands go
    lit = np.flatnonzero(stretched.max(axis=0) > 16)
    assert x0 >= 56 and x1 <= 456 and x0 <= lit[0] and x1 > lit[-1]


def test_a_frame_inside_a_margin_on_every_side_is_shown_to_the_network_without_it(predictor):
    """A screen capture that centres the frame in a black margin: the square canvas had been
    shown whole, the anatomy at two thirds of its size (04716: 145.8 deg read 159.5, no warning)."""
    from ipp_seg.inference.pipeline import segmented_box, trim_uniform_bands

    grey = cv2.imread(str(SAMPLES / "psfhs_04700.png"), cv2.IMREAD_GRAYSCALE)
    own = predictor.predict_pixels(grey)
    framed = cv2.copyMakeBorder(grey, 64, 64, 64, 64, cv2.BORDER_CONSTANT, value=0)
    result = predictor.predict_pixels(framed)
    assert segmented_box(result.frame) == (64, 64, 320, 320)
    assert result.measurement.aop_deg == pytest.approx(own.measurement.aop_deg, abs=0.01)
    # Margins of four widths go as far as the narrowest (the frame's own margins keep their
    # shares), then the longer side's as before; a capture of 4:3 alike.
    uneven = cv2.copyMakeBorder(grey, 30, 90, 50, 70, cv2.BORDER_CONSTANT, value=0)
    x0, y0, x1, y1 = trim_uniform_bands(uneven, (0, 0, 376, 376))
    # (The frame at 50-306 x 30-286, its own bands 5 columns at the left, 3 rows above, 22 below: its content.)
    assert (x0, y0, x1, y1) == (55, 33, 306, 284)
    capture = np.zeros((768, 1024), np.uint8)
    capture[128:640, 256:768] = cv2.resize(grey, (512, 512))
    x0, y0, x1, y1 = trim_uniform_bands(capture, (0, 0, 1024, 768))
    assert 256 <= x0 <= 256 + 10 and 128 <= y0 <= 128 + 6 and x1 == 768 and abs((x1 - x0) - (y1 - y0)) <= 1
    # Off-centre on the screen (a QA pass: the frame had been shown at 0.76 of its size, up to 18 deg off): its
    # content, the frame's own few black columns and rows aside.
    capture = np.zeros((768, 1024), np.uint8)
    capture[40:552, 256:768] = cv2.resize(grey, (512, 512))
    x0, y0, x1, y1 = trim_uniform_bands(capture, (0, 0, 1024, 768))
    assert 256 <= x0 <= 256 + 10 and 40 <= y0 <= 40 + 6 and x1 == 768 and 500 <= x1 - x0 == y1 - y0 <= 512
    # Margins alike at their narrowest across and down but not on every side: cut to the content's square, not only
    # the narrowest (a QA pass: 04720 was shown in a canvas 294 pixels wide, 26 deg off).
    for top, bottom, left, right in ((49, 100, 55, 94), (20, 100, 22, 98)):
        framed = cv2.copyMakeBorder(grey, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
        x0, y0, x1, y1 = trim_uniform_bands(framed, (0, 0, framed.shape[1], framed.shape[0]))
        assert x1 - x0 == y1 - y0 <= 256 and left <= x0 <= left + 10 and top <= y0 <= top + 6, (top, (x0, y0, x1, y1))
    # A frame's own thin black ring (12 of 256 pixels, under 5 %) is no capture's margin: left (a 2 % floor, tried,
    # cut such frames to their content, moving them a median 4.9 deg: a QA pass).
    ringed = grey.copy()
    ringed[:12], ringed[-12:], ringed[:, :12], ringed[:, -12:] = 0, 0, 0, 0
    assert trim_uniform_bands(ringed, (0, 0, 256, 256)) == (0, 0, 256, 256)
    # A frame of its own aspect in a margin of one width comes back to the box it has alone (a QA pass: cut to a
    # square around its content, 256 x 210 frames had moved by up to 7.7 deg).
    for own in (grey[:210], grey[:, :216]):
        h, w = own.shape
        framed = cv2.copyMakeBorder(own, 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=0)
        alone = trim_uniform_bands(own, (0, 0, w, h))
        assert trim_uniform_bands(framed, (0, 0, w + 60, h + 60)) == tuple(v + 30 for v in alone)
    # A frame with side bands of its own, letterboxed above and below, keeps them: the longer side's bands go
    # first (the margin cut first had taken 20 columns a side of such frames, 04381: 1.4 deg, a QA pass).
    narrow = cv2.imread(str(SAMPLES / "psfhs_04380.png"), cv2.IMREAD_GRAYSCALE)
    narrow[:, :20] = 0
    narrow[:, -20:] = 0
    letterboxed = cv2.copyMakeBorder(narrow, 60, 60, 0, 0, cv2.BORDER_CONSTANT, value=0)
    assert trim_uniform_bands(letterboxed, (0, 0, 256, 376)) == (0, 60, 256, 316)
    # A margin that stops at one side (a frame that reaches an edge, as every PSFHS frame does)
    # is no margin on every side: the square frame is left whole.
    three = cv2.copyMakeBorder(grey, 0, 40, 40, 40, cv2.BORDER_CONSTANT, value=0)
    assert trim_uniform_bands(three, (0, 0, 336, 296))[1] == 0
    assert trim_uniform_bands(grey, (0, 0, 256, 256)) == (0, 0, 256, 256)
    # Text in the margin is no band: that side keeps it.
    labelled = framed.copy()
    cv2.putText(labelled, "L", (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, 255, 2)
    assert trim_uniform_bands(labelled, (0, 0, 384, 384))[0] < 20


@pytest.mark.parametrize("over", ["head", "ps", "hsd_end"])
def test_a_zoom_box_of_its_own_calibration_over_part_of_the_anatomy_gives_no_millimetres(predictor, tmp_path, over):
    """A zoom box (0.1 mm) over the head and the HSD's end but not the PS's centre: the HSD had been
    given in the image's 0.35 mm, ok, though the reader warned that the pixels there have no known
    size (a QA pass). Over the PS likewise; a box over neither keeps the image's millimetres."""
    import copy

    import pydicom

    source = pydicom.dcmread(SAMPLES / "psfhs_04700_us.dcm")
    whole = predictor.predict_pixels(read_frame(SAMPLES / "psfhs_04700_us.dcm").pixels)
    hx, hy = (int(round(v)) for v in whole.measurement.landmarks.hsd_point)
    # (The last: 17 x 17 pixels around where the HSD meets the head, under 1 % of the anatomy.)
    boxes = {"head": (115, 40, 255, 255), "ps": (60, 20, 200, 150), "neither": (0, 200, 40, 255),
             "hsd_end": (hx - 8, hy - 8, hx + 8, hy + 8)}
    for name in (over, "neither"):
        zoom = copy.deepcopy(source.SequenceOfUltrasoundRegions[0])
        (zoom.RegionLocationMinX0, zoom.RegionLocationMinY0, zoom.RegionLocationMaxX1,
         zoom.RegionLocationMaxY1) = boxes[name]
        zoom.PhysicalDeltaX = zoom.PhysicalDeltaY = 0.01
        ds = copy.deepcopy(source)
        ds.SequenceOfUltrasoundRegions = [zoom, ds.SequenceOfUltrasoundRegions[0]]  # (the box listed first)
        ds.save_as(tmp_path / f"{name}.dcm")
        (result,) = list(predictor.predict(tmp_path / f"{name}.dcm"))
        m = result.measurement
        if name == "neither":
            assert m.hsd_mm == pytest.approx(m.hsd_px * 0.35) and "spacing_unknown" not in m.reasons
        else:
            assert m.hsd_mm is None and "spacing_unknown" in m.reasons and m.hsd_px > 0
        assert m.aop_deg == pytest.approx(whole.measurement.aop_deg, abs=0.01)  # the image, as the network saw it


def test_a_line_drawn_around_the_frame_is_covered_before_the_network_sees_it(predictor):
    """A screen capture framed by a 1-pixel white line: the line's 1.6 % of the pixels raised the
    percentile the input normalisation maps to white, and the narrow-sector sample read 113.6 deg
    for its 103.7 (a median 2.4 deg on the validation blocks, up to 17)."""
    from ipp_seg.inference.pipeline import cover_border_lines

    grey = cv2.imread(str(SAMPLES / "psfhs_04380.png"), cv2.IMREAD_GRAYSCALE)
    own = predictor.predict_pixels(grey).measurement.aop_deg
    for width, level in ((1, 255), (3, 255), (1, 128), (6, 200)):
        framed = grey.copy()
        framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = level, level, level, level
        assert predictor.predict_pixels(framed).measurement.aop_deg == pytest.approx(own, abs=0.5), (width, level)
        covered = cover_border_lines(framed)
        # Each line takes the values of the first row or column inward of it that is not a line.
        np.testing.assert_array_equal(covered[:width, width:-width], np.repeat(framed[width:width + 1, width:-width],
                                                                               width, axis=0))
        np.testing.assert_array_equal(covered[width:-width, width:-width], grey[width:-width, width:-width])
        np.testing.assert_array_equal(covered[:, -1], covered[:, -width - 1])
    # Left as they are: a frame without a line (the same array back), black lines (a frame's own
    # margin), a line with a mark in it, and a line thicker than BORDER_LINE_MOST.
    assert cover_border_lines(grey) is grey
    black = cv2.copyMakeBorder(grey, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=0)
    assert cover_border_lines(black) is black
    marked = cv2.copyMakeBorder(grey, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    marked[0, 100:110] = 0  # a gap in the top line: not of one level
    covered = cover_border_lines(marked)
    np.testing.assert_array_equal(covered[0], marked[0])
    np.testing.assert_array_equal(covered[-1, 1:-1], marked[-2, 1:-1])  # the other three sides are covered
    thick = cv2.copyMakeBorder(grey, 7, 7, 7, 7, cv2.BORDER_CONSTANT, value=255)
    assert cover_border_lines(thick) is thick
    # A line around a black margin wider than the lines looked at: covered by the margin's black.
    margin = cv2.copyMakeBorder(cv2.copyMakeBorder(grey, 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=0),
                                1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    np.testing.assert_array_equal(cover_border_lines(margin)[1:-1, 1:-1], margin[1:-1, 1:-1])
    assert not cover_border_lines(margin)[[0, -1]].any() and not cover_border_lines(margin)[:, [0, -1]].any()
    # A float frame with NaN outside its field of view reads alike.
    nan_framed = cv2.copyMakeBorder(grey.astype(np.float32), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    nan_framed[5:9, 5:9] = np.nan
    np.testing.assert_array_equal(cover_border_lines(nan_framed)[0, 1:-1], grey[0].astype(np.float32))
    # A row of NaN (outside the field of view) with a few bright pixels, a sector's apex, is no line drawn.
    apex = grey.astype(np.float32)
    apex[0], apex[0, 100:105] = np.nan, 250.0
    assert cover_border_lines(apex) is apex


def test_calipers_drawn_in_colour_over_the_symphysis_are_said_to_put_the_angle_in_doubt(predictor, sample_png):
    # An export with the sonographer's yellow PS axis drawn on it: the network took the line for bone.
    grey = read_frame(sample_png).pixels
    clean = predictor.predict_pixels(grey)
    marks = clean.measurement.landmarks
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert "marks_over_anatomy" not in predictor.predict_pixels(rgb).measurement.reasons  # grey stored as RGB
    inferior, superior = np.array(marks.ps_inferior_end), np.array(marks.ps_superior_end)
    along = (inferior - superior) / np.linalg.norm(inferior - superior)
    for k in range(0, int(np.linalg.norm(inferior - superior)) + 30, 6):  # dotted, past the inferior end
        x, y = (superior - 10 * along + k * along).round().astype(int)
        cv2.circle(rgb, (int(x), int(y)), 1, (255, 255, 0), -1)
    drawn = predictor.predict_pixels(rgb).measurement
    assert "marks_over_anatomy" in drawn.reasons and drawn.aop_doubtful


@pytest.mark.parametrize("convert", [lambda c: c.astype(np.int64), lambda c: c.tolist(), lambda c: c.astype(np.int32)],
                         ids=["int64", "list", "int32"])
def test_a_colour_image_in_any_integer_type_measures_as_uint8_does(predictor, convert):
    # Its int64 or list form had been taken as floats, its luma unrounded: 92.0035 deg against 92.0408 (a QA pass).
    grey = cv2.imread(str(SAMPLES / "psfhs_04750.png"), cv2.IMREAD_GRAYSCALE)
    colour = np.dstack([grey, np.clip(grey.astype(int) + 7, 0, 255), grey]).astype(np.uint8)
    expected = predictor.predict_pixels(colour).measurement.aop_deg
    assert predictor.predict_pixels(convert(colour)).measurement.aop_deg == expected


def test_scans_named_as_training_frames_are_warned_of_from_python_too(sample_png, tmp_path, caplog):
    # A library user's pass: only predict_scans had warned, so a notebook scoring the default model on PSFHS
    # frames read its fit to them as accuracy without a word.
    import logging
    import shutil

    for name in ("04700.png", "04701.png", "scan.png"):
        shutil.copy(sample_png, tmp_path / name)
    predictor = Predictor()  # dssau-net-s: trained on every PSFHS frame
    with caplog.at_level(logging.WARNING):
        list(predictor.predict(tmp_path / "scan.png"))
        assert "trained on" not in caplog.text
        list(predictor.predict(tmp_path / "04700.png"))
        assert "the scan has the IDs of frames dssau-net-s was trained on (such as 04700)" in caplog.text
        caplog.clear()
        list(predictor.predict(tmp_path / "04701.png"))  # said once a predictor, not for every file of a loop
        assert "trained on" not in caplog.text
        list(predictor.predict_files([tmp_path / "04700.png", tmp_path / "04701.png", tmp_path / "scan.png"]))
        assert "2 of the 3 scans have the IDs of frames dssau-net-s was trained on" in caplog.text


def test_fixed_batch_gives_batchs_numbers_to_the_last_digit(sample_png, sample_dicom, tmp_path):
    # A library user's pass: onnxruntime's last bits differ with a call's size, and a notebook could not
    # reproduce a batch run's CSV (146.28 against 146.19 deg on the sample PNG on an AVX2 machine).
    import csv
    import shutil

    for source in (sample_png, sample_dicom, sample_png.with_name("psfhs_04750.png")):
        shutil.copy(source, tmp_path / source.name)
    result = CliRunner().invoke(app, ["batch", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "measurements.csv", newline="") as fh:
        from_batch = {row["file"]: row["aop_deg"] for row in csv.DictReader(fh)}
    like_batch = Predictor(fixed_batch=8)
    for name, aop in from_batch.items():
        (frame,) = like_batch.predict(tmp_path / name)
        assert repr(frame.measurement.aop_deg) == aop, name  # (the CSV writes Python's shortest repr)
    for path, frame in like_batch.predict_files(sorted(tmp_path.glob("*.*"))):
        assert repr(frame.measurement.aop_deg) == from_batch[path.name]
    with pytest.raises(ValueError, match="fixed_batch must be an integer from 1 to 64"):
        Predictor(fixed_batch=0)


def test_the_training_frames_of_a_model_file_are_read_once_a_predictor(sample_png, tmp_path, monkeypatch):
    # A review: for a model file without a card, each predict() opened one more onnxruntime session to read
    # the frames it trained on from the file's metadata (1.4 s a call for the paper model, against 0.4 s).
    import shutil

    import ipp_seg.inference.registry as registry

    model = tmp_path / "mine.onnx"
    shutil.copy(registry.resolve_model("dssau-net-s").onnx_path, model)
    reads = []
    real = registry.training_blocks_of_file
    monkeypatch.setattr(registry, "training_blocks_of_file", lambda path: reads.append(path) or real(path))
    predictor = Predictor(model)
    for _ in range(3):
        list(predictor.predict(sample_png))
    list(predictor.predict_files([sample_png, sample_png]))
    assert reads == [model]


def test_a_result_keeps_its_own_copy_of_the_callers_pixels(predictor):
    # A library user's pass: a loop that reused one buffer had every earlier result show the last image.
    buffer = cv2.imread(str(SAMPLES / "psfhs_04700.png"), cv2.IMREAD_GRAYSCALE)
    result = predictor.predict_pixels(buffer)
    kept = np.array(buffer)
    buffer[:] = 0
    assert np.array_equal(result.frame.pixels, kept)
    with pytest.raises(ValueError):  # read-only: a result stays what was measured
        result.frame.pixels[0, 0] = 1
    buffer[0, 0] = 7  # the caller's own array is still the caller's to write


def test_onnxruntime_prints_none_of_its_own_lines():
    # An admin's pass: onnxruntime's own error lines, coloured, reached a job's log beside ipp-seg's message that
    # says the same (the exception carries it). Only a fatal error of its own is left to it.
    from ipp_seg.inference.backends import load_segmenter
    from ipp_seg.inference.registry import resolve_model

    assert load_segmenter(resolve_model(None)).session.get_session_options().log_severity_level == 4


def test_the_runtime_names_torch_where_it_is_loaded():
    # A QA pass: with --backend torch, predict's runtime had named onnxruntime and not torch (a batch record names it).
    torch = pytest.importorskip("torch", reason="needs torch (pip install -e '.[dev]')")
    from ipp_seg.machine import runtime_description

    assert runtime_description()["torch"] == torch.__version__


def test_a_frame_too_long_to_segment_is_refused_as_no_ultrasound_image_and_a_wide_capture_is_not(predictor):
    # Padded to a square, a 40000 x 32 image had taken 19 GB; a 7000 x 300 capture with the image inside its black
    # bands is segmented as the image alone, as 0.2.21 did (a QA pass had found such captures refused).
    from ipp_seg.inference.predictor import NotUltrasoundFrameError

    with pytest.raises(NotUltrasoundFrameError, match="padded to a square of 7168 x 7168"):
        predictor.predict_pixels(np.tile(np.arange(256, dtype=np.uint8), (40, 28)))
    grey = cv2.imread(str(SAMPLES / "psfhs_04700.png"), cv2.IMREAD_GRAYSCALE)
    capture = np.zeros((300, 7000), np.uint8)
    capture[:256, :256] = grey  # (bands below and to the right: cut off whole)
    measured = predictor.predict_pixels(capture).measurement
    # (Within a degree: the frame's own black border joins the bands, so the cut, and the network's input, differ a
    # little from the frame alone's; within 0.5 deg on the AVX2 CPU it was written on, 0.56 with AVX-512 kernels.)
    assert measured.aop_deg == pytest.approx(predictor.predict_pixels(grey).measurement.aop_deg, abs=1.0)
