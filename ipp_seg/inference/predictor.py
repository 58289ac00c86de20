"""Segment and measure scans from Python: the library behind ``ipp-seg predict``.

A :class:`Predictor` loads a model once and measures files, frames already read, or plain
pixel arrays, with the same pre-processing, checks and warnings as the command line::

    from ipp_seg.inference import FrameFailure, Predictor

    predictor = Predictor()                       # the default model, onnxruntime on the CPU
    for result in predictor.predict("scan.dcm"):  # one result per frame
        if isinstance(result, FrameFailure):      # a file or frame that could not be used
            print(result.reason)
        else:
            m = result.measurement                # status, reasons, aop_deg, hsd_mm, landmarks
            print(m.status, m.aop_deg, m.hsd_mm)

Nothing here prints, and global state is touched in three ways only, each for the whole process
as the libraries have no narrower setting: importing ``ipp_seg`` sets ``ORT_DISABLE_TELEMETRY=1``
in the environment unless it is set already, and each onnx ``Predictor`` calls onnxruntime's
``disable_telemetry_events()`` (no usage data leaves the machine, from any session); the torch
backend with ``threads`` sets torch's thread count (the default onnx backend's threads are its
session's own). Readers silence pydicom's and ITK's warnings while they read, and put them back
as the last reader leaves (safe for threads). Problems with the options raise ``ValueError``
before the model is loaded, and an unusable model raises :class:`ModelNotFoundError` or
:class:`BackendError`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ..errors import IppSegError
from ..io import Provenance, UltrasoundFrame
from ..io.frames import FrameSelection, check_spacing
from ..io.folders import given_path
from ..io.greyscale import colour_marks, luminance_rgb, to_output
from ..measure.progress import check_plausible_spacing
from .batch import (NOT_ULTRASOUND, BatchOptions, FileProcessor, FrameFailure, InferenceOptions,
                    check_inference_choices, file_sha256)
from .pipeline import FrameResult, FrameTooLongError, not_segmentable_reason, predict_frame

if TYPE_CHECKING:
    from .report import PredictedFrame

__all__ = ["NotUltrasoundFrameError", "Predictor"]

#: The provenance path of frames made from arrays by :meth:`Predictor.predict_pixels`.
ARRAY_SOURCE = "<array>"


class NotUltrasoundFrameError(IppSegError, ValueError):
    """A frame or array that is no ultrasound image the network can segment (too small, blank,
    a label mask). ``code`` is what a CSV row of such a frame gives as its reason."""

    code = NOT_ULTRASOUND


class Predictor:
    """A loaded model with the options of one run (see the module docstring).

    Args:
        model: a shipped model's name, a model card or ONNX file path, or None for the default.
        backend: "onnx" (default; onnxruntime) or "torch" (needs the ``train`` extra).
        device: "cpu" or "cuda" (falls back to the CPU, with a logged warning, when CUDA is
            not available; :attr:`provider` says what runs).
        method: AoP method, one of :data:`ipp_seg.measure.METHODS`.
        orientation: display convention, one of :data:`ipp_seg.measure.ORIENTATIONS`.
        frames: frames of each file: "all", "N", "A-B" or "A-end" (0-based), "/S" after one for
            every S-th frame ("all/5"), or a list ("0,5,9", "0-4,20"), as ``--frames`` takes them;
            or a frame index, or a :class:`~ipp_seg.io.FrameSelection`.
        spacing_mm: (x, y) mm per pixel for files without a calibration of their own.
        tta: average the network's output with that of the mirrored frame.
        threads: CPU threads for the model (None: the runtime's choice).
        fixed_batch: make every model call of exactly this many frames (8, as ``ipp-seg batch``
            does, gives its numbers to the last digit: onnxruntime's arithmetic differs in the
            last bits with the call's size); None: calls of any size. (ONNX backend only: the
            torch backend's calls take any size.)
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, backend: str = "onnx", device: str = "cpu",
                 method: str = "ellipse", orientation: str = "standard", frames: str | int | FrameSelection = "all",
                 spacing_mm: tuple[float, float] | None = None, tta: bool = False,
                 threads: int | None = None, fixed_batch: int | None = None) -> None:
        if model is not None and (not isinstance(model, (str, os.PathLike)) or not os.fspath(model)):
            raise ValueError(f"model must be a shipped model's name or a file path (None: the default), got {model!r}")
        if isinstance(frames, (int, np.integer)) and not isinstance(frames, (bool, np.bool_)) and frames >= 0:
            frames = str(int(frames))
        elif isinstance(frames, FrameSelection):
            frames = str(frames)  # (the text the command line takes, which a run's record and rows keep)
        if not isinstance(frames, str):
            raise ValueError(f"frames must be 'all', 'N', 'A-B', 'A-end' (0-based; '/S' after one for every S-th), a "
                             f"list such as '0,5,9', a FrameSelection or a frame index; got {frames!r}")
        check_inference_choices(method, orientation, frames, backend, device)
        if not isinstance(tta, bool):
            raise ValueError(f"tta must be True or False, got {tta!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= MAX_THREADS):
            raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS}, or None, got {threads!r}")
        if fixed_batch is not None and (isinstance(fixed_batch, bool) or not isinstance(fixed_batch, int)
                                        or not 1 <= fixed_batch <= 64):
            raise ValueError(f"fixed_batch must be an integer from 1 to 64, or None, got {fixed_batch!r}")
        spacing = check_spacing(spacing_mm)
        _plausible(spacing)
        options = InferenceOptions(None if model is None else os.fspath(model), backend, device, method,
                                   orientation, frames, spacing, tta, threads, fixed_batch)
        self._processor = FileProcessor(BatchOptions(Path("."), Path("."), options))
        self._file_sha256s: dict[tuple[Path, tuple[str, str]], str] = {}  # (path, stamp) -> sha256, for report()
        self._training_frames_said = False  # (predict(): said once)
        self._training_blocks: tuple[tuple[str, str], ...] | None = None  # (the model's training frames, read once)

    def __reduce__(self):
        # Its onnxruntime session (or torch module) cannot cross processes: say what to do instead.
        raise TypeError("a Predictor cannot be pickled (it holds a loaded model): make one in each worker process")

    @property
    def options(self) -> InferenceOptions:
        """The options every measurement of this predictor is made with."""
        return self._processor.options.inference

    @property
    def model_name(self) -> str:
        """The loaded model's name (as its card gives it)."""
        return self._processor.model_name

    @property
    def model_sha256(self) -> str:
        """The sha256 (hex) of the model file that runs: names the weights exactly, as the
        model's name does not once a model is retrained."""
        return self._processor.model_sha256

    @property
    def provider(self) -> str:
        """What runs the model, such as ``CPUExecutionProvider``."""
        return self._processor.segmenter.provider

    def predict(self, path: str | os.PathLike[str]) -> Iterator[FrameResult | FrameFailure]:
        """Segment and measure the selected frames of one scan (DICOM, image or ITK file).

        Yields a :class:`FrameResult` per frame, in frame order, or a :class:`FrameFailure`
        for a file or frame that cannot be read, or is not an ultrasound image (after a read
        failure the rest of the file is abandoned, as its frames cannot be trusted, but for a
        frame damaged alone, :class:`~ipp_seg.io.DamagedFrameError`: the frames after it are read). A path that
        is no path (None, "") raises ``TypeError`` / ``ValueError`` here, not at the first frame.
        """
        scan = _scan_path(path)
        if not self._training_frames_said:  # (once a predictor: a loop over a folder would say it per file)
            self._training_frames_said = bool(self._warn_of_training_frames([scan]))
        return self._processor.results(scan)

    def _warn_of_training_frames(self, scans: list[Path]) -> list[str]:
        """Warn (logged) where ``scans`` are named with IDs of the model's training frames, as
        ``ipp-seg predict`` and ``batch`` do (:func:`~ipp_seg.inference.registry.warn_of_training_frames`)."""
        from .registry import training_blocks, warn_of_training_frames

        if self._training_blocks is None:  # (once: a card-less ONNX file's are read by opening a session)
            self._training_blocks = training_blocks(self._processor.spec)
        return warn_of_training_frames(self._processor.spec, scans, blocks=self._training_blocks)

    def predict_files(self, paths: Iterable[str | os.PathLike[str]]
                      ) -> Iterator[tuple[Path, FrameResult | FrameFailure]]:
        """:meth:`predict` for many scans: (path, result) per frame, in the order of ``paths``
        and of each file's frames. Frames of consecutive files share model calls (up to 8 at a
        time, as ``ipp-seg batch`` does): somewhat faster than one :meth:`predict` per file
        for a folder of single-frame scans (1.2x on 48 PSFHS files, 2 threads, AVX2 CPU).
        onnxruntime's arithmetic differs in the last bits with the number of frames in a call,
        so a frame's AoP may differ from :meth:`predict`'s, or from ``ipp-seg batch``'s (which
        always calls with 8), by a few hundredths of a degree, on a rare frame by up to 0.6."""
        if isinstance(paths, (str, bytes, os.PathLike)):  # iterating it would give its characters
            raise TypeError(f"predict_files takes a list of paths, got the single path {os.fsdecode(paths)!r}: "
                            "predict(path) segments one scan")
        items = [(_scan_path(p), frozenset()) for p in paths]
        self._warn_of_training_frames([scan for scan, _ in items])
        return self._results_in_order(items)

    def predict_scans(self, paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None,
                      *, dicom_seg: bool = False, dicom_sr: bool = False) -> Iterator[PredictedFrame]:
        """What ``ipp-seg predict`` does: each frame of ``paths`` as a
        :class:`~ipp_seg.inference.report.PredictedFrame` (its CSV row, its JSON report, and the
        errors and warnings to show), and with ``out_dir`` the mask, overlay and JSON files (and
        DICOM SEG / SR, for DICOM scans, when asked) written there under names unique among
        ``paths``. A scan that cannot be read gives a failed frame, and the run goes on.

        Raises:
            NotADirectoryError: ``out_dir`` is a file.
            OSError: an output could not be written.
            ImportError: ``dicom_seg`` or ``dicom_sr`` without highdicom installed.
        """
        from .report import predict_scans

        # Checked when called, not at the first frame (this is no generator itself).
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError(f"predict_scans takes a list of paths, got the single path {os.fsdecode(paths)!r}")
        if (dicom_seg or dicom_sr) and out_dir is None:
            raise ValueError("dicom_seg and dicom_sr need out_dir")
        if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
            # Before the first frame, in words: os.makedirs had raised a bare "[Errno 17] File exists".
            raise NotADirectoryError(f"out_dir {os.fspath(out_dir)} is a file, not a folder")
        return predict_scans(self._processor, [_scan_path(p) for p in paths], None if out_dir is None else Path(out_dir),
                             dicom_seg=dicom_seg, dicom_sr=dicom_sr)

    def _results_in_order(self, items: list) -> Iterator[tuple[Path, FrameResult | FrameFailure]]:
        # A file that cannot be read is reported at once, ahead of frames of earlier files still
        # waiting for a shared model call: held back until a frame of a later file comes (the
        # frames come in file order, so every file before that one is then complete), to keep order.
        held: list[tuple[int, FrameFailure]] = []
        for index, result in self._processor.results_of_files(items):
            if isinstance(result, FrameFailure) and result.frame_index is None:
                held.append((index, result))
                held.sort(key=lambda item: item[0])
                continue
            while held and held[0][0] < index:
                yield items[held[0][0]][0], held.pop(0)[1]
            yield items[index][0], result
        for index, failure in held:
            yield items[index][0], failure

    def report(self, result: FrameResult | FrameFailure, path: str | os.PathLike[str] | None = None) -> dict:
        """The JSON object ``ipp-seg predict --json`` prints for ``result``: reasons as a list,
        landmarks nested, the model, its sha256 and the settings that made it (where
        :meth:`~ipp_seg.measure.Measurement.to_dict` is the flat form of the measurement alone).
        A :class:`FrameFailure` carries no file name: give it as ``path``. ``time_ms`` is the
        frame's own time where it is known (see :class:`FrameResult`), else None."""
        from .report import frame_report, measured_file_keys, unreadable_report

        inf = self.options
        if not isinstance(result, (FrameResult, FrameFailure)):  # (a Measurement had failed deep inside)
            raise TypeError(f"report() takes a FrameResult or FrameFailure, as predict gives them, not a "
                            f"{type(result).__name__}")
        if isinstance(result, FrameFailure):
            return {**unreadable_report("" if path is None else os.fspath(path), result.frame_index, result.reason,
                                        self.model_name, self.provider, inf.method, inf.orientation, inf.tta,
                                        result.code, self.model_sha256, result.provenance, result.n_frames,
                                        self._processor.confidence_floors),
                    **measured_file_keys(path, inf.spacing_mm, self._file_sha256)}
        elapsed_ms = 1000 * sum(result.timings.values()) if result.timings else None
        # A frame given as pixels has no file: its file's keys are null, and its spacing, when
        # given, is the one predict_pixels was given (the predictor's own where that was None).
        from_array = result.frame.provenance.source_format == "array"
        scan = path if path is not None else None if from_array else result.frame.provenance.path
        given = inf.spacing_mm
        if from_array:
            given = result.frame.spacing_mm if result.frame.spacing_source == "given" else None
        return {**frame_report(result, self.provider, elapsed_ms, inf.tta, self._processor.confidence_floors),
                **measured_file_keys(scan, given, self._file_sha256)}

    def _file_sha256(self, path: Path, stamp: tuple[str, str]) -> str:
        """A file's sha256, read once while its size and modification time stay: :meth:`report` of
        each frame of a cine does not read the cine again."""
        key = (path, stamp)
        if key not in self._file_sha256s:
            if len(self._file_sha256s) > 64:
                self._file_sha256s.clear()
            self._file_sha256s[key] = file_sha256(path)
        return self._file_sha256s[key]

    def predict_frame(self, frame: UltrasoundFrame) -> FrameResult:
        """Segment and measure one frame already read (see :func:`ipp_seg.io.read_frames`).

        Raises:
            NotUltrasoundFrameError: the frame is no ultrasound image the network can segment
                (too small, blank, or a label mask), with the reason; a ``ValueError`` whose
                ``code`` is the one a CSV row of such a frame has.
        """
        if not isinstance(frame, UltrasoundFrame):
            raise TypeError(f"predict_frame takes an UltrasoundFrame (ipp_seg.io.read_frames gives them), got "
                            f"{type(frame).__name__}: predict_pixels(array, spacing_mm) measures an array")
        pixels = frame.pixels
        if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
            # As the readers do: NaN marks pixels outside the field of view (to_output).
            frame = replace(frame, pixels=_frame_pixels(pixels))
        reason = not_segmentable_reason(frame.pixels)
        if reason:
            raise NotUltrasoundFrameError(reason)
        inf = self.options
        try:
            return predict_frame(frame, self._processor.segmenter, method=inf.method, orientation=inf.orientation,
                                 tta=inf.tta)
        except FrameTooLongError as exc:
            raise NotUltrasoundFrameError(str(exc)) from None

    def predict_pixels(self, pixels: np.ndarray, spacing_mm: tuple[float, float] | None = None) -> FrameResult:
        """Segment and measure a frame given as an array: (H, W) greyscale, (H, W, 1) or
        (1, H, W), or (H, W, 3) RGB and (H, W, 4) RGBA (taken as their luma). Integers of any
        type are grey levels at their values, 0-65535 (a list, or ``int64``, holds an 8-bit image
        as well as ``uint8`` does); floats may be on any scale (NaN: outside the field of view).
        Only the relative grey levels count: every frame is normalised by its own percentiles.
        ``spacing_mm`` is its (x, y) mm per pixel, or None when unknown (distances are then in
        pixels only); the predictor's own spacing is used when this is None.

        Raises:
            ValueError: a malformed array (its shape or type), or a spacing that is none.
            NotUltrasoundFrameError: an array that is no ultrasound image (see :meth:`predict_frame`).
        """
        arr = np.asarray(pixels)
        if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]) and arr.shape.count(1) == 1:
            arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
        marks = None
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            if np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr):
                # As uint8 / uint16 first: an int64 or a list of 8-bit colours had been taken as
                # floats, its luma unrounded, and read 0.04 deg apart from the same uint8 pixels.
                arr = _grey_levels(arr[..., :3])
                marks = colour_marks(arr)  # (calipers drawn in colour: as the readers find them)
            arr = luminance_rgb(arr[..., :3])  # alpha carries no echo
        if arr.ndim != 2:
            # SimpleITK's GetArrayFromImage of a PSFHS .mha gives (3, H, W): say how to turn it.
            hint = (": channels first? np.moveaxis(pixels, 0, -1) puts them last"
                    if arr.ndim == 3 and arr.shape[0] in (3, 4) and min(arr.shape[1:]) > 4 else "")
            raise ValueError(f"pixels must be (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA, got shape {arr.shape}"
                             + hint)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise ValueError(f"pixels must hold real numbers, got dtype {arr.dtype}")
        arr = _grey_levels(arr)
        spacing = check_spacing(spacing_mm)
        _plausible(spacing)
        spacing = spacing or self.options.spacing_mm
        own = _frame_pixels(np.ascontiguousarray(arr))
        if isinstance(pixels, np.ndarray) and np.shares_memory(own, pixels):
            # The result keeps the frame: a copy, read-only, not the caller's buffer (a library user's
            # pass: a loop reusing one array had every earlier result show the last image).
            own = own.copy()
        own.flags.writeable = False
        frame = UltrasoundFrame(
            pixels=own,
            spacing_mm=spacing,
            regions=(),
            frame_index=0,
            n_frames=1,
            provenance=Provenance(ARRAY_SOURCE, "array"),
            spacing_source="given" if spacing is not None else None,
            colour_marks=marks,
        )
        return self.predict_frame(frame)


#: More model threads than this is a slip (a million threads took 23 GB before failing).
MAX_THREADS = 256


def _frame_pixels(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in the readers' convention (:func:`~ipp_seg.io.greyscale.to_output`); none
    finite (all NaN): no frame, as a blank one is none (:class:`NotUltrasoundFrameError`)."""
    try:
        return to_output(pixels)
    except ValueError as exc:
        raise NotUltrasoundFrameError(str(exc)) from None


def _grey_levels(arr: np.ndarray) -> np.ndarray:
    """Integer pixels as uint8 (0-255) or uint16 (0-65535) at their values: scaled from the
    range of a type such as int64, as the readers scale a file's stored bits, an 8-bit image
    would collapse to one grey in float32."""
    if not np.issubdtype(arr.dtype, np.integer) or arr.dtype in (np.uint8, np.uint16) or arr.size == 0:
        return arr
    low, high = int(arr.min()), int(arr.max())
    if low >= 0 and high <= 255:
        return arr.astype(np.uint8)
    if low >= 0 and high <= 65535:
        return arr.astype(np.uint16)
    raise ValueError(f"integer pixels must lie in 0-65535, these run from {low} to {high}: give floats on a "
                     "0-255 scale instead")


def _plausible(spacing: tuple[float, float] | None) -> None:
    try:
        check_plausible_spacing(spacing)
    except ValueError as exc:
        raise ValueError(f"spacing_mm {spacing}: {exc}") from None


def _scan_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path; an empty one is refused, as ``Path("")`` is the current folder."""
    return given_path(path, "scan")
