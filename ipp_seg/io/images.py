"""PNG, JPEG, BMP and TIFF frames through OpenCV: 8 or 16 bit, grey or colour, alpha dropped.

These formats carry no ultrasound calibration, so their spacing is unknown unless the caller
gives one. A multi-page TIFF is read as its first page (a warning says so).
"""

from __future__ import annotations

import logging
import os
import zlib

import cv2
import numpy as np

from .errors import ScanReadError, missing_file_reason, open_failure_reason
from .greyscale import drop_alpha_to_grey, to_output

logger = logging.getLogger(__name__)

_JPEG_SUFFIXES = {".jpg", ".jpeg"}
_TIFF_SUFFIXES = {".tif", ".tiff"}


def read_image_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into one greyscale frame (uint8, or float32 0-255 for 16-bit)."""
    path = str(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
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
    check_png_structure(path, data)
    # JPEG: let OpenCV apply the EXIF orientation and give libjpeg's luma directly. Others:
    # keep depth and channels as stored (alpha is removed below).
    flags = cv2.IMREAD_GRAYSCALE if suffix in _JPEG_SUFFIXES else cv2.IMREAD_UNCHANGED
    try:
        arr = cv2.imdecode(data, flags)
    except cv2.error:
        arr = None
    if arr is None:
        raise ScanReadError(path, f"OpenCV cannot decode it as an image (damaged or not a {suffix or 'known'} file)")
    if suffix in _TIFF_SUFFIXES:
        _warn_if_multipage(path)
    try:
        return to_output(drop_alpha_to_grey(arr, order="bgr"))
    except ValueError as exc:
        raise ScanReadError(path, str(exc)) from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_structure(path: str | os.PathLike[str], data: np.ndarray) -> None:
    """Raise :class:`ScanReadError` for a file's bytes (uint8) that are a damaged PNG; other
    formats pass. libpng prints its own lines about a damaged file to stderr, past any logging:
    a half-copied PNG, the commonest damage, is told apart here, in ipp-seg's words, first."""
    if data[:8].tobytes() == PNG_SIGNATURE:
        problem = png_structure_problem(memoryview(data))
        if problem:
            raise ScanReadError(path, problem)


def png_structure_problem(data: bytes | memoryview) -> str | None:
    """Why PNG bytes are damaged (a chunk cut short, a checksum that fails, no end chunk), or
    None when every chunk is whole and checks out. Decodes nothing: the image data itself is
    libpng's to judge."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(data[pos + 4:pos + 8])
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            return "truncated: the PNG file ends inside its data (a copy cut short?)"
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(data[pos + 8 + length:end], "big"):
            name = kind.decode("latin-1") if kind.isalpha() else "?"
            return f"damaged PNG: chunk {name} fails its checksum (the file was changed in transfer or storage)"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated: the PNG file ends before its end chunk (a copy cut short?)"


def png_palette(data: bytes | memoryview | np.ndarray) -> np.ndarray | None:
    """The palette ([N, 3] uint8 RGB, entry i for index i) of an indexed-colour PNG (colour type
    3), None for any other file: label tools (CVAT, labelme, the VOC format) store label masks so,
    the label being the index and the colour only how it is shown. Reads chunk headers only."""
    data = memoryview(np.asarray(data, dtype=np.uint8).reshape(-1)) if isinstance(data, np.ndarray) else data
    if bytes(data[:8]) != PNG_SIGNATURE:
        return None
    pos, indexed = len(PNG_SIGNATURE), False
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = bytes(data[pos + 4:pos + 8]), data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            indexed = len(body) > 9 and body[9] == 3
            if not indexed:
                return None
        elif kind == b"PLTE" and indexed and length % 3 == 0:
            return np.frombuffer(bytes(body), dtype=np.uint8).reshape(-1, 3)
        elif kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _warn_if_multipage(path: str) -> None:
    try:
        pages = cv2.imcount(path)
    except cv2.error:
        return
    if pages > 1:
        logger.warning("%s: TIFF with %d pages; only the first page is read", path, pages)
