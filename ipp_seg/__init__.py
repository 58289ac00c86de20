"""ipp-seg: pubic symphysis / fetal head segmentation and labour-progress measurements
(angle of progression, head-symphysis distance) from intrapartum transperineal ultrasound.

Importing this package never imports torch: inference runs on onnxruntime.
"""

__version__ = "0.1.0"

import logging as _logging

# A library logs, it does not print: without this, Python's last-resort handler writes the
# warnings of a program that set up no logging to its stderr.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
