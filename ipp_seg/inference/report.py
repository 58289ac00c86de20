"""Per-frame outputs of ``predict``: a JSON-able report, and the files written with ``--out``."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..machine import runtime_description, software_version
from ..io import Provenance, write_label_png, write_overlay_png
from ..io.dicom_results import (LEADING_ZEROS_SAID, SEG_REFUSED_FOR, DicomOutputsRefused, DicomResultError,
                                 uids_with_leading_zeros_in, write_frame_dicom)
from ..io.folders import printable_file, printable_path, read_json_file
from ..io.formats import name_without_suffix
from ..io.overlay import burned_in_text_shown
from ..io.writers import (MASK_NAME_SUFFIX, OVERLAY_NAME_SUFFIX, output_provenance, remove_staging_files,
                          replacing)
from ..measure import Landmarks, Measurement
from .batch import (NO_SUCH_FRAME, NOT_AN_IMAGE, NOT_ULTRASOUND, UNREADABLE, FileProcessor,
                    FrameFailure, dicom_results_cell, dicom_uids, file_sha256, file_stamp, fitting_stem,
                    measurement_row, output_stem, shown_confidence, spacing_cell, suffix_disambiguated, utc_now_cell,
                    warn_of_threads)
from .pipeline import FrameResult, frame_echoes, segmented_box
from .registry import warn_of_training_frames


def measurement_report(file: str, frame_index: int, m: Measurement) -> dict:
    """One measurement as plain JSON-able values (what ``measure --json`` prints per mask). The
    file is named as the CSV names it (:func:`~ipp_seg.io.folders.printable_path`): a name's bytes
    that are not UTF-8 would be lone surrogates, which strict JSON readers refuse or blur."""
    return {
        "file": printable_file(file),
        "frame": frame_index,
        "status": m.status,
        "reasons": list(m.reasons),
        "error": None,  # (a frame that could not be read or processed has its cause here: one schema)
        "aop_deg": m.aop_deg,
        "aop_doubtful": m.aop_doubtful,  # (what the tables and overlays mark "(doubtful)"; null without an AoP)
        "hsd_mm": m.hsd_mm,
        "hsd_px": m.hsd_px,
        "hsd_doubtful": m.hsd_doubtful,
        "psfh_shortest_mm": m.psfh_shortest_mm,
        "psfh_shortest_px": m.psfh_shortest_px,
        "method": m.method,
        "orientation": m.orientation,
        "spacing_mm": None if m.spacing_mm is None else list(m.spacing_mm),
        "spacing_source": m.spacing_source,
        "landmarks": m.landmarks.to_dict(),
    }


def frame_report(result: FrameResult, provider: str, elapsed_ms: float | None, tta: bool = False,
                 confidence_floors: dict[str, float] | None = None) -> dict:
    """Everything known about one frame's measurement, as plain JSON-able values (``tta``:
    whether the model's output was averaged with the mirrored frame's; ``elapsed_ms`` None
    where the frame's own time is not known; ``confidence_floors``: the head and PS confidences
    the frame was judged against, :func:`~ipp_seg.inference.backends.confidence_floors_used`)."""
    frame = result.frame
    return {
        **measurement_report(frame.provenance.path, frame.frame_index, result.measurement),
        "n_frames": frame.n_frames,
        # (ms after the cine's first frame, from its header: null for a single frame or where none is given)
        "frame_time_ms": frame.provenance.frame_time_ms,
        **dicom_uids(frame.provenance),
        # Which part of the frame was segmented, and of how many tissue regions (a dual view has
        # two): a reader of the report alone can tell which view was measured.
        "segmented_box": list(segmented_box(frame)),
        "tissue_regions": len(frame.regions),
        "model": result.model,
        "model_sha256": result.model_sha256 or None,
        "tta": tta,
        "head_confidence": shown_confidence(result.head_confidence),
        "ps_confidence": shown_confidence(result.ps_confidence),
        # (A model card's floors move frames between measured and failed: a report names them.)
        "confidence_floors": confidence_floors,
        "provider": provider,
        "ipp_seg_version": software_version(),
        "runtime": runtime_description(),
        "time_ms": None if elapsed_ms is None else round(elapsed_ms, 1),
        "dicom_results": None,  # none asked (write_frame_outputs fills it where asked): the CSV's empty cell
    }


def measured_file_keys(path: str | os.PathLike[str] | None, spacing_given: tuple[float, float] | None,
                       sha256_of: Callable[[Path, tuple[str, str]], str] | None = None) -> dict:
    """:func:`run_keys_of_row`'s keys for ``path`` as it is now (as the library's reports give
    them, where no row was made: ``measured_at`` is when the report is made); the file's keys
    null without a path. ``sha256_of(path, stamp)``: the file's sha256 (:func:`file_sha256` by
    default; a caller reporting each frame of a cine keeps it while the stamp stays)."""
    stamp = file_stamp(Path(path)) if path else ("", "")
    digest = "" if not path else (sha256_of or (lambda p, _: file_sha256(p)))(Path(path), stamp)
    return run_keys_of_row({"spacing_given_mm": spacing_cell(spacing_given), "file_bytes": stamp[0],
                            "file_modified": stamp[1], "file_sha256": digest, "measured_at": utc_now_cell()})


def run_keys_of_row(row: dict) -> dict:
    """What a frame's CSV row (:func:`~ipp_seg.inference.batch.measurement_row`) says of its
    run and file beyond the measurement, as a JSON report gives it: ``spacing_given_mm`` (the
    ``--spacing-mm`` given, [x, y] mm, or null), ``file_bytes``, ``file_modified`` and
    ``file_sha256`` (the scan's size, modification time and content when it was measured), and
    ``measured_at`` (UTC); null where the row is empty."""
    given = row["spacing_given_mm"]
    return {"spacing_given_mm": [float(v) for v in given.split(",")] if given else None,
            "file_bytes": int(row["file_bytes"]) if row["file_bytes"] else None,
            **{key: row[key] or None for key in ("file_modified", "file_sha256", "measured_at")}}


def unreadable_measurement_report(file: str, frame_index: int | None, reason: str, method: str,
                                  orientation: str, code: str = "unreadable") -> dict:
    """:func:`measurement_report`'s keys for a file or frame that could not be read (or, with
    ``code`` ``processing_error``, processed), null where nothing was measured, with the cause in
    ``error``: JSON readers meet one schema."""
    return {
        "file": printable_file(file), "frame": frame_index, "status": "failed", "reasons": [code], "error": reason,
        "aop_deg": None, "aop_doubtful": None, "hsd_mm": None, "hsd_px": None, "hsd_doubtful": None,
        "psfh_shortest_mm": None,
        "psfh_shortest_px": None,
        "method": method, "orientation": orientation, "spacing_mm": None, "spacing_source": None,
        "landmarks": Landmarks().to_dict(),  # (its keys, each null: a reader of landmarks["..."] meets one schema)
    }


def unreadable_report(file: str, frame_index: int | None, reason: str, model: str, provider: str, method: str,
                      orientation: str, tta: bool = False, code: str = "unreadable",
                      model_sha256: str | None = None, provenance: Provenance | None = None,
                      n_frames: int | None = None, confidence_floors: dict[str, float] | None = None) -> dict:
    """:func:`frame_report`'s keys for a file or frame that could not be read or processed
    (with the DICOM UIDs and cine time of ``provenance``, the frame's or the header's read before
    the failure, and ``n_frames``, the scan's frames where they were counted)."""
    return {
        **unreadable_measurement_report(file, frame_index, reason, method, orientation, code),
        "n_frames": n_frames, "frame_time_ms": getattr(provenance, "frame_time_ms", None), **dicom_uids(provenance),
        "segmented_box": None, "tissue_regions": None,
        "model": model, "model_sha256": model_sha256 or None, "tta": tta,
        "head_confidence": None,
        "ps_confidence": None,
        "confidence_floors": confidence_floors,
        "provider": provider,
        "ipp_seg_version": software_version(), "runtime": runtime_description(), "time_ms": None, "dicom_results": None,
    }


def scan_key(scan: Path | str) -> Path:
    """A scan's absolute path, the key of :func:`output_names`. Links are not followed: a link's
    outputs are named after the link, as ``batch`` names them (two links to one stored file,
    ``patientA.png`` and ``patientB.png``, had both written ``blob1.json``, the second over the first)."""
    return Path(os.path.abspath(scan))


def output_names(scans: list[Path]) -> dict[Path, str]:
    """A name for each scan's outputs (keyed by :func:`scan_key`; for :func:`output_stem`),
    unique among ``scans`` so that no scan's outputs overwrite another's: the file name where
    its stem is unique; else its path below the common folder of the scans that share its
    stem (``a/scan.dcm`` and ``b/scan.dcm``, written into sub-folders as ``batch`` does), or its
    whole path, the drive a folder, where they lie on different drives (Windows); and, for files
    that differ only in their suffix (``scan.dcm``, ``scan.png``), the suffix joined to the stem.
    Stems are compared regardless of case: on macOS and Windows ``Scan`` and ``scan`` are one file."""
    resolved = list(dict.fromkeys(scan_key(s) for s in scans))
    by_stem: dict[str, list[Path]] = {}
    for p in resolved:
        by_stem.setdefault(output_stem(p.name, 0, 1).casefold(), []).append(p)
    names = {}
    for group in by_stem.values():
        try:
            common = Path(os.path.commonpath([p.parent for p in group]))
        except ValueError:  # no common folder: on different drives
            names.update({p: "/".join(part.strip("\\/:") for part in p.parts if part.strip("\\/:")) for p in group})
            continue
        names.update({p: p.relative_to(common).as_posix() for p in group})
    renames = suffix_disambiguated(names.values())
    return {p: renames.get(name, name) for p, name in names.items()}


#: What :func:`write_frame_outputs` adds to an output stem, besides the report's ``.json``.
OUTPUT_SUFFIXES = (f"{MASK_NAME_SUFFIX}.png", f"{OVERLAY_NAME_SUFFIX}.png", "_seg.dcm", "_sr.dcm")


def name_beside_earlier_outputs(out_dir: Path, name: str, frame_index: int, n_frames: int, digest: str,
                                shown: str) -> tuple[str, str]:
    """``name`` (:func:`output_names`) for the outputs of the scan whose frame ``frame_index`` (its
    first; of ``n_frames``) is written into ``out_dir``, and what to say of it: where the report
    an earlier run wrote there under that name is of other bytes (another scan of the same name,
    or this one as it was; ``file_sha256``, else the ``file`` it names), the name takes ``~`` and
    the start of this scan's sha256 (``digest``), so that both stand, and a warning says so; else
    ``name``, and "".
    Separate runs into one folder had written each scan's outputs over those of another scan
    of the same file name. Files under the outputs' names beside no report of ipp-seg (an
    expert's ``<case>_mask.png`` in the layout ``train`` reads, a JSON of one's own) are kept
    alike: they had been written over without a word."""
    found = _others_under(out_dir / fitting_stem(output_stem(name, frame_index, n_frames)), digest, shown)
    if found is None:
        return name, ""
    named, why = found
    stem = name_without_suffix(name)
    for length in (8, 16, 64):  # (a longer digest where the ~ name too holds files of another: one's corrected mask)
        beside = f"{stem}~{digest[:length]}{name[len(stem):]}"  # (before the suffix, which output_stem takes off)
        beside_stem = fitting_stem(output_stem(beside, frame_index, n_frames))
        if _others_under(out_dir / beside_stem, digest, shown) is None:
            break
    return beside, (f"{shown}: {named} in {out_dir} {why}: kept; this scan's outputs are named "
                    f"{Path(beside_stem).name}.* beside it")


def _others_under(stem_there: Path, digest: str, shown: str) -> tuple[str, str] | None:
    """None where no output stands under ``stem_there`` (a path without its suffixes), or where
    those there are this scan's (its report's ``file_sha256`` is ``digest``, or, before that
    was recorded, its ``file`` is ``shown``); else (the files' names, why they are another's)."""
    earlier = stem_there.with_name(f"{stem_there.name}.json")
    try:
        report = read_json_file(earlier)  # (a pipe planted there is not waited on)
        same = report["file_sha256"] == digest if report.get("file_sha256") else report["file"] == shown
        return None if same else (earlier.name, "is an earlier run's report of other bytes (another scan of this "
                                                "name, or this one before it changed)")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # none, or no report of ipp-seg's
        others = [path for path in (earlier, *(stem_there.with_name(stem_there.name + suffix)
                                               for suffix in OUTPUT_SUFFIXES)) if os.path.lexists(path)]
        if not others:
            return None
        one = len(others) == 1
        return (", ".join(path.name for path in others),
                f"{'is' if one else 'are'} no output of ipp-seg (no report of ipp-seg beside {'it' if one else 'them'}: "
                "a file of one's own, or a run stopped before its report)")


def write_frame_outputs(result: FrameResult, out_dir: Path, report: dict, *, name: str | None = None,
                        dicom_seg: bool = False, dicom_sr: bool = False, run_uid: str | None = None,
                        numbers_used: dict[str, set[int]] | None = None,
                        run_started: datetime | None = None) -> list[Path]:
    """Write ``<stem>_mask.png``, ``<stem>_overlay.png``, ``<stem>.json`` (and DICOM SEG/SR for
    DICOM sources when asked) into ``out_dir``; return the paths written. ``name`` (from
    :func:`output_names`) replaces the source's file name where several scans share one.
    ``run_uid`` (one per run) puts the SEGs, and the SRs, made from one source series in one
    derived series each, numbered by frame (or by the source's instance number). ``numbers_used``
    (one dict per run) keeps those numbers unique in a series: where several multi-frame sources
    of one series would repeat a frame's number, the later ones continue after the highest.
    ``run_started`` (an aware datetime, one per run) dates those series. With a SEG or SR asked,
    ``report`` (and so the JSON) gets ``dicom_results`` as the CSV has it; one refused raises
    :class:`DicomOutputsRefused` once the rest, the JSON included, is written."""
    from ..io.overlay import imaged_pixels, overlay_title, render_overlay

    frame = result.frame
    stem = fitting_stem(output_stem(name or Path(frame.provenance.path).name, frame.frame_index, frame.n_frames))
    written = [out_dir / f"{stem}{MASK_NAME_SUFFIX}.png", out_dir / f"{stem}{OVERLAY_NAME_SUFFIX}.png",
               out_dir / f"{stem}.json"]
    written[0].parent.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    try:
        drawn_by = output_provenance(report.get("model"), report.get("model_sha256"), report.get("orientation"),
                                     report.get("tta"), report.get("file_sha256"), frame.frame_index)
        write_label_png(written[0], result.labels, drawn_by)
        made.append(written[0])
        write_overlay_png(written[1], render_overlay(imaged_pixels(frame.pixels, frame.regions), result.labels,
                                                     result.measurement,
                                                     # (named as the JSON and batch's overlay name it,
                                                     # its bytes read as UTF-8 whatever the locale)
                                                     title=overlay_title(
                                                         printable_path(Path(frame.provenance.path).name),
                                                         frame.frame_index, frame.n_frames,
                                                         frame.provenance.frame_number,
                                                         frame.provenance.frame_time_ms),
                                                     tta=bool(report.get("tta")), model=report.get("model"),
                                                     echoes=frame_echoes(frame)),
                          {**drawn_by, "method": result.measurement.method})  # (an overlay shows the measurement)
    except BaseException:
        # Stopped before its report (Ctrl-C, a full disk): no mask left without it, which a later run
        # would keep as a file of one's own, and train would read as an expert's.
        for path in made:
            with suppress(OSError):
                path.unlink()
        raise

    refusal = None
    if (dicom_seg or dicom_sr) and frame.provenance.source_format == "dicom":
        try:
            written += write_frame_dicom(frame.provenance.path, result.labels, result.measurement, out_dir / stem,
                                         frame_number=frame.provenance.frame_number, n_frames=frame.n_frames,
                                         seg=dicom_seg, sr=dicom_sr, model_name=result.model,
                                         model_sha256=result.model_sha256, tta=bool(report.get("tta")),
                                         software_version=software_version(), run_uid=run_uid, run_started=run_started,
                                         numbers_used=numbers_used)
            report["dicom_results"] = dicom_results_cell(dicom_seg, dicom_sr)
        except DicomOutputsRefused as exc:
            report["dicom_results"] = dicom_results_cell(dicom_seg, dicom_sr, [kind for kind, _ in exc.refused])
            written += exc.written
            refusal = exc
        except BaseException:  # (a full disk, say): the frame's report is written as it was before
            _write_report(written[2], report)
            raise
    elif dicom_seg or dicom_sr:
        report["dicom_results"] = None  # not DICOM: nothing for a SEG or SR to reference
    _write_report(written[2], report)
    if refusal is not None:
        raise DicomOutputsRefused(refusal.refused, written)
    return written


def _write_report(path: Path, report: dict) -> None:
    """A frame's JSON report, as ``predict --out`` writes it beside its outputs (or alone)."""
    with replacing(path, text=True, encoding="utf-8") as fh:
        fh.write(json.dumps(report, indent=2))


def write_failure_report(report: dict, stem: Path) -> list[Path]:
    """Write the report of a scan or frame that gave no masks as ``<stem>.json``, and remove the
    mask, overlay, SEG and SR an earlier run wrote under ``stem`` (of this scan and frame:
    :func:`name_beside_earlier_outputs` has named other scans' apart), which would otherwise be
    read as this report's; return the paths removed."""
    path = stem.with_name(f"{stem.name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_report(path, report)
    removed = []
    for suffix in OUTPUT_SUFFIXES:  # (a SEG and an SR too: an SR of a measurement the report says failed)
        with suppress(FileNotFoundError):
            stem.with_name(stem.name + suffix).unlink()
            removed.append(stem.with_name(stem.name + suffix))
    return removed


@dataclass(frozen=True)
class PredictedFrame:
    """One frame of a :func:`predict_scans` run (or one scan that gave no frame).

    ``row``: its measurements.csv row (:func:`~ipp_seg.inference.batch.measurement_row`, with
    ``time_ms``); ``report``: its JSON report (:func:`frame_report`); ``unusable``: the scan or
    frame could not be read or segmented (``errors`` says why); ``outputs_refused``: a DICOM
    SEG or SR asked for was not written (``errors`` says why, once per scan and cause);
    ``warnings``: what the user should know besides (a SEG/SR asked for a scan that is not
    DICOM, once per scan)."""

    scan: Path
    row: dict
    report: dict
    unusable: bool = False
    outputs_refused: bool = False
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def measurement_failed(self) -> bool:
        """The frame was read and segmented, and its measurement failed."""
        return not self.unusable and self.row["status"] == "failed"


#: A hidden staging file (:func:`~ipp_seg.io.writers.replacing`) older than this in a ``predict
#: --out`` folder is one a killed run left: no lock tells another run's write in progress from it.
STALE_STAGING_S = 600.0


def predict_scans(processor: FileProcessor, scans: Sequence[Path], out_dir: Path | None = None, *,
                  dicom_seg: bool = False, dicom_sr: bool = False) -> Iterator[PredictedFrame]:
    """Segment and measure each frame of ``scans`` (the frames ``processor``'s options select),
    in order; with ``out_dir``, write each frame's outputs there (:func:`write_frame_outputs`;
    names unique among ``scans``, SEGs and SRs of one source series in one derived series).

    Yields one :class:`PredictedFrame` per frame as it is measured, so that a caller can show
    progress; a scan or frame that cannot be read gives a failed one and the run goes on.

    Raises:
        OSError: an output could not be written (the disk is full, say).
        ImportError: a DICOM output needs highdicom.
    """
    inf = processor.options.inference
    provider = processor.segmenter.provider
    warn_of_training_frames(processor.spec, scans)
    warn_of_threads(inf.threads)  # (batch says it with its workers counted)
    if out_dir is not None:
        remove_staging_files(out_dir, older_than_s=STALE_STAGING_S)
    names = output_names(list(scans))  # scans that share a file name must not overwrite each other's outputs
    run_uid = uuid.uuid4().hex  # this run's SEGs (and SRs) of one source series share a series
    run_started = datetime.now(timezone.utc)  # ...and its date and time
    numbers_used: dict[str, set[int]] = {}  # ...with an Instance Number of their own each
    said: set[tuple[Path, str]] = set()  # (scan, cause): a cine's frames share their scan's refusal
    for scan in scans:
        started = time.perf_counter()
        shown = printable_file(str(scan))  # as the CSV and the JSON name it
        stamp, digest = file_stamp(scan), None  # (the stamp before reading, as batch takes it)
        name, named_beside = names[scan_key(scan)], None  # (named beside an earlier run's outputs: once a scan)
        for result in processor.results(scan):
            if digest is None:  # once a file, not of one without an image (as batch)
                digest = "" if getattr(result, "code", None) == NOT_AN_IMAGE else file_sha256(scan)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if isinstance(result, FrameFailure):
                frame = "" if result.frame_index is None else result.frame_index
                row = measurement_row(shown, frame, None, processor.model_name, result.provenance, result.reason,
                                      inf.method, inf.orientation, inf.tta, result.code, inf.spacing_mm, stamp,
                                      model_sha256=processor.model_sha256, file_sha256=digest,
                                      n_frames=result.n_frames)
                report = {**unreadable_report(str(scan), result.frame_index, result.reason, processor.model_name,
                                              provider, inf.method, inf.orientation, inf.tta, result.code,
                                              processor.model_sha256, result.provenance, result.n_frames,
                                              processor.confidence_floors),
                          "time_ms": round(elapsed_ms, 1),  # (the table shows it too: the time it took to refuse)
                          **run_keys_of_row(row)}
                verb = {UNREADABLE: "read", NOT_AN_IMAGE: "measure", NO_SUCH_FRAME: "measure",
                        NOT_ULTRASOUND: "segment"}.get(result.code, "process")
                warnings = []
                if out_dir is not None:  # (its report there too: a folder of reports had lost the failed scans)
                    # A frame of a file whose frames were not counted (one that could not be read) is named as a
                    # cine's; a file that gave no frame by its name alone.
                    index, count = ((0, 1) if result.frame_index is None else
                                    (result.frame_index, result.n_frames or result.frame_index + 2))
                    if named_beside is None:
                        # (A file without an image has no digest of its rows: one to name it by, where it must be.)
                        naming = digest or file_sha256(scan) or uuid.uuid4().hex
                        name, named_beside = name_beside_earlier_outputs(out_dir, name, index, count, naming, shown)
                        if named_beside:
                            warnings.append(named_beside)
                    removed = write_failure_report(report, out_dir / fitting_stem(output_stem(name, index, count)))
                    if removed:
                        warnings.append(f"{shown}: {', '.join(p.name for p in removed)}, of an earlier run, removed "
                                        f"from {out_dir}: this run gave no masks (its report says why)")
                # (A cine's frame named: the message had named the file, whose other frames were measured.)
                where = scan if result.frame_index is None or result.n_frames == 1 else \
                    f"{scan} frame {result.frame_index}"
                yield PredictedFrame(scan, {**row, "time_ms": elapsed_ms}, report, unusable=True,
                                     errors=(f"cannot {verb} {where}: {result.reason}",), warnings=tuple(warnings))
                started = time.perf_counter()
                continue
            row = measurement_row(shown, result.frame.frame_index, result.measurement, processor.model_name,
                                  result.frame.provenance, "", inf.method, inf.orientation, inf.tta,
                                  spacing_given=inf.spacing_mm, file_stamp=stamp, file_sha256=digest,
                                  head_confidence=result.head_confidence, ps_confidence=result.ps_confidence,
                                  model_sha256=processor.model_sha256, n_frames=result.frame.n_frames)
            report = {**frame_report(result, provider, elapsed_ms, inf.tta, processor.confidence_floors),
                      **run_keys_of_row(row)}
            errors, warnings, refused = [], [], False
            if out_dir is not None:
                if named_beside is None:
                    name, named_beside = name_beside_earlier_outputs(out_dir, name, result.frame.frame_index,
                                                                     result.frame.n_frames, digest, shown)
                    if named_beside:
                        warnings.append(named_beside)
                try:
                    write_frame_outputs(result, out_dir, report, name=name, dicom_seg=dicom_seg,
                                        dicom_sr=dicom_sr, run_uid=run_uid, numbers_used=numbers_used,
                                        run_started=run_started)
                except DicomResultError as exc:  # this scan's header; the others may be fine
                    # No SEG of a frame of no transperineal view is no fault of the scan or the output
                    # folder: its failed measurement says so (exit 1, not 2), and a warning why.
                    meant = all(str(cause) in SEG_REFUSED_FOR.values() for _, cause in getattr(exc, "refused", ()))
                    refused = refused or not meant
                    if (scan, str(exc)) not in said:  # once per scan and cause, the first frame named
                        said.add((scan, str(exc)))
                        where = f"{scan} frame {result.frame.frame_index}" if result.frame.n_frames > 1 else str(scan)
                        (warnings if meant else errors).append(f"{where}: {exc}")
                burned_in = burned_in_text_shown(result.frame)
                if burned_in and (scan, "burned in") not in said:
                    said.add((scan, "burned in"))
                    warnings.append(f"{scan}: {burned_in}")
                if (dicom_seg or dicom_sr) and result.frame.provenance.source_format != "dicom" \
                        and (scan, "not DICOM") not in said:
                    said.add((scan, "not DICOM"))  # a SEG or SR references a DICOM image
                    asked = "SEG and SR" if dicom_seg and dicom_sr else "SEG" if dicom_seg else "SR"
                    warnings.append(f"no DICOM {asked} for {scan}: it is not a DICOM file")
                if (dicom_seg or dicom_sr) and result.frame.provenance.source_format == "dicom" \
                        and (scan, "leading zeros") not in said:
                    said.add((scan, "leading zeros"))  # (once a scan: a cine's frames share its UIDs)
                    zeros = uids_with_leading_zeros_in(scan)
                    if zeros:
                        warnings.append(f"{scan}: its {' and '.join(zeros)} {LEADING_ZEROS_SAID}")
            row["dicom_results"] = report.get("dicom_results") or ""  # (as write_frame_outputs found it)
            yield PredictedFrame(scan, {**row, "time_ms": elapsed_ms}, report, outputs_refused=refused,
                                 errors=tuple(errors), warnings=tuple(warnings))
            started = time.perf_counter()

