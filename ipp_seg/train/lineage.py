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
            logged = [json.loads(line) for line in run_log.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            logged = []
        if logged:
            return logged
    return list(checkpoint.get("history", []))


def run_summary(checkpoint: dict, path: str) -> dict:
    """One ancestor: the checkpoint's path, config, epochs (those its weights went through),
    hours of training (the whole run's, :func:`run_history`) and settings."""
    history = run_history(checkpoint, path)
    hours = sum(h["seconds"] for h in history) / 3600
    return {"checkpoint": str(path), "config": checkpoint["config"]["name"], "epochs": checkpoint.get("epoch"),
            "epochs_run": max(len(history), checkpoint.get("epoch") or 0),
            "hours": round(hours, 2), "settings": checkpoint.get("settings", {})}


def _lineage_from_card(checkpoint_path: Path) -> list[dict] | None:
    """Older shipped weights carry no lineage; their model card (``NAME.json`` beside
    ``NAME.pt``) states the parent run, which is what they were fine-tuned from."""
    card_path = checkpoint_path.with_suffix(".json")
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return None
    training = card.get("training", {})
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
            import torch

            earlier = lineage_of(grandparent, torch.load(grandparent, map_location="cpu", weights_only=False))
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
    return [*earlier, run_summary(parent, str(init_from))]


def lineage_hours(lineage: list[dict]) -> float:
    return sum(step.get("hours") or 0.0 for step in lineage)
