"""MetaImage, NRRD and NIfTI frames through SimpleITK.

A 2-D image is one frame. A 3-D image whose planes are all identical is one frame too: the
PSFHS layout stores each greyscale frame three times as a 256 x 256 x 3 volume. Any other 3-D
image is taken as a stack of frames along its third axis (a cine). Pixels are taken in index
order: the direction cosines are not applied, and a file whose cosines flip or turn the frame
is named in a warning.

ITK spacing is in mm (it converts NIfTI's units itself), except NRRD's, which it takes as
written whatever the header's ``space units`` or ``units`` say: those are read here and converted
(cm, m, um), and a unit not known leaves the spacing unknown. A spacing of exactly 1 x 1 is
what ITK writes when nothing is known (PSFHS frames were resized and carry none), so it counts
as unknown.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import stat
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import ScanReadError, missing_file_reason, open_failure_reason
from .folders import utf8_name
from .frames import Spacing, too_many_pixels
from .greyscale import drop_alpha_to_grey, to_output
from .quiet import itk_warnings_silenced

logger = logging.getLogger(__name__)

# Volumes up to this size are read once; bigger ones a plane at a time.
_WHOLE_READ_BYTES = 64 * 2**20
# A volume that ITK cannot read a plane at a time is read once up to this size, and refused
# beyond it. ITK inflates a compressed MetaImage or NIfTI from the stream's start for each plane
# (a 600-frame cine took minutes, growing with the square of the planes), and reads a NRRD whole
# for any plane (its memory and time each time).
_UNSTREAMABLE_READ_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ItkInfo:
    """What an ITK header (and, for 3-D images, a plane comparison) says about the frames."""

    path: str
    n_frames: int
    dimension: int
    width: int
    height: int
    depth: int  # 1 for 2-D images
    identical_planes: bool  # a 3-D image whose planes are one repeated frame (PSFHS layout)
    spacing_mm: Spacing | None
    volume_bytes: int
    # A small 3-D volume, as read to compare its planes: kept so that its frames are not read
    # again (a PSFHS frame was read three times, ~8 ms of a batch's ~12 ms per frame outside
    # the model).
    volume: np.ndarray | None = field(default=None, compare=False, repr=False)
    # ITK cannot read a plane of it without inflating (or reading) what comes before: frames
    # beyond the first are read by reading the volume once.
    unstreamable: bool = False


def inspect_itk(path: str | os.PathLike[str]) -> ItkInfo:
    """Read the header; for 3-D images also compare planes to tell a repeated frame from a cine."""
    path = str(path)
    if not os.path.exists(path):
        raise ScanReadError(path, missing_file_reason(path))
    if os.path.isdir(path):
        raise ScanReadError(path, "is a directory, not a file")
    _refuse_other_content(path)
    image_io = itk_image_io(path)
    # (Read before ITK reads it: a header MetaIO would fail on is refused here, without MetaIO's own lines.)
    meta = _meta_header(path) if image_io == "MetaImageIO" else None
    nrrd = _nrrd_header(path) if image_io == "NrrdImageIO" else None
    if nrrd is not None:
        data_file = _nrrd_data_file(nrrd)
        if data_file:  # (a detached header's, or an attached one's that names a file all the same)
            _data_file_beside(path, data_file, "data file", "NRRD")
        elif "data file" in nrrd or "datafile" in nrrd:  # (ITK would open the header's folder)
            raise ScanReadError(path, "its NRRD header's data file is empty: damaged, or written by hand")
    reader = _reader(path)
    try:
        with itk_warnings_silenced():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ScanReadError(path, f"SimpleITK cannot read the header ({_first_line(exc)})") from None
    dimension = reader.GetDimension()
    size = reader.GetSize()
    components = reader.GetNumberOfComponents()
    if dimension not in (2, 3):
        raise ScanReadError(path, f"{dimension}-D image; 2-D frames or a 3-D stack of frames are supported")
    if components not in (1, 2, 3, 4):
        raise ScanReadError(path, f"vector image with {components} components; grey or RGB(A) is supported")
    width, height = int(size[0]), int(size[1])
    depth = int(size[2]) if dimension == 3 else 1
    if width == 0 or height == 0 or depth == 0:
        raise ScanReadError(path, f"empty image (size {tuple(size)})")
    # Before any pixel is read: a few hundred kilobytes of compressed zeros can declare a frame of
    # 30000 x 30000, which ITK would allocate and inflate.
    refusal = too_many_pixels(width, height)
    if refusal:
        raise ScanReadError(path, refusal)
    pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    volume_bytes = width * height * depth * components * _bytes_per_component(reader)
    # Refused by its header before its length is checked: that inflates the data to count them (a
    # security review's 7 MB cine of compressed zeros declaring 7.6 GB took 32 s and 2.3 GB first).
    unstreamable = _unstreamable(path, image_io, meta) if depth > 1 else None
    if unstreamable is not None and volume_bytes > _UNSTREAMABLE_READ_BYTES:
        raise ScanReadError(path, f"its {depth} frames of {width} x {height} ({volume_bytes / 2**20:.0f} MiB) "
                                  f"are beyond the {_UNSTREAMABLE_READ_BYTES // 2**20} MiB ipp-seg reads at once, "
                                  f"and {unstreamable}")
    if meta is not None:
        _check_meta_image_length(path, meta, volume_bytes)
    elif image_io == "NiftiImageIO":
        _check_nifti_length(path, volume_bytes)
    volume = _read_array(path) if 1 < depth and volume_bytes <= _WHOLE_READ_BYTES else None
    # Counting frames compares the first two planes, cheap at the stream's start; only planes
    # that begin alike send an unstreamable volume to be read whole to compare the rest.
    identical = depth > 1 and _planes_identical(path, width, height, depth, volume, unstreamable is not None)
    spacing = _spacing(reader.GetSpacing())
    if spacing is not None and nrrd is not None:
        spacing = _nrrd_spacing_mm(path, spacing, nrrd)
    n_frames = 1 if depth == 1 or identical else depth
    warn_if_turned(path, reader.GetDirection(), dimension)
    logger.debug(
        "%s: %dx%dx%d %s, %d frame(s)%s, spacing %s",
        path, width, height, depth, pixel_type, n_frames, " (repeated planes)" if identical else "", spacing,
    )
    return ItkInfo(path, n_frames, dimension, width, height, depth, identical, spacing, volume_bytes, volume,
                   unstreamable is not None)


def iter_itk_frames(info: ItkInfo, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (0-based index, greyscale frame) for each index."""
    if not indices:
        return
    if info.depth == 1 or info.identical_planes:  # (one frame: its grey levels from its own values, levels_held)
        plane = _grey(info.path, info.volume[0], True) if info.volume is not None else \
            _plane(info.path, info, 0, True)
        for index in indices:
            yield index, plane.copy()
        return
    volume = info.volume  # inspect_itk keeps every small 3-D volume it read
    if volume is None and info.unstreamable and len(indices) > 1:
        volume = _read_array(info.path)  # once, rather than inflating the stream's start for every frame
    if volume is not None:
        for index in indices:
            yield index, _grey(info.path, volume[index])
        return
    for index in indices:
        yield index, _plane(info.path, info, index)


_IMAGE_IO = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
              ".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO"}


def warn_if_turned(path: str, direction: Sequence[float], dimension: int) -> None:
    """Log a warning naming ``path`` when its direction cosines flip or turn the frame in plane.

    Viewers disagree on these (a NIfTI written with an identity affine reads as flipped in
    ITK's LPS convention), so ipp-seg measures the stored layout, and the user is told."""
    in_plane = (direction[0], direction[1], direction[dimension], direction[dimension + 1])
    if not np.allclose(in_plane, (1.0, 0.0, 0.0, 1.0), atol=1e-6):
        logger.warning("%s: its direction cosines flip or turn the frame (in-plane %s); ipp-seg measures the "
                       "pixels as stored, so check that the PS's inferior end is on the side --orientation "
                       "assumes", path, tuple(round(v, 3) for v in in_plane))


def _unstreamable(path: str, io: str, meta: tuple[dict[str, str], int, int] | None) -> str | None:
    """Why ITK cannot read the 3-D image at ``path`` (read by ImageIO ``io``) a plane at a time,
    with what to do instead (the end of a sentence); None when it can (an uncompressed MetaImage
    or NIfTI)."""
    if io == "NrrdImageIO":
        return ("ITK reads a NRRD volume whole for each frame; store it as an uncompressed MetaImage (.mha) or NIfTI "
                "(.nii), or as DICOM")
    compressed = (io == "NiftiImageIO" and path.lower().endswith(".gz")) or (
        meta is not None and meta[0].get("compresseddata", "").lower() == "true")
    if compressed:
        return ("a compressed volume is inflated from its start for each frame; store it uncompressed "
                "(.mha without CompressedData, or .nii) or as DICOM")
    return None


# The suffix under which ipp-seg reads each suffix's content (images.volume_kind's).
_ITK_FAMILIES = {".mha": ".mha", ".mhd": ".mha", ".nrrd": ".nrrd", ".nhdr": ".nrrd", ".nii": ".nii"}


def _refuse_other_content(path: str) -> None:
    """Refuse, saying what it is, a file named as a MetaImage, NRRD or NIfTI that is empty or holds
    a PNG, JPEG, BMP, TIFF or DICOM file: ITK's header checks had named none of it ("its MetaImage
    header has no NDims"), where ``.png`` and ``.dcm`` names say what such content is."""
    from .formats import is_dicom_file
    from .images import image_kind, volume_kind

    with open(path, "rb") as fh:
        head = fh.read(16)
    suffix = ".nii.gz" if path.lower().endswith(".nii.gz") else os.path.splitext(path)[1].lower()
    if not head:
        raise ScanReadError(path, "the file is empty")
    gzipped = head.startswith(b"\x1f\x8b")
    if suffix == ".nii.gz" and not gzipped:
        if volume_kind(head) == ("a NIfTI image", ".nii"):
            raise ScanReadError(path, "its content is an uncompressed NIfTI image, not the gzip-compressed one its "
                                      ".nii.gz name says: rename it .nii to read it")
    elif suffix == ".nii" and gzipped:
        raise ScanReadError(path, "its content is gzip-compressed (a compressed NIfTI?), not the .nii its name says: "
                                  "rename it .nii.gz to read it")
    kind = image_kind(head) or volume_kind(head)
    if kind is not None and _ITK_FAMILIES.get(suffix) != kind[1]:
        raise ScanReadError(path, f"its content is {kind[0]}, not the {suffix} its name says: rename it {kind[1]} "
                                  "to read it")
    if suffix == ".nii.gz" and not gzipped:
        raise ScanReadError(path, "its content is not gzip-compressed, as its .nii.gz name says: damaged, or "
                                  "another kind of file")
    if is_dicom_file(path):
        raise ScanReadError(path, f"a DICOM file named {suffix}: rename it .dcm (or give it no suffix) to read it as "
                                  "DICOM, with its calibration")


def _meta_header(path: str) -> tuple[dict[str, str], int, int]:
    """A MetaImage header's fields (keys in lower case), the offset of the data after it and the
    file's size. A header MetaIO would fail on, or longer than 64 KiB, is refused
    (:func:`_check_meta_header_whole`)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        size = os.fstat(fh.fileno()).st_size
    pairs, offset = _meta_header_lines(path, head, size <= len(head))
    _check_meta_header_whole(path, pairs)
    if head.lower().count(b"elementdatafile") > 1:  # (where MetaIO might take another one than the one checked)
        raise ScanReadError(path, "its MetaImage header names ElementDataFile more than once: damaged, or written by "
                                  "hand")
    return {key.lower(): value for key, value in pairs}, offset, size


def _meta_header_lines(path: str, head: bytes, whole_file: bool) -> tuple[list[tuple[str, str]], int]:
    """The (field, value) lines of a MetaImage header, through its ElementDataFile line, and the
    offset of what follows that line. ``head``: the file's first 64 KiB (``whole_file``: all of it).

    Read strictly, as ``Field = value`` lines of UTF-8 text without control characters or unusual
    spaces, each field once, a value not opening with another separator: a header that reads
    otherwise is refused, as MetaIO may read it another way (two QA passes got a data file outside
    the header's folder read, or a pipe waited on, past a Python reading of such headers: a field
    given after ``:``, in another case before it, with a NUL or vertical tab in its name, a second
    ``=``, a lone carriage return in its value, a vertical tab before LOCAL). A header read to the
    end of the file without an ElementDataFile gives what it has (the checks then say what is
    missing); one that runs past 64 KiB is refused."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    offset = 3 if head.startswith(b"\xef\xbb\xbf") else 0  # (a byte-order mark: MetaIO passes over its field)
    number = 0  # (the line's, for a message)
    while offset < len(head):
        number += 1
        end = head.find(b"\n", offset)
        if end < 0 and not whole_file:
            raise ScanReadError(path, "its MetaImage header runs past 64 KiB: damaged, or not written by ITK or a "
                                      "scanner")
        end = len(head) if end < 0 else end
        raw, offset = head[offset:end], end + 1
        try:
            text = raw.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not text.strip(" \t"):
            continue  # a blank line
        line = None if text is None or _UNSAFE_IN_HEADER.search(text) else _META_LINE.fullmatch(text)
        if line is None:
            if not pairs or (end == len(head) and whole_file):
                break  # another kind of file, or a copy cut short: said by what is missing
            raise ScanReadError(path, f"its MetaImage header has a line ipp-seg cannot read as Field = value (line "
                                      f"{number}: control characters, unusual spaces, another separator or "
                                      "text that is not UTF-8): written by hand or by another program; write it "
                                      "again")
        key, value = line.groups()
        twice = key.lower() in seen and key.lower() in _META_FIELDS_LOWER
        if value.startswith(("=", ":")) or twice:
            raise ScanReadError(path, f"its MetaImage header gives {key} " + (
                "twice" if twice else "a value opening with another separator") + ": written by hand or by another "
                "program; write it again")
        seen.add(key.lower())
        pairs.append((key, value))
        if key.lower() == "elementdatafile":  # (in another case, refused by the checks: MetaIO reads on)
            return pairs, min(offset, len(head))
    return pairs, len(head)


#: A MetaImage header line, ``Field = value`` (blanks and tabs around each).
_META_LINE = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*?)[ \t]*")

#: What no header line of a scanner's or ITK's holds, and Python and ITK read differently: control
#: characters but the tab (a lone carriage return among them), the no-break and other unusual
#: spaces, format characters and a byte-order mark.
_UNSAFE_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\xa0\u1680\u2000-\u200f\u2028-\u202f"
                               "\u205f-\u206f\u3000\ufeff]")


#: How MetaIO takes a MetaImage's data to follow its header (it takes no other case: "LoCaL" names a
#: file, which a QA pass's link beside the header had had read from elsewhere).
_META_LOCAL = ("LOCAL", "Local", "local")

#: The fields a MetaImage header cannot do without, as MetaIO names them (it takes no other case), in
#: the order it needs them (DimSize is read by NDims); ITK's MetaIO prints its complaint about each
#: on stderr itself, past ``itk_warnings_silenced``.
_META_REQUIRED = ("NDims", "DimSize", "ElementType", "ElementDataFile")

#: MetaImage fields MetaIO reads, as it spells them: one spelt in another case is passed over by it
#: (a QA pass: a lower-case compresseddatasize, read by ipp-seg's own checks and not by ITK, let a
#: cut .zraw through as wrong pixels, measured ok).
_META_FIELDS = _META_REQUIRED + (
    "ObjectType", "ObjectSubType", "CompressedData", "CompressedDataSize", "BinaryData", "BinaryDataByteOrderMSB",
    "ElementByteOrderMSB", "ElementSpacing", "ElementSize", "HeaderSize", "ElementNumberOfChannels", "Offset",
    "Position", "Origin", "TransformMatrix", "Orientation", "Rotation", "CenterOfRotation", "AnatomicalOrientation",
    "ElementMin", "ElementMax")


_META_FIELDS_LOWER = frozenset(field.lower() for field in _META_FIELDS)

#: How many numbers MetaIO reads for each field of numbers: "n" NDims of them, "nn" NDims squared.
_META_NUMBER_COUNTS: dict[str, int | str] = {
    "NDims": 1, "HeaderSize": 1, "ElementNumberOfChannels": 1, "CompressedDataSize": 1, "ElementMin": 1,
    "ElementMax": 1, "ElementSpacing": "n", "ElementSize": "n", "Offset": "n", "Position": "n", "Origin": "n",
    "CenterOfRotation": "n", "TransformMatrix": "nn", "Rotation": "nn", "Orientation": "nn"}
_META_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_META_WHOLE = re.compile(r"[0-9]+")  # (ASCII digits: "²" is a digit to str.isdigit, and no number to int)

#: ElementDataFile names this long or longer are refused: MetaIO opens no more than 499 bytes of one
#: (a third QA pass: the 499 first characters of a longer name named a pipe, or a link elsewhere).
_META_LONGEST_NAME = 499


def _check_meta_header_whole(path: str, pairs: list[tuple[str, str]]) -> None:
    """Refuse a MetaImage header that MetaIO would fail on, printing its own lines on stderr ("DimSize
    required and not defined", from a library that promises to print nothing): one that ends
    before its required fields (a copy cut short in its header, or another file named .mha), names
    them in another case, gives DimSize before NDims, or no whole number for each dimension.
    ``pairs``: its (field, value) lines (:func:`_meta_header_lines`)."""
    fields = dict(pairs)
    order = [key for key, _ in pairs]
    missing = [field for field in _META_REQUIRED if field not in fields]
    lower = {key.lower() for key in fields}
    other_case = [field for field in _META_FIELDS if field not in fields and field.lower() in lower]
    if missing:
        case = (f" (its {', '.join(f for f in missing if f in other_case)} in another case: MetaImage field names "
                "are case-sensitive)" if set(missing) & set(other_case) else "")
        raise ScanReadError(path, f"its MetaImage header has no {', '.join(missing)}{case}: damaged or incomplete "
                                  "(a copy cut short, or another kind of file named as a MetaImage)")
    if other_case:
        raise ScanReadError(path, f"its MetaImage header spells {', '.join(other_case)} in another case, which "
                                  "MetaImage readers pass over (field names are case-sensitive): written by hand or "
                                  "by another program; write it again")
    if order.index("DimSize") < order.index("NDims"):
        raise ScanReadError(path, "its MetaImage header gives DimSize before NDims, which MetaImage readers need "
                                  "first: damaged, or written by hand")
    ndims = fields["NDims"]
    sizes = fields["DimSize"].split()
    if not (_META_WHOLE.fullmatch(ndims) and len(sizes) == int(ndims)
            and all(_META_WHOLE.fullmatch(size) for size in sizes)):
        count = ndims if _META_WHOLE.fullmatch(ndims) else "NDims"
        raise ScanReadError(path, f"its MetaImage header's DimSize is not {count} whole numbers: damaged or incomplete")
    # A field of numbers MetaIO reads on from, into the lines after it, when short of them (a third QA
    # pass: "Offset = 0" in a 2-D header made it take the ElementDataFile line after the one checked).
    for field, count in _META_NUMBER_COUNTS.items():
        value = fields.get(field)
        wanted = {"n": int(ndims), "nn": int(ndims) ** 2}.get(count, count)
        if value is not None and not (len(value.split()) == wanted and all(
                _META_NUMBER.fullmatch(number) for number in value.split())):
            raise ScanReadError(path, f"its MetaImage header's {field} is not {wanted} number(s), as MetaImage readers "
                                      "read it: damaged, or written by hand")
    data_file = fields["ElementDataFile"]
    if not data_file or len(data_file.encode()) >= _META_LONGEST_NAME:
        # (MetaIO opens the first 499 characters of a longer name: another file than the one checked.)
        raise ScanReadError(path, "its MetaImage header's ElementDataFile is " + (
            "empty" if not data_file else f"{len(data_file.encode())} bytes long, beyond what MetaImage readers take") +
            ": damaged, or written by hand")


def _check_meta_image_length(path: str, meta: tuple[dict[str, str], int, int], volume_bytes: int) -> None:
    """Refuse a MetaImage whose data, stored in the file itself, stop short of what its header
    announces (a copy that did not finish): ITK would say only "Success" or a stale system
    error, and print its own lines on stderr."""
    fields, offset, size = meta
    expected: int | None = volume_bytes
    compressed = fields.get("compresseddata", "").lower() == "true"
    if compressed:
        try:
            expected = int(fields.get("compresseddatasize", "")) or None  # (0: ITK takes it for none given)
        except ValueError:
            expected = None  # unknown compressed size
    data_file = fields.get("elementdatafile", "")
    if data_file not in _META_LOCAL:
        _check_meta_data_file(path, data_file, fields.get("headersize", ""), expected,
                              volume_bytes if compressed and expected is None else None)
    elif expected is not None and size - offset < expected:
        raise ScanReadError(path, f"the file is cut short: {max(0, size - offset)} of the {expected} bytes of image "
                                  "data its header announces (a copy or download that did not finish)")
    elif expected is not None and compressed:
        # Inflated to count: damaged data had been read as whatever ITK's memory held, ok (a QA pass).
        produced = _inflated_bytes(path, offset, volume_bytes)
        if produced is None or produced < volume_bytes:
            raise ScanReadError(path, "its compressed image data are damaged" + (
                "" if produced is None else f": they give {produced} of the {volume_bytes} bytes of image data its "
                                            "header announces"))
    elif expected is None and compressed:
        # ITK inflates such data wrongly (it read whatever its memory held, and printed "Uncompress failed" on
        # stderr: a QA pass's label mask cut short was read as a greyscale image, and a whole one read alike).
        raise ScanReadError(path, "its compressed image data have no CompressedDataSize in the header, without which "
                                  "ITK cannot read them: write the file again (SimpleITK and ITK write it)")


def _check_meta_data_file(path: str, data_file: str, header_size: str, expected: int | None,
                          inflated: int | None = None) -> None:
    """Refuse a MetaImage header (.mhd) whose one data file (.raw) is missing or shorter than its
    image data, naming that file: ITK prints its own line on stderr and says only that it failed.
    ``inflated``: the image's bytes, for compressed data of no stated size (.zraw), whose stream is
    inflated to count them. One that is not a single regular file beside the header is refused
    unread (:func:`_data_file_beside`)."""
    data_path, size = _data_file_beside(path, data_file, "ElementDataFile", "MetaImage")
    skip = max(int(header_size), 0) if header_size.lstrip("-").isdigit() else 0  # -1: the data end the file
    if expected is not None and size - skip < expected:
        raise ScanReadError(path, f"its data file {data_file} is cut short: {max(0, size - skip)} of the "
                                  f"{expected} bytes of image data the header announces (a copy that did not finish)")
    if inflated is not None:
        produced = _inflated_bytes(data_path, skip, inflated)
        if produced is None:
            raise ScanReadError(path, f"its data file {data_file} holds damaged compressed data")
        if produced < inflated:
            raise ScanReadError(path, f"its data file {data_file} is cut short: its compressed data give {produced} of "
                                      f"the {inflated} bytes of image data the header announces (a copy that did not "
                                      "finish)")


_INFLATE_PIECE_BYTES = 16 * 2**20


def _data_file_beside(path: str, data_file: str, field_name: str, kind: str) -> tuple[str, int]:
    """The path and size of the one data file a header (``kind``: MetaImage, NRRD) at ``path``
    names in its ``field_name``, in the header's folder or one under it. Refused unread: data
    split over several files (a LIST or a numbered pattern), a file outside that folder (an
    absolute path, or one through ``..``: a header naming another patient's image, or any file
    its reader may read, had had that file measured and drawn as a scan, a security review), a
    missing one, and one that is no regular file (a pipe had hung the run)."""
    if data_file.startswith("LIST") or "%" in data_file:  # (as their readers tell them: "listing.raw" is a file)
        raise ScanReadError(path, f"its image data are split over several files ({field_name} LIST or a numbered "
                                  "pattern), which ipp-seg does not read: write the image again as one file")
    if os.path.isabs(data_file) or re.match(r"[A-Za-z]:", data_file) or ".." in re.split(r"[\\/]", data_file):
        raise ScanReadError(path, f"its data file {data_file} ({field_name}) is not in the header's folder, and "
                                  f"ipp-seg reads a {kind} header's data only from beside it (or a folder under "
                                  "it): keep the data file beside the header and name it alone")
    data_path = os.path.join(os.path.dirname(path), data_file)
    try:
        found = os.stat(data_path)
    except OSError:
        raise ScanReadError(path, f"its data file {data_file} ({field_name}) is missing; keep it beside the "
                                  f"header when copying a {kind} header and its data") from None
    if not stat.S_ISREG(found.st_mode):
        raise ScanReadError(path, f"its data file {data_file} ({field_name}) is not a regular file (a folder, a "
                                  "pipe or a device): not read")
    return data_path, found.st_size


def _inflated_bytes(path: str, offset: int, wanted: int) -> int | None:
    """How many bytes (``wanted`` or more) the zlib stream from ``offset`` of ``path`` inflates
    to, in pieces, kept nowhere; None where it is no zlib stream, or a damaged one. ITK read such
    data cut short as whatever its memory held (a QA pass: a label mask's labels, then "a
    greyscale image"). Inflated on to the stream's end (up to :data:`_INFLATE_PIECE_BYTES` past
    ``wanted``), where zlib checks its checksum: a byte changed inside the data had inflated to
    the full count, and the frame was measured (a second QA pass)."""
    inflate = zlib.decompressobj()
    produced = 0
    limit = wanted + _INFLATE_PIECE_BYTES
    with open(path, "rb") as fh:
        fh.seek(offset)
        while produced < limit and not inflate.eof:
            piece = fh.read(1 << 20)
            if not piece:
                break
            try:
                # At most _INFLATE_PIECE_BYTES at a time: a megabyte of compressed zeros inflates to a gigabyte.
                produced += len(inflate.decompress(piece, min(limit - produced, _INFLATE_PIECE_BYTES)))
                while inflate.unconsumed_tail and produced < limit:
                    produced += len(inflate.decompress(inflate.unconsumed_tail,
                                                       min(limit - produced, _INFLATE_PIECE_BYTES)))
            except zlib.error:
                return None
    # Short of the data, it is cut short (said so by the caller); with them all but no end mark (nor checksum) after
    # them, damaged (a changed bit that had made the last block look like one more).
    return produced if inflate.eof or produced >= limit or produced < wanted else None


def _check_nifti_length(path: str, volume_bytes: int) -> None:
    """Refuse a NIfTI file (.nii, or .nii.gz inflated) whose image data stop short of what its
    header announces, or whose compressed stream ends early: ITK fills what is missing with
    zeros and says nothing, and the frame was measured (``ok`` for a .nii.gz cut in half)."""
    try:
        if path.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(_NIFTI2_HEADER_BYTES)
                # Inflated to the stream's end, where gzip checks its CRC (a QA pass: a damaged .nii.gz had
                # been measured once reading stopped at the image's bytes), but not 16 MiB past the image's
                # bytes: a gzip bomb's tail had taken 21 s.
                needed = (_nifti_data_offset(head) or len(head)) + volume_bytes
                size = len(head)
                while size < needed + _INFLATE_PIECE_BYTES and (chunk := fh.read(1 << 20)):
                    size += len(chunk)
        else:
            with open(path, "rb") as fh:
                head = fh.read(_NIFTI2_HEADER_BYTES)
                size = os.fstat(fh.fileno()).st_size
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise ScanReadError(path, "the file is cut short: its compressed data end before the stream does (a copy "
                                  "or download that did not finish, or a damaged file)") from None
    offset = _nifti_data_offset(head)
    if offset is not None and size - offset < volume_bytes:
        raise ScanReadError(path, f"the file is cut short: {max(0, size - offset)} of the {volume_bytes} bytes of "
                                  "image data its header announces (a copy or download that did not finish)")


_NIFTI2_HEADER_BYTES = 540


def _nifti_data_offset(head: bytes) -> int | None:
    """Where a NIfTI-1 or NIfTI-2 header (either byte order) says the image data start
    (vox_offset); None for bytes that are neither (ITK, which read the header, then decides)."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(order + "i", head, 0)[0] == 348:
            return max(int(struct.unpack_from(order + "f", head, 108)[0]), 348)
        if len(head) >= 540 and struct.unpack_from(order + "i", head, 0)[0] == 540:
            return max(int(struct.unpack_from(order + "q", head, 168)[0]), 540)
    return None


# NRRD length units (lower case; names also in the plural) in mm.
_NRRD_UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3}
_NRRD_UNITS_MM.update({name + plural: mm for names, mm in (
    (("millimeter", "millimetre"), 1.0), (("centimeter", "centimetre"), 10.0), (("meter", "metre"), 1000.0),
    (("micron", "micrometer", "micrometre"), 1e-3)) for name in names for plural in ("", "s")})


# Kinds of NRRD axes that run through space (the others, such as RGB-color or vector, hold a pixel's channels).
_NRRD_SPACE_KINDS = {"domain", "space", "time", "???", "none"}


def _nrrd_spacing_mm(path: str, spacing: Spacing, fields: dict[str, str]) -> Spacing | None:
    """ITK's spacing of a NRRD file in mm, by its header's units (``fields``: :func:`_nrrd_header`):
    ``space units`` (one per world axis, with ``space directions``) or else ``units`` (one per
    image axis, with ``spacings``). No units means mm; a unit not known, or world axes in
    different units, means no calibration."""
    space_units = re.findall(r'"([^"]*)"', fields.get("space units", ""))
    axis_units = re.findall(r'"([^"]*)"', fields.get("units", ""))
    # One per axis, the colour axis of an RGB NRRD included: the image's x and y are the first
    # two that kinds do not mark as a colour or vector axis.
    kinds = fields.get("kinds", "").split()
    if kinds and len(kinds) == len(axis_units):
        axis_units = [unit for unit, kind in zip(axis_units, kinds) if kind.lower() in _NRRD_SPACE_KINDS]
    axis_units = axis_units[:2]
    units = space_units or axis_units
    if not units:
        return spacing
    # An empty unit ("" or "???", as Teem writes for none) states nothing: ITK's mm, as without units.
    factors = [1.0 if unit.strip() in ("", "???", "none") else _NRRD_UNITS_MM.get(unit.strip().lower())
               for unit in units]
    if None in factors or (space_units and len(set(factors)) > 1):
        # space directions mix world axes, so only one unit for all of them converts simply.
        logger.warning("%s: its NRRD units %s are not a length ipp-seg knows (mm, cm, m, um) or differ between "
                       "axes; its spacing is taken as unknown", path, " ".join(f'"{u}"' for u in units))
        return None
    fx, fy = (factors[0], factors[0]) if space_units else (factors + factors)[:2]
    return (spacing[0] * fx, spacing[1] * fy)


def _nrrd_header(path: str) -> dict[str, str]:
    """The fields of a NRRD header (attached, up to the first blank line, or a detached .nhdr),
    keys in lower case; key/value pairs (``key:=value``) and comments are skipped. A header that
    runs past its first 64 KiB is refused (ITK reads on: a QA pass's 64 KiB of comments before a
    data file outside the header's folder had had that file read), as ITK, its lines ended by CR,
    LF or both."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return {}
    lines = head.splitlines()
    if len(head) < size and b"" not in lines[1:]:  # (no blank line ends it within 64 KiB, nor the file's end)
        raise ScanReadError(path, "its NRRD header runs past 64 KiB: damaged, or not written by ITK or a scanner")
    fields: dict[str, str] = {}
    for raw in lines[1:]:  # the first line is the magic, NRRD000X
        if not raw:
            break
        if raw.startswith(b"#"):
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = "\x00"  # (refused below)
        if _UNSAFE_IN_HEADER.search(line):
            # Read otherwise by ITK (a QA pass: a vertical tab or no-break space around a data file's name).
            raise ScanReadError(path, "its NRRD header has a line with control characters, unusual spaces or text "
                                      "that is not UTF-8: written by hand or by another program; write it again")
        key, sep, value = line.partition(": ")
        if sep and ":=" not in key:
            named = value.lstrip(" \t")  # (as ITK reads it: from its first character that is no blank)
            if key.strip().lower() in ("data file", "datafile") and (named != named.rstrip() or named == "-"):
                # ITK takes the name as it stands (a QA pass: "good.raw " was a pipe beside the header) and "-"
                # for the standard input.
                raise ScanReadError(path, f"its data file {named!r} (data file) ends with a blank or is the "
                                          "standard input: name the data file beside the header alone")
            fields[key.strip().lower()] = value.strip()
    return fields


def detached_data_file(path: str | os.PathLike[str]) -> str | None:
    """The path of the file a MetaImage or NRRD header at ``path`` keeps its image data in, where
    that is another file (a ``.mhd`` and its ``.raw``, a ``.nhdr`` and its data): the bytes a
    scan's ``file_sha256`` and stamp must cover besides the header's, that a data file changed
    under its header is told. None for a file that holds its own data (``.mha``, an attached
    NRRD, nearly always: a ``.mha`` or ``.nrrd`` may name a data file too, as a QA pass found,
    and MetaIO reads it), for anything but a regular file (a pipe is never opened), for other
    formats, and for a header that is refused (its row says why)."""
    path = str(path)
    image_io = itk_image_io(path)
    try:
        if image_io not in ("MetaImageIO", "NrrdImageIO") or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        if _holds_its_own_data(path):
            return None
        if image_io == "MetaImageIO":
            name, field_name, kind = _meta_header(path)[0].get("elementdatafile", ""), "ElementDataFile", "MetaImage"
            if name in _META_LOCAL:
                return None
        else:
            name, field_name, kind = _nrrd_data_file(_nrrd_header(path)), "data file", "NRRD"
        return _data_file_beside(path, name, field_name, kind)[0] if name else None
    except (ScanReadError, OSError, ValueError):  # (ValueError: text that is no UTF-8, among others)
        return None


def _holds_its_own_data(path: str) -> bool:
    """Whether the first 4 KiB of a ``.mha`` (``ElementDataFile = LOCAL``) or an attached NRRD (a
    header ended by a blank line without a data file) show that the file holds its image data:
    read instead of the whole header, for every such file a batch's resume stamps."""
    lower = path.lower()
    if not lower.endswith((".mha", ".nrrd")):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096).lower()
    if lower.endswith(".mha"):
        named = re.search(rb"(?m)^[ \t]*elementdatafile[ \t]*=[ \t]*(\S*)", head)
        return named is not None and named.group(1) == b"local"
    end = re.search(rb"\r?\n\r?\n", head)
    return end is not None and b"data file" not in head[:end.start()] and b"datafile" not in head[:end.start()]


def _nrrd_data_file(fields: dict[str, str]) -> str:
    """The data file a NRRD header's fields (:func:`_nrrd_header`) name, by either spelling; ""
    for none."""
    return fields.get("data file", fields.get("datafile", ""))


def itk_image_io(path: str) -> str:
    """The SimpleITK ImageIO for a file by its suffix, in any letter case ("" lets ITK choose):
    ITK picks readers by lower-case suffix only, so a Windows export's SCAN.MHA would not open."""
    lower = path.lower()
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]
    return _IMAGE_IO.get(suffix, "")


def check_itk_name(path: str) -> str:
    """The name to give SimpleITK for ``path``, a file that can be opened: its bytes read as
    UTF-8, as SimpleITK encodes a name (under a Latin-1 locale Python's own name for a UTF-8 é
    had led SimpleITK to another file, and the scan was called damaged). Bytes that are not
    UTF-8 (a Latin-1 name from an old export) are refused: they abort the whole process inside
    SimpleITK, a batch's worker with it. A file that cannot be opened is named so, where ITK
    would call it damaged.

    Raises:
        ScanReadError: naming what to do.
    """
    name = utf8_name(path)
    if name is None:
        # Which part to rename: a folder's name had been blamed on the file's.
        file_name_ok = utf8_name(os.path.basename(os.fsencode(path))) is not None
        what, rename = (("the name of a folder it is in", "rename that folder (or copy the file elsewhere)")
                        if file_name_ok else ("its name", "rename the file"))
        raise ScanReadError(path, f"{what} is not UTF-8 (a Latin-1 name from an old export?), which SimpleITK "
                                  f"cannot open (it aborts the process): {rename}")
    try:  # (not blocking on a pipe: the readers refuse those, but not before they try it)
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as exc:
        raise ScanReadError(path, open_failure_reason(path, exc)) from None
    return name


def _reader(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(check_itk_name(path))
    reader.SetImageIO(itk_image_io(path))
    return reader


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[-1].startswith("Reason:"):
        # ITK's "Reason:" is the system's last error, stale after a short read ("Success").
        return "the file is damaged or incomplete"
    return lines[-1] if lines else type(exc).__name__


def _bytes_per_component(reader: sitk.ImageFileReader) -> int:
    # The pixel type's name gives the component size; only used to choose how to read.
    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    for token, size in (("64", 8), ("32", 4), ("16", 2), ("8", 1)):
        if token in name:
            return size
    return 8


def _read_array(path: str) -> np.ndarray:
    name = check_itk_name(path)
    try:
        with itk_warnings_silenced():
            return sitk.GetArrayFromImage(sitk.ReadImage(name, imageIO=itk_image_io(path)))
    except RuntimeError as exc:
        raise ScanReadError(path, f"SimpleITK cannot read the pixels ({_first_line(exc)})") from None


def _read_plane_array(path: str, width: int, height: int, index: int) -> np.ndarray:
    reader = _reader(path)
    reader.SetExtractIndex([0, 0, index])
    reader.SetExtractSize([width, height, 0])  # size 0 collapses the third axis
    try:
        with itk_warnings_silenced():
            return sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        raise ScanReadError(path, f"SimpleITK cannot read plane {index} ({_first_line(exc)})") from None


def _plane(path: str, info: ItkInfo, index: int, single_frame: bool = False) -> np.ndarray:
    if info.depth > 1:
        return _grey(path, _read_plane_array(path, info.width, info.height, index), single_frame)
    arr = _read_array(path)
    if info.dimension == 3:
        arr = arr[0]  # a 3-D image of depth 1 comes back as (1, H, W[, C])
    return _grey(path, arr, single_frame)


def _grey(path: str, arr: np.ndarray, single_frame: bool = False) -> np.ndarray:
    """A plane as a greyscale frame; a ``single_frame`` file's on the bits its values need
    (:func:`levels_held`), a cine's frames all on their type's range (a QA pass: frames chosen
    apart had read one at a quarter of another's brightness)."""
    try:
        grey = drop_alpha_to_grey(arr, order="rgb")
        return to_output(grey, **(levels_held(grey) if single_frame else {}))
    except ValueError as exc:
        raise ScanReadError(path, str(exc)) from None


def levels_held(grey: np.ndarray) -> dict:
    """The grey levels of an ITK frame of integers wider than 8 bits, which states no Bits
    Stored: the fewest of 8, 10, 12, 14 or 16 bits (up to its type's) that hold its values, read
    unsigned where none is negative, as :func:`~ipp_seg.io.greyscale.to_output` takes them
    (``bits_stored``, ``signed``); its type's own range ({}) for other frames. An 8-bit frame
    saved as int16 had read as a flat grey of 127.5 to 128.5 (a reader's review), and a 12-bit one
    saved as uint16 would read at a sixteenth of its brightness (``frame_dark``)."""
    if grey.dtype.kind not in "iu" or grey.dtype.itemsize == 1 or grey.size == 0 or int(grey.min()) < 0:
        return {}
    high = int(grey.max())
    bits = next((b for b in (8, 10, 12, 14, 16) if high < 1 << b and b <= 8 * grey.dtype.itemsize), None)
    return {} if bits is None else {"bits_stored": bits, "signed": False}


def _planes_identical(path: str, width: int, height: int, depth: int, volume: np.ndarray | None,
                      unstreamable: bool = False) -> bool:
    if volume is None and unstreamable:  # plane by plane each read would inflate what comes before it
        if not np.array_equal(_read_plane_array(path, width, height, 0), _read_plane_array(path, width, height, 1)):
            return False
        volume = _read_array(path)
    if volume is not None:
        return all(np.array_equal(volume[0], volume[k]) for k in range(1, depth))
    first = _read_plane_array(path, width, height, 0)
    # Stops at the first differing plane, which for a real cine is plane 1.
    return all(np.array_equal(first, _read_plane_array(path, width, height, k)) for k in range(1, depth))


def _spacing(spacing: Sequence[float]) -> Spacing | None:
    sx, sy = float(spacing[0]), float(spacing[1])
    if not (sx > 0 and sy > 0 and np.isfinite(sx) and np.isfinite(sy)):
        return None
    if sx == 1.0 and sy == 1.0:
        return None  # ITK's default, not a calibration
    return (sx, sy)
