"""File formats by suffix, without importing their readers.

Kept apart from the readers so that choosing a reader does not import pydicom or SimpleITK:
reading one PNG should not pay for the DICOM stack at start-up.
"""

from __future__ import annotations

import os
import struct

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
ITK_SUFFIXES = frozenset({".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz"})


def name_without_suffix(name: str) -> str:
    """``name`` (a file name or a relative path) less its suffix, ``.nii.gz`` counting as one, as
    outputs and case IDs name a scan. A suffix of digits alone is kept: it is no format's but the
    last part of a name such as a SOP Instance UID (``1.2.826.0.1.3680043.8.498.1033``), whose
    masks had lost it and then taken names that changed with the files beside them."""
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    root, suffix = os.path.splitext(name)
    return name if suffix[1:].isascii() and suffix[1:].isdigit() else root


def starts_like_raw_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file look like a DICOM data set written without the Part 10
    preamble and 'DICM' marker: a first tag (little endian) in the file meta group (0002) or
    the identifying group (0008), as legacy PACS exports and some scanners write."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    return group in (0x0002, 0x0008) and element < 0x0100


# The first bytes of image formats: a file that holds one under a name ipp-seg does not take
# is a scan saved oddly (unreadable: rename it), not a file that holds no image.
_IMAGE_SIGNATURES = (
    b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF8", b"\x00\x00\x00\x0cjP  ",
    b"\xff\x4f\xff\x51", b"NRRD", b"ObjectType", b"NDims", b"\x1f\x8b",  # (gzip: a .nii.gz renamed)
)


def starts_like_an_image(head: bytes) -> bool:
    """Whether a file's first bytes (16 or more) are those of an image format (PNG, JPEG, BMP,
    TIFF, GIF, WebP, JPEG 2000, NRRD, MetaImage, NIfTI or gzip), whatever its name says."""
    if head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return True
    return len(head) >= 4 and 348 in struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4])  # NIfTI-1


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file carries the DICOM Part 10 'DICM' marker at byte 128, or starts like a
    data set written without it (:func:`starts_like_raw_dicom`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(128)
            return f.read(4) == b"DICM" or starts_like_raw_dicom(head)
    except OSError:
        return False
