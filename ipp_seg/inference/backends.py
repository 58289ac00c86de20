"""Model backends: onnxruntime (the default, no torch needed) and PyTorch (optional).

Both expose the same small interface: ``input_size`` (H, W), ``in_channels``,
``normalisation`` (dict), ``name``, ``provider`` (what actually ran) and
``logits(batch) -> np.ndarray`` for a float32 batch [N, C, H, W].
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import IppSegError
from .preprocess import DEFAULT_NORMALISATION
from .registry import ModelSpec, check_model_file

log = logging.getLogger(__name__)


#: Name of the batch axis in the ONNX files ipp-seg exports.
BATCH_DIMENSION = "batch"
BACKENDS: tuple[str, ...] = ("onnx", "torch")
DEVICES: tuple[str, ...] = ("cpu", "cuda")


class BackendError(IppSegError, RuntimeError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    config_name: str
    input_size: tuple[int, int]
    in_channels: int
    normalisation: dict
    class_names: tuple[str, ...]
    model_sha256: str = ""  # of the file that serves it (see check_model_file)
    # (head, PS) confidences below which results carry low_confidence / ps_low_confidence, as the
    # model's card gives them from its validation frames; None: the defaults (the shipped models').
    confidence_floors: tuple[float, float] | None = None


def card_confidence_floors(spec: ModelSpec) -> tuple[float, float] | None:
    """The (head, PS) confidence floors of ``spec``'s model card, None where it gives none."""
    floors = (spec.card or {}).get("confidence_floors")
    try:
        return (float(floors["head"]), float(floors["ps"])) if floors else None
    except (KeyError, TypeError, ValueError):
        return None


def confidence_floors_used(spec: ModelSpec) -> dict[str, float]:
    """The (head, PS) confidence floors results of ``spec`` are judged with, as a run records
    them: its card's, else the defaults. They move rows between measured and warned, so an audit
    must find them (a card's floors set to 0 had turned a failed noise frame into a measured one
    without a trace in the rows, a QA auditor's pass)."""
    from .pipeline import MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE

    head, ps = card_confidence_floors(spec) or (MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE)
    return {"head": head, "ps": ps}


def inference_session(path: str, threads: int | None, fixed_batch: int | None, providers: tuple[str, ...]):
    """An onnxruntime session of the ONNX file at ``path``: ``threads`` for its operators (None:
    onnxruntime's choice), specialised to ``fixed_batch`` frames per call where given, on the
    first of ``providers`` that serves."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # onnxruntime's own log lines (coloured, on stderr) say what the exception it raises says:
    # a library that promises to print nothing leaves them to it (an admin's pass: escape codes in
    # a job's log file).
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if fixed_batch:
        options.add_free_dimension_override_by_name(BATCH_DIMENSION, fixed_batch)
    # The memory pattern pre-plans one block for a fixed-shape run's tensors: measured no
    # faster here and ~230 MiB more per worker at batch 8 (572 vs 342 MiB resident).
    options.enable_mem_pattern = False
    return ort.InferenceSession(path, options, providers=list(providers))


class OnnxSegmenter:
    """onnxruntime session of an exported model; its metadata gives size and normalisation.

    With ``fixed_batch``, the session is specialised to that many frames per call: onnxruntime
    then folds the graph's shape computations once (the exported graph keeps the batch size
    dynamic, which costs ~1,400 small Shape/Gather/Unsqueeze/Concat nodes on every call;
    measured 4-5 % of the model time at batch 8). Calls with fewer frames are padded with zero
    frames, calls with more are split; each frame's logits do not depend on the others. Meant
    for batch runs, where nearly every call is full; a one-frame ``predict`` keeps it off.
    """

    def __init__(self, spec: ModelSpec, device: str = "cpu", threads: int | None = None,
                 fixed_batch: int | None = None) -> None:
        import onnxruntime as ort  # (its telemetry turned off by importing ipp_seg, see ipp_seg/__init__.py)

        # Also where a program imported onnxruntime before ipp_seg, when the environment setting
        # came too late: no events are queued for a session ipp-seg runs.
        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()
        if spec.onnx_path is None:
            if spec.torch_path is not None and (spec.card is None or spec.given_as_file):  # --model FILE.pt
                beside = spec.torch_path.with_suffix(".onnx")
                export = f"--model {beside}" if beside.is_file() else "its ONNX export (ipp-seg export) to --model"
                raise BackendError(f"{spec.torch_path} is PyTorch weights: run it with --backend torch "
                                   f"(backend='torch' in Python), or give {export}")
            raise BackendError(f"model {spec.name} has no ONNX file; use --backend torch (backend='torch' in Python)")
        model_sha256 = check_model_file(spec, spec.onnx_path, "onnx")
        providers = ("CPUExecutionProvider",)
        if device == "cuda":
            if device_used("onnx", device) == "cuda":
                providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
            else:
                log.warning("CUDA requested but onnxruntime has no CUDA provider here: running on CPU")
        try:
            self.session = inference_session(str(spec.onnx_path), threads, fixed_batch, providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"cannot load model {spec.onnx_path}: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info = ModelInfo(
                name=spec.name, config_name=meta["config_name"],
                input_size=tuple(json.loads(meta["input_size"])), in_channels=int(meta["input_channels"]),
                normalisation=json.loads(meta["normalisation"]) or dict(DEFAULT_NORMALISATION),
                class_names=tuple(json.loads(meta["class_names"])), model_sha256=model_sha256,
                confidence_floors=card_confidence_floors(spec))
        except KeyError as exc:
            raise BackendError(f"{spec.onnx_path} lacks ipp-seg metadata ({exc}); export it with `ipp-seg export`")
        check_card_config(spec, self.info.config_name, spec.onnx_path)
        model_input = self.session.get_inputs()[0]
        self._input = model_input.name
        fixed_size = tuple(model_input.shape[-2:])
        if all(isinstance(d, int) for d in fixed_size) and fixed_size != self.info.input_size:
            # Frames would be resized to the metadata's size and refused by the network.
            raise BackendError(f"{spec.onnx_path}: its metadata says input {self.info.input_size}, the network "
                               f"takes {fixed_size}; export it again with `ipp-seg export`")
        # A file exported with another name for its batch axis simply stays dynamic.
        self.fixed_batch = fixed_batch if model_input.shape[0] == fixed_batch else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = self.fixed_batch
        if n is None or len(batch) == n:
            return self.session.run(None, {self._input: batch})[0]
        parts = []
        for start in range(0, len(batch), n):
            chunk = batch[start:start + n]
            if len(chunk) < n:
                chunk = np.concatenate([chunk, np.zeros((n - len(chunk), *chunk.shape[1:]), np.float32)])
            parts.append(self.session.run(None, {self._input: chunk})[0])
        return np.concatenate(parts)[: len(batch)]


def check_card_config(spec: ModelSpec, config_name: str, path) -> None:
    """Refuse (:class:`BackendError`) a model file whose network is not the config its card
    names: the card's figures, recipe and name would describe another network."""
    said = (spec.card or {}).get("config")
    if said and said != config_name:
        raise BackendError(f"model {spec.name}: {path} holds a {config_name} network, its card "
                           f"{spec.card_path.name if spec.card_path else ''} describes {said}: the card's figures are "
                           "not this file's; copy the file to a name of its own and give that to --model")


class TorchSegmenter:
    """A training checkpoint run by PyTorch (needs the [train] extra)."""

    def __init__(self, spec: ModelSpec, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import torch

            from ..train.loop import load_checkpoint_model
        except ImportError as exc:
            raise BackendError(f"the torch backend needs torch: pip install -e '.[train]' in the ipp-seg clone "
                               f"({exc})") from exc
        if spec.torch_path is None:
            raise BackendError(f"model {spec.name} has no PyTorch weights; use --backend onnx")
        model_sha256 = check_model_file(spec, spec.torch_path, "torch")
        if threads:
            torch.set_num_threads(threads)
        if device_used("torch", device) != device:
            log.warning("CUDA requested but torch sees no GPU: running on CPU")
            device = "cpu"
        self._torch = torch
        self.device = torch.device(device)
        self.provider = f"torch-{self.device.type}"
        try:
            model, checkpoint = load_checkpoint_model(spec.torch_path)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        self.model = model.to(self.device)
        settings = checkpoint.get("settings", {})
        self.info = ModelInfo(
            name=spec.name, config_name=model.config.name,
            input_size=tuple(settings.get("input_size", (256, 256))), in_channels=model.config.in_channels,
            normalisation=settings.get("normalisation") or dict(DEFAULT_NORMALISATION),
            class_names=model.config.class_names, model_sha256=model_sha256,
            confidence_floors=card_confidence_floors(spec))
        check_card_config(spec, model.config.name, spec.torch_path)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            x = self._torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()


def device_used(backend: str, device: str) -> str:
    """The device a segmenter of ``backend`` asked for ``device`` runs on: ``cpu`` where CUDA is
    asked but there is none for the backend (onnxruntime without its CUDA provider, torch
    without a GPU), as the segmenters fall back; for a run's record, which had said ``cuda`` of a
    run on the CPU."""
    if device != "cuda":
        return device
    try:
        if backend == "torch":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        import onnxruntime as ort

        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    except ImportError:  # (the segmenter says so when it loads)
        return device


def load_segmenter(spec: ModelSpec, backend: str = "onnx", device: str = "cpu", threads: int | None = None,
                   fixed_batch: int | None = None):
    """A segmenter of ``spec``; ``fixed_batch`` specialises an ONNX session to that batch
    size (see :class:`OnnxSegmenter`; the torch backend has no use for it)."""
    if backend == "onnx":
        return OnnxSegmenter(spec, device, threads, fixed_batch)
    if backend == "torch":
        return TorchSegmenter(spec, device, threads)
    raise BackendError(f"unknown backend {backend!r} ({' or '.join(BACKENDS)})")
