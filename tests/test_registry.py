"""The models folder: cards, names, files and checksums (ipp_seg.inference.registry)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipp_seg.cli import app
from ipp_seg.inference.backends import load_segmenter
from ipp_seg.inference import registry
from ipp_seg.inference.registry import ModelNotFoundError, models_dir, resolve_model, shipped_models

SHIPPED = models_dir()


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """A models folder holding a copy of the default model's card and ONNX file."""
    for suffix in (".json", ".onnx"):
        shutil.copy(SHIPPED / f"dssau-net-s{suffix}", tmp_path / f"dssau-net-s{suffix}")
    monkeypatch.setenv("IPP_SEG_MODELS", str(tmp_path))
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def test_a_broken_card_is_left_out_with_a_warning_and_the_others_still_work(folder, caplog):
    (folder / "broken.json").write_text("{bad")
    (folder / "notes.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in shipped_models()] == ["dssau-net-s"]
    assert "broken.json is left out" in caplog.text and "cannot be read as a model card" in caplog.text
    assert "notes.json is left out" in caplog.text and "not a model card" in caplog.text
    result = invoke("models")
    assert result.exit_code == 0 and "dssau-net-s" in result.stdout and "Traceback" not in result.output
    assert resolve_model(None).onnx_path == folder / "dssau-net-s.onnx"
    # A folder of one's own is named as such, not as the shipped models validated on PSFHS's blocks.
    said = " ".join(result.stdout.split())
    assert "($IPP_SEG_MODELS)" in said and "Shipped models" not in said and "aop_reference.csv" not in said


def test_a_card_whose_confidence_floors_are_not_those_ship_model_writes_is_left_out(folder, caplog):
    # A QA auditor's pass: floors of 0 in a card had passed a frame of noise as measured, without a warning.

    card = json.loads((folder / "dssau-net-s.json").read_text())
    for name, floors in (("own", {"head": 0.85, "ps": 0.72}), ("zero", {"head": 0.0, "ps": 0.0}),
                         ("high", {"head": 0.9, "ps": 0.95}), ("text", {"head": "0.8", "ps": 0.8}),
                         ("half", {"head": 0.8})):
        shutil.copy(folder / "dssau-net-s.onnx", folder / f"{name}.onnx")
        (folder / f"{name}.json").write_text(json.dumps({**card, "confidence_floors": floors}))
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in shipped_models()] == ["dssau-net-s", "own"]
    for name in ("zero", "high", "text", "half"):
        assert (f"{name}.json is left out of the models: its confidence_floors are not those scripts/ship_model.py "
                "writes (head and ps, each from 0.60 to 0.90)") in caplog.text
    assert "own.json is left out" not in caplog.text
    listed = json.loads(invoke("models", "--json").stdout)
    own = next(m for m in listed["models"] if m["name"] == "own")
    assert own["card_sha256"] == hashlib.sha256((folder / "own.json").read_bytes()).hexdigest()
    assert own["confidence_floors"] == {"head": 0.85, "ps": 0.72}
    # The same file by its path is judged with its card's floors too (a QA pass: by path, the defaults had warned it).
    from ipp_seg.inference.backends import confidence_floors_used

    assert confidence_floors_used(resolve_model(str(folder / "own.onnx"))) == {"head": 0.85, "ps": 0.72}
    assert confidence_floors_used(resolve_model(str(folder / "zero.onnx"))) == {"head": 0.9, "ps": 0.9}  # (no card)
    assert next(m for m in listed["models"] if m["name"] == "dssau-net-s")["confidence_floors"] == {"head": 0.9,
                                                                                                    "ps": 0.9}
    # (A folder of one's own is not told to check out the shipped models, a QA pass.)
    with pytest.raises(ModelNotFoundError, match="confidence_floors.*put it back as scripts/ship_model.py wrote it, "
                                                 "or ship the model again"):
        resolve_model("zero")


def test_a_model_is_named_by_its_card_file_and_renamed_files_follow(folder):
    (folder / "dssau-net-s.json").rename(folder / "hospital-ft.json")
    (folder / "dssau-net-s.onnx").rename(folder / "hospital-ft.onnx")
    spec = resolve_model("hospital-ft")
    assert spec.name == "hospital-ft" and spec.onnx_path == folder / "hospital-ft.onnx"
    load_segmenter(spec, threads=1)  # the card's checksum still describes the renamed file
    # The folder is named, and where it came from: $IPP_SEG_MODELS chose it here.
    with pytest.raises(ModelNotFoundError, match=r"shipped in .*\(\$IPP_SEG_MODELS\): hospital-ft"):
        resolve_model("dssau-net-s")


def test_a_card_whose_file_is_missing_says_so(folder):
    spec = resolve_model("dssau-net-s")  # the card's figures, as `ipp-seg models` shows them, from Python
    assert spec.validated_by == "dssau-net-s-heldout" and 0.8 < spec.validation["dice_ps"] < 1
    assert spec.missing_files == (folder / "dssau-net-s.pt",)  # the card names it; the copy left it out
    (folder / "dssau-net-s.onnx").unlink()
    assert resolve_model("dssau-net-s").missing_files == (folder / "dssau-net-s.onnx", folder / "dssau-net-s.pt")
    assert "dssau-net-s.onnx (missing)" in invoke("models").stdout
    with pytest.raises(ModelNotFoundError, match=r"lists dssau-net-s\.onnx, which is not in"):
        load_segmenter(resolve_model("dssau-net-s"))
    result = invoke("predict", SHIPPED.parent / "sample_data" / "psfhs_04700.png")
    assert result.exit_code == 2 and "which is not in" in result.output and "Traceback" not in result.output


def test_a_card_named_as_another_reads_it_is_left_out_and_ship_refuses_such_names(folder, caplog):
    # A review: dssau\u2011net-s (a non-breaking hyphen) was listed beside the default and its table named the
    # other weights exactly as the default; ship_model had accepted it, and names the registry leaves out.
    from ipp_seg.train.ship import _check_model_name

    for suffix in (".json", ".onnx"):
        shutil.copy(folder / f"dssau-net-s{suffix}", folder / f"dssau\u2011net-s{suffix}")
    with caplog.at_level("WARNING"):
        assert [spec.name for spec in shipped_models()] == ["dssau-net-s"]
    assert "its name reads as another model's (both read as 'dssau-net-s')" in caplog.text
    # Asked for by that name, it is said to read as the listed model (a QA pass: "cannot be read as a model card ...
    # it changed while read"); a name that only differs in case, with no card, asks whether the listed one was meant.
    with pytest.raises(ModelNotFoundError, match="its name reads as the model 'dssau-net-s'"):
        resolve_model("dssau\u2011net-s")
    with pytest.raises(ModelNotFoundError, match="unknown model 'DSSAU-Net-S' .*; did you mean dssau-net-s\\?"):
        resolve_model("DSSAU-Net-S")
    (folder / "dssau\u2011net-s.json").unlink()
    # A card without "files" is no card (it had ended `ipp-seg models` in a KeyError).
    (folder / "nofiles.json").write_text(json.dumps({"config": "dssau-net-s"}))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert [spec.name for spec in shipped_models()] == ["dssau-net-s"]
    assert "nofiles.json is left out of the models: it is not a model card" in caplog.text
    for name, said in (("dssau-net-s ", "blank"), ("x\u200by", "invisible"), ("a\tb", "control characters"),
                       ("DSSAU-NET-S", "reads as"), ("dssau\u2011net-s", "reads as")):
        with pytest.raises(ValueError, match=said):
            _check_model_name(name, folder)
    _check_model_name("dssau-net-s", folder)  # (its own name: --replace decides)
    _check_model_name("my-model", folder)


def test_a_card_must_list_each_files_sha256_in_either_case(folder, caplog):
    # A QA pass: a card whose sha256 was emptied ran another model's weights under its name, with its figures; and
    # one written in capitals was taken for another file.
    card = json.loads((folder / "dssau-net-s.json").read_text())
    card["files"]["onnx"]["sha256"] = card["files"]["onnx"]["sha256"].upper()
    (folder / "dssau-net-s.json").write_text(json.dumps(card))
    assert resolve_model("dssau-net-s").mismatched_files == ()
    assert load_segmenter(resolve_model("dssau-net-s"), threads=1).info.model_sha256 == card["files"]["onnx"][
        "sha256"].lower()
    card["files"]["onnx"]["sha256"] = ""
    (folder / "dssau-net-s.json").write_text(json.dumps(card))
    shutil.copy(SHIPPED / "star-dssau-net-s.onnx", folder / "dssau-net-s.onnx")
    with caplog.at_level("WARNING"):
        assert [spec.name for spec in shipped_models()] == []
    assert "its onnx file 'dssau-net-s.onnx' has no sha256 as scripts/ship_model.py lists it" in caplog.text
    # An entry without a name or a sha256 still serves the file beside the card: unchecked, it had run the STAR
    # weights as the default model, with the default's figures (a review).
    for entry in ({}, {"sha256": None}):
        caplog.clear()
        card["files"] = {"onnx": entry, "torch": {}}
        (folder / "dssau-net-s.json").write_text(json.dumps(card))
        with caplog.at_level("WARNING"):
            assert [spec.name for spec in shipped_models()] == []
        assert "its onnx file '(beside it)' has no sha256 as scripts/ship_model.py lists it" in caplog.text


def test_a_card_that_describes_another_network_than_its_file_is_refused(folder):
    # A card whose sha256 is the file's, but whose config is not the network the file holds: its figures and name
    # are another network's.
    from ipp_seg.inference.backends import BackendError

    card = json.loads((folder / "dssau-net-s.json").read_text())
    shutil.copy(SHIPPED / "star-dssau-net-s.onnx", folder / "dssau-net-s.onnx")
    card["files"] = {"onnx": {"name": "dssau-net-s.onnx",
                              "sha256": hashlib.sha256((folder / "dssau-net-s.onnx").read_bytes()).hexdigest()}}
    (folder / "dssau-net-s.json").write_text(json.dumps(card))
    with pytest.raises(BackendError, match="holds a star-dssau-net-s network, its card dssau-net-s.json describes "
                                           "dssau-net-s"):
        load_segmenter(resolve_model("dssau-net-s"), threads=1)


def test_a_model_file_that_is_not_the_cards_is_refused(folder):
    # Another model's weights under this card's name: its validation figures would be wrong.
    shutil.copy(SHIPPED / "star-dssau-net-s.onnx", folder / "dssau-net-s.onnx")
    with pytest.raises(ModelNotFoundError, match="is not the file its card dssau-net-s.json describes"):
        load_segmenter(resolve_model("dssau-net-s"))
    # The file runs by its path under a name of its own (no card, no claim); under the card's name it is refused.
    with pytest.raises(ModelNotFoundError, match="give them a name of their own"):
        resolve_model(str(folder / "dssau-net-s.onnx"))
    shutil.copy(folder / "dssau-net-s.onnx", folder.parent / "star-copy.onnx")
    assert load_segmenter(resolve_model(str(folder.parent / "star-copy.onnx")), threads=1).info.input_size
    assert resolve_model("dssau-net-s").mismatched_files == (folder / "dssau-net-s.onnx",)
    shutil.copy(SHIPPED / "dssau-net-s.onnx", folder / "dssau-net-s.onnx")
    assert resolve_model("dssau-net-s").mismatched_files == ()
    # Cut short in a copy: said so, with the sizes (its advice to run the file itself had failed as well).
    data = (SHIPPED / "dssau-net-s.onnx").read_bytes()
    (folder / "dssau-net-s.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelNotFoundError, match=rf"holds {len(data) // 3:,} of the {len(data):,} bytes the card "
                                                 r"lists \(a copy cut short\?\).*copy it again"):
        load_segmenter(resolve_model("dssau-net-s"))


def test_a_hostile_card_is_left_out_unread_or_unfollowed(folder, caplog):
    # A security review: a card nested too deep ended predict and models in a RecursionError, a pipe named as a card
    # hung them, a card's file named through .. or by an absolute path had that model run, and a validation of text
    # ended models in a traceback.
    import os

    (folder / "deep.json").write_text("[" * 100000)
    os.mkfifo(folder / "pipe.json")
    card = json.loads((folder / "dssau-net-s.json").read_text())
    outside = folder.parent / "elsewhere"
    outside.mkdir()
    shutil.copy(folder / "dssau-net-s.onnx", outside / "other.onnx")
    for name, change, said in (("up", {"files": {**card["files"], "onnx": {**card["files"]["onnx"],
                                                                          "name": "../elsewhere/other.onnx"}}},
                                "is not a file name"),
                               ("absolute", {"files": {**card["files"], "onnx": {**card["files"]["onnx"],
                                                                                "name": str(outside / "other.onnx")}}},
                                "is not a file name"),
                               ("text", {"validation": "SECRET"}, "'validation' is not what"),
                               ("source", {"validation_source": {"checkpoint": 3}}, "names no checkpoint")):
        (folder / f"{name}.json").write_text(json.dumps({**card, **change}))
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in shipped_models()] == ["dssau-net-s"]
    assert "deep.json is left out" in caplog.text and "nest too deeply" in caplog.text
    assert "pipe.json is left out" in caplog.text and "not a regular file" in caplog.text
    assert caplog.text.count("is not a file name") == 2 and "'validation' is not what" in caplog.text
    assert "names no checkpoint" in caplog.text
    result = invoke("models")
    assert result.exit_code == 0 and "Traceback" not in result.output and "dssau-net-s" in result.stdout
    with pytest.raises(ModelNotFoundError):
        resolve_model("up")


def test_a_damaged_card_is_named_as_such_not_as_missing(folder, caplog):
    # Its model had been said to have "no model card (dssau-net-s.json) beside it", the card being there.
    card = folder / "dssau-net-s.json"
    card.write_text(card.read_text()[:200])
    with pytest.raises(ModelNotFoundError, match=r"its card .*dssau-net-s\.json cannot be read as a model card"):
        resolve_model("dssau-net-s")
    assert "cannot be read as a model card" in caplog.text  # and the warning says why
    # The error says why itself (a QA pass: under -q, which keeps warnings back, it said "see the warning above").
    card.write_text(json.dumps({"config": "dssau-net-s", "files": {}, "validation": "text"}))
    with pytest.raises(ModelNotFoundError, match=r"ship_model.py: its 'validation' is not what"):
        resolve_model("dssau-net-s")


def test_a_model_file_without_a_card_is_named_when_asked_for_by_name(folder):
    shutil.copy(SHIPPED / "dssau-net-s.onnx", folder / "ours.onnx")
    with pytest.raises(ModelNotFoundError, match=r"ours.onnx has no model card \(ours.json\) beside it, so it is "
                                                 r"not listed; run the file itself with --model .*ours.onnx"):
        resolve_model("ours")
    with pytest.raises(ModelNotFoundError, match="unknown model 'theirs'") as unknown:
        resolve_model("theirs")
    assert "shipped with ipp-seg" not in str(unknown.value)
    # A shipped model asked for by name, with a models folder of one's own set: said so.
    with pytest.raises(ModelNotFoundError, match=r"star-dssau-net-s is one of the models shipped with ipp-seg, "
                                                 r"which \$IPP_SEG_MODELS replaces: copy its files into that folder"):
        resolve_model("star-dssau-net-s")
    with pytest.raises(ModelNotFoundError) as path_like:  # a path, not a name: no such hint
        resolve_model("../models/star-dssau-net-s")
    assert "shipped with ipp-seg" not in str(path_like.value)


def test_a_models_folder_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("IPP_SEG_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError, match=r"nowhere \(\$IPP_SEG_MODELS\) does not exist"):
        resolve_model(None)
    result = invoke("models")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "dssau-net-paper" in result.stdout  # the network configs need no model files
    # Set to a model file rather than its folder: said so, not "does not exist".
    (tmp_path / "mine.onnx").write_bytes(b"onnx")
    monkeypatch.setenv("IPP_SEG_MODELS", str(tmp_path / "mine.onnx"))
    with pytest.raises(ModelNotFoundError, match=r"mine.onnx \(\$IPP_SEG_MODELS\) is not a folder: name the folder"):
        resolve_model("mine")
    # Blanks alone (an admin's pass: the message had named no folder at all): quoted.
    monkeypatch.setenv("IPP_SEG_MODELS", "  ")
    with pytest.raises(ModelNotFoundError, match=r"the models folder '  ' \(\$IPP_SEG_MODELS\) does not exist"):
        resolve_model(None)


def test_a_models_folder_or_card_its_users_may_not_read(tmp_path, monkeypatch):
    # An admin's pass: installed under umask 077, the folder at mode 700 gave a traceback (predict, exit 1), a
    # message about the output folder (batch) or "No models found" with exit 0 (models). (The tests run as root,
    # whom permissions do not stop: what the system would say is given by os.access.)
    import os

    for name in ("m.json", "m.onnx"):
        shutil.copy(models_dir() / name.replace("m.", "dssau-net-s."), tmp_path / name)
    monkeypatch.setenv("IPP_SEG_MODELS", str(tmp_path))
    access = os.access
    closed = {str(tmp_path)}
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) not in closed and access(path, mode, **kw))
    said = r"models folder .* \(\$IPP_SEG_MODELS\) cannot be read \(Permission denied\): whoever installed ipp-seg"
    with pytest.raises(ModelNotFoundError, match=said):
        resolve_model("m")
    for args in (["models"], ["models", "--json"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "chmod -R a+rX on the folder" in result.output, args
    closed = {str(tmp_path / "m.onnx")}  # a model file closed (a second QA pass: `models` ended in a traceback)
    result = invoke("models")
    assert result.exit_code == 2 and "m.onnx (cannot be read)" in result.stdout
    assert "1 model file(s) cannot be read (Permission denied" in " ".join(result.output.split())
    result = invoke("models", "--json")
    listed = json.loads(result.stdout)["models"][0]["files"]["onnx"]
    assert result.exit_code == 2 and listed["readable"] is False and listed["matches_card"] is None
    closed = {str(tmp_path / "m.json")}  # the folder open, its files not
    real_open = os.open

    def refused(path, *args, **kwargs):
        if str(path) in closed:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    for args in (["models"], ["models", "--json"]):  # (every card closed: "no models found" and exit 0 had been said)
        result = invoke(*args)
        assert result.exit_code == 2 and "the model cards in" in result.output and "m.json" in result.output, args
    with pytest.raises(ModelNotFoundError, match=r"its card .*m.json cannot be read \(Permission denied\)"):
        resolve_model("m")
    # A folder above it that may not be searched (a QA pass: a traceback, exit 1).
    real_stat = os.stat

    def unreachable(path, *args, **kwargs):
        if str(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", unreachable)
    with pytest.raises(ModelNotFoundError, match=r"cannot be read \(Permission denied, a folder above it\)"):
        resolve_model("m")


def test_an_install_without_the_clones_models_says_what_to_do(tmp_path, monkeypatch):
    # pip install . (not -e) copies the package without the clone's models/ folder.
    monkeypatch.delenv("IPP_SEG_MODELS", raising=False)
    monkeypatch.setattr(registry, "__file__", str(tmp_path / "site-packages" / "ipp_seg" / "inference" / "registry.py"))
    with pytest.raises(ModelNotFoundError, match=r"pip install -e \. from a clone, or set IPP_SEG_MODELS"):
        resolve_model(None)


def test_the_shipped_cards_name_their_own_files():
    for spec in shipped_models():
        assert spec.card["name"] == spec.name and spec.onnx_path.name == spec.card["files"]["onnx"]["name"]
        assert json.loads(spec.card_path.read_text())["name"] == spec.name


def test_a_cards_training_case_ids_are_blocks_of_numbers_of_one_width_and_other_ids_alone():
    from ipp_seg.inference.registry import ModelSpec, case_id_blocks

    ids = [f"0{n}" for n in range(4402, 4602)] + ["03744", "03745", "pt-01", "9"]
    blocks = case_id_blocks(ids)
    assert blocks == [("9", "9"), ("03744", "03745"), ("04402", "04601"), ("pt-01", "pt-01")]
    spec = ModelSpec("m", None, None, {"training": {"train_case_ids": [list(b) for b in blocks]}})
    assert [spec.trained_on(c) for c in ("04500", "04601", "04602", "4500", "pt-01", "pt-02", "9", "09")] == [
        True, True, False, False, True, False, True, False]  # (4500 is no PSFHS ID of five digits)
    assert ModelSpec("m", None, None, {"training": {"train_ids": "03744-04801 (1058 frames)"}}).trained_case_ids == ()
    # Named IDs that end in a number of one width, after one prefix, are blocks too (a research fellow's case001 ...
    # case060 had been listed one by one).
    named = case_id_blocks([f"case{n:03d}" for n in range(1, 61)] + ["pt01_f0", "pt01_f1", "pt02_f0", "scan_a"])
    assert named == [("case001", "case060"), ("pt01_f0", "pt01_f1"), ("pt02_f0", "pt02_f0"), ("scan_a", "scan_a")]
    spec = ModelSpec("m", None, None, {"training": {"train_case_ids": [list(b) for b in named]}})
    assert [spec.trained_on(c) for c in ("case030", "case061", "case30", "pt01_f1", "pt02_f1", "scan_a", "scan_b")] == [
        True, False, False, True, False, True, False]


def test_a_twin_that_is_a_runs_last_checkpoint_is_named_by_its_run():
    from ipp_seg.inference.registry import ModelSpec

    spec = ModelSpec("mine", None, None, {"validation_source": {"checkpoint": "runs/held-out/last.pt"}})
    assert spec.validated_by == "held-out/last"  # (it had read "last")
    assert ModelSpec("m", None, None, {"validation_source": {"checkpoint": "models/x-heldout.pt"}}).validated_by == \
        "x-heldout"


def test_a_model_file_run_by_path_beside_a_card_of_another_file_is_refused(tmp_path, caplog):
    # A copy of a shipped model's folder with its .onnx changed ran by path without a word, its rows named as the
    # card's; then with a warning, which -q held back (a QA auditor: a SEG, an SR and a JSON named the genuine model).
    import shutil

    from ipp_seg.inference.registry import shipped_models_dir

    for suffix in (".onnx", ".json"):
        shutil.copy(shipped_models_dir() / f"dssau-net-s{suffix}", tmp_path / f"dssau-net-s{suffix}")
    with caplog.at_level("WARNING"):
        resolve_model(str(tmp_path / "dssau-net-s.onnx"))
    assert "not the file its model card" not in caplog.text  # the card's own file: nothing to say
    with open(tmp_path / "dssau-net-s.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelNotFoundError, match=r"is not the file its model card dssau-net-s.json describes "
                                                 r".*give them a name of their own .*or move the card away"):
        resolve_model(str(tmp_path / "dssau-net-s.onnx"))
    shutil.copy(tmp_path / "dssau-net-s.onnx", tmp_path / "changed.onnx")  # a name of its own: it runs
    assert resolve_model(str(tmp_path / "changed.onnx")).name == "changed"


def test_a_model_file_named_as_another_model_with_other_weights_is_refused(tmp_path, caplog):
    # star-dssau-net-s-heldout.onnx copied to fake/dssau-net-s.onnx ran without a word, every row, evaluate summary, SEG
    # and SR naming it dssau-net-s: only the sha256 told it from the default model.
    from ipp_seg.inference.registry import shipped_models_dir

    shutil.copy(shipped_models_dir() / "star-dssau-net-s-heldout.onnx", tmp_path / "dssau-net-s.onnx")
    # (Refused under -q too: a warning had been the only word, and -q held it back.)
    with pytest.raises(ModelNotFoundError, match=r"is named as the model dssau-net-s but holds other weights .*copy "
                                                 r"it to a name of its own"):
        resolve_model(str(tmp_path / "dssau-net-s.onnx"))
    # Names a reader takes for it (a QA pass: each ran, a SEG, an SR or a table naming it as the shipped model).
    for name, said in (("dssau-net-s .onnx", "may not begin or end with a blank"),
                       ("dssau-net-s\u200b.onnx", "nor hold invisible characters"),
                       ("dssau\u2011net-s.onnx", "is named as the model dssau-net-s but holds other weights"),
                       ("DSSAU-NET-S.onnx", "is named as the model dssau-net-s but holds other weights")):
        shutil.copy(shipped_models_dir() / "star-dssau-net-s-heldout.onnx", tmp_path / name)
        with pytest.raises(ModelNotFoundError, match=said):
            resolve_model(str(tmp_path / name))
    # Beside a card of its own under that name (or a JSON that is no card): refused all the same.
    fake = tmp_path / "own-card"
    fake.mkdir()
    shutil.copy(shipped_models_dir() / "star-dssau-net-s-heldout.onnx", fake / "dssau-net-s.onnx")
    card = json.loads((shipped_models_dir() / "dssau-net-s.json").read_text())
    card["files"]["onnx"]["sha256"] = hashlib.sha256((fake / "dssau-net-s.onnx").read_bytes()).hexdigest()
    for beside in (json.dumps(card), "{}"):
        (fake / "dssau-net-s.json").write_text(beside)
        with pytest.raises(ModelNotFoundError, match="is named as the model dssau-net-s but holds other weights"):
            resolve_model(str(fake / "dssau-net-s.onnx"))
    (tmp_path / "copy").mkdir()
    shutil.copy(shipped_models_dir() / "dssau-net-s.onnx", tmp_path / "copy" / "dssau-net-s.onnx")
    with caplog.at_level("WARNING"):
        resolve_model(str(tmp_path / "copy" / "dssau-net-s.onnx"))  # the same weights: nothing to say
        resolve_model(str(shipped_models_dir() / "dssau-net-s.onnx"))
    assert "other weights" not in caplog.text


def test_a_model_named_as_a_spreadsheet_formula_is_refused(tmp_path, folder, caplog):
    # A model file named =HYPERLINK(...).onnx had put a live formula in every row's model cell.
    from ipp_seg.inference.registry import shipped_models_dir

    shutil.copy(shipped_models_dir() / "dssau-net-s.onnx", tmp_path / '=HYPERLINK("x").onnx')
    with pytest.raises(ModelNotFoundError, match="may not begin with '='.*rename it"):
        resolve_model(str(tmp_path / '=HYPERLINK("x").onnx'))
    for suffix in (".json", ".onnx"):
        shutil.copy(folder / f"dssau-net-s{suffix}", folder / f"-x{suffix}")
    with caplog.at_level("WARNING"):
        assert [s.name for s in shipped_models()] == ["dssau-net-s"]
    assert "-x.json is left out of the models: a model's name may not begin with '-'" in caplog.text
    # A name holding a newline (a security review: it reached the CSV's model cells raw, splitting line-based rows).
    for suffix in (".json", ".onnx"):
        shutil.copy(folder / f"dssau-net-s{suffix}", folder / f"nl\nname{suffix}")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert [s.name for s in shipped_models()] == ["dssau-net-s"]
    assert "is left out of the models: a model's name may not hold control characters" in caplog.text
    with pytest.raises(ModelNotFoundError, match=r"may not hold control characters.*\(nl\\x0aname\)"):
        resolve_model(str(folder / "nl\nname.onnx"))


def test_a_run_folder_named_as_a_spreadsheet_formula_names_no_model(tmp_path):
    # A run's best.pt is named by its run folder (=x/best): the refusal had looked at "best" alone.
    run = tmp_path / "=HYPERLINK(1)"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not read")
    with pytest.raises(ModelNotFoundError, match="may not begin with '='"):
        resolve_model(str(run / "best.pt"))
    with pytest.raises(ModelNotFoundError, match="may not begin with '='.*rename its files"):
        resolve_model("=evil")  # (not "its card cannot be read": the name is the cause)
    with pytest.raises(ModelNotFoundError, match="may not begin with '\uff1d'"):
        resolve_model("\uff1devil")  # (a full-width ＝, which Excel's East Asian input takes for =)


def test_models_json_gives_each_files_checksum_for_a_pipeline_to_pin():
    # A pipeline engineer's pass: `models` had no --json, and the checksums were in the cards alone.
    import hashlib
    import json

    from typer.testing import CliRunner

    from ipp_seg.cli import app

    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    by_name = {m["name"]: m for m in listed["models"]}
    default = by_name["dssau-net-s"]
    assert default["default"] and sum(m["default"] for m in listed["models"]) == 1
    onnx = default["files"]["onnx"]
    assert onnx["present"] and onnx["matches_card"]
    assert onnx["sha256"] == hashlib.sha256(open(onnx["path"], "rb").read()).hexdigest()
    assert default["validated_by"] and 0.8 < by_name["dssau-net-s-heldout"]["validation"]["dice_ps"] < 1
    assert ["04602", "04801"] not in by_name["dssau-net-s-heldout"]["trained_case_ids"]
    assert {c["name"] for c in listed["configs"]} >= {"dssau-net-s", "star-dssau-net-s"}
