"""Libraries' own warnings kept off stderr while ipp-seg reads or writes, safely for threads.

pydicom warns through :mod:`warnings` and ITK through a switch of its own, and both are one
setting for the whole process: ``warnings.catch_warnings()`` saves and restores the whole filter
list, so two threads reading at once restored each other's copies (a library user's pass: a
pydicom filter left installed for good, or taken away while another thread decoded, letting a
warning that quotes a header value, a patient's name, through), and ITK's switch was left off.
Here the first thread in turns the setting on, the last one out takes it away again, and
nothing else another thread set meanwhile is touched.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class _SharedSetting:
    """A process-wide setting held while any thread is inside :meth:`held`: ``apply`` runs as the
    first enters and returns what ``undo`` needs as the last leaves."""

    def __init__(self, apply: Callable[[], object], undo: Callable[[object], None]) -> None:
        self._apply, self._undo = apply, undo
        self._lock = threading.Lock()
        self._holders = 0
        self._token: object = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._token = self._apply()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._undo(self._token)
                    self._token = None


def _filter_added(module: str = "") -> Callable[[], object]:
    def apply() -> object:
        # As filterwarnings stores it, but put first by hand: filterwarnings takes an equal filter
        # away before adding (the command line's own, for good: quiet_dicom_libraries; or a
        # caller's), and taking ours away after had left none (a QA pass: a pydicom warning quoting
        # a patient's name printed again). First, as the first filter that matches is the one that
        # holds (a caller's "always" put before an equal one of theirs: a second QA pass).
        entry = ("ignore", None, Warning, re.compile(module) if module else None, 0)
        if warnings.filters and warnings.filters[0] == entry:
            return None  # (there and first already: nothing to add, nothing to take away)
        warnings.filters.insert(0, entry)
        _filters_changed()
        return entry  # (this very entry is taken away, by identity)
    return apply


def _filters_changed() -> None:
    # Warnings seen while a filter held are remembered as filtered: forgotten now.
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()


def _filter_removed(entry: object) -> None:
    if entry is None:  # (none was added)
        return
    try:  # (by identity: an equal entry of someone else's stays)
        del warnings.filters[next(i for i, f in enumerate(warnings.filters) if f is entry)]
    except StopIteration:  # taken away already (warnings.resetwarnings() meanwhile)
        return
    _filters_changed()


def _itk_display_off() -> object:
    import SimpleITK as sitk  # (here: a PNG's reading loads no ITK; the DICOM reader imports this module)

    shown = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return shown


def _itk_display_back(shown: object) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(bool(shown))


_PYDICOM = _SharedSetting(_filter_added(module=r"pydicom(\.|$)"), _filter_removed)
_EVERY_WARNING = _SharedSetting(_filter_added(), _filter_removed)
_ITK = _SharedSetting(_itk_display_off, _itk_display_back)


def pydicom_warnings_silenced():
    """pydicom's warnings silenced while the block runs: it warns of a header value that breaks
    the standard by quoting it (which may be a patient's name), printed on stderr by a library
    that promises to print nothing. What matters for a measurement the readers say themselves.
    Where the filter is there already (:func:`ipp_seg.quiet_dicom_libraries`), it stays."""
    return _PYDICOM.held()


def every_warning_silenced():
    """Every warning silenced while the block runs (short blocks that build DICOM values, whose
    warnings come through the caller's frames as well as pydicom's)."""
    return _EVERY_WARNING.held()


def itk_warnings_silenced():
    """ITK's warnings kept off stderr while the block runs (ITK writes them there itself, past
    logging: a NIfTI's sform with unexpected scales, three times per file). What matters for a
    measurement the reader says itself."""
    return _ITK.held()
