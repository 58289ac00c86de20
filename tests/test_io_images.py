"""PNG/JPEG/BMP/TIFF (OpenCV), MetaImage/NRRD/NIfTI (SimpleITK) and the writers."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from ipp_seg.io import (
    NotAnImageError,
    ScanReadError,
    count_frames,
    read_frame,
    read_frames,
    write_label_mha,
    write_label_png,
    write_overlay_png,
)


def scene(h: int = 40, w: int = 56) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx * 4 + yy * 3) % 256).astype(np.uint8)


def colour_scene(h: int = 40, w: int = 56) -> np.ndarray:
    """BGR, as OpenCV stores it."""
    grey = scene(h, w)
    return np.dstack([grey, 255 - grey, (grey // 3 + 40).astype(np.uint8)])


def save(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    ok, encoded = cv2.imencode(path.suffix, image, params or [])
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


# --------------------------------------------------------------------------- OpenCV formats


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_grey_8bit(tmp_path, suffix):
    grey = scene()
    frame = read_frame(save(tmp_path / f"g{suffix}", grey))
    assert frame.pixels.dtype == np.uint8
    np.testing.assert_array_equal(frame.pixels, grey)
    assert frame.spacing_mm is None and frame.regions == () and frame.imaging_region is None
    assert (frame.frame_index, frame.n_frames) == (0, 1)
    assert frame.provenance.source_format == "image"
    assert frame.provenance.sop_instance_uid is None and frame.provenance.frame_number is None


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff"])
def test_colour_becomes_luminance(tmp_path, suffix):
    bgr = colour_scene()
    frame = read_frame(save(tmp_path / f"c{suffix}", bgr))
    np.testing.assert_array_equal(frame.pixels, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


@pytest.mark.parametrize("suffix", [".png", ".tiff", ".jpg"])
def test_a_frame_drawn_on_in_colour_says_where(tmp_path, suffix):
    # Yellow calipers on an exported frame read as bright tissue in grey: the frame keeps where they are, for
    # marks_over_anatomy. A grey frame stored as colour, or one shown in a tinted palette, has none.
    grey = scene(80, 120)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    quality = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else []
    assert read_frame(save(tmp_path / f"grey{suffix}", bgr, quality)).colour_marks is None
    sepia = np.clip(bgr * np.array([0.8, 0.9, 1.05]), 0, 255).astype(np.uint8)  # (BGR: blue least)
    assert read_frame(save(tmp_path / f"sepia{suffix}", sepia, quality)).colour_marks is None
    drawn = bgr.copy()
    cv2.line(drawn, (10, 40), (110, 40), (0, 255, 255), 3)  # yellow
    frame = read_frame(save(tmp_path / f"drawn{suffix}", drawn, quality))
    assert frame.colour_marks is not None and frame.colour_marks.shape == frame.pixels.shape
    assert frame.colour_marks[39:42, 14:106].mean() > 0.9  # the line
    assert not frame.colour_marks[:30].any() and not frame.colour_marks[52:].any()  # nothing else
    # The grey frame is what it was: luma, whatever its marks.
    np.testing.assert_array_equal(read_frame(tmp_path / f"drawn{suffix}").pixels, frame.pixels)


@pytest.mark.parametrize("quality", [20, 50, 75, 90])
def test_a_tinted_frame_compressed_as_jpeg_has_no_colour_marks(tmp_path, sample_png, quality):
    # The chroma a JPEG's compression smears across a sepia or blue frame's edges had read as marks: 21 of 24
    # sepia validation frames at quality 75 were given marks_over_anatomy (a QA pass), and, with a second rule,
    # strongly tinted palettes with an offset still at quality 30-75 (a second QA pass). Calipers on them count.
    grey = read_frame(sample_png).pixels.astype(np.float32)
    for gain, offset in (((0.70, 0.86, 1.05), (0, 0, 0)), ((1.05, 0.9, 0.75), (0, 0, 0)),  # BGR: sepia, blue
                         ((0.6, 0.82, 1.0), (0, 8, 20)), ((1.0, 0.8, 0.55), (25, 10, 0))):  # strong sepia, blue
        tinted = np.clip(grey[..., None] * np.array(gain) + np.array(offset), 0, 255).astype(np.uint8)
        tint = (gain, offset)
        path = save(tmp_path / f"tinted{quality}.jpg", tinted, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert read_frame(path).colour_marks is None, tint
        cv2.line(tinted, (40, 60), (200, 60), (0, 255, 255), 2)  # yellow
        path = save(tmp_path / f"drawn{quality}.jpg", tinted, [cv2.IMWRITE_JPEG_QUALITY, quality])
        marks = read_frame(path).colour_marks
        assert marks[55:66, 40:201].sum() >= 160 and marks.sum() == marks[50:71, 32:209].sum(), tint  # (its smear)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_alpha_is_dropped(tmp_path, suffix):
    bgr = colour_scene()
    alpha = np.where(scene() > 128, 255, 0).astype(np.uint8)
    frame = read_frame(save(tmp_path / f"a{suffix}", np.dstack([bgr, alpha])))
    np.testing.assert_array_equal(frame.pixels, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_16bit_grey_is_float_on_0_255(tmp_path, suffix):
    deep = (scene().astype(np.uint16) * 257 + 3).astype(np.uint16)
    frame = read_frame(save(tmp_path / f"d{suffix}", deep))
    assert frame.pixels.dtype == np.float32
    np.testing.assert_allclose(frame.pixels, deep * (255.0 / 65535.0), rtol=1e-6)


def test_16bit_colour(tmp_path):
    bgr16 = colour_scene().astype(np.uint16) * 256
    frame = read_frame(save(tmp_path / "c16.png", bgr16))
    assert frame.pixels.dtype == np.float32
    expected = cv2.cvtColor(bgr16, cv2.COLOR_BGR2GRAY) * (255.0 / 65535.0)
    np.testing.assert_allclose(frame.pixels, expected, atol=1e-3)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_grey_and_colour(tmp_path, suffix):
    grey = scene()
    frame = read_frame(save(tmp_path / f"g{suffix}", grey, [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == grey.shape
    assert np.abs(frame.pixels.astype(int) - grey).mean() < 4
    bgr = colour_scene()
    frame = read_frame(save(tmp_path / f"c{suffix}", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert frame.pixels.ndim == 2
    assert np.abs(frame.pixels.astype(int) - cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).mean() < 5


def test_a_jpeg_whose_data_does_not_decode_whole_is_refused(tmp_path, sample_png):
    # Bytes changed mid-stream into a marker no JPEG has (0xFF 0x5D): libjpeg stopped there, and OpenCV gave the
    # frame with the rest filled grey, warning on stderr only; it was measured as sound (an API integrator's pass:
    # AoP 1.3 deg, HSD 21 % off). (Damage that libjpeg only warns of, within the entropy-coded data, still reads.)
    ok, encoded = cv2.imencode(".jpg", read_frame(sample_png).pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = bytearray(encoded.tobytes())
    good = save(tmp_path / "good.jpg", read_frame(sample_png).pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    middle = len(data) // 2
    data[middle:middle + 8] = b"\xff\x5d\x12\x34\x56\x78\x9a\xbc"
    (tmp_path / "damaged.jpg").write_bytes(bytes(data))
    (tmp_path / "cut.jpg").write_bytes(encoded.tobytes()[: len(data) * 9 // 10])
    for name in ("damaged.jpg", "cut.jpg"):
        with pytest.raises(ScanReadError, match="damaged JPEG: its compressed data does not decode whole"):
            read_frame(tmp_path / name)
    assert read_frame(good).pixels.shape == read_frame(sample_png).pixels.shape  # a sound one reads as before


@pytest.mark.parametrize("colour", [False, True])
def test_a_jpeg_whose_data_ends_before_the_image_is_refused(tmp_path, sample_png, colour):
    # An end-of-image, restart or comment marker inside the entropy-coded data: libjpeg (Pillow's and OpenCV's)
    # decodes what comes before, fills the rest with flat grey 128 and says so on stderr alone. A QA pass had such
    # a frame measured as sound (142.5 deg for 147.1), its lower part grey.
    pixels = read_frame(sample_png).pixels
    image = cv2.applyColorMap(pixels, cv2.COLORMAP_BONE) if colour else pixels
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    scan_start = data.index(b"\xff\xda") + 2 + int.from_bytes(data[data.index(b"\xff\xda") + 2:][:2], "big")
    cut = (scan_start + len(data)) // 2
    for name, damaged in (("ended.jpg", data[:cut] + b"\xff\xd9"),  # cut short, closed with EOI
                          ("comment.jpg", data[:cut] + b"\xff\xfe\x00\x04ab" + data[cut:]),
                          ("restart.jpg", data[:cut] + b"\xff\xd3" + data[cut:])):
        (tmp_path / name).write_bytes(damaged)
        with pytest.raises(ScanReadError, match=r"damaged JPEG: its compressed data ends before the image does "
                                                r"\(its last \d+ 8 x 8 blocks decode as the flat grey 128"):
            read_frame(tmp_path / name)
    (tmp_path / "whole.jpg").write_bytes(data)
    assert read_frame(tmp_path / "whole.jpg").pixels.shape == pixels.shape


def test_grey_fill_blocks_counts_the_blocks_a_jpeg_ends_in():
    from ipp_seg.io.images import grey_fill_blocks

    frame = np.zeros((20, 36), np.uint8)  # 3 x 5 blocks, the last row and column partial
    assert grey_fill_blocks(frame) == 0
    frame[16:, 8:] = 128  # the last four blocks of the last block row (partial ones: their pixels alone)
    assert grey_fill_blocks(frame) == 4
    frame[8:16, 24:] = 128  # the last two of the row before: not after the last row's first block
    assert grey_fill_blocks(frame) == 4
    frame[16:, :8] = 128  # the whole last row, and those two
    assert grey_fill_blocks(frame) == 7
    frame[19, 35] = 127
    assert grey_fill_blocks(frame) == 0  # one pixel off the fill: not a decoder's fill
    colour = np.full((16, 16, 3), 128, np.uint8)
    assert grey_fill_blocks(colour) == 4
    colour[0, 0, 2] = 129
    assert grey_fill_blocks(colour) == 3


def test_jpeg_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40), np.uint8)
    image[:, :10] = 255  # a bright band on the left
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    # An APP1 Exif segment with Orientation = 6 (display rotated 90 degrees clockwise).
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    frame = read_frame(path)
    assert frame.pixels.shape == (40, 20)
    assert frame.pixels[:8].min() > 200 and frame.pixels[14:].max() < 60  # the band is now on top


def test_multipage_tiff_reads_first_page_with_warning(tmp_path, caplog):
    pages = [scene(), 255 - scene()]
    ok, encoded = cv2.imencodemulti(".tiff", pages)
    assert ok
    path = tmp_path / "pages.tiff"
    path.write_bytes(encoded.tobytes())
    with caplog.at_level(logging.WARNING, logger="ipp_seg.io"):
        frame = read_frame(path)
    np.testing.assert_array_equal(frame.pixels, pages[0])
    assert any("2 pages" in r.getMessage() for r in caplog.records)


def test_user_spacing_for_images(tmp_path):
    path = save(tmp_path / "g.png", scene())
    frame = read_frame(path, spacing_mm=(0.2, 0.25))
    assert frame.spacing_mm == (0.2, 0.25)
    assert frame.spacing_at(3, 3) == (0.2, 0.25)
    assert frame.spacing_source == "given"
    assert read_frame(path).spacing_source is None
    for bad in [(0, 0.2), (-1, 1), (float("nan"), 1), (0.2,), "0.2", "12", (True, True)]:
        with pytest.raises(ValueError):
            read_frame(path, spacing_mm=bad)


def test_image_frame_choice(tmp_path):
    path = save(tmp_path / "g.png", scene())
    assert count_frames(path) == 1
    assert [f.frame_index for f in read_frames(path, "0")] == [0]
    assert [f.frame_index for f in read_frames(path, "all")] == [0]
    with pytest.raises(ScanReadError, match=r"source has 1 frame \(frame 0\)"):
        read_frames(path, 1)


def test_a_webp_under_a_png_name_is_refused_unread(tmp_path, monkeypatch):
    # OpenCV would decode it, but no header check sized it first (a WebP can declare 16383 x 16383).
    ok, webp = cv2.imencode(".webp", np.full((40, 50), 128, np.uint8))
    assert ok and webp[8:12].tobytes() == b"WEBP"
    path = tmp_path / "saved-from-browser.png"
    path.write_bytes(webp.tobytes())
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ScanReadError, match="its content is a WebP image, not the .png its name says"):
        read_frame(path)


def test_files_of_one_format_named_as_another_say_what_they_hold(tmp_path, sample_png):
    # A batch operator's pass: an MHA named .png read "not a PNG, JPEG, BMP or TIFF image", a PNG named .mha "its
    # MetaImage header has no NDims...", an empty .mha the same, where a PNG named .dcm was named for what it is.
    import SimpleITK as sitk

    from ipp_seg.io import read_frames

    volumes = {}
    for suffix in (".mha", ".nii", ".nrrd"):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(tmp_path / f"v{suffix}"))
        volumes[suffix] = (tmp_path / f"v{suffix}").read_bytes()
    dicom = (Path(__file__).resolve().parents[1] / "sample_data" / "psfhs_04700_us.dcm").read_bytes()
    cases = [("mha.png", volumes[".mha"], "its content is a MetaImage, not the .png its name says: rename it .mha"),
             ("nii.jpg", volumes[".nii"], "its content is a NIfTI image, not the .jpg its name says: rename it .nii"),
             ("nrrd.png", volumes[".nrrd"], "its content is a NRRD image, not the .png its name says: rename it .nrrd"),
             ("png.mha", sample_png.read_bytes(), "its content is a PNG image, not the .mha its name says: rename it "
                                                  ".png to read it"),
             ("png.nrrd", sample_png.read_bytes(), "its content is a PNG image, not the .nrrd its name says"),
             ("dicom.nii", dicom, "a DICOM file named .nii: rename it .dcm"),
             ("empty.mha", b"", "the file is empty"), ("empty.nii.gz", b"", "the file is empty"),
             # (A QA pass: a plain NIfTI named .nii.gz read as "cut short", volumes named as one another by ITK's
             # words, a MetaImage named .dcm as "no 'DICM' marker".)
             ("plain.nii.gz", volumes[".nii"], "its content is an uncompressed NIfTI image, not the gzip-compressed "
                                               "one its .nii.gz name says: rename it .nii"),
             ("packed.nii", gzip.compress(volumes[".nii"]), "its content is gzip-compressed (a compressed NIfTI?), "
                                                           "not the .nii its name says: rename it .nii.gz"),
             ("text.nii.gz", b"a note\n", "its content is not gzip-compressed, as its .nii.gz name says"),
             ("nrrd.mha", volumes[".nrrd"], "its content is a NRRD image, not the .mha its name says: rename it .nrrd"),
             ("mha.nrrd", volumes[".mha"], "its content is a MetaImage, not the .nrrd its name says: rename it .mha"),
             ("nii.mha", volumes[".nii"], "its content is a NIfTI image, not the .mha its name says: rename it .nii"),
             ("mha.dcm", volumes[".mha"], "its content is a MetaImage, not DICOM: rename it .mha")]
    for name, content, said in cases:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ScanReadError) as refused:
            list(read_frames(tmp_path / name))
        assert said in str(refused.value), (name, str(refused.value))
    for suffix, content in volumes.items():  # (each under its own name reads as ever)
        (tmp_path / f"own{suffix}").write_bytes(content)
        assert len(list(read_frames(tmp_path / f"own{suffix}"))) == 1


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged PNG"),  # a signature, then no valid chunk
        ("empty.jpg", b"", "empty"),
        ("text.bmp", b"hello", "not a PNG, JPEG, BMP or TIFF image"),
        ("anim.png", b"GIF89a" + b"\x00" * 40, "its content is a GIF image, not the .png its name says"),
        ("page.jpg", b"%PDF-1.7" + b"\x00" * 40, "its content is a PDF document"),
        ("frame.png", b"\x00" * 128 + b"DICM" + b"\x00" * 40, "a DICOM file named .png: rename it .dcm"),
        ("frame.tif", b"P5\n30000 30000\n255\n", "its content is a PNM"),
        # A file of another kind beside the scans (notes, a table, a report) is no scan at all,
        # counted apart from damaged scans; an image or a name without a suffix (or a UID's
        # numeric one) under no name ipp-seg takes may be a scan: unreadable, saying why.
        ("scan.xyz", b"hello", "not a scan: a .xyz file without a DICOM marker or an image format"),
        ("README.txt", b"", "not a scan: a .txt file"),
        ("results.csv", b"file,frame\n", "not a scan: a .csv file"),
        ("scan.jpg2", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "its content is a PNG image, named .jpg2: rename it .png"),
        ("scan.gz", b"\x1f\x8b\x08" + b"\x00" * 40, "unsupported file type .gz"),
        ("IM_0001", b"hello", "unsupported file type (no suffix) and no DICOM marker"),
        ("1.2.840.99.7", b"hello", "unsupported file type .7 and no DICOM marker"),
        ("IM_0001.IMA", b"\x00" * 40, "unsupported file type .ima and no DICOM marker"),  # a Siemens DICOM name
        # An empty file under a scan's name says so, as an empty .dcm or .png does (it had read "unsupported").
        ("IM_0001.IMA", b"", "the file is empty"),
        ("EMPTY0001", b"", "the file is empty"),
    ],
)
def test_bad_images(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ScanReadError) as info:
        read_frame(path)
    assert expected in info.value.reason
    assert info.value.path == str(path)
    assert isinstance(info.value, NotAnImageError) is expected.startswith("not a scan")


def test_missing_image(tmp_path):
    with pytest.raises(ScanReadError, match="no such file"):
        read_frame(tmp_path / "gone.png")
    with pytest.raises(ScanReadError, match="no such file"):
        count_frames(tmp_path / "gone.png")


# --------------------------------------------------------------------------- ITK formats


def write_itk(path: Path, array: np.ndarray, spacing=None, vector: bool = False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz", ".nii"])
def test_itk_2d_with_spacing(tmp_path, suffix):
    grey = scene(30, 50)
    frame = read_frame(write_itk(tmp_path / f"img{suffix}", grey, spacing=(0.3, 0.45)))
    np.testing.assert_array_equal(frame.pixels, grey)
    assert frame.spacing_mm == pytest.approx((0.3, 0.45))  # ITK spacing is already (x, y)
    assert frame.spacing_source == "image_header"
    assert frame.provenance.source_format == "itk"


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz"])
def test_itk_direction_that_flips_the_frame_is_named(tmp_path, suffix, caplog):
    # Pixels are measured as stored; a file whose direction cosines flip them is named, since the
    # PS's inferior end (the right-hand end as displayed) may then be on the other side.
    grey = scene(30, 50)
    image = sitk.GetImageFromArray(grey)
    image.SetDirection((-1.0, 0.0, 0.0, 1.0))
    flipped = tmp_path / f"flipped{suffix}"
    sitk.WriteImage(image, str(flipped))
    with caplog.at_level("WARNING", logger="ipp_seg.io.itk"):
        np.testing.assert_array_equal(read_frame(flipped).pixels, grey)
        read_frame(write_itk(tmp_path / f"plain{suffix}", grey))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(flipped)]
    assert "direction cosines" in caplog.text


def test_itk_float_frame_with_nan_outside_the_field_of_view(tmp_path):
    # Resampled volumes mark pixels outside the field of view as NaN; one NaN made the whole
    # normalised frame NaN (read as "no PS, no FH").
    grey = scene(30, 50).astype(np.float32)
    grey[:3] = np.nan
    frame = read_frame(write_itk(tmp_path / "nan.mha", grey))
    assert np.isfinite(frame.pixels).all() and (frame.pixels[:3] == np.nanmin(grey)).all()
    np.testing.assert_array_equal(frame.pixels[3:], grey[3:])
    # +inf is saturated brightness: the brightest finite value, not black as NaN is (an inference review).
    grey[3, :5], grey[4, :5] = np.inf, -np.inf
    saturated = read_frame(write_itk(tmp_path / "inf.mha", grey)).pixels
    assert (saturated[3, :5] == np.nanmax(grey[np.isfinite(grey)])).all()
    assert (saturated[4, :5] == np.nanmin(grey[np.isfinite(grey)])).all()
    with pytest.raises(ScanReadError, match="finite"):
        read_frame(write_itk(tmp_path / "all_nan.mha", np.full((30, 50), np.nan, np.float32)))


def test_itk_unit_spacing_is_unknown(tmp_path):
    frame = read_frame(write_itk(tmp_path / "img.mha", scene()))
    assert frame.spacing_mm is None and frame.spacing_source is None
    frame = read_frame(tmp_path / "img.mha", spacing_mm=(0.4, 0.4))
    assert frame.spacing_mm == (0.4, 0.4) and frame.spacing_source == "given"


def test_itk_calibration_beats_user_spacing(tmp_path, caplog):
    path = write_itk(tmp_path / "img.mha", scene(), spacing=(0.3, 0.3))
    with caplog.at_level(logging.WARNING, logger="ipp_seg.io"):
        frame = read_frame(path, spacing_mm=(0.5, 0.5))
    assert frame.spacing_mm == pytest.approx((0.3, 0.3)) and frame.spacing_source == "image_header"
    assert caplog.records


def test_psfhs_layout_is_one_frame(tmp_path):
    grey = scene(64, 64)
    path = write_itk(tmp_path / "case.mha", np.stack([grey, grey, grey]))
    assert sitk.ReadImage(str(path)).GetSize() == (64, 64, 3)
    assert count_frames(path) == 1
    frames = list(read_frames(path))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, grey)
    assert frames[0].spacing_mm is None and frames[0].n_frames == 1


@pytest.mark.parametrize("repeated", [True, False])
def test_small_itk_volumes_are_read_from_disk_once(tmp_path, monkeypatch, repeated):
    """The plane comparison already reads a small volume; its frames come from that read."""
    planes = np.stack([scene(32, 48) + (0 if repeated else k) for k in range(3)]).astype(np.uint8)
    path = write_itk(tmp_path / "case.mha", planes)
    reads = []  # pixel reads (sitk.ReadImage goes through ImageFileReader.Execute too)
    real_execute = sitk.ImageFileReader.Execute
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: (reads.append(1), real_execute(self))[1])
    frames = list(read_frames(path))
    assert len(reads) == 1
    assert len(frames) == (1 if repeated else 3)
    for frame in frames:
        np.testing.assert_array_equal(frame.pixels, planes[frame.frame_index])


def test_itk_stack_of_different_planes_is_a_cine(tmp_path):
    planes = np.stack([scene(32, 48) + k for k in range(4)]).astype(np.uint8)
    path = write_itk(tmp_path / "cine.mha", planes, spacing=(0.2, 0.2, 1.0))
    assert count_frames(path) == 4
    out = list(read_frames(path, "1-2"))
    assert [f.frame_index for f in out] == [1, 2]
    np.testing.assert_array_equal(out[1].pixels, planes[2])
    assert out[0].spacing_mm == pytest.approx((0.2, 0.2))
    # A cine of integers wider than 8 bits: every frame on its type's range, whatever each holds (a QA pass: a frame
    # whose values reached 1100 had read at a quarter of the brightness of one that stayed under 255).
    deep = np.stack([scene(32, 48), scene(32, 48)]).astype(np.uint16)
    deep[1, :3, :3] = 1100
    frames = list(read_frames(write_itk(tmp_path / "deep_cine.mha", deep)))
    np.testing.assert_allclose(frames[0].pixels[5:, 5:], frames[1].pixels[5:, 5:])
    np.testing.assert_allclose(frames[0].pixels, deep[0] * (255.0 / 65535.0), rtol=1e-6)


@pytest.mark.parametrize("repeated", [False, True])
def test_itk_large_volumes_are_read_a_plane_at_a_time(tmp_path, monkeypatch, repeated):
    import ipp_seg.io.itk as itk_module

    monkeypatch.setattr(itk_module, "_WHOLE_READ_BYTES", 0)  # treat every volume as large
    planes = np.stack([scene(32, 48) + (0 if repeated else k) for k in range(3)]).astype(np.uint8)
    path = tmp_path / "big.mha"
    # Uncompressed: a compressed volume is read whole (ITK would inflate it from the start for each plane).
    sitk.WriteImage(sitk.GetImageFromArray(planes), str(path), useCompression=False)
    reads = []
    real_execute = sitk.ImageFileReader.Execute
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: (reads.append(1), real_execute(self))[1])
    frames = list(read_frames(path))
    assert len(reads) > 1
    assert len(frames) == (1 if repeated else 3)
    for frame in frames:
        np.testing.assert_array_equal(frame.pixels, planes[frame.frame_index])


def test_itk_rgb_and_16bit(tmp_path):
    rgb = colour_scene()[:, :, ::-1].copy()  # ITK stores RGB
    frame = read_frame(write_itk(tmp_path / "rgb.mha", rgb, vector=True))
    np.testing.assert_array_equal(frame.pixels, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    deep = scene().astype(np.uint16) * 100
    frame = read_frame(write_itk(tmp_path / "deep.mha", deep))
    np.testing.assert_allclose(frame.pixels, deep * (255.0 / 65535.0), rtol=1e-6)
    # Integers wider than 8 bits state no Bits Stored: read on the fewest bits that hold them (a reader's review: an
    # 8-bit frame saved as int16 had read as a flat grey of 127.5-128.5), on the type's range where any is negative.
    eight = read_frame(write_itk(tmp_path / "int16.mha", scene().astype(np.int16)))
    np.testing.assert_array_equal(eight.pixels, scene())
    twelve = read_frame(write_itk(tmp_path / "twelve.mha", scene().astype(np.uint16) * 16))
    np.testing.assert_allclose(twelve.pixels, scene() * (16 * 255.0 / 4095.0), rtol=1e-6)
    below = scene().astype(np.int16) - 100
    signed = read_frame(write_itk(tmp_path / "signed.mha", below))
    np.testing.assert_allclose(signed.pixels, (below + 32768.0) * (255.0 / 65535.0), rtol=1e-5)


def test_itk_float_passes_through(tmp_path):
    values = scene().astype(np.float32) / 7.0
    frame = read_frame(write_itk(tmp_path / "f.mha", values))
    assert frame.pixels.dtype == np.float32
    np.testing.assert_array_equal(frame.pixels, values)


def test_bad_itk(tmp_path):
    path = tmp_path / "broken.mha"
    path.write_text("ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    with pytest.raises(ScanReadError) as info:
        list(read_frames(path))
    assert info.value.path == str(path)
    volume = tmp_path / "4d.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 2, 2], sitk.sitkUInt8), str(volume))
    with pytest.raises(ScanReadError, match="4-D"):
        read_frame(volume)


def test_real_psfhs_frame(psfhs_dir):
    path = psfhs_dir / "image_mha" / "04700.mha"
    frame = read_frame(path)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert expected.shape == (3, 256, 256)
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (256, 256)
    np.testing.assert_array_equal(frame.pixels, expected[0])
    assert frame.spacing_mm is None  # ElementSpacing 1 1 1: resized, no calibration
    assert frame.n_frames == 1 and count_frames(path) == 1


# --------------------------------------------------------------------------- writers


def label_mask(h: int = 30, w: int = 44) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[5:12, 30:40] = 1
    mask[14:28, 4:26] = 2
    return mask


def test_label_png_round_trip(tmp_path):
    mask = label_mask()
    path = tmp_path / "out" / "sub" / "labels.png"  # parents are created
    write_label_png(path, mask.astype(np.int64))
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.shape == mask.shape
    np.testing.assert_array_equal(back, mask)
    from ipp_seg.evaluate.report import read_label_mask

    np.testing.assert_array_equal(read_label_mask(path)[0], mask)  # (as a mask; as a scan it is refused, below)


def test_the_pngs_ipp_seg_writes_say_so_and_are_refused_as_scans(tmp_path):
    # An acceptance pass: `predict --out` into the scans' folder left overlays a later batch measured as scans.
    from ipp_seg.io.images import PNG_SIGNATURE, ipp_seg_png_kind, png_structure_problem

    mask, overlay = tmp_path / "a_mask.png", tmp_path / "a_overlay.png"
    write_label_png(mask, label_mask())
    write_overlay_png(overlay, np.full((10, 12, 3), 90, np.uint8))
    assert (ipp_seg_png_kind(mask), ipp_seg_png_kind(overlay)) == ("label mask", "overlay")
    for path in (mask, overlay):
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and png_structure_problem(data) is None  # checksums right
        assert b"ipp-seg " in data[:120]  # the Software chunk names the version
        with pytest.raises(ScanReadError, match="that ipp-seg wrote, not a scan: give the scan it was made from"):
            read_frame(path)
    assert "an overlay that" in str(pytest.raises(ScanReadError, read_frame, overlay).value)
    assert cv2.imread(str(overlay)).shape == (10, 12, 3)  # other programs read it as before
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), np.full((10, 12), 90, np.uint8))
    assert ipp_seg_png_kind(plain) is None and read_frame(plain).pixels.shape == (10, 12)
    assert ipp_seg_png_kind(tmp_path / "none.png") is None


@pytest.mark.parametrize(
    "bad",
    [np.full((4, 4), 3, np.uint8), np.zeros((2, 4, 4), np.uint8), np.zeros((4, 4), np.float32),
     np.full((4, 4), -1, np.int16), np.zeros((0, 4), np.uint8)],
)
def test_label_writers_reject_bad_masks(tmp_path, bad):
    with pytest.raises(ValueError):
        write_label_png(tmp_path / "x.png", bad)
    with pytest.raises(ValueError):
        write_label_mha(tmp_path / "x.mha", bad)


def test_label_mha_round_trip(tmp_path):
    mask = label_mask()
    path = tmp_path / "labels.mha"
    write_label_mha(path, mask, spacing_mm=(0.3, 0.35))
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (mask.shape[1], mask.shape[0])
    assert image.GetSpacing() == pytest.approx((0.3, 0.35))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mask)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.pixels, mask)
    assert frame.spacing_mm == pytest.approx((0.3, 0.35))
    write_label_mha(tmp_path / "plain.mha", mask)
    assert read_frame(tmp_path / "plain.mha").spacing_mm is None


def test_overlay_png_is_rgb(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "overlay.png"
    write_overlay_png(path, rgb)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert tuple(bgr[0, 0]) == (0, 0, 200)
    with pytest.raises(ValueError):
        write_overlay_png(path, np.zeros((10, 12), np.uint8))
    with pytest.raises(ValueError):
        write_overlay_png(path, np.zeros((10, 12, 3), np.float32))


@pytest.mark.parametrize("suffix", [".MHA", ".Nrrd", ".NII.GZ"])
def test_itk_files_with_capital_suffixes_are_read(tmp_path, suffix):
    # ITK chooses its reader by the lower-case suffix; a Windows export's SCAN.MHA must open too.
    import SimpleITK as sitk

    pixels = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 251).astype(np.uint8)
    lower = tmp_path / f"scan{suffix.lower()}"
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(lower))
    upper = tmp_path / f"SCAN{suffix}"
    lower.rename(upper)
    np.testing.assert_array_equal(read_frame(upper).pixels, pixels)


def test_a_damaged_png_is_named_before_libpng_prints_its_own_lines(tmp_path, capfd):
    good = save(tmp_path / "good.png", scene(64, 64)).read_bytes()
    (tmp_path / "half.png").write_bytes(good[: len(good) // 2])  # a copy cut short
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # a byte changed in storage: its chunk's CRC fails
    (tmp_path / "crc.png").write_bytes(bytes(flipped))
    (tmp_path / "no_end.png").write_bytes(good[:-12])  # every chunk whole, the end chunk missing
    for name, words in (("half.png", "truncated"), ("crc.png", "fails its checksum"), ("no_end.png", "end chunk")):
        with pytest.raises(ScanReadError, match=words):
            read_frame(tmp_path / name)
    assert "libpng" not in capfd.readouterr().err
    assert read_frame(tmp_path / "good.png").pixels.shape == (64, 64)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_meta_image_cut_short_is_named_so(tmp_path, compressed):
    # ITK said "SimpleITK cannot read the pixels (Reason: Success)" and printed its own lines.
    rng = np.random.default_rng(0)
    path = tmp_path / "frame.mha"
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 255, (64, 80), dtype=np.uint8)), str(path),
                    useCompression=compressed)
    assert read_frame(path).pixels.shape == (64, 80)  # whole: read as before
    data = path.read_bytes()
    cut = tmp_path / "cut.mha"
    cut.write_bytes(data[: len(data) - 200])
    with pytest.raises(ScanReadError, match=r"the file is cut short: \d+ of the \d+ bytes of image data"):
        read_frame(cut)


@pytest.mark.parametrize("name", ["frame.nii", "frame.nii.gz", "cine.nii"])
def test_a_nifti_cut_short_is_refused_not_filled_with_zeros(tmp_path, name):
    # ITK fills what is missing with zeros and says nothing: a .nii.gz cut in half was measured `ok`.
    import gzip

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, 64, 80) if name.startswith("cine") else (64, 80), dtype=np.uint8)
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(path))
    assert read_frame(path).pixels.shape == (64, 80)  # whole: read as before
    data = path.read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    words = "its compressed data end before the stream does" if name.endswith(".gz") else r"\d+ of the \d+ bytes"
    with pytest.raises(ScanReadError, match=f"the file is cut short: {words}"):
        read_frame(cut)
    if name.endswith(".gz"):  # a whole gzip stream of too few bytes: counted as a .nii's are
        short = tmp_path / "short.nii.gz"
        short.write_bytes(gzip.compress(gzip.decompress(data)[:-500]))
        with pytest.raises(ScanReadError, match=r"the file is cut short: \d+ of the 5120 bytes"):
            read_frame(short)


def test_a_meta_image_cut_within_its_header_does_not_quote_a_stale_system_error(tmp_path, capfd):
    from ipp_seg.evaluate import read_label_mask

    path = tmp_path / "frame.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 80), np.uint8)), str(path))
    cut = tmp_path / "cut.mha"
    cut.write_bytes(path.read_bytes()[:150])
    with pytest.raises(ScanReadError) as caught:
        read_frame(cut)
    assert "Reason:" not in str(caught.value) and "damaged or incomplete" in str(caught.value)
    # Named before ITK reads it (a library user's pass: MetaIO printed "DimSize required and not defined" and more
    # on stderr itself), as a mask too (which had quoted ITK's source file).
    assert "its MetaImage header has no DimSize, ElementType, ElementDataFile" in str(caught.value)
    with pytest.raises(ScanReadError, match="its MetaImage header has no DimSize"):
        read_label_mask(cut)
    short = tmp_path / "short.mha"
    short.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ScanReadError, match=r"the file is cut short: \d+ of the 5120 bytes of image data"):
        read_label_mask(short)
    assert capfd.readouterr().err == ""


def test_a_meta_image_header_metaio_would_fail_on_is_named_without_its_lines(tmp_path, capfd):
    # A QA pass: field names in another case, DimSize before NDims, an empty DimSize still had MetaIO print its own
    # lines; and compressed data of no stated size, cut short, was read as whatever memory held.
    import re
    import zlib

    from ipp_seg.evaluate import read_label_mask

    pixels = np.arange(64 * 80, dtype=np.uint32).reshape(64, 80).astype(np.uint8)

    def header(lines: list[str]) -> bytes:
        return ("\n".join(lines) + "\n").encode()
    base = ["ObjectType = Image", "NDims = 2", "DimSize = 80 64", "ElementType = MET_UCHAR"]
    cases = {
        "lower.mha": (header([line.lower() for line in base] + ["elementdatafile = LOCAL"]) + pixels.tobytes(),
                      "(its NDims, DimSize, ElementType, ElementDataFile in another case: MetaImage field names are "
                      "case-sensitive)"),
        "order.mha": (header([base[0], base[2], base[1], base[3], "ElementDataFile = LOCAL"]) + pixels.tobytes(),
                      "gives DimSize before NDims"),
        "empty.mha": (header([*base[:2], "DimSize =", base[3], "ElementDataFile = LOCAL"]) + pixels.tobytes(),
                      "DimSize is not 2 whole numbers"),
    }
    packed = zlib.compress(pixels.tobytes())  # (ITK inflates it wrongly without CompressedDataSize, whole or cut)
    cases["unsized.mha"] = (header([*base, "CompressedData = True", "ElementDataFile = LOCAL"]) + packed,
                            "its compressed image data have no CompressedDataSize in the header")
    # (A second QA pass: a header with its fields in another case, in a file over 64 KiB, had been left to MetaIO;
    # "²" is a digit to str.isdigit; a .zraw of no stated size, cut short, was read as whatever memory held.)
    lower_big = header([base[0].lower(), "ndims = 2", "dimsize = 300 300", "elementtype = MET_UCHAR",
                        "elementdatafile = LOCAL"]) + np.zeros((300, 300), np.uint8).tobytes()
    cases["big_lower.mha"] = (lower_big, "in another case")
    cases["superscript.mha"] = (header([base[0], "NDims = \u00b2", base[2], base[3], "ElementDataFile = LOCAL"])
                                + pixels.tobytes(), "DimSize is not NDims whole numbers")
    (tmp_path / "z.zraw").write_bytes(packed[: len(packed) // 2])
    cases["z.mhd"] = (header([*base, "CompressedData = True", "ElementDataFile = z.zraw"]),
                      "its data file z.zraw is cut short: its compressed data give")
    # (A third QA pass: a size spelt in lower case, which ITK passes over, or of 0, which it takes for none, let a cut
    # .zraw through; damaged data in an .mha of a stated size were read as whatever memory held.)
    compressed = [*base, "CompressedData = True"]
    cases["lower_size.mhd"] = (header([*compressed, f"compresseddatasize = {len(packed)}", "ElementDataFile = z.zraw"]),
                               "spells CompressedDataSize in another case")
    cases["size0.mhd"] = (header([*compressed, "CompressedDataSize = 0", "ElementDataFile = z.zraw"]),
                          "its data file z.zraw is cut short")
    cases["garbage.mha"] = (header([*compressed, f"CompressedDataSize = {len(packed)}", "ElementDataFile = LOCAL"])
                            + bytes(reversed(packed)), "its compressed image data are damaged")
    # (A fourth QA pass: a byte changed inside the data still inflated to the full count; the stream's checksum,
    # at its end, says it is damaged.)
    tampered = bytearray(packed)
    tampered[18] ^= 0x08  # (one of the bits whose change keeps the stream's structure and length)
    cases["tampered.mha"] = (header([*compressed, f"CompressedDataSize = {len(tampered)}", "ElementDataFile = LOCAL"])
                             + bytes(tampered), "its compressed image data are damaged")
    # (A security review: a .mhd naming a file outside its folder had had that file measured and drawn as a scan,
    # one naming a pipe had hung the run, and a header past 64 KiB went unchecked to ITK.)
    (tmp_path / "scans").mkdir()
    (tmp_path / "outside.raw").write_bytes(pixels.tobytes())
    os.mkfifo(tmp_path / "scans" / "pipe.raw")
    outside = {"scans/absolute.mhd": (f"ElementDataFile = {tmp_path / 'outside.raw'}", "is not in the header's folder"),
               "scans/up.mhd": ("ElementDataFile = ../outside.raw", "is not in the header's folder"),
               "scans/pipe.mhd": ("ElementDataFile = pipe.raw", "is not a regular file"),
               "scans/list.mhd": ("ElementDataFile = LIST", "split over several files"),
               "scans/pattern.mhd": ("ElementDataFile = ../slice%d.raw 1 2 1", "split over several files")}
    cases.update({name: (header([*base, line]), said) for name, (line, said) in outside.items()})
    detached = "NRRD0004\ntype: unsigned char\ndimension: 2\nsizes: 80 64\nencoding: raw\ndata file: {}\n"
    cases.update({"scans/up.nhdr": (detached.format("../outside.raw").encode(), "is not in the header's folder"),
                  "scans/pipe.nhdr": (detached.format("pipe.raw").encode(), "is not a regular file"),
                  "scans/list.nhdr": (detached.format("slice%d.raw 1 2 1").encode(), "split over several files")})
    cases["long.mha"] = (header([*base, "Comment = " + "x" * (1 << 16), "ElementDataFile = LOCAL"]) + pixels.tobytes(),
                         "runs past 64 KiB")
    # (A QA pass: an ElementDataFile line across the 64 KiB mark had been checked for its part before it; "LoCaL",
    # which MetaIO takes for a file's name, for LOCAL; a NRRD header past 64 KiB or of CR line ends unchecked.)
    padded = header(base) + b"Comment = " + b"x" * ((1 << 16) - 20 - len(header(base)) - 11) + b"\n"
    cases["scans/across.mhd"] = (padded + b"ElementDataFile = ../outside.raw\n", "runs past 64 KiB")
    os.mkfifo(tmp_path / "scans" / "LoCaL")
    cases["scans/odd_case.mhd"] = (header([*base, "ElementDataFile = LoCaL"]), "is not a regular file")
    detached_head = "NRRD0004\ntype: unsigned char\ndimension: 2\nsizes: 80 64\n"
    cases["scans/long.nhdr"] = (detached_head.encode() + b"# comment\n" * 7000 + b"data file: ../outside.raw\n",
                                "NRRD header runs past")
    cases["scans/cr.nhdr"] = ((detached_head + "encoding: raw\ndata file: ../outside.raw\n").replace("\n", "\r")
                              .encode(), "is not in the header's folder")
    # (A second QA pass: headers MetaIO or ITK's NRRD reader read otherwise than a Python reading of them had a data
    # file outside the folder read, or a pipe waited on.)
    (tmp_path / "scans" / "good.raw").write_bytes(pixels.tobytes())
    strict = {"colon": (b"ElementDataFile: ../outside.raw\nElementDataFile = good.raw", "cannot read as Field = value"),
              "lower": (b"elementdatafile = good.raw\nElementDataFile = ../outside.raw", "in another case"),
              "nul": (b"ElementDataFile\0 = ../outside.raw\nElementDataFile = good.raw", "cannot read as Field"),
              "vt": (b"ElementDataFile\v = good.raw", "cannot read as Field = value"),
              "twice": (b"ElementType = MET_UCHAR\nElementDataFile = good.raw", "gives ElementType twice"),
              "second": (b"ElementDataFile = =../outside.raw", "a value opening with another separator"),
              "cr": (b"ElementDataFile = good\r/../../outside.raw", "cannot read as Field = value"),
              "local": (b"ElementDataFile = \vLOCAL", "cannot read as Field = value"),
              # (A third QA pass: a field short of its numbers, which MetaIO reads on from into the next line; a name
              # MetaIO cuts; none at all.)
              "short": (b"Offset = 0\nElementDataFile = good.raw\nElementDataFile = ../outside.raw",
                        "Offset is not 2 number(s)"),
              "empty_min": (b"ElementMin =\nElementDataFile = good.raw", "ElementMin is not 1 number(s)"),
              "long": (b"ElementDataFile = " + b"x" * 499, "499 bytes long"),
              "empty": (b"ElementDataFile =", "ElementDataFile is empty"),
              "again": (b"ElementDataFile = good.raw\nComment = ElementDataFile", "more than once")}
    cases.update({f"scans/strict_{name}.mhd": (header(base) + line + b"\n", said)
                  for name, (line, said) in strict.items()})
    nrrd = {"trailing": ("good.raw ", "ends with a blank"), "stdin": ("-", "is the standard input"),
            "nul": ("good.raw\0", "control characters"), "nbsp": ("\u00a0good.raw", "unusual spaces"),
            "empty": ("", "data file is empty")}
    cases.update({f"scans/strict_{name}.nhdr": (detached.format(value).encode(), said)
                  for name, (value, said) in nrrd.items()})
    for name, (data, said) in cases.items():
        (tmp_path / name).write_bytes(data)
        for read in (read_frame, read_label_mask):
            with pytest.raises(ScanReadError, match=re.escape(said)):
                read(tmp_path / name)
    (tmp_path / "scans" / "sub").mkdir()  # (a data file in a folder under the header's is read)
    (tmp_path / "scans" / "sub" / "in.raw").write_bytes(pixels.tobytes())
    (tmp_path / "scans" / "below.mhd").write_bytes(header([*base, "ElementDataFile = sub/in.raw"]))
    np.testing.assert_array_equal(read_label_mask(tmp_path / "scans" / "below.mhd")[0], pixels)
    (tmp_path / "scans" / "below.nhdr").write_text(detached.format("sub/in.raw"))
    np.testing.assert_array_equal(read_label_mask(tmp_path / "scans" / "below.nhdr")[0], pixels)
    # Names their readers take for one file are read: "listing.raw" (MetaIO's LIST is in capitals), a name with a space.
    (tmp_path / "scans" / "listing.raw").write_bytes(pixels.tobytes())
    (tmp_path / "scans" / "with space.raw").write_bytes(pixels.tobytes())
    (tmp_path / "scans" / "listing.mhd").write_bytes(header([*base, "ElementDataFile = listing.raw"]))
    (tmp_path / "scans" / "space.nhdr").write_text(detached.format("with space.raw"))
    # And headers they read alike: a byte-order mark, a header of exactly 64 KiB, a leading tab before a NRRD data file.
    (tmp_path / "scans" / "bom.mhd").write_bytes(b"\xef\xbb\xbf" + header([*base, "ElementDataFile = good.raw"]))
    start, last = header(base), b"ElementDataFile = good.raw"  # (no newline after it: the file ends there)
    room = (1 << 16) - len(start) - len(last)
    padding = b"".join(b"Comment = " + b"x" * (size - 11) + b"\n" for size in [90] * (room // 90 - 1)
                       + [90 + room % 90])  # (short lines: MetaIO reads no long one)
    (tmp_path / "scans" / "full.mhd").write_bytes(start + padding + last)
    assert (tmp_path / "scans" / "full.mhd").stat().st_size == 1 << 16
    (tmp_path / "scans" / "tab.nhdr").write_text(detached.format("\tgood.raw"))
    for name in ("listing.mhd", "space.nhdr", "bom.mhd", "full.mhd", "tab.nhdr"):
        np.testing.assert_array_equal(read_label_mask(tmp_path / "scans" / name)[0], pixels)
    (tmp_path / "whole.zraw").write_bytes(packed)  # whole, of no stated size: ITK reads it right
    (tmp_path / "whole.mhd").write_bytes(header([*base, "CompressedData = True", "ElementDataFile = whole.zraw"]))
    np.testing.assert_array_equal(read_label_mask(tmp_path / "whole.mhd")[0], pixels)
    sized = header([*base, "CompressedData = True", f"CompressedDataSize = {len(packed)}", "ElementDataFile = LOCAL"])
    (tmp_path / "sized.mha").write_bytes(sized + packed)
    np.testing.assert_array_equal(read_label_mask(tmp_path / "sized.mha")[0], pixels)
    assert capfd.readouterr().err == ""


# --------------------------------------------------------------------------- calibration units


def nrrd_header(fields: str, sizes: str = "56 40") -> str:
    return f"NRRD0004\n# a comment: ignored\ntype: unsigned char\ndimension: 2\nsizes: {sizes}\n{fields}encoding: raw\n"


@pytest.mark.parametrize(("unit", "mm"), [("cm", 10.0), ("m", 1000.0), ("um", 1e-3), ("mm", 1.0),
                                          ("millimeters", 1.0), ("", 1.0)])
def test_nrrd_space_units_are_converted_to_mm(tmp_path, unit, mm):
    # ITK drops NRRD's units: 0.035 cm per pixel read as 0.035 mm made the HSD 10 times too small.
    grey = scene()
    fields = f'space dimension: 2\nspace directions: (0.035,0) (0,0.045)\nspace units: "{unit}" "{unit}"\n'
    path = tmp_path / "scan.nrrd"
    path.write_bytes((nrrd_header(fields) + "\n").encode() + grey.tobytes())
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.pixels, grey)
    assert frame.spacing_mm == pytest.approx((0.035 * mm, 0.045 * mm))
    assert frame.spacing_source == "image_header"


def test_nrrd_axis_units_and_a_detached_header(tmp_path):
    # The older per-axis form (spacings + units), in a detached .nhdr beside its data file.
    grey = scene()
    (tmp_path / "scan.raw").write_bytes(grey.tobytes())
    fields = 'spacings: 0.03 0.04\nunits: "cm" "mm"\ndata file: scan.raw\n'
    (tmp_path / "scan.nhdr").write_text(nrrd_header(fields))
    frame = read_frame(tmp_path / "scan.nhdr")
    np.testing.assert_array_equal(frame.pixels, grey)
    assert frame.spacing_mm == pytest.approx((0.3, 0.04))


def test_nrrd_axis_units_skip_a_colour_axis(tmp_path):
    # units name every axis, RGB's first: x and y are the domain axes that follow it.
    grey = scene()
    rgb = np.ascontiguousarray(np.stack([grey] * 3, axis=-1))  # (rows, columns, 3): RGB fastest
    fields = 'kinds: RGB-color domain domain\nspacings: NaN 0.01 0.02\nunits: "" "cm" "cm"\n'
    header = nrrd_header(fields, sizes="3 56 40").replace("dimension: 2", "dimension: 3")
    (tmp_path / "rgb.nrrd").write_bytes((header + "\n").encode() + rgb.tobytes())
    frame = read_frame(tmp_path / "rgb.nrrd")
    assert frame.pixels.shape == (40, 56) and frame.spacing_mm == pytest.approx((0.1, 0.2))


@pytest.mark.parametrize("units", ['"furlong" "furlong"', '"cm" "mm"'])
def test_nrrd_unknown_or_mixed_space_units_leave_the_spacing_unknown(tmp_path, caplog, units):
    fields = f'space dimension: 2\nspace directions: (0.035,0) (0,0.035)\nspace units: {units}\n'
    path = tmp_path / "scan.nrrd"
    path.write_bytes((nrrd_header(fields) + "\n").encode() + scene().tobytes())
    with caplog.at_level(logging.WARNING, logger="ipp_seg.io"):
        frame = read_frame(path)
    assert frame.spacing_mm is None and frame.spacing_source is None
    assert "spacing is taken as unknown" in caplog.text and str(path) in caplog.text
    given = read_frame(path, spacing_mm=(0.2, 0.2))  # as for a file without a calibration
    assert given.spacing_mm == (0.2, 0.2) and given.spacing_source == "given"


@pytest.mark.parametrize(("code", "mm"), [(1, 1000.0), (2, 1.0), (3, 1e-3)])
def test_nifti_units_are_converted_by_itk_once(tmp_path, code, mm):
    # NIfTI's xyzt_units (byte 123: 1 metre, 2 mm, 3 micron): ITK converts them itself.
    path = write_itk(tmp_path / "scan.nii", scene(), spacing=(0.25, 0.5))
    data = bytearray(path.read_bytes())
    data[123] = code
    path.write_bytes(bytes(data))
    assert read_frame(path).spacing_mm == pytest.approx((0.25 * mm, 0.5 * mm), rel=1e-6)


def baseline_tiff(planes: np.ndarray, photometric: int, planar: int = 1) -> bytes:
    """An uncompressed little-endian TIFF of ``planes`` (samples, rows, columns), one strip per
    plane where they are stored apart (PlanarConfiguration 2), else one strip of them interleaved."""
    spp, rows, columns = planes.shape
    strips = [p.tobytes() for p in planes] if planar == 2 else [np.moveaxis(planes, 0, -1).tobytes()]
    n_entries = 10
    arrays_at = 8 + 2 + 12 * n_entries + 4  # the strips' offsets and byte counts, then the pixels
    data_at = arrays_at + (8 * len(strips) if len(strips) > 1 else 0)
    offsets = [data_at + sum(map(len, strips[:k])) for k in range(len(strips))]

    def value(v):  # (one LONG held in the entry, or the offset of several)
        return v if len(strips) == 1 else None

    entries = [(256, 3, 1, columns), (257, 3, 1, rows), (258, 3, 1, 8 * planes.dtype.itemsize), (259, 3, 1, 1),
               (262, 3, 1, photometric), (273, 4, len(strips), value(offsets[0]) or arrays_at), (277, 3, 1, spp),
               (278, 3, 1, rows), (279, 4, len(strips), value(len(strips[0])) or arrays_at + 4 * len(strips)),
               (284, 3, 1, planar)]
    head = b"II*\x00" + struct.pack("<IH", 8, n_entries)
    for tag, kind, count, v in entries:
        held = struct.pack("<HH", v, 0) if kind == 3 else struct.pack("<I", v)
        head += struct.pack("<HHI", tag, kind, count) + held
    head += struct.pack("<I", 0)
    if len(strips) > 1:
        head += struct.pack(f"<{len(strips)}I", *offsets) + struct.pack(f"<{len(strips)}I", *map(len, strips))
    return head + b"".join(strips)


def test_a_deep_tiff_stored_white_is_zero_reads_as_its_8_bit_twin_and_separate_planes_are_refused(tmp_path):
    # A reader's review: OpenCV inverts an 8-bit WhiteIsZero TIFF but not a 16-bit one (a negative, measured 34 deg
    # off), and reads a 16-bit TIFF of separate colour planes as its red plane thrice.
    from ipp_seg.io import ScanReadError, read_frame

    grey = np.full((1, 20, 30), 1000, np.uint16)
    grey[0, :5, :5] = 60000
    (tmp_path / "w16.tif").write_bytes(baseline_tiff(grey, 0))
    (tmp_path / "w8.tif").write_bytes(baseline_tiff((grey // 257).astype(np.uint8), 0))
    (tmp_path / "b16.tif").write_bytes(baseline_tiff(grey, 1))
    deep, shallow, upright = (read_frame(tmp_path / name).pixels for name in ("w16.tif", "w8.tif", "b16.tif"))
    assert deep[0, 0] < 30 and deep[-1, -1] > 240  # the bright block shown dark, as a viewer shows it
    np.testing.assert_allclose(deep, shallow, atol=1)
    np.testing.assert_allclose(deep, 255 - upright, atol=1e-3)
    colour = np.stack([grey[0], grey[0] // 2, grey[0] // 4])
    (tmp_path / "planes.tif").write_bytes(baseline_tiff(colour, 2, planar=2))
    with pytest.raises(ScanReadError, match=r"colour planes are stored apart \(PlanarConfiguration 2\)"):
        read_frame(tmp_path / "planes.tif")
    (tmp_path / "planes8.tif").write_bytes(baseline_tiff((colour // 257).astype(np.uint8), 2, planar=2))
    (tmp_path / "mixed8.tif").write_bytes(baseline_tiff((colour // 257).astype(np.uint8), 2))
    planes8, mixed8 = (read_frame(tmp_path / name).pixels for name in ("planes8.tif", "mixed8.tif"))
    np.testing.assert_array_equal(planes8, mixed8)


# --------------------------------------------------------------------------- EXIF orientation


def exif_tiff(orientation: int, order: str = "<") -> bytes:
    """TIFF-structured EXIF with one IFD entry, Orientation (0x0112, SHORT)."""
    mark = b"II*\x00" if order == "<" else b"MM\x00*"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return mark + struct.pack(order + "IH", 8, 1) + entry + struct.pack(order + "I", 0)


def png_with_exif(image: np.ndarray, tiff: bytes) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    data = encoded.tobytes()
    body = b"eXIf" + tiff
    chunk = struct.pack(">I", len(tiff)) + body + struct.pack(">I", zlib.crc32(body))
    return data[:33] + chunk + data[33:]  # after IHDR (8-byte signature + 25-byte chunk)


def jpeg_with_exif(image: np.ndarray, tiff: bytes) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    payload = b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def corner_scene() -> np.ndarray:
    image = np.full((40, 56), 60, np.uint8)
    image[:10, :14] = 255  # a bright block in the top-left corner, as stored
    image[-6:, :] = 0  # a dark band along the bottom
    return image


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_exif_orientation_is_applied_as_for_jpeg(tmp_path, orientation, order):
    # A PNG's eXIf orientation was ignored (the frame measured upside down for 3) where a JPEG's
    # was applied: both must give the frame as viewers show it.
    stored = corner_scene()
    (tmp_path / "o.png").write_bytes(png_with_exif(stored, exif_tiff(orientation, order)))
    (tmp_path / "o.jpg").write_bytes(jpeg_with_exif(stored, exif_tiff(orientation, order)))
    png, jpeg = read_frame(tmp_path / "o.png").pixels, read_frame(tmp_path / "o.jpg").pixels
    assert png.shape == jpeg.shape == ((40, 56) if orientation <= 4 else (56, 40))
    assert np.abs(png.astype(int) - jpeg).mean() < 3


def test_png_exif_orientation_turns_the_frame(tmp_path):
    stored = corner_scene()
    path = tmp_path / "turned.png"
    path.write_bytes(png_with_exif(stored, exif_tiff(3, ">")))  # big endian, as Pillow writes
    np.testing.assert_array_equal(read_frame(path).pixels, stored[::-1, ::-1])
    path.write_bytes(png_with_exif(stored, exif_tiff(6)))  # turned 90 degrees clockwise
    np.testing.assert_array_equal(read_frame(path).pixels, np.rot90(stored, -1))
    path.write_bytes(png_with_exif(stored, b"II*\x00" + b"\xff" * 4))  # unreadable EXIF: as stored
    np.testing.assert_array_equal(read_frame(path).pixels, stored)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_label_mask_with_an_exif_orientation_is_turned_as_its_scan(tmp_path, orientation):
    from ipp_seg.evaluate import read_label_mask

    labels = np.zeros((40, 56), np.uint8)
    labels[:10, :14] = 1
    labels[20:, 30:] = 2
    scan = np.where(labels > 0, 200, 40).astype(np.uint8)
    (tmp_path / "scan.png").write_bytes(png_with_exif(scan, exif_tiff(orientation)))
    (tmp_path / "mask.png").write_bytes(png_with_exif(labels, exif_tiff(orientation)))
    frame = read_frame(tmp_path / "scan.png").pixels
    mask, _ = read_label_mask(tmp_path / "mask.png")
    assert mask.shape == frame.shape and np.array_equal(mask > 0, frame > 100)
    assert set(np.unique(mask)) == {0, 1, 2}


@pytest.mark.parametrize("name", ["phone.png", "phone.tif", "phone.bmp"])
def test_a_jpeg_under_another_suffix_keeps_its_orientation(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(jpeg_with_exif(corner_scene(), exif_tiff(6)))
    pixels = read_frame(path).pixels
    assert pixels.shape == (56, 40)
    assert np.abs(pixels.astype(int) - np.rot90(corner_scene(), -1)).mean() < 3


# --------------------------------------------------------------------------- MetaImage data files


def test_a_meta_image_header_whose_data_file_is_missing_or_short_names_it(tmp_path, capfd):
    # ITK printed "MetaImage: Read: Cannot open data file" and ipp-seg said only "damaged or incomplete".
    header = tmp_path / "pair.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(scene()), str(header))
    assert read_frame(header).pixels.shape == (40, 56)  # whole: read as before
    raw = tmp_path / "pair.raw"
    data = raw.read_bytes()
    raw.write_bytes(data[:1000])
    with pytest.raises(ScanReadError, match=r"its data file pair\.raw is cut short: 1000 of the 2240 bytes"):
        read_frame(header)
    raw.unlink()
    with pytest.raises(ScanReadError, match=r"its data file pair\.raw \(ElementDataFile\) is missing"):
        read_frame(header)
    assert "MetaImage" not in capfd.readouterr().err
    # A HeaderSize before the data counts as not being data.
    raw.write_bytes(b"\x00" * 16 + data[:-8])
    text = header.read_text().replace("ElementDataFile", "HeaderSize = 16\nElementDataFile")
    header.write_text(text)
    with pytest.raises(ScanReadError, match="cut short: 2232 of the 2240"):
        read_frame(header)


# --------------------------------------------------------------------------- decompression bombs

# Just over MAX_FRAME_PIXELS (40 million), so that even a decoder reached by mistake allocates
# only tens of megabytes; the header check is what the refusal must come from.
BOMB_W, BOMB_H = 8000, 6000


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, colour_type: int = 0) -> bytes:
    """A PNG whose header declares ``width`` x ``height``, with a few bytes of image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(bytes(64)))
            + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int, progressive: bool = False, stray: bytes = b"") -> bytes:
    """A small JPEG whose start-of-frame segment is patched to declare ``width`` x ``height``,
    after an APP1 (EXIF) segment, with ``stray`` bytes before the frame header (libjpeg skips
    them with a warning)."""
    ok, encoded = cv2.imencode(".jpg", scene(16, 16), [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    payload = b"Exif\x00\x00" + exif_tiff(6)
    raw = encoded.tobytes()
    data = bytearray(raw[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + raw[2:])
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC2):
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data[:pos]) + stray + bytes(data[pos:])


def bmp_declaring(width: int, height: int) -> bytes:
    ok, encoded = cv2.imencode(".bmp", scene(16, 16))
    data = bytearray(encoded.tobytes())
    data[18:26] = struct.pack("<ii", width, height)  # BITMAPINFOHEADER; a negative height is top-down
    return bytes(data)


def tiff_declaring(width: int, height: int, order: str = "<", kind: int = 4, big: bool = False) -> bytes:
    """A one-strip uncompressed TIFF (or BigTIFF) header declaring ``width`` x ``height`` in
    entries of ``kind`` (3 SHORT, 4 LONG), with a few bytes of image data."""
    mark = b"II" if order == "<" else b"MM"
    value = "H" if kind == 3 else "I"
    entries = [(256, kind, width), (257, kind, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, kind, height), (279, 4, 64)]
    if big:
        head = mark + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        data_at = 16 + 8 + 20 * len(entries) + 8
        ifd = struct.pack(order + "Q", len(entries))
        for tag, typ, val in entries:
            val = data_at if tag == 273 else val
            ifd += struct.pack(order + "HHQ", tag, typ, 1) + struct.pack(order + ("H" if typ == 3 else "I"), val)
            ifd += bytes(8 - (2 if typ == 3 else 4))
        return head + ifd + bytes(8) + bytes(64)
    head = mark + struct.pack(order + "HI", 42, 8)
    data_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack(order + "H", len(entries))
    for tag, typ, val in entries:
        val = data_at if tag == 273 else val
        field = struct.pack(order + "H", val) + bytes(2) if typ == 3 else struct.pack(order + value, val)
        ifd += struct.pack(order + "HHI", tag, typ, 1) + field
    return head + ifd + bytes(4) + bytes(64)


@pytest.mark.parametrize("name, make", [
    ("grey.png", lambda: png_declaring(BOMB_W, BOMB_H)),
    ("rgb.png", lambda: png_declaring(BOMB_W, BOMB_H, colour_type=2)),
    ("baseline.jpg", lambda: jpeg_declaring(BOMB_W, BOMB_H)),
    ("progressive.jpg", lambda: jpeg_declaring(BOMB_W, BOMB_H, progressive=True)),
    ("padded.jpg", lambda: jpeg_declaring(BOMB_W, BOMB_H, stray=b"\x00\x17\xff\x00")),
    ("jpeg_named.png", lambda: jpeg_declaring(BOMB_W, BOMB_H)),
    ("bottom_up.bmp", lambda: bmp_declaring(BOMB_W, BOMB_H)),
    ("top_down.bmp", lambda: bmp_declaring(BOMB_W, -BOMB_H)),
    ("long_le.tif", lambda: tiff_declaring(BOMB_W, BOMB_H)),
    ("long_be.tif", lambda: tiff_declaring(BOMB_W, BOMB_H, order=">")),
    ("short_le.tiff", lambda: tiff_declaring(BOMB_W, BOMB_H, kind=3)),
    ("short_be.tif", lambda: tiff_declaring(BOMB_W, BOMB_H, order=">", kind=3)),
    ("bigtiff.tif", lambda: tiff_declaring(BOMB_W, BOMB_H, big=True)),
])
def test_an_image_declaring_a_huge_frame_is_refused_before_decoding(tmp_path, capfd, name, make):
    # A 4.4 KB JPEG declaring 30000 x 30000 took gigabytes and ended batch runs; a 30000^2 RGB PNG
    # ran 17 s, then was called "damaged". The header's size is refused before OpenCV decodes.
    from ipp_seg.io.frames import too_many_pixels
    from ipp_seg.io.images import declared_image_size

    data = make()
    assert len(data) < 10_000
    assert declared_image_size(data) == (BOMB_W, BOMB_H)
    path = tmp_path / name
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(ScanReadError) as caught:
        read_frame(path)
    assert time.perf_counter() - start < 0.5
    assert caught.value.reason == too_many_pixels(BOMB_W, BOMB_H)
    assert "8000 x 6000 pixels is beyond the 40 million" in str(caught.value)
    assert "libpng" not in capfd.readouterr().err  # nothing reached a decoder


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize("shape, dtype", [((37, 53), np.uint8), ((37, 53, 3), np.uint8), ((37, 53, 4), np.uint16)])
def test_declared_image_size_of_real_files(tmp_path, suffix, shape, dtype):
    from ipp_seg.io.images import declared_image_size

    image = np.zeros(shape, dtype)
    ok, encoded = cv2.imencode(suffix, image)
    assert ok and declared_image_size(encoded.tobytes()) == (53, 37)
    assert read_frame(save(tmp_path / f"f{suffix}", image)).pixels.shape == (37, 53)


def test_image_headers_that_do_not_parse_are_left_to_the_decoder(tmp_path):
    from ipp_seg.io.images import declared_image_size

    assert declared_image_size(b"\xff\xd8\xff\xe0\x00\x01") is None  # a segment length below 2
    assert declared_image_size(b"BM" + bytes(30)) is None  # no info header size
    assert declared_image_size(b"II*\x00\xff\xff\xff\x00") is None  # the IFD past the end
    assert declared_image_size(tiff_declaring(5, 5)[:30]) is None  # the size entries cut off
    ok, encoded = cv2.imencode(".webp", scene())
    assert declared_image_size(encoded.tobytes()) is None  # a format not parsed here (and refused by its content)
    # A top-down BMP of a legitimate size is read as before.
    top_down = tmp_path / "top_down.bmp"
    top_down.write_bytes(bmp_declaring(16, -16))
    assert declared_image_size(top_down.read_bytes()) == (16, 16)
    assert read_frame(top_down).pixels.shape == (16, 16)


def meta_image_declaring(dims: tuple[int, ...], data: bytes, compressed: bool) -> bytes:
    fields = ["ObjectType = Image", f"NDims = {len(dims)}", f"DimSize = {' '.join(map(str, dims))}",
              "ElementType = MET_UCHAR", "BinaryData = True", "BinaryDataByteOrderMSB = False"]
    if compressed:
        fields += ["CompressedData = True", f"CompressedDataSize = {len(data)}"]
    return ("\n".join(fields + ["ElementDataFile = LOCAL"]) + "\n").encode() + data


def nifti_gz_declaring(dims: tuple[int, ...]) -> bytes:
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(dims), *dims, *[1] * (7 - len(dims)))
    struct.pack_into("<hh", header, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into("<4f", header, 76, 1, 0.2, 0.2, 1)
    struct.pack_into("<ff", header, 108, 352.0, 1.0)  # data offset, scale slope
    header[344:348] = b"n+1\x00"
    return gzip.compress(bytes(header) + bytes(4) + bytes(4096))


@pytest.mark.parametrize("name, make", [
    ("zeros.mha", lambda: meta_image_declaring((BOMB_W, BOMB_H), zlib.compress(bytes(4096)), True)),
    ("cine.mha", lambda: meta_image_declaring((BOMB_W, BOMB_H, 2), zlib.compress(bytes(4096)), True)),
    ("raw.mha", lambda: meta_image_declaring((BOMB_W, BOMB_H, 1000), bytes(100), False)),
    ("zeros.nii.gz", lambda: nifti_gz_declaring((BOMB_W, BOMB_H))),
    ("cine.nii.gz", lambda: nifti_gz_declaring((BOMB_W, BOMB_H, 3))),
])
def test_an_itk_image_declaring_a_huge_frame_is_refused_before_reading_pixels(tmp_path, name, make):
    # A compressed 30000^2 MHA or .nii.gz of zeros (under 1 MB) was inflated into gigabytes.
    from ipp_seg.io.frames import too_many_pixels

    path = tmp_path / name
    path.write_bytes(make())
    start = time.perf_counter()
    with pytest.raises(ScanReadError) as caught:
        count_frames(path)
    assert time.perf_counter() - start < 0.5
    assert caught.value.reason == too_many_pixels(BOMB_W, BOMB_H)


def _counted_itk_cine(tmp_path, monkeypatch, suffix: str, compressed: bool):
    """A 4-frame 48 x 32 cine written by ITK, and a list that grows by one for each ITK read."""
    planes = np.stack([scene(32, 48) + k for k in range(4)]).astype(np.uint8)
    path = tmp_path / f"cine{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(planes), str(path), useCompression=compressed)
    reads = []
    real_execute = sitk.ImageFileReader.Execute
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: (reads.append(1), real_execute(self))[1])
    return planes, path, reads


@pytest.mark.parametrize("suffix, compressed", [(".mha", True), (".nii.gz", True), (".nrrd", True), (".nrrd", False)])
def test_a_volume_itk_cannot_read_a_plane_at_a_time_is_read_once(tmp_path, monkeypatch, suffix, compressed):
    # ITK inflates a compressed MetaImage or NIfTI from its start for each plane (a 600-frame cine
    # took 220 s), and reads a NRRD whole for any plane: such a volume's frames are read from one
    # read of it, while counting them (as --resume does for every file) reads two planes only.
    import ipp_seg.io.itk as itk_module

    monkeypatch.setattr(itk_module, "_WHOLE_READ_BYTES", 0)  # as if beyond the plane-by-plane size
    planes, path, reads = _counted_itk_cine(tmp_path, monkeypatch, suffix, compressed)
    assert count_frames(path) == 4 and len(reads) == 2  # counted from the first two planes, at the stream's start
    reads.clear()
    frames = list(read_frames(path))
    assert len(reads) == 3 and len(frames) == 4  # those two planes again, then the volume once
    for frame in frames:
        np.testing.assert_array_equal(frame.pixels, planes[frame.frame_index])


@pytest.mark.parametrize("suffix, compressed, advice", [
    (".mha", True, "a compressed volume is inflated from its start for each frame; store it uncompressed"),
    (".nii.gz", True, "a compressed volume is inflated from its start for each frame; store it uncompressed"),
    (".nrrd", False, "ITK reads a NRRD volume whole for each frame; store it as an uncompressed MetaImage"),
])
def test_a_volume_itk_cannot_read_a_plane_at_a_time_beyond_the_budget_is_refused(
        tmp_path, monkeypatch, suffix, compressed, advice):
    import ipp_seg.io.itk as itk_module

    monkeypatch.setattr(itk_module, "_UNSTREAMABLE_READ_BYTES", 4 * 32 * 48 - 1)  # one byte short of the volume
    planes, path, reads = _counted_itk_cine(tmp_path, monkeypatch, suffix, compressed)
    checked = []  # (the length checks inflate the data to count them: a bomb of 7.6 GB had taken 32 s and 2.3 GB)
    for check in ("_check_meta_image_length", "_check_nifti_length"):
        monkeypatch.setattr(itk_module, check, lambda *args, check=check: checked.append(check))
    with pytest.raises(ScanReadError) as caught:
        count_frames(path)
    assert not reads and not checked  # refused from the header alone
    assert str(caught.value).count("\n") == 0
    assert "its 4 frames of 48 x 32 (0 MiB) are beyond the 0 MiB ipp-seg reads at once" in caught.value.reason
    assert advice in caught.value.reason and "DICOM" in caught.value.reason
    # Uncompressed MetaImage and NIfTI volumes still stream a plane at a time, whatever their size.
    for plain in ("plain.mha", "plain.nii"):
        sitk.WriteImage(sitk.GetImageFromArray(planes), str(tmp_path / plain), useCompression=False)
        assert count_frames(tmp_path / plain) == 4


def test_an_image_file_beyond_what_a_frame_takes_is_refused_unread(tmp_path, sample_png):
    # A security review: a PNG padded to 4 GiB (a sparse file) was read whole before OpenCV refused it, 4.3 GB.
    from ipp_seg.io.images import MAX_IMAGE_FILE_BYTES

    padded = tmp_path / "padded.png"
    padded.write_bytes(sample_png.read_bytes())
    os.truncate(padded, MAX_IMAGE_FILE_BYTES + 1)  # (sparse: no disk taken)
    with pytest.raises(ScanReadError, match=r"the file holds 536,870,913 bytes, beyond the 512 MiB of an image file"):
        read_frame(padded)
    os.truncate(padded, sample_png.stat().st_size)
    assert read_frame(padded).pixels.shape == read_frame(sample_png).pixels.shape


def test_compressed_data_are_counted_in_bounded_pieces(tmp_path, monkeypatch):
    # A megabyte of compressed zeros inflates to a gigabyte: counted whole in one call, 7 MB of them had taken 2.3 GB
    # (a security review); a .nii.gz is inflated only as far as its image's bytes, not to the stream's end.
    import gzip
    import tracemalloc
    import zlib

    from ipp_seg.io.itk import _check_nifti_length, _inflated_bytes

    wanted = 256 * 2**20
    (tmp_path / "zeros.z").write_bytes(b"header" + zlib.compress(bytes(wanted), 9))
    tracemalloc.start()
    try:
        assert _inflated_bytes(str(tmp_path / "zeros.z"), len(b"header"), wanted) == wanted
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak
    header = bytearray(352)
    header[0:4] = (348).to_bytes(4, "little")
    header[108:112] = np.float32(352).tobytes()
    with gzip.open(tmp_path / "long.nii.gz", "wb") as fh:
        fh.write(bytes(header) + bytes(64 * 2**20))  # far more than the 1,000 bytes the header is said to announce
    reads = []
    opened = gzip.open

    def counted(*args, **kwargs):
        stream = opened(*args, **kwargs)
        read = stream.read
        stream.read = lambda size=-1: (reads.append(size), read(size))[1]
        return stream
    import ipp_seg.io.itk as itk_module

    monkeypatch.setattr(itk_module.gzip, "open", counted)
    _check_nifti_length(str(tmp_path / "long.nii.gz"), 1000)
    assert sum(size for size in reads if size > 0) <= 540 + 1000 + 17 * 2**20  # (not the 64 MiB)
    with pytest.raises(ScanReadError, match="cut short"):
        _check_nifti_length(str(tmp_path / "long.nii.gz"), 65 * 2**20)
    # A stream read to its end checks its CRC (a QA pass: stopped at the image's bytes, a damaged one was measured).
    monkeypatch.undo()
    with gzip.open(tmp_path / "small.nii.gz", "wb") as fh:
        fh.write(bytes(header) + bytes(1000))
    data = bytearray((tmp_path / "small.nii.gz").read_bytes())
    data[-8] ^= 0xFF  # (the CRC-32 of the inflated data)
    (tmp_path / "small.nii.gz").write_bytes(bytes(data))
    with pytest.raises(ScanReadError, match="damaged file"):
        _check_nifti_length(str(tmp_path / "small.nii.gz"), 1000)


def test_an_output_replaces_a_planted_pipe_keeps_a_files_permissions_and_names_itself_in_errors(tmp_path):
    """A FIFO planted under an output's name had hung the run; a file made private came back
    world-readable once written again; an error named the hidden temporary file."""
    import stat
    import subprocess
    import sys

    from ipp_seg.io.writers import replacing

    fifo = tmp_path / "scan_mask.png"
    os.mkfifo(fifo)
    code = ("import sys; from ipp_seg.io.writers import replacing\n"
            "with replacing(sys.argv[1]) as fh: fh.write(b'png')")
    subprocess.run([sys.executable, "-c", code, str(fifo)], check=True, timeout=60)
    assert fifo.is_file() and fifo.read_bytes() == b"png"
    private = tmp_path / "report.json"
    private.write_text("{}")
    private.chmod(0o600)
    with replacing(private, text=True) as fh:
        fh.write("{\"a\": 1}")
        # The new content is no more open than the output it replaces, while it is written too.
        (staging,) = tmp_path.glob(".ipp-seg-*.part")
        assert stat.S_IMODE(staging.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() == '{"a": 1}'
    missing = tmp_path / "no such folder" / "x.png"
    with pytest.raises(FileNotFoundError) as info:
        with replacing(missing) as fh:
            fh.write(b"x")
    assert info.value.filename == str(missing)
    assert not [p for p in tmp_path.rglob(".ipp-seg-*")]
    if os.geteuid() != 0:  # (root writes a read-only file anyway)
        private.chmod(0o400)
        with pytest.raises(PermissionError):
            with replacing(private) as fh:
                fh.write(b"x")


def test_an_output_in_a_folder_one_may_not_add_to_is_written_in_place_and_a_dev_name_as_named(tmp_path, monkeypatch):
    """A writable file in a folder one may not add files to had been refused (the temporary file
    cannot be made there); /dev/fd/N and /proc/self/fd/N name streams, written as they are."""
    from ipp_seg.io import writers

    kept = tmp_path / "summary.json"
    kept.write_text("old")
    real_open = os.open

    def no_new_files(path, flags, *args):
        if os.path.basename(os.fspath(path)).startswith(".ipp-seg-"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(writers.os, "open", no_new_files)
    with writers.replacing(kept, text=True) as fh:
        fh.write("new")
    assert kept.read_text() == "new"
    with pytest.raises(PermissionError) as info:  # a new file there: refused, naming the folder
        with writers.replacing(tmp_path / "new.json") as fh:
            fh.write(b"x")
    assert info.value.filename == str(tmp_path)
    monkeypatch.undo()
    read_end, write_end = os.pipe()
    try:
        with writers.replacing(f"/proc/self/fd/{write_end}") as fh:
            fh.write(b"through the pipe")
        assert os.read(read_end, 100) == b"through the pipe"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_an_itk_file_whose_name_is_not_utf8_gets_a_reason_not_an_abort(tmp_path):
    """SimpleITK aborted the whole process on a Latin-1 name (a batch's worker with it, and every
    --resume after); the file is refused with what to do."""
    import subprocess
    import sys

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    plain = tmp_path / "plain.mha"
    sitk.WriteImage(image, str(plain))
    latin1 = os.path.join(os.fsencode(tmp_path), b"scan_M\xfcller.mha")
    os.link(plain, latin1)
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", os.fsdecode(latin1), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr  # 134 (abort) before
    assert "its name is not UTF-8" in run.stderr and "rename the file" in run.stderr
    with pytest.raises(ScanReadError, match="not UTF-8"):
        count_frames(os.fsdecode(latin1))
    # A plain file name in a Latin-1 folder: the folder is to be renamed (the file had been named).
    folder = os.path.join(os.fsencode(tmp_path), b"M\xfcller")
    os.mkdir(folder)
    os.link(plain, os.path.join(folder, b"a.mha"))
    with pytest.raises(ScanReadError, match="the name of a folder it is in is not UTF-8") as refused:
        count_frames(os.fsdecode(os.path.join(folder, b"a.mha")))
    assert "rename that folder" in str(refused.value) and "rename the file" not in str(refused.value)


def test_an_itk_file_that_cannot_be_opened_is_not_called_damaged(tmp_path, monkeypatch):
    """A .mha this user may not read had been "the file is damaged or incomplete" (ITK's word for
    any failure), where a PNG or DICOM alike says "Permission denied". (Tests may run as root, for
    whom no mode forbids reading: the refusal is the system's, stood in for here.)"""
    import errno

    import ipp_seg.io.itk as itk_module

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    scan = tmp_path / "private.mha"
    sitk.WriteImage(image, str(scan))
    real_open = os.open

    def refused(path, flags, *args, **kwargs):
        if os.fspath(path) == str(scan):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(scan))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(itk_module.os, "open", refused)
    with pytest.raises(ScanReadError, match=r"cannot open the file \(Permission denied\)"):
        read_frame(scan)
