"""The one exception type the readers raise for an input they cannot turn into frames."""

from __future__ import annotations

import errno
import os
import re

from ..errors import IppSegError


class ScanReadError(IppSegError):
    """A scan could not be read.

    ``str(error)`` is ``"cannot read {path}: {reason}"``. The reason names the cause (not a
    DICOM file, no pixel data, truncated pixel data, a missing decoder and the pip package
    that provides it, a 3-D or spectral-only acquisition, ...) and never holds patient data.

    Raised by :func:`~ipp_seg.io.read_frames` after the scan's header was read, it also says
    what the header gave of the scan: ``n_frames``, its frame count, and for a frame that could
    not be read, ``frame_index`` (0-based) and ``frame_provenance``, that frame's
    :class:`~ipp_seg.io.Provenance` (its DICOM frame number and cine time), so that its failed
    row places it; None otherwise. A copy pickled to another process keeps them.
    """

    n_frames: int | None = None
    frame_index: int | None = None
    frame_provenance = None

    def __init__(self, path: str | os.PathLike[str], reason: str,
                 dicom_uids: tuple[str | None, str | None, str | None] = (None, None, None)) -> None:
        self.path = str(path)
        self.reason = reason
        # (SOP instance, study, series) UIDs of a DICOM header that was read before the failure:
        # its row still joins back to the study (an object without an image, a frame it lacks).
        self.dicom_uids = tuple(dicom_uids)
        super().__init__(f"cannot read {self.path}: {reason}")

    def __reduce__(self):  # keep pickling (multiprocessing) working with every argument, and what the reader added
        return (type(self), (self.path, self.reason, self.dicom_uids), self._said_of_the_scan())

    def _said_of_the_scan(self) -> dict:
        return {key: self.__dict__[key] for key in ("n_frames", "frame_index", "frame_provenance", "missing_frames")
                if key in self.__dict__}

    def with_uids(self, dicom_uids: tuple[str | None, str | None, str | None]) -> ScanReadError:
        """This error (of its own type, with what else it carries) naming the file's UIDs."""
        maker, args, state = self.__reduce__()
        made = maker(args[0], args[1], tuple(dicom_uids), *args[3:])
        made.__dict__.update(state)
        return made


class NotAnImageError(ScanReadError):
    """The file was read and holds no image: a DICOM report, key-object selection, PDF,
    presentation state or other object without pixel data, a result with pixels (a SEG, as
    ipp-seg writes), a DICOMDIR, or a file of another kind (notes, a table) under its own
    suffix. Nothing to measure, and nothing damaged: reading it again (``batch --resume``)
    would change nothing."""


class OtherModalityError(ScanReadError):
    """The file holds an image that is no ultrasound frame: another modality's (a CT in a mixed
    PACS export), or an ultrasound image with no 2-D frame to segment (a 3-D volume or
    rendering, M-mode or Doppler only). Nothing damaged: reading it again
    would change nothing."""


class DamagedFrameError(ScanReadError):
    """One frame of a scan is damaged (its JPEG data ends before the frame does), and the frames
    after it can be read: a caller may go on from ``frame_index + 1``."""

    def __init__(self, path: str | os.PathLike[str], reason: str,
                 dicom_uids: tuple[str | None, str | None, str | None] = (None, None, None),
                 frame_index: int = 0) -> None:
        super().__init__(path, reason, dicom_uids)
        self.frame_index = frame_index

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.dicom_uids, self.frame_index), self._said_of_the_scan())


class FramesMissingError(ScanReadError):
    """The pixel data ends before a frame asked for: that frame (``frame_index``) and every
    later one are missing, the frames before it read. :func:`~ipp_seg.io.read_frames` gives
    ``missing_frames``, (index, :class:`~ipp_seg.io.Provenance`) of each later frame asked for
    (empty where there are more than :data:`MAX_MISSING_FRAMES`: a damaged header's count), so
    that each gets its failed row and a cine's gap shows in time."""

    missing_frames: tuple = ()

    def reason_for(self, frame_index: int) -> str:
        """This reason, said of the later missing frame ``frame_index``."""
        return re.sub(r"^frame [0-9]+ is missing", f"frame {frame_index} is missing", self.reason)


#: The most later frames a :class:`FramesMissingError` lists: a cine's, not a damaged header's count.
MAX_MISSING_FRAMES = 10_000


class FrameNotInScanError(ScanReadError):
    """The scan was read, and holds none of the frames asked for (``--frames 2`` of a still
    image): nothing damaged, and reading it again would change nothing."""


#: The reason of a file that is not there (gone since it was listed, say).
NO_SUCH_FILE = "no such file"


def missing_file_reason(path: str | os.PathLike[str]) -> str:
    """Why a path that does not exist cannot be read: a link to nowhere, or links that lead
    back to each other, say so."""
    if os.fspath(path) == "":
        return "no file name given (an empty path)"
    try:
        os.stat(path)
    except PermissionError:  # a folder on the way that this user may not search: not "no such file"
        return f"cannot open the file ({os.strerror(errno.EACCES)})"
    except OSError:
        pass
    if not os.path.islink(path):
        return NO_SUCH_FILE
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a loop of links (they lead back to each other, never to a file)"
    return "a broken link (its target does not exist)"


def open_failure_reason(path: str | os.PathLike[str], exc: OSError) -> str:
    """Why an existing-looking path could not be opened, in words."""
    if exc.errno == errno.ELOOP:
        return missing_file_reason(path)
    return f"cannot open the file ({exc.strerror or type(exc).__name__})"
