"""PNG, JPEG, BMP and TIFF frames through OpenCV: 8 or 16 bit, grey or colour, alpha dropped.

These formats carry no ultrasound calibration, so their spacing is unknown unless the caller
gives one. A multi-page TIFF is read as its first page (a warning says so).
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from .errors import ScanReadError, missing_file_reason
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
        raise ScanReadError(path, f"cannot open the file ({exc.strerror or type(exc).__name__})") from None
    if data.size == 0:
        raise ScanReadError(path, "the file is empty")
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


def _warn_if_multipage(path: str) -> None:
    try:
        pages = cv2.imcount(path)
    except cv2.error:
        return
    if pages > 1:
        logger.warning("%s: TIFF with %d pages; only the first page is read", path, pages)
