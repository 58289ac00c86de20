"""Shared fixtures: paths to the repository's sample data and the shared PSFHS data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
PSFHS = REPO.parent / "shared" / "data" / "psfhs"


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
