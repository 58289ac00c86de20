"""Measuring label-mask files (what ``ipp-seg measure`` does), with the calibration of the scans
they were drawn on.

A mask exported as PNG by an annotation tool carries no pixel size, while the DICOM scan it was
drawn on does, often per ultrasound region: given the scan, the mask is measured as
:func:`~ipp_seg.inference.pipeline.measure_frame` measures a predicted mask, with the
calibration of the region that holds the symphysis, and the result names its source.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ..machine import software_version
from ..evaluate.report import case_id_of, check_label_pair, files_below, mask_case_id, read_label_mask, relabel_mask
from ..io import SUPPORTED_SUFFIXES, Provenance, ScanReadError, count_frames, read_frame
from ..io.folders import printable_file
from ..io.frames import check_spacing, same_spacing
from ..io.reader import choose_spacing
from ..measure import METHODS, ORIENTATIONS, Measurement, measure_progress
from ..measure.progress import check_choice, check_plausible_spacing
from .batch import (MASK_REFUSED, UNREADABLE, dicom_uids, file_sha256, file_stamp, is_batch_output_part,
                    measurement_row, refuse_batch_output_as_input)
from .pipeline import measure_frame
from .report import measurement_report, run_keys_of_row, unreadable_measurement_report

__all__ = ["MeasuredMask", "ScanIndex", "cine_frame_of", "index_scans", "measure_mask_file", "measure_masks"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# What predict --out adds to the name of a cine's frame: scan_f0003_mask.png is frame 3 of scan.
_CINE_FRAME = re.compile(r"_f(\d{4,})$")


def cine_frame_of(mask: PathLike) -> int:
    """The cine frame (0-based) a mask's name gives: 3 for ``scan_f0003_mask.png``, else 0."""
    found = _CINE_FRAME.search(mask_case_id(mask))
    return int(found.group(1)) if found else 0


@dataclass(frozen=True)
class ScanIndex:
    """The scans of a folder by case ID (see :func:`index_scans`)."""

    folder: Path
    by_case: dict[str, tuple[Path, ...]]

    def scan_for(self, mask: PathLike) -> Path | None:
        """The scan a mask was drawn on: the file of its case ID (:func:`mask_case_id`), or for
        a cine frame's mask (``scan_f0003_mask.png``) the cine's; None when there is none.

        Raises:
            ValueError: several files of the folder have that case ID (the mask itself aside).
        """
        return self.scan_and_frame_for(mask)[0]

    def scan_and_frame_for(self, mask: PathLike) -> tuple[Path | None, int]:
        """(:meth:`scan_for`, the 0-based frame of it the mask was drawn on): 3 for a cine
        frame's mask ``scan_f0003_mask.png`` found by the cine's name, 0 for a scan of the
        mask's own case ID; with no scan, the frame its name gives (:func:`cine_frame_of`).

        Raises:
            ValueError: several files of the folder have that case ID, or the folder holds both
            a scan named ``scan_f0003`` and the cine ``scan`` (which one the mask was drawn on
            is not known).
        """
        mask_path = Path(mask).resolve()
        case_id = mask_case_id(mask)
        cine = _CINE_FRAME.search(case_id)
        candidates = [(case_id, 0)] + ([(case_id[:cine.start()], int(cine.group(1)))] if cine else [])
        matches = []
        for case, frame_index in candidates:
            found = [p for p in self.by_case.get(case, ()) if p.resolve() != mask_path]
            if len(found) > 1:
                names = " and ".join(str(p.relative_to(self.folder)) for p in found[:2])
                raise ValueError(f"case {case!r} has several scans in {self.folder}: {names}")
            if found:
                matches.append((found[0], frame_index))
        if len(matches) == 2:
            (still, _), (whole, frame_index) = matches
            raise ValueError(f"case {case_id!r} may be the scan {still.relative_to(self.folder)} or frame "
                             f"{frame_index} of {whole.relative_to(self.folder)} in {self.folder}: keep one of them "
                             "there")
        return matches[0] if matches else (None, cine_frame_of(mask))


def index_scans(folder: PathLike) -> ScanIndex:
    """Every file in ``folder`` and its sub-folders that may be a scan: a suffix
    :func:`ipp_seg.io.read_frame` reads, or none at all (DICOM files from a PACS often have
    none), by case ID (the name without its suffix). Hidden files and folders are left out; a
    case ID held by several files is an error only when a mask asks for it.

    Raises:
        NotADirectoryError: ``folder`` does not exist or is a file.
        NoScansError: ``folder`` is a batch run's ``masks`` or ``overlays`` folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} {'is a file, not a folder' if root.exists() else 'does not exist'}")
    refuse_batch_output_as_input(root)
    suffixes = tuple(s.lower() for s in SUPPORTED_SUFFIXES)
    by_case: dict[str, list[Path]] = {}

    def outputs(here: Path, real: Path) -> bool:  # a batch run's masks and overlays are not scans
        return here != root and is_batch_output_part(here)

    for path in files_below(root, skip=outputs):
        if path.name.lower().endswith(suffixes) or "." not in path.name:
            by_case.setdefault(case_id_of(path), []).append(path)
    return ScanIndex(root, {case: tuple(paths) for case, paths in by_case.items()})


def measure_mask_file(path: PathLike, labels: tuple[int, int] = (1, 2), *, method: str = "ellipse",
                      orientation: str = "standard", spacing_mm: tuple[float, float] | None = None,
                      scan: PathLike | None = None, scan_frame: int = 0) -> Measurement:
    """AoP and HSD of a label-mask file (PNG, MHA, NIfTI ...; ``labels``: its PS and FH values).

    The pixel size, in this order: ``scan``'s calibration (the scan the mask was drawn on, of
    the same size, its frame ``scan_frame`` (0-based) for a cine; the ultrasound region that
    holds the PS where the scan has several), the mask file's own spacing (an MHA header), then
    ``spacing_mm``. The measurement's ``spacing_source`` says which.

    Raises:
        ScanReadError: the mask or the scan cannot be read, or the mask is no label mask.
        ValueError: the mask holds values besides 0 and ``labels``, its size is not the scan's,
        or the scan has no frame ``scan_frame``.
    """
    return _measure_mask_and_scan(path, labels, method, orientation, spacing_mm, scan, scan_frame)[0]


def _measure_mask_and_scan(path, labels, method, orientation, spacing_mm, scan, scan_frame
                           ) -> tuple[Measurement, Provenance | None, int | None]:
    """:func:`measure_mask_file`'s measurement, with the provenance of the scan frame the mask
    was drawn on and the scan's frame count (None without a scan): its UIDs join the mask's row
    back to the study, and its frame count and time place a cine frame's mask in the cine."""
    stored, mask_spacing = read_label_mask(path)
    # A value besides 0 and the two named ones is another tool's labelling or a lossy file:
    # measuring as if it were background would report the PS or FH "missing".
    label_mask = relabel_mask(stored, labels, source="the mask", option="--labels", path=path)
    fallback, source = choose_spacing(os.fspath(path), mask_spacing, "image_header", spacing_mm)
    if scan is None:
        return measure_progress(label_mask, fallback, method=method, orientation=orientation,
                                spacing_source=source), None, None
    try:
        frame = read_frame(scan, scan_frame)
    except ScanReadError:
        if scan_frame:  # a cine frame's mask: a scan without that frame is not the one it was drawn on
            frames = count_frames(scan)  # (read only when the frame could not be: ITK files read whole)
            if scan_frame >= frames:
                which = "1 frame (frame 0)" if frames == 1 else f"{frames} frames (0-{frames - 1})"
                raise ValueError(f"the mask is of frame {scan_frame} of a cine, but its scan {os.fspath(scan)} "
                                 f"has {which}: not drawn on it") from None
        raise
    if frame.pixels.shape != label_mask.shape:
        (h, w), (sh, sw) = label_mask.shape, frame.pixels.shape
        raise _NotDrawnOnItsScan(f"the mask is {w} x {h} pixels, its scan {os.fspath(scan)} {sw} x {sh}: not drawn "
                                 "on it (or resized since)", frame.provenance)
    if frame.spacing_mm is None:  # no frame-wide calibration: the fallback serves outside calibrated regions
        frame = replace(frame, spacing_mm=fallback, spacing_source=source)
    measurement = measure_frame(label_mask, frame, method=method, orientation=orientation, segmented_here=False)
    if fallback is not None and measurement.spacing_mm is not None and not same_spacing(fallback,
                                                                                          measurement.spacing_mm):
        which = "the mask's own spacing" if source == "image_header" else "the given spacing"
        logger.warning("%s: measured with its scan's calibration %s mm; %s %s mm is not used", path,
                       measurement.spacing_mm, which, fallback)
    return measurement, frame.provenance, frame.n_frames


class _NotDrawnOnItsScan(ValueError):
    """A mask refused beside the scan it was matched to, which was read: its row keeps the
    scan's UIDs (``provenance``)."""

    def __init__(self, message: str, provenance: Provenance) -> None:
        super().__init__(message)
        self.provenance = provenance


@dataclass(frozen=True)
class MeasuredMask:
    """One mask of a :func:`measure_masks` run: its measurements.csv row, its JSON report (with
    ``scan``, the scan its calibration came from, when scans were given), whether it could not
    be used (unreadable, or refused: ``errors`` says why), and ``warnings`` for the user."""

    mask: Path
    row: dict
    report: dict
    unusable: bool = False
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def measurement_failed(self) -> bool:
        """The mask was read and measured, and its measurement failed."""
        return not self.unusable and self.row["status"] == "failed"


def measure_masks(masks: Iterable[PathLike], labels: tuple[int, int] = (1, 2), *, method: str = "ellipse",
                  orientation: str = "standard", spacing_mm: tuple[float, float] | None = None,
                  scans: ScanIndex | None = None) -> Iterator[MeasuredMask]:
    """What ``ipp-seg measure`` does: :func:`measure_mask_file` for each of ``masks``, in order,
    each with the calibration of its scan in ``scans`` (see :func:`index_scans`) where there is
    one, and of that scan's frame for a cine frame's mask. A mask that cannot be read, or is
    refused (other label values, not its scan's size, a case with several scans), gives a failed
    :class:`MeasuredMask` with the reason, and the run goes on.

    Raises:
        TypeError: ``masks`` is a single path (iterating it would give its characters).
    """
    if isinstance(masks, (str, bytes, os.PathLike)):
        raise TypeError(f"measure_masks takes a list of paths, got the single path {os.fsdecode(masks)!r}")
    # Checked now: a bad option would otherwise fail every mask, as if the masks were at fault.
    check_choice(method, METHODS, "method")
    check_choice(orientation, ORIENTATIONS, "orientation")
    labels = check_label_pair(labels)
    spacing_mm = check_spacing(spacing_mm)
    check_plausible_spacing(spacing_mm)  # as `ipp-seg measure --spacing-mm` and a Predictor refuse it
    if scans is not None and not isinstance(scans, ScanIndex):
        raise TypeError(f"scans must be a ScanIndex (index_scans(folder)) or None, got {type(scans).__name__}")
    return _measure_masks(masks, labels, method, orientation, spacing_mm, scans)


def _measure_masks(masks, labels, method, orientation, spacing_mm, scans) -> Iterator[MeasuredMask]:
    for mask in masks:
        path = Path(mask)
        scan, scan_frame = None, 0
        try:
            # (A ValueError from here on is about the mask and its scan, which were found readable, or
            # which scan it was drawn on, which the folder does not tell: refused, not unreadable.)
            scan, scan_frame = scans.scan_and_frame_for(path) if scans is not None else (None, cine_frame_of(path))
            result, provenance, n_frames = _measure_mask_and_scan(path, labels, method, orientation, spacing_mm,
                                                                  scan, scan_frame)
        except (ScanReadError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ScanReadError) else str(exc)
            if isinstance(exc, ScanReadError) and scan is not None and exc.path == str(scan):
                reason = f"its scan {scan}: {reason}"
            # Read, but not a mask to measure as named: other label values, or not its scan's size.
            code = UNREADABLE if isinstance(exc, ScanReadError) else MASK_REFUSED
            provenance = getattr(exc, "provenance", None)  # the scan's, where it was read
            row = measurement_row(printable_file(str(path)), "", None, "", provenance, reason, method, orientation,
                                  failure_code=code)
            # (The CSV's file keys too: null here, as its cells are empty.)
            report = {**unreadable_measurement_report(str(path), None, reason, method, orientation, code),
                      **run_keys_of_row(row)}
            yield MeasuredMask(path, row, _with_scan(report, scans, scan, provenance), unusable=True,
                               errors=(f"cannot measure {path}: {reason}",))
            continue
        warnings = ()
        if scans is not None and scan is None and scans.by_case:
            warnings = (f"no scan for {path} in {scans.folder} (case {mask_case_id(path)}): measured without its "
                        "calibration",)
        # The frame of the scan the mask was drawn on: a cine frame's mask found by the cine's name.
        row = measurement_row(printable_file(str(path)), scan_frame, result, "", provenance, "", method,
                              orientation, spacing_given=spacing_mm, file_stamp=file_stamp(path),
                              file_sha256=file_sha256(path), n_frames=n_frames)
        # With the mask's size, time, sha256 and when it was measured, as its CSV row (a QA auditor: the JSON had
        # named no bytes).
        report = {**measurement_report(str(path), scan_frame, result), **run_keys_of_row(row)}
        yield MeasuredMask(path, row, _with_scan(report, scans, scan, provenance, n_frames), warnings=warnings)


def _with_scan(report: dict, scans: ScanIndex | None, scan: Path | None, provenance: Provenance | None,
               n_frames: int | None = None) -> dict:
    """A mask's report with the version of ipp-seg and, when scans were given, the scan its
    calibration came from, that scan's DICOM UIDs, its frame count and the frame's time in its
    cine (None where it has none, or where no scan was found or read)."""
    report = {**report, "ipp_seg_version": software_version()}  # as predict's reports and every CSV row name it
    if scans is None:
        return report
    return {**report, "scan": None if scan is None else printable_file(str(scan)), **dicom_uids(provenance),
            "n_frames": n_frames, "frame_time_ms": getattr(provenance, "frame_time_ms", None)}

