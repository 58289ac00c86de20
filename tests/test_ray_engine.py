"""`ipp-seg batch --engine ray`: a Ray Data run writes the same measurements.csv as the local
engine on the same folder (PNG and DICOM scans and an unreadable file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ipp_seg.inference import ray_engine
from ipp_seg.inference.batch import BatchOptions, FileOutcome, run_batch
from ipp_seg.inference.ray_engine import decode_outcome, encode_outcome, ray_outcomes

ray = pytest.importorskip("ray")


def test_outcome_round_trip_keeps_cells():
    """Mixed cells (str, int, float, "", numpy scalars) come back as the CSV writes them."""
    row = {"file": "a.png", "frame": 0, "status": "ok", "aop_deg": np.float64(0.1) + np.float64(0.2),
           "hsd_mm": "", "hsd_px": np.float32(12.3), "spacing_x_mm": 0.35, "error": ""}
    back = decode_outcome(encode_outcome(FileOutcome("a.png", (row,), {"read_s": 0.25})))
    assert back.file == "a.png" and back.timings == {"read_s": 0.25}
    (got,) = back.rows
    assert {k: str(v) for k, v in got.items()} == {k: str(v) for k, v in row.items()}
    assert got["frame"] == 0 and got["hsd_mm"] == ""
    counted = decode_outcome(encode_outcome(FileOutcome("b.dcm", (row,), {}, ("x_seg.dcm",), 1, 1)))
    assert (counted.outputs, counted.dicom_written, counted.dicom_refused) == (("x_seg.dcm",), 1, 1)


def test_nothing_to_do_yields_nothing(tmp_path):
    assert list(ray_outcomes(BatchOptions(tmp_path, tmp_path / "out"), [], workers=2)) == []


@pytest.fixture(scope="module")
def ray_instance():
    # A fresh local instance (not one already running here): 2 CPUs for 2 workers and a small
    # object store, since only a few JSON rows pass through it.
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024,
             include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def scans(tmp_path):
    samples = Path(__file__).resolve().parents[1] / "sample_data"
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    shutil.copy(samples / "psfhs_04380.png", root / "a.png")
    shutil.copy(samples / "psfhs_04700.png", root / "sub" / "b.png")
    shutil.copy(samples / "psfhs_04750.png", root / "c.png")
    shutil.copy(samples / "psfhs_04700_us.dcm", root / "d.dcm")
    (root / "bad.png").write_text("not an image")
    return root


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside Ray Data's own context code
def test_ray_engine_csv_equals_local(scans, tmp_path, ray_instance, monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[2:])
        return ray_outcomes(*args)

    monkeypatch.setattr(ray_engine, "ray_outcomes", spy)
    local = run_batch(BatchOptions(scans, tmp_path / "local", workers=1, save_masks=True))
    assert not calls
    on_ray = run_batch(BatchOptions(scans, tmp_path / "ray", engine="ray", workers=2, save_masks=True))
    assert calls == [(2, None)]  # run_batch went through the Ray engine: 2 workers, local instance

    local_csv = local.csv_path.read_text()
    # The same rows to the last digit, but when each was made (measured_at, the last column).
    assert [line.rsplit(",", 1)[0] for line in on_ray.csv_path.read_text().splitlines()] == \
        [line.rsplit(",", 1)[0] for line in local_csv.splitlines()]
    assert (on_ray.files, on_ray.rows, on_ray.failed_rows) == (local.files, local.rows, local.failed_rows) == (5, 5, 1)
    assert "bad.png" in local_csv and "unreadable" in local_csv
    # The actors wrote the masks where the local engine does.
    masks = sorted(p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*.png"))
    assert masks == ["masks/a.png", "masks/c.png", "masks/d.png", "masks/sub/b.png"]
    assert on_ray.timings["model_s"] > 0
