"""ipp-seg: pubic symphysis / fetal head segmentation and labour-progress measurements
(angle of progression, head-symphysis distance) from intrapartum transperineal ultrasound.

Importing this package never imports torch: inference runs on onnxruntime.

From Python: ``ipp_seg.IppSegError`` is the base of the exceptions ipp-seg raises about its inputs, models
and folders (not of those about wrong arguments);
``ipp_seg.inference.Predictor`` reads, segments and measures scans (as ``ipp-seg
predict`` does); ``ipp_seg.measure.measure_progress`` measures a label mask; ``ipp_seg.io``
reads frames (``read_frames``) and writes masks; ``ipp_seg.evaluate`` scores predictions. The
README's *From Python* section has examples.
"""

__version__ = "0.2.23"

import logging as _logging
import os as _os
import sys as _sys

# onnxruntime (from 1.32, on Linux and macOS) keeps a device identifier and an event queue under
# ~/.cache from the moment it is first imported, unless this says no. The one place ipp-seg sets
# it: here, before any of ipp-seg's modules (or a caller, after importing ipp_seg) imports
# onnxruntime; ORT_DISABLE_TELEMETRY=0 in the environment leaves it on. A tool that reads
# patients' scans sends nothing and writes nothing outside its output folders.
if not _os.environ.get("ORT_DISABLE_TELEMETRY", "").strip():  # (an empty value, `export X=`, is no choice)
    _os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from .errors import IppSegError  # noqa: E402  (the base of ipp-seg's own exceptions; imports nothing)

# A library logs, it does not print: without this, Python's last-resort handler writes the
# warnings of a program that set up no logging to its stderr.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())


class LogLineFormatter(_logging.Formatter):
    """How ipp-seg's log lines read, in the command line and its worker processes alike: the
    level in lower case and the message (``warning: ...``), as the command's own lines read;
    with the logging module's name as well when ``named`` (``-v``), for a report of a fault."""

    def __init__(self, named: bool = False) -> None:
        super().__init__()
        self.named = named

    def format(self, record: _logging.LogRecord) -> str:
        if record.args and isinstance(record.args, tuple):
            # The values put into the message (file names, case IDs, readers' reasons) with their
            # control characters written out (a crafted name's ESC or CR); the message's own text,
            # ipp-seg's, keeps its line breaks (a traceback logged at debug level).
            from .printable import terminal_text

            record = _logging.makeLogRecord({**record.__dict__, "args": tuple(
                arg if isinstance(arg, (int, float)) else terminal_text(str(arg)) for arg in record.args)})
        message = super().format(record)  # the message, and a traceback's text where one is logged
        level = record.levelname.lower()
        return f"{level} {record.name}: {message}" if self.named else f"{level}: {message}"


class _StderrHandler(_logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when a line is logged, not as it was when
    the handler was made: a live progress bar takes stderr over while it is shown (rich puts what
    is written there above the bar), and a warning logged meanwhile had run into the bar's line."""

    @property
    def stream(self):
        return _sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # (StreamHandler sets it; the current stderr is always taken)
        pass


def configure_logging(level: int) -> None:
    """Log to stderr at ``level`` (module names shown at INFO or below), as
    :func:`logging.basicConfig` does: not where the process has set up logging already."""
    handler = _StderrHandler()
    handler.setFormatter(LogLineFormatter(named=level <= _logging.INFO))
    _logging.basicConfig(level=level, handlers=[handler])


def quiet_dicom_libraries() -> None:
    """Silence pydicom's and highdicom's own warnings and log lines in this process, as the
    command line and its worker processes do. Both warn about header values that break the
    standard by quoting them, which may be the patient's name (highdicom: a Patient's Name of one
    component, ``ANONYMOUS``), pydicom logs each decoder plugin's failure with a traceback, and
    highdicom logs the UIDs it copies; ipp-seg's readers and writers report what matters
    themselves, on one line, naming attributes, never their values. (Not by level: importing
    pydicom resets its logger's level to WARNING.)"""
    import warnings

    for library in ("pydicom", "highdicom"):
        logger = _logging.getLogger(library)
        if not any(isinstance(h, _logging.NullHandler) for h in logger.handlers):
            logger.addHandler(_logging.NullHandler())
        logger.propagate = False
        warnings.filterwarnings("ignore", module=library + r"(\.|$)")
