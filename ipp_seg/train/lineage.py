"""Where a fine-tuned run's weights came from: the chain of runs before it.

A run started with ``--init-from`` inherits the training of its parent, and the parent may be
a fine-tuned run too. The chain is read once, when the run starts, and saved in every
checkpoint, so a model card can state the whole recipe and its total cost even when a parent
checkpoint has since been overwritten (a shipped model fine-tuned into its own successor).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def run_history(checkpoint: dict, path: str | Path) -> list[dict]:
    """Every epoch the run behind the checkpoint at ``path`` cost: its log (``history.jsonl``
    beside the checkpoint) when it is there, else the checkpoint's own history, which for a
    best.pt stops at its epoch although the epochs after it were run too."""
    run_log = Path(path).parent / "history.jsonl"
    if run_log.is_file():
        try:
            logged = [json.loads(line) for line in run_log.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError):
            logged = []
        if logged:
            return logged
    return list(checkpoint.get("history", []))


def _card_training(checkpoint_path: Path) -> dict | None:
    """The "training" section of the model card beside shipped weights (``NAME.json`` beside
    ``NAME.pt``), or None when there is no readable card."""
    card_path = checkpoint_path.with_suffix(".json")
    if not card_path.is_file():
        return None
    try:
        return json.loads(card_path.read_text(encoding="utf-8")).get("training", {})
    except (OSError, ValueError):
        return None


def _own_run_from_card(path: Path) -> tuple[int, float] | None:
    """(epochs run, hours) of the last run behind a shipped model, from its card: a model in
    ``models/`` has no run log beside it, and its best-epoch checkpoint's history stops at
    the shipped epoch. The card's hours include its lineage's; those are taken off."""
    training = _card_training(path)
    if training is None or training.get("epochs_run") is None or training.get("hours") is None:
        return None
    return int(training["epochs_run"]), float(training["hours"]) - lineage_hours(training.get("lineage", []))


def run_cost(checkpoint: dict, path: str | Path) -> tuple[int, float]:
    """(epochs run, hours) of the run behind the checkpoint at ``path``, its lineage not
    included: an average of runs cost every member's run; a run, its log, else its model
    card, else the checkpoint's own history."""
    members = checkpoint.get("weight_average")
    if members:
        return max(m["epochs_run"] for m in members), sum(m["hours"] for m in members)
    history = run_history(checkpoint, path)
    epochs_run, hours = len(history), sum(h["seconds"] for h in history) / 3600
    if not (Path(path).parent / "history.jsonl").is_file():
        from_card = _own_run_from_card(Path(path))
        if from_card is not None and from_card[0] >= epochs_run:
            epochs_run, hours = from_card
    return max(epochs_run, checkpoint.get("epoch") or 0), hours


def run_summary(checkpoint: dict, path: str, digest: bool = False) -> dict:
    """One ancestor: the checkpoint's path and, with ``digest`` (the parent a run starts from, read
    just now), the sha256 of the file there (a path such as ``models/dssau-net-s.pt`` is replaced
    by later models: the digest says which file it was; an older ancestor traced through its path
    now may be a later file, and gets none),
    config, epochs (those its weights went through), epochs run and hours of training
    (:func:`run_cost`), settings, whether it computed in bf16 (where recorded), the digest of the
    data it read, the case IDs it trained on (blocks, :func:`~ipp_seg.inference.registry.case_id_blocks`;
    a validation of a run started from it on those is a fit), and the runs it averages if it is
    an average."""
    from ..inference.registry import case_id_blocks, sha256_of

    epochs_run, hours = run_cost(checkpoint, path)
    summary = {"checkpoint": str(path), "config": checkpoint["config"]["name"], "epochs": checkpoint.get("epoch"),
               "epochs_run": epochs_run, "hours": round(hours, 2), "settings": checkpoint.get("settings", {})}
    if digest and Path(path).is_file():
        summary["sha256"] = sha256_of(path)
    for key, value in (("bf16_autocast", checkpoint.get("machine", {}).get("bf16_autocast")),
                       ("data_sha256", checkpoint.get("data_sha256"))):
        if value is not None:
            summary[key] = value
    train = (checkpoint.get("split") or {}).get("train")
    if isinstance(train, (list, tuple)) and train:
        summary["train_case_ids"] = [list(block) for block in case_id_blocks([str(i) for i in train])]
    if checkpoint.get("weight_average"):
        summary["weight_average"] = checkpoint["weight_average"]
    return summary


def export_provenance(checkpoint: dict, path: str | Path) -> dict[str, str]:
    """What an ONNX file exported from the checkpoint at ``path`` records of where it came from,
    as metadata properties (strings; lists as JSON): the checkpoint's full path and sha256, the
    epoch its weights are of, the case IDs its run trained on and held out for validation and
    those the runs it started from trained on (blocks, as a card lists them; none where the run
    did not record them), and the sha256 of the data it read. A file run by its path, without a
    model card, then still says which frames it has seen."""
    from ..inference.registry import case_id_blocks, lineage_train_blocks, sha256_of

    path = Path(path)
    found = {"source_checkpoint": str(path.resolve()), "source_checkpoint_sha256": sha256_of(path)}
    if checkpoint.get("epoch") is not None:
        found["source_epoch"] = str(checkpoint["epoch"])
    split = checkpoint.get("split") or {}
    for side, key in (("train", "train_case_ids"), ("validation", "validation_case_ids")):
        ids = split.get(side)
        if isinstance(ids, (list, tuple)):
            found[key] = json.dumps([list(block) for block in case_id_blocks([str(i) for i in ids])])
    earlier = lineage_train_blocks(checkpoint.get("lineage"))
    if earlier:
        found["earlier_train_case_ids"] = json.dumps([list(block) for block in earlier])
    if checkpoint.get("data_sha256"):
        found["training_data_sha256"] = str(checkpoint["data_sha256"])
    return found


def trained_before(lineage: list[dict], case_ids) -> list[str]:
    """Of ``case_ids``, those a run of ``lineage`` trained on (where it recorded its frames:
    runs before 0.2.8 did not), in their order."""
    from ..inference.registry import in_blocks, lineage_train_blocks

    blocks = lineage_train_blocks(lineage)
    return [case_id for case_id in case_ids if in_blocks(str(case_id), blocks)] if blocks else []


def _lineage_from_card(checkpoint_path: Path) -> list[dict] | None:
    """Older shipped weights carry no lineage; their model card states the parent run, which
    is what they were fine-tuned from."""
    training = _card_training(checkpoint_path)
    if training is None:
        return None
    if "lineage" in training:
        return list(training["lineage"])
    parent = training.get("initialised_from")
    return [parent] if parent else []


def lineage_of(init_from: str | Path, parent: dict) -> list[dict]:
    """The runs behind a run initialised from ``init_from`` (whose loaded checkpoint is
    ``parent``), oldest first, the parent last.

    A parent written before lineage was recorded is traced through its own ``init_from``
    checkpoint while that file exists, else through the model card beside it."""
    path = Path(init_from)
    earlier = parent.get("lineage")
    if earlier is None:
        earlier = []
        grandparent = parent.get("settings", {}).get("init_from")
        if grandparent and Path(grandparent).is_file():
            import pickle

            from .loop import load_torch_file  # (loop imports this module)

            try:
                # (Traced through a path as it is now: the file there may be a later one, so no digest.)
                earlier = [{k: v for k, v in step.items() if k != "sha256"}
                           for step in lineage_of(grandparent, load_torch_file(grandparent))]
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
                # Not a file ipp-seg loads (one holding other objects than weights): its runs unknown.
                log.warning("the runs behind %s are not recorded: %s", grandparent, exc)
                earlier = []
            if any(step.get("checkpoint") == str(path) for step in earlier):
                # The file at the grandparent's path descends from this very parent: it was
                # overwritten by a later model (a shipped model replaced in place), so its
                # history is not this parent's past.
                log.warning("%s was fine-tuned from %s, which has since been replaced by a model trained from %s: "
                            "the lineage starts at %s", path, grandparent, path, path)
                earlier = []
        elif grandparent:
            from_card = _lineage_from_card(path)
            if from_card is None:
                log.warning("%s was fine-tuned from %s, whose history is not recorded: the lineage starts at %s",
                            path, grandparent, path)
            earlier = from_card or []
    return [*earlier, run_summary(parent, str(init_from), digest=True)]


def lineage_hours(lineage: list[dict]) -> float:
    return sum(step.get("hours") or 0.0 for step in lineage)
