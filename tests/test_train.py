"""The training loop, its losses, resume, and the data split."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch", reason="training tests need torch (pip install -e '.[dev]')")

from ipp_seg.cli import app  # noqa: E402
from ipp_seg.train.data import (AugmentationSettings, augment, contiguous_split, find_pairs,  # noqa: E402
                                in_id_range, parse_id_range)
from ipp_seg.train.loop import TrainSettings, load_torch_file, lr_at, train  # noqa: E402
from ipp_seg.train.losses import segmentation_loss, soft_dice_loss  # noqa: E402


def _synthetic_folder(tmp_path, n=6, size=64):
    """PNG image/mask pairs: a bright bar (PS) and a disc (FH)."""
    import cv2

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    for i in range(n):
        labels = np.zeros((size, size), np.uint8)
        cv2.ellipse(labels, (20 + i, 18), (10, 3), 20, 0, 360, 1, -1)
        cv2.circle(labels, (40, 42 - i), 14, 2, -1)
        image = (labels * 90 + rng.integers(0, 40, labels.shape)).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "images" / f"case{i:03d}.png"), image)
        cv2.imwrite(str(tmp_path / "masks" / f"case{i:03d}.png"), labels)
    return tmp_path


def test_training_pairs_that_cannot_be_told_apart_are_refused_and_masks_of_a_model_are_said(tmp_path, caplog):
    # A research fellow's pass on her own PNG folders: each of these had trained, some on misaligned pairs.
    import shutil
    import struct

    import cv2

    from ipp_seg.io import write_label_png
    from ipp_seg.train.data import load_cases

    base = _synthetic_folder(tmp_path / "base")
    assert len(load_cases(base)) == 6

    def variant(name):
        folder = tmp_path / name
        shutil.copytree(base, folder)
        return folder
    # masks/ and labels/ both there: which to train on cannot be told (labels/ had been passed over).
    both = variant("both")
    shutil.copytree(both / "masks", both / "labels")
    with pytest.raises(ValueError, match="holds both masks/ and labels/ beside images/.*keep one of them"):
        find_pairs(both)
    # Frames in folders below images/: said so (it had said there were no pairs at all).
    nested = variant("nested")
    for sub in ("images", "masks"):
        (nested / sub / "pt01").mkdir()
        for path in list((nested / sub).glob("*.png")):
            path.rename(nested / sub / "pt01" / path.name)
    with pytest.raises(ValueError, match=r"images holds frames in folders below it \(pt01\), and train reads the "
                                         r"frames in images/ itself.*\(pt01_f0.png\)"):
        find_pairs(nested)
    # ... also beside frames of its own (a QA pass: those below were left out without a word), at any depth.
    (nested / "images" / "pt01" / "case000.png").rename(nested / "images" / "case000.png")
    (nested / "masks" / "pt01" / "case000.png").rename(nested / "masks" / "case000.png")
    with pytest.raises(ValueError, match=r"images holds frames in folders below it \(pt01\)"):
        find_pairs(nested)
    shutil.move(nested / "images" / "pt01", nested / "images" / "deep" / "pt01")
    with pytest.raises(ValueError, match=r"images holds frames in folders below it \(deep\)"):
        find_pairs(nested)
    shutil.move(nested / "images" / "deep" / "pt01", nested / "images" / ".hidden")  # (a hidden folder: not frames)
    with pytest.raises(ValueError, match=r"masks holds frames in folders below it \(pt01\)"):
        find_pairs(nested)
    # A JPEG to be shown turned (EXIF orientation 6) beside a PNG mask stating none: square, it had trained turned.
    turned = variant("turned")
    image = cv2.imread(str(turned / "images" / "case002.png"), cv2.IMREAD_GRAYSCALE)
    encoded = cv2.imencode(".jpg", image)[1].tobytes()
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    payload = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    (turned / "images" / "case002.png").unlink()
    (turned / "images" / "case002.jpg").write_bytes(encoded[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2)
                                                    + payload + encoded[2:])
    with pytest.raises(ValueError, match=r"case002: the image .*case002.jpg and its mask .*case002.png are to be shown "
                                         r"turned or mirrored differently \(EXIF orientation 6 and none\)"):
        load_cases(turned)
    # Read by its bytes, as the reader takes it: a JPEG named .bmp (a QA pass: it had trained turned).
    (turned / "images" / "case002.jpg").rename(turned / "images" / "case002.bmp")
    with pytest.raises(ValueError, match=r"case002: .*\(EXIF orientation 6 and none\)"):
        load_cases(turned)
    # A label mask among the frames (predict refuses such a frame as no ultrasound).
    label_map = variant("label_map")
    shutil.copy(label_map / "masks" / "case004.png", label_map / "images" / "case004.png")
    with pytest.raises(ValueError, match=r"case004: the image .* holds 3 grey values \(0, 1, 2\): a label mask"):
        load_cases(label_map)
    # Masks ipp-seg wrote (a network's output): trained, and said.
    predicted = variant("predicted")
    for case in ("case000", "case001"):
        labels = cv2.imread(str(predicted / "masks" / f"{case}.png"), cv2.IMREAD_GRAYSCALE)
        write_label_png(predicted / "masks" / f"{case}.png", labels)
    from ipp_seg.io import write_overlay_png

    write_overlay_png(predicted / "images" / "case000_overlay.png", np.zeros((8, 8, 3), np.uint8))
    with caplog.at_level("WARNING"):
        assert len(load_cases(predicted)) == 6
    # (Its overlays there too, said as such: they had been named as images without a mask, a QA pass.)
    assert "1 overlay that ipp-seg wrote, left out (pictures, not frames): case000_overlay.png" in caplog.text
    assert "without a mask" not in caplog.text
    assert "2 of the 6 masks were written by ipp-seg, a model's masks and not an expert's outlines (case000, " \
        "case001): trained on, they teach that model's mistakes as truth" in caplog.text


def test_training_pairs_are_found_in_every_format_the_readers_take(tmp_path):
    # train had kept a list of suffixes of its own, without .nhdr (an NRRD header beside its data file), which the
    # readers take: such pairs had not been found.
    import SimpleITK as sitk

    from ipp_seg.io.formats import IMAGE_SUFFIXES, ITK_SUFFIXES
    from ipp_seg.train.data import find_pairs, load_cases

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    labels = np.zeros((64, 64), np.uint8)
    labels[10:20, 10:30], labels[30:60, 20:50] = 1, 2
    image = (labels * 90 + np.random.default_rng(0).integers(0, 40, labels.shape)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / "images" / "case001.nhdr"))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "masks" / "case001.nhdr"))
    assert [(case, image.name) for case, image, _ in find_pairs(tmp_path)] == [("case001", "case001.nhdr")]
    assert load_cases(tmp_path)[0].labels.max() == 2
    from ipp_seg.train.data import IMAGE_SUFFIXES as TRAINING_SUFFIXES

    assert set(TRAINING_SUFFIXES) == IMAGE_SUFFIXES | ITK_SUFFIXES


def test_soft_dice_has_gradient():
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    labels = torch.randint(0, 3, (2, 16, 16))
    loss = soft_dice_loss(logits, labels)
    loss.backward()
    assert 0 < float(loss) < 1
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_soft_dice_is_zero_for_a_perfect_prediction():
    labels = torch.randint(0, 3, (1, 8, 8))
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(logits, labels, eps=1e-6)) < 1e-4


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1e-3, 0.01) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1e-3)
    assert lrs[50] < lrs[10] and lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_contiguous_split_never_random():
    ids = [f"{i:05d}" for i in range(100, 160)]
    split = contiguous_split(ids, validation_count=10, extra_validation=("00120", "00124"))
    assert split.validation_ids == tuple(f"{i:05d}" for i in [*range(120, 125), *range(150, 160)])
    assert not set(split.train_ids) & set(split.validation_ids)
    assert len(split.train_ids) + len(split.validation_ids) == 60


def test_split_keeps_each_examinations_frames_together():
    # Names like patient01_frame004 sort as a whole (natural order), not by their last number,
    # which interleaved patients and put validation frames beside training ones.
    ids = [f"patient{p:02d}_frame{f:03d}" for p in (1, 2, 3) for f in (1, 2, 3, 4, 10)]
    split = contiguous_split(ids, validation_count=5)
    assert split.validation_ids == tuple(f"patient03_frame{f:03d}" for f in (1, 2, 3, 4, 10))
    block = contiguous_split(ids, 0, extra_validation=("patient02_frame001", "patient02_frame010"))
    assert block.validation_ids == tuple(f"patient02_frame{f:03d}" for f in (1, 2, 3, 4, 10))
    assert block.describe() == ("train patient01_frame001-patient01_frame010, patient03_frame001-patient03_frame010 "
                                "(10), validation patient02_frame001-patient02_frame010 (5)")


def test_id_blocks_are_parsed_and_matched_in_natural_order():
    assert parse_id_range("04602-04801") == ("04602", "04801")
    assert parse_id_range("pt-01-f0..pt-02-f0") == ("pt-01-f0", "pt-02-f0")
    assert parse_id_range("04700") == ("04700", "04700")
    for bad in ("", "a-b-c", "-04801", "04602-", "a..b..c", "a.."):
        with pytest.raises(ValueError, match="FIRST-LAST"):
            parse_id_range(bad)
    # Numbers compare as numbers: string order would put case_10 before case_9 and outside 9-12.
    assert [c for c in ("case_1", "case_9", "case_10", "case_12", "case_100") if in_id_range(c, "case_9", "case_12")] \
        == ["case_9", "case_10", "case_12"]
    assert in_id_range("04602", "04602", "04801") and not in_id_range("04802", "04602", "04801")


@pytest.mark.parametrize("count, extra, message", [(-3, None, "0 or more"), (2, ("00130", "00120"), "comes after"),
                                                   (2, ("00500", "00600"), "matches no case ID"),
                                                   (2, ("x", "y"), "matches no case ID"),
                                                   # a mistyped end had swept every later case into validation
                                                   (2, ("00130", "00990"), "00990 is no case ID \\(the range would "
                                                                           "hold 30 cases, 00130-00159\\)"),
                                                   (2, ("00129a", "00990"), "00129a and 00990 are no case IDs")])
def test_split_refuses_what_would_mislead(count, extra, message):
    with pytest.raises(ValueError, match=message):
        contiguous_split([f"{i:05d}" for i in range(100, 160)], count, extra)


def test_augmentation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(1)
    labels = np.zeros((64, 64), np.uint8)
    labels[20:40, 10:30] = 2
    image = np.where(labels == 2, 200, 10).astype(np.uint8)
    no_noise = AugmentationSettings(gain_range=(1, 1), gamma_range=(1, 1), depth_gain_probability=0,
                                    speckle_probability=0, blur_probability=0, sector_probability=0)
    for _ in range(5):
        img, lab = augment(image, labels, rng, no_noise)
        assert img.shape == lab.shape == (64, 64)
        inside = img[lab == 2]
        if inside.size:  # the bright square moved with its label
            assert np.median(inside) > 150


def test_elastic_deformation_moves_image_and_mask_together():
    labels = np.zeros((96, 96), np.uint8)
    labels[30:60, 20:50] = 1
    image = np.where(labels == 1, 200, 10).astype(np.uint8)
    only_elastic = AugmentationSettings(rotation_deg=0, scale_range=(1, 1), translate_fraction=0, flip_probability=0,
                                        gain_range=(1, 1), gamma_range=(1, 1), depth_gain_probability=0,
                                        speckle_probability=0, blur_probability=0, sector_probability=0,
                                        elastic_probability=1.0, elastic_alpha_px=6.0, elastic_sigma_px=8.0)
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(4):
        img, lab = augment(image, labels, rng, only_elastic)
        assert set(np.unique(lab)) <= {0, 1}
        changed += int((lab != labels).sum())
        # Interpolated intensities can blur the edge; the interior of the label stays bright.
        inner = cv2.erode((lab == 1).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.median(img[inner]) > 150 and np.median(img[lab == 0]) < 50
        assert abs(int((lab == 1).sum()) - 900) < 300  # deformed, not destroyed
    assert changed > 0


def test_shadow_darkens_a_band_and_keeps_the_labels():
    labels = np.zeros((64, 64), np.uint8)
    labels[10:50, 10:50] = 2
    image = np.full((64, 64), 120, np.uint8)
    only_shadow = AugmentationSettings(rotation_deg=0, scale_range=(1, 1), translate_fraction=0, flip_probability=0,
                                       gain_range=(1, 1), gamma_range=(1, 1), depth_gain_probability=0,
                                       speckle_probability=0, blur_probability=0, sector_probability=0,
                                       shadow_probability=1.0)
    img, lab = augment(image, labels, np.random.default_rng(0), only_shadow)
    assert np.array_equal(lab, labels)
    assert img.min() < 0.6 * 120 and np.isclose(img.max(), 120, atol=1)
    dark_rows = np.nonzero((img < 100).any(axis=1))[0]
    assert dark_rows.min() > 0 and dark_rows.max() == 63  # from some depth down to the bottom


def test_new_augmentations_off_by_default_leave_earlier_recipes_unchanged():
    # An earlier run's settings (no elastic or shadow fields) must draw the same frames.
    labels = np.zeros((48, 48), np.uint8)
    labels[10:30, 10:30] = 1
    image = (np.arange(48 * 48).reshape(48, 48) % 251).astype(np.uint8)
    old = {k: v for k, v in AugmentationSettings().__dict__.items() if not k.startswith(("elastic", "shadow"))}
    a = augment(image, labels, np.random.default_rng(7), AugmentationSettings(**old))
    b = augment(image, labels, np.random.default_rng(7), AugmentationSettings())
    c = augment(image, labels, np.random.default_rng(7), AugmentationSettings(elastic_probability=1.0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# Photometric augmentation only: frames keep their geometry, so tiny runs are reproducible.
NO_GEOMETRY = AugmentationSettings(rotation_deg=0, scale_range=(1, 1), translate_fraction=0, flip_probability=0,
                                   sector_probability=0)


def test_settings_take_paths_as_a_caller_has_them(tmp_path):
    # From Python, TrainSettings(data=Path(...)) had failed the run's first record: "not JSON serializable".
    settings = TrainSettings(config="dssau-net-s", data=tmp_path / "data", out=tmp_path / "run",
                             init_from=tmp_path / "parent.pt")
    assert (settings.data, settings.out, settings.init_from) == (str(tmp_path / "data"), str(tmp_path / "run"),
                                                                 str(tmp_path / "parent.pt"))
    assert TrainSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


def test_training_two_steps_loss_falls_and_resume_restores_optimiser(tmp_path):
    data = _synthetic_folder(tmp_path / "data")
    assert len(find_pairs(data)) == 6
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=2,
                             batch_size=4, validation_count=2, learning_rate=2e-3, warmup_epochs=0.0,
                             input_size=(64, 64), threads=1, bf16=False, augmentation=NO_GEOMETRY)
    losses = []
    result = train(settings, on_step=lambda e, s, n, loss: losses.append(loss))
    assert len(losses) == 2 and losses[1] < losses[0]
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "best.pt").exists()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["validation"] == ["case004", "case005"]
    assert result.history[-1].epoch == 2

    saved = load_torch_file(tmp_path / "run" / "last.pt")
    more = TrainSettings(**{**settings.__dict__, "epochs": 3})
    resumed_epochs = []
    train(more, resume=True, on_epoch=lambda r: resumed_epochs.append(r.epoch))
    assert resumed_epochs == [3]  # continued, not restarted
    after = load_torch_file(tmp_path / "run" / "last.pt")
    # The optimiser state was restored and advanced by one more step, not re-initialised.
    assert saved["optimiser"]["state"][0]["step"] == 2
    assert after["optimiser"]["state"][0]["step"] == 3
    assert len(after["history"]) == 3


def test_init_from_starts_from_the_checkpoint_weights_with_a_fresh_optimiser(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    base = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "first"), epochs=1,
                         batch_size=2, validation_count=1, input_size=(64, 64), threads=1, bf16=False)
    train(base)
    first = load_torch_file(tmp_path / "first" / "last.pt")
    # A learning rate of 0 leaves the weights where they started: exactly the first run's.
    tuned = TrainSettings(**{**base.__dict__, "out": str(tmp_path / "second"), "learning_rate": 0.0,
                             "init_from": str(tmp_path / "first" / "last.pt")})
    train(tuned)
    second = load_torch_file(tmp_path / "second" / "last.pt")
    for name, tensor in first["model"].items():
        if tensor.is_floating_point() and "running" not in name:
            assert torch.equal(tensor, second["model"][name]), name
    assert second["optimiser"]["state"][0]["step"] == 1  # a new optimiser, not the first run's
    assert second["settings"]["init_from"].endswith("last.pt")

    with pytest.raises(ValueError, match="not 'conv-unet-s'"):
        train(TrainSettings(**{**tuned.__dict__, "config": "conv-unet-s", "out": str(tmp_path / "third")}))


def test_a_run_resumes_with_its_init_from_spelt_another_way(tmp_path, monkeypatch):
    """An ML engineer's pass: a job script resumed from another folder, or with the full path,
    was refused ("--init-from differs from its recipe") for the very file the run started from:
    the path was recorded as typed, relative to a folder not recorded."""
    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=4)
    common = ["--validation-count", "1", "--input-size", "64", "--threads", "1", "--batch-size", "2"]
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["train", "data", "--out", "first", "--epochs", "1", *common]).exit_code == 0
    started = runner.invoke(app, ["train", "data", "--out", "second", "--epochs", "1", *common,
                                  "--init-from", "first/last.pt"])
    assert started.exit_code == 0, started.output
    assert load_torch_file(tmp_path / "second" / "last.pt")["settings"]["init_from"] == str(
        tmp_path / "first" / "last.pt")  # recorded in full
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for spelt in ("../first/last.pt", str(tmp_path / "first" / "last.pt")):
        resumed = runner.invoke(app, ["train", "../data", "--out", "../second", "--resume", "--epochs", "2", *common,
                                      "--init-from", spelt])
        assert resumed.exit_code == 0, (spelt, resumed.output)
    # Another file is still another recipe.
    other = runner.invoke(app, ["train", "../data", "--out", "../second", "--resume", "--epochs", "3", *common,
                                "--init-from", "../second/best.pt"])
    assert other.exit_code == 2 and "--init-from differs from its recipe" in " ".join(other.output.split())


def test_weight_average_is_what_is_kept_and_resume_continues_it(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=5)
    # 4 training frames in one batch: one step per epoch; no warm-up, so step 1 runs at the
    # full learning rate whatever the run's length.
    base = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "one"), epochs=1,
                         batch_size=4, validation_count=1, input_size=(64, 64), threads=1, bf16=False,
                         learning_rate=1e-2, warmup_epochs=0.0)
    train(base)
    after_step_1 = load_torch_file(tmp_path / "one" / "last.pt")["model"]
    # A decay this close to 1 keeps the average at its first value, the weights after step 1,
    # while the training weights move on for two more steps.
    slow = TrainSettings(**{**base.__dict__, "out": str(tmp_path / "ema"), "epochs": 3, "ema_decay": 0.99999})
    train(slow)
    ema = load_torch_file(tmp_path / "ema" / "last.pt")
    best = load_torch_file(tmp_path / "ema" / "best.pt")
    assert ema["ema_updates"] == 3 and "raw_model" not in best
    for name in ("head.weight", "stem.0.weight"):
        assert torch.allclose(ema["model"][name], after_step_1[name], atol=1e-6), name
        assert not torch.allclose(ema["raw_model"][name], after_step_1[name]), name

    # Resume restores the average and its count, not a fresh copy of the raw weights.
    part = TrainSettings(**{**slow.__dict__, "out": str(tmp_path / "resumed"), "epochs": 1})
    train(part)
    train(TrainSettings(**{**part.__dict__, "epochs": 3}), resume=True)
    resumed = load_torch_file(tmp_path / "resumed" / "last.pt")
    assert resumed["ema_updates"] == 3
    for key, value in ema["model"].items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-6), key


def test_init_from_a_parent_with_the_same_backbone_loads_all_but_the_new_head():
    from ipp_seg.nn.configs import get_config
    from ipp_seg.nn.dssau_net import build_network
    from ipp_seg.train.loop import load_initial_weights

    torch.manual_seed(0)
    parent = build_network("dssau-net-s")
    init = {"model": parent.state_dict(), "config": get_config("dssau-net-s").to_dict()}
    child = build_network("dssau-net-s-hr")
    fresh_before = {k: v.clone() for k, v in child.state_dict().items()}
    fresh = load_initial_weights(child, init, "parent.pt")
    # Only the detail branch, the refinement conv and the (zero) correction start fresh.
    assert fresh and all(k.split(".")[0] in ("detail", "refine", "correction") for k in fresh)
    for name, tensor in child.state_dict().items():
        if name in fresh:
            assert torch.equal(tensor, fresh_before[name]), name
        elif name.startswith("coarse_head."):  # the parent's 3x3 head, summed to 1x1
            parent_head = parent.state_dict()[name.replace("coarse_head", "head")]
            expected = parent_head.sum(dim=(2, 3), keepdim=True) if name.endswith("weight") else parent_head
            assert torch.allclose(tensor, expected), name
        else:
            assert torch.equal(tensor, parent.state_dict()[name]), name
    # So the child starts from (nearly) the parent's segmentation, not from noise.
    parent.eval()
    child.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        agree = (parent(x).argmax(1) == child(x).argmax(1)).float().mean()
    assert agree > 0.97
    # Another attention is another backbone: refused, not half-loaded.
    with pytest.raises(ValueError, match="same backbone"):
        load_initial_weights(build_network("star-dssau-net-s"), init, "parent.pt")


def test_detail_head_keeps_the_output_shape_and_feeds_the_logits():
    from ipp_seg.nn.dssau_net import build_network

    torch.manual_seed(0)
    model = build_network("dssau-net-s-hr").eval()
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        out = model(x)
        model.detail[0].weight.mul_(2.0)
        zero_start = model(x)  # the correction starts at zero: the detail branch has no say yet
        torch.nn.init.normal_(model.correction.weight, std=0.1)  # as training moves it off zero
        changed = model(x)
        model.detail[0].weight.mul_(2.0)  # now the image-detail branch reaches the logits
        changed_detail = model(x)
    assert out.shape == (1, 3, 64, 96)
    assert torch.equal(zero_start, out)
    assert (changed - out).abs().mean() > 1e-3
    assert (changed_detail - changed).abs().mean() > 1e-4


def test_fine_tuning_chain_records_every_earlier_run(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    base = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "a"), epochs=1,
                         batch_size=2, validation_count=1, input_size=(64, 64), threads=1, bf16=False)
    train(base)
    train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / "b"), "init_from": str(tmp_path / "a" / "last.pt")}))
    # The parent is then overwritten in place, as when a shipped model is fine-tuned into its successor:
    # the lineage was read when the run started, so the chain survives.
    b_path = tmp_path / "b" / "last.pt"
    train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / "c"), "init_from": str(b_path)}))
    b_path.write_bytes(b"overwritten")
    c = load_torch_file(tmp_path / "c" / "last.pt")
    assert [step["checkpoint"] for step in c["lineage"]] == [str(tmp_path / "a" / "last.pt"), str(b_path)]
    assert all(step["epochs"] == 1 and step["config"] == "dssau-net-s" for step in c["lineage"])
    assert c["lineage"][1]["settings"]["init_from"] == str(tmp_path / "a" / "last.pt")


def test_lineage_of_older_weights_falls_back_to_their_model_card(tmp_path):
    from ipp_seg.train.lineage import lineage_hours, lineage_of

    grandparent = {"checkpoint": "runs/base/best.pt", "config": "dssau-net-s", "epochs": 18, "hours": 1.84}
    (tmp_path / "old.json").write_text(json.dumps({"training": {"initialised_from": grandparent}}))
    parent = {"config": {"name": "dssau-net-s"}, "epoch": 12, "settings": {"init_from": "runs/base/best.pt"},
              "history": [{"seconds": 1800.0}, {"seconds": 1800.0}]}  # no "lineage": written before it existed
    chain = lineage_of(tmp_path / "old.pt", parent)
    assert [step["epochs"] for step in chain] == [18, 12]
    assert chain[1]["hours"] == 1.0
    assert lineage_hours(chain) == pytest.approx(2.84)
    # Without a card the chain starts at the parent (and says so in the log), never invents a history.
    assert [step["epochs"] for step in lineage_of(tmp_path / "other.pt", parent)] == [12]
    # A parent without lineage whose own parent file still exists is traced through that file.
    torch.save({**parent, "epoch": 3, "settings": {}}, tmp_path / "base.pt")
    child = {**parent, "epoch": 5, "settings": {"init_from": str(tmp_path / "base.pt")}}
    assert [step["epochs"] for step in lineage_of(tmp_path / "child.pt", child)] == [3, 5]
    # ...unless that file has since been replaced by a descendant of the parent (a shipped model
    # overwritten by its own successor): its history is the parent's future, not its past.
    ft2 = {**parent, "epoch": 23, "settings": {"init_from": str(tmp_path / "shipped.pt")}}
    torch.save({**parent, "epoch": 7, "lineage": [{"checkpoint": "runs/ft2/best.pt", "epochs": 23, "hours": 1.0}]},
               tmp_path / "shipped.pt")
    assert [step["epochs"] for step in lineage_of("runs/ft2/best.pt", ft2)] == [23]
    # A file there that would run code when unpickled is not loaded: the chain starts at the parent.
    torch.save({**parent, "epoch": 3, "settings": {}, "x": _RunsCodeWhenUnpickled(tmp_path / "ran")},
               tmp_path / "base.pt")
    assert [step["epochs"] for step in lineage_of(tmp_path / "child.pt", child)] == [5]
    assert not (tmp_path / "ran").exists()


def _tiny_cli_run(tmp_path, n_cases: int, validation_count: int):
    """(CliRunner, the train command's common arguments, run folder) after a 1-epoch run."""
    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=n_cases)
    run = tmp_path / "run"
    common = ["train", str(data), "--config", "dssau-net-s", "--out", str(run), "--batch-size", "2",
              "--validation-count", str(validation_count), "--threads", "1", "--no-bf16", "--input-size", "64"]
    runner = CliRunner()
    assert runner.invoke(app, [*common, "--epochs", "1"]).exit_code == 0
    return runner, common, run


def test_a_warm_up_as_long_as_the_run_is_said_and_the_run_ends_with_the_next_step(tmp_path, caplog):
    # A research fellow's pass: a 1-epoch fine-tune under the default 2 warm-up epochs peaked at half its --lr without a
    # word, and how to measure with the run was found in the install notes only.
    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=4)
    common = ["train", str(data), "--config", "dssau-net-s", "--batch-size", "2", "--validation-count", "1",
              "--threads", "1", "--no-bf16", "--input-size", "64", "--epochs", "1"]
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "--warmup-epochs 2 is as long as the run (--epochs 1) or longer: the learning rate rises for the whole " \
        "run, never reaching --lr 0.001" in caplog.text
    said = " ".join(result.output.split())
    assert f"to measure with it: ipp-seg export {tmp_path / 'a' / 'best.pt'} --onnx MODEL.onnx" in said
    # Not on a terminal, no bar: its last state had followed the epoch's line, with the last step's loss.
    assert "\u2501" not in result.output and "epoch 1/1  loss" in result.output
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--warmup-epochs", "0.5"])
    assert result.exit_code == 0 and "--warmup-epochs" not in caplog.text


def test_cli_resume_keeps_the_runs_length_unless_more_epochs_are_asked_for(tmp_path, caplog):
    runner, common, run = _tiny_cli_run(tmp_path, n_cases=4, validation_count=1)
    # The split is said when the run starts, before hours of epochs, not when it ends.
    more = runner.invoke(app, [*common, "--resume", "--epochs", "2"])
    said = _said(more)
    assert more.exit_code == 0 and said.index("split: train case000-case002 (3), validation case003 (1)") < said.index(
        "epoch 2/2")
    fewer = runner.invoke(app, [*common, "--resume", "--epochs", "1"])
    assert fewer.exit_code == 2 and "as it was planned, over 2 epochs: --epochs 1 is fewer" in _said(fewer)
    # -v shows the split and each epoch once, as the command line prints them: the library's own
    # lines of them are debug, not info (-v had shown each twice).
    import logging

    with caplog.at_level(logging.INFO, logger="ipp_seg"):
        verbose = runner.invoke(app, ["-v", *common, "--resume", "--epochs", "3"])
    assert verbose.exit_code == 0 and _said(verbose).count("split:") == 1
    assert not [r for r in caplog.records
                if r.levelno >= logging.INFO and r.getMessage().startswith(("split:", "epoch "))]
    runner, common, run = _tiny_cli_run(tmp_path / "again", n_cases=4, validation_count=1)
    # A bare --resume of a finished 1-epoch run must not turn it into an 80-epoch one.
    assert runner.invoke(app, [*common, "--resume"]).exit_code == 0
    saved = load_torch_file(run / "last.pt")
    assert saved["settings"]["epochs"] == 1 and len(saved["history"]) == 1
    assert runner.invoke(app, [*common, "--resume", "--epochs", "2"]).exit_code == 0
    saved = load_torch_file(run / "last.pt")
    assert saved["settings"]["epochs"] == 2 and len(saved["history"]) == 2


def test_each_start_and_resume_records_its_version_command_and_machine(tmp_path, caplog, monkeypatch):
    # settings.json is the recipe (bf16 as asked, null = by the machine); what a session actually
    # ran with, and the command that started it, go into sessions.jsonl, a line per session.
    from ipp_seg.machine import software_version

    data = _synthetic_folder(tmp_path / "data", n=4)
    run = tmp_path / "run"
    common = ["train", str(data), "--config", "dssau-net-s", "--out", str(run), "--batch-size", "2",
              "--validation-count", "1", "--threads", "1", "--input-size", "64", "--warmup-epochs", "0"]
    runner = CliRunner()
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ipp-seg", *common, "--epochs", "1", "--no-bf16"])
    first = runner.invoke(app, sys.argv[1:])
    assert first.exit_code == 0, first.output
    assert json.loads((run / "settings.json").read_text())["bf16"] is False
    # A longer run than planned stretches the cosine: the next epoch's rate is not the one planned, and says so.
    with caplog.at_level("WARNING", logger="ipp_seg"):
        more = runner.invoke(app, [*common, "--resume", "--epochs", "3"])
    assert more.exit_code == 0, more.output
    stretched = [r.getMessage() for r in caplog.records if "stretched" in r.getMessage()]
    assert len(stretched) == 1 and "planned on 1 epochs and now runs to 3" in stretched[0]
    planned, now = lr_at(1, 1, 0, 1e-3, 0.01), lr_at(1, 3, 0, 1e-3, 0.01)
    assert f"epoch 2 starts at a rate of {now:.3g} instead of {planned:.3g}" in stretched[0]
    sessions = [json.loads(line) for line in (run / "sessions.jsonl").read_text().splitlines()]
    assert [s["from_epoch"] for s in sessions] == [0, 1] and [s["epochs"] for s in sessions] == [1, 3]
    assert all(s["ipp_seg"] == software_version() and s["bf16_autocast"] is False and s["threads"] == 1
               and s["started_at"].endswith("Z") for s in sessions)
    # As typed, quoted for a shell to run again.
    assert shlex.split(sessions[0]["command"]) == ["ipp-seg", *common, "--epochs", "1", "--no-bf16"]
    # The checkpoints record the version too.
    assert load_torch_file(run / "last.pt")["machine"]["ipp_seg"] == software_version()


def test_a_run_appends_to_no_link_another_user_planted_in_its_folder(tmp_path, monkeypatch):
    # A privacy and security pass: sessions.jsonl and history.jsonl were appended to through planted links (the
    # command line and the data folder's name went wherever they pointed).
    import stat as stat_module

    import ipp_seg.io.folders as folders

    monkeypatch.setattr(folders, "ones_own", lambda status: not stat_module.S_ISLNK(status.st_mode))  # links: others'
    data = _synthetic_folder(tmp_path / "data", n=4)
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    for name in ("sessions.jsonl", "history.jsonl"):
        (run / name).symlink_to(elsewhere / name)
    result = CliRunner().invoke(app, ["train", str(data), "--config", "dssau-net-s", "--out", str(run), "--epochs", "1",
                                      "--batch-size", "2", "--validation-count", "1", "--threads", "1", "--no-bf16",
                                      "--input-size", "64"])
    assert result.exit_code == 0, result.output
    assert not list(elsewhere.iterdir())
    assert not (run / "sessions.jsonl").is_symlink() and len((run / "history.jsonl").read_text().splitlines()) == 1


def test_resume_keeps_the_runs_split_and_recipe(tmp_path, caplog):
    runner, common, run = _tiny_cli_run(tmp_path, n_cases=6, validation_count=2)
    data = tmp_path / "data"
    first_split = json.loads((run / "split.json").read_text())
    assert first_split["validation"] == ["case004", "case005"]
    # Training into a folder that holds a run would replace its checkpoints and mix its history.
    again = runner.invoke(app, [*common, "--epochs", "1"])
    assert again.exit_code == 2 and "already holds a run" in again.output
    # An option that differs from the run's recipe is refused, not silently ignored.
    changed = runner.invoke(app, [*common, "--resume", "--lr", "0.5", "--seed", "3"])
    assert changed.exit_code == 2 and "--lr, --seed" in changed.output
    # bf16 is how the machine computes, as --device is: a run resumed on a CPU without native bf16 may turn it off.
    bf16 = runner.invoke(app, [*common, "--resume", "--bf16"])
    assert bf16.exit_code == 0, bf16.output
    assert json.loads((run / "settings.json").read_text())["bf16"] is True
    assert runner.invoke(app, [*common, "--resume"]).exit_code == 0
    assert json.loads((run / "settings.json").read_text())["bf16"] is False  # (common has --no-bf16)
    # Two more cases in the folder: computed again, the split would move case004-005 into training.
    _synthetic_folder(tmp_path / "more", n=8)
    for name in ("case006.png", "case007.png"):
        for sub in ("images", "masks"):
            shutil.copy(tmp_path / "more" / sub / name, data / sub / name)
    with caplog.at_level("WARNING"):
        resumed = runner.invoke(app, [*common, "--resume", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "split.json").read_text()) == first_split
    assert "2 case(s)" in caplog.text and "left out (the split is the run's own): case006, case007" in caplog.text
    # The same frames elsewhere (a copy, as on another machine) resume; the same IDs with other
    # pixels (another export, a relabelled set) are refused before any epoch runs.
    shutil.copytree(data, tmp_path / "copy")
    moved = [common[0], str(tmp_path / "copy"), *common[2:]]
    assert runner.invoke(app, [*moved, "--resume", "--epochs", "3"]).exit_code == 0
    assert load_torch_file(run / "last.pt")["epoch"] == 3
    import cv2

    image = cv2.imread(str(tmp_path / "copy" / "images" / "case001.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(tmp_path / "copy" / "images" / "case001.png"), 255 - image)
    other = runner.invoke(app, [*moved, "--resume", "--epochs", "4"])
    assert other.exit_code == 2 and "differ from those" in other.output and "--init-from" in other.output
    assert "(1 case changed: case001)" in " ".join(other.output.split())  # (which one: it had not been said)
    assert load_torch_file(run / "last.pt")["epoch"] == 3
    # A case of the run's split gone from the folder: refused.
    for sub in ("images", "masks"):
        (data / sub / "case005.png").unlink()
    gone = runner.invoke(app, [*common, "--resume", "--epochs", "4"])
    assert gone.exit_code == 2 and "lacks 1 case(s) of the run's split" in gone.output


def test_files_that_are_not_checkpoints_get_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    data = _synthetic_folder(tmp_path / "data", n=4)
    runner = CliRunner()
    for bad in ("notes.pt", "dict.pt"):
        path = str(tmp_path / bad)
        for args in (["export", path, "--onnx", str(tmp_path / "x.onnx")],
                     ["train", str(data), "--out", str(tmp_path / f"run-{bad}"), "--init-from", path,
                      "--validation-count", "1"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (args, result.output)
            assert "not a checkpoint written by ipp-seg train" in result.output and "Traceback" not in result.output
    unknown = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "r"), "--config", "nope"])
    assert unknown.exit_code == 2 and "unknown network config 'nope'" in unknown.output
    assert not (tmp_path / "r").exists()  # refused before anything is written


class _RunsCodeWhenUnpickled:
    """What a .pt file handed over as "a model" may hold: unpickled fully, it runs a command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pt_file_that_would_run_code_is_refused_not_run(tmp_path, sample_png):
    """torch.load(weights_only=False) had run whatever a .pt carried, from predict --backend
    torch --model, export, train --init-from and the model cards' tools."""
    from typer.testing import CliRunner

    from ipp_seg.inference.registry import resolve_model
    from ipp_seg.train.loop import read_checkpoint

    marker = tmp_path / "ran"
    checkpoint = read_checkpoint(resolve_model("dssau-net-s").torch_path)  # weights load as before
    checkpoint["config"]["payload"] = _RunsCodeWhenUnpickled(marker)
    evil = tmp_path / "model.pt"
    torch.save(checkpoint, evil)
    with pytest.raises(ValueError, match="holds Python objects besides weights and settings"):
        read_checkpoint(evil)
    with pytest.raises(Exception):
        load_torch_file(evil)
    runner = CliRunner()
    data = _synthetic_folder(tmp_path / "data", n=4)
    for args in (["predict", str(sample_png), "--backend", "torch", "--model", str(evil)],
                 ["export", str(evil), "--onnx", str(tmp_path / "x.onnx")],
                 ["train", str(data), "--out", str(tmp_path / "run"), "--init-from", str(evil),
                  "--validation-count", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert "unpickling them could run any code" in " ".join(result.output.split()), result.output
    assert not marker.exists()


@pytest.mark.parametrize("content, said", [
    (b"hello", "is not a PyTorch file (it begins as text)"),
    (b"random junk text\n\x00\x01", "is not a PyTorch file (it begins as text)"),
    (b"\x80\x02junk after a pickle's first bytes", "is not a checkpoint written by ipp-seg train"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:5e25\nsize 10616152\n",
     "is a Git LFS pointer, not the weights: fetch them (git lfs pull"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "is not a PyTorch file (it begins as a PNG image)"),
    (b"\xd0\xcf\x11\xe0" + bytes(200), "is not a PyTorch file (it begins as another kind of file)"),
])
def test_a_pt_file_that_is_no_torch_file_says_what_it_is(tmp_path, sample_png, content, said):
    """An ML engineer's pass: a text file given as a checkpoint ended export, predict --backend
    torch and batch in a traceback (KeyError 101 from torch's unpickler), and a Git LFS pointer
    or a PNG named .pt was said to hold "Python objects besides weights", as if an attack."""
    from typer.testing import CliRunner

    from ipp_seg.train.loop import read_checkpoint

    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(said)):
        read_checkpoint(path)
    for args in (["export", str(path), "--onnx", str(tmp_path / "x.onnx")],
                 ["predict", str(sample_png), "--backend", "torch", "--model", str(path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert said in " ".join(result.output.split()), result.output


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(TrainSettings(config="dssau-net-s", data=str(tmp_path), out=str(tmp_path / "run")), resume=True)


def test_segmentation_loss_is_finite():
    loss = segmentation_loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)),
                             ce_class_weights=(1.0, 2.0, 1.0), dice_class_weights=(1.5, 1.0))
    assert torch.isfinite(loss)


def test_ship_a_fine_tuned_run_over_its_own_parent(tmp_path):
    """Shipping writes ONNX, weights and a card whose checksums, lineage and hours are right,
    even when the run was fine-tuned from the very model file it replaces."""
    import shutil

    from ipp_seg.inference.registry import sha256_of
    from ipp_seg.train.ship import ship_model

    data = _synthetic_folder(tmp_path / "data", n=5)
    base = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "base"), epochs=1,
                         batch_size=2, validation_count=2, input_size=(64, 64), threads=1, bf16=False)
    train(base)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tmp_path / "base" / "best.pt", models / "tiny.pt")  # the "shipped" parent
    train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / "tuned"), "init_from": str(models / "tiny.pt")}))
    # A published AoP beside the frames (as PSFHS's aop_reference.csv) is compared in the card,
    # for the cases it lists only.
    (data / "aop_reference.csv").write_text("case,aop_deg\ncase003,120.0\n")
    card = ship_model(tmp_path / "tuned", models, "tiny", "ipp-seg train ... --config dssau-net-s",
                      {"last two": ("case003", "case004")}, data)
    assert [step["checkpoint"] for step in card["training"]["lineage"]] == [str(models / "tiny.pt")]
    assert card["training"]["initialised_from"]["epochs"] == 1
    own = sum(json.loads(line)["seconds"] for line in (tmp_path / "tuned" / "history.jsonl").read_text().splitlines())
    parent = sum(json.loads(line)["seconds"] for line in (tmp_path / "base" / "history.jsonl").read_text().splitlines())
    assert card["training"]["hours"] == pytest.approx((own + parent) / 3600, abs=0.006)
    for entry in card["files"].values():
        assert sha256_of(models / entry["name"]) == entry["sha256"]
    assert card["validation"]["overall"]["cases"] == 2 and card["validation_tta"]["last two"]["cases"] == 2
    overall = card["validation"]["overall"]
    if overall["mean_abs_delta_aop_deg"] is not None:  # the tiny model's masks measured
        assert overall["mean_abs_delta_aop_reference_deg"] is not None
    assert "vs aop_reference.csv" in (models / "tiny.md").read_text()
    assert set(overall) >= {"aop_agreement", "aop_reference_agreement"}
    if overall["aop_reference_agreement"] is not None:  # signed: the same frames' |dAoP| is its size
        assert abs(overall["aop_reference_agreement"]["bias"]) <= overall["mean_abs_delta_aop_reference_deg"] + 1e-9
    shipped = load_torch_file(models / "tiny.pt")
    assert shipped["lineage"] == card["training"]["lineage"]  # the new weights carry their history
    # The history reads as runs, the first from random weights, each saying what it held out.
    assert f"  1. `{models / 'tiny.pt'}`: dssau-net-s, started from random weights, 1 epoch," in \
        (models / "tiny.md").read_text()
    assert "the last 2 case IDs held out" in (models / "tiny.md").read_text()
    # Provenance a reviewer asked for: which file the parent path held then (it has since been replaced), whether
    # each run computed in bf16, and which frames it read.
    base_pt = load_torch_file(tmp_path / "base" / "best.pt")
    (step,) = card["training"]["lineage"]
    assert step["sha256"] == sha256_of(tmp_path / "base" / "best.pt") != sha256_of(models / "tiny.pt")
    assert step["bf16_autocast"] is False and step["data_sha256"] == base_pt["data_sha256"]
    assert card["training"]["data_sha256"] == shipped["data_sha256"] == base_pt["data_sha256"]
    assert card["training"]["machine"]["bf16_autocast"] is False and card["training"]["machine"]["processor"]
    import onnxruntime

    measured = card["validated_on"]  # what measured the card's figures
    assert measured["onnxruntime"] == onnxruntime.__version__ and measured["processor"] and measured["date"]
    assert f"with ipp-seg {measured['ipp_seg']} and onnxruntime {onnxruntime.__version__}" in \
        (models / "tiny.md").read_text()


def test_validation_frames_a_parent_run_trained_on_are_said_to_be_a_fit(tmp_path, monkeypatch, caplog):
    """An ML engineer's pass: a run fine-tuned from a model that trained on its validation frames
    shipped a card saying "Validation (never trained on)", listed as held-out frames, and evaluate
    gave no warning on them: its training frames were only the last run's."""
    import shutil

    from ipp_seg.inference.registry import shipped_models
    from ipp_seg.train.ship import ship_model

    data = _synthetic_folder(tmp_path / "data", n=6)
    base = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "base"), epochs=1,
                         batch_size=2, validation_count=2, input_size=(64, 64), threads=1, bf16=False)
    train(base)
    with caplog.at_level("WARNING"):
        train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / "tuned"), "validation_count": 4,
                               "init_from": str(tmp_path / "base" / "last.pt")}))
    said = " ".join(caplog.text.split())
    assert "2 of the 4 validation frames (case002, case003) were training frames of a run its weights start from" \
        in said and "a fit, not a validation" in said
    models = tmp_path / "models"
    models.mkdir()
    card = ship_model(tmp_path / "tuned", models, "tuned", "ipp-seg train ...", {"last four": ("case002", "case005")},
                      data)
    # (Named IDs of one prefix and number width are blocks: case002-case003.)
    assert card["validation_trained_on_before"] == [["case002", "case003"]]
    assert card["training"]["lineage"][0]["train_case_ids"][0][0] == "case000"
    text = (models / "tuned.md").read_text()
    assert "never trained on" not in text and "trained on `case002-case003`: on those frames the figures" in text
    monkeypatch.setenv("IPP_SEG_MODELS", str(models))
    (spec,) = [spec for spec in shipped_models() if spec.name == "tuned"]
    assert spec.trained_on("case002") and spec.trained_on("case000") and not spec.trained_on("case004")
    # A run whose validation no earlier run saw says nothing, and its card keeps the plain heading.
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / "again"),
                               "init_from": str(tmp_path / "base" / "last.pt")}))
    assert "were training frames of a run" not in caplog.text
    shutil.rmtree(models)
    models.mkdir()
    card = ship_model(tmp_path / "again", models, "again", "ipp-seg train ...",
                      {"last two": ("case004", "case005")}, data)
    assert card["validation_trained_on_before"] == [] and "never trained on" in (models / "again.md").read_text()


# Slow (35-55 s: trains, ships twice and runs a batch): the path of a model of one's own, run with
# `pytest -m slow` before shipping a model; CI's suite, near its 15 minutes, leaves it out.
@pytest.mark.slow
def test_a_model_of_ones_own_frames_ships_with_its_own_validation_and_no_psfhs_claims(tmp_path, monkeypatch):
    import subprocess
    import sys

    from ipp_seg.train.ship import card_blocks, ship_model

    data = _synthetic_folder(tmp_path / "data", n=5)
    train(TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                        validation_count=2, input_size=(64, 64), threads=1, bf16=False))
    assert card_blocks(data) == {}
    models = tmp_path / "ours"
    card = ship_model(tmp_path / "run", models, "ours", "ipp-seg train data ...", card_blocks(data), data)
    assert "the folder data (5 image/mask pairs" in card["training"]["data"] and "PSFHS" not in card["training"]["data"]
    assert card["training"]["licence_of_data"] == "not recorded" and card["training"]["data_is_psfhs"] is False
    # Its own confidence floors, from its validation frames, never above the shipped models' 0.90: a model of one's
    # own had carried ps_low_confidence on every frame, judged by the shipped models' confidence.
    floors = card["confidence_floors"]
    assert set(floors) == {"head", "ps"} and all(0 <= v <= 0.90 for v in floors.values())
    from ipp_seg.inference.backends import load_segmenter
    from ipp_seg.inference.registry import resolve_model

    # By its path too, beside the card that describes it, as by its name (a QA pass: by path, the defaults had been
    # used for the same file).
    assert load_segmenter(resolve_model(str(models / "ours.onnx"))).info.confidence_floors == (floors["head"],
                                                                                               floors["ps"])
    from ipp_seg.inference.registry import ModelSpec

    spec = ModelSpec("ours", models / "ours.onnx", models / "ours.pt", card, models / "ours.json")
    assert load_segmenter(spec).info.confidence_floors == (floors["head"], floors["ps"])
    assert list(card["validation"]) == ["overall", *(k for k in card["validation"] if k.startswith("style:"))]
    # Its card's figures are what batch and evaluate give on its validation frames, failures included: a weak model
    # of one's own, unsure of every frame below its floors, had a card of figures with no anatomy_unrecognised row.
    import shutil

    from ipp_seg.evaluate import evaluate_folders
    from ipp_seg.inference.batch import BatchOptions, InferenceOptions, run_batch

    held_out = tmp_path / "held-out-frames"
    held_out.mkdir()
    for case in ("case003", "case004"):
        shutil.copy(data / "images" / f"{case}.png", held_out)
    monkeypatch.setenv("IPP_SEG_MODELS", str(models))
    run_batch(BatchOptions(held_out, tmp_path / "by-batch", InferenceOptions(model="ours"), save_masks=True))
    by_batch = evaluate_folders(tmp_path / "by-batch", data / "masks").overall
    assert by_batch.n_failed_pred == card["validation"]["overall"]["failed_measurements"] == 2  # (unsure of both)
    assert by_batch.score == pytest.approx(card["validation"]["overall"]["score"], abs=1e-6)  # (threads: last bits)
    monkeypatch.delenv("IPP_SEG_MODELS")
    markdown = (models / "ours.md").read_text()
    assert "PSFHS" not in markdown and "narrow-sector" not in markdown and "Trained on one folder" in markdown
    # Which frames its figures are of, exactly: a folder of one's own has no named blocks (it had said nothing).
    assert card["validation_case_ids"] == [["case003", "case004"]]  # (named IDs of one prefix: a block)
    assert "Validation frames: `case003-case004`." in markdown
    assert "; exactly `case000-case002`" in markdown
    # A run of seconds: its time in seconds, not "0.0 h".
    assert card["training"]["hours"] < 0.1 and "0.0 h on" not in markdown
    assert re.search(r"; (\d+ s|under a second) on ", markdown)
    # Nor an empty column against a published AoP the data does not have.
    assert "aop_reference.csv" not in markdown and "| failed | score |" in markdown
    assert f"below a head confidence of {floors['head']:.3f}" in markdown  # the reader of the card sees them too
    assert f"below a PS confidence of {floors['ps']:.3f}" in markdown
    assert sorted(p.name for p in models.iterdir()) == ["ours.json", "ours.md", "ours.onnx", "ours.pt"]
    # Shipping again under that name would overwrite its files: refused unless asked for.
    with pytest.raises(ValueError, match="already holds a model ours: give another name, or --replace"):
        ship_model(tmp_path / "run", models, "ours", "ipp-seg train data ...", card_blocks(data), data)
    assert ship_model(tmp_path / "run", models, "ours", "ipp-seg train data ...", card_blocks(data), data,
                      replace=True)["name"] == "ours"
    # Fine-tuned on one's own frames from the shipped weights (trained on PSFHS): the card attributes PSFHS, as its
    # licence asks; it had said only "the folder data".
    shipped = Path(__file__).resolve().parents[1] / "models" / "dssau-net-s.pt"
    train(TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "tuned-own"), epochs=1,
                        batch_size=2, validation_count=2, input_size=(64, 64), threads=1, bf16=False,
                        init_from=str(shipped)))
    tuned = ship_model(tmp_path / "tuned-own", models, "tuned", "ipp-seg train data ...", card_blocks(data), data)
    assert tuned["training"]["started_from_psfhs_weights"] is True and tuned["training"]["data_is_psfhs"] is False
    assert "its weights started from runs trained on PSFHS: Chen G" in tuned["training"]["data"]
    assert tuned["training"]["licence_of_data"] == "not recorded; the runs its weights started from: PSFHS, CC BY 4.0"
    assert "trained on PSFHS: Chen G" in (models / "tuned.md").read_text()
    assert card["training"]["started_from_psfhs_weights"] is False
    # The script: a refusal in one line, nothing half-shipped left behind.
    script = Path(__file__).resolve().parents[1] / "scripts" / "ship_model.py"
    elsewhere = tmp_path / "other-data"
    _synthetic_folder(elsewhere, n=3)
    refused = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--name", "x", "--command", "c",
                              "--data", str(elsewhere), "--models-dir", str(tmp_path / "x-models")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "lacks 2 of the validation cases (e.g. case003, case004): give the data folder the run was trained on" \
        in refused.stderr
    assert not (tmp_path / "x-models").exists()  # refused: the folder made for it is gone too
    # A copy of its folder with one validation mask relabelled: refused, where the card had given figures of the
    # changed mask beside the run's data digest. A plain copy ships.
    copied = tmp_path / "copied-data"
    shutil.copytree(data, copied)
    assert ship_model(tmp_path / "run", tmp_path / "copy-models", "copy", "c", {}, copied)["name"] == "copy"
    relabelled = cv2.imread(str(copied / "masks" / "case004.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(copied / "masks" / "case004.png"), np.where(relabelled == 1, 2, relabelled).astype(np.uint8))
    with pytest.raises(ValueError, match="differ from those .* trained and was validated on"):
        ship_model(tmp_path / "run", tmp_path / "copy-models", "changed", "c", {}, copied)
    assert not (tmp_path / "copy-models" / "changed.json").exists()
    # Without --data: the folder the run trained on, as its checkpoint records it (not the PSFHS data).
    described = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--name", "d", "--command", "c",
                                "--models-dir", str(models),
                                "--data-description", "Hospital X, 2026; internal use only"],
                               capture_output=True, text=True)
    assert described.returncode == 0, described.stderr
    described_card = json.loads((models / "d.json").read_text())
    assert described_card["training"]["data"] == "Hospital X, 2026; internal use only"
    assert described_card["training"]["licence_of_data"] == "as stated under data"
    assert described_card["training"]["data_is_psfhs"] is False
    assert described_card["validation"]["overall"]["cases"] == 2
    named = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--name", "sub/x", "--command", "c",
                            "--models-dir", str(models)], capture_output=True, text=True)
    assert named.returncode == 2 and "a model's name is a file name" in named.stderr
    # A command pasted from another run, naming another config than the run's, is refused: the card would contradict
    # itself (its config field is the run's).
    wrong = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--name", "w", "--command",
                            "ipp-seg train /data/other --config conv-unet-s --epochs 80 --seed 42",
                            "--models-dir", str(tmp_path / "w-models")], capture_output=True, text=True)
    assert wrong.returncode == 2 and "the command trains conv-unet-s (its --config" in wrong.stderr and \
        "dssau-net-s run" in wrong.stderr
    # Its data moved since, without --data: told where to give the new place.
    data.rename(tmp_path / "moved-data")
    moved = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--name", "m", "--command", "c",
                            "--models-dir", str(tmp_path / "m-models")], capture_output=True, text=True)
    assert moved.returncode == 2 and f"the data folder {data} does not exist (the folder" in moved.stderr
    assert "name where its frames are now (data; --data of scripts/ship_model.py)" in moved.stderr


def test_a_cards_command_may_name_the_configs_of_the_runs_it_was_fine_tuned_from(tmp_path):
    from ipp_seg.train.ship import _check_command_config

    chain = ("ipp-seg train D --config dssau-net-s --out a && "
             "ipp-seg train D --config dssau-net-s-hr --init-from a/last.pt --out b")
    _check_command_config(chain, {"dssau-net-s-hr", "dssau-net-s"}, tmp_path / "b")  # its lineage's: fine
    with pytest.raises(ValueError, match="the command trains dssau-net-s .* is a dssau-net-s-hr run"):
        _check_command_config(chain, {"dssau-net-s-hr"}, tmp_path / "b")
    _check_command_config("a description, not a command", {"x"}, tmp_path)  # nothing to check
    # A train run that names no config trains the default: not a conv-unet-s run's command.
    with pytest.raises(ValueError, match="the command trains dssau-net-s .*default"):
        _check_command_config("ipp-seg train data --out runs/t2 --epochs 12", {"conv-unet-s"}, tmp_path / "t2")
    _check_command_config("ipp-seg train data --out r && python scripts/average_weights.py a b", {"dssau-net-s"},
                          tmp_path)
    # Read as a shell reads it (a review found these refused, or let through): a resumed run keeps its own config; a
    # folder or argument named train, a description, a # in a path; commands one per line; python -m ipp_seg.
    for fine in ("ipp-seg train d --config m --out r; ipp-seg train d --out r --resume --epochs 120",
                 "cd train && ipp-seg train d --config m", "ipp-seg train d --config m; ipp-seg evaluate p train",
                 "Trained with ipp-seg train on site data", "ipp-seg train d --out runs/#3 --config m"):
        _check_command_config(fine, {"m"}, tmp_path)
    for wrong in ("ipp-seg train d --config m\nipp-seg train d --out x", "python3 -m ipp_seg -v train d --config x",
                  "/opt/venv/bin/ipp-seg train d --config x"):
        with pytest.raises(ValueError, match="the command trains"):
            _check_command_config(wrong, {"m"}, tmp_path)


def test_a_cards_validation_fails_the_frames_batch_fails_for_confidence_below_its_floors(psfhs_dir):
    # A model of one's own, unsure of every validation frame (confidences 0.35-0.46 against floors of 0.60), had a card
    # that measured its masks as drawn; batch fails those frames (anatomy_unrecognised), so no run reproduced it.
    from ipp_seg.inference.backends import load_segmenter
    from ipp_seg.inference.registry import resolve_model
    from ipp_seg.train.ship import validate_segmenter

    shipped = load_segmenter(resolve_model("dssau-net-s-heldout"))

    class Unsure:  # the same masks (argmax), logits scaled down: a softmax near uniform
        info = shipped.info

        def logits(self, batch):
            return shipped.logits(batch) / 40

    ids, blocks = ["04700", "04750"], {"two": ("04700", "04750")}
    sure, = validate_segmenter(shipped, psfhs_dir, ids, blocks)
    unsure, = validate_segmenter(Unsure(), psfhs_dir, ids, blocks)
    assert sure["ellipse"]["overall"]["failed_measurements"] == 0
    assert unsure["confidence_floors"] == {"head": 0.6, "ps": 0.6}  # (its lowest)
    for method in ("ellipse", "challenge"):
        assert unsure[method]["overall"]["failed_measurements"] == 2  # as batch fails them
        assert unsure[method]["overall"]["dice_all"] == sure[method]["overall"]["dice_all"]  # the masks themselves
    # Measured again (revalidate_card), a card's own floors judge the frames, as batch judges them with its card.
    judged, = validate_segmenter(Unsure(), psfhs_dir, ids, blocks, floors={"head": 0.3, "ps": 0.3})
    assert judged["ellipse"]["overall"]["failed_measurements"] == 0


def test_a_run_records_its_data_folder_in_full_and_shipping_refuses_a_relative_one(tmp_path, monkeypatch):
    from ipp_seg.train.loop import read_checkpoint, save_checkpoint
    from ipp_seg.train.ship import ship_model

    _synthetic_folder(tmp_path / "data", n=4)
    monkeypatch.chdir(tmp_path)
    train(TrainSettings(config="dssau-net-s", data="data", out="run", epochs=1, batch_size=2, validation_count=1,
                        input_size=(64, 64), threads=1, bf16=False, augmentation=NO_GEOMETRY))
    recorded = read_checkpoint(tmp_path / "run" / "best.pt")
    assert recorded["settings"]["data"] == str(tmp_path / "data")  # typed relative, recorded in full
    recorded["settings"]["data"] = "../shared/data/psfhs"  # as runs from before recorded it
    save_checkpoint(tmp_path / "run" / "best.pt", recorded)
    with pytest.raises(ValueError, match=r"records its data folder as \.\./shared/data/psfhs, relative to where it "
                                         r"was trained: name the folder"):
        ship_model(tmp_path / "run", tmp_path / "models", "x", "c")
    assert not (tmp_path / "models").exists()  # refused before anything was written (no empty folder left)


def shipped_note_and_best(path):
    shipped = load_torch_file(path)
    return shipped.get("validation_note"), shipped["best_epoch"]


# Model-shipping tooling (14 s): `pytest -m slow` before shipping; CI's suite, near its 15 minutes, leaves it out.
@pytest.mark.slow
def test_ship_with_fp16_weights_stores_both_files_in_float16_and_they_still_serve(tmp_path):
    """The paper configs ship with float16 weights: both files half-width, the card and its
    Markdown say so, the card's validation is the shipped file's, and the torch backend loads
    the float16 .pt into a float32 network."""
    from ipp_seg.inference.backends import TorchSegmenter
    from ipp_seg.inference.registry import ModelSpec
    from ipp_seg.train.ship import ship_model

    data = _synthetic_folder(tmp_path / "data", n=5)
    train(TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                        validation_count=2, input_size=(64, 64), threads=1, bf16=False))
    models = tmp_path / "models"
    # As scripts/unpack_device_run.py leaves a GPU run: validation frames named after training.
    from ipp_seg.train.loop import read_checkpoint, save_checkpoint

    packed = read_checkpoint(tmp_path / "run" / "best.pt")
    packed["validation_note"] = "validation frames (case003-case004) were left out of the training folder"
    save_checkpoint(tmp_path / "run" / "best.pt", packed)
    card = ship_model(tmp_path / "run", models, "tiny16", "ipp-seg train ... --config dssau-net-s",
                      {"last two": ("case003", "case004")}, data, fp16_weights=True)
    assert card["weights_stored_as"] == "float16" and card["validation"]["overall"]["cases"] == 2
    markdown = (models / "tiny16.md").read_text()
    assert "Weights stored as float16" in markdown
    # No epoch of it was chosen by validation, and neither the card nor the weights claim one was.
    assert card["training"]["best_epoch"] is None and "not validated while it trained" in markdown
    assert shipped_note_and_best(models / "tiny16.pt") == (packed["validation_note"], None)
    shipped = load_torch_file(models / "tiny16.pt")
    floats = [v for v in shipped["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    run = load_torch_file(tmp_path / "run" / "best.pt")
    assert all(torch.equal(shipped["model"][k], v.half()) for k, v in run["model"].items() if v.is_floating_point())
    segmenter = TorchSegmenter(ModelSpec("tiny16", None, models / "tiny16.pt", card, models / "tiny16.json"))
    assert next(segmenter.model.parameters()).dtype == torch.float32
    unrounded = ship_model(tmp_path / "run", tmp_path / "models32", "tiny32", "ipp-seg train ... --config dssau-net-s",
                           {"last two": ("case003", "case004")}, data)
    assert unrounded["weights_stored_as"] == "float32"
    assert card["files"]["onnx"]["bytes"] < 0.6 * unrounded["files"]["onnx"]["bytes"]


def _ellipse_mask(angle_deg, size=64, centre=(32, 30)):
    import cv2

    labels = np.zeros((1, size, size), np.uint8)
    cv2.ellipse(labels[0], centre, (14, 4), angle_deg, 0, 360, 1, -1)
    return torch.from_numpy(labels.astype(np.int64))


def _confident_logits(labels, margin=8.0):
    return torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * margin


def test_shape_moment_loss_sees_the_ps_axis_that_dice_barely_weighs():
    from ipp_seg.train.losses import shape_moment_loss

    truth = _ellipse_mask(20)
    assert float(shape_moment_loss(_confident_logits(truth), truth)) < 0.01  # right shape: ~0
    turned = float(shape_moment_loss(_confident_logits(_ellipse_mask(35)), truth))
    shifted = float(shape_moment_loss(_confident_logits(_ellipse_mask(20, centre=(36, 30))), truth))
    much_turned = float(shape_moment_loss(_confident_logits(_ellipse_mask(60)), truth))
    assert 0.1 < turned < much_turned and shifted > 0.1
    # Differentiable in the logits, and an absent structure (cropped out) contributes nothing.
    logits = _confident_logits(_ellipse_mask(35)).requires_grad_(True)
    shape_moment_loss(logits, truth).backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    empty = torch.zeros_like(truth)
    assert float(shape_moment_loss(_confident_logits(truth), empty)) == 0.0
    # A sliver of PS left by a crop does not count; a gross error is capped.
    sliver = torch.zeros_like(truth)
    sliver[0, 10, 10:14] = 1
    assert float(shape_moment_loss(_confident_logits(truth), sliver)) == 0.0
    far = torch.zeros_like(truth)
    far[0, 50:58, 2:8] = 1
    assert float(shape_moment_loss(_confident_logits(truth), far)) == pytest.approx(2.0)


def test_segmentation_loss_adds_the_shape_term_only_when_weighted():
    truth = _ellipse_mask(20)
    logits = _confident_logits(_ellipse_mask(40))
    plain = float(segmentation_loss(logits, truth))
    assert float(segmentation_loss(logits, truth, shape_weight=0.0)) == plain
    assert float(segmentation_loss(logits, truth, shape_weight=1.0)) > plain + 0.1


def test_signed_distance_is_negative_inside_positive_outside_in_pixels():
    from ipp_seg.train.losses import signed_distance_px

    truth = np.zeros((20, 30), np.uint8)
    truth[5:15, 10:20] = 1
    d = signed_distance_px(truth)
    assert d[10, 25] == pytest.approx(6.0, abs=0.01)  # 6 px right of the square's last column
    assert d[10, 14] <= -4.0 and d[5, 15] == pytest.approx(-1.0) and d[4, 15] == pytest.approx(1.0)


def test_boundary_distance_loss_charges_misplaced_probability_by_its_distance():
    from ipp_seg.train.losses import boundary_distance_loss

    def labels_with_ps(x0):
        lab = torch.zeros(1, 64, 64, dtype=torch.long)
        lab[0, 40:60, 5:60] = 2
        lab[0, 10:20, x0:x0 + 16] = 1
        return lab

    truth = labels_with_ps(10)

    def confident(lab):
        return (torch.nn.functional.one_hot(lab, 3).permute(0, 3, 1, 2).float() * 30).requires_grad_()

    exact = float(boundary_distance_loss(confident(truth), truth).detach())
    near = float(boundary_distance_loss(confident(labels_with_ps(14)), truth).detach())
    far = float(boundary_distance_loss(confident(labels_with_ps(30)), truth).detach())
    # 0 for the truth. A PS moved 20 px, clear of the true one, costs at least the mean distance
    # of its pixels from it (5 to 20 px, mean 12.5) plus the depth of the true pixels it left;
    # one moved 4 px, still overlapping, costs about a pixel.
    assert exact == pytest.approx(0.0, abs=1e-6)
    assert 0.5 < near < 2 and 12.5 < far < 20
    logits = confident(labels_with_ps(30))
    boundary_distance_loss(logits, truth).backward()
    assert float(logits.grad.abs().sum()) > 0
    # An image whose PS was cropped away counts for nothing.
    no_ps = torch.zeros(1, 64, 64, dtype=torch.long)
    loss = boundary_distance_loss(torch.zeros(1, 3, 64, 64, requires_grad=True), no_ps)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    assert float(segmentation_loss(logits, truth, boundary_weight=1.0).detach()) > \
        float(segmentation_loss(logits, truth).detach())


def test_boundary_weight_reaches_the_training_loss_and_the_recipe(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=5)
    common = dict(config="dssau-net-s", data=str(data), epochs=1, batch_size=4, validation_count=1,
                  input_size=(64, 64), threads=1, bf16=False, seed=3)
    plain = train(TrainSettings(out=str(tmp_path / "plain"), **common))
    weighted = train(TrainSettings(out=str(tmp_path / "boundary"), boundary_weight=0.5, **common))
    # The same data, seed and weights at the start: only the added term makes the loss larger.
    assert weighted.history[0].train_loss > plain.history[0].train_loss
    saved = load_torch_file(tmp_path / "boundary" / "last.pt")
    assert saved["settings"]["boundary_weight"] == 0.5


def test_ps_axis_ends_are_the_long_axis_ends_of_the_ps():
    from ipp_seg.train.losses import ps_axis_ends

    labels = _ellipse_mask(20)[0].numpy().astype(np.uint8)
    ends = ps_axis_ends(labels)
    axis = ends[1] - ends[0]
    assert np.linalg.norm(ends.mean(axis=0) - (32, 30)) < 0.5  # centred on the PS
    assert np.linalg.norm(axis) == pytest.approx(2 * 14, abs=1.5)  # the 14 px semi-axis, both ways
    assert np.degrees(np.arctan2(axis[1], axis[0])) % 180 == pytest.approx(20, abs=1.0)
    assert ps_axis_ends(np.zeros((64, 64), np.uint8)) is None
    sliver = np.zeros((64, 64), np.uint8)
    sliver[10, 10:14] = 1
    assert ps_axis_ends(sliver) is None


def test_endpoint_heatmap_loss_is_lowest_at_the_true_ends_and_has_a_gradient():
    from ipp_seg.train.losses import endpoint_heatmap_loss

    ends = np.array([[12.0, 20.0], [44.0, 36.0]])

    def peaked(points, h=16, w=16, stride=4, sigma=4.0):
        # Log of two Gaussian bumps at ``points`` (input pixels), sampled at the map's cell centres.
        ys, xs = np.mgrid[0:h, 0:w] * stride + (stride - 1) / 2
        bumps = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points)
        return torch.from_numpy(np.log(bumps + 1e-6)).float()[None, None]

    right = float(endpoint_heatmap_loss(peaked(ends), [ends], (64, 64)))
    wrong = float(endpoint_heatmap_loss(peaked(ends + (16, -8)), [ends], (64, 64)))
    flat = float(endpoint_heatmap_loss(torch.zeros(1, 1, 16, 16), [ends], (64, 64)))
    assert right < 0.05 < flat < wrong  # ~0 at the truth (the same Gaussians)
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    # The second image has no PS (None): it adds nothing, and its map gets no gradient.
    endpoint_heatmap_loss(logits, [ends, None], (64, 64)).backward()
    assert float(logits.grad[0].abs().sum()) > 0 and float(logits.grad[1].abs().sum()) == 0
    none = endpoint_heatmap_loss(torch.zeros(1, 1, 16, 16, requires_grad=True), [None], (64, 64))
    assert float(none.detach()) == 0.0 and none.requires_grad


def _train_with_and_without(tmp_path, **aux) -> dict:
    """One epoch on a tiny synthetic folder without and with a training-only setting, then the
    run with it resumed for a second epoch: the checkpoints, by name."""
    data = _synthetic_folder(tmp_path / "data", n=5)
    base = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "plain"), epochs=1,
                         batch_size=4, validation_count=1, input_size=(64, 64), threads=1, bf16=False,
                         learning_rate=1e-2, warmup_epochs=0.0, seed=3)
    train(base)
    with_aux = TrainSettings(**{**base.__dict__, "out": str(tmp_path / "aux"), **aux})
    train(with_aux)
    runs = {"plain": load_torch_file(tmp_path / "plain" / "last.pt"),
            "aux": load_torch_file(tmp_path / "aux" / "last.pt"),
            "aux_best": load_torch_file(tmp_path / "aux" / "best.pt")}
    train(TrainSettings(**{**with_aux.__dict__, "epochs": 2}), resume=True)
    runs["resumed"] = load_torch_file(tmp_path / "aux" / "last.pt")
    return runs


def _resumed_not_redrawn(saved: torch.Tensor, resumed: torch.Tensor) -> bool:
    """One more step at a learning rate of 1e-2 from saved weights moves them a little, not to a
    new random draw (which would differ by about the weights' own size)."""
    return float((resumed - saved).abs().max()) < 0.5 * float(saved.abs().max())


def test_endpoint_head_trains_resumes_and_never_ships(tmp_path):
    runs = _train_with_and_without(tmp_path, endpoint_weight=1.0)
    plain, with_head = runs["plain"], runs["aux"]
    # The network is the plain config (same tensors), and the term changed how it learned.
    assert with_head["model"].keys() == plain["model"].keys() and "endpoint_head" not in runs["aux_best"]
    assert not torch.allclose(with_head["model"]["fuse.0.weight"], plain["model"]["fuse.0.weight"])
    # Resume restores the head's weights, not a fresh head.
    assert runs["resumed"]["optimiser"]["state"][0]["step"] == 2
    assert _resumed_not_redrawn(with_head["endpoint_head"]["1.weight"], runs["resumed"]["endpoint_head"]["1.weight"])


def test_deep_supervision_loss_weighs_finer_levels_more_and_reaches_every_level():
    from ipp_seg.train.losses import deep_supervision_loss

    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 4:12, 6:26] = 1
    labels[:, 16:30, 8:28] = 2

    def level(size, right):
        """Logits at size x size: the truth resized (right) or its mirror image (wrong)."""
        truth = labels if right else labels.flip(-1)
        onehot = torch.nn.functional.one_hot(truth, 3).permute(0, 3, 1, 2).float()
        return (torch.nn.functional.interpolate(onehot, size=(size, size), mode="area") * 8).requires_grad_()

    coarse_wrong = deep_supervision_loss([level(4, False), level(8, True)], labels)
    fine_wrong = deep_supervision_loss([level(4, True), level(8, False)], labels)
    all_right = deep_supervision_loss([level(4, True), level(8, True)], labels)
    # A wrong finer level (weight 2/3) costs more than a wrong coarser one (1/3).
    assert float(all_right.detach()) < float(coarse_wrong.detach()) < float(fine_wrong.detach())
    levels = [level(4, False), level(8, False), level(16, False)]
    deep_supervision_loss(levels, labels).backward()
    assert all(float(lv.grad.abs().sum()) > 0 for lv in levels)
    with pytest.raises(ValueError):
        deep_supervision_loss([], labels)


def test_deep_supervision_heads_train_resume_and_never_ship(tmp_path):
    from ipp_seg.nn.dssau_net import DeepSupervisionHeads, build_network

    # One head per decoder level coarser than 1/4 resolution, giving class logits there.
    net = build_network("dssau-net-s")
    outputs = net.decode(torch.zeros(1, 1, 64, 64))
    heads = DeepSupervisionHeads(net.config.decoder_width, net.config.num_classes, len(net.config.dims) - 1)
    shapes = [tuple(lg.shape[-2:]) for lg in heads(outputs.levels)]
    assert shapes == [(2, 2), (4, 4), (8, 8)] and tuple(outputs.fused.shape[-2:]) == (16, 16)

    runs = _train_with_and_without(tmp_path, deep_supervision=0.5)
    plain, with_heads = runs["plain"], runs["aux"]
    # The network is the plain config (same tensors); the term reached the deep decoder levels.
    assert with_heads["model"].keys() == plain["model"].keys() and "deep_supervision_heads" not in runs["aux_best"]
    assert not torch.allclose(with_heads["model"]["decoder_out.0.0.weight"], plain["model"]["decoder_out.0.0.weight"])
    assert with_heads["settings"]["deep_supervision"] == 0.5
    # Resume restores the heads' weights, not fresh ones.
    assert _resumed_not_redrawn(with_heads["deep_supervision_heads"]["0.weight"],
                                runs["resumed"]["deep_supervision_heads"]["0.weight"])


# Slow (30-50 s: trains and ships several runs): the release scripts' path, run with `pytest -m slow`
# before shipping a model; CI's suite, near its 15 minutes, leaves it out.
@pytest.mark.slow
def test_a_model_trained_on_every_frame_ships_with_its_reference_runs_validation(tmp_path):
    from ipp_seg.train.ship import ship_model

    data = _synthetic_folder(tmp_path / "data", n=5)
    held_out = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "held-out"), epochs=1,
                             batch_size=2, validation_count=2, input_size=(64, 64), threads=1, bf16=False)
    train(held_out)
    everything = TrainSettings(**{**held_out.__dict__, "out": str(tmp_path / "all"), "validation_count": 0,
                                  "seed": 7})
    result = train(everything)
    assert len(result.split.train_ids) == 5 and not result.split.validation_ids
    models = tmp_path / "models"
    blocks = {"last two": ("case003", "case004")}
    command = "ipp-seg train ... --config dssau-net-s --validation-count 0"
    with pytest.raises(ValueError, match="validated_by"):
        ship_model(tmp_path / "all", models, "tiny", command, blocks, data)
    # A reference of another recipe, or at another epoch, is refused before anything is written.
    other = TrainSettings(**{**held_out.__dict__, "out": str(tmp_path / "other"), "learning_rate": 5e-4})
    train(other)
    with pytest.raises(ValueError, match="learning_rate"):
        ship_model(tmp_path / "all", models, "tiny", command, blocks, data, validated_by=tmp_path / "other/last.pt")
    longer = TrainSettings(**{**held_out.__dict__, "out": str(tmp_path / "longer"), "epochs": 2})
    train(longer)
    with pytest.raises(ValueError, match="epoch"):
        ship_model(tmp_path / "all", models, "tiny", command, blocks, data, validated_by=tmp_path / "longer/last.pt")
    # A reference of the same recipe whose chain began from weights trained on its validation frames: a fit, not
    # a validation (its lineage had not been asked).
    from ipp_seg.train.lineage import run_summary
    from ipp_seg.train.loop import CONTENT_DIGEST, save_checkpoint

    parent = [run_summary(load_torch_file(tmp_path / "all" / "last.pt"), "all-frames.pt")]  # every frame's run
    assert parent[0]["train_case_ids"] == [["case000", "case004"]]
    for run, copy in (("held-out", "fitted"), ("all", "all-fitted")):  # (the same chain for both: same recipe)
        shutil.copytree(tmp_path / run, tmp_path / copy)
        for kept in (tmp_path / copy).glob("*.pt"):
            checkpoint = load_torch_file(kept)
            save_checkpoint(kept, {**{k: v for k, v in checkpoint.items() if k != CONTENT_DIGEST}, "lineage": parent})
    with pytest.raises(ValueError, match=r"no held-out reference: a run its weights started from trained on 2 of its "
                                         r"2 validation frames \(case003, case004\)"):
        ship_model(tmp_path / "all-fitted", models, "tiny", command, blocks, data,
                   validated_by=tmp_path / "fitted/last.pt")
    assert not (models / "tiny.onnx").exists()

    card = ship_model(tmp_path / "all", models, "tiny", command, blocks, data,
                      validated_by=tmp_path / "held-out" / "last.pt")
    assert "every frame" in card["training"]["train_ids"] and card["training"]["seed"] == 7
    # The IDs exactly, for evaluate to tell a fit from a validation (case000 ... case004: one prefix, one block).
    assert card["training"]["train_case_ids"] == [["case000", "case004"]]
    assert card["validation_source"]["checkpoint"].endswith("held-out/last.pt")
    assert card["validation_source"]["train_frames"] == 3
    assert card["validation_source"]["onnx"] == "exported from the checkpoint to validate it"  # no card beside it
    # The figures are the reference run's, measured on its two held-out frames. Two evaluations
    # of the same weights agree to float32 rounding, not always bit for bit (the surface
    # distances were seen to differ in the 8th digit), hence approx for the floats.
    reference = ship_model(tmp_path / "held-out", tmp_path / "ref-models", "ref", command, blocks, data)
    assert card["validation"].keys() == reference["validation"].keys()
    def close(v):
        if isinstance(v, dict):
            return {k: close(x) for k, x in v.items()}
        return pytest.approx(v, rel=1e-6) if isinstance(v, float) else v

    for block, figures in reference["validation"].items():
        assert card["validation"][block] == close(figures), block
    assert card["validation"]["overall"]["cases"] == 2
    assert "Validation of the same recipe without these frames" in (models / "tiny.md").read_text()
    assert card["training"]["best_epoch"] is None and card["training"]["shipped_epoch"] == 1
    # The last epoch of a longer run ships when asked; the card counts every epoch the run cost.
    last = ship_model(tmp_path / "longer", tmp_path / "last-models", "last", command, blocks, data,
                      checkpoint_name="last.pt")
    assert last["training"]["shipped_epoch"] == 2 and last["training"]["epochs_run"] == 2
    assert load_torch_file(tmp_path / "last-models" / "last.pt")["epoch"] == 2
    with pytest.raises(ValueError, match="own validation"):
        ship_model(tmp_path / "held-out", models, "x", command, blocks, data, validated_by=tmp_path / "all/last.pt")

    # A card written before a figure existed is measured again in place: weights, files and
    # training record untouched, validation as shipping would write it now.
    from ipp_seg.train.ship import revalidate_card

    def figures(c):
        return {b: {k: (pytest.approx(v, rel=1e-6) if isinstance(v, float) else v) for k, v in m.items()}
                for b, m in c["validation"].items()}

    for folder, name, validated_by in ((tmp_path / "ref-models", "ref", None),
                                       (models, "tiny", tmp_path / "held-out" / "last.pt")):
        card_path = folder / f"{name}.json"
        shipped, pt_bytes = json.loads(card_path.read_text()), (folder / f"{name}.pt").read_bytes()
        tta_blocks = shipped["validation_tta"].keys()
        # (a card of before the floors had none: it gets none, nor do given ones move)
        stale = {k: v for k, v in shipped.items() if k != "confidence_floors" or name == "tiny"}
        if name == "tiny":
            stale["confidence_floors"] = {"head": 0.77, "ps": 0.66}
        card_path.write_text(json.dumps({**stale, "validation": {}, "validation_tta": {}}))
        (folder / f"{name}.md").write_text("stale")
        if validated_by is not None:
            with pytest.raises(ValueError, match="every frame"):
                revalidate_card(folder, name, blocks, data)
        again = revalidate_card(folder, name, blocks, data, validated_by=validated_by)
        assert again["validation"] == figures(shipped) and again["validation_tta"].keys() == tta_blocks
        assert again["training"] == shipped["training"] and again["files"] == shipped["files"]
        assert again.get("confidence_floors") == stale.get("confidence_floors")
        assert (folder / f"{name}.pt").read_bytes() == pt_bytes and json.loads(card_path.read_text()) == again
        assert "| last two | ellipse |" in (folder / f"{name}.md").read_text()
    with pytest.raises(ValueError, match="own validation"):
        revalidate_card(tmp_path / "ref-models", "ref", blocks, data, validated_by=tmp_path / "all/last.pt")
    # Another .pt beside the card (its split, labels and data digest would rewrite the card's blocks): refused.
    kept = (tmp_path / "ref-models" / "ref.pt").read_bytes()
    shutil.copy(tmp_path / "longer" / "last.pt", tmp_path / "ref-models" / "ref.pt")
    with pytest.raises(ValueError, match=r"ref\.pt does not match its card's checksum"):
        revalidate_card(tmp_path / "ref-models", "ref", blocks, data)
    (tmp_path / "ref-models" / "ref.pt").write_bytes(kept)
    # Validated by the twin as shipped (its card and ONNX file beside its .pt), the final model's
    # card shows the twin card's very figures, not those of a new export rounded a little otherwise.
    twin = json.loads((tmp_path / "ref-models" / "ref.json").read_text())
    again = revalidate_card(models, "tiny", blocks, data, validated_by=tmp_path / "ref-models" / "ref.pt")
    assert again["validation_source"]["onnx"] == str(tmp_path / "ref-models" / "ref.onnx")
    assert again["validation"] == figures(twin) and again["validation_tta"].keys() == twin["validation_tta"].keys()
    # A card beside the reference that names no ONNX file is no export to reuse (it had raised ValueError).
    from ipp_seg.train.ship import _shipped_export_of

    (tmp_path / "held-out" / "last.json").write_text(json.dumps({"files": {"torch": {"name": "last.pt"}}}))
    assert _shipped_export_of(tmp_path / "held-out" / "last.pt", False) is None
    onnx = tmp_path / "ref-models" / "ref.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="checksum"):
        revalidate_card(tmp_path / "ref-models", "ref", blocks, data)


# Slow (30-50 s: trains and ships several runs): the release scripts' path, run with `pytest -m slow`
# before shipping a model; CI's suite, near its 15 minutes, leaves it out.
@pytest.mark.slow
def test_an_average_of_two_seeds_ships_and_is_validated_only_by_an_average(tmp_path):
    from ipp_seg.train.ship import ship_model
    from ipp_seg.train.weight_average import average_checkpoints

    data = _synthetic_folder(tmp_path / "data", n=5)
    base = TrainSettings(config="dssau-net-s", data=str(data), out="", epochs=1, batch_size=2, validation_count=2,
                         input_size=(64, 64), threads=1, bf16=False)

    def run(name, **changes):
        train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / name), **changes}))
        return tmp_path / name / "last.pt"

    held_out = [run("a", seed=1), run("b", seed=2)]
    every_frame = [run("all-a", seed=1, validation_count=0), run("all-b", seed=2, validation_count=0)]
    soup_path = average_checkpoints(held_out, tmp_path / "soup")
    soup = load_torch_file(soup_path)
    members = [load_torch_file(p) for p in held_out]
    key = "fuse.0.weight"
    assert not torch.equal(members[0]["model"][key], members[1]["model"][key])
    assert torch.allclose(soup["model"][key], (members[0]["model"][key] + members[1]["model"][key]) / 2)
    assert [m["seed"] for m in soup["weight_average"]] == [1, 2] and "optimiser" not in soup
    # Another recipe, epoch or split does not average (the first two: the second run, relabelled).
    for name, change, message in (("hot", {"settings": {**members[1]["settings"], "learning_rate": 5e-3}},
                                   "learning_rate"), ("later", {"epoch": 2}, "epoch 2")):
        forged = {k: v for k, v in members[1].items() if k != "content_sha256"}  # else it reads as damaged
        torch.save({**forged, **change}, tmp_path / f"{name}.pt")
        with pytest.raises(ValueError, match=message):
            average_checkpoints([held_out[0], tmp_path / f"{name}.pt"], tmp_path / "x")
    with pytest.raises(ValueError, match="other frames"):
        average_checkpoints([held_out[0], every_frame[0]], tmp_path / "x")
    # An average cannot be resumed (it has no optimiser state); it says what to do instead.
    with pytest.raises(ValueError, match="--init-from"):
        train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / "soup")}), resume=True)

    models, blocks, command = tmp_path / "models", {"last two": ("case003", "case004")}, "ipp-seg train ..."
    card = ship_model(tmp_path / "soup", models, "soup", command, blocks, data, checkpoint_name="last.pt")
    assert [m["seed"] for m in card["training"]["weight_average"]] == [1, 2]
    assert card["training"]["hours"] == pytest.approx(sum(m["hours"] for m in soup["weight_average"]))
    assert card["training"]["epochs_run"] == 1 and card["training"]["best_epoch"] is None
    markdown = (models / "soup.md").read_text()
    assert "Weight average of 2 runs" in markdown and "the runs' last epochs averaged" in markdown
    # The every-frame model is validated by the held-out average, not by one held-out run.
    average_checkpoints(every_frame, tmp_path / "all-soup")
    with pytest.raises(ValueError, match="weight average"):
        ship_model(tmp_path / "all-soup", models, "all", command, blocks, data, validated_by=held_out[0],
                   checkpoint_name="last.pt")
    with pytest.raises(ValueError, match="weight average"):
        ship_model(tmp_path / "all-a", models, "all", command, blocks, data, validated_by=soup_path,
                   checkpoint_name="last.pt")
    final = ship_model(tmp_path / "all-soup", models, "all", command, blocks, data, validated_by=soup_path,
                       checkpoint_name="last.pt")
    assert final["validation"]["overall"]["dice_fh"] == pytest.approx(card["validation"]["overall"]["dice_fh"])
    assert len(load_torch_file(models / "all.pt")["weight_average"]) == 2
    # A run fine-tuned from an average lists it, with both members' hours, among its lineage.
    run("child", init_from=str(soup_path))
    child = ship_model(tmp_path / "child", models, "child", command, blocks, data, checkpoint_name="last.pt")
    parent = child["training"]["lineage"][-1]
    assert len(parent["weight_average"]) == 2 and parent["hours"] == pytest.approx(card["training"]["hours"], abs=0.01)
    assert "the average of 2 runs" in (models / "child.md").read_text()


def test_revalidating_a_card_without_floors_judges_its_frames_by_batchs_defaults(tmp_path, monkeypatch):
    # A shipped card gives no floors, so batch judges its frames by the defaults (0.90): revalidation had judged
    # them by floors of the validation's own, then dropped them, and its figures were not what batch reproduces.
    from ipp_seg.inference.pipeline import MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE
    from ipp_seg.inference.registry import shipped_models_dir
    from ipp_seg.train import ship

    name = "dssau-net-s-heldout"
    for suffix in (".json", ".onnx", ".pt"):
        shutil.copy(shipped_models_dir() / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    assert "confidence_floors" not in json.loads((tmp_path / f"{name}.json").read_text())
    judged = []

    def own_validation(onnx_path, checkpoint, data, blocks, floors=None):
        judged.append(floors)
        raise RuntimeError("validated no further")

    monkeypatch.setattr(ship, "_own_validation", own_validation)
    monkeypatch.setattr(ship, "_check_same_frames", lambda *args: None)
    with pytest.raises(RuntimeError, match="validated no further"):
        ship.revalidate_card(tmp_path, name, {}, tmp_path)
    assert judged == [{"head": MIN_HEAD_CONFIDENCE, "ps": MIN_PS_CONFIDENCE}]


def test_a_seed_added_to_an_average_weighs_as_one_run(tmp_path):
    from ipp_seg.train.weight_average import average_checkpoints

    data = _synthetic_folder(tmp_path / "data", n=5)
    base = TrainSettings(config="dssau-net-s", data=str(data), out="", epochs=1, batch_size=2, validation_count=2,
                         input_size=(64, 64), threads=1, bf16=False)
    runs = []
    for seed in (1, 2, 3):
        train(TrainSettings(**{**base.__dict__, "out": str(tmp_path / f"s{seed}"), "seed": seed}))
        runs.append(tmp_path / f"s{seed}" / "last.pt")
    pair = average_checkpoints(runs[:2], tmp_path / "pair")
    # Not into a run's folder, whose last.pt it would replace (the run then not to be resumed), member or not;
    # an earlier average's folder is written over.
    with pytest.raises(ValueError, match="holds a member"):
        average_checkpoints(runs[:2], tmp_path / "s1")
    with pytest.raises(ValueError, match="is a training run's folder"):
        average_checkpoints(runs[:2], tmp_path / "s3")
    assert "optimiser" in load_torch_file(runs[0]) and average_checkpoints(runs[:2], tmp_path / "pair") == pair
    # The average keeps the digest of the frames its runs read (shipping checks the data against it), and runs of
    # the same case IDs on other data do not average.
    digest = load_torch_file(runs[0])["data_sha256"]
    assert digest and load_torch_file(pair)["data_sha256"] == digest
    other = {k: v for k, v in load_torch_file(runs[1]).items() if k != "content_sha256"}
    torch.save({**other, "data_sha256": "0" * 64}, tmp_path / "other-data.pt")
    with pytest.raises(ValueError, match="read other data than"):
        average_checkpoints([runs[0], tmp_path / "other-data.pt"], tmp_path / "x")
    # The pair's runs need not be kept: the pair stands for them.
    three = load_torch_file(average_checkpoints([pair, runs[2]], tmp_path / "three"))
    flat = load_torch_file(average_checkpoints(runs, tmp_path / "flat"))
    weights = [load_torch_file(p)["model"] for p in runs]
    for key in ("fuse.0.weight", "head.weight"):
        assert torch.allclose(three["model"][key], sum(w[key] for w in weights) / 3, atol=1e-6)
        assert torch.allclose(three["model"][key], flat["model"][key], atol=1e-6)
        # A plain mean of the pair and the third run would weigh the third as two.
        assert not torch.allclose(three["model"][key], (load_torch_file(pair)["model"][key]
                                                        + weights[2][key]) / 2, atol=1e-6)
    assert [m["seed"] for m in three["weight_average"]] == [1, 2, 3]
    assert [m["checkpoint"] for m in three["weight_average"]] == [str(p) for p in runs]
    # No run counts twice, whether as itself or again through an average.
    with pytest.raises(ValueError, match="more than once"):
        average_checkpoints([pair, runs[0]], tmp_path / "x")
    torch.save(load_torch_file(runs[0]), tmp_path / "copy.pt")
    with pytest.raises(ValueError, match="seed 1 is among the members more than once"):
        average_checkpoints([tmp_path / "copy.pt", pair], tmp_path / "x")
    # A member shipped with float16 weights (the paper configs) averages into a float32 network.
    from ipp_seg.train.loop import read_checkpoint, save_checkpoint

    half = read_checkpoint(runs[0])
    half["model"] = {k: v.half() if v.is_floating_point() else v for k, v in half["model"].items()}
    save_checkpoint(tmp_path / "half.pt", half)
    mixed = load_torch_file(average_checkpoints([tmp_path / "half.pt", runs[1]], tmp_path / "mixed"))
    assert {v.dtype for v in mixed["model"].values() if v.is_floating_point()} == {torch.float32}
    assert torch.allclose(mixed["model"]["head.weight"], (weights[0]["head.weight"].half().float()
                                                          + weights[1]["head.weight"]) / 2, atol=1e-6)
    # A member damaged inside is refused, not averaged into new weights under a fresh checksum.
    _flip_a_byte_inside_a_tensor(runs[2])
    with pytest.raises(ValueError, match="is damaged"):
        average_checkpoints(runs, tmp_path / "damaged")
    assert not (tmp_path / "damaged" / "last.pt").exists()


def test_cli_trains_on_every_frame_with_the_endpoint_head(tmp_path):
    from typer.testing import CliRunner

    from ipp_seg.cli import app

    data = _synthetic_folder(tmp_path / "data", n=4)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data), "--config", "dssau-net-s", "--out", str(run),
                                      "--batch-size", "2", "--validation-count", "0", "--threads", "1",
                                      "--no-bf16", "--epochs", "1", "--endpoint-weight", "0.5",
                                      "--elastic", "0.5", "--shadow", "0.25", "--input-size", "64",
                                      "--local-contrast", "2"])
    assert result.exit_code == 0, result.output
    assert "no validation frames" in result.output and "nan" not in result.output
    saved = load_torch_file(run / "last.pt")
    assert saved["settings"]["endpoint_weight"] == 0.5 and "endpoint_head" in saved
    assert saved["settings"]["augmentation"]["elastic_probability"] == 0.5
    assert saved["settings"]["augmentation"]["shadow_probability"] == 0.25
    assert len(saved["split"]["train"]) == 4 and saved["split"]["validation"] == []
    # The local contrast equalisation is part of the model's normalisation: exported with it,
    # so that inference feeds the network what training fed it.
    assert saved["settings"]["normalisation"]["local_contrast"] == {"clip_limit": 2.0, "tile_grid": 8}
    onnx_path = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(run / "last.pt"), "--onnx", str(onnx_path)])
    assert result.exit_code == 0, result.output
    from ipp_seg.inference.backends import OnnxSegmenter
    from ipp_seg.inference.pipeline import prepare_input
    from ipp_seg.inference.preprocess import normalise_frame, resize_image
    from ipp_seg.inference.registry import ModelSpec
    from ipp_seg.io import read_frame

    info = OnnxSegmenter(ModelSpec("m", onnx_path, None, None), threads=1).info
    assert info.normalisation == saved["settings"]["normalisation"]
    frame = read_frame(data / "images" / "case000.png")
    inferred, _ = prepare_input(frame, info.input_size, 1, info.normalisation)
    trained = normalise_frame(resize_image(frame.pixels.astype(np.float32), (64, 64)), saved["settings"]["normalisation"])
    assert np.allclose(inferred[0], trained, atol=1e-6)


def test_drop_path_regularises_training_only_and_is_part_of_the_recipe(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import ipp_seg.train.loop as loop
    from ipp_seg.cli import app
    from ipp_seg.nn.configs import get_config
    from ipp_seg.nn.dssau_net import DropPath
    from ipp_seg.train.ship import recipe_differences

    built, build = [], loop.build_network
    monkeypatch.setattr(loop, "build_network", lambda config: built.append(build(config)) or built[-1])
    data = _synthetic_folder(tmp_path / "data", n=4)
    result = CliRunner().invoke(app, ["train", str(data), "--config", "dssau-net-s", "--out", str(tmp_path / "run"),
                                      "--batch-size", "2", "--validation-count", "0", "--threads", "1",
                                      "--no-bf16", "--epochs", "1", "--drop-path", "0.3", "--input-size", "80"])
    assert result.exit_code == 0, result.output
    rates = [m.p for m in built[0].modules() if isinstance(m, DropPath)]
    assert max(rates) == pytest.approx(0.3) and min(rates) == 0.0  # the config's linear ramp, to 0.3
    saved = load_torch_file(tmp_path / "run" / "last.pt")
    # What ships is the config's network (inference never drops); the recipe records the rate.
    assert saved["config"]["drop_path"] == get_config("dssau-net-s").drop_path != 0.3
    assert saved["settings"]["drop_path"] == 0.3
    assert tuple(saved["settings"]["input_size"]) == (80, 80)  # --input-size reaches the recipe
    assert recipe_differences(saved["settings"], {**saved["settings"], "drop_path": None}) == ["drop_path"]
    bad = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "x"), "--drop-path", "0.9"])
    assert bad.exit_code != 0


def test_lineage_takes_a_shipped_parents_whole_run_from_its_card(tmp_path):
    from ipp_seg.train.lineage import run_summary

    # A shipped best-epoch model: its history stops at epoch 2 of the 5 its run went through.
    best = {"config": {"name": "dssau-net-s"}, "epoch": 2, "settings": {},
            "history": [{"seconds": 360.0}, {"seconds": 360.0}]}
    (tmp_path / "model.json").write_text(json.dumps({"training": {"epochs_run": 5, "hours": 1.5,
                                                                  "lineage": [{"hours": 1.0}]}}))
    summary = run_summary(best, str(tmp_path / "model.pt"))
    assert summary["epochs"] == 2 and summary["epochs_run"] == 5 and summary["hours"] == 0.5
    (tmp_path / "other.json").write_text("{}")  # a card without the figures: the checkpoint's own
    summary = run_summary(best, str(tmp_path / "other.pt"))
    assert summary["epochs_run"] == 2 and summary["hours"] == 0.2


def test_recipe_differences_ignore_paths_seed_and_split_and_treat_unrecorded_settings_as_off():
    from ipp_seg.train.ship import recipe_differences

    new = TrainSettings(config="dssau-net-s", data="a", out="b", shape_weight=1.0).to_dict()
    old = {k: v for k, v in new.items()
           if k not in ("endpoint_weight", "ema_decay", "deep_supervision", "boundary_weight")}  # before they existed
    old.update(data="elsewhere", out="c", seed=9, threads=1, validation_count=0)
    assert recipe_differences(new, old) == []
    assert recipe_differences({**new, "endpoint_weight": 0.1}, old) == ["endpoint_weight"]
    assert recipe_differences({**new, "deep_supervision": 0.5}, old) == ["deep_supervision"]
    assert recipe_differences({**new, "boundary_weight": 0.05}, old) == ["boundary_weight"]
    assert recipe_differences(new, {**old, "shape_weight": 0.0, "learning_rate": 1.0}) == ["learning_rate",
                                                                                           "shape_weight"]
    # An augmentation field an older run did not record is off; turning it on changes the recipe.
    old["augmentation"] = {k: v for k, v in new["augmentation"].items() if not k.startswith(("elastic", "shadow"))}
    assert recipe_differences(new, old) == []
    elastic = {**new, "augmentation": {**new["augmentation"], "elastic_probability": 0.5}}
    assert recipe_differences(elastic, old) == ["augmentation"]


def test_a_final_stage_on_every_frame_is_the_same_recipe_as_its_twin_only_run_for_run():
    from ipp_seg.train.ship import lineage_differences

    base = TrainSettings(config="dssau-net-s", data="d", out="base").to_dict()
    shared = {"checkpoint": "runs/base/best.pt", "config": "dssau-net-s", "epochs": 18, "hours": 1.0,
              "settings": base}
    stage = {**base, "learning_rate": 2e-4, "init_from": "runs/base/best.pt"}

    def run(out, settings, lineage):
        return {"settings": {**settings, "out": out}, "lineage": lineage}

    def step(checkpoint, settings, epochs=12):
        return {"checkpoint": checkpoint, "config": "dssau-net-s", "epochs": epochs, "hours": 0.4,
                "settings": settings}

    held_out_parent = step("runs/held-out/last.pt", {**stage, "out": "runs/held-out"})
    all_parent = step("runs/all/last.pt", {**stage, "out": "runs/all", "validation_count": 0, "seed": 5})
    final = {**base, "learning_rate": 1e-4}
    twin = run("runs/twin", {**final, "init_from": "runs/held-out/last.pt"}, [shared, held_out_parent])
    model = run("runs/all2", {**final, "init_from": "runs/all/last.pt", "validation_count": 0},
                [shared, all_parent])
    # Different parents (one held out, one on every frame) of one recipe: the same recipe.
    assert lineage_differences(model, twin) == []
    # A parent that kept another epoch, or ran another recipe, is not.
    early = run("runs/all2", model["settings"], [shared, {**all_parent, "epochs": 7}])
    assert lineage_differences(early, twin) == [
        "earlier run 2 (runs/all/last.pt / runs/held-out/last.pt): epoch kept 7 against 12"]
    hotter = run("runs/all2", model["settings"],
                 [shared, step("runs/all/last.pt", {**all_parent["settings"], "learning_rate": 5e-4})])
    assert lineage_differences(hotter, twin) == [
        "earlier run 2 (runs/all/last.pt / runs/held-out/last.pt): learning_rate"]
    # One stage fewer, or an own setting changed, is named too.
    assert lineage_differences(run("x", model["settings"], [shared]), twin) == ["lineage (1 earlier runs against 2)"]
    assert lineage_differences(run("x", {**model["settings"], "shape_weight": 1.0}, model["lineage"]),
                               twin) == ["shape_weight"]
    # A run recorded without its settings cannot vouch for the recipe.
    bare = run("x", model["settings"], [shared, {k: v for k, v in all_parent.items() if k != "settings"}])
    assert lineage_differences(bare, twin) == [
        "earlier run 2 (runs/all/last.pt / runs/held-out/last.pt): settings not recorded"]


def test_lineage_counts_the_whole_runs_hours_when_its_log_is_beside_the_checkpoint(tmp_path):
    from ipp_seg.train.lineage import run_summary

    run = tmp_path / "run"
    run.mkdir()
    best = {"config": {"name": "dssau-net-s"}, "epoch": 1, "settings": {}, "history": [{"seconds": 360.0}]}
    assert run_summary(best, str(run / "best.pt"))["hours"] == 0.1  # no log: the checkpoint's own history
    (run / "history.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": 360.0}) + "\n" for e in (1, 2, 3)))
    summary = run_summary(best, str(run / "best.pt"))
    assert summary["epochs"] == 1 and summary["epochs_run"] == 3 and summary["hours"] == 0.3


def test_training_at_another_input_size_feeds_the_network_as_inference_does(tmp_path):
    from ipp_seg.inference.pipeline import prepare_input
    from ipp_seg.inference.preprocess import DEFAULT_NORMALISATION, normalise_frame
    from ipp_seg.io import read_frame
    from ipp_seg.inference.preprocess import resize_image
    from ipp_seg.train.loop import logits_on_grid

    data = _synthetic_folder(tmp_path / "data", n=4)
    frame = read_frame(data / "images" / "case000.png")
    # The training input of a frame is, to the float, the one inference builds for it.
    trained = normalise_frame(resize_image(frame.pixels.astype(np.float32), (96, 96)), DEFAULT_NORMALISATION)
    inferred, _ = prepare_input(frame, (96, 96), 1, DEFAULT_NORMALISATION)
    assert trained.shape == (96, 96) and np.allclose(trained, inferred[0], atol=1e-6)
    # Logits come back to the labels' grid the way inference resizes them (half-pixel centres).
    logits = torch.randn(1, 3, 96, 96)
    back = logits_on_grid(logits, (64, 64))[0].numpy().transpose(1, 2, 0)
    expected = cv2.resize(np.ascontiguousarray(logits[0].numpy().transpose(1, 2, 0)), (64, 64),
                          interpolation=cv2.INTER_LINEAR)
    assert back.shape == (64, 64, 3) and np.allclose(back, expected, atol=1e-5)
    assert logits_on_grid(logits, (96, 96)).shape == logits.shape

    seen = []
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=2,
                             batch_size=2, validation_count=1, learning_rate=2e-3, warmup_epochs=0.0,
                             input_size=(96, 96), threads=1, bf16=False, augmentation=NO_GEOMETRY)
    from ipp_seg.nn.dssau_net import DSSAUNet

    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape[-2:])) if isinstance(module, DSSAUNet) else None)
    try:
        losses = []
        result = train(settings, on_step=lambda e, s, n, loss: losses.append(loss))
    finally:
        hook.remove()
    assert set(seen) == {(96, 96)}  # training steps and validation alike
    assert losses[-1] < losses[0] and 0.0 <= result.history[-1].dice_fh <= 1.0
    saved = load_torch_file(tmp_path / "run" / "last.pt")
    assert tuple(saved["settings"]["input_size"]) == (96, 96)

    with pytest.raises(ValueError, match="end-point head"):
        train(TrainSettings(**{**settings.__dict__, "out": str(tmp_path / "ep"), "endpoint_weight": 0.1}))


def test_a_non_square_frame_is_trained_with_the_padding_inference_gives_it(tmp_path):
    from ipp_seg.inference.pipeline import prepare_input
    from ipp_seg.inference.preprocess import DEFAULT_NORMALISATION, pad_to_square
    from ipp_seg.io import read_frame
    from ipp_seg.train.data import load_cases, on_inference_grid
    from ipp_seg.train.loop import _batch_tensors

    tall = np.arange(12, dtype=np.uint8).reshape(4, 3)
    square = pad_to_square(tall)
    assert square.shape == (4, 4) and (square[:, :3] == tall).all() and (square[:, 3] == 0).all()
    assert pad_to_square(np.ones((2, 5, 3), np.uint8)).shape == (5, 5, 3)
    # Padded with the frame's own black (its darkest finite value), a label mask with 0.
    decibels = np.array([[-60.0, -20.0, np.nan]], np.float32)
    assert (pad_to_square(decibels)[1:] == -60).all() and (pad_to_square(tall + 7)[:, 3] == 7).all()
    assert (pad_to_square(np.full((1, 3), 2, np.uint8), fill=0)[1:] == 0).all()

    # A folder of mixed frames: two wide 48 x 80 pairs (as a scanner's PNG export might be) and
    # square 64 x 64 ones. Before, the wide frames were stretched to a square in training while
    # inference pads them; and the mixed sizes could not be batched at all.
    data = _synthetic_folder(tmp_path / "data", n=4)
    rng = np.random.default_rng(1)
    for i in (4, 5):
        labels = np.zeros((48, 80), np.uint8)
        cv2.ellipse(labels, (22, 14), (10, 3), 20, 0, 360, 1, -1)
        cv2.circle(labels, (40, 32), 12, 2, -1)
        cv2.imwrite(str(data / "images" / f"case{i:03d}.png"),
                    (labels * 90 + rng.integers(0, 40, labels.shape)).astype(np.uint8))
        cv2.imwrite(str(data / "masks" / f"case{i:03d}.png"), labels)
    cases = on_inference_grid(load_cases(data), (32, 32))
    assert {c.image.shape for c in cases} == {(32, 32)} and {c.labels.shape for c in cases} == {(32, 32)}
    wide = next(c for c in cases if c.case_id == "case004")
    assert (wide.labels[20:] == 0).all() and (wide.labels == 2).any()  # padded below, then resized
    # Frames of one square size keep their own grid (the PSFHS recipes are unchanged).
    square_cases = load_cases(data, {"case000", "case001"})
    assert all(a is b for a, b in zip(on_inference_grid(square_cases, (32, 32)), square_cases))

    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1,
                             batch_size=2, validation_count=1, learning_rate=2e-3, warmup_epochs=0.0,
                             input_size=(64, 64), threads=1, bf16=False, augmentation=NO_GEOMETRY)
    only_wide = on_inference_grid(load_cases(data, {"case004"}), (64, 64))
    x, y = _batch_tensors(only_wide, None, settings, 1)
    inferred, _ = prepare_input(read_frame(data / "images" / "case004.png"), (64, 64), 1, DEFAULT_NORMALISATION)
    assert tuple(y.shape) == (1, 80, 80)  # one size: the loss stays on the padded labels' own grid
    assert np.allclose(x[0, 0].numpy(), inferred[0], atol=1e-6)

    result = train(settings)
    assert len(result.history) == 1 and 0.0 <= result.history[0].dice_fh <= 1.0


def test_a_float_frame_on_another_scale_is_augmented_on_its_own_levels(tmp_path):
    # A frame in dB (-60 to 0) had been augmented into a blank one, and one of 0-4000 into a saturated one: the
    # augmentation assumes 0-255 while the readers keep a float frame's own scale (a training review).
    import SimpleITK as sitk

    from ipp_seg.inference.pipeline import prepare_input
    from ipp_seg.inference.preprocess import DEFAULT_NORMALISATION
    from ipp_seg.io import read_frame
    from ipp_seg.train.data import load_cases, on_augmentation_scale
    from ipp_seg.train.loop import _batch_tensors

    data = _synthetic_folder(tmp_path / "data", n=1, size=64)
    grey = cv2.imread(str(data / "images" / "case000.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    (data / "images" / "case000.png").unlink()
    sitk.WriteImage(sitk.GetImageFromArray(grey / 255 * 60 - 60), str(data / "images" / "case000.mha"))
    (case,) = load_cases(data)
    assert (case.image.min(), case.image.max()) == (0, 255)  # from the frame's own darkest and brightest
    image, _ = augment(case.image, case.labels, np.random.default_rng(0))
    assert image.std() > 10  # not blank
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), input_size=(64, 64),
                             augmentation=NO_GEOMETRY)
    x, _ = _batch_tensors([case], None, settings, 1)
    inferred, _ = prepare_input(read_frame(data / "images" / "case000.mha"), (64, 64), 1, DEFAULT_NORMALISATION)
    assert np.allclose(x[0, 0].numpy(), inferred[0], atol=1e-4)
    # Frames on the 0-255 scale (or 0-1) keep their levels; NaN outside the field of view is black.
    assert on_augmentation_scale(grey) is not None and np.array_equal(on_augmentation_scale(grey), grey)
    assert np.allclose(on_augmentation_scale(grey / 255), grey, atol=1e-3)
    holed = on_augmentation_scale(np.array([[np.nan, 1000.0], [3000.0, 5000.0]], np.float32))
    assert holed.tolist() == [[0.0, 0.0], [127.5, 255.0]]


def test_a_frame_in_black_bands_or_a_drawn_border_is_trained_as_inference_shows_it(tmp_path):
    # Training had shown such frames whole, bands, border line and all, while inference cuts the bands off and
    # covers the line (an inference review): the network then met in use what it had not learnt.
    from ipp_seg.inference.pipeline import prepare_input
    from ipp_seg.inference.preprocess import DEFAULT_NORMALISATION
    from ipp_seg.io import read_frame
    from ipp_seg.train.data import load_cases, on_inference_grid
    from ipp_seg.train.loop import _batch_tensors

    data = _synthetic_folder(tmp_path / "data", n=2, size=96)
    image = cv2.imread(str(data / "images" / "case001.png"), cv2.IMREAD_GRAYSCALE)
    labels = cv2.imread(str(data / "masks" / "case001.png"), cv2.IMREAD_GRAYSCALE)
    framed = np.pad(image, ((0, 0), (40, 0)))  # black columns at the left, as a crop padded back
    framed[:, 40], framed[:, -1] = 255, 255  # and a white line drawn at each side of the image
    cv2.imwrite(str(data / "images" / "case001.png"), framed)
    cv2.imwrite(str(data / "masks" / "case001.png"), np.pad(labels, ((0, 0), (40, 0))))
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), input_size=(64, 64),
                             augmentation=NO_GEOMETRY)
    (case,) = on_inference_grid(load_cases(data, {"case001"}), (64, 64))
    assert case.labels.shape == (96, 96) and (case.labels == labels).all()  # the bands off, labels alike
    x, _ = _batch_tensors([case], None, settings, 1)
    inferred, _ = prepare_input(read_frame(data / "images" / "case001.png"), (64, 64), 1, DEFAULT_NORMALISATION)
    assert np.allclose(x[0, 0].numpy(), inferred[0], atol=1e-6)
    (plain,) = load_cases(data, {"case000"})
    assert on_inference_grid([plain], (64, 64))[0] is plain  # a frame inference shows whole stays as it is


def test_masks_with_other_label_values_are_refused_with_a_way_out_or_mapped_when_named(tmp_path):
    from typer.testing import CliRunner

    from ipp_seg.cli import app
    from ipp_seg.io import read_frame
    from ipp_seg.train.data import load_cases

    data = _synthetic_folder(tmp_path / "data", n=4)
    originals = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (data / "masks").glob("*.png")}
    for name, labels in originals.items():  # a common export: PS 128, FH 255
        cv2.imwrite(str(data / "masks" / name), np.choose(labels, [0, 128, 255]).astype(np.uint8))
    with pytest.raises(ValueError, match=r"case000\.png: label values 128, 255 besides background 0, PS 1 and FH 2"):
        load_cases(data)
    mapped = {c.case_id: c.labels for c in load_cases(data, labels=(128, 255))}
    assert all((mapped[n[:-4]] == originals[n]).all() for n in originals)

    run = tmp_path / "run"
    common = ["train", str(data), "--config", "dssau-net-s", "--out", str(run), "--batch-size", "2", "--epochs", "1",
              "--validation-count", "1", "--threads", "1", "--no-bf16", "--input-size", "64"]
    refused = CliRunner().invoke(app, common)
    said = " ".join(refused.output.split())  # rich wraps long lines
    assert refused.exit_code == 2 and "--labels ps=128,fh=255" in said and "Traceback" not in said
    assert CliRunner().invoke(app, [*common, "--labels", "ps=1,fh=1"]).exit_code == 2
    assert CliRunner().invoke(app, [*common, "--labels", "ps=128,fh=255"]).exit_code == 0
    assert tuple(load_torch_file(run / "last.pt")["settings"]["mask_labels"]) == (128, 255)

    # A 16-bit frame is trained on as inference reads it (scaled to 0-255), not wrapped round.
    deep = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    cv2.imwrite(str(data / "images" / "case000.png"), deep)
    image = load_cases(data, {"case000"}, labels=(128, 255))[0].image
    assert np.array_equal(image, read_frame(data / "images" / "case000.png").pixels) and image.max() > 250


def test_unpaired_images_and_masks_are_left_out_and_named(tmp_path, caplog):
    data = _synthetic_folder(tmp_path / "data", n=4)
    (data / "masks" / "case001.png").unlink()
    (data / "masks" / "case009.png").write_bytes((data / "masks" / "case002.png").read_bytes())
    (data / "images" / ".DS_Store").write_bytes(b"\0")
    (data / "images" / "notes.txt").write_text("scanner settings")
    with caplog.at_level("WARNING", logger="ipp_seg.train.data"):
        pairs = find_pairs(data)
    assert [cid for cid, _, _ in pairs] == ["case000", "case002", "case003"]
    said = caplog.text
    assert "1 image without a mask, left out: case001" in said
    assert "1 mask without an image, left out: case009" in said
    assert "DS_Store" not in said and "notes" not in said
    # A mask copied through macOS (decomposed ü) pairs with its image (composed): one case, not two unpaired.
    import unicodedata

    (data / "images" / "case003.png").rename(data / "images" / unicodedata.normalize("NFC", "Müller.png"))
    (data / "masks" / "case003.png").rename(data / "masks" / unicodedata.normalize("NFD", "Müller.png"))
    assert unicodedata.normalize("NFC", "Müller") in [cid for cid, _, _ in find_pairs(data)]
    # So in the flat layout, <case>.png beside <case>_mask.png.
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(data / "images" / "case000.png", flat / unicodedata.normalize("NFC", "Müller.png"))
    shutil.copy(data / "masks" / "case000.png", flat / unicodedata.normalize("NFD", "Müller_mask.png"))
    assert [cid for cid, _, _ in find_pairs(flat)] == [unicodedata.normalize("NFC", "Müller")]


def test_two_files_of_one_case_id_are_refused_naming_both_and_predict_style_mask_names_pair(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    # A conversion left beside its original: which one paired with the mask depended on the listing.
    shutil.copy(data / "images" / "case001.png", data / "images" / "case000.tif")
    with pytest.raises(ValueError, match=r"case ID 'case000' has two files, images/case000.png and "
                                         r"images/case000.tif: keep one"):
        find_pairs(data)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 2 and "has two files" in _said(result) and not (tmp_path / "run").exists()
    (data / "images" / "case000.tif").unlink()
    # Masks named as predict --out and evaluate name them pair with their images.
    for mask in (data / "masks").iterdir():
        mask.rename(mask.with_name(mask.stem + "_mask.png"))
    assert [(cid, m.name) for cid, _, m in find_pairs(data)][:2] == [("case000", "case000_mask.png"),
                                                                       ("case001", "case001_mask.png")]
    (data / "masks" / "case002.png").write_bytes((data / "masks" / "case002_mask.png").read_bytes())
    with pytest.raises(ValueError, match="case ID 'case002' has two files, masks/case002.png and masks/case002_mask"):
        find_pairs(data)


def test_labels_that_look_swapped_and_validation_frames_copied_into_training_are_said(tmp_path, caplog):
    from ipp_seg.train.data import load_cases

    data = _synthetic_folder(tmp_path / "data", n=4)
    with caplog.at_level("WARNING", logger="ipp_seg.train.data"):
        load_cases(data)
        assert "swapped" not in caplog.text
        load_cases(data, labels=(2, 1))  # the head read as the symphysis
    assert "in 4 of 4 masks the pubic symphysis (label 2) is larger than the fetal head (label 1)" in caplog.text
    assert "are the labels swapped? (--labels ps=1,fh=2)" in caplog.text
    # A validation frame copied under another name, as a file manager names a copy.
    for sub in ("images", "masks"):
        shutil.copy(data / sub / "case003.png", data / sub / "case000 (1).png")
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1,
                             batch_size=2, validation_count=1, input_size=(64, 64), threads=1, bf16=False,
                             augmentation=NO_GEOMETRY)
    caplog.clear()
    with caplog.at_level("WARNING", logger="ipp_seg.train.loop"):
        train(settings)
    assert "1 frame of the validation also in training under another ID (the same pixels), so not held out: " \
           "case003 = case000 (1)" in caplog.text


def test_a_folder_whose_masks_mix_label_conventions_is_said_so_whichever_labels_are_given(tmp_path):
    # Half the masks 0/1/2, half 0/128/255: the advice for the first refused mask had named --labels ps=128,fh=255,
    # and with it, --labels ps=1,fh=2, back and forth.
    from ipp_seg.train.data import load_cases

    data = _synthetic_folder(tmp_path / "data", n=4)
    for case in ("case002", "case003"):
        mask = cv2.imread(str(data / "masks" / f"{case}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(data / "masks" / f"{case}.png"), np.choose(mask, [0, 128, 255]).astype(np.uint8))
    for labels in ((1, 2), (128, 255)):
        with pytest.raises(ValueError) as refused:
            load_cases(data, labels=labels)
        said = str(refused.value)
        assert "its masks mix label conventions: 2 masks hold 0, 1, 2 (e.g. case000.png); 2 masks hold 0, 128, 255 " \
               "(e.g. case002.png)" in said and "save every mask with the same values" in said
    # One convention, the wrong --labels: the mask's own advice, as before; a blank mask beside them decides nothing.
    plain = _synthetic_folder(tmp_path / "plain", n=2)
    with pytest.raises(ValueError, match="--labels ps=1,fh=2 if the PS"):
        load_cases(plain, labels=(128, 255))
    cv2.imwrite(str(plain / "masks" / "case001.png"), np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="--labels ps=1,fh=2 if the PS"):
        load_cases(plain, labels=(128, 255))


def test_masks_resized_with_interpolation_are_said(tmp_path, caplog, psfhs_dir):
    # Masks upscaled with the frames by linear interpolation keep the values 0, 1 and 2, but the head's border becomes
    # a ring of PS label (about 50 pieces): trained on without a word. Nearest-neighbour resizing is fine.
    from ipp_seg.io import read_frame
    from ipp_seg.train.data import load_cases

    for folder, interpolation in (("nearest", cv2.INTER_NEAREST), ("linear", cv2.INTER_LINEAR)):
        for sub in ("images", "masks"):
            (tmp_path / folder / sub).mkdir(parents=True)
        for case in ("04700", "04750"):
            image = read_frame(psfhs_dir / "image_mha" / f"{case}.mha").pixels.astype(np.uint8)
            mask = read_frame(psfhs_dir / "label_mha" / f"{case}.mha").pixels.astype(np.uint8)
            cv2.imwrite(str(tmp_path / folder / "images" / f"{case}.png"), cv2.resize(image, (400, 400)))
            cv2.imwrite(str(tmp_path / folder / "masks" / f"{case}.png"),
                        cv2.resize(mask, (400, 400), interpolation=interpolation))
        caplog.clear()
        with caplog.at_level("WARNING", logger="ipp_seg.train.data"):
            load_cases(tmp_path / folder)
        said = " ".join(caplog.text.split())
        if folder == "nearest":
            assert "interpolation" not in said
        else:
            assert "in 2 masks the PS lies in many pieces along the head's edge" in said
            assert "resize masks with nearest-neighbour interpolation" in said and "04700, 04750" in said


def test_a_validation_split_that_leaves_nothing_to_train_on_says_what_to_change(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(ValueError, match=r"has 4 image/mask pairs and the validation takes them all \(the last 200 "
                                         r"IDs\): lower --validation-count, or 0"):
        train(settings)
    assert not (tmp_path / "run" / "split.json").exists()


def test_model_card_states_the_signed_aop_agreement_and_a_bias_as_a_known_limit():
    from ipp_seg.train.ship import _agreement_markdown, _bias_limit

    low = {"n": 200, "bias": -4.13, "sd": 9.0, "lower": -21.77, "upper": 13.51, "proportional_slope": -0.163}
    validation = {"overall": {"aop_agreement": {**low, "bias": -3.0}, "aop_reference_agreement": low},
                  "style:wide": {"aop_agreement": low, "aop_reference_agreement": low}}
    table = "\n".join(_agreement_markdown(validation))
    assert "| overall | aop_reference.csv | 200 | -4.13 | -21.77 to +13.51 | -0.163 |" in table
    assert "| overall | ground-truth mask, same method | 200 | -3.00 |" in table
    assert "style:wide" not in table  # the styles repeat the blocks
    # The limit is stated from the figures, against the reference where the card has one.
    (limit,) = _bias_limit(validation)
    assert "reads low by 4.1 deg" in limit and "aop_reference.csv" in limit and "-21.8 to +13.5" in limit
    assert "large angles, a descended head, read lower" in limit
    flat = {"overall": {"aop_agreement": {**low, "bias": 0.4, "proportional_slope": 0.01},
                        "aop_reference_agreement": None}}
    (limit,) = _bias_limit(flat)
    assert "reads high by 0.4 deg" in limit and "ground-truth mask" in limit and "grows" not in limit
    # A card measured before the agreement existed has neither.
    assert _agreement_markdown({"overall": {"cases": 3}}) == [] and _bias_limit({"overall": {}}) == []
    # Half the frames without an angle (a weak model of one's own): said over those that have one, not "all".
    (limit,) = _bias_limit({"overall": {"cases": 10, "aop_agreement": {**low, "n": 5}}})
    assert "Over the 5 of its 10 validation frames that have an angle the AoP reads low" in limit
    assert "Over all its validation frames" in _bias_limit({"overall": {"cases": 200, **validation["overall"]}})[0]
    from ipp_seg.train.ship import _duration_words

    assert [_duration_words(h) for h in (5.5, 0.05, 0.004, 0.0, None)] == [
        "5.5 h", "3.0 min", "14 s", "under 0.01 h", "an unrecorded time"]  # (0.0: a card before 0.2.4)
    # A fine-tuned model's own run apart from the runs before it (an ML engineer's pass: "4.78 h on Intel Xeon" for a
    # run of 17 s, the rest its parent's on other machines).
    from ipp_seg.train.ship import _duration_text

    machine = {"processor": "Intel Xeon"}
    assert _duration_text({"hours": 4.785, "machine": machine, "lineage": [{"hours": 4.78}]}).startswith(
        "18 s on Intel Xeon") and _duration_text({"hours": 4.785, "machine": machine, "lineage": [
            {"hours": 4.78}]}).endswith("; 4.785 h with the runs it was fine-tuned from")
    assert _duration_text({"hours": 2.0, "machine": machine, "lineage": []}).startswith("2.0 h on Intel Xeon")


def test_model_card_names_the_local_contrast_equalisation_when_the_model_uses_it():
    from pathlib import Path

    from ipp_seg.inference.preprocess import DEFAULT_NORMALISATION, with_local_contrast
    from ipp_seg.train.ship import model_card_markdown

    card = json.loads((Path(__file__).resolve().parents[1] / "models" / "dssau-net-s-heldout.json").read_text())
    plain = model_card_markdown(card)
    assert "per-frame percentile normalisation, see" in plain and "CLAHE" not in plain
    card["normalisation"] = with_local_contrast(DEFAULT_NORMALISATION, 2.0)
    assert "local contrast equalisation, CLAHE clip limit 2 on 8x8 tiles" in model_card_markdown(card)


# --- refusals, interruptions and messages of `train` and `export` ---------------------------------

_TINY = ["--config", "dssau-net-s", "--batch-size", "2", "--epochs", "1", "--threads", "1", "--no-bf16",
         "--input-size", "64"]


def _tiny(epochs: int) -> list[str]:
    """:data:`_TINY` with another number of epochs (an option given twice is refused)."""
    at = _TINY.index("--epochs")
    return [*_TINY[:at + 1], str(epochs), *_TINY[at + 2:]]


def _said(result) -> str:
    """The output on one line (rich may fold a long message)."""
    return " ".join(result.output.split())


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ipp-seg: "), result.output
    assert "Traceback" not in result.output and "Errno" not in result.output
    return lines[0]


def test_a_run_folder_that_cannot_be_made_is_refused_naming_it(tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=4)
    (tmp_path / "mk.py").write_text("print()")
    outs = [(tmp_path / "mk.py", "is a file, not a folder"),
            (tmp_path / "mk.py" / "run", f"cannot be made: {tmp_path / 'mk.py'} is a file")]
    if Path("/proc/self").is_dir():  # a folder nobody can make a folder in, even root
        outs.append((Path("/proc/ipp-seg-test-run"), "cannot be made"))
    for out, why in outs:
        result = CliRunner().invoke(app, ["train", str(data), "--out", str(out), "--validation-count", "1", *_TINY])
        assert result.exit_code == 2, result.output
        line = _one_error_line(result)
        assert str(out) in line and why in line, line
    assert (tmp_path / "mk.py").read_text() == "print()"


def test_loss_weights_that_are_all_zero_are_refused_before_anything_is_written(tmp_path):
    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=4)
    for option, value in (("--ce-weights", "0,0,0"), ("--dice-weights", "0,0"), ("--ce-weights", "nan,1,1")):
        result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--validation-count",
                                          "1", option, value, *_TINY])
        assert result.exit_code == 2 and option in _one_error_line(result), result.output
        assert not (tmp_path / "run").exists()
    # The library refuses them too: the loss would be 0/0.
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1,
                             validation_count=1, ce_class_weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="not all 0"):
        train(settings)
    with pytest.raises(ValueError, match="not all 0"):
        train(TrainSettings(**{**settings.__dict__, "ce_class_weights": (1.0, 2.0, 1.0),
                               "dice_class_weights": (0.0, 0.0)}))
    assert not (tmp_path / "run").exists()


def test_a_learning_rate_of_zero_or_a_negative_warm_up_is_refused(tmp_path):
    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=4)
    for option, value in (("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "nan"), ("--lr", "inf"),
                          ("--warmup-epochs", "-1")):
        result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--validation-count",
                                          "1", option, value, *_TINY])
        assert result.exit_code == 2 and option in _one_error_line(result), (option, value, result.output)
        if option == "--lr":  # ("must be above 0, got inf" had read as a slip)
            assert "must be a finite number above 0" in _one_error_line(result)
        assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="--warmup-epochs"):
        train(TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), warmup_epochs=-1.0))


def _nan_from_step(monkeypatch, first_bad_step: int) -> None:
    """The training loss turns NaN from the given step (1-based) on, as a diverging run's does."""
    from ipp_seg.train import loop

    real, calls = loop.segmentation_loss, []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) >= first_bad_step else value
    monkeypatch.setattr(loop, "segmentation_loss", loss)


def test_a_loss_that_is_not_finite_stops_the_run_and_is_never_saved_as_best(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ipp_seg.train.loop import TrainingDiverged

    data = _synthetic_folder(tmp_path / "data", n=6)  # 4 training frames: 2 steps an epoch
    run = tmp_path / "run"
    _nan_from_step(monkeypatch, 3)  # epoch 2's first step
    args = ["train", str(data), "--out", str(run), "--validation-count", "2", *_tiny(3)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    line = lines[-1]  # after the finished epoch's line and bar: the error, last, on one line
    assert line.startswith("ipp-seg: ") and sum("ipp-seg:" in x for x in lines) == 1, result.output
    assert "Traceback" not in result.output
    assert "epoch 2, step 1 of 2: the training loss is nan" in line and f"{run / 'last.pt'} holds epoch 1" in line
    for name in ("last.pt", "best.pt"):  # the weights and the best are epoch 1's, not NaN
        saved = load_torch_file(run / name)
        assert saved["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved["model"].values()
                                           if t.is_floating_point())
    assert len((run / "history.jsonl").read_text().splitlines()) == 1

    _nan_from_step(monkeypatch, 1)  # the very first step: nothing is saved
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "first"), epochs=1,
                             batch_size=2, validation_count=2, input_size=(64, 64), threads=1, bf16=False)
    with pytest.raises(TrainingDiverged, match="no epoch was saved"):
        train(settings)
    assert not any((tmp_path / "first" / name).exists() for name in ("last.pt", "best.pt", "history.jsonl"))


def test_history_jsonl_stays_strict_json_without_validation_frames(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1,
                             batch_size=2, validation_count=0, input_size=(64, 64), threads=1, bf16=False)
    train(settings)

    def refuse(constant):
        raise ValueError(f"bare {constant} in history.jsonl")
    (record,) = [json.loads(line, parse_constant=refuse)
                 for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert record["dice_ps"] is None and record["score"] is None and record["train_loss"] > 0


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
@pytest.mark.parametrize("epoch_saved", [False, True])
def test_sigterm_stops_train_like_ctrl_c_and_says_whether_there_is_anything_to_resume(tmp_path, monkeypatch,
                                                                                     how, epoch_saved):
    import os
    import signal
    import time

    from typer.testing import CliRunner

    from ipp_seg.train import loop

    def stopped(*args, **kwargs):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler interrupts this at once
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "train", stopped)

    def not_train_s(signum, frame):  # the test's own: were train not to take SIGTERM, this would say so
        raise RuntimeError("SIGTERM reached the test's handler, not train's")
    data = _synthetic_folder(tmp_path / "data", n=4)
    run = tmp_path / "run"
    if epoch_saved:
        run.mkdir()
        (run / "last.pt").write_bytes(b"")
    original = signal.signal(signal.SIGTERM, not_train_s)
    try:
        result = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--validation-count", "1", *_TINY])
        assert signal.getsignal(signal.SIGTERM) is not_train_s  # put back as it was
    finally:
        signal.signal(signal.SIGTERM, original)
    assert result.exit_code == 130, result.output
    line = _one_error_line(result)
    if epoch_saved:
        assert f"{run / 'last.pt'} holds the last finished epoch; --resume continues from it" in line
    else:
        assert "before any epoch finished" in line and "without --resume" in line and "last.pt" not in line


@pytest.mark.parametrize("stop, raised", [
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(28, "No space left on device"), "cannot write .*last.pt: No space left on device"),
    # torch's own words for a full disk: an internal assertion, replaced by ipp-seg's
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 14168320 vs 14168212"),
     "cannot write .*last.pt: (the disk is full or nearly so|.*unexpected pos)"),
])
def test_a_checkpoint_save_that_is_interrupted_leaves_no_temporary_file(tmp_path, monkeypatch, stop, raised):
    from ipp_seg.train import loop

    target = tmp_path / "last.pt"
    torch.save({"epoch": 1}, target)

    def half_written(payload, path):
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise stop
    monkeypatch.setattr(loop.torch, "save", half_written)
    if isinstance(raised, str):
        with pytest.raises(loop.RunWriteError, match=raised):
            loop.save_replacing(target, {"epoch": 2})
    else:
        with pytest.raises(raised):
            loop.save_replacing(target, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_torch_file(target) == {"epoch": 1}  # the previous epoch's, whole


def _refused_data(tmp_path, problem: str):
    """(data folder, arguments, what the error must say) for a run refused for its data."""
    data = tmp_path / "data"
    if problem == "missing folder":
        return data, [], [f"the data folder {data} does not exist"]
    _synthetic_folder(data, n=4)
    if problem == "validation takes all":
        return data, ["--validation-count", "9"], ["the validation takes them all"]
    if problem == "label values":
        cv2.imwrite(str(data / "masks" / "case001.png"), np.full((64, 64), 7, np.uint8))
        return data, [], ["case001.png", "label values 7"]
    if problem == "size mismatch":
        cv2.imwrite(str(data / "masks" / "case002.png"), np.zeros((48, 64), np.uint8))
        return data, [], [str(data / "images" / "case002.png"), str(data / "masks" / "case002.png"), "64 x 64 px",
                          "64 x 48 px", "differ in size"]
    (data / "images" / "case003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # a corrupt image
    return data, [], ["case003.png"]


@pytest.mark.parametrize("problem", ["missing folder", "validation takes all", "label values", "size mismatch",
                                     "corrupt image"])
def test_a_run_refused_for_its_data_leaves_no_folder_and_no_progress_bar(tmp_path, problem):
    from typer.testing import CliRunner

    data, extra, expected = _refused_data(tmp_path, problem)
    run = tmp_path / "run"
    extra = extra or ["--validation-count", "1"]  # (an option once: given twice, it is refused)
    args = ["train", str(data), "--out", str(run), *_TINY, *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = " ".join(_one_error_line(result).split())  # no empty bar after it
    assert all(part in line for part in expected), line
    assert not run.exists()


def test_unpaired_files_are_named_once_per_run(tmp_path, caplog):
    data = _synthetic_folder(tmp_path / "data", n=4)
    (data / "images" / "case009.png").write_bytes((data / "images" / "case000.png").read_bytes())
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1,
                             batch_size=2, validation_count=1, input_size=(64, 64), threads=1, bf16=False)
    with caplog.at_level("WARNING", logger="ipp_seg.train.data"):
        train(settings)
    said = [r.getMessage() for r in caplog.records if "without a mask" in r.getMessage()]
    assert len(said) == 1 and "1 image without a mask, left out: case009" in said[0], said


def test_a_run_folder_given_for_a_checkpoint_points_to_the_checkpoint_in_it(tmp_path):
    from typer.testing import CliRunner

    data = _synthetic_folder(tmp_path / "data", n=4)
    run = tmp_path / "run_ft"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["export", str(run), "--onnx", str(tmp_path / "x.onnx")],
                 ["train", str(data), "--out", str(tmp_path / "new"), "--init-from", str(run),
                  "--validation-count", "1", *_TINY]):
        result = CliRunner().invoke(app, args)
        line = _one_error_line(result)
        assert result.exit_code == 2 and f"{run} is a folder, not a checkpoint" in line, line
        assert str(run / "best.pt") in line and "does not exist" not in line and "no such" not in line
    result = CliRunner().invoke(app, ["export", str(empty), "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "holds neither" in _one_error_line(result)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "gone.pt"), "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "checkpoint" in _one_error_line(result) and "does not exist" in result.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "x.onnx").exists()


def test_resume_names_one_changed_option_in_the_singular(tmp_path):
    runner, common, run = _tiny_cli_run(tmp_path, n_cases=4, validation_count=1)
    one = runner.invoke(app, [*common, "--resume", "--lr", "0.5"])
    assert one.exit_code == 2 and "and --lr differs from its recipe: leave it out" in _said(one)
    two = runner.invoke(app, [*common, "--resume", "--lr", "0.5", "--seed", "3"])
    assert two.exit_code == 2 and "and --lr, --seed differ from its recipe: leave them out" in _said(two)


def test_resume_accepts_every_option_typed_again_as_the_run_had_it_and_names_the_one_that_differs(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    run = tmp_path / "run"
    typed = ["train", str(data), "--config", "dssau-net-s", "--out", str(run), "--epochs", "1", "--batch-size", "2",
             "--lr", "0.002", "--seed", "5", "--validation-count", "1", "--extra-validation", "case000-case000",
             "--device", "cpu", "--threads", "1", "--no-bf16", "--warmup-epochs", "0.5", "--ce-weights", "1,3,1",
             "--dice-weights", "2,1", "--shape-weight", "0.5", "--boundary-weight", "0.1", "--ema-decay", "0.9",
             "--endpoint-weight", "0", "--deep-supervision", "0.2", "--elastic", "0.1", "--shadow", "0.1",
             "--drop-path", "0.1", "--input-size", "64", "--local-contrast", "2", "--labels", "ps=1,fh=2"]
    runner = CliRunner()
    first = runner.invoke(app, typed)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [*typed, "--resume"])  # every option as the run has it: nothing differs
    assert again.exit_code == 0, again.output
    shadow = runner.invoke(app, [*typed[:typed.index("--shadow")], "--shadow", "0.3", "--resume"])
    assert shadow.exit_code == 2 and "and --shadow differs from its recipe" in _said(shadow)
    contrast = runner.invoke(app, [*typed[:typed.index("--local-contrast")], "--resume"])  # off: the default
    assert contrast.exit_code == 0, contrast.output  # (not typed: the run's own goes on)
    contrast = runner.invoke(app, [*typed[:typed.index("--local-contrast")], "--local-contrast", "3", "--resume"])
    assert contrast.exit_code == 2 and "and --local-contrast differs from its recipe" in _said(contrast)


def test_an_extra_validation_block_of_ids_holding_hyphens_is_given_with_two_dots(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=5)
    for sub in ("images", "masks"):
        for i, path in enumerate(sorted((data / sub).iterdir())):
            path.rename(path.with_name(f"pt-0{i}-f0.png"))
    common = ["train", str(data), "--epochs", "1", "--batch-size", "2", "--validation-count", "1", "--threads", "1",
              "--no-bf16", "--input-size", "64"]
    hyphens = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a"),
                                       "--extra-validation", "pt-01-f0-pt-02-f0"])
    assert hyphens.exit_code == 2 and "or FIRST..LAST where the IDs hold a hyphen" in _said(hyphens)
    dots = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--extra-validation", "pt-01-f0..pt-02-f0"])
    assert dots.exit_code == 0, dots.output
    split = json.loads((tmp_path / "b" / "split.json").read_text())
    assert split["validation"] == ["pt-01-f0", "pt-02-f0", "pt-04-f0"]
    # ...and they are written back so: FIRST-LAST would read as one ID, or another block.
    assert "validation pt-01-f0..pt-02-f0, pt-04-f0 (3)" in _said(dots)
    backwards = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "c"), "--extra-validation",
                                         "pt-02-f0..pt-01-f0"])
    assert backwards.exit_code == 2 and "--extra-validation pt-02-f0..pt-01-f0: the first ID comes after" in _said(
        backwards)


def test_library_resume_refuses_given_settings_that_differ_and_reports_the_recipe_it_goes_on_with(tmp_path):
    from ipp_seg.train.loop import RecipeChangedError, recipe_changes

    data = _synthetic_folder(tmp_path / "data", n=4)
    settings = TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1,
                             batch_size=2, validation_count=1, learning_rate=2e-3, input_size=(64, 64), threads=1,
                             bf16=False, augmentation=NO_GEOMETRY)
    started = []
    train(settings, on_start=lambda running, split: started.append(running))
    assert started == [settings]
    before = (tmp_path / "run" / "last.pt").read_bytes()
    # Given on purpose and different: refused before any step, naming the settings in the order given.
    other = replace(settings, learning_rate=0.5, seed=3, epochs=2)
    with pytest.raises(RecipeChangedError) as refused:
        train(other, resume=True, given=["seed", "learning_rate", "epochs", "threads"])
    assert refused.value.settings == ("seed", "learning_rate")
    said = str(refused.value)
    assert "seed, learning_rate differ" in said and str(tmp_path / "run" / "last.pt") in said
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    with pytest.raises(ValueError, match="no such training setting: lr"):
        train(settings, given=["lr"])
    # Not given (defaults a caller did not choose): the run's own recipe goes on, as on_start says.
    train(other, resume=True, on_start=lambda running, split: started.append(running))
    assert started[-1].learning_rate == 2e-3 and started[-1].seed == 0 and started[-1].epochs == 2
    assert load_torch_file(tmp_path / "run" / "last.pt")["epoch"] == 2
    # Fewer epochs than the run is planned on, asked for: refused (not given: the run's own, as before).
    with pytest.raises(RecipeChangedError, match="fewer epochs than the 2 its schedule is planned on") as fewer:
        train(settings, resume=True, given=["epochs"])
    assert fewer.value.planned_epochs == 2
    cli = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--resume", "--epochs", "1"])
    assert cli.exit_code == 2 and "as it was planned, over 2 epochs: --epochs 1 is fewer; leave it out" in _said(cli)
    # Values compare as the run's settings.json stores them: a list is its tuple.
    assert recipe_changes(settings, replace(settings, ce_class_weights=[1.0, 2.0, 1.0]), ["ce_class_weights"]) == ()
    # A field holding several settings is compared by the part given.
    shadowed = replace(settings, augmentation=replace(NO_GEOMETRY, shadow_probability=0.5))
    assert recipe_changes(settings, shadowed, ["augmentation.elastic_probability"]) == ()
    for typo in ("augmentation.shadow", "learning_rate.x", "epochs.", "normalisation.nonexistent_key"):
        with pytest.raises(ValueError, match=f"no such training setting: {typo}"):  # a typo would check nothing
            recipe_changes(settings, shadowed, [typo])
    assert recipe_changes(settings, settings, ["normalisation.local_contrast"]) == ()  # off on both sides
    assert recipe_changes(settings, shadowed, ["augmentation.shadow_probability", "augmentation"]) == (
        "augmentation.shadow_probability", "augmentation")


def test_a_run_started_in_bf16_resumes_without_it_on_a_machine_that_lacks_it(tmp_path):
    data = _synthetic_folder(tmp_path / "data", n=4)
    train(TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                        validation_count=1, input_size=(64, 64), threads=1, bf16=True, augmentation=NO_GEOMETRY))
    off = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--resume", "--no-bf16",
                                   "--epochs", "2"])
    assert off.exit_code == 0, _said(off)
    saved = load_torch_file(tmp_path / "run" / "last.pt")
    assert saved["epoch"] == 2 and saved["settings"]["bf16"] is False


def test_export_refuses_an_opset_the_installed_torch_cannot_write_naming_the_bounds(tmp_path):
    from typer.testing import CliRunner

    from torch.onnx import _constants

    # What the installed torch's TorchScript exporter (dynamo=False, as export uses) writes at most.
    highest = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 17)
    (tmp_path / "ck.pt").write_bytes(b"")  # refused before the checkpoint is even read
    for opset in (99, 16, highest + 1):
        result = CliRunner().invoke(app, ["export", str(tmp_path / "ck.pt"), "--onnx", str(tmp_path / "x.onnx"),
                                          "--opset", str(opset)])
        assert result.exit_code == 2, result.output
        assert f"--opset must be 17 to {highest}" in _one_error_line(result) and f"got {opset}" in result.output
    assert not (tmp_path / "x.onnx").exists()
    helped = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert "from 17 up to the highest" in _said(helped)


def test_export_keeps_the_tracers_warnings_to_itself(tmp_path):
    import warnings

    from ipp_seg.nn.dssau_net import build_network
    from ipp_seg.nn.export import export_onnx

    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(build_network("conv-unet-s"), tmp_path / "m.onnx", (64, 64), {})
        warnings.warn("after the export", torch.jit.TracerWarning)  # still shown: the filter was the export's
    tracer = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert tracer == ["after the export"], tracer[:3]
    assert warnings.filters == filters and (tmp_path / "m.onnx").is_file()


def test_an_export_stopped_before_its_end_leaves_the_earlier_model_as_it_was(tmp_path, monkeypatch):
    # A QA pass: a SIGTERM while torch wrote to --onnx (then folded and added the metadata in place) replaced an
    # earlier, good export with a model without its metadata, which inference refuses.
    import ipp_seg.nn.export as export
    from ipp_seg.nn.dssau_net import build_network

    target = tmp_path / "m.onnx"
    export.export_onnx(build_network("conv-unet-s"), target, (64, 64), {})
    good = target.read_bytes()

    def stopped(path):
        assert Path(path).name.startswith(".ipp-seg-") and Path(path).is_file()  # (written beside it, hidden)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_fold_constants", stopped)
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(build_network("conv-unet-s"), target, (64, 64), {})
    assert target.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# --- a run interrupted, or its folder shared, on a shared server -------------------------------------


def _tiny_settings(tmp_path, epochs=2, validation_count=0) -> TrainSettings:
    data = tmp_path / "data"
    if not data.exists():
        _synthetic_folder(data, n=4)
    return TrainSettings(config="dssau-net-s", data=str(data), out=str(tmp_path / "run"), epochs=epochs,
                         batch_size=2, validation_count=validation_count, input_size=(64, 64), threads=1, bf16=False)


def _history_epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]


def test_a_run_stopped_between_an_epochs_writes_is_brought_level_on_resume(tmp_path, monkeypatch, caplog):
    # Killed (SIGTERM, kill -9) after last.pt of epoch 2 was written but before best.pt and the
    # history line: resume used to trust last.pt, and best.pt and history.jsonl stayed behind.
    from ipp_seg.train import loop

    settings = _tiny_settings(tmp_path)  # no validation frames: every epoch is the best
    real_save = loop.save_replacing

    def stopped_after_last(path, payload):
        if path.name == "best.pt" and payload["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(path, payload)
    monkeypatch.setattr(loop, "save_replacing", stopped_after_last)
    with pytest.raises(KeyboardInterrupt):
        train(settings)
    monkeypatch.setattr(loop, "save_replacing", real_save)
    run = tmp_path / "run"
    assert load_torch_file(run / "last.pt")["epoch"] == 2
    assert load_torch_file(run / "best.pt")["epoch"] == 1 and _history_epochs(run) == [1]
    with caplog.at_level("WARNING"):
        result = train(settings, resume=True)
    assert result.best_epoch == 2
    best, last = (load_torch_file(run / name) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == 2 and "optimiser" not in best
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert _history_epochs(run) == [1, 2]
    assert "best.pt did not hold the run's best epoch 2" in caplog.text
    # Lines of two runs mixed in the log (or an epoch logged twice) are put right the same way.
    with open(run / "history.jsonl", "a") as fh:
        fh.write((run / "history.jsonl").read_text().splitlines()[0] + "\n")
    train(replace(settings, epochs=3), resume=True)
    assert _history_epochs(run) == [1, 2, 3]


def test_a_folder_with_a_runs_best_but_no_last_is_never_overwritten(tmp_path):
    settings = _tiny_settings(tmp_path, epochs=1)
    train(settings)
    run = tmp_path / "run"
    (run / "last.pt").unlink()  # copied away, or deleted by hand
    before = (run / "best.pt").read_bytes()
    with pytest.raises(ValueError, match=r"best.pt and history.jsonl without its last.pt.*--init-from .*best.pt"):
        train(settings)
    with pytest.raises(FileNotFoundError, match=r"nothing to resume.*can start from .*best.pt with --init-from"):
        train(settings, resume=True)
    assert (run / "best.pt").read_bytes() == before and _history_epochs(run) == [1]


def test_two_runs_cannot_write_into_one_run_folder(tmp_path):
    from ipp_seg.io.folders import folder_lock
    from ipp_seg.train.loop import LOCK_NAME, RunFolderInUseError

    settings = _tiny_settings(tmp_path, epochs=1)
    train(settings)
    run = tmp_path / "run"
    before = (run / "history.jsonl").read_text()
    # As another process's run holds it (flock locks are per open file, so this holds it here too).
    with folder_lock(run, LOCK_NAME, RunFolderInUseError("held by the test")):
        with pytest.raises(RunFolderInUseError, match="another ipp-seg train run is writing into"):
            train(replace(settings, epochs=2), resume=True)
    assert (run / "history.jsonl").read_text() == before
    train(replace(settings, epochs=2), resume=True)  # once it is free
    assert _history_epochs(run) == [1, 2]


def test_resume_checks_the_recipe_against_last_pt_when_the_json_copies_are_gone_or_empty(tmp_path):
    runner, common, run = _tiny_cli_run(tmp_path, n_cases=4, validation_count=1)
    (run / "settings.json").unlink()  # only last.pt copied to another machine
    changed = runner.invoke(app, [*common, "--resume", "--lr", "0.5"])
    assert changed.exit_code == 2 and "--lr differs from its recipe" in _said(changed)
    assert f"--init-from {run / 'last.pt'}" in _said(changed)
    (run / "settings.json").write_text("")  # a kill while it was written, before it was written atomically
    (run / "split.json").write_text("")
    resumed = runner.invoke(app, [*common, "--resume", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "split.json").read_text())["validation"] == ["case003"]  # the run's own split
    assert json.loads((run / "settings.json").read_text())["epochs"] == 2


def test_a_damaged_last_pt_is_named_so_with_the_way_on(tmp_path):
    runner, common, run = _tiny_cli_run(tmp_path, n_cases=4, validation_count=1)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])  # a copy cut short
    result = runner.invoke(app, [*common, "--resume", "--epochs", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = _said(result)
    assert "is damaged or cut short" in said and "cannot be resumed" in said
    assert f"can start from {run / 'best.pt'} with --init-from" in said
    exported = runner.invoke(app, ["export", str(run / "last.pt"), "--onnx", str(tmp_path / "x.onnx")])
    assert exported.exit_code == 2 and "damaged or cut short" in _said(exported)


def _flip_a_byte_inside_a_tensor(path: Path) -> None:
    """Change one byte of the largest tensor's data in a torch.save file (stored uncompressed),
    leaving the zip's structure whole: what a disk or copy error does."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_length = int.from_bytes(raw[entry.header_offset + 26: entry.header_offset + 28], "little")
    extra_length = int.from_bytes(raw[entry.header_offset + 28: entry.header_offset + 30], "little")
    at = entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_checkpoint_damaged_inside_is_refused_by_its_digest(tmp_path):
    from ipp_seg.train.loop import CONTENT_DIGEST, read_checkpoint, save_checkpoint

    checkpoint = {"model": {"w": torch.linspace(-1, 1, 4096), "n": torch.tensor(3)}, "config": {"name": "x"},
                  "epoch": 2, "history": [{"epoch": 1, "loss": 0.5}]}
    path = tmp_path / "c.pt"
    save_checkpoint(path, checkpoint)
    assert torch.equal(read_checkpoint(path)["model"]["w"], checkpoint["model"]["w"])
    _flip_a_byte_inside_a_tensor(path)
    assert not torch.equal(load_torch_file(path)["model"]["w"], checkpoint["model"]["w"])  # loads
    with pytest.raises(ValueError, match="is damaged: its contents differ from the checksum"):
        read_checkpoint(path)
    # Numpy scalars count as the numbers they hold (their repr changed with numpy 2).
    from ipp_seg.train.loop import checkpoint_digest

    assert checkpoint_digest({**checkpoint, "epoch": np.int64(2)}) == checkpoint_digest(checkpoint)
    # A checkpoint from before the digest is read as it loads; a value changed outside the tensors is seen too.
    torch.save(checkpoint, path)
    assert CONTENT_DIGEST not in read_checkpoint(path)
    save_checkpoint(path, checkpoint)
    changed = load_torch_file(path)
    changed["epoch"] = 3
    torch.save(changed, path)
    with pytest.raises(ValueError, match="is damaged"):
        read_checkpoint(path)


def test_a_last_pt_damaged_inside_is_not_resumed(tmp_path):
    runner, common, run = _tiny_cli_run(tmp_path, n_cases=4, validation_count=1)
    _flip_a_byte_inside_a_tensor(run / "last.pt")
    result = runner.invoke(app, [*common, "--resume", "--epochs", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = _said(result)
    assert "is damaged: its contents differ" in said and "cannot be resumed" in said
    assert f"can start from {run / 'best.pt'} with --init-from" in said


@pytest.mark.parametrize("failure, why", [
    (OSError(30, "Read-only file system"), "Read-only file system"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 14168320 vs 14168212"),
     "(the disk is full or nearly so|torch could not write it)"),
])
def test_a_disk_that_fills_or_turns_read_only_mid_run_stops_it_in_words(tmp_path, monkeypatch, failure, why):
    from ipp_seg.train import loop

    real_save = loop.torch.save
    saves = []

    def fails_on_the_second_epoch(payload, path):
        saves.append(path)
        if payload.get("epoch") == 2:
            with open(path, "wb") as fh:
                fh.write(b"PK\x03\x04 part of it")
            raise failure
        real_save(payload, path)
    monkeypatch.setattr(loop.torch, "save", fails_on_the_second_epoch)
    data = _synthetic_folder(tmp_path / "data", n=4)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--validation-count", "1", *_tiny(3)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    said = _said(result)
    assert f"cannot write {run / 'last.pt'}" in said and "--resume continues from it" in said
    assert re.search(f"cannot write {re.escape(str(run / 'last.pt'))}: {why}", said)
    assert load_torch_file(run / "last.pt")["epoch"] == 1  # the last epoch written in full
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".tmp") == []


def test_resume_into_a_folder_that_is_no_longer_writable_is_refused_before_any_work(tmp_path, monkeypatch):
    from ipp_seg.train import loop

    settings = _tiny_settings(tmp_path, epochs=1)
    train(settings)
    run = tmp_path / "run"
    real_access = loop.os.access
    # (chmod does not stop root, who runs CI; a read-only mount would)
    monkeypatch.setattr(loop.os, "access", lambda path, mode: Path(path) != run and real_access(path, mode))
    with pytest.raises(ValueError, match=f"the run folder {run} is not writable"):
        train(replace(settings, epochs=2), resume=True)


def test_a_flat_folder_names_its_images_without_masks(tmp_path, caplog):
    _synthetic_folder(tmp_path / "src", n=4)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        shutil.copy(tmp_path / "src" / "images" / f"case{i:03d}.png", flat / f"case{i:03d}.png")
        if i != 2:
            shutil.copy(tmp_path / "src" / "masks" / f"case{i:03d}.png", flat / f"case{i:03d}_mask.png")
    with caplog.at_level("WARNING"):
        pairs = find_pairs(flat)
    assert [p[0] for p in pairs] == ["case000", "case001", "case003"]
    assert "1 image without a mask, left out: case002" in caplog.text


def test_masks_without_either_structure_are_named(tmp_path, caplog):
    from ipp_seg.train.data import load_cases

    data = _synthetic_folder(tmp_path / "data", n=3)
    cv2.imwrite(str(data / "masks" / "case001.png"), np.zeros((64, 64), np.uint8))  # exported empty
    with caplog.at_level("WARNING"):
        cases = load_cases(data)
    assert len(cases) == 3
    assert "1 mask with neither a PS nor a FH (trained as background only): case001" in caplog.text
    # One structure erased (a lost annotation layer) had passed without a word.
    mask = cv2.imread(str(data / "masks" / "case002.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(data / "masks" / "case002.png"), np.where(mask == 2, 0, mask).astype(np.uint8))
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_cases(data)
    assert "1 mask without a FH (label 2; trained as background there): case002" in caplog.text
    assert "without a PS" not in caplog.text


def test_an_empty_checkpoint_is_named_empty(tmp_path):
    from ipp_seg.train.loop import read_checkpoint

    (tmp_path / "last.pt").write_bytes(b"")  # what a full disk leaves
    with pytest.raises(ValueError, match="is empty"):
        read_checkpoint(tmp_path / "last.pt")


def test_bf16_autocast_defaults_to_what_the_processor_computes_natively(monkeypatch):
    """By default bf16 autocast follows the hardware: a GPU that computes bf16 (Ampere on) gets it,
    as a CPU with AVX-512 BF16 or AMX does; an explicit --bf16 / --no-bf16 wins on either."""
    from ipp_seg.train import loop

    settings = TrainSettings(config="dssau-net-s", data="d", out="o")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: False)
    assert loop._use_bf16(settings, cuda) is True
    assert loop._use_bf16(settings, cpu) is False
    # A GPU before Ampere only emulates bf16 (torch says "supported" counting emulation): fp32 there.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: True)
    assert loop._use_bf16(settings, cuda) is False
    assert loop._use_bf16(settings, cpu) is True
    assert loop._use_bf16(replace(settings, bf16=False), cpu) is False
    assert loop._use_bf16(replace(settings, bf16=True), cuda) is True


def test_psfhs_png_copy_holds_the_pixels_train_reads_without_the_left_out_blocks(tmp_path):
    """scripts/psfhs_png_copy.py (the GPU machine's training data): a PSFHS-layout folder's
    frames as PNG pairs, pixel for pixel what ``ipp-seg train`` reads from the MHA files, the
    left-out blocks absent; an existing output folder is refused."""
    import subprocess
    import sys

    import cv2
    import SimpleITK as sitk

    from ipp_seg.train.data import load_cases

    data = tmp_path / "psfhs"
    (data / "image_mha").mkdir(parents=True)
    (data / "label_mha").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        labels = np.zeros((48, 64), np.uint8)
        cv2.ellipse(labels, (20 + i, 14), (9, 3), 15, 0, 360, 1, -1)
        cv2.circle(labels, (36, 30), 12, 2, -1)
        grey = (labels * 80 + rng.integers(0, 50, labels.shape)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey, grey, grey])), str(data / "image_mha" / f"0400{i}.mha"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(data / "label_mha" / f"0400{i}.mha"))
    script = Path(__file__).resolve().parents[1] / "scripts" / "psfhs_png_copy.py"
    out = tmp_path / "png"

    def copy():
        return subprocess.run([sys.executable, str(script), str(data), str(out), "--leave-out", "04003-04004",
                               "--leave-out", "04001"], capture_output=True, text=True)

    done = copy()
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == ["04000.png", "04002.png"]
    for case in load_cases(data, ids={"04000", "04002"}):
        np.testing.assert_array_equal(cv2.imread(str(out / "images" / f"{case.case_id}.png"), cv2.IMREAD_UNCHANGED),
                                      case.image)
        np.testing.assert_array_equal(cv2.imread(str(out / "masks" / f"{case.case_id}.png"), cv2.IMREAD_UNCHANGED),
                                      case.labels)
    again = copy()
    assert again.returncode == 2 and "exists: give a new folder" in again.stderr
    # IDs compare as numbers, as train's --extra-validation compares them: 4003-4004 is 04003-04004
    unpadded = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "png2"), "--leave-out",
                               "4003-4004", "--leave-out", "4001"], capture_output=True, text=True)
    assert unpadded.returncode == 0, unpadded.stderr
    assert sorted(p.name for p in (tmp_path / "png2" / "images").iterdir()) == ["04000.png", "04002.png"]
    # A block that names no frame is refused, not a copy with the validation frames in it
    for block in ("05003-05004", "4003-4004-4005"):
        refused = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "png3"), "--leave-out",
                                  block], capture_output=True, text=True)
        assert refused.returncode == 2 and f"--leave-out" in refused.stderr and block in refused.stderr
    assert not (tmp_path / "png3").exists()


# Model-shipping tooling (11 s): `pytest -m slow` before shipping; CI's suite, near its 15 minutes, leaves it out.
@pytest.mark.slow
def test_unpack_device_run_joins_checked_pieces_and_names_the_held_out_frames(tmp_path):
    """scripts/unpack_device_run.py: a run packed on a GPU machine (fp16 weights cut into pieces)
    comes back as a checkpoint with fp32 weights, a fresh digest and the left-out frames as its
    validation; a piece that differs from its checksum, or a held-out block it trained on, is refused."""
    import hashlib
    import subprocess
    import sys

    from ipp_seg.train.loop import read_checkpoint

    data = _synthetic_folder(tmp_path / "data", n=6)  # case000 ... case005
    weights = torch.linspace(-2, 2, 50_000)
    packed = {"model": {"w": weights.half(), "steps": torch.tensor(7)}, "config": {"name": "dssau-net-s"},
              "epoch": 3, "settings": {"epochs": 3}, "split": {"train": ["case000", "case001", "case002"],
                                                               "validation": []},
              "content_sha256": "of the full file on the GPU machine"}
    pack = tmp_path / "pack"
    pack.mkdir()
    buffer = tmp_path / "weights.pt"
    torch.save(packed, buffer)
    raw = buffer.read_bytes()
    for i in range(0, len(raw), 40_000):
        (pack / f"part-{i // 40_000:02d}").write_bytes(raw[i:i + 40_000])
    (pack / "parts.sha256").write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                                               for p in sorted(pack.glob("part-*"))))
    script = Path(__file__).resolve().parents[1] / "scripts" / "unpack_device_run.py"

    def unpack(*held_out):
        return subprocess.run([sys.executable, str(script), str(pack), "--out", str(tmp_path / "u.pt"),
                               "--data", str(data), *[a for h in held_out for a in ("--held-out", h)]],
                              capture_output=True, text=True)

    done = unpack("case004-case005")
    assert done.returncode == 0, done.stderr
    checkpoint = read_checkpoint(tmp_path / "u.pt")  # its digest checks out
    assert checkpoint["model"]["w"].dtype == torch.float32
    assert torch.equal(checkpoint["model"]["w"], weights.half().float())
    assert checkpoint["split"] == {"train": ["case000", "case001", "case002"], "validation": ["case004", "case005"]}
    trained_on = unpack("case002-case003")
    assert trained_on.returncode == 1 and "the run trained on 1 of these frames" in trained_on.stderr
    # Blocks compare IDs as numbers, as train's --extra-validation does (string order put case4 after case005)
    assert unpack("case4-case5").returncode == 0 and read_checkpoint(tmp_path / "u.pt")["split"]["validation"] == [
        "case004", "case005"]
    malformed = unpack("case4-case5-case6")
    assert malformed.returncode == 1 and "--held-out: an ID block is FIRST-LAST" in malformed.stderr
    with open(pack / "part-01", "ab") as fh:
        fh.write(b"x")
    broken = unpack("case004-case005")
    assert broken.returncode == 1 and "part-01: its sha256 differs from parts.sha256" in broken.stderr


def test_train_refuses_an_empty_data_or_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" would have been this folder: read as the data, or filled with a run
    for data, out, what in (("", "run", "data folder"), (str(tmp_path), "", "run folder")):
        with pytest.raises(ValueError, match=f"an empty path names no {what} "):
            train(TrainSettings(config="dssau-net-s", data=data, out=out, epochs=1))
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_without_read_permission_is_named_so(tmp_path, monkeypatch):
    # Seen as a user without read permission: read_checkpoint had ended in torch's PermissionError traceback.
    import os

    checkpoint = tmp_path / "ck.pt"
    checkpoint.write_bytes(b"PK\x03\x04")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not (os.fspath(p) == str(checkpoint) and mode & os.R_OK)
                        and real_access(p, mode, **kw))
    from ipp_seg.train.loop import check_checkpoint_path, read_checkpoint

    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(checkpoint))} cannot be read: permission denied"):
        read_checkpoint(checkpoint)  # (the command line's own check refuses it first, in a usage error)
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    # A checkpoint in a folder this user may not search: the check itself meets EACCES (it had been a traceback).

    real_is_file = Path.is_file

    def unsearchable(self, *args, **kwargs):
        if "locked" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self, *args, **kwargs)

    monkeypatch.setattr(Path, "is_file", unsearchable)
    with pytest.raises(ValueError, match="cannot be read: permission denied"):
        check_checkpoint_path(tmp_path / "locked" / "best.pt")


def test_model_cards_are_written_in_utf8_whatever_the_locale(tmp_path):
    # Windows writes text in cp1252 unless told: a data description with a Greek letter had ended shipping in a
    # UnicodeEncodeError (an ASCII locale stands in for it here).
    card = json.loads((Path(__file__).resolve().parents[1] / "models" / "dssau-net-s.json").read_text(encoding="utf-8"))
    card["training"]["data"] = "Klinik Müller, Δ-study"
    (tmp_path / "card.json").write_text(json.dumps(card), encoding="utf-8")
    code = ("import json, sys; from pathlib import Path; from ipp_seg.train.ship import write_card; "
            "write_card(Path(sys.argv[1]), 'mine', json.loads(Path(sys.argv[1], 'card.json').read_text('utf-8')))")
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-500:]
    assert "Klinik Müller, Δ-study" in (tmp_path / "mine.md").read_text(encoding="utf-8")
    written = json.loads((tmp_path / "mine.json").read_text(encoding="utf-8"))
    assert written["training"]["data"] == card["training"]["data"]


def test_export_refuses_a_name_model_would_not_take_and_a_shipped_models_file(tmp_path, monkeypatch):
    """An ML engineer's pass: export wrote an ONNX file named .pt (then read as PyTorch weights), one named
    =x.onnx (then refused by --model), and over a model's ONNX file in its models folder (then said to be "a copy
    cut short"); scripts/ship_model.py shipped a model named =evil that ipp-seg then left out."""
    import shutil

    from typer.testing import CliRunner

    from ipp_seg.inference.registry import resolve_model
    from ipp_seg.train.ship import ship_model

    shipped = resolve_model("dssau-net-s")
    models = tmp_path / "models"
    models.mkdir()
    for path in (shipped.onnx_path, shipped.torch_path, shipped.onnx_path.with_suffix(".json")):
        shutil.copy(path, models / path.name)
    monkeypatch.setenv("IPP_SEG_MODELS", str(models))
    kept = (models / shipped.onnx_path.name).read_bytes()
    runner = CliRunner()
    for target, said in ((tmp_path / "x.pt", "name the file .onnx"),
                         (tmp_path / "=x.onnx", "may not begin with '='"),
                         (models / shipped.onnx_path.name, "is the ONNX file of the model dssau-net-s")):
        result = runner.invoke(app, ["export", str(shipped.torch_path), "--onnx", str(target)])
        assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
    assert (models / shipped.onnx_path.name).read_bytes() == kept and not (tmp_path / "x.pt").exists()
    # ...and a model's file in another models folder than $IPP_SEG_MODELS names (a QA pass: the shipped one).
    monkeypatch.setenv("IPP_SEG_MODELS", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    result = runner.invoke(app, ["export", str(shipped.torch_path), "--onnx", str(models / shipped.onnx_path.name)])
    assert result.exit_code == 2 and "is the ONNX file of the model dssau-net-s" in " ".join(result.output.split())
    assert (models / shipped.onnx_path.name).read_bytes() == kept
    with pytest.raises(ValueError, match="may not begin with '='"):
        ship_model(tmp_path / "run", tmp_path / "out", "=evil", "ipp-seg train ...")
    with pytest.raises(ValueError, match="without its files' suffixes"):
        ship_model(tmp_path / "run", tmp_path / "out", "mine.onnx", "ipp-seg train ...")


def test_a_flat_folder_pairs_frames_and_masks_of_any_image_format(tmp_path, caplog):
    # A known limit: the flat layout read PNG alone, so a site's TIFF frames beside MHA masks found no pair.
    import SimpleITK as sitk

    from ipp_seg.train.data import load_cases

    _synthetic_folder(tmp_path / "src", n=4)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, (frame_suffix, mask_suffix) in enumerate(((".tif", ".mha"), (".png", ".nrrd"), (".bmp", ".png"),
                                                     (".png", ".png"))):
        frame = cv2.imread(str(tmp_path / "src" / "images" / f"case{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(tmp_path / "src" / "masks" / f"case{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(flat / f"case{i:03d}{frame_suffix}"), frame)
        if mask_suffix == ".png":
            cv2.imwrite(str(flat / f"case{i:03d}_mask.png"), mask)
        else:
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(flat / f"case{i:03d}_mask{mask_suffix}"))
    with caplog.at_level("WARNING"):
        pairs = find_pairs(flat)
    assert [(cid, image.suffix, m.name) for cid, image, m in pairs] == [
        ("case000", ".tif", "case000_mask.mha"), ("case001", ".png", "case001_mask.nrrd"),
        ("case002", ".bmp", "case002_mask.png"), ("case003", ".png", "case003_mask.png")]
    assert "without" not in caplog.text
    cases = load_cases(flat)
    assert [c.case_id for c in cases] == ["case000", "case001", "case002", "case003"]
    # A mask beside a DICOM file of its case: train reads no DICOM, and says so where it would look like a bug.
    shutil.copy(flat / "case003_mask.png", flat / "case004_mask.png")
    (flat / "case004.DCM").write_bytes(b"\0" * 132)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert len(find_pairs(flat)) == 4
    said = " ".join(caplog.text.split())
    assert "1 mask without an image, left out: case004" in said
    assert "1 mask beside a DICOM file of its case, which train does not read: export such frames as PNG" in said
    for case in cases:  # each frame with its own mask, as the PNG source had them
        source = cv2.imread(str(tmp_path / "src" / "masks" / f"{case.case_id}.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(case.labels, source)
