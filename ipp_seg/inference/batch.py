"""Batch processing of a folder of scans into ``measurements.csv``.

Every file gets at least one row: a frame that was measured (status ok/warning/failed from the
measurement), or a file/frame that could not be read (status failed, reason ``unreadable`` and
the cause in ``error``), that is no ultrasound frame (``not_ultrasound_frame``), or that met an
unexpected error in segmentation or measurement (``processing_error``: one bad frame does not
end a run of thousands). Rows are flushed as they are made, so an interrupted run loses
nothing; ``resume`` skips the (file, frame) pairs that the CSV already holds. With several
workers, files are processed in parallel processes that each load the model once; rows are
written in file order, so the CSV does not depend on the number of workers.
"""

from __future__ import annotations

import bisect
import csv
import errno
import functools
import hashlib
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import shutil
import signal
import stat
import threading
import time
import traceback
import unicodedata
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .. import configure_logging, quiet_dicom_libraries
from ..errors import IppSegError, OUT_OF_MEMORY_SAID
from ..io import (DamagedFrameError, FrameNotInScanError, FrameSelection, NotAnImageError, OtherModalityError,
                  Provenance, ScanReadError, count_frames, parse_frame_selection, read_frames, write_label_png,
                  write_overlay_png)
from ..io.errors import NO_SUCH_FILE, missing_file_reason
from ..io.folders import (FolderInUseError, composed_name, folder_lock, given_path, make_folders,
                          name_of_spreadsheet_cell, not_a_folder, ones_own, others_link, path_of_printable,
                          printable_path, read_json_file, remove_made_folders, spreadsheet_cell, walk_folders)
from ..io.formats import ITK_SUFFIXES, is_dicom_file, name_without_suffix
from ..io.images import ipp_seg_png_kind
from ..io.overlay import burned_in_text_shown, imaged_pixels, overlay_title, render_overlay
from ..io.reader import special_file_kind
from ..io.writers import (OVERLAY_NAME_SUFFIX, check_within, error_naming, output_provenance, remove_staging_files,
                          replacing)
from ..machine import machine_description, onnxruntime_version, software_version, software_versions
from ..measure import METHODS, ORIENTATIONS, Measurement
from ..measure.progress import check_choice
from ..measure.result import angle_in_doubt, distance_in_doubt
from ..measure.steadiness import AOP_UNSTEADY, MIN_NEIGHBOURS, STEADINESS_WINDOW_MS, aop_off_its_neighbours
from ..printable import terminal_text
from .backends import BACKENDS, DEVICES, BackendError, confidence_floors_used, device_used, load_segmenter
from .pipeline import (FrameResult, FrameTooLongError, frame_echoes, measure_frame, not_segmentable_reason,
                       segment_frames)
from .registry import DEFAULT_MODEL, model_sha256, resolve_model, sha256_of_stream, warn_of_training_frames

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "file", "frame", "status", "reasons", "aop_deg", "hsd_mm", "hsd_px", "psfh_shortest_px", "psfh_shortest_mm",
    "spacing_x_mm", "spacing_y_mm", "spacing_source", "method", "orientation", "model", "tta", "sop_instance_uid",
    "error", "spacing_given_mm", "head_confidence", "ps_confidence", "file_bytes", "file_modified", "model_sha256",
    "study_instance_uid", "series_instance_uid", "ipp_seg_version", "aop_doubtful", "hsd_doubtful", "dicom_results",
    "file_sha256", "measured_at", "mask_file", "overlay_file", "n_frames", "frame_time_ms",
)
# The DICOM UIDs a row takes from its frame's Provenance (attributes of the same names).
_UID_COLUMNS = ("sop_instance_uid", "study_instance_uid", "series_instance_uid")
CSV_NAME = "measurements.csv"
#: Beside it: the rows a resume took out of it (files changed since, rows repeated by hand, failures read
#: again), each with when and why, so that no value a run wrote vanishes without trace.
TAKEN_OUT_NAME = "rows_taken_out.csv"
TAKEN_OUT_COLUMNS = ("taken_out_at", "taken_out_because")
# The folders beside it that --save-masks and --overlays write into.
# (Not "dicom": a folder of scans is often named so, and OUT is often the scans' own folder.)
MASKS_FOLDER, OVERLAYS_FOLDER, DICOM_FOLDER = "masks", "overlays", "dicom-results"
#: The folders a run writes beside its CSV.
OUTPUT_FOLDERS = (MASKS_FOLDER, OVERLAYS_FOLDER, DICOM_FOLDER)
LOCK_NAME = ".ipp-seg-batch.lock"  # hidden: never listed as a scan
HIDDEN_LISTED_IN_RECORD = 1000  # hidden files a session of the run record names (all are counted)
# What a run records of itself for a run that resumes it (hidden too): see _write_run_record.
RUN_RECORD_NAME = ".ipp-seg-run.json"
FRAMES_PER_BATCH = 8
FILES_PER_GROUP = 8  # files a worker takes at once (their frames share model calls)
STAGES = ("read_s", "preprocess_s", "model_s", "measure_s", "write_s")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class InferenceOptions:
    model: str | None = None
    backend: str = "onnx"
    device: str = "cpu"
    method: str = "ellipse"
    orientation: str = "standard"
    frames: str = "all"
    spacing_mm: tuple[float, float] | None = None
    tta: bool = False
    threads: int | None = None
    # Model calls of exactly this many frames (ONNX session specialised to it; see
    # OnnxSegmenter). None: run_batch takes FRAMES_PER_BATCH, a Predictor calls with any
    # number; 0: off.
    fixed_batch: int | None = None


def check_inference_choices(method: str, orientation: str, frames: str = "all", backend: str = "onnx",
                            device: str = "cpu") -> None:
    """Raise ValueError naming the first of these inference options that takes none of its
    accepted values (the command line prefixes the option's dashes)."""
    for name, value, allowed in (("method", method, METHODS), ("orientation", orientation, ORIENTATIONS),
                                 ("backend", backend, BACKENDS), ("device", device, DEVICES)):
        check_choice(value, allowed, name)
    try:
        parse_frame_selection(frames)
    except ValueError as exc:
        raise ValueError(f"frames: {exc}") from None


@dataclass(frozen=True)
class BatchOptions:
    in_dir: Path
    out_dir: Path
    inference: InferenceOptions = InferenceOptions()
    glob: str = "**/*"
    save_masks: bool = False
    overlays: bool = False
    workers: int = 1
    resume: bool = False
    overwrite: bool = False  # replace a measurements.csv that holds rows (without it, refused)
    # Resumed: every measured file read again and its bytes compared with its rows' file_sha256.
    verify: bool = False
    # Resumed: the files of rows another version of ipp-seg wrote are measured again (an upgrade).
    remeasure_other_versions: bool = False
    engine: str = "local"  # "local" (processes on this machine) or "ray" (a Ray cluster, the [ray] extra)
    address: str | None = None  # Ray cluster address; None starts a local Ray instance
    # (relative path, output name) for scans whose masks and overlays would otherwise share a
    # name; run_batch fills it from the whole folder (see suffix_disambiguated).
    output_renames: tuple[tuple[str, str], ...] = ()
    dicom_seg: bool = False  # a DICOM Segmentation per DICOM frame, under dicom-results/
    dicom_sr: bool = False  # a DICOM Comprehensive SR per DICOM frame, under dicom-results/
    # The run's identity in what it writes as DICOM (run_batch sets them when SEG or SR is asked):
    # its objects of one source series form one derived series each, dated by the run's start.
    run_uid: str | None = None
    run_started: datetime | None = None
    # Patterns of files (or folders, with all they hold) to leave out, as --glob matches them.
    excluded_globs: tuple[str, ...] = ()
    # (relative path, Instance Number of its first frame's SEG and SR): run_batch fills it from the
    # whole folder when SEG or SR is asked (see dicom_results.instance_numbers).
    instance_numbers: tuple[tuple[str, int], ...] = ()
    # The command that started this session, quoted as a shell runs it again, for its record:
    # "" where the library was called without one.
    command: str = ""
    # Resumed: (CSV file name, ((frame time ms, AoP), ...)) of the cine frames its rows measured, for files it
    # measures more frames of: the new frames' neighbours in time (aop_unsteady), as in one run.
    known_cine_angles: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()


#: Reason codes of rows without a measurement; a resumed run tries their frames again.
UNREADABLE = "unreadable"
PROCESSING_ERROR = "processing_error"
NOT_ULTRASOUND = "not_ultrasound_frame"  # too small, blank, a label mask, another modality: not retried
NOT_AN_IMAGE = "not_an_image"  # a DICOM report, PDF, presentation state, DICOMDIR...: not retried
MASK_REFUSED = "mask_refused"  # measure: a mask of other label values, not its scan's size, or of no one scan
NO_SUCH_FRAME = "no_such_frame"  # --frames asked for none of the frames a scan has
#: What each of them means (a row with one of them is ``failed`` and holds no values).
ROW_FAILURES: dict[str, str] = {
    UNREADABLE: "the file or frame could not be read (its error column says why: damaged, cut short, a compression "
                "no installed decoder reads, no image format ipp-seg knows); a resumed batch tries it again",
    NOT_AN_IMAGE: "the file holds no image: a DICOM object as an export holds beside its images (a structured "
                  "report, key-object selection, encapsulated PDF, presentation state or DICOMDIR) or a result "
                  "with pixels (a SEG), or a file of another kind under its own suffix (notes.txt, results.csv, a "
                  ".pdf) that is neither DICOM nor an image format (its error column names it); nothing to measure, "
                  "and a resumed batch does not read it again",
    NOT_ULTRASOUND: "the frame was read but is no ultrasound image to segment: under 32 x 32 pixels, its part to "
                    "segment over 6,324 pixels long (padded to a square for the network, beyond 40 million pixels), "
                    "blank, a label mask (fewer than 4 grey values), a DICOM image of another modality (a CT in a "
                    "mixed export), or an ultrasound image with no 2-D frame (a 3-D volume or rendering, M-mode or "
                    "Doppler only); a resumed batch does not read it again",
    NO_SUCH_FRAME: "the scan was read but holds none of the frames --frames asked for (frame 2 of a still image); "
                   "nothing is damaged; a resumed batch reads it again, as its --frames may differ",
    PROCESSING_ERROR: "an unexpected error while the frame was processed (its error column names it); the other "
                      "frames went on, and a resumed batch tries it again",
    MASK_REFUSED: "measure: the mask was read but holds label values other than those named (--labels), or is not "
                  "the size of its scan, or its scan lacks its frame, or --scans holds more than one scan it may "
                  "have been drawn on",
}


# What to do about a row without a measurement, in plain words.
ROW_FAILURE_ACTIONS: dict[str, str] = {
    UNREADABLE: "Read the error column: copy the file again, or install the decoder it names.",
    NOT_AN_IMAGE: "Nothing to do: the file holds no image (a report, a PDF, a DICOMDIR).",
    NOT_ULTRASOUND: "Check that the file is an ultrasound image, not a mask or a thumbnail; another modality's "
                    "images need nothing.",
    NO_SUCH_FRAME: "Check --frames: the file has fewer frames than asked for.",
    PROCESSING_ERROR: "Read the error column; run again with -v and report it if it persists.",
    MASK_REFUSED: "Give the mask's label values with --labels, or check that the mask matches its scan (one scan "
                  "of its case in --scans).",
}


def reason_codes() -> list[tuple[str, str, str]]:
    """Every reason code a result can carry, as (code, status it gives, meaning): the
    measurement's own (:data:`ipp_seg.measure.result.REASONS`; a warning keeps the values) and
    those of rows without a measurement (:data:`ROW_FAILURES`)."""
    from ..measure.result import REASONS

    return ([(code, status, meaning) for code, (status, meaning) in REASONS.items()]
            + [(code, "failed", meaning) for code, meaning in ROW_FAILURES.items()])


def reasons_asked(asked: list[str]) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    """The :func:`reason_codes` entries of the codes in ``asked``, in the order listed there, and
    each code not known with the known ones it is closest to. A value may join codes as a row's
    ``reasons`` cell does (``ps_cut_off;aop_impossible``, also with commas or spaces), so a cell
    can be pasted as it is."""
    import difflib

    known = reason_codes()
    names = [code for code, _, _ in known]
    wanted = [code for value in asked for code in re.split(r"[;,\s]+", value.strip()) if code]
    unknown = {code: difflib.get_close_matches(code, names, n=2, cutoff=0.6)
               for code in dict.fromkeys(wanted) if code not in names}
    by_code = {entry[0]: entry for entry in known}
    # As pasted: a failed row's cell names its cause first (it had come back in the table's order).
    return [by_code[code] for code in dict.fromkeys(wanted) if code in by_code], unknown


def reason_actions() -> dict[str, str]:
    """Code -> what a reader of the row can do about it, in plain words, for every code of
    :func:`reason_codes`."""
    from ..measure.result import REASON_ACTIONS

    return {**REASON_ACTIONS, **ROW_FAILURE_ACTIONS}


@dataclass(frozen=True)
class FrameFailure:
    """A file (frame_index None) or one of its frames that could not be read (``code``
    ``unreadable``), a frame that is no ultrasound image (``not_ultrasound_frame``), or one that
    could not be segmented or measured (``processing_error``). ``provenance``: the frame's, or
    the file's as far as its header was read (its DICOM UIDs), None where nothing was read."""

    frame_index: int | None
    reason: str
    code: str = UNREADABLE
    provenance: Provenance | None = None
    n_frames: int | None = None  # the source's frames, where the frame was read (its outputs are named by it)


@dataclass(frozen=True)
class FileOutcome:
    """What one file produced: its CSV rows, time spent (s) by stage, the paths of the masks,
    overlays and DICOM results written for it (a run stopped before its rows are written removes
    them), and how many DICOM SEGs and SRs were written and refused."""

    file: str
    rows: tuple[dict, ...]
    timings: dict
    outputs: tuple[str, ...] = ()
    dicom_written: int = 0
    dicom_refused: int = 0


# A run in which this share of the measured frames or more look displayed the other way round
# (reason orientation_doubtful) most likely comes from a machine that displays frames so: about
# 1 % of PSFHS frames as recorded carry the warning, about 3 in 4 of them mirrored
# (benchmarks/orientation_check.py). A handful of frames says too little either way, and one
# flagged frame is what a standard display gives in 1 run of 25 of 4 frames.
REVERSED_RUN_SHARE = 0.25
MIN_FRAMES_FOR_RUN_ORIENTATION = 4
MIN_DOUBTFUL_FRAMES_FOR_RUN = 2

# A run in which half the segmented frames or more have no symphysis the network is sure of
# (ps_low_confidence, or none drawn at all) is not the transperineal view the models know, as
# the probe displayed at the bottom gives: of the 230 validation frames, the default's twin is
# unsure of, or misses, the PS in none as recorded, and in 197 turned by 180 degrees (STAR's twin:
# 1 and 203; benchmarks/RESULTS.md).
UNSURE_SYMPHYSIS_RUN_SHARE = 0.5
# A symphysis where no transperineal view as the models learnt them has it (below the head's
# centre; an angle past 240 deg): what masks show of a frame displayed upside down, whoever drew them.
_MISPLACED_SYMPHYSIS = frozenset({"ps_below_head", "aop_impossible"})
# A network unsure of what it drew: its masks say nothing of how the frame is displayed.
_NETWORK_UNSURE = frozenset({"low_confidence", "ps_low_confidence"})
# ...and, for a network's masks, one it is unsure of or finds none of.
_UNSURE_SYMPHYSIS = frozenset({"ps_low_confidence", "ps_missing", "ps_too_small"}) | _MISPLACED_SYMPHYSIS


@dataclass(frozen=True)
class RunAdvice:
    """What a run's rows say of the run as a whole: of the ``measured`` frames, how many look
    displayed the other way round (``doubtful_orientation``); of the ``segmented`` ones (the
    network saw them), how many have a symphysis it is unsure of, finds none of, or places
    where no transperineal view has it (``unsure_symphysis``). ``network`` false: masks drawn
    elsewhere (``measure``), whose ``unsure_symphysis`` counts only a symphysis placed where no
    transperineal view has it (``ps_below_head``, ``aop_impossible``: the mask shows that much
    of an upside-down frame; confidence is the network's alone). ``unrecognised``: of the
    ``segmented`` frames, those failed ``anatomy_unrecognised`` (no transperineal view the
    network knows), which ``unsure_symphysis`` leaves out: they are not frames displayed otherwise."""

    measured: int
    doubtful_orientation: int
    segmented: int
    unsure_symphysis: int
    network: bool = True
    unrecognised: int = 0

    @classmethod
    def of_rows(cls, rows: Iterable[dict], network: bool = True) -> RunAdvice:
        """The counts of measurements.csv rows (:func:`measurement_row`), or of JSON reports."""
        rows = list(rows)
        unsure = row_symphysis_unsure if network else row_symphysis_misplaced
        return cls(sum(row["status"] != "failed" for row in rows), sum(map(row_orientation_doubtful, rows)),
                   sum(map(row_segmented, rows)), sum(map(unsure, rows)), network,
                   sum(map(row_anatomy_unrecognised, rows)))

    @property
    def symphysis_mostly_unsure(self) -> bool:
        """See :func:`symphysis_mostly_unsure`; of the frames the network recognised."""
        return symphysis_mostly_unsure(self.segmented - self.unrecognised, self.unsure_symphysis)

    @property
    def mostly_unrecognised(self) -> bool:
        """Whether half the frames the network saw (at least 4) are no transperineal view it knows:
        a run of the wrong files (photographs, another modality or view)."""
        return symphysis_mostly_unsure(self.segmented, self.unrecognised)

    @property
    def orientation_looks_reversed(self) -> bool:
        """See :func:`orientation_looks_reversed`. Not said of a run whose symphysis is mostly
        unsure: frames turned or flipped top to bottom look mirrored too, and measuring them
        again with the other ``--orientation`` would not help (the symphysis advice covers them)."""
        return not self.symphysis_mostly_unsure and orientation_looks_reversed(self.measured,
                                                                               self.doubtful_orientation)


@dataclass(frozen=True)
class BatchSummary:
    """What one run did: ``rows`` written by this run (not those a resumed CSV already held), of
    them ``failed_rows`` failed, ``doubtful_orientation_rows`` measured with the warning
    ``orientation_doubtful``, and ``unsure_symphysis_rows`` of the ``segmented_rows`` (frames the
    network saw) unsure of the symphysis or without one, ``warning_rows`` measured with a warning
    (``doubtful_aop_rows`` of them with an AoP a warning puts in doubt: ``aop_doubtful``);
    ``timings``: seconds by stage, summed over workers."""

    files: int
    rows: int
    skipped_files: int
    failed_rows: int
    csv_path: Path
    seconds: float
    timings: dict
    doubtful_orientation_rows: int = 0
    segmented_rows: int = 0
    unsure_symphysis_rows: int = 0
    not_image_rows: int = 0  # of the failed rows, files that hold no image (reason not_an_image)
    warning_rows: int = 0  # measured, with a warning to read before the values are used
    # Frames the CSV holds under two files or more with one SOP Instance UID (an image exported
    # twice), or, not DICOM, with the same bytes: (file, frame, the first file that holds it), as
    # the CSV names them.
    repeated_images: tuple[tuple[str, str, str], ...] = ()
    # Of a resumed run: what every row of the CSV says, those of the run it resumed included.
    csv_advice: RunAdvice | None = None
    doubtful_aop_rows: int = 0  # of the warning rows, those whose AoP a warning puts in doubt
    unrecognised_rows: int = 0  # of the segmented rows, those of no transperineal view the network knows
    dicom_written: int = 0  # DICOM SEGs and SRs written (--dicom-seg, --dicom-sr)
    dicom_refused: int = 0  # ...and refused: their rows stand, a warning says why
    # Hidden files (dot files, Thumbs.db ...) and hidden folders (.git/, __MACOSX/: ending in "/")
    # left out, as the run's glob and --exclude take them; by their paths in IN_DIR, as the CSV's.
    hidden_left_out: tuple[str, ...] = ()
    # Folders that could not be listed, "name/ (reason)": their files have no rows.
    folders_not_listed: tuple[str, ...] = ()
    # Of ``files - skipped_files``: those read now that gave no row (a resumed file with rows that holds none of
    # the frames --frames asks for now).
    files_without_rows: int = 0
    # Cine frames measured now whose angle could not be checked against the frames around them (aop_unsteady):
    # fewer than two other frames measured within the window (frames picked from a loop), or no frame times.
    cine_frames_unchecked: int = 0
    cine_frames_untimed: int = 0
    # Resumed with --verify: the files read again and compared with their rows' file_sha256, and of them those
    # whose bytes differ (measured again).
    verified_files: int = 0
    verified_changed: int = 0

    @property
    def advice(self) -> RunAdvice:
        """What the run's rows say of it as a whole (:class:`RunAdvice`): those of the whole CSV
        for a resumed run, else those written now."""
        if self.csv_advice is not None:
            return self.csv_advice
        return RunAdvice(self.rows - self.failed_rows, self.doubtful_orientation_rows, self.segmented_rows,
                         self.unsure_symphysis_rows, unrecognised=self.unrecognised_rows)

    @property
    def orientation_looks_reversed(self) -> bool:
        """:attr:`RunAdvice.orientation_looks_reversed`, for this run's rows."""
        return self.advice.orientation_looks_reversed

    @property
    def symphysis_mostly_unsure(self) -> bool:
        """:attr:`RunAdvice.symphysis_mostly_unsure`, for this run's rows."""
        return self.advice.symphysis_mostly_unsure


def symphysis_mostly_unsure(segmented_frames: int, unsure_frames: int) -> bool:
    """Whether so many of a run's segmented frames have no symphysis the network is sure of
    (``unsure_frames``) that the run is probably not of transperineal views displayed as the
    models learnt them (probe at the top)."""
    return (segmented_frames >= MIN_FRAMES_FOR_RUN_ORIENTATION
            and unsure_frames >= UNSURE_SYMPHYSIS_RUN_SHARE * segmented_frames)


def row_segmented(row: dict) -> bool:
    """Whether a CSV row's frame reached the network (it was read, and is an ultrasound image)."""
    return not {UNREADABLE, NOT_AN_IMAGE, NOT_ULTRASOUND, PROCESSING_ERROR, MASK_REFUSED, NO_SUCH_FRAME} & \
        _row_reasons(row)


def row_not_an_image(row: dict) -> bool:
    """Whether a CSV row is of a file that holds no image (``not_an_image``: a report, a PDF, a
    DICOMDIR), which a run counts apart from the frames that failed."""
    return NOT_AN_IMAGE in _row_reasons(row)


def row_symphysis_unsure(row: dict) -> bool:
    """Whether a CSV row's network was unsure of the symphysis (``ps_low_confidence``), drew
    none it could measure (``ps_missing``, ``ps_too_small``), or drew it where no transperineal
    view has it (``ps_below_head``, ``aop_impossible``); not of a frame it recognised nothing in
    (``anatomy_unrecognised``), which is no frame displayed otherwise."""
    reasons = _row_reasons(row)
    return bool(_UNSURE_SYMPHYSIS & reasons) and "anatomy_unrecognised" not in reasons


def row_anatomy_unrecognised(row: dict) -> bool:
    """Whether a CSV row's frame is no transperineal view the network knows (``anatomy_unrecognised``)."""
    return "anatomy_unrecognised" in _row_reasons(row)


def row_symphysis_misplaced(row: dict) -> bool:
    """Whether a CSV row's symphysis lies where no transperineal view has it (``ps_below_head``,
    ``aop_impossible``), as in a frame displayed upside down."""
    return bool(_MISPLACED_SYMPHYSIS & _row_reasons(row))


def _row_reasons(row: dict) -> set[str]:
    """The reason codes of a CSV row (see :func:`measurement_row`), joined there by ";", or of a
    JSON report (``Predictor.report``, ``PredictedFrame.report``), which lists them."""
    reasons = row["reasons"]
    return set(reasons) if isinstance(reasons, (list, tuple)) else set(str(reasons).split(";"))


def orientation_looks_reversed(measured_frames: int, doubtful_frames: int) -> bool:
    """Whether so many of a run's measured frames look displayed the other way round from the
    orientation assumed (``doubtful_frames`` of them) that the whole run probably is."""
    return (measured_frames >= MIN_FRAMES_FOR_RUN_ORIENTATION and doubtful_frames >= MIN_DOUBTFUL_FRAMES_FOR_RUN
            and doubtful_frames >= REVERSED_RUN_SHARE * measured_frames)


def row_orientation_doubtful(row: dict) -> bool:
    """Whether a CSV row (see :func:`measurement_row`) was measured with ``orientation_doubtful``
    on masks the network was sure of: a frame of noise, or one that is no transperineal view,
    leans either way, and its vote would tell a whole run to measure again the other way round."""
    reasons = _row_reasons(row)
    return row["status"] != "failed" and "orientation_doubtful" in reasons and not (_NETWORK_UNSURE & reasons)


def measurement_row(file: str, frame: int | str, measurement: Measurement | None, model: str,
                    provenance: Provenance | None, error: str = "",
                    method: str = "", orientation: str = "", tta: bool | None = None,
                    failure_code: str = UNREADABLE, spacing_given: tuple[float, float] | None = None,
                    file_stamp: tuple[str, str] = ("", ""), head_confidence: float | None = None,
                    ps_confidence: float | None = None, model_sha256: str = "", file_sha256: str = "",
                    n_frames: int | None = None) -> dict:
    """One CSV row (all columns of :data:`CSV_COLUMNS`, empty where no value exists). ``tta``:
    whether the model's output was averaged with the mirrored frame's (None: no model ran).
    Without a measurement the row is failed with reason ``failure_code``. ``spacing_given``:
    the spacing the run was given for uncalibrated files; ``file_stamp``: the scan's size and
    modification time as :func:`file_stamp` gives them (a resumed run measures a changed file
    again); ``file_sha256``: its content's (:func:`file_sha256`: which bytes were measured, for
    an audit); ``measured_at`` is set to now, UTC; ``head_confidence``, ``ps_confidence``: the network's (see
    :func:`ipp_seg.inference.pipeline.head_confidence`); ``model_sha256``: the model file's
    (the same name may later stand for other weights); ``provenance``: the frame's, whose DICOM
    UIDs (SOP instance, study, series) and cine time (``frame_time_ms``) the row carries (None
    where no frame was read); ``n_frames``: the frames of the scan, where it was read."""
    row = dict.fromkeys(CSV_COLUMNS, "")
    # The version that wrote the row: a resumed CSV may hold rows of an earlier one, whose rules differ.
    row.update(file=file, frame=frame, model=model, model_sha256=model_sha256, ipp_seg_version=software_version(),
               **{uid: value or "" for uid, value in dicom_uids(provenance).items()},
               error=terminal_text(error) if error else error,  # (one line per row, whatever a reader said)
               method=method, orientation=orientation, tta=_tta_cell(tta),
               spacing_given_mm=spacing_cell(spacing_given), file_bytes=file_stamp[0], file_modified=file_stamp[1],
               file_sha256=file_sha256, measured_at=utc_now_cell(),
               head_confidence=_or_empty(shown_confidence(head_confidence)),
               ps_confidence=_or_empty(shown_confidence(ps_confidence)), n_frames=_or_empty(n_frames),
               frame_time_ms=_or_empty(getattr(provenance, "frame_time_ms", None)))
    if measurement is None:
        row.update(status="failed", reasons=failure_code)
    else:
        for key, value in measurement.to_dict().items():
            if key in row:
                row[key] = "" if value is None else value
        row["aop_doubtful"] = _doubt_cell(measurement.aop_doubtful)
        row["hsd_doubtful"] = _doubt_cell(measurement.hsd_doubtful)
    return row


def dicom_results_cell(seg: bool, sr: bool, refused: Iterable[str] = ()) -> str:
    """A row's ``dicom_results``: each DICOM object asked for its frame (``seg``, ``sr``), as
    written, or with ``_refused`` where it could not be made (``refused``: "SEG", "SR", either
    case; ``seg;sr_refused``), so that the rows say which results a PACS will lack, not the
    summary alone."""
    refused = {kind.lower() for kind in refused}
    return ";".join(kind + ("_refused" if kind in refused else "") for kind, asked in (("seg", seg), ("sr", sr))
                    if asked)


def _doubt_cell(doubtful: bool | None) -> str:
    return "" if doubtful is None else "true" if doubtful else "false"


def dicom_uids(provenance: Provenance | None) -> dict[str, str | None]:
    """A frame's DICOM UIDs (SOP instance, study, series) by their report keys, None where the
    frame has none or no frame was read: the keys that join a result back to its study."""
    return {uid: getattr(provenance, uid, None) for uid in _UID_COLUMNS}


def shown_confidence(confidence: float | None) -> float | None:
    """A network confidence as rows and reports show it: cut (not rounded) to 4 decimals, so
    that one below a floor such as 0.90, which carries ``low_confidence``, never reads 0.9."""
    return None if confidence is None else math.floor(float(confidence) * 10_000) / 10_000


def utc_now_cell() -> str:
    """Now, UTC, to the second, as a row's ``measured_at`` reads (``2026-12-05T20:45:46Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spacing_cell(spacing: tuple[float, float] | None) -> str:
    """A spacing (x, y) mm as a row's ``spacing_given_mm`` reads (``0.2,0.2``); empty for none."""
    return "" if spacing is None else f"{spacing[0]:g},{spacing[1]:g}"


def _or_empty(value) -> object:
    return "" if value is None else value


def _tta_cell(tta: bool | None) -> str:
    return "" if tta is None else str(bool(tta)).lower()


def file_stamp(path: Path) -> tuple[str, str]:
    """(size in bytes, modification time as UTC ISO 8601 to the microsecond) of a file, as the
    CSV records them; empty strings when it cannot be examined (a broken link). For a header
    whose image data lie in another file (``.mhd``/``.raw``, ``.nhdr``), the two files' sizes
    summed and the later of their times: a data file replaced under an unchanged header is a
    changed scan to ``--resume``."""
    try:
        found = [os.stat(part) for part in _scan_file_parts(path)]
    except OSError:
        return "", ""
    latest = max(st.st_mtime_ns for st in found)
    modified = datetime.fromtimestamp(latest // 1000 / 1e6, tz=timezone.utc)
    return str(sum(st.st_size for st in found)), modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _scan_file_parts(path: Path) -> list[Path]:
    """The files a scan's bytes are: ``path``, and for a MetaImage or NRRD header that keeps its
    image data in another file, that file after it (:func:`~ipp_seg.io.itk.detached_data_file`)."""
    if not str(path).lower().endswith(tuple(ITK_SUFFIXES - {".nii", ".nii.gz"})):  # (NIfTI holds its data)
        return [path]
    from ..io.itk import detached_data_file  # (here: a PNG's batch loads no ITK)

    data_file = detached_data_file(path)
    return [path] if data_file is None else [path, Path(data_file)]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, hex (as the CSV records it: which bytes a row measured, where
    a size and a modification time say only that the file looks unchanged); empty when it cannot
    be read (its row says why), and for anything but a regular file, which is never opened (a
    FIFO would block the run, a device never end, or act on being opened). For a header whose
    image data lie in another file (``.mhd``/``.raw``, ``.nhdr``), the sha256 of the header's
    bytes followed by the data file's (``cat scan.mhd scan.raw | sha256sum``): the header alone
    would not say which pixels were measured."""
    digest = hashlib.sha256()
    for part in _scan_file_parts(path):
        if not _hash_regular_file(part, digest):
            return ""
    return digest.hexdigest()


def _hash_regular_file(path: Path, digest) -> bool:
    """Feed the bytes of the regular file at ``path`` to ``digest``; False where it is none or
    cannot be read."""
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            return False
        # Without waiting on a FIFO or taking a terminal, should the name be swapped for one since.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                             | getattr(os, "O_BINARY", 0))
        now = os.fstat(descriptor)
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(now.st_mode):
            os.close(descriptor)
            return False
    except OSError:
        return False
    with os.fdopen(descriptor, "rb") as fh:
        try:
            sha256_of_stream(fh, digest)
        except OSError:
            return False
    return True


def warn_of_threads(threads: int | None, workers: int = 1, cores: int | None = None) -> bool:
    """Log a warning, and return True, where ``workers`` processes of ``threads`` model threads
    each (None: ipp-seg's own choice, which never oversubscribes) ask for more threads than the
    ``cores`` this process may use (:func:`usable_cpus` when None)."""
    cores = usable_cpus() if cores is None else cores
    if threads is None or threads * workers <= cores:
        return False
    asked = f"{workers} worker(s) of {threads} thread(s) each" if workers > 1 else f"{threads} model thread(s)"
    log.warning("%s on %d usable CPU core(s): more threads than cores measure no faster, and slow whatever else "
                "runs here", asked, cores)
    return True


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """How many CPUs this process may use: those its affinity allows (a SLURM job's or
    ``taskset``'s cpuset), fewer where a cgroup's CPU quota (``docker --cpus``, a systemd unit's
    CPUQuota) allows less time than that. ``os.cpu_count()`` counts the machine's, and 2 workers
    on a 64-core server inside a 4-CPU job had each started 32 threads."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (no affinity on macOS or Windows)
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The CPUs' worth of time that this process's cgroup and those above it allow (the least of
    their quotas), cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``); None without a quota."""
    try:
        memberships = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines() if line.count(":") >= 2]
    except OSError:
        memberships = []
    folders = [(2, root)]  # (version, folder); the root: a container's own, seen as the root
    for _, controllers, path in memberships:
        if controllers == "":  # v2: one hierarchy
            version, top = 2, root
        elif "cpu" in controllers.split(","):
            version, top = 1, root / controllers
        else:
            continue
        folder = top / path.strip("/")
        folders.append((version, folder))
        while folder != top and top in folder.parents:  # those above it may limit it too
            folder = folder.parent
            folders.append((version, folder))
    limits = []
    for version, folder in folders:
        try:
            if version == 2:
                quota, period = (folder / "cpu.max").read_text().split()[:2]
                if quota != "max":
                    limits.append(int(quota) / int(period))
            else:
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                if quota > 0:  # -1: none
                    limits.append(quota / int((folder / "cpu.cfs_period_us").read_text()))
        except (OSError, ValueError, ZeroDivisionError):  # not there, or not this kind of cgroup
            continue
    return min(limits) if limits else None


def list_scans(in_dir: Path, pattern: str = "**/*", exclude: Path | None = None, warn: bool = True,
               excluded_globs: Iterable[str] = (), hidden: list[Path] | None = None,
               unlisted: list[tuple[Path, str]] | None = None, look_inside: bool = True,
               outputs: list[str] | None = None) -> list[Path]:
    """Every regular, non-hidden file under ``in_dir`` whose relative path matches ``pattern``,
    sorted; any file is listed (an unreadable one gets a failed row rather than vanishing from
    the results).

    The pattern is a glob (``**`` spans folders) matched without regard to letter case, since
    Windows exports write ``.DCM`` and ``.dcm`` alike. Folder links are followed (each real
    folder once, so a link loop ends; ``warn`` false: the warnings of a first listing of the tree
    are not given again). ``exclude`` (this run's output folder) is left out, and
    so is what earlier runs wrote (:func:`is_batch_output_part`: their CSVs and their masks and
    overlays, which are not scans), in ``in_dir`` itself too; scans beside an earlier run's CSV
    are taken. When ``exclude`` is ``in_dir`` itself or a folder above it (``--out`` the project
    folder that holds the scans), only its ``masks``/``overlays`` folders and CSV are. A file that
    ``excluded_globs`` match (:func:`excluded_by`), or that lies in a folder they match, is left
    out too. ``hidden`` gets the hidden files (those ``pattern`` takes) and hidden folders left
    out (:func:`~ipp_seg.io.folders.walk_folders`), for a count: an input that a count of rows
    cannot be reconciled with had left no trace. ``unlisted`` gets the folders that could not be
    listed, with the reason (:func:`~ipp_seg.io.folders.walk_folders`). Outputs of ``predict --out``
    among the scans are left out as earlier runs' (:func:`_written_by_ipp_seg`, which reads PNGs'
    first bytes and reports); ``look_inside`` false: not looked for (a second listing, for a count).
    ``outputs`` gets the relative paths of what was left out as earlier runs' outputs (the files
    ``pattern`` takes, and folders with a ``/`` after their names), and its caller says them
    (:func:`say_outputs_left_out`): the listing does not.

    Raises:
        NoScansError: ``in_dir`` is itself a batch run's ``masks`` or ``overlays`` folder.
    """
    refuse_batch_output_as_input(in_dir)
    matcher = glob_matcher(pattern)
    excluded = excluded_by(excluded_globs)
    exclude = exclude.resolve() if exclude else None
    skipped_files: set[Path] = set()
    top = in_dir.resolve()
    if exclude is not None and (exclude == top or exclude in top.parents):
        skipped_files = {exclude / CSV_NAME, exclude / TAKEN_OUT_NAME}
        exclude_folders = {exclude / folder for folder in OUTPUT_FOLDERS}
    else:
        exclude_folders = {exclude} if exclude is not None else set()
    found: list[Path] = []
    earlier_outputs: list[str] = []

    def skip(here: Path, real: Path) -> bool:
        if any(real == x or x in real.parents for x in exclude_folders):
            return True
        if here != in_dir and is_batch_output_part(here):  # (in_dir itself was refused above)
            earlier_outputs.append(here.relative_to(in_dir).as_posix() + "/")
            return True
        return False

    left_hidden: list[Path] = []
    for here, real, names in walk_folders(in_dir, skip, warn_links=warn, hidden=left_hidden, unlisted=unlisted):
        for name in names:
            path = here / name
            rel = path.relative_to(in_dir).as_posix()
            # A link to nowhere, a pipe, a socket or a device is listed too: its row says why it
            # cannot be read (the reader refuses it unopened), rather than the file vanishing.
            # (os.path's tests, not Path's: a link into a folder the user may not enter, or to a name
            # too long, raises from Path.exists, and had ended the whole run.)
            unreadable = (path.is_symlink() and not os.path.exists(path)) or special_file_kind(path) is not None
            if not ((os.path.isfile(path) or unreadable) and matcher(rel)) or real / name in skipped_files \
                    or excluded(rel):
                continue
            if (name in (CSV_NAME, TAKEN_OUT_NAME) and is_batch_output_part(path)) or \
                    (look_inside and not unreadable and os.path.isfile(path) and _written_by_ipp_seg(path)):
                earlier_outputs.append(rel)
                continue
            found.append(path)
    if hidden is not None:
        for path in left_hidden:
            rel = path.relative_to(in_dir).as_posix()
            if path.name in (LOCK_NAME, RUN_RECORD_NAME) and not os.path.isdir(path):
                continue  # ipp-seg's own (--out the scans folder): not an input left out
            if not excluded(rel) and (os.path.isdir(path) or matcher(rel)):
                hidden.append(path)
    if outputs is not None:
        outputs.extend(sorted(earlier_outputs))
    elif warn:
        say_outputs_left_out(earlier_outputs)
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix())


def say_outputs_left_out(outputs: list[str]) -> None:
    """Warn of the earlier runs' outputs a listing left out (:func:`list_scans`'s ``outputs``),
    the first five named."""
    if outputs:
        log.warning("left out what earlier runs wrote (measurements.csv, masks, overlays, reports and DICOM results: "
                    "not scans): %s", _first_named(sorted(outputs), 5))


def _written_by_ipp_seg(path: Path) -> bool:
    """Whether the regular file at ``path`` is an output that ipp-seg wrote outside a batch run's
    folders (``predict --out`` into the scans' own folder), told by its content: a PNG marked so
    (:func:`~ipp_seg.io.images.ipp_seg_png_kind`), a frame's JSON report (:func:`_frame_report`),
    or a mask, overlay, SEG or SR named after such a report beside it (``<stem>_mask.png``,
    ``<stem>_overlay.png``; ``<stem>_seg.dcm`` and ``<stem>_sr.dcm`` where the report lists them):
    those of versions before the marking, and those a ``--glob`` takes without their report."""
    name = path.name
    lower = name.lower()
    if lower.endswith(".png") and ipp_seg_png_kind(path) is not None:
        return True
    if lower.endswith(".json"):
        return _frame_report(path) is not None
    for suffix, kind in (("_mask.png", None), ("_overlay.png", None), ("_seg.dcm", "seg"), ("_sr.dcm", "sr")):
        if lower.endswith(suffix):
            report = _frame_report(path.with_name(name[:-len(suffix)] + ".json"))
            return report is not None and (kind is None or kind in str(report.get("dicom_results") or "").split(";"))
    return False


def _frame_report(path: Path) -> dict | None:
    """The frame report at ``path`` as :func:`~ipp_seg.inference.report.write_frame_outputs`
    writes it (an object naming its ``file``, ``status`` and ``ipp_seg_version``); None for any
    other file. Only a regular file of at most 1 MB is read (a report is a few KB; a pipe or
    device is never waited on: :func:`~ipp_seg.io.folders.read_json_file`)."""
    try:
        report = read_json_file(path, limit=2**20)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and {"file", "status", "ipp_seg_version"} <= report.keys() else None


def is_batch_output(folder: Path) -> bool:
    """Whether ``folder`` holds a batch run's ``measurements.csv``: its masks and overlays are
    outputs, never scans. A CSV that ``measure --csv`` wrote has the same columns, but its rows
    name no model (the masks were drawn elsewhere): the masks beside it are the user's own."""
    if not (folder / CSV_NAME).is_file():  # (a pipe planted there had hung evaluate, a QA pass)
        return False
    try:
        with open(folder / CSV_NAME, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not _is_measurements_header(reader.fieldnames or ()):
                return False
            first = next(reader, None)  # (a run stopped before its first row holds its header alone)
            return first is None or bool(first.get("model"))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def refuse_batch_output_as_input(folder: Path, what: str = "scans", instead: str = "give the folder of the scans"
                                 ) -> None:
    """Raise :class:`NoScansError` when ``folder`` is the ``masks``, ``overlays`` or ``dicom-results`` folder
    of a batch run: given as the folder to take up, its label masks or pictures would be measured
    as ``what`` (an overlay read 125.7 deg for a frame that reads 146.2); ``instead`` says what to give."""
    folder = Path(folder)
    if folder.name in OUTPUT_FOLDERS and is_batch_output(folder.parent):
        kind = {MASKS_FOLDER: "label masks a model drew", OVERLAYS_FOLDER: "overlay pictures"}.get(
            folder.name, "DICOM SEGs and SRs")
        raise NoScansError(f"{folder} is the {folder.name}/ folder beside a batch run's {CSV_NAME} in "
                           f"{folder.parent}: it holds {kind}, not {what}; {instead}")


def is_batch_run_csv(path: Path) -> bool:
    """Whether ``path`` is a batch run's measurements.csv, or a link to one: named so, with the
    run's record or lock file beside it (``measure --csv`` must not replace its rows, nor join a
    run writing them)."""
    def beside_a_run(named: Path) -> bool:
        return named.name == CSV_NAME and any(os.path.lexists(named.parent / name)
                                              for name in (RUN_RECORD_NAME, LOCK_NAME))
    return beside_a_run(Path(path)) or beside_a_run(Path(os.path.realpath(path)))


def has_other_names(path: Path) -> bool:
    """Whether ``path`` is a regular file with more names than this one (hard links): written over
    in place, as ``measure --csv`` writes, every name of it would change."""
    try:
        status = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(status.st_mode) and status.st_nlink > 1


def write_measurements_csv(path: Path, rows: Iterable[dict]) -> Path:
    """Write ``rows`` (:func:`measurement_row`) as a measurements.csv with this version's
    columns, making the folders it goes in; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if others_link(path):
        raise PermissionError(errno.EPERM, f"it is a link to {os.readlink(path)} that another user made: ipp-seg "
                                           "writes only through one's own link; remove it, or name another file")
    data = measurements_csv_bytes(rows)
    # Opened as named, a link followed: the user names this file (measure --csv), which may be
    # /dev/stdout or a link of their own; the outputs ipp-seg names in a folder are replaced instead.
    with open(path, "wb", buffering=0) as fh:
        _write_whole_rows(fh.fileno(), data, lambda written: _after_last_row_end(data, written))
    return path


def _after_last_row_end(data: bytes, written: int) -> int:
    """Where the last whole row of ``data[:written]`` ends (0: none is whole)."""
    end = data.rfind(b"\r\n", 0, written)
    return end + 2 if end >= 0 else 0


def _write_whole_rows(fd: int, data: bytes, rows_end: Callable[[int], int]) -> None:
    """Write ``data`` (CSV rows) to ``fd``. A write cut short (a full disk, a file size limit)
    truncates the file to ``rows_end(bytes written)`` before it raises, so that it ends on a
    whole row: one that ends mid-row reads as a row with cut numbers (133.37 of 133.3712). (A
    pipe cannot be truncated, nor needs it.) So does a stop (KeyboardInterrupt) between two writes."""
    written = 0
    view = memoryview(data)
    try:
        while written < len(data):
            written += os.write(fd, view[written:])
    except (OSError, KeyboardInterrupt):
        try:
            os.ftruncate(fd, rows_end(written))
        except OSError:
            pass
        raise


def measurements_csv_bytes(rows: Iterable[dict]) -> bytes:
    """``rows`` (:func:`measurement_row`) as a whole measurements.csv's bytes, header first."""
    return _csv_bytes(list(map(csv_cells, rows)), header=True)


def _csv_bytes(cells: list[dict], header: bool = False) -> bytes:
    """Rows (:func:`csv_cells`) as measurements.csv's bytes: UTF-8, with a name's bytes that are
    not UTF-8 (lone surrogates in Python) written as escapes, not refused."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    if header:
        writer.writeheader()
    writer.writerows(cells)
    return text.getvalue().encode("utf-8", "backslashreplace")


def csv_cells(row: dict) -> dict:
    """A row as the CSV's cells: its file named so that no spreadsheet takes it for a formula
    (:func:`~ipp_seg.io.folders.spreadsheet_cell`; reading the CSV undoes it)."""
    return {**row, "file": spreadsheet_cell(row["file"])}


def is_batch_output_part(path: Path) -> bool:
    """Whether ``path`` is something a batch run wrote: its ``measurements.csv``, or the
    ``masks``, ``overlays`` or ``dicom-results`` folder beside it (outputs, never scans or predictions to
    take up again). Anything else in that folder, such as scans when ``--out`` was their project
    folder, is not."""
    return (path.name in (CSV_NAME, TAKEN_OUT_NAME) or path.name in OUTPUT_FOLDERS) and is_batch_output(path.parent)


# Columns every version's CSV has: a CSV of an earlier version (fewer columns, all of them
# among this version's) is still ipp-seg's, and can still be resumed.
_FIRST_COLUMNS = ("file", "frame", "status", "reasons")


def _is_measurements_header(header) -> bool:
    """Whether a CSV header is one that some version of ipp-seg's batch writes."""
    return set(_FIRST_COLUMNS) <= set(header) <= set(CSV_COLUMNS)


def csv_target_content(path: str | os.PathLike[str]) -> str:
    """What a file that a CSV of measurements is to be written to holds: ``"none"`` (no regular
    file there, an empty one, or one of blank lines; a pipe or ``/dev/stdout`` is not read, it would
    block), ``"header"`` (ipp-seg's header alone), ``"rows"`` (ipp-seg's header and rows) or
    ``"other"`` (a note, a one-line JSON, an image: anything else, which writing would destroy).
    Unreadable reads as ``"none"``: writing it says what is wrong."""
    if not os.path.isfile(path):
        return "none"
    try:
        with open(path, "rb") as fh:
            lines = [line for line in fh.read(1 << 16).splitlines() if line.strip()]  # blank lines first
    except OSError:
        return "none"
    if not lines:
        return "none"
    header = next(csv.reader([lines[0].decode("utf-8-sig", "replace")]), [])
    if not _is_measurements_header(header):
        return "other"
    return "rows" if len(lines) > 1 else "header"


def excluded_by(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test of a relative POSIX path: whether it, or a folder it lies in, matches one of
    ``patterns`` (:func:`glob_matcher`'s globs; ``--exclude``): ``viewer`` and ``**/__MACOSX``
    leave out a folder with all it holds, ``**/*.pdf`` files of a kind."""
    matchers = [glob_matcher(pattern.rstrip("/")) for pattern in patterns]
    if not matchers:
        return lambda rel: False

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        return any(match("/".join(parts[:n])) for n in range(1, len(parts) + 1) for match in matchers)
    return excluded


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A case-insensitive test of a relative POSIX path against a glob: ``**`` matches any
    number of folders, ``*`` and ``?`` stay within one name, ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + re.escape(body[1:]) if body.startswith("!") else re.escape(body)).replace(
                "\\-", "-") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # DOTALL: a folder name may hold a newline, and ``**`` must still cross it.
    regex = re.compile("".join(out), re.IGNORECASE | re.DOTALL)
    return lambda rel: regex.fullmatch(rel) is not None


def output_stem(rel: str, frame_index: int, n_frames: int) -> str:
    """``a/b/scan`` or ``a/b/scan_f0003`` (multi-frame) for a file's relative path (its suffix
    off as :func:`~ipp_seg.io.formats.name_without_suffix` takes it)."""
    stem = Path(name_without_suffix(rel)).as_posix()
    return f"{stem}_f{frame_index:04d}" if n_frames > 1 else stem


_NAME_MAX = 255  # bytes of a file name, on most file systems


def fitting_stem(stem: str, ending: str = f"{OVERLAY_NAME_SUFFIX}.png") -> str:
    """``stem`` (:func:`output_stem`) with its last part cut where it and the longest ``ending``
    an output adds to it (``predict``'s ``_overlay.png``, batch's ``.png``) would pass the 255
    bytes a file name may hold: the cut part ends in ``~`` and 8 hex digits of the whole name's
    sha1, so that two long names sharing their start stay apart. A scan of a 250-byte name had
    ended a ``predict --out`` run half-written; names that fit are as they were."""
    folder, slash, last = stem.rpartition("/")
    raw = last.encode("utf-8", "surrogateescape")
    room = _NAME_MAX - len(ending.encode())
    if len(raw) <= room:
        return stem
    digest = hashlib.sha1(raw).hexdigest()[:8]
    kept, used = "", 0
    for ch in last:  # whole characters: a cut through a multi-byte one would leave a name that is not UTF-8
        used += len(ch.encode("utf-8", "surrogateescape"))
        if used > room - len(digest) - 1:
            break
        kept += ch
    return f"{folder}{slash}{kept}~{digest}"


#: Where each output of a frame goes: (its folder under OUT, the ending of its name, the ending
#: its name is cut to fit with: a SEG and its SR share one cut name).
_OUTPUT_PLACES = {"mask": (MASKS_FOLDER, ".png", ".png"), "overlay": (OVERLAYS_FOLDER, ".png", ".png"),
                  "seg": (DICOM_FOLDER, "_seg.dcm", "_seg.dcm"), "sr": (DICOM_FOLDER, "_sr.dcm", "_seg.dcm")}


def _output_base(out_dir: Path, kind: str, stem: str) -> Path:
    """The ``kind`` output's path ("mask", "overlay", "seg", "sr") of the frame whose
    :func:`output_stem` is ``stem``, without its ending, its name cut to fit (:func:`fitting_stem`)."""
    folder, _, fitted_to = _OUTPUT_PLACES[kind]
    return out_dir / folder / fitting_stem(stem, fitted_to)


def output_path(out_dir: Path, kind: str, stem: str) -> Path:
    """Where ``batch`` writes the ``kind`` output of the frame whose :func:`output_stem` is ``stem``."""
    return Path(f"{_output_base(out_dir, kind, stem)}{_OUTPUT_PLACES[kind][1]}")


def _kinds_asked(options: BatchOptions) -> set[str]:
    """The outputs of each frame ``options`` ask for, as kinds of :func:`output_path`."""
    asked = {"mask": options.save_masks, "overlay": options.overlays, "seg": options.dicom_seg, "sr": options.dicom_sr}
    return {kind for kind, wanted in asked.items() if wanted}


def _folders_asked(options: BatchOptions) -> dict[str, bool]:
    """Each output folder, and whether ``options`` ask for what goes in it."""
    asked = _kinds_asked(options)
    return {folder: any(place[0] == folder and kind in asked for kind, place in _OUTPUT_PLACES.items())
            for folder in OUTPUT_FOLDERS}


def suffix_disambiguated(names: Iterable[str]) -> dict[str, str]:
    """Names (relative paths) whose output stems collide because they differ only in their
    suffix (``a/scan.dcm``, ``a/scan.png``), each mapped to one with the suffix joined to the
    stem (``a/scan_dcm.dcm``, ``a/scan_png.png``); names that do not collide are left out. Stems
    that differ only in case collide too (``Scan.png``, ``scan.jpg``): on macOS and Windows the
    outputs of both would be one file. So do a name whose stem is another's with a frame's
    ending and that other (``clip_f0001.dcm`` beside ``clip.dcm``: the outputs of a cine's frame
    1 and of the still would be one file): both are renamed, whichever of them a folder held
    first, and whatever the frames the other holds (not known when names are chosen). A name
    without a suffix keeps it beside names with one, which take a digest where they still meet
    it; names that still collide after that (``scan.dcm`` and ``SCAN.DCM``; ``IM_0001`` and
    ``im_0001``; ``clip`` and ``clip_f0001``, which have no suffix to join) each take 8 hex
    digits of their own sha1 after a ``~``. Names are compared as a case- and
    normalisation-blind disk compares them (:func:`_folded`)."""
    names = list(dict.fromkeys(names))
    own_stems = {name: output_stem(name, 0, 1) for name in names}
    stems = Counter(_folded(stem) for stem in own_stems.values())
    bases = _frame_bases(stems)
    renames = {}
    for name in names:
        stem = own_stems[name]
        folded = _folded(stem)
        # A name without a suffix (IM_0001, a UID) keeps it: the others of its group take theirs.
        # (Renamed "IM_0001_", a UID's name had lost its last part to the suffix rule, and two
        # UIDs with previews beside them, UID.jpg, had shared the UID root's outputs.)
        if (stems[folded] > 1 or _named_as_a_frame_of(stem, stems) or folded in bases) and name != stem:
            suffix = name[len(stem):]
            renames[name] = f"{stem}_{suffix.lstrip('.').replace('.', '_')}{suffix}"
    # A joined name may still meet another's stem (scan.png made scan_png beside a scan_png.png; or
    # scan.dcm and SCAN.DCM, apart only in case), and names without a suffix may meet (IM_0001 and
    # im_0001; clip and clip_f0001): each name that meets one takes a digest of itself, but a name
    # without a suffix beside names with one, which take theirs. (Two bare names apart only in case
    # had shared their outputs on a case-insensitive disk, an SMB share or a USB drive written from
    # Linux.)
    joined = {name: output_stem(renames.get(name, name), 0, 1) for name in names}
    final = Counter(_folded(stem) for stem in joined.values())
    suffixed = Counter(_folded(joined[n]) for n in names if n != own_stems[n])
    final_bases = _frame_bases(final)
    for name in names:
        stem = joined[name]
        folded = _folded(stem)
        framed = _named_as_a_frame_of(stem, final) or folded in final_bases
        if name == own_stems[name]:  # no suffix
            clash = (final[folded] > 1 and not suffixed[folded]) or framed or folded in bases
        else:
            clash = final[folded] > 1 or framed
        if clash:
            suffix = name[len(own_stems[name]):]
            digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
            renames[name] = f"{stem}~{digest}{suffix}"
    return renames


# output_stem's ending for a frame of a multi-frame file (four digits, more from frame 10000 on)
_FRAME_ENDING = re.compile(r"(.+)_f(?:\d{4}|[1-9]\d{4,})", re.DOTALL)


def _folded(stem: str) -> str:
    """``stem`` as a disk blind to case and to Unicode normalisation compares names (macOS, SMB
    shares): ``Müller`` composed (NFC) and decomposed (NFD) are one name there, and the outputs of
    both had been one file."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", stem).casefold())


def _frame_bases(stems: Counter) -> set[str]:
    """The stems of ``stems`` (casefolded) that another of them is, but for a frame's ending
    (``clip`` of ``clip_f0001``): the outputs of their frames would meet that other's."""
    return {frame.group(1) for stem in stems if (frame := _FRAME_ENDING.fullmatch(stem))} & set(stems)


def _named_as_a_frame_of(stem: str, stems: Counter) -> bool:
    """Whether ``stem`` is, but for case, another stem of ``stems`` (casefolded) with the ending
    :func:`output_stem` gives a frame of a multi-frame file (``clip_f0001`` beside ``clip``)."""
    frame = _FRAME_ENDING.fullmatch(_folded(stem))
    return frame is not None and stems[frame.group(1)] > 0


class FileProcessor:
    """Segments and measures the frames of one file at a time; holds the loaded model."""

    def __init__(self, options: BatchOptions) -> None:
        self.options = options
        inf = options.inference
        self.spec = resolve_model(inf.model)
        self._output_names = dict(options.output_renames)
        self._instance_numbers = dict(options.instance_numbers)
        self.segmenter = load_segmenter(self.spec, inf.backend, inf.device, inf.threads, inf.fixed_batch)

    @property
    def model_name(self) -> str:
        return self.segmenter.info.name

    @property
    def model_sha256(self) -> str:
        """The sha256 of the model file that runs (hex)."""
        return self.segmenter.info.model_sha256

    @property
    def confidence_floors(self) -> dict[str, float]:
        """The head and PS confidences this model's frames are judged against (:func:`confidence_floors_used`)."""
        return confidence_floors_used(self.spec)

    def _drawn_by(self, source_sha256: str, frame_index: int) -> dict[str, str]:
        """What the masks and overlays this processor writes record of what drew them, and on what."""
        inf = self.options.inference
        return output_provenance(self.model_name, self.model_sha256, inf.orientation, inf.tta, source_sha256,
                                 frame_index)

    def results(self, path: Path, done_frames: frozenset = frozenset(),
                timings: dict | None = None) -> Iterator[FrameResult | FrameFailure]:
        """Segment and measure the selected frames of one file, a few frames per model call.

        Yields a :class:`FrameResult` per frame, or a :class:`FrameFailure` for a file or
        frame that cannot be read (after which the file is abandoned).
        """
        for _, result in self.results_of_files([(path, done_frames)], timings):
            yield result

    def results_of_files(self, items: list[tuple[Path, frozenset]],
                         timings: dict | None = None) -> Iterator[tuple[int, FrameResult | FrameFailure]]:
        """Like :meth:`results` for several files, as (index in ``items``, result) pairs.

        Frames of consecutive files share model calls of up to ``FRAMES_PER_BATCH`` frames:
        most scans hold a single frame, and one call on 8 frames costs far less per frame than
        8 calls on one. The results come in file order, each file's in frame order: once one of a
        file comes, every file before it is through. A cine frame's result comes once those
        within :data:`~ipp_seg.measure.steadiness.STEADINESS_WINDOW_MS` after it are measured, each
        checked against its neighbours in time (:func:`steadiness_checked`).
        """
        return steadiness_checked(self._results_of_files(items, timings))

    def _results_of_files(self, items: list[tuple[Path, frozenset]],
                          timings: dict | None) -> Iterator[tuple[int, FrameResult | FrameFailure]]:
        timings = timings if timings is not None else {}
        for key in STAGES:
            timings.setdefault(key, 0.0)
        inf = self.options.inference
        pending: list[tuple[int, object]] = []  # (item index, frame) awaiting the model
        for item, (path, done_frames) in enumerate(items):
            started = time.perf_counter()
            try:
                frames = read_frames(path, inf.frames, inf.spacing_mm)
            except Exception as exc:  # noqa: BLE001 - one odd file must not end a run of thousands
                timings["read_s"] += time.perf_counter() - started
                if not (isinstance(exc, FrameNotInScanError) and done_frames):
                    # After the frames of the files before it, still awaiting the model: a file's
                    # results come once those before it are through (the batch writes each row as
                    # its file is), and the model's call stays shared.
                    pending.append((item, _reading_failure(path, None, exc)))
                # (else a resumed run's --frames asks none of its frames, and it has rows: a failed
                # row beside its measured ones had read as a failure of the file, and doubled it)
                continue
            timings["read_s"] += time.perf_counter() - started
            iterator = iter(frames)
            index = 0
            while True:
                started = time.perf_counter()
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - as above
                    # Rows of the frames before it come first; later frames cannot be trusted, but
                    # for a frame damaged alone (each frame a JPEG of its own): read on after it.
                    yield from self._process(pending, timings)
                    pending = []
                    if not isinstance(exc, DamagedFrameError):
                        # (The frame the reader names: with --frames all/S the next asked is not index + 1.)
                        failed = exc.frame_index if isinstance(exc, ScanReadError) and exc.frame_index is not None \
                            else index
                        yield item, _reading_failure(path, failed, exc)
                        # The pixel data ended: each later frame asked for is missing too, a row each (a gap in a
                        # cine's time had read as its end).
                        for later, provenance in getattr(exc, "missing_frames", ()):
                            yield item, FrameFailure(later, exc.reason_for(later), UNREADABLE, provenance,
                                                     exc.n_frames)
                        break
                    yield item, _reading_failure(path, exc.frame_index, exc)
                    after = frames_after(inf.frames, exc.frame_index)
                    try:
                        iterator = iter(read_frames(path, after, inf.spacing_mm) if after else ())
                    except FrameNotInScanError:  # it was the last frame
                        break
                    except Exception as again:  # noqa: BLE001 - as above
                        yield item, _reading_failure(path, exc.frame_index + 1, again)
                        break
                    continue
                finally:
                    timings["read_s"] += time.perf_counter() - started
                index = frame.frame_index + 1
                if frame.frame_index in done_frames:
                    continue
                try:
                    refusal = not_segmentable_reason(frame.pixels)
                except Exception as exc:  # noqa: BLE001 - one odd frame must not end a run of thousands
                    yield from self._process(pending, timings)
                    pending = []
                    yield item, _processing_failure(frame, "checking the frame", exc)
                    continue
                if refusal:
                    yield from self._process(pending, timings)  # keep frame order
                    pending = []
                    yield item, FrameFailure(frame.frame_index, refusal, NOT_ULTRASOUND, frame.provenance,
                                             frame.n_frames)
                    continue
                pending.append((item, frame))
                if sum(not isinstance(entry, FrameFailure) for _, entry in pending) == FRAMES_PER_BATCH:
                    yield from self._process(pending, timings)
                    pending = []
        yield from self._process(pending, timings)

    def _process(self, pending: list, timings: dict) -> Iterator[tuple[int, FrameResult | FrameFailure]]:
        """The results of ``pending``'s (item, frame or failure) entries, in their order: the
        frames segmented in one model call and measured, the failures as they are."""
        results = self._segment_and_measure([entry for entry in pending if not isinstance(entry[1], FrameFailure)],
                                            timings)
        for item, entry in pending:
            yield (item, entry) if isinstance(entry, FrameFailure) else next(results)  # (one result a frame)

    def _segment_and_measure(self, pending: list, timings: dict) -> Iterator[tuple[int, FrameResult | FrameFailure]]:
        if not pending:
            return
        inf = self.options.inference
        try:
            masks, prep_s, model_s, confidence, extent, symphysis = segment_frames(
                [frame for _, frame in pending], self.segmenter, inf.tta, mirrored=inf.orientation == "mirrored")
        except (BackendError, MemoryError):
            raise  # the model itself cannot run: every frame would fail the same way
        except Exception as exc:  # noqa: BLE001 - one odd frame must not end a run of thousands
            if len(pending) > 1:  # find the frame at fault; the others are measured
                for one in pending:
                    yield from self._segment_and_measure([one], timings)
                return
            item, frame = pending[0]
            yield item, (FrameFailure(frame.frame_index, str(exc), NOT_ULTRASOUND, frame.provenance, frame.n_frames)
                         if isinstance(exc, FrameTooLongError) else _processing_failure(frame, "segmenting", exc))
            return
        timings["preprocess_s"] += prep_s
        timings["model_s"] += model_s
        for (item, frame), labels, head, head_size, ps in zip(pending, masks, confidence, extent, symphysis):
            started = time.perf_counter()
            try:
                measurement = measure_frame(labels, frame, method=inf.method, orientation=inf.orientation,
                                            head_confidence=head, head_extent=head_size, ps_confidence=ps,
                                            confidence_floors=self.segmenter.info.confidence_floors)
            except Exception as exc:  # noqa: BLE001 - as above
                yield item, _processing_failure(frame, "measuring", exc)
                continue
            finally:
                timings["measure_s"] += time.perf_counter() - started
            yield item, FrameResult(frame, labels, measurement, self.model_name, head_confidence=head,
                                    ps_confidence=ps, model_sha256=self.model_sha256)

    def __call__(self, path: Path, done_frames: frozenset = frozenset()) -> FileOutcome:
        """The CSV rows of one file, writing masks/overlays as the options ask."""
        return self.process_files([(path, done_frames)])[0]

    def _write_dicom(self, result: FrameResult, rel: str, stem: str, name: str, outputs: list[str],
                     written: list[tuple[str, str]] | None, first_time: Callable[[str], bool],
                     too_long: dict[str, int]) -> list[str]:
        """The DICOM SEG and/or SR of one DICOM frame (of the file ``rel``), under OUT/dicom-results/
        at the frame's mask name. Its Instance Number is the run's plan for it
        (:attr:`BatchOptions.instance_numbers`), made from the whole folder's headers: unique in
        its derived series, whatever the workers and their order. A SEG or SR refused (a source
        without what it needs) is said once per file and cause; the row stands. Returns the kinds
        ("SEG", "SR") refused."""
        opts = self.options
        base = _output_base(opts.out_dir, "seg", stem)  # (the SR's too)
        asked = [kind for kind, wanted in (("seg", opts.dicom_seg), ("sr", opts.dicom_sr)) if wanted]
        refused = [kind.upper() for kind in asked]  # unless written below
        with _unless_path_too_long(refused, output_path(opts.out_dir, asked[0], stem), too_long):
            check_within(opts.out_dir / DICOM_FOLDER, base)
            for kind in asked:
                _note_output(outputs, written, name, output_path(opts.out_dir, kind, stem))
            base.parent.mkdir(parents=True, exist_ok=True)
            refused = self._write_frame_dicom(result, base, name, first_time, self._instance_numbers.get(rel))
        return refused

    def _write_frame_dicom(self, result: FrameResult, base: Path, name: str, first_time: Callable[[str], bool],
                           first: int | None) -> list[str]:
        from ..io.dicom_results import DicomOutputsRefused, write_frame_dicom

        opts, frame = self.options, result.frame
        try:
            write_frame_dicom(frame.provenance.path, result.labels, result.measurement, base,
                              frame_number=frame.provenance.frame_number, n_frames=frame.n_frames,
                              seg=opts.dicom_seg, sr=opts.dicom_sr, model_name=self.model_name,
                              model_sha256=self.model_sha256, tta=opts.inference.tta,
                              software_version=software_version(), run_uid=opts.run_uid, run_started=opts.run_started,
                              instance_number=None if first is None else first + frame.provenance.frame_number - 1)
        except DicomOutputsRefused as exc:
            if first_time(str(exc)):
                log.warning("%s: %s", name, exc)
            return [kind for kind, _ in exc.refused]
        return []

    def process_files(self, items: list[tuple[Path, frozenset]],
                      stopped: Callable[[], bool] | None = None,
                      written: list[tuple[str, str]] | None = None,
                      on_frame: Callable[[], None] | None = None) -> list[FileOutcome]:
        """One :class:`FileOutcome` per item, in order: :meth:`file_outcomes`, all at once."""
        return list(self.file_outcomes(items, stopped, written, on_frame))

    def file_outcomes(self, items: list[tuple[Path, frozenset]],
                      stopped: Callable[[], bool] | None = None,
                      written: list[tuple[str, str]] | None = None,
                      on_frame: Callable[[], None] | None = None) -> Iterator[FileOutcome]:
        """One :class:`FileOutcome` per item, in order, each as soon as its file is through;
        frames share model calls across files. An outcome's stage times are those spent since
        the one before it (a shared call's go to the first file through after it: their sum is
        the run's). Once ``stopped()`` is true, nothing more is written and the rows so far are
        given. ``written`` gets (file, path) of each mask and overlay as it is written: what an
        interruption before their file's outcome leaves. (A group's outcomes had all come once
        its last file was through: a cine in it held the run's progress at nought, and a stop
        lost the rows of every file of the group.) ``on_frame`` is called as each frame's row is made.
        """
        opts, inf = self.options, self.options.inference
        rels = [path.relative_to(opts.in_dir).as_posix() for path, _ in items]  # for the output files' paths
        names = [printable_path(rel) for rel in rels]  # for the CSV's rows
        stamps = [file_stamp(path) for path, _ in items]  # before reading: a later change is not hidden
        digests: dict[int, str] = {}  # each file's, once, when its first row is made

        def digest_of(item: int) -> str:
            if item not in digests:
                digests[item] = file_sha256(items[item][0])
            return digests[item]
        rows: list[list[dict]] = [[] for _ in items]
        outputs: list[list[str]] = [[] for _ in items]
        dicom_counts = [[0, 0] for _ in items]  # (written, refused) SEGs and SRs
        burned_in_said: set[int] = set()
        refusals_said: set[tuple[int, str]] = set()  # (file, cause) of a SEG or SR refused: said once a file
        unwritten: dict[int, dict[str, int]] = {}  # per file, its outputs whose paths are too long: their bytes
        timings: dict = {}
        given: dict[str, float] = {}  # the stage times given with the outcomes so far

        def outcome_of(item: int) -> FileOutcome:
            too_long = unwritten.get(item)
            if too_long:  # (one warning a file, whatever its frames)
                log.warning("%s: its %s not written: %s longer than this system takes (%s bytes); its rows stand "
                            "(a shorter --out would fit them)", names[item],
                            " and ".join(filter(None, (", ".join([*too_long][:-1]), [*too_long][-1]))),
                            "their paths are" if len(too_long) > 1 else "the path is",
                            f"{max(too_long.values()):,}")
            spent = {key: value - given.get(key, 0.0) for key, value in timings.items()}
            given.update(timings)
            return FileOutcome(names[item], tuple(rows[item]), spent, tuple(outputs[item]), *dicom_counts[item])
        through = 0  # the files whose outcomes were given
        # (Told each file's start: a cine's first result waits for its next frames, and the file before it is
        # through all the same; its rows had waited too, and a stop meanwhile lost them.)
        known = dict(opts.known_cine_angles)
        results = steadiness_checked(self._results_of_files(items, timings), say_file_starts=True,
                                     known={item: known[name] for item, name in enumerate(names) if name in known})
        try:
            for item, result in results:
                if stopped is not None and stopped():
                    break
                for earlier in range(through, item):  # a file's results come in order: those before it are through
                    yield outcome_of(earlier)
                through = max(through, item)
                if result is None:  # (the file's start)
                    continue
                rel, name = rels[item], names[item]
                if isinstance(result, FrameFailure):
                    rows[item].append(measurement_row(name, "" if result.frame_index is None else result.frame_index,
                                                      None, self.model_name, result.provenance, result.reason,
                                                      inf.method, inf.orientation, inf.tta, result.code, inf.spacing_mm,
                                                      stamps[item], model_sha256=self.model_sha256,
                                                      # (not of a file without an image: a video or a PDF
                                                      # of an export, read whole for nothing)
                                                      file_sha256="" if result.code == NOT_AN_IMAGE
                                                      else digest_of(item), n_frames=result.n_frames))
                    if on_frame is not None and result.frame_index is not None:
                        on_frame()
                    continue
                started = time.perf_counter()
                frame = result.frame
                stem = output_stem(self._output_names.get(rel, rel), frame.frame_index, frame.n_frames)

                def said_once(cause: str, item: int = item) -> bool:  # (a warning said once per file and cause)
                    return _first_time(refusals_said, (item, cause))
                too_long = unwritten.setdefault(item, {})
                # Each output's path in OUT, on its row: a name can depend on the run's history (scan.png
                # measured alone, then scan.dcm beside it: masks/scan.png and masks/scan_dcm.png), so a
                # loader that rebuilt names from the rows' files could pair a row with another scan's mask.
                files_written = {"mask_file": "", "overlay_file": ""}
                if opts.save_masks:
                    mask_path = output_path(opts.out_dir, "mask", stem)
                    with _unless_path_too_long(("mask",), mask_path, too_long):
                        check_within(opts.out_dir / MASKS_FOLDER, mask_path)
                        _note_output(outputs[item], written, name, mask_path)
                        write_label_png(mask_path, result.labels, self._drawn_by(digest_of(item), frame.frame_index))
                        files_written["mask_file"] = _path_in_out(opts.out_dir, mask_path)
                if opts.overlays:
                    overlay_path = output_path(opts.out_dir, "overlay", stem)
                    burned_in = burned_in_text_shown(frame)
                    if burned_in and item not in burned_in_said:
                        burned_in_said.add(item)  # (once a file)
                        log.warning("%s: %s", name, burned_in)
                    with _unless_path_too_long(("overlay",), overlay_path, too_long):
                        check_within(opts.out_dir / OVERLAYS_FOLDER, overlay_path)
                        _note_output(outputs[item], written, name, overlay_path)
                        write_overlay_png(overlay_path,
                                          render_overlay(imaged_pixels(frame.pixels, frame.regions), result.labels,
                                                         result.measurement,
                                                         # The file's name only, as predict writes it: folder
                                                         # names (often a patient's) burnt into pixels outlive
                                                         # any scrubbing of names; the overlay's path holds them.
                                                         title=overlay_title(Path(name).name, frame.frame_index,
                                                                             frame.n_frames,
                                                                             frame.provenance.frame_number,
                                                                             frame.provenance.frame_time_ms),
                                                         tta=inf.tta, model=self.model_name,
                                                         echoes=frame_echoes(frame)),
                                          {**self._drawn_by(digest_of(item), frame.frame_index), "method": inf.method})
                        files_written["overlay_file"] = _path_in_out(opts.out_dir, overlay_path)
                dicom_cell = ""
                if (opts.dicom_seg or opts.dicom_sr) and frame.provenance.source_format == "dicom":
                    refused = self._write_dicom(result, rel, stem, name, outputs[item], written, said_once, too_long)
                    dicom_cell = dicom_results_cell(opts.dicom_seg, opts.dicom_sr, refused)
                    dicom_counts[item][0] += opts.dicom_seg + opts.dicom_sr - len(refused)
                    dicom_counts[item][1] += len(refused)
                timings["write_s"] += time.perf_counter() - started
                rows[item].append(measurement_row(name, frame.frame_index, result.measurement, self.model_name,
                                                  frame.provenance, "", inf.method, inf.orientation,
                                                  inf.tta, spacing_given=inf.spacing_mm, file_stamp=stamps[item],
                                                  file_sha256=digest_of(item),
                                                  head_confidence=result.head_confidence,
                                                  ps_confidence=result.ps_confidence, model_sha256=self.model_sha256,
                                                  n_frames=frame.n_frames)
                                  | {"dicom_results": dicom_cell} | files_written)
                if on_frame is not None:
                    on_frame()
        finally:
            results.close()  # (its reader's files closed now, not when collected)
        for item in range(through, len(items)):
            yield outcome_of(item)


#: The most cine results :func:`steadiness_checked` holds back at once: a window of 0.5 s at 200 frames a second.
MAX_HELD_FRAMES = 100


def steadiness_checked(results: Iterable[tuple[int, FrameResult | FrameFailure]], say_file_starts: bool = False,
                       known: dict[int, Sequence[tuple[float, float]]] | None = None
                       ) -> Iterator[tuple[int, FrameResult | FrameFailure | None]]:
    """``results`` ((file index, result) pairs, in file order and each file's in frame order)
    as they come, but each cine frame's AoP checked against those of the same file's frames
    within :data:`STEADINESS_WINDOW_MS` of it (:func:`~ipp_seg.measure.steadiness.aop_unsteady`):
    one far from their median carries ``aop_unsteady``. A result with a frame time is held back
    until a later frame of its file lies beyond the window, or its file ends: at a cine's
    frame rate, a few frames (a still image, or a cine without timing, is given at once).
    ``say_file_starts``: (file index, None) comes as a file's first result does, before it is
    held (the files before it are through). ``known``: per file index, (time ms, AoP) of its
    frames measured before (a resumed run's rows), neighbours of those measured now."""
    held: list[tuple[int, int, FrameResult | FrameFailure]] = []  # the current file's, not given yet: (n, item, result)
    timed: list[tuple[int, float, float | None]] = []  # (n, time, AoP) of the file's frames with a time
    before: list[tuple[float, float]] = []  # the current file's known frames, by time

    def time_of(result) -> float | None:
        return result.frame.provenance.frame_time_ms if isinstance(result, FrameResult) else None

    def where(t: float, side=bisect.bisect_left) -> int:  # (the place of time ``t`` among the known frames)
        return side(before, t, key=lambda known_frame: known_frame[0])

    def unsteady(n: int, time_ms: float, aop: float) -> bool:
        # The known frames in the window, the nearest MAX_HELD_FRAMES on either side at most.
        at = where(time_ms)
        near = before[max(where(time_ms - STEADINESS_WINDOW_MS), at - MAX_HELD_FRAMES):
                      min(where(time_ms + STEADINESS_WINDOW_MS, bisect.bisect_right), at + MAX_HELD_FRAMES)]
        return aop_off_its_neighbours(time_ms, aop, [(t, a) for k, t, a in timed if k != n] + near)

    def given(file_ended: bool = False) -> Iterator[tuple[int, FrameResult | FrameFailure]]:
        # The held results, in order, up to the first whose window is still open: one with a time that no frame
        # measured since lies beyond (every one, at a file's end), or, past MAX_HELD_FRAMES held, judged on the
        # frames after it measured so far (a header's frame time in seconds read as ms, 0.033, had put a whole
        # cine of thousands of frames in one window: held whole in memory, and each frame judged on every other).
        while held and (file_ended or time_of(held[0][2]) is None or len(held) > MAX_HELD_FRAMES
                        or time_of(held[0][2]) + STEADINESS_WINDOW_MS < timed[-1][1]):
            n, item, result = held.pop(0)
            time_ms = time_of(result)
            if time_ms is not None and result.measurement.aop_deg is not None and \
                    unsteady(n, time_ms, result.measurement.aop_deg):
                result = replace(result, measurement=result.measurement.with_warning(AOP_UNSTEADY))
            yield item, result
        # Forget the frames that neither a held one nor one to come (none earlier than the last) can reach, and
        # those more than MAX_HELD_FRAMES before the first held one.
        first = next(((k, time_of(r)) for k, _, r in held if time_of(r) is not None), None)
        reach = first[1] if first else timed[-1][1] if timed else None
        oldest = first[0] - MAX_HELD_FRAMES if first else timed[-1][0] - MAX_HELD_FRAMES if timed else 0
        timed[:] = [e for e in timed if reach is not None and e[1] >= reach - STEADINESS_WINDOW_MS and e[0] >= oldest]

    current = None
    try:
        for n, (item, result) in enumerate(results):
            if item != current:
                yield from given(file_ended=True)
                timed.clear()
                before[:] = sorted((float(t), float(a)) for t, a in (known or {}).get(item, ()))
                current = item
                if say_file_starts:
                    yield item, None
            time_ms = time_of(result)
            if time_ms is not None:
                timed.append((n, time_ms, result.measurement.aop_deg))
            held.append((n, item, result))
            yield from given()
        yield from given(file_ended=True)
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # (a caller that stops early closes this: the reader's files closed now)
            close()


def _path_in_out(out_dir: Path, path: Path) -> str:
    """An output's path relative to OUT, as the CSV names files (POSIX, control characters escaped)."""
    return printable_path(path.relative_to(out_dir).as_posix())


@contextmanager
def _unless_path_too_long(shown: Iterable[str], path: Path, too_long: dict[str, int]):
    """Write outputs of one frame (``shown``: ("mask",), ("SEG", "SR")) inside the block, or, where its ``path``
    passes the longest path the system takes (4,096 bytes on Linux: an export's deep folders
    mirrored under a long OUT; or a name in it the file system's longest), leave it unwritten and
    note it in ``too_long`` (with its path's bytes), for a warning: the row stands, and the run
    goes on. (One such file had stopped the whole run without a row.) Other errors (a full disk,
    a folder without permission) stop the run as before."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        for kind in shown:
            too_long[kind] = max(too_long.get(kind, 0), len(os.fsencode(path)))


def _first_time(said: set, key) -> bool:
    """Whether ``key`` is new to ``said`` (and note it): a warning said once per file and cause."""
    new = key not in said
    said.add(key)
    return new


def _note_output(outputs: list[str], written: list[tuple[str, str]] | None, name: str, path: Path) -> None:
    """Note an output before it is written: one cut short is as much the run's as one written."""
    outputs.append(str(path))
    if written is not None:
        written.append((name, str(path)))


def _csv_name(path: Path, in_dir: Path) -> str:
    """The file's name in the CSV: its path relative to ``in_dir``, printable
    (:func:`~ipp_seg.io.folders.printable_path`)."""
    return printable_path(path.relative_to(in_dir).as_posix())


def _processing_failure(frame, stage: str, exc: Exception) -> FrameFailure:
    """A frame that met an unexpected error, kept as a failed row (the traceback is logged at
    debug level, for a bug report)."""
    log.debug("%s frame %d: unexpected error while %s", frame.provenance.path, frame.frame_index, stage,
              exc_info=True)
    if isinstance(exc, MemoryError):
        return FrameFailure(frame.frame_index, OUT_OF_MEMORY_SAID, PROCESSING_ERROR, frame.provenance, frame.n_frames)
    detail = " ".join(str(exc).split())[:200]
    return FrameFailure(frame.frame_index,
                        f"unexpected error while {stage} ({type(exc).__name__}{': ' + detail if detail else ''}); "
                        "please report it to the ipp-seg developers", PROCESSING_ERROR, frame.provenance,
                        frame.n_frames)


def frames_after(frames: str, index: int) -> FrameSelection | None:
    """The frames of the selection ``frames`` ("all", "N", "A-B", each with "/S" or not) after
    frame ``index``, its step kept; None where it holds none."""
    return parse_frame_selection(frames).after(index)


def _reading_failure(path: Path, frame_index: int | None, exc: Exception) -> FrameFailure:
    """A file or frame that could not be read, kept as a failed row: with the reader's reason
    (:class:`ScanReadError`), or for an error no reader check foresaw with its type only (a
    reader's message may quote header values, patient data; where it was raised, the traceback
    without the message, is logged at debug level for a bug report)."""
    if isinstance(exc, ScanReadError):
        code = (NOT_AN_IMAGE if isinstance(exc, NotAnImageError) else NO_SUCH_FRAME
                if isinstance(exc, FrameNotInScanError) else NOT_ULTRASOUND
                if isinstance(exc, OtherModalityError) else UNREADABLE)
        # A header read before the failure: the row keeps its UIDs, to join back to the study; a frame that could
        # not be read, its frame number and time in the cine, and the cine's frame count, as the header gave them.
        sop, study, series = exc.dicom_uids
        header = exc.frame_provenance or (
            Provenance(str(path), "dicom", sop, study_instance_uid=study, series_instance_uid=series)
            if any(exc.dicom_uids) else None)
        return FrameFailure(frame_index, exc.reason, code, header, exc.n_frames)
    log.debug("%s: unexpected %s while reading, at\n%s", path, type(exc).__name__,
              "".join(traceback.format_tb(exc.__traceback__)).rstrip())
    if isinstance(exc, FileNotFoundError):  # (gone since it was listed: counted so, as the readers say it)
        return FrameFailure(frame_index, missing_file_reason(path), UNREADABLE)
    if isinstance(exc, OSError) and exc.errno is not None:
        # The file's or the system's, said by the system (a file of mode 000 had read "unexpected error while
        # reading (PermissionError); please report it", a batch operator's pass); its text names no header value.
        verb = "open" if isinstance(exc, PermissionError) else "read"
        return FrameFailure(frame_index, f"cannot {verb} the file ({exc.strerror or os.strerror(exc.errno)})",
                            UNREADABLE)
    if isinstance(exc, (MemoryError, ImportError)):
        # The machine's, not the file's (an admin's pass: under ulimit -v every row had read "ImportError; please
        # report it", the cause nowhere). An import's message names a library, never a header value.
        cause = (OUT_OF_MEMORY_SAID if isinstance(exc, MemoryError) else
                 f"a library could not be loaded ({' '.join(str(exc).split())[:200]}): out of memory (a ulimit -v or "
                 "a container's limit), or a broken install")
        return FrameFailure(frame_index, cause, PROCESSING_ERROR)
    return FrameFailure(frame_index, f"unexpected error while reading ({type(exc).__name__}); please report it to the "
                                     "ipp-seg developers", PROCESSING_ERROR)


def _other_files_hint(options: BatchOptions) -> str:
    """What the folder holds when ``--glob`` took none of it: a PACS export names its DICOM
    files without a suffix (IMG00001), which '**/*.dcm' never matches."""
    if options.glob == "**/*":
        return ""
    every = list_scans(options.in_dir, "**/*", exclude=options.out_dir, warn=False,  # (said by the first listing)
                       look_inside=False)
    if not every:
        return ""
    bare = sum(1 for path in every if _without_suffix(path))
    return (f"; it holds {len(every)} other file(s)" + (f", {bare} of them without a suffix (an export's DICOM files "
                                                          "often have none: leave --glob out, or match their folder, "
                                                          "such as 'DICOM/**')" if bare else ""))


def _without_suffix(path: Path) -> bool:
    """Whether a file's name has no suffix as ipp-seg reads names (:func:`name_without_suffix`): a
    SOP Instance UID's last number is none (``1.2.826.0.1.3680043.8.498.12345``), as ``IMG00001``."""
    return name_without_suffix(path.name) == path.name


def _say_bare_files_left_out(options: BatchOptions, files: list[Path]) -> None:
    """Warn where ``--glob`` left out DICOM files without a suffix: an export names its images so
    (IMG00001), and '**/*.dcm' had measured the rest of a folder without a word of them. Other
    files it leaves out (a folder not chosen, another kind, the export's DICOMDIR index) are
    taken as meant."""
    if options.glob == "**/*":
        return
    taken = set(files)
    # (What --exclude leaves out is left out as meant.)
    bare = [path for path in list_scans(options.in_dir, "**/*", exclude=options.out_dir, warn=False, look_inside=False,
                                        excluded_globs=options.excluded_globs)
            if path not in taken and _without_suffix(path) and path.name.upper() != "DICOMDIR" and is_dicom_file(path)]
    if bare:
        example = _csv_name(bare[0], options.in_dir)
        log.warning("--glob %r left out %d DICOM file(s) without a suffix, such as %s (an export names its images "
                    "so): leave --glob out, or match their folder (such as 'DICOM/**'), to measure them",
                    options.glob, len(bare), example)


class NoScansError(IppSegError, ValueError):
    """The folder holds no file that the pattern takes."""


class ResumeError(IppSegError, ValueError):
    """A measurements.csv that a run cannot append to without mixing results."""


class ExistingResultsError(IppSegError, ValueError):
    """A measurements.csv with rows, which a run without ``resume`` or ``overwrite`` would lose."""


class OutputsOfAnotherError(ExistingResultsError):
    """Files in an output folder a run writes into that no run of ipp-seg in OUT wrote."""


class LinkedOutputFolderError(IppSegError, ValueError):
    """OUT's ``masks`` or ``overlays`` is a link: the outputs would go where it points."""


class OutputLockedError(FolderInUseError):
    """Another batch run is writing into the same output folder."""


class WorkerDiedError(IppSegError, RuntimeError):
    """A worker process ended without its results (killed by the system)."""


class RayEngineError(IppSegError, RuntimeError):
    """The Ray engine could not reach its cluster, a node failed, or a node measured with another
    model file or version of ipp-seg than the run's."""


class WorkingFolderGoneError(IppSegError, RuntimeError):
    """The current folder was deleted: worker processes cannot start in it."""


class RowsFileReplacedError(IppSegError, RuntimeError):
    """measurements.csv was replaced or removed while the run appended its rows to it."""


_REPLACED_WAY_ON = ("close it in other programs, then run the same command with --resume: every file without a row "
                    "is measured again, and no row is doubled")


def output_lock(out_dir: Path):
    """Hold ``out_dir``'s batch lock for the run (see :func:`~ipp_seg.io.folders.folder_lock`):
    two runs appending to one measurements.csv would duplicate or lose rows."""
    return folder_lock(out_dir, LOCK_NAME, OutputLockedError(
        f"another ipp-seg batch run is writing into {out_dir}: wait for it to end, or give this one another "
        "--out folder"))


def _complete_rows(csv_path: Path, expect: dict[str, str] | None = None,
                   damaged: list[tuple[str, dict]] | None = None,
                   half_written: list[dict] | None = None) -> tuple[list[dict], bool, tuple, bool]:
    """The CSV's complete rows, whether a last row was left half-written by a killed run (no
    newline at its end: read as complete it would mark its file done), its header, and whether
    a row's cells were brought back to the form ipp-seg writes (:func:`_as_written`). A row of
    more or fewer cells than the header has columns (a line cut short by a disk or an editor, a
    comma typed into it) is damaged: left out, and, where ``damaged`` is given, put there with
    its lines ("line 12", "lines 31-61") and its cells as far as they go, for a resume to take
    out and say. ``half_written``, where given, gets the cells of that last line as far as they
    go (a whole row whose line end an editor dropped reads the same), for a resume to keep in
    rows_taken_out.csv rather than drop.

    ``expect`` (column -> value, e.g. the model and method of this run) refuses a CSV whose
    rows were made otherwise, and a header that is not this version's columns: appending to
    either would mix results that a reader of the CSV could not tell apart."""
    if not csv_path.exists():
        return [], False, (), False
    # utf-8-sig: a CSV saved again by a spreadsheet may have gained a byte-order mark.
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        # Excel's "CSV (Comma delimited)" writes Windows-1252, "Unicode Text" UTF-16: a traceback had ended the resume.
        raise ResumeError(f"{csv_path} is not UTF-8 text, as ipp-seg writes it: saved again by a spreadsheet in "
                          "another encoding (Windows-1252, UTF-16)? Save it as \"CSV UTF-8\" to resume it, or give "
                          "another --out folder") from None
    complete = text[:text.rfind("\n") + 1]
    if not complete:
        return [], bool(text), (), False
    reader = csv.DictReader(io.StringIO(complete, newline=""))
    header = tuple(reader.fieldnames or ())
    if not _is_measurements_header(header):
        if len(header) == 1 and _is_measurements_header(tuple(header[0].split(";"))):
            # Its rows are ipp-seg's: --overwrite, the advice for a stranger's file, would lose them.
            raise ResumeError(f"{csv_path} is a measurements.csv saved again with ';' between its values, as a "
                              "spreadsheet set to a German or French locale saves it: save it with commas between "
                              "the values and points in the numbers to resume it, or give another --out folder")
        added = [column for column in header if column not in CSV_COLUMNS]
        if set(_FIRST_COLUMNS) <= set(header) and added:
            # Its rows are ipp-seg's, with columns of one's own beside them (a site, a note): --overwrite, the advice
            # for a stranger's file, would lose every row (a coordinator's pass).
            raise ResumeError(f"{csv_path} is a measurements.csv with columns of its own added ("
                              f"{', '.join(repr(column) for column in added[:5])}"
                              f"{', ...' if len(added) > 5 else ''}): ipp-seg resumes only the columns it writes; "
                              "keep the annotated copy under another name and remove those columns from this one "
                              "to resume it, or give another --out folder (--overwrite would replace its rows)")
        raise ResumeError(f"{csv_path} is not a measurements.csv of ipp-seg (other columns): give another --out "
                          "folder, or --overwrite to replace it")
    repeated = sorted({column for column in header if header.count(column) > 1})
    fragment = text[len(complete):]
    if half_written is not None and fragment.strip():
        given = dict(zip(header, next(csv.reader([fragment]), [])))  # (by the header's names, as far as it goes)
        half = {column: given.get(column) or "" for column in CSV_COLUMNS}
        half["file"] = name_of_spreadsheet_cell(half["file"])
        half_written.append(half)
    if repeated:
        # A column renamed into another's name: DictReader keeps the last, and the HSD had been read as the AoP.
        raise ResumeError(f"{csv_path} names the column {', '.join(repeated)} twice in its header (a column renamed "
                          "by hand?): give each column its name again to resume it, or give another --out folder")
    # A CSV of an earlier version lacks later columns: its rows read as empty there (not compared).
    read = []
    last = reader.line_num  # (a quote left open takes the lines after it into its row: their range is said)
    for row in reader:
        cells = {column: row.get(column) or "" for column in CSV_COLUMNS}
        first, last = last + 1, reader.line_num
        if None in row or None in row.values():  # (DictReader's marks of cells beyond the header, or short of it)
            if damaged is not None:
                damaged.append((f"line {first}" if first == last else f"lines {first}-{last}", cells))
            continue
        read.append(cells)
    rows = [_as_written(row) for row in read]
    reformatted = rows != read  # (compared before the cells' names are read: a name's ' is no reformatting)
    for row in rows:
        row["file"] = name_of_spreadsheet_cell(row["file"])
        if not row["file"]:  # a blank line a spreadsheet left: no setting to compare (prepare_resume drops it)
            continue
        if expect and "model" in expect and not row["model"]:
            # measure --csv writes these columns too, with no model: masks measured, not scans segmented.
            raise ResumeError(f"{csv_path} holds rows that name no model ({_shown(row['file'])}): rows of ipp-seg "
                              "measure, from masks, not of a batch run; give another --out folder, or --overwrite to "
                              "replace them")
        for column, value in (expect or {}).items():
            cell = row[column] if column in header else None
            # An empty cell is a column that the version writing the row did not have yet (kept
            # empty when a resume brought it to this version's columns): unknown, not compared,
            # except where empty is itself a setting (no --spacing-mm).
            if cell is not None and cell != value and (cell or column in _EMPTY_IS_A_SETTING):
                if column == "model_sha256":  # the same options, other weights: say which ways that happens
                    raise ResumeError(
                        f"{csv_path} holds rows made by another model file (sha256 {cell[:12]}..., this run's "
                        f"{value[:12]}...) of the same name {row['model']!r}: the model was retrained or shipped "
                        "again since, another file was given to --model, or --backend runs the model's other file "
                        "(.onnx or .pt); resume with the file that made the rows, or write to a new --out folder")
                raise ResumeError(f"{csv_path} holds rows made with {column} {_shown(row[column])}, this run uses "
                                  f"{_shown(value)}: resume with the same options, or write to a new --out folder")
    return rows, complete != text, header, reformatted


_WHOLE_NUMBER_SAVED_AS_FLOAT = re.compile(r"([0-9]+)\.0+")
# A UTC time a program saved in its own form (2026-12-07 04:08:42, or +00:00 for the Z): ISO 8601 with its Z
# again, to the precision kept (a spreadsheet that dropped the seconds gets none back).
_UTC_TIME_SAVED_AGAIN = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]([0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)"
                                   r"(?:Z|\+00:?00)?")


def _as_written(row: dict) -> dict:
    """A row in the form ipp-seg writes it, where a program that saved the CSV again changed its
    look, not its value: a whole number column pandas wrote as float where it has an empty cell
    (frame ``0.0``, file_bytes ``12345.0``), ``True``/``FALSE`` for ``true``/``false``. A resumed CSV
    then reads alike in every row, those of the earlier run included; so does a UTC time saved
    without its ``Z`` (``2026-12-07 04:08:42``)."""
    fixed = dict(row)
    # A name an earlier version wrote raw (a tab, a newline, a right-to-left override): in the escaped form rows now
    # have; the outputs' paths alike (a QA pass: a 0.2.14 row's mask_file had kept its raw override).
    fixed["file"] = spreadsheet_cell(printable_path(path_of_printable(name_of_spreadsheet_cell(fixed["file"]))))
    for column in ("mask_file", "overlay_file"):
        if fixed[column]:
            fixed[column] = printable_path(path_of_printable(fixed[column]))
    for column in ("frame", "file_bytes", "n_frames"):
        whole = _WHOLE_NUMBER_SAVED_AS_FLOAT.fullmatch(fixed[column])
        if whole:
            fixed[column] = whole.group(1)
    for column in _SPREADSHEET_CASED:
        fixed[column] = fixed[column].lower()
    for column in ("measured_at", "file_modified"):
        saved = _UTC_TIME_SAVED_AGAIN.fullmatch(fixed[column])
        if saved:
            fixed[column] = f"{saved.group(1)}T{saved.group(2)}Z"
    # A row of a version before these columns: from its reasons.
    reasons = tuple(filter(None, fixed["reasons"].split(";")))
    if fixed["aop_deg"] and not fixed["aop_doubtful"]:
        fixed["aop_doubtful"] = _doubt_cell(angle_in_doubt(reasons))
    if fixed["hsd_px"] and not fixed["hsd_doubtful"]:
        fixed["hsd_doubtful"] = _doubt_cell(distance_in_doubt(reasons))
    return fixed


_EMPTY_IS_A_SETTING = frozenset({"spacing_given_mm"})
_SPREADSHEET_CASED = frozenset({"tta", "aop_doubtful", "hsd_doubtful"})


def _shown(cell: str) -> str:
    """A CSV cell as a resume refusal quotes it; an empty one is an option not given."""
    return repr(cell) if cell else "none (not given)"


def _done_of(rows: list[dict]) -> dict[str, set]:
    done: dict[str, set] = {}
    for row in rows:
        frame = row.get("frame", "")
        done.setdefault(row["file"], set()).add(int(frame) if frame.isdigit() else "")
    return done


def read_done(csv_path: Path) -> dict[str, set]:
    """(file -> set of frame indices, or {""} for a file-level failure) already in the CSV."""
    return _done_of(_complete_rows(csv_path)[0])


def prepare_resume(csv_path: Path, expect: dict[str, str] | None = None,
                   stamps: dict[str, tuple[str, str]] | None = None, in_dir: Path | None = None,
                   measured_in: str | None = None, measured_again: list[dict] | None = None,
                   deferred: list[Callable[[], bool]] | None = None, verify: bool = False,
                   kept_rows: list[dict] | None = None, frames: str | None = None,
                   readable: Callable[[str], bool] | None = None,
                   remeasure_other_versions: bool = False,
                   verified: dict[str, bool] | None = None) -> dict[str, set]:
    """What a resumed run may skip: the CSV's rows, less a row a killed run left half-written,
    the rows of files or frames that could not be read or processed (a decoder may have been
    installed since, a file copied in full), and, given ``stamps`` (relative path -> the
    :func:`file_stamp` of each file now in the folder), the rows of files changed since they
    were measured. Those rows are taken out of the CSV so that their new rows do not join them;
    the file is rewritten (atomically) only when something is taken out, or to bring an earlier
    version's CSV to this version's columns. Rows of files that this run does not take (another
    ``--glob``) are kept as they are; rows of files no longer in ``in_dir`` are kept, and
    counted in a warning.

    ``measured_in``: the folder the run last measured (its record's), where known. Another
    ``in_dir`` is taken for that folder moved or copied only where its measured files are in it
    as they were measured (:func:`_check_same_files`); otherwise :class:`ResumeError` (a run
    resumed on another patient's folder of the same file names had replaced every row, the
    record keeping no trace). ``measured_again``, where given, gets the rows taken out because
    their files are measured again (changed since, or failing before). ``deferred``, where given,
    gets the rewrite of the CSV (and of rows_taken_out.csv) to call instead of making it, so that a
    caller that may still refuse the run leaves them as they were. ``verify``: every file whose
    size and time are unchanged is read again too, and measured again where its bytes are not
    its rows' ``file_sha256`` (a file replaced under the same size with its time set back, which
    the size and time alone keep; an audit's check before a study is closed). ``kept_rows``, where
    given, gets the rows the resume keeps. ``frames``, the run's ``--frames``: a cine of which the
    run measures a frame that has no row yet is measured again whole (the rows of its frames
    asked for taken out), so that each frame's angle is judged against those around it
    (``aop_unsteady``) as in a run of the whole selection. ``readable``, where given (a file's
    name -> whether its header can be read now), takes out the rows of a file that cannot be
    read now (``unreadable_now``: this version refuses it, or its bytes changed under the same
    size and time), so that its new row of why does not join a measurement; asked of the files
    whose rows do not give their frame count (an earlier version's), whose headers a resume
    reads to know whether frames are left.
    ``remeasure_other_versions``: the files of rows another version of ipp-seg wrote (an upgrade's
    rows, which read as that version read them) are measured again whole (``other_version``).
    ``verified``, where given, gets the files ``verify`` read again: name -> whether their bytes are
    those their rows measured."""
    damaged: list[tuple[str, dict]] = []
    half_written: list[dict] = []
    read, partial, header, reformatted = _complete_rows(csv_path, expect, damaged, half_written)
    if damaged:
        # (Read as rows, a line cut in the middle had its model's sha256 cut too, and the resume was refused as
        # "rows made by another model file" quoting two equal checksums; a batch operator's pass.)
        log.warning("%s: %d damaged row(s), of more or fewer cells than its columns (a line cut short or edited), "
                    "taken out to %s; their files are measured again: %s", csv_path, len(damaged), TAKEN_OUT_NAME,
                    "; ".join(lines + (f" ({_shown(cells['file'])})" if cells["file"] else "")
                              for lines, cells in damaged[:5]) + ("; ..." if len(damaged) > 5 else ""))
    # A file's bytes are read at most once, whichever check asks first (a folder copied without its
    # times has each file compared by its sha256: by the folder check, then by the changed-file one).
    sha_of = None if in_dir is None else functools.cache(lambda name: file_sha256(in_dir / path_of_printable(name)))
    if in_dir is not None and measured_in and os.path.abspath(in_dir) != measured_in \
            and os.path.realpath(in_dir) != os.path.realpath(measured_in):  # (the same folder through a link)
        _check_same_files(csv_path, read, in_dir, measured_in, sha_of)
    upgraded = bool(header) and header != CSV_COLUMNS
    # Left by editing the CSV in a spreadsheet: a row without a file name, or a row copied
    # twice, which a mean over the CSV would count twice. The first of each frame's rows is kept.
    rows, seen = [], set()
    taken_out: list[tuple[dict, str]] = []  # (row, why): kept in TAKEN_OUT_NAME, not dropped without trace
    for row in read:
        if row["file"] and (row["file"], row["frame"]) not in seen:
            seen.add((row["file"], row["frame"]))
            rows.append(row)
        elif row["file"]:
            taken_out.append((row, "repeated_row"))
    if len(rows) < len(read):
        blank = sum(1 for row in read if not row["file"])
        first = {(row["file"], row["frame"]): row for row in rows}
        # A copy that differs from the row kept (a value edited in one of them) is told apart from a plain copy.
        differ = sum(1 for row, _ in taken_out if _values(row) != _values(first[row["file"], row["frame"]]))
        repeated = ", ".join(sorted({row["file"] for row, _ in taken_out})[:3])
        counted = " and ".join(filter(None, (blank and f"{blank} row(s) without a file name",
                                             taken_out and f"{len(taken_out)} repeated row(s) of a file and frame")))
        differing = f", and {differ} of those taken out hold other values than it" if differ else ""
        log.warning("%s: %s taken out%s%s", csv_path, counted,
                    f" (the first row of each frame is kept{differing}; those taken out are in {TAKEN_OUT_NAME})"
                    if taken_out else "", f": {repeated}" if repeated else "")

    taken_out += [(cells, "damaged_row") for _, cells in damaged]
    # (A last row without its line end, from a killed run or an editor that drops the last newline, had vanished
    # without trace, its file measured again only where it was still in the folder.)
    taken_out += [(cells, "half_written_row") for cells in half_written]

    def retried(row: dict) -> bool:
        taken = stamps is None or row["file"] in stamps  # a file this run measures
        # (no_such_frame too: the resumed run's --frames may take a frame the scan has.)
        return taken and row["reasons"] in (UNREADABLE, PROCESSING_ERROR, NO_SUCH_FRAME)

    kept = [row for row in rows if not retried(row)]
    taken_out += [(row, "read_again") for row in rows if retried(row)]
    renamed = _names_in_the_folders_form(csv_path, kept, stamps, sha_of) if stamps is not None else 0
    if stamps is not None:
        # Rows of an earlier version have no stamp: nothing to compare, nothing re-measured.
        changed = {row["file"] for row in kept if row["file"] in stamps and row["file_bytes"]
                   and (row["file_bytes"], row["file_modified"]) != stamps[row["file"]]
                   and not _same_bytes_touched(row, stamps[row["file"]], sha_of)
                   # A file that held no image has no sha256 to compare: changed where its size is.
                   and not (row["status"] == "failed" and not row["file_sha256"]
                            and row["file_bytes"] == stamps[row["file"]][0])}
        if verify and sha_of is not None:
            compared = {row["file"] for row in kept if row["file"] in stamps and row["file"] not in changed
                        and row["file_sha256"]}
            differ = {row["file"] for row in kept if row["file"] in compared
                      and sha_of(row["file"]) != row["file_sha256"]}
            changed |= differ
            if verified is not None:
                verified.update((name, name not in differ) for name in compared)
            # (A coordinator's pass: an audit run with a narrower --glob had reported clean over rows of changed
            # files it never read.)
            unread = {row["file"] for row in kept if row["file"] not in stamps
                      and os.path.lexists(in_dir / path_of_printable(row["file"]))}
            if unread:
                log.warning("%s: --verify read again only the files this run takes (its --glob, --exclude): %d "
                            "file(s) of the CSV's rows outside them were not, such as %s; --resume --verify without "
                            "them checks every row", csv_path, len(unread), _examples(unread))
        if changed:
            log.warning("%s: %d file(s) changed since they were measured; measured again: %s (their earlier rows are "
                        "kept in %s)", csv_path, len(changed), _examples(changed), TAKEN_OUT_NAME)
            taken_out += [(row, "file_changed") for row in kept if row["file"] in changed]
            kept = [row for row in kept if row["file"] not in changed]
        # (An upgrade's pass: a file 0.2.9 measured, which a later version refuses (over 100 ultrasound regions),
        # had kept its ok row beside the failed one each resume added.) Asked only of files whose rows do not say
        # how many frames they hold, whose headers the resume reads anyway to know whether a frame is left (a scale
        # pass: reading every file at each resume had taken 133 s at 30,000 rows). A row of a frame: the file was
        # read then (a file that held no image has its one row without a frame).
        counted = _frame_counts_of_rows(kept)
        refused = {row["file"] for row in kept if row["file"] in stamps and row["frame"] != ""
                   and row["file"] not in counted and not readable(row["file"])} if readable is not None else set()
        if refused:
            log.warning("%s: %d file(s) measured before cannot be read now (this version refuses them, or they "
                        "changed under the same size and time); their rows are taken out (kept in %s) and each gets "
                        "a row saying why: %s", csv_path, len(refused), TAKEN_OUT_NAME, _examples(refused))
            taken_out += [(row, "unreadable_now") for row in kept if row["file"] in refused]
            kept = [row for row in kept if row["file"] not in refused]
        if remeasure_other_versions:
            # A file's rows all of one version: a cine measured in part by each is measured again whole.
            older = {row["file"] for row in kept if row["file"] in stamps
                     and row.get("ipp_seg_version") != software_version()}
            if older:
                log.warning("%s: %d file(s) measured by another version of ipp-seg are measured again "
                            "(--remeasure-other-versions; their earlier rows are kept in %s): %s", csv_path,
                            len(older), TAKEN_OUT_NAME, _examples(older))
                taken_out += [(row, "other_version") for row in kept if row["file"] in older]
                kept = [row for row in kept if row["file"] not in older]
    if frames is not None:
        whole = _cine_frames_measured_again(kept, rows, frames, in_dir, stamps)
        if whole:
            # (A cine study's pass: frames picked first and the loop measured after had kept the picked frames
            # ok where a run of the whole loop flagged them.)
            cines = {file for file, _ in whole}
            log.warning("%s: %d cine(s) get frames measured for the first time; their %d frame(s) measured before "
                        "are measured again with them, so that each frame's angle is checked against those around "
                        "it (aop_unsteady; the earlier rows are kept in %s): %s", csv_path, len(cines), len(whole),
                        TAKEN_OUT_NAME, _examples(cines))
            taken_out += [(row, "cine_measured_whole") for row in kept if (row["file"], row["frame"]) in whole]
            kept = [row for row in kept if (row["file"], row["frame"]) not in whole]
    if in_dir is not None:
        gone = {row["file"] for row in kept if not os.path.lexists(in_dir / path_of_printable(row["file"]))}
        if gone:
            log.warning("%s holds rows of %d file(s) no longer in the folder (kept): %s", csv_path, len(gone),
                        _examples(gone))
    # Rows of another version keep what that version read (reasons given since, such as frame_dark,
    # absent): said, as a QA pass found them kept beside this version's rows without a word.
    by_version = Counter(row.get("ipp_seg_version") or "an unknown version" for row in kept
                         if row.get("ipp_seg_version") != software_version())
    if by_version:
        # (An upgrade's pass: --overwrite, advised here before, also drops the rows of files gone from the folder
        # and rows_taken_out.csv.)
        log.warning("%s: %d of the rows kept were measured by another version of ipp-seg (%s), and read as it read "
                    "them (CHANGELOG.md lists what changed); %s", csv_path,
                    sum(by_version.values()), ", ".join(f"{n} by {v}" for v, n in sorted(by_version.items())),
                    "their files are not among those this run takes" if remeasure_other_versions else
                    "--resume --remeasure-other-versions measures their files again, keeping their rows in "
                    f"{TAKEN_OUT_NAME}")
    if upgraded and rows:
        new = [column for column in CSV_COLUMNS if column not in header]
        derived = [column for column in ("aop_doubtful", "hsd_doubtful") if column in new]
        log.warning("%s: written by an earlier version of ipp-seg; its rows are kept under this version's columns "
                    "(%s)", csv_path, f"{', '.join(new)} new, empty in them" + (
                        f", but {' and '.join(derived)}, read from the rows' reasons" if derived else "")
                    if new else "in this version's order")
    if reformatted and rows:  # (the CSV may be rewritten for it alone: said, as nothing else would say it)
        log.warning("%s: rows in another form than ipp-seg writes (saved again by a program: TRUE for true, 0.0 for 0, "
                    "a time without its Z; or a name an earlier version wrote raw) are written back in its form; "
                    "their values are kept", csv_path)

    def rewrite() -> bool:  # (whether the CSV was rewritten)
        if not (partial or damaged or len(kept) < len(read) or upgraded or reformatted or renamed):
            return False
        # The rows taken out are kept first, and taken back where the CSV cannot be rewritten
        # (a full disk): a resume stops with a row in one of the two files, never in none or both.
        side = csv_path.with_name(TAKEN_OUT_NAME)
        size_before = side.stat().st_size if taken_out and side.exists() else None
        try:
            if taken_out:
                _keep_taken_out(side, taken_out)
            _replace_rows(csv_path, kept, ".resume")
        except BaseException:
            if taken_out:
                with suppress(OSError):
                    if size_before is None:
                        side.unlink()
                    else:
                        os.truncate(side, size_before)
            raise
        # (Rows of changed files were named above: only the others are said here.)
        unsaid = sum(why == "read_again" for _, why in taken_out)
        if unsaid:
            retried_files = {row["file"] for row in rows if retried(row)}
            log.warning("%s: %d row(s) of unreadable or unprocessed files, or without the frames asked for, "
                        "taken out; those files are measured again (read again: %s)", csv_path, unsaid,
                        _examples(retried_files))
        if partial:
            file = half_written[0]["file"] if half_written else ""
            log.warning("%s: a half-written last row (a run stopped while writing it, or its line end lost) taken "
                        "out to %s%s", csv_path, TAKEN_OUT_NAME,
                        "" if not file else f"; its file is measured again ({_shown(file)})"
                        if stamps is None or file in stamps else
                        f"; its file ({_shown(file)}) is not among those this run measures")
        return True

    if deferred is not None:
        deferred.append(rewrite)
    else:
        rewrite()
    if measured_again is not None:
        measured_again.extend(row for row, why in taken_out if why in ("file_changed", "read_again",
                                                                        "cine_measured_whole", "unreadable_now",
                                                                        "other_version"))
    if kept_rows is not None:
        kept_rows.extend(kept)
    return _done_of(kept)


def _same_bytes_touched(row: dict, stamp: tuple[str, str], sha_of: Callable[[str], str] | None) -> bool:
    """Whether a file whose modification time moved since ``row`` was measured holds the bytes it
    measured (its size and sha256 alike, ``sha_of`` its name's): a folder copied without its
    files' times, or a file touched, is not measured again."""
    return (sha_of is not None and bool(row["file_sha256"]) and stamp[0] == row["file_bytes"]
            and sha_of(row["file"]) == row["file_sha256"])


def _check_same_files(csv_path: Path, rows: list[dict], in_dir: Path, measured_in: str,
                      sha_of: Callable[[str], str]) -> None:
    """Raise :class:`ResumeError` unless ``in_dir`` is the run's folder moved or copied: the files
    the rows measured (with a recorded size) are in it with that size and the same modification
    time or content, every one while the folder measured is still there (resume there instead),
    most of them where it is gone (a few files removed or changed since are then what they are
    in place: rows kept, or the files measured again). Another study's folder of the same file
    names, or the folder above the one measured, holds none of them so. Files whose rows failed
    are looked at only where no row was measured: a damaged file or a note beside the scans
    says nothing of which study a folder is."""
    measured = [row for row in rows if row["status"] != "failed"] or rows
    same: list[str] = []
    differ: list[str] = []
    looked_at: set[str] = set()  # (a cine's rows: its file looked at once)
    for row in measured:
        if not row["file"] or not row["file_bytes"] or row["file"] in looked_at \
                or (row["status"] == "failed" and not row["file_sha256"]):
            continue  # (a blank line; a row of an earlier version, or of a file that could not be read)
        looked_at.add(row["file"])
        stamp = file_stamp(in_dir / path_of_printable(row["file"]))
        unchanged = stamp == (row["file_bytes"], row["file_modified"]) or _same_bytes_touched(row, stamp, sha_of)
        (same if unchanged else differ).append(row["file"])
    still_there = os.path.isdir(measured_in)
    if differ and (still_there or len(same) <= len(differ)):
        there = (f"Resume with IN_DIR {printable_path(measured_in)}" if still_there else
                 f"{printable_path(measured_in)} is no longer there; if this is that folder, its files are not those "
                 "measured (a file copied without its times is compared by its file_sha256, which rows of ipp-seg "
                 "before 0.2.5 lack)")
        raise ResumeError(
            f"{csv_path} holds the rows of a run on {printable_path(measured_in)}, not {printable_path(str(in_dir))}: "
            f"{len(differ)} of the {len(same) + len(differ)} files it measured are not in this folder as they were "
            f"measured ({_examples(differ)}). {there}; to measure this folder, give another --out folder")
    log.warning("%s: the run measured %s; its files are in %s (the folder moved or was copied%s): going on there",
                csv_path, printable_path(measured_in), printable_path(str(in_dir)),
                f"; {len(differ)} of them changed or removed since" if differ else "")


def _first_named(names: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, in their order, and how many more: "a, b, c and 4 more"."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _examples(names: Iterable[str], shown: int = 3) -> str:
    """A few of ``names``, sorted, for a log line: "a.png, b.dcm, c.png, ..."."""
    names = sorted(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


# Worker processes keep one FileProcessor each (the model is loaded once per process).
_WORKER: FileProcessor | None = None
_RUN_STOPPED = None  # in a worker: the run's multiprocessing Event, set when it stops early
_FRAMES_MEASURED = None  # in a worker: the run's shared count of frames measured (for its progress), or None
_WORKER_LOAD_ERROR: Exception | None = None  # in a worker: why its model could not be loaded, raised with each group
_GROUPS_RUNNING = None  # in a worker: the run's shared flags, one per group, set while a worker measures it


def run_log_level() -> int | None:
    """The level this process logs at when it logs somewhere (the command line configures
    logging), else None: a worker process it starts is unconfigured, and should log likewise."""
    root = logging.getLogger()
    return root.getEffectiveLevel() if root.handlers else None


def configure_worker_logging(log_level: int | None) -> None:
    """In a worker process: log as the run's own process does (see :func:`run_log_level`), and
    keep pydicom and highdicom quiet as the command line does (:func:`ipp_seg.quiet_dicom_libraries`): a worker
    process does not inherit the filters of a spawning parent."""
    if log_level is not None:
        configure_logging(log_level)
        quiet_dicom_libraries()
    # What the models folder holds (a file there that is no model card) the run has said once.
    logging.getLogger(_REGISTRY_LOGGER).setLevel(logging.ERROR)


_REGISTRY_LOGGER = "ipp_seg.inference.registry"


@contextmanager
def _models_folder_said():
    """While a run that has read the models folder once reads it again: its warnings (a file
    there that is no model card) are not said twice."""
    registry = logging.getLogger(_REGISTRY_LOGGER)
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registry.setLevel(level)


def _exit_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """End this worker once the run that started it is gone: killed outright (kill -9, the
    system's out-of-memory killer), the run cannot stop its workers, which would sleep on for
    ever, each holding a model's memory (~470 MiB)."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid == parent_pid:
        # Its sentinel is ready once the run's process is gone, on every platform: on Windows a
        # process's parent ID never changes, so watching that would never end a worker.
        multiprocessing.connection.wait([parent.sentinel])
    else:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
    os._exit(1)


def _worker_init(options: BatchOptions, log_level: int | None = None, run_pid: int | None = None,
                 run_stopped=None, frames_measured=None, groups_running=None) -> None:
    # Ctrl-C in a terminal reaches every process of the group: the main process ends the run;
    # a worker's traceback would only bury its message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if run_pid is not None:  # the run's, as it gave it: a run killed while this worker started is gone already
        threading.Thread(target=_exit_with_parent, args=(run_pid,), name="ipp-seg-parent-watch", daemon=True).start()
    configure_worker_logging(log_level)
    global _WORKER, _RUN_STOPPED, _FRAMES_MEASURED, _WORKER_LOAD_ERROR, _GROUPS_RUNNING
    _GROUPS_RUNNING = groups_running
    try:
        _WORKER = FileProcessor(options)
    except Exception as exc:  # noqa: BLE001 - any (a MemoryError too): said by the run, not as a worker killed
        # Raised from the initializer it broke the pool: tracebacks, then "a worker process died (killed by the
        # system)"; raised with the group instead, the run says why, as with one worker (a scale-out review).
        _WORKER_LOAD_ERROR = exc
    _RUN_STOPPED = run_stopped
    _FRAMES_MEASURED = frames_measured


def _worker_run(group: list[tuple[Path, frozenset]], index: int | None = None) -> list[FileOutcome]:
    # A run stopped early sets the event: the groups already handed out then end at once, not
    # after writing masks and overlays that no row would name (seconds here; minutes of cines).
    if _WORKER_LOAD_ERROR is not None:
        raise _WORKER_LOAD_ERROR
    stopped = _RUN_STOPPED.is_set if _RUN_STOPPED is not None else None
    if stopped is not None and stopped():
        return []
    # Flagged while measured: a worker that dies here is named by its group (the run had guessed the groups after
    # the last one read, which other workers may have finished long before).
    flagged = _GROUPS_RUNNING is not None and index is not None
    if flagged:
        _GROUPS_RUNNING[index] = 1
    try:
        return _WORKER.process_files(group, stopped,
                                     on_frame=_frame_measured if _FRAMES_MEASURED is not None else None)
    finally:
        if flagged:  # (through, or raised: either way no longer being measured)
            _GROUPS_RUNNING[index] = 0


def _frame_measured() -> None:
    """Count a frame this worker measured where the run reads it while the worker's group is not
    through (a long cine's progress)."""
    with _FRAMES_MEASURED.get_lock():
        _FRAMES_MEASURED.value += 1


def run_batch(options: BatchOptions,
              on_progress: Callable[[FileOutcome], None] | None = None,
              on_start: Callable[[int], None] | None = None,
              on_frame: Callable[[], None] | None = None) -> BatchSummary:
    """Process every scan under ``options.in_dir``; write ``out_dir/measurements.csv``. A folder
    given as "" is refused (ValueError): it would read as the current folder. ``on_progress`` is
    called with each file's outcome once its rows are written; ``on_frame`` as each frame is
    measured, before its file's outcome (a long cine's progress; with several workers, as the
    run learns of them, every :data:`FRAME_POLL_S`, frames of files after the next outcome's
    included)."""
    started = time.perf_counter()
    options = replace(options, in_dir=given_path(options.in_dir, "scans folder"),
                      out_dir=given_path(options.out_dir, "output folder"))
    if not options.in_dir.is_dir():
        raise NotADirectoryError(not_a_folder(options.in_dir))
    if options.engine not in ENGINES:
        raise ValueError(f"unknown engine {options.engine!r}: use {' or '.join(ENGINES)}")
    if options.resume and options.overwrite:  # (it had resumed, silently)
        raise ValueError("resume goes on with the run in the output folder, overwrite replaces it: give one of them")
    if options.dicom_seg or options.dicom_sr:
        from ..io.dicom_results import require_highdicom

        require_highdicom()  # (an ImportError saying what to install, before any frame)
    # An unknown model, or a model file that cannot be read, fails before a previous
    # measurements.csv is replaced or an output folder is made.
    spec = resolve_model(options.inference.model)
    weights_sha256 = model_sha256(spec, options.inference.backend)
    # Made as written without its "..": mkdir would make NEW of NEW/../X on the way. Unless a
    # link comes before the "..", which the system follows first: then as the system reads it.
    lexical = Path(os.path.normpath(os.path.abspath(options.out_dir)))
    if os.path.realpath(options.out_dir) != os.path.realpath(lexical):
        lexical = options.out_dir
    created: list[Path] = []  # (the folders this run made, not another run started beside it)
    try:
        try:
            make_folders(lexical, created)
        except OSError as exc:  # a file, or a link to nowhere, in the way; a name too long
            in_the_way = " (a file, or a link to nowhere, is in the way)" if isinstance(
                exc, (FileExistsError, NotADirectoryError)) else ""
            raise NotADirectoryError(f"cannot make the output folder {options.out_dir}: "
                                     f"{exc.strerror or exc}{in_the_way}") from None
        with output_lock(options.out_dir):
            return _run_locked(options, spec, weights_sha256, started, on_progress, on_start, on_frame)
    except OutputLockedError:
        raise  # the lock, record and folder are the run's that holds it, even in a folder this one made
    except BaseException:
        # A run refused before its first row (no scans matched, say) leaves no empty output
        # folder behind, nor its lock file.
        remove_made_folders(created, frozenset({LOCK_NAME, RUN_RECORD_NAME}))
        raise


def _earlier_rows(csv_path: Path) -> dict[str, list[str]]:
    """The files (as the CSV's ``file`` cells name them) and frames of a CSV's complete rows: what
    a run that replaces it (``--overwrite``) may leave outputs of. Empty without a CSV."""
    return _row_frames(_readable_rows(csv_path))


def _readable_rows(csv_path: Path) -> list[dict]:
    """A CSV's complete rows (:func:`_complete_rows`, their names unguarded already); none where
    there is no CSV or it cannot be read as one (no names to go by)."""
    try:
        return _complete_rows(csv_path)[0]
    except (ResumeError, OSError, csv.Error, UnicodeDecodeError):
        return []


def _stems_of_rows(named: str, frames: Iterable[int]) -> set[str]:
    """The output stems a file (its output name ``named``) may have given its rows' ``frames``:
    a frame's outputs are named with _f0003 where its file has several frames, without where it
    has one (which the rows do not say): both."""
    return {output_stem(named, 0, 1)} | {output_stem(named, frame, 2) for frame in frames}


def _files_no_run_wrote(options: BatchOptions, rows: dict[str, list[str]], record: dict,
                        todo: Iterable[Path] | None = None) -> list[Path]:
    """The files in the output folders this run writes into (of the kinds it asks for, and, given
    ``todo``, at the paths of the files it measures) that no run of ipp-seg in OUT wrote: written
    before a run of ipp-seg first wrote into OUT (:func:`_first_used`: what a run killed outright
    leaves of files it had no row for yet, and what an earlier run replaced by ``--overwrite``
    left, are ipp-seg's); where the ``record`` does not know that first run (a record of before
    0.2.8, or one made beside rows it did not see begin), older than its time and under no name a
    row of the CSV (``rows``, :func:`_earlier_rows`) gives an output, nor among the earlier run's
    outputs the record names. An expert's masks in OUT/masks (``batch proj/images --out proj``
    beside ``proj/masks``, the layout ``train`` reads) had been written over without a word, also
    by an ``--overwrite --save-masks`` of a run that had written its CSV alone (its rows' names had
    vouched for them). Hidden files, and folders that are links (refused apart), are passed. Sorted."""
    folders = [options.out_dir / folder for folder, wanted in _folders_asked(options).items()
               if wanted and (options.out_dir / folder).is_dir() and not (options.out_dir / folder).is_symlink()]
    since = _first_used_time(record)
    older = []  # (files the run wrote since it began are its own: most of a large run's, not looked up below)
    for folder in folders:
        for here, _, names in walk_folders(folder, warn_links=False):
            for name in names:
                with suppress(OSError):
                    if since is None or (here / name).lstat().st_mtime < since:
                        older.append(here / name)
    if older and todo is not None:  # only where this run writes: its files' stems, a cine's frames among them
        renames = dict(options.output_renames)
        written = {output_stem(renames.get(rel, rel), 0, 1) for rel in
                   (Path(path).relative_to(options.in_dir).as_posix() for path in todo)}
        older = [path for path in older if written & _stems_of_output(options.out_dir, path)]
    if not older or _first_used_known(record):  # (no run of ipp-seg wrote into OUT before the first)
        return sorted(older)
    # The names the rows give outputs (no file looked at), and those the record names.
    ours = {options.out_dir / rel for rel in (record.get("earlier_outputs") or {}).get("paths", ())}
    ours.update(path for _, path in _row_output_paths(options.out_dir, rows))
    return sorted(path for path in older if path not in ours)


def _row_output_paths(out_dir: Path, rows: dict[str, list[str]],
                      among: Iterable[str] = ()) -> Iterator[tuple[str, Path]]:
    """(kind, path) of every output the names of ``rows`` (file -> frames, :func:`_earlier_rows`)
    give in ``out_dir``, no file looked at: under each file's name now and then (a file of the same
    stem added since renames both: scan.png had stayed, unnamed, beside scan_png.png and
    scan_jpg.png), a cine's frames with and without ``_f0003``. Names that are not relative to
    IN_DIR (a ``measure --csv`` file's) are passed. ``among``: more file names the names are told
    apart among (every file of the run), besides those of ``rows``."""
    for _, stems in _row_output_stems(rows, among):
        yield from _paths_of_stems(out_dir, stems)


def _paths_of_stems(out_dir: Path, stems: set[str]) -> Iterator[tuple[str, Path]]:
    """(kind, path) of every output the output ``stems`` give, kind by kind, each kind's in order."""
    for kind in _OUTPUT_PLACES:
        for stem in sorted(stems):
            yield kind, output_path(out_dir, kind, stem)


def _row_output_stems(rows: dict[str, list[str]], among: Iterable[str] = (),
                      renames: dict[str, str] | None = None) -> Iterator[tuple[str, set[str]]]:
    """(file, the output stems its name gives its frames) for each file of ``rows``, as
    :func:`_row_output_paths` takes them (the paths follow from the stems one to one).
    ``renames``: :func:`suffix_disambiguated` of the rows' and ``among``'s names, where the caller
    has it (asking for several sets of rows among the same names)."""
    if renames is None:
        renames = suffix_disambiguated({path_of_printable(name) for name in (*rows, *among)})
    for name, frames in rows.items():
        rel = path_of_printable(name)
        if not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
            continue
        numbers = [int(f) for f in frames if f.isascii() and f.isdigit()]
        yield name, _stems_of_rows(renames.get(rel, rel), numbers) | _stems_of_rows(rel, numbers)


def _stems_of_output(out_dir: Path, path: Path) -> set[str]:
    """The :func:`output_stem` a file's frame 0 has whose output ``path`` may be (its output
    folder and ending off, and a cine frame's ``_f0003``): ``masks/a/scan_f0003.png`` ->
    ``a/scan_f0003`` (a still named so) and ``a/scan``."""
    rel = path.relative_to(out_dir).as_posix().split("/", 1)[-1]
    for _, ending, _ in _OUTPUT_PLACES.values():
        if rel.endswith(ending):
            rel = rel[: -len(ending)]
            break
    return {rel, re.sub(r"_f[0-9]{4}$", "", rel)}


def _first_used_known(record: dict) -> bool:
    """Whether ``record`` knows when a run of ipp-seg first wrote into its OUT: it was made
    before any row (0.2.8 on), not beside the rows of runs it did not see."""
    return record.get("out_first_used_known") is True


def _first_used_time(record: dict) -> float | None:
    """:func:`_first_used` as a file time to compare with the output folders' (the OUT file
    system's own clock where the record has it, else the time recorded less a second); None
    without a record."""
    mtime = record.get("out_first_used_mtime")
    if isinstance(mtime, (int, float)) and math.isfinite(mtime):
        return float(mtime)
    with suppress(TypeError, ValueError, AttributeError):  # (to the second: a second before it)
        return datetime.fromisoformat(_first_used(record).replace("Z", "+00:00")).timestamp() - 1.0
    return None


def _out_clock_now(out_dir: Path) -> float | None:
    """Now by the clock of the file system OUT is on (its lock file's time, set to now: a network
    share sets it by its own clock), to compare its files' times with; None where it cannot be
    set."""
    lock = out_dir / LOCK_NAME
    try:
        os.utime(lock)
        return lock.stat().st_mtime
    except OSError:
        return None


def _first_used(record: dict) -> str | None:
    """When a run of ipp-seg first wrote into the OUT whose run ``record`` this is (UTC, as a
    session's ``started``): recorded since 0.2.8 and carried through every ``--overwrite``; else
    the record's first session; None without a record."""
    first = record.get("out_first_used")
    if isinstance(first, str) and first:
        return first
    started = next((s.get("started") for s in record.get("sessions", ()) if isinstance(s.get("started"), str)), None)
    return started or None


def _refuse_outputs_of_another(options: BatchOptions, rows: dict[str, list[str]], record: dict,
                               todo: Iterable[Path]) -> None:
    """Raise :class:`OutputsOfAnotherError` where this run would write over files in its output
    folders that no run of ipp-seg in OUT wrote (:func:`_files_no_run_wrote`): before it measures."""
    found = _files_no_run_wrote(options, rows, record, todo)
    if not found:
        return
    when = ("older than the first run of ipp-seg there" if _first_used_known(record) else
            "under no name the rows of its measurements.csv give an output" + (
                "" if _first_used_time(record) is not None else
                f", and no record of a run of ipp-seg there ({RUN_RECORD_NAME}) to say it wrote them"))
    folders = sorted({path.relative_to(options.out_dir).parts[0] + "/" for path in found})
    shown = ", ".join(printable_path(path.relative_to(options.out_dir).as_posix()) for path in found[:3])
    raise OutputsOfAnotherError(
        f"{' and '.join(folders)} in {printable_path(str(options.out_dir))} already "
        f"{'hold' if len(folders) > 1 else 'holds'} {len(found)} file(s) that no run of ipp-seg in it wrote "
        f"({shown}{', ...' if len(found) > 3 else ''}; {when}: an expert's masks kept beside the scans, as in the "
        "layout train reads?): this run would write its outputs over them. Move them elsewhere, or give another "
        "--out folder")


def _earlier_outputs_still_there(out_dir: Path, earlier_outputs: dict) -> list[Path]:
    """Of the outputs a run begun by ``--overwrite`` found under the names of the run it replaced
    (its record's ``earlier_run_outputs``), those still in OUT and not written since it began."""
    try:
        since = datetime.fromisoformat(earlier_outputs["since"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return []
    left = []
    for rel in earlier_outputs["paths"]:
        path = out_dir / rel
        with suppress(OSError):
            if not os.path.isabs(rel) and ".." not in Path(rel).parts and path.is_file() and not path.is_symlink() \
                    and path.stat().st_mtime < since:
                left.append(path)
    return left


def _earlier_outputs_found(options: BatchOptions, earlier: dict[str, list[str]]) -> list[Path]:
    """As ``--overwrite`` replaces the earlier run's CSV: the masks, overlays, SEGs and SRs in OUT
    under the names its rows (``earlier``, :func:`_earlier_rows`) give them. Those the run does
    not write again (of files it no longer measures, frames it does not, kinds it does not
    write) are named at its end, not removed: nothing records which of them the earlier run
    wrote, and a file of the user's own may carry such a name (ground-truth masks kept in
    OUT/masks). Names that are not relative to IN_DIR (a ``measure --csv`` file's), and folders
    that are links, are passed."""
    linked = {kind for kind, (folder, _, _) in _OUTPUT_PLACES.items() if (options.out_dir / folder).is_symlink()}
    # (dict: two files' rows may give one name, scan.png and scan.jpg both scan.png's)
    return list(dict.fromkeys(path for kind, path in _row_output_paths(options.out_dir, earlier)
                              if kind not in linked and path.is_file() and not path.is_symlink()))


_KINDS_SHOWN = {"mask": f"{MASKS_FOLDER}/", "overlay": f"{OVERLAYS_FOLDER}/", "seg": "DICOM SEG", "sr": "DICOM SR"}


def _read_run_record(out_dir: Path) -> dict:
    """What the run in ``out_dir`` recorded of itself (:func:`_write_run_record`), its values
    checked: ``kinds`` (a set) and ``run_uid`` and ``run_started`` where it recorded them. Empty
    where it recorded nothing (a run of ipp-seg before 0.2.4) or the record cannot be read."""
    try:
        record = read_json_file(out_dir / RUN_RECORD_NAME)
    except (OSError, ValueError):  # (UnicodeDecodeError and JSONDecodeError among them)
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("outputs"), list):
        return {}
    checked: dict = {"kinds": {kind for kind in record["outputs"] if isinstance(kind, str) and kind in _OUTPUT_PLACES},
                     "model_sha256": record.get("model_sha256"),
                     "earlier_version_rows": record.get("earlier_version_rows", 0),
                     "sessions": [s for s in record["sessions"] if isinstance(s, dict)]
                     if isinstance(record.get("sessions"), list) else []}
    if isinstance(record.get("out_first_used"), str):
        checked["out_first_used"] = record["out_first_used"]
    if isinstance(record.get("out_first_used_mtime"), (int, float)):
        checked["out_first_used_mtime"] = float(record["out_first_used_mtime"])
    checked["out_first_used_known"] = record.get("out_first_used_known") is True
    earlier = record.get("earlier_run_outputs")
    if isinstance(earlier, dict) and isinstance(earlier.get("since"), str) and isinstance(earlier.get("paths"), list):
        checked["earlier_outputs"] = {"since": earlier["since"],
                                      "paths": [p for p in earlier["paths"] if isinstance(p, str)]}
    uid, started = record.get("dicom_run_uid"), record.get("dicom_run_started")
    if isinstance(uid, str) and re.fullmatch(r"[0-9a-f]{32}", uid) and isinstance(started, str):
        with suppress(ValueError):
            when = datetime.fromisoformat(started)
            if when.tzinfo is not None:
                checked.update(run_uid=uid, run_started=when)
    return checked


def run_sessions(out_dir: Path) -> list[dict]:
    """The sessions (:func:`run_session`) the record of the batch run in ``out_dir`` lists; none
    where it has no record that can be read."""
    return _read_run_record(out_dir).get("sessions", [])


def _refuse_other_confidence_floors(record: dict, weights_sha256: str, floors: dict[str, float],
                                    csv_path: Path) -> None:
    """Refuse (ResumeError) to resume a run whose record says its rows were judged with other
    confidence floors than ``floors`` (its model's card changed since): the CSV would hold rows
    of one study warned by two thresholds, none of them saying which. A record of other weights,
    or of a version that did not record the floors, is not compared."""
    if record.get("model_sha256") != weights_sha256:
        return
    recorded = [s["confidence_floors"] for s in record.get("sessions", ()) if isinstance(s.get("confidence_floors"),
                                                                                          dict)]
    if recorded and recorded[-1] != floors:
        def said(value: dict) -> str:
            return f"head {value.get('head')}, PS {value.get('ps')}"
        raise ResumeError(f"{csv_path} holds rows judged with the confidence floors {said(recorded[-1])}; the model's "
                          f"card now gives {said(floors)} (it changed since): resume with the card that made the "
                          "rows, or write to a new --out folder")


def _last_folder_measured(record: dict) -> str | None:
    """The IN_DIR (absolute) of the last session a run's record holds, None where it holds none."""
    folders = [s.get("in_dir") for s in record.get("sessions", ())]
    # (Written as the CSV writes names, a name's bytes that are not UTF-8 as \xfc: read back to the path.)
    return path_of_printable(folders[-1]) if folders and isinstance(folders[-1], str) and folders[-1] else None


def run_session(options: BatchOptions, workers: int, began: float | None = None) -> dict:
    """What one session of a run (the run itself, or a resume of it) was, for its record: when it
    started (UTC; ``began``, seconds since the epoch, else now), the folder and options it
    measured with, and the software and machine (the last digits of onnxruntime's arithmetic
    differ between CPU families and versions, and a resumed CSV may hold rows of several
    machines)."""
    inf = options.inference
    started = utc_now_cell() if began is None else \
        datetime.fromtimestamp(began, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"started": started, "ipp_seg": software_version(),
            # Who can repeat it: the command as given, and the machine (an audit's first two questions).
            "command": options.command or None, "host": platform.node() or None,
            # (Names as the CSV writes them: a name's bytes that are not UTF-8 as \xfc, which JSON holds as text.)
            "in_dir": printable_path(os.path.abspath(options.in_dir)),
            "glob": printable_path(options.glob),
            "exclude": [printable_path(pattern) for pattern in options.excluded_globs],
            "frames": inf.frames, "model": inf.model or DEFAULT_MODEL, "backend": inf.backend,
            # What changes the numbers (each row says it too, and a resume is refused a change).
            "method": inf.method, "orientation": inf.orientation, "tta": inf.tta,
            "spacing_given_mm": None if inf.spacing_mm is None else [float(v) for v in inf.spacing_mm],
            # Where it ran (CUDA asked without one runs on the CPU), and what was asked.
            "device": device_used(inf.backend, inf.device) if options.engine == "local" else inf.device,
            "device_asked": inf.device,
            "engine": options.engine, "workers": workers, "threads": inf.threads,
            **software_versions(*(("torch",) if inf.backend == "torch" else ())), "onnxruntime": onnxruntime_version(),
            **machine_description()}


def _dicom_object_paths(options: BatchOptions, rel: str, frames: int) -> list[Path]:
    """Where ``batch`` writes the SEGs and SRs of the DICOM file ``rel`` of ``frames`` frames."""
    name = dict(options.output_renames).get(rel, rel)
    stems = [output_stem(name, frame, frames) for frame in range(min(frames, 10_000))]
    return [output_path(options.out_dir, kind, stem) for stem in stems for kind in ("seg", "sr")]


def _numbers_of_dicom_objects(options: BatchOptions, files: Iterable[str]) -> dict[str, int]:
    """The Instance Numbers of the SEGs and SRs written for ``files`` (relative paths in IN_DIR), by
    their absolute paths: read before a resume removes them, so that the files keep their numbers."""
    from ..io.dicom_results import instance_number_of

    numbers: dict[str, int] = {}
    for rel in files:
        try:
            frames = count_frames(options.in_dir / rel)
        except Exception:  # noqa: BLE001 - a file that cannot be read now: its objects go unnumbered
            continue
        for path in _dicom_object_paths(options, rel, max(1, frames)):
            numbered = instance_number_of(path) if path.is_file() else None
            if numbered is not None:
                numbers[os.path.abspath(path)] = numbered[1]
    return numbers


def _numbered_clear_of_earlier_objects(options: BatchOptions, todo: list[tuple[Path, frozenset]],
                                       earlier_numbers: dict[str, int]) -> BatchOptions:
    """A resumed run's ``options`` with the Instance Numbers of the files it measures kept clear of
    those that the SEGs and SRs written before hold in their series (see
    :func:`~ipp_seg.io.dicom_results.instance_numbers_clear_of`; ``earlier_numbers``: those of the
    objects of files measured again, removed since), said where any had to move."""
    from ..io.dicom_results import instance_numbers_clear_of

    plan, renumbered = instance_numbers_clear_of(
        dict(options.instance_numbers), ((path.relative_to(options.in_dir).as_posix(), path) for path, _ in todo),
        options.out_dir / DICOM_FOLDER, options.run_uid,
        lambda rel, frames: _dicom_object_paths(options, rel, frames), earlier_numbers)
    if renumbered:
        log.warning("%d DICOM file(s) measured now would have repeated the Instance Numbers of SEGs and SRs written "
                    "before in their series (files added to a series measured before): theirs are numbered after "
                    "those (their source's order is not kept)", renumbered)
    return replace(options, instance_numbers=tuple(sorted(plan.items())))


def _write_run_record(out_dir: Path, kinds: set[str], run_uid: str | None, run_started: datetime | None,
                      model_sha256: str, earlier_rows: int = 0, sessions: list[dict] | None = None,
                      earlier_outputs: dict | None = None, out_first_used: str | None = None,
                      out_first_used_mtime: float | None = None, out_first_used_known: bool = False) -> None:
    """Record in OUT what a run that resumes this one needs: the kinds of output (``kinds``) every
    file measured so far has, so that it says which it cannot add (no output folder tells a SEG
    from an SR), and the identity of the run's DICOM series, so that its SEGs and SRs join them
    instead of starting new series in a PACS. ``model_sha256``: the weights its rows are of (a
    record left beside another run's rows is not taken for theirs); ``earlier_rows``: how many of
    the CSV's rows an earlier version wrote (a run begun by 0.2.3 and resumed since), so that a
    later resume tells such a run's record from one a 0.2.3 ``--overwrite`` left. ``sessions``:
    each session of the run so far, the last this one (:func:`run_session`). ``earlier_outputs``:
    of a run begun by ``--overwrite``, the outputs in OUT under the names of the run it replaced
    when it began (``paths``, relative to OUT) and when that was (``since``, UTC): those not
    written since are another run's results, said by every session (:func:`_earlier_outputs_still_there`).
    ``out_first_used``: when a run of ipp-seg first wrote into OUT (:func:`_first_used`): outputs
    written since are some run's, files older than it in the output folders another's;
    ``out_first_used_mtime`` the same by the OUT file system's clock; ``out_first_used_known``:
    whether that was the first run (a record made before any row), not a later one that found
    rows of runs without a record."""
    record = {"written_by": f"ipp-seg {software_version()}", "model_sha256": model_sha256, "outputs": sorted(kinds),
              "out_first_used": out_first_used, "out_first_used_mtime": out_first_used_mtime,
              "out_first_used_known": out_first_used_known,
              "earlier_version_rows": earlier_rows,
              "dicom_run_uid": run_uid, "dicom_run_started": run_started.isoformat() if run_started else None,
              "sessions": sessions or []}
    if earlier_outputs and earlier_outputs.get("paths"):
        record["earlier_run_outputs"] = earlier_outputs
    with replacing(out_dir / RUN_RECORD_NAME, text=True, encoding="utf-8", newline="\n") as fh:
        json.dump(record, fh, indent=1)
        fh.write("\n")


#: The first version that records its run (RUN_RECORD_NAME): rows of an earlier one were not
#: written by the run a record beside them describes.
RUN_RECORDED_SINCE = (0, 2, 4)


def _version_tuple(text: str) -> tuple[int, ...]:
    """``0.2.4`` (and ``0.3.0rc1``, ``0.2.4+local``) as (0, 2, 4) / (0, 3, 0); (0,) for an empty
    cell (0.1.0's rows) or no version."""
    found = re.match(r"\d+(\.\d+)*", str(text).strip())
    return tuple(int(part) for part in found.group(0).split(".")) if found else (0,)


def _earlier_version_rows(csv_path: Path) -> int:
    """How many of the CSV's complete rows a version before :data:`RUN_RECORDED_SINCE` wrote."""
    try:
        rows = _complete_rows(csv_path)[0]
    except (ResumeError, OSError, csv.Error, UnicodeDecodeError):
        return -1  # (matches no record)
    return sum(_version_tuple(row.get("ipp_seg_version", "")) < RUN_RECORDED_SINCE for row in rows)


def _run_record_of_rows(out_dir: Path, weights_sha256: str, earlier_rows: int) -> tuple[dict, str | None]:
    """The run record beside a resumed run's rows (:func:`_read_run_record`), and, where it is not
    taken for theirs, why (then the record is empty): none there, unreadable, of other weights, or
    beside rows of a version that records no run other than the ``earlier_rows`` it counted
    (:func:`_earlier_version_rows`; a 0.2.3 run's ``--overwrite`` leaves a newer run's record in
    place). A record taken for another run's would put this run's SEGs and SRs in that run's
    series, and say of the files done before what they do not have."""
    path = out_dir / RUN_RECORD_NAME
    if not path.exists():
        return {}, "is not there (a run of ipp-seg before 0.2.4, or removed)"
    record = _read_run_record(out_dir)
    if not record:
        return {}, "cannot be read"
    if record.get("model_sha256") != weights_sha256:
        return {}, "is of other weights than the rows"
    if earlier_rows < 0:
        return {}, "cannot be checked against the rows"
    if earlier_rows != record["earlier_version_rows"]:  # (a 0.2.3 --overwrite left it beside its own rows)
        return {}, "is not that of the rows' run (rows written by ipp-seg before 0.2.4 are not those it knew)"
    return record, None


#: Files of the resumed run's rows looked at, at most, to tell which kinds of output it wrote.
_FILES_LOOKED_AT = 1000


def _kinds_written_before(record: dict, folders_before: dict[str, bool], out_dir: Path,
                          done: dict[str, set]) -> set[str]:
    """The kinds of output every file the resumed run measured has: as it recorded them, or, for a
    run that recorded nothing, each kind found under the name one of its rows (``done``) gives it
    (a SEG is told from an SR; a file of the user's own in OUT/masks is not taken for a mask; that
    every file has one is then assumed)."""
    if "kinds" in record:
        return record["kinds"]
    kinds = set()
    files = [(path_of_printable(name), frames) for name, frames in list(done.items())[:_FILES_LOOKED_AT]]
    renames = suffix_disambiguated(rel for rel, _ in files)
    for kind, (folder, _, _) in _OUTPUT_PLACES.items():
        if not folders_before[folder] or (out_dir / folder).is_symlink():
            continue
        for rel, frames in files:
            first = min((f for f in frames if isinstance(f, int)), default=0)
            if any(output_path(out_dir, kind, stem).is_file() for stem in _stems_of_rows(renames.get(rel, rel),
                                                                                          [first])):
                kinds.add(kind)
                break
    return kinds


def _say_outputs_not_written_again(options: BatchOptions, skipped: int, written_before: set[str]) -> None:
    """Warn where a resumed run asks for outputs that the run it goes on with did not write: the
    files that run measured are not measured again, and get none (``--dicom-seg`` added on
    ``--resume`` had written nothing for them, without a word)."""
    missing = [shown for kind, shown in _KINDS_SHOWN.items() if kind in _kinds_asked(options) - written_before]
    if missing:
        log.warning("the %d file(s) measured before this run resumed are not measured again: those the run they come "
                    "from wrote no %s for get none (--overwrite measures every file again)", skipped,
                    " or ".join(missing))


def _remove_unfinished_outputs(out_dir: Path) -> None:
    """Remove the hidden temporary files (``.ipp-seg-*.part``) that an earlier run killed outright
    left in OUT's masks, overlays and DICOM results while writing one: with the run's lock held, no
    other run is writing them. Links to folders are not followed."""
    for folder in (out_dir / name for name in OUTPUT_FOLDERS):
        if not folder.is_symlink() and folder.is_dir():
            remove_staging_files(folder)


def _run_locked(options: BatchOptions, spec, weights_sha256: str, started: float, on_progress,
                on_start, on_frame=None) -> BatchSummary:
    csv_path = options.out_dir / CSV_NAME
    with suppress(OSError):  # (none there: the usual case)
        if not stat.S_ISREG(os.stat(csv_path).st_mode):
            # A pipe planted there had hung the run, read for earlier rows (a security review).
            raise ExistingResultsError(f"{csv_path} is not a regular file (a pipe, a device or a folder): ipp-seg "
                                       "writes its rows only into a file; move it away, or give another --out folder")
    outputs_before = {folder: (options.out_dir / folder).is_dir() for folder in OUTPUT_FOLDERS}
    earlier = _earlier_rows(csv_path) if options.overwrite else {}  # (a CSV refused later is never replaced)
    _remove_unfinished_outputs(options.out_dir)
    for folder, wanted in _folders_asked(options).items():
        if wanted and (options.out_dir / folder).is_symlink():
            # Planted in a shared folder, such a link would take every mask or overlay elsewhere.
            raise LinkedOutputFolderError(f"{options.out_dir / folder} is a link to "
                                          f"{os.readlink(options.out_dir / folder)}: "
                                          f"ipp-seg writes its {folder} only into a folder of OUT itself; "
                                          "remove the link, or give another --out folder")
    if options.resume and csv_path.is_symlink() and not ones_own(csv_path.lstat()):
        # Another user's link (one's own, to a private place, is gone on with): appended to, it would put the
        # rows (patients' file names) wherever it points.
        raise ResumeError(f"{csv_path} is a link to {os.readlink(csv_path)} that another user made: ipp-seg goes on "
                          "only with a measurements.csv of OUT itself or one's own link; copy the file there in its "
                          "place, or give another --out folder")
    if not (options.resume or options.overwrite):
        try:
            held = _complete_rows(csv_path)[0] if csv_path.exists() else []
        except ResumeError as exc:
            raise ExistingResultsError(str(exc)) from None
        if held:
            raise ExistingResultsError(f"{csv_path} already holds {len(held)} rows: add --resume to go on with "
                                       "that run, --overwrite to replace it, or give another --out folder")
    # The record already in OUT (of the run resumed or replaced, or one whose CSV was removed): when
    # a run of ipp-seg first wrote into OUT, carried from record to record.
    prior = _read_run_record(options.out_dir)
    first_used = _first_used(prior)
    # An OUT without a record gets one before the first output (but for an --overwrite, which keeps
    # the earlier run's rows until its own first): a run killed outright before its first row (the
    # out-of-memory killer in a long cine) had left masks no record spoke for.
    fresh = not prior and not options.overwrite
    # When this run began by the OUT file system's clock (a share's may differ from this machine's):
    # for the record a fresh OUT gets.
    first_used_mtime = prior.get("out_first_used_mtime") if prior else _out_clock_now(options.out_dir)
    # Known to be the first run where the record begins with an OUT that held no rows.
    first_known = _first_used_known(prior) if prior else not _earlier_rows(csv_path)
    hidden: list[Path] = []
    unlisted: list[tuple[Path, str]] = []
    outputs_left_out: list[str] = []
    files = list_scans(options.in_dir, options.glob, exclude=options.out_dir, excluded_globs=options.excluded_globs,
                       hidden=hidden, unlisted=unlisted, outputs=outputs_left_out)
    hidden_names = tuple(sorted(_csv_name(path, options.in_dir) + "/" * os.path.isdir(path) for path in hidden))
    if not files and any(os.path.abspath(folder) == os.path.abspath(options.in_dir) for folder, _ in unlisted):
        raise NoScansError(f"cannot list {printable_path(str(options.in_dir))} ({unlisted[0][1]}): no file in it can "
                           "be measured")
    # Folders that could not be listed (no permission): their files have no rows, and no later
    # line would say so but the warning among the first (a nightly run had ended as a whole one).
    unlisted_names = tuple(f"{_csv_name(folder, options.in_dir)}/ ({why})" for folder, why in unlisted)
    if files:
        say_outputs_left_out(outputs_left_out)
    else:  # before a previous CSV is touched
        # Said in the error, not in a warning before it too. (It had said the folder held no files,
        # or "N other file(s)": those it had left out.) A --glob does not take a run's folders.
        taken = outputs_left_out if options.glob == "**/*" else [o for o in outputs_left_out if not o.endswith("/")]
        if taken:
            where = (f"no scans in {options.in_dir}: all it holds is" if options.glob == "**/*" else
                     f"no scans under {options.in_dir} match {options.glob!r}: the files that do are")
            raise NoScansError(f"{where} ipp-seg's own outputs (measurements, masks, overlays, reports, DICOM "
                               f"results), left out: {_first_named(taken)}")
        if options.excluded_globs:
            raise NoScansError(f"no files under {options.in_dir} match {options.glob!r} but those --exclude leaves "
                               f"out ({', '.join(map(repr, options.excluded_globs))})")
        if options.glob == "**/*" and hidden_names:  # (named: Thumbs.db does not start with '.')
            raise NoScansError(f"no scans in {options.in_dir}: it and its sub-folders hold only hidden or system "
                               f"files and folders, which are left out ({', '.join(hidden_names[:3])}"
                               f"{', ...' if len(hidden_names) > 3 else ''})")
        if options.glob == "**/*" and unlisted:
            raise NoScansError(f"no scans in {options.in_dir}: the folders that could be listed hold no files, and "
                               f"{len(unlisted)} could not be listed: {', '.join(unlisted_names[:3])}")
        if options.glob == "**/*":  # the folder and its sub-folders hold nothing but folders
            raise NoScansError(f"no scans in {options.in_dir}: it and its sub-folders hold no files")
        # (A --glob into a run's masks/ or overlays/: those folders were left out, not searched.)
        outputs_said = (f"; ipp-seg's own outputs were left out, not searched: {_first_named(outputs_left_out)}"
                        if outputs_left_out else "")
        raise NoScansError(f"no files under {options.in_dir} match {options.glob!r}" + _other_files_hint(options)
                           + outputs_said)
    _say_bare_files_left_out(options, files)
    names = [_csv_name(path, options.in_dir) for path in files]
    warn_of_training_frames(spec, files, "files")
    done: dict[str, set] = {}
    frames_in = functools.cache(_frames_in)  # (each kept file's header read once, by both checks)
    measured_again: list[dict] = []  # rows a resume takes out, their files to be measured again
    verified: dict[str, bool] = {}  # --verify: the files read again, and whether their bytes were those measured
    earlier_numbers: dict[str, int] = {}  # the Instance Numbers of their SEGs and SRs, by path
    kept_rows: list[dict] = []  # rows a resume keeps
    csv_rewrite: list[Callable[[], bool]] = []  # the resume's rewrite of the CSV, made once the run is not refused
    had_rows = False  # resumed: whether the run's CSV is there (all its rows may be taken out, to be measured again)
    csv_read_as: tuple | None = None  # resumed: the CSV as its rows were read (_file_state)
    moved = False  # resumed in a folder other than the one the run's record last measured
    if options.resume:
        inf = options.inference
        # (A CSV left with its header alone, every row taken out by a resume stopped since, is still the run's.)
        had_rows = csv_path.exists()
        csv_read_as = _file_state(csv_path)  # (before its rows are read: see _WholeRowsFile)
        stamps = {name: file_stamp(path) for path, name in zip(files, names)}
        path_named = dict(zip(names, files))
        prior_record = _read_run_record(options.out_dir)
        measured_in = _last_folder_measured(prior_record)
        _refuse_other_confidence_floors(prior_record, weights_sha256, confidence_floors_used(spec), csv_path)
        done = prepare_resume(csv_path, expect={"model": spec.name, "model_sha256": weights_sha256,
                                                "method": inf.method,
                                                "orientation": inf.orientation, "tta": _tta_cell(inf.tta),
                                                "spacing_given_mm": spacing_cell(inf.spacing_mm)},
                              stamps=stamps, in_dir=options.in_dir, measured_in=measured_in,
                              measured_again=measured_again, deferred=csv_rewrite, verify=options.verify,
                              kept_rows=kept_rows, frames=inf.frames,
                              readable=lambda name: frames_in(path_named[name]) is not None,
                              remeasure_other_versions=options.remeasure_other_versions, verified=verified)
        recorded_rows = sum(s.get("rows_written") or 0 for s in prior_record.get("sessions", ())
                            if isinstance(s.get("rows_written"), int))
        if recorded_rows and not kept_rows and not measured_again:
            # (Resumed as a new run without a word, a batch operator's pass: the rows may be elsewhere, or lost.)
            log.warning("%s %s, though the run record beside it (%s) counts %d row(s) written into it: removed, "
                        "moved or emptied? Every file is measured again", csv_path,
                        "holds no rows" if had_rows else "is not there", RUN_RECORD_NAME, recorded_rows)
        # Gone on in a folder moved or copied: recorded even with nothing left to do, so that the next
        # resume reads the run's folder as this one (it had said "the folder moved" at every resume).
        moved = measured_in is not None and os.path.realpath(measured_in) != os.path.realpath(options.in_dir)
    if options.save_masks or options.overlays or options.dicom_seg or options.dicom_sr:
        # From the whole folder (done files too), so that a resumed run names files alike, and among
        # the files of the rows it keeps that are no longer there: scan.dcm put where scan.png had been
        # measured had taken masks/scan.png, over the mask its kept row names (mask_file).
        kept_names = [rel for rel in map(path_of_printable, done)
                      if rel and not os.path.isabs(rel) and ".." not in Path(rel).parts]
        renames = suffix_disambiguated([*(p.relative_to(options.in_dir).as_posix() for p in files), *kept_names])
        options = replace(options, output_renames=tuple(sorted(renames.items())))
    if options.dicom_seg or options.dicom_sr:
        from ..io.dicom_results import LEADING_ZEROS_SAID, instance_numbers

        # From the whole folder's headers (done files too), so that every worker, and a resumed
        # run, numbers the objects of a derived series alike, none twice.
        leading_zeros: list[str] = []
        plan = instance_numbers(((p.relative_to(options.in_dir).as_posix(), p) for p in files), leading_zeros)
        options = replace(options, instance_numbers=tuple(sorted(plan.items())))
        if leading_zeros:
            log.warning("%d DICOM file(s) have a UID that %s, such as %s", len(leading_zeros), LEADING_ZEROS_SAID,
                        printable_path(leading_zeros[0]))
    todo: list[tuple[Path, frozenset]] = []
    partly_done: dict[str, frozenset] = {}  # (a file's frames already measured, where more are left)
    skipped = 0
    # How many frames each kept file holds, as its rows say: its header is read only where they do not (a scale
    # pass: a resume had read every file measured, 306 MB for an 87 MB folder, against what the README says).
    rows_count = _frame_counts_of_rows(kept_rows)
    for path, name in zip(files, names):
        seen = done.get(name)
        if seen is not None and ("" in seen or _all_frames_done(
                rows_count[name] if name in rows_count else frames_in(path), seen, options.inference.frames)):
            skipped += 1
            continue
        todo.append((path, frozenset(f for f in (seen or ()) if f != "")))
        if todo[-1][1]:
            partly_done[name] = todo[-1][1]
    if partly_done:
        # The angles of a cine's frames measured before: neighbours in time of those measured now (a resume that
        # took up part of a cine had judged its new frames among themselves alone, and an odd one read ok).
        options = replace(options, known_cine_angles=_known_cine_angles(kept_rows, partly_done))
    _refuse_outputs_of_another(options, earlier if options.overwrite else _earlier_rows(csv_path)
                               if options.resume else {}, prior, [path for path, _ in todo])
    # (A refused resume had already taken rows out of the CSV.) Rewritten, the session is recorded whatever it
    # measures: a resume that took copied rows out, measuring nothing, had left no trace in the record.
    csv_rewritten = any([rewrite() for rewrite in csv_rewrite])
    if csv_rewritten:
        csv_read_as = _file_state(csv_path)
    if measured_again:
        # Files whose rows the resume took out (changed since, or failing before) are measured again:
        # what their earlier rows wrote goes with those rows, as a file that fails now would
        # otherwise keep a mask and an overlay with an angle beside its failed row.
        if options.dicom_seg or options.dicom_sr:  # (their numbers, which they keep: read before they go)
            earlier_numbers = _numbers_of_dicom_objects(options, {path_of_printable(row["file"])
                                                                  for row in measured_again})
        _remove_outputs_of_rows_taken_out(options, measured_again, done, names, prior)
    if on_start:
        on_start(len(todo))
    # The record of the run whose rows this one goes on with: none without such rows (a CSV removed,
    # its hidden record left), nor one of other weights.
    # How many of the rows it keeps an earlier version wrote: checked against the record, and recorded.
    earlier_rows = _earlier_version_rows(csv_path) if options.resume else 0
    record, not_taken = _run_record_of_rows(options.out_dir, weights_sha256, earlier_rows) if (
        options.resume and had_rows) else ({}, None)
    written_before = _kinds_written_before(record, outputs_before, options.out_dir, done)
    if not_taken and (options.dicom_seg or options.dicom_sr) and todo:
        log.warning("the record of the run this resumes (%s) %s: the DICOM SEGs and SRs this run writes start series "
                    "of their own, and what the files measured before have is judged from the output folders",
                    RUN_RECORD_NAME, not_taken)
    elif not_taken:
        # Its sessions (when, where, with what software each part of the CSV was measured) are lost: said,
        # as a record replaced without a word had kept only this session beside rows of earlier ones.
        log.warning("the record of the run this resumes (%s) %s: the sessions that measured the rows before, and the "
                    "folder they measured, are not known, and this run's record begins with this one", RUN_RECORD_NAME,
                    not_taken)
    if skipped:
        _say_outputs_not_written_again(options, skipped, written_before)
        dropped = [shown for kind, shown in _KINDS_SHOWN.items() if kind in written_before - _kinds_asked(options)]
        if dropped and todo:
            log.warning("the run this resumes wrote %s for its files; this run writes none for the %d file(s) it "
                        "measures: give the same options to go on alike", " and ".join(dropped), len(todo))
    if (options.dicom_seg or options.dicom_sr) and options.run_uid is None:
        # Resumed: the objects join the series the run began (one per source series and kind).
        options = replace(options, run_uid=record.get("run_uid", uuid.uuid4().hex),
                          run_started=record.get("run_started", datetime.now(timezone.utc)))
    if (options.dicom_seg or options.dicom_sr) and options.run_uid and todo and (done or measured_again):
        options = _numbered_clear_of_earlier_objects(options, todo, earlier_numbers)

    if options.inference.fixed_batch is None:
        # Always, whatever is left to do: onnxruntime's arithmetic differs in the last bits with
        # the batch's size (up to 0.55 deg of AoP on a frame), so a run resumed with fewer files
        # left than a group, or a small folder, must make model calls of the same shape as the
        # rest: every engine, number of workers and interruption then gives the same rows (but their measured_at).
        options = replace(options, inference=replace(options.inference, fixed_batch=FRAMES_PER_BATCH))
    workers = max(1, min(options.workers, len(todo) or 1))
    if options.engine == "local" and WORKER_LIMIT is not None and workers > WORKER_LIMIT:
        log.warning("%d workers asked for; this system runs at most %d: %d are used", workers, WORKER_LIMIT,
                    WORKER_LIMIT)
        workers = WORKER_LIMIT
    cores = usable_cpus()
    if options.engine == "local" and workers > cores:
        # Each loads the model (~400 MB); a shared node's 64 had taken 25 GB for no speed.
        log.warning("%d workers asked for on %d usable CPU core(s): each holds its own copy of the model (a few "
                    "hundred MB), and more workers than cores measure no faster; --workers %d is the most that "
                    "helps here", workers, cores, cores)
    if options.engine == "local":  # (Ray's actors run on the cluster's CPUs)
        warn_of_threads(options.inference.threads, workers, cores)
    if options.inference.threads is None and options.engine == "local":
        # (Ray sizes its actors from the cluster's CPUs, not this machine's.)
        # Threads split between workers: oversubscribing 2 cores costs more than it gives.
        options = replace(options, inference=replace(options.inference, threads=max(1, cores // workers)))
    # Set up the engine (the Ray one needs its package) before a previous CSV is replaced.
    left: list[tuple[str, str]] = []  # stopped early: (file, path) of outputs whose rows may be unwritten
    outcomes = _engine_outcomes(options, todo, workers, left, on_frame)
    # Every file measured so far has what this run asks for, and those it skips what they had. Recorded
    # with the run's first rows: a run stopped before them leaves the earlier run's rows and record.
    model_file = spec.onnx_path if options.inference.backend == "onnx" else spec.torch_path
    # The file that ran, in full: evaluate reads which frames a model without a card trained on from it.
    # Started when the command did: a resume's reading of its rows and folder is part of it (a scale pass: the
    # record had said 16 s of a 146 s resume).
    session = {**run_session(options, workers, time.time() - (time.perf_counter() - started)),
               "confidence_floors": confidence_floors_used(spec),
               "model_card": None if spec.card_path is None else os.path.abspath(spec.card_path),
               "model_card_sha256": spec.card_file_sha256(),
               # (The first of them, and how many: a scale pass's 30,000 macOS "._" files had added 1.5 MB to the
               # record at each resume.)
               # (Folders first: a .git/ had been cut from the list behind 1,000 "._" files, a QA pass.)
               "hidden_left_out": sorted(hidden_names, key=lambda name: (not name.endswith("/"), name)
                                         )[:HIDDEN_LISTED_IN_RECORD],
               "hidden_left_out_count": len(hidden_names),
               "folders_not_listed": list(unlisted_names),
               "model_file": os.path.abspath(model_file) if model_file is not None else None,
               "outputs": sorted(_kinds_asked(options))}  # (what it wrote for the files it measured)
    # The earlier run's outputs an --overwrite finds (kept in the record: a run stopped before its end, then
    # resumed, had left them beside its rows without a word), or those a resumed run's record names.
    found_before = _earlier_outputs_found(options, earlier) if earlier else []
    if earlier and prior.get("earlier_outputs"):  # (and those of the run before, which an --overwrite named)
        found_before += [p for p in _earlier_outputs_still_there(options.out_dir, prior["earlier_outputs"])
                         if p not in found_before]
    earlier_outputs = ({"since": datetime.now(timezone.utc).isoformat(),  # (to the microsecond: outputs written since)
                        "paths": [p.relative_to(options.out_dir).as_posix() for p in found_before]}
                       if earlier else record.get("earlier_outputs"))
    record_now = functools.partial(
        _write_run_record, options.out_dir,
        _kinds_asked(options) & written_before if skipped else _kinds_asked(options),
        options.run_uid or record.get("run_uid"), options.run_started or record.get("run_started"), weights_sha256,
        earlier_rows=earlier_rows, sessions=[*record.get("sessions", ()), session], earlier_outputs=earlier_outputs,
        out_first_used=first_used or session["started"], out_first_used_mtime=first_used_mtime,
        out_first_used_known=first_known)
    if fresh:  # (the engine is set up; its workers start only when its outcomes are first read)
        record_now()
    totals = dict.fromkeys(STAGES, 0.0)
    n_rows = n_failed = n_warning = n_doubtful = n_segmented = n_unsure = n_not_image = n_doubtful_aop = 0
    n_unrecognised = n_dicom = n_dicom_refused = n_vanished = 0
    n_unchecked = n_untimed = 0  # cine frames whose angle was not checked against their neighbours: too few, no times
    known_angles = dict(options.known_cine_angles)
    without_frames_asked: list[str] = []  # resumed files with rows that hold none of the frames asked now
    any_identity = False  # no frame with a UID or bytes measured now: no repeat to name
    rowed: set[str] = set()  # files whose rows this run wrote
    written_now: set[str] = set()  # (--overwrite of an earlier run: the outputs this run wrote)
    try:
        with _WholeRowsFile(csv_path, replace=not options.resume,
                            read_as=csv_read_as if options.resume else None) as fh:
            for outcome in outcomes:
                fh.write_rows([csv_cells(row) for row in outcome.rows])
                # At once: a stop in what follows had left a file with rows out of it, and its mask removed.
                first_rows = not rowed
                rowed.add(outcome.file)
                if log.isEnabledFor(logging.INFO):  # (-v: each file as its rows are written, for a log to follow)
                    # (A warning's codes too: a log filtered for frame_dark or orientation_doubtful finds them.)
                    statuses = Counter(f"{row['status']} ({row['reasons']})" if row["reasons"] else row["status"]
                                       for row in outcome.rows)
                    log.info("%s: %s", outcome.file, ", ".join(f"{n} {status}" for status, n in statuses.items())
                             or "no frame asked for")
                if not outcome.rows:
                    without_frames_asked.append(outcome.file)
                if first_rows:
                    record_now()
                if earlier:
                    written_now.update(outcome.outputs)
                for row in outcome.rows:
                    n_rows += 1
                    n_failed += row["status"] == "failed"
                    n_warning += row["status"] == "warning"
                    n_doubtful_aop += row["aop_doubtful"] == "true"
                    n_doubtful += row_orientation_doubtful(row)
                    n_segmented += row_segmented(row)
                    n_unsure += row_symphysis_unsure(row)
                    n_unrecognised += row_anatomy_unrecognised(row)
                    n_not_image += row_not_an_image(row)
                    n_vanished += row["reasons"] == UNREADABLE and row["error"] == NO_SUCH_FILE
                    any_identity = any_identity or bool(row["sop_instance_uid"] or row["file_sha256"])
                alone, untimed = cine_frames_not_checked(outcome.rows, known_angles.get(outcome.file, ()))
                n_unchecked, n_untimed = n_unchecked + alone, n_untimed + untimed
                n_dicom += outcome.dicom_written
                n_dicom_refused += outcome.dicom_refused
                for key, value in outcome.timings.items():
                    totals[key] += value
                if on_progress:
                    on_progress(outcome)
    except BaseException:
        # Stopped (Ctrl-C, SIGTERM, an error): the masks and overlays of files without rows go,
        # as a resumed run writes them again; left, evaluate would have scored them.
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()  # (the workers drop what they hold, and say what they wrote)
        _remove_outputs_without_rows(left, rowed)
        for folder in OUTPUT_FOLDERS:  # left empty: as a run stopped before any output
            # (Not one the user had made before the run: only what is in it, left empty by the run.)
            _remove_empty_folders(options.out_dir / folder, keep_root=outputs_before[folder])
        raise
    if options.verify:  # (an audit is recorded, whatever it found: a resume that found every file as it was had
        session["verified_files"] = len(verified)  # left no trace, an upgrade's pass)
    if fresh or rowed or unlisted_names or moved or csv_rewritten or options.verify:  # (recorded): how it ended
        # (A resume with nothing left to do is recorded where folders could not be listed: a nightly run's
        # steady state, whose record would otherwise never name them.)
        session.update(ended=utc_now_cell(), rows_written=n_rows, failed_rows=n_failed, warning_rows=n_warning)
        try:
            record_now()
        except OSError as exc:  # (every row is written: the run stands, its record is a session behind)
            log.warning("%s: the run's record could not be brought up to date (%s): its rows stand",
                        options.out_dir / RUN_RECORD_NAME, exc.strerror or exc)
    if without_frames_asked:
        log.warning("%d file(s) hold none of the frames --frames asks for; the rows they have stand: %s",
                    len(without_frames_asked), _examples(without_frames_asked))
    if n_vanished and not os.path.isdir(options.in_dir):
        # A network share dropped, a drive unplugged: its files' rows say "no such file" one by one,
        # and the run had ended as an ordinary one.
        log.warning("%s is no longer there (a network share dropped, a drive unplugged?): the files this run could "
                    "not read since have failed rows; --resume reads them again once it is back",
                    printable_path(str(options.in_dir)))
    stale: list[Path] = []
    if earlier:
        # --overwrite replaced the run: the earlier run's masks, overlays, SEGs and SRs that this run
        # did not write again stand beside the new rows as results of scans no longer in the folder,
        # or of another model (an SR of another angle, sent to a PACS with the rest): said.
        stale = [p for p in found_before if str(p) not in written_now and p.is_file() and not p.is_symlink()]
    elif options.resume and earlier_outputs:
        stale = _earlier_outputs_still_there(options.out_dir, earlier_outputs)
    if stale:
        log.warning("%d output(s) under the earlier run's names stay in %s beside the new rows, such as %s: "
                    "results of scans, frames or kinds this run did not write again; remove them before using "
                    "the folder (or give each run its own --out)", len(stale), options.out_dir,
                    _first_named([printable_path(p.relative_to(options.out_dir).as_posix()) for p in stale]))
    csv_advice, repeats = None, ()
    if options.resume:
        # Of every row the CSV holds, read once: the few frames measured now may look mirrored by
        # chance where the study as a whole does not (and the reverse), and the run that measured
        # an image exported twice may have died before saying so.
        every_row = _put_in_scan_order(csv_path)
        csv_advice = RunAdvice.of_rows(every_row)
        repeats = _repeated((row["file"], row["frame"], row["sop_instance_uid"], row.get("file_sha256", ""))
                            for row in every_row)
    elif any_identity:
        repeats = repeated_images(csv_path)
    return BatchSummary(len(files), n_rows, skipped, n_failed, csv_path, time.perf_counter() - started, totals,
                        n_doubtful, n_segmented, n_unsure, n_not_image, n_warning, repeats, csv_advice,
                        doubtful_aop_rows=n_doubtful_aop, unrecognised_rows=n_unrecognised,
                        dicom_written=n_dicom, dicom_refused=n_dicom_refused,
                        hidden_left_out=hidden_names, folders_not_listed=unlisted_names,
                        files_without_rows=len(without_frames_asked), cine_frames_unchecked=n_unchecked,
                        cine_frames_untimed=n_untimed, verified_files=len(verified),
                        verified_changed=sum(not same for same in verified.values()))


def cine_frames_not_checked(rows: Sequence[dict], known: Sequence[tuple[float, float]] = ()) -> tuple[int, int]:
    """Of one file's ``rows``, the cine frames with an AoP that :func:`steadiness_checked` could
    not judge: (those with fewer than two other frames with an AoP within the window, among the
    rows and the ``known`` (time ms, AoP) of frames measured before; those without a frame time)."""
    cine = [row for row in rows if _cell_number(row.get("aop_deg")) is not None
            and (_cell_number(row.get("n_frames")) or 0) > 1]
    timed = sorted(t for t in (_cell_number(row.get("frame_time_ms")) for row in cine) if t is not None)
    around = sorted([*timed, *(t for t, _ in known)])
    alone = sum(bisect.bisect_right(around, t + STEADINESS_WINDOW_MS) - bisect.bisect_left(
        around, t - STEADINESS_WINDOW_MS) - 1 < MIN_NEIGHBOURS for t in timed)
    return alone, len(cine) - len(timed)


def cine_frames_not_checked_of_scans(rows: Iterable[dict]) -> tuple[int, int]:
    """:func:`cine_frames_not_checked` summed over the scans of ``rows`` (rows of several files)."""
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    counts = [cine_frames_not_checked(file_rows) for file_rows in by_file.values()]
    return sum(alone for alone, _ in counts), sum(untimed for _, untimed in counts)


def _cell_number(cell) -> float | None:
    """A row's cell as a number (a float or int as made, or its text as written); None where empty."""
    if cell is None or cell == "":
        return None
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _remove_empty_folders(root: Path, keep_root: bool = False) -> None:
    """Remove ``root`` (unless ``keep_root``) and the folders under it that hold nothing (not links
    to folders)."""
    if root.is_symlink() or not root.is_dir():
        return
    for here, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):  # the deepest first
        if keep_root and Path(here) == root:
            continue
        with suppress(OSError):  # not empty
            os.rmdir(here)


def _remove_outputs_of_rows_taken_out(options: BatchOptions, taken: list[dict], kept: dict[str, set],
                                      names_now: list[str], record: dict) -> None:
    """Remove the outputs (masks, overlays, DICOM SEG and SR) that the rows ``taken`` (taken out
    of the CSV by a resume, their files to be measured again) gave their files; said, with the
    kinds this run does not write again. Only outputs the run is known to have written go: of a
    kind its ``record`` says a session of it wrote or that this run writes, written since a run of ipp-seg first
    wrote into OUT (a file of one's own, such as an expert's mask in OUT/masks, is older, or of
    a kind the run did not write: kept without a word); where no record tells that time, none
    goes, and a warning names them. An output that a kept row's names give too (a file of the same stem
    measured before the names were told apart) stays."""
    out_dir = options.out_dir
    rows = _row_frames(taken)
    # A row renamed to the folder's Unicode form (an earlier resume) has its outputs under the form measured.
    rows.update({other: frames for name, frames in list(rows.items())
                 for other in {unicodedata.normalize(form, name) for form in ("NFC", "NFD")} if other not in rows})
    # Names told apart as they are among every file the CSV and the folder name (scan.png beside scan.jpg).
    renames = suffix_disambiguated({path_of_printable(name) for name in (*kept, *names_now, *rows)})
    taken_stems = dict(_row_output_stems(rows, renames=renames))
    # Only kept files whose names give a stem of the rows taken out can share an output with them: the paths of
    # those alone are made (those of every kept row took 2 s per 3,000 rows at each resume that took rows out).
    any_taken = set().union(*taken_stems.values())
    kept_rows = {name: [str(f) for f in frames] for name, frames in kept.items()}
    staying = {path for _, stems in _row_output_stems(kept_rows, renames=renames) if stems & any_taken
               for _, path in _paths_of_stems(out_dir, stems)}
    # The outputs rows name (mask_file, overlay_file: 0.2.10 on) are theirs exactly: one a row taken out
    # names goes though a kept row's names give it too (scan.png, which kept its name beside a scan.dcm
    # added later, had kept its old mask when it changed), and one a kept row names stays.
    named_taken = _outputs_named(out_dir, taken)
    staying = (staying - {path for _, path in named_taken}) | {path for _, path in _outputs_named(
        out_dir, _readable_rows(out_dir / CSV_NAME))}
    since = _first_used_time(record) if record else None
    # Kinds its record says every file had or a session of it wrote (0.2.9 on), and those this run writes
    # (its own outputs at those names would be written over anyway: a file failing now would keep the earlier one).
    kinds = (record.get("kinds", set()) if record else set()) | _kinds_asked(options) | {
        kind for session in (record or {}).get("sessions", ()) for kind in session.get("outputs") or ()
        if kind in _OUTPUT_PLACES}
    removed, stayed = [], []
    taken_paths = [output for stems in taken_stems.values() for output in _paths_of_stems(out_dir, stems)]
    for kind, path in dict.fromkeys([*taken_paths, *named_taken]):
        if path in staying or not path.is_file() or path.is_symlink():
            continue
        try:
            ours = since is not None and kind in kinds and path.stat().st_mtime >= since
            if ours:
                path.unlink()
                removed.append((kind, path))
            elif since is None:  # (with a record, a file it does not vouch for is one's own: kept unsaid)
                stayed.append(path)
        except OSError:  # (gone meanwhile, or not to be removed: it stays, said)
            stayed.append(path)
    if removed:
        shown = _first_named([printable_path(p.relative_to(out_dir).as_posix()) for _, p in removed])
        not_again = sorted(_KINDS_SHOWN[kind] for kind in {kind for kind, _ in removed} - _kinds_asked(options))
        again = len(not_again) < len({kind for kind, _ in removed})
        log.warning("%d output(s) of files measured again taken out with their rows (%s): this run writes %s",
                    len(removed), shown,
                    "them anew where the files are measured" if not not_again else
                    f"no {' and no '.join(not_again)} (not asked for)"
                    + (", the rest anew where the files are measured" if again else ""))
    if stayed:
        log.warning("%d file(s) in the output folders under the names of files measured again were left as they are, "
                    "as no record says this run wrote them (%s): if they are its outputs, they no longer match "
                    "their files' rows", len(stayed),
                    _first_named([printable_path(p.relative_to(out_dir).as_posix()) for p in stayed]))


def _outputs_named(out_dir: Path, rows: Iterable[dict]) -> list[tuple[str, Path]]:
    """(kind, path) of the masks and overlays ``rows`` name in their ``mask_file`` and
    ``overlay_file`` cells (0.2.10 on), inside OUT's output folders; none for rows without them."""
    named = []
    for row in rows:
        for column, kind in (("mask_file", "mask"), ("overlay_file", "overlay")):
            rel = path_of_printable(row.get(column) or "")
            if rel and not os.path.isabs(rel) and ".." not in Path(rel).parts \
                    and Path(rel).parts[0] == _OUTPUT_PLACES[kind][0]:
                named.append((kind, out_dir / rel))
    return named


def _row_frames(rows: list[dict]) -> dict[str, list[str]]:
    """File -> the frames of ``rows`` (CSV rows), as :func:`_earlier_rows` gives them."""
    files: dict[str, list[str]] = {}
    for row in rows:
        files.setdefault(row["file"], []).append(row["frame"])
    return files


def _remove_outputs_without_rows(outputs: list[tuple[str, str]], rowed: set[str]) -> None:
    """Remove each (file, path) of ``outputs`` whose file has no row (not in ``rowed``)."""
    for file, path in outputs:
        if file not in rowed:
            with suppress(OSError):  # gone already, or never finished
                os.unlink(path)


def repeated_images(csv_path: Path) -> tuple[tuple[str, str, str], ...]:
    """The rows of ``csv_path`` whose frame another file holds too: the same SOP Instance UID and
    frame under two paths, as a PACS export writes an image it was asked for twice, or, for a
    file without a UID (not DICOM), the same bytes (``file_sha256``) and frame: a PNG copied
    into two folders. Each is (file, frame, the first file in the CSV that holds it); a
    statistic over the rows counts such a frame twice unless one is left out."""
    # Streamed, keeping only the UIDs: a CSV of a few hundred thousand rows is read in seconds.
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        if "sop_instance_uid" not in header:
            return ()
        at_file, at_frame, at_uid = (header.index(c) for c in ("file", "frame", "sop_instance_uid"))
        at_digest = header.index("file_sha256") if "file_sha256" in header else None  # (before 0.2.5: none)
        return _repeated((name_of_spreadsheet_cell(cells[at_file]), cells[at_frame], cells[at_uid],
                          "" if at_digest is None else cells[at_digest])
                         for cells in reader if len(cells) == len(header))  # (not a half-written last row)


def _repeated(rows: Iterable[tuple[str, str, str, str]]) -> tuple[tuple[str, str, str], ...]:
    """Of (file, frame, SOP Instance UID, file sha256) rows, those whose UID and frame an earlier
    row of another file holds, or, without a UID, whose bytes (sha256) and frame: (file, frame,
    that file). A file-level row (no frame: not read) is not compared: two empty files are no
    image counted twice."""
    first: dict[tuple[str, str, str], str] = {}
    repeated = []
    for file, frame, uid, digest in rows:
        if not frame or not (uid or digest):
            continue
        holder = first.setdefault(("uid", uid, frame) if uid else ("sha256", digest, frame), file)
        if holder != file:
            repeated.append((file, frame, holder))
    return tuple(repeated)


def _put_in_scan_order(csv_path: Path) -> list[dict]:
    """Rows by file (in the order the folder is walked) and frame, as a run that was never
    interrupted writes them: a resumed run appends the files it measured again (unreadable
    before, or changed) at the end. Rewritten atomically, and only when the order differs.
    Returns the CSV's rows as they then lie in it."""
    rows = _complete_rows(csv_path)[0]

    def frame_of(row: dict) -> int:
        return int(row["frame"]) if row["frame"].isdigit() else -1  # a file-level row first

    # By the name as the folder is walked (path_of_printable): a Latin-1 byte escaped as "\xfc"
    # in the CSV sorts before "ü" as text, after it as the walk holds it.
    ordered = sorted(rows, key=lambda row: (path_of_printable(row["file"]), frame_of(row)))
    if ordered == rows:
        return rows
    try:
        _replace_rows(csv_path, ordered, ".order")
    except OSError as exc:  # a full disk: the rows stay as they are, all of them
        log.warning("%s: its rows could not be put back in file order (%s); they are all there", csv_path,
                    exc.strerror or exc)
        return rows
    return ordered


def _names_in_the_folders_form(csv_path: Path, rows: list[dict], stamps: dict[str, tuple[str, str]],
                               sha_of: Callable[[str], str] | None) -> int:
    """Rows whose file is no longer in the folder under its name, but is under the same name in
    another Unicode form (``ü`` composed or as ``u`` and a combining mark, as macOS and some shares
    write names), with the bytes measured: renamed in ``rows`` to the folder's form, and counted.
    Two rows had read alike, the file measured again under its new form beside its old row.
    ``sha_of``: a file's sha256 by its name in the folder (None: no folder to read)."""
    by_form: dict[str, list[str]] = {}
    for name in stamps:
        by_form.setdefault(composed_name(name), []).append(name)
    done = {row["file"] for row in rows}
    renamed: list[str] = []
    for row in rows:
        if row["file"] in stamps or sha_of is None or not row["file_sha256"]:
            continue
        forms = [name for name in by_form.get(composed_name(row["file"]), ()) if name not in done]
        if len(forms) != 1:
            continue
        if sha_of(forms[0]) == row["file_sha256"]:
            renamed.append(forms[0])
            row["file"] = forms[0]
    if renamed:
        log.warning("%s: %d file(s) are in the folder under the same name in another Unicode form (as macOS and some "
                    "shares write accents), with the bytes measured: their rows now name them as the folder does: "
                    "%s", csv_path, len(set(renamed)), _examples(set(renamed)))
    return len(renamed)


def _values(row: dict) -> tuple:
    """What a row says of its frame (its values, status and reasons), without when it was made."""
    return tuple(row[column] for column in CSV_COLUMNS if column != "measured_at")


def _keep_taken_out(path: Path, taken_out: list[tuple[dict, str]]) -> None:
    """Append the rows a resume takes out of measurements.csv to ``path`` (made with its header
    where new): this version's columns after ``taken_out_at`` (UTC) and ``taken_out_because``
    (``file_changed``: its file changed since, and is measured again; ``repeated_row``: a second
    row of a file and frame, as a spreadsheet's copy leaves; ``read_again``: a failure to read or
    process the file, or a frame it lacked, tried again; ``cine_measured_whole``: a frame of a cine
    measured again with the cine's frames measured for the first time; ``unreadable_now``: a row of
    a file that cannot be read now, which gets the row of why; ``other_version``: a row another
    version of ipp-seg wrote, its file measured again (``--remeasure-other-versions``);
    ``damaged_row``: a line of more or fewer cells than the columns, its cells as far as they go;
    ``half_written_row``: a last line without its line end, as a killed run leaves it, its cells as
    far as they go). A ``read_again`` row that the file lists already, the same failure of the same
    bytes, is not added again: a file that stays unreadable had added a copy of its row at every
    resume."""
    now = utc_now_cell()
    if others_link(path):  # (planted in a shared OUT, it would take the rows wherever it points): replaced
        path.unlink()
    columns = (*TAKEN_OUT_COLUMNS, *CSV_COLUMNS)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    new = not path.exists() or path.stat().st_size == 0
    if new:
        writer.writeheader()
    else:
        _take_out_under_these_columns(path, columns)
    listed = set() if new else _read_again_listed(path)
    # (Their outputs are removed or written over by the rows measured again: no longer theirs to name.)
    writer.writerows({"taken_out_at": now, "taken_out_because": why, **csv_cells(row), "mask_file": "",
                      "overlay_file": ""} for row, why in taken_out
                     if why != "read_again" or _failure_values(csv_cells(row)) not in listed)
    with open(path, "ab") as fh:
        fh.write(text.getvalue().encode("utf-8", "backslashreplace"))
    if new:  # as private as the rows it copies (the CSV beside it, made 600 by its user)
        with suppress(OSError):
            shutil.copymode(os.path.realpath(path.with_name(CSV_NAME)), path)


def _take_out_under_these_columns(path: Path, columns: tuple[str, ...]) -> None:
    """Rewrite a rows_taken_out.csv that an earlier version began under ``columns`` (its rows'
    new cells empty; columns it has that these lack kept after them), so that rows appended
    under them line up: they had been appended with more cells than its header named (pandas
    refused the file, R shifted its columns). A file already under them is left as it is."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        header = tuple(reader.fieldnames or ())
        if header == columns or not header:
            return
        rows = list(reader)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=(*columns, *(c for c in header if c not in columns)), restval="")
    writer.writeheader()
    writer.writerows({key: value for key, value in row.items() if key is not None} for row in rows)
    with replacing(path) as out:  # (its permissions kept)
        out.write(text.getvalue().encode("utf-8", "surrogateescape"))
    log.warning("%s: begun by an earlier version of ipp-seg; its rows are kept under this version's columns", path)


def _failure_values(row: dict) -> tuple:
    """What a row says of its frame, without when it was made or when its file was last touched
    (a file touched, not changed, fails alike)."""
    return tuple(row[column] for column in CSV_COLUMNS if column not in ("measured_at", "file_modified"))


def _read_again_listed(path: Path) -> set[tuple]:
    """What the ``read_again`` rows of a rows_taken_out.csv say (:func:`_failure_values`); empty
    where it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            return {_failure_values({column: row.get(column) or "" for column in CSV_COLUMNS})
                    for row in csv.DictReader(fh) if row.get("taken_out_because") == "read_again"}
    except (OSError, csv.Error):
        return set()


def _replace_rows(csv_path: Path, rows: list[dict], staging_suffix: str) -> None:
    """Replace the CSV's rows atomically: written beside it first, then moved over it. On an
    error (a full disk) the CSV is left as it was, with no half copy beside it, and it is raised.
    A CSV that is a link is replaced where it lies, and keeps its permissions: its rows name
    scans, which may identify patients, and a folder kept private must stay so."""
    real = Path(os.path.realpath(csv_path))
    staging = real.with_name(real.name + staging_suffix)
    try:
        staging.write_bytes(_csv_bytes(list(map(csv_cells, rows)), header=True))
        shutil.copymode(real, staging)
        os.replace(staging, real)
    finally:
        staging.unlink(missing_ok=True)


def _cine_frames_measured_again(kept: list[dict], rows: list[dict], frames: str, in_dir: Path | None,
                                stamps: dict | None) -> set[tuple[str, str]]:
    """(file, frame) of the ``kept`` rows of cines that the selection ``frames`` asks for a frame
    of that no row of ``rows`` (kept or not) holds: those frames asked for, to be measured again
    with the new ones. Only files the run measures (in ``stamps``); a cine's frame count is its
    rows' ``n_frames``, or its header's where they lack it."""
    selection = parse_frame_selection(frames)
    rowed: dict[str, set[int]] = {}
    for row in rows:
        if row["frame"].isdigit():
            rowed.setdefault(row["file"], set()).add(int(row["frame"]))
    kept_frames: dict[str, list[dict]] = {}
    for row in kept:
        if row["frame"].isdigit() and (stamps is None or row["file"] in stamps):
            kept_frames.setdefault(row["file"], []).append(row)
    again: set[tuple[str, str]] = set()
    for name, its_rows in kept_frames.items():
        counts = {row.get("n_frames", "") for row in its_rows} - {""}
        try:
            n_frames = int(counts.pop()) if len(counts) == 1 else (
                count_frames(in_dir / path_of_printable(name)) if in_dir is not None else 0)
            asked = set(selection.indices(n_frames)) if n_frames > 1 else set()
        except (ScanReadError, ValueError, IndexError, OSError):
            continue
        if asked - rowed.get(name, set()):
            again |= {(name, row["frame"]) for row in its_rows if int(row["frame"]) in asked}
    return again


def _known_cine_angles(rows: Iterable[dict], partly_done: dict[str, frozenset]
                       ) -> tuple[tuple[str, tuple[tuple[float, float], ...]], ...]:
    """(file, ((frame time ms, AoP), ...)) of the ``rows`` (those a resume keeps) of the frames
    ``partly_done`` names per file, where a row has both; one a frame (a row repeated, as a
    spreadsheet's copy repeats it, is no second neighbour)."""
    angles: dict[str, dict[int, tuple[float, float]]] = {}
    for row in rows:
        frame = row.get("frame", "")
        if frame.isdigit() and int(frame) in partly_done.get(row["file"], ()):
            time_ms, aop = _cell_number(row.get("frame_time_ms")), _cell_number(row.get("aop_deg"))
            if time_ms is not None and aop is not None:
                angles.setdefault(row["file"], {})[int(frame)] = (time_ms, aop)
    return tuple((name, tuple(pairs[frame] for frame in sorted(pairs))) for name, pairs in sorted(angles.items()))


def _all_frames_done(n_frames: int | None, seen: set, frames: str) -> bool:
    """Whether a file of ``n_frames`` frames (None: its header cannot be read) has a row, among
    ``seen``, of each frame ``frames`` selects."""
    if n_frames is None:
        return False
    try:
        wanted = parse_frame_selection(frames).indices(n_frames)
    except (ValueError, IndexError):  # (IndexError: it has none of them, a no_such_frame row)
        return False
    return all(i in seen for i in wanted)


def _frame_counts_of_rows(rows: Iterable[dict]) -> dict[str, int]:
    """Each file's frame count as its ``rows`` give it (``n_frames``), where they all give one
    and the same; files whose rows lack it (an earlier version's) or disagree are left out."""
    cells: dict[str, set[str]] = {}
    for row in rows:
        cells.setdefault(row["file"], set()).add(row.get("n_frames") or "")
    counts = {name: int(cell) for name, (cell, *others) in cells.items() if not others and cell.isdigit()}
    return {name: count for name, count in counts.items() if count > 0}


def _frames_in(path: Path) -> int | None:
    """How many frames ``path`` holds by its header (:func:`count_frames`); None where it cannot be read."""
    try:
        return count_frames(path)
    except ScanReadError:
        return None


def _file_state(path: Path) -> tuple:
    """Which file ``path`` names and how long it is (:func:`_state_of`); () where none."""
    try:
        return _state_of(os.stat(path))
    except FileNotFoundError:
        return ()


def _state_of(held: os.stat_result) -> tuple[int, int, int]:
    """A file's (device, inode, size): which file it is and how long."""
    return held.st_dev, held.st_ino, held.st_size


class _WholeRowsFile:
    """measurements.csv opened to append whole rows: each file's rows go out in one write, and a
    write cut short (a full disk, a file size limit) is taken back to the rows before that file's
    (:func:`_write_whole_rows`), so that a reader who ignores the exit code never meets half a
    row: ``--resume`` drops one, but a spreadsheet would read a cut number as a value.

    The file is opened when the first rows come (with its header if it is new or empty), and
    ``replace``: a previous run's CSV (``--overwrite``) is removed only then, once a file has
    been measured and its outputs written: a run stopped before (a colleague's read-only mask
    in a shared OUT, Ctrl-C while the workers start) leaves the previous results as they were."""

    def __init__(self, path: Path, replace: bool, read_as: tuple | None = None) -> None:
        """``read_as``: a resume's :func:`_file_state` of the CSV as it read the rows it goes on
        from, which the CSV must still have when the run's first rows come."""
        self._path, self._replace, self._read_as = path, replace, read_as
        self._fd: int | None = None
        self._end = 0

    def _open(self) -> None:
        kept = None  # the permissions of the CSV it replaces (a private one had become readable by all)
        if self._replace:
            try:
                replaced = self._path.lstat()
            except FileNotFoundError:
                replaced = None
            # Only a regular file's, and one's own: a link planted there (lstat's mode 0777) had made the new
            # CSV writable by all, whatever the umask, and so would another user's file of mode 0666.
            if replaced is not None and stat.S_ISREG(replaced.st_mode) and ones_own(replaced):
                kept = stat.S_IMODE(replaced.st_mode)
            self._path.unlink(missing_ok=True)
            self._path.with_name(TAKEN_OUT_NAME).unlink(missing_ok=True)  # (rows of the run replaced)
        # A new CSV: the umask decides.
        # O_BINARY (Windows): the rows' CR LF written as they are, and the byte offsets kept true.
        # Where it replaces, made anew, never through a link planted since the unlink; a resume goes on
        # with the CSV as it is (one's own link to a private place included: run_batch refused another's).
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
                           | (os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) if self._replace else 0),
                           0o666 if kept is None else kept)
        if kept is not None:  # (as it was, whatever the umask; Windows has os.fchmod from Python 3.13 only)
            os.fchmod(self._fd, kept) if hasattr(os, "fchmod") else os.chmod(self._path, kept)
        held = os.fstat(self._fd)
        self._end = held.st_size
        # (A CSV that was not there when the rows were read is this run's own now, if empty.)
        if self._read_as is not None and (_state_of(held) != self._read_as if self._read_as else held.st_size != 0):
            # Rows another run wrote since this one read the CSV (its lock file removed by hand) would be
            # measured again and doubled: the run had ended with 0 and 8 rows twice (a batch operator's pass).
            os.close(self._fd)
            self._fd = None
            raise RowsFileReplacedError(f"{self._path} changed after this run read its rows, before it wrote any "
                                        f"(another run writing into the folder at the same time, its lock file "
                                        f"{LOCK_NAME} removed by hand? or another program): this run wrote no "
                                        "row; once the other run has ended, run the same command with --resume")
        if self._end == 0:
            self.write_rows([], header=True)

    def write_rows(self, rows: list[dict], header: bool = False) -> None:
        if self._fd is None:
            self._open()
        self.check_still_named()
        data = _csv_bytes(rows, header)
        try:
            _write_whole_rows(self._fd, data, lambda written: self._end)
        except OSError as exc:
            if exc.filename is None and exc.errno is not None:  # (a write on the descriptor names no file)
                raise error_naming(exc, self._path) from None
            raise
        self._end += len(data)

    def check_still_named(self) -> None:
        """Raise :class:`RowsFileReplacedError` where the CSV's path no longer names the file this
        run appends to: an editor or a sync tool that saved it again (a new file in its place),
        or a person who removed it. The rows went on into the old file, and the run had said it
        wrote them all (a data manager's pass: 14 of 30 rows lost, exit 0)."""
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            raise RowsFileReplacedError(f"{self._path} was removed while this run wrote its rows into it: the rows "
                                        "written before are gone with it; " + _REPLACED_WAY_ON) from None
        held = os.fstat(self._fd)
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            raise RowsFileReplacedError(f"{self._path} was replaced while this run wrote its rows into it (saved "
                                        "again by another program, such as a spreadsheet or an editor holding it "
                                        "open): rows it wrote meanwhile may be missing from it; " + _REPLACED_WAY_ON)
        if held.st_size != self._end:  # the same file written over in place (an editor saving so), or cut
            raise RowsFileReplacedError(f"{self._path} was written over by another program while this run wrote "
                                        "its rows into it (its size is no longer that of the rows written): rows it "
                                        "wrote may be missing from it; " + _REPLACED_WAY_ON)

    def __enter__(self) -> _WholeRowsFile:
        return self

    def __exit__(self, failed, *exc) -> None:
        if self._fd is None and failed is None:  # nothing was left to measure: the CSV is there all the same
            self._open()
        if self._fd is not None:
            try:
                if failed is None:
                    self.check_still_named()  # (replaced after the last rows)
            finally:
                os.close(self._fd)


@contextmanager
def _hang_up_ignored_by_children():
    """Start processes (the workers, multiprocessing's resource tracker) with SIGHUP ignored, as a
    child keeps an ignored signal: the hang-up of a session reaches its whole process group, and
    the tracker, killed by it, had buried the run's "interrupted" line under five tracebacks. The
    run itself stops on SIGHUP as before (the command line's handler is put back at once), and
    the workers then end with it. Only in the main thread, where signals can be set."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    terminate = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        # Where a stop came meanwhile and changed the handler SIGHUP shared with SIGTERM (the command
        # line's: a further stop then ends the process at once), SIGHUP comes back as SIGTERM now is.
        now = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGHUP, now if previous is terminate and now is not terminate else previous)


def _engine_outcomes(options: BatchOptions, todo: list, workers: int,
                     left: list[tuple[str, str]], on_frame: Callable[[], None] | None = None) -> Iterator[FileOutcome]:
    """The outcomes of ``todo``'s files, in order. Stopped early (the iterator closed), a local
    run fills ``left`` with (file, path) of the masks and overlays its workers wrote for files
    whose outcomes may not have been read (a Ray cluster's are not known)."""
    if options.engine == "ray":
        from .ray_engine import ray_outcomes

        return ray_outcomes(options, todo, workers, options.address)
    if workers > 1:
        # Here, before a previous CSV is replaced (_outcomes starts its workers only when first read).
        try:
            os.getcwd()  # a spawned worker starts in it; without it, the start fails as if OUT could not be written
        except FileNotFoundError:
            raise WorkingFolderGoneError("the current folder no longer exists (it was deleted or moved after the "
                                         "shell entered it), and worker processes cannot start in it: cd into an "
                                         "existing folder and run the command again") from None
    return _outcomes(options, todo, workers, left, on_frame)


def file_groups(todo: list[tuple[Path, frozenset]]) -> list[list[tuple[Path, frozenset]]]:
    """``todo`` in consecutive groups of ``FILES_PER_GROUP``, the unit a worker takes: every
    engine uses the same groups, so frames share model calls the same way everywhere."""
    return [todo[i:i + FILES_PER_GROUP] for i in range(0, len(todo), FILES_PER_GROUP)]


#: The most worker processes the local engine starts: Windows' process pool waits on at most
#: 61 of them (more had been refused with a ValueError); elsewhere no limit.
WORKER_LIMIT = 61 if os.name == "nt" else None

# How long a run stopped early waits for its workers to drop what they hold and say which
# outputs they wrote (they stop at their next frame: about a second here).
STOP_WAIT_S = 20.0
#: Seconds between two looks at the frames the workers measured, while their groups are not through.
FRAME_POLL_S = 0.5


def _quiet_wakeup(executor) -> None:
    """Python 3.11's exit hook wakes a process pool's manager thread through a pipe that thread may
    be closing at that moment (it checks, then writes: a race), and prints a "Bad file
    descriptor" traceback under an interrupted run's line (seen once in CI, under load, after a
    hang-up). That wake-up, of this pool alone, is made to ignore a closed pipe: there is nothing
    left to wake then. (Python 3.12 takes a lock there; the attribute absent, nothing is done.)"""
    wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
    send = getattr(wakeup, "wakeup", None)
    if send is None:
        return

    def quiet() -> None:
        with suppress(OSError):
            send()

    wakeup.wakeup = quiet


def _outcomes(options: BatchOptions, todo: list, workers: int,
              left: list[tuple[str, str]], on_frame: Callable[[], None] | None = None) -> Iterator[FileOutcome]:
    # Files go to the model in groups so that single-frame scans still share model calls.
    groups = file_groups(todo)
    if workers == 1:
        with _models_folder_said():
            processor = FileProcessor(options)
        for group in groups:
            written: list[tuple[str, str]] = []  # (interrupted in the group: what it wrote)
            through = False
            try:
                # (Each file's as it is through; its frames said as they are measured, where one worker
                # measures them all here.)
                yield from processor.file_outcomes(group, written=written, on_frame=on_frame)
                through = True
            finally:
                if not through:
                    left.extend(written)  # the caller keeps those whose rows it wrote
        return
    # An executor, not a Pool: a worker killed by the system (out of memory) breaks it with an
    # error, where a Pool waits for that worker's results for ever.
    context = multiprocessing.get_context("spawn")
    with _hang_up_ignored_by_children():  # (the event's semaphore starts the resource tracker)
        # Told to the workers, not done to them: terminating them had made the executor's manager
        # thread print a traceback now and then under the run's last line.
        run_stopped = context.Event()
        frames_measured = context.Value("q", 0) if on_frame is not None else None
        groups_running = context.Array("b", len(groups), lock=False)  # (each flag written by one worker at a time)
        executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                       initargs=(options, run_log_level(), os.getpid(), run_stopped, frames_measured,
                                                 groups_running))
        # In file order, read in turn: the CSV is the same whatever the number of workers. (The
        # workers start as the groups are handed out, here.)
        futures = [executor.submit(_worker_run, group, index) for index, group in enumerate(groups)]
    # From the start, not only once stopped: a stop that lands inside the stopping itself (a second
    # signal, a hang-up under load) had left the exit hook's wake-up unguarded, now and then.
    _quiet_wakeup(executor)
    done = 0
    finished = False
    frames_said = 0  # of frames_measured, those told to on_frame

    def tell_frames() -> None:
        nonlocal frames_said
        if frames_measured is not None:
            measured = frames_measured.value
            for _ in range(measured - frames_said):
                on_frame()
            frames_said = max(frames_said, measured)
    try:
        for index in range(len(futures)):
            future = futures[index]
            # (Waited for a while at a time, that the workers' frames move the progress meanwhile: a long
            # cine had held it until its group was through.)
            while not wait([future], timeout=FRAME_POLL_S).done:
                tell_frames()
            tell_frames()  # (its group's frames before its outcomes, that these count none twice)
            yield from future.result()
            # Its rows are the caller's now: held here to the run's end, every group's results had grown the
            # process by about 2 KB a row (2 GB over a million cine frames; a scale-out review).
            futures[index] = future = None
            done += 1
        finished = True
    except BrokenProcessPool:
        # The groups the workers were measuring when one died (a file there that kills its decoder would end
        # --resume again, so they are named); where none was flagged, those after the last one read.
        running = [group for index, group in enumerate(groups) if groups_running[index]] \
            or groups[done:done + workers + 1]
        in_flight = [_csv_name(path, options.in_dir) for group in running for path, _ in group]
        shown = _first_named(in_flight, 30)
        raise WorkerDiedError("a worker process died (killed by the system, perhaps for want of memory): the rows "
                              "measured so far are in the CSV; --resume goes on, with fewer --workers if memory "
                              f"is short. Among the files then being measured: {shown}; if it dies there again, "
                              "one of them may be crashing a decoder: move it aside") from None
    finally:
        # Every result read, the workers are waited for: left to end as the interpreter exits, they
        # raced its exit hooks, which now and then printed a traceback ("Bad file descriptor")
        # under a run that had succeeded. Stopped early (an error, Ctrl-C, SIGTERM), the workers
        # drop what they hold, and what they wrote for groups whose rows may not have been
        # written is said in ``left`` (waited for a while: a worker stuck in a decoder is not).
        if not finished:
            run_stopped.set()
            processes = list((getattr(executor, "_processes", None) or {}).values())  # (shutdown forgets them)
            for future in futures[done:]:
                # (Those not yet handed to a worker, here and now: shutdown's cancel_futures does it
                # later, in the executor's own thread, and a future it cancels between the two
                # lines below would raise CancelledError where its exception is asked for.)
                future.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
            unread = [future for future in futures[done:] if not future.cancelled()]
            wait(unread, timeout=STOP_WAIT_S)
            for future in unread:
                if future.done() and future.exception() is None:
                    left.extend((outcome.file, path) for outcome in future.result() for path in outcome.outputs)
            if all(future.done() for future in unread):
                # Every worker idle: the executor's manager thread is let finish now, not raced by the
                # interpreter's exit hook, which under load had written to its closed wake-up pipe
                # (a traceback under the run's "interrupted" line). One stuck in a decoder is not waited for.
                executor.shutdown(wait=True)
            else:
                # Still busy after the wait (a decoder stuck on a file): ended, or the exit hook waits for it, and
                # the process and OUT's lock had lived on until that file was through (for good, if it never was).
                for process in processes:
                    with suppress(OSError, ValueError, AttributeError):
                        process.kill()
        else:
            executor.shutdown(wait=True)


__all__ = ["BatchOptions", "BatchSummary", "CSV_COLUMNS", "ExistingResultsError", "FileOutcome", "FileProcessor",
           "FrameFailure", "InferenceOptions", "LinkedOutputFolderError", "NoScansError", "OutputLockedError",
           "ROW_FAILURES", "RayEngineError", "ResumeError", "RowsFileReplacedError",
           "RunAdvice", "WorkerDiedError", "WorkingFolderGoneError", "check_inference_choices", "file_groups",
           "excluded_by", "file_sha256", "file_stamp", "glob_matcher", "spacing_cell", "utc_now_cell",
           "is_batch_output", "is_batch_output_part", "list_scans", "measurement_row", "orientation_looks_reversed",
           "output_lock", "output_stem", "prepare_resume", "printable_path", "read_done", "reason_codes",
           "reason_actions", "refuse_batch_output_as_input", "row_anatomy_unrecognised", "row_orientation_doubtful",
           "row_segmented", "row_symphysis_misplaced", "row_symphysis_unsure", "run_batch", "suffix_disambiguated",
           "symphysis_mostly_unsure", "has_other_names", "is_batch_run_csv", "write_measurements_csv"]
