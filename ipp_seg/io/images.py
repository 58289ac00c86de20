"""PNG, JPEG, BMP and TIFF frames through OpenCV: 8 or 16 bit, grey or colour, alpha dropped.

These formats carry no ultrasound calibration, so their spacing is unknown unless the caller
gives one. A multi-page TIFF is read as its first page (a warning says so). An EXIF orientation
(JPEG, PNG eXIf chunk, TIFF Orientation) is applied, so that the frame measured is the one
viewers show.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from .errors import ScanReadError, missing_file_reason, open_failure_reason
from .frames import MAX_FRAME_PIXELS, too_many_pixels
from .greyscale import GreyPixels, colour_marks, drop_alpha_to_grey, to_output

logger = logging.getLogger(__name__)

_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
_BIGTIFF_SIGNATURES = (b"II+\x00", b"MM\x00+")
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ: a bare JPEG 2000 codestream
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the JP2 file format's signature box
# Start-of-frame markers, whose segment gives the image's size: the JPEG processes (baseline,
# extended, progressive, lossless; Huffman or arithmetic; C4 (DHT), C8 (JPG) and CC (DAC) are
# not frames) and JPEG-LS's (0xF7, as DICOM encapsulates it).
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


#: The largest image file (PNG, JPEG, BMP, TIFF) read: 40 million pixels of 16-bit RGBA stored
#: uncompressed take 320 MB.
MAX_IMAGE_FILE_BYTES = 512 * 2**20


def read_image_pixels(path: str | os.PathLike[str]) -> np.ndarray | GreyPixels:
    """Decode an image file into one greyscale frame (uint8, or float32 0-255 for 16-bit), with
    its :func:`~ipp_seg.io.greyscale.colour_marks` (a :class:`~ipp_seg.io.greyscale.GreyPixels`)
    where a colour image has any."""
    path = str(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
        size = os.stat(path).st_size
        if size > MAX_IMAGE_FILE_BYTES:
            # Read whole to be decoded: a PNG padded to 4 GiB had taken 4.3 GB first (a security review).
            raise ScanReadError(path, f"the file holds {size:,} bytes, beyond the "
                                      f"{MAX_IMAGE_FILE_BYTES // 2**20} MiB of an image file ipp-seg reads (a frame "
                                      f"of at most {MAX_FRAME_PIXELS // 1_000_000} million pixels, uncompressed, takes "
                                      "less): damaged, or not a single frame")
        # Decoding from bytes, not cv2.imread, so that any path the OS accepts works.
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ScanReadError(path, missing_file_reason(path)) from None
    except IsADirectoryError:
        raise ScanReadError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise ScanReadError(path, open_failure_reason(path, exc)) from None
    if data.size == 0:
        raise ScanReadError(path, "the file is empty")
    check_image_bytes(path, data)
    written_as = ipp_seg_output_kind(data[:4096].tobytes())
    if written_as:
        article = "an" if written_as[:1] in "aeiou" else "a"
        raise ScanReadError(path, f"{article} {written_as} that ipp-seg wrote, not a scan: give the scan it was made "
                                  "from")
    # Chosen by content, not suffix, so that a JPEG saved under a .png name keeps its orientation.
    # JPEG: let OpenCV apply the EXIF orientation and give libjpeg's luma directly. Others:
    # keep depth and channels as stored (alpha is removed below); IMREAD_UNCHANGED skips a PNG's
    # eXIf orientation, applied below (OpenCV's TIFF decoder applies the TIFF one itself).
    is_jpeg = data[:3].tobytes() == _JPEG_SIGNATURE
    jpeg_in_colour = is_jpeg and check_jpeg_data(path, data)
    flags = cv2.IMREAD_GRAYSCALE if is_jpeg else cv2.IMREAD_UNCHANGED
    try:
        arr = cv2.imdecode(data, flags)
    except cv2.error:
        arr = None
    if arr is None:
        raise ScanReadError(path, f"OpenCV cannot decode it as an image (damaged or not a {suffix or 'known'} file)")
    if data[:4].tobytes() in _TIFF_SIGNATURES:
        _warn_if_multipage(path)
        arr = _deep_tiff_values(path, data, arr)
    try:
        grey = to_output(drop_alpha_to_grey(arr, order="bgr"))
    except ValueError as exc:
        raise ScanReadError(path, str(exc)) from None
    if is_jpeg:  # (luma decoded directly, as before; the colours, where it holds any, for their marks alone)
        colour = cv2.imdecode(data, cv2.IMREAD_COLOR) if jpeg_in_colour else None
        marks = None if colour is None else colour_marks(colour[:, :, ::-1])
    else:
        marks = colour_marks(arr[:, :, 2::-1]) if arr.ndim == 3 and arr.shape[2] in (3, 4) else None
    grey = as_displayed(grey, data, path)
    return grey if marks is None else GreyPixels(grey, as_displayed(marks, data, path))


def _deep_tiff_values(path: str, data: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """``arr``, OpenCV's decoding of the TIFF bytes ``data``, with its grey levels the right way
    round: OpenCV inverts an 8-bit WhiteIsZero TIFF (Photometric 0: the highest value black) and
    reads its separate colour planes (PlanarConfiguration 2), but not those of a deeper one,
    which came back as a negative, or with the red plane in every channel (a reader's review).
    A deeper WhiteIsZero TIFF is inverted here; one of separate planes is refused."""
    if arr.dtype == np.uint8:
        return arr
    tags = _tiff_first_ifd(memoryview(data), (258, 262, 284))  # BitsPerSample, Photometric, PlanarConfiguration
    depth = f"{8 * arr.dtype.itemsize}-bit"
    if tags.get(284) == 2 and arr.ndim == 3:
        raise ScanReadError(path, f"a {depth} TIFF whose colour planes are stored apart (PlanarConfiguration 2), "
                                  "which OpenCV reads wrongly: save it with its planes interleaved, or as PNG")
    if tags.get(262) != 0:
        return arr
    if not np.issubdtype(arr.dtype, np.unsignedinteger):
        kind = "floating-point" if arr.dtype.kind == "f" else "signed"
        raise ScanReadError(path, f"a {depth} TIFF of {kind} values "
                                  "stored white-is-zero (Photometric 0), which ipp-seg does not read: save it "
                                  "black-is-zero, or as PNG")
    bits = tags.get(258)
    top = (1 << bits) - 1 if bits and bits <= 8 * arr.dtype.itemsize else np.iinfo(arr.dtype).max
    return (top - np.minimum(arr, top)).astype(arr.dtype)


def as_displayed(image: np.ndarray, data: np.ndarray, path: str | os.PathLike[str] = "") -> np.ndarray:
    """``image``, decoded from the file bytes ``data`` (uint8) without orientation, turned as a
    PNG's eXIf orientation says viewers show it; as it is for other files (OpenCV turns a JPEG
    or TIFF itself)."""
    if data[:8].tobytes() != PNG_SIGNATURE:
        return image
    orientation = png_exif_orientation(memoryview(data))
    if orientation in (None, 1):
        return image
    logger.debug("%s: applying the PNG's EXIF orientation %d", path, orientation)
    return apply_exif_orientation(image, orientation)


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` (stored layout) as displayed under EXIF Orientation 1-8; other values leave it."""
    if orientation in (5, 6, 7, 8):
        # 5: transpose; 6: turn 90 degrees clockwise; 7: transverse; 8: turn 90 anticlockwise.
        image = np.swapaxes(image, 0, 1)
        image = {5: image, 6: image[:, ::-1], 7: image[::-1, ::-1], 8: image[::-1]}[orientation]
    elif orientation in (2, 3, 4):
        # 2: mirrored left-right; 3: turned 180 degrees; 4: mirrored top-bottom.
        image = {2: image[:, ::-1], 3: image[::-1, ::-1], 4: image[::-1]}[orientation]
    return np.ascontiguousarray(image)


def png_exif_orientation(data: bytes | memoryview) -> int | None:
    """The EXIF Orientation (tag 0x0112) of the first eXIf chunk of PNG bytes, or None when there
    is none or it cannot be parsed. The chunk holds a TIFF structure, little or big endian."""
    for kind, start, end in _png_chunks(data):
        if kind == b"eXIf" and end <= len(data):
            return tiff_orientation(bytes(data[start + 8:end - 4]))
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) that ipp-seg's reader applies to the image file of bytes
    ``data`` (a JPEG's APP1 Exif, a PNG's eXIf chunk, a TIFF's Orientation); 1, as stored, for
    one that states none and for other formats. ``train`` compares an image's with its mask's:
    a JPEG turned for display beside a mask drawn on its stored pixels had trained misaligned
    (a research fellow's pass)."""
    if data[:8] == PNG_SIGNATURE:
        found = png_exif_orientation(memoryview(data))
    elif data[:3] == _JPEG_SIGNATURE:
        found = _jpeg_exif_orientation(data)
    elif data[:4] in _TIFF_SIGNATURES:
        found = tiff_orientation(data)
    else:
        found = None
    return found or 1


def _jpeg_exif_orientation(data: bytes) -> int | None:
    """The Orientation of a JPEG's APP1 Exif segment (as libjpeg's readers find it: among the
    marker segments before the first scan), None without one."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # (fill byte)
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no header segment after it
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return tiff_orientation(data[pos + 10:pos + 2 + length])
        pos += 2 + length
    return None


def tiff_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of the first IFD of TIFF-structured bytes (EXIF), None if absent."""
    if tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]  # some writers keep the JPEG APP1 prefix in a PNG's eXIf chunk
    value = _tiff_first_ifd(tiff, (0x0112,)).get(0x0112)
    return value if value is not None and 1 <= value <= 8 else None


def _tiff_first_ifd(tiff: bytes | memoryview, tags: Sequence[int]) -> dict[int, int]:
    """The first value of each of ``tags`` in the first IFD of TIFF or BigTIFF bytes, for entries
    of an integer type (SHORT, LONG, LONG8) whose value is held in the entry itself; tags absent,
    of another type or past the bytes are left out (all of them for bytes that are not TIFF)."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        return {}
    version = struct.unpack_from(order + "H", tiff, 2)[0]
    if version == 42:  # classic TIFF: 12-byte entries, 4 bytes of value
        ifd, count_size, entry_size, value_size = struct.unpack_from(order + "I", tiff, 4)[0], 2, 12, 4
    elif version == 43 and len(tiff) >= 16:  # BigTIFF: 20-byte entries, 8 bytes of value
        ifd, count_size, entry_size, value_size = struct.unpack_from(order + "Q", tiff, 8)[0], 8, 20, 8
    else:
        return {}
    if ifd + count_size > len(tiff):
        return {}
    count = struct.unpack_from(order + ("H" if count_size == 2 else "Q"), tiff, ifd)[0]
    first = ifd + count_size
    values: dict[int, int] = {}
    for pos in range(first, min(first + entry_size * count, len(tiff) - entry_size + 1), entry_size):
        tag, kind = struct.unpack_from(order + "HH", tiff, pos)
        if tag not in tags or tag in values:
            continue
        n = struct.unpack_from(order + ("I" if value_size == 4 else "Q"), tiff, pos + 4)[0]
        fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
        # More values than the entry holds are stored elsewhere, at an offset: not read here.
        if fmt is not None and 1 <= n and struct.calcsize(fmt) * n <= value_size:
            values[tag] = struct.unpack_from(order + fmt, tiff, pos + 4 + value_size)[0]
    return values


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_image_bytes(path: str | os.PathLike[str], data: np.ndarray) -> None:
    """Raise :class:`ScanReadError` for a file's bytes (uint8) that OpenCV must not be given:
    content other than PNG, JPEG, BMP or TIFF (:func:`check_image_format`), a damaged PNG
    (:func:`check_png_structure`), or a header that declares too many pixels
    (:func:`check_declared_size`). Nothing is decoded."""
    check_image_format(path, data)
    check_png_structure(path, data)
    check_declared_size(path, data)


# Formats OpenCV also decodes, told by their first bytes: (signature, offset, name). Under an
# image suffix (a WebP a browser saved as .png, say) their headers would go unchecked for size.
_OTHER_SIGNATURES = (
    (b"WEBP", 8, "a WebP image"), (b"GIF8", 0, "a GIF image"), (_JP2_SIGNATURE, 0, "a JPEG 2000 image"),
    (_J2K_CODESTREAM, 0, "a JPEG 2000 codestream"), (b"\x76\x2f\x31\x01", 0, "an OpenEXR image"),
    (b"#?RADIANCE", 0, "a Radiance HDR image"), (b"#?RGBE", 0, "a Radiance HDR image"),
    (b"ftyp", 4, "a HEIF/AVIF image or a video"), (b"DICM", 128, "a DICOM file"), (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
)


def check_jpeg_data(path: str | os.PathLike[str], data: np.ndarray) -> bool:
    """Raise :class:`ScanReadError` for JPEG bytes (uint8) whose compressed data does not decode
    whole. OpenCV's libjpeg only warns of such data on stderr and fills what it could not decode
    with grey: a JPEG with 200 bytes changed mid-stream had been measured as a sound frame, its
    AoP 1.3 deg and its HSD 21 % off. Pillow decodes it apart, strictly. Returns whether the JPEG
    may hold colour: False where Pillow decoded it as one grey channel (then no colour decode is
    owed for its marks), True otherwise. Data that decodes, but ends before the image does, is
    refused too: its frame ends in :func:`grey_fill_blocks`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            image.load()
            filled = grey_fill_blocks(np.asarray(image)) if image.mode in ("L", "RGB") else 0
            in_colour = image.mode != "L"
    except Image.DecompressionBombError:
        return True  # (its size is check_declared_size's to judge, which it has)
    except (OSError, SyntaxError, ValueError) as exc:
        said = " ".join(str(exc).split())
        if "broken data stream" not in said and "truncated" not in said:
            return True  # a kind Pillow does not decode (lossless, 12-bit): OpenCV's to read, as before
        raise ScanReadError(path, "damaged JPEG: its compressed data does not decode whole (changed in transfer or "
                                  f"storage, or cut short: {said[:80]})") from None
    if filled:
        raise ScanReadError(path, f"damaged JPEG: its compressed data ends before the image does (its last {filled} "
                                  "8 x 8 blocks decode as the flat grey 128 a decoder puts where data is missing: "
                                  "changed in transfer or storage, or cut short); if the image truly ends in flat "
                                  "mid-grey, save it as PNG")
    return in_colour


def grey_fill_blocks(pixels: np.ndarray) -> int:
    """How many 8 x 8 blocks, in the order a JPEG stores them, end ``pixels`` (a decoded JPEG in
    its stored layout, (H, W) or (H, W, 3) uint8) as exactly 128 in every pixel and channel: what
    libjpeg fills in for data it could not read (an end-of-image, restart or comment marker inside
    the data; often zeroed bytes), with only a warning on stderr. 0 for a frame that does not end
    so. No PSFHS frame, saved as JPEG at quality 20-95 in grey or colour, ends in one such block;
    a marker put inside the data of 200 such files gave one in every case (RESULTS.md)."""
    mid_grey = pixels == 128
    if mid_grey.ndim == 3:
        mid_grey = mid_grey.all(axis=2)
    if mid_grey.size == 0 or not mid_grey[-1, -1]:
        return 0  # (nearly every frame: no block to look at)
    rows, columns = mid_grey.shape
    padded = np.ones((-(-rows // 8) * 8, -(-columns // 8) * 8), dtype=bool)  # edge blocks: their pixels alone
    padded[:rows, :columns] = mid_grey
    blocks = padded.reshape(padded.shape[0] // 8, 8, padded.shape[1] // 8, 8).all(axis=(1, 3)).ravel()
    others = np.flatnonzero(~blocks)
    return int(blocks.size - (others[-1] + 1 if others.size else 0))


# What a file that is none of them is read as, by its suffix once renamed.
_IMAGE_KINDS = ((PNG_SIGNATURE, "a PNG image", ".png"), (_JPEG_SIGNATURE, "a JPEG image", ".jpg"),
                (b"BM", "a BMP image", ".bmp"))


def image_kind(head: bytes) -> tuple[str, str] | None:
    """(what, suffix) for the first bytes of a PNG, JPEG, BMP or TIFF file (``("a PNG image",
    ".png")``); None for any other."""
    for signature, what, suffix in _IMAGE_KINDS:
        if head[:len(signature)] == signature:
            return what, suffix
    if head[:4] in _TIFF_SIGNATURES + _BIGTIFF_SIGNATURES:
        return "a TIFF image", ".tif"
    return None


def volume_kind(head: bytes) -> tuple[str, str] | None:
    """(what, suffix) for the first bytes of a MetaImage, NRRD or NIfTI-1 file; None for others."""
    if head.startswith((b"ObjectType", b"NDims")):
        return "a MetaImage", ".mha"
    if head.startswith(b"NRRD000"):
        return "a NRRD image", ".nrrd"
    if head[:4] in (struct.pack("<i", 348), struct.pack(">i", 348)):  # (NIfTI-1's header size, its first field)
        return "a NIfTI image", ".nii"
    return None


def check_image_format(path: str | os.PathLike[str], data: np.ndarray) -> None:
    """Raise :class:`ScanReadError` for bytes (uint8) that are not a PNG, JPEG, BMP or TIFF file,
    naming what they are where their first bytes say so."""
    head = data[:132].tobytes()
    if image_kind(head) is not None:
        return
    suffix = os.path.splitext(os.fspath(path))[1].lower() or "(no suffix)"
    volume = volume_kind(head)
    if volume is not None:  # (one ipp-seg reads under its own name)
        raise ScanReadError(path, f"its content is {volume[0]}, not the {suffix} its name says: rename it "
                                  f"{volume[1]} to read it")
    named = next((name for signature, offset, name in _OTHER_SIGNATURES
                  if head[offset:offset + len(signature)] == signature), None)
    if named is None and len(head) > 2 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        named = "a PNM (PBM/PGM/PPM) image"
    if named == "a DICOM file":
        raise ScanReadError(path, f"a DICOM file named {suffix}: rename it .dcm (or give it no suffix) to read it "
                                  "as DICOM, with its calibration")
    if named:
        raise ScanReadError(path, f"its content is {named}, not the {suffix} its name says: ipp-seg reads PNG, "
                                  "JPEG, BMP and TIFF images; save it as PNG")
    raise ScanReadError(path, f"not a PNG, JPEG, BMP or TIFF image (its first bytes are none of theirs): "
                              f"damaged, or another kind of file named {suffix}")


def check_declared_size(path: str | os.PathLike[str], data: np.ndarray) -> None:
    """Raise :class:`ScanReadError` for a file's bytes (uint8) whose header declares a frame beyond
    :data:`~ipp_seg.io.frames.MAX_FRAME_PIXELS`, before anything is decoded: a few kilobytes of
    JPEG or PNG can declare 30000 x 30000 pixels, which OpenCV would allocate and inflate (gigabytes,
    minutes). A header this cannot parse passes, for the decoder to judge."""
    size = declared_image_size(memoryview(data))
    refusal = too_many_pixels(*size) if size is not None else None
    if refusal:
        raise ScanReadError(path, refusal)


def declared_image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) as the header of PNG, JPEG, BMP or TIFF bytes declares them, without
    decoding; None for other content or a header that cannot be parsed."""
    head = bytes(data[:8])
    try:
        if head == PNG_SIGNATURE:
            return _png_size(data)
        if head[:3] == _JPEG_SIGNATURE:
            return _jpeg_size(bytes(data))  # bytes, to search for markers
        if head[:2] == b"BM":
            return _bmp_size(data)
        if head[:4] in _TIFF_SIGNATURES + _BIGTIFF_SIGNATURES:
            tags = _tiff_first_ifd(data, (256, 257))  # ImageWidth, ImageLength
            return (tags[256], tags[257]) if len(tags) == 2 else None
    except (struct.error, IndexError):
        return None
    return None


def _png_size(data: bytes | memoryview) -> tuple[int, int] | None:
    for kind, start, end in _png_chunks(data):  # IHDR is the first chunk
        if kind == b"IHDR" and end - start >= 12 + 8 and end <= len(data):
            return struct.unpack_from(">II", data, start + 8)
        return None
    return None


def compressed_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a compressed frame's own header declares: a JPEG or JPEG-LS stream's
    start of frame, or a JPEG 2000 codestream's SIZ segment; None for anything else."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] == _J2K_CODESTREAM:
        return _j2k_size(data, 0)
    if data[:12] == _JP2_SIGNATURE:  # a JP2 file: its header box, and the codestream in it
        sizes = [size for size in (_j2k_size(data, data.find(_J2K_CODESTREAM)), _jp2_header_size(data)) if size]
        return (max(w for w, _ in sizes), max(h for _, h in sizes)) if sizes else None
    return None


def _j2k_size(data: bytes, at: int) -> tuple[int, int] | None:
    """The image size in a JPEG 2000 codestream's SIZ segment, the codestream starting at ``at``."""
    if at < 0 or len(data) < at + 24:  # SOC, SIZ marker, Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, at + 8)
    return max(0, xsiz - xosiz), max(0, ysiz - yosiz)


def _jp2_header_size(data: bytes) -> tuple[int, int] | None:
    """The size a JP2 file's image header box (``ihdr``: height, then width) gives."""
    at = data.find(b"ihdr")
    if at < 0 or len(data) < at + 12:
        return None
    height, width = struct.unpack_from(">II", data, at + 4)
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in a JPEG's first start-of-frame segment; other segments are skipped by their
    lengths. Stray bytes between segments are skipped to the next 0xFF, as libjpeg does (it only
    warns), so that padding cannot hide the frame header from this check."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return None
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # no length: stuffed zero, TEM, RSTn, SOI
            pos += 2
        elif marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            return None
        elif marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)  # after length and precision
            return width, height
        else:
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            if length < 2:
                return None
            pos += 2 + length
    return None


def _bmp_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """The size in a BMP's info header: 16-bit in the OS/2 1.x core header (12 bytes), else 32-bit
    signed, where a negative height means rows stored top down."""
    header_size = struct.unpack_from("<I", data, 14)[0]
    if header_size == 12:
        return struct.unpack_from("<HH", data, 18)
    if header_size >= 16:
        width, height = struct.unpack_from("<ii", data, 18)
        return abs(width), abs(height)
    return None


# The text chunk ipp-seg puts in every PNG it writes, naming what the PNG is ("overlay", "label
# mask"): `predict --out` into a folder of scans had left overlays there that a later `batch`
# measured as scans (a second row for the same frame, 0.4 deg and its HSD 2.4 times off).
OUTPUT_PNG_KEYWORD = b"ipp-seg output"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk: length, type, data, checksum."""
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def png_text_chunk(keyword: bytes, text: str) -> bytes:
    """A PNG tEXt chunk (length, type, data, checksum) holding ``keyword`` and Latin-1 ``text``."""
    return _png_chunk(b"tEXt", keyword + b"\0" + text.encode("latin-1"))


def png_any_text_chunk(keyword: bytes, text: str) -> bytes:
    """:func:`png_text_chunk` where Latin-1 holds ``text``, else a PNG iTXt chunk holding it as
    UTF-8, uncompressed (a model file named in another script)."""
    try:
        return png_text_chunk(keyword, text)
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", keyword + b"\0\0\0" + b"\0" + b"\0" + text.encode("utf-8", "backslashreplace"))


def with_text_chunks(png: bytes, chunks: Sequence[bytes]) -> bytes:
    """PNG bytes with ``chunks`` (:func:`png_text_chunk`) put right after the header chunk, where
    a reader of the file's first bytes finds them (:func:`ipp_seg_output_kind`)."""
    if png[:8] != PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise ValueError("not PNG bytes that start with their header chunk")
    after_header = len(PNG_SIGNATURE) + 12 + int.from_bytes(png[8:12], "big")
    return png[:after_header] + b"".join(chunks) + png[after_header:]


def ipp_seg_output_kind(head: bytes) -> str | None:
    """What ipp-seg wrote a PNG as ("overlay", "label mask"), read from the file's first bytes
    (its text chunks before the image data); None for any other file, and for a PNG that
    ipp-seg did not mark (one written before 0.2.10, or saved again by another program)."""
    return next((text for kind, keyword, text in _text_chunks_before_image(head)
                 if kind == b"tEXt" and keyword == OUTPUT_PNG_KEYWORD), None)


def _text_chunks_before_image(head: bytes) -> Iterator[tuple[bytes, bytes, str]]:
    """(chunk type, keyword, text) of each tEXt chunk, and each uncompressed iTXt chunk (as
    ipp-seg writes one), that PNG bytes ``head`` hold whole before their image data; none for
    bytes that are no PNG."""
    if head[:8] != PNG_SIGNATURE:
        return
    for kind, start, end in _png_chunks(head):
        if kind in (b"IDAT", b"IEND") or end > len(head):
            return
        keyword, _, rest = bytes(head[start + 8:end - 4]).partition(b"\0")
        if kind == b"tEXt":
            yield kind, keyword, rest.decode("latin-1")
        elif kind == b"iTXt" and rest[:1] == b"\0":  # (flag, method, language, translated keyword, text)
            yield kind, keyword, rest[2:].split(b"\0", 2)[-1].decode("utf-8", "backslashreplace")


def ipp_seg_png_kind(path: str | os.PathLike[str]) -> str | None:
    """:func:`ipp_seg_output_kind` of the file at ``path`` (its first 4 KiB); None where it
    cannot be read (its reader will say why)."""
    try:
        with open(path, "rb") as fh:
            return ipp_seg_output_kind(fh.read(4096))
    except OSError:
        return None


def ipp_seg_png_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """What a PNG that ipp-seg wrote records of what drew it (its ``ipp-seg <key>`` text chunks
    before the image data, :func:`~ipp_seg.io.writers.output_provenance`: ``model``, ``model
    sha256``, ``orientation``, ``tta``, ``source sha256``, ``source frame``, an overlay's ``method``;
    and ``version``, of ipp-seg, from its ``Software``
    chunk), by key, as the file says it (a copy may have been edited: check a value before use);
    empty for any other file, one written before 0.2.11, or one that cannot be read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16384)  # (the chunks come first: each value is cut to 1000 characters)
    except OSError:
        return {}
    if ipp_seg_output_kind(head) is None:
        return {}
    said = {}
    for _, keyword, value in _text_chunks_before_image(head):
        if keyword.startswith(b"ipp-seg ") and keyword != OUTPUT_PNG_KEYWORD:
            said[keyword[len(b"ipp-seg "):].decode("latin-1")] = value
        elif keyword == b"Software" and value.startswith("ipp-seg "):
            said["version"] = value[len("ipp-seg "):]
    return said


def check_png_structure(path: str | os.PathLike[str], data: np.ndarray) -> None:
    """Raise :class:`ScanReadError` for a file's bytes (uint8) that are a damaged PNG; other
    formats pass. libpng prints its own lines about a damaged file to stderr, past any logging:
    a half-copied PNG, the commonest damage, is told apart here, in ipp-seg's words, first."""
    if data[:8].tobytes() == PNG_SIGNATURE:
        problem = png_structure_problem(memoryview(data))
        if problem:
            raise ScanReadError(path, problem)


def _png_chunks(data: bytes | memoryview) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk of PNG bytes after the signature, in order, up to and with
    IEND: the chunk's length field is at ``start``, its data ends 4 bytes (the checksum) before
    ``end``. A chunk that runs past the bytes is yielded too, for a caller to say so."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        kind = bytes(data[pos + 4:pos + 8])
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        yield kind, pos, end
        if kind == b"IEND":
            return
        pos = end


def png_structure_problem(data: bytes | memoryview) -> str | None:
    """Why PNG bytes are damaged (a chunk cut short, a checksum that fails, no end chunk), or
    None when every chunk is whole and checks out. Decodes nothing: the image data itself is
    libpng's to judge."""
    for kind, start, end in _png_chunks(data):
        if end - start - 12 > 0x7FFFFFFF or end > len(data):
            return "truncated: the PNG file ends inside its data (a copy cut short?)"
        if zlib.crc32(data[start + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            name = kind.decode("latin-1") if kind.isalpha() else "?"
            return f"damaged PNG: chunk {name} fails its checksum (the file was changed in transfer or storage)"
        if kind == b"IEND":
            return None
    return "truncated: the PNG file ends before its end chunk (a copy cut short?)"


def is_indexed_png(path) -> bool:
    """Whether the file at ``path`` is an indexed-colour PNG (colour type 3); False when it
    cannot be read. Only the signature and the IHDR chunk are read."""
    try:
        with open(path, "rb") as fh:
            return _indexed_png_head(fh.read(26))
    except OSError:
        return False


def _indexed_png_head(head: bytes) -> bool:
    """Whether a file's first 26 bytes, the signature and the IHDR chunk's start (which must come
    first), are an indexed-colour PNG's: colour type 3 (at 25; the bit depth is at 24)."""
    return len(head) >= 26 and head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and head[25] == 3


def png_with_index_greys(data: bytes | memoryview | np.ndarray) -> bytes | None:
    """An indexed-colour PNG (colour type 3) rewritten so that decoding it gives its palette
    indices: the palette becomes the grey ramp (i, i, i) over every index its bit depth allows,
    and the transparency and histogram of its entries are dropped. None for any other file. Label tools (CVAT,
    labelme, the VOC format) store label masks so: the label is the index, the colour only how
    it is shown, and two labels may share a colour, or a padded palette repeat black, so the
    decoded colours cannot give the indices back. Chunks are parsed, nothing is decoded here."""
    raw = bytes(np.asarray(data, dtype=np.uint8).reshape(-1)) if isinstance(data, np.ndarray) else bytes(data)
    if not _indexed_png_head(raw[:26]):
        return None
    chunks = [(kind, raw[start + 8:end - 4]) for kind, start, end in _png_chunks(raw)]
    entries = 1 << min(raw[24], 8)  # 1, 2, 4 or 8 bits per index
    ramp = bytes(v for i in range(entries) for v in (i, i, i))
    # tRNS and hIST hold one value per palette entry: the ramp's length would not match them.
    return PNG_SIGNATURE + b"".join(_png_chunk(kind, ramp if kind == b"PLTE" else body)
                                    for kind, body in chunks if kind not in (b"tRNS", b"hIST"))


def _warn_if_multipage(path: str) -> None:
    try:
        pages = cv2.imcount(path)
    except cv2.error:
        return
    if pages > 1:
        logger.warning("%s: TIFF with %d pages; only the first page is read", path, pages)
