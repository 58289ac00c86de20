"""DICOM reading: transfer syntaxes, photometric interpretations, calibration, bad input, memory."""

from __future__ import annotations

import logging
import os
import pickle
import tracemalloc
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    MPEG4HP41,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from ipp_seg.io import DamagedFrameError, FramesMissingError, ScanReadError, count_frames, read_frame, read_frames

PATIENT_NAME = "Doe^Jane"  # must never reach a message or a log line
PATIENT_ID = "PID-31415"


# --------------------------------------------------------------------------- factory


def region_item(
    x0: int, y0: int, x1: int, y1: int, delta_cm: tuple[float, float] | None = (0.02, 0.02), *,
    spatial_format: int = 1, data_type: int = 1, units: int = 3,
) -> Dataset:
    """One Sequence of Ultrasound Regions item; x1/y1 inclusive as in DICOM."""
    item = Dataset()
    item.RegionSpatialFormat = spatial_format
    item.RegionDataType = data_type
    item.RegionFlags = 0
    item.RegionLocationMinX0 = x0
    item.RegionLocationMinY0 = y0
    item.RegionLocationMaxX1 = x1
    item.RegionLocationMaxY1 = y1
    if delta_cm is not None:
        item.PhysicalUnitsXDirection = units
        item.PhysicalUnitsYDirection = units
        item.PhysicalDeltaX = delta_cm[0]
        item.PhysicalDeltaY = delta_cm[1]
    return item


def base_dataset(multi_frame: bool) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multi_frame else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19900101"
    ds.Modality = "US"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    return ds


def _ybr422_bytes(rgb_frames: np.ndarray) -> bytes:
    """Native YBR_FULL_422: per pair of pixels Y1 Y2 Cb Cr, chroma averaged over the pair."""
    ybr = convert_color_space(rgb_frames, "RGB", "YBR_FULL").astype(np.uint16)
    y = ybr[..., 0]
    cb = (ybr[..., 0::2, 1] + ybr[..., 1::2, 1] + 1) // 2
    cr = (ybr[..., 0::2, 2] + ybr[..., 1::2, 2] + 1) // 2
    out = np.stack([y[..., 0::2], y[..., 1::2], cb, cr], axis=-1)
    return out.astype(np.uint8).tobytes()


def _gdcm_transcode(source: Path, target: Path, syntax: UID) -> None:
    gdcm = pytest.importorskip("gdcm")
    codes = {
        JPEGBaseline8Bit: gdcm.TransferSyntax.JPEGBaselineProcess1,
        JPEGLossless: gdcm.TransferSyntax.JPEGLosslessProcess14,
        JPEGLosslessSV1: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        JPEGExtended12Bit: gdcm.TransferSyntax.JPEGExtendedProcess2_4,
    }
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(codes[syntax]))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    syntax: UID = ExplicitVRLittleEndian,
    bits_stored: int | None = None,
    regions: list[Dataset] | None = None,
    planar_configuration: int = 0,
    palette: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    multi_frame: bool | None = None,
    extra: dict | None = None,
    **compress_kwargs,
) -> Path:
    """Write ``pixels`` ((H, W), (N, H, W) or with a trailing RGB axis) as a DICOM file.

    Colour input is RGB; for YBR_FULL / YBR_FULL_422 it is converted here.
    """
    colour = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    n_frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    ds = base_dataset(n_frames > 1 if multi_frame is None else multi_frame)
    bits = bits_stored or pixels.dtype.itemsize * 8
    if photometric == "YBR_FULL_422":
        ds.set_pixel_data(pixels, "RGB", bits)
        ds.PixelData = _ybr422_bytes(pixels)
        ds.PhotometricInterpretation = "YBR_FULL_422"
    elif photometric == "YBR_FULL":
        ds.set_pixel_data(convert_color_space(pixels, "RGB", "YBR_FULL"), "YBR_FULL", bits)
    else:
        ds.set_pixel_data(pixels, photometric, bits)
    if colour and planar_configuration == 1:
        frames = pixels.reshape((-1,) + pixels.shape[-3:])
        ds.PixelData = np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).tobytes()
        ds.PlanarConfiguration = 1
    if palette is not None:
        entry_bits = palette[0].dtype.itemsize * 8
        for name, lut in zip(("Red", "Green", "Blue"), palette, strict=True):
            setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [len(lut), 0, entry_bits])
            # OW data is written with the file's byte order below.
            setattr(ds, f"{name}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    if regions is not None:
        ds.SequenceOfUltrasoundRegions = Sequence(regions)
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID  # set_pixel_data may renew it

    if syntax in (JPEGBaseline8Bit, JPEGLossless, JPEGLosslessSV1, JPEGExtended12Bit):
        native = path.with_suffix(".native.dcm")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(native, enforce_file_format=True)
        _gdcm_transcode(native, path, syntax)
        native.unlink()
        return path
    if UID(syntax).is_compressed:
        ds.compress(syntax, generate_instance_uid=False, **compress_kwargs)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        if syntax == ExplicitVRBigEndian:
            # pydicom writes OB/OW bytes as given: give them in big-endian word order.
            if ds.BitsAllocated == 16:
                ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
            for keyword in list(ds.dir("PaletteColorLookupTableData")):
                ds[keyword].value = np.frombuffer(ds[keyword].value, "<u2").astype(">u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def ramp_frames(n: int, h: int = 48, w: int = 64, dtype=np.uint8, high: int = 255) -> np.ndarray:
    """Distinct, structured frames (so that lossless codecs have something to compress)."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [((xx * 3 + yy * 5 + 17 * k) % (high + 1)) for k in range(n)]
    return np.stack(frames).astype(dtype)


def rgb_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    base = ramp_frames(n, h, w)
    return np.stack([base, np.flip(base, axis=2), (base // 2 + 60).astype(np.uint8)], axis=-1)


def _no_phi(text: str) -> None:
    assert "Doe" not in text and "Jane" not in text and PATIENT_ID not in text and "19900101" not in text


def test_header_values_that_break_the_standard_are_not_quoted_to_a_library_caller(tmp_path, caplog):
    """pydicom warns about, and logs, an invalid value by quoting it (a birth date, a name) when
    a value is set. The CLI silences pydicom for the whole process; a program calling the
    library does not. Reading quotes nothing (pydicom 3 checks only lengths and name parts as
    it decodes, and the readers decode no patient attribute): this holds it so."""
    import warnings

    secret_date, secret_name, secret_code = "1980-02-14", "Roe=Janet=Mary=Ann", "SECRET CODE"
    path = tmp_path / "invalid.dcm"
    with warnings.catch_warnings():  # pydicom warns when the values are set, too
        warnings.simplefilter("ignore")
        write_dicom(path, ramp_frames(3), extra={"PatientBirthDate": secret_date, "PatientName": secret_name,
                                                  "PatientSex": secret_code})
    mode = pydicom.config.settings.reading_validation_mode
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # (pydicom logged the values as they were set above)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(read_frames(path))
        frame = read_frame(path, 1)
    said = caplog.text + " ".join(str(w.message) for w in caught)
    assert len(frames) == 3 and frame.frame_index == 1
    assert secret_date not in said and "Roe" not in said and secret_code not in said
    assert pydicom.config.settings.reading_validation_mode == mode
    # The caller's pydicom keeps its checks: the same file read directly still warns.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        str(pydicom.dcmread(path).PatientName)
    assert any("PN components" in str(w.message) for w in caught)


# --------------------------------------------------------------------------- round trips

LOSSLESS_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
]


@pytest.mark.parametrize("syntax", LOSSLESS_SYNTAXES, ids=lambda u: UID(u).keyword)
def test_round_trip_8bit_multiframe(tmp_path, syntax):
    frames = ramp_frames(3)
    regions = [region_item(0, 0, 63, 47, (0.03, 0.04))]
    path = write_dicom(tmp_path / "cine.dcm", frames, syntax=syntax, regions=regions)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert count_frames(path) == 3
    out = list(read_frames(path))
    assert [f.frame_index for f in out] == [0, 1, 2]
    for k, frame in enumerate(out):
        assert frame.pixels.dtype == np.uint8
        np.testing.assert_array_equal(frame.pixels, frames[k])
        assert frame.n_frames == 3
        assert frame.spacing_mm == pytest.approx((0.3, 0.4))
        assert frame.provenance.source_format == "dicom"
        assert frame.provenance.frame_number == k + 1
        assert frame.provenance.sop_instance_uid == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_a_deflated_file_that_inflates_beyond_any_frame_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    # A privacy and security pass: a megabyte of deflated zeros declaring a 256 x 256 frame inflated to 1 GiB of pixel
    # data (3.3 GB of memory) before the frame-size check could read its header. Stood in for here by a lower cap.
    import ipp_seg.io.dicom as dicom_module
    from ipp_seg.io import ScanReadError, read_frame

    small = write_dicom(tmp_path / "small.dcm", ramp_frames(1)[0], syntax=DeflatedExplicitVRLittleEndian)
    read_frame(small)  # within the cap: read as ever
    big = write_dicom(tmp_path / "big.dcm", np.zeros((1024, 1024), np.uint8), syntax=DeflatedExplicitVRLittleEndian)
    assert big.stat().st_size < 50_000  # (zeros deflate a thousand to one)
    monkeypatch.setattr(dicom_module, "MAX_INFLATED_BYTES", 512 * 1024)
    with pytest.raises(ScanReadError, match="its deflated data inflate to more than 0 MB, beyond any ultrasound frame"):
        read_frame(big)
    read_frame(small)


@pytest.mark.parametrize(
    "syntax",
    [ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1],
    ids=lambda u: UID(u).keyword,
)
def test_round_trip_12bit_in_16(tmp_path, syntax):
    frames = ramp_frames(2, dtype=np.uint16, high=4095)
    path = write_dicom(tmp_path / "deep.dcm", frames, syntax=syntax, bits_stored=12)
    out = list(read_frames(path))
    assert len(out) == 2
    for k, frame in enumerate(out):
        assert frame.pixels.dtype == np.float32
        np.testing.assert_allclose(frame.pixels, frames[k] * (255.0 / 4095.0), rtol=1e-6, atol=1e-4)
        assert frame.spacing_mm is None  # no calibration at all in this file


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1],
    ids=lambda u: UID(u).keyword,
)
def test_round_trip_rgb(tmp_path, syntax):
    rgb = rgb_frames(2)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", syntax=syntax)
    out = list(read_frames(path))
    for k, frame in enumerate(out):
        assert frame.pixels.shape == rgb.shape[1:3]
        np.testing.assert_array_equal(frame.pixels, grey_of(rgb[k]))


def test_jpeg_baseline_is_close(tmp_path):
    frames = ramp_frames(2)
    path = write_dicom(tmp_path / "jpeg.dcm", frames, syntax=JPEGBaseline8Bit)
    out = list(read_frames(path))
    assert len(out) == 2
    for k, frame in enumerate(out):
        assert frame.pixels.dtype == np.uint8
        assert np.abs(frame.pixels.astype(int) - frames[k]).mean() < 6


def test_a_jpeg_frame_whose_data_ends_before_the_frame_is_refused(tmp_path):
    # Its data cut short and closed with an end-of-image marker: the decoder fills the rest of the frame with grey
    # 128 and only prints "Corrupt JPEG data" on stderr; the frame had been measured as a sound one.
    from pydicom.encaps import encapsulate, generate_frames

    path = write_dicom(tmp_path / "jpeg.dcm", ramp_frames(2), syntax=JPEGBaseline8Bit)
    ds = pydicom.dcmread(path)
    first, second = generate_frames(ds.PixelData, number_of_frames=2)
    scan = second.index(b"\xff\xda")
    data_start = scan + 2 + int.from_bytes(second[scan + 2:scan + 4], "big")
    ds.PixelData = encapsulate([first, second[: (data_start + len(second)) // 2] + b"\xff\xd9"])
    ds.save_as(tmp_path / "damaged.dcm")
    frames = read_frames(tmp_path / "damaged.dcm")
    assert next(frames).frame_index == 0  # the frame before reads as it is
    with pytest.raises(DamagedFrameError, match=r"frame 1 is damaged: its JPEG data ends before the frame does "
                                                r"\(its last \d+ 8 x 8 blocks decode as the flat grey 128") as damaged:
        next(frames)
    assert damaged.value.frame_index == 1 and isinstance(damaged.value, ScanReadError)
    assert pickle.loads(pickle.dumps(damaged.value)).frame_index == 1  # (it crosses from a worker process)


def test_jpeg_ls_near_lossless_within_error_bound(tmp_path):
    frames = ramp_frames(1)[0]
    path = write_dicom(tmp_path / "jls.dcm", frames, syntax=JPEGLSNearLossless, jls_error=2)
    frame = read_frame(path)
    assert np.abs(frame.pixels.astype(int) - frames).max() <= 2


def test_jpeg2000_lossy_is_close(tmp_path):
    frames = ramp_frames(1, h=64, w=64)[0]
    path = write_dicom(tmp_path / "j2k.dcm", frames, syntax=JPEG2000, j2k_cr=[5])
    frame = read_frame(path)
    assert np.abs(frame.pixels.astype(int) - frames).mean() < 8


# --------------------------------------------------------------------------- photometric


def test_monochrome1_is_inverted(tmp_path):
    frames = ramp_frames(1)[0]
    frame = read_frame(write_dicom(tmp_path / "m1.dcm", frames, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(frame.pixels, 255 - frames)


def test_monochrome1_16bit_is_inverted_on_the_0_255_scale(tmp_path):
    frames = ramp_frames(1, dtype=np.uint16, high=1023)[0]
    frame = read_frame(write_dicom(tmp_path / "m1.dcm", frames, photometric="MONOCHROME1", bits_stored=10))
    np.testing.assert_allclose(frame.pixels, 255.0 - frames * (255.0 / 1023.0), atol=1e-3)


def test_a_16_bit_frame_is_shown_through_its_display_window(tmp_path):
    # A DICOM pass: a 16-bit frame stored in 1000-2020 of 0-65535 had read dark and flat (frame_dark).
    shown = ramp_frames(1)[0]
    stored = shown.astype(np.uint16) * 4 + 1000
    frame = read_frame(write_dicom(tmp_path / "w.dcm", stored, extra={"WindowCenter": 1510, "WindowWidth": 1021}))
    # LINEAR (PS3.3 C.11.2.1.2.1): stored 1000 is black, 2020 white, and the levels between it.
    np.testing.assert_allclose(frame.pixels, shown.astype(np.float32), atol=0.5)
    whole_range = read_frame(write_dicom(tmp_path / "no_window.dcm", stored))
    assert whole_range.pixels.max() < 9  # (without a window the stored range is shown whole, as ever)


def test_a_display_window_is_applied_before_monochrome1_inverts(tmp_path):
    stored = ramp_frames(1, dtype=np.uint16, high=1023)[0] + 3000
    frame = read_frame(write_dicom(tmp_path / "m1w.dcm", stored, photometric="MONOCHROME1", bits_stored=12,
                                   extra={"WindowCenter": [3512, 100], "WindowWidth": [1024, 50]}))
    # The first of several windows is the display's default.
    np.testing.assert_allclose(frame.pixels, 255.0 - (stored - 3000.0) * 255.0 / 1023.0, atol=0.2)


@pytest.mark.parametrize(("function", "levels"), [
    ("LINEAR_EXACT", [0.0, 0.0, 63.75, 127.5, 191.25, 255.0, 255.0]),
    # 255 / (1 + exp(-4 (x - 400) / 200))
    ("SIGMOID", [255 / (1 + np.e ** 4), 255 / (1 + np.e ** 2), 255 / (1 + np.e), 127.5, 255 / (1 + np.e ** -1),
                 255 / (1 + np.e ** -2), 255 / (1 + np.e ** -16)]),
])
def test_a_display_window_follows_its_voi_lut_function(tmp_path, function, levels):
    stored = np.array([[200, 300, 350, 400, 450, 500, 1200]], dtype=np.uint16).repeat(8, axis=0)
    frame = read_frame(write_dicom(tmp_path / "f.dcm", stored, bits_stored=12,
                                   extra={"WindowCenter": 400, "WindowWidth": 200, "VOILUTFunction": function}))
    np.testing.assert_allclose(frame.pixels[0], levels, atol=1e-3)


# (An empty Window Center and Width are none: a QA pass found them hiding the functional groups' window.)
@pytest.mark.parametrize("own", [{}, {"WindowCenter": "", "WindowWidth": ""}])
def test_the_shared_functional_groups_window_is_used_where_the_image_has_none(tmp_path, own):
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 1510, 1021
    group = Dataset()
    group.FrameVOILUTSequence = Sequence([voi])
    stored = ramp_frames(1)[0].astype(np.uint16) * 4 + 1000
    frame = read_frame(write_dicom(tmp_path / "sf.dcm", stored,
                                   extra={**own, "SharedFunctionalGroupsSequence": Sequence([group])}))
    np.testing.assert_allclose(frame.pixels, ramp_frames(1)[0].astype(np.float32), atol=0.5)


@pytest.mark.parametrize("window", [{"WindowCenter": 1000, "WindowWidth": 0}, {"WindowCenter": 1000},
                                    {"WindowCenter": 1000, "WindowWidth": -5}])
def test_an_unusable_window_shows_the_stored_range_whole_and_says_so(tmp_path, caplog, window):
    stored = ramp_frames(1, dtype=np.uint16, high=1023)[0]
    path = write_dicom(tmp_path / "bad.dcm", stored, bits_stored=10, extra=window)
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    np.testing.assert_allclose(frame.pixels, stored * (255.0 / 1023.0), atol=1e-3)
    assert any("display window is not usable" in r.getMessage() for r in caplog.records)


def test_a_window_centre_that_is_no_number_shows_the_stored_range_whole(tmp_path, caplog):
    stored = ramp_frames(1, dtype=np.uint16, high=1023)[0]
    path = write_dicom(tmp_path / "nan.dcm", stored, bits_stored=10, extra={"WindowCenter": "7777", "WindowWidth": 100})
    path.write_bytes(path.read_bytes().replace(b"7777", b"ab\\c"))  # (pydicom writes no such DS itself)
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    np.testing.assert_allclose(frame.pixels, stored * (255.0 / 1023.0), atol=1e-3)
    assert any("Window Center and Width that are numbers" in r.getMessage() for r in caplog.records)


def _voi_lut(descriptor, table, vr="US", descriptor_vr="US") -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", descriptor_vr, descriptor)
    item.add_new("LUTData", vr, table.astype("<u2").tobytes() if vr == "OW" else [int(v) for v in table])
    return item


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_a_voi_lut_sequence_is_applied_where_the_header_gives_no_window(tmp_path, vr):
    # A DICOM pass: a frame whose display was a VOI LUT table (no Window Center) read dark and flat, its whole
    # 12-bit range shown. Its table now gives each level: here a square root, which no window makes.
    stored = (ramp_frames(1)[0].astype(np.uint16) * 4 + 1000)
    entries = np.arange(1021)
    table = np.rint(np.sqrt(entries / 1020.0) * 4095)
    frame = read_frame(write_dicom(tmp_path / "lut.dcm", stored, bits_stored=12,
                                   extra={"VOILUTSequence": Sequence([_voi_lut([1021, 1000, 12], table, vr)])}))
    np.testing.assert_allclose(frame.pixels, np.sqrt((stored - 1000.0) / 1020.0) * 255.0, atol=0.1)


# A signed image's first value -500, as an SS descriptor holds it and as one written US holds it.
@pytest.mark.parametrize(("descriptor_vr", "first"), [("SS", -500), ("US", 65536 - 500)])
def test_a_voi_lut_maps_below_and_above_its_entries_to_its_ends_and_reads_a_signed_first_value(tmp_path, descriptor_vr,
                                                                                                 first):
    stored = np.array([[-900, -500, -499, 0, 500, 3000]], dtype=np.int16).repeat(4, axis=0)
    table = np.linspace(0, 4095, 1001)  # -500..500 from black to white
    item = _voi_lut([1001, first, 12], table, descriptor_vr=descriptor_vr)
    frame = read_frame(write_dicom(tmp_path / "signed.dcm", stored, bits_stored=16,
                                   extra={"VOILUTSequence": Sequence([item])}))
    np.testing.assert_allclose(frame.pixels[0], [0.0, 0.0, 255.0 / 1000, 127.5, 255.0, 255.0], atol=0.05)


def test_a_voi_lut_whose_entries_exceed_its_declared_depth_is_scaled_to_the_tables_depth(tmp_path):
    stored = np.array([[0, 512, 1023]], dtype=np.uint16).repeat(4, axis=0)
    item = _voi_lut([1024, 0, 8], np.arange(1024) * 4)  # (entries to 4092 under a descriptor of 8 bits)
    frame = read_frame(write_dicom(tmp_path / "deep.dcm", stored, bits_stored=10,
                                   extra={"VOILUTSequence": Sequence([item])}))
    np.testing.assert_allclose(frame.pixels[0], [0.0, 2048 * 255.0 / 4095, 4092 * 255.0 / 4095], atol=1e-3)


def test_an_unusable_voi_lut_shows_the_stored_range_whole_and_says_so(tmp_path, caplog):
    stored = ramp_frames(1, dtype=np.uint16, high=1023)[0]
    item = _voi_lut([1024, 0, 12], np.arange(100))  # (100 of the 1,024 entries it declares)
    path = write_dicom(tmp_path / "short.dcm", stored, bits_stored=10, extra={"VOILUTSequence": Sequence([item])})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    np.testing.assert_allclose(frame.pixels, stored * (255.0 / 1023.0), atol=1e-3)
    assert any("VOI LUT is not usable (its LUT Data holds 100 of the 1024 entries" in r.getMessage()
               for r in caplog.records)


def test_the_shared_functional_groups_window_is_on_their_own_rescale(tmp_path):
    # An enhanced object gives its rescale in the functional groups beside the window; the top level's had been used.
    voi, rescale = Dataset(), Dataset()
    voi.WindowCenter, voi.WindowWidth = 1510, 1021
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = 1000, 1, "US"
    group = Dataset()
    group.FrameVOILUTSequence, group.PixelValueTransformationSequence = Sequence([voi]), Sequence([rescale])
    shown = ramp_frames(1)[0]
    frame = read_frame(write_dicom(tmp_path / "fg.dcm", shown.astype(np.uint16) * 4,
                                   extra={"SharedFunctionalGroupsSequence": Sequence([group])}))
    np.testing.assert_allclose(frame.pixels, shown.astype(np.float32), atol=0.5)


def test_an_8_bit_frame_is_read_as_stored_whatever_its_window(tmp_path):
    shown = ramp_frames(1)[0]
    frame = read_frame(write_dicom(tmp_path / "w8.dcm", shown, extra={"WindowCenter": 60, "WindowWidth": 40}))
    np.testing.assert_array_equal(frame.pixels, shown)


def test_an_rgb_frame_drawn_on_in_colour_says_where(tmp_path):
    grey = ramp_frames(2)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert all(f.colour_marks is None for f in read_frames(write_dicom(tmp_path / "grey.dcm", rgb, photometric="RGB")))
    rgb[1, 20:23, 5:60] = (255, 255, 0)  # a yellow line on the second frame
    first, second = read_frames(write_dicom(tmp_path / "drawn.dcm", rgb, photometric="RGB"))
    assert first.colour_marks is None
    assert second.colour_marks[20:23, 5:60].all() and second.colour_marks.sum() == 3 * 55
    np.testing.assert_array_equal(second.pixels, grey_of(rgb[1]))


def test_rgb_planar_configurations_agree(tmp_path):
    rgb = rgb_frames(2)
    a = [f.pixels for f in read_frames(write_dicom(tmp_path / "p0.dcm", rgb, photometric="RGB"))]
    p1 = write_dicom(tmp_path / "p1.dcm", rgb, photometric="RGB", planar_configuration=1)
    b = [f.pixels for f in read_frames(p1)]
    assert pydicom.dcmread(tmp_path / "p1.dcm").PlanarConfiguration == 1
    for k in range(2):
        np.testing.assert_array_equal(a[k], grey_of(rgb[k]))
        np.testing.assert_array_equal(b[k], grey_of(rgb[k]))


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian], ids=["native", "deflated"])
@pytest.mark.parametrize("photometric", ["YBR_FULL", "YBR_FULL_422"])
def test_ybr_gives_luminance(tmp_path, photometric, syntax):
    # (A reader's review: a deflated YBR_FULL_422 cine's second frame had read as noise, its third refused.)
    rgb = rgb_frames(3)
    path = write_dicom(tmp_path / "ybr.dcm", rgb, photometric=photometric, syntax=syntax)
    out = list(read_frames(path))
    assert [f.frame_index for f in out] == [0, 1, 2]
    np.testing.assert_array_equal(read_frame(path, 2).pixels, out[2].pixels)
    for k, frame in enumerate(out):
        # Luma is Y itself; YBR<->RGB rounding and 4:2:2 chroma averaging cost a level or two.
        assert np.abs(frame.pixels.astype(int) - grey_of(rgb[k]).astype(int)).max() <= 3


def test_ybr_full_422_of_an_odd_width_reads_whether_its_rows_are_padded_or_run_on(tmp_path):
    # A DICOM engineer's pass: rows padded to an even width (as fo-dicom writes an odd width) had read sheared, each
    # row a pixel further along, and been measured. The standard's layout, pixel pairs running on across rows,
    # reads as before.
    rgb = rgb_frames(2, w=63)
    padded = np.concatenate([rgb, rgb[:, :, -1:]], axis=2)  # each row's last pixel repeated to an even width
    path = write_dicom(tmp_path / "padded.dcm", padded, photometric="YBR_FULL_422")
    ds = pydicom.dcmread(path)
    ds.Columns = 63  # the data as written: 64 pixels a row
    ds.save_as(path, enforce_file_format=True)
    out = [frame.pixels for frame in read_frames(path)]
    assert [p.shape for p in out] == [(48, 63), (48, 63)]
    for k in range(2):
        assert np.abs(out[k].astype(int) - grey_of(rgb[k]).astype(int)).max() <= 3
    np.testing.assert_array_equal(read_frame(path, 1).pixels, out[1])
    # Padded rows cut short (by 4 bytes) fit neither layout: refused, not read as the standard's packing, sheared.
    ds.PixelData = _ybr422_bytes(padded)[:-4]
    ds.save_as(path, enforce_file_format=True)
    assert "fits neither the standard's packing nor rows padded to an even width" in _error(path).reason
    ds.PixelData = _ybr422_bytes(rgb.reshape(2, 1, 48 * 63, 3))  # the standard's: pairs run on across the rows
    ds.save_as(path, enforce_file_format=True)
    for k, frame in enumerate(read_frames(path)):
        assert np.abs(frame.pixels.astype(int) - grey_of(rgb[k]).astype(int)).max() <= 3
    # Of an odd pixel count (47 x 63), the second frame begins inside a pair.
    odd = rgb[:, :47]
    ds.Rows, ds.PixelData = 47, _ybr422_bytes(odd.reshape(1, 1, -1, 3))
    ds.save_as(path, enforce_file_format=True)
    for k, frame in enumerate(read_frames(path)):
        assert frame.pixels.shape == (47, 63)
        assert np.abs(frame.pixels.astype(int) - grey_of(odd[k]).astype(int)).max() <= 3


def test_12_bit_jpeg_extended_without_its_decoder_is_refused_in_one_short_line(tmp_path, caplog, monkeypatch):
    # A PACS pass: the refusal was right but 420 characters long, quoting each decoder plugin's failure.
    import importlib.util

    if importlib.util.find_spec("libjpeg") is not None:
        pytest.skip("pylibjpeg-libjpeg is installed here: 12-bit JPEG Extended decodes")
    path = write_dicom(tmp_path / "jpeg12.dcm", (ramp_frames(1)[0].astype(np.uint16) * 16), bits_stored=12,
                       syntax=JPEGExtended12Bit)
    with caplog.at_level(logging.DEBUG, logger="ipp_seg"), pytest.raises(ScanReadError) as refused:
        list(read_frames(path))
    said = str(refused.value)
    assert "12-bit JPEG Extended data needs pylibjpeg-libjpeg" in said and "pip install pylibjpeg-libjpeg" in said
    assert len(said) < len(str(path)) + 220 and "plugin" not in said.lower()
    assert any("decoding frame 0 failed" in record.getMessage() for record in caplog.records)  # (for a bug report)
    # With the decoder installed, a frame that fails is damaged: the message says what the decoders said.
    real_find_spec = importlib.util.find_spec
    with monkeypatch.context() as patched:
        patched.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "libjpeg" else real_find_spec(name, *a))
        with pytest.raises(ScanReadError) as failed:
            list(read_frames(path))
    assert "needs pylibjpeg-libjpeg" not in str(failed.value) and "decoding frame 0" in str(failed.value)


@pytest.mark.parametrize("syntax, planar", [(ExplicitVRLittleEndian, 0), (ExplicitVRLittleEndian, 1),
                                            (RLELossless, 0)], ids=["native", "planar", "rle"])
def test_a_tinted_ybr_full_frame_reads_as_its_stored_luma(tmp_path, syntax, planar):
    # A PACS pass: a sepia frame (Cb 118, Cr 138) went through RGB, where its dark pixels lie outside the gamut and
    # were clipped, and black read as grey 4: the AoP moved by 1.7 degrees, status ok.
    luma = ramp_frames(2)
    ybr = np.stack([luma, np.full_like(luma, 118), np.full_like(luma, 138)], axis=-1)
    ds = base_dataset(True)
    ds.set_pixel_data(ybr, "YBR_FULL", 8)
    if planar:
        ds.PixelData = np.ascontiguousarray(ybr.transpose(0, 3, 1, 2)).tobytes()
        ds.PlanarConfiguration = 1
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    if syntax == RLELossless:
        ds.compress(syntax, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(tmp_path / "sepia.dcm", enforce_file_format=True)
    frames = list(read_frames(tmp_path / "sepia.dcm"))
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.pixels, luma[k])
        assert frame.colour_marks is None  # a tint is no mark
    # Colour drawn on it is still found.
    ybr[1, 10:14, 10:30] = (150, 60, 220)  # a red-orange caliper line
    ds.set_pixel_data(ybr, "YBR_FULL", 8)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(tmp_path / "marked.dcm", enforce_file_format=True)
    marked = list(read_frames(tmp_path / "marked.dcm"))[1]
    assert marked.colour_marks is not None and marked.colour_marks[10:14, 10:30].all()
    assert marked.pixels[10:14, 10:30].tolist() == ybr[1, 10:14, 10:30, 0].tolist()


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless], ids=lambda u: UID(u).keyword
)
def test_palette_colour_to_luminance(tmp_path, syntax):
    indices = ramp_frames(2)
    levels = np.arange(256, dtype=np.uint16)
    red, green, blue = levels * 257, (255 - levels) * 257, np.full(256, 128 * 257, dtype=np.uint16)
    path = write_dicom(
        tmp_path / "pal.dcm", indices, photometric="PALETTE COLOR", syntax=syntax, palette=(red, green, blue)
    )
    out = list(read_frames(path))
    assert len(out) == 2
    for k, frame in enumerate(out):
        rgb16 = np.stack([red[indices[k]], green[indices[k]], blue[indices[k]]], axis=-1)
        expected = cv2.cvtColor(rgb16, cv2.COLOR_RGB2GRAY) * (255.0 / 65535.0)
        np.testing.assert_allclose(frame.pixels, expected, atol=0.01)
    # 8-bit entries stored one per 16-bit word, as older writers store them, read at their level (a reader's review:
    # at 1/257 of it).
    eight = tuple((lut // 257).astype(np.uint8) for lut in (red, green, blue))
    path = write_dicom(tmp_path / "pal8.dcm", indices, photometric="PALETTE COLOR", syntax=syntax, palette=eight)
    assert pydicom.dcmread(path).RedPaletteColorLookupTableDescriptor[2] == 8
    for k, frame in enumerate(read_frames(path)):
        rgb8 = np.stack([lut[indices[k]] for lut in eight], axis=-1)
        np.testing.assert_allclose(frame.pixels, cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY), atol=0.01)


# --------------------------------------------------------------------------- calibration


def test_region_spacing_and_box(tmp_path):
    frames = ramp_frames(1, h=60, w=80)[0]
    regions = [
        region_item(10, 5, 69, 54, (0.025, 0.025)),  # 2-D tissue
        region_item(0, 55, 79, 59, (0.01, 0.0), spatial_format=4, data_type=10),  # ECG trace strip
    ]
    frame = read_frame(write_dicom(tmp_path / "r.dcm", frames, regions=regions))
    assert frame.spacing_mm == pytest.approx((0.25, 0.25))
    assert len(frame.regions) == 1
    region = frame.imaging_region
    assert (region.x0, region.y0, region.x1, region.y1) == (10, 5, 70, 55)  # max corner is inclusive in DICOM
    assert frame.spacing_at(20, 20) == pytest.approx((0.25, 0.25))
    assert frame.spacing_source == "ultrasound_region"


def test_region_beyond_image_is_clipped(tmp_path):
    frames = ramp_frames(1, h=60, w=80)[0]
    frame = read_frame(write_dicom(tmp_path / "r.dcm", frames, regions=[region_item(5, 5, 80, 60)]))
    region = frame.imaging_region
    assert (region.x1, region.y1) == (80, 60)


def test_a_header_of_more_ultrasound_regions_than_an_image_has_is_refused(tmp_path):
    # A security review: each region is compared with each other one, and 50,000 in a 7 MB file took most of an hour.
    from ipp_seg.io.dicom import MAX_ULTRASOUND_REGIONS

    frames = ramp_frames(1, h=60, w=80)[0]
    most = [region_item(0, 0, 79, 59, (0.03, 0.03)) for _ in range(MAX_ULTRASOUND_REGIONS)]
    assert read_frame(write_dicom(tmp_path / "most.dcm", frames, regions=most)).spacing_mm == pytest.approx((0.3, 0.3))
    path = write_dicom(tmp_path / "many.dcm", frames, regions=[*most, region_item(0, 0, 79, 59, (0.03, 0.03))])
    with pytest.raises(ScanReadError, match=f"lists {MAX_ULTRASOUND_REGIONS + 1} ultrasound regions"):
        read_frame(path)


def test_two_regions_same_calibration_give_frame_spacing(tmp_path):
    frames = ramp_frames(1, h=60, w=80)[0]
    regions = [region_item(0, 0, 39, 59, (0.03, 0.03)), region_item(40, 0, 79, 59, (0.03, 0.03))]
    frame = read_frame(write_dicom(tmp_path / "dual.dcm", frames, regions=regions))
    assert frame.spacing_mm == pytest.approx((0.3, 0.3))
    assert len(frame.regions) == 2


def test_two_regions_different_calibration(tmp_path):
    frames = ramp_frames(1, h=60, w=80)[0]
    regions = [region_item(0, 0, 29, 59, (0.02, 0.02)), region_item(30, 0, 79, 59, (0.05, 0.05))]
    frame = read_frame(write_dicom(tmp_path / "dual.dcm", frames, regions=regions))
    assert frame.spacing_mm is None
    assert frame.spacing_at(10, 10) == pytest.approx((0.2, 0.2))
    assert frame.spacing_at(50, 10) == pytest.approx((0.5, 0.5))
    assert frame.imaging_region.x0 == 30  # the larger one
    assert frame.spacing_at(200, 200) is None  # outside every region: the frame's (unknown)
    assert frame.spacing_source is None
    assert frame.calibration_at(50, 10) == (pytest.approx((0.5, 0.5)), "ultrasound_region")
    assert frame.calibration_at(200, 200) == (None, None)


def test_a_calibrated_thumbnail_does_not_calibrate_an_uncalibrated_view(tmp_path, caplog):
    # A small calibrated region (a thumbnail) beside the large view of the anatomy, which says
    # nothing of its pixel size: the view's distances are unknown, not the thumbnail's.
    frames = ramp_frames(1, h=60, w=80)[0]
    regions = [region_item(0, 0, 19, 19, (0.1, 0.1)), region_item(20, 0, 79, 59, (0.02, 0.02), units=0)]
    path = write_dicom(tmp_path / "thumb.dcm", frames, regions=regions)
    frame = read_frame(path)
    assert frame.spacing_mm is None and frame.imaging_region.x0 == 20
    assert frame.spacing_at(50, 30) is None and frame.spacing_at(5, 5) == pytest.approx((1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="ipp_seg.io"):
        given = read_frame(path, spacing_mm=(0.25, 0.25))  # fills in where the file says nothing
    assert given.spacing_at(50, 30) == (0.25, 0.25) and given.spacing_at(5, 5) == pytest.approx((1.0, 1.0))
    assert given.calibration_at(50, 30) == ((0.25, 0.25), "given")
    assert given.calibration_at(5, 5)[1] == "ultrasound_region"
    assert any("applies only outside them" in r.getMessage() for r in caplog.records)


def test_a_pixel_spacing_does_not_calibrate_an_uncalibrated_view_beside_a_calibrated_one(tmp_path, caplog):
    # A dual view: the left view (listed first, measured) has no calibration, the right one
    # 0.3 mm, and the exporter copied the right one's into Pixel Spacing. The left view had been
    # measured at 0.3 mm (source pixel_spacing), its HSD in mm not even doubtful.
    frames = ramp_frames(1, h=60, w=80)[0]
    regions = [region_item(0, 0, 39, 59, (0.03, 0.03), units=0), region_item(40, 0, 79, 59, (0.03, 0.03))]
    path = write_dicom(tmp_path / "dual.dcm", frames, regions=regions, extra={"PixelSpacing": [0.3, 0.3]})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    assert frame.spacing_mm is None and frame.spacing_source is None
    assert frame.calibration_at(10, 10) == (None, None)
    assert frame.calibration_at(50, 10) == (pytest.approx((0.3, 0.3)), "ultrasound_region")
    assert any("its Pixel Spacing is not used" in r.getMessage() for r in caplog.records)
    # With every region uncalibrated, Pixel Spacing is the frame's, as before.
    regions = [region_item(0, 0, 39, 59, (0.03, 0.03), units=0), region_item(40, 0, 79, 59, (0.03, 0.03), units=0)]
    frame = read_frame(write_dicom(tmp_path / "dual0.dcm", frames, regions=regions, extra={"PixelSpacing": [0.3, 0.3]}))
    assert frame.calibration_at(10, 10) == (pytest.approx((0.3, 0.3)), "pixel_spacing")


@pytest.mark.parametrize("inner_first", [False, True])
@pytest.mark.parametrize("outer_cm", [(0.035, 0.035), None])
def test_overlapping_regions_of_other_calibrations_give_no_spacing_where_they_overlap(tmp_path, caplog, inner_first,
                                                                                      outer_cm):
    # A zoom box (0.1 mm) inside the image (0.35 mm, or uncalibrated): which one the PS's pixels
    # are drawn at is not known. The HSD had been 5.50 mm with the image listed first and 1.57 mm
    # with the box first, both `ok`.
    frames = ramp_frames(1, h=60, w=80)[0]
    outer = region_item(0, 0, 79, 59, outer_cm) if outer_cm else region_item(0, 0, 79, 59, (0.035, 0.035), units=0)
    inner = region_item(20, 10, 49, 39, (0.01, 0.01))
    path = write_dicom(tmp_path / "zoom.dcm", frames, regions=[inner, outer] if inner_first else [outer, inner])
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    assert frame.imaging_region.x1 == 80  # the image, which the network is shown
    assert frame.calibration_at(30, 20) == (None, None)  # inside both
    outside_box = frame.calibration_at(5, 50)
    assert outside_box == ((pytest.approx((0.35, 0.35)), "ultrasound_region") if outer_cm else (None, None))
    assert any("overlap and are not calibrated alike" in r.getMessage() for r in caplog.records)
    # Overlapping regions of one calibration (a box listed twice) are no doubt.
    caplog.clear()
    same = [region_item(0, 0, 79, 59, (0.035, 0.035)), region_item(20, 10, 49, 39, (0.035, 0.035))]
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(write_dicom(tmp_path / "twice.dcm", frames, regions=same))
    assert frame.calibration_at(30, 20) == (pytest.approx((0.35, 0.35)), "ultrasound_region")
    assert not any("overlap" in r.getMessage() for r in caplog.records)
    # Nor are two views side by side that share their edge column (a QA pass: warned of as a zoom box).
    touching = [region_item(0, 0, 40, 59, (0.035, 0.035)), region_item(40, 0, 79, 59, (0.02, 0.02))]
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        read_frame(write_dicom(tmp_path / "touching.dcm", frames, regions=touching))
    assert not any("overlap" in r.getMessage() for r in caplog.records)


def test_per_frame_pixel_measures_calibrate_a_cine_where_every_frame_gives_one(tmp_path, caplog):
    # Pixel Measures written per frame (no shared group, no regions) had been passed over:
    # spacing_unknown where the file says 0.35 mm.
    def measures(spacing):
        item, pixel = Dataset(), Dataset()
        pixel.PixelSpacing = spacing
        item.PixelMeasuresSequence = Sequence([pixel])
        return item

    frames = ramp_frames(3, h=60, w=80)
    path = write_dicom(tmp_path / "cine.dcm", frames,
                       extra={"PerFrameFunctionalGroupsSequence": Sequence([measures([0.35, 0.35]) for _ in range(3)])})
    frame = read_frame(path)
    assert frame.spacing_mm == pytest.approx((0.35, 0.35)) and frame.spacing_source == "pixel_spacing"
    # Frames that disagree give none (one frame's spacing is not another's), and say so.
    path = write_dicom(tmp_path / "mixed.dcm", frames, extra={"PerFrameFunctionalGroupsSequence": Sequence(
        [measures([0.35, 0.35]), measures([0.35, 0.35]), measures([0.5, 0.5])])})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert read_frame(path).spacing_mm is None
    assert any("give different pixel spacings" in r.getMessage() for r in caplog.records)
    # Beside a Pixel Spacing, which comes first: used, and the other named where it differs; frames that disagree
    # among themselves are not said to leave the spacing unknown, as it is not (a QA pass).
    caplog.clear()
    for spacings, named in (([[0.35, 0.35]] * 3, False), ([[0.3, 0.3]] * 3, True),
                            ([[0.35, 0.35], [0.35, 0.35], [0.5, 0.5]], True)):  # (one frame's of its own: named too)
        groups = Sequence([measures(v) for v in spacings])
        path = write_dicom(tmp_path / "both.dcm", frames,
                           extra={"PixelSpacing": [0.35, 0.35], "PerFrameFunctionalGroupsSequence": groups})
        with caplog.at_level(logging.WARNING, logger="ipp_seg"):
            assert read_frame(path).spacing_mm == pytest.approx((0.35, 0.35))
        said = [r.getMessage() for r in caplog.records]
        assert any("Pixel Spacing values of its header differ" in m for m in said) is named
        assert not any("give different pixel spacings" in m for m in said)
        caplog.clear()
    # A Pixel Spacing that is no spacing, beside per-frame measures that are: not used, and not said to leave the
    # spacing unknown, as they give it (a second QA pass).
    path = write_dicom(tmp_path / "bad.dcm", frames, extra={"PixelSpacing": ["0", "0"],
                                                             "PerFrameFunctionalGroupsSequence": groups})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert read_frame(path).spacing_mm is None  # (the frames' disagree: none)
    assert any("Pixel Spacing is present but not two positive numbers: not used" in r.getMessage()
               for r in caplog.records)


def test_values_stored_in_the_top_bits_are_refused_not_read_scrambled(tmp_path):
    # Bits Stored 12 with High Bit 15: the decoder keeps the low 12 bits of values that lie in
    # the top 12, and the frame had been measured scrambled (a failed ps_missing, no cause named).
    frames = (ramp_frames(1, dtype=np.uint16, high=4095)[0] << 4).astype(np.uint16)
    path = write_dicom(tmp_path / "top.dcm", frames, extra={"BitsStored": 12, "HighBit": 15})
    with pytest.raises(ScanReadError, match=r"High Bit 15 with Bits Stored 12 .* export the images again"):
        read_frame(path)
    assert read_frame(write_dicom(tmp_path / "low.dcm", frames >> 4, bits_stored=12)).pixels.max() > 0
    # A High Bit set wrongly over values that are in the low bits reads as it always did (a QA pass: refused).
    low = read_frame(write_dicom(tmp_path / "low_hb.dcm", frames >> 4, extra={"BitsStored": 12, "HighBit": 15}))
    np.testing.assert_array_equal(low.pixels, read_frame(tmp_path / "low.dcm").pixels)
    # So does one stray word with a high bit set (a second QA pass: the whole frame had been refused), and signed
    # 12-bit values sign-extended into their 16-bit words, as 0.2.11 read them.
    stray = (frames >> 4).copy()
    stray[0, 0] |= 0x8000
    assert read_frame(write_dicom(tmp_path / "stray.dcm", stray, extra={"BitsStored": 12, "HighBit": 15}))
    signed = ((frames >> 4).astype(np.int32) - 2048).astype(np.int16)
    path = write_dicom(tmp_path / "signed.dcm", signed,
                       extra={"BitsStored": 12, "HighBit": 15, "PixelRepresentation": 1})
    assert read_frame(path).pixels.max() > 0


def test_signed_jpeg_ls_of_fewer_bits_than_its_words_reads_as_its_native_twin(tmp_path):
    # A reader's review: pydicom 3.0.2 corrects the sign of an iterated JPEG-LS frame in a buffer it cannot write, and
    # a valid signed 12-bit frame had been refused ("output array is read-only").
    frames = ((ramp_frames(2, dtype=np.uint16, high=4095)).astype(np.int32) - 2048).astype(np.int16)
    for n in (1, 2):
        pixels = frames[0] if n == 1 else frames
        native = list(read_frames(write_dicom(tmp_path / f"native{n}.dcm", pixels, bits_stored=12)))
        path = write_dicom(tmp_path / f"jls{n}.dcm", pixels, bits_stored=12, syntax=JPEGLSLossless)
        assert pydicom.dcmread(path, stop_before_pixels=True).PixelRepresentation == 1
        coded = list(read_frames(path))
        assert len(coded) == len(native) == n
        for a, b in zip(coded, native):
            np.testing.assert_array_equal(a.pixels, b.pixels)
    assert read_frame(tmp_path / "jls2.dcm", 1).pixels.max() > 0


def test_a_region_calibration_beyond_any_number_of_millimetres_is_no_calibration(tmp_path, caplog):
    # 1e308 cm is no number of mm (inf): the frame had failed as an unexpected processing error.
    frames = ramp_frames(1, h=60, w=80)[0]
    for delta in ((1e308, 1e308), (1e308, 0.035)):
        with caplog.at_level(logging.WARNING, logger="ipp_seg"):
            frame = read_frame(write_dicom(tmp_path / "inf.dcm", frames, regions=[region_item(0, 0, 79, 59, delta)]))
        assert frame.spacing_mm is None and frame.imaging_region.spacing_mm is None
        # (In cm per pixel, as the standard gives Physical Delta; the region counted from 1, as a reader counts.)
        assert any("ultrasound region 1 is calibrated in cm but its Physical Delta X/Y are not two finite non-zero "
                   "numbers of cm per pixel" in r.getMessage() for r in caplog.records)


def test_region_data_type_none_counts_as_an_untyped_view(tmp_path):
    frames = ramp_frames(1, h=60, w=80)[0]
    frame = read_frame(write_dicom(tmp_path / "dt0.dcm", frames,
                                   regions=[region_item(10, 0, 79, 59, (0.03, 0.03), data_type=0)]))
    assert frame.imaging_region.x0 == 10 and frame.spacing_mm == pytest.approx((0.3, 0.3))


@pytest.mark.parametrize("modality, words", [("CT", "an image of modality CT, not ultrasound"),
                                             ("SEG", "a DICOM Segmentation (modality SEG), a result"),
                                             # Any other text is not quoted: a damaged header's may be a name.
                                             ("MUSTERMANN", "an image of a modality DICOM does not define, not")])
def test_images_of_other_modalities_are_refused(tmp_path, modality, words):
    from ipp_seg.io import NotAnImageError, OtherModalityError

    path = write_dicom(tmp_path / "other.dcm", ramp_frames(1)[0], extra={"Modality": modality})
    assert words in _error(path).reason and "MUSTERMANN" not in _error(path).reason
    # A result (a SEG ipp-seg wrote, in an export processed again) is no image to measure, as an SR is:
    # it had counted as a failed frame (not_ultrasound_frame).
    assert type(_error(path)) is (NotAnImageError if modality == "SEG" else OtherModalityError)
    for accepted in ("US", "OT", ""):  # secondary captures of a scanner's screen are OT
        ok = write_dicom(tmp_path / f"ok{accepted}.dcm", ramp_frames(1)[0], extra={"Modality": accepted})
        assert read_frame(ok).pixels.shape == (48, 64)


@pytest.mark.parametrize("written, words", [
    (b"1.2.840.113619.5.21", "Transfer Syntax UID 1.2.840.113619.5.21 is none that ipp-seg's DICOM library"),
    (b"1.2.840.10008.5.1.4", "Transfer Syntax UID 1.2.840.10008.5.1.4 is none that ipp-seg's DICOM library"),
    (b"Doe^Jane SECRET 123", "Transfer Syntax UID (not a UID) is none"),  # any text: not quoted
])
def test_a_transfer_syntax_that_dicom_does_not_define_is_refused_in_one_line(tmp_path, written, words):
    path = write_dicom(tmp_path / "private.dcm", ramp_frames(1)[0])
    standard = str(ExplicitVRLittleEndian).encode() + b"\0"  # 20 bytes, as the patch is
    data = path.read_bytes()
    assert data.count(standard) == 1
    path.write_bytes(data.replace(standard, written + b"\0"))
    reason = _error(path).reason
    assert words in reason and "export the images" in reason and "Doe" not in reason


def test_a_number_of_frames_that_is_no_number_is_refused_and_damaged_headers_never_raise_other_errors(
        tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "frames.dcm", ramp_frames(2))
    element = b"\x28\x00\x08\x00IS\x02\x002 "  # (0028,0008) IS "2", explicit VR little endian
    assert path.read_bytes().count(element) == 1
    for value in (b"ab", b"-1", b"0 ", b"  "):  # pydicom will not write them
        bad = tmp_path / "bad.dcm"
        bad.write_bytes(path.read_bytes().replace(element, element[:-2] + value))
        assert "Number of Frames is not a whole number of 1 or more" in _error(bad).reason, value
    # Whatever a check did not foresee ends as a refusal of the file naming the error's type only.
    import ipp_seg.io.dicom as dicom_module

    def unforeseen(*args, **kwargs):
        raise TypeError("'<' not supported: Doe^Jane")

    monkeypatch.setattr(dicom_module, "_check_native_length", unforeseen)
    plain = write_dicom(tmp_path / "plain.dcm", ramp_frames(1)[0])
    reason = _error(plain).reason
    assert "holds a value ipp-seg cannot use (TypeError)" in reason and "Doe" not in reason


def test_pixels_a_pixel_aspect_ratio_says_are_not_square_are_refused_unless_calibrated(tmp_path):
    # A viewer stretches such a frame: measured as stored, its angles would be another frame's.
    squashed = write_dicom(tmp_path / "aspect.dcm", ramp_frames(1)[0], extra={"PixelAspectRatio": [4, 3]})
    reason = _error(squashed).reason
    assert "pixels are not square (Pixel Aspect Ratio 4:3, rows to columns)" in reason and "export it" in reason
    assert "--spacing-mm" in reason and count_frames(squashed) == 1  # (its frames counted, to be refused as read)
    # Their size given, in the shape the ratio says, they are measured (a reader's review: refused all the same);
    # given in another shape, refused.
    given = read_frame(squashed, spacing_mm=(0.3, 0.4))
    assert given.spacing_mm == (0.3, 0.4) and given.spacing_source == "given"
    with pytest.raises(ScanReadError, match=r"the spacing given, 0.3 x 0.3 mm \(x by y\), is not the shape its Pixel "
                                            r"Aspect Ratio 4:3"):
        read_frame(squashed, spacing_mm=(0.3, 0.3))
    for name, extra, regions in (
        ("square", {"PixelAspectRatio": [1, 1]}, None),
        ("nearly", {"PixelAspectRatio": [100, 101]}, None),  # within the 2 % inference takes as square
        ("spaced", {"PixelAspectRatio": [4, 3], "PixelSpacing": [0.4, 0.3]}, None),  # the mm calibration wins
        ("region", {"PixelAspectRatio": [4, 3]}, [region_item(0, 0, 63, 47, (0.03, 0.04))]),
    ):
        frame = read_frame(write_dicom(tmp_path / f"{name}.dcm", ramp_frames(1)[0], extra=extra, regions=regions))
        assert frame.pixels.shape == (48, 64), name


def test_a_frame_declared_beyond_the_pixel_limit_is_refused_before_decoding(tmp_path):
    # 65535 x 65535 over a few bytes: decoders allocate the declared frame first (RLE's aborts the process).
    import struct
    import time

    path = write_dicom(tmp_path / "huge.dcm", ramp_frames(3), syntax=RLELossless)
    data = path.read_bytes()
    for tag in (b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x11\x00US\x02\x00"):  # Rows, Columns
        at = data.index(tag) + len(tag)
        data = data[:at] + struct.pack("<H", 65535) + data[at + 2:]
    path.write_bytes(data)
    started = time.perf_counter()
    reason = _error(path).reason
    assert "frame of 65535 x 65535 pixels is beyond the 40 million pixels ipp-seg reads" in reason
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless])
def test_compressed_frames_declaring_more_pixels_than_the_header_are_refused(tmp_path, syntax):
    # Decoders allocate what the stream declares; GDCM aborted the process on such a mismatch.
    import struct

    from ipp_seg.io.images import compressed_frame_size

    path = write_dicom(tmp_path / "frames.dcm", ramp_frames(1)[0], syntax=syntax)
    data = bytearray(path.read_bytes())
    stream = data.index(b"\xff\xd8" if syntax == JPEGLSLossless else b"\xff\x4f\xff\x51")
    assert compressed_frame_size(bytes(data[stream:])) == (64, 48)
    if syntax == JPEGLSLossless:
        sof = data.index(b"\xff\xf7", stream)
        struct.pack_into(">HH", data, sof + 5, 30000, 30000)
    else:
        struct.pack_into(">II", data, stream + 8, 30000, 30000)
    path.write_bytes(bytes(data))
    assert "its compressed frames declare 30000 x 30000 pixels where its header says 64 x 48" in _error(path).reason


def test_every_compressed_frame_is_checked_and_a_jp2_file_too(tmp_path):
    import struct

    from ipp_seg.io.images import compressed_frame_size

    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(3), syntax=JPEG2000Lossless)
    data = bytearray(path.read_bytes())
    second = data.index(b"\xff\x4f\xff\x51", data.index(b"\xff\x4f\xff\x51") + 4)  # frame 1's codestream
    struct.pack_into(">II", data, second + 8, 30000, 30000)
    path.write_bytes(bytes(data))
    assert "its compressed frames declare 30000 x 30000 pixels where its header says 64 x 48" in _error(path).reason
    # A JP2 file (boxes around the codestream), as some encoders encapsulate frames: both sizes are read.
    codestream = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + struct.pack(">IIII", 64, 48, 0, 0)

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    header = box(b"jp2h", box(b"ihdr", struct.pack(">IIHBBBB", 48, 64, 1, 7, 7, 0, 0)))
    jp2 = signature + box(b"ftyp", b"jp2 \0\0\0\0jp2 ") + header + box(b"jp2c", codestream)
    assert compressed_frame_size(jp2) == (64, 48)
    assert compressed_frame_size(jp2.replace(struct.pack(">II", 48, 64), struct.pack(">II", 30000, 30000))) == (
        30000, 30000)  # a header box declaring more than the codestream: the larger is what a decoder may take


def test_a_frame_count_far_beyond_the_frames_present_reads_those_present(tmp_path):
    # (With a Frame Time: each frame's time had been listed for every declared frame, 100 s and 9 GB.)
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(3), syntax=RLELossless,
                       extra={"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 40})
    element = b"\x28\x00\x08\x00IS\x02\x003 "
    path.write_bytes(path.read_bytes().replace(element, b"\x28\x00\x08\x00IS\x08\x0099999999"))
    tracemalloc.start()
    try:
        frames = []
        with pytest.raises(ScanReadError, match="frame 3 is missing: the pixel data ends after 3 of the 99999999") \
                as info:
            for frame in read_frames(path):
                frames.append((frame.frame_index, frame.provenance.frame_time_ms))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames == [(0, 0.0), (1, 40.0), (2, 80.0)] and peak < 50 * 2**20  # every declared index had taken 800 MB
    assert info.value.frame_provenance.frame_time_ms == 120.0
    # A damaged header's count: the later frames are not listed one by one (a row each would be 10^8 rows).
    assert isinstance(info.value, FramesMissingError) and info.value.missing_frames == ()
    # A cine's: each later frame asked for is listed, with its place, for a row of its own.
    path = write_dicom(tmp_path / "short.dcm", ramp_frames(3), syntax=RLELossless)
    path.write_bytes(path.read_bytes().replace(element, b"\x28\x00\x08\x00IS\x02\x006 "))
    with pytest.raises(FramesMissingError) as info:
        list(read_frames(path))
    assert info.value.frame_index == 3 and info.value.n_frames == 6
    assert [(i, p.frame_number) for i, p in info.value.missing_frames] == [(4, 5), (5, 6)]
    assert info.value.reason_for(5).startswith("frame 5 is missing: the pixel data ends after 3 of the 6 frames")
    tracemalloc.start()
    try:  # and so did comparing a chosen frame with every declared one (--frames 1)
        assert [f.frame_index for f in read_frames(path, 1)] == [1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


@pytest.mark.parametrize("with_meta", [True, False])
def test_a_data_set_without_preamble_is_read(tmp_path, with_meta):
    path = write_dicom(tmp_path / "full.dcm", ramp_frames(1)[0], regions=[region_item(0, 0, 63, 47, (0.02, 0.02))])
    ds = pydicom.dcmread(path)
    bare = tmp_path / "bare.dcm"
    if with_meta:  # the file meta written from byte 0, no preamble nor 'DICM'
        data = path.read_bytes()
        bare.write_bytes(data[132:])
    else:  # a legacy export: the data set alone, implicit VR little endian
        from pydicom.filewriter import write_dataset

        with open(bare, "wb") as fh:
            out = pydicom.filebase.DicomFileLike(fh)
            out.is_implicit_VR, out.is_little_endian = True, True
            write_dataset(out, pydicom.Dataset(ds))
    frame = read_frame(bare)
    np.testing.assert_array_equal(frame.pixels, ramp_frames(1)[0])
    assert frame.spacing_mm == pytest.approx((0.2, 0.2))
    (tmp_path / "IM0001").write_bytes(bare.read_bytes())  # no suffix: still recognised as DICOM
    np.testing.assert_array_equal(read_frame(tmp_path / "IM0001").pixels, frame.pixels)


def test_a_cine_with_fewer_compressed_frames_than_declared_gives_the_ones_present(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(5), syntax=RLELossless)
    ds = pydicom.dcmread(path)
    from pydicom.encaps import encapsulate, generate_frames

    fragments = list(generate_frames(ds.PixelData, number_of_frames=5))[:3]
    ds.PixelData = encapsulate(fragments)
    ds.save_as(path, enforce_file_format=True)
    frames = read_frames(path)
    got = [next(frames).frame_index for _ in range(3)]
    assert got == [0, 1, 2]
    with pytest.raises(ScanReadError) as info:
        next(frames)
    assert "frame 3" in info.value.reason


def test_tissue_region_preferred_over_colour_flow(tmp_path):
    frames = ramp_frames(1, h=60, w=80)[0]
    regions = [region_item(0, 0, 79, 59, (0.03, 0.03)), region_item(20, 10, 40, 30, (0.03, 0.03), data_type=2)]
    frame = read_frame(write_dicom(tmp_path / "cf.dcm", frames, regions=regions))
    assert len(frame.regions) == 1 and frame.imaging_region.x1 == 80


def test_region_without_cm_units_falls_back_to_pixel_spacing(tmp_path):
    frames = ramp_frames(1)[0]
    path = write_dicom(
        tmp_path / "ps.dcm", frames, regions=[region_item(0, 0, 63, 47, (0.02, 0.02), units=0)],
        extra={"PixelSpacing": [0.5, 0.25]},
    )
    frame = read_frame(path)
    assert frame.imaging_region is not None and frame.imaging_region.spacing_mm is None
    # Pixel Spacing is (row, column) = (y, x) in the file.
    assert frame.spacing_mm == pytest.approx((0.25, 0.5))
    assert frame.spacing_at(5, 5) == pytest.approx((0.25, 0.5))
    assert frame.calibration_at(5, 5)[1] == frame.spacing_source == "pixel_spacing"


@pytest.mark.parametrize("pixel_spacing, warned", [([0.5, 0.25], True), ([0.2, 0.2], False), ([0.201, 0.2], False)])
def test_a_pixel_spacing_that_disagrees_with_the_region_is_named(tmp_path, caplog, pixel_spacing, warned):
    # The region's calibration wins; a Pixel Spacing beside it that says otherwise is named
    # rather than passed over, and one that agrees (to 1 %) is not.
    frames = ramp_frames(1)[0]
    path = write_dicom(tmp_path / "both.dcm", frames, regions=[region_item(0, 0, 63, 47, (0.02, 0.02))],
                       extra={"PixelSpacing": pixel_spacing})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    assert frame.spacing_mm == pytest.approx((0.2, 0.2)) and frame.spacing_source == "ultrasound_region"
    said = [r.getMessage() for r in caplog.records if "differs from the ultrasound region" in r.getMessage()]
    assert bool(said) == warned
    if warned:
        assert "0.25 x 0.5 mm" in said[0] and "(0.2 x 0.2 mm)" in said[0]


def test_imager_pixel_spacing_is_the_last_fallback(tmp_path):
    frames = ramp_frames(1)[0]
    frame = read_frame(write_dicom(tmp_path / "ips.dcm", frames, extra={"ImagerPixelSpacing": [0.2, 0.1]}))
    assert frame.spacing_mm == pytest.approx((0.1, 0.2))
    assert frame.spacing_source == "imager_pixel_spacing"


def test_no_calibration_is_unknown(tmp_path):
    frame = read_frame(write_dicom(tmp_path / "none.dcm", ramp_frames(1)[0]))
    assert frame.spacing_mm is None and frame.regions == () and frame.imaging_region is None
    assert frame.spacing_at(1, 1) is None
    assert frame.spacing_source is None


def test_user_spacing_fills_unknown_only(tmp_path, caplog):
    plain = write_dicom(tmp_path / "none.dcm", ramp_frames(1)[0])
    given = read_frame(plain, spacing_mm=(0.3, 0.3))
    assert given.spacing_mm == (0.3, 0.3) and given.spacing_source == "given"
    calibrated = write_dicom(tmp_path / "cal.dcm", ramp_frames(1)[0], regions=[region_item(0, 0, 63, 47, (0.02, 0.02))])
    with caplog.at_level(logging.WARNING, logger="ipp_seg.io"):
        frame = read_frame(calibrated, spacing_mm=(0.3, 0.3))
    assert frame.spacing_mm == pytest.approx((0.2, 0.2))
    assert frame.spacing_source == "ultrasound_region"  # the file's, not the ignored given one
    assert any("kept" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipp_seg.io"):
        read_frame(calibrated, spacing_mm=(0.2, 0.2))  # agrees: nothing to warn about
    assert not caplog.records


def test_file_without_suffix_is_sniffed(tmp_path):
    path = write_dicom(tmp_path / "IM000001", ramp_frames(1)[0])
    assert read_frame(path).provenance.source_format == "dicom"


# --------------------------------------------------------------------------- frame choice


def test_frame_choices(tmp_path):
    frames = ramp_frames(5)
    path = write_dicom(tmp_path / "cine.dcm", frames, syntax=RLELossless)
    assert [f.frame_index for f in read_frames(path, "1-3")] == [1, 2, 3]
    assert [f.frame_index for f in read_frames(path, range(0, 5, 2))] == [0, 2, 4]
    assert [f.provenance.frame_number for f in read_frames(path, 4)] == [5]
    np.testing.assert_array_equal(read_frame(path, 3).pixels, frames[3])
    # A range reaching past the end takes the frames it has: "0-4" serves a folder of cines and stills alike.
    assert [f.frame_index for f in read_frames(path, "3-7")] == [3, 4]
    with pytest.raises(ScanReadError, match=r"source has 5 frames \(0-4\)"):
        read_frames(path, "5-7")
    with pytest.raises(ScanReadError):
        read_frame(path, 5)
    with pytest.raises(ValueError):
        read_frames(path, "two")


def test_iteration_can_stop_early(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(6))
    iterator = read_frames(path)
    first = next(iterator)
    iterator.close()
    assert first.frame_index == 0


# --------------------------------------------------------------------------- bad input


def _error(path, frames="all") -> ScanReadError:
    with pytest.raises(ScanReadError) as info:
        list(read_frames(path, frames))
    error = info.value
    assert error.path == str(path)
    assert str(error) == f"cannot read {path}: {error.reason}"
    _no_phi(str(error))
    return error


def test_not_a_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image\n" * 20)
    assert "not a DICOM" in _error(path).reason


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in _error(tmp_path / "absent.dcm").reason
    assert "no such file" in _error(tmp_path / "absent").reason
    assert "directory" in _error(tmp_path).reason


def test_no_pixel_data(tmp_path):
    ds = base_dataset(False)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no image
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "SR"
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "PhotometricInterpretation"):
        if keyword in ds:
            delattr(ds, keyword)
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert "a DICOM Structured Report (modality SR), a result" in _error(path).reason
    del ds.Modality  # the class says what it is, though the file ends where pixels would begin
    ds.save_as(path, enforce_file_format=True)
    assert "a DICOM Structured Report (modality SR), a result" in _error(path).reason
    ds.Modality = "KO"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.save_as(path, enforce_file_format=True)
    assert "no pixel data (a DICOM Key Object Selection Document Storage object, not an image)" in _error(path).reason
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4"  # a class nobody names: in general terms
    ds.save_as(path, enforce_file_format=True)
    assert "no pixel data (a DICOM object without an image, modality KO)" in _error(path).reason
    # Each is a file read whole that holds no image, not a damaged one (batch counts it apart, and does not retry it).
    from ipp_seg.io import NotAnImageError

    assert isinstance(_error(path), NotAnImageError)


def test_a_suffix_holding_a_control_character_is_written_out_in_the_reason(tmp_path):
    # The reason goes into the CSV's error cell: a raw newline there split one row over two lines.
    (tmp_path / "notes.t\nxt").write_text("not a scan")
    (tmp_path / "photo.j\rpg").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    assert _error(tmp_path / "notes.t\nxt").reason.startswith("not a scan: a .t\\x0axt file without")
    assert "named .j\\x0dpg: rename it" in _error(tmp_path / "photo.j\rpg").reason


def test_a_dicomdir_is_named_as_the_index_of_an_export(tmp_path):
    from pydicom.fileset import FileSet

    image = write_dicom(tmp_path / "image.dcm", ramp_frames(1)[0], extra={
        "StudyDate": "20261205", "StudyTime": "101500", "StudyID": "1", "AccessionNumber": "", "SeriesNumber": 1,
        "InstanceNumber": 1})  # what a DICOMDIR's records need
    export = FileSet()
    export.add(pydicom.dcmread(image))
    export.write(tmp_path / "export")
    error = _error(tmp_path / "export" / "DICOMDIR")
    assert error.reason.startswith("a DICOMDIR, the index of a CD or USB export, not an image")
    assert type(error).__name__ == "NotAnImageError"


def test_image_header_cut_off_before_its_pixels_is_called_truncated(tmp_path):
    path = write_dicom(tmp_path / "cut.dcm", ramp_frames(1))
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])  # up to the Pixel Data tag
    assert _error(path).reason == ("no Pixel Data: the file ends before its pixel data (cut short, or written without "
                                   "its image)")
    assert type(_error(path)).__name__ == "ScanReadError"  # a copy cut short: tried again on resume


def test_pixel_data_of_more_frames_than_the_header_declares_is_said(tmp_path, caplog):
    # A research midwife's pass: a cine whose Number of Frames was one too few, or missing, lost the end of a push
    # without a word (the opposite, a count one too many, failed the missing frame).
    import pydicom

    frames = ramp_frames(4)
    path = write_dicom(tmp_path / "cine.dcm", frames)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 3
    ds.save_as(tmp_path / "short.dcm")
    del ds.NumberOfFrames
    ds.save_as(tmp_path / "none.dcm")
    with caplog.at_level("WARNING", logger="ipp_seg"):
        assert len(list(read_frames(tmp_path / "short.dcm"))) == 3
        assert len(list(read_frames(tmp_path / "none.dcm"))) == 1
        assert len(list(read_frames(path))) == 4
    said = " ".join(caplog.text.split())
    assert "short.dcm: its pixel data holds 1 whole frame(s) more than its header declares (Number of Frames 3)" in said
    assert "none.dcm: its pixel data holds 3 whole frame(s) more than its header declares (no Number of Frames: 1 " \
        "frame)" in said
    assert "cine.dcm" not in said


def test_truncated_native_pixel_data(tmp_path):
    frames = ramp_frames(4)  # 3,072 bytes each
    path = write_dicom(tmp_path / "cut.dcm", frames)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])  # two whole frames and part of a third
    # The frames the data holds are read, and the first it lacks is named: the cine was refused whole.
    read = []
    with pytest.raises(ScanReadError, match="frame 2 is missing: the pixel data ends after 2 of the 4 frames"):
        for frame in read_frames(path):
            read.append(frame)
    assert [f.frame_index for f in read] == [0, 1] and all(f.n_frames == 4 for f in read)
    assert all(np.array_equal(f.pixels, frames[f.frame_index]) for f in read)
    assert np.array_equal(read_frame(path, 1).pixels, frames[1])
    assert _error(path, 3).reason.startswith("frame 3 is missing")
    assert [f.frame_index for f in read_frames(path, range(1, 2))] == [1]
    with pytest.raises(ScanReadError, match="frame 2 is missing"):
        list(read_frames(path, range(1, 4)))
    assert count_frames(path) == 4  # what the header declares: the missing frames get their rows
    # Data short of even one frame is refused whole, as a still image's is.
    path.write_bytes(data[: len(data) - 4 * 3072 + 100])
    assert "truncated pixel data" in _error(path).reason
    still = write_dicom(tmp_path / "still.dcm", frames[0])
    still.write_bytes(still.read_bytes()[:-100])
    assert "truncated pixel data (2972 of 3072 bytes for 1 frame(s))" in _error(still).reason


def test_a_cine_one_frame_short_is_measured_but_for_its_missing_frame(tmp_path):
    """A Number of Frames one too many (an encoder's off-by-one): each frame present gets its
    row, and the declared last one a failed row saying it is missing."""
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(3))
    element = b"\x28\x00\x08\x00IS\x02\x003 "
    assert element in path.read_bytes()
    path.write_bytes(path.read_bytes().replace(element, b"\x28\x00\x08\x00IS\x02\x004 "))
    read = []
    with pytest.raises(ScanReadError, match="frame 3 is missing: the pixel data ends after 3 of the 4 frames") as info:
        for frame in read_frames(path):
            read.append(frame)
    assert [f.frame_index for f in read] == [0, 1, 2]
    uids = read[0].provenance
    assert info.value.dicom_uids == (uids.sop_instance_uid, uids.study_instance_uid, uids.series_instance_uid)
    assert all(info.value.dicom_uids)  # the missing frame's row joins the study as the others do


def test_truncated_encapsulated_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "cut.dcm", ramp_frames(4), syntax=RLELossless)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    assert "truncated pixel data" in _error(path).reason


@pytest.mark.parametrize("keep", [200, 400])  # inside the file meta, inside the data set
def test_truncated_header(tmp_path, keep):
    path = write_dicom(tmp_path / "cut.dcm", ramp_frames(1), regions=[region_item(0, 0, 10, 10)])
    path.write_bytes(path.read_bytes()[:keep])
    reason = _error(path).reason
    assert "damaged or truncated" in reason or "the file ends before its pixel data" in reason


def test_corrupt_compressed_frame_fails_during_iteration(tmp_path):
    frames = ramp_frames(3)
    path = write_dicom(tmp_path / "bad.dcm", frames, syntax=JPEGLSLossless)
    ds = pydicom.dcmread(path)
    from pydicom.encaps import encapsulate, generate_frames

    fragments = list(generate_frames(ds.PixelData, number_of_frames=3))
    fragments[1] = b"\xff\xd8" + b"\x00" * 200 + b"\xff\xd9"  # not a JPEG-LS code stream
    ds.PixelData = encapsulate(fragments)
    ds.save_as(path, enforce_file_format=True)
    iterator = read_frames(path)
    np.testing.assert_array_equal(next(iterator).pixels, frames[0])
    with pytest.raises(DamagedFrameError) as info:
        next(iterator)
    assert "frame 1 is damaged: its JPEG-LS Lossless Image Compression data does not decode" in info.value.reason
    assert info.value.frame_index == 1 and info.value.n_frames == 3
    # One line a user can read: not each decoder plugin's message on its own line, no object reprs.
    assert "\n" not in info.value.reason and " at 0x" not in info.value.reason
    # Each frame coded apart: the frames after it are read (a caller reads on, as batch does).
    np.testing.assert_array_equal(read_frame(path, 2).pixels, frames[2])


def test_syntax_without_any_decoder(tmp_path):
    path = write_dicom(tmp_path / "video.dcm", ramp_frames(1)[0])
    ds = pydicom.dcmread(path)
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.save_as(path, enforce_file_format=True)
    reason = _error(path).reason
    assert "unsupported transfer syntax" in reason and "MPEG-4" in reason


def test_missing_plugin_names_the_pip_package(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "jpeg.dcm", ramp_frames(1)[0], syntax=JPEGBaseline8Bit)
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    reason = _error(path).reason
    assert "pip install python-gdcm" in reason and "JPEG Baseline" in reason


def test_missing_plugin_j2k_hint(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "j2k.dcm", ramp_frames(1)[0], syntax=JPEG2000Lossless)
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in _error(path).reason


def test_spectral_only_regions(tmp_path):
    regions = [region_item(0, 0, 63, 47, None, spatial_format=3, data_type=3)]
    reason = _error(write_dicom(tmp_path / "doppler.dcm", ramp_frames(1)[0], regions=regions)).reason
    assert "spectral Doppler" in reason and "no 2-D" in reason


def test_spectral_only_image_type(tmp_path):
    path = write_dicom(tmp_path / "pw.dcm", ramp_frames(1)[0], extra={"ImageType": ["ORIGINAL", "PRIMARY", "", "0008"]})
    assert "PW Doppler only" in _error(path).reason
    assert type(_error(path)).__name__ == "OtherModalityError"  # (not unreadable: a resume would read it again)


def test_3d_rendering_image_type(tmp_path):
    extra = {"ImageType": ["DERIVED", "PRIMARY", "", "0040"]}  # 3-D rendering only
    path = write_dicom(tmp_path / "render.dcm", ramp_frames(1)[0], extra=extra)
    assert "3-D rendering" in _error(path).reason and type(_error(path)).__name__ == "OtherModalityError"


def test_2d_plus_doppler_is_accepted(tmp_path):
    extra = {"ImageType": ["ORIGINAL", "PRIMARY", "", "0009"]}  # 2-D imaging + PW Doppler
    assert read_frame(write_dicom(tmp_path / "duplex.dcm", ramp_frames(1)[0], extra=extra)).pixels.shape == (48, 64)


def test_3d_volume_sop_class(tmp_path):
    path = write_dicom(tmp_path / "vol.dcm", ramp_frames(3), multi_frame=True)
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.2"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(path, enforce_file_format=True)
    assert "3-D ultrasound volume" in _error(path).reason and type(_error(path)).__name__ == "OtherModalityError"
    assert _error(path).dicom_uids[0] == ds.SOPInstanceUID  # the header was read: its row joins its study


def test_frame_out_of_range_error(tmp_path):
    path = write_dicom(tmp_path / "one.dcm", ramp_frames(1)[0])
    assert "source has 1" in _error(path, 3).reason


def test_no_phi_in_logs(tmp_path, caplog):
    regions = [region_item(0, 0, 30, 47, (0.02, 0.02)), region_item(31, 0, 63, 47, (0.04, 0.04)),
               region_item(200, 200, 300, 300)]
    path = write_dicom(tmp_path / "phi.dcm", ramp_frames(2), regions=regions)
    with caplog.at_level(logging.DEBUG, logger="ipp_seg"):
        list(read_frames(path, spacing_mm=(1.0, 1.0)))
    assert caplog.records
    for record in caplog.records:
        _no_phi(record.getMessage())


def test_error_pickles():
    error = ScanReadError("/x/y.dcm", "no pixel data")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.reason, str(clone)) == (error.path, error.reason, str(error))


# --------------------------------------------------------------------------- vendor files

VENDOR_FILES = [
    "US1_J2KR.dcm",  # GE, JPEG 2000 lossless, YBR_RCT, no regions
    "OBXXXX1A.dcm",  # Philips, explicit LE, PALETTE COLOR, one 2-D region + a waveform region
    "OBXXXX1A_rle_2frame.dcm",  # the same, RLE, two frames
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # Philips, JPEG lossless SV1
    "color3d_jpeg_baseline.dcm",  # SonoSite, JPEG baseline YBR_FULL_422, 120 frames
    "gdcm-US-ALOKA-16.dcm",  # Aloka, implicit LE, 16-bit PALETTE COLOR, dual view
]


def _vendor(name: str) -> str:
    from pydicom.data import get_testdata_file

    # No download: the files come from the pydicom-data dev dependency (module data_store).
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not found: install the dev dependency pydicom-data")
    return path


def _region_spacings_from_file(path: str) -> list[tuple[float, float]]:
    """Independent reading of the region sequence: 2-D tissue regions in cm -> mm."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [
        (float(r.PhysicalDeltaX) * 10, float(r.PhysicalDeltaY) * 10)
        for r in ds.get("SequenceOfUltrasoundRegions", [])
        if r.RegionSpatialFormat == 1 and r.RegionDataType == 1 and r.PhysicalUnitsXDirection == 3
    ]


def _reference_grey(path: str, index: int) -> np.ndarray:
    """pydicom's own decoding of one frame, reduced to luma."""
    from pydicom.pixels import apply_color_lut, pixel_array

    ds = pydicom.dcmread(path)
    arr = pixel_array(path, index=index)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) * (255.0 / np.iinfo(rgb.dtype).max)
    if arr.ndim == 3:
        return grey_of(arr).astype(np.float64)
    return arr.astype(np.float64)


@pytest.mark.parametrize("name", VENDOR_FILES)
def test_vendor_file_decodes_with_region_spacing(name):
    path = _vendor(name)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    n_frames = int(header.get("NumberOfFrames") or 1)
    assert count_frames(path) == n_frames
    frames = list(read_frames(path))
    assert len(frames) == n_frames
    for index in {0, n_frames - 1}:
        frame = frames[index]
        assert frame.pixels.shape == (header.Rows, header.Columns)
        assert frame.pixels.dtype in (np.uint8, np.float32)
        assert frame.pixels.std() > 1  # real image content, not a blank
        np.testing.assert_allclose(frame.pixels, _reference_grey(path, index), atol=0.01)
    expected = _region_spacings_from_file(path)
    frame = frames[0]
    if expected:
        assert frame.spacing_mm == pytest.approx(expected[0], rel=1e-9)
        assert [r.spacing_mm for r in frame.regions] == [pytest.approx(s, rel=1e-9) for s in expected]
    else:
        assert frame.spacing_mm is None  # GE US1: no regions, no pixel spacing
    assert frame.provenance.sop_instance_uid == header.SOPInstanceUID


def test_vendor_spacing_values():
    # The values in the files' region sequences, in cm, times 10.
    assert read_frame(_vendor("OBXXXX1A.dcm")).spacing_mm == pytest.approx((0.2622878766196998, 0.2622878766196998))
    assert read_frame(_vendor("JPGLosslessP14SV1_1s_1f_8b.dcm")).spacing_mm == pytest.approx((0.25476696592378157,) * 2)
    assert read_frame(_vendor("color3d_jpeg_baseline.dcm")).spacing_mm == pytest.approx((0.5104970559477806,) * 2)
    aloka = read_frame(_vendor("gdcm-US-ALOKA-16.dcm"))
    assert aloka.spacing_mm == pytest.approx((0.3826530650258064,) * 2)
    assert [(r.x0, r.x1) for r in aloka.regions] == [(32, 336), (336, 640)]  # dual view


def test_vendor_big_endian_palette_matches_little_endian():
    little = read_frame(_vendor("OBXXXX1A.dcm")).pixels
    big = read_frame(_vendor("OBXXXX1A_expb.dcm")).pixels
    np.testing.assert_array_equal(little, big)


# --------------------------------------------------------------------------- memory


def _large_native_cine(path: Path, n: int, h: int, w: int) -> None:
    ds = base_dataset(True)
    # One frame pattern, shifted by the frame number, so that order can be checked.
    base = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 200).astype(np.uint8)
    ds.set_pixel_data(np.zeros((2, h, w), np.uint8), "MONOCHROME2", 8)
    ds.NumberOfFrames = n
    ds.PixelData = b"".join((base + k % 50).tobytes() for k in range(n))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def test_large_cine_is_read_frame_by_frame(tmp_path):
    n, h, w = 300, 512, 512
    path = tmp_path / "cine.dcm"
    _large_native_cine(path, n, h, w)
    total = n * h * w
    assert path.stat().st_size > total

    tracemalloc.start()
    try:
        count = 0
        for frame in read_frames(path):
            assert frame.pixels[0, 0] == frame.frame_index % 50
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    # A handful of frames at most (each 256 KiB), never the 75 MiB clip.
    assert peak < total / 20, f"peak {peak / 2**20:.1f} MiB while iterating a {total / 2**20:.0f} MiB cine"


def test_large_compressed_cine_is_read_frame_by_frame(tmp_path):
    n, h, w = 120, 256, 256
    frames = np.stack([((np.arange(h)[:, None] * (k % 7 + 1) + np.arange(w)[None, :]) % 256) for k in range(n)])
    path = write_dicom(tmp_path / "rle.dcm", frames.astype(np.uint8), syntax=RLELossless)
    del frames
    total = n * h * w
    tracemalloc.start()
    try:
        indices = [frame.frame_index for frame in read_frames(path)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert indices == list(range(n))
    assert peak < total / 10, f"peak {peak / 2**20:.1f} MiB for a {total / 2**20:.1f} MiB clip"


def test_an_empty_file_or_a_loop_of_links_is_named_as_such(tmp_path):
    from ipp_seg.io import ScanReadError, read_frame

    (tmp_path / "zero.dcm").write_bytes(b"")
    with pytest.raises(ScanReadError, match="the file is empty"):
        read_frame(tmp_path / "zero.dcm")
    (tmp_path / "loop1.dcm").symlink_to(tmp_path / "loop2.dcm")
    (tmp_path / "loop2.dcm").symlink_to(tmp_path / "loop1.dcm")
    with pytest.raises(ScanReadError, match="a loop of links"):
        read_frame(tmp_path / "loop1.dcm")
    (tmp_path / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    with pytest.raises(ScanReadError, match="a broken link"):
        read_frame(tmp_path / "gone.dcm")


def test_an_image_named_dcm_says_what_it_is_and_what_reads_it(tmp_path, sample_png):
    # A PACS engineer's pass: a PNG saved as .dcm was only "not a DICOM file (no 'DICM' marker at byte 128)".
    from ipp_seg.io import ScanReadError, read_frame

    (tmp_path / "png.dcm").write_bytes(sample_png.read_bytes())
    cv2.imwrite(str(tmp_path / "jpeg.jpg"), cv2.imread(str(sample_png)))
    (tmp_path / "jpeg.jpg").rename(tmp_path / "jpeg.dcm")
    for name, said in (("png.dcm", "its content is a PNG image, not DICOM: rename it .png to read it"),
                       ("jpeg.dcm", "its content is a JPEG image, not DICOM: rename it .jpg to read it")):
        with pytest.raises(ScanReadError, match=said):
            read_frame(tmp_path / name)
    (tmp_path / "other.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(ScanReadError, match="not a DICOM file"):
        read_frame(tmp_path / "other.dcm")


def test_a_dicom_file_cut_within_its_preamble_says_it_is_too_short(tmp_path, sample_dicom):
    from ipp_seg.io import ScanReadError, read_frame

    (tmp_path / "cut.dcm").write_bytes(sample_dicom.read_bytes()[:100])
    with pytest.raises(ScanReadError, match="only 100 bytes: too short for a DICOM file"):
        read_frame(tmp_path / "cut.dcm")


def test_a_calibration_the_header_holds_but_cannot_give_is_named_in_a_warning(tmp_path, caplog):
    # A malformed Pixel Spacing, a region "in cm" with a zero delta, or a region far larger than the image (an image
    # resized after calibration) had all been taken silently: the row said spacing_unknown, or gave wrong millimetres.
    import logging

    pixels = ramp_frames(1)[0]
    cases = [
        (write_dicom(tmp_path / "spacing.dcm", pixels, extra={"PixelSpacing": ["0", "0.2"]}), "its Pixel Spacing is "
         "present but not two positive numbers"),
        (write_dicom(tmp_path / "zero.dcm", pixels, regions=[region_item(0, 0, 31, 31, (0.0, 0.02))]),
         "is calibrated in cm but its Physical Delta X/Y are not two finite non-zero numbers"),
        (write_dicom(tmp_path / "resized.dcm", pixels, regions=[region_item(0, 0, 4 * pixels.shape[1] - 1,
                                                                             4 * pixels.shape[0] - 1)]),
         "px beyond the image: the image was resized or cropped after the scanner described it, so no calibration "
         "of the file is used (no distance in mm"),
    ]
    for path, said in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ipp_seg"):
            frame = read_frame(path)
        assert said in " ".join(caplog.text.split()), (path.name, caplog.text)
        # A PACS engineer's pass: the resized export's HSD had gone into a DICOM SR in mm, status ok.
        assert frame.spacing_mm is None and all(r.spacing_mm is None for r in frame.regions), path.name
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):  # one past the edge, as some scanners write it: silent
        edge = read_frame(write_dicom(tmp_path / "edge.dcm", pixels, regions=[region_item(0, 0, pixels.shape[1],
                                                                                          pixels.shape[0])]))
    assert "beyond the image" not in caplog.text and edge.spacing_mm is not None


def test_a_pixel_spacing_beside_a_region_calibrated_for_another_image_is_not_taken(tmp_path, caplog):
    # A reader's review: an export halved in size kept its region and the Pixel Spacing copied from it; the region
    # was dropped, the Pixel Spacing taken, and the HSD given at half its length with status ok (and a --spacing-mm
    # given for it ignored as "the file's own calibration").
    import logging

    from ipp_seg.io import read_frame

    pixels = ramp_frames(1)[0]
    far = region_item(0, 0, 2 * pixels.shape[1] - 1, 2 * pixels.shape[0] - 1)
    path = write_dicom(tmp_path / "halved.dcm", pixels, regions=[far], extra={"PixelSpacing": ["0.35", "0.35"]})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frame = read_frame(path)
    assert frame.spacing_mm is None and frame.spacing_source is None
    assert "its Pixel Spacing is not used either" in " ".join(caplog.text.split())
    given = read_frame(path, spacing_mm=(0.7, 0.7))
    assert given.spacing_mm == (0.7, 0.7) and given.spacing_source == "given"
    # Any region beyond the image says it was resized or cropped since (a QA pass): a region without a centimetre
    # calibration, or a Doppler box beyond it beside a tissue region that still fits, whose calibration is the whole
    # image's as much, takes the Pixel Spacing away and every region's calibration.
    uncalibrated = region_item(0, 0, 2 * pixels.shape[1] - 1, 2 * pixels.shape[0] - 1, None)
    plain = read_frame(write_dicom(tmp_path / "plain.dcm", pixels, regions=[uncalibrated],
                                   extra={"PixelSpacing": ["0.35", "0.35"]}))
    assert plain.spacing_mm is None
    fitting = region_item(0, 0, pixels.shape[1] // 2, pixels.shape[0] // 2)
    doppler = region_item(0, 0, 2 * pixels.shape[1] - 1, 2 * pixels.shape[0] - 1, data_type=2)
    mixed = read_frame(write_dicom(tmp_path / "mixed.dcm", pixels, regions=[fitting, doppler],
                                   extra={"PixelSpacing": ["0.35", "0.35"]}))
    assert mixed.spacing_mm is None and all(region.spacing_mm is None for region in mixed.regions)
    # A region one pixel past the edge, as some scanners write it, is no sign of that.
    edge = region_item(0, 0, pixels.shape[1], pixels.shape[0])
    assert read_frame(write_dicom(tmp_path / "edge.dcm", pixels, regions=[edge])).spacing_mm is not None


def test_a_dicom_that_cannot_be_opened_is_worded_as_every_reader_words_it(sample_dicom, monkeypatch):
    # "permission denied" here, "cannot open the file (Permission denied)" for a PNG or MHA alike.
    # (Tests may run as root, whom no mode stops: the refusal is stood in for.)
    import builtins
    import errno

    import ipp_seg.io.dicom as dicom_module

    def refused(path, *args, **kwargs):
        if os.fspath(path) == str(sample_dicom):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(dicom_module, "open", refused, raising=False)
    with pytest.raises(ScanReadError, match=r"cannot open the file \(Permission denied\)"):
        dicom_module.inspect_dicom(sample_dicom)


def test_uids_that_are_no_uids_never_reach_a_frames_provenance(tmp_path):
    # A damaged header's text (a patient's name, here) had reached the CSV and JSON as the SOP
    # Instance UID; the Study and Series UIDs were already left out so.
    path = write_dicom(tmp_path / "damaged.dcm", ramp_frames(1)[0])
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.StudyInstanceUID = "MUSTERMANN.ERIKA"
    with warnings.catch_warnings():  # (pydicom warns of the invalid UIDs it is given)
        warnings.simplefilter("ignore")
        ds.save_as(path)
    provenance = read_frame(path).provenance
    assert (provenance.sop_instance_uid, provenance.study_instance_uid) == (None, None)
    good = read_frame(write_dicom(tmp_path / "good.dcm", ramp_frames(1)[0])).provenance
    assert good.sop_instance_uid and set(good.sop_instance_uid) <= set("0123456789.")


# --------------------------------------------------------------------------- cine frame times


_FRAME_TIME_TAG, _FRAME_TIME_VECTOR_TAG = pydicom.tag.Tag(0x0018, 0x1063), pydicom.tag.Tag(0x0018, 0x1065)


@pytest.mark.parametrize(("extra", "expected"), [
    # The nominal time per frame, as the Frame Increment Pointer names it.
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 40}, [0.0, 40.0, 80.0, 120.0]),
    # The increments before each frame (the first frame's 0): summed, each to 0.001 ms.
    ({"FrameIncrementPointer": _FRAME_TIME_VECTOR_TAG, "FrameTimeVector": [0, 33.3, 33.4, 33.35]},
     [0.0, 33.3, 66.7, 100.05]),
    # A first increment other than 0 (a writer that gave every frame its duration): times count from the first frame.
    ({"FrameIncrementPointer": _FRAME_TIME_VECTOR_TAG, "FrameTimeVector": [25, 25, 25, 50]}, [0.0, 25.0, 50.0, 100.0]),
    # Both given: the pointer decides, whichever is first in the header.
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 20, "FrameTimeVector": [0, 30, 30, 30]},
     [0.0, 20.0, 40.0, 60.0]),
    ({"FrameIncrementPointer": _FRAME_TIME_VECTOR_TAG, "FrameTime": 20, "FrameTimeVector": [0, 30, 30, 30]},
     [0.0, 30.0, 60.0, 90.0]),
    # No pointer (or one naming something else): the vector, which gives each frame its own, before the nominal time
    # it agrees with (see below for two that disagree).
    ({"FrameTime": 30, "FrameTimeVector": [0, 30, 30, 30.2]}, [0.0, 30.0, 60.0, 90.2]),
    ({"FrameIncrementPointer": pydicom.tag.Tag(0x0018, 0x2002), "FrameTime": 20}, [0.0, 20.0, 40.0, 60.0]),
    # Neither: no time, never a guessed one; nor from one left empty (anonymised), which is no timing, said or not.
    ({}, [None] * 4),
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": None}, [None] * 4),
    ({"FrameTime": None, "FrameTimeVector": [0, 25, 25, 25]}, [0.0, 25.0, 50.0, 75.0]),
])
def test_a_cine_frame_has_its_time_after_the_first_frame_from_the_cine_module(tmp_path, caplog, extra, expected):
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(4), extra=extra)
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert [f.provenance.frame_time_ms for f in read_frames(path)] == expected
    assert "given no time" not in caplog.text
    # Each frame asked alone has the time it has in the whole cine.
    assert read_frame(path, 2).provenance.frame_time_ms == expected[2]


def test_a_single_frame_has_no_cine_time(tmp_path):
    path = write_dicom(tmp_path / "still.dcm", ramp_frames(1)[0], extra={"FrameTime": 40})
    assert read_frame(path).provenance.frame_time_ms is None


@pytest.mark.parametrize(("extra", "said"), [
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 0}, "Frame Time gives a time between frames that is not a "
                                                                 "positive number of ms up to an hour"),
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": -33.3}, "Frame Time gives a time between frames"),
    # A legal DS past any frame time: had given 1e308 ms, then Infinity, which no strict JSON reader takes.
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": "1e308"}, "Frame Time gives a time between frames"),
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": [33, 33]}, "Frame Time holds 2 values"),
    # Frames closer than the 0.001 ms the times are rounded to: they would read as taken at one time.
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 0.0001}, "puts frames less than 0.001 ms apart"),
    ({"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 0.0009}, "puts frames less than 0.001 ms apart"),
    ({"FrameIncrementPointer": _FRAME_TIME_VECTOR_TAG, "FrameTimeVector": [0, 40, 40]},
     "Frame Time Vector holds 3 value(s) for 4 frames"),
    ({"FrameIncrementPointer": _FRAME_TIME_VECTOR_TAG, "FrameTimeVector": [0, 40, 0, 40]},
     "Frame Time Vector gives a time between frames"),
    ({"FrameIncrementPointer": _FRAME_TIME_VECTOR_TAG, "FrameTimeVector": [0, 40, -40, 40]},
     "Frame Time Vector gives a time between frames"),
    # Two timings that disagree, and no pointer to say which holds: neither (a vendor's 40 ms beside 10 ms steps).
    ({"FrameTime": 40, "FrameTimeVector": [0, 10, 10, 10]}, "Frame Time and Frame Time Vector give other times (such "
                                                            "as 40.0 and 10.0 ms for frame 1)"),
])
def test_a_cine_time_that_cannot_be_right_is_left_out_and_said_as_its_frames_are_read(tmp_path, caplog, extra, said):
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(4), extra=extra)
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert count_frames(path) == 4
    assert not caplog.text  # (a resume counts a done cine's frames: said when they are read, not every time)
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        frames = list(read_frames(path))
    assert [f.provenance.frame_time_ms for f in frames] == [None] * 4
    assert said in caplog.text and "given no time" in caplog.text and str(path) in caplog.text
    assert [f.pixels.shape for f in frames] == [(48, 64)] * 4  # the frames themselves are read as ever


def test_two_timings_that_agree_or_a_pointer_that_decides_give_times(tmp_path, caplog):
    # A nominal Frame Time beside a vector of slightly uneven steps is one timing: the vector's, each frame its own.
    path = write_dicom(tmp_path / "a.dcm", ramp_frames(4), extra={"FrameTime": 40, "FrameTimeVector": [0, 39.8, 40.3,
                                                                                                       40]})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert [f.provenance.frame_time_ms for f in read_frames(path)] == [0.0, 39.8, 80.1, 120.1]
    # A pointer that names both: the first it names.
    path = write_dicom(tmp_path / "b.dcm", ramp_frames(4), extra={
        "FrameIncrementPointer": [_FRAME_TIME_TAG, _FRAME_TIME_VECTOR_TAG], "FrameTime": 40,
        "FrameTimeVector": [0, 10, 10, 10]})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert [f.provenance.frame_time_ms for f in read_frames(path)] == [0.0, 40.0, 80.0, 120.0]
    # A pointer that names one the header lacks: the other, the header's only timing.
    path = write_dicom(tmp_path / "c.dcm", ramp_frames(4), extra={"FrameIncrementPointer": _FRAME_TIME_TAG,
                                                                  "FrameTimeVector": [0, 10, 10, 10]})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert [f.provenance.frame_time_ms for f in read_frames(path)] == [0.0, 10.0, 20.0, 30.0]
    # 0.1 ms apart (ultrafast imaging) is a timing, kept to the 0.001 ms it is rounded to.
    path = write_dicom(tmp_path / "d.dcm", ramp_frames(4), extra={"FrameTime": 0.1})
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert [f.provenance.frame_time_ms for f in read_frames(path)] == [0.0, 0.1, 0.2, 0.3]
    assert not caplog.text


def test_a_frame_time_that_is_no_number_is_left_out_and_said(tmp_path, caplog):
    path = write_dicom(tmp_path / "cine.dcm", ramp_frames(3), extra={"FrameIncrementPointer": _FRAME_TIME_TAG})
    ds = pydicom.dcmread(path)
    # Written raw, as a damaged header holds it (pydicom refuses to set such a DS).
    ds.add(pydicom.dataelem.RawDataElement(_FRAME_TIME_TAG, "DS", 4, b"abc ", 0, False, True))
    ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger="ipp_seg"):
        assert [f.provenance.frame_time_ms for f in read_frames(path)] == [None] * 3
    assert "Frame Time holds a value that is no number" in caplog.text


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless])
def test_every_s_th_frame_of_a_cine_is_read_as_itself_with_its_time(tmp_path, syntax):
    frames = ramp_frames(7)
    path = write_dicom(tmp_path / "cine.dcm", frames, syntax=syntax,
                       extra={"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 25})
    read = list(read_frames(path, "all/3"))
    assert [f.frame_index for f in read] == [0, 3, 6]
    for frame in read:
        np.testing.assert_array_equal(frame.pixels, frames[frame.frame_index])
        assert frame.provenance.frame_number == frame.frame_index + 1 and frame.n_frames == 7
    assert [f.provenance.frame_time_ms for f in read] == [0.0, 75.0, 150.0]
    assert [f.frame_index for f in read_frames(path, "1-5/2")] == [1, 3, 5]
    assert [f.frame_index for f in read_frames(path, "4-end/2")] == [4, 6]
    # Indices as analysis code holds them, in numpy.
    assert [f.frame_index for f in read_frames(path, np.int64(2))] == [2] and read_frame(path, np.int64(5)).n_frames == 7


def test_a_frame_that_cannot_be_read_says_its_place_in_the_cine_through_pickling(tmp_path):
    # A library user's pass: multiprocessing pickles exceptions, and the frame's count, index and provenance were lost.
    frames = ramp_frames(5)
    path = write_dicom(tmp_path / "cine.dcm", frames, extra={"FrameIncrementPointer": _FRAME_TIME_TAG, "FrameTime": 40})
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 2 * frames[0].size - frames[0].size // 2])  # 2.5 frames held
    with pytest.raises(ScanReadError) as info:
        list(read_frames(path, "all/2"))  # frames 0, 2 (missing), 4
    error = info.value
    for copy in (error, pickle.loads(pickle.dumps(error)), error.with_uids(("1.2.3", None, None))):
        assert type(copy) is type(error) and copy.reason == error.reason
        assert (copy.n_frames, copy.frame_index) == (5, 2)
        assert (copy.frame_provenance.frame_number, copy.frame_provenance.frame_time_ms) == (3, 80.0)
    assert error.with_uids(("1.2.3", None, None)).dicom_uids == ("1.2.3", None, None)
    damaged = DamagedFrameError(path, "frame 1 is damaged", frame_index=1)
    damaged.n_frames = 5
    again = pickle.loads(pickle.dumps(damaged))
    assert (type(again), again.frame_index, again.n_frames) == (DamagedFrameError, 1, 5)


def test_a_display_window_is_applied_to_the_rescaled_values(tmp_path):
    # A QA pass: stored 4*g with Rescale Intercept 1000 and a window over 1000-2020 had read black (frame_dark,
    # ps_missing): the window had been applied to the stored values.
    shown = ramp_frames(1)[0]
    stored = shown.astype(np.uint16) * 4
    frame = read_frame(write_dicom(tmp_path / "r.dcm", stored, extra={
        "WindowCenter": 1510, "WindowWidth": 1021, "RescaleIntercept": 1000, "RescaleSlope": 1}))
    np.testing.assert_allclose(frame.pixels, shown.astype(np.float32), atol=0.5)
    doubled = read_frame(write_dicom(tmp_path / "s.dcm", stored // 2, extra={
        "WindowCenter": 1510, "WindowWidth": 1021, "RescaleIntercept": 1000, "RescaleSlope": 2}))
    np.testing.assert_allclose(doubled.pixels, shown.astype(np.float32), atol=0.5)

