"""Shipped models: where they live, their cards, and resolving ``--model NAME|PATH``.

A shipped model is ``models/<name>.onnx`` (served by onnxruntime), ``models/<name>.pt`` (the
PyTorch weights), and its card ``models/<name>.json``. The models folder is the repository's
``models/`` (the package is installed editable from a clone) or ``$IPP_SEG_MODELS``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "dssau-net-s"


class ModelNotFoundError(LookupError):
    pass


def models_dir() -> Path:
    env = os.environ.get("IPP_SEG_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class ModelSpec:
    """A model file to load and, for shipped models, its card (a dict)."""

    name: str
    onnx_path: Path | None
    torch_path: Path | None
    card: dict | None


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_models() -> list[ModelSpec]:
    """Every model whose card is in the models folder, in name order."""
    folder = models_dir()
    specs = []
    for card_path in sorted(folder.glob("*.json")):
        card = json.loads(card_path.read_text())
        if "config" not in card:
            continue
        onnx_path = folder / card["files"]["onnx"]["name"] if "onnx" in card.get("files", {}) else None
        torch_path = folder / card["files"]["torch"]["name"] if "torch" in card.get("files", {}) else None
        specs.append(ModelSpec(card["name"], onnx_path, torch_path, card))
    return specs


def resolve_model(name_or_path: str | None) -> ModelSpec:
    """A shipped model by name (default :data:`DEFAULT_MODEL`), or a model file by path
    (``.onnx`` for onnxruntime, ``.pt`` checkpoint for the torch backend)."""
    name_or_path = name_or_path or DEFAULT_MODEL
    path = Path(name_or_path)
    if path.suffix in (".onnx", ".pt", ".pth"):
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        # A run's best.pt / last.pt are named by their run folder too: every run has one.
        name = f"{path.parent.name}/{path.stem}" if path.stem in ("best", "last") and path.parent.name else path.stem
        return ModelSpec(name, path if path.suffix == ".onnx" else None,
                         path if path.suffix != ".onnx" else None, None)
    for spec in shipped_models():
        if spec.name == name_or_path:
            return spec
    known = ", ".join(s.name for s in shipped_models()) or "none shipped"
    raise ModelNotFoundError(f"unknown model {name_or_path!r} (shipped: {known}; or give a .onnx/.pt path)")
