"""Inference: pre- and post-processing, model backends and registry, batches.

For use from Python, :class:`Predictor` segments and measures files, frames or arrays with a
model loaded once (see :mod:`ipp_seg.inference.predictor`). Importing this never imports torch.
"""

from .backends import BackendError
from .batch import FrameFailure
from .pipeline import FrameResult
from .predictor import NotUltrasoundFrameError, Predictor
from .registry import ModelNotFoundError, shipped_models

__all__ = ["BackendError", "FrameFailure", "FrameResult", "ModelNotFoundError", "NotUltrasoundFrameError", "Predictor",
           "shipped_models"]
