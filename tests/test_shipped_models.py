"""The shipped models: files present, checksums as their cards say, and they segment a sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.pipeline import predict_frame
from ipp_seg.inference.registry import DEFAULT_MODEL, models_dir, resolve_model, sha256_of, shipped_models
from ipp_seg.io import read_frame
from ipp_seg.nn.configs import list_configs

REQUIRED = ("dssau-net-s", "star-dssau-net-s")  # the training issue's two small models
SHIPPED = tuple(s.name for s in shipped_models())  # every model with a card, the default included


def test_both_small_models_are_shipped_with_cards():
    names = set(SHIPPED)
    assert set(REQUIRED) <= names
    assert DEFAULT_MODEL in names
    for name in names:
        assert (models_dir() / f"{name}.md").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_files_match_card_checksums_and_size_limit(name):
    spec = resolve_model(name)
    # The training issue's bound for the small configs; the accuracy issue's for a paper config,
    # which ships with float16 weights.
    paper = spec.card["config"].endswith("-paper")
    limit = 60 * 1000 * 1000 if paper else 25 * 1024 * 1024
    assert spec.card.get("weights_stored_as", "float32") == ("float16" if paper else "float32")
    for key, path in (("onnx", spec.onnx_path), ("torch", spec.torch_path)):
        entry = spec.card["files"][key]
        assert path.name == entry["name"]
        assert path.stat().st_size == entry["bytes"] < limit
        assert sha256_of(path) == entry["sha256"], f"{path.name} differs from its model card"
    card = spec.card
    assert card["config"] in {c.name for c in list_configs()}
    command = card["training"]["command"]
    assert command.startswith("ipp-seg ") and " train " in command and f"--config {card['config']}" in command
    assert "10.1038/s41597-024-03266-4" in card["training"]["data"]
    assert card["validation"]["overall"]["cases"] == 230


@pytest.mark.parametrize("name", SHIPPED)
def test_model_segments_a_sample_frame_with_both_structures(name, sample_png):
    spec = resolve_model(name)
    segmenter = OnnxSegmenter(spec, threads=1)
    meta_name = segmenter.session.get_modelmeta().custom_metadata_map["config_name"]
    assert meta_name == spec.card["config"]
    result = predict_frame(read_frame(sample_png), segmenter)
    counts = np.bincount(result.labels.ravel(), minlength=3)
    assert counts[1] > 50 and counts[2] > 1000, counts  # PS and FH both found
    assert result.measurement.status in ("ok", "warning")
    assert 60 <= result.measurement.aop_deg <= 200


@pytest.mark.parametrize("name", SHIPPED)
def test_torch_weights_segment_as_the_onnx_file_does(name, sample_png):
    """The .pt is the same network as the ONNX file: the torch backend's masks and angle agree
    with onnxruntime's (exactly for float32 weights; for float16 storage the ONNX file holds
    convolutions folded with their batch norms and then rounded, a slight difference)."""
    pytest.importorskip("torch")
    from ipp_seg.inference.backends import TorchSegmenter

    spec = resolve_model(name)
    frame = read_frame(sample_png)
    onnx_result = predict_frame(frame, OnnxSegmenter(spec, threads=1))
    torch_result = predict_frame(frame, TorchSegmenter(spec, threads=1))
    agreement = float((onnx_result.labels == torch_result.labels).mean())
    assert agreement >= 0.998, agreement
    assert abs(onnx_result.measurement.aop_deg - torch_result.measurement.aop_deg) < 0.5


def test_unknown_model_name_lists_the_shipped_ones():
    from ipp_seg.inference.registry import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="dssau-net-s"):
        resolve_model("nonexistent-model")


def test_cards_name_the_validation_frame_that_copies_a_training_frame():
    """PSFHS lists frame 04316 (training) again as 04398 (narrow validation block); the README
    said so, the cards, which travel with the weights, did not (a validation engineer's pass)."""
    from conftest import PSFHS

    for card_path in sorted(models_dir().glob("*.json")):
        card = json.loads(card_path.read_text())
        if any(a <= "04398" <= b for a, b in card.get("validation_case_ids") or []):
            assert card.get("validation_copies_of_training_frames") == [["04398", "04316"]], card_path.name
            assert "04398 holds the same pixels as training frame 04316" in card_path.with_suffix(".md").read_text()
    if not (PSFHS / "image_mha" / "04398.mha").is_file():
        pytest.skip(f"PSFHS data not found at {PSFHS}: the copy itself is not checked")
    from ipp_seg.io import read_frame

    copy, trained = (read_frame(PSFHS / "image_mha" / f"{case}.mha").pixels for case in ("04398", "04316"))
    np.testing.assert_array_equal(copy, trained)


def test_cards_are_valid_json():
    for card_path in models_dir().glob("*.json"):
        json.loads(card_path.read_text())


def test_each_markdown_card_says_what_its_json_card_says():
    """The .md is written from the .json; a change to the writer (here: a run "trained on every
    frame" of a copy that held none of the validation blocks) is carried into every shipped card."""
    pytest.importorskip("torch")  # (ipp_seg.train imports it)
    from ipp_seg.train.ship import model_card_markdown

    cards = sorted(models_dir().glob("*.json"))
    assert cards
    for card_path in cards:
        assert card_path.with_suffix(".md").read_text() == model_card_markdown(json.loads(card_path.read_text()))
    paper = (models_dir() / "dssau-net-paper.md").read_text()
    assert "trained on every frame of `.gpudata/psfhs-train-png`" in paper and "frames, validation blocks excluded" \
        in paper


def test_fixed_batch_session_pads_and_splits_to_the_same_labels(sample_png):
    """A session specialised to batch 4 accepts any number of frames (padded / split) and gives
    each frame the labels the dynamic session gives it."""
    from ipp_seg.inference.pipeline import prepare_input

    spec = resolve_model(None)
    dynamic = OnnxSegmenter(spec, threads=1)
    fixed = OnnxSegmenter(spec, threads=1, fixed_batch=4)
    assert fixed.fixed_batch == 4 and dynamic.fixed_batch is None
    info = dynamic.info
    frames = [read_frame(sample_png), read_frame(sample_png.with_name("psfhs_04750.png"))]
    inputs = [prepare_input(f, info.input_size, info.in_channels, info.normalisation)[0] for f in frames]
    for n in (1, 4, 6):
        batch = np.stack([inputs[i % 2] for i in range(n)])
        want, got = dynamic.logits(batch), fixed.logits(batch)
        assert got.shape == want.shape == (n, 3, *info.input_size)
        # Same model, different kernel fusion: rounding can flip a near-tied token in the
        # attention's top-k, which moves a few logits a little; labels agree all but exactly.
        assert np.abs(got - want).mean() < 0.02  # logits are of order 5; a mixed-up frame differs by ~1
        assert (got.argmax(1) != want.argmax(1)).mean() < 1e-4


def test_pixels_that_are_not_square_reach_the_network_as_square_ones(sample_png):
    """A scanner whose pixels are twice as wide in mm as tall: the frame stored 2x narrower with
    that calibration must read the angle of the square-pixel frame, not of a squeezed one."""
    import cv2

    from ipp_seg.inference.pipeline import square_pixel_size
    from ipp_seg.io import ImagingRegion, UltrasoundFrame

    assert square_pixel_size(100, 80, (0.2, 0.1)) == (200, 80)
    assert square_pixel_size(100, 80, (0.1, 0.1015)) == (100, 80)  # within 2 %: square
    assert square_pixel_size(100, 80, (0.1, 0.5)) == (100, 80)  # beyond 4:1 the header is not trusted
    assert square_pixel_size(100, 80, None) == (100, 80)
    # The coarser spacing kept where the finer would make a square beyond 40 million pixels (memory).
    assert square_pixel_size(4000, 4000, (0.1, 0.2)) == (2000, 4000)
    segmenter = OnnxSegmenter(resolve_model(None), threads=1)
    square = read_frame(sample_png, spacing_mm=(0.2, 0.2))
    h, w = square.pixels.shape
    squeezed = cv2.resize(square.pixels, (w // 2, h), interpolation=cv2.INTER_AREA)
    region = ImagingRegion(0, 0, w // 2, h, (0.4, 0.2))
    narrow = UltrasoundFrame(squeezed, None, (region,), 0, 1, square.provenance)
    reference = predict_frame(square, segmenter).measurement
    measured = predict_frame(narrow, segmenter)
    assert measured.labels.shape == (h, w // 2)
    assert measured.measurement.aop_deg == pytest.approx(reference.aop_deg, abs=2.0)
    assert measured.measurement.hsd_mm == pytest.approx(reference.hsd_mm, abs=1.0)


def test_a_cards_validation_segments_each_frame_as_a_batch_run_does(psfhs_dir, tmp_path):
    """The figures on a card are reproducible with ``ipp-seg batch`` + ``ipp-seg evaluate`` to the
    last digit: the card's validation path calls the model with the batch's fixed 8 frames.
    (With the session's batch size left open, 81 of the 230 validation masks had differed by up
    to 22 pixels, and a 30-frame block's median angle by 0.24 deg.)"""
    from ipp_seg.evaluate import evaluate_folders
    from ipp_seg.inference.batch import BatchOptions, InferenceOptions, run_batch
    from ipp_seg.train.ship import validate_onnx

    ids = [f"{n:05d}" for n in range(4372, 4384)]  # 12 narrow-sector frames: one full call, one padded
    data = tmp_path / "data"
    for folder in ("image_mha", "label_mha"):
        (data / folder).mkdir(parents=True)
        for cid in ids:
            (data / folder / f"{cid}.mha").symlink_to(psfhs_dir / folder / f"{cid}.mha")
    spec = resolve_model("dssau-net-s-heldout")
    (validated,) = validate_onnx(spec.onnx_path, data, ids, blocks={})
    run_batch(BatchOptions(in_dir=data / "image_mha", out_dir=tmp_path / "run", save_masks=True,
                           inference=InferenceOptions(model="dssau-net-s-heldout")))
    report = evaluate_folders(tmp_path / "run", data / "label_mha")
    card = validated["ellipse"]["overall"]
    for metric, key in (("dice_ps", "dice_ps"), ("dice_fh", "dice_fh"), ("hd_all", "hd_all_px"),
                        ("delta_aop", "mean_abs_delta_aop_deg")):
        assert report.overall.metrics[metric].mean == card[key], metric


def test_the_onnx_backend_turns_telemetry_events_off_itself(monkeypatch):
    """For a program that imported onnxruntime before ipp_seg, when the environment setting came too late."""
    import onnxruntime

    calls = []
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: calls.append(True), raising=False)
    OnnxSegmenter(resolve_model(DEFAULT_MODEL))
    assert calls
