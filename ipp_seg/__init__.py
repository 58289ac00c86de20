"""ipp-seg: pubic symphysis / fetal head segmentation and labour-progress measurements
(angle of progression, head-symphysis distance) from intrapartum transperineal ultrasound.

Importing this package never imports torch: inference runs on onnxruntime.
"""

__version__ = "0.1.0"

import logging as _logging

# A library logs, it does not print: without this, Python's last-resort handler writes the
# warnings of a program that set up no logging to its stderr.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def log_format(level: int) -> str:
    """How ipp-seg's log lines read at ``level``, in the command line and its worker processes
    alike: the level and the message (``WARNING: ...``); with the logging module's name as well
    when details are logged (INFO or below, ``-v``), for a report of a fault."""
    return "%(levelname)s %(name)s: %(message)s" if level <= _logging.INFO else "%(levelname)s: %(message)s"

