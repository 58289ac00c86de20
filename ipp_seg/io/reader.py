"""One entry point from a path to greyscale :class:`UltrasoundFrame` objects.

The format is chosen by suffix (``SUPPORTED_SUFFIXES``); a file with another or no suffix is
read as DICOM when it carries the 'DICM' marker.

Spacing given by the caller (``spacing_mm``) only fills in an unknown calibration. A
calibration in the file (DICOM ultrasound regions or pixel spacing, an ITK spacing other than
1 x 1) always wins: the file describes the pixels it holds, a command-line value may describe
another scanner setting. When a given value disagrees with the file's, a warning is logged and
the file's calibration is kept.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from typing import Union

import numpy as np

from .errors import (MAX_MISSING_FRAMES, DamagedFrameError, FrameNotInScanError, FramesMissingError, NotAnImageError,
                     ScanReadError, missing_file_reason)
from ..printable import terminal_text
from .formats import DICOM_SUFFIXES, IMAGE_SUFFIXES, ITK_SUFFIXES, is_dicom_file, starts_like_an_image
from .frames import (
    FrameSelection,
    ImagingRegion,
    Provenance,
    Spacing,
    UltrasoundFrame,
    check_spacing,
    frames_held,
    parse_frame_selection,
    same_spacing,
)
from .greyscale import GreyPixels
from .images import image_kind, read_image_pixels

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(DICOM_SUFFIXES | IMAGE_SUFFIXES | ITK_SUFFIXES)

Frames = Union[str, int, range, FrameSelection]
PathLike = Union[str, "os.PathLike[str]"]


def source_format(path: PathLike) -> str:
    """``"dicom"``, ``"image"`` or ``"itk"`` for a path; :class:`ScanReadError` if none fits."""
    name = os.fspath(path)
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return "itk"
    suffix = os.path.splitext(lower)[1]
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if not os.path.exists(name):
        raise ScanReadError(name, missing_file_reason(name))
    if os.path.isdir(name):
        raise ScanReadError(name, "is a directory, not a file")
    if is_dicom_file(name):
        return "dicom"  # DICOM files often have no suffix (IM000001) or a vendor one
    head = _first_bytes(name)  # (None where they cannot be read: left to the reading error that follows)
    shown = terminal_text(suffix)  # (a suffix holding a newline had split the CSV's error cell over two lines)
    if (any(c.isalpha() for c in suffix) and suffix not in _OTHER_DICOM_SUFFIXES and head is not None
            and not starts_like_an_image(head)):
        # README.txt, results.csv, a report's .pdf beside the scans: no scan, and no damaged one
        # either (counted apart from failures, not read again by --resume). A name without a
        # suffix, or a numeric one (a UID), may be a damaged DICOM file: unreadable, below.
        raise NotAnImageError(name, f"not a scan: a {shown} file without a DICOM marker or an image format")
    if _is_empty(name):  # (an export cut off before its first byte: as the readers word it for .dcm, .png)
        raise ScanReadError(name, "the file is empty")
    kind = image_kind(head) if head is not None else None
    if kind is not None:  # an image saved without its suffix (IMG0001): say what reads it
        raise ScanReadError(name, f"its content is {kind[0]}, named {shown or 'without a suffix'}: rename it "
                                  f"{kind[1]} to read it")
    supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
    raise ScanReadError(
        name, f"unsupported file type {shown or '(no suffix)'} and no DICOM marker; supported: {supported}"
    )


def _first_bytes(name: str) -> bytes | None:
    """The file's first 16 bytes (what tells an image format); None where it cannot be read."""
    try:
        with open(name, "rb") as f:
            return f.read(16)
    except OSError:
        return None


def _is_empty(name: str) -> bool:
    try:
        return os.path.getsize(name) == 0
    except OSError:
        return False


# Suffixes vendors give DICOM files (Siemens .IMA, ACR-NEMA .acr, .dc3): such a file without a
# DICOM marker is a damaged scan (unreadable, read again on --resume), not a file of another kind.
_OTHER_DICOM_SUFFIXES = frozenset({".ima", ".dc3", ".acr"})


def count_frames(path: PathLike) -> int:
    """Number of frames in the file, from its header (DICOM Number of Frames; 1 for images).

    For a 3-D ITK image the planes are compared, which reads its pixels (such files are small).
    """
    _refuse_special_file(os.fspath(path))
    kind = source_format(path)
    # Readers are imported when a file needs them (pydicom and SimpleITK are slow to import).
    if kind == "dicom":
        from .dicom import inspect_dicom

        return inspect_dicom(path).n_frames
    if kind == "itk":
        from .itk import inspect_itk

        return inspect_itk(path).n_frames
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ScanReadError(name, missing_file_reason(name))
    return 1


def read_frames(
    path: PathLike,
    frames: Frames = "all",
    spacing_mm: Spacing | None = None,
) -> Iterator[UltrasoundFrame]:
    """Frames of a scan, decoded one at a time as the iterator is consumed.

    ``frames``: ``"all"``, a 0-based index (a numpy integer too), a ``range`` (exactly those
    frames, in its order: one the scan lacks is refused), a :class:`FrameSelection` or text
    ``"all" | "N" | "A-B" | "A-end"``, with ``"/S"`` after it for every S-th frame, or a list of
    frames and ranges ``"0,5,9"`` (a selection takes those of its frames the scan has).
    ``spacing_mm``: (x, y) mm per pixel for files without a calibration (see the module
    docstring for how it combines with the file's).

    The header is checked before this returns, so a file that cannot be read raises
    :class:`ScanReadError` here; a frame that fails to decode raises it during iteration.
    """
    name = os.fspath(path)
    user_spacing = check_spacing(spacing_mm)
    _refuse_special_file(name)
    kind = source_format(name)
    if kind == "dicom":
        from .dicom import check_pixel_shape, inspect_dicom, iter_dicom_frames

        info = inspect_dicom(name)
        indices = _indices(name, frames, info.n_frames, info.uids)
        if info.frame_time_problem:  # (said as its frames are read, not wherever its header is: resume counts frames)
            logger.warning("%s: %s: its frames are given no time (frame_time_ms empty)", name, info.frame_time_problem)
        spacing = choose_spacing(name, info.spacing_mm, info.spacing_source, user_spacing, info.regions)
        check_pixel_shape(info, spacing[0])
        pixel_source = iter_dicom_frames(info, None if indices == range(info.n_frames) else indices)
        return _frames(
            pixel_source, spacing, info.regions, info.n_frames,
            lambda i: Provenance(name, "dicom", info.sop_instance_uid, i + 1, info.study_instance_uid,
                                 info.series_instance_uid, info.burned_in_text,
                                 None if info.frame_times_ms is None or i >= len(info.frame_times_ms)
                                 else info.frame_times_ms[i]),
            indices,
        )
    if kind == "itk":
        from .itk import inspect_itk, iter_itk_frames

        itk_info = inspect_itk(name)
        indices = _indices(name, frames, itk_info.n_frames)
        spacing = choose_spacing(name, itk_info.spacing_mm, "image_header", user_spacing)
        return _frames(
            iter_itk_frames(itk_info, indices), spacing, (), itk_info.n_frames,
            lambda i: Provenance(name, "itk", None, None), indices,
        )
    pixels = read_image_pixels(name)
    indices = _indices(name, frames, 1)
    return _frames(
        ((i, pixels) for i in indices), choose_spacing(name, None, None, user_spacing), (), 1,
        lambda i: Provenance(name, "image", None, None), indices,
    )


def special_file_kind(path: PathLike) -> str | None:
    """What ``path`` is (following links) when it is a pipe, socket or device, neither a file
    nor a folder: "a pipe (FIFO)", "a socket" or "a device"; None otherwise, and for a path
    that does not exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def _refuse_special_file(name: str) -> None:
    """Refuse a pipe, socket or device (a link to /dev/zero, say) before anything reads it: a
    reader would wait on a pipe for ever, or fill memory from a device. A missing file or a
    folder is left to the readers, which say so."""
    kind = special_file_kind(name)
    if kind is not None:
        raise ScanReadError(name, f"{kind}, not a file")


def read_frame(path: PathLike, index: int = 0, spacing_mm: Spacing | None = None) -> UltrasoundFrame:
    """One frame (0-based ``index``) of a scan; see :func:`read_frames`."""
    if isinstance(index, np.integer) and not isinstance(index, np.bool_):
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    return next(iter(read_frames(path, index, spacing_mm)))


def _frames(pixel_source, spacing, regions, n_frames, provenance, indices: Sequence[int]
            ) -> Iterator[UltrasoundFrame]:
    last = None  # the last frame given: a frame that fails is the next one asked for, or the one a damaged one names
    try:
        for index, pixels in pixel_source:
            last = index
            # A colour frame comes with where it is drawn in colours of its own (GreyPixels).
            pixels, marks = pixels if isinstance(pixels, GreyPixels) else (pixels, None)
            yield UltrasoundFrame(
                pixels=pixels,
                colour_marks=marks,
                spacing_mm=spacing[0],
                regions=tuple(regions),
                frame_index=index,
                n_frames=n_frames,
                provenance=provenance(index),
                spacing_source=spacing[1],
            )
    except ScanReadError as exc:
        failed = exc.frame_index if isinstance(exc, DamagedFrameError) else next(
            (i for i in indices if last is None or i > last), None)
        exc.n_frames = n_frames
        if failed is not None and 0 <= failed < n_frames:
            exc.frame_index, exc.frame_provenance = failed, provenance(failed)
            if isinstance(exc, FramesMissingError):  # (every later frame asked for is missing too: each its row)
                later = list(itertools.islice((i for i in indices if i > failed), MAX_MISSING_FRAMES + 1))
                exc.missing_frames = tuple((i, provenance(i)) for i in later) if len(later) <= MAX_MISSING_FRAMES \
                    else ()
        raise
    finally:
        # A caller that stops early closes this generator; close the file-holding one too.
        close = getattr(pixel_source, "close", None)
        if close is not None:
            close()


def _indices(path: str, frames: Frames, n_frames: int,
             dicom_uids: tuple[str | None, str | None, str | None] = (None, None, None)) -> Sequence[int]:
    if isinstance(frames, str):
        frames = parse_frame_selection(frames)
    if isinstance(frames, FrameSelection):
        try:
            return frames.indices(n_frames)
        except IndexError as exc:
            error = FrameNotInScanError(path, str(exc), dicom_uids)
            error.n_frames = n_frames  # (its row says how many the scan has)
            raise error from None
    if isinstance(frames, np.integer) and not isinstance(frames, np.bool_):
        frames = int(frames)  # (analysis code holds its indices in numpy)
    if isinstance(frames, bool) or not isinstance(frames, (int, range)):
        raise TypeError(f"frames must be text ('all', 'N', 'A-B', 'A-end', '0,5,9'), an int, a range or a "
                        f"FrameSelection, got {type(frames).__name__}")
    if isinstance(frames, int):
        if frames < 0:
            raise ValueError(f"frame index must be >= 0, got {frames}")
        frames = range(frames, frames + 1)
    if len(frames) and (min(frames) < 0 or max(frames) >= n_frames):
        wanted = str(frames.start) if len(frames) == 1 else f"{min(frames)}-{max(frames)}"
        error = FrameNotInScanError(path, f"frame(s) {wanted} requested, the source has {frames_held(n_frames)}",
                                    dicom_uids)
        error.n_frames = n_frames
        raise error
    return frames


def choose_spacing(
    path: str,
    file_spacing: Spacing | None,
    file_source: str | None,
    user_spacing: Spacing | None,
    regions: Sequence[ImagingRegion] = (),
) -> tuple[Spacing | None, str | None]:
    """The frame-wide (spacing, source) of a file: its own calibration (``file_spacing``, read
    from ``file_source``, a code of :data:`ipp_seg.measure.SPACING_SOURCES`) when it has one,
    else the caller's ``user_spacing`` (source ``"given"``), else (None, None). A given spacing
    that disagrees with the file's own is logged and ignored: the file knows its pixels."""
    if user_spacing is None:
        return (file_spacing, file_source) if file_spacing is not None else (None, None)
    if file_spacing is None:
        if any(r.spacing_mm is not None for r in regions):
            # The frame-wide value only serves where no calibrated region holds the anatomy.
            logger.warning("%s: the file's region calibrations are kept; the given spacing %s mm applies only "
                           "outside them", path, user_spacing)
        return user_spacing, "given"
    if not same_spacing(file_spacing, user_spacing):
        logger.warning("%s: the file's own calibration %s is kept; the given spacing %s mm is ignored",
                       path, file_spacing, user_spacing)
    return file_spacing, file_source
