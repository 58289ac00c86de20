"""ipp-seg: pubic symphysis / fetal head segmentation and labour-progress measurements
(angle of progression, head-symphysis distance) from intrapartum transperineal ultrasound.

Importing this package never imports torch: inference runs on onnxruntime.
"""

__version__ = "0.1.0"
