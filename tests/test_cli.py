"""The command line, through Typer's CliRunner: each command and its exit codes."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ipp_seg import __version__, cli
from ipp_seg.cli import app
from ipp_seg.inference.batch import CSV_COLUMNS, write_measurements_csv
from ipp_seg.machine import software_version
from ipp_seg.measure.result import angle_in_doubt, distance_in_doubt
from ipp_seg.evaluate.report import read_label_mask
from ipp_seg.io import read_frame

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("two_frames_a_model_call")


def invoke(*args):
    # A wide terminal, so table cells are not folded mid-word.
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def test_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout
    # The version rows and reports name is the one installed (pyproject.toml's), bumped together.
    assert version("ipp-seg") == __version__


def test_the_version_rows_name_says_which_code_made_them(tmp_path):
    # A study coordinator's pass: two builds of one release that read a 16-bit frame 0.4 degrees apart both named
    # themselves 0.2.19 in their rows, and a resume mixed their rows without a word. The digest of the package's code
    # follows the release's number; a copy elsewhere, or saved with CRLF line ends, is the same code.
    assert re.fullmatch(re.escape(__version__) + r"\+[0-9a-f]{12}", software_version())
    assert invoke("--version").stdout.strip() == f"ipp-seg {software_version()}"
    import ipp_seg

    def digest_of(root: Path) -> str:
        run = subprocess.run([sys.executable, "-c", "from ipp_seg.machine import code_digest; print(code_digest())"],
                             env={**os.environ, "PYTHONPATH": str(root)}, cwd=root, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    copy = tmp_path / "copy" / "ipp_seg"
    shutil.copytree(Path(ipp_seg.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    original = digest_of(copy.parent)
    assert software_version().endswith("+" + original[:12])
    machine = copy / "machine.py"
    machine.write_bytes(machine.read_bytes().replace(b"\n", b"\r\n"))
    assert digest_of(copy.parent) == original
    with machine.open("a") as fh:
        fh.write("# a change of one's own\n")
    assert digest_of(copy.parent) != original


def test_models_lists_configs_and_shipped_models():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in ("dssau-net-paper", "star-dssau-net-paper", "dssau-net-s", "star-dssau-net-s", "29.21"):
        assert name in result.stdout
    assert "(default)" in result.stdout  # a shipped default model exists


def test_models_says_whose_validation_a_model_trained_on_every_frame_shows(tmp_path):
    held_out = {"name": "m-heldout", "config": "dssau-net-s", "files": {},
                "validation": {"overall": {"dice_ps": 0.5, "dice_fh": 0.6, "median_abs_delta_aop_deg": 7.0,
                                           "score": 0.9}}}
    final = {**held_out, "name": "m", "validation_source": {"checkpoint": "models/m-heldout.pt", "epoch": 12}}
    for card in (held_out, final):
        (tmp_path / f"{card['name']}.json").write_text(json.dumps(card))
    result = runner.invoke(app, ["models"], env={"COLUMNS": "250", "IPP_SEG_MODELS": str(tmp_path)})
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ m")}
    assert "of m-heldout (this model saw every frame)" in rows["m"]
    assert "held-out blocks" in rows["m-heldout"] and "saw every frame" not in rows["m-heldout"]


def test_models_shows_no_figures_for_a_model_whose_file_is_not_the_one_its_card_describes(tmp_path):
    card = {"config": "dssau-net-s", "files": {"onnx": {"name": "m.onnx", "sha256": "0" * 64},
                                              "torch": {"name": "other.pt", "sha256": "1" * 64}},
            "validation": {"overall": {"dice_ps": 0.876, "dice_fh": 0.949, "median_abs_delta_aop_deg": 3.17,
                                       "score": 0.954}}}
    (tmp_path / "m.json").write_text(json.dumps(card))
    (tmp_path / "m.onnx").write_bytes(b"other weights")  # another model copied in under the card's name
    good = {**card, "files": {"onnx": {"name": "g.onnx", "sha256": hashlib.sha256(b"g").hexdigest()}}}
    (tmp_path / "g.json").write_text(json.dumps(good))
    (tmp_path / "g.onnx").write_bytes(b"g")
    result = runner.invoke(app, ["models"], env={"COLUMNS": "300", "IPP_SEG_MODELS": str(tmp_path)})
    # Said by the exit status too (it had been 0: a QA script checking `models` passed).
    assert result.exit_code == 2 and "1 model file(s) are not the files their cards describe (sha256 differs: " \
        f"{tmp_path / 'm.onnx'}): running them is refused" in " ".join(result.stderr.split()), result.output
    listed = runner.invoke(app, ["models", "--json"], env={"IPP_SEG_MODELS": str(tmp_path)})
    assert listed.exit_code == 2 and "are not the files their cards describe" in listed.stderr
    assert not json.loads(listed.stdout)["models"][1]["files"]["onnx"]["matches_card"]
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert "none: a file is not the one its card describes" in rows["m"]
    assert "0.876" not in rows["m"] and "0.954" not in rows["m"]
    assert "m.onnx (not the card's: sha256 differs)" in rows["m"] and "other.pt (missing)" in rows["m"]
    assert "held-out blocks" in rows["g"] and "0.954" in rows["g"] and "(not the card's" not in rows["g"]


def test_reasons_lists_every_code_a_result_can_carry_with_its_status():
    from ipp_seg.inference.batch import ROW_FAILURES
    from ipp_seg.measure.result import REASONS

    listed = json.loads(invoke("reasons", "--json").stdout)
    assert [r["code"] for r in listed] == [*REASONS, *ROW_FAILURES]
    by_code = {r["code"]: r for r in listed}
    assert by_code["hsd_unstable"]["status"] == "warning" and by_code["aop_impossible"]["status"] == "failed"
    assert by_code["unreadable"]["status"] == "failed" and "could not be read" in by_code["unreadable"]["meaning"]
    # What to do about each, in plain words (a clinician had found codes and "IoU", no next step).
    assert all(r["action"] and r["action"].endswith(".") for r in listed)
    assert "--orientation mirrored" in by_code["orientation_doubtful"]["action"]
    # Which codes mark the row's AoP or HSD doubtful, for an analysis plan to cite (it had been in the source only).
    from ipp_seg.measure.result import ANGLE_IN_DOUBT, HSD_IN_DOUBT

    assert {r["code"] for r in listed if r["aop_doubtful"]} == ANGLE_IN_DOUBT
    assert {r["code"] for r in listed if r["hsd_doubtful"]} == HSD_IN_DOUBT
    assert (by_code["hsd_unstable"]["aop_doubtful"], by_code["hsd_unstable"]["hsd_doubtful"]) == (False, True)
    assert not by_code["spacing_unknown"]["aop_doubtful"] and by_code["head_small_in_frame"]["aop_doubtful"]
    table = runner.invoke(app, ["reasons"], env={"COLUMNS": "200"})
    assert "AoP doubtful" in table.stdout
    # Each doubt cell says yes or no (a blank read as nothing to a screen reader), "-" where the row has no value.
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[3:5]]
             for line in table.stdout.splitlines() if line.count("│") > 6 and line.split("│")[1].strip()}
    assert cells["hsd_unstable"] == ["no", "yes"] and cells["ps_missing"] == ["-", "-"]
    assert table.exit_code == 0 and "ps_low_confidence" in table.stdout and "mask_refused" in table.stdout
    assert "what to do" in table.stdout
    for command in ("predict", "batch", "measure"):  # where a user meets the codes, the help says where to look
        assert "ipp-seg reasons" in runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout


def test_reasons_explains_the_codes_asked_as_a_row_gives_them():
    # A clinician's pass: a row's reasons cell had to be looked up in the whole list.
    asked = json.loads(invoke("reasons", "ps_cut_off;aop_impossible", "hsd_unstable", "--json").stdout)
    # In the order pasted, a failed row's cause first (QA: it had come back in the full table's order), once each.
    assert [r["code"] for r in asked] == ["ps_cut_off", "aop_impossible", "hsd_unstable"]
    twice = json.loads(invoke("reasons", "spacing_unknown;ps_missing;spacing_unknown", "--json").stdout)
    assert [r["code"] for r in twice] == ["spacing_unknown", "ps_missing"]
    assert all(r["meaning"] and r["action"] for r in asked)
    table = runner.invoke(app, ["reasons", "orientation_doubtful"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "orientation_doubtful" in table.stdout and "ps_cut_off" not in table.stdout
    wrong = runner.invoke(app, ["reasons", "ps_cutoff", "xyz"], env={"COLUMNS": "200"})
    assert wrong.exit_code == 2, wrong.output
    assert "no reason code 'ps_cutoff' (did you mean ps_cut_off" in wrong.output
    assert "no reason code 'xyz'; " in wrong.output and "`ipp-seg reasons` lists them all" in wrong.output
    nothing = runner.invoke(app, ["reasons", ";"], env={"COLUMNS": "200"})  # (it had printed an empty table)
    assert nothing.exit_code == 2 and "no reason code given" in nothing.output


def test_the_verbose_flag_after_the_command_says_where_it_goes():
    # A pipeline engineer's pass: `ipp-seg batch -v ...` got "no such option: -v", nothing of where it goes.
    run = _ipp_seg_process("batch", "-v", "x", capture_output=True, text=True)
    assert run.returncode == 2
    assert "-v is ipp-seg's own option: it goes before the command (ipp-seg -v batch ...)" in run.stderr, run.stderr


def test_help_shows_arguments_as_they_are_typed():
    # typer had shown `{SCAN}...` in the usage line and `SCAN <list[Path]>` in the table: neither is typed so.
    for command, usage in (("predict", "SCAN..."), ("batch", "IN_DIR"), ("evaluate", "PRED_DIR GT_DIR"),
                           ("reasons", "[CODE...]")):
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}, prog_name="ipp-seg").stdout
        assert f"Usage: ipp-seg {command} [OPTIONS] {usage}" in shown, shown
        assert "<list[" not in shown and "<path>" not in shown and "{" not in shown.split("\n", 3)[1]


def test_cli_import_and_help_do_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from ipp_seg.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_predicting_a_png_imports_no_dicom_itk_or_torch_stack(sample_png):
    """Start-up cost of a one-frame predict: readers load only what the file needs."""
    code = ("import sys; from typer.testing import CliRunner; from ipp_seg.cli import app; "
            f"r = CliRunner().invoke(app, ['predict', {str(sample_png)!r}, '--json']); "
            "assert r.exit_code in (0, 1), r.output; "
            "print(sorted(m for m in ('pydicom', 'SimpleITK', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args,message", [(["--engine", "spark"], "--engine must be local or ray"),
                                          (["--address", "auto"], "--address only applies")])
def test_batch_engine_options_are_checked(tmp_path, args, message):
    result = invoke("batch", tmp_path, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output


def test_predict_png_prints_table_and_writes_nothing(sample_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", sample_png)
    assert result.exit_code == 0, result.output
    assert "AoP" in result.stdout and "spacing_unknown" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_predict_says_below_its_table_what_the_reasons_in_it_ask(sample_png, tmp_path):
    # A clinician's pass: the table gives reason codes, and what to do about them was only in `ipp-seg reasons`.
    import cv2

    mirrored = tmp_path / "mirrored.png"
    cv2.imwrite(str(mirrored), np.ascontiguousarray(cv2.imread(str(sample_png), cv2.IMREAD_UNCHANGED)[:, ::-1]))
    result = invoke("predict", mirrored, sample_png.with_name("psfhs_04750.png"))
    said = " ".join(result.output.split())
    assert "what the reasons ask (ipp-seg reasons says what each means):" in said
    for code in ("spacing_unknown", "orientation_doubtful", "hsd_undefined"):  # each once, in the order they appear
        assert said.count(f"{code}: ") == 1, code
    assert said.index("spacing_unknown: Distances") < said.index("orientation_doubtful: The frame may be mirrored") \
        < said.index("hsd_undefined: No HSD here (the infrapubic line meets no head); the AoP is still measured.")
    quiet = invoke("predict", sample_png, "--spacing-mm", "0.2")  # nothing to ask, nothing said
    assert quiet.exit_code == 0 and "what the reasons ask" not in quiet.output
    assert "predict --out DIR writes one per frame" not in said  # (no advice above speaks of an overlay)
    # Advice that speaks of an overlay, after a run that wrote none, says how to write one (a clinician's pass).
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (cv2.imread(str(sample_png), cv2.IMREAD_UNCHANGED) * 0.15).astype(np.uint8))
    dark_said = " ".join(invoke("predict", dark).output.split())
    assert "frame_dark: The image is dark" in dark_said and "(the overlays: predict --out DIR writes one per frame)" \
        in dark_said
    written = " ".join(invoke("predict", dark, "--out", tmp_path / "o").output.split())
    assert "frame_dark: The image is dark" in written and "predict --out DIR writes one" not in written
    # Measured as mirrored, the advice names the other orientation (a QA pass: it had said "mirrored" again).
    other = " ".join(invoke("predict", sample_png, "--orientation", "mirrored").output.split())
    assert "orientation_doubtful: The frame may be displayed as standard: if this machine displays it so, run again " \
           "with --orientation standard." in other


def test_a_table_piped_into_a_file_keeps_each_row_on_one_line(sample_png):
    # Without a terminal rich assumes 80 columns and folds every cell of the 8-column table.
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "ipp_seg.cli", "predict", str(sample_png)], capture_output=True,
                         text=True, env=env).stdout
    (row,) = [line for line in out.splitlines() if sample_png.name in line]
    assert str(sample_png) in row and "warning (spacing_unknown)" in row and "dssau-net-s" in row
    # So does an error line on stderr (grep '^ipp-seg:' in a log finds all of it).
    missing = "/no/such/folder/" + "a_rather_long_name_" * 4 + ".png"
    errors = subprocess.run([sys.executable, "-m", "ipp_seg.cli", "predict", missing], capture_output=True,
                            text=True, env=env).stderr
    assert f"ipp-seg: cannot read {missing}: no such file" in errors.splitlines()


def test_an_empty_argument_is_refused_before_anything_runs(tmp_path, sample_png):
    # `ipp-seg batch "$SCANS" --out run` with SCANS unset: typer read "" as ".", and the batch
    # went through every file below the current folder.
    (tmp_path / "stray.png").write_bytes(sample_png.read_bytes())
    for args, said in ((["batch", "", "--out", "run"], "argument 2 (after batch) is empty"),
                       (["predict", str(sample_png), "--spacing-mm", ""], "argument 4 (after --spacing-mm) is empty"),
                       (["batch", str(tmp_path), "--out="], "--out is given an empty value")):
        run = subprocess.run([sys.executable, "-m", "ipp_seg", *args], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 2 and f"ipp-seg: {said}, perhaps an unset shell variable" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and run.stdout == ""
    assert not (tmp_path / "run").exists()


def test_a_frame_no_decoder_can_read_gives_one_line_on_stderr(sample_dicom, tmp_path):
    # pydicom logs each decoder plugin's failure with a traceback; importing pydicom resets its
    # logger's level, so the CLI cuts the logger off instead. Run as a user would, in a process.
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(sample_dicom)
    ds.compress(RLELossless)
    ds.PixelData = encapsulate([b"\x00" * 64])  # an RLE header that points nowhere
    ds.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    import os

    narrow = {**os.environ, "COLUMNS": "60"}  # a narrow log: the message still stays on one line
    run = subprocess.run([sys.executable, "-m", "ipp_seg.cli", "predict", str(tmp_path / "broken.dcm")],
                         capture_output=True, text=True, env=narrow)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "ERROR pydicom" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("ipp-seg: cannot read")]
    assert "decoding frame 0" in line and str(tmp_path / "broken.dcm") in line


@pytest.mark.parametrize("command", ["predict", "batch"])
def test_a_patients_name_highdicom_would_warn_of_stays_off_the_terminal(tmp_path, sample_dicom, command):
    # A Patient's Name of one component (DOEJANE, as some exports write it): highdicom's warning had printed it in
    # full on stderr, which job logs keep, whenever a SEG or SR was written; with -v its log lines named UIDs.
    pytest.importorskip("highdicom")
    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    ds.PatientName = "DOEJANE"
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "scan.dcm")
    given = [str(tmp_path / "in" / "scan.dcm")] if command == "predict" else [str(tmp_path / "in"), "--workers", "1"]
    run = subprocess.run([sys.executable, "-m", "ipp_seg.cli", "-v", command, *given, "--out", str(tmp_path / "out"),
                          "--dicom-seg", "--dicom-sr"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    said = run.stderr.replace(str(tmp_path), "TMP")  # (the test's folder is named after it)
    assert "DOEJANE" not in said and "highdicom" not in said and "Warning" not in said, said
    written = [pydicom.dcmread(p) for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(written) == 2 and {str(w.PatientName) for w in written} == {"DOEJANE"}


def test_predict_json_and_out_dir(sample_dicom, tmp_path):
    result = invoke("predict", sample_dicom, "--json", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)  # stdout is JSON only
    assert len(reports) == 1
    report = reports[0]
    assert report["status"] in ("ok", "warning")
    assert report["spacing_mm"] == pytest.approx([0.35, 0.35])
    assert 60 <= report["aop_deg"] <= 200
    assert report["hsd_mm"] == pytest.approx(report["hsd_px"] * 0.35, rel=1e-6) if report["hsd_mm"] else True
    mask = read_label_mask(tmp_path / "out" / "psfhs_04700_us_mask.png")[0]
    assert mask.shape == (256, 256) and set(np.unique(mask)) == {0, 1, 2}
    assert (tmp_path / "out" / "psfhs_04700_us_overlay.png").exists()
    assert json.loads((tmp_path / "out" / "psfhs_04700_us.json").read_text())["aop_deg"] == report["aop_deg"]


def test_predict_out_reports_a_scan_it_could_not_measure_beside_the_others(sample_dicom, tmp_path):
    # Its report had been on stdout and in the table alone: a folder of reports had lost the failed scans' rows.
    import shutil

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(sample_dicom.read_bytes()[:3000])
    scan = tmp_path / "scan.dcm"
    shutil.copy(sample_dicom, scan)
    out = tmp_path / "out"
    result = invoke("predict", scan, broken, "--out", out, "--dicom-seg", "--dicom-sr")
    assert result.exit_code == 2 and "cannot read" in result.stderr, result.output
    report = json.loads((out / "broken.json").read_text())
    assert (report["file"], report["status"], report["reasons"]) == (str(broken), "failed", ["unreadable"])
    assert "truncated" in report["error"] and report["aop_deg"] is None and report["model_sha256"]
    assert not (out / "broken_mask.png").exists() and (out / "scan_mask.png").exists()
    # The same scan run again and giving no masks: its earlier mask and overlay are not left beside its new report
    # (which evaluate would have read as theirs), and the warning says so.
    again = invoke("predict", scan, "--frames", "3", "--out", out)
    assert again.exit_code == 2, again.output
    assert json.loads((out / "scan.json").read_text())["reasons"] == ["no_such_frame"]
    assert not [path.name for path in out.glob("scan_*")]  # (its SEG and SR too: an SR of a failed measurement)
    assert "scan_mask.png, scan_overlay.png, scan_seg.dcm, scan_sr.dcm, of an earlier run, removed from" in \
        " ".join(again.stderr.split())
    # Another scan of that name is named beside it, as a measured one is.
    broken.write_bytes(sample_dicom.read_bytes()[:2000])
    assert invoke("predict", broken, "--out", out).exit_code == 2
    earlier = json.loads((out / "broken.json").read_text())["file_sha256"]
    assert earlier != hashlib.sha256(broken.read_bytes()).hexdigest()
    assert len(list(out.glob("broken~*.json"))) == 1
    # So is a file without an image, whose report has no sha256 (named by its bytes' all the same: it had been "~").
    import pydicom

    header = pydicom.dcmread(sample_dicom)  # made a report (an SR), which holds no image
    del header.PixelData
    header.SOPClassUID = header.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    header.Modality = "SR"
    header.save_as(broken)
    assert invoke("predict", broken, "--out", out).exit_code == 2
    named = out / f"broken~{hashlib.sha256(broken.read_bytes()).hexdigest()[:8]}.json"
    assert json.loads(named.read_text())["reasons"] == ["not_an_image"] and not (out / "broken~.json").exists()


def test_a_cine_with_a_frame_that_cannot_be_segmented_exits_1_naming_the_frame(sample_dicom, tmp_path):
    # A research midwife's pass: a cine of 6 frames, one blank, exited 2 ("unusable input") naming the file, and a
    # script that drops exit-2 runs threw away its 5 measured frames.
    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    frames = np.stack([np.roll(ds.pixel_array, 3 * i, axis=1) for i in range(3)])
    frames[1] = 0
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(tmp_path / "cine.dcm")
    result = invoke("predict", tmp_path / "cine.dcm", "--json")
    assert result.exit_code == 1, result.output
    assert f"cannot segment {tmp_path / 'cine.dcm'} frame 1: every pixel holds 0" in " ".join(result.stderr.split())
    assert [report["status"] for report in json.loads(result.stdout)][1] == "failed"
    # The table: the loop's mean time per frame measured; none for the frame that was not (a QA pass).
    table = invoke("predict", tmp_path / "cine.dcm")
    took = [line.split("│")[-2].strip() for line in table.stdout.splitlines() if "cine.dcm" in line]
    assert took[1] == "-" and took[0] == took[2] != "-"
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(sample_dicom.read_bytes()[:3000])
    assert invoke("predict", tmp_path / "cine.dcm", broken).exit_code == 2  # (a scan of no frame measured)


def test_predicts_table_gives_a_cine_frames_time_in_the_loop(sample_dicom, tmp_path):
    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    ds.NumberOfFrames, ds.PixelData = 3, np.stack([np.roll(ds.pixel_array, 3 * i, axis=1) for i in range(3)]).tobytes()
    ds.FrameIncrementPointer, ds.FrameTime = pydicom.tag.Tag(0x0018, 0x1063), 40
    ds.save_as(tmp_path / "cine.dcm")
    result = invoke("predict", tmp_path / "cine.dcm", sample_dicom)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "AoP" in line)
    assert "t (s)" in header and header.index("frame") < header.index("t (s)") < header.index("AoP")
    lines = [line for line in result.stdout.splitlines() if "cine.dcm" in line]
    assert [line.split("│")[3].strip() for line in lines] == ["0.000", "0.040", "0.080"]
    # Each frame of the loop shows the loop's mean time (frames share model calls, and wait for those after them:
    # the first had read the loop's whole time, the others 0).
    took = {line.split("│")[-2].strip() for line in lines}
    assert len(took) == 1 and took != {"0"}
    (still,) = [line for line in result.stdout.splitlines() if "psfhs_04700_us.dcm" in line]
    assert still.split("│")[3].strip() == "-"  # a still: none
    # A still alone: no such column.
    assert "t (s)" not in invoke("predict", sample_dicom).stdout
    # The whole loop's angles were checked against each other (aop_unsteady); one frame picked from it was not, as
    # the run says (a cine study's pass: it read ok, nothing said it was never checked).
    assert "not checked against the frames around them" not in result.output
    picked = invoke("predict", tmp_path / "cine.dcm", "--frames", "1")
    assert "1 without two other frames measured within 0.5 s" in " ".join(picked.output.split())


def test_predict_out_keeps_scans_that_share_a_file_name_apart(sample_png, sample_dicom, tmp_path):
    # Exports are often named alike (IM_0001 in every study folder): one scan's outputs must
    # not overwrite another's.
    import shutil

    from ipp_seg.inference.report import output_names

    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(sample_png, tmp_path / "in" / folder / "scan.png")
    shutil.copy(sample_dicom, tmp_path / "in" / "a" / "scan.dcm")
    scans = [tmp_path / "in" / "a" / "scan.png", tmp_path / "in" / "b" / "scan.png", tmp_path / "in" / "a" / "scan.dcm",
             sample_png]
    result = invoke("predict", *scans, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    reports = [out / "a" / "scan_png.json", out / "b" / "scan.json", out / "a" / "scan_dcm.json",
               out / f"{sample_png.stem}.json"]
    for scan, report in zip(scans, reports):
        assert json.loads(report.read_text())["file"] == str(scan)
        assert report.with_name(report.stem + "_mask.png").exists()
    assert output_names(scans[:1] * 2) == {scans[0]: "scan.png"}  # the same scan twice: one name
    # Stems alike but for their case are one file's on macOS and Windows: kept apart too.
    upper = tmp_path / "in" / "b" / "Scan.dcm"
    shutil.copy(sample_dicom, upper)
    assert output_names([scans[0], upper]) == {scans[0]: "a/scan.png", upper: "b/Scan.dcm"}
    # Two links to one stored file are two scans, named after the links (as batch names them):
    # both had been named after the target, the second's outputs written over the first's.
    (tmp_path / "links").mkdir()
    for name in ("patientA.png", "patientB.png"):
        (tmp_path / "links" / name).symlink_to(scans[0])
    linked = [tmp_path / "links" / "patientA.png", tmp_path / "links" / "patientB.png"]
    assert invoke("predict", *linked, "--out", tmp_path / "linked").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "linked").glob("*.json")) == ["patientA.json", "patientB.json"]
    assert json.loads((tmp_path / "linked" / "patientA.json").read_text())["file"] == str(linked[0])


def test_scans_of_one_name_on_two_drives_are_named_by_their_whole_paths(tmp_path, monkeypatch):
    # Windows: `predict D:\\exp\\IM0001 E:\\usb\\IM0001 --out X` had ended in a traceback (os.path.commonpath
    # refuses paths on different drives), stood in for here.
    import ipp_seg.inference.report as report

    real = os.path.commonpath

    def no_common_folder(paths):
        if len({Path(p).name for p in paths}) > 1:  # the folders "exp" and "usb" stand for two drives
            raise ValueError("Paths don't have the same drive")
        return real(paths)

    monkeypatch.setattr(report.os.path, "commonpath", no_common_folder)
    scans = [tmp_path / "exp" / "IM0001", tmp_path / "usb" / "IM0001"]
    names = report.output_names(scans)
    assert names == {scan: scan.as_posix().lstrip("/") for scan in scans}
    assert report.output_names(scans[:1]) == {scans[0]: "IM0001"}  # a name of its own: as before


def test_a_scan_whose_output_names_would_be_too_long_is_written_under_a_cut_name(sample_png, tmp_path):
    # A 250-byte scan name leaves no room for "_overlay.png": the run had stopped with "File name
    # too long" after the first output, and the scans after it were never measured.
    long_name = tmp_path / ("A" * 246 + ".png")
    long_name.write_bytes(sample_png.read_bytes())
    short = tmp_path / "short.png"
    short.write_bytes(sample_png.read_bytes())
    result = invoke("predict", long_name, short, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    cut = [name for name in written if name.startswith("AAAA")]
    assert len(cut) == 3 and all(len(name.encode()) <= 255 and "~" in name for name in cut)
    assert {"short.json", "short_mask.png", "short_overlay.png"} <= set(written)
    report = next(p for p in (tmp_path / "out").iterdir() if p.name.startswith("AAAA") and p.suffix == ".json")
    assert json.loads(report.read_text())["file"] == str(long_name)  # the report names the scan whole


def test_separate_predict_runs_into_one_folder_keep_two_scans_of_one_name_apart(sample_png, tmp_path):
    # Two runs (a scan of each study, named alike) into one --out: the second had written its outputs over the
    # first's, which were lost without a word.
    import shutil

    for folder, source in (("a", sample_png), ("b", sample_png.with_name("psfhs_04750.png"))):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "IM_0001.png")
    out = tmp_path / "out"
    assert invoke("predict", tmp_path / "a" / "IM_0001.png", "--out", out).exit_code == 0
    first = json.loads((out / "IM_0001.json").read_text())
    second = invoke("predict", tmp_path / "b" / "IM_0001.png", "--out", out)
    assert second.exit_code == 0, second.output
    beside = f"IM_0001~{hashlib.sha256((tmp_path / 'b' / 'IM_0001.png').read_bytes()).hexdigest()[:8]}"
    assert json.loads((out / "IM_0001.json").read_text()) == first  # the first run's, as it wrote it
    assert json.loads((out / f"{beside}.json").read_text())["file"] == str(tmp_path / "b" / "IM_0001.png")
    assert (out / f"{beside}_mask.png").exists() and (out / f"{beside}_overlay.png").exists()
    assert "is an earlier run's report of other bytes" in " ".join(second.stderr.split())
    # The same scan again: its own outputs, replaced as before, without a word.
    again = invoke("predict", tmp_path / "a" / "IM_0001.png", "--out", out)
    assert again.exit_code == 0 and "earlier run's report" not in again.stderr
    assert sorted(p.name for p in out.glob("*.json")) == ["IM_0001.json", f"{beside}.json"]


def test_predict_into_a_folder_of_expert_masks_keeps_them(sample_png, tmp_path):
    # The layout train reads, <case>.png beside <case>_mask.png: predict --out into it had written its masks over the
    # expert's, and a JSON of the user's own over theirs, without a word (no report of ipp-seg was there to compare).
    import cv2
    import numpy as np

    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(sample_png, folder / "04700.png")
    expert = np.zeros((256, 256), np.uint8)
    expert[40:60, 100:160] = 1
    cv2.imwrite(str(folder / "04700_mask.png"), expert)
    shutil.copy(sample_png, folder / "04750.png")
    (folder / "04750.json").write_text('{"mine": true}')
    kept = {name: (folder / name).read_bytes() for name in ("04700_mask.png", "04750.json")}
    result = invoke("predict", folder / "04700.png", folder / "04750.png", "--out", folder)
    assert result.exit_code == 0, result.output
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    said = " ".join(result.stderr.split())
    assert "04700_mask.png in" in said and "04750.json in" in said and "no output of ipp-seg" in said
    for case in ("04700", "04750"):
        beside = f"{case}~{hashlib.sha256((folder / f'{case}.png').read_bytes()).hexdigest()[:8]}"
        assert json.loads((folder / f"{beside}.json").read_text())["file"] == str(folder / f"{case}.png")
        assert (folder / f"{beside}_mask.png").exists() and (folder / f"{beside}_overlay.png").exists()
    assert not (folder / "04700.json").exists() and not (folder / "04750_mask.png").exists()
    # A mask of one's own under the ~ name too (corrected by hand, its report removed): kept, a longer name taken.
    digest = hashlib.sha256((folder / "04700.png").read_bytes()).hexdigest()
    (folder / f"04700~{digest[:8]}.json").unlink()
    cv2.imwrite(str(folder / f"04700~{digest[:8]}_mask.png"), expert)
    corrected = (folder / f"04700~{digest[:8]}_mask.png").read_bytes()
    again = invoke("predict", folder / "04700.png", "--out", folder)
    assert again.exit_code == 0, again.output
    assert (folder / f"04700~{digest[:8]}_mask.png").read_bytes() == corrected
    assert json.loads((folder / f"04700~{digest[:16]}.json").read_text())["file"] == str(folder / "04700.png")
    assert f"this scan's outputs are named 04700~{digest[:16]}.*" in " ".join(again.stderr.split())


def test_predict_stopped_by_a_signal_prints_what_it_measured_and_names_the_rest(sample_png, tmp_path, monkeypatch):
    # A deployment pass: SIGTERM (a scheduler's stop) ended predict with exit 143 and no word, Ctrl-C with 130 and
    # nothing on stdout: the frames measured were lost from the table and JSON, and nothing said which scans were not.
    import signal

    import ipp_seg.inference.report as report_module

    real = report_module.predict_scans

    def stopped_after_one(*args, **kwargs):
        for k, predicted in enumerate(real(*args, **kwargs)):
            if k == 1:
                # As a scheduler stops it; only with ipp-seg's handler in place (the default would end pytest too).
                assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
                os.kill(os.getpid(), signal.SIGTERM)
            yield predicted

    monkeypatch.setattr(report_module, "predict_scans", stopped_after_one)
    scans = [shutil.copy(sample_png, tmp_path / f"{k}.png") for k in range(3)]
    result = invoke("predict", *scans, "--json")
    assert result.exit_code == 130, result.output
    measured = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in measured] == ["0.png"] and measured[0]["aop_deg"] is not None
    said = " ".join(result.stderr.split())
    assert "interrupted: 1 frame measured (above); 2 scans not measured in full:" in said
    assert "1.png" in said and "2.png" in said and "give them to predict again" in said
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was (within a program: see main())


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_a_command_starts_ends_it_as_ctrl_c_does(sample_png, tmp_path, stop, stoppable):
    """A scripting user's pass: SIGTERM or SIGHUP in a command's first second (reading options,
    before it took them over) ended it with the system's 143 or 129, not the documented 130."""
    import signal

    if not hasattr(signal, stop):
        pytest.skip(f"no {stop} here")
    script = textwrap.dedent(f"""
        import os, signal, sys
        import ipp_seg.cli as cli
        settled = cli.configure_logging
        def then_stopped(level):  # (the options read; no command has taken the signals over yet)
            settled(level)
            os.kill(os.getpid(), signal.{stop})
        cli.configure_logging = then_stopped
        sys.argv = ["ipp-seg", "batch", {str(sample_png.parent)!r}, "--out", {str(tmp_path / "out")!r}]
        cli.main()
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                         preexec_fn=stoppable)
    assert run.returncode == 130, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr and not (tmp_path / "out" / "measurements.csv").exists()
    # Ended at once, not by an exception: one raised inside onnxruntime's import (the model loading) had become
    # "ImportError: initialization failed", a traceback and exit 1 (a QA pass).
    assert f"ipp-seg: stopped ({stop})" in run.stderr
    # A command's end gives the system's handling back: a stop after its output is whole is no interrupted run.
    import ipp_seg.cli as cli

    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    system = signal.default_int_handler if stop == "SIGINT" else signal.SIG_DFL  # (Python's own, for Ctrl-C)
    try:
        signal.signal(getattr(signal, stop), system)  # (as a terminal's session has it: not under nohup)
        cli._stop_as_on_ctrl_c_while_starting()
        cli._restore_signals(cli._stop_on_signals())
        assert signal.getsignal(getattr(signal, stop)) is system
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_predict_dicom_seg_and_sr(sample_dicom, tmp_path):
    pytest.importorskip("highdicom")
    result = invoke("predict", sample_dicom, "--out", tmp_path, "--dicom-seg", "--dicom-sr")
    assert result.exit_code == 0, result.output
    import pydicom

    seg = pydicom.dcmread(tmp_path / "psfhs_04700_us_seg.dcm")
    sr = pydicom.dcmread(tmp_path / "psfhs_04700_us_sr.dcm")
    source_uid = pydicom.dcmread(sample_dicom).SOPInstanceUID
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0] \
        .ReferencedSOPInstanceUID == source_uid
    assert sr.Modality == "SR"
    # Dated by the run that made them, one date and time for its series (a re-run's told apart).
    assert seg.SeriesDate and (seg.SeriesDate, seg.SeriesTime) == (sr.SeriesDate, sr.SeriesTime)
    # The SR, the JSON beside it, say where the HSD's millimetres came from: the DICOM region.
    import highdicom

    (group,) = highdicom.sr.srread(tmp_path / "psfhs_04700_us_sr.dcm").content.get_image_measurement_groups()
    calibration = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}["CALIB"]
    assert calibration == json.loads((tmp_path / "psfhs_04700_us.json").read_text())["spacing_source"] \
        == "ultrasound_region"
    # Both name the weights by the checksum the JSON gives.
    digest = json.loads((tmp_path / "psfhs_04700_us.json").read_text())["model_sha256"]
    assert len(digest) == 64
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters \
        == f"model_sha256={digest},tta=none,orientation=standard"

    def texts(items):
        for item in items:
            yield from ([item.TextValue] if "TextValue" in item else [])
            yield from texts(item.get("ContentSequence", []))

    assert f"model_sha256={digest}" in set(texts(sr.ContentSequence))


def test_a_cines_dicom_results_form_one_series_per_kind_and_run(sample_dicom, tmp_path):
    pytest.importorskip("highdicom")
    import pydicom

    cine = pydicom.dcmread(sample_dicom)
    frame = cine.pixel_array
    cine.NumberOfFrames = 3
    cine.FrameIncrementPointer, cine.FrameTime = pydicom.tag.Tag(0x0018, 0x1063), 40
    cine.SOPClassUID = cine.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    cine.PixelData = np.stack([np.roll(frame, 2 * i, axis=1) for i in range(3)]).tobytes()
    cine.save_as(tmp_path / "cine.dcm", enforce_file_format=True)
    series = {}
    for run in ("one", "two"):
        result = invoke("predict", tmp_path / "cine.dcm", "--out", tmp_path / run, "--dicom-seg", "--dicom-sr")
        assert result.exit_code == 0, result.output
        for kind in ("seg", "sr"):
            written = [pydicom.dcmread(tmp_path / run / f"cine_f{i:04d}_{kind}.dcm") for i in range(3)]
            assert len({ds.SeriesInstanceUID for ds in written}) == 1  # one series, not one per frame
            assert [ds.InstanceNumber for ds in written] == [1, 2, 3]
            assert len({ds.SOPInstanceUID for ds in written}) == 3
            series[run, kind] = written[0].SeriesInstanceUID
        # Each frame's report says its cine's length and its time after the first frame (the header's 40 ms a frame).
        reports = [json.loads((tmp_path / run / f"cine_f{i:04d}.json").read_text()) for i in range(3)]
        assert [(r["n_frames"], r["frame_time_ms"]) for r in reports] == [(3, 0.0), (3, 40.0), (3, 80.0)]
    assert series["one", "seg"] != series["one", "sr"]
    assert series["one", "seg"] != series["two", "seg"]  # another run, another series
    # Two cines of one series in one run: one derived series, its Instance Numbers unique (the
    # second cine's frames continue after the first's instead of repeating 1, 2, 3).
    second = pydicom.dcmread(tmp_path / "cine.dcm")
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    second.save_as(tmp_path / "cine2.dcm", enforce_file_format=True)
    both = invoke("predict", tmp_path / "cine.dcm", tmp_path / "cine2.dcm", "--out", tmp_path / "both", "--dicom-seg")
    assert both.exit_code == 0, both.output
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "both").glob("*_seg.dcm"))]
    assert len(written) == 6 and len({ds.SeriesInstanceUID for ds in written}) == 1
    assert sorted(ds.InstanceNumber for ds in written) == [1, 2, 3, 4, 5, 6]
    # Another study's cine under the same Series Instance UID (a faulty anonymiser's export): its results had
    # joined the first patient's series. Each study gets its own, numbered from 1.
    other = pydicom.dcmread(tmp_path / "cine2.dcm")
    other.StudyInstanceUID, other.PatientID = pydicom.uid.generate_uid(), "OTHER"
    other.save_as(tmp_path / "cine3.dcm", enforce_file_format=True)
    apart = invoke("predict", tmp_path / "cine.dcm", tmp_path / "cine3.dcm", "--out", tmp_path / "apart", "--dicom-seg")
    assert apart.exit_code == 0, apart.output
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "apart").glob("*_seg.dcm"))]
    by_study = {}
    for ds in written:
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    assert len(by_study) == 2 and len({ds.SeriesInstanceUID for ds in written}) == 2
    for study in by_study.values():
        assert len({ds.SeriesInstanceUID for ds in study}) == 1
        assert sorted(ds.InstanceNumber for ds in study) == [1, 2, 3]


def test_dicom_results_of_a_retired_ultrasound_class_are_refused_in_one_line(sample_dicom, tmp_path, caplog):
    pytest.importorskip("highdicom")
    import pydicom

    old = pydicom.dcmread(sample_dicom)
    old.SOPClassUID = old.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6"
    old.save_as(tmp_path / "old.dcm", enforce_file_format=True)
    result = invoke("predict", tmp_path / "old.dcm", "--out", tmp_path / "out", "--dicom-seg")
    assert result.exit_code == 2 and "retired SOP class Ultrasound Image Storage (Retired)" in result.output
    assert "Traceback" not in result.output and (tmp_path / "out" / "old.json").exists()
    # batch: said once for the file, counted in the summary, its row standing.
    scans = tmp_path / "scans"
    scans.mkdir()
    (tmp_path / "old.dcm").rename(scans / "old.dcm")
    shutil.copy(sample_dicom, scans / "new.dcm")
    with caplog.at_level("WARNING"):
        result = invoke("batch", scans, "--out", tmp_path / "batch", "--dicom-seg", "--dicom-sr")
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and caplog.text.count("retired SOP class") == 1, caplog.text
    assert f"2 DICOM SEG and SR object(s) written under {tmp_path / 'batch' / 'dicom-results'}; 2 refused" in said


def test_dicom_results_asked_for_a_png_say_why_there_are_none(sample_png, tmp_path):
    pytest.importorskip("highdicom")
    result = invoke("predict", sample_png, "--out", tmp_path, "--dicom-sr")
    assert result.exit_code == 0, result.output
    assert "no DICOM SR for" in result.output and "not a DICOM file" in result.output  # what was asked
    assert not list(tmp_path.glob("*.dcm"))


def test_predict_goes_on_past_a_scan_whose_dicom_results_cannot_be_made(sample_dicom, tmp_path):
    pytest.importorskip("highdicom")
    import pydicom

    broken = pydicom.dcmread(sample_dicom)
    del broken.SeriesInstanceUID  # nothing for a SEG or SR to reference
    broken.save_as(tmp_path / "no_series.dcm", enforce_file_format=True)
    odd = pydicom.dcmread(sample_dicom)
    odd.PatientSex = "U"  # not M, F or O: left empty in the SEG and SR
    odd.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    result = invoke("predict", tmp_path / "no_series.dcm", tmp_path / "odd.dcm", "--out", tmp_path / "out",
                    "--dicom-seg", "--dicom-sr")
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "Traceback" not in said and "no_series.dcm: no DICOM SEG or SR: source dataset lacks SeriesInstanceUID" \
        in said
    assert (tmp_path / "out" / "no_series.json").exists()  # its measurement is still written
    assert (tmp_path / "out" / "odd_seg.dcm").exists() and (tmp_path / "out" / "odd_sr.dcm").exists()


def test_a_seg_that_cannot_be_made_leaves_the_sr_written_and_says_which(sample_dicom, tmp_path, monkeypatch):
    pytest.importorskip("highdicom")
    from ipp_seg.io import dicom_results

    def refused(*args, **kwargs):
        raise dicom_results.DicomResultError("highdicom could not make the Segmentation (TypeError)")

    monkeypatch.setattr(dicom_results, "write_dicom_seg", refused)
    result = invoke("predict", sample_dicom, "--out", tmp_path, "--dicom-seg", "--dicom-sr")
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "no DICOM SEG: highdicom could not make the Segmentation" in said
    assert "no DICOM SR" not in said and "SEG/SR" not in said
    assert list(tmp_path.glob("*_sr.dcm")) and not list(tmp_path.glob("*_seg.dcm"))


@pytest.mark.parametrize("command", ["predict", "batch", "evaluate"])
def test_an_output_folder_that_is_a_file_is_refused_up_front(command, sample_png, tmp_path):
    (tmp_path / "taken").write_text("")
    args = {"predict": [sample_png], "batch": [sample_png.parent], "evaluate": [tmp_path, tmp_path]}[command]
    result = invoke(command, *args, "--out", tmp_path / "taken")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert "Traceback" not in result.output


def test_models_that_cannot_serve_are_refused_in_one_line(sample_png, tmp_path):
    onnx = pytest.importorskip("onnx")
    from ipp_seg.inference.registry import resolve_model

    model = onnx.load(str(resolve_model("dssau-net-s").onnx_path))
    for prop in model.metadata_props:
        if prop.key == "input_size":
            prop.value = "[128, 128]"  # the network itself takes 256 x 256
    onnx.save(model, str(tmp_path / "wrong_size.onnx"))
    result = invoke("predict", sample_png, "--model", tmp_path / "wrong_size.onnx")
    assert result.exit_code == 2 and "export it again" in result.output and "Traceback" not in result.output
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    result = invoke("predict", sample_png, "--model", tmp_path / "notes.pt", "--backend", "torch")
    assert result.exit_code == 2 and "not a checkpoint written by ipp-seg train" in result.output


def test_a_runs_best_model_is_named_by_its_run(sample_png, tmp_path):
    import shutil

    from ipp_seg.inference.registry import resolve_model, sha256_of

    (tmp_path / "run7").mkdir()
    shutil.copy(resolve_model("dssau-net-s").onnx_path, tmp_path / "run7" / "best.onnx")
    (report,) = json.loads(invoke("predict", sample_png, "--json", "--model", tmp_path / "run7" / "best.onnx").stdout)
    assert report["model"] == "run7/best"  # not "best", which every run has
    assert report["model_sha256"] == sha256_of(tmp_path / "run7" / "best.onnx")


def test_results_name_the_weights_by_checksum_as_well_as_by_name(sample_png, tmp_path):
    # A model's name stays when it is retrained: the file's sha256 says which weights measured.
    from ipp_seg.inference.registry import resolve_model, sha256_of

    spec = resolve_model("dssau-net-s")
    (report,) = json.loads(invoke("predict", sample_png, "--json").stdout)
    assert report["model"] == "dssau-net-s"
    assert report["model_sha256"] == sha256_of(spec.onnx_path) == spec.card["files"]["onnx"]["sha256"]
    result = invoke("predict", tmp_path / "absent.png", "--json")
    (failed,) = json.loads(result.stdout)
    assert failed["status"] == "failed" and failed["model_sha256"] == report["model_sha256"]


def test_the_readme_explains_every_reason_code_under_its_status():
    """Users select rows by reason: each code a row can carry is explained in the README, in the
    list of its status (three codes had been missing from it)."""
    from pathlib import Path

    from ipp_seg.inference.batch import reason_codes

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Status reason codes"):readme.index("## Models")]
    failed, warnings = section.index("**Failed"), section.index("**Warnings")
    not_measured = section.index("**", warnings + 2 + section[warnings + 2:].index("**") + 2)
    for code, status, _ in reason_codes():
        at = section.find(f"- `{code}`")
        if at < 0:
            at = section.find(f" / `{code}`")  # the second of a pair, "- `ps_cut_off` / `fh_cut_off`"
        assert at >= 0, f"{code} is not explained in the README"
        if status == "warning":
            assert warnings < at < not_measured, code
        else:
            assert failed < at < warnings or at > not_measured, code


def test_a_link_planted_in_an_output_folder_is_replaced_not_followed(tmp_path, sample_dicom, sample_png):
    """In a shared folder another user may plant links where ipp-seg will write: a report, a
    mask, an overlay, a SEG, an SR or evaluate's files had been written through them."""
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    names = ("psfhs_04700_us.json", "psfhs_04700_us_mask.png", "psfhs_04700_us_overlay.png", "psfhs_04700_us_seg.dcm",
             "psfhs_04700_us_sr.dcm")
    for name in names:
        (victim / name).write_text("precious")
        (out / name).symlink_to(victim / name)
    scan = tmp_path / "psfhs_04700_us.dcm"
    shutil.copy(sample_dicom, scan)
    assert invoke("predict", scan, "--out", out, "--dicom-seg", "--dicom-sr").exit_code == 0
    assert all((victim / name).read_text() == "precious" for name in names)
    # The links are no outputs of ipp-seg (no report of its own beside them): left, and the outputs named beside.
    beside = f"psfhs_04700_us~{hashlib.sha256(scan.read_bytes()).hexdigest()[:8]}"
    assert all((out / name).is_symlink() for name in names)
    written = [out / name.replace("psfhs_04700_us", beside) for name in names]
    assert all(path.is_file() and not path.is_symlink() for path in written)
    assert json.loads(written[0].read_text())["aop_deg"] > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".ipp-seg-")]  # no staging file left
    # Links planted where the run writes into its own report's outputs again: replaced, not followed.
    for path in written[1:]:
        path.unlink()
        path.symlink_to(victim / path.name.replace(beside, "psfhs_04700_us"))
    assert invoke("predict", scan, "--out", out, "--dicom-seg", "--dicom-sr").exit_code == 0
    assert all((victim / name).read_text() == "precious" for name in names)
    assert all(path.is_file() and not path.is_symlink() for path in written)
    for name in names:
        (out / name).unlink()
    # evaluate's files in its --out folder likewise.
    ev = tmp_path / "ev"
    ev.mkdir()
    (victim / "summary.json").write_text("precious")
    (ev / "summary.json").symlink_to(victim / "summary.json")
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.copy(written[1], gt / f"{beside}.png")
    assert invoke("evaluate", out, gt, "--out", ev).exit_code == 0
    assert (victim / "summary.json").read_text() == "precious" and not (ev / "summary.json").is_symlink()


def test_text_burnt_in_beside_the_ultrasound_region_stays_out_of_the_overlay(tmp_path, sample_dicom):
    """A scanner burns the patient's name into a banner beside the image: the overlay PNG, which
    no DICOM de-identification sees, had carried it; it shows the ultrasound regions alone."""
    import cv2
    import pydicom

    from ipp_seg.io.overlay import imaged_pixels

    ds = pydicom.dcmread(sample_dicom)
    pixels = ds.pixel_array.copy()
    pixels[:24] = 255  # the banner: white text on the top rows, outside the region below
    ds.PixelData = pixels.tobytes()
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = 24
    scan = tmp_path / "burnt.dcm"
    ds.save_as(scan)
    assert invoke("predict", scan, "--out", tmp_path / "out").exit_code == 0
    overlay = cv2.imread(str(tmp_path / "out" / "burnt_overlay.png"), cv2.IMREAD_GRAYSCALE)
    scale = overlay.shape[1] // pixels.shape[1]
    assert overlay[: 20 * scale].max() == 0  # the banner's rows are black
    assert overlay[30 * scale: 200 * scale].mean() > 20  # the image below is there
    # Without regions (a PNG) nothing is blanked; the regions' own pixels are kept as they are.
    image = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    assert imaged_pixels(image, ()) is image
    from ipp_seg.io import ImagingRegion

    shown = imaged_pixels(image, (ImagingRegion(8, 4, 40, 60), ImagingRegion(44, 0, 64, 10)))
    assert np.array_equal(shown[4:60, 8:40], image[4:60, 8:40]) and np.array_equal(shown[:10, 44:], image[:10, 44:])
    assert shown[:4, :44].max() == 0 and shown[:, :8].max() == 0 and shown[20:, 44:].max() == 0


def test_predict_unreadable_input_exits_2(tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_text("not a scan")
    result = invoke("predict", bad)
    assert result.exit_code == 2
    assert "cannot read" in result.output and "Traceback" not in result.output
    notes = tmp_path / "notes.txt"  # no damaged scan: a file of another kind
    notes.write_text("not a scan")
    result = invoke("predict", notes)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot measure" in result.output and "not a scan: a .txt file" in " ".join(result.output.split())


def test_file_names_with_brackets_are_shown_as_they_are(sample_png, tmp_path):
    # rich reads "[...]" as markup: a name like "scan[left].png" must not lose its brackets,
    # and one like "[/]x.png" must not crash the table or the error line.
    import shutil

    scan = tmp_path / "scan[left].png"
    shutil.copy(sample_png, scan)
    (tmp_path / "a[").mkdir()
    broken = tmp_path / "a[" / "]broken[bold].png"  # the path holds "[/]", a closing tag to rich
    broken.write_bytes(b"not an image")
    result = invoke("predict", scan, broken)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "scan[left].png" in result.stdout and "a[/]broken[bold].png" in result.stdout
    assert "cannot read" in result.output and "a[/]broken[bold].png" in result.output


def test_a_report_planted_under_a_scans_output_name_hangs_or_crashes_no_prediction(tmp_path, sample_dicom):
    # A security review: a pipe planted as scan.json in a shared --out folder hung predict, and a JSON nested too deep
    # ended it in a RecursionError traceback (exit 1). Neither is a report of ipp-seg: the outputs go beside them.
    for name, plant in (("pipe", lambda path: os.mkfifo(path)), ("deep", lambda path: path.write_text("[" * 10**5))):
        out = tmp_path / name
        out.mkdir()
        plant(out / "scan.json")
        shutil.copy(sample_dicom, tmp_path / "scan.dcm")
        result = invoke("predict", tmp_path / "scan.dcm", "--out", out)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert "no output of ipp-seg" in result.output
        assert len(list(out.glob("scan~*.json"))) == 1


def test_help_names_the_extras_to_install():
    assert "[train] extra" in invoke("train", "--help").stdout
    assert "[ray] extra" in invoke("batch", "--help").stdout


def test_dash_h_is_help_as_most_tools_take_it():
    # "-h" had been refused ("no such option"), a terminal user's pass.
    for command in ((), ("predict",), ("batch",), ("evaluate",)):
        short, long = invoke(*command, "-h"), invoke(*command, "--help")
        assert short.exit_code == long.exit_code == 0 and short.stdout == long.stdout and "Usage:" in short.stdout


def test_the_command_list_gives_one_line_per_command():
    # The full descriptions (with exit codes) wrapped mid-sentence in the list of commands.
    listing = invoke("--help").stdout
    commands = ("models", "reasons", "train", "predict", "batch", "measure", "export", "evaluate")
    lines = [line.strip("│ ").split()[0] for line in listing.splitlines()
             if line.startswith("│ ") and line.strip("│ ")]
    listed = [word for word in lines if word in commands]
    assert listed == list(commands)
    block = listing[listing.index("Commands"):]
    assert sum(1 for line in block.splitlines() if line.startswith("│ ")) == len(commands)


@pytest.mark.parametrize("command, flags", [("predict", ("--json", "--tta", "--dicom-sr", "--help")),
                                            ("batch", ("--resume", "--overlays", "--help")),
                                            ("evaluate", ("--missing-as-empty", "--help")),
                                            ("export", ("--fp16-weights", "--help"))])
def test_help_shows_flags_without_a_value_placeholder(command, flags):
    # A flag shown as "--json <bool>" reads as if it took a value (typer 0.29 shows that, --help's own too).
    lines = invoke(command, "--help").stdout.splitlines()
    assert "<bool>" not in invoke("--help").stdout
    for flag in flags:
        (line,) = [ln for ln in lines if ln.lstrip("│ ").startswith(f"{flag} ")]
        assert "<bool>" not in line, line
    # Arguments are named as the README names them (typer showed "{scans}...", "{pred_dir}").
    usage = next(ln for ln in lines if "Usage:" in ln)
    assert {"predict": "SCAN", "batch": "IN_DIR", "evaluate": "PRED_DIR", "export": "CHECKPOINT"}[command] in usage


@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
def test_tables_never_break_a_number_across_lines(width):
    # At 80 columns the evaluate table used to print 0.9287 as "0.92" over "87".
    from rich.console import Console

    from ipp_seg.tables import new_table, print_table

    numbers = ["0.9287", "0.9534", "12.00", "-13.96", "+26.01", "146.3", "0.9615"]
    table = new_table("metrics", ("block", "cases", "Dice PS", "Dice FH", "HD all (px)", "95% limits of agreement",
                               "mean |ΔAoP| (°)", "a long file path column", "score"), justify="right")
    for block in ("overall", "wide", "narrow"):
        table.add_row(block, "230", numbers[0], numbers[1], numbers[2], f"{numbers[3]} to {numbers[4]}", numbers[5],
                      "sample_data/a/very/long/path/to/psfhs_04700_us.dcm", numbers[6])
    console = Console(width=width, record=True, force_terminal=False)
    print_table(table, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    words = set(text.replace("│", " ").replace("┃", " ").split())
    for number in numbers + ["230"]:
        assert number in words, (number, width)
    assert "overall" in text and "narrow" in text


@pytest.mark.parametrize("terminal", [False, True])
def test_a_rows_name_stays_on_one_line_in_a_file_or_log(terminal):
    # predict | cat: a 150-character path had been folded over two lines of the 240-column table, so that grep for
    # it found nothing (a terminal user's pass). A terminal still folds a name that does not fit.
    from rich.console import Console

    from ipp_seg.tables import new_table, print_table

    path = "/".join(f"examinations_folder_{k}" for k in range(6)) + "/exam_2026_12_06_0001.png"
    table = new_table("ipp-seg predict", ("file", "frame", "AoP (°)", "HSD (mm)", "HSD (px)", "status", "model",
                                          "took (ms)"))
    table.add_row(path, "0", "146.3", "-", "15.8", "warning (spacing_unknown)", "dssau-net-s", "329")
    console = Console(width=240, record=True, force_terminal=terminal)
    print_table(table, console)
    text = console.export_text()
    assert len(path) > 140 and (path in text) == (not terminal)
    assert "146.3" in text and "spacing_unknown" in text


@pytest.mark.parametrize("encoding, heading", [("ascii", "median |dAoP| (deg)"), ("utf-8", "median |ΔAoP| (°)")])
def test_a_heading_spells_its_unit_where_the_output_cannot_encode_it(encoding, heading):
    # Under PYTHONIOENCODING=ascii the AoP column's heading was written "AoP (\xb0)", out of line with its column.
    import io

    from rich.console import Console

    from rich.cells import cell_len

    from ipp_seg.tables import new_table, print_table

    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="backslashreplace", newline="\n")
    table = new_table("AoP (°) by block (Bland–Altman)", ("block", "median |ΔAoP| (°)"))
    table.add_row("overall", "5.1")
    table.add_row("AoP (°)", "5.2")  # (evaluate's agreement table names its measures in the first column)
    # A name the output cannot hold is escaped before the columns are measured (a terminal user's pass: escaped by
    # the stream, a Chinese folder's name had run past its column's border).
    table.add_row("\u8d85\u58f0/scan.png", "5.3")
    print_table(table, Console(file=stream, width=100, force_terminal=False))
    stream.flush()
    lines = stream.buffer.getvalue().decode(encoding).splitlines()
    assert any(heading in line for line in lines) and "\\x" not in "".join(lines)
    header = next(line for line in lines if heading in line)
    row = next(line for line in lines if "overall" in line)
    named = next(line for line in lines if "scan.png" in line)
    assert cell_len(header) == cell_len(row) == cell_len(named)  # the columns line up (a CJK character: two cells)
    assert ("\\u8d85\\u58f0/scan.png" if encoding == "ascii" else "\u8d85\u58f0/scan.png") in named


@pytest.mark.parametrize("width", [50, 80, 120])
def test_tables_keep_names_and_codes_whole_where_they_can(width):
    from rich.console import Console

    from ipp_seg.tables import new_table, print_table

    table = new_table("models", ("model", "config", "validation", "Dice PS", "median |ΔAoP| (°)", "files"))
    for name in ("dssau-net-s-heldout", "star-dssau-net-s-heldout"):
        table.add_row(name, "dssau-net-paper", "of dssau-net-s-heldout (this model saw every frame)", "0.877", "5.13",
                      f"{name}.onnx, {name}.pt")
    console = Console(width=width, record=True, force_terminal=False)
    print_table(table, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    words = set(text.replace("│", " ").replace("┃", " ").split())
    for whole in ("dssau-net-s-heldout", "star-dssau-net-s-heldout", "dssau-net-paper", "0.877", "5.13"):
        assert whole in words, (whole, width)


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_the_reason_codes_stay_whole_and_the_wide_columns_share_the_width(width):
    # A clinician's pass at 80 columns: every code folded after 10 characters ("ps_too_sma" over "ll"), so that a
    # code could not be found or grepped; at 200 the "meaning" column got what "what to do" left, 18 characters.
    from rich.console import Console

    from ipp_seg.inference.batch import reason_codes
    from ipp_seg.tables import new_table, print_table

    table = new_table("Reason codes", ("code", "status", "what to do", "meaning"))
    for code, status, meaning in reason_codes():
        table.add_row(code, status, "Check the overlay and choose another frame, or measure it by hand. " * 2, meaning)
    console = Console(width=width, record=True, force_terminal=False)
    print_table(table, console, turn=False)
    text = console.export_text()
    words = set(text.replace("│", " ").replace("┃", " ").split())
    assert all(code in words for code, _, _ in reason_codes())
    if width >= 120:  # side by side: the two wide columns share what the narrow ones leave
        top = next(line for line in text.splitlines() if line.startswith("┏"))
        cells = [len(cell) for cell in top[1:-1].split("┳")]
        assert abs(cells[2] - cells[3]) <= 1, cells


@pytest.mark.parametrize("width", [80, 240])
def test_a_name_in_wide_characters_stays_whole_in_its_column(width):
    # A patient folder named in Chinese: each character takes two cells, and the column was sized in characters, so
    # "/scans/张伟/张伟.png" had broken into "/scans/张伟/张伟.pn" over "g".
    from rich.cells import cell_len
    from rich.console import Console

    from ipp_seg.tables import new_table, print_table

    table = new_table("ipp-seg predict", ("file", "frame", "AoP (°)", "status"))
    table.add_row("/scans/张伟/张伟.png", "0", "146.2", "ok")
    console = Console(width=width, record=True, force_terminal=False)
    print_table(table, console)
    text = console.export_text()
    assert "/scans/张伟/张伟.png" in text
    assert max(cell_len(line) for line in text.splitlines()) <= width


def test_results_of_several_scans_are_never_turned_and_a_dumb_terminal_gets_ascii_borders():
    # Turned, three scans' reasons had shared each line, which a screen reader reads as one; and
    # under TERM=dumb the box-drawing characters had stayed.
    from rich.console import Console

    from ipp_seg.tables import new_table, print_table

    def table():
        results = new_table("ipp-seg predict", ("file", "frame", "AoP (°)", "HSD (mm)", "HSD (px)", "status",
                                                "model", "took (ms)"))
        for k in range(3):
            results.add_row(f"/scans/patient_{k}/scan_{k}.dcm", "0", "146.2", "5.5", "15.8",
                            f"warning (spacing_unknown; reason_{k})", "dssau-net-s-heldout", "120")
        return results

    turned = Console(width=100, record=True, force_terminal=False)
    print_table(table(), turned)
    side_by_side = turned.export_text()
    assert "(1 of 3)" not in side_by_side and any(line.count("146.2") == 3 for line in side_by_side.splitlines())
    cards = Console(width=100, record=True, force_terminal=False)
    print_table(table(), cards, turn=False)
    text = cards.export_text()
    assert "ipp-seg predict (3 of 3)" in text
    assert all(text.count(f"reason_{k}") == 1 for k in range(3))
    assert not any(line.count("146.2") > 1 for line in text.splitlines())
    dumb = Console(width=120, record=True, force_terminal=True, _environ={"TERM": "dumb"})
    print_table(table(), dumb)
    plain = dumb.export_text()
    assert "+---" in plain and not set(plain) & set("│┃━┏┌")


def test_predict_failed_measurement_exits_1(tmp_path):
    # A regular pattern of four grey values: the shipped model finds no fetal head in it.
    pattern = tmp_path / "pattern.png"
    import cv2

    cv2.imwrite(str(pattern), (np.indices((256, 256)).sum(0) % 4 * 40).astype(np.uint8))
    result = invoke("predict", pattern, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)[0]
    assert report["status"] == "failed" and report["aop_deg"] is None and "fh_missing" in report["reasons"]


def test_a_frame_the_network_does_not_know_is_flagged_low_confidence(tmp_path, sample_png):
    import cv2

    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), cv2.GaussianBlur(rng.integers(0, 256, (256, 256)).astype(np.uint8), (0, 0), 4))
    result = invoke("predict", sample_png, noise, "--json")
    real, odd = json.loads(result.stdout)
    assert real["head_confidence"] >= 0.90 and "low_confidence" not in real["reasons"]
    assert odd["head_confidence"] < 0.90 and "low_confidence" in odd["reasons"] and odd["status"] != "ok"


def test_a_reports_screen_capture_is_no_transperineal_view(tmp_path, sample_dicom):
    # White text on black, as a report screen captured from a workstation: the network drew part of the text as an
    # unsure head and no PS, and the frame had been failed as ps_missing only, a PS cut off by the frame.
    import cv2

    report = np.zeros((480, 640), np.uint8)
    for i, line in enumerate(["PATIENT: TEST  ID 0000", "INTRAPARTUM US REPORT", "AoP 128 deg  HSD 22 mm",
                              "Station +2, OA position", "Signed 2025-01-01"]):
        cv2.putText(report, line, (20, 60 + 70 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    cv2.imwrite(str(tmp_path / "report.png"), report)
    result = invoke("predict", tmp_path / "report.png", "--json")
    (row,) = json.loads(result.stdout)
    assert result.exit_code == 1 and row["status"] == "failed" and row["reasons"][0] == "anatomy_unrecognised", row
    # As a DICOM Secondary Capture with --dicom-seg: no SEG, said as a warning; exit 1 (a failed measurement), not 2
    # (an unusable input or output), which predict had given.
    pytest.importorskip("highdicom")
    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    ds.Rows, ds.Columns = report.shape
    del ds.SequenceOfUltrasoundRegions
    ds.PixelData = report.tobytes()
    ds.save_as(tmp_path / "report.dcm")
    run = invoke("predict", tmp_path / "report.dcm", "--out", tmp_path / "out", "--dicom-seg", "--dicom-sr")
    said = " ".join(run.output.split())
    assert run.exit_code == 1 and "warning:" in said and "no DICOM SEG: the network recognised no" in said, said
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == ["report_sr.dcm"]


def test_a_frame_whose_anatomy_is_small_in_it_is_flagged(tmp_path, sample_png):
    # The sample frame at half size inside a black margin, with a line of screen text: a
    # screen capture around the image. The same frame at its own size is not flagged.
    import cv2

    frame = cv2.imread(str(sample_png), cv2.IMREAD_GRAYSCALE)
    capture = np.zeros((512, 512), np.uint8)
    capture[128:384, 128:384] = frame
    cv2.putText(capture, "MI 0.9  TIs 0.3  12 cm", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    cv2.imwrite(str(tmp_path / "capture.png"), capture)
    result = invoke("predict", sample_png, tmp_path / "capture.png", "--json")
    full, small = json.loads(result.stdout)
    assert "head_small_in_frame" not in full["reasons"]
    assert "head_small_in_frame" in small["reasons"] and small["status"] == "warning"


def test_head_extent_is_the_heads_disc_diameter_over_the_input_side():
    from ipp_seg.inference.pipeline import head_extent

    logits = np.zeros((3, 100, 100), np.float32)
    yy, xx = np.mgrid[:100, :100]
    logits[2][(yy - 50) ** 2 + (xx - 50) ** 2 <= 20 ** 2] = 5.0  # a head of radius 20 px
    assert head_extent(logits) == pytest.approx(0.40, abs=0.01)
    assert head_extent(np.zeros((3, 8, 8), np.float32)) == 0.0  # class 0 wins ties: no head


def _mirrored_samples(tmp_path, sample_png):
    """Four PSFHS frames as a machine that displays them mirrored (left-right) would show them."""
    import cv2

    paths = []
    for k, name in enumerate(("psfhs_04700.png", "psfhs_04750.png", "psfhs_04380.png", "psfhs_04700.png")):
        path = tmp_path / f"mirrored_{k}.png"
        cv2.imwrite(str(path), cv2.imread(str(sample_png.with_name(name)), cv2.IMREAD_UNCHANGED)[:, ::-1])
        paths.append(path)
    return paths


def test_predict_says_when_the_network_is_unsure_of_the_symphysis_in_most_frames(tmp_path, sample_png):
    import cv2

    turned = [tmp_path / f"turned_{p.name}" for p in _mirrored_samples(tmp_path, sample_png)]
    for path, mirrored in zip(turned, _mirrored_samples(tmp_path, sample_png)):
        cv2.imwrite(str(path), cv2.imread(str(mirrored), cv2.IMREAD_UNCHANGED)[::-1])  # mirrored + flipped = turned
    result = invoke("predict", *turned, "--json")
    assert "the network is unsure of the pubic symphysis, finds none, or finds it where" in result.stderr
    assert "unsure of the pubic symphysis" not in invoke("predict", *_mirrored_samples(tmp_path, sample_png),
                                                         "--json").stderr


def test_predict_says_when_frames_look_displayed_the_other_way_round(tmp_path, sample_png):
    scans = _mirrored_samples(tmp_path, sample_png)
    wrong = invoke("predict", *scans, "--json")
    assert wrong.exit_code == 0, wrong.output
    assert all("orientation_doubtful" in r["reasons"] and r["aop_deg"] is not None for r in json.loads(wrong.stdout))
    assert "4 of 4 measured frames look displayed the other way round" in wrong.stderr
    assert "measure again with --orientation mirrored" in wrong.stderr
    right = invoke("predict", *scans, "--json", "--orientation", "mirrored")
    assert right.exit_code == 0, right.output
    assert not any("orientation_doubtful" in r["reasons"] for r in json.loads(right.stdout))
    assert "other way round" not in right.stderr
    # A frame or two flagged among many is the 1 % of standard frames that lean the other way: no advice.
    few = invoke("predict", sample_png, sample_png.with_name("psfhs_04750.png"), sample_png.with_name("psfhs_04380.png"),
                 sample_png, scans[0])
    assert "orientation_doubtful" in few.stdout and "other way round" not in few.stderr
    # The flagged frame's angle reads "(doubtful)" in the table, as on its overlay; the others' do not.
    assert [line for line in few.stdout.splitlines() if "(doubtful)" in line] == \
        [line for line in few.stdout.splitlines() if "orientation_doubtful" in line and "mirrored_0" in line]


@pytest.mark.parametrize("pixels, words", [
    (np.zeros((256, 256), np.uint8), "every pixel holds 0: a blank image"),
    (np.indices((256, 256)).sum(0).astype(np.uint8) % 3, "only the grey values 0, 1, 2: a label mask"),
    (np.arange(300, dtype=np.uint8).reshape(300, 1), "1 x 300 pixels, too small"),
    # Padded to a square for the network, a 40000 x 32 image had taken 19 GB (an inference review).
    (np.tile(np.arange(256, dtype=np.uint8), (40, 28)), "padded to a square of 7168 x 7168, beyond the 40 million"),
    # (A wide capture whose image is small inside its bands is measured: a QA pass, 0.2.21 had measured it.)
])
def test_predict_refuses_frames_that_are_not_ultrasound(tmp_path, pixels, words):
    import cv2

    path = tmp_path / "not_a_scan.png"
    cv2.imwrite(str(path), pixels)
    result = invoke("predict", path, "--json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)[0]
    assert report["status"] == "failed" and report["reasons"] == ["not_ultrasound_frame"]
    assert words in report["error"] and report["aop_deg"] is None
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--method", "guess"], ["--orientation", "up"], ["--frames", "x-y"],
                                  ["--spacing-mm", "-1"], ["--spacing-mm", "1000"], ["--spacing-mm", "0.3,nan"],
                                  ["--model", "no-such-model"], ["--backend", "tf"]])
def test_predict_bad_options_exit_2(sample_png, args):
    result = invoke("predict", sample_png, *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.parametrize("given", ["0,35", "1,5"])
def test_a_spacing_written_with_a_decimal_comma_is_refused_with_the_way_to_write_it(sample_png, given):
    # "0,35" reads as X = 0 and Y = 35 mm; the refusal now says why, instead of only that it is wrong.
    result = invoke("predict", sample_png, "--spacing-mm", given)
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and f"for {given.replace(',', '.')} mm write a point" in said, said


def test_a_spacing_given_in_cm_is_met_with_advice_about_the_value_given_not_the_file(sample_png, sample_dicom,
                                                                                     tmp_path):
    # A clinician's pass: --spacing-mm 0.035 (cm) was answered "The file's calibration looks wrong".
    result = invoke("predict", sample_png, "--spacing-mm", "0.035")
    said = " ".join(result.output.split())
    assert "spacing_implausible" in said and "The --spacing-mm given makes the image implausibly large or small" \
        in said and "The file's calibration looks wrong" not in said, said
    # A file's own implausible calibration (0.35 cm a pixel): --spacing-mm does not replace it, and the advice no
    # longer offers it (a QA pass).
    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    for region in ds.SequenceOfUltrasoundRegions:
        region.PhysicalDeltaX = region.PhysicalDeltaY = 0.35
    ds.save_as(tmp_path / "cm.dcm")
    said = " ".join(invoke("predict", tmp_path / "cm.dcm", "--spacing-mm", "0.35").output.split())
    assert "spacing_implausible: The file's calibration looks wrong (distances in pixels only): check how the " \
        "scanner exported it; --spacing-mm does not replace a file's own calibration." in said, said


def test_predict_mirrored_orientation_is_recorded(sample_png):
    result = invoke("predict", sample_png, "--json", "--orientation", "mirrored", "--method", "contour")
    assert result.exit_code in (0, 1)
    report = json.loads(result.stdout)[0]
    assert report["orientation"] == "mirrored" and report["method"] == "contour"


def test_evaluate_says_when_the_predictions_were_measured_with_the_other_orientation(sample_png, tmp_path, caplog):
    # A README audit: predictions made with --orientation mirrored and evaluated with the default read their AoPs
    # from the other end of the PS (82 deg where the run had measured 135) without a word.
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    assert invoke("predict", sample_png, "--out", pred, "--orientation", "mirrored").exit_code in (0, 1)
    gt.mkdir()
    shutil.copy(pred / "psfhs_04700_mask.png", gt / "psfhs_04700.png")
    caplog.clear()
    other = invoke("evaluate", pred, gt)
    assert other.exit_code == 0, other.output
    assert "measured with --orientation mirrored, and are evaluated here with standard" in caplog.text
    assert "give --orientation mirrored" in caplog.text
    caplog.clear()
    same = invoke("evaluate", pred, gt, "--orientation", "mirrored")
    assert same.exit_code == 0 and "evaluated here with" not in caplog.text


def test_measure_masks_with_custom_labels(psfhs_dir, tmp_path):
    import cv2

    labels = read_frame(psfhs_dir / "label_mha" / "04700.mha").pixels.astype(np.uint8)
    relabelled = np.select([labels == 1, labels == 2], [7, 8], 0).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), relabelled)
    out_csv = tmp_path / "m.csv"
    result = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--spacing-mm", "0.2",
                    "--json", "--csv", out_csv, "--method", "challenge")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    reference_rows = csv.DictReader((psfhs_dir / "aop_reference.csv").read_text().splitlines())
    reference = {r["case"]: float(r["aop_deg"]) for r in reference_rows}
    assert float(row["aop_deg"]) == pytest.approx(reference["04700"], abs=0.01)
    assert row["spacing_mm"] == [0.2, 0.2] and row["landmarks"]["ps_inferior_x"] is not None
    assert row["spacing_source"] == "given"  # a PNG mask has no spacing of its own
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert len(rows) == 1 and rows[0]["status"] in ("ok", "warning") and float(rows[0]["spacing_x_mm"]) == 0.2
    # The batch columns, filled where measure knows the value: the spacing it was given, the file's stamp.
    assert list(rows[0]) == list(CSV_COLUMNS) and rows[0]["spacing_given_mm"] == "0.2,0.2"
    assert rows[0]["file_bytes"] == str((tmp_path / "m.png").stat().st_size) and rows[0]["file_modified"]
    assert rows[0]["file_sha256"] == hashlib.sha256((tmp_path / "m.png").read_bytes()).hexdigest()
    assert rows[0]["measured_at"].endswith("Z")

    # The same mask measured as if its values were ipp-seg's 1 and 2: refused, naming the values,
    # rather than reported as a mask without PS and FH.
    result = invoke("measure", tmp_path / "m.png", "--json")
    assert result.exit_code == 2 and "label values 7, 8" in result.output and "--labels" in result.output
    (report,) = json.loads(result.stdout)
    assert report["status"] == "failed" and report["reasons"] == ["mask_refused"] and report["aop_deg"] is None
    refused_csv = tmp_path / "refused.csv"
    assert invoke("measure", tmp_path / "m.png", "--csv", refused_csv).exit_code == 2
    assert list(csv.DictReader(refused_csv.read_text().splitlines()))[0]["reasons"] == "mask_refused"
    # A file that holds rows (here the first run's; as often a batch run's measurements.csv) is
    # not written over without --overwrite: it had been, without a word.
    again = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", refused_csv)
    assert again.exit_code == 2 and "already holds rows" in again.output and "--overwrite" in again.output
    assert list(csv.DictReader(refused_csv.read_text().splitlines()))[0]["reasons"] == "mask_refused"
    again = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", refused_csv, "--overwrite")
    assert again.exit_code == 0 and "mask_refused" not in refused_csv.read_text()
    # A batch run's measurements.csv (its record or lock beside it) is refused even with --overwrite: a data
    # manager's pass had measure's rows of masks replace a running batch's first rows, and the run append to them.
    run = tmp_path / "run"
    run.mkdir()
    (run / "measurements.csv").write_text("")
    for beside in (".ipp-seg-batch.lock", ".ipp-seg-run.json"):
        (run / beside).write_text("")
        refused = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", run / "measurements.csv",
                         "--overwrite")
        assert refused.exit_code == 2 and "is the measurements.csv of a batch run" in " ".join(refused.output.split())
        assert (run / "measurements.csv").read_text() == ""
        (run / beside).unlink()
    # ...also through a link to it, or a hard link (written over in place, both names change): a QA pass.
    (run / ".ipp-seg-run.json").write_text("")
    (tmp_path / "link.csv").symlink_to(run / "measurements.csv")
    os.link(run / "measurements.csv", tmp_path / "hard.csv")
    for name, words in (("link.csv", "is the measurements.csv of a batch run"), ("hard.csv", "has other names")):
        refused = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", tmp_path / name,
                         "--overwrite")
        assert refused.exit_code == 2 and words in " ".join(refused.output.split()), refused.output
        assert (run / "measurements.csv").read_text() == ""
    (run / ".ipp-seg-run.json").unlink()
    (tmp_path / "hard.csv").unlink()
    assert invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", run / "measurements.csv",
                  "--overwrite").exit_code == 0  # a file of that name alone is the user's
    # A header, a blank line, then rows (as a Windows editor may save it) still holds rows.
    refused_csv.write_text(refused_csv.read_text().replace("\r\n", "\n", 1).replace("\n", "\n\n", 1))
    assert invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", refused_csv).exit_code == 2
    # A file of one line that is no CSV of ipp-seg's (a note, a one-line JSON), or an image, is not written over
    # either (a one-line file had been, without a word); ipp-seg's header alone is.
    header_only = tmp_path / "header.csv"
    header_only.write_text(refused_csv.read_text().splitlines()[0] + "\n")
    for name, content in (("notes.txt", b"my notes\n"), ("one.json", b'{"a": 1}'), ("mask.png", (tmp_path / "m.png")
                                                                                    .read_bytes())):
        (tmp_path / name).write_bytes(content)
        said = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", tmp_path / name)
        assert said.exit_code == 2 and "holds something other than ipp-seg's measurements" in " ".join(
            said.output.split()) and (tmp_path / name).read_bytes() == content, said.output
    assert invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", header_only).exit_code == 0
    assert len(list(csv.DictReader(header_only.read_text().splitlines()))) == 1
    # A pipe is no file that holds rows: it is written, not read (reading it had blocked for ever).
    # The CSV is then all that stdout carries: the table had followed it into the pipe, and, with
    # stdout a file, been written over it.
    command = [sys.executable, "-m", "ipp_seg", "measure", str(tmp_path / "m.png"), "--labels", "ps=7,fh=8",
               "--csv", "/dev/stdout"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    (row,) = csv.DictReader(run.stdout.splitlines())
    assert float(row["aop_deg"]) > 0 and row["file"] == str(tmp_path / "m.png")
    with open(tmp_path / "stdout.csv", "w") as redirected:
        assert subprocess.run(command, stdout=redirected, timeout=120).returncode == 0
    (row_in_file,) = csv.DictReader((tmp_path / "stdout.csv").read_text().splitlines())
    row_in_file.pop("measured_at"), row.pop("measured_at")  # (two runs: the second of each may differ)
    assert row_in_file == row
    both = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "--json and --csv /dev/stdout would both write to stdout" in both.stderr
    # `--csv -`, as Unix tools take it (a pipeline engineer's pass: it had written a file named "-").
    dashed = invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", "-")
    assert dashed.exit_code == 0 and not os.path.exists("-") and not (tmp_path / "-").exists()
    (row_dashed,) = csv.DictReader(dashed.stdout.splitlines())
    row_dashed.pop("measured_at")
    assert row_dashed == row and dashed.stdout.startswith("file,frame,status")  # the CSV alone: no table
    assert invoke("measure", tmp_path / "m.png", "--labels", "ps=7,fh=8", "--csv", "-", "--json").exit_code == 2
    # Its bytes are a --csv file's, whatever stdout's encoding (a review: through the text layer, a cp1252
    # console had written a non-ASCII name in cp1252 and escapes, not UTF-8).
    named = tmp_path / "Müller_患者.png"
    named.write_bytes((tmp_path / "m.png").read_bytes())
    in_cp1252 = subprocess.run([sys.executable, "-m", "ipp_seg", "measure", str(named), "--labels", "ps=7,fh=8",
                                "--csv", "-"], capture_output=True, timeout=120,
                               env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert in_cp1252.returncode == 0
    write_measurements_csv(tmp_path / "as_file.csv", [])  # (header alone: the bytes a file starts with)
    assert in_cp1252.stdout.startswith((tmp_path / "as_file.csv").read_bytes())
    assert str(named).encode("utf-8") + b"," in in_cp1252.stdout and b"\r\n" in in_cp1252.stdout


def test_json_names_a_file_as_the_csv_does(sample_png, tmp_path):
    # A Latin-1 name's bytes had been lone surrogates in the JSON ("M\\udcfcller.png", which jq
    # shows as M\ufffdller.png for every such name, and strict readers refuse), and a backslash
    # was not doubled as in the CSV, so the two could not be joined on the file.
    latin1 = os.path.join(os.fsencode(tmp_path), b"M\xfcller.png")
    with open(latin1, "wb") as fh:
        fh.write(sample_png.read_bytes())
    backslash = tmp_path / "back\\slash.png"
    backslash.write_bytes(sample_png.read_bytes())
    scans = [os.fsdecode(latin1), str(backslash)]
    result = invoke("predict", *scans, "--json", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    files = [report["file"] for report in json.loads(result.stdout)]
    assert files == [f"{tmp_path}/M\\xfcller.png", f"{tmp_path}/back\\\\slash.png"]
    assert all(f.encode("utf-8") for f in files)  # no lone surrogate
    assert json.loads((tmp_path / "out" / "back\\slash.json").read_text())["file"] == files[1]
    measured = invoke("measure", tmp_path / "out" / "back\\slash_mask.png", "--json", "--csv", tmp_path / "m.csv")
    (row,) = csv.DictReader((tmp_path / "m.csv").read_text().splitlines())
    assert json.loads(measured.stdout)[0]["file"] == row["file"] == f"{tmp_path}/out/back\\\\slash_mask.png"


def test_masks_and_overlays_name_the_model_and_options_that_drew_them(sample_png, tmp_path):
    # A validation engineer's pass: a mask copied out of its folder had kept only "ipp-seg 0.2.11".
    from PIL import Image

    from ipp_seg.inference.registry import model_sha256, resolve_model

    digest = model_sha256(resolve_model("dssau-net-s"), "onnx")
    assert invoke("predict", sample_png, "--out", tmp_path / "p", "--orientation", "mirrored", "--tta",
                  "--method", "contour").exit_code == 0
    assert invoke("batch", sample_png.parent, "--glob", sample_png.name, "--out", tmp_path / "b", "--save-masks",
                  "--overlays", "--workers", "1", "--method", "challenge").exit_code == 0
    written = [tmp_path / "p" / f"{sample_png.stem}_mask.png", tmp_path / "p" / f"{sample_png.stem}_overlay.png",
               tmp_path / "b" / "masks" / f"{sample_png.stem}.png",
               tmp_path / "b" / "overlays" / f"{sample_png.stem}.png"]
    said = [Image.open(path).text for path in written]
    for text, options in zip(said, [("mirrored", "mirror-average")] * 2 + [("standard", "none")] * 2):
        assert text["ipp-seg model"] == "dssau-net-s" and text["ipp-seg model sha256"] == digest
        assert (text["ipp-seg orientation"], text["ipp-seg tta"]) == options
    assert [text["ipp-seg output"] for text in said] == ["label mask", "overlay"] * 2
    # The overlay shows the measurement, so it names the method too (a mask does not depend on it).
    assert [text.get("ipp-seg method") for text in said] == [None, "contour", None, "challenge"]
    # And the scan each was drawn on, by its bytes (a coordinator's pass: a mask copied out said nothing of it).
    scan_sha256 = hashlib.sha256(sample_png.read_bytes()).hexdigest()
    assert [(text["ipp-seg source sha256"], text["ipp-seg source frame"]) for text in said] == [(scan_sha256, "0")] * 4
    # A model file named outside Latin-1 (which a tEXt chunk holds) is named as it is, in UTF-8 (iTXt).
    own = tmp_path / "模型-胎头.onnx"
    shutil.copy(resolve_model("dssau-net-s-heldout").onnx_path, own)
    assert invoke("predict", sample_png, "--out", tmp_path / "own", "--model", own).exit_code == 0
    text = Image.open(tmp_path / "own" / f"{sample_png.stem}_mask.png").text
    assert text["ipp-seg model"] == "模型-胎头" and text["ipp-seg output"] == "label mask"


def test_json_reports_share_one_schema(sample_png, tmp_path):
    # predict and measure, measured or not: the same keys and null (never "") for no value; "error"
    # in every report (it had been in failed ones only: x["error"] raised on a measured frame).
    import cv2

    predicted = json.loads(invoke("predict", sample_png, tmp_path / "missing.png", "--json", "--out",
                                  tmp_path / "out").stdout)
    mask = tmp_path / "out" / f"{sample_png.stem}_mask.png"
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((64, 64), np.uint8))
    measured = json.loads(invoke("measure", mask, tmp_path / "blank.png", tmp_path / "missing.png", "--json").stdout)
    measurement_keys = set(measured[0])
    assert set(measured[1]) == set(measured[2]) == measurement_keys and "error" in measurement_keys
    assert set(predicted[0]) > measurement_keys and set(predicted[1]) == set(predicted[0])
    assert measured[0]["error"] is None and predicted[0]["error"] is None and predicted[1]["error"]
    assert measured[1]["aop_deg"] is None and measured[1]["reasons"][:2] == ["ps_missing", "fh_missing"]
    # The mask's bytes, as its CSV row names them (a QA auditor: measure's JSON had named none); null where unread.
    assert measured[0]["file_sha256"] == hashlib.sha256(mask.read_bytes()).hexdigest()
    assert measured[0]["file_bytes"] == mask.stat().st_size and measured[0]["measured_at"].endswith("Z")
    assert measured[2]["file_sha256"] is None and measured[2]["file_bytes"] is None
    assert predicted[1]["frame"] is None and predicted[1]["aop_deg"] is None and predicted[1]["model"]
    assert predicted[0]["tta"] is False and predicted[1]["tta"] is False
    # dicom_results too, though no SEG or SR was asked (it had been there only when one was).
    assert "dicom_results" in predicted[0] and predicted[0]["dicom_results"] is predicted[1]["dicom_results"] is None
    assert measured[0]["aop_deg"] == pytest.approx(predicted[0]["aop_deg"], abs=1e-6)
    # The "(doubtful)" of the tables, as a key: false or true beside an angle, null without one.
    assert "aop_doubtful" in measurement_keys
    assert predicted[0]["aop_doubtful"] is angle_in_doubt(predicted[0]["reasons"])
    assert measured[1]["aop_doubtful"] is None and predicted[1]["aop_doubtful"] is None
    assert predicted[0]["hsd_doubtful"] is distance_in_doubt(predicted[0]["reasons"])
    assert measured[1]["hsd_doubtful"] is None and predicted[1]["hsd_doubtful"] is None
    # The landmarks too, key by key: a file that could not be read had given null for the whole
    # object, so report["landmarks"]["ps_inferior_x"] raised on it alone.
    landmarks = [report["landmarks"] for report in (*predicted, *measured)]
    assert all(set(each) == set(landmarks[0]) for each in landmarks) and "ps_inferior_x" in landmarks[0]
    assert all(value is None for report in (predicted[1], measured[2]) for value in report["landmarks"].values())
    assert isinstance(predicted[0]["landmarks"]["ps_inferior_x"], float)


def test_measure_says_when_masks_look_displayed_the_other_way_round(tmp_path):
    import cv2

    # Four masks of a standard display (the PS rising towards its right-hand, inferior end, the
    # head below and to its right), stored mirrored.
    paths = []
    for k, lift in enumerate((0, 6, 12, 18)):
        mask = np.zeros((256, 256), np.uint8)
        cv2.ellipse(mask, (150, 170), (70, 60), 70, 0, 360, 2, -1)
        cv2.ellipse(mask, (90, 55 - lift // 3), (35, 11), -15 - lift, 0, 360, 1, -1)
        paths.append(tmp_path / f"m{k}.png")
        cv2.imwrite(str(paths[-1]), np.ascontiguousarray(mask[:, ::-1]))
    wrong = invoke("measure", *paths)
    assert wrong.exit_code == 0 and wrong.stdout.count("orientation_doubtful") == 4
    assert "4 of 4 measured frames look displayed the other way round" in wrong.stderr
    right = invoke("measure", *paths, "--orientation", "mirrored")
    assert right.exit_code == 0 and "orientation_doubtful" not in right.stdout and "other way round" not in right.stderr

    # The same masks upside down (flipped top to bottom): by every method, told to check the
    # display, not to measure again mirrored (an acceptance run got that advice by `challenge`).
    flipped = []
    for path in paths:
        flipped.append(tmp_path / f"flipped_{path.name}")
        cv2.imwrite(str(flipped[-1]), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[::-1])
    for method in ("ellipse", "challenge"):
        upside_down = invoke("measure", *flipped, "--method", method, "--json")
        said = " ".join(upside_down.stderr.split())
        assert all(r["status"] == "failed" for r in json.loads(upside_down.stdout)), upside_down.stdout
        assert "masks the pubic symphysis lies below the head's centre" in said and "probe at the top" in said
        assert "--orientation mirrored" not in said


@pytest.mark.parametrize("labels", ["ps7", "ps=1,fh=2,bg=0", "ps=1,fh=1", "ps=0,fh=2"])
def test_measure_wrong_labels_option_exits_2(tmp_path, labels):
    result = invoke("measure", tmp_path / "x.png", "--labels", labels)
    assert result.exit_code == 2 and "--labels" in result.output and "Traceback" not in result.output


def _two_evaluable_cases(tmp_path, psfhs_dir):
    import cv2

    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    for case in ("04700", "04750"):
        gt = read_frame(psfhs_dir / "label_mha" / f"{case}.mha").pixels.astype(np.uint8)
        cv2.imwrite(str(tmp_path / "gt" / f"{case}.png"), gt)
        cv2.imwrite(str(tmp_path / "pred" / f"{case}.png"), gt)
    return tmp_path / "pred", tmp_path / "gt"


def test_evaluate_says_which_model_made_the_predictions_and_warns_of_a_mix(tmp_path, psfhs_dir, sample_png):
    # Two models' outputs evaluated side by side had been told apart by their folder names alone.
    pred, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    assert invoke("evaluate", pred, gt, "--out", tmp_path / "plain").exit_code == 0  # masks of another tool
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["prediction_models"] == []
    assert invoke("predict", sample_png, "--out", tmp_path / "p").exit_code == 0
    report = json.loads(next((tmp_path / "p").glob("*.json")).read_text())
    (pred / "04700.json").write_text(json.dumps(report))  # predict --out's report beside its mask
    result = invoke("evaluate", pred, gt, "--out", tmp_path / "ev")
    assert result.exit_code == 0 and f"predictions made by dssau-net-s (sha256 {report['model_sha256'][:12]})" in \
        " ".join(result.output.split())
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["prediction_models"] == [{"model": "dssau-net-s", "model_sha256": report["model_sha256"]}]
    assert summary["prediction_versions"] == [report["ipp_seg_version"]]
    # ...and with which settings: a card's figures differ with --tta, and the summary had not said which these were.
    assert summary["prediction_settings"] == [{"tta": False, "method": "ellipse", "orientation": "standard",
                                               "spacing_given_mm": None}]
    assert "with --tta off" in " ".join(result.output.split())
    (pred / "04750.json").write_text(json.dumps({**report, "file": "04750.png", "tta": True}))
    mixed = " ".join(invoke("evaluate", pred, gt, "--out", tmp_path / "mixed").output.split())
    assert "the predictions were made with 2 settings (tta false, method ellipse" in mixed and "tta true" in mixed
    assert "versions of ipp-seg" not in mixed
    # Two versions' predictions are said on the terminal too (an upgrade's pass: summary.json alone listed them).
    (pred / "04750.json").write_text(json.dumps({**report, "file": "04750.png", "ipp_seg_version": "0.2.9"}))
    mixed = " ".join(invoke("evaluate", pred, gt).output.split())
    assert f"the predictions folder records 2 versions of ipp-seg ({report['ipp_seg_version']}, 0.2.9)" in mixed
    (pred / "04750.json").unlink()
    # An earlier evaluation's summary.json left among the predictions is no frame's report: its version is not theirs.
    (pred / "summary.json").write_text(json.dumps({**summary, "ipp_seg_version": "9.9.9"}))
    assert invoke("evaluate", pred, gt, "--out", tmp_path / "ev2").exit_code == 0
    assert json.loads((tmp_path / "ev2" / "summary.json").read_text())["prediction_versions"] == [
        report["ipp_seg_version"]]
    (pred / "summary.json").unlink()
    (pred / "04750.json").write_text(json.dumps({**report, "model": "star-dssau-net-s", "model_sha256": "ab" * 32}))
    mixed = " ".join(invoke("evaluate", pred, gt).output.split())
    assert "warning: the predictions folder records 2 models: dssau-net-s" in mixed and "may mix" in mixed


def test_evaluate_scores_the_frames_a_batch_failed_on(tmp_path, psfhs_dir, sample_png):
    import shutil

    import cv2

    _, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "04700.png")
    cv2.imwrite(str(scans / "04750.png"), np.zeros((400, 400), np.uint8))  # blank: no ultrasound frame
    assert invoke("batch", scans, "--out", tmp_path / "run", "--save-masks").exit_code == 0
    result = invoke("evaluate", tmp_path / "run", gt, "--out", tmp_path / "ev")
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    assert "1 ground truths whose frame the predicting run failed on" in said and "04750" in said
    assert "without prediction" not in said
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["blocks"]["overall"]["n_failed_pred_gt_ok"] == 1
    assert summary["failed_predictions"][0]["case_id"] == "04750"
    assert summary["ipp_seg_version"] == software_version()  # whose conventions the figures follow
    assert summary["prediction_versions"] == [software_version()]  # ...and which ipp-seg made the predictions
    assert [p["tta"] for p in summary["prediction_settings"]] == [False]  # ...and how (the run's rows)
    # The run's masks folder given itself scores the same (it had left the failed frame out), and
    # names the model as the run's folder does.
    from_masks = invoke("evaluate", tmp_path / "run" / "masks", gt, "--out", tmp_path / "ev_masks")
    assert from_masks.exit_code == 0, from_masks.output
    assert json.loads((tmp_path / "ev_masks" / "summary.json").read_text())["failed_predictions"] == \
        summary["failed_predictions"]
    assert "predictions made by dssau-net-s" in " ".join(from_masks.output.split())
    # Resumed asking for a frame the stills lack: their rows stand (no no_such_frame row is added beside them, 0.2.6
    # on; before, such rows were to be no failure of the frames they have), and the scoring is the same.
    assert invoke("batch", scans, "--out", tmp_path / "run", "--save-masks", "--resume", "--frames", "1").exit_code == 0
    again = invoke("evaluate", tmp_path / "run", gt, "--out", tmp_path / "ev_again")
    again_summary = json.loads((tmp_path / "ev_again" / "summary.json").read_text())
    assert again.exit_code == 0 and again_summary["failed_predictions"] == summary["failed_predictions"]
    # Every ground truth's frame failed: scored so (it had been "no label masks found"), whether or not the
    # run kept any mask at all.
    only_failed = tmp_path / "gt_failed"
    only_failed.mkdir()
    shutil.copy(gt / "04750.png", only_failed / "04750.png")
    for run in ("run", "run_blank"):
        if run == "run_blank":
            (scans / "04700.png").unlink()
            assert invoke("batch", scans, "--out", tmp_path / run, "--save-masks").exit_code == 1  # nothing measured
        result = invoke("evaluate", tmp_path / run, only_failed, "--out", tmp_path / f"ev_{run}")
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / f"ev_{run}" / "summary.json").read_text())
        assert summary["n_cases"] == 1 and summary["blocks"]["overall"]["metrics"]["dice_all"]["mean"] == 0.0
    assert summary["failed_predictions"][0]["reason"].startswith("not_ultrasound_frame")


def test_evaluate_measures_with_the_spacing_the_batch_run_measured_with(tmp_path, psfhs_dir, sample_png):
    # A statistician's batch run over PNG frames with --spacing-mm 0.2: evaluate had called the same predictions
    # spacing_unknown, without HSD in mm, where the run's rows were ok with HSD in mm; and it had no --spacing-mm.
    import csv
    import shutil

    _, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "04700.png")
    assert invoke("batch", scans, "--out", tmp_path / "run", "--save-masks", "--spacing-mm", "0.2").exit_code == 0
    (row,) = csv.DictReader((tmp_path / "run" / "measurements.csv").open(encoding="utf-8"))
    assert "spacing_unknown" not in row["reasons"] and row["hsd_mm"]

    def case(*options):
        out = tmp_path / f"ev{len(options)}"
        result = invoke("evaluate", tmp_path / "run", gt, "--out", out, *options)
        assert result.exit_code == 0, result.output
        return next(c for c in csv.DictReader((out / "cases.csv").open(encoding="utf-8")) if c["case_id"] == "04700")

    evaluated = case()
    assert (evaluated["status_pred"], evaluated["reasons_pred"]) == (row["status"], row["reasons"])
    assert (evaluated["spacing_x_mm"], evaluated["spacing_y_mm"]) == ("0.2", "0.2")
    assert float(evaluated["hsd_pred_mm"]) == pytest.approx(float(row["hsd_mm"]), abs=1e-3) and evaluated["hsd_gt_mm"]
    given = case("--spacing-mm", "0.25")  # said for this evaluation: it wins over the run's
    assert given["spacing_x_mm"] == "0.25" and float(given["hsd_pred_mm"]) == pytest.approx(
        float(row["hsd_px"]) * 0.25, abs=1e-3)
    assert invoke("evaluate", tmp_path / "run", gt, "--spacing-mm", "0").exit_code == 2


def test_evaluate_warns_that_a_model_is_scored_on_frames_it_was_trained_on(tmp_path, psfhs_dir, sample_png, caplog):
    # The default model, trained on every PSFHS frame, evaluated on the validation blocks without a word: a study
    # would have published its fit as a validation. Its held-out twin, which did not train on them, is not warned of.
    import shutil

    _, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "04700.png")
    for model in ("dssau-net-s", "dssau-net-s-heldout"):
        assert invoke("batch", scans, "--out", tmp_path / model, "--save-masks", "--model", model).exit_code == 0
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert invoke("evaluate", tmp_path / model, gt, "--out", tmp_path / f"ev-{model}").exit_code == 0
        said = " ".join(caplog.text.split())
        seen = json.loads((tmp_path / f"ev-{model}" / "summary.json").read_text())["cases_seen_in_training"]
        if model == "dssau-net-s":
            assert ("1 of the 1 cases evaluated has the IDs of frames dssau-net-s was trained on (such as 04700; its "
                    "training frames 03744-04801") in said
            assert "not a validation; dssau-net-s-heldout, the same recipe without them" in said
            assert seen == [{"model": "dssau-net-s", "n_cases": 1, "case_ids": ["04700"]}]
        else:
            assert "trained on" not in said and seen == []


def test_evaluate_reads_who_drew_a_mask_copied_out_of_its_run_from_the_mask_itself(tmp_path, psfhs_dir, sample_png,
                                                                                     caplog):
    # A known gap: masks copied out of their run, without its CSV or reports, were no model's (cases.csv's model_pred
    # empty, no word of frames the model trained on), though each mask's PNG text names the model that drew it.
    import csv
    import shutil

    _, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "04700.png")
    assert invoke("batch", scans, "--out", tmp_path / "run", "--save-masks", "--orientation", "mirrored").exit_code == 0
    shutil.copytree(tmp_path / "run" / "masks", tmp_path / "copied")
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = invoke("evaluate", tmp_path / "copied", gt, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    said = " ".join(caplog.text.split())
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["cases_seen_in_training"] == [{"model": "dssau-net-s", "n_cases": 1, "case_ids": ["04700"]}]
    assert "has the IDs of frames dssau-net-s was trained on" in said
    # Measured with the other end of the PS as inferior: said, as for a run's rows.
    assert "were measured with --orientation mirrored, and are evaluated here with standard" in said
    with open(tmp_path / "ev" / "cases.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["case_id"] == "04700")
    assert row["model_pred"] == "dssau-net-s" and len(row["model_sha256_pred"]) == 64
    assert [m["model"] for m in summary["prediction_models"]] == ["dssau-net-s"]
    assert summary["prediction_versions"] == [software_version()]  # (the mask's Software text)
    # The same name with other weights (an earlier release's): what they trained on is unknown, and said so.
    from ipp_seg.evaluate.report import read_label_mask
    from ipp_seg.io.writers import output_provenance, write_label_png

    (mask,) = (tmp_path / "copied").glob("*.png")
    write_label_png(mask, read_label_mask(mask)[0], output_provenance("dssau-net-s", "0" * 64, "standard", False))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert invoke("evaluate", tmp_path / "copied", gt, "--out", tmp_path / "ev2").exit_code == 0
    said = " ".join(caplog.text.split())
    assert "predictions name dssau-net-s with weights that are not its shipped files' (sha256 000000000000...)" in said
    assert "was trained on (such as" not in said
    # An orientation no run writes (a copy edited by hand) is taken as unrecorded, not quoted in a warning.
    write_label_png(mask, read_label_mask(mask)[0], output_provenance("dssau-net-s", None, "sideways", False))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert invoke("evaluate", tmp_path / "copied", gt, "--out", tmp_path / "ev3").exit_code == 0
    assert "sideways" not in caplog.text and "--orientation" not in caplog.text


def test_evaluate_reads_the_training_frames_of_an_exported_model_from_its_onnx_file(tmp_path, sample_png, caplog):
    # An export of one's own has no card: evaluate had said its training frames were unknown. The ONNX file
    # records them (export), and the batch run's record the file it ran.
    pytest.importorskip("torch")
    import shutil

    from ipp_seg.inference.registry import shipped_models_dir
    from ipp_seg.train.loop import read_checkpoint, save_checkpoint

    checkpoint = read_checkpoint(shipped_models_dir() / "dssau-net-s-heldout.pt")
    checkpoint["split"] = {"train": ["04698", "04699", "04700"], "validation": ["04750"]}
    save_checkpoint(tmp_path / "own.pt", checkpoint)
    assert invoke("export", tmp_path / "own.pt", "--onnx", tmp_path / "own.onnx").exit_code == 0
    scans = tmp_path / "scans"
    scans.mkdir()
    for case in ("04700", "04750"):
        shutil.copy(sample_png.with_name(f"psfhs_{case}.png"), scans / f"{case}.png")
    run = tmp_path / "run"
    assert invoke("batch", scans, "--out", run, "--save-masks", "--model", tmp_path / "own.onnx").exit_code == 0
    gt = tmp_path / "gt"  # (its own masks as the truth: what is checked is the warning, not the figures)
    shutil.copytree(run / "masks", gt)
    with caplog.at_level("WARNING"):
        assert invoke("evaluate", run, gt, "--out", tmp_path / "ev").exit_code == 0
    said = " ".join(caplog.text.split())
    # (One of the cases, then its training frames: those alone had read as the cases evaluated, a research fellow.)
    assert (f"1 of the 2 cases evaluated has the IDs of frames own was trained on (such as 04700; its training frames "
            f"04698-04700, as recorded for its file {tmp_path / 'own.onnx'})") in said
    assert "no model card" not in said
    seen = json.loads((tmp_path / "ev" / "summary.json").read_text())["cases_seen_in_training"]
    assert seen == [{"model": "own", "n_cases": 1, "case_ids": ["04700"]}]
    # The file changed since the run (other weights under its name): its metadata no longer speaks for the rows.
    shutil.copy(shipped_models_dir() / "dssau-net-s-heldout.onnx", tmp_path / "own.onnx")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert invoke("evaluate", run, gt, "--out", tmp_path / "ev2").exit_code == 0
    assert "own has no model card in the models folder" in " ".join(caplog.text.split())


def test_predict_and_batch_warn_of_scans_named_as_a_models_training_frames(tmp_path, sample_png, caplog):
    # A clinician's pass: only evaluate said so; a study measuring PSFHS frames with predict or batch and comparing in
    # its own spreadsheet read the default model's fit to frames it trained on as its accuracy.
    import shutil

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "04700.png")  # a validation-block ID: the held-out twin never saw it
    shutil.copy(sample_png, scans / "04000.png")  # a training-block ID: both trained on it
    for model, seen in (("dssau-net-s", "2 of the 2 files have"), ("dssau-net-s-heldout", "1 of the 2 files has")):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert invoke("batch", scans, "--out", tmp_path / model, "--model", model).exit_code == 0
        said = " ".join(caplog.text.split())
        assert f"{seen} the IDs of frames {model} was trained on (such as 04000" in said, said
        assert "not what it does on new examinations" in said
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert invoke("predict", scans / "04700.png", "--model", "dssau-net-s-heldout").exit_code == 0
    assert "trained on" not in caplog.text
    # A name that says it is a PSFHS frame gives its ID (a validation engineer's pass: the shipped sample
    # psfhs_04700_us.dcm, a training frame of the default, and renamed copies were measured without a word).
    for name, warned in (("psfhs_04720.png", True), ("PSFHS-04720_us.png", True), ("scan_04720.png", False),
                         ("psfhs_04720_frame00002.png", True), ("psfhs_20241_04720.png", True)):
        shutil.copy(sample_png, tmp_path / name)
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert invoke("predict", tmp_path / name, "--model", "dssau-net-s").exit_code == 0
        assert ("the scan has the IDs of frames dssau-net-s was trained on (such as 04720)"
                in caplog.text) is warned, name
    with caplog.at_level("WARNING"):
        assert invoke("predict", scans / "04700.png").exit_code == 0
    assert "the scan has the IDs of frames dssau-net-s was trained on (such as 04700)" in caplog.text
    # A model given as a file: by the card beside it (a QA pass: said of the name, not of the file).
    from ipp_seg.inference.registry import shipped_models_dir

    caplog.clear()
    with caplog.at_level("WARNING"):
        file_run = invoke("predict", scans / "04700.png", "--model", shipped_models_dir() / "dssau-net-s.onnx")
    assert file_run.exit_code == 0
    assert "the scan has the IDs of frames dssau-net-s was trained on (such as 04700)" in caplog.text
    # A shipped model's file copied away from its card (its ONNX metadata records no frames): by the listed card of
    # the same sha256; a checkpoint of no card, by the split and lineage it records (both had said nothing).
    from ipp_seg.train.loop import CONTENT_DIGEST, load_torch_file, save_checkpoint

    (tmp_path / "copies").mkdir()
    shutil.copy(shipped_models_dir() / "dssau-net-s.onnx", tmp_path / "copies" / "mine.onnx")
    checkpoint = load_torch_file(shipped_models_dir() / "dssau-net-s-heldout.pt")
    save_checkpoint(tmp_path / "copies" / "theirs.pt", {**{k: v for k, v in checkpoint.items() if k != CONTENT_DIGEST},
                                                        "note": "a copy of one's own"})
    shutil.copy(sample_png, scans / "04500.png")  # (a training frame of the held-out twin too)
    for model, backend in (("mine.onnx", "onnx"), ("theirs.pt", "torch")):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert invoke("predict", scans / "04500.png", "--model", tmp_path / "copies" / model,
                          "--backend", backend).exit_code == 0
        assert f"the scan has the IDs of frames {model.split('.')[0]} was trained on (such as 04500)" \
            in caplog.text, caplog.text


def test_a_newcomers_mistakes_are_answered_with_the_way_on(tmp_path, sample_png, caplog):
    # A first-time user's pass: each of these had been said without what to do.
    import shutil

    assert invoke("batch", tmp_path / "nothing", "--out", tmp_path / "x").exit_code == 2  # (the folder is named)
    typo = " ".join(_ipp_seg_process("evalute", capture_output=True, text=True).stderr.split())
    assert "no such command 'evalute'. Did you mean 'evaluate'? python -m ipp_seg --help lists the commands" in typo
    shutil.copy(sample_png, tmp_path / "IMG0001")  # a PNG saved without its suffix
    nameless = " ".join(invoke("predict", tmp_path / "IMG0001").output.split())
    assert "its content is a PNG image, named without a suffix: rename it .png to read it" in nameless
    (tmp_path / "masks").mkdir()
    folder = " ".join(invoke("measure", tmp_path / "masks").output.split())
    assert f"is a folder, not a mask file: give its masks ({tmp_path / 'masks' / '*.png'})" in folder
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "04700.png")
    assert invoke("batch", scans, "--out", tmp_path / "run", "--save-masks").exit_code == 0
    swapped = " ".join(invoke("evaluate", tmp_path / "run" / "masks", tmp_path / "run").output.split())
    assert f"{tmp_path / 'run'} is the output folder of a batch run, whose masks are predictions: give it first, " \
           "as PRED_DIR" in swapped
    # The run's masks/ folder as GT_DIR had scored the run against itself, Dice 1 and ΔAoP 0 (a README audit).
    itself = invoke("evaluate", tmp_path / "run", tmp_path / "run" / "masks")
    said = " ".join(itself.output.split())
    assert itself.exit_code == 2 and f"{tmp_path / 'run' / 'masks'} is the masks/ folder beside a batch run's " \
        "measurements.csv" in said and "not ground truths; give the folder of the expert's masks" in said, said
    # Copied out of the run, the masks still say whose they are: scored, with a warning.
    shutil.copytree(tmp_path / "run" / "masks", tmp_path / "copied")
    caplog.clear()
    assert invoke("evaluate", tmp_path / "run", tmp_path / "copied").exit_code == 0
    assert "1 of the 1 ground-truth masks was written by ipp-seg, a model's masks and not an expert's" in caplog.text
    # Nor by a link to the run's masks/, nor one folder given as both (QA: both had scored Dice 1 without a word).
    (tmp_path / "linked").symlink_to(tmp_path / "run" / "masks")
    linked = " ".join(invoke("evaluate", tmp_path / "run", tmp_path / "linked").output.split())
    assert f"{tmp_path / 'linked'} leads to {tmp_path / 'run' / 'masks'} is the masks/ folder beside a batch " \
        "run's measurements.csv" in linked, linked
    twice = " ".join(invoke("evaluate", tmp_path / "copied", tmp_path / "copied").output.split())
    assert "lie among the predictions" in twice and "one folder given twice or one inside the other" in twice, twice


def test_evaluate_command(tmp_path, psfhs_dir):
    pred, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    result = invoke("evaluate", pred, gt, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["blocks"]["overall"]["metrics"]["dice_all"]["mean"] == 1.0
    assert summary["blocks"]["overall"]["score"] == pytest.approx(1.0)
    assert len(list(csv.DictReader((tmp_path / "ev" / "cases.csv").read_text().splitlines()))) == 2
    # Against the dataset's published AoP: the exact masks by the ellipse method differ from the
    # challenge procedure's values by a little, and that is reported, not hidden.
    result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev2",
                    "--reference-aop", psfhs_dir / "aop_reference.csv")
    assert result.exit_code == 0, result.output
    assert "vs reference" in result.output
    rows = list(csv.DictReader((tmp_path / "ev2" / "cases.csv").read_text().splitlines()))
    reference_rows = csv.DictReader((psfhs_dir / "aop_reference.csv").read_text().splitlines())
    reference = {r["case"]: float(r["aop_deg"]) for r in reference_rows}
    for row in rows:
        assert float(row["aop_reference"]) == reference[row["case_id"]]
        assert float(row["delta_aop_reference"]) == pytest.approx(abs(float(row["aop_pred"]) - reference[row["case_id"]]))
    # The signed agreement too: exact masks agree with themselves (bias 0), not with the reference.
    assert "Bland" in result.output and "AoP − reference" in result.output
    # PNG masks carry no spacing: every prediction's measurement says so, and the table counts it
    assert "Reasons on the predicted measurements" in result.output and "spacing_unknown" in result.output
    agreement = json.loads((tmp_path / "ev2" / "summary.json").read_text())["blocks"]["overall"]["agreement"]
    assert agreement["aop"]["bias"] == 0.0 and agreement["aop"]["n"] == 2
    assert agreement["aop_reference"]["bias"] == pytest.approx(
        np.mean([float(r["aop_pred"]) - reference[r["case_id"]] for r in rows]))
    (tmp_path / "bad.csv").write_text("x,y\n")
    result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--reference-aop", tmp_path / "bad.csv")
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert f"cannot read the reference AoP file {tmp_path / 'bad.csv'}: it needs a case" in said
    for path, why in ((tmp_path / "none.csv", "no such file"), (tmp_path, "it is a folder; give the CSV file")):
        missing = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--reference-aop", path)
        said = " ".join(missing.output.split())
        assert missing.exit_code == 2 and f"cannot read the reference AoP file {path}: {why}" in said
        assert "Errno" not in said

    # A ground truth without prediction: listed and not scored, or scored as an empty prediction.
    (tmp_path / "pred" / "04750.png").unlink()
    listed = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev3")
    assert "without prediction, not scored" in listed.output and "04750" in listed.output
    assert json.loads((tmp_path / "ev3" / "summary.json").read_text())["blocks"]["overall"]["score"] == 1.0
    scored = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--missing-as-empty", "--out", tmp_path / "ev4")
    assert scored.exit_code == 0, scored.output
    assert "scored as empty predictions" in scored.output
    overall = json.loads((tmp_path / "ev4" / "summary.json").read_text())["blocks"]["overall"]
    assert overall["metrics"]["dice_all"]["mean"] == pytest.approx(0.5) and overall["score"] < 0.8
    # The table says over how many cases its |ΔAoP| is (the empty prediction has none; the score charges it 180°).
    row = next(line for line in scored.stdout.splitlines() if line.strip("│ ").startswith("overall"))
    cells = [cell.strip() for cell in row.strip().strip("│").split("│")]
    assert len(cells) == 12 and (cells[1], cells[9], cells[10]) == ("2", "1", "1")  # (cases, ΔAoP cases, failed)
    assert overall["metrics"]["delta_aop"]["n"] == 1

    # A ground truth that cannot be read, without prediction: not "scored as empty", but named as not evaluated.
    (tmp_path / "gt" / "04999.png").write_bytes(b"not a png")
    unreadable = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--missing-as-empty")
    scored_line = next(line for line in unreadable.output.splitlines() if "scored as empty predictions" in line)
    assert "04999" not in scored_line and "04750" in scored_line
    assert "cannot evaluate 04999" in unreadable.output
    (tmp_path / "gt" / "04999.png").unlink()

    # Two predictions for one case: one line, exit 2, no traceback.
    import shutil

    shutil.copy(tmp_path / "pred" / "04700.png", tmp_path / "pred" / "04700_mask.png")
    twice = invoke("evaluate", tmp_path / "pred", tmp_path / "gt")
    assert twice.exit_code == 2 and "have two files" in twice.output and "Traceback" not in twice.output
    (tmp_path / "pred" / "04700_mask.png").unlink()
    # An --out that cannot be written is refused before the work, not after it.
    (tmp_path / "a_file").write_text("")
    refused = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "a_file" / "ev")
    assert refused.exit_code == 2 and "cannot write into" in refused.output
    assert "Dice" not in refused.output  # no table: nothing was evaluated first


def test_evaluate_reads_what_predict_out_writes(tmp_path, psfhs_dir):
    # predict --out names a frame's mask <case>_mask.png beside <case>_overlay.png (a picture).
    import shutil

    (tmp_path / "gt").mkdir()
    shutil.copy(psfhs_dir / "label_mha" / "04700.mha", tmp_path / "gt" / "04700.mha")
    assert invoke("predict", psfhs_dir / "image_mha" / "04700.mha", "--out", tmp_path / "pred").exit_code == 0
    result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    (case,) = csv.DictReader((tmp_path / "ev" / "cases.csv").read_text().splitlines())
    assert case["case_id"] == "04700" and float(case["dice_fh"]) > 0.9


def test_export_command(tmp_path):
    torch = pytest.importorskip("torch")
    from ipp_seg.nn.dssau_net import build_network

    model = build_network("dssau-net-s")
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(),
                "settings": {"input_size": [96, 96], "normalisation": {"kind": "percentile", "low_percentile": 1.0,
                                                                      "high_percentile": 99.0, "clip_low": -0.5,
                                                                      "clip_high": 2.0, "offset": 0.5}},
                "epoch": 7, "split": {"train": ["04002", "04001", "04003", "04010"], "validation": ["04020"]},
                "lineage": [{"checkpoint": "parent.pt", "train_case_ids": [["03000", "03099"]]}],
                "data_sha256": "ab" * 32},
               tmp_path / "ck.pt")
    result = invoke("export", tmp_path / "ck.pt", "--onnx", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    import onnxruntime as ort

    meta = ort.InferenceSession(str(tmp_path / "m.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["input_size"]) == [96, 96] and meta["config_name"] == "dssau-net-s"
    # Where the weights came from and which frames they saw travel with the file, card or not.
    assert meta["source_checkpoint"] == str((tmp_path / "ck.pt").resolve()) and meta["source_epoch"] == "7"
    assert meta["source_checkpoint_sha256"] == hashlib.sha256((tmp_path / "ck.pt").read_bytes()).hexdigest()
    assert json.loads(meta["train_case_ids"]) == [["04001", "04003"], ["04010", "04010"]]
    assert json.loads(meta["validation_case_ids"]) == [["04020", "04020"]]
    assert json.loads(meta["earlier_train_case_ids"]) == [["03000", "03099"]]
    assert meta["training_data_sha256"] == "ab" * 32
    assert "weights_stored_as" not in meta
    assert invoke("export", tmp_path / "ck.pt", "--onnx", tmp_path / "h.onnx", "--fp16-weights").exit_code == 0
    meta = ort.InferenceSession(str(tmp_path / "h.onnx")).get_modelmeta().custom_metadata_map
    assert meta["weights_stored_as"] == "float16"
    assert (tmp_path / "h.onnx").stat().st_size < 0.6 * (tmp_path / "m.onnx").stat().st_size
    assert invoke("export", tmp_path / "missing.pt", "--onnx", tmp_path / "x.onnx").exit_code == 2


def test_measure_keeps_16_bit_label_values(tmp_path):
    import cv2

    mask = np.zeros((256, 256), np.uint16)
    cv2.ellipse(mask, (90, 100), (30, 8), -20, 0, 360, 300, -1)  # PS labelled 300
    cv2.circle(mask, (150, 170), 50, 400, -1)  # FH labelled 400
    cv2.imwrite(str(tmp_path / "m16.png"), mask)
    result = invoke("measure", tmp_path / "m16.png", "--labels", "ps=300,fh=400", "--json")
    assert result.exit_code in (0, 1), result.output
    row = json.loads(result.stdout)[0]
    assert "ps_missing" not in row["reasons"] and "fh_missing" not in row["reasons"]
    assert row["hsd_px"] != "" or row["aop_deg"] != ""


def test_evaluate_refuses_folders_whose_case_ids_do_not_match(tmp_path):
    # Predictions named psfhs_<id>, ground truths <id>: with --missing-as-empty this scored every
    # case as an empty prediction and printed a table of zeros with exit 0.
    import cv2

    for folder, prefix in (("gt", ""), ("pred", "psfhs_")):
        (tmp_path / folder).mkdir()
        for case in ("04700", "04750"):
            mask = np.zeros((64, 64), np.uint8)
            cv2.ellipse(mask, (20, 12), (10, 4), -10, 0, 360, 1, -1)
            cv2.circle(mask, (36, 40), 16, 2, -1)
            cv2.imwrite(str(tmp_path / folder / f"{prefix}{case}.png"), mask)
    for extra in ([], ["--missing-as-empty"]):
        result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", *extra)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "no prediction in" in result.output or "no case could be evaluated" in result.output
    result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--missing-as-empty")
    assert "matches a ground-truth case ID" in result.output and "'psfhs_04700'" in result.output
    assert "ipp-seg evaluate" not in result.stdout  # no table of zeros


def test_evaluate_that_can_score_nothing_says_why_and_keeps_an_earlier_runs_files(tmp_path):
    import cv2

    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    mask = np.zeros((64, 64), np.uint8)
    cv2.ellipse(mask, (20, 12), (10, 4), -10, 0, 360, 1, -1)
    cv2.circle(mask, (36, 40), 16, 2, -1)
    for case in ("04700", "04750"):
        cv2.imwrite(str(tmp_path / "gt" / f"{case}.png"), mask)
        cv2.imwrite(str(tmp_path / "pred" / f"{case}.png"), mask * 100)  # another tool's 100 and 200
    out = tmp_path / "out"
    out.mkdir()
    (out / "cases.csv").write_text("an earlier run's results\n")
    result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "none of the 2 case(s) in both folders could be evaluated" in result.output
    assert "--pred-labels" in result.output  # the advice names an option that exists
    assert (out / "cases.csv").read_text() == "an earlier run's results\n" and not (out / "summary.json").exists()
    done = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--out", out, "--pred-labels", "ps=100, fh=200")
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader((out / "cases.csv").read_text().splitlines()))
    assert [(r["case_id"], r["dice_all"], r["evaluated"]) for r in rows] == [("04700", "1.0", "true"),
                                                                          ("04750", "1.0", "true")]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("evaluate", empty, tmp_path / "gt")
    assert result.exit_code == 2 and "no label masks" in result.output and "empty" in result.output
    # Refused before the cases are listed: "2 ground truths without prediction, scored as empty predictions"
    # had come first, for a run that scored nothing.
    result = invoke("evaluate", empty, tmp_path / "gt", "--missing-as-empty")
    assert result.exit_code == 2 and "no label masks" in result.output and "scored as empty" not in result.output


@pytest.mark.parametrize("columns", ["40", "80", "83", "84", "120"])
def test_help_keeps_every_option_name_whole_at_any_width(columns):
    # At 40 columns typer's boxes had cut names ("--over…" twice: --overlays or --overwrite?), and train's below 84
    # (a terminal user's pass): narrower than that, click's plain help, which wraps the text instead.
    from ipp_seg.cli import RICH_HELP_COLUMNS

    env = {**os.environ, "COLUMNS": columns}
    for command, names in (("batch", ("--overlays", "--overwrite", "--dicom-seg", "--dicom-sr", "--resume")),
                           ("train", ("--validation-count", "--extra-validation", "--deep-supervision"))):
        run = subprocess.run([sys.executable, "-m", "ipp_seg", command, "--help"], capture_output=True, text=True,
                             env=env)
        assert run.returncode == 0 and run.stderr == "", run.stderr[-300:]
        assert "\u2026" not in run.stdout and all(name in run.stdout for name in names), (command, columns)
        assert ("\u256d" in run.stdout) == (int(columns) >= RICH_HELP_COLUMNS)  # boxes where they fit


@pytest.mark.parametrize("encoding, settings", [("cp1252", {"PYTHONIOENCODING": "cp1252"}),
                                                ("ascii", {"PYTHONIOENCODING": "ascii"}),
                                                # The C locale without Python's UTF-8 mode: stdout's handler is
                                                # surrogateescape, which escapes no Δ (a terminal user's pass).
                                                ("ascii", {"LC_ALL": "C", "PYTHONUTF8": "0"})])
def test_help_in_an_encoding_without_delta_or_ellipsis_is_printed_escaped(encoding, settings):
    # Windows redirects help into cp1252: evaluate's "ΔAoP" (and train's "…" in ASCII) had ended in a traceback.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING"))}, **settings}
    for command in ("evaluate", "train", "batch"):
        run = subprocess.run([sys.executable, "-m", "ipp_seg", command, "--help"], capture_output=True,
                             encoding=encoding, errors="strict", env=env)
        assert run.returncode == 0 and "Traceback" not in run.stderr, (command, run.stderr[-300:])
        assert "Usage:" in run.stdout
    assert "\\u0394AoP" in subprocess.run([sys.executable, "-m", "ipp_seg", "evaluate", "--help"], capture_output=True,
                                         text=True, env=env).stdout


def test_a_log_in_an_encoding_without_degree_or_delta_signs_still_gets_the_results(tmp_path, psfhs_dir, sample_png):
    # A Windows task redirected into a cp1252 file, or an ASCII terminal: the ° and Δ of the
    # headers, and a patient folder's Chinese name, had ended the run with a traceback.
    pred, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "evaluate", str(pred), str(gt), "--out",
                          str(tmp_path / "ev")], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "median |dAoP| (deg)" in run.stdout  # spelt out, not lost
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["blocks"]["overall"]["score"] == pytest.approx(1)
    scan = tmp_path / "\u60a3\u8005.png"
    scan.write_bytes(sample_png.read_bytes())
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", str(scan)], capture_output=True, encoding="cp1252",
                         env={**env, "PYTHONIOENCODING": "cp1252"})
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "\\u60a3\\u8005" in run.stdout and "146." in run.stdout


def test_a_reader_that_stops_early_costs_no_output_file_and_no_exit_code(tmp_path, psfhs_dir):
    # `ipp-seg evaluate ... | head -1`: the tables had been printed before the files were
    # written, and the closed pipe had ended the run with exit 1 and no cases.csv.
    pred, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    command = [sys.executable, "-m", "ipp_seg", "evaluate", str(pred), str(gt), "--out", str(tmp_path / "ev")]
    env = {**os.environ, "COLUMNS": "300"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as run:
        run.stdout.close()  # the reader went away before the first line
        errors = run.stderr.read().decode()
        assert run.wait() == 0, errors
    assert "Traceback" not in errors and "Broken pipe" not in errors
    assert (tmp_path / "ev" / "cases.csv").is_file() and (tmp_path / "ev" / "summary.json").is_file()
    # `ipp-seg --help | head -1`: typer's own help had exited 1.
    for args in (["reasons", "--json"], ["--help"], ["batch", "--help"]):
        with subprocess.Popen([sys.executable, "-m", "ipp_seg", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as run:
            run.stdout.close()
            assert (run.wait(), run.stderr.read()) == (0, b""), args


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to stand for a full disk")
def test_stdout_on_a_full_disk_is_named_in_a_line_and_exit_2_not_a_traceback(tmp_path, psfhs_dir):
    # `ipp-seg predict scan --json > results.json` on a full disk: a 48-line traceback and exit 120 (Python's own
    # failed flush at exit), which scripts could not tell from a result.
    pred, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    for args in (["reasons", "--json"], ["reasons"], ["evaluate", str(pred), str(gt), "--out", str(tmp_path / "ev")],
                 ["--help"], ["predict", "--help"]):
        with open("/dev/full", "w") as full:
            run = subprocess.run([sys.executable, "-m", "ipp_seg", *args], stdout=full, stderr=subprocess.PIPE,
                                 text=True)
        assert run.returncode == 2, (args, run.stderr)
        assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr
        assert ("ipp-seg: cannot write to stdout: No space left on device" in run.stderr
                or "ipp-seg: cannot write its output: No space left on device" in run.stderr)  # typer's own help
    assert (tmp_path / "ev" / "cases.csv").is_file()  # the files are written all the same


def test_a_stop_while_the_command_line_loads_ends_with_130_and_a_line_not_a_traceback():
    # A clinician's pass: Ctrl-C in the first 0.3 s (typer, rich and ipp-seg's modules loading) gave a Python
    # traceback; the entry point now takes stops over before it loads them. The stop is sent as the command
    # line's module is imported, as a Ctrl-C at that moment would come.
    code = ("import importlib.abc, os, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # (a terminal's: a background job ignores it)\n"
            "class Stop(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'ipp_seg.cli':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.meta_path.insert(0, Stop())\n"
            "sys.argv = ['ipp-seg', '--version']\n"
            "runpy = __import__('runpy')\n"
            "runpy.run_module('ipp_seg', run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (130, "ipp-seg: stopped (SIGINT)\n"), run.stderr
    # The installed command is that entry point too.
    assert 'ipp-seg = "ipp_seg.launch:main"' in (Path(__file__).parents[1] / "pyproject.toml").read_text()


def _ipp_seg_process(*args, env=None, closed=(), **kwargs):
    """ipp-seg run as a user runs it, in its own process; ``closed``: standard streams it starts
    without (``>&-``, ``2>&-``)."""
    def close_streams():
        for fd in closed:
            os.close(fd)

    return subprocess.run([sys.executable, "-m", "ipp_seg", *map(str, args)], env={**os.environ, **(env or {})},
                          preexec_fn=close_streams if closed else None, **kwargs)


@pytest.mark.skipif(os.name != "posix", reason="closes a child's standard streams before it starts (POSIX)")
def test_a_closed_stdout_or_stderr_is_taken_as_dev_null(tmp_path, sample_png):
    # Some daemonisers close them. `predict >&-` had ended in a traceback with no files written,
    # `batch 2>&-` after its first row, both with exit 1, which reads as a failed measurement.
    run = _ipp_seg_process("predict", sample_png, "--out", tmp_path / "p", closed=(1,), stderr=subprocess.PIPE,
                           text=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert (tmp_path / "p" / "psfhs_04700_mask.png").is_file() and (tmp_path / "p" / "psfhs_04700.json").is_file()
    root = tmp_path / "scans"
    root.mkdir()
    for k in range(10):
        (root / f"{k}.png").symlink_to(sample_png)
    run = _ipp_seg_process("batch", root, "--out", tmp_path / "b", closed=(2,), stdout=subprocess.PIPE, text=True)
    assert run.returncode == 0
    with open(tmp_path / "b" / "measurements.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and all(r["aop_deg"] for r in rows)


def test_an_unusable_columns_setting_does_not_silence_the_output(tmp_path, sample_png):
    # COLUMNS=0, as some containers export it: rich had printed nothing at all, the error included.
    for columns in ("0", "5"):
        run = _ipp_seg_process("predict", sample_png, tmp_path / "missing.png", env={"COLUMNS": columns},
                               capture_output=True, text=True)
        assert run.returncode == 2
        assert f"ipp-seg: cannot read {tmp_path / 'missing.png'}: no such file" in run.stderr, run.stderr
        # (146.2 or 146.3 by the CPU family: onnxruntime's last bits differ)
        assert re.search(r"\b146\.[0-9]\b", run.stdout) and "missing.png" in run.stdout
        # typer's own usage errors and help read COLUMNS as well.
        usage = _ipp_seg_process("batch", tmp_path, env={"COLUMNS": columns}, capture_output=True, text=True)
        assert usage.returncode == 2 and "--out" in usage.stderr, usage.stderr
        shown = _ipp_seg_process("--help", env={"COLUMNS": columns}, capture_output=True, text=True)
        assert shown.returncode == 0 and "predict" in shown.stdout
    # A usable width with a space about it (" 130") is that width: the table is laid out whole, where
    # rich, taking it for none, had turned it into cards at 80 columns.
    widths = []
    for columns in (" 130", "130"):
        run = _ipp_seg_process("predict", sample_png, env={"COLUMNS": columns}, capture_output=True, text=True)
        widths.append(max(map(len, run.stdout.splitlines())))
    assert 80 < widths[0] == widths[1] <= 130
    shown = _ipp_seg_process("--help", env={"COLUMNS": " 130"}, capture_output=True, text=True)
    assert 80 < max(map(len, shown.stdout.splitlines())) <= 130  # typer's help, too


def test_a_log_file_gets_plain_lines_whatever_forces_colour(tmp_path, sample_png):
    # FORCE_COLOR (exported by many CI setups) had made rich take a log file for a terminal: escape
    # codes, and a progress bar redrawn ten times a second into it.
    root = tmp_path / "scans"
    root.mkdir()
    for k in range(3):
        (root / f"{k}.png").symlink_to(sample_png)
    with open(tmp_path / "batch.log", "w") as log:
        run = _ipp_seg_process("batch", root, "--out", tmp_path / "out", env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"},
                               stdout=log, stderr=subprocess.STDOUT)
    text = (tmp_path / "batch.log").read_text()
    assert run.returncode == 0 and "3 rows from 3 files measured now" in text, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    # typer's own help and usage errors too.
    for args in (["--help"], ["batch", str(root)]):
        with open(tmp_path / "typer.log", "w") as log:
            _ipp_seg_process(*args, env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}, stdout=log,
                             stderr=subprocess.STDOUT)
        text = (tmp_path / "typer.log").read_text()
        assert "Usage" in text and "\x1b" not in text, repr(text[:300])
    # ...also from a terminal, the help sent to a file (stderr still the terminal).
    if hasattr(os, "openpty"):
        terminal, other_end = os.openpty()
        try:
            with open(tmp_path / "help.txt", "w") as help_file:
                _ipp_seg_process("--help", env={"FORCE_COLOR": "1"}, stdout=help_file, stderr=other_end)
        finally:
            os.close(terminal)
            os.close(other_end)
        text = (tmp_path / "help.txt").read_text()
        assert "Usage" in text and "\x1b" not in text, repr(text[:300])


def test_evaluate_into_a_read_only_file_system_says_so(tmp_path, psfhs_dir, monkeypatch):
    # It had said "permission denied", which sends a user to chmod on a share mounted read-only.
    pred, gt = _two_evaluable_cases(tmp_path, psfhs_dir)
    (tmp_path / "ev").mkdir()
    real_statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.f_flag = real_statvfs(path).f_flag | os.ST_RDONLY

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: mode != os.W_OK and real_access(path, mode, **kw))
    monkeypatch.setattr(os, "statvfs", ReadOnly)
    result = invoke("evaluate", pred, gt, "--out", tmp_path / "ev")
    assert result.exit_code == 2 and "it is on a read-only file system" in " ".join(result.output.split())


def test_dicom_results_without_highdicom_are_refused_before_any_work(tmp_path, sample_png, sample_dicom, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # as if it were not installed
    result = invoke("predict", sample_png, sample_dicom, "--out", tmp_path / "out", "--dicom-sr")
    assert result.exit_code == 2 and "pip install" in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "out").glob("*"))  # not the PNG's outputs first, then a stop at the DICOM


def test_measure_takes_each_masks_calibration_from_the_scan_it_was_drawn_on(tmp_path, sample_dicom, sample_png):
    import shutil

    import cv2

    from ipp_seg.inference.masks import measure_mask_file

    scans, masks = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    masks.mkdir()
    shutil.copy(sample_dicom, scans / "04700.dcm")  # region-calibrated, 0.35 mm per pixel
    frame = read_frame(sample_dicom)
    mask = np.zeros(frame.pixels.shape, np.uint8)
    cv2.ellipse(mask, (100, 60), (30, 10), -10, 0, 360, 1, -1)
    cv2.circle(mask, (140, 160), 60, 2, -1)
    cv2.imwrite(str(masks / "04700_mask.png"), mask)  # as predict --out names it
    cv2.imwrite(str(masks / "09999.png"), mask)  # no scan of that case
    cv2.imwrite(str(masks / "04701.png"), mask[:200])
    shutil.copy(sample_dicom, scans / "04701.dcm")
    result = invoke("measure", masks / "04700_mask.png", masks / "09999.png", "--scans", scans, "--json")
    assert result.exit_code == 0, result.output
    drawn, alone = json.loads(result.stdout)
    assert drawn["scan"] == str(scans / "04700.dcm") and alone["scan"] is None
    assert drawn["spacing_source"] == "ultrasound_region" and drawn["spacing_mm"] == [0.35, 0.35]
    assert drawn["hsd_mm"] == pytest.approx(0.35 * drawn["hsd_px"])
    assert alone["spacing_source"] is None and alone["hsd_mm"] is None
    assert alone["aop_deg"] == pytest.approx(drawn["aop_deg"], abs=1e-6)  # square pixels either way
    assert "no scan for" in result.stderr and "09999" in result.stderr
    # The scan's UIDs join the mask's result back to its study, as predict's do.
    uids = ("sop_instance_uid", "study_instance_uid", "series_instance_uid")
    assert [drawn[uid] for uid in uids] == [getattr(frame.provenance, uid) for uid in uids]
    assert all(drawn[uid] for uid in uids) and [alone[uid] for uid in uids] == [None] * 3
    assert drawn["ipp_seg_version"] == alone["ipp_seg_version"] == software_version()
    resized = invoke("measure", masks / "04701.png", "--scans", scans, "--json")
    assert resized.exit_code == 2 and "not drawn on it" in resized.output
    refused = json.loads(resized.stdout)[0]  # its scan was read: the row still joins the study
    assert refused["reasons"] == ["mask_refused"] and refused["sop_instance_uid"] == drawn["sop_instance_uid"]
    assert "04701.dcm" in resized.output.replace("\n", "")
    assert invoke("measure", masks / "09999.png", "--scans", tmp_path / "nowhere").exit_code == 2
    # A scan without a calibration leaves the mask's own spacing, then the given one.
    plain_scan = tmp_path / "plain.png"
    cv2.imwrite(str(plain_scan), frame.pixels)
    given = measure_mask_file(masks / "09999.png", spacing_mm=(0.2, 0.2), scan=plain_scan)
    assert given.spacing_mm == (0.2, 0.2) and given.spacing_source == "given"


    # The same run from Python: the rows and reports the command line printed, and its messages as values.
    from ipp_seg.inference.masks import index_scans, measure_masks

    measured = list(measure_masks([masks / "04700_mask.png", masks / "09999.png", masks / "04701.png"],
                                  scans=index_scans(scans)))
    # (But when each was measured, to the second: the two runs may fall on either side of one, as on a slow CI machine.)
    timeless = [{key: value for key, value in report.items() if key != "measured_at"} for report in (drawn, alone)]
    assert [{key: value for key, value in m.report.items() if key != "measured_at"} for m in measured[:2]] == timeless
    assert all(m.report["measured_at"] >= report["measured_at"] for m, report in zip(measured, (drawn, alone)))
    assert measured[1].warnings == (f"no scan for {masks / '09999.png'} in {scans} (case 09999): measured without "
                                    "its calibration",)
    assert [m.unusable for m in measured] == [False, False, True] and measured[2].row["reasons"] == "mask_refused"
    assert measured[2].errors[0].startswith(f"cannot measure {masks / '04701.png'}: the mask is")
    # --csv makes the folders it is written into, as --out does.
    into = tmp_path / "new" / "folder" / "m.csv"
    assert invoke("measure", masks / "04700_mask.png", "--scans", scans, "--csv", into).exit_code == 0
    assert into.read_text().splitlines()[1].startswith(str(masks / "04700_mask.png"))
    row = next(csv.DictReader(into.open(newline="")))
    assert [row[uid] for uid in uids] == [drawn[uid] for uid in uids]


def test_a_pt_file_on_the_onnx_backend_is_told_to_use_the_torch_backend(sample_png):
    from ipp_seg.inference.registry import resolve_model

    weights = resolve_model("dssau-net-s").torch_path
    result = invoke("predict", sample_png, "--model", weights)
    said = result.output.replace("\n", "")
    assert result.exit_code == 2 and "is PyTorch weights: run it with --backend torch" in said
    assert f"--model {weights.with_suffix('.onnx')}" in said  # the export beside it


def test_a_cine_frames_mask_is_measured_with_that_frame_of_its_scan(tmp_path, sample_dicom, monkeypatch):
    """A mask named for a cine's frame (scan_f0002_mask.png, as predict --out names it) reads that
    frame of the scan; a frame the scan does not have means the mask was not drawn on it: refused,
    not measured with frame 0's calibration."""
    import shutil
    from pathlib import Path

    import cv2
    import pydicom

    from ipp_seg.inference import masks as masks_module
    from ipp_seg.inference.masks import index_scans

    scans, masks = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    masks.mkdir()
    cine = pydicom.dcmread(sample_dicom)
    pixels = cine.pixel_array
    cine.NumberOfFrames = 3
    cine.FrameIncrementPointer, cine.FrameTime = pydicom.tag.Tag(0x0018, 0x1063), 40
    cine.SOPClassUID = cine.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    cine.PixelData = np.stack([pixels] * 3).tobytes()
    cine.save_as(scans / "04704.dcm", enforce_file_format=True)
    shutil.copy(sample_dicom, scans / "04705.dcm")  # one frame
    mask = np.zeros(pixels.shape[:2], np.uint8)
    cv2.ellipse(mask, (100, 60), (30, 10), -10, 0, 360, 1, -1)
    cv2.circle(mask, (140, 160), 60, 2, -1)
    for name in ("04704_f0002_mask.png", "04704_f0003_mask.png", "04705_f0001_mask.png", "04705_mask.png"):
        cv2.imwrite(str(masks / name), mask)
    index = index_scans(scans)
    assert index.scan_and_frame_for(masks / "04704_f0002_mask.png") == (scans / "04704.dcm", 2)
    assert index.scan_and_frame_for(masks / "04705_mask.png") == (scans / "04705.dcm", 0)
    read = []
    real_read_frame = masks_module.read_frame
    monkeypatch.setattr(masks_module, "read_frame", lambda path, index=0: (read.append(index),
                                                                          real_read_frame(path, index))[1])
    result = invoke("measure", *sorted(masks.iterdir()), "--scans", scans, "--json")
    assert result.exit_code == 2, result.output
    rows = {Path(r["file"]).name: r for r in json.loads(result.stdout)}
    assert rows["04704_f0002_mask.png"]["spacing_source"] == "ultrasound_region" and read[0] == 2
    assert rows["04704_f0002_mask.png"]["frame"] == 2 and rows["04705_mask.png"]["frame"] == 0  # the scan's frame
    # And that frame's time in its cine, as predict's report of the frame gives it; a still has none.
    assert rows["04704_f0002_mask.png"]["frame_time_ms"] == 80.0 and rows["04705_mask.png"]["frame_time_ms"] is None
    assert (rows["04704_f0002_mask.png"]["n_frames"], rows["04705_mask.png"]["n_frames"]) == (3, 1)
    assert rows["04704_f0003_mask.png"]["reasons"] == ["mask_refused"]
    assert rows["04705_f0001_mask.png"]["reasons"] == ["mask_refused"]
    assert rows["04705_mask.png"]["spacing_mm"] == [0.35, 0.35]
    text = result.stderr.replace("\n", "")
    assert "frame 3 of a cine, but its scan" in text and "has 3 frames (0-2): not drawn on it" in text
    assert "has 1 frame (frame 0): not drawn on it" in text
    # Without a scan, the row's frame is still the one the mask's name gives.
    alone = invoke("measure", masks / "04704_f0002_mask.png", "--json")
    assert json.loads(alone.stdout)[0]["frame"] == 2
    # A batch run's outputs inside the scans folder are not scans: its overlay named like the
    # cine's frame does not stand in for the cine.
    (scans / "out" / "overlays").mkdir(parents=True)
    cv2.imwrite(str(scans / "out" / "overlays" / "04704_f0002.png"), np.zeros((300, 256, 3), np.uint8))
    (scans / "out" / "measurements.csv").write_text("file,frame,status,reasons\n")
    assert index_scans(scans).scan_and_frame_for(masks / "04704_f0002_mask.png") == (scans / "04704.dcm", 2)
    # A still named as the cine's frame beside the cine: which one the mask was drawn on is not known.
    shutil.copy(sample_dicom, scans / "04704_f0002.dcm")
    with pytest.raises(ValueError, match=r"may be the scan 04704_f0002\.dcm or frame 2 of 04704\.dcm"):
        index_scans(scans).scan_and_frame_for(masks / "04704_f0002_mask.png")


def test_scans_are_found_as_researchers_keep_them(tmp_path, sample_dicom, caplog):
    import logging
    import shutil

    import cv2
    import pydicom

    from ipp_seg.inference.masks import index_scans, measure_mask_file

    project = tmp_path / "project"
    (project / "scans" / "cine").mkdir(parents=True)
    (project / "masks").mkdir()
    shutil.copy(sample_dicom, project / "scans" / "IM_0001")  # a PACS export: no suffix
    shutil.copy(sample_dicom, project / "scans" / "cine" / "04704.dcm")
    frame = read_frame(sample_dicom)
    mask = np.zeros(frame.pixels.shape, np.uint8)
    cv2.ellipse(mask, (100, 60), (30, 10), -10, 0, 360, 1, -1)
    cv2.circle(mask, (140, 160), 60, 2, -1)
    for name in ("IM_0001.png", "04704_f0002_mask.png", "04800.png"):  # the last: in the project root's masks only
        cv2.imwrite(str(project / "masks" / name), mask)
    index = index_scans(project)  # the project root, masks and all: a mask is not its own scan
    assert index.scan_for(project / "masks" / "IM_0001.png") == project / "scans" / "IM_0001"
    assert index.scan_for(project / "masks" / "04704_f0002_mask.png") == project / "scans" / "cine" / "04704.dcm"
    assert index.scan_for(project / "masks" / "04800.png") is None
    shutil.copy(sample_dicom, project / "scans" / "04704.dcm")  # a second file of one case: refused when asked for
    with pytest.raises(ValueError, match="case '04704' has several scans"):
        index_scans(project).scan_for(project / "masks" / "04704_f0002_mask.png")
    # From the command line: refused, as a mask not drawn on its scan is (a README audit: it had read `unreadable`,
    # which says the file could not be read, of a mask and scans that read well).
    ambiguous = invoke("measure", project / "masks" / "04704_f0002_mask.png", "--scans", project, "--json")
    assert ambiguous.exit_code == 2 and json.loads(ambiguous.stdout)[0]["reasons"] == ["mask_refused"]
    assert "case '04704' has several scans" in json.loads(ambiguous.stdout)[0]["error"]
    with pytest.raises(NotADirectoryError, match="does not exist"):
        index_scans(tmp_path / "nowhere")
    # Two differently calibrated regions, the PS in neither: the given spacing serves there.
    ds = pydicom.dcmread(sample_dicom)
    regions = ds.SequenceOfUltrasoundRegions
    lower = pydicom.Dataset()
    lower.update(regions[0])
    regions[0].RegionLocationMinY0, lower.RegionLocationMinY0 = 230, 240  # (below the head, which ends at 220)
    lower.PhysicalDeltaX = lower.PhysicalDeltaY = 0.05
    regions.append(lower)
    two_regions = tmp_path / "two_regions.dcm"
    ds.save_as(two_regions)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    given = measure_mask_file(tmp_path / "m.png", spacing_mm=(0.2, 0.2), scan=two_regions)
    assert given.spacing_mm == (0.2, 0.2) and given.spacing_source == "given"
    # The head in those two regions (one inside the other, calibrated otherwise): no millimetres (0.2.12: the
    # spacing at the PS's centre had served for the whole measurement).
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = 150
    ds.SequenceOfUltrasoundRegions[1].RegionLocationMinY0 = 200
    ds.save_as(two_regions)
    spanning = measure_mask_file(tmp_path / "m.png", spacing_mm=(0.2, 0.2), scan=two_regions)
    assert spanning.spacing_mm is None and "spacing_unknown" in spanning.reasons
    with caplog.at_level(logging.WARNING):  # a calibrated scan: the given spacing is not used, and said so
        used = measure_mask_file(tmp_path / "m.png", spacing_mm=(0.2, 0.2), scan=sample_dicom)
    assert used.spacing_mm == (0.35, 0.35) and "the given spacing (0.2, 0.2) mm is not used" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("measure", tmp_path / "m.png", "--scans", empty)
    assert result.exit_code == 0 and "no scans in" in result.output


def test_measure_given_a_scan_instead_of_a_mask_says_so(sample_png):
    result = invoke("measure", sample_png)
    assert result.exit_code == 2 and "a greyscale image rather than a label mask" in result.output
    assert "ipp-seg predict" in result.output and "Traceback" not in result.output


def test_opencvs_own_lines_about_a_damaged_image_are_not_printed(tmp_path, sample_png):
    # A TIFF cut short: OpenCV prints "[ERROR:0@...] global grfmt_tiff.cpp ..." lines of its own
    # before ipp-seg says, in one line, that the file cannot be read.
    import cv2

    cv2.imwrite(str(tmp_path / "scan.tif"), cv2.imread(str(sample_png), cv2.IMREAD_GRAYSCALE))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "scan.tif").read_bytes()[:200])
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", str(tmp_path / "cut.tif")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and "cannot read" in run.stderr
    assert "[ERROR" not in run.stderr and "[ WARN" not in run.stderr, run.stderr


def test_python_dash_m_runs_the_same_command_line():
    out = subprocess.run([sys.executable, "-m", "ipp_seg", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_a_symphysis_the_network_invents_is_flagged(tmp_path, sample_png):
    # The sample frame with its top 75 rows (the symphysis) blacked out: the default model still
    # draws a PS, on the head's edge, and is unsure of it. The whole frame is not flagged.
    import cv2

    frame = cv2.imread(str(sample_png), cv2.IMREAD_GRAYSCALE)
    frame[:75] = 0
    cv2.imwrite(str(tmp_path / "no_symphysis.png"), frame)
    result = invoke("predict", sample_png, tmp_path / "no_symphysis.png", "--json")
    full, cut = json.loads(result.stdout)
    assert full["ps_confidence"] >= 0.90 and "ps_low_confidence" not in full["reasons"]
    assert cut["ps_confidence"] < 0.90 and "ps_low_confidence" in cut["reasons"] and cut["status"] == "warning"


def test_a_loop_of_links_among_the_scans_fails_alone(tmp_path, sample_png):
    # Resolving the loop to name the outputs raised, and no scan of the run was measured.
    (tmp_path / "loopa.dcm").symlink_to(tmp_path / "loopb")
    (tmp_path / "loopb").symlink_to(tmp_path / "loopa.dcm")
    result = invoke("predict", tmp_path / "loopa.dcm", sample_png, "--json", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output
    loop, png = json.loads(result.stdout)
    assert loop["status"] == "failed" and "a loop of links" in loop["error"]
    assert png["status"] != "failed"


def test_log_lines_read_as_warnings_without_module_names_unless_verbose(sample_dicom):
    """A user's run says ``warning: ...``, as the command's own lines do; the logging module's name
    (for a fault report) only with -v. In a real process: pytest's own log handler keeps
    basicConfig from acting here."""
    import subprocess
    import sys

    def stderr(*options):
        run = subprocess.run([sys.executable, "-m", "ipp_seg", *options, "predict", str(sample_dicom),
                              "--spacing-mm", "0.2"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stderr

    plain, verbose = stderr(), stderr("-v")
    assert f"warning: {sample_dicom}: the file's own calibration" in plain and "ipp_seg." not in plain
    assert f"warning ipp_seg.io.reader: {sample_dicom}: the file's own calibration" in verbose


def test_a_file_without_read_permission_gets_its_row_and_line_not_a_usage_error(tmp_path, sample_png, monkeypatch):
    # As a user without read permission (os.access is how such checks ask; root passes them all): typer had refused a
    # scan with a boxed usage error before anything ran, a mask had ended measure in a traceback, an unreadable
    # model file in a traceback (predict) or in "cannot write into OUT" (batch), a checkpoint in a traceback (export).
    import ipp_seg.inference.registry as registry

    scan, model = tmp_path / "scan.png", tmp_path / "model.onnx"
    scan.write_bytes(sample_png.read_bytes())
    model.write_bytes((Path(__file__).resolve().parents[1] / "models" / "dssau-net-s.onnx").read_bytes())
    mask = tmp_path / "scan_mask.png"
    assert invoke("predict", scan, "--out", tmp_path / "p").exit_code == 0
    mask.write_bytes((tmp_path / "p" / "scan_mask.png").read_bytes())
    denied = {str(scan), str(mask), str(model)}
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not (os.fspath(p) in denied and mode & os.R_OK)
                        and real_access(p, mode, **kw))
    real_sha256 = registry.sha256_of

    def sha256_of(path):
        if str(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_sha256(path)

    monkeypatch.setattr(registry, "sha256_of", sha256_of)
    result = invoke("predict", scan)  # (read all the same: root's reads pass; the CLI no longer judges them first)
    assert result.exit_code == 0 and "Usage:" not in result.output and "is not readable" not in result.output
    result = invoke("measure", mask)
    assert result.exit_code == 2 and "cannot open the file (Permission denied)" in result.output, result.output
    for args in (("predict", sample_png, "--model", model),
                 ("batch", tmp_path / "p", "--out", tmp_path / "b", "--model", model)):
        result = invoke(*args)
        assert result.exit_code == 2 and f"{model} cannot be read (Permission denied)" in result.output, result.output
    assert not (tmp_path / "b").exists()  # refused before its output folder was made


def test_a_checkpoint_of_a_config_this_clone_lacks_is_built_as_it_records_it(tmp_path, sample_png):
    # A maintainer's own config, shipped from their clone: export and the torch backend here had
    # ended in a KeyError traceback (the network was rebuilt from the registered config's name).
    torch = pytest.importorskip("torch")
    from dataclasses import replace as replaced

    from ipp_seg.nn.configs import get_config
    from ipp_seg.nn.dssau_net import build_network

    own = replaced(get_config("dssau-net-s"), name="dssau-net-xs-of-mine", dims=(32, 32, 64, 96))
    model = build_network(own)
    torch.save({"model": model.state_dict(), "config": own.to_dict(), "settings": {"input_size": [96, 96]}},
               tmp_path / "ck.pt")
    result = invoke("export", tmp_path / "ck.pt", "--onnx", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    from ipp_seg.train.loop import load_checkpoint_model

    loaded, _ = load_checkpoint_model(tmp_path / "ck.pt")
    assert loaded.config == own
    predicted = invoke("predict", sample_png, "--model", tmp_path / "ck.pt", "--backend", "torch", "--json")
    assert predicted.exit_code in (0, 1) and "Traceback" not in predicted.output, predicted.output
    torch.save({"model": model.state_dict(), "config": {"name": "no-dims"}}, tmp_path / "bad.pt")
    refused = invoke("export", tmp_path / "bad.pt", "--onnx", tmp_path / "b.onnx")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "its network config cannot be rebuilt: not a network config (it lacks depths, " \
        "dims, in_channels, region_topk)" in said
    torch.save({"model": model.state_dict(), "config": {**own.to_dict(), "head_dim": "32"}}, tmp_path / "odd.pt")
    odd = invoke("export", tmp_path / "odd.pt", "--onnx", tmp_path / "o.onnx")
    assert odd.exit_code == 2 and "a field holds a value of the wrong kind" in " ".join(odd.output.split())


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="limits a child's file size (POSIX)")
def test_measure_csv_cut_short_ends_on_a_whole_row(tmp_path):
    # On a full disk or under `ulimit -f`, the --csv file had ended mid-row ("...27.36231169 93,,").
    import resource
    import signal

    import cv2

    mask = np.zeros((256, 256), np.uint8)
    cv2.ellipse(mask, (150, 170), (70, 60), 70, 0, 360, 2, -1)
    cv2.ellipse(mask, (90, 55), (35, 11), -15, 0, 360, 1, -1)
    masks = []
    for k in range(30):
        masks.append(tmp_path / f"mask_{k:02d}.png")
        cv2.imwrite(str(masks[-1]), mask)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    run = subprocess.run([sys.executable, "-m", "ipp_seg", "measure", *map(str, masks), "--csv",
                          str(tmp_path / "m.csv")], preexec_fn=limited, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "File too large" in run.stderr, run.stderr
    data = (tmp_path / "m.csv").read_bytes()
    assert 0 < len(data) <= 4096 and data.endswith(b"\r\n")
    rows = list(csv.DictReader(data.decode().splitlines()))
    assert rows and all(r["ipp_seg_version"] for r in rows)  # every row whole, to its last column


def test_a_name_that_is_not_utf8_reads_on_stderr_as_in_the_csv(tmp_path):
    # Its bytes had been shown as lone surrogates ("M\udcfcller.png") where the CSV and JSON write
    # "M\xfcller.png": a user searching the CSV for the name in an error found nothing.
    missing = os.path.join(os.fsencode(tmp_path), b"M\xfcller.png")
    run = _ipp_seg_process("predict", os.fsdecode(missing), capture_output=True, text=True)
    assert run.returncode == 2 and f"{tmp_path}/M\\xfcller.png: no such file" in run.stderr, run.stderr
    assert "\\udcfc" not in run.stderr


def test_predict_says_what_to_do_for_batchs_options_and_a_folder(tmp_path, sample_png):
    # A clinician's first tries: --overlay had answered "No such option: --overlay (Possible options:
    # --model)", and a folder only "unreadable: is a directory, not a file".
    for option in ("--overlay", "--overlays", "--save-masks"):
        result = invoke("predict", sample_png, option)
        assert result.exit_code == 2 and "into --out DIR: give --out DIR" in " ".join(result.output.split())
    with_out = invoke("predict", sample_png, "--overlays", "--out", tmp_path / "o")
    assert with_out.exit_code == 0 and (tmp_path / "o" / f"{sample_png.stem}_overlay.png").is_file()
    folder = invoke("predict", sample_png.parent)
    said = " ".join(folder.output.split())
    assert folder.exit_code == 2 and f"`ipp-seg batch {sample_png.parent} --out OUT` measures the scans" in said
    assert "model dssau-net-s on CPU (onnxruntime)" in said  # not onnxruntime's "CPUExecutionProvider"


def test_batch_of_an_empty_folder_says_it_holds_no_scans(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    result = invoke("batch", tmp_path / "empty", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "no scans in" in result.output and "hold no files" in " ".join(result.output.split())
    # Only hidden or system files: said so, and named (Thumbs.db does not start with the '.' it had said).
    (tmp_path / "empty" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "empty" / "sub" / ".DS_Store").write_bytes(b"\0")
    said = " ".join(invoke("batch", tmp_path / "empty", "--out", tmp_path / "out").output.split())
    assert "hold only hidden or system files and folders, which are left out (Thumbs.db, sub/.DS_Store)" in said


def test_a_dumb_terminal_gets_progress_as_lines_not_a_live_display(monkeypatch):
    # A spinner redrawn ten times a second is read out by a screen reader's terminal (TERM=dumb).
    from rich.console import Console

    import ipp_seg.cli as cli

    monkeypatch.setattr(cli, "err", Console(force_terminal=True, _environ={"TERM": "dumb"}))
    assert cli._live_progress() is False
    monkeypatch.setattr(cli, "err", Console(force_terminal=True, _environ={"TERM": "xterm-256color"}))
    assert cli._live_progress() is True
    monkeypatch.setattr(cli, "err", Console(force_terminal=False))
    assert cli._live_progress() is False


@pytest.mark.parametrize("command", ["predict", "batch", "measure", "evaluate", "train", "export"])
def test_help_names_option_values_as_the_readme_does_not_by_type(command):
    # "--workers <int range> [x>=1]", "--out <path>": typer's type names read as jargon in a clinician's help.
    text = invoke(command, "--help").stdout
    options = text[text.index("Options"):]
    for jargon in ("<path>", "<int", "<float", "<str>", "<text>"):
        assert jargon not in options, (command, jargon)
    if command == "batch":
        assert "--out" in options and " DIR " in options and " N " in options
    # A number's range in its help, in words: beside the metavar ("X [0.0<=x<=0.99999]") the widest had narrowed
    # every option's help to about 20 columns (train --help ran to 161 lines, a research fellow's pass).
    assert "<=x" not in options and "[x>=" not in options
    if command == "train":
        assert "(0.0 to 0.99999)" in " ".join(options.split()) and len(text.splitlines()) < 140


def test_a_refused_option_reads_as_ipp_segs_own_errors_do(tmp_path):
    # typer's usage errors came in a box, with required arguments as "{IN_DIR}", and offered hidden
    # options ("--workers": "Possible options: --overlays", an option predict only refuses).
    # (Run as python -m ipp_seg here: the usage names the program so.)
    # (typer words a few of these its own way from version to version: "SCAN" or "SCAN...", "no such
    # option: --workers" or "no such option '--workers'"; what is checked holds for all it allows.)
    cases = [(("batch", str(tmp_path)), "batch [OPTIONS] IN_DIR", ("ipp-seg: missing option '--out'",)),
             (("predict", "x.png", "--workers", "2"), "predict [OPTIONS] SCAN",
              ("ipp-seg: no such option", "--workers", "; python -m ipp_seg predict --help lists the options")),
             (("nonsense",), "[OPTIONS] COMMAND", ("ipp-seg: no such command 'nonsense'",))]
    for args, usage, said in cases:
        run = _ipp_seg_process(*args, capture_output=True, text=True)
        assert run.returncode == 2 and run.stdout == "", run.stderr
        assert usage in run.stderr and all(words in run.stderr for words in said), run.stderr
        assert not set(run.stderr) & set("╭╮│{}") and "Traceback" not in run.stderr, run.stderr
        assert "--overlays" not in run.stderr
    helped = _ipp_seg_process("batch", "--help", capture_output=True, text=True)
    assert helped.returncode == 0 and "--workers" in helped.stdout


def test_an_overlay_that_shows_burned_in_text_is_said(tmp_path, sample_dicom):
    # A DICOM that says text is burnt into its pixels and declares no ultrasound region: its overlay
    # shows the whole frame, the banner with the patient's name included, and nothing had said so.
    import pydicom

    ds = pydicom.dcmread(sample_dicom)
    del ds.SequenceOfUltrasoundRegions
    ds.BurnedInAnnotation = "YES"
    scans = tmp_path / "scans"
    scans.mkdir()
    ds.save_as(scans / "burned.dcm")
    said = " ".join(invoke("predict", scans / "burned.dcm", "--out", tmp_path / "p").output.split())
    assert "Burned In Annotation YES" in said and "overlay shows the whole frame" in said
    assert "Burned In Annotation" not in " ".join(invoke("predict", scans / "burned.dcm").output.split())  # no overlay
    batch = _ipp_seg_process("batch", scans, "--out", tmp_path / "b", "--overlays", capture_output=True, text=True)
    assert batch.returncode == 0 and batch.stderr.count("Burned In Annotation YES") == 1, batch.stderr
    plain = _ipp_seg_process("batch", scans, "--out", tmp_path / "c", capture_output=True, text=True)
    assert "Burned In Annotation" not in plain.stderr
    ds.BurnedInAnnotation = "NO"
    ds.save_as(scans / "burned.dcm")
    assert "Burned In Annotation" not in invoke("predict", scans / "burned.dcm", "--out", tmp_path / "q").output
    # With a region: the banner around it is blacked out, text inside it is not (a privacy pass found a name written
    # over the image shown in the overlay, unsaid).
    ds = pydicom.dcmread(sample_dicom)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(scans / "burned.dcm")
    said = " ".join(invoke("predict", scans / "burned.dcm", "--out", tmp_path / "r").output.split())
    assert "its overlay blacks out what lies outside the ultrasound regions, but text inside them" in said


def test_predict_out_removes_what_a_killed_run_left_being_written(tmp_path, sample_png):
    # A predict --out killed outright leaves a hidden staging file (a partial report: patient data);
    # a later run into the same folder removes those old enough to be no write in progress.
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale, fresh = out / "sub" / ".ipp-seg-0123abcd.part", out / ".ipp-seg-4567ef01.part"
    for path in (stale, fresh):
        path.write_text('{"file": "patient"}')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert invoke("predict", sample_png, "--out", out).exit_code == 0
    assert not stale.exists() and fresh.exists()


def test_log_lines_go_to_stderr_as_it_is_when_they_are_logged(monkeypatch):
    # A live progress bar takes stderr over while it is shown: a warning logged through the stderr of the
    # handler's making (a folder link loop found while listing) had run into the bar's line.
    import io
    import logging

    from ipp_seg import configure_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging(logging.WARNING)
        swapped = io.StringIO()
        monkeypatch.setattr(sys, "stderr", swapped)  # as rich's live display swaps it
        logging.getLogger("ipp_seg.test").warning("a folder loops")
        assert swapped.getvalue() == "warning: a folder loops\n"
    finally:
        root.handlers, root.level = saved, level


def test_an_option_of_one_value_given_twice_is_refused(tmp_path, sample_png):
    # A QA pass: a second --glob replaced the first without a word, and the files of the first were not measured.
    for option, args in (("--glob", ("batch", sample_png.parent, "--out", tmp_path / "out", "--glob", "*.dcm",
                                      "--glob=*.png")),
                         ("--model", ("predict", sample_png, "--model", "dssau-net-s", "--model",
                                      "dssau-net-s-heldout"))):
        result = invoke(*args)
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and f"{option} is given 2 times; it takes one value" in said, result.output
    assert not (tmp_path / "out").exists()
    assert invoke("predict", sample_png, "--tta", "--tta", "--json").exit_code == 0  # (a flag twice is no such thing)


def test_control_characters_of_a_file_name_reach_no_terminal_raw(tmp_path, sample_dicom):
    # A crafted name (ESC[2J clears a screen, CR hides what came before, a newline fakes a log line) had reached
    # stderr raw in predict's error lines and in warnings logged by the library; the CSV and tables escaped it.
    import pydicom

    from ipp_seg.printable import terminal_text

    assert terminal_text("a\x1b[2Jb\rc\nd\u2028e\\f") == "a\\x1b[2Jb\\x0dc\\x0ad\\u2028e\\f"
    # Bidirectional formatting characters: a right-to-left override had shown 04700_<RLO>gnp.dcm as 04700_mcd.png.
    assert terminal_text("04700_\u202egnp.dcm \u2066x\u2069 \u200f") == "04700_\\u202egnp.dcm \\u2066x\\u2069 \\u200f"
    # A lone surrogate that no file name's byte gave (a JSON case ID "\ud800"): written out, not a traceback.
    assert terminal_text("x\ud800y") == "x\\ud800y" and terminal_text(os.fsdecode(b"M\xfc")) == "M\\xfc"
    # A UTF-8 name's bytes held as surrogates (an ASCII locale's argv) are read as UTF-8, as the tables and the CSV
    # read them: the message had said n\xc3\xb6pe where the table said n\xf6pe.
    assert terminal_text("n\udcc3\udcb6pe \u00b0 M\udcfc") == "n\u00f6pe \u00b0 M\\xfc"
    ds = pydicom.dcmread(sample_dicom)
    ds.PatientID = "ID\x07X"  # refused for a SEG: the error line names the file
    name = tmp_path / "\x1b[2Jpid\rFAKE.dcm"
    ds.save_as(name)
    run = subprocess.run([sys.executable, "-m", "ipp_seg.cli", "predict", str(name), "--out", str(tmp_path / "out"),
                          "--dicom-seg"], capture_output=True, text=True, errors="surrogateescape")
    assert "is not valid DICOM" in run.stderr, run.stderr
    assert "\x1b" not in run.stderr and "\r" not in run.stderr and "\\x1b[2Jpid\\x0dFAKE.dcm" in run.stderr
    # A warning the library logs (evaluate's cases without a reference angle), through the same log format.
    import logging

    from ipp_seg import LogLineFormatter

    record = logging.LogRecord("ipp_seg.x", logging.WARNING, "", 0, "no reference AoP: %s", ("cr\r\x1b[Kx",), None)
    assert LogLineFormatter().format(record) == "warning: no reference AoP: cr\\x0d\\x1b[Kx"


def test_no_command_shows_the_commands_and_says_why_the_exit_is_not_0():
    # A deployment pass: `ipp-seg` alone printed its help, then "ipp-seg: ; ipp-seg --help lists the options" (an
    # empty error) and exit 2. click 8.2 exits 2 here, earlier versions 0.
    run = _ipp_seg_process(capture_output=True, text=True)
    assert "predict" in run.stdout and "batch" in run.stdout
    assert "ipp-seg: ;" not in run.stderr and "Traceback" not in run.stderr
    if run.returncode != 0:
        assert run.returncode == 2 and "ipp-seg: no command given; python -m ipp_seg --help lists the commands" in \
            " ".join(run.stderr.split()), run.stderr


def test_a_folder_that_is_none_says_whether_it_is_missing_or_a_file(tmp_path, sample_png, monkeypatch):
    # "nonexist is not a folder" had left the user to guess: a typo, or a file given for a folder?
    missing = invoke("batch", tmp_path / "nonexist", "--out", tmp_path / "o")
    assert missing.exit_code == 2 and f"{tmp_path / 'nonexist'} does not exist" in " ".join(missing.stderr.split())
    a_file = invoke("evaluate", sample_png, tmp_path)
    assert a_file.exit_code == 2 and "is a file, not a folder" in a_file.stderr
    # One scan given to batch: the way on is predict (a clinician's pass); a file of another kind given to --model
    # is said to be no model file, not an unknown model's name.
    one = invoke("batch", sample_png, "--out", tmp_path / "o")
    assert one.exit_code == 2 and f"is a file, not a folder: batch measures a folder of scans; for one scan, ipp-seg " \
        f"predict {sample_png}" in " ".join(one.stderr.split()), one.stderr
    (tmp_path / "notes.txt").write_text("no model")
    not_model = " ".join(invoke("predict", sample_png, "--model", tmp_path / "notes.txt").output.split())
    assert f"model file {tmp_path / 'notes.txt'} is not a .onnx or .pt file: --model takes an ONNX file" in not_model
    monkeypatch.chdir(tmp_path)  # (given without its folder, from where it lies: a file, not an unknown model's name)
    bare = " ".join(invoke("predict", sample_png, "--model", "notes.txt").output.split())
    assert "model file notes.txt is not a .onnx or .pt file" in bare, bare
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    dangling = invoke("batch", tmp_path / "gone", "--out", tmp_path / "o")
    assert "does not exist (a link to nowhere)" in " ".join(dangling.stderr.split())


def test_an_out_of_spaces_alone_and_a_dash_for_a_scan_are_refused_with_what_to_give(tmp_path, sample_png):
    # A deployment pass: --out "   " (a variable left unset) made a folder named with spaces; "predict -" said
    # "no such file" of what was meant as standard input.
    spaces = invoke("batch", tmp_path, "--out", "   ")
    assert spaces.exit_code == 2 and "names no folder: spaces alone" in spaces.stderr
    assert not Path("   ").exists()
    dash = invoke("predict", "-")
    assert dash.exit_code == 2 and "'-' (standard input) is not read" in " ".join(dash.stderr.split())
    with pytest.raises(ValueError, match="spaces alone names no output folder"):
        from ipp_seg.inference.batch import BatchOptions, run_batch

        run_batch(BatchOptions(tmp_path, Path(" ")))


def _one_case_to_evaluate(root: Path, side: int = 128) -> None:
    """``root``/pred and ``root``/gt, each holding the same mask of case 00001 (a head and a PS)."""
    import cv2

    for folder in ("pred", "gt"):
        (root / folder).mkdir()
        mask = np.zeros((side, side), np.uint8)
        cv2.circle(mask, (side * 11 // 32, side * 39 // 64), side * 17 // 64, 2, thickness=-1)
        cv2.ellipse(mask, (side * 13 // 32, side * 9 // 64), (side * 15 // 128, side * 5 // 128), -8, 0, 360, 1,
                    thickness=-1)
        cv2.imwrite(str(root / folder / "00001.png"), mask)


def test_evaluates_summary_says_what_was_evaluated_against_what_and_when(tmp_path):
    # A statistician's pass: two summary.json files against different reference files could not be told apart; the
    # ground-truth folder, --images and when it ran were not recorded either.
    _one_case_to_evaluate(tmp_path)
    reference = tmp_path / "ref.csv"
    reference.write_text("case,aop_deg\n00001,120.5\n")
    result = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--reference-aop", reference,
                    "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["inputs"]["predictions"] == str(tmp_path / "pred")
    assert summary["inputs"]["ground_truth"] == str(tmp_path / "gt") and summary["inputs"]["images"] is None
    assert summary["inputs"]["reference_aop"] == {"cases": 1, "file": str(reference),
                                                  "sha256": hashlib.sha256(reference.read_bytes()).hexdigest()}
    assert summary["inputs"]["gt_labels"] == {"ps": 1, "fh": 2} and summary["inputs"]["spacing_mm"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", summary["evaluated_at"])


def test_predict_on_a_disk_that_fills_prints_what_it_wrote_and_names_the_rest(sample_png, tmp_path, monkeypatch):
    # A deployment pass: a full disk mid-run ended predict with exit 2 and no table of the frames already measured
    # and written, and without naming the scans left.
    import errno

    import ipp_seg.inference.report as report_module

    real, calls = report_module.write_frame_outputs, []

    def disk_full_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(report_module, "write_frame_outputs", disk_full_at_the_second)
    scans = [shutil.copy(sample_png, tmp_path / f"{k}.png") for k in range(3)]
    result = invoke("predict", *scans, "--out", tmp_path / "out")
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert f"cannot write into {tmp_path / 'out'}: No space left on device" in said
    assert "1 frame measured (above, with their outputs in" in said and "2 scans not measured in full:" in said
    assert "0.png" in result.stdout and "146." in result.stdout  # the table of the frame written


def test_an_out_folder_that_cannot_be_written_is_refused_before_the_work(tmp_path, sample_png, monkeypatch):
    # A deployment pass: predict --out into a read-only folder loaded the model and measured the first frame first.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # (As a folder this user may not write reads; root writes through a chmod.)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not (Path(path) == locked and mode & os.W_OK)
                        and real_access(path, mode, **kw))
    result = invoke("predict", sample_png, "--out", locked)
    assert result.exit_code == 2 and f"cannot write into {locked}: permission denied" in result.stderr
    assert "model dssau-net-s" not in result.stderr  # refused before the model was loaded
    # A folder to be made in it (a QA pass: the model loaded, an empty table, then "0 frames measured").
    inside = invoke("predict", sample_png, "--out", locked / "new")
    said = " ".join(inside.stderr.split())
    assert inside.exit_code == 2 and f"cannot make the output folder {locked / 'new'}: permission denied" in said
    assert "model dssau-net-s" not in said and "frames measured" not in said and inside.stdout == ""


def test_an_out_value_that_reads_as_an_option_is_refused(tmp_path):
    # "batch in --out --workers 1" had taken --workers for the folder, then said "unexpected extra argument (1)";
    # "--out --overlays" had made a folder named --overlays.
    result = invoke("batch", tmp_path, "--out", "--overlays")
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "--out --overlays: a folder name that starts with '-' reads as an option" in said
    assert not Path("--overlays").exists()
    run = _ipp_seg_process("batch", str(tmp_path), "--out", "--workers", "1", capture_output=True, text=True)
    said = " ".join(run.stderr.split())
    assert run.returncode == 2 and "(--out took '--workers' for its value: give --out one)" in said, said
    # A folder named with a blank, unquoted: the shell splits it; the refusal says how to give it.
    run = _ipp_seg_process("batch", tmp_path / "my", "scans", "--out", tmp_path / "o", capture_output=True, text=True)
    said = " ".join(run.stderr.split())
    assert run.returncode == 2 and "got unexpected extra argument(s) (scans) (a path holding blanks, or a --glob " \
        "pattern such as '*.png', goes in quotes)" in said, said


def test_a_frame_stopped_before_its_report_leaves_no_mask_behind(sample_png, tmp_path, monkeypatch):
    # A QA pass: predict stopped between a frame's mask and its report left the mask alone, which the next run kept
    # as a file of one's own (its outputs then under a ~ name) and train would read as an expert's.
    import ipp_seg.inference.report as report_module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "write_overlay_png", stopped)
    result = invoke("predict", sample_png, "--out", tmp_path / "out")
    assert result.exit_code == 130
    assert list((tmp_path / "out").iterdir()) == []


def _folder_with_failures(tmp_path: Path, sample_png: Path) -> Path:
    """A sample frame, two files that fail (damaged, blank) and a report that is no image."""
    import cv2

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "frame.png")
    (scans / "damaged.png").write_bytes(b"not an image at all")
    cv2.imwrite(str(scans / "blank.png"), np.zeros((300, 300), np.uint8))
    (scans / "report.pdf").write_bytes(b"%PDF-1.4 a report")
    return scans


def test_batch_names_the_files_that_failed_and_why(tmp_path, sample_png):
    # A scripting user's pass: a job's log said "2 failed" and no more; the CSV had to be opened to learn which.
    scans = _folder_with_failures(tmp_path, sample_png)
    result = invoke("batch", scans, "--out", tmp_path / "out", "--glob", "*", "--workers", "1")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "failed: damaged.png (unreadable): not a PNG, JPEG, BMP or TIFF image" in said
    assert "failed: blank.png (not_ultrasound_frame): every pixel holds 0" in said
    assert "report.pdf" not in said  # no image in it: counted apart by the summary, not named
    assert "frame.png" not in said and "further files" not in said


def test_batch_names_the_first_failed_files_then_says_where_the_rest_are(tmp_path, sample_png, monkeypatch):
    monkeypatch.setattr(cli, "FAILED_FILES_NAMED", 1)
    scans = _folder_with_failures(tmp_path, sample_png)
    result = invoke("batch", scans, "--out", tmp_path / "out", "--glob", "*.png", "--workers", "1")
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0 and said.count("failed: ") == 2, said
    assert "(unreadable)" in said or "(not_ultrasound_frame)" in said
    assert f"failed: further files not named here; the status, reasons and error columns of " \
           f"{tmp_path / 'out' / 'measurements.csv'} hold every one" in said


def test_failure_line_counts_the_frames_of_a_file_by_reason():
    rows = [{"status": "failed", "reasons": "ps_missing", "error": ""},
            {"status": "ok", "reasons": "", "error": ""},
            {"status": "failed", "reasons": "ps_missing", "error": ""},
            {"status": "failed", "reasons": "anatomy_unrecognised;ps_low_confidence", "error": ""}]
    assert cli._failure_line("cine.dcm", rows) == \
        "cine.dcm: 3 of 4 frames (ps_missing: 2, anatomy_unrecognised, ps_low_confidence)"
    assert cli._failure_line("cine.dcm", [{**row, "status": "ok"} for row in rows]) is None


def test_quiet_prints_nothing_on_stderr_but_errors(tmp_path, sample_png):
    # A cron job mails whatever a command writes: -q leaves only what went wrong.
    scans = _folder_with_failures(tmp_path, sample_png)
    command = [sys.executable, "-m", "ipp_seg", "-q", "batch", str(scans), "--out", str(tmp_path / "out"),
               "--glob", "*", "--workers", "1"]
    loud = subprocess.run([part for part in command if part != "-q"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert loud.returncode == 0 and "failed: " in loud.stderr and "measured now" in loud.stderr  # (-q holds back)
    quiet = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    with open(tmp_path / "out" / "measurements.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 4  # the rows are as without it
    refused = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)  # (the run is there: refused)
    assert refused.returncode == 2 and refused.stderr.startswith("ipp-seg: ") and "--resume" in refused.stderr
    predicted = subprocess.run([sys.executable, "-m", "ipp_seg", "-q", "predict", str(sample_png), "--json"],
                               capture_output=True, text=True, cwd=tmp_path)
    assert predicted.returncode == 0 and predicted.stderr == "" and json.loads(predicted.stdout)


def test_quiet_and_verbose_together_are_refused_and_quiet_goes_before_the_command(sample_png):
    both = invoke("-q", "-v", "models")
    assert both.exit_code == 2 and "--quiet and --verbose ask for opposite things" in both.output
    after = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", str(sample_png), "-q"], capture_output=True,
                           text=True)
    assert after.returncode == 2 and "ipp-seg: -q is ipp-seg's own option: it goes before the command (ipp-seg -q " \
                                     "predict ...)" in after.stderr


def test_a_command_out_of_memory_says_so_and_exits_2(tmp_path, sample_png):
    # An admin's pass: under ulimit -v a MemoryError ended predict in a traceback, exit 1 (a failed measurement).
    script = textwrap.dedent(f"""
        import sys
        import ipp_seg.cli as cli
        def no_memory(level):
            raise MemoryError
        cli.configure_logging = no_memory
        sys.argv = ["ipp-seg", "predict", {str(sample_png)!r}]
        cli.main()
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("ipp-seg: out of memory: give ipp-seg more (a ulimit -v or a container's limit")


def test_a_row_out_of_memory_or_without_a_library_names_the_machine_not_the_file(tmp_path):
    from ipp_seg.inference.batch import _processing_failure, _reading_failure
    from ipp_seg.io import Provenance, UltrasoundFrame

    said = _reading_failure(tmp_path / "a.dcm", 0, MemoryError()).reason
    assert said.startswith("out of memory: give ipp-seg more") and "please report" not in said
    said = _reading_failure(tmp_path / "a.mha", 0, ImportError("failed to map segment from shared object")).reason
    assert said.startswith("a library could not be loaded (failed to map segment from shared object): out of memory")
    frame = UltrasoundFrame(np.zeros((8, 8), np.uint8), None, (), 0, 1, Provenance("a.png", "image"))
    assert _processing_failure(frame, "segmenting", MemoryError()).reason.startswith("out of memory")
    # Anything else is still a bug to report, by its type only when reading (a reader's message may quote a header).
    assert _reading_failure(tmp_path / "a.dcm", 0, KeyError("Müller")).reason == \
        "unexpected error while reading (KeyError); please report it to the ipp-seg developers"


def test_a_csv_one_may_not_write_is_named_as_what_must_be_made_writable(tmp_path, sample_png, monkeypatch):
    # A QA pass: a colleague's CSV in a shared output folder, theirs alone; the run said "once the folder can be
    # written", where the folder could be.
    from ipp_seg.inference import batch as batch_module

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_png, scans / "a.png")
    assert invoke("batch", scans, "--out", tmp_path / "out", "--workers", "1").exit_code == 0
    shutil.copy(sample_png, scans / "b.png")

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self._path))

    monkeypatch.setattr(batch_module._WholeRowsFile, "_open", refused)
    result = invoke("batch", scans, "--out", tmp_path / "out", "--workers", "1", "--resume")
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "measurements.csv)" in said and "once it can be written (permission" in said, said


def test_a_run_records_a_command_with_a_name_that_is_not_utf8_as_text_a_shell_runs_again(tmp_path):
    # A carry-over of a QA pass: a folder named in Latin-1 (n\xfcpe) put lone surrogates into the run record's
    # "command", which strict JSON readers refuse, and no shell could run it again as written.
    import shutil
    import subprocess

    from ipp_seg.printable import shell_command

    words = ["ipp-seg", "batch", os.fsdecode(b"/scans/n\xfcpe d'ir"), "--out", "a b", "\u00f6.dcm", "--glob", "*"]
    line = shell_command(words)
    line.encode("utf-8")  # text: no lone surrogate left
    assert "$'/scans/n\\xfcpe d\\x27ir'" in line and "'a b'" in line and "'*'" in line
    if shutil.which("bash"):  # the same bytes, word for word, when a shell runs it
        said = subprocess.run(["bash", "-c", "printf '%s\\0' " + line], capture_output=True, check=True).stdout
        assert said.split(b"\0")[:-1] == [os.fsencode(w) for w in words]


def test_predict_says_the_options_that_changed_its_numbers(sample_png):
    # A reproducibility pass: a table made with --tta --method challenge read 125.7 against 125.0, both labelled
    # only with the model's name.
    changed = runner.invoke(app, ["predict", str(sample_png), "--tta", "--method", "challenge"])
    assert changed.exit_code == 0, changed.output
    assert "ipp-seg predict (--method challenge, --tta)" in changed.stdout
    assert "on CPU (onnxruntime), --method challenge, --tta" in changed.stderr
    plain = runner.invoke(app, ["predict", str(sample_png), "--orientation", "standard"])
    assert "ipp-seg predict" in plain.stdout and "ipp-seg predict (" not in plain.stdout
    assert plain.stderr.splitlines()[0] == "model dssau-net-s on CPU (onnxruntime)"


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="limits a child's file size (POSIX)")
def test_an_output_cut_short_by_a_file_size_limit_is_named(tmp_path, sample_png):
    # A batch operator's pass: under `ulimit -f` the run said "cannot write into OUT: File too large ... (the cause
    # above put right)", naming no file, and nothing above.
    import resource
    import signal

    from ipp_seg.io.writers import replacing

    with pytest.raises(OSError) as cut:
        with replacing(tmp_path / "out.png") as fh:
            fh.write(b"x")
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))  # as a write past the limit fails
    assert cut.value.filename == str(tmp_path / "out.png") and not list(tmp_path.iterdir())

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # a CSV's rows, not an overlay

    shutil.copy(sample_png, tmp_path / "scan.png")
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "batch", str(tmp_path), "--glob", "scan.png", "--out",
                          str(tmp_path / "out"), "--overlays", "--workers", "1"], preexec_fn=limited,
                         capture_output=True, text=True, timeout=300)
    said = " ".join(run.stderr.split())
    assert run.returncode == 2 and f"File too large ({tmp_path / 'out' / 'overlays' / 'scan.png'})" in said, said
    assert "(a file size limit, ulimit -f, high enough)" in said
    # predict says the limit too (a QA pass), and batch names its CSV where the rows are what the limit stops.
    run = subprocess.run([sys.executable, "-m", "ipp_seg", "predict", str(tmp_path / "scan.png"), "--out",
                          str(tmp_path / "p")], preexec_fn=limited, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "File too large under a file size limit (ulimit -f)" in run.stderr, run.stderr

    def tighter():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (800, 800))  # short of a CSV row and of the run record

    run = subprocess.run([sys.executable, "-m", "ipp_seg", "batch", str(tmp_path), "--glob", "scan.png", "--out",
                          str(tmp_path / "b"), "--workers", "1"], preexec_fn=tighter, capture_output=True, text=True,
                         timeout=300)
    # (The run record or the CSV, whichever the limit stops first: named, not "cannot write into b".)
    assert run.returncode == 2 and re.search(rf"File too large \({re.escape(str(tmp_path / 'b'))}/[^)]+\)",
                                             run.stderr), run.stderr


def test_a_stop_in_a_command_that_does_not_take_it_is_a_keyboard_interrupt_again():
    # A code review: Ctrl-C, ending the process at once from its start, had left evaluate's staging file (.part)
    # where a KeyboardInterrupt removes it on the way out; SIGTERM and SIGHUP had gone on doing so. Commands that
    # take stops over keep the start-up handler till they do.
    import signal

    import ipp_seg.cli as cli

    stops = cli._stop_signals()
    previous = {number: signal.signal(number, cli._stopped) for number in stops}  # (as main() sets them at start)
    try:
        assert runner.invoke(app, ["reasons", "ps_missing"]).exit_code == 0
        assert all(signal.getsignal(number) is cli._said_and_interrupted for number in stops)
        with pytest.raises(KeyboardInterrupt):
            cli._said_and_interrupted(signal.SIGTERM, None)
        assert all(signal.getsignal(number) is cli._stopped_at_once for number in stops)  # (a second: at once)
        for number in stops:
            signal.signal(number, cli._stopped)
        assert runner.invoke(app, ["predict", "--help"]).exit_code == 0
        assert all(signal.getsignal(number) is cli._stopped for number in stops)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # (a program's own: left as it is)
        assert runner.invoke(app, ["reasons", "ps_missing"]).exit_code == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="needs SIGHUP (POSIX)")
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_evaluate_stopped_while_it_writes_leaves_no_staging_file(tmp_path, stoppable, stop):
    # SIGTERM or SIGHUP in evaluate (measure, export) ended the process at once, leaving a staging .part file in
    # --out where one came while it wrote; Ctrl-C removed it. Each now stops with a line, 130, and no .part.
    _one_case_to_evaluate(tmp_path, 96)
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import ipp_seg.evaluate.report as report
        from ipp_seg import cli

        written = report._write_case_rows

        def write_then_stop(*args):  # the stop comes once the cases' staging file holds rows
            written(*args)
            os.kill(os.getpid(), signal.{stop})

        report._write_case_rows = write_then_stop
        sys.argv = ["ipp-seg", "evaluate", {str(tmp_path / 'pred')!r}, {str(tmp_path / 'gt')!r}, "--out", {str(out)!r}]
        cli.main()
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         preexec_fn=stoppable)
    assert run.returncode == 130, run.stderr
    assert f"ipp-seg: stopped ({stop})" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert out.is_dir() and list(out.iterdir()) == []  # neither file, nor a staging file of one
