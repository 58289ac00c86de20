"""Turn a finished training run into a shipped model: ONNX export, slim PyTorch weights, and a
model card (JSON + Markdown) with the validation metrics measured through the same inference
path users run (onnxruntime, pre/post-processing, measurement).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..evaluate import evaluate_arrays, read_reference_aop, summarise_block
from ..inference.backends import OnnxSegmenter
from ..inference.batch import FRAMES_PER_BATCH
from ..inference.pipeline import (LOWEST_CONFIDENCE_FLOOR, MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE, measure_frame,
                                  segment_frames)
from ..inference.registry import ModelSpec, case_id_blocks, look_alike, model_name_unfit, sha256_of
from ..io import read_frame
from ..io.folders import folders_to_create, remove_made_folders
from ..io.writers import replacing
from ..machine import cpu_model, onnxruntime_version, software_version
from ..measure.result import SEGMENTATION_REASONS
from ..nn.configs import DEFAULT_CONFIG
from ..nn.export import export_checkpoint
from .data import find_pairs, id_range, load_cases
from .lineage import lineage_hours, lineage_of, run_cost, trained_before
from .loop import (BEST, TrainSettings, checkpoint_digest, load_checkpoint_model, load_torch_file,
                   read_checkpoint)

log = logging.getLogger(__name__)

PSFHS_CITATION = ("Chen G, Bai J, Ou Z, Lu Y, Wang H. PSFHS: Intrapartum ultrasound image dataset for AI-based "
                  "segmentation of pubic symphysis and fetal head. Scientific Data 11:436 (2024), "
                  "doi:10.1038/s41597-024-03266-4. Data: Zenodo 10969427, CC BY 4.0.")


# PSFHS's published AoP per case (the FH-PS-AOP evaluator on the expert masks), beside the frames.
REFERENCE_AOP_FILE = "aop_reference.csv"
# The shared PSFHS data's validation blocks, never trained on: the last 200 IDs (wide sector)
# and the last 30 of the narrow-sector IDs. Model cards and benchmarks report per block.
PSFHS_VALIDATION_BLOCKS = {"wide (04602-04801)": ("04602", "04801"), "narrow (04372-04401)": ("04372", "04401")}


def _block_metrics(block) -> dict:
    m = block.metrics
    return {
        "cases": block.n_cases,
        "dice_ps": m["dice_ps"].mean, "dice_fh": m["dice_fh"].mean, "dice_all": m["dice_all"].mean,
        "hd_all_px": m["hd_all"].mean, "asd_all_px": m["asd_all"].mean,
        "mean_abs_delta_aop_deg": m["delta_aop"].mean, "median_abs_delta_aop_deg": m["delta_aop"].median,
        # Against the folder's published AoP (PSFHS aop_reference.csv), where it has one.
        "mean_abs_delta_aop_reference_deg": m["delta_aop_reference"].mean,
        "median_abs_delta_aop_reference_deg": m["delta_aop_reference"].median,
        "failed_measurements": block.n_failed_pred, "failed_with_gt_ok": block.n_failed_pred_gt_ok,
        "score": block.score,
        # Signed: which way the AoP errs, and whether more so for larger angles (Bland-Altman).
        "aop_agreement": _agreement(block.agreement.get("aop")),
        "aop_reference_agreement": _agreement(block.agreement.get("aop_reference")),
    }


def _agreement(agreement) -> dict | None:
    return None if agreement is None else agreement.to_dict()


def segment_by_id(segmenter, frames: dict, tta: bool = False, confidences: dict | None = None,
                  extents: dict | None = None) -> dict:
    """Label masks of ``{case_id: frame}``, by case ID, in model calls of 8 frames as users'
    batches run. ``confidences``, when given, receives each frame's (head, PS) confidence, and
    ``extents`` its head extent."""
    ids = list(frames)
    predictions = {}
    for start in range(0, len(ids), FRAMES_PER_BATCH):
        chunk = ids[start:start + FRAMES_PER_BATCH]
        segmented = segment_frames([frames[cid] for cid in chunk], segmenter, tta)
        predictions.update(zip(chunk, segmented.masks))
        if confidences is not None:
            confidences.update(zip(chunk, zip(segmented.head_confidence, segmented.ps_confidence)))
        if extents is not None:
            extents.update(zip(chunk, segmented.head_extent))
    return predictions


def confidence_floors(confidences) -> dict:
    """The confidences below which a model's results carry ``low_confidence`` and
    ``ps_low_confidence``, from (head, PS) confidences of its validation frames: 0.02 below
    their 1st percentile, never above the defaults the shipped models were checked with
    (:data:`~ipp_seg.inference.pipeline.MIN_HEAD_CONFIDENCE`, ``MIN_PS_CONFIDENCE``) and never
    below :data:`~ipp_seg.inference.pipeline.LOWEST_CONFIDENCE_FLOOR`. A model of one's own that is
    surer or less sure overall is then judged against its own frames, not the shipped models' (a
    small model trained on 24 frames had flagged every frame); one whose validation frames are
    barely above chance keeps its warnings (a model of PS Dice 0.03 had got floors of 0.34 and 0.32, and no warning)."""
    floors = {}
    for key, index, default in (("head", 0, MIN_HEAD_CONFIDENCE), ("ps", 1, MIN_PS_CONFIDENCE)):
        values = [float(c[index]) for c in confidences if c[index] is not None]
        floor = min(default, float(np.percentile(values, 1)) - 0.02) if values else default
        floors[key] = round(max(LOWEST_CONFIDENCE_FLOOR, floor), 3)
    return floors


def validate_segmenter(segmenter, data: str | Path, validation_ids: list[str],
                       blocks: dict[str, tuple[str, str]], tta_modes: tuple[bool, ...] = (False,),
                       labels: tuple[int, int] = (1, 2), floors: dict | None = None) -> list[dict]:
    """Segment the validation frames with ``segmenter`` as users would (ipp-seg's own reading,
    pre-processing and post-processing) and evaluate them, per named block of IDs
    (``{"name": (first_id, last_id)}``), per acquisition style and overall, with the default
    (ellipse) and the challenge AoP method, and against the folder's ``aop_reference.csv`` where
    it has one. One result per entry of ``tta_modes``; the frames are read once for all of them.
    ``labels``: the PS and FH values of the folder's masks (as the model was trained with).
    ``floors``: the confidence floors batch judges the frames with (a shipped card's own); None:
    those of this validation's plain run, as a card newly shipped gets them."""
    found = find_pairs(data)  # scanned once: its unpaired files are named once
    pairs = {cid: (img, lab) for cid, img, lab in found}
    reference_csv = Path(data) / REFERENCE_AOP_FILE
    reference = read_reference_aop(reference_csv) if reference_csv.is_file() else None
    wanted = set(validation_ids)
    lacking = sorted(wanted - set(pairs))
    if lacking:
        raise ValueError(f"{data} lacks {len(lacking)} of the validation cases (e.g. {', '.join(lacking[:3])}): give "
                         "the data folder the run was trained on")
    truth = {c.case_id: c for c in load_cases(data, wanted, labels, pairs=found)}
    ids = sorted(wanted)
    frames = {cid: read_frame(pairs[cid][0]) for cid in ids}
    results = []
    case_ids = [list(block) for block in case_id_blocks(ids)]
    judged_by = floors  # else the first mode's (plain): the card's, which batch applies with --tta too
    for tta in tta_modes:
        started = time.perf_counter()
        confidences: dict = {}
        extents: dict = {}
        predictions = segment_by_id(segmenter, frames, tta, confidences, extents)
        seconds = time.perf_counter() - started
        own_floors = confidence_floors(confidences.values())
        judged_by = judged_by or own_floors
        result = {"frames": len(ids), "case_ids": case_ids,
                  "inference_seconds": round(seconds, 1), "tta": tta, "confidence_floors": own_floors}
        # What batch adds to each row beyond its masks (low confidence against the card's floors,
        # the frame's own signs): a frame it fails as anatomy_unrecognised is failed here too, so
        # that the card's figures are those batch and evaluate give. (A model of one's own whose
        # validation frames all fell below the floors had a card of figures no run reproduced.)
        recorded = {cid: tuple(code for code in measure_frame(
            predictions[cid], frames[cid], method="ellipse", orientation="standard",
            head_confidence=confidences[cid][0], head_extent=extents[cid], ps_confidence=confidences[cid][1],
            confidence_floors=(judged_by["head"], judged_by["ps"])).reasons if code in SEGMENTATION_REASONS)
            for cid in ids}
        for method in ("ellipse", "challenge"):
            report = evaluate_arrays([(cid, predictions[cid], truth[cid].labels, truth[cid].image) for cid in ids],
                                     method=method, reference_aop=reference, recorded_reasons=recorded)
            per_method = {"overall": _block_metrics(report.overall)}
            for name, (first, last) in blocks.items():
                cases = [c for c in report.cases if first <= c.case_id <= last]
                if cases:  # (a block of other data than the run's holds none of its frames)
                    per_method[name] = _block_metrics(summarise_block(name, cases))
            for block in report.blocks[1:]:  # styles told apart from the frames themselves
                per_method[f"style:{block.name}"] = _block_metrics(block)
            result[method] = per_method
        results.append(result)
    return results


def validate_onnx(onnx_path: Path, data: str | Path, validation_ids: list[str],
                  blocks: dict[str, tuple[str, str]], tta_modes: tuple[bool, ...] = (False,),
                  labels: tuple[int, int] = (1, 2), floors: dict | None = None) -> list[dict]:
    """:func:`validate_segmenter` for an exported ONNX file, run by onnxruntime in a session of
    ``ipp-seg batch``'s fixed call size: onnxruntime's last bits differ between a session left
    open in its batch size and one fixed to it, which had moved a 30-frame block's median angle
    by 0.24 deg between a card and the batch run that reproduces it."""
    segmenter = OnnxSegmenter(ModelSpec(onnx_path.stem, onnx_path, None, None), threads=None,
                              fixed_batch=FRAMES_PER_BATCH)
    return validate_segmenter(segmenter, data, validation_ids, blocks, tta_modes, labels, floors)


# Settings that may differ between a model trained on every frame and the run that validates
# its recipe: where things are, how many cores ran it, its seed, and the split itself. Where a
# run started (init_from) is compared by the lineage instead, run by run: the final model's
# parent may itself be an every-frame run, whose held-out twin is the reference's parent.
NOT_RECIPE = frozenset({"data", "out", "device", "threads", "seed", "validation_count", "extra_validation",
                        "init_from"})


def recipe_differences(settings: dict, reference: dict) -> list[str]:
    """The training settings (other than :data:`NOT_RECIPE`) in which two runs differ; a setting
    that an older run did not record counts as its default (it did not exist, so it was off)."""
    a, b = TrainSettings.from_dict(settings).to_dict(), TrainSettings.from_dict(reference).to_dict()
    return sorted(k for k in set(a) - NOT_RECIPE if a[k] != b[k])


def lineage_differences(checkpoint: dict, reference: dict) -> list[str]:
    """How two checkpoints' whole recipes differ: their own settings (:func:`recipe_differences`)
    and, run by run, the runs they were fine-tuned through (config, the epoch each kept and
    its settings). Empty when one recipe, run for run, made both."""
    differences = recipe_differences(checkpoint["settings"], reference["settings"])
    averaged, averaged_ref = len(checkpoint.get("weight_average") or []), len(reference.get("weight_average") or [])
    if averaged != averaged_ref:
        differences.append(f"weight average ({averaged or 'no'} runs averaged against {averaged_ref or 'none'})")
    ours, theirs = checkpoint.get("lineage") or [], reference.get("lineage") or []
    if len(ours) != len(theirs):
        return [*differences, f"lineage ({len(ours)} earlier runs against {len(theirs)})"]
    for number, (a, b) in enumerate(zip(ours, theirs), start=1):
        if a == b:
            continue  # the same run, shared
        run = f"earlier run {number} ({a.get('checkpoint')} / {b.get('checkpoint')})"
        if not (a.get("settings", {}).get("augmentation") and b.get("settings", {}).get("augmentation")):
            differences.append(f"{run}: settings not recorded")
            continue
        if len(a.get("weight_average") or []) != len(b.get("weight_average") or []):
            differences.append(f"{run}: weight average")
        if a.get("epochs") != b.get("epochs"):
            differences.append(f"{run}: epoch kept {a.get('epochs')} against {b.get('epochs')}")
        differences += [f"{run}: {k}" for k in recipe_differences(a.get("settings", {}), b.get("settings", {}))]
    return differences


def _check_validated_by(what, trained_on_all: bool, validated_by) -> None:
    """A model trained on every frame needs a reference run for its validation; one with
    validation frames of its own must not be given one."""
    if trained_on_all and validated_by is None:
        raise ValueError(f"{what} was trained on every frame: name the run that validates its recipe (validated_by; "
                         "--validated-by of scripts/ship_model.py)")
    if not trained_on_all and validated_by is not None:
        raise ValueError(f"{what} has its own validation frames; validated_by is only for a run trained on all")


def _own_validation(onnx_path: Path, checkpoint: dict, data, blocks, floors: dict | None = None) -> list[dict]:
    """``onnx_path`` (the export of ``checkpoint``) validated on the checkpoint's own validation
    frames, plain and with TTA, reading the masks with the label values it was trained with;
    ``floors`` as for :func:`validate_segmenter`."""
    return validate_onnx(onnx_path, data, checkpoint["split"]["validation"], blocks, tta_modes=(False, True),
                         labels=TrainSettings.from_dict(checkpoint["settings"]).mask_labels, floors=floors)


def _reference_validation(validated_by: Path, checkpoint: dict, data, blocks,
                          fp16_weights: bool = False, floors: dict | None = None) -> tuple[dict, dict, dict]:
    """Validation of a model trained on every frame, measured on ``validated_by``: a checkpoint
    of the same recipe, trained without the validation blocks, at the same epoch (the final
    model keeps its last epoch, so the reference must not be a best-epoch pick)."""
    ref_model, ref = load_checkpoint_model(validated_by)
    differences = lineage_differences(checkpoint, ref)
    if differences:
        raise ValueError(f"{validated_by} is not the same recipe: it differs in {', '.join(differences)}")
    if ref["epoch"] != checkpoint["epoch"]:
        raise ValueError(f"{validated_by} is epoch {ref['epoch']}, the model to ship epoch {checkpoint['epoch']}: "
                         "validate with the reference run's checkpoint at the same epoch (its last.pt)")
    if not ref["split"]["validation"]:
        raise ValueError(f"{validated_by} has no validation frames either")
    # Its recipe is compared run for run, but not which frames its earlier runs held out: a reference whose chain
    # began from weights trained on every frame would have its fit called a validation (a review).
    seen = trained_before(ref.get("lineage") or [], ref["split"]["validation"])
    if seen:
        raise ValueError(f"{validated_by} is no held-out reference: a run its weights started from trained on "
                         f"{len(seen)} of its {len(ref['split']['validation'])} validation frames "
                         f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); validate with a twin whose every "
                         "run held them out")
    shipped = _shipped_export_of(validated_by, fp16_weights)
    if shipped is not None:  # the twin's own card then shows the very same figures
        validation, validation_tta = _own_validation(shipped, ref, data, blocks, floors)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            # Stored as the model to ship is, so that the figures are those of weights rounded alike.
            onnx_path = export_checkpoint(ref_model, ref, Path(tmp) / "reference.onnx", fp16_weights=fp16_weights)
            validation, validation_tta = _own_validation(onnx_path, ref, data, blocks, floors)
    source = {"checkpoint": str(validated_by), "epoch": ref["epoch"], "seed": ref["settings"]["seed"],
              "train_frames": len(ref["split"]["train"]),
              # Which ONNX file ran: the twin's shipped export, or one made from the checkpoint for this.
              "onnx": str(shipped) if shipped is not None else "exported from the checkpoint to validate it",
              "note": "These validation figures are the reference run's: the same recipe and epoch, trained "
                      "without the validation blocks. This model was trained on every frame, those blocks "
                      "included, so it has no validation of its own."}
    return validation, validation_tta, source


def _shipped_export_of(checkpoint_path: Path, fp16_weights: bool) -> Path | None:
    """The ONNX file shipped beside ``checkpoint_path`` as its export (a held-out twin in
    ``models/``: its card names both files, their checksums match, and its weights are stored
    as the model to ship stores them), or None. Validating a final model on that file, rather
    than on a new export, gives its card exactly the twin card's figures: a new export rounds
    the folded weights a little differently (Dice in the 7th digit, angles by up to 0.06 deg)."""
    card_path = checkpoint_path.with_suffix(".json")
    try:
        files = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = files.get("files", {}).get("onnx", {}).get("name") if isinstance(files, dict) else None
    if not name or Path(name).name != name:
        return None
    onnx = checkpoint_path.with_name(name)
    stored = files.get("weights_stored_as", "float32")
    if (not onnx.is_file() or files["files"].get("torch", {}).get("sha256") != sha256_of(checkpoint_path)
            or files["files"]["onnx"].get("sha256") != sha256_of(onnx)
            or stored != ("float16" if fp16_weights else "float32")):
        return None
    return onnx


def is_psfhs_folder(data: str | Path) -> bool:
    """Whether ``data`` is (a copy of) the PSFHS data: its layout, with its published AoP beside it."""
    data = Path(data)
    return (data / "image_mha").is_dir() and (data / "label_mha").is_dir() and (data / REFERENCE_AOP_FILE).is_file()


def card_blocks(data: str | Path) -> dict[str, tuple[str, str]]:
    """The blocks of IDs a card reports beside the overall figures: PSFHS's validation blocks for
    the PSFHS data, none for other data (its overall figures and acquisition styles only)."""
    return dict(PSFHS_VALIDATION_BLOCKS) if is_psfhs_folder(data) else {}


def _recorded_data(settings: dict, checkpoint_path: Path) -> Path:
    """The data folder a run trained on, as its checkpoint records it.

    Raises:
        ValueError: it records none, or only a relative one (runs from before paths were recorded
        in full), which would be taken from wherever this runs.
    """
    data = settings.get("data")
    if not data:
        raise ValueError(f"{checkpoint_path} records no data folder: name it (data)")
    if not Path(data).is_absolute():
        raise ValueError(f"{checkpoint_path} records its data folder as {data}, relative to where it was trained: "
                         "name the folder (data; --data of scripts/ship_model.py)")
    return Path(data)


def _check_command_config(command: str, configs: set, run_dir: Path) -> None:
    """Refuse a card's command whose ``ipp-seg train`` runs train a config that neither the run
    nor a run it was fine-tuned from had (``configs``): its ``--config``, or train's default where
    it names none. Pasted from another run, it would sit in the card beside the run's recorded
    config and contradict it. (A command without a train run is taken as given.)"""
    import shlex

    words = []
    for line in command.splitlines():  # (commands pasted one per line)
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, ""  # (a # inside a path is no comment)
            words += [*lexer, ";"]
        except ValueError:  # unbalanced quotes: a description rather than a command line
            return
    named, run, command_words = set(), None, []  # run: the words of the train run being read
    for word in words:
        if word in ("&&", "||", ";", "|", "&"):
            # A resumed run goes on with its own config (train keeps it): nothing to compare.
            if run is not None and "--resume" not in run:
                given = [run[i + 1] for i, w in enumerate(run[:-1]) if w == "--config"]
                given += [w.split("=", 1)[1] for w in run if w.startswith("--config=")]
                named.update(given or [DEFAULT_CONFIG])
            run, command_words = None, []
        elif run is not None:
            run.append(word)
        elif word == "train" and _invokes_ipp_seg(command_words):
            run = []  # ipp-seg's train subcommand (not a folder named train, nor a word of a description)
        else:
            command_words.append(word)
    other = sorted(named - configs)
    if other:
        runs = " or ".join(sorted(str(c) for c in configs if c))
        raise ValueError(f"the command trains {', '.join(other)} (its --config, or train's default {DEFAULT_CONFIG} "
                         f"where a run names none), but {run_dir} is a {runs} run: give the commands that made it "
                         "(--command)")


def _invokes_ipp_seg(words: list[str]) -> bool:
    """Whether ``words`` are a command that calls ipp-seg up to its subcommand: ``ipp-seg`` (or a
    path to it) or ``python -m ipp_seg``, then only options (``-v``)."""
    if words and (words[0] == "ipp-seg" or words[0].endswith("/ipp-seg")):
        rest = words[1:]
    elif len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "ipp_seg"]:
        rest = words[3:]
    else:
        return False
    return all(word.startswith("-") for word in rest)


def _check_same_frames(checkpoint: dict, run_dir: Path, data) -> None:
    """Refuse to ship a run with a card measured on other frames than it read: ``data``'s frames
    of the run's split, by the digest the run recorded of them (``data_sha256``; runs from before
    it was recorded are not checked). A copy, or a lossless conversion (MHA to PNG), is the same;
    a relabelled or re-exported mask is not, and had changed the card's figures while the card
    kept the run's digest."""
    recorded = checkpoint.get("data_sha256")
    if not recorded:
        return
    split, settings = checkpoint["split"], TrainSettings.from_dict(checkpoint["settings"])
    train_ids = split["train"][: settings.max_train_cases] if settings.max_train_cases else split["train"]  # as read
    try:
        read = load_cases(data, set(train_ids) | set(split["validation"]), settings.mask_labels)
    except ValueError as exc:  # (a mask of other label values, say)
        raise ValueError(f"{data} is not the data {run_dir} trained on: {exc}") from None
    found = {case.case_id for case in read}
    for kind, ids in (("validation", split["validation"]), ("training", train_ids)):
        lacking = sorted(set(ids) - found)
        if lacking:
            raise ValueError(f"{data} lacks {len(lacking)} of the {kind} cases (e.g. {', '.join(lacking[:3])}): give "
                             "the data folder the run was trained on")
    if checkpoint_digest({case.case_id: (case.image, case.labels) for case in read}) != recorded:
        raise ValueError(f"the frames in {data} differ from those {run_dir} trained and was validated on (the same "
                         "case IDs, other pixels or labels): its card would give figures of other frames; give the "
                         "folder it read, or train a run on these")


def _check_model_name(name: str, models_dir: Path) -> None:
    """Refuse a name the models folder would leave out or confuse with a model it holds, before
    the export and validation run (they had run, then the model was left out, or listed beside
    the default under a name that reads as its)."""
    if not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"a model's name is a file name, without folders or a leading dot: got {name!r}")
    if Path(name).suffix.lower() in (".onnx", ".pt", ".pth", ".json", ".md"):  # (--model NAME.onnx reads as a file)
        raise ValueError(f"a model's name is used without its files' suffixes: got {name!r}")
    unfit = model_name_unfit(name)
    if unfit:
        raise ValueError(f"{unfit}: got {name!r}")
    alike = sorted(card.stem for card in (models_dir.glob("*.json") if models_dir.is_dir() else ())
                   if card.stem != name and look_alike(card.stem) == look_alike(name))
    if alike:
        raise ValueError(f"{models_dir} holds a model {alike[0]!r}, which {name!r} reads as (letter case, another "
                         "hyphen or an invisible character): give another name, or the same name with --replace")


def ship_model(run_dir: str | Path, models_dir: str | Path, name: str, command: str,
               blocks: dict[str, tuple[str, str]] | None = None, data: str | Path | None = None,
               validated_by: str | Path | None = None, checkpoint_name: str = BEST,
               fp16_weights: bool = False, data_description: str | None = None, replace: bool = False) -> dict:
    """Export ``run_dir/<checkpoint_name>`` (best.pt: the best epoch by validation; last.pt: the
    last) as ``models/<name>.{onnx,pt,json,md}``; return the card.

    ``data``: the folder holding the validation frames (None: the one the run trained on, as its
    checkpoint records it in full); ``blocks``: the named blocks of IDs the card reports (None:
    :func:`card_blocks` of that folder).

    ``fp16_weights`` stores the weights of both files as float16 (half the size; a paper config
    in float32 is over 100 MB). The validation on the card is measured on the shipped ONNX file,
    so it is that of the rounded weights.

    ``data_description``: the training data's source, citation and licence, as the card states
    them; by default PSFHS's for the PSFHS data, and for other data the folder's name and that
    its source and licence were not recorded.

    A run trained on every frame (no validation split) needs ``validated_by``, the checkpoint
    of a run of the same recipe that held the validation blocks out (see
    :func:`_reference_validation`); its figures go on the card, said to be its.

    ``models_dir`` holding a model ``name`` already is refused unless ``replace``: its four files
    would be overwritten (in a clone's ``models/``, a shipped model's).

    The four files are written beside each other only once all of them are made: a refusal or
    an error on the way leaves ``models_dir`` as it was (a folder made for them is removed)."""
    run_dir, models_dir = Path(run_dir), Path(models_dir)
    _check_model_name(name, models_dir)
    if models_dir.exists() and not models_dir.is_dir():
        raise ValueError(f"the models folder {models_dir} is a file, not a folder")
    if (models_dir / f"{name}.json").exists():
        if not replace:
            raise ValueError(f"{models_dir} already holds a model {name}: give another name, or --replace to "
                             "overwrite its files")
        log.warning("%s replaces the model %s in %s", run_dir, name, models_dir)
    created = folders_to_create(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=f".ship-{name}-", dir=models_dir) as staging:
            card = _ship_into(run_dir, Path(staging), name, command, blocks, data, validated_by, checkpoint_name,
                              fp16_weights, data_description)
            for suffix in (".onnx", ".pt", ".md", ".json"):  # the card last: it is what lists a model
                os.replace(Path(staging) / f"{name}{suffix}", models_dir / f"{name}{suffix}")
    except BaseException:
        remove_made_folders(created)
        raise
    return card


def _ship_into(run_dir: Path, models_dir: Path, name: str, command: str, blocks, data, validated_by,
               checkpoint_name: str, fp16_weights: bool, data_description: str | None) -> dict:
    model, checkpoint = load_checkpoint_model(run_dir / checkpoint_name)
    settings = checkpoint["settings"]
    earlier = {step.get("config") for step in checkpoint.get("lineage") or () if isinstance(step.get("config"), str)}
    _check_command_config(command, {checkpoint["config"]["name"], *earlier}, run_dir)
    given_data = data is not None
    if data is None:
        data = _recorded_data(settings, run_dir / checkpoint_name)
    elif settings.get("data") and Path(settings["data"]).resolve() != Path(data).resolve():  # a copy, or other data
        log.warning("%s trained on %s; it is validated on the frames of %s", run_dir, settings["data"], data)
    if not Path(data).is_dir():
        raise ValueError(f"the data folder {data} does not exist" + (
            f" (the folder {run_dir} trained on, as its checkpoint records it): name where its frames are now "
            "(data; --data of scripts/ship_model.py)" if not given_data else ""))
    _check_same_frames(checkpoint, run_dir, data)
    if blocks is None:
        blocks = card_blocks(data)
    trained_on_all = not checkpoint["split"]["validation"]
    _check_validated_by(run_dir, trained_on_all, validated_by)
    if trained_on_all:  # before anything is written, so that a wrong reference leaves models/ as it was
        validation, validation_tta, validation_source = _reference_validation(Path(validated_by), checkpoint,
                                                                              data, blocks, fp16_weights)
    # The runs behind a fine-tuned one, read before anything is written: the parent may be the
    # very file this call replaces.
    lineage = checkpoint.get("lineage")
    if lineage is None:  # runs from before lineage was recorded at training time
        lineage = lineage_of(settings["init_from"], read_checkpoint(settings["init_from"])) if settings.get(
            "init_from") else []
    onnx_path = export_checkpoint(model, checkpoint, models_dir / f"{name}.onnx",
                                  extra_metadata={"model_name": name}, fp16_weights=fp16_weights)
    torch_path = models_dir / f"{name}.pt"
    slim = {k: checkpoint[k] for k in ("model", "config", "settings", "split", "history", "best_epoch",
                                       "best_score", "epoch", "machine")}
    if checkpoint.get("data_sha256"):  # which frames it read (runs from before it was recorded have none)
        slim["data_sha256"] = checkpoint["data_sha256"]
    if fp16_weights:  # loading widens them again (load_state_dict copies into the float32 network)
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in slim["model"].items()}
        slim["weights_stored_as"] = "float16"
    if checkpoint.get("validation_note"):  # validated only afterwards: no epoch was picked by validation
        slim.update(validation_note=checkpoint["validation_note"], best_epoch=None, best_score=None)
    slim["lineage"] = lineage
    members = checkpoint.get("weight_average")
    if members:
        slim["weight_average"] = members
    torch.save(slim, torch_path)
    if not trained_on_all:
        validation, validation_tta = _own_validation(onnx_path, checkpoint, data, blocks)
        validation_source = None
    train_ids = checkpoint["split"]["train"]
    psfhs = is_psfhs_folder(data)
    # Fine-tuned on other data from weights trained on PSFHS: its licence asks for attribution.
    from_psfhs = not psfhs and _trained_on_psfhs_before(lineage)
    data_words = data_description or _data_words(data, checkpoint, psfhs)
    licence = ("CC BY 4.0" if psfhs and not data_description else
               "as stated under data" if data_description else "not recorded")
    if from_psfhs:
        data_words += f"; its weights started from runs trained on PSFHS: {PSFHS_CITATION} (CC BY 4.0)"
        licence += "; the runs its weights started from: PSFHS, CC BY 4.0"
    # A fine-tuned run's cost includes every run its weights started from.
    epochs_run, own_hours = run_cost(checkpoint, run_dir / checkpoint_name)
    hours = own_hours + lineage_hours(lineage)
    initialised_from = lineage[-1] if lineage else None
    # Validation frames a run its weights started from trained on: there the figures are a fit.
    seen_before = [] if trained_on_all else trained_before(lineage, checkpoint["split"]["validation"])
    if seen_before:
        log.warning("%d of the %d validation frames were training frames of a run its weights started from (%s%s): "
                    "the card says so", len(seen_before), len(checkpoint["split"]["validation"]),
                    ", ".join(seen_before[:5]), ", ..." if len(seen_before) > 5 else "")
    card = {
        "name": name,
        "config": checkpoint["config"]["name"],
        "ipp_seg_version": software_version(),
        "classes": list(model.config.class_names),
        "input_size": list(settings["input_size"]),
        "normalisation": settings["normalisation"],
        "training": {
            "data": data_words,
            "data_is_psfhs": psfhs,
            "data_has_reference_aop": (Path(data) / REFERENCE_AOP_FILE).is_file(),
            "started_from_psfhs_weights": from_psfhs,
            "licence_of_data": licence,
            "train_ids": f"{id_range(train_ids[0], train_ids[-1])} ({len(train_ids)} frames, "
                         + ("every frame, the validation blocks included)" if trained_on_all
                            else "validation blocks excluded)"),
            # Exact, for evaluate to tell a fit from a validation (the text above cannot say which it left out).
            "train_case_ids": [list(block) for block in case_id_blocks(train_ids)],
            "validation_blocks": {k: list(v) for k, v in blocks.items()},
            "command": command,
            "seed": settings["seed"],
            "epochs_run": epochs_run,
            "shipped_epoch": checkpoint["epoch"],
            "epochs_planned": settings["epochs"],
            # A run packed on a borrowed GPU saw no validation while it trained: its "best" epoch is its last.
            "best_epoch": None if trained_on_all or checkpoint.get("validation_note") else checkpoint["best_epoch"],
            "validation_note": checkpoint.get("validation_note"),
            "hours": round(hours, 2) if hours >= 0.1 else round(hours, 6),  # (a run of seconds: not 0.0)
            "initialised_from": initialised_from,
            "lineage": lineage,
            "weight_average": members or None,
            "machine": checkpoint.get("machine", {}),
            "data_sha256": checkpoint.get("data_sha256"),  # the frames read (None: before it was recorded)
            "recipe": {**{k: settings[k] for k in ("batch_size", "learning_rate", "weight_decay", "warmup_epochs",
                                                   "dice_weight", "ce_class_weights", "dice_class_weights",
                                                   "augmentation")},
                       # added later: runs from before them had them off
                       "shape_weight": settings.get("shape_weight", 0.0), "ema_decay": settings.get("ema_decay", 0.0),
                       "endpoint_weight": settings.get("endpoint_weight", 0.0),
                       "deep_supervision": settings.get("deep_supervision", 0.0),
                       "boundary_weight": settings.get("boundary_weight", 0.0)},
        },
        **_card_validation(validation, validation_tta, validation_source),
        # (Empty where none: its validation is over frames no run behind it saw.)
        "validation_trained_on_before": [list(block) for block in case_id_blocks(seen_before)],
        "files": {
            "onnx": {"name": onnx_path.name, "sha256": sha256_of(onnx_path), "bytes": onnx_path.stat().st_size},
            "torch": {"name": torch_path.name, "sha256": sha256_of(torch_path), "bytes": torch_path.stat().st_size},
        },
        "weights_stored_as": "float16" if fp16_weights else "float32",
        "exported_on": platform.platform(),
    }
    write_card(models_dir, name, card)
    return card


def _trained_on_psfhs_before(lineage: list[dict]) -> bool:
    """Whether a run the weights came through trained on PSFHS frames (its data folder is one,
    or, where it is no longer there, is named so, as the shared copy and its PNG copies are)."""
    for step in lineage:
        data = (step.get("settings") or {}).get("data")
        if data and (is_psfhs_folder(data) if Path(data).is_dir() else "psfhs" in Path(data).name.lower()):
            return True
    return False


def _data_words(data: str | Path, checkpoint: dict, psfhs: bool) -> str:
    if psfhs:
        return "PSFHS (shared copy, 1,058 frames); " + PSFHS_CITATION
    frames = len(checkpoint["split"]["train"]) + len(checkpoint["split"]["validation"])
    return (f"the folder {Path(data).name} ({frames} image/mask pairs in the run's split); its source, citation and "
            "licence were not recorded")


def _card_validation(validation: dict, validation_tta: dict, validation_source: dict | None) -> dict:
    """The validation fields of a model card, from :func:`validate_onnx`'s plain and TTA results."""
    return {
        # Which frames the figures below are of, exactly (a folder of one's own has no named blocks).
        "validation_case_ids": validation["case_ids"],
        "validation": validation["ellipse"],
        "validation_challenge_method": validation["challenge"],
        "validation_tta": validation_tta["ellipse"],
        "inference_seconds": {"plain": validation["inference_seconds"], "tta": validation_tta["inference_seconds"],
                              "frames": validation["frames"]},
        "validation_source": validation_source,
        # What low_confidence and ps_low_confidence compare with when this model runs (the plain
        # run's frames: the warnings are given on frames segmented so, --tta or not).
        "confidence_floors": validation.get("confidence_floors"),
        # What measured it: onnxruntime's last bits differ between CPU families and its versions.
        "validated_on": {"date": time.strftime("%Y-%m-%d"), "ipp_seg": software_version(), "processor": cpu_model(),
                         "onnxruntime": onnxruntime_version()},
        "validation_notes": "Measured with the ONNX file through ipp-seg's own pre-processing and measurement; "
                            "AoP differences are predicted mask vs ground-truth mask, same method, and (where "
                            "the data has aop_reference.csv) predicted mask vs the published reference AoP."
                            + (" " + validation_source["note"] if validation_source else ""),
    }


def revalidate_card(models_dir: str | Path, name: str, blocks: dict[str, tuple[str, str]], data: str | Path,
                    validated_by: str | Path | None = None) -> dict:
    """Measure a shipped model's validation again with this ipp-seg (its weights, files and
    training record untouched) and rewrite ``models/<name>.{json,md}``; return the card.

    For a card written before a figure existed (such as the comparison with the published
    reference AoP). The ONNX file must still match its card's checksum. A model trained on every
    frame needs ``validated_by``, as :func:`ship_model` does, and the same checks apply.
    """
    models_dir = Path(models_dir)
    card_path = models_dir / f"{name}.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    onnx_path = models_dir / card["files"]["onnx"]["name"]
    if sha256_of(onnx_path) != card["files"]["onnx"]["sha256"]:
        raise ValueError(f"{onnx_path} does not match its card's checksum: ship it again instead")
    torch_path = models_dir / card["files"]["torch"]["name"]
    # The split, labels and data digest come from the .pt: another file's would rewrite the card's validation blocks.
    if sha256_of(torch_path) != card["files"]["torch"]["sha256"]:
        raise ValueError(f"{torch_path} does not match its card's checksum: ship it again instead")
    checkpoint = load_torch_file(torch_path)
    trained_on_all = not checkpoint["split"]["validation"]
    _check_validated_by(name, trained_on_all, validated_by)
    _check_same_frames(checkpoint, models_dir / name, data)  # (as shipping checks it)
    # Its frames judged with the floors its card gives batch, so that batch reproduces the figures: for a card of none
    # (the shipped ones), batch's defaults (the validation's own floors had judged them, then were dropped).
    floors = card.get("confidence_floors")
    judged_by = floors if floors is not None else {"head": MIN_HEAD_CONFIDENCE, "ps": MIN_PS_CONFIDENCE}
    if trained_on_all:
        validation, validation_tta, source = _reference_validation(Path(validated_by), checkpoint, data, blocks,
                                                                   card.get("weights_stored_as") == "float16",
                                                                   judged_by)
    else:
        validation, validation_tta = _own_validation(onnx_path, checkpoint, data, blocks, judged_by)
        source = None
    card.update(_card_validation(validation, validation_tta, source))
    # The floors its rows' warnings have been judged with stay (or stay absent): measuring a card's
    # figures again must not move what low_confidence means for the model's users.
    card.pop("confidence_floors", None)
    if floors is not None:
        card["confidence_floors"] = floors
    card["validated_with_ipp_seg"] = software_version()
    write_card(models_dir, name, card)
    return card


def write_card(models_dir: Path, name: str, card: dict) -> None:
    """``NAME.json`` and ``NAME.md`` of ``card`` in ``models_dir``, in UTF-8 whatever the locale
    (Windows' cp1252 had refused a data description's Δ, and mangled its ü for other readers), each
    replacing the file there whole (a card cut short by a full disk had taken its model away)."""
    for suffix, text in ((".json", json.dumps(card, indent=2)), (".md", model_card_markdown(card))):
        with replacing(models_dir / f"{name}{suffix}", text=True, encoding="utf-8") as fh:
            fh.write(text)


def _machine_words(machine: dict) -> str:
    """Where a model trained, for its card: "CPU (platform)" or "a GPU (cuda; platform)"."""
    device, platform_name = str(machine.get("device", "")), machine.get("platform", "")
    if device.startswith("cuda"):
        return f"a GPU ({'; '.join(v for v in (device, platform_name) if v)})"
    where = machine.get("processor") or "CPU"
    return f"{where} ({platform_name})" if platform_name else where


def _local_contrast_words(card: dict) -> str:
    local = (card.get("normalisation") or {}).get("local_contrast")
    if not local:
        return ""
    return f" with local contrast equalisation, CLAHE clip limit {local['clip_limit']:g} on {local['tile_grid']}x{local['tile_grid']} tiles"


def model_card_markdown(card: dict) -> str:
    t = card["training"]
    lines = [f"# {card['name']}", "",
             f"Config `{card['config']}`; classes {', '.join(card['classes'])}; input {card['input_size']} "
             f"(per-frame percentile normalisation{_local_contrast_words(card)}, see the JSON card).", "",
             "## Training", "",
             f"- Data: {t['data']}", f"- Training IDs: {t['train_ids']}"
             + (f"; exactly {_blocks_text(t['train_case_ids'])}" if t.get("train_case_ids")
                and not t["train_ids"].startswith(f"{_blocks_text(t['train_case_ids'])} (") else ""),
             f"- Command: `{t['command']}`", f"- Seed {t['seed']}; epochs {t['epochs_run']}/{t['epochs_planned']}, "
             f"shipped epoch {t.get('shipped_epoch', t['best_epoch'])} (best by validation: "
             f"{_best_epoch_text(t)}); "
             f"{_duration_text(t)}.", ""]
    if card.get("weights_stored_as") == "float16":
        lines[-1:-1] = ["- Weights stored as float16 (the ONNX file: every tensor of 1,024 values or more; the "
                        ".pt: every tensor), half the size; the network computes in float32. The validation "
                        "below is that of the ONNX file. The torch backend runs the .pt, whose convolutions "
                        "and batch norms the ONNX file holds folded together and then rounded: its masks and "
                        "angles differ from the ONNX file's slightly."]
    lineage = t.get("lineage") or ([t["initialised_from"]] if t.get("initialised_from") else [])
    if lineage:
        def kept(p: dict) -> str:  # a best epoch before the run's end: "23 of 40 epochs"
            run = p.get("epochs_run") or p["epochs"]
            if run and p["epochs"] and run > p["epochs"]:
                return f"{p['epochs']} of {run} epochs"
            return f"{p['epochs']} epoch{'' if p['epochs'] == 1 else 's'}"

        def averaged(p: dict) -> str:
            members = p.get("weight_average") or []
            return f", the average of {len(members)} runs" if members else ""

        def start(p: dict) -> str:
            return "started from random weights, " if not p.get("settings", {}).get("init_from") else ""

        def held_out(p: dict) -> str:
            settings = p.get("settings", {})
            if "validation_count" not in settings:
                return ""
            if not settings["validation_count"]:
                # Of its data folder, which may be a copy without the validation blocks.
                data = settings.get("data")
                return f"; trained on every frame of `{data}`" if data else "; trained on every frame of its data"
            extra = settings.get("extra_validation")
            return (f"; the last {settings['validation_count']} case IDs"
                    + (f" and {extra[0]}-{extra[1]}" if extra else "") + " held out")

        steps = [f"  {n}. `{p['checkpoint']}`: {p['config']}, {start(p)}{kept(p)}{averaged(p)}, {p['hours']} h"
                 f"{held_out(p)}" for n, p in enumerate(lineage, start=1)]
        # The ancestors' paths are where their weights lay when the next run started: a shipped
        # model is replaced in place when retrained, so a models/ path names that file as it
        # was then, not today's (which may have seen the validation blocks).
        lines[-1:] = ["- Fine-tuned. The runs its weights went through, oldest first, each started from the one "
                      "before (a path is where that run's weights lay when the next one started: a `models/` "
                      "file as it was shipped then, not today's file of that name; settings in the JSON card):",
                      *steps, "  then this run. The hours above include every run.", ""]
    members = t.get("weight_average")
    if members:
        runs = ", ".join(f"`{m['checkpoint']}` (seed {m['seed']}, {m['hours']} h)" for m in members)
        lines[-1:] = [f"- Weight average of {len(members)} runs of this recipe at epoch {members[0]['epoch']}, "
                      f"seeds differing: {runs}. The seed above is the first run's; the hours include every "
                      "run.", ""]
    source = card.get("validation_source")
    if source:
        lines += [f"## Validation of the same recipe without these frames (`{source['checkpoint']}`, epoch "
                  f"{source['epoch']}, {source['train_frames']} training frames)", "", source["note"]
                  + (f" The figures are those of its ONNX file as shipped, `{source['onnx']}`, so they are its "
                     "card's own." if source.get("onnx", "").endswith(".onnx") else ""), ""]
    elif card.get("validation_trained_on_before"):
        lines += ["## Validation (frames this run held out, some of which earlier runs trained on)", "",
                  f"A run its weights started from trained on {_blocks_text(card['validation_trained_on_before'])}: "
                  "on those frames the figures below are the weights' fit, not a validation.", ""]
    else:
        lines += ["## Validation (never trained on)", ""]
    if card.get("validation_case_ids"):
        lines += [f"Validation frames: {_blocks_text(card['validation_case_ids'])}.", ""]
    copies = card.get("validation_copies_of_training_frames") or []
    if copies:  # (a dataset may list one frame twice, each annotated on its own)
        pairs = "; ".join(f"{held_out} holds the same pixels as training frame {trained}"
                          for held_out, trained in copies)
        lines += [f"Of them, {pairs} (the dataset lists the frame twice, each annotated on its own): there the "
                  "figures are partly the weights' fit, not a validation.", ""]
    methods = (("validation", "ellipse"), ("validation_challenge_method", "challenge"),
               ("validation_tta", "ellipse, --tta"))
    # The column against a published AoP only where the data has one (PSFHS's aop_reference.csv).
    referenced = t.get("data_has_reference_aop", t.get("data_is_psfhs", True))  # (older cards: PSFHS's had one)
    lines += ["| block | method | frames | Dice PS | Dice FH | Dice all | HD all px | mean / median abs dAoP deg | "
              + ("mean / median abs dAoP vs aop_reference.csv deg | " if referenced else "") + "failed | score |",
              "|---|---|---|---|---|---|---|---|" + ("---|" if referenced else "") + "---|---|"]
    for method_key, method in methods:
        for block, m in card.get(method_key, {}).items():
            reference = (f"{_f(m.get('mean_abs_delta_aop_reference_deg'), 2)} / "
                         f"{_f(m.get('median_abs_delta_aop_reference_deg'), 2)} | ") if referenced else ""
            lines.append(f"| {block} | {method} | {m['cases']} | {_f(m['dice_ps'])} | {_f(m['dice_fh'])} | "
                         f"{_f(m['dice_all'])} | {_f(m['hd_all_px'], 2)} | {_f(m['mean_abs_delta_aop_deg'], 2)} / "
                         f"{_f(m['median_abs_delta_aop_deg'], 2)} | {reference}{m['failed_measurements']} | "
                         f"{_f(m['score'])} |")
    lines += _agreement_markdown(card.get("validation", {}))
    measured = card.get("validated_on")
    if measured:  # (cards measured before it was recorded have none)
        lines += ["", f"Measured on {measured['date']} with ipp-seg {measured['ipp_seg']} and onnxruntime "
                      f"{measured['onnxruntime']} on {measured['processor'] or 'an unnamed CPU'}: another CPU family "
                      "may differ in the last digits."]
    floors = card.get("confidence_floors")
    if floors:
        lines += ["", f"Confidence floors: `low_confidence` below a head confidence of {floors['head']:.3f}, "
                  f"`ps_low_confidence` below a PS confidence of {floors['ps']:.3f} (0.02 below the 1st "
                  "percentile of these validation frames', never above the shipped models' 0.90)."]
    lines += ["", "## Files", ""]
    lines += [f"- `{f['name']}`: sha256 `{f['sha256']}` ({f['bytes']:,} bytes)" for f in card["files"].values()]
    psfhs = t.get("data_is_psfhs", True)  # (cards from before the field were all PSFHS's)
    narrow = any(block.startswith("narrow") for block in card.get("validation", {}))
    lines += ["", "## Known limits", "",
              "- Trained on one data source (PSFHS, two acquisition styles); other machines may differ." if psfhs
              else "- Trained on one folder of frames; machines and settings it does not hold may differ.",
              "- Validation overestimates accuracy on unseen frames; the AoP depends strongly on the small PS.",
              *(["- Where the PS is drawn as a roundish blob rather than an elongated one, its long axis, and so "
                 "the AoP, is ill-defined: the largest validation angle errors (20-50 deg) are such frames, a few "
                 "acquisitions' worth of neighbouring IDs."] if psfhs else []),
              *(["- The narrow-sector block is 30 frames: its figures carry about twice the wide block's sampling "
                 "error."] if psfhs and narrow else []),
              *_bias_limit(card.get("validation", {})), ""]
    return "\n".join(lines)


_AGAINST = (("aop_agreement", "ground-truth mask, same method"), ("aop_reference_agreement", "aop_reference.csv"))


def _agreement_markdown(validation: dict) -> list[str]:
    """The signed AoP agreement per block (Bland-Altman), where the card has it."""
    rows = [(block, against, m[key]) for block, m in validation.items() if not block.startswith("style:")
            for key, against in _AGAINST if m.get(key)]
    if not rows:
        return []
    lines = ["", "AoP agreement, prediction minus the truth (Bland-Altman; ellipse method, no --tta):", "",
             "| block | against | frames | bias deg | 95 % limits of agreement deg | proportional bias (slope) |",
             "|---|---|---|---|---|---|"]
    for block, against, a in rows:
        limits = "-" if a["lower"] is None else f"{a['lower']:+.2f} to {a['upper']:+.2f}"
        slope = "-" if a["proportional_slope"] is None else f"{a['proportional_slope']:+.3f}"
        lines.append(f"| {block} | {against} | {a['n']} | {a['bias']:+.2f} | {limits} | {slope} |")
    return lines


def _bias_limit(validation: dict) -> list[str]:
    """A known limit stated from the card's own figures: the AoP's overall signed bias."""
    overall = validation.get("overall", {})
    key, against = next(((k, w) for k, w in reversed(_AGAINST) if overall.get(k)), (None, None))
    if key is None:
        return []
    a = overall[key]
    # Over every validation frame, every block together: said so (a reader had taken it for one block's);
    # and over those with an angle, where some had none (a weak model's half of its frames).
    over = ("all its validation frames" if not a.get("n") or a["n"] >= overall.get("cases", 0)
            else f"the {a['n']} of its {overall['cases']} validation frames that have an angle")
    text = (f"- Over {over} the AoP reads {'low' if a['bias'] < 0 else 'high'} by "
            f"{abs(a['bias']):.1f} deg on average against {against} (95 % of frames within {a['lower']:+.1f} to "
            f"{a['upper']:+.1f} deg)" if a["lower"] is not None
            else f"- Over {over} the AoP's mean signed error is {a['bias']:+.1f} deg")
    slope = a["proportional_slope"]
    if slope is not None and abs(slope) >= 0.05:
        text += (f", and the error grows with the angle ({slope:+.2f} deg per deg): large angles, a descended "
                 f"head, read {'lower' if slope < 0 else 'higher'} still")
    return [text + "."]


def _blocks_text(blocks: list, shown: int = 8) -> str:
    """Case ID blocks (:func:`~ipp_seg.inference.registry.case_id_blocks`) as a reader reads them:
    ``03744-04371, 04402-04601``; IDs that are not numbers (which may hold a hyphen) quoted."""
    words = [f"{first}-{last}" if first != last else first for first, last in blocks[:shown]]
    words = [w if all(part.isdigit() for part in w.split("-")) else f"`{w}`" for w in words]
    more = f" and {len(blocks) - shown} more (the JSON card lists them)" if len(blocks) > shown else ""
    return ", ".join(words) + more


def _duration_text(training: dict) -> str:
    """How long the training took, and where: this run on its machine, and, for a fine-tuned
    model, the runs before it in all (on their own machines): "4.78 h on Intel Xeon" had been
    said of a run of 17 s whose lineage took the rest."""
    earlier = sum(step.get("hours") or 0.0 for step in training.get("lineage") or ())
    hours = training.get("hours")
    if not earlier or hours is None:
        return f"{_duration_words(hours)} on {_machine_words(training['machine'])}"
    own = max(hours - earlier, 0.0)
    return (f"{_duration_words(round(own, 6) if own < 0.1 else round(own, 2))} on "
            f"{_machine_words(training['machine'])}; {_duration_words(hours)} with the runs it was fine-tuned from")


def _duration_words(hours: float | None) -> str:
    """Training time as a reader takes it in: hours, minutes under 0.1 h, seconds under a minute."""
    if hours is None:
        return "an unrecorded time"
    if hours == 0:  # (cards before 0.2.4 rounded a run of seconds to 0.0)
        return "under 0.01 h"
    if hours >= 0.1:
        return f"{hours} h"
    if hours >= 1 / 60:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.0f} s" if hours * 3600 >= 1 else "under a second"


def _best_epoch_text(training: dict) -> str:
    if training["best_epoch"] is not None:
        return str(training["best_epoch"])
    if "every frame" in training["train_ids"]:
        return "none, no validation frames"
    if training.get("validation_note"):
        return "none, it was not validated while it trained: its " + training["validation_note"]
    return "none, the runs' last epochs averaged"


def _f(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
