"""Batch processing of a folder of scans into ``measurements.csv``.

Every file gets at least one row: a frame that was measured (status ok/warning/failed from the
measurement), or a file/frame that could not be read (status failed, reason ``unreadable`` and
the cause in ``error``). Rows are flushed as they are made, so an interrupted run loses
nothing; ``resume`` skips the (file, frame) pairs that the CSV already holds. With several
workers, files are processed in parallel processes that each load the model once; rows are
written in file order, so the CSV does not depend on the number of workers.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..io import ScanReadError, count_frames, parse_frame_selection, read_frames, write_label_png, write_overlay_png
from ..io.overlay import render_overlay
from ..measure import Measurement
from .backends import load_segmenter
from .pipeline import FrameResult, measure_frame, segment_frames
from .registry import resolve_model

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "file", "frame", "status", "reasons", "aop_deg", "hsd_mm", "hsd_px", "psfh_shortest_px", "psfh_shortest_mm",
    "spacing_x_mm", "spacing_y_mm", "method", "orientation", "model", "tta", "sop_instance_uid", "error",
)
CSV_NAME = "measurements.csv"
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
    # OnnxSegmenter). None: run_batch decides (on for runs of at least a group of files);
    # 0: off.
    fixed_batch: int | None = None


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
    engine: str = "local"  # "local" (processes on this machine) or "ray" (a Ray cluster, the [ray] extra)
    address: str | None = None  # Ray cluster address; None starts a local Ray instance
    # (relative path, output name) for scans whose masks and overlays would otherwise share a
    # name; run_batch fills it from the whole folder (see suffix_disambiguated).
    output_renames: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FrameFailure:
    """A file (frame_index None) or one of its frames that could not be read."""

    frame_index: int | None
    reason: str


@dataclass(frozen=True)
class FileOutcome:
    """What one file produced: its CSV rows and time spent (s) by stage."""

    file: str
    rows: tuple[dict, ...]
    timings: dict


@dataclass(frozen=True)
class BatchSummary:
    files: int
    rows: int
    skipped_files: int
    failed_rows: int
    csv_path: Path
    seconds: float
    timings: dict


def measurement_row(file: str, frame: int | str, measurement: Measurement | None, model: str,
                    sop_instance_uid: str | None, error: str = "",
                    method: str = "", orientation: str = "", tta: bool | None = None) -> dict:
    """One CSV row (all columns of :data:`CSV_COLUMNS`, empty where no value exists). ``tta``:
    whether the model's output was averaged with the mirrored frame's (None: no model ran)."""
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(file=file, frame=frame, model=model, sop_instance_uid=sop_instance_uid or "", error=error,
               method=method, orientation=orientation, tta=_tta_cell(tta))
    if measurement is None:
        row.update(status="failed", reasons="unreadable")
    else:
        for key, value in measurement.to_dict().items():
            if key in row:
                row[key] = "" if value is None else value
    return row


def _tta_cell(tta: bool | None) -> str:
    return "" if tta is None else str(bool(tta)).lower()


def list_scans(in_dir: Path, pattern: str = "**/*", exclude: Path | None = None) -> list[Path]:
    """Every regular, non-hidden file under ``in_dir`` matching ``pattern``, sorted; any file is
    listed (an unreadable one gets a failed row rather than vanishing from the results)."""
    exclude = exclude.resolve() if exclude else None
    found = []
    for path in in_dir.glob(pattern):
        rel = path.relative_to(in_dir)
        broken_link = path.is_symlink() and not path.exists()  # listed: its row says it cannot be read
        if not (path.is_file() or broken_link) or any(part.startswith(".") for part in rel.parts):
            continue
        if exclude and (exclude == path.resolve().parent or exclude in path.resolve().parents):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix())


def output_stem(rel: str, frame_index: int, n_frames: int) -> str:
    """``a/b/scan`` or ``a/b/scan_f0003`` (multi-frame) for a file's relative path."""
    stem = Path(rel)
    for suffix in (".nii.gz",):
        if rel.lower().endswith(suffix):
            stem = Path(rel[: -len(suffix)])
            break
    else:
        stem = stem.with_suffix("")
    return f"{stem.as_posix()}_f{frame_index:04d}" if n_frames > 1 else stem.as_posix()


def suffix_disambiguated(names: Iterable[str]) -> dict[str, str]:
    """Names (relative paths) whose output stems collide because they differ only in their
    suffix (``a/scan.dcm``, ``a/scan.png``), each mapped to one with the suffix joined to the
    stem (``a/scan_dcm.dcm``, ``a/scan_png.png``); names that do not collide are left out."""
    names = list(dict.fromkeys(names))
    stems = Counter(output_stem(n, 0, 1) for n in names)
    renames = {}
    for name in names:
        stem = output_stem(name, 0, 1)
        if stems[stem] > 1:
            suffix = name[len(stem):]
            renames[name] = f"{stem}_{suffix.lstrip('.').replace('.', '_')}{suffix}"
    return renames


class FileProcessor:
    """Segments and measures the frames of one file at a time; holds the loaded model."""

    def __init__(self, options: BatchOptions) -> None:
        self.options = options
        inf = options.inference
        self.spec = resolve_model(inf.model)
        self._output_names = dict(options.output_renames)
        self.segmenter = load_segmenter(self.spec, inf.backend, inf.device, inf.threads, inf.fixed_batch)

    @property
    def model_name(self) -> str:
        return self.segmenter.info.name

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
        8 calls on one. Each file's results still come in frame order.
        """
        timings = timings if timings is not None else {}
        for key in STAGES:
            timings.setdefault(key, 0.0)
        inf = self.options.inference
        pending: list[tuple[int, object]] = []  # (item index, frame) awaiting the model
        for item, (path, done_frames) in enumerate(items):
            started = time.perf_counter()
            try:
                frames = read_frames(path, inf.frames, inf.spacing_mm)
            except ScanReadError as exc:
                timings["read_s"] += time.perf_counter() - started
                yield item, FrameFailure(None, exc.reason)
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
                except ScanReadError as exc:
                    # Rows of the frames before it come first; later frames cannot be trusted.
                    yield from self._process(pending, timings)
                    pending = []
                    yield item, FrameFailure(index, exc.reason)
                    break
                finally:
                    timings["read_s"] += time.perf_counter() - started
                index = frame.frame_index + 1
                if frame.frame_index in done_frames:
                    continue
                pending.append((item, frame))
                if len(pending) == FRAMES_PER_BATCH:
                    yield from self._process(pending, timings)
                    pending = []
        yield from self._process(pending, timings)

    def _process(self, pending: list, timings: dict) -> Iterator[tuple[int, FrameResult]]:
        if not pending:
            return
        inf = self.options.inference
        masks, prep_s, model_s = segment_frames([frame for _, frame in pending], self.segmenter, inf.tta)
        timings["preprocess_s"] += prep_s
        timings["model_s"] += model_s
        for (item, frame), labels in zip(pending, masks):
            started = time.perf_counter()
            measurement = measure_frame(labels, frame, method=inf.method, orientation=inf.orientation)
            timings["measure_s"] += time.perf_counter() - started
            yield item, FrameResult(frame, labels, measurement, self.model_name)

    def __call__(self, path: Path, done_frames: frozenset = frozenset()) -> FileOutcome:
        """The CSV rows of one file, writing masks/overlays as the options ask."""
        return self.process_files([(path, done_frames)])[0]

    def process_files(self, items: list[tuple[Path, frozenset]]) -> list[FileOutcome]:
        """One :class:`FileOutcome` per item, in order; frames share model calls across files.
        Stage times of a shared call are split between files by their number of frames."""
        opts, inf = self.options, self.options.inference
        rels = [path.relative_to(opts.in_dir).as_posix() for path, _ in items]
        rows: list[list[dict]] = [[] for _ in items]
        timings: dict = {}
        for item, result in self.results_of_files(items, timings):
            rel = rels[item]
            if isinstance(result, FrameFailure):
                rows[item].append(measurement_row(rel, "" if result.frame_index is None else result.frame_index,
                                                  None, self.model_name, None, result.reason, inf.method,
                                                  inf.orientation, inf.tta))
                continue
            started = time.perf_counter()
            frame = result.frame
            stem = output_stem(self._output_names.get(rel, rel), frame.frame_index, frame.n_frames)
            if opts.save_masks:
                write_label_png(opts.out_dir / "masks" / f"{stem}.png", result.labels)
            if opts.overlays:
                write_overlay_png(opts.out_dir / "overlays" / f"{stem}.png",
                                  render_overlay(frame.pixels, result.labels, result.measurement, title=rel))
            timings["write_s"] += time.perf_counter() - started
            rows[item].append(measurement_row(rel, frame.frame_index, result.measurement, self.model_name,
                                              frame.provenance.sop_instance_uid, "", inf.method, inf.orientation,
                                              inf.tta))
        total_rows = max(1, sum(len(r) for r in rows))
        return [FileOutcome(rel, tuple(file_rows), {k: v * len(file_rows) / total_rows for k, v in timings.items()})
                for rel, file_rows in zip(rels, rows)]


class NoScansError(ValueError):
    """The folder holds no file that the pattern takes."""


class ResumeError(ValueError):
    """A measurements.csv that a run cannot append to without mixing results."""


def _complete_rows(csv_path: Path, expect: dict[str, str] | None = None) -> tuple[list[dict], bool]:
    """The CSV's complete rows, and whether a last row was left half-written by a killed run
    (no newline at its end: read as complete it would mark its file done).

    ``expect`` (column -> value, e.g. the model and method of this run) refuses a CSV whose
    rows were made otherwise, and a header that is not this version's columns: appending to
    either would mix results that a reader of the CSV could not tell apart."""
    if not csv_path.exists():
        return [], False
    with open(csv_path, newline="") as fh:
        text = fh.read()
    complete = text[:text.rfind("\n") + 1]
    if not complete:
        return [], bool(text)
    reader = csv.DictReader(io.StringIO(complete, newline=""))
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ResumeError(f"{csv_path} has other columns than this version of ipp-seg writes; "
                          "resume into a new --out folder")
    rows = list(reader)
    for row in rows:
        for column, value in (expect or {}).items():
            if row[column] != value:
                raise ResumeError(f"{csv_path} holds rows made with {column} {row[column]!r}, this run uses "
                                  f"{value!r}: resume with the same options, or write to a new --out folder")
    return rows, complete != text


def _done_of(rows: list[dict]) -> dict[str, set]:
    done: dict[str, set] = {}
    for row in rows:
        frame = row.get("frame", "")
        done.setdefault(row["file"], set()).add(int(frame) if frame.isdigit() else "")
    return done


def read_done(csv_path: Path) -> dict[str, set]:
    """(file -> set of frame indices, or {""} for a file-level failure) already in the CSV."""
    return _done_of(_complete_rows(csv_path)[0])


def prepare_resume(csv_path: Path, expect: dict[str, str] | None = None) -> dict[str, set]:
    """What a resumed run may skip: the CSV's rows, less a row a killed run left half-written
    and the rows of files or frames that could not be read (a decoder may have been installed
    since, a file copied in full), which are taken out of the CSV so that their new rows do not
    join them. The file is rewritten (atomically) only when something is taken out."""
    rows, partial = _complete_rows(csv_path, expect)
    kept = [row for row in rows if row["reasons"] != "unreadable"]
    if partial or len(kept) < len(rows):
        staging = csv_path.with_name(csv_path.name + ".resume")
        with open(staging, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(staging, csv_path)
        log.warning("%s: %d unreadable row(s)%s taken out; those files are tried again", csv_path,
                    len(rows) - len(kept), " and a half-written last row" if partial else "")
    return _done_of(kept)


# Worker processes keep one FileProcessor each (the model is loaded once per process).
_WORKER: FileProcessor | None = None


def _worker_init(options: BatchOptions) -> None:
    global _WORKER
    _WORKER = FileProcessor(options)


def _worker_run(group: list[tuple[Path, frozenset]]) -> list[FileOutcome]:
    return _WORKER.process_files(group)


def run_batch(options: BatchOptions,
              on_progress: Callable[[FileOutcome], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> BatchSummary:
    """Process every scan under ``options.in_dir``; write ``out_dir/measurements.csv``."""
    started = time.perf_counter()
    if not options.in_dir.is_dir():
        raise NotADirectoryError(f"{options.in_dir} is not a folder")
    if options.engine not in ENGINES:
        raise ValueError(f"unknown engine {options.engine!r}: use {' or '.join(ENGINES)}")
    # An unknown model fails before a previous measurements.csv is replaced.
    spec = resolve_model(options.inference.model)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = options.out_dir / CSV_NAME
    files = list_scans(options.in_dir, options.glob, exclude=options.out_dir)
    if not files:  # before a previous CSV is touched
        raise NoScansError(f"no files under {options.in_dir} match {options.glob!r}")
    done: dict[str, set] = {}
    if options.resume:
        inf = options.inference
        done = prepare_resume(csv_path, expect={"model": spec.name, "method": inf.method,
                                                "orientation": inf.orientation, "tta": _tta_cell(inf.tta)})
    if options.save_masks or options.overlays:
        # From the whole folder (done files too), so that a resumed run names files alike.
        renames = suffix_disambiguated(p.relative_to(options.in_dir).as_posix() for p in files)
        options = replace(options, output_renames=tuple(sorted(renames.items())))
    todo: list[tuple[Path, frozenset]] = []
    skipped = 0
    for path in files:
        rel = path.relative_to(options.in_dir).as_posix()
        seen = done.get(rel)
        if seen is not None and ("" in seen or _all_frames_done(path, seen, options.inference.frames)):
            skipped += 1
            continue
        todo.append((path, frozenset(f for f in (seen or ()) if f != "")))
    if on_start:
        on_start(len(todo))

    if options.inference.fixed_batch is None and len(todo) >= FILES_PER_GROUP:
        # Decided by the number of files alone, so that every engine and number of workers
        # makes the same model calls (and so the same CSV).
        options = replace(options, inference=replace(options.inference, fixed_batch=FRAMES_PER_BATCH))
    workers = max(1, min(options.workers, len(todo) or 1))
    cores = os.cpu_count() or 1
    if options.inference.threads is None and options.engine == "local":
        # (Ray sizes its actors from the cluster's CPUs, not this machine's.)
        # Threads split between workers: oversubscribing 2 cores costs more than it gives.
        options = replace(options, inference=replace(options.inference, threads=max(1, cores // workers)))
    # Set up the engine (the Ray one needs its package) before a previous CSV is replaced.
    outcomes = _engine_outcomes(options, todo, workers)
    if csv_path.exists() and not options.resume:
        csv_path.unlink()
    totals = dict.fromkeys(STAGES, 0.0)
    n_rows = n_failed = 0
    new_file = not csv_path.exists() or csv_path.stat().st_size == 0
    with open(csv_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        if new_file:
            writer.writeheader()
            fh.flush()
        for outcome in outcomes:
            for row in outcome.rows:
                writer.writerow(row)
                n_rows += 1
                n_failed += row["status"] == "failed"
            fh.flush()
            for key, value in outcome.timings.items():
                totals[key] += value
            if on_progress:
                on_progress(outcome)
    return BatchSummary(len(files), n_rows, skipped, n_failed, csv_path, time.perf_counter() - started, totals)


def _all_frames_done(path: Path, seen: set, frames: str) -> bool:
    try:
        wanted = parse_frame_selection(frames).indices(count_frames(path))
    except (ScanReadError, ValueError):
        return False
    return all(i in seen for i in wanted)


def _engine_outcomes(options: BatchOptions, todo: list, workers: int) -> Iterator[FileOutcome]:
    if options.engine == "ray":
        from .ray_engine import ray_outcomes

        return ray_outcomes(options, todo, workers, options.address)
    return _outcomes(options, todo, workers)


def file_groups(todo: list[tuple[Path, frozenset]]) -> list[list[tuple[Path, frozenset]]]:
    """``todo`` in consecutive groups of ``FILES_PER_GROUP``, the unit a worker takes: every
    engine uses the same groups, so frames share model calls the same way everywhere."""
    return [todo[i:i + FILES_PER_GROUP] for i in range(0, len(todo), FILES_PER_GROUP)]


def _outcomes(options: BatchOptions, todo: list, workers: int) -> Iterator[FileOutcome]:
    # Files go to the model in groups so that single-frame scans still share model calls.
    groups = file_groups(todo)
    if workers == 1:
        processor = FileProcessor(options)
        for group in groups:
            yield from processor.process_files(group)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_worker_init, initargs=(options,)) as pool:
        # imap keeps file order: the CSV is the same whatever the number of workers.
        for outcomes in pool.imap(_worker_run, groups, chunksize=1):
            yield from outcomes


__all__ = ["BatchOptions", "BatchSummary", "CSV_COLUMNS", "FileOutcome", "FileProcessor", "FrameFailure",
           "InferenceOptions", "NoScansError", "ResumeError", "file_groups", "list_scans", "measurement_row",
           "output_stem", "prepare_resume", "read_done", "run_batch", "suffix_disambiguated"]
