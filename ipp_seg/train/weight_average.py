"""Averaging the weights of runs of one recipe (a "model soup").

Runs fine-tuned from the same parent with different seeds stay in one basin of the loss, so the
mean of their weights is a model of its own, usually a little better than either, at no cost at
inference. The average is written as a checkpoint that records its members, so that a model
card states it (and the hours of every member), and so that a model trained on every frame can
only be validated by an average of as many held-out runs of the same recipe.

An earlier average may be given as a member: it stands for its runs, each weighted as one, so
that adding a seed to a shipped average gives the plain mean of all the runs (whose own
checkpoints need not be kept).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .lineage import run_cost
from .loop import BEST, HISTORY, LAST, read_checkpoint, save_replacing
from .ship import lineage_differences

log = logging.getLogger(__name__)


def _recipe_view(checkpoint: dict) -> dict:
    """The checkpoint as the recipe comparison should see it: an average stands for its runs,
    so that it is compared with a single run as one of them."""
    return {k: v for k, v in checkpoint.items() if k != "weight_average"}


def _check_members(checkpoints: list[dict], paths: list[Path]) -> None:
    first, first_path = _recipe_view(checkpoints[0]), paths[0]
    for checkpoint, path in zip((_recipe_view(c) for c in checkpoints[1:]), paths[1:]):
        if checkpoint["config"]["name"] != first["config"]["name"]:
            raise ValueError(f"{path} is config {checkpoint['config']['name']}, {first_path} "
                             f"{first['config']['name']}: only runs of one config average")
        differences = lineage_differences(checkpoint, first)
        if differences:
            raise ValueError(f"{path} is not the same recipe as {first_path}: it differs in {', '.join(differences)}")
        if checkpoint["epoch"] != first["epoch"]:
            raise ValueError(f"{path} is epoch {checkpoint['epoch']}, {first_path} epoch {first['epoch']}")
        if checkpoint["split"] != first["split"]:
            raise ValueError(f"{path} was trained and validated on other frames than {first_path}")
        # The same case IDs of other data (frames re-annotated, another copy): not one recipe's runs.
        if None not in (checkpoint.get("data_sha256"), first.get("data_sha256")) \
                and checkpoint["data_sha256"] != first["data_sha256"]:
            raise ValueError(f"{path} read other data than {first_path} (their data_sha256 differ): only runs on the "
                             "same frames average")
        if checkpoint["model"].keys() != first["model"].keys():
            raise ValueError(f"{path} holds other tensors than {first_path}")


def _runs_of(checkpoint: dict, path: Path) -> list[dict]:
    """The runs a member stands for: an average's recorded members, or the run itself."""
    if checkpoint.get("weight_average"):
        return [dict(m) for m in checkpoint["weight_average"]]
    epochs_run, hours = run_cost(checkpoint, path)
    return [{"checkpoint": str(path), "seed": checkpoint["settings"]["seed"], "epoch": checkpoint["epoch"],
             "epochs_run": epochs_run, "hours": round(hours, 2)}]


def _check_distinct(members: list[dict]) -> None:
    """One run counted twice would outweigh the others; a repeated seed from one parent and
    recipe is the same run again."""
    for key, what in (("checkpoint", "run"), ("seed", "seed")):
        seen = [m[key] for m in members]
        repeated = sorted({str(v) for v in seen if seen.count(v) > 1})
        if repeated:
            raise ValueError(f"{what} {', '.join(repeated)} is among the members more than once")


def average_checkpoints(paths: list[str | Path], out_dir: str | Path) -> Path:
    """Average the network weights of the checkpoints at ``paths`` (two or more runs of one
    recipe, config, epoch and split, seeds differing) into ``out_dir/last.pt``; return its path.
    A member that is itself an average counts as the runs it averaged (its weights weighted by
    their number), so every run has the same weight in the result.

    Floating-point tensors (weights and normalisation statistics) are averaged; integer ones
    (batch counters) must agree and are kept. The result has no optimiser state, so it can be
    shipped or fine-tuned (``--init-from``) but not resumed."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    out_dir = Path(out_dir)
    # Into a run's own folder, the average took its last.pt's place: the run could no longer be resumed (a
    # training review). An earlier average's folder is replaced.
    member = next((p for p in paths if p.parent.resolve() == out_dir.resolve()), None)
    if member is not None:
        raise ValueError(f"{out_dir} holds a member, {member}: the average would replace it; give another --out")
    if (out_dir / BEST).exists() or (out_dir / HISTORY).exists():
        raise ValueError(f"{out_dir} is a training run's folder: its {LAST} would be replaced by the average, and "
                         "the run could no longer be resumed; give another --out")
    # Read as training reads them: a member damaged inside is refused, not averaged into new
    # weights under a fresh checksum.
    checkpoints = [read_checkpoint(p) for p in paths]
    _check_members(checkpoints, paths)
    runs = [_runs_of(c, p) for c, p in zip(checkpoints, paths)]
    members = [m for group in runs for m in group]
    _check_distinct(members)
    weights = [len(group) for group in runs]
    averaged = {}
    for key, first in checkpoints[0]["model"].items():
        tensors = [c["model"][key] for c in checkpoints]
        if first.is_floating_point():
            total = sum(w * t.double() for w, t in zip(weights, tensors))
            # float32 at least: a shipped model stored in float16 averages into a float32 network
            # (its card's weights_stored_as does not travel with it)
            averaged[key] = (total / sum(weights)).to(torch.promote_types(first.dtype, torch.float32))
        else:
            if any(not torch.equal(t, first) for t in tensors[1:]):
                log.info("%s differs between members; the first member's is kept", key)
            averaged[key] = first.clone()
    first = checkpoints[0]
    result = {k: first[k] for k in ("config", "settings", "split", "history", "epoch", "lineage", "machine")
              if k in first}
    result.update(model=averaged, best_epoch=None, best_score=None, weight_average=members)
    digests = {c.get("data_sha256") for c in checkpoints}
    if len(digests) == 1 and None not in digests:  # (shipping checks the frames against it; it had been dropped)
        result["data_sha256"] = digests.pop()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / LAST
    save_replacing(out_path, result)  # (a stop mid-write keeps the earlier file, not half of one)
    log.info("averaged %d runs (seeds %s) at epoch %d into %s", len(members),
             ", ".join(str(m["seed"]) for m in members), first["epoch"], out_path)
    return out_path
