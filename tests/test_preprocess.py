"""Input normalisation shared by training and inference (ipp_seg.inference.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest

from ipp_seg.inference.preprocess import DEFAULT_NORMALISATION, normalise_frame, with_local_contrast


def _two_gains_frame() -> np.ndarray:
    """The same speckle texture at two gains: the left half at 40 %, the right at full."""
    rng = np.random.default_rng(0)
    texture = rng.integers(60, 200, size=(128, 64)).astype(np.float32)
    return np.hstack([texture * 0.4, texture]).astype(np.uint8)


def test_percentile_normalisation_maps_the_percentiles_to_zero_and_one_less_offset():
    frame = np.arange(256 * 4, dtype=np.float32).reshape(32, 32)
    x = normalise_frame(frame)
    lo, hi = np.percentile(frame, [1.0, 99.0])
    expected = np.clip((frame - lo) / (hi - lo), -0.5, 2.0) - 0.5
    assert x.dtype == np.float32 and np.allclose(x, expected, atol=1e-6)


def test_local_contrast_evens_out_a_gain_difference_across_the_frame():
    frame = _two_gains_frame()
    plain = normalise_frame(frame)
    local = normalise_frame(frame, with_local_contrast(DEFAULT_NORMALISATION, 2.0))
    gap_plain = plain[:, 64:].mean() - plain[:, :64].mean()
    gap_local = local[:, 64:].mean() - local[:, :64].mean()
    assert 0 < gap_local < 0.8 * gap_plain
    # the dark half's texture is stretched: its local contrast grows
    assert local[:, 8:56].std() > 1.2 * plain[:, 8:56].std()
    assert local.dtype == np.float32 and local.min() >= -0.5 and local.max() <= 1.5


def test_local_contrast_keeps_the_bright_tail_above_the_high_percentile():
    frame = _two_gains_frame().astype(np.float32)
    frame[10:14, 100:104] = 2000.0  # bone-bright: far above the 99th percentile
    local = normalise_frame(frame, with_local_contrast(DEFAULT_NORMALISATION, 2.0))
    assert np.all(local[10:14, 100:104] == 2.0 - 0.5)  # clipped at clip_high, not at 1


def test_local_contrast_settings_are_data_and_checked():
    norm = with_local_contrast(DEFAULT_NORMALISATION, 3.0, tile_grid=4)
    assert norm["local_contrast"] == {"clip_limit": 3.0, "tile_grid": 4}
    assert "local_contrast" not in DEFAULT_NORMALISATION  # the default is not changed in place
    for bad in ((0.0, 8), (2.0, 0)):
        with pytest.raises(ValueError, match="local contrast"):
            with_local_contrast(DEFAULT_NORMALISATION, *bad)
    with pytest.raises(ValueError, match="unknown normalisation kind"):
        normalise_frame(np.zeros((8, 8)), {"kind": "zscore"})


@pytest.mark.parametrize("side", [1024, 768, 300, 200])
def test_a_label_mask_resized_stays_on_its_image(side):
    # OpenCV's plain nearest neighbour takes each block's first pixel: a training mask of a 768 px frame resized to
    # 256 lay 0.37 px down and right of its image (an inference review).
    import cv2

    from ipp_seg.inference.preprocess import resize_image, resize_labels

    labels = np.zeros((side, side), np.uint8)
    cv2.circle(labels, (side // 2 + 1, side // 3 + 2), side // 5, 1, -1)
    image = resize_image(labels.astype(np.float32), (256, 256))
    resized = resize_labels(labels, (256, 256))

    def centre(mask):
        ys, xs = np.nonzero(mask > 0.5)
        return np.array([ys.mean(), xs.mean()])

    assert np.abs(centre(resized) - centre(image)).max() < 0.25  # (an even factor: a quarter of one at most)
