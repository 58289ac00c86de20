"""The Ray engine of ``ipp-seg batch``: the same per-file work as the local engine, on a Ray cluster.

The driver lists the files (as :func:`~ipp_seg.inference.batch.run_batch` does for every
engine); Ray Data hands them, a group of files per batch, to a fixed pool of actors that each load the
model once and run :class:`~ipp_seg.inference.batch.FileProcessor`; the outcomes come back to
the driver, which writes the rows in file order, so ``measurements.csv`` is the same as the
local engine's.

Every node reads the scans and writes masks/overlays itself, so the input and output folders
must be at the same path on every node and on the driver (a shared filesystem), and ipp-seg
with its models must be installed on every node. Ray Data cannot run through Ray Client, so
with a ``ray://`` address the pipeline runs in an actor on the cluster and the driver fetches
the outcomes from it. Needs the ``[ray]`` extra (``pip install -e '.[ray]'`` in the clone).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import IppSegError
from ..machine import software_version
from .batch import (BatchOptions, FileOutcome, FileProcessor, RayEngineError, configure_worker_logging, file_groups,
                    run_log_level)
from .registry import model_sha256, resolve_model

log = logging.getLogger(__name__)


def _plain(value):
    """JSON fallback for numpy scalars; a float keeps the digits ``str`` gives it, so the CSV
    cell is the one the local engine writes."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a batch row")


def encode_outcome(outcome: FileOutcome) -> str:
    """One JSON string per outcome: rows hold mixed str/int/float/"" cells, which Arrow columns
    cannot type, so they cross the cluster as text."""
    return json.dumps({"file": outcome.file, "rows": list(outcome.rows), "timings": outcome.timings,
                       "outputs": list(outcome.outputs), "dicom": [outcome.dicom_written, outcome.dicom_refused]},
                      default=_plain)


def decode_outcome(text: str) -> FileOutcome:
    data = json.loads(text)
    return FileOutcome(data["file"], tuple(data["rows"]), data["timings"], tuple(data.get("outputs", ())),
                       *data.get("dicom", (0, 0)))


class _RayFileWorker:
    """A Ray Data actor: builds one FileProcessor (loads the model once) and processes each
    group of files it is given (the local engine's groups, so frames share model calls the same
    way and the numbers are the same)."""

    def __init__(self, options: BatchOptions, log_level: int | None = None) -> None:
        configure_worker_logging(log_level)  # its warnings reach the driver's log as the local workers' do
        self.processor = FileProcessor(options)

    def __call__(self, batch: dict) -> dict:
        outcomes = []
        for group in batch["group"]:
            items = [(Path(path), frozenset(done)) for path, done in json.loads(str(group))]
            outcomes.append(json.dumps([encode_outcome(o) for o in self.processor.process_files(items)]))
        return {"index": np.asarray(batch["index"], dtype=np.int64), "outcome": np.array(outcomes, dtype=object)}


def ray_outcomes(options: BatchOptions, todo: list[tuple[Path, frozenset]], workers: int,
                 address: str | None = None) -> Iterator[FileOutcome]:
    """Process ``todo`` (file path, frame indices already done) with ``workers`` Ray actors;
    yield each file's :class:`FileOutcome` in the order of ``todo``.

    ``address`` is a Ray cluster address (``auto``, ``host:6379`` or a Ray Client address
    ``ray://host:10001``); None connects to the cluster named by ``RAY_ADDRESS`` or one
    started on this machine, or else starts a local Ray instance. Ray is shut down (or
    disconnected) at the end only if this function initialised it. Each actor runs the model
    with ``options.inference.threads`` threads (None: the cluster's CPUs shared between the
    workers) and reserves that many CPUs, at most the CPUs of the largest node.
    """
    # Ray reports usage statistics unless told not to (read when it starts): a tool that reads
    # patients' scans sends nothing of its own accord. RAY_USAGE_STATS_ENABLED=1 keeps them on.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError("the ray engine needs Ray Data: pip install -e '.[ray]' in the ipp-seg clone") from exc
    return _stream(ray, options, list(todo), workers, address)


def _stream(ray, options: BatchOptions, todo: list, workers: int, address: str | None) -> Iterator[FileOutcome]:
    if not todo:
        return
    started_here = not ray.is_initialized()
    if started_here:
        init_args: dict = {"address": address, "log_to_driver": False}
        if address is None:
            init_args["include_dashboard"] = False
        try:
            ray.init(**init_args)
        except Exception as exc:  # noqa: BLE001 - Ray's ConnectionError had read as a disk that could not be written
            raise RayEngineError(f"cannot start or reach the Ray cluster{f' at {address}' if address else ''}: "
                                 f"{type(exc).__name__}: {_first_line(exc)}") from None
    try:
        yield from _run(ray, options, todo, workers)
    except IppSegError:
        raise
    except Exception as exc:  # noqa: BLE001 - a node's failure comes as Ray's own exception types (RayTaskError...)
        raise RayEngineError(f"a Ray worker failed: {type(exc).__name__}: {_first_line(exc)}; the rows measured so "
                             "far are in the CSV, and --resume goes on") from None
    finally:
        if started_here:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    """An exception's first line (Ray's carry the remote traceback after it)."""
    return (str(exc).strip().splitlines() or [""])[0]


def check_outcome_origin(outcome: FileOutcome, weights_sha256: str, version: str) -> None:
    """Refuse (:class:`RayEngineError`) an outcome whose rows a node made with another model file
    or another version of ipp-seg than the run's: every node runs its own install, and such rows had
    joined the CSV (found only by a later --resume, which then refused the whole CSV)."""
    for row in outcome.rows:
        for column, wanted, what in (("model_sha256", weights_sha256, "model file"),
                                     ("ipp_seg_version", version, "version of ipp-seg")):
            if row.get(column) and row[column] != wanted:
                raise RayEngineError(
                    f"a Ray node measured {outcome.file} with another {what} ({column} {str(row[column])[:16]}, this "
                    f"run's {wanted[:16]}): install the same ipp-seg and models on every node; the rows measured "
                    "before it are in the CSV, and --resume goes on")


def _run(ray, options: BatchOptions, todo: list, workers: int) -> Iterator[FileOutcome]:
    node_cpus = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")]
    largest = int(max(node_cpus, default=0.0))
    total = int(sum(node_cpus))
    threads = options.inference.threads or max(1, total // max(workers, 1))
    if largest >= 1 and threads > largest:
        # An actor asking for more CPUs than any node has would never be scheduled.
        log.info("%d threads per worker exceed the largest node's %d CPUs; using %d", threads, largest, largest)
        threads = largest
    if total and workers * threads > total:
        log.warning("%d workers x %d CPUs exceed the cluster's %d CPUs; workers wait for room", workers, threads, total)
    options = replace(options, inference=replace(options.inference, threads=threads))
    groups = file_groups(todo)
    items = [{"index": i, "group": json.dumps([(str(path), sorted(done)) for path, done in group])}
             for i, group in enumerate(groups)]
    log.info("ray engine: %d files, %d workers x %d threads", len(todo), workers, threads)

    if ray.util.client.ray.is_connected():
        # Ray Data cannot execute through Ray Client (ray://): a driver actor on the cluster runs
        # the dataset and this process fetches its outcomes as they come.
        driver = ray.remote(num_cpus=0)(_ClusterDriver).remote(options, items, workers, run_log_level())
        encoded = _fetch(ray, driver, max(1, workers))
    else:
        encoded = _ClusterDriver(options, items, workers, run_log_level()).stream()

    # Outcomes arrive as actors finish; hold early groups until every file before them is out.
    # (What every node's rows must carry: the driver's model file and version of ipp-seg.)
    weights = model_sha256(resolve_model(options.inference.model), options.inference.backend)
    version = software_version()
    waiting: dict[int, list[FileOutcome]] = {}
    next_index = files_out = 0
    for index, text in encoded:
        waiting[index] = [decode_outcome(t) for t in json.loads(text)]
        while next_index in waiting:
            for outcome in waiting.pop(next_index):
                check_outcome_origin(outcome, weights, version)
                files_out += 1
                yield outcome
            next_index += 1
    if files_out != len(todo):
        raise RayEngineError(f"the ray engine returned no outcome for {len(todo) - files_out} of {len(todo)} files")


def _fetch(ray, driver, count: int) -> Iterator[tuple[int, str]]:
    while True:
        chunk = ray.get(driver.take.remote(count))
        if not chunk:
            return
        yield from chunk


class _ClusterDriver:
    """Runs the Ray Data pipeline: one group of files per batch through a fixed pool of actors. Used in
    the driver process, or as an actor on the cluster when the driver is a Ray Client."""

    def __init__(self, options: BatchOptions, items: list[dict], workers: int, log_level: int | None = None) -> None:
        import ray.data

        # One block per group, so the groups spread over the actors rather than queue behind one.
        self.dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayFileWorker,
            fn_constructor_args=(options, log_level),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=options.inference.threads,
        )
        # Set on this dataset's own context, not Ray's process-wide one.
        self.dataset.context.enable_progress_bars = False
        self.rows: Iterator[tuple[int, str]] | None = None

    def stream(self) -> Iterator[tuple[int, str]]:
        """(group index, encoded outcomes of its files) of each group, in the order they finish."""
        for row in self.dataset.iter_rows():
            yield int(row["index"]), str(row["outcome"])

    def take(self, count: int) -> list[tuple[int, str]]:
        """The next ``count`` outcomes (fewer at the end; waits for them); empty once all are out."""
        if self.rows is None:
            self.rows = self.stream()
        out = []
        for item in self.rows:
            out.append(item)
            if len(out) == count:
                break
        return out


__all__ = ["check_outcome_origin", "decode_outcome", "encode_outcome", "ray_outcomes"]
