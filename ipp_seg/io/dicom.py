"""DICOM ultrasound reading with pydicom 3: header checks, calibration, lazy frame decoding.

The header (everything before Pixel Data) is parsed once; frames are then decoded one at a
time with :func:`pydicom.pixels.iter_pixels` straight from the open file, so a long cine is
never decoded, nor read, whole.

Calibration, in order of preference:

1. Sequence of Ultrasound Regions: each 2-D region (Region Spatial Format 1) of tissue data
   (Region Data Type 1; colour-flow regions only when no tissue region exists) with physical
   units code 3 (cm) in x and y gives a pixel box and (x, y) = 10 * |Physical Delta X/Y| mm.
2. Pixel Spacing (row, column order in the file, so it is swapped to (x, y)), then the
   Pixel Measures of the shared functional groups, then those of the per-frame functional
   groups where every frame gives the same, then Imager Pixel Spacing. Not where some
   ultrasound regions are calibrated and others not (a Pixel Spacing may be a region's).
3. Otherwise unknown. No spacing is ever guessed.

Nothing read from patient, study or operator attributes goes into logs or messages.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder, iter_pixels, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from .errors import (DamagedFrameError, FramesMissingError, NotAnImageError, OtherModalityError, ScanReadError,
                     missing_file_reason, open_failure_reason)
from .formats import starts_like_raw_dicom
from .frames import ImagingRegion, Spacing, same_spacing, spacings_agree, too_many_pixels
from .greyscale import (WINDOW_FUNCTIONS, DisplayLut, DisplayWindow, GreyPixels, grey_with_marks, invert, looked_up,
                        to_output, windowed)
from .images import compressed_frame_size, grey_fill_blocks
from .quiet import pydicom_warnings_silenced

logger = logging.getLogger(__name__)

ENHANCED_US_VOLUME_STORAGE = "1.2.840.10008.5.1.4.1.1.6.2"

# Modalities whose images may be ultrasound frames: US itself, and "other" (OT), which
# secondary captures of scanner screens carry; SC is not a defined term but some exports
# write it. Any other modality (CT, MR, a SEG result, ...) is not segmented.
_ULTRASOUND_MODALITIES = {"US", "OT", "SC"}
_RESULT_MODALITIES = {"SEG": "a DICOM Segmentation", "SR": "a DICOM Structured Report",
                      "PR": "a presentation state", "KO": "a key object selection", "RTSTRUCT": "an RT structure set"}

# Region Spatial Format (0018,6012) and Region Data Type (0018,6014) codes (PS3.3 C.8.5.5.1).
_SPATIAL_2D = 1
_SPATIAL_NAMES = {2: "M-mode", 3: "spectral Doppler", 4: "waveform"}
_DATA_NONE = 0  # "none or not applicable": written by scanners that do not type their regions
_DATA_TISSUE = 1
_DATA_COLOUR_FLOW = 2
_UNITS_CM = 3

# US Image Type value 4 is a hex bit mask of the modes in the image (PS3.3 C.8.5.6.1.1).
_MODE_2D = 0x0001
_MODE_NON_2D = {0x0002: "M-mode", 0x0004: "CW Doppler", 0x0008: "PW Doppler", 0x0020: "colour M-mode"}
_MODE_3D_RENDERING = 0x0040

_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD

_PHOTOMETRIC_GREY = {"MONOCHROME1", "MONOCHROME2"}
_PHOTOMETRIC_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}
_PHOTOMETRIC_PALETTE = "PALETTE COLOR"
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: a DICOMDIR
# A Pixel Aspect Ratio within this of 1 is square (as inference takes a calibration's pixels).
_SQUARE_PIXEL_TOLERANCE = 0.02
# Defined terms ipp-seg does not read (retired or rare): named in the refusal as they are.
_PHOTOMETRIC_DEFINED = {"HSV", "ARGB", "CMYK", "YBR_PARTIAL_422", "XYZ"} | _PHOTOMETRIC_GREY | _PHOTOMETRIC_COLOUR

# pip packages that add a decoder for each compressed syntax, permissive licences first.
_GDCM = "python-gdcm"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
_PLUGIN_HINTS = {
    "1.2.840.10008.1.2.4.50": _GDCM,  # JPEG baseline
    "1.2.840.10008.1.2.4.51": _GDCM,  # JPEG extended
    "1.2.840.10008.1.2.4.57": _GDCM,  # JPEG lossless
    "1.2.840.10008.1.2.4.70": _GDCM,  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": f"pyjpegls (or {_GDCM})",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": f"pyjpegls (or {_GDCM})",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": f"{_OPENJPEG} (or {_GDCM})",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": f"{_OPENJPEG} (or {_GDCM})",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE (pydicom also has its own)
}


@dataclass(frozen=True)
class DicomInfo:
    """What the header says about a DICOM file's pixels and calibration."""

    path: str
    n_frames: int
    rows: int
    columns: int
    photometric: str
    bits_stored: int
    signed: bool
    transfer_syntax: UID
    regions: tuple[ImagingRegion, ...]
    spacing_mm: Spacing | None
    spacing_source: str | None  # a code of ipp_seg.measure.SPACING_SOURCES
    sop_instance_uid: str | None
    palette: Dataset | None  # the colour lookup tables of a PALETTE COLOR image
    pixel_offset: int | None  # file offset of the pixel data value (None: deflated file)
    has_file_meta: bool = True  # False: a bare data set, whose syntax the decoder must be told
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    # Uncompressed pixel data that ends before the frames the header declares: how many whole
    # frames it holds (None: all). Those are read; the first one beyond fails on its own.
    frames_present: int | None = None
    burned_in_text: bool = False  # Burned In Annotation YES: text (a name) in the pixels
    # Native YBR_FULL_422 of an odd width whose rows are each padded to an even width (read so, cropped).
    ybr422_row_padded: bool = False
    # Each frame's time after the first, ms (:func:`_frame_times_ms`); None for one frame or none given, and where
    # the header's timing cannot be right: then why, for the reader of its frames to say (not every header read).
    frame_times_ms: Sequence[float] | None = None
    frame_time_problem: str | None = None
    # (vertical, horizontal) of a Pixel Aspect Ratio that says the pixels are not square, where no calibration in mm
    # gives their size: the frames are refused unless a spacing is given for them (check_pixel_shape).
    pixel_aspect_ratio: tuple[int, int] | None = None
    # A greyscale frame of more than 8 bits is shown through its header's display window, if any.
    window: DisplayWindow | DisplayLut | None = None

    @property
    def uids(self) -> tuple[str | None, str | None, str | None]:
        """(SOP instance, study, series) UIDs, as a :class:`ScanReadError` of this file carries them."""
        return self.sop_instance_uid, self.study_instance_uid, self.series_instance_uid


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


# Modality defined terms (PS3.3 C.7.3.1.1.1, with retired ones), quoted in a refusal.
_DEFINED_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CD CF CP CR CS CT DD DF DG DM DOC DS DX EC ECG EPS ES FA FID FS GM HC HD IO IOL "
    "IVOCT IVUS KER KO LEN LP LS M3D MA MG MR MS NM OAM OCT OP OPM OPR OPT OPTBSV OPTENF OPV OSS OT PLAN POS "
    "PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR "
    "SR SRF ST STAIN TEXTUREMAP TG US VA VF XA XAPROTOCOL XC CTPROTOCOL".split())


def _header_uids(ds: Dataset) -> tuple[str | None, str | None, str | None]:
    """(SOP instance, study, series) UIDs of a header, each None where it holds no valid one."""
    return (valid_uid(ds.get("SOPInstanceUID")), valid_uid(ds.get("StudyInstanceUID")),
            valid_uid(ds.get("SeriesInstanceUID")))


def valid_uid(value) -> str | None:
    """A UID as the header holds it, None where it holds none or no valid one (digits and dots,
    at most 64 characters): a damaged header's text never reaches a CSV from here."""
    text = str(value or "").strip().rstrip("\x00")
    return text if len(text) <= 64 and _UID.fullmatch(text) else None


def inspect_dicom(path: str | os.PathLike[str]) -> DicomInfo:
    """Parse and check a DICOM file's header without reading its pixel data.

    Raises :class:`ScanReadError` for anything that would stop frames being decoded.
    """
    path = str(path)
    try:
        with pydicom_warnings_silenced():
            return _inspect_dicom(path)
    except ScanReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a value no check foresaw must not end a batch
        # Only the type: the message could quote element values (patient data).
        raise ScanReadError(path, f"the DICOM header holds a value ipp-seg cannot use ({type(exc).__name__}): a "
                                  "damaged or non-conformant file") from None


#: A deflated data set that inflates beyond this is refused before any reader inflates it: a
#: megabyte of deflated zeros had inflated to 1 GiB of pixel data (3.3 GB of memory), past the
#: frame-size check, which reads the header only once it is inflated.
MAX_INFLATED_BYTES = 256 * 2**20


def _refuse_a_deflate_bomb(path: str, f) -> None:
    """Raise :class:`ScanReadError` where the file is Deflated Explicit VR Little Endian and its
    body inflates beyond :data:`MAX_INFLATED_BYTES`, counted as it streams (a megabyte of
    output at a time, none of it kept). Anything else passes, for the reader to judge; ``f`` is
    left at its start either way."""
    try:
        f.seek(0)
        head = f.read(132 + 12)
        if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
            return
        group_length = struct.unpack("<L", head[140:144])[0]  # (0002,0000) UL, explicit VR: its value
        if pydicom.uid.DeflatedExplicitVRLittleEndian.encode() not in f.read(group_length):
            return
        inflate, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := f.read(1 << 20):
            while chunk:
                total += len(inflate.decompress(chunk, 1 << 20))
                if total > MAX_INFLATED_BYTES:
                    raise ScanReadError(path, f"its deflated data inflate to more than {MAX_INFLATED_BYTES >> 20} MB, "
                                              "beyond any ultrasound frame: a damaged or hostile file")
                chunk = inflate.unconsumed_tail
    except zlib.error:
        return  # damaged: the reader says so
    finally:
        f.seek(0)


def _inspect_dicom(path: str) -> DicomInfo:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ScanReadError(path, "the file is empty")
            _refuse_a_deflate_bomb(path, f)
            try:
                try:
                    ds = pydicom.dcmread(f, stop_before_pixels=True)
                except InvalidDicomError:
                    f.seek(0)
                    if not starts_like_raw_dicom(f.read(8)):
                        raise
                    # No preamble (and perhaps no file meta): legacy exports; read from byte 0.
                    f.seek(0)
                    ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            except InvalidDicomError:
                size = os.fstat(f.fileno()).st_size
                if size < 132:  # the preamble and marker alone take 132 bytes
                    raise ScanReadError(path, f"only {size} bytes: too short for a DICOM file (a copy cut short, or "
                                              "no DICOM file)") from None
                from .images import image_kind, volume_kind

                f.seek(0)
                head = f.read(16)
                kind = image_kind(head) or volume_kind(head)
                if kind is not None:  # an export saved under the wrong name: say what reads it
                    raise ScanReadError(path, f"its content is {kind[0]}, not DICOM: rename it {kind[1]} to read it "
                                              "(as an image, without DICOM's calibration)") from None
                raise ScanReadError(path, "not a DICOM file (no 'DICM' marker at byte 128)") from None
            except Exception as exc:  # pydicom raises many types on damaged headers
                # Only the type: a parser message could quote element values (patient data).
                raise ScanReadError(path, f"the DICOM header is damaged or truncated ({type(exc).__name__})") from None
            meta_syntax = _meta_transfer_syntax(ds)
            has_file_meta = meta_syntax is not None
            tsyntax = meta_syntax or _bare_transfer_syntax(path, ds)
            if not tsyntax.is_transfer_syntax:
                # Quoted only when it is a UID: a damaged header may hold any text (patient data) there.
                shown = str(tsyntax) if re.fullmatch(r"[0-9.]{1,64}", str(tsyntax)) else "(not a UID)"
                raise ScanReadError(path, f"its Transfer Syntax UID {shown} is none that ipp-seg's DICOM library "
                                          "(pydicom) knows: a vendor's private encoding, one newer than the library, "
                                          "or a damaged header; export the images from the scanner or PACS in a "
                                          "standard transfer syntax")
            ended = False
            if tsyntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
                # A deflated body cannot be walked in place: inflate it (such files are small).
                pixel_check = _check_deflated(path)
            else:
                pixel_check = _check_pixel_element(path, f, tsyntax)
                ended = pixel_check is None and f.tell() >= os.fstat(f.fileno()).st_size
            has_pixels = pixel_check is not None
    except FileNotFoundError:
        raise ScanReadError(path, missing_file_reason(path)) from None
    except IsADirectoryError:
        raise ScanReadError(path, "is a directory, not a file") from None
    except OSError as exc:  # (denied permission among them: worded as every other reader words it)
        raise ScanReadError(path, open_failure_reason(path, exc)) from None

    if not has_pixels:
        uids = _header_uids(ds)  # the row of an object without an image joins its study
        if "DirectoryRecordSequence" in ds or str(ds.get("SOPClassUID", "")) == _MEDIA_DIRECTORY:
            raise NotAnImageError(path, "a DICOMDIR, the index of a CD or USB export, not an image: the images are "
                                        "the export's other files", uids)
        kind = str(ds.get("Modality", "") or "").strip()
        sop_class = UID(str(ds.get("SOPClassUID", "") or ""))
        if kind.upper() == "SR" or "SR Storage" in sop_class.name:
            # Such as the report ipp-seg writes: a result, not a scan to measure.
            raise NotAnImageError(path, "a DICOM Structured Report (modality SR), a result: no image to measure", uids)
        if sop_class.is_valid and sop_class.name != sop_class and "Image" not in sop_class.name:
            # A class pydicom names and no image's (a PDF, a presentation state): the header says
            # what the file is, whether or not the file ends where its pixels would begin.
            raise NotAnImageError(path, f"no pixel data (a DICOM {sop_class.name} object, not an image)", uids)
        if ended and ("Rows" in ds or kind.upper() in ("", "US")):
            # A header that stops short of its pixels (an image's, an ultrasound object's, or
            # one cut off before its Modality, which every object has): a copy cut off, most
            # likely, not an object without an image; a complete one written without its Pixel
            # Data element reads alike (an acceptance tester's, called "truncated" alone).
            raise ScanReadError(path, "no Pixel Data: the file ends before its pixel data (cut short, or written "
                                      "without its image)")
        what = f"a DICOM object without an image{', modality ' + kind if kind else ''}"
        raise NotAnImageError(path, f"no pixel data ({what})", uids)

    _reject_other_modality(path, ds)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation"):
        if ds.get(keyword) in (None, ""):
            raise ScanReadError(path, f"the Image Pixel module lacks {keyword}")

    _reject_non_2d(path, ds)

    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric not in _PHOTOMETRIC_GREY | _PHOTOMETRIC_COLOUR | {_PHOTOMETRIC_PALETTE}:
        # Named only when it is a defined term: a damaged header may hold any text there.
        shown = photometric if photometric in _PHOTOMETRIC_DEFINED else "that is no defined term"
        raise ScanReadError(path, f"unsupported photometric interpretation {shown}")
    if photometric == _PHOTOMETRIC_PALETTE and "RedPaletteColorLookupTableDescriptor" not in ds:
        raise ScanReadError(path, "PALETTE COLOR image without its colour lookup tables")

    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows <= 0 or columns <= 0:
        raise ScanReadError(path, f"empty image ({rows} x {columns} pixels)")
    oversized = too_many_pixels(columns, rows)  # before any decoder allocates it (some abort the process)
    if oversized:
        raise ScanReadError(path, oversized)
    if pixel_check is not None:
        _check_compressed_frame_sizes(path, pixel_check.frame_sizes, columns, rows)
    n_frames = _number_of_frames(path, ds)

    frames_present = None
    row_padded = False
    if photometric == "YBR_FULL_422" and not tsyntax.is_compressed and columns % 2 == 1 and pixel_check is not None:
        # Native YBR_FULL_422 of an odd width with each row padded to an even one (as some toolkits write it): its
        # data are one pixel pair per row longer than the standard's pairs running on, and read so they had sheared
        # the frame. Longer than the standard's and not that (padded rows cut short, or padded otherwise): refused.
        row_padded = (int(ds.get("BitsAllocated") or 0) == 8
                      and pixel_check.available == n_frames * rows * (columns + 1) * 2)
        if not row_padded and pixel_check.available > n_frames * rows * columns * 2:
            raise ScanReadError(path, "YBR_FULL_422 pixel data of an odd width whose length fits neither the "
                                      "standard's packing nor rows padded to an even width (cut short, or laid out "
                                      "otherwise): export the images again, as RGB or uncompressed greyscale")
    if pixel_check is not None and not tsyntax.is_compressed and not row_padded:
        frames_present = _check_native_length(path, ds, pixel_check, n_frames)
    _check_decoder(path, tsyntax)

    regions, region_beyond_image = _ultrasound_regions(path, ds, rows, columns)
    spacing, source = _frame_spacing(path, ds, regions, region_beyond_image)
    # (Refused when the frames are read, where no spacing is given either: check_pixel_shape.)
    aspect = _non_square_aspect(ds) if spacing is None and not any(r.spacing_mm for r in regions) else None
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    high_bit = _int_or_none(ds.get("HighBit"))
    if (high_bit is not None and high_bit > bits_stored - 1 and pixel_check is not None and pixel_check.value_offset
            and not tsyntax.is_compressed and tsyntax != pydicom.uid.DeflatedExplicitVRLittleEndian
            and _values_above_bits_stored(path, pixel_check.value_offset, rows * columns * _samples(ds),
                                          bits_allocated, bits_stored, not tsyntax.is_little_endian,
                                          int(ds.get("PixelRepresentation", 0) or 0) == 1)):
        # The values stored in the top bits: the decoder keeps the low Bits Stored bits, and the
        # frame had been measured scrambled (a failed ps_missing, no word of the cause). A High
        # Bit set wrongly over values that are in the low bits (nothing above them) reads as ever.
        raise ScanReadError(path, f"its High Bit {high_bit} with Bits Stored {bits_stored} puts the pixel values "
                                  f"in the top bits of each {bits_allocated}-bit word, where DICOM has them in the "
                                  f"low bits (High Bit = Bits Stored - 1), a layout ipp-seg does not read: export "
                                  f"the images again")
    uids = _header_uids(ds)
    frame_times, frame_time_problem = _frame_times_ms(ds, n_frames)
    info = DicomInfo(
        path=path,
        n_frames=n_frames,
        rows=rows,
        columns=columns,
        photometric=photometric,
        bits_stored=bits_stored,
        signed=int(ds.get("PixelRepresentation", 0) or 0) == 1,
        transfer_syntax=tsyntax,
        regions=regions,
        spacing_mm=spacing,
        spacing_source=source,
        sop_instance_uid=uids[0],  # (a damaged header's text never reaches a row)
        palette=_palette_tables(ds, tsyntax) if photometric == _PHOTOMETRIC_PALETTE else None,
        pixel_offset=pixel_check.value_offset if pixel_check is not None and pixel_check.value_offset else None,
        has_file_meta=has_file_meta,
        study_instance_uid=uids[1],
        series_instance_uid=uids[2],
        frames_present=frames_present,
        ybr422_row_padded=row_padded,
        burned_in_text=str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES",
        frame_times_ms=frame_times,
        frame_time_problem=frame_time_problem,
        window=_display_window(path, ds) if photometric in _PHOTOMETRIC_GREY and bits_stored > 8 else None,
        pixel_aspect_ratio=aspect,
    )
    logger.debug(
        "%s: %d frame(s) %dx%d %s, %s, spacing %s from %s, %d 2-D region(s)",
        path, n_frames, columns, rows, photometric, tsyntax.name, spacing, source, len(regions),
    )
    return info


def _samples(ds: Dataset) -> int:
    return _int_or_none(ds.get("SamplesPerPixel")) or 1


def _values_above_bits_stored(path: str, offset: int, values: int, bits_allocated: int, bits_stored: int,
                              big_endian: bool, signed: bool = False) -> bool:
    """Whether the first frame's native pixel words (``values`` of them at byte ``offset``) hold
    values beyond ``bits_stored`` bits in at least 1 % of them (values stored in the top bits of
    their words; signed ones sign-extended into them are within range; a stray word is no layout)."""
    kinds = {8: "1", 16: "2", 32: "4"}
    if bits_allocated not in kinds or bits_stored >= bits_allocated:
        return False
    dtype = np.dtype(("i" if signed else "u") + kinds[bits_allocated]).newbyteorder(">" if big_endian else "<")
    with open(path, "rb") as fh:
        fh.seek(offset)
        words = np.frombuffer(fh.read(values * dtype.itemsize), dtype=dtype).astype(np.int64)
    low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    return words.size > 0 and np.count_nonzero((words < low) | (words > high)) >= 0.01 * words.size


def iter_dicom_frames(info: DicomInfo, indices: Sequence[int] | None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (0-based index, greyscale frame) for ``indices`` (``None``: every frame), one at a time."""
    frames = _iter_dicom_frames(info, indices)
    try:
        while True:  # pydicom kept quiet while it decodes, not while the caller holds a frame
            try:
                with pydicom_warnings_silenced():
                    item = next(frames, None)
            except ScanReadError as exc:  # a frame missing or undecodable: its row keeps the file's UIDs
                raise exc.with_uids(info.uids) from exc.__cause__
            if item is None:
                return
            yield item
    finally:
        frames.close()  # its file closed when the caller stops early, not when it is collected


def _iter_dicom_frames(info: DicomInfo, indices: Sequence[int] | None) -> Iterator[tuple[int, np.ndarray]]:
    # A range, not a list: a damaged header may declare 99,999,999 frames over a few present.
    wanted = range(info.n_frames) if indices is None else list(indices)
    if not wanted:
        return
    if info.frames_present is not None:
        yield from _iter_frames_present(info, wanted, indices is None)
        return
    # Sequential access is cheapest for encapsulated data without an offset table, so ask for
    # "all" when that is what is wanted; explicit indices otherwise.
    all_in_order = indices is None or (len(wanted) == info.n_frames and wanted == list(range(info.n_frames)))
    if _is_native_ybr422(info):
        yield from _iter_native_ybr422_luma(info, wanted)
        return
    position = 0
    try:
        if info.transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
            source = pydicom.dcmread(info.path)
            frames = iter_pixels(source, indices=None if all_in_order else wanted, raw=_luma_stored(info))
            for arr in frames:
                yield wanted[position], _decoded(info, wanted[position], arr)
                position += 1
            return
        with open(info.path, "rb") as f:
            syntax = {} if info.has_file_meta else {"transfer_syntax_uid": info.transfer_syntax}
            whole = all_in_order
            while True:
                frames = iter_pixels(f, indices=None if whole else wanted, raw=_luma_stored(info), **syntax)
                try:
                    for arr in frames:
                        if position >= len(wanted):
                            break  # more fragments than Number of Frames: keep to the header
                        yield wanted[position], _decoded(info, wanted[position], arr)
                        position += 1
                    break
                except Exception as exc:
                    if isinstance(exc, ValueError) and "read-only" in str(exc):
                        # pydicom 3.0.2 corrects the sign of an iterated frame in the decoder's own
                        # buffer, which it cannot write (signed JPEG-LS of 12 bits in 16 had been
                        # refused, a reader's review): each frame is decoded into an array of its own.
                        for index in wanted[position:]:
                            arr = pixel_array(info.path, index=index, raw=_luma_stored(info), **syntax)
                            yield index, _decoded(info, index, arr)
                            position += 1
                        break
                    if not (whole and position == 0 and len(wanted) > 1 and info.transfer_syntax.is_compressed):
                        raise
                    # Fragments that do not match Number of Frames stop a sequential read before
                    # its first frame: ask frame by frame, so that the frames present are read.
                    whole = False
                    f.seek(0)
                finally:
                    frames.close()
            if position < len(wanted):
                raise FramesMissingError(info.path, f"frame {wanted[position]} is missing: the pixel data ends "
                                                    f"after {position} of the {info.n_frames} frames the header "
                                                    "declares")
    except ScanReadError:
        raise
    except Exception as exc:  # decoder failures come in many types
        frame = wanted[position] if position < len(wanted) else position
        if info.transfer_syntax == pydicom.uid.JPEGExtended12Bit and info.bits_stored > 8 and \
                importlib.util.find_spec("libjpeg") is None:  # (with it installed, a frame that fails is damaged)
            # What each decoder said is for a bug report only: the cause is known (a PACS pass: 420 characters
            # of plugins' messages around the one line a user needs).
            logger.debug("%s: decoding frame %s failed: %s", info.path, frame, _one_line(exc, 2000))
            raise ScanReadError(info.path, f"decoding frame {frame} failed: 12-bit JPEG Extended data needs "
                                           "pylibjpeg-libjpeg (GPL-3, not installed by ipp-seg: pip install "
                                           "pylibjpeg-libjpeg), or export the images uncompressed") from exc
        if info.transfer_syntax.is_compressed and info.n_frames > 1 and position < len(wanted):
            # Each frame of compressed data is coded apart: one that does not decode (its data cut short in a
            # copy) leaves the frames after it readable, as one that decodes with a grey fill does. A QA pass: the
            # rest of a cine had been dropped without a row.
            raise DamagedFrameError(info.path, f"frame {frame} is damaged: its {info.transfer_syntax.name} data does "
                                               f"not decode ({_one_line(exc)})", frame_index=frame) from exc
        raise ScanReadError(
            info.path, f"decoding frame {frame} ({info.transfer_syntax.name}) failed: {_one_line(exc)}"
        ) from exc


def _iter_frames_present(info: DicomInfo, wanted: Sequence[int], every_frame: bool
                         ) -> Iterator[tuple[int, np.ndarray]]:
    """The wanted frames that short uncompressed pixel data holds, in order, then the first
    wanted one it lacks named as missing (as for compressed data that ends early)."""
    present = info.frames_present
    # Named one by one (a list shorter than the declared count), so that no decoder reads on
    # to the end the header declares.
    whole = replace(info, frames_present=None)
    if every_frame:
        yield from _iter_dicom_frames(whole, list(range(present)))
        missing = present
    else:
        # Decoded in the caller's order up to the first frame the data lacks.
        lacking = next((position for position, index in enumerate(wanted) if index >= present), len(wanted))
        yield from _iter_dicom_frames(whole, wanted[:lacking])
        if lacking == len(wanted):
            return
        missing = wanted[lacking]
    raise FramesMissingError(info.path, f"frame {missing} is missing: the pixel data ends after {present} of the "
                                        f"{info.n_frames} frames the header declares")


def _one_line(exc: Exception, limit: int = 300) -> str:
    """A decoder's exception as one short line: pydicom lists each plugin's failure on its own
    line, and some quote Python object reprs that mean nothing to a user."""
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the frame's data", str(exc))
    text = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    text = text.replace("Unable to decode as exceptions were raised by all available plugins:;",
                        "no installed decoder could decode it:")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _luma_stored(info: DicomInfo) -> bool:
    """Whether the frames store luma as their first sample, as YBR_FULL does, where pydicom
    would turn them into RGB first (natively stored or RLE; a JPEG decoder converts itself).
    Read as stored: a tinted frame's dark pixels lie outside RGB, and the RGB clipped there had
    read black as grey 4 (a sepia YBR_FULL frame moved the AoP by 1.7 degrees, a PACS pass)."""
    return (info.photometric == "YBR_FULL" and info.bits_stored <= 8
            and (not info.transfer_syntax.is_compressed or info.transfer_syntax == pydicom.uid.RLELossless))


def _is_native_ybr422(info: DicomInfo) -> bool:
    return (
        info.photometric == "YBR_FULL_422"
        and not info.transfer_syntax.is_compressed
        and info.bits_stored <= 8
    )


def _iter_native_ybr422_luma(info: DicomInfo, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Luma straight from native YBR_FULL_422 frames (each pixel pair stored as Y1 Y2 Cb Cr).

    pydicom 3.0.2 computes wrong frame offsets for this layout when decoding frame by frame,
    and the luminance wanted here is the stored Y itself, so the frames are sliced directly: from
    the file, or from the inflated data set of a deflated one (whose second frame pydicom had
    given as noise, a reader's review). Of an odd width, the pairs run on across rows and frames
    as the standard packs them, or each row is padded to an even width
    (:attr:`DicomInfo.ybr422_row_padded`; read as pairs running on, it had sheared the frame).
    """
    stride = info.columns + (1 if info.ybr422_row_padded else 0)  # pixels per stored row
    per_frame = info.rows * stride  # stored pixels per frame
    with ExitStack() as stack:
        if info.pixel_offset is None:  # deflated: no offset in the file, the pixel data inflated whole
            inflated = memoryview(pydicom.dcmread(info.path).PixelData)

            def data_between(start: int, end: int) -> bytes | memoryview:
                return inflated[start:end]
        else:
            f = stack.enter_context(open(info.path, "rb"))

            def data_between(start: int, end: int) -> bytes | memoryview:
                f.seek(info.pixel_offset + start)
                return f.read(end - start)
        for index in wanted:
            first, last = index * per_frame, (index + 1) * per_frame
            # Stored pixel p is byte 4 * (p // 2) + p % 2 of the data. A frame of whole pairs (an even width, padded
            # rows, an even pixel count) is sliced; one that begins or ends inside a pair (an odd width and pixel
            # count) is taken pixel by pixel, at 7x the time (~10 ms an 800 x 600 frame).
            whole_pairs = first % 2 == 0 and last % 2 == 0
            start = 4 * (first // 2)
            end = 2 * last if whole_pairs else 4 * ((last - 1) // 2) + (last - 1) % 2 + 1  # (to the last pixel's Y)
            data = data_between(start, end)
            if len(data) < end - start:
                raise ScanReadError(info.path, f"truncated pixel data in frame {index}")
            if whole_pairs:
                luma = np.frombuffer(data, dtype=np.uint8).reshape(-1, 4)[:, :2]
            else:
                pixels = np.arange(first, last)
                luma = np.frombuffer(data, dtype=np.uint8)[4 * (pixels // 2) + pixels % 2 - start]
            yield index, np.ascontiguousarray(luma.reshape(info.rows, stride)[:, :info.columns])


def _decoded(info: DicomInfo, index: int, arr: np.ndarray) -> np.ndarray | GreyPixels:
    """Frame ``index`` as decoded (``arr``), in the readers' greyscale convention; refused where
    lossy JPEG data ended before the frame did (decoders fill the rest with grey 128, saying so
    only on stderr: :func:`~ipp_seg.io.images.grey_fill_blocks`)."""
    if info.transfer_syntax in _LOSSY_JPEG and arr.dtype == np.uint8:
        filled = grey_fill_blocks(arr)
        if filled:
            # Its own: the frames after it, each a JPEG of its own, can be read (DamagedFrameError).
            raise DamagedFrameError(info.path, f"frame {index} is damaged: its JPEG data ends before the frame does "
                                               f"(its last {filled} 8 x 8 blocks decode as the flat grey 128 a decoder "
                                               "puts where data is missing: changed in transfer or storage, or cut "
                                               "short); if the frame truly ends in flat mid-grey, export the images "
                                               "uncompressed", frame_index=index)
    return _to_grey(info, arr)


_LOSSY_JPEG = (pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGExtended12Bit)


def _to_grey(info: DicomInfo, arr: np.ndarray) -> np.ndarray | GreyPixels:
    """One decoded frame (as pydicom returns it) to the readers' greyscale convention; a colour
    one with its colour marks where it has any (:func:`~ipp_seg.io.greyscale.grey_with_marks`)."""
    if info.photometric == _PHOTOMETRIC_PALETTE:
        rgb = apply_color_lut(arr, info.palette)
        if rgb.dtype != np.uint8 and _palette_entry_bits(info.palette) == 8:
            # 8-bit entries stored one per 16-bit word (as older writers store them): pydicom gives
            # them as uint16, which had read at 1/257 of their level (a reader's review).
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        return grey_with_marks(rgb)
    if arr.ndim == 3 and _luma_stored(info):
        # Luma as stored; the colour marks judged on the frame as a display shows it, in RGB.
        return grey_with_marks(convert_color_space(arr, "YBR_FULL", "RGB"), luma=arr[..., 0],
                               bits_stored=info.bits_stored)
    if arr.ndim == 3:
        # pydicom has already turned YBR_* into RGB (raw=False); decoders do so for ICT/RCT.
        return grey_with_marks(arr, bits_stored=info.bits_stored)
    if arr.ndim != 2:
        raise ScanReadError(info.path, f"unexpected decoded frame shape {arr.shape}")
    if isinstance(info.window, DisplayLut):
        grey = looked_up(arr, info.window)
    elif info.window is not None:
        grey = windowed(arr, info.window)
    else:
        grey = to_output(arr, bits_stored=info.bits_stored, signed=info.signed)
    return invert(grey) if info.photometric == "MONOCHROME1" else grey


_PALETTE_KEYWORDS = [
    f"{segmented}{colour}PaletteColorLookupTable{part}"
    for colour in ("Red", "Green", "Blue", "Alpha")
    for segmented, part in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data"))
]


def _palette_entry_bits(palette: Dataset) -> int | None:
    """The bits of each entry the red table's descriptor gives (8 or 16), None where it gives none."""
    try:
        return int(palette.RedPaletteColorLookupTableDescriptor[2])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _palette_tables(ds: Dataset, tsyntax: UID) -> Dataset:
    """The palette elements alone, with OW table data in little-endian word order.

    pydicom 3.0's apply_color_lut reads plain table bytes as little endian whatever the
    transfer syntax, so tables from an Explicit VR Big Endian file are byte-swapped here first.
    """
    palette = Dataset()
    # Segmented tables are read with the byte order named here: little endian after the swap.
    palette.file_meta = FileMetaDataset()
    palette.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for keyword in _PALETTE_KEYWORDS:
        if keyword not in ds:
            continue
        value = ds[keyword].value
        if keyword.endswith("Data") and not tsyntax.is_little_endian and isinstance(value, bytes):
            value = np.frombuffer(value, dtype=">u2").astype("<u2").tobytes()
        setattr(palette, keyword, value)
    return palette


def _meta_transfer_syntax(ds: Dataset) -> UID | None:
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return UID(str(tsyntax)) if tsyntax else None


def _bare_transfer_syntax(path: str, ds: Dataset) -> UID:
    """A data set without file meta: the encoding pydicom found while parsing it (such files
    predate compressed syntaxes)."""
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        raise ScanReadError(path, "the DICOM header is damaged or truncated (no Transfer Syntax UID in the file meta)")
    if implicit:
        return pydicom.uid.ImplicitVRLittleEndian if little else UID("1.2.840.10008.1.2.2")
    return pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian


@dataclass(frozen=True)
class _PixelElement:
    value_offset: int
    length: int
    file_size: int
    frame_sizes: tuple[tuple[int, int], ...] = ()  # (width, height) the compressed frames' own headers declare

    @property
    def available(self) -> int:
        """The bytes of the value the file holds: its declared length, or to the file's end where cut short."""
        return min(self.length, self.file_size - self.value_offset)


def _check_pixel_element(path: str, f, tsyntax: UID) -> _PixelElement | None:
    """Read the pixel data element header at the file position pydicom stopped at.

    Returns ``None`` when the file has no pixel data; checks encapsulated fragments end inside
    the file (by walking item headers only, never reading fragment data).
    """
    file_size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        return None
    endian = "<" if tsyntax.is_little_endian else ">"
    group, element = struct.unpack(f"{endian}HH", head[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return None
    if tsyntax.is_implicit_VR:
        (length,) = struct.unpack(f"{endian}L", head[4:8])
    else:
        extra = f.read(4)  # OB/OW/OF/OD: 2 reserved bytes, then a 32-bit length
        if len(extra) < 4:
            raise ScanReadError(path, "truncated pixel data (the file ends inside the Pixel Data header)")
        (length,) = struct.unpack(f"{endian}L", extra)
    value_offset = f.tell()
    if length == _UNDEFINED_LENGTH:
        if not tsyntax.is_compressed:
            raise ScanReadError(path, "native pixel data with an undefined length")
        return _PixelElement(value_offset, length, file_size, _walk_fragments(path, f, file_size))
    elif tsyntax.is_compressed:
        raise ScanReadError(path, f"{tsyntax.name} pixel data is not encapsulated (defined length)")
    return _PixelElement(value_offset, length, file_size)


def _check_deflated(path: str) -> _PixelElement | None:
    try:
        full = pydicom.dcmread(path)
    except Exception as exc:
        raise ScanReadError(path, f"the deflated DICOM data set is damaged ({type(exc).__name__})") from None
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in full:
            length = len(full[keyword].value or b"")
            return _PixelElement(0, length, length)
    return None


# Where a compressed frame's size is looked for: a JPEG's start of frame follows its tables
# (and any EXIF), a JPEG 2000 codestream's size its first marker.
_FRAME_HEADER_BYTES = 8192


def _walk_fragments(path: str, f, file_size: int) -> tuple[tuple[int, int], ...]:
    """Check that the fragments' items end inside the file; the (width, height) that the header
    at the start of each fragment after the basic offset table declares (a fragment continuing
    a frame has none), read on the way."""
    fragments = 0
    found: list[tuple[int, int]] = []
    while True:
        item = f.read(8)
        if len(item) < 8:
            raise ScanReadError(
                path, f"truncated pixel data (the file ends after {max(fragments - 1, 0)} compressed fragment(s))"
            )
        group, element, length = struct.unpack("<HHL", item)  # encapsulation is always little endian
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM:
            raise ScanReadError(path, f"corrupt encapsulated pixel data (unexpected tag {tag:08X})")
        if f.tell() + length > file_size:
            raise ScanReadError(
                path, f"truncated pixel data (compressed fragment {fragments} runs past the end of the file)"
            )
        if fragments >= 1:
            head = f.read(min(length, _FRAME_HEADER_BYTES))
            size = compressed_frame_size(head)
            if size is not None:
                found.append(size)
            length -= len(head)
        f.seek(length, os.SEEK_CUR)
        fragments += 1
    if fragments < 2:  # the first item is the basic offset table
        raise ScanReadError(path, "encapsulated pixel data holds no compressed frames")
    return tuple(found)


def _check_compressed_frame_sizes(path: str, frame_sizes: tuple[tuple[int, int], ...], columns: int,
                                  rows: int) -> None:
    """Refuse compressed frames whose own header declares more pixels than the DICOM header's
    Rows and Columns: decoders allocate what the stream declares, and GDCM aborts the process
    on the mismatch, taking a batch's worker (and a resumed run's) with it."""
    for width, height in frame_sizes:
        if width > columns or height > rows:
            raise ScanReadError(path, f"its compressed frames declare {width} x {height} pixels where its header says "
                                      f"{columns} x {rows} (a damaged file)")


def _check_native_length(path: str, ds: Dataset, element: _PixelElement, n_frames: int) -> int | None:
    """Refuse uncompressed pixel data too short for one frame. A cine whose data ends before the
    frames its header declares (a Number of Frames one too many, a copy cut short) gives the
    number of whole frames it holds: they are measured, and the first missing one fails as such
    rather than the whole cine. None where every declared frame is present."""
    try:
        expected = get_expected_length(ds, "bytes")
    except Exception as exc:
        raise ScanReadError(path, f"inconsistent Image Pixel attributes ({type(exc).__name__})") from None
    available = element.available
    if available >= expected:
        beyond = (available - expected) // (expected // n_frames) if expected else 0
        if beyond:  # (a Number of Frames one too few, or none: the end of a cine had been left out unsaid)
            declared = f"Number of Frames {n_frames}" if "NumberOfFrames" in ds else "no Number of Frames: 1 frame"
            logger.warning("%s: its pixel data holds %d whole frame(s) more than its header declares (%s): those are "
                           "not read", path, beyond, declared)
        return None
    whole_frames = available // (expected // n_frames) if n_frames > 1 else 0
    if not whole_frames:
        error = ScanReadError(path, f"truncated pixel data ({available} of {expected} bytes for {n_frames} frame(s))")
        error.n_frames = n_frames  # (its row says how many the header declares: a cine cut inside its first frame)
        raise error
    logger.debug("%s: the pixel data holds %d of the %d frames the header declares", path, whole_frames, n_frames)
    return whole_frames


def _check_decoder(path: str, tsyntax: UID) -> None:
    if not tsyntax.is_compressed:
        return
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        known = "" if tsyntax.is_transfer_syntax else " (not a standard transfer syntax)"
        raise ScanReadError(
            path,
            f"unsupported transfer syntax {tsyntax.name}{known}: pydicom has no decoder for it; "
            "export the images uncompressed or as JPEG/JPEG 2000 from the scanner or PACS",
        ) from None
    if not decoder.is_available:
        package = _PLUGIN_HINTS.get(str(tsyntax), "a pydicom decoding plugin")
        raise ScanReadError(
            path, f"no decoder installed for transfer syntax {tsyntax.name}: pip install {package}"
        )


def _number_of_frames(path: str, ds: Dataset) -> int:
    """Number of Frames, 1 without one. Present, it must count frames: an empty one or 0 (which
    pydicom reads as one frame, with a warning) says nothing of how many the data hold, and a
    negative or non-numeric one less: refused as a damaged header."""
    if "NumberOfFrames" not in ds:
        return 1
    n = _int_or_none(ds.NumberOfFrames) or 0
    if n < 1:
        raise ScanReadError(path, "its Number of Frames is not a whole number of 1 or more (a damaged header)")
    return n


_FRAME_TIME, _FRAME_TIME_VECTOR = 0x00181063, 0x00181065
_TIMING_NAMES = {_FRAME_TIME: "Frame Time", _FRAME_TIME_VECTOR: "Frame Time Vector"}
#: The longest time between two frames taken as a cine's (ms): a loop's frames come milliseconds to seconds apart,
#: and a value past an hour (1e308 in a damaged header) is no frame time; nor is a sum past any float.
MAX_FRAME_INTERVAL_MS = 3_600_000.0


def _frame_times_ms(ds: Dataset, n_frames: int) -> tuple[Sequence[float] | None, str | None]:
    """Each frame's time after the cine's first frame, in ms (the first 0.0), from the Cine
    module, and why none is given where the header's timing cannot be right (None where all is
    well, or where the header gives no timing at all).

    Frame Time is the nominal time per frame; Frame Time Vector the increment before each
    frame (the first frame's is 0, and is not used: times count from the first frame). The one
    the Frame Increment Pointer names is taken (the first it names, where it names both); where
    it names neither present, the one present; where both are and they disagree, neither (no
    time is better than a wrong one). Times are rounded to 0.001 ms; they must increase from
    frame to frame after rounding, each step at most :data:`MAX_FRAME_INTERVAL_MS`. None for a
    single frame."""
    if n_frames < 2:
        return None, None
    # (An attribute left empty, as anonymised exports leave them, gives no timing: no more than one absent.)
    present = [tag for tag in (_FRAME_TIME_VECTOR, _FRAME_TIME) if tag in ds and not ds[tag].is_empty]
    if not present:
        return None, None
    try:
        pointer = ds.get("FrameIncrementPointer")
        pointed = [int(tag) for tag in (pointer if isinstance(pointer, (list, tuple, MultiValue)) else [pointer])
                   if tag is not None]
    except Exception:  # a damaged pointer names nothing: the attributes present decide
        pointed = []
    named = [tag for tag in pointed if tag in _TIMING_NAMES]
    chosen = next((tag for tag in named if tag in present), None)
    times = {tag: _times_of(ds, tag, n_frames) for tag in present}
    if chosen is None:
        if len(present) == 2 and not any(isinstance(t, str) for t in times.values()) \
                and not _same_times(*times.values()):
            return None, ("its Frame Time and Frame Time Vector give other times (such as %s and %s ms for frame 1), "
                          "and its Frame Increment Pointer names neither" % (times[_FRAME_TIME][1],
                                                                             times[_FRAME_TIME_VECTOR][1]))
        # (Where the one the pointer names is absent, the other is the header's only timing.)
        chosen = next((tag for tag in present if not isinstance(times[tag], str)), present[0])
    found = times[chosen]
    return (None, found) if isinstance(found, str) else (found, None)


def _times_of(ds: Dataset, tag: int, n_frames: int) -> Sequence[float] | str:
    """The frames' times (ms) that ``tag``, Frame Time or Frame Time Vector, gives, or why they
    cannot be right."""
    name = _TIMING_NAMES[tag]
    try:
        value = ds[tag].value
        raw = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        values = [float(v) for v in raw if v is not None and str(v).strip() != ""]
    except Exception:
        return f"its {name} holds a value that is no number"
    if tag == _FRAME_TIME:
        if len(values) != 1:
            return f"its {name} holds {len(values)} values, where it gives one time per frame"
        steps = values  # (the one time between every two frames)
    elif len(values) != n_frames:
        return f"its {name} holds {len(values)} value(s) for {n_frames} frames"
    else:
        steps = values[1:]  # (the first is the first frame's, from which times are counted)
    too_close = f"its {name} puts frames less than 0.001 ms apart (the precision times are kept to)"
    if not all(math.isfinite(step) and 0 < step <= MAX_FRAME_INTERVAL_MS for step in steps):
        return f"its {name} gives a time between frames that is not a positive number of ms up to an hour"
    if min(steps) < 0.001:
        return too_close
    if tag == _FRAME_TIME:
        # Each frame's time from its index, not a list of them: a damaged header's frame count (99999999) had taken
        # 100 s and 9 GB to list (a QA pass).
        return UniformFrameTimes(steps[0], n_frames)
    rounded = tuple(round(t, 3) for t in itertools.accumulate(steps, initial=0.0))
    return too_close if any(b <= a for a, b in zip(rounded, rounded[1:])) else rounded


class UniformFrameTimes(Sequence):
    """The times (ms, rounded to 0.001) of ``n_frames`` frames ``step_ms`` apart, the first at 0,
    each computed when asked for: a Frame Time's, whatever frame count a header declares."""

    def __init__(self, step_ms: float, n_frames: int) -> None:
        self.step_ms, self.n_frames = float(step_ms), int(n_frames)

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self.n_frames)))
        index = range(self.n_frames)[index]  # (IndexError past the end; negative from the end)
        return round(index * self.step_ms, 3)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"UniformFrameTimes({self.step_ms!r}, {self.n_frames})"


def _same_times(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two readings of a cine's times agree (to 1% of the later time, or 0.01 ms): a
    nominal Frame Time beside a vector of slightly uneven increments is one timing."""
    return all(abs(x - y) <= max(0.01, 0.01 * max(x, y)) for x, y in zip(a, b))


def _reject_other_modality(path: str, ds: Dataset) -> None:
    """Refuse images of another modality (a CT in a mixed PACS export: :class:`OtherModalityError`)
    and analysis results (such as the SEG ipp-seg writes, in a folder that is processed again:
    :class:`NotAnImageError`): segmenting them would give numbers that mean nothing. A missing
    or empty Modality is let through."""
    modality = str(ds.get("Modality") or "").strip().upper()
    if not modality or modality in _ULTRASOUND_MODALITIES:
        return
    uids = _header_uids(ds)  # the header was read: the row keeps the UIDs, to join back to its study
    if modality in _RESULT_MODALITIES:
        # Not an image to measure, as an SR is (not_an_image): an export processed again with the
        # results of an earlier run in it had counted each of its SEGs a failed frame.
        raise NotAnImageError(path, f"{_RESULT_MODALITIES[modality]} (modality {modality}), a result rather than "
                                    "an ultrasound image to segment", uids)
    # Quoted only when it is a modality DICOM defines: a damaged header may hold any text (patient data).
    shown = f"modality {modality}" if modality in _DEFINED_MODALITIES else "a modality DICOM does not define"
    raise OtherModalityError(path, f"an image of {shown}, not ultrasound (US): ipp-seg segments "
                                   "transperineal ultrasound frames", uids)


def _non_square_aspect(ds: Dataset) -> tuple[int, int] | None:
    """The (vertical, horizontal) of a Pixel Aspect Ratio that says the pixels are not square;
    None where it is absent, not the pair the standard defines, or square within 2 %."""
    value = ds.get("PixelAspectRatio")
    try:
        vertical, horizontal = (int(v) for v in value)
    except (TypeError, ValueError):
        return None  # absent, or not the pair the standard defines: the pixels are taken as square
    if vertical <= 0 or horizontal <= 0 or abs(vertical / horizontal - 1.0) <= _SQUARE_PIXEL_TOLERANCE:
        return None
    return vertical, horizontal


def check_pixel_shape(info: DicomInfo, spacing: Spacing | None) -> None:
    """Refuse a frame whose Pixel Aspect Ratio says its pixels are not square when no calibration
    in mm gives their size, neither the file's nor a ``spacing`` given for it (x, y mm): a viewer
    stretches such a frame to display it, and an angle measured on the stored grid would be
    another than the one displayed; and one whose given spacing is not the shape its ratio says.
    (A given spacing had been refused with the frame: a reader's review.)"""
    if info.pixel_aspect_ratio is None:  # (square, or sized by the file's own calibration)
        return
    vertical, horizontal = info.pixel_aspect_ratio
    ratio = f"Pixel Aspect Ratio {vertical}:{horizontal}, rows to columns"
    if spacing is None:
        raise ScanReadError(info.path, f"its pixels are not square ({ratio}) and no calibration in mm gives their "
                                       "size: measured as stored, the frame would be distorted and the AoP with it; "
                                       "give their size (--spacing-mm X,Y), or export it with its ultrasound region "
                                       "calibration, or with square pixels")
    if abs((spacing[1] / spacing[0]) / (vertical / horizontal) - 1.0) > _SQUARE_PIXEL_TOLERANCE:
        raise ScanReadError(info.path, f"the spacing given, {spacing[0]:g} x {spacing[1]:g} mm (x by y), is not the "
                                       f"shape its {ratio} gives its pixels")


def _reject_non_2d(path: str, ds: Dataset) -> None:
    """Refuse 3-D volumes/renderings and spectral/M-mode-only images: nothing 2-D to segment. As
    :class:`OtherModalityError`: nothing is damaged, and reading the file again (``batch
    --resume``) would change nothing (as ``unreadable`` they had been read again on every resume,
    and counted as damaged files)."""
    uids = _header_uids(ds)
    if str(ds.get("SOPClassUID", "")) == ENHANCED_US_VOLUME_STORAGE:
        raise OtherModalityError(path, "3-D ultrasound volume (Enhanced US Volume Storage); a 2-D frame is needed",
                                 uids)
    image_type = ds.get("ImageType")
    if image_type is not None and not isinstance(image_type, str) and len(image_type) >= 4:
        try:
            modes = int(str(image_type[3]).strip(), 16)
        except ValueError:
            modes = None
        if modes and not modes & _MODE_2D:
            if modes & _MODE_3D_RENDERING:
                raise OtherModalityError(path, "3-D rendering (US Image Type 0040), not a 2-D ultrasound plane", uids)
            names = [name for bit, name in _MODE_NON_2D.items() if modes & bit]
            if names:
                raise OtherModalityError(path, f"{'/'.join(names)} only, no 2-D image (US Image Type {image_type[3]})",
                                         uids)
    items = ds.get("SequenceOfUltrasoundRegions") or []
    formats = [_int_or_none(item.get("RegionSpatialFormat")) for item in items]
    if items and _SPATIAL_2D not in formats:
        names = sorted({_SPATIAL_NAMES[f] for f in formats if f in _SPATIAL_NAMES})
        if names:
            raise OtherModalityError(path, f"only {' and '.join(names)} region(s), no 2-D imaging region", uids)


def _display_window(path: str, ds: Dataset) -> DisplayWindow | DisplayLut | None:
    """The display window of a greyscale image's header: its own Window Center / Width (the first
    where several are offered), else its own VOI LUT (the first item of its VOI LUT Sequence), else
    those of its shared functional groups' Frame VOI LUT (on the rescale those groups give, where
    they give one); None where there is none or it is unusable (said in the log: the stored range
    is then shown whole).

    Only frames of more than 8 bits are read through it: their stored range says nothing of how
    they are shown (a 16-bit frame may use a twentieth of it, and read dark and flat whole), while
    an 8-bit ultrasound frame is stored as shown, whatever its window claims."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    # (An enhanced object gives its rescale in the functional groups, beside their window.)
    for holder, rescale in ((ds, ds), (_first_item(shared, "FrameVOILUTSequence"),
                                       _first_item(shared, "PixelValueTransformationSequence") or ds)):
        if holder is None:
            continue
        if holder.get("WindowCenter") not in (None, ""):  # (an empty one is none: another may be given)
            return _window_of(path, holder, rescale)
        if _first_item(holder, "VOILUTSequence") is not None:
            return _lut_of(path, ds, holder.VOILUTSequence[0], rescale)
    if any("FrameVOILUTSequence" in item for item in ds.get("PerFrameFunctionalGroupsSequence") or ()):
        logger.info("%s: its frames' own display windows are not applied (ipp-seg applies one window per "
                    "file): its whole stored range is shown", path)
    return None


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of a sequence element of ``ds``, or None where there is none (or no ``ds``)."""
    try:
        items = ds.get(keyword) if ds is not None else None
        return items[0] if items else None
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _rescale(holder: Dataset) -> tuple[float, float]:
    """Rescale Slope and Intercept (the modality LUT), 1 and 0 where the header gives none."""
    slope, intercept = (_float_or_none(holder.get(keyword)) for keyword in ("RescaleSlope", "RescaleIntercept"))
    return (slope if slope else 1.0), (intercept or 0.0)


def _window_of(path: str, holder: Dataset, rescale: Dataset) -> DisplayWindow | None:
    center, width = (_float_or_none(_first_value(holder.get(keyword))) for keyword in ("WindowCenter", "WindowWidth"))
    function = str(holder.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in WINDOW_FUNCTIONS:
        logger.warning("%s: VOI LUT Function %r is no defined term; its window is read as LINEAR", path, function[:40])
        function = "LINEAR"
    try:
        if center is None or width is None:
            raise ValueError("a Window Center and Width that are numbers are needed")
        slope, intercept = _rescale(rescale)
        # (The window is on the rescaled values, where a header gives a rescale: DICOM's order.)
        return DisplayWindow(center=center, width=width, function=function, slope=slope, intercept=intercept)
    except ValueError as exc:
        logger.warning("%s: its display window is not usable (%s): its whole stored range is shown", path, exc)
        return None


def _lut_of(path: str, ds: Dataset, item: Dataset, rescale: Dataset) -> DisplayLut | None:
    """A VOI LUT Sequence's item as a :class:`DisplayLut`, or None (said in the log) where it is unusable."""
    try:
        descriptor = [int(value) for value in item.LUTDescriptor]
        if len(descriptor) != 3:
            raise ValueError(f"its LUT Descriptor has {len(descriptor)} values, not 3")
        entries, first_mapped, bits = descriptor
        entries = entries or 1 << 16  # (0 stands for 65536 entries)
        if int(ds.get("PixelRepresentation", 0) or 0) == 1 and first_mapped >= 1 << 15:
            first_mapped -= 1 << 16  # (a signed image's first value, read as unsigned: PS3.3 C.11.2.1.1)
        data = item.get("LUTData")
        if data is None:
            raise ValueError("it has no LUT Data")
        if isinstance(data, bytes):  # (OW: 16-bit words, whatever the entries' depth, in the file's byte order)
            little = (getattr(ds, "original_encoding", None) or (None, True))[1] is not False
            table = np.frombuffer(data[:len(data) // 2 * 2], dtype="<u2" if little else ">u2").astype(np.int64)
        else:
            table = np.asarray(list(data) if isinstance(data, (MultiValue, list, tuple)) else [data], dtype=np.int64)
        if len(table) < entries:
            raise ValueError(f"its LUT Data holds {len(table)} of the {entries} entries its LUT Descriptor declares")
        if table.min() < 0 or table.max() > 0xFFFF:
            raise ValueError("its LUT Data holds values outside 0-65535")
        slope, intercept = _rescale(rescale)
        return DisplayLut(first_mapped=first_mapped, table=table[:entries].astype(np.uint16), bits=bits,
                          slope=slope, intercept=intercept)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        logger.warning("%s: its VOI LUT is not usable (%s): its whole stored range is shown", path, exc)
        return None


def _first_value(value):
    """The first of a multi-valued element's values (the display's default), or the value."""
    return value[0] if isinstance(value, (MultiValue, list, tuple)) and len(value) else value


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


#: The most ultrasound regions a header may list (scanners write one to a handful: views side by
#: side, a zoom box, Doppler panes).
MAX_ULTRASOUND_REGIONS = 100


def _ultrasound_regions(path: str, ds: Dataset, rows: int, columns: int) -> tuple[tuple[ImagingRegion, ...], bool]:
    """The 2-D tissue regions of the Sequence of Ultrasound Regions, clipped to the image, and
    whether a 2-D region of any kind reaches beyond it: the image was resized or cropped after
    the scanner described it, and then no region's calibration is given (a region that still
    fits a halved image is calibrated for the whole one as much), nor is a Pixel Spacing taken
    (:func:`_frame_spacing`)."""
    candidates: list[tuple[int | None, ImagingRegion]] = []
    beyond_image = False
    listed = ds.get("SequenceOfUltrasoundRegions") or []
    if len(listed) > MAX_ULTRASOUND_REGIONS:
        # Each region is compared with each other one: 50,000 of them in a 7 MB file had taken most
        # of an hour (a security review).
        raise ScanReadError(path, f"its header lists {len(listed):,} ultrasound regions, where an image has a few "
                                  f"(ipp-seg takes up to {MAX_ULTRASOUND_REGIONS}): damaged, or not written by a "
                                  "scanner")
    for number, item in enumerate(listed, start=1):  # (numbered as a reader counts them, from 1)
        if _int_or_none(item.get("RegionSpatialFormat")) != _SPATIAL_2D:
            continue
        data_type = _int_or_none(item.get("RegionDataType"))
        corners = [_int_or_none(item.get(k)) for k in
                   ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if any(c is None for c in corners):
            logger.warning("%s: ultrasound region %d has no complete location; ignored", path, number)
            continue
        min_x, min_y, max_x, max_y = corners
        # Max X1/Y1 are inclusive pixel coordinates; some scanners put them one past the edge.
        beyond = max(max_x + 1 - columns, max_y + 1 - rows, -min_x, -min_y)
        if beyond > 1:
            logger.warning("%s: ultrasound region %d reaches %d px beyond the image: the image was resized or cropped "
                           "after the scanner described it, so no calibration of the file is used (no distance in "
                           "mm; --spacing-mm gives the image's own, where known); check the export", path, number,
                           beyond)
            beyond_image = True
        x0, y0 = max(0, min_x), max(0, min_y)
        x1, y1 = min(columns, max_x + 1), min(rows, max_y + 1)
        if x1 <= x0 or y1 <= y0:
            logger.warning("%s: ultrasound region %d lies outside the image; ignored", path, number)
            continue
        spacing = _region_spacing(item)
        if beyond <= 1 and spacing is None and _int_or_none(item.get("PhysicalUnitsXDirection")) == _UNITS_CM:
            # Named, not quoted: a damaged header's values stay out of the log.
            logger.warning("%s: ultrasound region %d is calibrated in cm but its Physical Delta X/Y are not two "
                           "finite non-zero numbers of cm per pixel (or its Y units are not cm): the region gives no "
                           "spacing (a calibration elsewhere in the file may)", path, number)
        elif spacing is None:
            logger.info("%s: ultrasound region %d has no centimetre calibration", path, number)
        candidates.append((data_type, ImagingRegion(x0, y0, x1, y1, spacing)))
    if beyond_image:
        # A region that does not fit its image describes another image, and so does every region's calibration beside
        # it (an export halved in size had its HSD reported at half its length, status ok; a Doppler box beyond a
        # halved image had left its tissue region's calibration, and the Pixel Spacing, used).
        candidates = [(data_type, replace(region, spacing_mm=None)) for data_type, region in candidates]
    tissue = [region for data_type, region in candidates if data_type == _DATA_TISSUE]
    if not tissue:
        # No region says "tissue": keep colour-flow or untyped 2-D regions, which still show anatomy.
        tissue = [region for data_type, region in candidates if data_type in (None, _DATA_NONE, _DATA_COLOUR_FLOW)]
    return tuple(tissue), beyond_image


def _region_spacing(item: Dataset) -> Spacing | None:
    if _int_or_none(item.get("PhysicalUnitsXDirection")) != _UNITS_CM:
        return None
    if _int_or_none(item.get("PhysicalUnitsYDirection")) != _UNITS_CM:
        return None
    dx, dy = _float_or_none(item.get("PhysicalDeltaX")), _float_or_none(item.get("PhysicalDeltaY"))
    if not dx or not dy:
        return None
    # The sign only says which way the axis runs; the pixel size is its magnitude. cm -> mm as
    # a decimal shift, so that 0.035 cm reads 0.35 mm, not 0.35000000000000003, in reports.
    spacing = (_cm_to_mm(abs(dx)), _cm_to_mm(abs(dy)))
    # (1e308 cm is no number of mm: it had ended the frame as an unexpected processing error.)
    return spacing if all(math.isfinite(v) for v in spacing) else None


def _cm_to_mm(cm: float) -> float:
    return float(Decimal(repr(cm)).scaleb(1))


def _frame_spacing(path: str, ds: Dataset, regions: tuple[ImagingRegion, ...],
                   region_beyond_image: bool = False) -> tuple[Spacing | None, str | None]:
    """(x, y) mm per pixel for the whole frame and where it came from (a code of
    :data:`ipp_seg.measure.SPACING_SOURCES`; None with an unknown spacing).
    ``region_beyond_image``: an ultrasound region reaches beyond the image (resized or cropped
    since); then no Pixel Spacing is taken either."""
    _warn_of_overlapping_calibrations(path, regions)
    calibrated = [r.spacing_mm for r in regions if r.spacing_mm is not None]
    if region_beyond_image:
        # Exporters copy the region's calibration into Pixel Spacing, and one that resizes the image
        # leaves both as they were: a halved export's HSD had been given at half its length, status
        # ok, and a --spacing-mm given for it had been ignored (a reader's review).
        if any(value not in (None, "") for value in (*_pixel_spacings(ds), ds.get("ImagerPixelSpacing"))):
            logger.warning("%s: its Pixel Spacing is not used either: it may be that same calibration, copied "
                           "before the image was resized", path)
        return None, None
    if calibrated and len(calibrated) == len(regions):
        first = calibrated[0]
        if all(same_spacing(first, other) for other in calibrated[1:]):
            _warn_if_pixel_spacing_differs(path, ds, first)
            return first, "ultrasound_region"
        logger.info("%s: ultrasound regions carry different calibrations; use spacing_at()", path)
        return None, None
    if calibrated:
        # A calibrated thumbnail or second view says nothing about an uncalibrated region beside
        # it: its spacing must not become the frame's (spacing_at() gives each region its own).
        # Nor does a Pixel Spacing: exporters copy a calibrated view's into it (a dual view's
        # uncalibrated left half had been measured at its right half's 0.3 mm).
        logger.info("%s: some ultrasound regions carry no calibration; use spacing_at()", path)
        if any(_row_column_spacing(value) is not None for value in _pixel_spacings(ds)):
            logger.warning("%s: some of its ultrasound regions are calibrated and some are not: its Pixel Spacing is "
                           "not used for those that are not (it may be a calibrated region's), and distances there "
                           "are given in pixels only", path)
        return None, None
    for source, read in (  # (read in turn: the per-frame groups' warning is theirs only where they are used)
        ("pixel_spacing", lambda: ds.get("PixelSpacing")),
        ("pixel_spacing", lambda: _shared_pixel_spacing(ds)),
        ("pixel_spacing", lambda: _per_frame_pixel_spacing(path, ds)),
        ("imager_pixel_spacing", lambda: ds.get("ImagerPixelSpacing")),
    ):
        spacing = read()
        pair = _row_column_spacing(spacing)
        if pair is not None:
            if source == "pixel_spacing":
                _warn_if_pixel_measures_differ(path, ds, pair)
            return pair, source
        if spacing not in (None, ""):  # named, not quoted: a damaged header's value stays out of the log
            logger.warning("%s: its %s is present but not two positive numbers: not used", path,
                           "Imager Pixel Spacing" if source == "imager_pixel_spacing" else "Pixel Spacing")
    return None, None


def _warn_if_pixel_spacing_differs(path: str, ds: Dataset, region_mm: Spacing) -> None:
    """Say when the frame's Pixel Spacing disagrees with its ultrasound region's calibration by
    more than 1 %. The region's wins (it is what the scanner calibrated for the tissue image;
    a Pixel Spacing beside it may describe a resampled or secondary capture), but a user whose
    HSDs look off should find the disagreement named."""
    other = _pixel_spacing_apart(ds, region_mm)
    if other is not None:
        logger.warning("%s: Pixel Spacing (%g x %g mm per pixel, x by y) differs from the ultrasound region's "
                       "calibration (%g x %g mm); the region's is used for the distances",
                       path, other[0], other[1], region_mm[0], region_mm[1])


def _warn_if_pixel_measures_differ(path: str, ds: Dataset, used: Spacing) -> None:
    """Say when the header's other Pixel Spacing (the shared or per-frame functional groups' Pixel
    Measures) disagrees with the one ``used`` by more than 1 %: the first found is used, and a
    user whose HSDs look off should find the other named."""
    other = _pixel_spacing_apart(ds, used)
    if other is not None:
        logger.warning("%s: the Pixel Spacing values of its header differ (%g x %g and %g x %g mm per pixel, "
                       "x by y, among the image's and its functional groups' or frames' Pixel Measures); the "
                       "first found, %g x %g, is used for every frame's distances", path, used[0], used[1],
                       other[0], other[1], used[0], used[1])


def _pixel_spacing_apart(ds: Dataset, spacing: Spacing) -> Spacing | None:
    """The first of the header's Pixel Spacing values (:func:`_pixel_spacings`) more than 1 % from
    ``spacing``, None where none is."""
    for value in _pixel_spacings(ds):
        other = _row_column_spacing(value)
        if other is not None and not same_spacing(spacing, other, rel_tol=0.01):
            return other
    return None


def _warn_of_overlapping_calibrations(path: str, regions: tuple[ImagingRegion, ...]) -> None:
    """Say when two regions overlap and do not carry one calibration (a zoom box inside the
    image): no spacing is given where they overlap (:meth:`UltrasoundFrame.calibration_at`)."""
    for i, first in enumerate(regions):
        for second in regions[i + 1:]:
            # (Two views side by side that share an edge column or row do not overlap.)
            overlap = (min(first.x1, second.x1) - max(first.x0, second.x0) > 2
                       and min(first.y1, second.y1) - max(first.y0, second.y0) > 2)
            same = first.spacing_mm is second.spacing_mm is None or spacings_agree(
                [first.spacing_mm, second.spacing_mm])
            if overlap and not same:
                logger.warning("%s: two of its ultrasound regions overlap and are not calibrated alike (a zoom box "
                               "inside the image?): where they overlap the pixels' size is not known, and "
                               "distances there are given in pixels only", path)
                return


def _pixel_spacings(ds: Dataset) -> tuple:
    """The Pixel Spacing values a header gives, as they stand (not checked): the image's, the
    shared functional groups' and each frame's."""
    return (ds.get("PixelSpacing"), _shared_pixel_spacing(ds), *_per_frame_pixel_spacings(ds))


def _per_frame_pixel_spacings(ds: Dataset) -> list:
    try:
        return [item.PixelMeasuresSequence[0].PixelSpacing for item in ds.PerFrameFunctionalGroupsSequence]
    except (AttributeError, IndexError, KeyError, TypeError):
        return []


def _per_frame_pixel_spacing(path: str, ds: Dataset):
    """The Pixel Spacing of the per-frame functional groups' Pixel Measures where every frame
    gives one and the same (a cine's calibration written per frame); None otherwise (with a
    warning when the frames give different ones: one frame's spacing is not another's)."""
    values = _per_frame_pixel_spacings(ds)
    pairs = [_row_column_spacing(value) for value in values]
    if not pairs or any(pair is None for pair in pairs):
        return None
    if not spacings_agree(pairs):
        logger.warning("%s: its frames' Pixel Measures give different pixel spacings: the spacing is unknown", path)
        return None
    return values[0]


def _shared_pixel_spacing(ds: Dataset):
    try:
        return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    except (AttributeError, IndexError, KeyError):
        return None


def _row_column_spacing(value) -> Spacing | None:
    """DICOM spacing pairs are (row spacing, column spacing) = (y, x); return (x, y) in mm."""
    if value is None or isinstance(value, str):
        return None
    try:
        row_mm, column_mm = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(row_mm) and math.isfinite(column_mm) and row_mm > 0 and column_mm > 0):
        return None
    return (column_mm, row_mm)
