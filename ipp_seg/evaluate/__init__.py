"""Evaluation of PS/FH segmentations: Dice, Hausdorff and surface distances, ΔAoP and ΔHSD,
the FH-PS-AOP 2023 score, per case, overall and per acquisition style; the Bland-Altman
agreement of the measurements (:func:`bland_altman`).

Numpy/OpenCV/SimpleITK only (no torch). Entry points: :func:`evaluate_folders` (folders of
masks, for ``ipp-seg evaluate``), :func:`evaluate_arrays` (in-memory, for validation during
training), :func:`evaluate_case`; :func:`write_evaluation` writes the results as a pair (or
:func:`write_case_csv` and :func:`write_summary_json` one at a time).
:func:`acquisition_style` tells a frame's acquisition style ("wide"/"narrow").
"""

from .acquisition import STYLES, SectorShape, acquisition_style, sector_shape
from .agreement import Agreement, bland_altman
from .metrics import (
    EMPTY_STRUCTURE_DISTANCE_PX,
    STRUCTURES,
    average_surface_distance,
    boundary,
    challenge_score,
    dice,
    hausdorff_distance,
    structure_masks,
    surface_distances,
)
from .report import (
    FAILED_AOP_PENALTY_DEG,
    MASK_SUFFIXES,
    SEGMENTATION_METRICS,
    BlockSummary,
    CaseResult,
    EvaluationReport,
    MetricSummary,
    ReasonSummary,
    case_id_of,
    evaluate_arrays,
    evaluate_case,
    evaluate_folders,
    read_label_mask,
    relabel_mask,
    ReferenceAopError,
    read_reference_aop,
    summarise_block,
    write_case_csv,
    write_evaluation,
    write_summary_json,
)

__all__ = [
    "EMPTY_STRUCTURE_DISTANCE_PX",
    "FAILED_AOP_PENALTY_DEG",
    "MASK_SUFFIXES",
    "SEGMENTATION_METRICS",
    "STRUCTURES",
    "STYLES",
    "Agreement",
    "BlockSummary",
    "CaseResult",
    "EvaluationReport",
    "MetricSummary",
    "ReasonSummary",
    "SectorShape",
    "acquisition_style",
    "average_surface_distance",
    "bland_altman",
    "boundary",
    "case_id_of",
    "challenge_score",
    "dice",
    "evaluate_arrays",
    "evaluate_case",
    "evaluate_folders",
    "hausdorff_distance",
    "read_label_mask",
    "ReferenceAopError",
    "read_reference_aop",
    "relabel_mask",
    "sector_shape",
    "structure_masks",
    "summarise_block",
    "surface_distances",
    "write_case_csv",
    "write_evaluation",
    "write_summary_json",
]
