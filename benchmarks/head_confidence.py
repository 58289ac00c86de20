"""Does the network know the frame? Its mean probability over the head it drew (the
``head_confidence`` of every result), on the validation blocks, under acquisition shifts, and on
inputs that are no transperineal frame; and how its PS counterpart relates to the angle error.

    python benchmarks/head_confidence.py [MODEL ...] [--data ../shared/data/psfhs]

MODEL: shipped model names (default: the four shipped models). For each, prints percentiles of
the head and PS confidence over the 230 validation frames (wide and narrow blocks), the lowest
head confidence under the robustness test's shifts, the confidences of synthetic and
other-modality inputs, the PS confidence of the validation frames with their symphysis blacked
out (what ``ps_low_confidence`` is for), and the median |dAoP| (ellipse method, prediction vs
ground-truth mask) of validation frames below PS-confidence cut-offs against the rest. The
cut-offs that ipp-seg applies are ``MIN_HEAD_CONFIDENCE`` and ``MIN_PS_CONFIDENCE`` in
``ipp_seg/inference/pipeline.py``.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.pipeline import (MIN_HEAD_CONFIDENCE, MIN_PS_CONFIDENCE, head_confidence, prepare_input,
                                       ps_confidence)
from ipp_seg.inference.registry import resolve_model
from ipp_seg.io import Provenance, UltrasoundFrame, read_frame
from ipp_seg.measure import measure_progress
from psfhs_frames import REPO, case_pairs, is_validation, model_arguments

sys.path.insert(0, str(REPO / "tests"))
MODELS = ("dssau-net-s-heldout", "star-dssau-net-s-heldout", "dssau-net-s", "star-dssau-net-s")


def confidences(segmenter, frames):
    """(PS confidence, head confidence, label mask) per frame, in model calls of 8."""
    info = segmenter.info
    out = []
    for start in range(0, len(frames), 8):
        chunk = frames[start:start + 8]
        prepared = [prepare_input(f, info.input_size, info.in_channels, info.normalisation) for f in chunk]
        logits = segmenter.logits(np.stack([p[0] for p in prepared]))
        for frame, lg in zip(chunk, logits):
            # ipp-seg's own definitions of the two confidences (the ones its warnings use).
            mask = cv2.resize(lg.argmax(axis=0).astype(np.uint8), frame.pixels.shape[::-1],
                              interpolation=cv2.INTER_NEAREST)
            out.append((ps_confidence(lg), head_confidence(lg), mask))
    return out


def _values(confidences: list) -> np.ndarray:
    """Confidences as floats, NaN where the network drew none of the structure (None)."""
    return np.array([np.nan if c is None else c for c in confidences], dtype=np.float64)


def plain(pixels: np.ndarray) -> UltrasoundFrame:
    return UltrasoundFrame(np.ascontiguousarray(pixels), None, (), 0, 1, Provenance("synthetic", "image"))


def other_inputs(sample: np.ndarray) -> dict[str, list[UltrasoundFrame]]:
    rng = np.random.default_rng(0)
    inputs = {
        "uniform noise": [plain(rng.integers(0, 256, (256, 256)).astype(np.uint8)) for _ in range(4)],
        "blurred noise": [plain(cv2.GaussianBlur(rng.integers(0, 256, (256, 256)).astype(np.uint8), (0, 0), s))
                          for s in (2, 4, 8, 16)],
        "gradient": [plain(np.tile(np.linspace(0, 255, 256), (256, 1)).astype(np.uint8))],
        "PSFHS frame upside down": [plain(sample[::-1])],
        "PSFHS frame turned 90 deg": [plain(np.rot90(sample))],
    }
    try:
        import pydicom
        from pydicom.data import get_testdata_file

        for name in ("CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm"):
            pixels = pydicom.dcmread(get_testdata_file(name)).pixel_array.astype(np.float32)
            pixels = pixels.mean(axis=-1) if pixels.ndim == 3 and pixels.shape[-1] == 3 else pixels
            pixels = pixels[0] if pixels.ndim == 3 else pixels
            inputs[f"pydicom-data {name}"] = [plain((pixels - pixels.min()) / max(1.0, np.ptp(pixels)) * 255)]
    except (ImportError, OSError, ValueError):
        pass  # pydicom-data (the dev extra) is optional here
    return inputs


def main() -> None:
    args = model_arguments(__doc__, MODELS)
    from test_robustness import SHIFTS  # the robustness test's shifts, one definition

    pairs = case_pairs(args.data)
    ids = sorted(filter(is_validation, pairs))
    frames = [read_frame(pairs[c][0]) for c in ids]
    truths = [read_frame(pairs[c][1]).pixels.astype(np.uint8) for c in ids]
    sample = frames[ids.index("04700")].pixels if "04700" in ids else frames[0].pixels
    print(f"head-confidence cut-off: {MIN_HEAD_CONFIDENCE}; {len(ids)} validation frames")
    for name in args.models:
        segmenter = OnnxSegmenter(resolve_model(name), threads=2)
        measured = confidences(segmenter, frames)
        ps = _values([m[0] for m in measured])
        fh = _values([m[1] for m in measured])
        pct = (0, 0.5, 1, 5, 50)
        print(f"\n{name}\n  validation head confidence p{pct}: {np.nanpercentile(fh, pct).round(3).tolist()}; "
              f"below the cut-off: {(fh < MIN_HEAD_CONFIDENCE).sum()}")
        print(f"  validation PS confidence p{pct}: {np.nanpercentile(ps, pct).round(3).tolist()}")
        for shift, apply in SHIFTS.items():
            shifted = [plain(apply(f.pixels, t, i)[0]) for i, (f, t) in enumerate(zip(frames, truths))]
            heads = _values([m[1] for m in confidences(segmenter, shifted)])
            print(f"  shift {shift}: lowest head confidence {np.nanmin(heads):.3f}, "
                  f"{int(np.sum(heads < MIN_HEAD_CONFIDENCE))} frames below the cut-off, "
                  f"{int(np.isnan(heads).sum())} without a head")
        for label, inputs in other_inputs(sample).items():
            values = ["no head drawn" if m[1] is None else f"{m[1]:.3f}" for m in confidences(segmenter, inputs)]
            print(f"  {label}: head confidence {', '.join(values)}")
        errors = []
        for (_, _, mask), truth in zip(measured, truths):
            a, b = measure_progress(mask).aop_deg, measure_progress(truth).aop_deg
            errors.append(abs(a - b) if a is not None and b is not None else np.nan)
        errors = np.array(errors)
        # The symphysis blacked out (its expert outline widened by 7 px): whatever PS the network
        # then draws is invented; how sure is it of it? (ps_low_confidence)
        hidden = []
        for f, t in zip(frames, truths):
            pixels = f.pixels.astype(np.float32).copy()
            pixels[cv2.dilate((t == 1).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)] = 0
            hidden.append(plain(pixels))
        invented = [ps for ps, _, mask in confidences(segmenter, hidden) if measure_progress(mask).status != "failed"]
        print(f"  validation frames with the symphysis blacked out: {len(invented)} of {len(hidden)} still measured, "
              f"PS confidence p(0, 50, 100) {np.percentile(invented, (0, 50, 100)).round(3).tolist()}, "
              f"{sum(v < MIN_PS_CONFIDENCE for v in invented)} below the cut-off {MIN_PS_CONFIDENCE}")
        for cut in (0.94, 0.945, 0.95):
            low = ps < cut
            if low.any():
                print(f"  PS confidence < {cut}: {low.sum()} frames, median |dAoP| {np.nanmedian(errors[low]):.1f} "
                      f"(share > 10 deg {np.nanmean(errors[low] > 10):.2f}) vs the rest "
                      f"{np.nanmedian(errors[~low]):.1f} ({np.nanmean(errors[~low] > 10):.2f})")


if __name__ == "__main__":
    main()
