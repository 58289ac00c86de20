"""Writers for the outputs: label masks (PNG, MetaImage) and RGB overlays (PNG).

Label values: 0 background, 1 pubic symphysis (PS), 2 fetal head (FH). Masks are written at
the size they are given, which should be the input frame's own size. Parent folders are
created as needed.
"""

from __future__ import annotations

import errno
import os
import stat
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from .folders import utf8_name
from .frames import Spacing, check_spacing
from .images import OUTPUT_PNG_KEYWORD, png_any_text_chunk, png_text_chunk, with_text_chunks

LABEL_VALUES = (0, 1, 2)


# What `predict --out` appends to a frame's name for its mask and its overlay (<name>_mask.png,
# <name>_overlay.png); `evaluate` reads a folder of them back by the same names.
MASK_NAME_SUFFIX = "_mask"
OVERLAY_NAME_SUFFIX = "_overlay"
#: How outputs write whether the network's output was averaged with the mirrored frame's (``--tta``): a PNG's
#: ``ipp-seg tta`` text, a SEG's or SR's ``tta`` parameter.
TTA_SAID = {True: "mirror-average", False: "none"}

# The hidden name :func:`replacing` writes an output under before moving it over its own.
STAGING_PREFIX, STAGING_SUFFIX = ".ipp-seg-", ".part"


def remove_staging_files(folder: str | os.PathLike[str], older_than_s: float | None = None) -> list[Path]:
    """Remove the hidden staging files (:func:`replacing`) under ``folder`` that a run killed
    outright left, a partial output each (patient data): every one, where the caller holds a
    lock no other run writes under; else those older than ``older_than_s``, as a write in
    progress renames its own within seconds. Links to folders under it are not followed.
    Returns the paths removed."""
    removed = []
    now = time.time()
    for here, _, names in os.walk(folder):
        for name in names:
            if not (name.startswith(STAGING_PREFIX) and name.endswith(STAGING_SUFFIX)):
                continue
            path = Path(here, name)
            try:
                if older_than_s is None or now - path.lstat().st_mtime > older_than_s:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # gone already
                continue
            except OSError:
                if older_than_s is None:  # under a lock: a leftover that cannot go is an error
                    raise
                continue  # another user's, in a shared folder
    return removed


def error_naming(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` again, naming ``path``: the output a caller was writing, where the system named a
    temporary file or, writing to a descriptor, none."""
    return type(exc)(exc.errno, exc.strerror, os.fspath(path))


@contextmanager
def replacing(path: str | os.PathLike[str], text: bool = False, **open_args) -> Iterator:
    """A file object whose content replaces ``path`` once the block ends without an error: for
    the outputs ipp-seg names inside an output folder.

    Written beside it under a hidden temporary name, then moved over it: a link or a pipe planted
    at ``path`` (another user's, in a shared folder) is replaced, not followed or waited on, so
    an output never lands outside its folder; and a write cut short leaves the earlier file
    whole, with nothing half-written beside it. A file already there keeps its permissions (one
    made private stays so) and, read-only, is refused as a plain open refuses it; a new one gets
    those the umask gives. A device, or a name in ``/dev`` (``/dev/stdout``), is written as it
    is: replacing it would change the system. ``text``: opened for text (``open_args`` such as
    ``encoding``, ``newline``), else bytes. An error names ``path``, not the temporary file."""
    target = Path(path)
    file_mode = "w" if text else "wb"
    try:
        mode = os.lstat(target).st_mode
    except OSError:
        mode = None
    # A name the caller wrote under /dev or /proc (/dev/stdout, /dev/fd/1): the stream it names,
    # never a link found in an output folder (whose path is that folder's).
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) or os.fspath(target).startswith(("/dev/",
                                                                                                       "/proc/")):
        with open(target, file_mode, **open_args) as fh:
            yield fh
        return
    if mode is not None and stat.S_ISREG(mode) and not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    # Short: the target's name may be 255 bytes.
    staging = target.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}{STAGING_SUFFIX}")
    try:
        # Created no more open than the output it replaces: under the umask's 0666, a private
        # output's new content had been readable by others until the chmod below.
        created = stat.S_IMODE(mode) if mode is not None and stat.S_ISREG(mode) else 0o666
        # O_BINARY (Windows): else the C runtime turns each LF byte written into CR LF, PNG and DICOM included.
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), created)
    except PermissionError:
        if mode is None or not stat.S_ISREG(mode):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target.parent)) from None
        # A folder one may not add to, holding a file one may write: written in place, as a plain
        # open would (never through a link: O_NOFOLLOW).
        descriptor = os.open(target, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_BINARY", 0))
        with os.fdopen(descriptor, file_mode, **open_args) as fh:
            yield fh
        return
    except OSError as exc:
        raise error_naming(exc, target) from None
    try:
        with os.fdopen(descriptor, file_mode, **open_args) as fh:
            yield fh
        if mode is not None and stat.S_ISREG(mode):
            os.chmod(staging, stat.S_IMODE(mode))
        try:
            os.replace(staging, target)
        except OSError as exc:
            raise error_naming(exc, target) from None
    except BaseException as exc:
        staging.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # A write cut short (a file size limit, a full disk) names no file of its own: the output's.
            raise error_naming(exc, target) from None
        raise


def check_within(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` whose folder, links followed, lies outside ``root``'s (a link planted as a
    sub-folder of an output folder would take the outputs elsewhere).

    Raises:
        PermissionError: naming the folder that leads out.
    """
    inside = os.path.realpath(root)
    existing = Path(path).parent
    # The deepest folder on the way that exists already (checked before any is made); up to
    # ``root`` itself, which the caller made or checked.
    while not existing.exists() and existing != Path(root) and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        return
    folder = os.path.realpath(existing)
    if folder != inside and not folder.startswith(inside.rstrip(os.sep) + os.sep):
        raise PermissionError(errno.EACCES, f"a folder on the way is a link out of {os.fspath(root)} (to {folder}); "
                                            "outputs are written only into it", os.fspath(existing))


def output_provenance(model_name: str | None, model_sha256: str | None, orientation: str | None,
                      tta: bool | None, source_sha256: str | None = None,
                      source_frame: int | None = None) -> dict[str, str]:
    """What a mask or overlay PNG records of what drew it (:func:`write_label_png`): the model,
    its file's sha256 and the options that change the mask, and the scan it was drawn on (its
    bytes' sha256, not its name, which may be a patient's; its frame), each left out where not
    known. A mask copied out of its run's folder had kept only the version that wrote it, and
    nothing of its scan (a coordinator's pass)."""
    said = {"model": model_name, "model sha256": model_sha256, "orientation": orientation,
            "tta": None if tta is None else TTA_SAID[bool(tta)], "source sha256": source_sha256,
            "source frame": None if source_frame is None else str(source_frame)}
    return {key: str(value) for key, value in said.items() if value}


def write_label_png(path: str | os.PathLike[str], label_mask: np.ndarray,
                    provenance: Mapping[str, str] | None = None) -> None:
    """Write an (H, W) label mask with values 0/1/2 as an 8-bit greyscale PNG, marked as
    ipp-seg's label mask (a text chunk: read as a scan, it is refused), with ``provenance``
    (:func:`output_provenance`) in text chunks ``ipp-seg <key>``."""
    mask = _checked_mask(label_mask)
    _write_encoded(path, ".png", mask, written_as="label mask", provenance=provenance)


def write_label_mha(
    path: str | os.PathLike[str], label_mask: np.ndarray, spacing_mm: Spacing | None = None
) -> None:
    """Write an (H, W) label mask (0/1/2) as compressed MetaImage.

    ``spacing_mm`` is (x, y) mm per pixel; without it ITK's 1 x 1 is written, which the
    readers take as "unknown".
    """
    mask = _checked_mask(label_mask)
    spacing = check_spacing(spacing_mm)
    import SimpleITK as sitk  # imported here: only MetaImage output needs it

    image = sitk.GetImageFromArray(mask)
    if spacing is not None:
        image.SetSpacing(spacing)
    target = Path(path)
    name = utf8_name(target)  # its bytes as UTF-8, as SimpleITK encodes the name, whatever the locale
    if name is None:  # SimpleITK aborts the process on such a name
        raise ValueError(f"{os.fsdecode(os.fsencode(target))!a}: a MetaImage name must be UTF-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, name, useCompression=True)


def write_overlay_png(path: str | os.PathLike[str], rgb: np.ndarray,
                      provenance: Mapping[str, str] | None = None) -> None:
    """Write an (H, W, 3) uint8 RGB image (e.g. a frame with contours drawn on it) as PNG,
    marked as ipp-seg's overlay (a text chunk: read as a scan, it is refused), with
    ``provenance`` as :func:`write_label_png` records it."""
    image = np.asarray(rgb)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"overlay must be uint8, got {image.dtype}")
    # zlib level 3, not OpenCV's default (level 1 with run-length coding, poor on an enlarged grey frame): a third
    # smaller (298 to 200 KiB at 512 px; 9 to 6 GB for 30,000 frames) for about 11 ms more per overlay.
    _write_encoded(path, ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), written_as="overlay", provenance=provenance,
                   params=(cv2.IMWRITE_PNG_COMPRESSION, 3))


def _checked_mask(label_mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(label_mask)
    if mask.ndim != 2:
        raise ValueError(f"label mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.size == 0:
        raise ValueError("label mask is empty")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"label mask must hold integers, got {mask.dtype}")
    values = np.unique(mask)
    unexpected = [int(v) for v in values if int(v) not in LABEL_VALUES]
    if unexpected:
        raise ValueError(f"label mask values must be 0, 1 or 2; found {unexpected[:5]}")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _write_encoded(path: str | os.PathLike[str], extension: str, image: np.ndarray,
                   written_as: str | None = None, provenance: Mapping[str, str] | None = None,
                   params: tuple[int, ...] = ()) -> None:
    ok, encoded = cv2.imencode(extension, image, list(params))
    if not ok:
        raise OSError(f"OpenCV could not encode {os.fspath(path)} as {extension}")
    data = encoded.tobytes()
    if written_as is not None:
        from ..machine import software_version

        said = [png_any_text_chunk(f"ipp-seg {key}".encode("ascii"), value[:1000])
                for key, value in (provenance or {}).items()]
        data = with_text_chunks(data, [png_text_chunk(b"Software", f"ipp-seg {software_version()}"),
                                       png_text_chunk(OUTPUT_PNG_KEYWORD, written_as), *said])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Bytes through Python, not cv2.imwrite, so that any path the OS accepts works.
    with replacing(target) as fh:
        fh.write(data)
