"""Evaluation of PS/FH segmentations against ground truth: per case, per block, FH-PS-AOP score.

Per case (:class:`CaseResult`): Dice, Hausdorff distance (HD) and average surface distance
(ASD) for the pubic symphysis (PS), the fetal head (FH) and both as one foreground ("all");
the angle of progression (AoP) and head-symphysis distance (HSD) measured on the predicted
and on the ground-truth mask with the same method, and their absolute differences; the
measurement statuses; the acquisition style of the frame when the image is given.

Per block (:class:`BlockSummary`, "overall" and one per acquisition style seen): mean and
median of every metric, mean and median |ΔAoP| and |ΔHSD|, the Bland-Altman agreement of the
predicted AoP and HSD with the ground truth's (signed bias, 95 % limits of agreement,
proportional bias; :mod:`.agreement`), failed-measurement counts and the
FH-PS-AOP 2023 score, computed as the challenge does: mDice, mHD and mASD averaged over PS, FH
and "all" and over cases; mΔAoP over the cases whose ground truth measures, where a failed
measurement on the prediction counts :data:`FAILED_AOP_PENALTY_DEG` (the score's AoP term is
then 0 for that case) rather than being left out.

Masks on disk (:func:`read_label_mask`): PNG/BMP/TIFF (8 or 16 bit, grey) and
MetaImage/NRRD/NIfTI label images, paired by case ID = file name without its suffix.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import SimpleITK as sitk

from ..machine import software_version
from ..errors import IppSegError
from ..io import SUPPORTED_SUFFIXES, ScanReadError, read_frame
from ..io.errors import missing_file_reason, open_failure_reason
from ..io.folders import (composed_name, given_path, name_of_spreadsheet_cell, path_of_printable, printable_path,
                          read_json_file, spreadsheet_cell, walk_folders)
from ..io.formats import name_without_suffix
from ..io.frames import same_spacing
from ..io.images import (as_displayed, check_image_bytes, ipp_seg_png_kind, ipp_seg_png_provenance, is_indexed_png,
                         png_with_index_greys)
from ..io.itk import check_itk_name, inspect_itk, itk_image_io
from ..io.quiet import itk_warnings_silenced
from ..io.writers import MASK_NAME_SUFFIX, OVERLAY_NAME_SUFFIX, TTA_SAID, replacing
from ..measure import METHODS, ORIENTATIONS, Measurement, measure_progress
from ..measure.progress import AOP_IMPOSSIBLE_ABOVE_DEG, MAX_MASK_VALUES, check_choice, check_label_values
from ..measure.result import REASONS, SEGMENTATION_REASONS
from .acquisition import STYLES, acquisition_style
from .agreement import Agreement, bland_altman
from .metrics import (
    EMPTY_STRUCTURE_DISTANCE_PX,
    STRUCTURES,
    challenge_score,
    dice,
    structure_masks,
    surface_distances,
)

__all__ = [
    "FAILED_AOP_PENALTY_DEG",
    "MASK_SUFFIXES",
    "SEGMENTATION_METRICS",
    "BlockSummary",
    "CaseResult",
    "EvaluationReport",
    "MetricSummary",
    "ReasonSummary",
    "ReferenceAopError",
    "case_id_of",
    "check_label_pair",
    "mask_case_id",
    "evaluate_arrays",
    "evaluate_case",
    "evaluate_folders",
    "read_label_mask",
    "relabel_mask",
    "read_reference_aop",
    "summarise_block",
    "write_case_csv",
    "write_evaluation",
    "write_summary_json",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# |ΔAoP| (deg) charged in the score when the prediction's AoP cannot be measured but the
# ground truth's can: the largest possible error, so a failure never scores better than a
# poor measurement.
FAILED_AOP_PENALTY_DEG = 180.0

SEGMENTATION_METRICS: tuple[str, ...] = tuple(f"{m}_{s}" for m in ("dice", "hd", "asd") for s in STRUCTURES)
# Summary statistics reported per block, in this order.
_SUMMARY_METRICS: tuple[str, ...] = SEGMENTATION_METRICS + ("delta_aop", "delta_aop_reference", "delta_hsd_px",
                                                             "delta_hsd_mm")

# Lossless formats only: JPEG would blur label values.
MASK_SUFFIXES: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz")
_ITK_MASK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CaseResult:
    """Evaluation of one case. Units: Dice unitless (0-1); HD, ASD in pixels; AoP in degrees;
    HSD in pixels (``*_px``) and millimetres (``*_mm``, None when the spacing is unknown).

    ``delta_aop`` = |aop_pred − aop_gt| (deg), None when either AoP could not be measured;
    ``delta_hsd_*`` likewise. ``aop_reference`` is a published AoP for the case (e.g. PSFHS's
    ``aop_reference.csv``, deg) when one was given, and ``delta_aop_reference`` =
    |aop_pred − aop_reference|: the prediction against the reference rather than against the
    ground-truth mask measured by ``method`` (the two differ by the method's own disagreement
    with the reference's procedure). ``status_*`` and ``reasons_*`` come from
    :func:`ipp_seg.measure.measure_progress` on the predicted and ground-truth masks.
    ``style`` is "wide", "narrow" or "unknown" (see :mod:`ipp_seg.evaluate.acquisition`),
    None when no image was given.
    """

    case_id: str
    dice_ps: float
    dice_fh: float
    dice_all: float
    hd_ps: float
    hd_fh: float
    hd_all: float
    asd_ps: float
    asd_fh: float
    asd_all: float
    aop_pred: float | None
    aop_gt: float | None
    delta_aop: float | None
    hsd_pred_px: float | None
    hsd_pred_mm: float | None
    hsd_gt_px: float | None
    hsd_gt_mm: float | None
    delta_hsd_px: float | None
    delta_hsd_mm: float | None
    status_pred: str
    status_gt: str
    reasons_pred: tuple[str, ...]
    reasons_gt: tuple[str, ...]
    method: str
    style: str | None
    spacing_mm: tuple[float, float] | None
    aop_reference: float | None = None
    delta_aop_reference: float | None = None

    @property
    def aop_past_180(self) -> bool | None:
        """With a reference AoP: whether the predicted or the ground-truth angle lies past 180°,
        which the reference's unsigned angle (at most 180°, as the challenge evaluator measures
        it) cannot express: a head past the PS axis's line and one short of it by as much read
        alike, so ``delta_aop_reference`` may under- or overstate the error. None without one."""
        if self.aop_reference is None:
            return None
        return any(angle is not None and angle > 180.0 for angle in (self.aop_pred, self.aop_gt))

    @property
    def mean_dice(self) -> float:
        """Dice averaged over PS, FH and "all" (the challenge's per-case mDice)."""
        return (self.dice_ps + self.dice_fh + self.dice_all) / 3.0

    @property
    def mean_hd(self) -> float:
        """HD (px) averaged over PS, FH and "all"."""
        return (self.hd_ps + self.hd_fh + self.hd_all) / 3.0

    @property
    def mean_asd(self) -> float:
        """ASD (px) averaged over PS, FH and "all"."""
        return (self.asd_ps + self.asd_fh + self.asd_all) / 3.0

    def to_dict(self) -> dict:
        """Flat JSON/CSV-ready dict (reasons joined with ";", spacing split into x and y)."""
        out = {
            "case_id": self.case_id,
            "style": self.style,
            **{name: getattr(self, name) for name in SEGMENTATION_METRICS},
            "aop_pred": self.aop_pred,
            "aop_gt": self.aop_gt,
            "delta_aop": self.delta_aop,
            "aop_reference": self.aop_reference,
            "delta_aop_reference": self.delta_aop_reference,
            "aop_past_180": None if self.aop_past_180 is None else str(self.aop_past_180).lower(),
            "hsd_pred_px": self.hsd_pred_px,
            "hsd_gt_px": self.hsd_gt_px,
            "delta_hsd_px": self.delta_hsd_px,
            "hsd_pred_mm": self.hsd_pred_mm,
            "hsd_gt_mm": self.hsd_gt_mm,
            "delta_hsd_mm": self.delta_hsd_mm,
            "status_pred": self.status_pred,
            "reasons_pred": ";".join(self.reasons_pred),
            "status_gt": self.status_gt,
            "reasons_gt": ";".join(self.reasons_gt),
            "method": self.method,
            "spacing_x_mm": None if self.spacing_mm is None else self.spacing_mm[0],
            "spacing_y_mm": None if self.spacing_mm is None else self.spacing_mm[1],
        }
        return out


@dataclass(frozen=True)
class MetricSummary:
    """Mean and median of one metric over the ``n`` cases where it is defined (None if n = 0)."""

    mean: float | None
    median: float | None
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "median": self.median, "n": self.n}


@dataclass(frozen=True)
class ReasonSummary:
    """The cases whose predicted measurement carries one reason code, and their |ΔAoP| (deg)
    against the ground-truth mask: whether a warning marks the frames to check."""

    cases: int
    delta_aop: MetricSummary

    def to_dict(self) -> dict:
        return {"cases": self.cases, "delta_aop": self.delta_aop.to_dict()}


@dataclass(frozen=True)
class BlockSummary:
    """Aggregate of a block of cases.

    ``metrics`` maps each of :data:`SEGMENTATION_METRICS` and ``delta_aop`` (deg),
    ``delta_hsd_px``, ``delta_hsd_mm`` to a :class:`MetricSummary`. ``mean_dice``,
    ``mean_hd``, ``mean_asd`` are averaged over PS, FH, "all" and the cases (px for HD/ASD).
    ``score_delta_aop`` is the mean |ΔAoP| (deg) the score uses: over the
    ``n_gt_measured`` cases whose ground truth measures, a failed prediction counting
    :data:`FAILED_AOP_PENALTY_DEG`. ``score`` is None (with ``score_reason``) when no case
    has a measurable ground truth. ``agreement`` maps "aop" (prediction vs ground-truth mask,
    deg), "aop_reference" (prediction vs the published AoP, deg), "hsd_px" and "hsd_mm" to the
    :class:`~.agreement.Agreement` of the cases where both values exist, or None where none do.
    ``reasons_pred`` maps each reason code found on the predicted measurements to a
    :class:`ReasonSummary` (codes sorted).
    """

    name: str
    n_cases: int
    metrics: Mapping[str, MetricSummary]
    mean_dice: float | None
    mean_hd: float | None
    mean_asd: float | None
    n_gt_measured: int
    n_failed_pred: int
    n_failed_gt: int
    n_failed_pred_gt_ok: int
    score_delta_aop: float | None
    score: float | None
    score_reason: str | None = None
    agreement: Mapping[str, Agreement | None] = field(default_factory=dict)
    reasons_pred: Mapping[str, ReasonSummary] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "n_cases": self.n_cases,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "mean_dice": self.mean_dice,
            "mean_hd": self.mean_hd,
            "mean_asd": self.mean_asd,
            "n_gt_measured": self.n_gt_measured,
            "n_failed_pred": self.n_failed_pred,
            "n_failed_gt": self.n_failed_gt,
            "n_failed_pred_gt_ok": self.n_failed_pred_gt_ok,
            "score_delta_aop": self.score_delta_aop,
            "score": self.score,
            "score_reason": self.score_reason,
            "agreement": {k: None if v is None else v.to_dict() for k, v in self.agreement.items()},
            "reasons_pred": {k: v.to_dict() for k, v in self.reasons_pred.items()},
        }


@dataclass(frozen=True)
class EvaluationReport:
    """Per-case results and per-block summaries ("overall" first, then one per style seen).

    ``missing_predictions``: case IDs with ground truth but no prediction;
    ``missing_ground_truth``: predictions without ground truth; ``missing_images``: evaluated
    cases without an image (style unknown) when an image folder was given; ``unreadable``:
    (case ID, reason) of cases that could not be read or evaluated. None of these is in the
    metrics unless ``missing_as_empty`` scored missing predictions as empty masks.
    ``paired_cases``: the number of case IDs both folders hold. ``ground_truth_problems``:
    (case ID, problem) of evaluated cases whose ground truth lacks a structure (scored as it is,
    and worth a look: an empty or half-drawn expert mask). ``prediction_models``: (model,
    sha256) of the models whose results the predictions folder records (a batch run's
    ``measurements.csv``, ``predict --out``'s JSON reports), empty where it records none.
    ``failed_predictions``: (case ID, why) of ground truths whose frame that batch run failed
    before drawing a mask (:attr:`RunRecord.failures`), scored as empty predictions.
    ``seen_in_training``: (model, case IDs) of each recorded model whose card lists evaluated
    case IDs among those it trained on (:func:`cases_seen_in_training`). ``prediction_versions``:
    the ipp-seg versions that made the predictions, where their folder records them.
    ``prediction_settings``: (tta, method, orientation, spacing_given_mm) of the runs that made
    them (:func:`prediction_setting`), where their folder records them: a model card gives
    figures with and without ``--tta``, and a summary says which it reproduces.
    ``unrecorded_predictions``: evaluated cases whose mask has no row in the predicting run's
    ``measurements.csv``, or, in a folder of ``predict --out``'s reports, no report beside it (a
    run stopped before its row, an earlier run's mask left by ``--overwrite``, a report removed,
    a mask put there from elsewhere): scored as they are, but which model drew them no file says.
    ``inputs``: what was evaluated against what (the folders, as absolute paths; the labels and
    spacing given; the reference AoP's file and sha256 where the caller adds them), so that two
    summaries can be told apart and one reproduced.
    """

    method: str
    orientation: str
    labels: tuple[int, int]
    cases: tuple[CaseResult, ...]
    blocks: tuple[BlockSummary, ...]
    missing_predictions: tuple[str, ...] = ()
    missing_ground_truth: tuple[str, ...] = ()
    missing_images: tuple[str, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()
    missing_as_empty: bool = False
    paired_cases: int | None = None  # case IDs of both folders, or failed by the run (None: not from folders)
    ground_truth_problems: tuple[tuple[str, str], ...] = ()
    prediction_models: tuple[tuple[str, str], ...] = ()
    failed_predictions: tuple[tuple[str, str], ...] = ()
    seen_in_training: tuple[tuple[str, tuple[str, ...]], ...] = ()
    prediction_versions: tuple[str, ...] = ()
    prediction_settings: tuple[tuple[str, str, str, str], ...] = ()
    unrecorded_predictions: tuple[str, ...] = ()
    inputs: Mapping[str, object] = field(default_factory=dict)
    # Case ID -> (model, sha256) of the row or report that says who drew its prediction (cases.csv's
    # model_pred and model_sha256_pred), where its folder records it.
    case_models: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def overall(self) -> BlockSummary:
        """The block over every evaluated case."""
        return self.blocks[0]

    @property
    def cases_with_prediction(self) -> int:
        """Evaluated cases that had a prediction file (usable or not). None at all means the two
        folders do not name their cases alike, whatever ``missing_as_empty`` then scored."""
        missing = set(self.missing_predictions)
        return sum(case.case_id not in missing for case in self.cases)

    def block(self, name: str) -> BlockSummary:
        """The block called ``name`` ("overall", "wide", "narrow", "unknown"); KeyError if absent."""
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks: {', '.join(b.name for b in self.blocks)}")

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-case rows: those go to the CSV)."""
        return {
            "ipp_seg_version": software_version(),  # whose metric conventions these are
            "method": self.method,
            "orientation": self.orientation,
            "labels": {"ps": self.labels[0], "fh": self.labels[1]},
            "n_cases": len(self.cases),
            "blocks": {b.name: b.to_dict() for b in self.blocks},
            # Case IDs as cases.csv writes them (a name's non-UTF-8 bytes as \xfc, not lone surrogates).
            "missing_predictions": [printable_path(c) for c in self.missing_predictions],
            "missing_ground_truth": [printable_path(c) for c in self.missing_ground_truth],
            "missing_images": [printable_path(c) for c in self.missing_images],
            "unreadable": [{"case_id": printable_path(c), "reason": r} for c, r in self.unreadable],
            "ground_truth_problems": [{"case_id": printable_path(c), "problem": p}
                                      for c, p in self.ground_truth_problems],
            "missing_as_empty": self.missing_as_empty,
            # What was evaluated against what: two summaries told apart, one reproduced.
            "inputs": dict(self.inputs),
            # Which weights made the predictions, where their folder records it (several: mixed).
            "prediction_models": [{"model": m, "model_sha256": s or None} for m, s in self.prediction_models],
            # Frames the predicting run failed on before any mask: scored as empty predictions.
            "failed_predictions": [{"case_id": printable_path(c), "reason": r} for c, r in self.failed_predictions],
            # Masks scored without a row of the run: prediction_models does not say who drew them.
            "unrecorded_predictions": [printable_path(c) for c in self.unrecorded_predictions],
            # Which ipp-seg made them ("" for 0.1.0's rows): rules differ by version (CHANGELOG.md).
            "prediction_versions": list(self.prediction_versions),
            # How they were made besides the model (a card's figures differ with --tta): several, mixed.
            "prediction_settings": [{"tta": {"true": True, "false": False}.get(t), "method": m or None,
                                     "orientation": o or None, "spacing_given_mm": g or None}
                                    for t, m, o, g in self.prediction_settings],
            # Cases whose IDs a recording model trained on: its figures there are a fit, not a validation.
            "cases_seen_in_training": [{"model": m, "n_cases": len(ids), "case_ids": [printable_path(c) for c in ids]}
                                       for m, ids in self.seen_in_training],
            "conventions": {
                "distances": "pixels of the mask; HD between the masks as pixel sets (SimpleITK's "
                "HausdorffDistanceImageFilter); ASD between their boundaries, boundary = pixels with a "
                "background 8-neighbour",
                "empty_structure_distance_px": EMPTY_STRUCTURE_DISTANCE_PX,
                "failed_aop_penalty_deg": FAILED_AOP_PENALTY_DEG,
                "score": "0.25*mDice + 0.125*(1-mHD/100) + 0.125*(1-mASD/100) + 0.5*(1-mdAoP/180); "
                "Dice/HD/ASD averaged over ps, fh, all",
                "agreement": "Bland-Altman of prediction - ground truth (or - reference): bias = mean difference, "
                "lower/upper = bias -/+ 1.96 SD, proportional_slope = slope of the difference on the pair's mean",
            },
        }


# ----------------------------------------------------------------------------- one case


def evaluate_case(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    image: np.ndarray | None = None,
    method: str = "ellipse",
    spacing_mm: tuple[float, float] | None = None,
    *,
    case_id: str = "",
    labels: tuple[int, int] = (1, 2),
    orientation: str = "standard",
    style: str | None = None,
    reference_aop_deg: float | None = None,
    recorded_reasons: Sequence[str] = (),
) -> CaseResult:
    """Evaluate one predicted label mask against its ground truth.

    Args:
        pred_labels, gt_labels: (rows, columns) integer label masks of the same shape.
        image: the greyscale frame (0-255 scale), used only to tell its acquisition style.
        method: AoP/HSD method of :func:`ipp_seg.measure.measure_progress`, applied to both masks.
        spacing_mm: (x, y) mm per pixel for HSD in mm; None = unknown (HSD in pixels only).
        case_id: identifier copied into the result.
        labels: (PS label, FH label) values in both masks.
        orientation: "standard" or "mirrored" (which PS end is inferior; see ipp_seg.measure).
        style: acquisition style if already known (then ``image`` is not analysed).
        reference_aop_deg: a published AoP for this case (deg), compared with the prediction's.
        recorded_reasons: the reasons the run that drew the prediction gave it; those a mask alone
            cannot give (:data:`~ipp_seg.measure.result.SEGMENTATION_REASONS`: the network's
            doubt, the frame's own signs) are added to the prediction's, and one that failed the
            run's measurement (``anatomy_unrecognised``) fails it here too: scored as users saw it.

    Raises:
        ValueError: masks not 2-D integer arrays of one shape, a mask value besides 0 and
            ``labels``, or invalid method/labels/spacing.
    """
    pred = _check_labels_mask(pred_labels, "pred_labels")
    gt = _check_labels_mask(gt_labels, "gt_labels")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}")
    check_choice(method, METHODS, "method")
    ps_label, fh_label = check_label_pair(labels)
    for mask, name in ((pred, "pred_labels"), (gt, "gt_labels")):
        # Another value would count as background: an FH stored as 255 would score Dice 0.
        unknown = _unknown_label_values(mask, (ps_label, fh_label))
        if unknown:
            raise ValueError(f"{name} holds values {unknown[:8]} besides 0, PS {ps_label} and FH {fh_label}: "
                             "map them first (relabel_mask)")

    seg: dict[str, float] = {}
    pred_masks = structure_masks(pred, ps_label, fh_label)
    gt_masks = structure_masks(gt, ps_label, fh_label)
    for s in STRUCTURES:
        p, t = pred_masks[s], gt_masks[s]
        seg[f"dice_{s}"] = dice(p, t)
        seg[f"hd_{s}"], seg[f"asd_{s}"] = surface_distances(p, t)

    kwargs = {"method": method, "orientation": orientation, "ps_label": ps_label, "fh_label": fh_label}
    m_pred = with_recorded_reasons(measure_progress(pred, spacing_mm, **kwargs), recorded_reasons)
    m_gt = measure_progress(gt, spacing_mm, **kwargs)

    if style is None and image is not None:
        style = acquisition_style(image)
    elif style is not None and style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)} or None; got {style!r}")

    return CaseResult(
        case_id=str(case_id),
        **seg,
        aop_pred=m_pred.aop_deg,
        aop_gt=m_gt.aop_deg,
        delta_aop=_abs_diff(m_pred.aop_deg, m_gt.aop_deg),
        hsd_pred_px=m_pred.hsd_px,
        hsd_pred_mm=m_pred.hsd_mm,
        hsd_gt_px=m_gt.hsd_px,
        hsd_gt_mm=m_gt.hsd_mm,
        delta_hsd_px=_abs_diff(m_pred.hsd_px, m_gt.hsd_px),
        delta_hsd_mm=_abs_diff(m_pred.hsd_mm, m_gt.hsd_mm),
        status_pred=m_pred.status,
        status_gt=m_gt.status,
        reasons_pred=m_pred.reasons,
        reasons_gt=m_gt.reasons,
        method=method,
        style=style,
        spacing_mm=_spacing_of(m_gt),
        aop_reference=reference_aop_deg,
        delta_aop_reference=_abs_diff(m_pred.aop_deg, reference_aop_deg),
    )


def with_recorded_reasons(measurement: Measurement, recorded: Sequence[str]) -> Measurement:
    """``measurement`` of a predicted mask with the reasons of :data:`SEGMENTATION_REASONS` among
    ``recorded`` (those its run gave) that it lacks: warnings added, a failing one failing it."""
    for code in recorded:
        if code in SEGMENTATION_REASONS and code not in measurement.reasons:
            failing = REASONS[code][0] == "failed"
            measurement = measurement.with_failure(code) if failing else measurement.with_warning(code)
    return measurement


# ----------------------------------------------------------------------------- blocks


def summarise_block(name: str, cases: Sequence[CaseResult]) -> BlockSummary:
    """Aggregate ``cases`` into a :class:`BlockSummary` called ``name`` (see its docstring)."""
    cases = list(cases)
    metrics = {m: _summary([getattr(c, m) for c in cases]) for m in _SUMMARY_METRICS}
    n = len(cases)
    mean_dice = _mean([c.mean_dice for c in cases])
    mean_hd = _mean([c.mean_hd for c in cases])
    mean_asd = _mean([c.mean_asd for c in cases])

    gt_ok = [c for c in cases if c.aop_gt is not None]
    score_errors = [c.delta_aop if c.aop_pred is not None else FAILED_AOP_PENALTY_DEG for c in gt_ok]
    score_delta_aop = _mean(score_errors)
    if n == 0:
        score, reason = None, "no cases"
    elif score_delta_aop is None:
        score, reason = None, "no case has a ground truth whose AoP measures"
    else:
        score, reason = challenge_score(mean_dice, mean_hd, mean_asd, score_delta_aop), None

    return BlockSummary(
        name=name,
        n_cases=n,
        metrics=metrics,
        mean_dice=mean_dice,
        mean_hd=mean_hd,
        mean_asd=mean_asd,
        n_gt_measured=len(gt_ok),
        n_failed_pred=sum(c.status_pred == "failed" for c in cases),
        n_failed_gt=sum(c.status_gt == "failed" for c in cases),
        n_failed_pred_gt_ok=sum(c.aop_pred is None for c in gt_ok),
        score_delta_aop=score_delta_aop,
        score=score,
        score_reason=reason,
        agreement={
            "aop": bland_altman([c.aop_pred for c in cases], [c.aop_gt for c in cases]),
            "aop_reference": bland_altman([c.aop_pred for c in cases], [c.aop_reference for c in cases]),
            "hsd_px": bland_altman([c.hsd_pred_px for c in cases], [c.hsd_gt_px for c in cases]),
            "hsd_mm": bland_altman([c.hsd_pred_mm for c in cases], [c.hsd_gt_mm for c in cases]),
        },
        reasons_pred=_reason_summaries(cases),
    )


def _reason_summaries(cases: Sequence[CaseResult]) -> dict[str, ReasonSummary]:
    codes = sorted({code for c in cases for code in c.reasons_pred})
    out = {}
    for code in codes:
        flagged = [c for c in cases if code in c.reasons_pred]
        out[code] = ReasonSummary(len(flagged), _summary([c.delta_aop for c in flagged]))
    return out


def _build_report(
    results: list[CaseResult],
    *,
    method: str,
    orientation: str,
    labels: tuple[int, int],
    **extra,
) -> EvaluationReport:
    results = sorted(results, key=lambda c: c.case_id)
    blocks = [summarise_block("overall", results)]
    for style in STYLES:
        members = [c for c in results if c.style == style]
        if members:
            blocks.append(summarise_block(style, members))
    return EvaluationReport(
        method=method, orientation=orientation, labels=labels, cases=tuple(results), blocks=tuple(blocks), **extra
    )


# ----------------------------------------------------------------------------- in memory


def evaluate_arrays(
    cases: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    method: str = "ellipse",
    labels: tuple[int, int] = (1, 2),
    orientation: str = "standard",
    spacing_mm: tuple[float, float] | None = None,
    reference_aop: Mapping[str, float] | None = None,
    recorded_reasons: Mapping[str, Sequence[str]] | None = None,
) -> EvaluationReport:
    """Evaluate in-memory cases ``(case_id, pred_labels, gt_labels, image or None)``.

    ``reference_aop`` maps case IDs to a published AoP (deg; :func:`read_reference_aop`);
    cases it lacks get no ``delta_aop_reference``. ``recorded_reasons`` maps case IDs to the
    reason codes inference gave the prediction (:func:`with_recorded_reasons`), as a batch run's
    CSV gives them to :func:`evaluate_folders`. For training/validation code. Raises
    ValueError on a malformed case (the case ID is in the message); case IDs must be unique.
    """
    check_choice(method, METHODS, "method")
    check_choice(orientation, ORIENTATIONS, "orientation")
    labels = check_label_pair(labels)
    results: list[CaseResult] = []
    seen: set[str] = set()
    for item in cases:
        if len(item) != 4:
            raise ValueError("each case must be (case_id, pred_labels, gt_labels, image or None)")
        case_id, pred, gt, image = item
        case_id = str(case_id)
        if case_id in seen:
            raise ValueError(f"case ID {case_id!r} given twice")
        seen.add(case_id)
        try:
            results.append(
                evaluate_case(
                    pred, gt, image, method, spacing_mm, case_id=case_id, labels=labels, orientation=orientation,
                    reference_aop_deg=(reference_aop or {}).get(case_id),
                    recorded_reasons=(recorded_reasons or {}).get(case_id, ()),
                )
            )
        except ValueError as exc:
            raise ValueError(f"case {case_id}: {exc}") from None
    return _build_report(results, method=method, orientation=orientation, labels=labels)


# ----------------------------------------------------------------------------- folders


def evaluate_folders(
    pred_dir: PathLike,
    gt_dir: PathLike,
    images_dir: PathLike | None = None,
    method: str = "ellipse",
    labels: tuple[int, int] = (1, 2),
    *,
    orientation: str = "standard",
    spacing_mm: tuple[float, float] | None = None,
    missing_as_empty: bool = False,
    reference_aop: Mapping[str, float] | None = None,
    gt_labels: tuple[int, int] | None = None,
    pred_labels: tuple[int, int] | None = None,
) -> EvaluationReport:
    """Evaluate a folder of predicted masks against a folder of ground-truth masks.

    Masks (:data:`MASK_SUFFIXES`) are paired by case ID (:func:`case_id_of`). ``images_dir``
    (optional; any format :func:`ipp_seg.io.read_frame` reads, e.g. a PSFHS ``image_mha``
    folder) gives each case's frame for its acquisition style and its calibration. Spacing
    for HSD in mm: the image's calibration, else the ground-truth mask's (ITK spacing other
    than 1 x 1), else the prediction's, else ``spacing_mm``, else the one the batch run behind
    ``pred_dir`` measured the case with (its ``--spacing-mm`` for a file without a calibration);
    a prediction whose own spacing disagrees with the one used is logged (it was made on another
    pixel grid).

    Cases on one side only are listed in the report, not evaluated; with
    ``missing_as_empty`` a ground truth without prediction, or with a prediction that cannot be
    used (unreadable, another size, other label values), is scored against an empty
    prediction instead (and still listed). Files that cannot be read are listed with the
    reason. Both folders are searched with their sub-folders (``batch --save-masks`` writes
    masks at each scan's relative path); a predictions folder's ``overlays`` sub-folders
    (pictures, not masks) are left out. ``reference_aop``: as in :func:`evaluate_arrays`; evaluated cases it lacks are
    logged; a reference whose numeric IDs lost their leading zeros (``4601`` for ``04601``, as
    a spreadsheet saves them) is matched by number, with a warning. ``labels`` are the PS and
    FH values the results use; ``gt_labels`` and ``pred_labels`` those of the ground truth and
    of the predictions where they differ (another tool's export), None for ``labels``. A mask
    with any other value is not evaluated: it is listed as unreadable with the values it holds.

    Raises:
        NotADirectoryError: a folder does not exist.
        ValueError: two files of one folder share a case ID, invalid method/labels, or a folder
        given as "" (it would read as the current folder).
    """
    check_choice(method, METHODS, "method")
    check_choice(orientation, ORIENTATIONS, "orientation")
    labels = check_label_pair(labels)
    gt_labels = labels if gt_labels is None else check_label_pair(gt_labels)
    pred_labels = labels if pred_labels is None else check_label_pair(pred_labels)
    pred_dir, gt_dir = given_path(pred_dir, "predictions folder"), given_path(gt_dir, "ground-truth folder")
    images_dir = None if images_dir is None else given_path(images_dir, "images folder")
    # A run's own masks as the ground truth had scored the run against itself: Dice 1, ΔAoP 0 (by a
    # link to it too, or one folder given twice).
    _refuse_run_output_by_any_name(gt_dir, "ground truths", "give the folder of the expert's masks (the run's "
                                   "output folder is PRED_DIR)")
    preds = _index_folder(pred_dir, MASK_SUFFIXES, predictions=True)
    gts = _index_folder(gt_dir, MASK_SUFFIXES)
    _refuse_masks_on_both_sides(preds, gts, pred_dir, gt_dir)
    drawn_by_ipp_seg = [case for case, path in gts.items() if ipp_seg_png_kind(path) == "label mask"]
    if drawn_by_ipp_seg:  # (copied out of a run: the mark goes with the file)
        logger.warning("%d of the %d ground-truth masks %s written by ipp-seg, a model's masks and not an "
                       "expert's outlines (%s): scored against %s, the figures say how two models agree, not how "
                       "right either is", len(drawn_by_ipp_seg), len(gts), "was" if len(drawn_by_ipp_seg) == 1 else
                       "were", _preview(drawn_by_ipp_seg), "it" if len(drawn_by_ipp_seg) == 1 else "them")
    if images_dir is not None:  # a run's overlays or masks would set every frame's style wrong (by a link too)
        _refuse_run_output_by_any_name(images_dir, "images")
    images = _index_folder(images_dir, tuple(SUPPORTED_SUFFIXES), images=True) if images_dir is not None else None

    missing_pred = sorted(set(gts) - set(preds))
    missing_gt = sorted(set(preds) - set(gts))
    # Listed in the report (which the CLI prints); logged at info level only, not twice.
    if missing_pred:
        logger.info("%d ground-truth case(s) have no prediction: %s", len(missing_pred), _preview(missing_pred))
    if missing_gt:
        logger.info("%d prediction(s) have no ground truth: %s", len(missing_gt), _preview(missing_gt))

    paired = set(gts) & set(preds)
    # Frames the run that made the predictions failed before any mask (unreadable, no ultrasound
    # image): a failure of the pipeline, scored as an empty prediction, not left out as if no
    # prediction had been asked for (a pipeline that failed more would score better).
    # Every run behind the folder (results/siteA/, results/siteB/ each a batch run's output), read
    # in one pass over each CSV: failures, the cases it recorded, models.
    run = read_run_records(pred_dir)
    run_failures = run.failures if run is not None else {}
    # The network's doubt and the frame's own signs, which the masks alone do not hold; predict
    # --out's reports lie beside their masks, in whichever sub-folder (read once: reasons, models).
    reports = list(_frame_reports({Path(pred_dir), *(path.parent for path in preds.values())}))
    # predict --out's report of a scan or frame that gave no mask is such a failure too, as a batch run's row is
    # (a QA pass: the same scan had been scored as failed from batch, and left out from predict).
    run_failures = {**_failures_reported(reports, preds), **run_failures}
    run_reasons = recorded_reasons(pred_dir, run, reports)
    # A mask beside such a row is an earlier run's, left when this run measured the file again.
    stale = sorted(c for c in paired if c in run_failures)
    if stale:
        logger.warning("%d mask(s) in %s are of an earlier run: the run that wrote its measurements.csv failed on "
                       "those frames, which are scored as failed (%s)", len(stale), pred_dir, _preview(stale))
    paired -= set(stale)
    # Masks no record of a run speaks for: without a row in a batch run's CSV, or without predict
    # --out's report beside them (removed, or a mask put there). A folder without either holds
    # masks of one's own: none is unrecorded.
    reported = {case_id_of(path) for path, _ in reports}
    recorded = reported | (run.cases if run is not None else set())
    # (A run's CSV of its header alone, stopped before its first row, speaks for none of its masks.)
    unrecorded = sorted(paired - recorded) if recorded or run is not None else []
    if unrecorded:  # scored as they are, but a reader of the figures should know
        if run is None:
            where = "report of predict beside them"
        elif reported:
            where = "row in a run's measurements.csv nor report of predict beside them"
        else:
            where = "row in its run's measurements.csv"
        logger.warning("%d mask(s) in %s have no %s (a run stopped before writing it, or masks put there from "
                       "elsewhere); scored as they are: %s", len(unrecorded), pred_dir, where, _preview(unrecorded))
    failed_pred = sorted([c for c in missing_pred if c in run_failures] + stale)
    missing_pred = [c for c in missing_pred if c not in run_failures]
    to_evaluate = sorted(paired) + failed_pred + (missing_pred if missing_as_empty else [])
    if reference_aop is not None:
        reference_aop = _reference_by_case(reference_aop, to_evaluate)
    results: list[CaseResult] = []
    unreadable: list[tuple[str, str]] = []
    gt_problems: list[tuple[str, str]] = []
    missing_images: list[str] = []
    for case_id in sorted(to_evaluate):
        try:
            stored, gt_spacing = read_label_mask(gts[case_id])
            pred_spacing = None
            gt = relabel_mask(stored, gt_labels, labels, f"ground truth {gts[case_id].name}", "--gt-labels",
                              path=gts[case_id])
        except (ScanReadError, ValueError) as exc:
            unreadable.append((case_id, str(exc)))
            logger.info("case %s not evaluated: %s", case_id, exc)
            continue
        lacking = [name for name, value in (("PS", labels[0]), ("FH", labels[1])) if not (gt == value).any()]
        pred = np.zeros_like(gt)
        # No prediction to use (--missing-as-empty scores it as empty): no measurement made, none of its reasons.
        scored_as_empty = case_id not in preds and case_id not in run_failures
        if case_id in preds and case_id not in run_failures:
            try:
                stored_pred, pred_spacing = read_label_mask(preds[case_id])
                pred = relabel_mask(stored_pred, pred_labels, labels, f"prediction {preds[case_id].name}",
                                    "--pred-labels", " (ipp-seg writes 0, 1 and 2)", path=preds[case_id])
                if pred.shape != gt.shape:
                    raise ValueError(f"prediction {preds[case_id].name} is {pred.shape[1]} x {pred.shape[0]} pixels, "
                                     f"the ground truth {gt.shape[1]} x {gt.shape[0]}")
            except (ScanReadError, ValueError) as exc:
                unreadable.append((case_id, str(exc)))
                if not missing_as_empty:
                    logger.info("case %s not evaluated: %s", case_id, exc)
                    continue
                # As a challenge scores it: an unusable prediction is no better than none.
                logger.info("case %s: %s; scored as an empty prediction", case_id, exc)
                pred, scored_as_empty = np.zeros_like(gt), True

        image, image_spacing, style = None, None, None
        if images is not None:
            if case_id in images:
                try:
                    frame = read_frame(images[case_id])
                    image, image_spacing = frame.pixels, frame.spacing_mm
                except (ScanReadError, ValueError) as exc:
                    logger.warning("case %s: image not read (%s); style unknown", case_id, exc)
                    missing_images.append(case_id)
            else:
                missing_images.append(case_id)
            if image is None:  # in the "unknown" block: the styles' blocks then add up to the whole
                style = "unknown"
        # The run's spacing last: that of a file without a calibration, which its --spacing-mm gave.
        spacing = image_spacing or gt_spacing or pred_spacing or spacing_mm or (
            run.spacings.get(case_id) if run is not None else None)
        if pred_spacing is not None and not same_spacing(pred_spacing, spacing):
            logger.warning("case %s: the prediction's spacing %s mm is not the %s mm its ground truth is measured "
                           "with (made on another pixel grid?); HSD in mm uses the latter", case_id,
                           _spacing_text(pred_spacing), _spacing_text(spacing))
        try:
            result = evaluate_case(pred, gt, image, method, spacing, case_id=case_id, labels=labels,
                                   orientation=orientation, style=style,
                                   reference_aop_deg=(reference_aop or {}).get(case_id),
                                   recorded_reasons=run_reasons.get(case_id, ()))
            if case_id in run_failures:  # the run's own reason, not what an empty mask would be said to lack
                result = replace(result, status_pred="failed", reasons_pred=_codes_of(run_failures[case_id]))
            elif scored_as_empty:  # (cases.csv's problem says why; ps_missing had read as a network that drew nothing)
                result = replace(result, status_pred="failed", reasons_pred=())
            results.append(result)
            if lacking:
                gt_problems.append((case_id, f"the ground truth has no {' and no '.join(lacking)}"))
        except ValueError as exc:
            unreadable.append((case_id, str(exc)))
            logger.warning("case %s not evaluated: %s", case_id, exc)
    if missing_images:
        logger.warning("%d case(s) without a readable image: %s", len(missing_images), _preview(missing_images))
    if reference_aop is not None:
        no_reference = [c.case_id for c in results if c.case_id not in reference_aop]
        if no_reference:
            logger.warning("%d case(s) have no reference AoP: %s", len(no_reference), _preview(no_reference))
        past = [c.case_id for c in results if c.aop_past_180]
        if past:
            logger.warning("%d case(s) have a predicted or ground-truth AoP past 180°, which the reference's unsigned "
                           "angle (at most 180°) cannot express: their difference from the reference may under- or "
                           "overstate the error (compare delta_aop, against the ground-truth mask; cases.csv's "
                           "aop_past_180): %s", len(past), _preview(past))

    case_models = {**(run.case_models if run is not None else {}),
                   **{case_id_of(path): (item["model"], item.get("model_sha256") or "") for path, item in reports
                      if isinstance(item.get("model"), str)}}
    # A mask without its row or report (copied out of its run) still names what drew it in its PNG text: its model
    # is checked against the frames it trained on, and its orientation against this one's, as a row's would be.
    drawn = {case_id: said for case_id in sorted(paired - set(case_models))
             if (said := ipp_seg_png_provenance(preds[case_id])).get("model")}
    case_models.update({case_id: (said["model"], said.get("model sha256", "")) for case_id, said in drawn.items()})
    models = tuple(sorted(set(recorded_models(pred_dir, run, reports))
                          | {case_models[case_id] for case_id in drawn}))
    settings = ((run.settings if run is not None else set())
                | {prediction_setting(item.get("tta"), item.get("method"), item.get("orientation"),
                                      item.get("spacing_given_mm")) for _, item in reports if "model" in item})
    # (A mask's text records its --tta and orientation, not the method: one that a row already gives is no other.)
    recorded = {setting[::2] for setting in settings}
    settings = tuple(sorted(settings | {setting for setting in map(_setting_of_mask_text, drawn.values())
                                        if setting[::2] not in recorded}))
    other_orientations = sorted({o for _, _, o, _ in settings if o and o != orientation})
    if other_orientations:
        # Both masks are measured again here: with the other end of the PS taken as inferior, a run's
        # mirrored frames had read 82 deg where the run had measured 135 (an acceptance pass).
        mixed = orientation in {o for _, _, o, _ in settings}
        logger.warning("%s predictions were measured with --orientation %s, and are evaluated here with %s: their "
                       "AoPs are taken from the other end of the PS; %s", "some of the" if mixed else "the",
                       " and ".join(other_orientations), orientation,
                       f"give --orientation {other_orientations[0]}" if not mixed else
                       "the runs differ, so evaluate each run's masks apart, with its own --orientation")
    return _build_report(
        results,
        method=method,
        orientation=orientation,
        labels=labels,
        seen_in_training=cases_seen_in_training(models, [c.case_id for c in results], case_models,
                                                run.model_files if run is not None else ()),
        case_models=case_models,
        prediction_versions=tuple(sorted((run.versions if run is not None else set())
                                         | {str(item["ipp_seg_version"]) for _, item in reports
                                            if "model" in item}  # (a frame's report; not evaluate's summary)
                                         | {said["version"] for said in drawn.values() if said.get("version")})),
        missing_predictions=tuple(missing_pred),
        missing_ground_truth=tuple(missing_gt),
        missing_images=tuple(missing_images),
        unreadable=tuple(unreadable),
        missing_as_empty=missing_as_empty,
        paired_cases=len(paired) + len(failed_pred),  # a frame the run failed on is a prediction too
        ground_truth_problems=tuple(gt_problems),
        prediction_models=models,
        prediction_settings=settings,
        failed_predictions=tuple((c, run_failures[c]) for c in failed_pred if c in {r.case_id for r in results}),
        unrecorded_predictions=tuple(c for c in unrecorded if c in {r.case_id for r in results}),
        inputs={"predictions": _absolute(pred_dir), "ground_truth": _absolute(gt_dir),
                "images": None if images_dir is None else _absolute(images_dir),
                "gt_labels": {"ps": gt_labels[0], "fh": gt_labels[1]},
                "pred_labels": {"ps": pred_labels[0], "fh": pred_labels[1]},
                "spacing_mm": None if spacing_mm is None else [float(v) for v in spacing_mm],
                "reference_aop": None if reference_aop is None else {"cases": len(reference_aop)}},
    )


def _absolute(folder: Path) -> str:
    """A folder's absolute path as summary.json gives it (a name's non-UTF-8 bytes as \\xfc)."""
    return printable_path(os.path.abspath(folder))


def cases_seen_in_training(models: Sequence[tuple[str, str]], case_ids: Sequence[str],
                           drawn_by: Mapping[str, tuple[str, str]] | None = None,
                           model_files: Iterable[str] = ()) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(model, case IDs) for each of ``models`` ((name, sha256) as :func:`recorded_models` gives
    them) that is a model of the models folder, its files those of the predictions (by sha256,
    where recorded), and whose card lists some of ``case_ids`` among those it trained on (or the
    PSFHS IDs their names hold, :func:`~ipp_seg.inference.registry.case_ids_of_name`): of
    the cases ``drawn_by`` (case ID -> (model, sha256) of the run's row or report) says it drew,
    and those it says nothing of (a folder of several runs had credited every case to every
    model). A model without a card counts where a batch run ran it from an ONNX file of
    ``model_files`` (:attr:`RunRecord.model_files`) that records its training frames. Logged
    as a warning: a default model trained on every PSFHS frame, evaluated on the validation
    blocks, gives figures that read as a validation and are its fit to its training frames."""
    from ..inference.registry import case_ids_of_name, in_blocks, shipped_models

    found = []
    specs = shipped_models() if models else []
    uncarded = sorted({name for name, _ in models if name and name not in {spec.name for spec in specs}})
    for name, blocks, path in _exported_training_blocks(models, uncarded, model_files):
        uncarded.remove(name)
        seen = tuple(c for c in case_ids if any(in_blocks(i, blocks) for i in case_ids_of_name(c)) and (
            not drawn_by or (c in drawn_by and drawn_by[c][0] == name)))
        if seen:
            found.append((name, seen))
            logger.warning("%d of the %d cases evaluated %s the IDs of frames %s was trained on (such as %s; its "
                           "training frames %s%s, as recorded for its file %s): if they are those frames, its figures "
                           "here are its fit to its training data, not a validation", len(seen), len(case_ids),
                           "has" if len(seen) == 1 else "have", name, seen[0], _blocks_said(blocks),
                           ", ..." if len(blocks) > 4 else "", path)
    if uncarded:  # (an empty list would read as "none of these frames")
        logger.warning("%s %s no model card in the models folder: which frames %s trained on is not known here, so "
                       "a fit to them cannot be told from a validation", ", ".join(uncarded),
                       "has" if len(uncarded) == 1 else "have", "it" if len(uncarded) == 1 else "they")
    for spec in specs:
        listed = {spec.card_sha256(kind) for kind in ("onnx", "torch")}
        others = sorted({sha for name, sha in models if name == spec.name and sha and sha not in listed})
        if others:  # (the name's weights of an earlier release, or retrained: what they trained on is not on this card)
            logger.warning("predictions name %s with weights that are not its shipped files' (sha256 %s): an earlier "
                           "release's, or retrained; which frames they were trained on is not known here, so a fit to "
                           "them cannot be told from a validation", spec.name,
                           ", ".join(f"{sha[:12]}..." for sha in others[:3]) + (" and more" if len(others) > 3 else ""))
        if not any(name == spec.name and (not sha or sha in listed) for name, sha in models):
            continue
        # (A mask no row or report speaks for is no model's: not credited to any, as the warning on it says.)
        seen = tuple(c for c in case_ids if any(spec.trained_on(i) for i in case_ids_of_name(c)) and (
            not drawn_by or (c in drawn_by and drawn_by[c][0] == spec.name)))
        if not seen:
            continue
        found.append((spec.name, seen))
        listed = spec.trained_case_ids + spec.earlier_trained_case_ids  # (a fine-tuned model's parents' too)
        blocks = _blocks_said(listed)
        twin = f"; {spec.validated_by}, the same recipe without them, gives its card's validation" if (
            spec.validated_by) else ""
        # (Such as one of them, then the model's: the training frames alone had read as the cases evaluated.)
        logger.warning("%d of the %d cases evaluated %s the IDs of frames %s was trained on (such as %s; its training "
                       "frames %s%s): if they are those frames, its figures here are its fit to its training data, not "
                       "a validation%s", len(seen), len(case_ids), "has" if len(seen) == 1 else "have", spec.name,
                       seen[0], blocks, ", ..." if len(listed) > 4 else "", twin)
    return tuple(found)


def _blocks_said(blocks) -> str:
    """The first four case-ID blocks as a warning names them (``04402-04601, pt-01``)."""
    return ", ".join(first if first == last else f"{first}-{last}" for first, last in blocks[:4])


def _exported_training_blocks(models, names, model_files) -> Iterator[tuple[str, tuple, str]]:
    """(model, blocks, file) of each of ``names`` (models without a card in the models folder)
    that a batch run ran from a file still there, its bytes those its rows name (sha256), whose
    card beside it or ONNX metadata says which frames it trained on
    (:func:`~ipp_seg.inference.registry.training_blocks_of_file`)."""
    from ..inference.registry import sha256_of, training_blocks_of_file

    wanted = {(name, sha) for name, sha in models if name in names and sha}
    for path in sorted(model_files):
        if not os.path.isfile(path):
            continue
        try:
            digest = sha256_of(path)
        except OSError:
            continue
        for name, sha in sorted(wanted):
            if sha == digest:
                blocks = training_blocks_of_file(Path(path))
                if blocks:
                    wanted.discard((name, sha))
                    yield name, blocks, path
                break


def _codes_of(why: str) -> tuple[str, ...]:
    """The reason codes that open a :attr:`RunRecord.failures` explanation ("unreadable; ...")."""
    return tuple(code for code in why.split("; ")[0].split(";") if code)


def run_table(pred_dir: PathLike) -> Path | None:
    """The measurements.csv of the batch run whose predictions ``pred_dir`` holds: its own, or,
    for the run's ``masks`` folder given itself, its parent's. None where there is none."""
    from ..inference.batch import CSV_NAME, MASKS_FOLDER

    folder = Path(pred_dir)
    for table in (folder / CSV_NAME, *([folder.parent / CSV_NAME] if folder.name == MASKS_FOLDER else [])):
        if table.is_file():
            return table
    return None


def _case_names_of_row(row: dict) -> list[str]:
    """The case IDs a measurements.csv row's mask has or would have (``scan`` for a still
    image's or a whole file's row, ``scan_f0003`` for a cine's frame 3; frame 0 gives both)."""
    stem = case_id_of(path_of_printable(name_of_spreadsheet_cell(row.get("file") or "")))
    frame = (row.get("frame") or "").strip()
    names = [stem] if frame in ("", "0") else []
    if frame.isdigit():
        names.append(f"{stem}_f{int(frame):04d}")
    return names


@dataclass(frozen=True)
class RunRecord:
    """What the measurements.csv of the batch run behind a predictions folder says of its masks
    (:func:`read_run_record`). ``cases``: the case IDs it has rows for (a mask without one is an
    interrupted run's, or another's). ``failures``: case ID -> why, of the frames it failed on
    before the network drew a mask (``unreadable``, ``not_ultrasound_frame``,
    ``processing_error``); not a file without an image (``not_an_image``, no case), nor frames
    ``--frames`` did not ask for (``no_such_frame``), nor a case another of its rows segmented
    (a file resumed with other frames). ``models``: (model, sha256) of its rows. ``segmented``:
    whether it drew a mask of any frame (a run that failed on every frame has none to keep).
    ``reasons``: case ID -> the reason codes of its row, for the frames it drew a mask of.
    ``spacings``: case ID -> the (x, y) mm per pixel its row was measured with (the scan's
    calibration, or the run's ``--spacing-mm``), where it had one. ``versions``: the ipp-seg
    versions that wrote its rows ("" for rows of 0.1.0, which did not say). ``settings``: the
    (tta, method, orientation, spacing_given_mm) cells of its rows (:func:`prediction_setting`).
    ``case_models``: case ID -> the (model, sha256) of its row. ``model_files``: the model files
    its sessions ran, in full (runs of 0.2.9 on)."""

    cases: frozenset[str]
    failures: Mapping[str, str]
    models: frozenset[tuple[str, str]]
    segmented: bool
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    spacings: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    versions: frozenset[str] = frozenset()
    settings: frozenset[tuple[str, str, str, str]] = frozenset()
    case_models: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    model_files: frozenset[str] = frozenset()


def prediction_setting(tta, method, orientation, spacing_given) -> tuple[str, str, str, str]:
    """What made a prediction besides its model, as a row's cells read (``tta`` ``true`` /
    ``false``, the AoP method and orientation, ``--spacing-mm`` as ``x,y``; empty where not
    recorded), from a CSV row's cells or a JSON report's values (``tta`` a bool, the spacing a
    list)."""
    if isinstance(tta, bool):
        tta = str(tta).lower()
    if isinstance(spacing_given, list):
        spacing_given = ",".join(f"{v:g}" for v in spacing_given if isinstance(v, (int, float)))
    return tuple(str(v or "").lower() if i == 0 else str(v or "") for i, v in
                 enumerate((tta, method, orientation, spacing_given)))


def run_tables(pred_dir: PathLike) -> list[tuple[Path, str]]:
    """(measurements.csv, the part of its scans folder) of every batch run whose masks
    ``pred_dir`` holds: the one :func:`run_table` finds, or, for a folder inside a run's
    ``masks`` folder, that run's, its rows of that sub-folder only (``masks/sub2`` holds the
    masks of the scans in ``sub2``: ``"sub2"``; ``""`` for all); and those of the runs in its
    sub-folders (a study's ``results/siteA``, ``results/siteB``)."""
    from ..inference.batch import CSV_NAME, MASKS_FOLDER, OUTPUT_FOLDERS, is_batch_output

    folder = Path(pred_dir)
    own = run_table(folder)
    part = ""
    if own is None:
        above = next((above for above in folder.absolute().parents
                      if above.name == MASKS_FOLDER and is_batch_output(above.parent)), None)
        if above is not None:
            own, part = above.parent / CSV_NAME, folder.absolute().relative_to(above).as_posix()

    def outputs(here: Path, _real: Path) -> bool:  # (a run's masks, overlays and DICOM hold no run)
        return here.name in OUTPUT_FOLDERS and is_batch_output(here.parent)

    below = [(here / CSV_NAME, "") for here, _, names in walk_folders(folder, outputs, warn_links=False)
             if here != folder and CSV_NAME in names and is_batch_output(here)]
    return ([(own, part)] if own is not None else []) + below


def read_run_records(pred_dir: PathLike) -> RunRecord | None:
    """One :class:`RunRecord` of every batch run behind ``pred_dir`` (:func:`run_tables`), each
    CSV read in one pass; None where there is none, or none can be read (logged). A frame one
    run failed on and another drew a mask of is not a failure."""
    records = [record for record in (read_run_record(table, part) for table, part in run_tables(pred_dir))
               if record is not None]
    if len(records) <= 1:
        return records[0] if records else None
    reasons = {case: codes for record in records for case, codes in record.reasons.items()}
    return RunRecord(
        frozenset().union(*(record.cases for record in records)),
        {case: why for record in records for case, why in record.failures.items() if case not in reasons},
        frozenset().union(*(record.models for record in records)),
        any(record.segmented for record in records),
        reasons,
        {case: spacing for record in records for case, spacing in record.spacings.items()},
        frozenset().union(*(record.versions for record in records)),
        frozenset().union(*(record.settings for record in records)),
        {case: model for record in records for case, model in record.case_models.items()},
        frozenset().union(*(record.model_files for record in records)))


def read_run_record(pred_dir: PathLike, part: str = "") -> RunRecord | None:
    """The :class:`RunRecord` of the batch run behind ``pred_dir`` (:func:`run_table`; or the
    path of its measurements.csv itself), read in one pass; of its rows of files in the
    sub-folder ``part`` of its scans folder only, where given. None where there is no such CSV,
    or it cannot be read (logged)."""
    from ..inference.batch import NO_SUCH_FRAME, NOT_AN_IMAGE, row_segmented

    table = Path(pred_dir) if Path(pred_dir).is_file() else run_table(pred_dir)
    if table is None:
        return None
    cases: set[str] = set()
    segmented: set[str] = set()
    failures: dict[str, str] = {}
    models: set[tuple[str, str]] = set()
    reasons: dict[str, tuple[str, ...]] = {}
    spacings: dict[str, tuple[float, float]] = {}
    versions: set[str] = set()
    settings: set[tuple[str, str, str, str]] = set()
    case_models: dict[str, tuple[str, str]] = {}
    try:
        with open(table, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                if part and not path_of_printable(name_of_spreadsheet_cell(row.get("file") or "")).startswith(
                        part + "/"):
                    continue  # (a file of another sub-folder: its mask is not among these)
                names = _case_names_of_row(row)
                cases.update(names)
                models.add((row.get("model") or "", row.get("model_sha256") or ""))
                if row.get("model"):
                    case_models.update(dict.fromkeys(names, (row["model"], row.get("model_sha256") or "")))
                if row.get("file"):  # (a blank row a spreadsheet left says nothing of a version)
                    versions.add(row.get("ipp_seg_version") or "")
                    if row.get("model"):  # (a file without an image ran no model)
                        settings.add(prediction_setting(row.get("tta"), row.get("method"), row.get("orientation"),
                                                        row.get("spacing_given_mm")))
                if row.get("reasons") is None:
                    continue
                if row_segmented(row):
                    segmented.update(names)
                    spacing = _row_spacing(row)
                    for name in names:
                        reasons[name] = tuple(filter(None, row["reasons"].split(";")))
                        if spacing is not None:
                            spacings[name] = spacing
                    continue
                codes = set(row["reasons"].split(";"))
                if row.get("status") != "failed" or codes & {NO_SUCH_FRAME, NOT_AN_IMAGE}:
                    continue
                why = "; ".join(filter(None, (row["reasons"], row.get("error"))))
                for name in names:
                    failures.setdefault(name, why)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        logger.warning("%s cannot be read for the frames and models of the run that made the predictions (%s)",
                       table, exc)
        return None
    return RunRecord(frozenset(cases), {case: why for case, why in failures.items() if case not in segmented},
                     frozenset(models), bool(segmented), reasons, spacings, frozenset(versions), frozenset(settings),
                     case_models, _model_files_run(table))


def _model_files_run(table: Path) -> frozenset[str]:
    """The model files the sessions of the batch run whose measurements.csv is ``table`` ran,
    as its record names them (none in a record of a run before 0.2.9, or without a record)."""
    from ..inference.batch import run_sessions

    return frozenset(s["model_file"] for s in run_sessions(table.parent) if isinstance(s.get("model_file"), str))


def _row_spacing(row: dict) -> tuple[float, float] | None:
    """The (x, y) mm per pixel a CSV row was measured with; None where it has none (or an edited
    cell that is no positive number)."""
    try:
        spacing = (float(row.get("spacing_x_mm") or "nan"), float(row.get("spacing_y_mm") or "nan"))
    except ValueError:
        return None
    return spacing if all(math.isfinite(v) and v > 0 for v in spacing) else None


def recorded_models(pred_dir: PathLike, run: RunRecord | None = None,
                    reports: Sequence[tuple[Path, dict]] | None = None) -> tuple[tuple[str, str], ...]:
    """(model, sha256) of every model a predictions folder says made its masks: those of the
    batch run behind it (``run``, its :class:`RunRecord`), and of ``predict --out``'s JSON
    reports beside the masks (``reports``, :func:`_frame_reports`, where the caller has read
    them). Sorted; empty where the folder records none (masks from another tool)."""
    found: set[tuple[str, str]] = set(run.models) if run is not None else set()
    for _, item in reports if reports is not None else _frame_reports([Path(pred_dir)]):
        if isinstance(item.get("model"), str):
            found.add((item["model"], item.get("model_sha256") or ""))
    return tuple(sorted((m, s) for m, s in found if m))


def _frame_reports(folders: Iterable[Path]) -> Iterator[tuple[Path, dict]]:
    """(path, report) of each report of ipp-seg among the JSON files of ``folders`` (those of
    ``predict --out``: one frame's, ``<case>.json`` beside ``<case>_mask.png``; not evaluate's own
    summary.json, which had been taken for a case's and every mask beside it for unrecorded)."""
    for path in sorted(path for folder in set(folders) for path in folder.glob("*.json")):
        try:
            record = read_json_file(path)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        for item in record if isinstance(record, list) else [record]:
            if isinstance(item, dict) and {"file", "ipp_seg_version"} <= item.keys():
                yield path, item


def _setting_of_mask_text(said: Mapping[str, str]) -> tuple[str, str, str, str]:
    """:func:`prediction_setting` of a mask's PNG text (:func:`~ipp_seg.io.images.ipp_seg_png_provenance`):
    its --tta and orientation, the method unrecorded; a value no run writes (a copy edited by
    hand) is taken as unrecorded too."""
    tta = {said_so: asked for asked, said_so in TTA_SAID.items()}.get(said.get("tta", ""))
    orientation = said.get("orientation") if said.get("orientation") in ORIENTATIONS else ""
    return prediction_setting(tta, "", orientation, "")


def _failures_reported(reports: Sequence[tuple[Path, dict]], preds: Mapping[str, Path]) -> dict[str, str]:
    """Case ID -> why (its reason codes, then its error), of each report of ``predict --out`` that
    failed before a mask (none in ``preds``), as :attr:`RunRecord.failures` gives a batch run's:
    a frame it could not read or segment, not one of a file without an image or without the
    frames asked for."""
    from ..inference.batch import NO_SUCH_FRAME, NOT_AN_IMAGE

    failures = {}
    for path, item in reports:
        codes = item.get("reasons")
        if item.get("status") != "failed" or case_id_of(path) in preds or not isinstance(codes, list) \
                or not all(isinstance(code, str) for code in codes) or set(codes) & {NO_SUCH_FRAME, NOT_AN_IMAGE}:
            continue
        error = item.get("error") if isinstance(item.get("error"), str) else ""
        failures.setdefault(case_id_of(path), "; ".join(filter(None, (";".join(codes), error))))
    return failures


def recorded_reasons(pred_dir: PathLike, run: RunRecord | None = None,
                     reports: Sequence[tuple[Path, dict]] | None = None) -> dict[str, tuple[str, ...]]:
    """Case ID -> the reason codes the run that drew a prediction gave it: from the batch run's
    CSV behind the folder (``run``), or from ``predict --out``'s report of one frame beside its
    mask (``reports`` as for :func:`recorded_models`). A mask measured alone lacks those of the
    network and the frame (:data:`~ipp_seg.measure.result.SEGMENTATION_REASONS`)."""
    found = dict(run.reasons) if run is not None else {}
    for path, item in reports if reports is not None else _frame_reports([Path(pred_dir)]):
        codes = item.get("reasons")
        if isinstance(codes, list) and all(isinstance(code, str) for code in codes):
            found.setdefault(case_id_of(path), tuple(codes))
    return found


def _reference_by_case(reference: Mapping[str, float], case_ids: Sequence[str]) -> Mapping[str, float]:
    """``reference`` with, for case IDs it lacks, the value of an ID of the same number: a
    spreadsheet saves case 04601 as 4601, or as 4601.0. An exact ID always wins; matches by
    number are logged; a number two reference rows give different values is matched by neither."""
    by_number: dict[int, list[str]] = {}
    for key in reference:
        number = _id_number(key)
        if number is not None:
            by_number.setdefault(number, []).append(key)
    matched: dict[str, float] = {}
    conflicting: list[str] = []
    shadowed: list[str] = []
    cases = set(case_ids)
    for case_id in case_ids:
        number = _id_number(case_id)
        # Rows of the same number that are no case here (a case 01 beside a case 1 has its own row).
        rivals = [k for k in by_number.get(number, []) if k != case_id and k not in cases]
        if case_id in reference and any(reference[k] != reference[case_id] for k in rivals):
            shadowed.append(f"{case_id} ({' and '.join(rivals)})")
        if case_id in reference or number not in by_number:
            continue
        values = {reference[k] for k in by_number[number]}
        if len(values) > 1:
            conflicting.append(f"{case_id} ({' and '.join(by_number[number])})")
            continue
        matched[case_id] = reference[by_number[number][0]]
    if matched:
        example = next(iter(matched))
        logger.warning("%d case(s) matched the reference AoP by number, the IDs being written differently "
                       "(e.g. reference %r for case %r)", len(matched), by_number[_id_number(example)][0], example)
    if conflicting:
        logger.warning("%d case(s) left without a reference AoP: rows of the same number give different values: "
                       "%s", len(conflicting), _preview(conflicting))
    if shadowed:
        logger.warning("%d case(s) take the reference AoP of the row with their exact ID, where rows of the same "
                       "number written otherwise give other values: %s", len(shadowed), _preview(shadowed))
    return {**reference, **matched}


def _id_number(case_id: str) -> int | None:
    """The number a case ID writes (04601, 4601 and 4601.0 alike), None when it is not one."""
    text = case_id[:-2] if case_id.endswith(".0") else case_id
    return int(text) if text.isdigit() else None


def _spacing_text(spacing: tuple[float, float]) -> str:
    return f"{spacing[0]:g} x {spacing[1]:g}"


# Column names read_reference_aop accepts, first match wins (PSFHS: "case", "aop_deg").
_REFERENCE_ID_COLUMNS = ("case", "case_id", "id")
_REFERENCE_AOP_COLUMNS = ("aop_deg", "aop")


class ReferenceAopError(IppSegError, ValueError):
    """A reference AoP file that cannot be used; the message says which file and why."""


def read_reference_aop(path: PathLike) -> dict[str, float]:
    """Published AoP per case (deg) from a CSV with a case-ID column (``case``, ``case_id`` or
    ``id``) and an AoP column (``aop_deg`` or ``aop``), such as PSFHS's ``aop_reference.csv``.
    Rows with an empty AoP are left out.

    Raises:
        ReferenceAopError: the file cannot be read (missing, a folder, not UTF-8 text), its
            columns are missing, an AoP is not a number in (0, 240] deg (an empty cell a
            spreadsheet saved as 0 included), or a case is given twice. Its
            message names the file and says why, in words a user can act on.
    """
    def refuse(why: str) -> ReferenceAopError:
        return ReferenceAopError(f"cannot read the reference AoP file {path}: {why}")

    if not os.path.exists(path):
        raise refuse(missing_file_reason(path))
    if os.path.isdir(path):
        raise refuse("it is a folder; give the CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise refuse(open_failure_reason(path, exc)) from None
    except UnicodeDecodeError:
        raise refuse("it is not a text CSV (UTF-8)") from None
    except csv.Error as exc:  # a NUL byte, say: a binary file
        raise refuse(f"it is not a CSV ({exc})") from None
    columns = [c.strip().lower() for c in (rows[0] if rows else ())]
    id_col = next((c for c in _REFERENCE_ID_COLUMNS if c in columns), None)
    aop_col = next((c for c in _REFERENCE_AOP_COLUMNS if c in columns), None)
    if id_col is None or aop_col is None:
        missing = [f"{kind} column ({' or '.join(names)})" for kind, names, found in (
            ("a case", _REFERENCE_ID_COLUMNS, id_col), ("an AoP", _REFERENCE_AOP_COLUMNS, aop_col)) if found is None]
        semicolons = len(columns) == 1 and ";" in columns[0]
        raise refuse(f"it needs {' and '.join(missing)}; its columns are {', '.join(columns) or 'none'}" + (
            " (its values are separated by ';', as a spreadsheet set to a German or French locale saves a CSV: "
            "save it again with commas between the values and points in the numbers)" if semicolons else ""))
    id_index, aop_index = columns.index(id_col), columns.index(aop_col)
    reference: dict[str, float] = {}
    for line, row in enumerate(rows[1:], start=2):
        case_id = composed_name(row[id_index].strip()) if id_index < len(row) else ""  # as case_id_of
        text = row[aop_index].strip() if aop_index < len(row) else ""
        if not case_id or not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise refuse(f"line {line}: AoP {text!r} is not a number") from None
        if not math.isfinite(value):
            raise refuse(f"line {line}: AoP {text!r} is not finite")
        if not 0 < value <= AOP_IMPOSSIBLE_ABOVE_DEG:
            raise refuse(f"line {line}: AoP {text!r} is no angle of progression (above 0 and at most "
                         f"{AOP_IMPOSSIBLE_ABOVE_DEG:g} deg)")
        if case_id in reference:
            raise refuse(f"line {line}: case {case_id} given twice")
        reference[case_id] = value
    return reference


def case_id_of(path: PathLike) -> str:
    """Case ID of a file: its name without the suffix (".nii.gz" counts as one suffix; one of
    digits alone, a UID's last part, is kept: :func:`~ipp_seg.io.formats.name_without_suffix`),
    in Unicode's composed form (:func:`~ipp_seg.io.folders.composed_name`)."""
    return name_without_suffix(composed_name(Path(path).name))


def without_mask_suffix(case_id: str) -> str | None:
    """``case_id`` without the ``_mask`` that ``predict --out`` and the training layout add, in any
    letter case, as a file's suffix is taken (04700_MASK.png had been a case of its own); None
    where it ends otherwise."""
    if case_id[-len(MASK_NAME_SUFFIX):].casefold() == MASK_NAME_SUFFIX:
        return case_id[: -len(MASK_NAME_SUFFIX)]
    return None


def mask_case_id(path: PathLike) -> str:
    """The case a mask file belongs to: its name without the suffix, and without the ``_mask``
    that ``ipp-seg predict --out`` and ``batch --save-masks`` add (``04700_mask.png`` is 04700)."""
    case_id = case_id_of(path)
    stripped = without_mask_suffix(case_id)
    return case_id if stripped is None else stripped


def read_label_mask(path: PathLike) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read a label mask: ``(labels, spacing_mm)``.

    ``labels`` is a 2-D integer array with the values as stored (no rescaling, unlike the
    greyscale readers of :mod:`ipp_seg.io`). A 3-D ITK image is accepted when it has one
    plane or identical planes. ``spacing_mm`` is the ITK (x, y) spacing in mm, None for
    image formats and for the 1 x 1 spacing ITK writes when nothing is known.

    Raises:
        ScanReadError: the file cannot be read or does not hold a grey integer label mask.
    """
    name = os.fspath(path)
    lower = name.lower()
    if os.path.isdir(name):
        raise ScanReadError(name, f"is a folder, not a mask file: give its masks ({os.path.join(name, '*.png')})")
    if not os.path.isfile(name):
        raise ScanReadError(name, missing_file_reason(name))
    if not os.access(name, os.R_OK):  # named as such: ITK would say only that it cannot read it
        raise ScanReadError(name, f"cannot open the file ({os.strerror(errno.EACCES)})")
    if lower.endswith(_ITK_MASK_SUFFIXES):
        labels, spacing = _read_itk_mask(name)
    elif lower.endswith(MASK_SUFFIXES):
        labels, spacing = _read_image_mask(name), None
    else:
        raise ScanReadError(name, f"not a label mask format; supported: {', '.join(MASK_SUFFIXES)}")
    if np.issubdtype(labels.dtype, np.floating):
        labels = _whole_labels(name, labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ScanReadError(name, f"label masks hold integers, this file holds {labels.dtype}")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    return np.ascontiguousarray(labels), spacing


def _whole_labels(name: str, values: np.ndarray) -> np.ndarray:
    """A float mask whose values are whole numbers (0.0, 1.0, 2.0: some tools store labels so)
    as integers; anything else is no label mask."""
    finite = np.isfinite(values)
    if not finite.all():
        raise ScanReadError(name, "label masks hold whole numbers, this file holds NaN or infinite values")
    fractional = values[values != np.round(values)]
    if fractional.size:
        shown = np.format_float_positional(fractional.flat[0], trim="-")  # as stored, not rounded
        raise ScanReadError(name, f"label masks hold whole numbers, this file holds values such as {shown}: a "
                                  "probability map or an interpolated mask? (resample label masks with "
                                  "nearest-neighbour interpolation)")
    if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise ScanReadError(name, "label values beyond the 32-bit integer range")
    return values.astype(np.int32)


def _unknown_label_values(mask: np.ndarray, labels: tuple[int, int]) -> list:
    """The values of ``mask`` besides background 0 and the PS and FH ``labels``, sorted."""
    return sorted(set(np.unique(mask).tolist()) - {0, *labels})


def relabel_mask(stored: np.ndarray, labels: tuple[int, int], to: tuple[int, int] = (1, 2),
                 source: str = "mask", option: str = "--labels", note: str = "",
                 path: PathLike | None = None) -> np.ndarray:
    """Map a mask's PS and FH values ``labels`` to ``to`` (uint8; background stays 0).

    Raises:
        ValueError: the mask holds a value other than 0 and ``labels``: another structure, an
        8-bit export of other values, or a lossy file's blurred edges. The message names
        ``source``, the values, and how to name them with ``option`` (the command-line option
        that sets ``labels``), followed by ``note``. Where ``path`` (the file read) is an
        indexed-colour PNG, the message says that its palette indices are the values read.
    """
    ps, fh = check_label_pair(labels)
    unknown = _unknown_label_values(stored, (ps, fh))
    if unknown:
        present = sorted(set(np.unique(stored).tolist()) - {0})
        if len(present) > MAX_MASK_VALUES:
            raise ValueError(f"{source} holds {len(present) + 1} different values: a greyscale image rather than a "
                             "label mask (ipp-seg predict segments a scan), or a mask saved lossy (such as JPEG)")
        shown = ", ".join(str(v) for v in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        # Two structures under other values: say which, so the fix can be typed as read.
        if len(present) == 2 and min(present) > 0:  # the option takes positive values only
            advice = (f"it holds {present[0]} and {present[1]}: {option} ps={present[0]},fh={present[1]} if the PS "
                      f"is {present[0]}")
        elif len(present) >= 3 and not (stored == 0).any():
            # Background under another value (1, 2, 3): no option maps it, and naming the structures' values had
            # led to a refusal of the background's value in turn (a research fellow's pass).
            advice = (f"it holds no 0, which is background to ipp-seg, and {len(present)} values "
                      f"({', '.join(map(str, present[:8]))}): save it with 0 for the background (no option maps "
                      "another value to it)")
        elif len(present) == 1:
            # One foreground value (a 0/255 mask): no mapping makes two structures of it.
            advice = (f"it holds one value besides 0 ({present[0]}): a mask of one structure, or of both as one "
                      f"foreground; ipp-seg takes masks that hold the PS and FH under values of their own "
                      f"({option} names them)")
        else:
            advice = f"name the structures' values with {option} ps=VALUE,fh=VALUE"
        # A palette PNG showing grey 127 and 255 holds indices 1 and 2: the user typed the shades.
        indexed = ("; it is an indexed-colour PNG, whose values are its palette indices, not the colours it shows"
                   if path is not None and is_indexed_png(path) else "")
        blurred = "" if len(present) == 1 else "; or a lossless mask if these are blurred edges"  # (one value: none)
        raise ValueError(f"{source}: label values {shown} besides background 0, PS {ps} and FH {fh}; "
                         f"{advice}{note}{indexed}{blurred}")
    mapped = np.zeros(stored.shape, np.uint8)
    mapped[stored == ps] = to[0]
    mapped[stored == fh] = to[1]
    return mapped


def _read_itk_mask(name: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    itk_name = check_itk_name(name)
    # The scan reader's checks first (a header or data cut short, a frame too large to hold, a turned
    # image warned of): ITK had said only "Exception thrown in ... itkMetaImageIO.cxx:490", and MetaIO
    # printed its own lines on stderr (a library user's pass).
    inspect_itk(name)
    try:
        with itk_warnings_silenced():
            img = sitk.ReadImage(itk_name, imageIO=itk_image_io(name))
    except RuntimeError as exc:
        raise ScanReadError(name, f"SimpleITK cannot read it ({str(exc).strip().splitlines()[0]})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ScanReadError(name, "a label mask has one value per pixel; this file has several")
    arr = sitk.GetArrayFromImage(img)  # (z, y, x) or (y, x)
    if arr.ndim == 3:
        if arr.shape[0] == 1 or all(np.array_equal(arr[0], plane) for plane in arr[1:]):
            arr = arr[0]
        else:
            raise ScanReadError(name, f"a 3-D label volume with {arr.shape[0]} different planes is not a 2-D mask")
    elif arr.ndim != 2:
        raise ScanReadError(name, f"a label mask is 2-D, this image has {arr.ndim} dimensions")
    sx, sy = img.GetSpacing()[:2]
    # ITK writes 1 x 1 when nothing is known (as ipp_seg.io does, it counts as unknown).
    spacing = None if (sx == 1.0 and sy == 1.0) or sx <= 0 or sy <= 0 else (float(sx), float(sy))
    return arr, spacing


def _read_image_mask(name: str) -> np.ndarray:
    data = np.fromfile(name, dtype=np.uint8)
    if data.size:  # (an empty file is refused below, as OpenCV cannot decode it)
        check_image_bytes(name, data)  # before decoding: a mask can be a decompression bomb as a scan can
    indexed = png_with_index_greys(data)
    if indexed is not None:  # OpenCV would give an indexed PNG's colours; the labels are its indices
        data = np.frombuffer(indexed, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise ScanReadError(name, "OpenCV cannot decode it as an image")
    if indexed is not None:
        arr = arr[..., 0] if arr.ndim == 3 else arr
    elif arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[2] >= 3 else arr[..., :1]
        if not all(np.array_equal(colour[..., 0], colour[..., k]) for k in range(1, colour.shape[2])):
            raise ScanReadError(name, "a colour image is not a label mask (its channels differ): save each "
                                      "mask as one channel of label values, 0 background and one value per "
                                      "structure (train's and measure's --labels name them, evaluate's --gt-labels and "
                                      "--pred-labels)")
        arr = colour[..., 0]
    return as_displayed(arr, data, name)  # turned as its scan is read, so that the two stay aligned


def _refuse_run_output_by_any_name(folder: PathLike, what: str, *instead: str) -> None:
    """:func:`~ipp_seg.inference.batch.refuse_batch_output_as_input` of the folder ``folder`` leads
    to, a link followed (a link to a run's masks/ had been taken), the link named as typed."""
    from ..inference.batch import NoScansError, refuse_batch_output_as_input

    real = Path(os.path.realpath(folder))
    try:
        refuse_batch_output_as_input(real, what, *instead)
    except NoScansError as exc:
        if real == Path(os.path.abspath(folder)):
            raise
        raise NoScansError(f"{folder} leads to {exc}") from None


def _is_a_scan(path: Path) -> bool:
    """Whether an image file holds more grey levels than a label mask's three (background and two
    structures); False where it cannot be read as a frame (its reading as a mask will say why)."""
    try:
        return len(np.unique(read_frame(path).pixels)) > 3
    except (ScanReadError, ValueError, OSError):
        return False


def _refuse_masks_on_both_sides(preds: Mapping[str, Path], gts: Mapping[str, Path], pred_dir: PathLike,
                                gt_dir: PathLike) -> None:
    """Raise ValueError where a mask file is found among the predictions and the ground truths
    alike (one folder given twice, or one inside the other: both are searched with their
    sub-folders): it would be scored against itself (Dice 1, ΔAoP 0, without a word, as a QA
    pass found)."""
    both = {os.path.realpath(p) for p in preds.values()} & {os.path.realpath(p) for p in gts.values()}
    if both:
        raise ValueError(f"{len(both)} mask file(s) lie among the predictions ({pred_dir}) and the ground truths "
                         f"({gt_dir}) alike, one folder given twice or one inside the other: they would be scored "
                         f"against themselves ({_preview(sorted(both))}); give the predictions and the ground truths "
                         "in folders apart")


def _index_folder(folder: PathLike, suffixes: Iterable[str], predictions: bool = False,
                  images: bool = False) -> dict[str, Path]:
    """Case ID -> file. In a folder of ``predictions``, what ``ipp-seg predict --out`` writes
    is understood: ``<case>_mask.png`` is case ``<case>``, and ``<case>_overlay.png`` (a
    picture, not a mask) is left out; and what ``batch`` writes: beside its measurements.csv
    only the ``masks`` folder holds predictions (not the overlays, nor scans kept there when
    ``--out`` was their project folder); and beside the ``<case>_mask.png`` files ipp-seg wrote
    (a PNG text chunk says so), other images are scans (``predict --out`` the scans' own folder),
    not predictions. In a folder of ground truths ``<case>_mask.png`` is case
    ``<case>`` too, and a folder of ground truths or of ``images`` may hold both in the layout
    ``train`` reads, ``<case>.png`` beside ``<case>_mask.png``: the mask is the ground truth of
    case ``<case>``, the other file its image. So may a folder in the other layouts ``train``
    reads, PSFHS's ``image_mha/`` beside ``label_mha/``, or ``images/`` beside ``masks/`` (or
    ``labels/``): its masks' folder is the ground truths', its images' folder the images'."""
    from ..inference.batch import MASKS_FOLDER, OVERLAYS_FOLDER, is_batch_output, is_batch_output_part
    from ..train.data import PAIRED_LAYOUTS, refuse_two_mask_folders  # (torch-free: the loader's layouts)

    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    if not predictions and not is_batch_output(root):  # (a batch run's masks/ beside its CSV are predictions)
        refuse_two_mask_folders(root)
        for image_dir, mask_dir in PAIRED_LAYOUTS:
            if (root / image_dir).is_dir() and (root / mask_dir).is_dir():
                logger.debug("%s: in the layout train reads; its %s/ taken", root, image_dir if images else mask_dir)
                root = root / (image_dir if images else mask_dir)
                break
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, Path] = {}
    repeats: list[str] = []
    batch_outputs: dict[Path, bool] = {}  # folder -> whether it holds a batch run's CSV (read once)

    case_ids_in: dict[Path, set[str]] = {}  # folder -> the case IDs of its files (read once)

    def ids_beside(folder: Path) -> set[str]:
        if folder not in case_ids_in:
            case_ids_in[folder] = {case_id_of(p) for p in folder.iterdir()
                                   if p.is_file() and p.name.lower().endswith(suffixes)}
        return case_ids_in[folder]

    masked_ids_in: dict[Path, set[str]] = {}  # folder -> the cases whose <case>_mask file it holds

    def masked_ids_beside(folder: Path) -> set[str]:
        if folder not in masked_ids_in:
            masked_ids_in[folder] = {stripped for i in ids_beside(folder)
                                     if (stripped := without_mask_suffix(i)) is not None}
        return masked_ids_in[folder]

    marked_masks_in: dict[Path, bool] = {}  # folder -> whether it holds <case>_mask.png files ipp-seg marked

    def holds_marked_masks(folder: Path) -> bool:
        if folder not in marked_masks_in:
            marked_masks_in[folder] = any(ipp_seg_png_kind(p) == "label mask" for p in folder.iterdir()
                                          if p.name.lower().endswith(MASK_NAME_SUFFIX + ".png") and p.is_file())
        return marked_masks_in[folder]

    def in_batch_output(folder: Path) -> bool:
        if folder not in batch_outputs:
            batch_outputs[folder] = is_batch_output(folder)
        return batch_outputs[folder]

    def skip(here: Path, real: Path) -> bool:
        if here == root:
            return False
        if predictions:
            return here.name == OVERLAYS_FOLDER or (here.name != MASKS_FOLDER and in_batch_output(here.parent))
        return is_batch_output_part(here)  # ground truths and images: nothing a batch run wrote

    for path in files_below(root, skip=skip):
        if not path.is_file():  # (hidden files are not walked)
            continue
        if predictions and in_batch_output(path.parent):  # a scan beside the CSV, not a prediction
            logger.debug("%s: skipped (beside a batch run's measurements.csv, not in its masks)", path)
            continue
        if not path.name.lower().endswith(suffixes):
            logger.debug("%s: skipped (not one of %s)", path, ", ".join(suffixes))
            continue
        case_id = case_id_of(path)
        if predictions and case_id.endswith(OVERLAY_NAME_SUFFIX):
            logger.debug("%s: skipped (an overlay picture)", path)
            continue
        if predictions and without_mask_suffix(case_id) is None and holds_marked_masks(path.parent) \
                and ipp_seg_png_kind(path) != "label mask" and _is_a_scan(path):
            # predict --out into the scans' own folder: beside the <case>_mask.png files ipp-seg wrote (and
            # marked), the other images are the scans, those it could not measure too, not predictions;
            # another tool's label masks put there stay predictions.
            logger.info("%s: passed over (a scan beside the masks ipp-seg wrote, not a label mask)", path)
            continue
        if predictions:
            case_id = mask_case_id(path)
        elif not images and case_id in masked_ids_beside(path.parent):
            logger.debug("%s: skipped (the image of the mask beside it)", path)
            continue
        elif not images and without_mask_suffix(case_id) is not None:
            case_id = mask_case_id(path)  # <case>_mask.png is case <case>, as train and predict --out name it
        elif images and without_mask_suffix(case_id) is not None and mask_case_id(path) in ids_beside(path.parent):
            logger.debug("%s: skipped (the mask of the image beside it)", path)
            continue
        if case_id in found:  # every such case gathered, and named at once below
            repeats.append(f"{case_id!r} ({found[case_id].relative_to(root)} and {path.relative_to(root)})")
            continue
        found[case_id] = path
    if repeats:
        raise ValueError(f"{root}: {len(repeats)} case ID(s) have two files: " + "; ".join(repeats[:5])
                         + ("; ..." if len(repeats) > 5 else "") + " (give a folder that holds one of each)")
    if (predictions and not found and in_batch_output(root) and not (root / MASKS_FOLDER).is_dir()
            and _run_segmented_a_frame(root)):  # (read only on the way to this error)
        # Said here, not as "no label masks": the run measured, and kept no masks to score.
        raise ValueError(f"{root} holds a batch run's measurements.csv but no {MASKS_FOLDER}/ folder: the run kept "
                         "no masks to score; run it again with --save-masks (--overwrite, or another --out)")
    return found


def _run_segmented_a_frame(folder: Path) -> bool:
    """Whether the batch run whose measurements.csv lies in ``folder`` drew a mask of any frame
    (a run that failed on every frame before the network has none to keep, --save-masks or not);
    true where its CSV cannot be read, to say what a run without masks lacks."""
    run = read_run_record(folder)
    return run is None or run.segmented


def files_below(root: Path, skip=None) -> list[Path]:
    """Non-hidden files in ``root`` and its sub-folders (:func:`walk_folders`), sorted by
    relative path; sub-folders for which ``skip(folder, real_path)`` is true are left out."""
    files = [here / name for here, _, names in walk_folders(root, skip) for name in names]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


# ----------------------------------------------------------------------------- writers


UNRECORDED_PREDICTION = ("no row in the predicting run's measurements.csv, nor predict's report beside it (a run "
                         "stopped before it, an earlier run's mask left by --overwrite, or one put there from "
                         "elsewhere): scored as it is")


def write_case_csv(report: EvaluationReport, path: PathLike) -> Path:
    """Write one row per case of either folder (columns of :meth:`CaseResult.to_dict`, then
    ``evaluated`` and ``problem``), sorted by case ID; empty cells for values that could not be
    measured. A case that was not evaluated (no prediction, no ground truth, a file that could
    not be used) has ``evaluated`` false and the reason in ``problem``; an unusable or missing
    prediction scored as empty (``missing_as_empty``) has ``evaluated`` true and the reason
    too. No case of either folder is left out. Returns the path."""
    out = Path(path)
    with replacing(out, **_CSV_OPENING) as fh:
        _write_case_rows(report, fh)
    return out


def write_summary_json(report: EvaluationReport, path: PathLike) -> Path:
    """Write :meth:`EvaluationReport.to_dict` as indented JSON, with ``evaluated_at`` (UTC, to
    the second). Returns the path."""
    out = Path(path)
    with replacing(out, **_JSON_OPENING) as fh:
        _write_summary(report, fh)
    return out


def write_evaluation(report: EvaluationReport, folder: PathLike) -> tuple[Path, Path]:
    """Write ``cases.csv`` (as :func:`write_case_csv`) and ``summary.json`` (as
    :func:`write_summary_json`) into ``folder`` as a pair: both are written in full beside their
    names before either is moved over the earlier one, so that a run stopped or failing while
    writing leaves the earlier pair, not one file of each run. Returns their paths."""
    cases, summary = Path(folder) / "cases.csv", Path(folder) / "summary.json"
    with (_stops_held_when_asked() as hold, replacing(cases, **_CSV_OPENING) as cases_fh,
          replacing(summary, **_JSON_OPENING) as summary_fh):
        _write_case_rows(report, cases_fh)
        cases_fh.flush()  # (its last bytes had reached the disk after summary.json was moved: a full disk split them)
        _write_summary(report, summary_fh)
        summary_fh.flush()
        hold()  # both whole: a stop now waits until both are moved (the inner file first, the outer just after)
    return cases, summary


@contextmanager
def _stops_held_when_asked() -> Iterator[Callable[[], None]]:
    """A block in which calling the function it gives holds Ctrl-C, SIGTERM and SIGHUP back until
    the block ends: their handlers are set aside for a note of what came, and the first that came
    is raised again once they are back, to be handled as it would have been (in the main thread,
    where Python handles signals; elsewhere nothing is held)."""
    previous: dict = {}
    came: list[int] = []

    def hold() -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)
            handler = signal.getsignal(number) if number is not None else None
            if handler is not None:  # (None: a handler not set from Python, which could not be put back)
                previous[number] = handler
                signal.signal(number, lambda signum, frame: came.append(signum))

    try:
        yield hold
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if came:
            signal.raise_signal(came[0])


_CSV_OPENING = {"text": True, "newline": "", "encoding": "utf-8", "errors": "backslashreplace"}
_JSON_OPENING = {"text": True, "encoding": "utf-8", "errors": "backslashreplace"}


def _write_case_rows(report: EvaluationReport, fh) -> None:
    rows = {case.case_id: {k: ("" if v is None else v) for k, v in case.to_dict().items()} | {"evaluated": "true"}
            for case in report.cases}
    problems = [(c, "no prediction" + (": scored as an empty prediction" if c in rows else ""))
                for c in report.missing_predictions]
    problems += [(c, "no ground truth") for c in report.missing_ground_truth]
    problems += [(c, f"the predicting run failed on this frame ({why}): scored as an empty prediction")
                 for c, why in report.failed_predictions]
    problems += [(c, UNRECORDED_PREDICTION) for c in report.unrecorded_predictions]
    problems += list(report.unreadable) + list(report.ground_truth_problems)
    for case_id, problem in problems:
        row = rows.setdefault(case_id, dict.fromkeys(_CASE_COLUMNS, "") | {"case_id": case_id, "evaluated": "false"})
        row["problem"] = f"{row['problem']}; {problem}" if row.get("problem") else problem
    for case_id, row in rows.items():  # (who drew each prediction: a folder of several runs' masks is stratified)
        # (As file names: a report's text, edited or another's, is written out, never as a formula or a newline.)
        model, sha256 = report.case_models.get(case_id, ("", ""))
        row.update(model_pred=spreadsheet_cell(printable_path(model)),
                   model_sha256_pred=spreadsheet_cell(printable_path(sha256)))
    writer = csv.DictWriter(fh, fieldnames=CASES_CSV_COLUMNS, restval="")
    writer.writeheader()
    for case_id in sorted(rows):
        writer.writerow(rows[case_id] | {"case_id": spreadsheet_cell(printable_path(case_id))})  # as batch does


def _write_summary(report: EvaluationReport, fh) -> None:
    from ..inference.batch import utc_now_cell

    json.dump({"evaluated_at": utc_now_cell(), **report.to_dict()}, fh, indent=2, allow_nan=False)
    fh.write("\n")


_CASE_COLUMNS: tuple[str, ...] = (
    ("case_id", "style")
    + SEGMENTATION_METRICS
    + ("aop_pred", "aop_gt", "delta_aop", "aop_reference", "delta_aop_reference", "aop_past_180")
    + ("hsd_pred_px", "hsd_gt_px", "delta_hsd_px", "hsd_pred_mm", "hsd_gt_mm")
    + ("delta_hsd_mm", "status_pred", "reasons_pred", "status_gt", "reasons_gt", "method", "spacing_x_mm")
    + ("spacing_y_mm",)
)
#: cases.csv's columns: each case's (:class:`CaseResult`), whether it was evaluated and its problem,
#: and who drew its prediction (last: scripts that read cases.csv by position before 0.2.16 read on).
CASES_CSV_COLUMNS: tuple[str, ...] = (*_CASE_COLUMNS, "evaluated", "problem", "model_pred", "model_sha256_pred")


# ----------------------------------------------------------------------------- helpers


def _check_labels_mask(mask, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, columns) label mask, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr


def check_label_pair(labels) -> tuple[int, int]:
    """``labels`` as (PS value, FH value): two different positive integers; else ValueError."""
    try:
        ps, fh = labels
    except (TypeError, ValueError):
        raise ValueError(f"labels must be (PS label, FH label), got {labels!r}") from None
    try:
        return check_label_values(ps, fh)
    except ValueError as exc:  # the one rule, worded for a pair
        raise ValueError(f"labels must be two different positive integers (PS, FH), got {labels!r}: {exc}") from None


def _abs_diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return abs(float(a) - float(b))


def _spacing_of(m: Measurement) -> tuple[float, float] | None:
    return None if m.spacing_mm is None else (float(m.spacing_mm[0]), float(m.spacing_mm[1]))


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _summary(values: Sequence[float | None]) -> MetricSummary:
    defined = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not defined:
        return MetricSummary(None, None, 0)
    arr = np.asarray(defined, dtype=np.float64)
    return MetricSummary(float(arr.mean()), float(np.median(arr)), int(arr.size))


def _preview(ids: Sequence[str], n: int = 10) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")
