"""The training loop: AdamW with warm-up and cosine decay, seeded, a checkpoint every epoch,
resumable, keeping the best checkpoint by validation score.

Library code: it reports progress through callbacks and ``logging``; the CLI renders it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import platform
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import IppSegError
from ..evaluate.metrics import dice
from ..io.folders import FolderInUseError, folder_lock, given_path, others_link
from ..machine import cpu_model, software_version
from ..inference.preprocess import DEFAULT_NORMALISATION, normalise_frame, resize_image
from ..nn.configs import NetworkConfig, get_config, list_configs
from ..nn.dssau_net import DeepSupervisionHeads, EndpointHead, adapt_parent_state, build_network
from .data import (AugmentationSettings, Case, Split, augment, contiguous_split, count_of, find_pairs,
                   frames_in_both, id_range, load_cases, on_inference_grid)
from .lineage import lineage_of, trained_before
from .losses import deep_supervision_loss, endpoint_heatmap_loss, ps_axis_ends, segmentation_loss

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.jsonl"
SESSIONS = "sessions.jsonl"  # a line per start or resume: the version, command and machine each ran with
LOCK_NAME = ".ipp-seg-train.lock"  # hidden: held by the run writing into the folder
# What best.pt leaves out of last.pt's payload: the state that only resuming needs.
_RESUME_ONLY = ("optimiser", "raw_model", "endpoint_head", "deep_supervision_heads")


@dataclass(frozen=True)
class TrainSettings:
    config: str
    data: str
    out: str
    epochs: int = 80
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    min_lr_fraction: float = 0.01
    seed: int = 0
    validation_count: int = 200
    extra_validation: tuple[str, str] | None = None
    device: str = "cpu"
    threads: int = 2
    bf16: bool | None = None  # None: autocast to bf16 only where the CPU has native bf16 (AVX-512 BF16 / AMX)
    dice_weight: float = 1.0
    ce_class_weights: tuple[float, float, float] = (1.0, 2.0, 1.0)
    dice_class_weights: tuple[float, float] = (1.5, 1.0)
    shape_weight: float = 0.0  # PS centroid/second-moment term (losses.shape_moment_loss), aimed at the AoP
    boundary_weight: float = 0.0  # PS boundary-distance term (losses.boundary_distance_loss), aimed at the AoP
    input_size: tuple[int, int] = (256, 256)
    mask_labels: tuple[int, int] = (1, 2)  # the PS and FH values in the folder's masks (trained as 1 and 2)
    max_train_cases: int | None = None  # for smoke tests
    # Warm start: model weights from this checkpoint, with a fresh optimiser and schedule
    # (fine-tuning a finished run under a new recipe, which --resume cannot do).
    init_from: str | None = None
    # Exponential moving average of the weights, updated every step (0: off). The averaged
    # weights are validated, kept as the best checkpoint and shipped; the raw ones resume.
    ema_decay: float = 0.0
    # Auxiliary heatmap of the PS's long-axis ends from the decoder features (0: off); the head
    # is training-only, so the shipped network and its ONNX graph are unchanged.
    endpoint_weight: float = 0.0
    # Deep supervision (0: off): the weight of a loss on class logits from each decoder level
    # coarser than 1/4 resolution, through training-only heads (the shipped network is unchanged).
    deep_supervision: float = 0.0
    # Stochastic depth of the deepest block while training (None: the config's own rate). A
    # regulariser only: inference never drops a branch, so the shipped network is the config's.
    drop_path: float | None = None
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))

    def __post_init__(self) -> None:
        # Paths as a caller has them (pathlib.Path): the run record is JSON, which takes text
        # (a Path had failed the run's first write with "not JSON serializable").
        for key in ("data", "out", "init_from"):
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, key, os.fspath(value))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        d = dict(d)
        d["augmentation"] = AugmentationSettings(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in d["augmentation"].items()})
        for key in ("extra_validation", "ce_class_weights", "dice_class_weights", "input_size", "mask_labels"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# What a resumed run takes from the new call (and `epochs` when it is more); the rest of the
# settings, the recipe, stay the run's own. bf16 is how the machine computes, as the device is:
# a run resumed on a CPU without native bf16 would otherwise be held to an emulation many times
# slower (a run left to the default already switches with the machine).
RESUME_MAY_CHANGE = ("data", "out", "device", "threads", "bf16")


class RunFolderInUseError(FolderInUseError):
    """Another training run is writing into the run folder."""


class RecipeChangedError(IppSegError, ValueError):
    """A resumed run was given settings that differ from its recipe: they would be ignored
    without a word (the run continues as it was planned), so the run is refused.

    Attributes:
        run_dir: the run folder.
        settings: the names of the :class:`TrainSettings` fields that differ, in the order given.
        planned_epochs: when fewer ``epochs`` than the run is planned on were given, that plan.
    """

    def __init__(self, run_dir: Path, settings: tuple[str, ...], planned_epochs: int | None = None) -> None:
        self.run_dir, self.settings, self.planned_epochs = Path(run_dir), tuple(settings), planned_epochs
        differ = "differ" if len(self.settings) > 1 else "differs"
        why = (f"fewer epochs than the {planned_epochs} its schedule is planned on were asked for (a resumed run "
               "can only be given more)" if planned_epochs else f"{', '.join(self.settings)} {differ} from it")
        them = "them" if len(self.settings) > 1 else "it"
        super().__init__(f"{self.run_dir} is resumed with its own recipe, and {why}: leave {them} as the run has "
                         f"{them}, or start a new run (another out folder) from its weights with "
                         f"init_from={self.run_dir / LAST}")


def recipe_changes(saved: TrainSettings, settings: TrainSettings, given: Iterable[str]) -> tuple[str, ...]:
    """The settings among ``given`` whose value in ``settings`` differs from the run's ``saved``
    recipe; those a resumed run may change (:data:`RESUME_MAY_CHANGE`, ``epochs``) never count.
    A name is a field of :class:`TrainSettings`, or a dotted name of one part of a field that holds
    several (``augmentation.shadow_probability``, ``normalisation.local_contrast``). Values are compared
    as the run's settings.json stores them (a tuple equals its list; absent reads as None).

    Raises:
        ValueError: a name in ``given`` is no such field, or no part of one.
    """
    names = {f.name for f in fields(TrainSettings)}
    parts_of = {"augmentation": {f.name for f in fields(AugmentationSettings)},
                "normalisation": {*DEFAULT_NORMALISATION, "local_contrast"}}

    def known(name: str) -> bool:
        field_name, dot, part = name.partition(".")
        return field_name in names and (not dot or part in parts_of.get(field_name, ()))

    unknown = [name for name in given if not known(name)]
    if unknown:
        raise ValueError(f"no such training setting: {', '.join(unknown)}")
    ours, theirs = (json.loads(json.dumps(s.to_dict())) for s in (settings, saved))

    def value(stored: dict, name: str):
        for part in name.split("."):
            stored = stored.get(part) if isinstance(stored, dict) else None
        return stored

    return tuple(name for name in dict.fromkeys(given) if name.split(".")[0] not in (*RESUME_MAY_CHANGE, "epochs")
                 and value(ours, name) != value(theirs, name))


class RunWriteError(IppSegError, RuntimeError):
    """A file of the run folder could not be written (disk full, folder made read-only): the
    run stops, and its checkpoints keep the last epoch written in full."""


class TrainingDiverged(IppSegError, RuntimeError):
    """The training loss, or its gradient, is no longer a finite number: the run stops before
    the step would spoil the weights, and the epoch is not saved (its checkpoints keep the last
    finished epoch)."""


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    dice_ps: float
    dice_fh: float
    score: float  # selection score: mean of the PS and FH Dice on validation
    learning_rate: float
    seconds: float
    is_best: bool


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: tuple[EpochResult, ...]
    split: Split


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively; elsewhere bf16 autocast is many times slower
    than fp32 (measured: 10x on an AVX2-only EPYC)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_fraction: float) -> float:
    """Linear warm-up then cosine decay to ``min_fraction * base_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def _batch_tensors(cases: list[Case], rng: np.random.Generator | None, settings: TrainSettings,
                   in_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for case in cases:
        img, lab = (augment(case.image, case.labels, rng, settings.augmentation) if rng is not None
                    else (case.image, case.labels))
        # Resized in float as inference resizes it (normalise_frame takes any dtype to float32 anyway).
        images.append(normalise_frame(resize_image(np.asarray(img, np.float32), settings.input_size),
                                      settings.normalisation))
        labels.append(lab)  # the loss is taken on the labels' own grid (logits_on_grid)
    x = torch.from_numpy(np.stack(images))[:, None]
    if in_channels > 1:
        x = x.expand(-1, in_channels, -1, -1)
    return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(np.stack(labels).astype(np.int64))


def logits_on_grid(logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Float logits resized (bilinear, half-pixel centres, as inference's ``cv2.resize``) to the
    label grid ``shape``, so that a network run at another input size is trained and validated
    on the masks as users get them."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(shape):
        return logits
    return F.interpolate(logits, size=tuple(shape), mode="bilinear", align_corners=False)


def predict_labels(model: torch.nn.Module, x: torch.Tensor, bf16: bool,
                   shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Argmax labels, on the grid ``shape`` (default: the input's)."""
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    return logits_on_grid(logits, shape or tuple(x.shape[-2:])).argmax(1)


def validate(model, cases: list[Case], settings: TrainSettings, device: torch.device) -> tuple[float, float]:
    """Mean Dice of PS and FH over the validation cases."""
    model.eval()
    dice_ps, dice_fh = [], []
    for start in range(0, len(cases), 16):
        chunk = cases[start:start + 16]
        x, y = _batch_tensors(chunk, None, settings, model.config.in_channels)
        pred = predict_labels(model, x.to(device), _use_bf16(settings, device), tuple(y.shape[-2:])).cpu().numpy()
        for p, t in zip(pred, y.numpy()):
            dice_ps.append(dice(p == 1, t == 1))
            dice_fh.append(dice(p == 2, t == 2))
    model.train()
    return float(np.mean(dice_ps)), float(np.mean(dice_fh))


def _use_bf16(settings: TrainSettings, device: torch.device) -> bool:
    """bf16 autocast as asked; by default where the processor computes bf16 natively (a GPU from
    Ampere on, a CPU with AVX-512 BF16 or AMX)."""
    if settings.bf16 is not None:
        return settings.bf16
    if device.type == "cuda":  # emulated bf16 (before Ampere) is slower than fp32: not by default
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_fast_bf16()


CONTENT_DIGEST = "content_sha256"


def checkpoint_digest(checkpoint: dict) -> str:
    """sha256 over a checkpoint's contents (every tensor's dtype, shape and bytes, every other
    value's repr, in key order), its own digest left out. torch.load checks no checksum: a byte
    damaged inside a tensor loads as a wrong weight, which this digest, stored with the file,
    reveals (:func:`read_checkpoint`)."""
    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            if flat.numel():  # the tensor's own bytes, not a copy of them
                digest.update(flat.view(torch.uint8).numpy())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=str):
                if key != CONTENT_DIGEST:
                    digest.update(repr(key).encode())
                    feed(value[key])
            digest.update(b"}")
        elif isinstance(value, np.ndarray):
            feed(torch.from_numpy(np.ascontiguousarray(value)))
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            # A numpy scalar as the Python number it holds: its repr changed with numpy 2, and a
            # checkpoint may be read under another numpy than the one that wrote it.
            digest.update(repr(value.item() if isinstance(value, np.generic) else value).encode())

    feed(checkpoint)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """torch.save ``checkpoint`` with its :func:`checkpoint_digest`."""
    torch.save({**checkpoint, CONTENT_DIGEST: checkpoint_digest(checkpoint)}, path)


def save_replacing(path: Path, payload: dict) -> None:
    """Save a checkpoint in place of ``path`` at once (written beside it, then renamed)."""
    tmp = path.with_suffix(".tmp")
    try:
        save_checkpoint(tmp, payload)
        tmp.replace(path)  # atomic: an interrupted save never leaves a broken checkpoint
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError of its own
        raise _cannot_write(path, exc) from None
    finally:
        # Interrupted (Ctrl-C, SIGTERM) or failed (disk full) mid-write: no unloadable half file.
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once: a run stopped mid-write leaves the old file, not
    an empty one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``; a link another user planted there is replaced
    by a file of the run's own, not written through (it would take the command line and the
    data folder's name wherever it points)."""
    try:
        if others_link(path):
            path.unlink()
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def _cannot_write(path: Path, exc: Exception) -> RunWriteError:
    """The error for a write into the run folder that failed, its cause in words: torch's own
    message for a full disk is an internal assertion."""
    if isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror
    else:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < 512 * 2**20:
            why = (f"the disk is full or nearly so ({free / 2**20:.1f} MiB free; a checkpoint is written beside "
                   "the old one)")
        else:
            why = f"torch could not write it ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return RunWriteError(f"cannot write {path}: {why}")


def _json_line(record: dict) -> str:
    """One line of history.jsonl: strict JSON, so a missing figure (no validation frames) is
    null, never the bare NaN that JSON readers other than Python's refuse."""
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()},
                      allow_nan=False)


def _check_settings(settings: TrainSettings) -> None:
    """Refuse a recipe that cannot train: the loss would be 0/0 (NaN) or the schedule meaningless."""
    for name, weights in (("cross-entropy class weights (--ce-weights)", settings.ce_class_weights),
                          ("soft-Dice class weights (--dice-weights)", settings.dice_class_weights)):
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"the {name} must be finite, 0 or more, and not all 0, got "
                             f"{','.join(f'{w:g}' for w in weights)}")
    if not (math.isfinite(settings.learning_rate) and settings.learning_rate >= 0):
        raise ValueError(f"the learning rate (--lr) must be a finite number, 0 or more, got {settings.learning_rate:g}")
    if not (math.isfinite(settings.warmup_epochs) and settings.warmup_epochs >= 0):
        raise ValueError(f"--warmup-epochs must be 0 or more, got {settings.warmup_epochs:g}")


def _check_run_folder(run_dir: Path) -> None:
    """Refuse a run folder that cannot be made, before any work: the folder, or a folder above
    it, is a file, or the nearest existing folder above it cannot be written."""
    for path in (run_dir, *run_dir.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            raise ValueError(f"the run folder {run_dir} is a file, not a folder" if path == run_dir else
                             f"the run folder {run_dir} cannot be made: {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"the run folder {run_dir} is not writable" if path == run_dir else
                             f"the run folder {run_dir} cannot be made: {path} is not writable")
        return


def _make_run_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"the run folder {run_dir} cannot be made: {exc.strerror or exc}") from None


def check_checkpoint_path(path: str | Path) -> None:
    """Refuse what cannot be a checkpoint file before reading it: a missing path, or a folder
    (most often a run folder, whose checkpoints are inside it).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` is a folder, or a file this user may not read.
    """
    path = Path(path)
    try:  # a folder on the way without search permission raises here (EACCES), not False
        is_file, is_dir, exists = path.is_file(), path.is_dir(), path.exists()
    except OSError as exc:
        raise ValueError(f"checkpoint {path} cannot be read: {(exc.strerror or str(exc)).lower()}") from None
    if is_file and not os.access(path, os.R_OK):
        raise ValueError(f"checkpoint {path} cannot be read: permission denied")
    if is_dir:
        try:
            inside = [path / name for name in (BEST, LAST) if (path / name).is_file()]
        except OSError as exc:  # a run folder that cannot be searched
            raise ValueError(f"checkpoint {path} is a folder that cannot be read: "
                             f"{(exc.strerror or str(exc)).lower()}") from None
        advice = (f"give a checkpoint in it, such as {inside[0]}" if inside else
                  f"a run folder holds its checkpoints as {path / BEST} and {path / LAST}, and this one holds neither")
        raise ValueError(f"{path} is a folder, not a checkpoint: {advice}")
    if not exists:
        raise FileNotFoundError(f"checkpoint {path} does not exist")


def train(settings: TrainSettings, resume: bool = False,
          on_epoch: Callable[[EpochResult], None] | None = None,
          on_step: Callable[[int, int, int, float], None] | None = None,
          given: Iterable[str] = (),
          on_start: Callable[[TrainSettings, Split], None] | None = None,
          command: str | None = None) -> TrainResult:
    """Train ``settings.config`` on ``settings.data``; write checkpoints to ``settings.out``.

    With ``resume``, continue from ``out/last.pt`` (model, optimiser, step, RNG states and
    history restored); the settings saved with the run are used, except for paths, device,
    threads and ``epochs`` when it is larger than the run's (0 keeps the run's). ``given``
    names the fields of ``settings`` the caller set on purpose (the options a user typed):
    resuming, one that differs from the run's recipe refuses the run rather than being
    ignored. The run folder is locked while the run writes into it.

    ``on_start`` is called once with the settings the run goes on with (a resumed run's own
    recipe) and its split, after the data are read and before the first step; ``on_step`` with (epoch,
    step, steps per epoch, loss) and ``on_epoch`` with each epoch's result. ``command`` (the command
    line that started it, where there is one) is recorded with the ipp-seg version and the machine
    in the run folder's sessions.jsonl, a line per start or resume.

    Raises:
        RecipeChangedError: resuming, a setting named in ``given`` differs from the recipe.
        RunFolderInUseError: another run is writing into the folder.
        RunWriteError: a file of the run folder could not be written.
        TrainingDiverged: the loss or its gradient stopped being a finite number.
        ValueError, FileNotFoundError: unusable settings, data or run folder.
    """
    given = tuple(given)
    recipe_changes(settings, settings, given)  # names no setting that does not exist, resuming or not
    given_path(settings.data, "data folder")  # "" would read as the current folder
    given_path(settings.out, "run folder")
    with ExitStack() as held:
        return _train(settings, resume, on_epoch, on_step, held, given, on_start, command)


def _lock_run_folder(run_dir: Path, held: ExitStack) -> None:
    held.enter_context(folder_lock(run_dir, LOCK_NAME, RunFolderInUseError(
        f"another ipp-seg train run is writing into {run_dir}: wait for it to end, or give this one another --out")))


def _train(settings: TrainSettings, resume: bool, on_epoch, on_step, held: ExitStack, given: tuple[str, ...],
           on_start, command: str | None) -> TrainResult:
    # Recorded as full paths: a relative one would name another folder for a tool run from elsewhere
    # (a job script resumed from another folder had been refused for its --init-from).
    settings = replace(settings, data=os.path.abspath(settings.data),
                       init_from=os.path.abspath(settings.init_from) if settings.init_from else settings.init_from)
    run_dir = Path(settings.out)
    last_path = run_dir / LAST
    checkpoint = None
    saved_split = None
    planned_epochs = None  # a resumed run's epochs as last planned
    locked = run_dir.is_dir()
    if locked:  # before anything in it is read: another run may be writing it
        _check_run_folder(run_dir)
        _lock_run_folder(run_dir, held)
    if not resume and last_path.exists():
        # Its checkpoints would be replaced and its history mixed with this run's.
        raise ValueError(f"{run_dir} already holds a run ({LAST}): --resume continues it; to start another, "
                         "give a new --out")
    best_path = run_dir / BEST
    if not resume and (best_path.exists() or (run_dir / HISTORY).exists()):
        found = " and ".join(n for n in (BEST, HISTORY) if (run_dir / n).exists())
        raise ValueError(f"{run_dir} holds a run's {found} without its {LAST}: a new run there would replace or mix "
                         "with them; give a new --out" + (f", starting from those weights with --init-from {best_path}"
                                                          if best_path.exists() else ""))
    if resume:
        if not last_path.exists():
            raise FileNotFoundError(
                f"nothing to resume: {last_path} does not exist; " +
                (f"a new run (another --out) can start from {best_path} with --init-from" if best_path.exists() else
                 "the same command without --resume starts the run"))
        try:
            checkpoint = read_checkpoint(last_path)
        except ValueError as exc:
            advice = f"; a new run (another --out) can start from {best_path} with --init-from" \
                if best_path.is_file() else ""
            raise ValueError(f"{exc}: the run cannot be resumed from it{advice}") from None
        if "optimiser" not in checkpoint:
            raise ValueError(f"{last_path} has no optimiser state (an average of runs, or shipped weights): it "
                             "cannot be resumed; start a new run from it with --init-from")
        saved = TrainSettings.from_dict(checkpoint["settings"])
        changed = recipe_changes(saved, settings, given)
        if "init_from" in changed and _same_parent(settings.init_from, saved.init_from, checkpoint):
            changed = tuple(name for name in changed if name != "init_from")
        if changed:
            raise RecipeChangedError(run_dir, changed)
        if 0 < settings.epochs < saved.epochs and "epochs" in given:  # asked for, and it cannot be done
            raise RecipeChangedError(run_dir, ("epochs",), planned_epochs=saved.epochs)
        if 0 < settings.epochs < saved.epochs:
            log.warning("--epochs %d is fewer than the run's %d: the run keeps its %d (its schedule is planned "
                        "on them)", settings.epochs, saved.epochs, saved.epochs)
        # Paths and device may move between machines; the recipe may not.
        settings = replace(saved, **{key: getattr(settings, key) for key in RESUME_MAY_CHANGE},
                           epochs=max(saved.epochs, settings.epochs))
        if settings.bf16 is None and saved.bf16 is False:
            # Not asked again: a run started --no-bf16 (fp32 on purpose) keeps it; left to the machine's default, it
            # had gone on in bf16 wherever the CPU computes bf16 natively.
            settings = replace(settings, bf16=False)
        planned_epochs = saved.epochs
        saved_split = checkpoint.get("split") or _read_split_file(run_dir / "split.json")
    _check_settings(settings)
    if settings.warmup_epochs >= settings.epochs and settings.learning_rate > 0:
        # Not refused (a short trial may want it), but said: a research fellow's 1-epoch fine-tune peaked at half
        # its --lr without a word.
        log.warning("--warmup-epochs %g is as long as the run (--epochs %d) or longer: the learning rate rises for "
                    "the whole run, never reaching --lr %g nor decaying; give fewer warm-up epochs (0.5, or 0) for a "
                    "short run", settings.warmup_epochs, settings.epochs, settings.learning_rate)
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no GPU on this machine (or this torch build has no CUDA)")
    if settings.config not in {c.name for c in list_configs()}:  # before any file is written
        raise ValueError(f"unknown network config {settings.config!r}; known: "
                         + ", ".join(c.name for c in list_configs()))
    if not locked:  # (a folder that exists was checked before it was locked)
        _check_run_folder(run_dir)

    torch.manual_seed(settings.seed)
    if settings.device == "cpu":
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)

    # Scanned once: the pairs are loaded from this list, and unpaired files are named once.
    pairs = find_pairs(settings.data)
    ids = [c for c, _, _ in pairs]
    if saved_split is not None:
        split = _resumed_split(saved_split, ids, settings.data)
    else:
        split = contiguous_split(ids, settings.validation_count, settings.extra_validation)
    train_ids = split.train_ids[: settings.max_train_cases] if settings.max_train_cases else split.train_ids
    # (debug: on_start and on_epoch give them to a caller, and the command line prints both itself;
    # at info, `train -v` had shown each twice)
    log.debug("split: %s", split.describe())
    if not train_ids:  # before minutes of loading, and before the run folder gets a split
        raise ValueError(f"{settings.data} has {len(ids)} image/mask pairs and the validation takes them all "
                         f"(the last {settings.validation_count} IDs"
                         + (f", and {id_range(*settings.extra_validation)}"
                            if settings.extra_validation else "")
                         + "): lower --validation-count, or 0 to train on every frame")
    read = load_cases(settings.data, set(train_ids) | set(split.validation_ids), settings.mask_labels, pairs=pairs)
    # The frames and labels as read, by case ID (the checkpoint digest's walk over them): the same
    # for the folder copied elsewhere or converted without loss (MHA to PNG), other for any pixel.
    data_sha256 = checkpoint_digest({case.case_id: (case.image, case.labels) for case in read})
    # Each case's too, so that a refused resume names the cases that changed.
    case_sha256 = {case.case_id: checkpoint_digest({case.case_id: (case.image, case.labels)}) for case in read}
    if checkpoint is not None and checkpoint.get("data_sha256", data_sha256) != data_sha256:
        # The same case IDs, other pixels or labels (another export, a relabelled set): the
        # optimiser state and the split would carry on over frames the run never saw.
        recorded = checkpoint.get("case_sha256")
        changed = ([case_id for case_id, digest in case_sha256.items() if recorded.get(case_id) != digest]
                   if isinstance(recorded, dict) else [])
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        named = f" ({count_of(len(changed), 'case')} changed: {shown})" if changed else ""
        raise ValueError(f"the frames in {settings.data} differ from those {run_dir} trained on{named} (the same "
                         "case IDs, other pixels or labels, or files this version of ipp-seg reads differently): "
                         "--resume continues a run on its own data; to train on these, start a new run (another "
                         f"--out) from its weights with --init-from {run_dir / LAST}")
    repeated = frames_in_both(read, split)
    if repeated:  # not refused (the run is the user's), but its validation is no longer held out
        log.warning("%s: %s of the validation also in training under another ID (the same pixels), so not held "
                    "out: %s%s", settings.data, count_of(len(repeated), "frame"),
                    ", ".join(f"{v} = {t}" for v, t in repeated[:5]), " ..." if len(repeated) > 5 else "")
    loaded = on_inference_grid(read, settings.input_size)
    all_cases = {c.case_id: c for c in loaded}
    train_cases = [all_cases[i] for i in train_ids]
    val_cases = [all_cases[i] for i in split.validation_ids]

    if settings.endpoint_weight and tuple(settings.input_size) != train_cases[0].labels.shape:
        raise ValueError("the end-point head is trained at the labels' size: use it with the frames' own input size")
    config = get_config(settings.config)
    trained_as = config if settings.drop_path is None else replace(config, drop_path=settings.drop_path)
    model = build_network(trained_as).to(device).to(memory_format=torch.channels_last)
    endpoint_head = None
    parameters = list(model.parameters())
    if settings.endpoint_weight:
        endpoint_head = EndpointHead(config.decoder_width).to(device).to(memory_format=torch.channels_last)
        parameters += list(endpoint_head.parameters())
    level_heads = None
    if settings.deep_supervision:
        level_heads = DeepSupervisionHeads(config.decoder_width, config.num_classes, len(config.dims) - 1)
        level_heads = level_heads.to(device).to(memory_format=torch.channels_last)
        parameters += list(level_heads.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, len(train_cases) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = int(settings.warmup_epochs * steps_per_epoch)
    rng = np.random.default_rng(settings.seed)
    history: list[EpochResult] = []
    best_score, best_epoch, start_epoch, step = -1.0, 0, 0, 0
    lineage: list[dict] = []
    if checkpoint is not None:
        model.load_state_dict(checkpoint.get("raw_model", checkpoint["model"]))
        if endpoint_head is not None:
            endpoint_head.load_state_dict(checkpoint["endpoint_head"])
        if level_heads is not None:
            level_heads.load_state_dict(checkpoint["deep_supervision_heads"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        rng.bit_generator.state = checkpoint["numpy_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            # Drop-path draws on the GPU's generator: reseeded alone, a resumed run replayed the first
            # epoch's masks (a training review). A checkpoint of another device, or of before, has none.
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
        history = [EpochResult(**h) for h in checkpoint["history"]]
        best_score, best_epoch = checkpoint["best_score"], checkpoint["best_epoch"]
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
        lineage = checkpoint.get("lineage", [])
        log.info("resuming %s at epoch %d", settings.config, start_epoch + 1)
        if start_epoch >= settings.epochs:
            log.warning("%s has finished its %d epochs; --epochs N (more) extends it, stretching its learning-rate "
                        "schedule over N", run_dir, settings.epochs)
        elif settings.epochs > planned_epochs and step >= warmup_steps:
            # The cosine is planned on the run's length: more epochs move every later rate, the next one first.
            planned_lr = lr_at(step, steps_per_epoch * planned_epochs, warmup_steps, settings.learning_rate,
                               settings.min_lr_fraction)
            log.warning("%s was planned on %d epochs and now runs to %d: its learning-rate schedule is stretched "
                        "over them, so epoch %d starts at a rate of %.3g instead of %.3g", run_dir, planned_epochs,
                        settings.epochs, start_epoch + 1,
                        lr_at(step, total_steps, warmup_steps, settings.learning_rate, settings.min_lr_fraction),
                        planned_lr)
    elif settings.init_from:
        init = read_checkpoint(settings.init_from)
        load_initial_weights(model, init, settings.init_from)
        # Read now: the parent file may be overwritten later (a shipped model fine-tuned in place).
        lineage = lineage_of(settings.init_from, init)
        log.info("initialised %s from %s", config.name, settings.init_from)
        seen = trained_before(lineage, split.validation_ids)
        if seen:  # its validation there would read as one, and be the weights' fit
            log.warning("%d of the %d validation frames (%s%s) were training frames of a run its weights start from "
                        "(%s): its validation figures on them are a fit, not a validation; hold out frames those "
                        "runs did not see", len(seen), len(split.validation_ids), ", ".join(seen[:5]),
                        ", ..." if len(seen) > 5 else "", settings.init_from)

    ema = None
    if settings.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
        if checkpoint is not None and "raw_model" in checkpoint:
            ema.module.load_state_dict(checkpoint["model"])
            ema.n_averaged.fill_(checkpoint["ema_updates"])
    # Only now, with the data read and the weights in place: a refused run leaves no folder behind.
    _make_run_folder(run_dir)
    if not locked:
        _lock_run_folder(run_dir, held)
    _write_text(run_dir / "split.json", json.dumps(split.to_dict(), indent=1))
    _write_text(run_dir / "settings.json", json.dumps(settings.to_dict(), indent=1))
    if checkpoint is not None:
        _bring_level_with_last(run_dir, checkpoint)
    use_bf16 = _use_bf16(settings, device)
    # What each epoch's checkpoint records of the machine (read once: it does not change in a run).
    machine = {"platform": platform.platform(), "processor": cpu_model(), "torch": torch.__version__,
               "device": settings.device, "bf16_autocast": use_bf16, "ipp_seg": software_version()}
    log.info("bf16 autocast: %s", use_bf16)
    # settings.json holds the recipe (bf16 as asked: null is "where the machine computes it
    # natively"); what each session of the run actually ran with, and from which command, is here.
    session = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
               "from_epoch": start_epoch, "epochs": settings.epochs,
               "threads": torch.get_num_threads() if device.type == "cpu" else None, **machine}
    _append_line(run_dir / SESSIONS, _json_line(session))
    if on_start:
        on_start(settings, split)
    model.train()
    for epoch in range(start_epoch, settings.epochs):
        started = time.perf_counter()
        order = rng.permutation(len(train_cases))
        losses = []
        for i in range(steps_per_epoch):
            batch = [train_cases[j] for j in order[i * settings.batch_size:(i + 1) * settings.batch_size]]
            x, y = _batch_tensors(batch, rng, settings, config.in_channels)
            x, y = x.to(device), y.to(device)
            lr = lr_at(step, total_steps, warmup_steps, settings.learning_rate, settings.min_lr_fraction)
            for group in optimiser.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                outputs = model.decode(x)
                heatmap = endpoint_head(outputs.fused) if endpoint_head is not None else None
                level_logits = level_heads(outputs.levels) if level_heads is not None else None
            loss = segmentation_loss(logits_on_grid(outputs.logits, tuple(y.shape[-2:])), y, settings.dice_weight,
                                     settings.ce_class_weights, settings.dice_class_weights, settings.shape_weight,
                                     settings.boundary_weight)
            if heatmap is not None:
                ends = [ps_axis_ends(lab) for lab in y.cpu().numpy()]
                loss = loss + settings.endpoint_weight * endpoint_heatmap_loss(heatmap, ends, tuple(y.shape[-2:]))
            if level_logits is not None:
                loss = loss + settings.deep_supervision * deep_supervision_loss(
                    level_logits, y, settings.dice_weight, settings.ce_class_weights, settings.dice_class_weights)
            if not torch.isfinite(loss.detach()):
                raise TrainingDiverged(_diverged(run_dir, epoch, i, steps_per_epoch, f"the training loss is "
                                                 f"{float(loss.detach())}"))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            # The auxiliary heads' too, when trained. A non-finite norm would write NaN into every weight.
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            if not torch.isfinite(grad_norm):
                raise TrainingDiverged(_diverged(run_dir, epoch, i, steps_per_epoch,
                                                 f"the gradient of the training loss is {float(grad_norm)}"))
            optimiser.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            losses.append(float(loss.detach()))
            if on_step:
                on_step(epoch + 1, i + 1, steps_per_epoch, losses[-1])

        kept = model if ema is None else ema.module  # the weights a checkpoint ships
        dice_ps, dice_fh = validate(kept, val_cases, settings, device) if val_cases else (math.nan, math.nan)
        score = (dice_ps + dice_fh) / 2
        is_best = bool(score > best_score) or not val_cases
        if is_best:
            best_score, best_epoch = score, epoch + 1
        result = EpochResult(epoch + 1, settings.epochs, float(np.mean(losses)), dice_ps, dice_fh, score,
                             lr, time.perf_counter() - started, is_best)
        history.append(result)
        payload = {
            "model": kept.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch + 1, "step": step,
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": [asdict(h) for h in history], "best_score": best_score, "best_epoch": best_epoch,
            "settings": settings.to_dict(), "config": config.to_dict(), "split": split.to_dict(),
            "lineage": lineage, "data_sha256": data_sha256, "case_sha256": case_sha256,
            "machine": machine,
        }
        if endpoint_head is not None:
            payload["endpoint_head"] = endpoint_head.state_dict()
        if level_heads is not None:
            payload["deep_supervision_heads"] = level_heads.state_dict()
        if ema is not None:
            payload["raw_model"] = model.state_dict()
            payload["ema_updates"] = int(ema.n_averaged)
        # last.pt first: a run stopped before the other two files are written leaves them one
        # epoch behind it, which --resume rebuilds from it (_bring_level_with_last).
        save_replacing(last_path, payload)
        if is_best:
            save_replacing(best_path, _best_payload(payload))
        _append_line(run_dir / HISTORY, _json_line(asdict(result)))
        log.debug("epoch %d/%d loss %.4f dice PS %.4f FH %.4f (%.0f s)%s", result.epoch, result.epochs,
                 result.train_loss, dice_ps, dice_fh, result.seconds, " best" if is_best else "")
        if on_epoch:
            on_epoch(result)
    return TrainResult(run_dir, best_epoch, best_score, tuple(history), split)


def _best_payload(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in _RESUME_ONLY}


def _bring_level_with_last(run_dir: Path, checkpoint: dict) -> None:
    """Rebuild best.pt and history.jsonl from last.pt where a run stopped between an epoch's
    writes left them behind it (last.pt is written first), or two runs mixed their lines."""
    history_path = run_dir / HISTORY
    lines = "".join(_json_line(h) + "\n" for h in checkpoint.get("history", []))
    try:
        logged = history_path.read_text(encoding="utf-8") if history_path.is_file() else None
    except (OSError, UnicodeDecodeError):
        logged = ""
    if logged != lines:
        _write_text(history_path, lines)
        if logged is not None:
            log.warning("%s did not list the epochs %s holds (a run stopped between its writes, or another wrote "
                        "into it): written again from it", history_path, LAST)
    best_epoch, last_epoch = checkpoint.get("best_epoch"), checkpoint.get("epoch")
    best_path = run_dir / BEST
    try:
        held_epoch = read_checkpoint(best_path).get("epoch") if best_path.is_file() else None
    except ValueError:
        held_epoch = None  # damaged: as if missing
    if not best_epoch or held_epoch == best_epoch:
        return
    if best_epoch == last_epoch:
        save_replacing(best_path, _best_payload(checkpoint))
        log.warning("%s did not hold the run's best epoch %d (a run stopped between its writes): written again from %s",
                    best_path, best_epoch, LAST)
    else:
        log.warning("%s does not hold the run's best epoch %d, and %s holds epoch %d: that epoch's weights are lost",
                    best_path, best_epoch, LAST, last_epoch)


def _diverged(run_dir: Path, epoch: int, step: int, steps: int, what: str) -> str:
    """What stopped the run, where, and what its checkpoints hold (``epoch``: 0-based)."""
    kept = (f"this epoch was not saved ({run_dir / LAST} holds epoch {epoch}; --init-from it starts again from "
            "there)" if epoch else "no epoch was saved")
    return (f"epoch {epoch + 1}, step {step + 1} of {steps}: {what}; training stopped before the weights took it, "
            f"and {kept}. A lower --lr, or other --ce-weights / --dice-weights, may train")


def load_initial_weights(model: torch.nn.Module, init: dict, source: str | Path) -> list[str]:
    """Load ``init["model"]`` into ``model``. The same config loads whole; a config with the
    same backbone and another head (``NetworkConfig.same_backbone``) loads every tensor whose
    name and shape match, and the head's new tensors keep their fresh initialisation.
    Returns the names of the tensors not loaded; raises ValueError for any other network."""
    config = model.config
    parent = init.get("config", {})
    if parent.get("name") == config.name:
        model.load_state_dict(init["model"])
        return []
    if not config.same_backbone(parent):
        raise ValueError(f"--init-from {source} holds a {parent.get('name')!r} network, not {config.name!r} "
                         "or one with the same backbone")
    own = model.state_dict()
    matched = {k: v for k, v in adapt_parent_state(init["model"], config).items()
               if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    fresh = sorted(set(own) - set(matched))
    log.info("initialised from %s (%s); tensors new to this head: %s", source, parent.get("name"),
             ", ".join(fresh))
    return fresh


def load_torch_file(source) -> object:
    """``torch.load`` of a checkpoint or weights file (a path or a file object), to the CPU, with
    torch's weights-only unpickler: tensors, numbers, strings and containers, and torch's
    version, which is all ipp-seg writes. A file holding other objects is refused, never run:
    a full unpickler would execute whatever code a file handed over as "a model" carries."""
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        return torch.load(source, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`train` (or shipped weights, or an average of runs).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: the file is not one (another format, truncated, or not ipp-seg's), or the
        path is a folder.
    """
    check_checkpoint_path(path)
    start = _check_torch_file_start(path)
    try:
        checkpoint = load_torch_file(path)
    # (Junk after a pickle's first byte makes torch's weights-only unpickler raise anything: KeyError 101 for
    # "hello" had ended export, predict and batch in a traceback.)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ImportError, ValueError, KeyError,
            IndexError, TypeError, OverflowError) as exc:
        if "Weights only load failed" in str(exc):
            raise ValueError(f"{path} holds Python objects besides weights and settings, which ipp-seg does not "
                             "load (unpickling them could run any code): not a checkpoint written by ipp-seg "
                             "train") from None
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if start.startswith(_TORCH_ZIP_START):  # torch.save's format: a file cut short or damaged
            raise ValueError(f"{path} is damaged or cut short (a copy or a save that did not finish; torch cannot "
                             f"load it: {why})") from None
        raise ValueError(f"{path} is not a checkpoint written by ipp-seg train (torch cannot load it: {why})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "name" not in checkpoint.get("config", {}):
        raise ValueError(f"{path} is not a checkpoint written by ipp-seg train (no model weights and config in it)")
    # Checkpoints from before the digest carry none; those are taken as they load.
    if CONTENT_DIGEST in checkpoint and checkpoint_digest(checkpoint) != checkpoint[CONTENT_DIGEST]:
        raise ValueError(f"{path} is damaged: its contents differ from the checksum written with them (a disk or "
                         "copy error changed bytes inside it)")
    return checkpoint


#: How the files torch.save writes begin: a zip archive (torch 1.6 on), or a pickle (protocol 2 on).
_TORCH_ZIP_START = b"PK\x03\x04"
_TORCH_FILE_STARTS = (_TORCH_ZIP_START, b"\x80")


def _check_torch_file_start(path: str | Path) -> bytes:
    """The first bytes of ``path``; ValueError, saying what it is instead, for a file that does
    not begin as torch.save's do: empty, a Git LFS pointer (a clone made without git-lfs), text,
    or another kind of file. Such files had been called pickles that hold "Python objects besides
    weights", as if one were an attack."""
    with open(path, "rb") as fh:
        start = fh.read(64)
    if not start:
        raise ValueError(f"{path} is empty (a save or copy that did not finish, or a full disk)")
    if start.startswith(_TORCH_FILE_STARTS):
        return start
    if start.startswith(b"version https://git-lfs"):
        raise ValueError(f"{path} is a Git LFS pointer, not the weights: fetch them (git lfs pull in the clone), or "
                         "download the file itself")
    kind = next((name for magic, name in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                                         (b"\x08", "an ONNX model, or other protobuf data"),
                                         (b"{", "JSON text"), (b"<", "HTML or XML text"))
                 if start.startswith(magic)), None)
    if kind is None:
        try:
            start.decode("utf-8")
            kind = "text"
        except UnicodeDecodeError:
            kind = "another kind of file"
    raise ValueError(f"{path} is not a PyTorch file (it begins as {kind}): not a checkpoint written by ipp-seg train")


def _same_parent(init_from: str | None, recorded: str | None, checkpoint: dict) -> bool:
    """Whether ``init_from`` (a full path) names the file the run in ``checkpoint`` started from
    (``recorded``, as its settings hold it): the same path, runs before 0.2.8 having recorded it
    as typed, relative to a folder they did not record (taken from here); or, however it is
    spelt, the same bytes (the sha256 its lineage recorded when it started)."""
    from ..inference.registry import sha256_of

    if not init_from or not recorded:
        return False
    if os.path.abspath(recorded) == init_from:
        return True
    parent = (checkpoint.get("lineage") or [{}])[-1]
    return bool(parent.get("sha256") and os.path.isfile(init_from) and sha256_of(init_from) == parent["sha256"])


def _read_split_file(path: Path) -> dict | None:
    """split.json of a run whose last.pt predates keeping the split in it (None: no file)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}): the run's split is unknown") from None


def _resumed_split(saved: dict, ids: list[str], data: str) -> Split:
    """The split a run was started with: computed again from a folder that has changed since,
    it would move frames from validation into training without a word."""
    missing = sorted((set(saved["train"]) | set(saved["validation"])) - set(ids))
    if missing:
        raise ValueError(f"{data} lacks {len(missing)} case(s) of the run's split (e.g. {', '.join(missing[:5])}): "
                         "resume with the data the run started with")
    added = set(ids) - set(saved["train"]) - set(saved["validation"])
    if added:
        shown = sorted(added)
        log.warning("%d case(s) in %s are not in the run's split and are left out (the split is the run's own): %s%s",
                    len(added), data, ", ".join(shown[:10]), " ..." if len(shown) > 10 else "")
    return Split(tuple(saved["train"]), tuple(saved["validation"]))


def load_checkpoint_model(path: str | Path):
    """(model in eval mode, checkpoint dict) from a checkpoint written by :func:`train`."""
    checkpoint = read_checkpoint(path)
    # The network as the checkpoint records it, not the registered config of its name: a clone
    # without that config (a maintainer's own) had ended export and the torch backend in a
    # KeyError, and a config edited since would have been built other than the weights were.
    try:
        config = NetworkConfig.from_dict(checkpoint["config"])
    except ValueError as exc:
        raise ValueError(f"{path}: its network config cannot be rebuilt: {exc}") from None
    model = build_network(config)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint
