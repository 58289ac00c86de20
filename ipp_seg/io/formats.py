"""File formats by suffix, without importing their readers.

Kept apart from the readers so that choosing a reader does not import pydicom or SimpleITK:
reading one PNG should not pay for the DICOM stack at start-up.
"""

from __future__ import annotations

import os

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
ITK_SUFFIXES = frozenset({".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz"})


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file carries the DICOM Part 10 'DICM' marker at byte 128."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False
