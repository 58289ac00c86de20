"""Reading scans into greyscale frames with physical spacing, and writing the outputs.

``read_frames(path)`` takes DICOM (pydicom 3, with GDCM / pylibjpeg-openjpeg / pylibjpeg-rle /
pyjpegls decoders), PNG/JPEG/BMP/TIFF (OpenCV) and MetaImage/NRRD/NIfTI (SimpleITK) and yields
:class:`UltrasoundFrame` objects lazily, one decoded frame at a time. Spacing is (x, y) mm per
pixel, ``None`` when unknown; it is never guessed. A spacing given by the caller only fills in
an unknown one: a calibration in the file always wins (a warning is logged when they differ).

Decoders are chosen for permissive licences: GDCM (BSD) for JPEG baseline/extended/lossless
and as a fallback for JPEG-LS and JPEG 2000; pylibjpeg-openjpeg (MIT) for JPEG 2000 and HTJ2K;
pylibjpeg-rle (MIT) for RLE; pyjpegls (MIT, CharLS BSD) for JPEG-LS. The GPL-3
pylibjpeg-libjpeg is not used. MPEG-2/MPEG-4/HEVC video syntaxes have no pydicom decoder and
are refused with a clear error.
"""

from .errors import (DamagedFrameError, FrameNotInScanError, FramesMissingError, NotAnImageError, OtherModalityError,
                     ScanReadError)
from .frames import FrameSelection, ImagingRegion, Provenance, UltrasoundFrame, parse_frame_selection
from .reader import SUPPORTED_SUFFIXES, count_frames, read_frame, read_frames, source_format
from .writers import write_label_mha, write_label_png, write_overlay_png

__all__ = [
    "SUPPORTED_SUFFIXES",
    "FrameSelection",
    "ImagingRegion",
    "Provenance",
    "DamagedFrameError",
    "FramesMissingError",
    "FrameNotInScanError",
    "NotAnImageError",
    "OtherModalityError",
    "ScanReadError",
    "UltrasoundFrame",
    "count_frames",
    "parse_frame_selection",
    "read_frame",
    "read_frames",
    "source_format",
    "write_label_mha",
    "write_label_png",
    "write_overlay_png",
]
