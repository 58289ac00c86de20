"""ipp_seg.evaluate.acquisition: wide vs narrow sector from the frame itself, on drawn sectors
and on the shared PSFHS frames (skipped when the data is absent)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ipp_seg.evaluate.acquisition import (
    DEEP_WIDTH_THRESHOLD,
    acquisition_style,
    sector_shape,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/psfhs"
NARROW_IDS = range(4302, 4402)  # the narrow, deep sector with a black border in the shared data


def fan(centre_y, inner_r, outer_r, half_angle_deg, seed=0, size=256):
    """A speckled ultrasound-like sector hanging from an apex above the frame (uint8)."""
    sector = np.zeros((size, size), dtype=np.uint8)
    centre = (size // 2, centre_y)
    start, end = 90 - half_angle_deg, 90 + half_angle_deg  # 90 deg points down the frame
    cv2.ellipse(sector, centre, (outer_r, outer_r), 0, start, end, 1, thickness=-1)
    cv2.ellipse(sector, centre, (inner_r, inner_r), 0, start, end, 0, thickness=-1)
    rng = np.random.default_rng(seed)
    speckle = rng.integers(25, 90, size=(size, size), dtype=np.uint8)
    return np.where(sector > 0, speckle, 0).astype(np.uint8)


def wide_frame():
    img = fan(centre_y=-20, inner_r=30, outer_r=245, half_angle_deg=60)
    cv2.circle(img, (110, 140), 45, 0, thickness=-1)  # an anechoic region as black as the border
    img[5:60, 3:6] = 255  # a scale bar, as on the wide-style frames
    return img


def narrow_frame():
    return fan(centre_y=-60, inner_r=75, outer_r=340, half_angle_deg=28, seed=1)


def test_drawn_sectors_are_told_apart():
    wide, narrow = sector_shape(wide_frame()), sector_shape(narrow_frame())
    assert wide.deep_width < DEEP_WIDTH_THRESHOLD <= narrow.deep_width
    assert narrow.bottom_reach > wide.bottom_reach
    assert acquisition_style(wide_frame()) == "wide"
    assert acquisition_style(narrow_frame()) == "narrow"


def test_style_survives_gain_size_and_plane_layout():
    for make, style in ((wide_frame, "wide"), (narrow_frame, "narrow")):
        img = make()
        assert acquisition_style(np.clip(img * 0.5, 0, 255).astype(np.uint8)) == style
        assert acquisition_style(np.clip(img.astype(np.float32) * 2.0, 0, 255)) == style
        assert acquisition_style(cv2.resize(img, (400, 300), interpolation=cv2.INTER_LINEAR)) == style
        assert acquisition_style(np.stack([img] * 3)) == style  # PSFHS (3, H, W)
        assert acquisition_style(np.stack([img] * 3, axis=-1)) == style  # (H, W, 3)


def test_blank_frame_is_unknown():
    assert sector_shape(np.zeros((64, 64), np.uint8)) is None
    assert acquisition_style(np.zeros((64, 64), np.uint8)) == "unknown"


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        acquisition_style(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError):
        acquisition_style(np.zeros((0, 0)))


@pytest.mark.data
def test_style_agrees_with_the_id_rule_on_the_shared_frames():
    images = DATA / "image_mha"
    if not images.is_dir():
        pytest.skip(f"shared PSFHS data not found at {DATA} (needs image_mha/)")
    from ipp_seg.io import read_frame

    paths = sorted(images.glob("*.mha"))
    assert len(paths) > 0
    agree = 0
    wrong: list[str] = []
    for path in paths:
        expected = "narrow" if int(path.stem) in NARROW_IDS else "wide"
        got = acquisition_style(read_frame(path).pixels)
        if got == expected:
            agree += 1
        else:
            wrong.append(f"{path.stem}:{got}")
    assert agree / len(paths) >= 0.98, f"{agree}/{len(paths)} agree; wrong: {wrong[:20]}"
