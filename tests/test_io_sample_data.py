"""The shipped sample_data/ files and the script that generates them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ipp_seg.io import read_frame

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
DICOM = SAMPLES / "psfhs_04700_us.dcm"


def _script():
    spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "scripts" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_pngs_read():
    for case in ("04700", "04750", "04380"):
        frame = read_frame(SAMPLES / f"psfhs_{case}.png")
        assert frame.pixels.shape == (256, 256) and frame.pixels.dtype == np.uint8
        assert frame.spacing_mm is None


def test_sample_dicom_has_the_stated_calibration():
    frame = read_frame(DICOM)
    assert frame.spacing_mm == pytest.approx((0.35, 0.35), rel=1e-12)
    region = frame.imaging_region
    assert (region.x0, region.y0, region.x1, region.y1) == (0, 0, 256, 256)
    np.testing.assert_array_equal(frame.pixels, read_frame(SAMPLES / "psfhs_04700.png").pixels)
    ds = pydicom.dcmread(DICOM)
    assert ds.SOPClassUID == pydicom.uid.UltrasoundImageStorage
    assert str(ds.PatientName) == "ANON^" and ds.PatientIdentityRemoved == "YES"
    assert frame.provenance.sop_instance_uid == ds.SOPInstanceUID


def test_sample_dicom_passes_dciodvfy():
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    result = subprocess.run([tool, str(DICOM)], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "Error" not in report, report


def test_script_reproduces_the_files(tmp_path, psfhs_dir):
    assert _script().main(["--psfhs", str(psfhs_dir), "--out", str(tmp_path)]) == 0
    for name in ("psfhs_04700.png", "psfhs_04750.png", "psfhs_04380.png"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    # The DICOM element by element, pixel data included, but for the name and version of the
    # pydicom that wrote it (in the file meta): any pydicom the project allows makes the same file.
    made, shipped = (pydicom.dcmread(folder / "psfhs_04700_us.dcm") for folder in (tmp_path, SAMPLES))
    for ds in (made, shipped):
        assert ds.file_meta.ImplementationVersionName.startswith("PYDICOM")
        del ds.file_meta.ImplementationVersionName, ds.file_meta.FileMetaInformationGroupLength
    assert made.file_meta == shipped.file_meta and made == shipped
    assert made.PixelData == shipped.PixelData


def test_script_fails_cleanly_without_data(tmp_path):
    assert _script().main(["--psfhs", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
