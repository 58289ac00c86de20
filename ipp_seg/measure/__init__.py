"""Labour-progress measurements from PS/FH label masks: angle of progression and head-symphysis distance.

Pure numpy/OpenCV. See :func:`measure_progress` and the module docstring of
:mod:`ipp_seg.measure.progress` for the conventions and the three methods.
"""

from .progress import MAX_FIELD_OF_VIEW_MM, MIN_FIELD_OF_VIEW_MM, PLAUSIBLE_SPACING_MM, measure_progress
from .result import METHODS, ORIENTATIONS, REASONS, SPACING_SOURCES, STATUSES, Landmarks, Measurement

__all__ = [
    "METHODS",
    "ORIENTATIONS",
    "MIN_FIELD_OF_VIEW_MM",
    "MAX_FIELD_OF_VIEW_MM",
    "PLAUSIBLE_SPACING_MM",
    "REASONS",
    "SPACING_SOURCES",
    "STATUSES",
    "Landmarks",
    "Measurement",
    "measure_progress",
]
