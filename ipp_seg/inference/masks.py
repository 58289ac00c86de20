"""Measuring label-mask files (what ``ipp-seg measure`` does), with the calibration of the scans
they were drawn on.

A mask exported as PNG by an annotation tool carries no pixel size, while the DICOM scan it was
drawn on does, often per ultrasound region: given the scan, the mask is measured as
:func:`~ipp_seg.inference.pipeline.measure_frame` measures a predicted mask, with the
calibration of the region that holds the symphysis, and the result names its source.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..evaluate.report import case_id_of, read_label_mask, relabel_mask, scans_by_case_id
from ..io import read_frame
from ..io.reader import choose_spacing
from ..io.writers import MASK_NAME_SUFFIX
from ..measure import Measurement, measure_progress
from .pipeline import measure_frame

__all__ = ["mask_case_id", "measure_mask_file", "scans_by_case_id"]

PathLike = str | os.PathLike[str]


def mask_case_id(path: PathLike) -> str:
    """The case a mask file belongs to: its name without the suffix, and without the ``_mask``
    that ``ipp-seg predict --out`` and ``batch --save-masks`` add (``04700_mask.png`` is 04700)."""
    case_id = case_id_of(path)
    return case_id[: -len(MASK_NAME_SUFFIX)] if case_id.endswith(MASK_NAME_SUFFIX) else case_id


def measure_mask_file(path: PathLike, labels: tuple[int, int] = (1, 2), *, method: str = "ellipse",
                      orientation: str = "standard", spacing_mm: tuple[float, float] | None = None,
                      scan: PathLike | None = None) -> Measurement:
    """AoP and HSD of a label-mask file (PNG, MHA, NIfTI ...; ``labels``: its PS and FH values).

    The pixel size, in this order: ``scan``'s calibration (the scan the mask was drawn on, of
    the same size; the ultrasound region that holds the PS where the scan has several), the
    mask file's own spacing (an MHA header), then ``spacing_mm``. The measurement's
    ``spacing_source`` says which.

    Raises:
        ScanReadError: the mask or the scan cannot be read, or the mask is no label mask.
        ValueError: the mask holds values besides 0 and ``labels``, or its size is not the scan's.
    """
    stored, mask_spacing = read_label_mask(path)
    # A value besides 0 and the two named ones is another tool's labelling or a lossy file:
    # measuring as if it were background would report the PS or FH "missing".
    label_mask = relabel_mask(stored, labels, source="the mask",
                              advice="name the structures' values with --labels ps=...,fh=...")
    if scan is None:
        used, source = choose_spacing(os.fspath(path), mask_spacing, "image_header", spacing_mm)
        return measure_progress(label_mask, used, method=method, orientation=orientation, spacing_source=source)
    frame = read_frame(scan)
    if frame.pixels.shape != label_mask.shape:
        (h, w), (sh, sw) = label_mask.shape, frame.pixels.shape
        raise ValueError(f"the mask is {w} x {h} pixels, its scan {Path(scan).name} {sw} x {sh}: not drawn on it "
                         "(or resized since)")
    if frame.spacing_mm is None and not any(region.spacing_mm for region in frame.regions):
        used, source = choose_spacing(os.fspath(path), mask_spacing, "image_header", spacing_mm)
        frame = replace(frame, spacing_mm=used, spacing_source=source)
    return measure_frame(label_mask, frame, method=method, orientation=orientation)
