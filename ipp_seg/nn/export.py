"""Export a trained network to ONNX with the metadata inference needs.

The ONNX file carries, as metadata properties: the config name, the input size, the input
normalisation, the class names and the ipp-seg version, so that inference never relies on
constants of its own; exported from a checkpoint file, also where it came from and which frames
it trained on.
"""

from __future__ import annotations

import json
import logging
import uuid
import warnings
from pathlib import Path

import torch

from ..io.writers import STAGING_PREFIX, STAGING_SUFFIX, replacing
from ..machine import software_version
from .dssau_net import DSSAUNet

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 17  # the lowest ipp-seg exports and tests (the README promises opset >= 17)
# Weight tensors of at least this many values are stored as float16 by ``fp16_weights=True``;
# smaller ones (norm scales, biases, depthwise kernels, the graph's own constants such as
# epsilons, which float16 would round to 0) stay float32. They are a small share of the bytes.
FP16_MIN_ELEMENTS = 1024


def max_opset() -> int:
    """The highest opset the installed torch's TorchScript exporter (the one used here,
    ``dynamo=False``) writes: 20 in torch 2.13. Above it torch warns and writes a
    graph it has not checked, or fails with a dump of its IR."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", DEFAULT_OPSET))


def check_opset(opset: int) -> None:
    """Raises ValueError, naming the bounds, for an opset this export cannot write."""
    highest = max_opset()
    if not MIN_OPSET <= opset <= highest:
        raise ValueError(f"--opset must be {MIN_OPSET} to {highest} (the highest the installed torch "
                         f"{torch.__version__} exports), got {opset}")


def onnx_metadata(model: DSSAUNet, input_size: tuple[int, int], normalisation: dict,
                  extra: dict | None = None) -> dict[str, str]:
    """The metadata written into the ONNX file (all values are strings; dicts as JSON)."""
    meta = {
        "ipp_seg_version": software_version(),
        "config_name": model.config.name,
        "config": json.dumps(model.config.to_dict()),
        "input_size": json.dumps(list(input_size)),  # [height, width]
        "input_channels": str(model.config.in_channels),
        "normalisation": json.dumps(normalisation),
        "class_names": json.dumps(list(model.config.class_names)),
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def export_onnx(model: DSSAUNet, path: str | Path, input_size: tuple[int, int] = (256, 256),
                normalisation: dict | None = None, opset: int = DEFAULT_OPSET,
                extra_metadata: dict | None = None, fp16_weights: bool = False) -> Path:
    """Write ``model`` to ``path`` as ONNX: input ``image`` [N, C, H, W] float32 (N dynamic,
    H and W fixed to ``input_size``), output ``logits`` [N, classes, H, W].

    ``fp16_weights`` stores the weight tensors as float16 (:func:`store_weights_as_float16`):
    the file is about half the size and the network still computes in float32. The weights are
    rounded to float16 once, after the export has folded what it folds (a convolution with its
    batch norm): a model whose weights are already float16 values loses only that rounding.

    Raises:
        ValueError: ``opset`` is outside what the installed torch exports (:func:`check_opset`).
    """
    import onnx

    check_opset(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    dummy = torch.zeros(2, model.config.in_channels, *input_size)
    # Exported and folded beside the target under a hidden name, the whole model then written over it (a
    # QA pass: a stop while torch wrote to the target had replaced an earlier, good export with a model
    # without its metadata, which inference refuses).
    staging = path.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}{STAGING_SUFFIX}")
    try:
        with warnings.catch_warnings():
            # The tracer warns at every Python-level use of a shape (padding to the window, the
            # number of tokens kept, the decoder's resizing). The input size is fixed in the graph,
            # so those values are constants by design: the warnings say nothing to act on. Only
            # here, and only these: any other warning of the export still shows.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (dummy,), str(staging), opset_version=opset, input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
            )
        proto = _fold_constants(staging)
    finally:
        staging.unlink(missing_ok=True)
    meta = onnx_metadata(model, input_size, normalisation or {}, extra_metadata)
    if fp16_weights:
        stored = store_weights_as_float16(proto)
        meta["weights_stored_as"] = "float16"
        log.info("%d weight tensors stored as float16", stored)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "ipp-seg"
    proto.producer_version = software_version()
    onnx.checker.check_model(proto)
    with replacing(path) as fh:
        fh.write(proto.SerializeToString())
    log.info("exported %s to %s", model.config.name, path)
    return path


def export_checkpoint(model: DSSAUNet, checkpoint: dict, path: str | Path, opset: int = DEFAULT_OPSET,
                      extra_metadata: dict | None = None, fp16_weights: bool = False,
                      source: str | Path | None = None) -> Path:
    """:func:`export_onnx` of a training checkpoint's ``model`` with what its run trained with:
    the input size (256 x 256 for a checkpoint that does not say) and the input normalisation
    (inference then applies exactly the same). ``source``, the checkpoint's file, adds where the
    weights came from and which frames they trained on
    (:func:`~ipp_seg.train.lineage.export_provenance`)."""
    settings = checkpoint.get("settings") or {}
    if source is not None:
        from ..train.lineage import export_provenance

        extra_metadata = {**export_provenance(checkpoint, source), **(extra_metadata or {})}
    return export_onnx(model, path, tuple(settings.get("input_size", (256, 256))), settings.get("normalisation"),
                       opset, extra_metadata, fp16_weights)


def store_weights_as_float16(proto, min_elements: int = FP16_MIN_ELEMENTS) -> int:
    """Store each float32 initializer of at least ``min_elements`` values as float16, read back
    to float32 by a Cast at the top of the graph, so that every operator still runs in float32
    (onnxruntime's CPU kernels mostly lack float16) and onnxruntime folds the casts away when a
    session loads. Changes ``proto`` in place; returns how many tensors were converted."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    inputs = {value.name for value in graph.input}
    taken = ({init.name for init in graph.initializer} | {n for node in graph.node for n in node.output}
             | inputs | {value.name for value in graph.output})
    casts, converted = [], 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        if init.name in inputs:  # an overridable default (older IR): a caller may feed it as float32
            continue
        values = numpy_helper.to_array(init)
        if not np.all(np.isfinite(values)) or np.abs(values).max() > np.finfo(np.float16).max:
            continue  # float16 cannot hold it: kept as it is
        name, stored = init.name, f"{init.name}__fp16"
        while stored in taken:
            stored += "_"
        taken.add(stored)
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(onnx.helper.make_node("Cast", [stored], [name], to=onnx.TensorProto.FLOAT,
                                           name=f"{stored}_to_float32"))
        converted += 1
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return converted


def _fold_constants(path: Path):
    """The exported graph at ``path`` with onnxruntime's basic (hardware-independent) optimisations,
    as an ONNX model (the caller adds its metadata and writes it once).

    The tracer records every ``x.shape`` as Shape/Gather/Unsqueeze nodes; folding them once here
    (5,100 nodes down to about 2,100 for dssau-net-s) takes several hundred ms off every
    session start, which is most of a one-frame ``ipp-seg predict``. Only standard ONNX
    operators remain; the opset imports onnxruntime adds for its own domains are dropped.
    """
    import onnx
    import onnxruntime as ort  # (its telemetry turned off by importing ipp_seg)

    folded = path.with_suffix(".folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        proto = onnx.load(str(folded))
    finally:
        folded.unlink(missing_ok=True)
    used = {node.domain for node in proto.graph.node}
    kept = [entry for entry in proto.opset_import if entry.domain in used or entry.domain in ("", "ai.onnx")]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto

