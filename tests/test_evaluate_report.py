"""ipp_seg.evaluate.report: per-case results, block summaries and score, folders of masks
(pairing, missing cases, formats), in-memory evaluation, CSV and JSON output."""

from __future__ import annotations

import csv
import json
import logging

import cv2
import numpy as np
import pytest

from ipp_seg.evaluate import (
    FAILED_AOP_PENALTY_DEG,
    SEGMENTATION_METRICS,
    CaseResult,
    case_id_of,
    challenge_score,
    evaluate_arrays,
    evaluate_case,
    evaluate_folders,
    read_label_mask,
    summarise_block,
    write_case_csv,
    write_evaluation,
    write_summary_json,
)
from ipp_seg.evaluate.report import _CASE_COLUMNS, relabel_mask
from ipp_seg.io.images import is_indexed_png
from ipp_seg.io import ScanReadError, read_frame
from ipp_seg.measure import measure_progress

SHAPE = (128, 128)


def scene(dx=0, dy=0, head_r=34, ps_label=1, fh_label=2):
    """PSFHS-like layout: PS near the top, rising slightly to its right-hand (inferior) end; the head below it."""
    m = np.zeros(SHAPE, dtype=np.uint8)
    cv2.circle(m, (44 + dx, 78 + dy), head_r, fh_label, thickness=-1)
    cv2.ellipse(m, (52 + dx, 18 + dy), (15, 5), -8, 0, 360, ps_label, thickness=-1)
    return m


def sector_image(narrow: bool) -> np.ndarray:
    """A speckled sector: deep and still widening at the bottom (narrow) or ending above it (wide)."""
    img = np.zeros((256, 256), dtype=np.uint8)
    if narrow:
        centre, r_in, r_out, half = (128, -60), 75, 340, 28
    else:
        centre, r_in, r_out, half = (128, -20), 30, 245, 60
    cv2.ellipse(img, centre, (r_out, r_out), 0, 90 - half, 90 + half, 1, thickness=-1)
    cv2.ellipse(img, centre, (r_in, r_in), 0, 90 - half, 90 + half, 0, thickness=-1)
    speckle = np.random.default_rng(3).integers(25, 90, size=img.shape, dtype=np.uint8)
    return np.where(img > 0, speckle, 0).astype(np.uint8)


# ----------------------------------------------------------------------------- one case


def test_scene_measures():
    assert measure_progress(scene()).status != "failed"


def test_perfect_prediction():
    gt = scene()
    r = evaluate_case(gt.copy(), gt, case_id="p")
    for s in ("ps", "fh", "all"):
        assert getattr(r, f"dice_{s}") == 1.0
        assert getattr(r, f"hd_{s}") == 0.0
        assert getattr(r, f"asd_{s}") == 0.0
    assert r.delta_aop == 0.0
    assert r.delta_hsd_px == 0.0
    assert r.aop_pred == r.aop_gt == pytest.approx(measure_progress(gt).aop_deg)
    assert r.hsd_pred_mm is None and r.delta_hsd_mm is None  # no spacing: mm unknown
    assert r.style is None
    assert r.case_id == "p"


def test_shifted_prediction_matches_direct_metrics():
    gt = scene()
    pred = scene(dx=3)
    r = evaluate_case(pred, gt)
    # A pure translation keeps the angle; Dice drops; HD of a 3 px shift is 3 px.
    assert r.delta_aop == pytest.approx(0.0, abs=1e-6)
    assert 0.5 < r.dice_ps < 1.0 and 0.9 < r.dice_fh < 1.0
    assert r.hd_fh == pytest.approx(3.0, abs=1e-4)
    assert r.mean_dice == pytest.approx((r.dice_ps + r.dice_fh + r.dice_all) / 3)


def test_spacing_gives_hsd_in_mm():
    gt = scene()
    r = evaluate_case(gt, gt, spacing_mm=(0.3, 0.3))  # (the 128-pixel scene 38 mm across: at 0.2, 26 mm, implausible)
    assert r.hsd_gt_mm == pytest.approx(r.hsd_gt_px * 0.3, rel=1e-6)
    assert r.delta_hsd_mm == 0.0
    assert r.spacing_mm == (0.3, 0.3)


def test_empty_prediction_case():
    gt = scene()
    r = evaluate_case(np.zeros_like(gt), gt)
    assert (r.dice_ps, r.dice_fh, r.dice_all) == (0.0, 0.0, 0.0)
    assert (r.hd_ps, r.hd_fh, r.hd_all) == (100.0, 100.0, 100.0)
    assert (r.asd_ps, r.asd_fh, r.asd_all) == (100.0, 100.0, 100.0)
    assert r.status_pred == "failed" and "ps_missing" in r.reasons_pred
    assert r.aop_pred is None and r.delta_aop is None
    assert r.aop_gt is not None


def test_missing_structure_only_hits_that_structure():
    gt = scene()
    pred = gt.copy()
    pred[pred == 1] = 0  # PS not found
    r = evaluate_case(pred, gt)
    assert r.dice_ps == 0.0 and r.hd_ps == 100.0 and r.asd_ps == 100.0
    assert r.dice_fh == 1.0 and r.hd_fh == 0.0
    assert 0.9 < r.dice_all < 1.0


def test_other_label_values():
    gt = scene(ps_label=7, fh_label=8)
    r = evaluate_case(gt, gt, labels=(7, 8))
    assert r.dice_ps == 1.0 and r.delta_aop == 0.0


def test_a_mask_without_background_0_is_told_so():
    # A research fellow's masks held 1, 2, 3 (background 1): naming the structures' values had led to a refusal of
    # the background's value in turn.
    shifted = scene() + 1
    with pytest.raises(ValueError, match=r"it holds no 0, which is background to ipp-seg, and 3 values \(1, 2, 3\): "
                                         r"save it with 0 for the background"):
        relabel_mask(shifted, (1, 2))
    with pytest.raises(ValueError, match="it holds 1 and 3: --labels ps=1,fh=3"):  # (0 there: as before)
        relabel_mask(np.where(scene() == 2, 3, scene()), (1, 2))
    # A 0/255 mask: one foreground value, which no --labels maps to two structures (the advice had said to).
    with pytest.raises(ValueError, match=r"it holds one value besides 0 \(255\): a mask of one structure") as refused:
        relabel_mask(np.where(scene() > 0, 255, 0), (1, 2))
    assert "ps=VALUE,fh=VALUE" not in str(refused.value) and "blurred" not in str(refused.value)


def test_a_masks_suffix_is_taken_whatever_its_case():
    # 04700_MASK.png had been a case "04700_MASK", its ground truth 04700 missing, while .PNG was taken.
    from ipp_seg.evaluate.report import mask_case_id

    assert [mask_case_id(name) for name in ("04700_MASK.png", "04700_Mask.PNG", "04700_mask.png", "04700.png",
                                            "ask.png", "scan_mask_mask.png")] == [
        "04700", "04700", "04700", "04700", "ask", "scan_mask"]


def test_a_ground_truth_folder_of_images_beside_their_masks_takes_mask_in_any_case(tmp_path):
    # <case>.png beside <case>_MASK.png (a QA pass): the masks had been cases of their own and the images read as
    # ground truths ("holds 255 different values"); train's loader reads such a folder alike.
    from ipp_seg.train.data import load_cases

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for case in ("00001", "00002"):
        _write_png(gt / f"{case}.png", cv2.resize(sector_image(narrow=False), SHAPE[::-1]))
        _write_png(gt / f"{case}_MASK.png", scene())
        _write_png(pred / f"{case}.png", scene())
    report = evaluate_folders(pred, gt)
    assert [c.case_id for c in report.cases] == ["00001", "00002"] and report.missing_predictions == ()
    assert [c.case_id for c in load_cases(gt)] == ["00001", "00002"]


def test_style_from_image():
    gt = scene()
    assert evaluate_case(gt, gt, image=sector_image(narrow=True)).style == "narrow"
    assert evaluate_case(gt, gt, image=sector_image(narrow=False)).style == "wide"


def test_invalid_inputs():
    gt = scene()
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(gt[:64], gt)
    with pytest.raises(ValueError, match="integer"):
        evaluate_case(gt.astype(np.float32), gt)
    with pytest.raises(ValueError, match="method"):
        evaluate_case(gt, gt, method="nope")
    # The rule is measure's own (one place), worded for the pair: what was given, then why.
    for labels, why in (((1, 1), "must differ"), ((1, 0), "positive"), ((True, 2), "integer"), ((1.5, 2), "integer")):
        with pytest.raises(ValueError, match=rf"labels must be .*got \({labels[0]!r}, {labels[1]!r}\): .*{why}"):
            evaluate_case(gt, gt, labels=labels)
    with pytest.raises(ValueError, match="labels must be"):
        evaluate_case(gt, gt, labels=(1, 2, 3))


# ----------------------------------------------------------------------------- blocks


def test_block_summary_and_score():
    gt = scene()
    perfect = evaluate_case(gt, gt, case_id="a")
    shifted = evaluate_case(scene(dx=3), gt, case_id="b")
    block = summarise_block("x", [perfect, shifted])
    assert block.n_cases == 2
    assert block.metrics["dice_fh"].mean == pytest.approx((1.0 + shifted.dice_fh) / 2)
    assert block.metrics["hd_fh"].median == pytest.approx((0.0 + shifted.hd_fh) / 2)
    assert block.metrics["delta_aop"].n == 2
    assert block.mean_dice == pytest.approx((perfect.mean_dice + shifted.mean_dice) / 2)
    expected = challenge_score(block.mean_dice, block.mean_hd, block.mean_asd, block.score_delta_aop)
    assert block.score == pytest.approx(expected)
    assert block.n_failed_pred == 0 and block.n_failed_pred_gt_ok == 0


def test_failed_prediction_is_penalised_in_the_score_not_dropped():
    gt = scene()
    ok = evaluate_case(gt, gt, case_id="ok")
    failed = evaluate_case(np.zeros_like(gt), gt, case_id="failed")
    block = summarise_block("x", [ok, failed])
    assert block.metrics["delta_aop"].n == 1  # |ΔAoP| itself only where both measure
    assert block.metrics["delta_aop"].mean == 0.0
    assert block.n_failed_pred == 1 and block.n_failed_pred_gt_ok == 1
    assert block.score_delta_aop == pytest.approx(FAILED_AOP_PENALTY_DEG / 2)
    assert block.score < summarise_block("y", [ok]).score


def test_block_counts_reasons_of_the_predictions_with_their_angle_error():
    gt = scene()
    clean = evaluate_case(gt, gt, case_id="clean")
    round_ps = gt.copy()
    round_ps[round_ps == 1] = 0
    cv2.ellipse(round_ps, (52, 18), (9, 7), 0, 0, 360, 1, thickness=-1)  # roundish: an ill-defined long axis
    flagged = evaluate_case(round_ps, gt, case_id="round")
    failed = evaluate_case(np.zeros_like(gt), gt, case_id="failed")
    assert "ps_nearly_round" in flagged.reasons_pred and flagged.delta_aop > 0
    block = summarise_block("x", [clean, flagged, failed])
    assert list(block.reasons_pred) == sorted(block.reasons_pred)
    assert set(block.reasons_pred) == {"spacing_unknown", "ps_nearly_round", "ps_missing", "fh_missing"}
    nearly_round = block.reasons_pred["ps_nearly_round"]
    assert nearly_round.cases == 1 and nearly_round.delta_aop.mean == pytest.approx(flagged.delta_aop)
    # a failed prediction is counted under its reasons, with no angle to summarise
    assert block.reasons_pred["ps_missing"].cases == 1 and block.reasons_pred["ps_missing"].delta_aop.n == 0
    assert block.reasons_pred["spacing_unknown"].cases == 3
    assert block.to_dict()["reasons_pred"]["ps_nearly_round"]["delta_aop"]["n"] == 1


def test_empty_block_has_no_score():
    block = summarise_block("none", [])
    assert block.n_cases == 0 and block.score is None and block.score_reason
    assert block.metrics["dice_ps"].mean is None


def test_evaluate_arrays_blocks_per_style():
    gt = scene()
    cases = [
        ("n1", gt, gt, sector_image(narrow=True)),
        ("w1", scene(dx=2), gt, sector_image(narrow=False)),
        ("w2", gt, gt, sector_image(narrow=False)),
        ("x", gt, gt, None),
    ]
    report = evaluate_arrays(cases)
    assert [b.name for b in report.blocks] == ["overall", "wide", "narrow"]
    assert report.overall.n_cases == 4
    assert report.block("wide").n_cases == 2 and report.block("narrow").n_cases == 1
    assert report.block("narrow").metrics["dice_all"].mean == 1.0
    assert [c.case_id for c in report.cases] == ["n1", "w1", "w2", "x"]
    with pytest.raises(KeyError):
        report.block("unknown")
    with pytest.raises(ValueError, match="twice"):
        evaluate_arrays([("a", gt, gt, None), ("a", gt, gt, None)])
    with pytest.raises(ValueError, match="case b"):
        evaluate_arrays([("b", gt[:10], gt, None)])


# ----------------------------------------------------------------------------- folders


def _write_png(path, labels):
    assert cv2.imwrite(str(path), labels)


@pytest.fixture
def folders(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    pred, gt, img = tmp_path / "pred", tmp_path / "gt", tmp_path / "img"
    for d in (pred, gt, img):
        d.mkdir()
    truth = scene()
    _write_png(gt / "00001.png", truth)
    _write_png(gt / "00002.png", truth)
    sitk.WriteImage(sitk.GetImageFromArray(truth), str(gt / "00003.mha"))  # PSFHS-style 2-D label MHA
    _write_png(gt / "00004.png", truth)  # no prediction
    (gt / "notes.txt").write_text("not a mask")
    _write_png(pred / "00001.png", truth)  # perfect
    _write_png(pred / "00002.png", scene(dx=3))
    _write_png(pred / "00003.png", truth)
    _write_png(pred / "00009.png", truth)  # no ground truth
    _write_png(img / "00001.png", sector_image(narrow=True))
    _write_png(img / "00002.png", sector_image(narrow=False))
    _write_png(img / "00003.png", sector_image(narrow=False))
    return pred, gt, img


def test_evaluate_folders_pairs_and_reports_missing(folders):
    pred, gt, img = folders
    report = evaluate_folders(pred, gt, img)
    assert [c.case_id for c in report.cases] == ["00001", "00002", "00003"]
    assert report.missing_predictions == ("00004",)
    assert report.missing_ground_truth == ("00009",)
    assert report.missing_images == ()
    perfect = report.cases[0]
    assert perfect.dice_all == 1.0 and perfect.delta_aop == 0.0 and perfect.style == "narrow"
    assert report.cases[2].dice_all == 1.0  # MHA ground truth vs PNG prediction
    assert report.block("wide").n_cases == 2 and report.block("narrow").n_cases == 1
    assert report.overall.score is not None and report.overall.score < 1.0
    # Without images: no style, no style blocks.
    plain = evaluate_folders(pred, gt)
    assert [b.name for b in plain.blocks] == ["overall"]
    assert all(c.style is None for c in plain.cases)


def test_a_folder_of_images_beside_their_masks_serves_as_ground_truth_and_images(folders, tmp_path):
    pred, _, _ = folders
    pairs = tmp_path / "pairs"  # the layout train reads: <case>.png beside <case>_mask.png
    pairs.mkdir()
    for case, narrow in (("00001", True), ("00002", False), ("00003", False)):
        _write_png(pairs / f"{case}.png", sector_image(narrow=narrow))
        _write_png(pairs / f"{case}_mask.png", scene())
    _write_png(pairs / "00009_mask.png", scene())  # a mask without its image: case 00009, as train reads it
    report = evaluate_folders(pred, pairs, pairs)
    assert [c.case_id for c in report.cases] == ["00001", "00002", "00003", "00009"]
    assert report.cases[0].dice_all == 1.0 and report.cases[0].style == "narrow"  # the image, not the mask
    assert report.missing_images == ("00009",) and report.missing_predictions == ()
    # A case whose own ID ends in _mask: its image is scan_mask.png, its mask scan_mask_mask.png.
    odd = tmp_path / "odd"
    odd.mkdir()
    _write_png(odd / "scan_mask.png", sector_image(narrow=True))
    _write_png(odd / "scan_mask_mask.png", scene())
    _write_png(pred / "scan_mask_mask.png", scene())
    report = evaluate_folders(pred, odd, odd)
    assert "scan_mask" in [c.case_id for c in report.cases] and "scan" not in report.missing_predictions
    # images/ beside both masks/ and labels/: which are the ground truths cannot be told (labels/ had been passed over).
    both = tmp_path / "both"
    for sub in ("images", "masks", "labels"):
        (both / sub).mkdir(parents=True)
        _write_png(both / sub / "00001.png", sector_image(narrow=False) if sub == "images" else scene())
    with pytest.raises(ValueError, match="holds both masks/ and labels/ beside images/"):
        evaluate_folders(pred, both)


def test_frames_the_predicting_run_failed_on_are_scored_as_empty_predictions(folders, caplog):
    """A batch run that failed on a frame (unreadable, no ultrasound image) writes no mask for
    it: left out as "no prediction", a pipeline that failed more often had scored better."""
    import csv

    from ipp_seg.inference.batch import CSV_COLUMNS

    pred, gt, _ = folders
    _write_png(gt / "cine_f0002.png", scene())
    with open(pred / "measurements.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerow({"file": "sub/00004.dcm", "frame": "", "status": "failed", "reasons": "unreadable",
                         "error": "truncated pixel data"})
        writer.writerow({"file": "cine.dcm", "frame": "2", "status": "failed", "reasons": "not_ultrasound_frame"})
        writer.writerow({"file": "00001.png", "frame": "0", "status": "failed", "reasons": "ps_missing"})
        writer.writerow({"file": "00002.png", "frame": "0", "status": "failed", "reasons": "unreadable"})
    with caplog.at_level("WARNING", logger="ipp_seg.evaluate.report"):
        report = evaluate_folders(pred, gt)
    # 00003's mask has no row: a run stopped before writing it, or a mask from elsewhere (scored, and said).
    assert "1 mask(s) in" in caplog.text and "have no row in its run's measurements.csv" in caplog.text
    assert "00003" in caplog.text
    assert report.unrecorded_predictions == ("00003",) and report.to_dict()["unrecorded_predictions"] == ["00003"]
    assert report.missing_predictions == ()
    # 00002's mask is an earlier run's: the run that wrote the CSV failed on that file (a copy cut short,
    # measured again), and its old mask had been scored in place of that failure.
    assert report.failed_predictions == (("00002", "unreadable"), ("00004", "unreadable; truncated pixel data"),
                                         ("cine_f0002", "not_ultrasound_frame"))
    cases = {c.case_id: c for c in report.cases}
    assert cases["00004"].dice_all == 0.0 and cases["00004"].hd_all == 100.0 and cases["00004"].status_pred == "failed"
    assert cases["00002"].dice_all == 0.0
    # The run's own reason, not the ps_missing / fh_missing an empty mask would be said to lack.
    assert cases["00004"].reasons_pred == ("unreadable",) and cases["cine_f0002"].reasons_pred == (
        "not_ultrasound_frame",)
    assert "ps_missing" not in report.overall.reasons_pred and "unreadable" in report.overall.reasons_pred
    assert report.overall.n_failed_pred_gt_ok == 3 and report.overall.n_cases == 5
    assert cases["00001"].dice_all == 1.0  # its mask is there: measured as it is, whatever its row says
    summary = report.to_dict()
    assert summary["failed_predictions"][1] == {"case_id": "00004", "reason": "unreadable; truncated pixel data"}
    rows = {r["case_id"]: r for r in csv.DictReader(write_case_csv(report, pred.parent / "cases.csv").open())}
    assert rows["00004"]["evaluated"] == "true" and "predicting run failed on this frame" in rows["00004"]["problem"]
    assert rows["00003"]["evaluated"] == "true" and rows["00003"]["problem"].startswith("no row in the predicting run")
    assert rows["00001"]["problem"] == ""


def test_a_predict_out_mask_without_its_report_is_named_as_unrecorded(folders, caplog):
    # predict --out writes a report beside each mask: a mask without one (its report removed, or another model's
    # copied in) had been scored under the folder's model without a word.
    import json

    pred, gt, _ = folders
    for case in ("00001", "00002"):
        (pred / f"{case}.json").write_text(json.dumps({"file": f"{case}.png", "status": "ok",
                                                       "ipp_seg_version": "0.2.6", "model": "dssau-net-s",
                                                       "reasons": []}))
    with caplog.at_level("WARNING", logger="ipp_seg.evaluate.report"):
        report = evaluate_folders(pred, gt)
    assert report.unrecorded_predictions == ("00003",) and "have no report of predict beside them" in caplog.text
    (pred / "00001.json").unlink()
    (pred / "00002.json").unlink()
    assert evaluate_folders(pred, gt).unrecorded_predictions == ()  # no reports at all: masks of one's own
    # evaluate's own summary.json written beside them (--out PRED) is no report of predict: it had been taken
    # for a case "summary" and every mask named unrecorded at the next evaluate.
    write_evaluation(evaluate_folders(pred, gt), pred)
    assert (pred / "summary.json").is_file() and evaluate_folders(pred, gt).unrecorded_predictions == ()


def test_batch_runs_and_predict_reports_in_sub_folders_speak_for_their_masks(folders, tmp_path, caplog):
    """A study keeps results/siteA/ and results/siteB/ (a batch run each) and evaluates results/: the
    masks in the runs' masks/ folders were found and scored, but the runs' CSVs went unread, so a
    frame a run failed on was left out as "no prediction" (the score flattered), the models that drew
    the masks and their training frames went unsaid, and the runs' own reasons and calibrations were
    lost. predict --out reports in a sub-folder had been passed over alike."""
    import json
    import shutil

    from ipp_seg.inference.batch import CSV_COLUMNS, write_measurements_csv

    pred, gt, _ = folders
    results = tmp_path / "results"
    runs = {"siteA": [("00001", "warning", "spacing_unknown;ps_low_confidence", "m-a"),
                      ("00004", "failed", "unreadable", "m-a")],
            "siteB": [("00002", "ok", "", "m-b")]}
    for site, rows in runs.items():
        (results / site / "masks").mkdir(parents=True)
        write_measurements_csv(results / site / "measurements.csv", [dict.fromkeys(CSV_COLUMNS, "") | {
            "file": f"{case}.png", "frame": "0", "status": status, "reasons": reasons, "model": model,
            "ipp_seg_version": "0.2.7", "tta": "false", "method": "ellipse", "orientation": "standard",
            "spacing_x_mm": "0.25" if case == "00002" else "", "spacing_y_mm": "0.25" if case == "00002" else ""}
            for case, status, reasons, model in rows])
        for case, status, _, _ in rows:
            if status != "failed":
                shutil.copy(pred / f"{case}.png", results / site / "masks" / f"{case}.png")
    (results / "single").mkdir()
    shutil.copy(pred / "00003.png", results / "single" / "00003_mask.png")
    (results / "single" / "00003.json").write_text(json.dumps({
        "file": "00003.png", "frame": 0, "ipp_seg_version": "0.2.7", "model": "m-c",
        "reasons": ["spacing_unknown", "head_small_in_frame"]}))
    with caplog.at_level("WARNING", logger="ipp_seg.evaluate.report"):
        report = evaluate_folders(results, gt)
    assert [c.case_id for c in report.cases] == ["00001", "00002", "00003", "00004"]
    by_case = {c.case_id: c for c in report.cases}
    assert report.failed_predictions == (("00004", "unreadable"),) and by_case["00004"].dice_all == 0.0
    assert report.missing_predictions == () and report.unrecorded_predictions == ()
    assert by_case["00001"].reasons_pred == ("spacing_unknown", "ps_low_confidence")
    assert by_case["00003"].reasons_pred == ("spacing_unknown", "head_small_in_frame")
    assert by_case["00002"].hsd_pred_mm is not None  # siteB's row measured it at 0.25 mm per pixel
    assert [name for name, _ in report.prediction_models] == ["m-a", "m-b", "m-c"]
    assert report.prediction_versions == ("0.2.7",)
    # Models without a card: no training frames to check against, said rather than left as an empty list.
    assert "m-a, m-b, m-c have no model card in the models folder: which frames they trained on is not known" in \
        " ".join(caplog.text.split())
    # A mask in a run's masks/ without a row in that run's CSV is still named.
    shutil.copy(pred / "00009.png", results / "siteB" / "masks" / "00009.png")
    caplog.clear()
    with caplog.at_level("WARNING", logger="ipp_seg.evaluate.report"):
        assert evaluate_folders(results, gt).unrecorded_predictions == ()  # (no ground truth: not evaluated)
    _write_png(gt / "00009.png", scene())
    assert evaluate_folders(results, gt).unrecorded_predictions == ("00009",)
    # A sub-folder of a run's masks/ is that run's (masks/deep holds the masks of the scans in deep/): its CSV's rows
    # of that sub-folder speak for it, and only those: 00004, a file of the run's top folder that it failed on, had
    # been scored in a sub-folder's evaluation (a QA pass).
    (results / "siteA" / "masks" / "deep").mkdir()
    shutil.move(results / "siteA" / "masks" / "00001.png", results / "siteA" / "masks" / "deep" / "00001.png")
    rows = (results / "siteA" / "measurements.csv").read_text().replace("00001.png", "deep/00001.png")
    (results / "siteA" / "measurements.csv").write_text(rows)
    deep = evaluate_folders(results / "siteA" / "masks" / "deep", gt)
    assert {c.case_id: c.reasons_pred for c in deep.cases} == {"00001": ("spacing_unknown", "ps_low_confidence")}
    assert [name for name, _ in deep.prediction_models] == ["m-a"]
    assert deep.failed_predictions == () and deep.unrecorded_predictions == ()


def test_missing_as_empty_scores_the_missing_prediction(folders):
    pred, gt, _ = folders
    report = evaluate_folders(pred, gt, missing_as_empty=True)
    assert report.missing_predictions == ("00004",)  # still listed
    missing = {c.case_id: c for c in report.cases}["00004"]
    assert missing.dice_all == 0.0 and missing.hd_all == 100.0 and missing.status_pred == "failed"
    assert report.overall.n_failed_pred_gt_ok == 1
    # No prediction is no measurement: not counted as one whose network drew neither structure.
    assert missing.reasons_pred == () and "ps_missing" not in report.overall.reasons_pred


def test_missing_as_empty_scores_an_unusable_prediction_as_empty_too(folders):
    pred, gt, _ = folders
    (pred / "00003.png").unlink()
    (pred / "00003.png").write_bytes(b"not a png")  # unreadable
    _write_png(pred / "00002.png", scene()[:-10])  # another size
    _write_png(pred / "00004.png", scene() * 100)  # values 100 and 200: not the labels given
    plain = evaluate_folders(pred, gt)
    assert [c.case_id for c in plain.cases] == ["00001"]
    assert [c for c, _ in plain.unreadable] == ["00002", "00003", "00004"]
    scored = evaluate_folders(pred, gt, missing_as_empty=True)
    cases = {c.case_id: c for c in scored.cases}
    assert sorted(cases) == ["00001", "00002", "00003", "00004"]  # as a challenge counts them
    assert all(cases[c].dice_all == 0.0 and cases[c].hd_all == 100.0 for c in ("00002", "00003", "00004"))
    assert all(cases[c].reasons_pred == () and cases[c].status_pred == "failed" for c in ("00002", "00003", "00004"))
    assert "00002.png is 128 x 118 pixels, the ground truth 128 x 128" in dict(scored.unreadable)["00002"]


def test_the_case_csv_says_why_a_prediction_was_scored_as_empty(folders, tmp_path):
    pred, gt, _ = folders
    _write_png(pred / "00002.png", scene()[:-10])  # another size
    rows = {r["case_id"]: r for r in csv.DictReader(
        write_case_csv(evaluate_folders(pred, gt, missing_as_empty=True), tmp_path / "c.csv").open(newline=""))}
    assert rows["00002"]["evaluated"] == "true" and rows["00002"]["dice_all"] == "0.0"
    assert "128 x 118 pixels" in rows["00002"]["problem"]
    assert rows["00004"]["problem"] == "no prediction: scored as an empty prediction"
    plain = {r["case_id"]: r for r in csv.DictReader(
        write_case_csv(evaluate_folders(pred, gt), tmp_path / "p.csv").open(newline=""))}
    assert plain["00002"]["evaluated"] == "false" and "128 x 118 pixels" in plain["00002"]["problem"]


def test_a_ground_truth_without_a_structure_is_scored_and_named(folders, tmp_path):
    pred, gt, _ = folders
    _write_png(gt / "00002.png", np.zeros(SHAPE, np.uint8))  # an empty expert mask
    no_ps = scene()
    no_ps[no_ps == 1] = 0
    _write_png(gt / "00003.png", no_ps)
    (gt / "00003.mha").unlink()
    report = evaluate_folders(pred, gt)
    assert dict(report.ground_truth_problems) == {"00002": "the ground truth has no PS and no FH",
                                                  "00003": "the ground truth has no PS"}
    rows = {r["case_id"]: r for r in csv.DictReader(write_case_csv(report, tmp_path / "c.csv").open(newline=""))}
    assert rows["00002"]["evaluated"] == "true" and rows["00002"]["problem"] == "the ground truth has no PS and no FH"
    assert rows["00001"]["problem"] == ""
    assert report.to_dict()["ground_truth_problems"][0] == {"case_id": "00002",
                                                           "problem": "the ground truth has no PS and no FH"}


def test_predictions_with_another_tools_label_values(folders):
    pred, gt, _ = folders
    for case in ("00001", "00002", "00003"):
        stored = read_label_mask(pred / f"{case}.png")[0]
        _write_png(pred / f"{case}.png", np.select([stored == 1, stored == 2], [128, 255], 0).astype(np.uint8))
    refused = evaluate_folders(pred, gt)
    assert not refused.cases and "--pred-labels" in dict(refused.unreadable)["00001"]
    report = evaluate_folders(pred, gt, pred_labels=(128, 255))
    assert [c.case_id for c in report.cases] == ["00001", "00002", "00003"]
    assert report.cases[0].dice_all == 1.0 and report.cases[0].delta_aop == 0.0


def test_a_float_mask_of_whole_numbers_is_read_as_labels_and_a_probability_map_is_refused(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    sitk.WriteImage(sitk.GetImageFromArray(scene().astype(np.float32)), str(tmp_path / "whole.nii.gz"))
    labels, _ = read_label_mask(tmp_path / "whole.nii.gz")
    assert np.issubdtype(labels.dtype, np.integer) and np.array_equal(labels, scene())
    sitk.WriteImage(sitk.GetImageFromArray(scene().astype(np.float32) * 0.4), str(tmp_path / "soft.mha"))
    with pytest.raises(ScanReadError, match="probability map or an interpolated mask"):
        read_label_mask(tmp_path / "soft.mha")
    nan = scene().astype(np.float32)
    nan[0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp_path / "nan.mha"))
    with pytest.raises(ScanReadError, match="NaN"):
        read_label_mask(tmp_path / "nan.mha")


def test_a_predictions_own_spacing_serves_when_the_ground_truth_has_none(folders, caplog):
    sitk = pytest.importorskip("SimpleITK")
    pred, gt, _ = folders
    (pred / "00001.png").unlink()
    image = sitk.GetImageFromArray(scene())
    image.SetSpacing((0.3, 0.3))
    sitk.WriteImage(image, str(pred / "00001.mha"))
    report = evaluate_folders(pred, gt)  # the ground truth 00001.png has no spacing
    case = {c.case_id: c for c in report.cases}["00001"]
    assert case.spacing_mm == (0.3, 0.3) and case.hsd_gt_mm == pytest.approx(0.3 * case.hsd_gt_px)
    # Ground truth 00003.mha has none either; give it 0.2: the prediction's 0.3 disagrees and is named.
    (pred / "00003.png").unlink()
    sitk.WriteImage(image, str(pred / "00003.mha"))
    truth = sitk.GetImageFromArray(scene())
    truth.SetSpacing((0.2, 0.2))
    sitk.WriteImage(truth, str(gt / "00003.mha"))
    with caplog.at_level(logging.WARNING):
        report = evaluate_folders(pred, gt)
    assert {c.case_id: c for c in report.cases}["00003"].spacing_mm == (0.2, 0.2)
    assert "case 00003: the prediction's spacing 0.3 x 0.3 mm is not the 0.2 x 0.2 mm" in caplog.text


def test_masks_in_sub_folders_are_found_and_overlays_left_out(folders, tmp_path):
    pred, gt, _ = folders
    nested = tmp_path / "batch_out"
    (nested / "masks" / "a" / "b").mkdir(parents=True)
    (nested / "overlays" / "a").mkdir(parents=True)
    for name in ("00001", "00002"):
        (pred / f"{name}.png").rename(nested / "masks" / "a" / "b" / f"{name}.png")
        _write_png(nested / "overlays" / "a" / f"{name}.png", scene())  # pictures named like masks
    report = evaluate_folders(nested, gt)
    assert [c.case_id for c in report.cases] == ["00001", "00002"]
    _write_png(nested / "masks" / "a" / "00001.png", scene())
    _write_png(nested / "masks" / "a" / "00002.png", scene())
    # Every such case named at once: a re-export's 130 repeats had been found one run at a time.
    with pytest.raises(ValueError, match=r"2 case ID\(s\) have two files: '00001' \(masks/a/00001.png and "
                                         r"masks/a/b/00001.png\); '00002' \(masks/a/00002.png and "
                                         r"masks/a/b/00002.png\)"):
        evaluate_folders(nested, gt)


def test_unreadable_and_unmatched_images_are_reported(folders):
    pred, gt, img = folders
    (pred / "00004.png").write_bytes(b"not a png")
    (img / "00002.png").unlink()
    report = evaluate_folders(pred, gt, img)
    assert [c for c, _ in report.unreadable] == ["00004"]
    assert report.missing_predictions == ()
    assert report.missing_images == ("00002",)
    assert {c.case_id: c.style for c in report.cases}["00002"] == "unknown"  # in a block of its own, no longer in none


def test_duplicate_case_ids_are_refused(folders):
    pred, gt, _ = folders
    _write_png(gt / "00001.bmp", scene())
    with pytest.raises(ValueError, match="00001"):
        evaluate_folders(pred, gt)
    with pytest.raises(NotADirectoryError):
        evaluate_folders(pred / "nope", gt)


def test_read_label_mask_formats(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    truth = scene()
    img = sitk.GetImageFromArray(truth)
    img.SetSpacing((0.25, 0.3))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    labels, spacing = read_label_mask(tmp_path / "a.nii.gz")
    assert np.array_equal(labels, truth) and spacing == pytest.approx((0.25, 0.3))
    assert case_id_of(tmp_path / "a.nii.gz") == "a"
    # 16-bit PNG keeps its values (no rescaling to 0-255).
    wide = truth.astype(np.uint16) * 1000
    _write_png(tmp_path / "b.png", wide)
    labels, spacing = read_label_mask(tmp_path / "b.png")
    assert labels.dtype == np.uint16 and labels.max() == 2000 and spacing is None
    # A colour image with differing channels is not a mask.
    colour = np.dstack([truth, truth, np.zeros_like(truth)])
    _write_png(tmp_path / "c.png", colour)
    from ipp_seg.io import ScanReadError

    with pytest.raises(ScanReadError, match="colour"):
        read_label_mask(tmp_path / "c.png")


def _indexed_png(labels: np.ndarray, palette: list[tuple[int, int, int]], bit_depth: int = 8,
                 transparency: bytes | None = None, histogram: bool = False) -> bytes:
    """An indexed-colour PNG (colour type 3) as label tools export masks: built by hand, chunk by
    chunk, so that the test needs no imaging library. Indices below 8 bits are packed per row."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = labels.shape
    per_byte = 8 // bit_depth
    rows = b""
    for y in range(h):
        padded = np.zeros(-(-w // per_byte) * per_byte, np.uint8)
        padded[:w] = labels[y]
        packed = np.zeros(len(padded) // per_byte, np.uint8)
        for k in range(per_byte):  # the first pixel in the highest bits
            packed |= padded[k::per_byte] << (8 - bit_depth * (k + 1))
        rows += b"\0" + packed.tobytes()  # filter 0 per row
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, 3, 0, 0, 0))
    body += chunk(b"PLTE", bytes(v for colour in palette for v in colour))
    if transparency is not None:
        body += chunk(b"tRNS", transparency)
    if histogram:  # one 16-bit count per palette entry
        body += chunk(b"hIST", b"".join(struct.pack(">H", 1) for _ in palette))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name,palette,bits,transparency", [
    ("voc", [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 253, 8, None),  # CVAT / VOC, padded with black
    ("grey", [(0, 0, 0), (127, 127, 127), (255, 255, 255)], 8, None),  # indices, not the greys shown
    ("shared colour", [(0, 0, 0), (255, 0, 0), (255, 0, 0)], 8, None),  # two labels shown alike
    ("as background", [(0, 0, 0), (0, 0, 0), (0, 255, 0)], 8, None),
    ("short palette", [(0, 0, 0), (255, 0, 0)], 8, None),  # index 2 has no entry
    ("2-bit", [(0, 0, 0), (128, 0, 0), (0, 128, 0)], 2, None),
    ("4-bit, transparent", [(0, 0, 0), (128, 0, 0), (0, 128, 0)], 4, b"\x00\x80"),
    ("with a histogram", [(0, 0, 0), (128, 0, 0), (0, 128, 0)], 8, None),
])
def test_an_indexed_colour_png_mask_is_read_by_its_palette_indices(tmp_path, capfd, name, palette, bits,
                                                                    transparency):
    truth = scene()
    (tmp_path / "mask.png").write_bytes(_indexed_png(truth, palette, bits, transparency, "histogram" in name))
    labels, _ = read_label_mask(tmp_path / "mask.png")
    assert labels.dtype == np.uint8 and np.array_equal(labels, truth), name
    assert "libpng" not in capfd.readouterr().err  # (a hIST of the old palette's length would be "invalid")


def test_labels_typed_as_a_palette_pngs_shades_are_refused_naming_its_indices(tmp_path):
    # Grey 127 / 255 shown, indices 1 / 2 stored: the shades typed as labels match nothing.
    grey = [(0, 0, 0), (127, 127, 127), (255, 255, 255)]
    (tmp_path / "indexed.png").write_bytes(_indexed_png(scene(), grey))
    cv2.imwrite(str(tmp_path / "plain.png"), scene())  # the same values, stored as greys
    for name in ("indexed.png", "plain.png"):
        stored, _ = read_label_mask(tmp_path / name)
        with pytest.raises(ValueError, match="--labels ps=1,fh=2") as refused:
            relabel_mask(stored, (127, 255), path=tmp_path / name)
        assert ("palette indices" in str(refused.value)) == (name == "indexed.png"), name
    assert is_indexed_png(tmp_path / "indexed.png") and not is_indexed_png(tmp_path / "plain.png")
    assert not is_indexed_png(tmp_path / "absent.png")


def test_a_mask_declaring_a_huge_frame_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # 30000 x 30000 declared over a few bytes of data (the decoder would allocate the frame first)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
    (tmp_path / "bomb.png").write_bytes(bomb + chunk(b"IDAT", zlib.compress(b"\0" * 30001)) + chunk(b"IEND", b""))
    with pytest.raises(ScanReadError, match="30000 x 30000 pixels is beyond the 40 million pixels"):
        read_label_mask(tmp_path / "bomb.png")


def test_a_mask_of_another_format_under_a_png_name_is_refused_unread(tmp_path):
    ok, webp = cv2.imencode(".webp", scene())
    (tmp_path / "case_mask.png").write_bytes(webp.tobytes())
    with pytest.raises(ScanReadError, match="its content is a WebP image"):
        read_label_mask(tmp_path / "case_mask.png")


def test_a_greyscale_png_mask_keeps_its_values(tmp_path):
    truth = scene()
    cv2.imwrite(str(tmp_path / "grey.png"), truth * 100)
    assert np.array_equal(read_label_mask(tmp_path / "grey.png")[0], truth * 100)


def test_a_mask_whose_direction_cosines_flip_it_is_named(tmp_path, caplog):
    # Masks exported by other tools are where this happens; the pixels are measured as stored.
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(scene())
    img.SetDirection((-1.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "flipped.mha"))
    with caplog.at_level(logging.WARNING):
        labels, _ = read_label_mask(tmp_path / "flipped.mha")
    assert np.array_equal(labels, scene()) and "direction cosines flip or turn the frame" in caplog.text
    caplog.clear()
    sitk.WriteImage(sitk.GetImageFromArray(scene()), str(tmp_path / "plain.mha"))
    with caplog.at_level(logging.WARNING):
        read_label_mask(tmp_path / "plain.mha")
    assert "direction cosines" not in caplog.text


# ----------------------------------------------------------------------------- writers


def test_case_ids_that_are_not_utf8_are_written_escaped(tmp_path):
    # A Latin-1 file name (lone surrogates in Python): the CSV writer had refused it.
    import os

    from ipp_seg.inference.batch import measurement_row, write_measurements_csv

    for folder in ("pred", "gt"):
        os.makedirs(tmp_path / folder)
        with open(os.path.join(os.fsencode(tmp_path / folder), b"M\xfcller.png"), "wb") as fh:
            fh.write(cv2.imencode(".png", scene())[1].tobytes())
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    written = write_case_csv(report, tmp_path / "cases.csv")
    write_summary_json(report, tmp_path / "summary.json")
    assert "M\\xfcller" in written.read_text(encoding="utf-8")  # as batch writes the name
    row = measurement_row("M\udcfcller.png", 0, None, "m", None, "unreadable", "ellipse", "standard", False)
    out = write_measurements_csv(tmp_path / "m.csv", [row])  # a caller's row as it is: escaped, not refused
    assert "M\\udcfcller.png" in out.read_text(encoding="utf-8")


def test_csv_and_json(folders, tmp_path):
    pred, gt, img = folders
    report = evaluate_folders(pred, gt, img)
    csv_path = write_case_csv(report, tmp_path / "cases.csv")
    json_path = write_summary_json(report, tmp_path / "summary.json")

    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Every case of either folder has a row: the evaluated ones, and those that could not be, with why.
    assert [(r["case_id"], r["evaluated"]) for r in rows] == [
        ("00001", "true"), ("00002", "true"), ("00003", "true"), ("00004", "false"), ("00009", "false")]
    assert [r["problem"] for r in rows] == ["", "", "", "no prediction", "no ground truth"]
    assert rows[3]["dice_all"] == rows[3]["aop_pred"] == ""
    assert tuple(rows[0]) == (*_CASE_COLUMNS, "evaluated", "problem", "model_pred", "model_sha256_pred")
    assert float(rows[0]["dice_all"]) == 1.0 and float(rows[0]["delta_aop"]) == 0.0
    assert rows[0]["hsd_pred_mm"] == ""  # unknown, not a made-up number
    assert set(SEGMENTATION_METRICS) <= set(rows[0])

    summary = json.loads(json_path.read_text())
    assert summary["missing_predictions"] == ["00004"]
    assert summary["missing_ground_truth"] == ["00009"]
    assert set(summary["blocks"]) == {"overall", "wide", "narrow"}
    overall = summary["blocks"]["overall"]
    assert overall["n_cases"] == 3
    assert overall["score"] == pytest.approx(report.overall.score)
    assert overall["metrics"]["dice_all"]["mean"] == pytest.approx(report.overall.metrics["dice_all"].mean)


def test_evaluation_pair_is_replaced_whole_or_not_at_all(folders, tmp_path, monkeypatch):
    # A validation engineer's pass: stopped while writing into a reused --out, the new cases.csv had
    # stood beside the earlier run's summary.json, one file of each run.
    import ipp_seg.evaluate.report as report_module

    pred, gt, img = folders
    report = evaluate_folders(pred, gt, img)
    out = tmp_path / "out"
    out.mkdir()
    (out / "cases.csv").write_text("earlier cases\n")
    (out / "summary.json").write_text("earlier summary\n")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module.json, "dump", stopped)  # stopped once cases.csv is written, before summary
    with pytest.raises(KeyboardInterrupt):
        write_evaluation(report, out)
    assert (out / "cases.csv").read_text() == "earlier cases\n"
    assert (out / "summary.json").read_text() == "earlier summary\n"
    assert sorted(p.name for p in out.iterdir()) == ["cases.csv", "summary.json"]  # no staged file left
    monkeypatch.undo()
    cases, summary = write_evaluation(report, out)
    assert cases.read_text() == write_case_csv(report, tmp_path / "alone.csv").read_text()
    assert json.loads(summary.read_text())["blocks"]["overall"]["n_cases"] == 3


def test_a_stop_between_the_pairs_moves_waits_until_both_are_moved(folders, tmp_path, monkeypatch):
    # A QA pass: SIGTERM landing between the two files' moves (delayed with strace) left a mixed pair.
    import os
    import signal

    pred, gt, img = folders
    report = evaluate_folders(pred, gt, img)
    (tmp_path / "out").mkdir()
    for name in ("cases.csv", "summary.json"):
        (tmp_path / "out" / name).write_text("earlier\n")
    real_replace, moved = os.replace, []

    def moved_then_stopped(source, target):
        real_replace(source, target)
        moved.append(target)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", moved_then_stopped)
    # (Python's own Ctrl-C handler, whatever an earlier test left: a stop is then a KeyboardInterrupt.)
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_evaluation(report, tmp_path / "out")
    finally:
        signal.signal(signal.SIGINT, earlier)
    assert len(moved) == 2  # the stop came after both moves
    assert "earlier" not in (tmp_path / "out" / "cases.csv").read_text()
    assert "earlier" not in (tmp_path / "out" / "summary.json").read_text()


def test_case_columns_match_case_dict():
    gt = scene()
    r = evaluate_case(gt, gt)
    assert isinstance(r, CaseResult)
    assert tuple(r.to_dict()) == _CASE_COLUMNS


# ----------------------------------------------------------------------------- reference AoP


def test_reference_aop_is_compared_with_the_prediction(tmp_path):
    gt = scene()
    measured = measure_progress(gt).aop_deg
    r = evaluate_case(gt.copy(), gt, reference_aop_deg=measured + 2.5)
    assert r.delta_aop == 0.0  # against its own ground truth the prediction is exact ...
    assert r.aop_reference == pytest.approx(measured + 2.5)
    assert r.delta_aop_reference == pytest.approx(2.5)  # ... against the published value it is not
    assert evaluate_case(gt, gt).delta_aop_reference is None  # no reference: nothing made up
    failed = evaluate_case(np.zeros_like(gt), gt, reference_aop_deg=120.0)
    assert failed.aop_reference == 120.0 and failed.delta_aop_reference is None


def test_an_angle_past_180_is_marked_as_one_the_reference_cannot_express(tmp_path, psfhs_dir, caplog):
    # PSFHS 04722: its expert mask reads 190.7 deg by the default method, the reference (an unsigned angle, at most
    # 180) 173.4: a prediction of 170.9 had read 2.5 deg off the reference where it is 19.9 off the expert's mask.
    import cv2
    from dataclasses import replace

    from ipp_seg.evaluate import read_reference_aop

    gt = read_frame(psfhs_dir / "label_mha" / "04722.mha").pixels.astype(np.uint8)
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "04722.png"), gt)
    reference = read_reference_aop(psfhs_dir / "aop_reference.csv")
    with caplog.at_level("WARNING"):
        report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", reference_aop=reference)
    (case,) = report.cases
    assert case.aop_gt > 180 > case.aop_reference and case.aop_past_180 is True
    assert "1 case(s) have a predicted or ground-truth AoP past 180" in caplog.text and "04722" in caplog.text
    rows = list(csv.DictReader(write_case_csv(report, tmp_path / "cases.csv").read_text().splitlines()))
    assert rows[0]["aop_past_180"] == "true"
    assert replace(case, aop_pred=170.9, aop_gt=175.0).aop_past_180 is False
    assert replace(case, aop_pred=180.5, aop_gt=175.0).aop_past_180 is True
    assert replace(case, aop_reference=None).aop_past_180 is None  # no reference: nothing to say


@pytest.mark.parametrize("layout", [("images", "masks"), ("images", "labels"), ("image_mha", "label_mha")])
def test_a_folder_in_the_layouts_train_reads_serves_as_ground_truth_and_images(folders, tmp_path, layout):
    # A researcher's training folder (images/ + masks/) given as GT_DIR had been refused: "case IDs have two files".
    import shutil

    pred, gt, img = folders
    data = tmp_path / "data"
    shutil.copytree(img, data / layout[0])
    shutil.copytree(gt, data / layout[1])
    report = evaluate_folders(pred, data, data)
    expected = evaluate_folders(pred, gt, img)
    assert [c.to_dict() for c in report.cases] == [c.to_dict() for c in expected.cases]
    assert {c.style for c in report.cases} == {c.style for c in expected.cases} != {None}


def test_a_batch_runs_project_folder_is_not_taken_for_the_layout_its_masks_would_make(folders, tmp_path):
    # batch P/images --out P --save-masks leaves P/images beside P/masks: evaluate P P had scored the run's own masks
    # as the ground truth, every case perfect.
    import shutil

    from ipp_seg.evaluate.report import MASK_SUFFIXES, _index_folder
    from ipp_seg.inference.batch import CSV_COLUMNS, write_measurements_csv

    pred, _, img = folders
    project = tmp_path / "project"
    shutil.copytree(img, project / "images")
    shutil.copytree(pred, project / "masks")
    write_measurements_csv(project / "measurements.csv", [dict.fromkeys(CSV_COLUMNS, "") | {
        "file": "images/00001.png", "frame": "0", "status": "ok", "model": "m"}])
    assert not any("masks" in p.parts for p in _index_folder(project, MASK_SUFFIXES).values())


def test_a_colour_mask_is_refused_with_what_to_save_instead(tmp_path):
    import cv2

    from ipp_seg.evaluate.report import read_label_mask

    colour = np.zeros((40, 40, 3), np.uint8)
    colour[5:10, 5:20] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "red.png"), colour)
    with pytest.raises(ScanReadError, match="save each mask as one channel of label values, 0 background"):
        read_label_mask(tmp_path / "red.png")


def test_reference_aop_in_block_summary_and_csv(folders, tmp_path):
    pred, gt, img = folders
    truth_aop = measure_progress(scene()).aop_deg
    (tmp_path / "ref.csv").write_text(f"case,aop_deg\n00001,{truth_aop + 1}\n00002,{truth_aop - 3}\n")
    from ipp_seg.evaluate import read_reference_aop

    reference = read_reference_aop(tmp_path / "ref.csv")
    report = evaluate_folders(pred, gt, img, reference_aop=reference)
    by_id = {c.case_id: c for c in report.cases}
    assert by_id["00001"].delta_aop_reference == pytest.approx(1.0, abs=1e-6)
    assert by_id["00002"].delta_aop_reference == pytest.approx(3.0, abs=1e-3)  # a shift keeps the angle
    assert by_id["00003"].delta_aop_reference is None  # not in the CSV
    summary = report.overall.metrics["delta_aop_reference"]
    assert summary.n == 2 and summary.mean == pytest.approx(2.0, abs=1e-3)
    rows = list(csv.DictReader(write_case_csv(report, tmp_path / "cases.csv").read_text().splitlines()))
    assert rows[0]["delta_aop_reference"] != "" and rows[2]["aop_reference"] == ""
    assert rows[0]["aop_past_180"] == "false" and rows[2]["aop_past_180"] == ""


def test_a_reference_whose_ids_lost_their_leading_zeros_is_matched_by_number(folders, tmp_path, caplog):
    pred, gt, _ = folders
    truth_aop = measure_progress(scene()).aop_deg
    # As a spreadsheet saves the IDs; 00002 keeps its exact ID, which wins over the number.
    reference = {"1": truth_aop + 1, "2": truth_aop + 50, "00002": truth_aop - 3}
    with caplog.at_level(logging.WARNING):
        report = evaluate_folders(pred, gt, reference_aop=reference)
    by_id = {c.case_id: c for c in report.cases}
    assert by_id["00001"].delta_aop_reference == pytest.approx(1.0, abs=1e-6)
    assert by_id["00002"].delta_aop_reference == pytest.approx(3.0, abs=1e-3)
    assert by_id["00003"].delta_aop_reference is None
    assert "1 case(s) matched the reference AoP by number" in caplog.text
    assert "(e.g. reference '1' for case '00001')" in caplog.text
    # The exact ID wins, but its rival of the same number is named (it had been passed over silently).
    assert "1 case(s) take the reference AoP of the row with their exact ID, where rows of the same number " \
           "written otherwise give other values: 00002 (2)" in caplog.text
    # As pandas writes IDs (4601.0), and a number two rows give different values: matched by neither.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        report = evaluate_folders(pred, gt, reference_aop={"1.0": truth_aop + 2, "3": truth_aop, "003": truth_aop + 9})
    by_id = {c.case_id: c for c in report.cases}
    assert by_id["00001"].delta_aop_reference == pytest.approx(2.0, abs=1e-6)
    assert by_id["00003"].delta_aop_reference is None
    assert "rows of the same number give different values: 00003 (3 and 003)" in caplog.text
    # Where the rows of one number are cases of their own, each exact row is that case's: no warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        evaluate_folders(pred, gt, reference_aop={"00001": truth_aop, "00002": truth_aop + 4})
    assert "exact ID" not in caplog.text


def test_read_reference_aop_formats_and_errors(tmp_path):
    from ipp_seg.evaluate import read_reference_aop

    (tmp_path / "a.csv").write_text("\ufeffCase_ID, AoP\n03744, 147.7\n03745,\n")
    assert read_reference_aop(tmp_path / "a.csv") == {"03744": 147.7}  # BOM, spaces, case; empty left out
    (tmp_path / "b.csv").write_text("name,angle\nx,1\n")
    with pytest.raises(ValueError, match="case column"):
        read_reference_aop(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("case,aop_deg\n1,abc\n")
    with pytest.raises(ValueError, match="line 2.*not a number"):
        read_reference_aop(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("case,aop_deg\n1,100\n1,101\n")
    with pytest.raises(ValueError, match="twice"):
        read_reference_aop(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("case,aop_deg\n1,nan\n")
    with pytest.raises(ValueError, match="finite"):
        read_reference_aop(tmp_path / "e.csv")
    for value in ("0", "-5", "400"):  # an empty cell a spreadsheet saved as 0, a sign lost, a typo
        (tmp_path / "f.csv").write_text(f"case,aop_deg\n1,120\n2,{value}\n")
        with pytest.raises(ValueError, match=f"line 3: AoP '{value}' is no angle of progression"):
            read_reference_aop(tmp_path / "f.csv")
    (tmp_path / "g.csv").write_text("case;aop_deg\n04700;123,4\n")  # as German Excel saves it
    with pytest.raises(ValueError, match="separated by ';'.*save it again with commas"):
        read_reference_aop(tmp_path / "g.csv")


def test_read_reference_aop_says_which_file_and_why_once(tmp_path):
    """Every refusal is a ReferenceAopError naming the file once, with a reason a user can act
    on: the CLI prints it as it is (it used to add the path a second time, or a raw codec error)."""
    from ipp_seg.evaluate import ReferenceAopError, read_reference_aop

    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    (tmp_path / "nul.csv").write_bytes(b"case,aop_deg\n1,1\x00\n")
    (tmp_path / "columns.csv").write_text("name,angle\nx,1\n")
    (tmp_path / "short.csv").write_text("case,aop_deg\n04001\n04002,120.5,extra\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "gone.csv")
    expected = {"none.csv": "no such file", "link.csv": "a broken link", "binary.csv": "not a text CSV (UTF-8)",
                "nul.csv": "line 2: AoP", "columns.csv": "it needs a case column", ".": "it is a folder"}
    for name, why in expected.items():
        path = tmp_path / name if name != "." else tmp_path
        with pytest.raises(ReferenceAopError) as refused:
            read_reference_aop(path)
        message = str(refused.value)
        assert message.startswith(f"cannot read the reference AoP file {path}: ") and why in message, message
        assert message.count(str(path)) == 1 and "Errno" not in message and "codec" not in message
    (tmp_path / "no_aop.csv").write_text("id,angle\n04001,120\n")
    with pytest.raises(ReferenceAopError) as refused:  # says which column is missing, not both
        read_reference_aop(tmp_path / "no_aop.csv")
    assert "it needs an AoP column (aop_deg or aop); its columns are id, angle" in str(refused.value)
    # A row short of the AoP column is left out, as an empty AoP is; extra cells are ignored.
    assert read_reference_aop(tmp_path / "short.csv") == {"04002": 120.5}


def test_ground_truth_of_another_tool_is_refused_by_value_or_mapped_when_named(folders, tmp_path):
    from typer.testing import CliRunner

    from ipp_seg.cli import app

    pred, gt, _ = folders
    own = evaluate_folders(pred, gt)
    exported = tmp_path / "exported"  # the same truth as another tool writes it: PS 128, FH 255
    exported.mkdir()
    for case in ("00001", "00002", "00004"):
        labels = cv2.imread(str(gt / f"{case}.png"), cv2.IMREAD_UNCHANGED)
        _write_png(exported / f"{case}.png", np.choose(labels, [0, 128, 255]).astype(np.uint8))
    unmapped = evaluate_folders(pred, exported)
    assert unmapped.cases == () and [c for c, _ in unmapped.unreadable] == ["00001", "00002"]
    assert "label values 128, 255 besides background 0, PS 1 and FH 2" in unmapped.unreadable[0][1]
    assert "--gt-labels ps=128,fh=255" in unmapped.unreadable[0][1]
    mapped = evaluate_folders(pred, exported, gt_labels=(128, 255))
    # Values named that the masks do not hold: the hint gives the values they do hold, not the option back.
    misnamed = evaluate_folders(pred, gt, gt_labels=(128, 255)).unreadable[0][1]
    assert "it holds 1 and 2: --gt-labels ps=1,fh=2 if the PS is 1" in misnamed and "ps=128" not in misnamed
    from ipp_seg.evaluate.report import relabel_mask

    with pytest.raises(ValueError, match=r"ps=VALUE,fh=VALUE") as negative:  # the option takes positive values only
        relabel_mask(np.array([[0, -1], [2, 2]]), (1, 2), option="--labels")
    assert "ps=-1" not in str(negative.value)
    assert [c.to_dict() for c in mapped.cases] == [c.to_dict() for c in own.cases if c.case_id != "00003"]

    # A prediction with a stray value is not scored as if the value were background.
    stray = cv2.imread(str(pred / "00002.png"), cv2.IMREAD_UNCHANGED)
    stray[0, 0] = 3
    _write_png(pred / "00002.png", stray)
    stray_report = evaluate_folders(pred, gt)
    assert [c for c, _ in stray_report.unreadable] == ["00002"]
    assert "label values 3 besides" in stray_report.unreadable[0][1] and "0, 1 and 2" in stray_report.unreadable[0][1]

    refused = CliRunner().invoke(app, ["evaluate", str(pred), str(exported)])
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "cannot evaluate 00001" in said and "--gt-labels ps=128,fh=255" in said
    ok = CliRunner().invoke(app, ["evaluate", str(pred), str(exported), "--gt-labels", "ps=128,fh=255"])
    assert ok.exit_code == 0 and "cannot evaluate 00001" not in ok.output and "cannot evaluate 00002" in ok.output
    bad = CliRunner().invoke(app, ["evaluate", str(pred), str(exported), "--gt-labels", "ps=128"])
    assert bad.exit_code == 2 and "--gt-labels must look like" in " ".join(bad.output.split())


def test_evaluate_case_refuses_values_it_would_score_as_background():
    gt = np.zeros((64, 64), np.uint8)
    gt[10:20, 10:40] = 1
    gt[30:60, 20:50] = 2
    exported = np.where(gt == 2, 255, gt).astype(np.uint8)  # another tool's FH value
    with pytest.raises(ValueError, match=r"pred_labels holds values \[255\]"):
        evaluate_case(exported, gt)


def test_names_in_composed_and_decomposed_unicode_are_one_case(tmp_path):
    # macOS and some SMB copies write ü as u + a combining diaeresis: the two printed alike, were
    # listed as a ground truth without prediction and a prediction without ground truth.
    import unicodedata

    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    _write_png(tmp_path / "g" / f"{unicodedata.normalize('NFC', 'Müller')}.png", scene())
    _write_png(tmp_path / "p" / f"{unicodedata.normalize('NFD', 'Müller')}_mask.png", scene(dx=2))
    report = evaluate_folders(tmp_path / "p", tmp_path / "g")
    assert [c.case_id for c in report.cases] == [unicodedata.normalize("NFC", "Müller")]
    assert not report.missing_predictions and not report.missing_ground_truth
    # A ground truth without prediction under a Latin-1 name: summary.json names it as cases.csv does.
    import os

    from ipp_seg.evaluate import write_summary_json

    _write_png(tmp_path / "latin1.png", scene())  # (OpenCV cannot be given such a name itself)
    os.rename(tmp_path / "latin1.png", os.path.join(os.fsencode(tmp_path / "g"), b"M\xfcller2.png"))
    write_summary_json(evaluate_folders(tmp_path / "p", tmp_path / "g"), tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text())["missing_predictions"] == ["M\\xfcller2"]
    # and so does the line on the terminal (it had written the lone surrogate's escape, \udcfc)
    from typer.testing import CliRunner

    from ipp_seg.cli import app

    listed = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p"), str(tmp_path / "g")])
    assert "ground truths without prediction, not scored" in listed.output
    assert "M\\xfcller2" in listed.output and "udcfc" not in listed.output


def test_the_runs_own_doubts_reach_the_predictions_reasons(folders):
    """The network's doubt and the frame's own signs are in the run's records, not in its masks:
    evaluate had listed only what the masks gave (spacing_unknown), so its table of reasons could
    never show whether low_confidence marks the worst frames. A frame the run failed as
    anatomy_unrecognised is scored failed, as users saw it, though its mask measures."""
    import csv
    import json

    from ipp_seg.inference.batch import CSV_COLUMNS

    pred, gt, _ = folders
    with open(pred / "measurements.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerow({"file": "00001.png", "frame": "0", "status": "warning",
                         "reasons": "spacing_unknown;ps_low_confidence;sector_upside_down"})
        writer.writerow({"file": "00002.png", "frame": "0", "status": "failed",
                         "reasons": "anatomy_unrecognised;spacing_unknown;low_confidence;ps_low_confidence"})
        writer.writerow({"file": "00003.png", "frame": "0", "status": "warning", "reasons": "spacing_unknown"})
    by_case = {c.case_id: c for c in evaluate_folders(pred, gt).cases}
    assert by_case["00001"].reasons_pred == ("spacing_unknown", "ps_low_confidence", "sector_upside_down")
    assert by_case["00001"].status_pred == "warning" and by_case["00001"].aop_pred is not None
    failed = by_case["00002"]
    assert failed.status_pred == "failed" and failed.aop_pred is None and failed.delta_aop is None
    assert failed.reasons_pred[0] == "anatomy_unrecognised" and failed.dice_all > 0.9  # its mask is still scored
    assert by_case["00003"].reasons_pred == ("spacing_unknown",)
    # The same from predict --out's report of one frame beside its mask (no CSV).
    (pred / "measurements.csv").unlink()
    (pred / "00003.json").write_text(json.dumps({"file": "00003.png", "frame": 0, "ipp_seg_version": "0.2.2",
                                                 "reasons": ["spacing_unknown", "head_small_in_frame"]}))
    by_case = {c.case_id: c for c in evaluate_folders(pred, gt).cases}
    assert by_case["00003"].reasons_pred == ("spacing_unknown", "head_small_in_frame")
    assert by_case["00001"].reasons_pred == ("spacing_unknown",)  # nothing recorded: the mask's own


def test_a_case_without_its_image_is_in_the_unknown_styles_block(folders):
    # It had fallen out of every style's block: a failure copied from them into a paper went unseen.
    pred, gt, img = folders
    (img / "00003.png").unlink()
    report = evaluate_folders(pred, gt, img)
    by_case = {c.case_id: c for c in report.cases}
    assert by_case["00003"].style == "unknown" and report.missing_images == ("00003",)
    blocks = {b.name: b for b in report.blocks}
    assert sum(b.n_cases for name, b in blocks.items() if name != "overall") == blocks["overall"].n_cases


def test_the_readme_names_every_column_of_cases_csv():
    # A paper's methods section reads the columns from the README: 31 had been left unnamed there.
    from pathlib import Path

    from ipp_seg.evaluate.report import CASES_CSV_COLUMNS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### evaluate"):readme.index("### train")]
    for column in CASES_CSV_COLUMNS:
        assert f"`{column}`" in section, column


def test_each_runs_cases_are_checked_against_the_training_frames_of_the_model_that_drew_them(tmp_path, caplog):
    # A QA pass: evaluating results/ holding a run of dssau-net-s and a predict --out folder of its held-out twin said
    # the twin had trained on a case dssau-net-s drew, as every case was credited to every model.
    import json

    from ipp_seg.inference.batch import CSV_COLUMNS, write_measurements_csv

    gt, results = tmp_path / "gt", tmp_path / "results"
    for folder in (gt, results / "site" / "masks", results / "single"):
        folder.mkdir(parents=True)
    for case in ("04402", "04700"):
        _write_png(gt / f"{case}.png", scene())
    _write_png(results / "site" / "masks" / "04402.png", scene())
    write_measurements_csv(results / "site" / "measurements.csv", [dict.fromkeys(CSV_COLUMNS, "") | {
        "file": "04402.png", "frame": "0", "status": "ok", "model": "dssau-net-s"}])
    _write_png(results / "single" / "04700_mask.png", scene())
    (results / "single" / "04700.json").write_text(json.dumps({"file": "04700.png", "ipp_seg_version": "0.2.8",
                                                               "model": "dssau-net-s-heldout", "reasons": []}))
    # A mask of no row (no file says which model drew it): credited to no model's training frames.
    _write_png(gt / "04403.png", scene())
    _write_png(results / "site" / "masks" / "04403.png", scene())
    with caplog.at_level("WARNING", logger="ipp_seg.evaluate.report"):
        report = evaluate_folders(results, gt)
    assert dict(report.seen_in_training) == {"dssau-net-s": ("04402",)}  # the twin never trained on 04700
    assert "dssau-net-s-heldout was trained on" not in caplog.text and report.unrecorded_predictions == ("04403",)
    # cases.csv says which model drew each case (a statistician's pass: the folder's models were in summary.json
    # alone, and its cases could not be split by them).
    write_case_csv(report, tmp_path / "cases.csv")
    with (tmp_path / "cases.csv").open(newline="") as fh:
        drawn = {row["case_id"]: row["model_pred"] for row in csv.DictReader(fh)}
    assert drawn == {"04402": "dssau-net-s", "04403": "", "04700": "dssau-net-s-heldout"}
    # A report's text, edited by hand, is written out as the file names are (a QA pass: a formula and a raw newline).
    (results / "single" / "04700.json").write_text(json.dumps({
        "file": "04700.png", "ipp_seg_version": "0.2.8", "model": "star\nx", "model_sha256": "=HYPERLINK(1)",
        "reasons": []}))
    write_case_csv(evaluate_folders(results, gt), tmp_path / "cases.csv")
    with (tmp_path / "cases.csv").open(newline="") as fh:
        edited = next(row for row in csv.DictReader(fh) if row["case_id"] == "04700")
    assert (edited["model_pred"], edited["model_sha256_pred"]) == ("star\\x0ax", "'=HYPERLINK(1)")


def test_a_scan_predict_could_not_measure_is_scored_as_a_failed_prediction_as_batchs_is(tmp_path):
    # A QA pass: predict --out's report of an unreadable scan (0.2.16) had left the case out as "no prediction",
    # where the same scan from batch was scored as failed (Dice 0): a folder of predict's scored higher.
    import json

    gt, single = tmp_path / "gt", tmp_path / "single"
    for folder in (gt, single):
        folder.mkdir()
    for case in ("good", "broken", "pdf"):
        _write_png(gt / f"{case}.png", scene())
    _write_png(single / "good_mask.png", scene())
    for case, reasons, error in (("good", [], None), ("broken", ["unreadable"], "truncated pixel data"),
                                 ("pdf", ["not_an_image"], "an encapsulated PDF")):
        (single / f"{case}.json").write_text(json.dumps({
            "file": f"{case}.dcm", "ipp_seg_version": "0.2.16", "model": "dssau-net-s", "reasons": reasons,
            "status": "failed" if reasons else "ok", "error": error}))
    report = evaluate_folders(single, gt)
    assert report.failed_predictions == (("broken", "unreadable; truncated pixel data"),)
    broken = next(case for case in report.cases if case.case_id == "broken")
    assert broken.dice_all == 0.0 and broken.status_pred == "failed" and broken.reasons_pred == ("unreadable",)
    assert report.missing_predictions == ("pdf",)  # (a file without an image: no prediction was asked of it)


def test_cases_named_as_psfhs_frames_are_checked_by_the_id_their_names_hold(tmp_path, caplog):
    # A QA pass: masks of psfhs_04700 scored from the default model (trained on 04700) gave no warning, 04700 did.
    import json

    gt, single = tmp_path / "gt", tmp_path / "single"
    for folder in (gt, single):
        folder.mkdir()
    for case in ("psfhs_04700_us", "psfhs_20241_04720"):
        _write_png(gt / f"{case}.png", scene())
        _write_png(single / f"{case}_mask.png", scene())
        (single / f"{case}.json").write_text(json.dumps({"file": f"{case}.dcm", "ipp_seg_version": "0.2.12",
                                                         "model": "dssau-net-s", "reasons": []}))
    with caplog.at_level("WARNING", logger="ipp_seg.evaluate.report"):
        report = evaluate_folders(single, gt)
    assert dict(report.seen_in_training) == {"dssau-net-s": ("psfhs_04700_us", "psfhs_20241_04720")}
    assert "2 of the 2 cases evaluated have the IDs of frames dssau-net-s was trained on" in caplog.text


def test_masks_beside_a_run_stopped_before_its_first_row_are_unrecorded(folders):
    # A run's CSV of its header alone (stopped before its first row) speaks for none of the masks beside it.
    from ipp_seg.inference.batch import write_measurements_csv

    pred, gt, _ = folders
    (pred / "masks").mkdir()
    for mask in list(pred.glob("*.png")):
        mask.rename(pred / "masks" / mask.name)
    write_measurements_csv(pred / "measurements.csv", [])
    assert evaluate_folders(pred, gt).unrecorded_predictions == ("00001", "00002", "00003")


def test_a_scan_beside_the_mask_predict_wrote_of_it_is_not_a_second_prediction(tmp_path):
    # A QA pass: `predict --out` into the scans' own folder leaves 00001.png (the scan) beside
    # 00001_mask.png, and evaluate had refused the folder: "'00001' has two files". The mask says
    # it is ipp-seg's (a PNG text chunk), so the scan is passed over.
    from ipp_seg.io import write_label_png

    pred, gt = tmp_path / "scans", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    speckle = np.random.default_rng(0).integers(0, 200, SHAPE).astype(np.uint8)
    cv2.imwrite(str(pred / "00001.png"), speckle)  # the scan: no mark, grey levels a mask has not
    write_label_png(pred / "00001_mask.png", scene(dx=2))
    cv2.imwrite(str(gt / "00001.png"), scene())
    (case,) = evaluate_folders(pred, gt).cases
    assert case.case_id == "00001" and 0.8 < case.dice_all < 1.0  # the mask scored, not the grey scan
    # A scan predict could not measure has no mask beside it: still a scan, not a prediction scored as empty (QA).
    cv2.imwrite(str(pred / "00002.png"), speckle[::-1])
    cv2.imwrite(str(gt / "00002.png"), scene())
    report = evaluate_folders(pred, gt)
    assert [c.case_id for c in report.cases] == ["00001"] and report.missing_predictions == ("00002",)
    # Another tool's label mask put beside them is a prediction still (QA: it had been passed over as a scan).
    cv2.imwrite(str(pred / "00003.png"), scene(dx=1))
    cv2.imwrite(str(gt / "00003.png"), scene())
    assert [c.case_id for c in evaluate_folders(pred, gt).cases] == ["00001", "00003"]
    # Nor may one folder lie inside the other: masks would be read as both (QA: Dice 1 without a word).
    (pred / "gt").mkdir()
    cv2.imwrite(str(pred / "gt" / "00009.png"), scene())
    with pytest.raises(ValueError, match=r"1 mask file\(s\) lie among the predictions .* and the ground truths"):
        evaluate_folders(pred, pred / "gt")
    with pytest.raises(ValueError, match="one folder given twice or one inside the other"):
        evaluate_folders(pred / "gt", pred)
    # Unmarked (another program saved it again), nothing tells which is the prediction: refused as before.
    cv2.imwrite(str(pred / "00001_mask.png"), scene(dx=2))
    with pytest.raises(ValueError, match="have two files"):
        evaluate_folders(pred, gt)
