"""Shared fixtures: paths to the repository's sample data and the shared PSFHS data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
PSFHS = REPO.parent / "shared" / "data" / "psfhs"


def pytest_collection_modifyitems(items) -> None:
    """Every test that reads the shared data through ``psfhs_dir`` is marked ``data`` (``-m "not
    data"`` leaves them out), as those that read it otherwise are marked by hand."""
    for item in items:
        if "psfhs_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def psfhs_dir() -> Path:
    if not (PSFHS / "image_mha").is_dir():
        pytest.skip(f"shared PSFHS data not found at {PSFHS} (tests that need it are skipped)")
    return PSFHS


@pytest.fixture(scope="session")
def sample_png() -> Path:
    return SAMPLES / "psfhs_04700.png"


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    return SAMPLES / "psfhs_04700_us.dcm"


@pytest.fixture
def two_frames_a_model_call(monkeypatch) -> None:
    """Batch runs of this test make model calls of 2 frames, not 8: tests' runs measure a few
    frames each, and calls padded with zero frames to 8 had been most of the time of those that
    run batch (the calls are padded and split by the same code; test_shipped_models keeps 8).
    Worker processes, which start afresh, keep 8."""
    import ipp_seg.inference.batch as batch_module

    monkeypatch.setattr(batch_module, "FRAMES_PER_BATCH", 2)


@pytest.fixture(autouse=True, scope="session")
def _onnx_sessions_reused():
    """The tests open the same model files hundreds of times (a session each run, in this
    process): an onnxruntime session of a file, with the same settings, is made once and reused
    while the file stays as it was (its path, size, inode and time). Opening them had been a
    quarter of the time of the tests that run batch. Failures to open are not kept; worker
    processes, which start afresh, open their own."""
    import functools
    import os

    from ipp_seg.inference import backends

    opened = backends.inference_session

    @functools.lru_cache(maxsize=8)
    def kept(path, stamp, threads, fixed_batch, providers):
        return opened(path, threads, fixed_batch, providers)

    def reused(path, threads, fixed_batch, providers):
        found = os.stat(path)
        return kept(path, (found.st_size, found.st_ino, found.st_mtime_ns), threads, fixed_batch, tuple(providers))

    backends.inference_session = reused
    yield
    backends.inference_session = opened


def _stop_signals_by_default() -> None:
    """In a child before it runs: Ctrl-C and SIGHUP as a terminal's session gives them. A suite run
    under nohup, or as a script's background job, has them ignored, and a child keeps an ignored
    signal, which ipp-seg then leaves ignored (as a job under nohup must outlive its session)."""
    import signal

    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


@pytest.fixture
def stoppable():
    """A ``preexec_fn`` for a child ipp-seg that a test stops with Ctrl-C or SIGHUP (POSIX)."""
    return _stop_signals_by_default

