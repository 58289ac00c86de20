"""The last angle lever of the accuracy issue, measured: a PS-centred refinement crop.

Stage 1 is a shipped network on the whole frame. Stage 2 is the same DSSAU-Net config, started
from stage 1's weights and fine-tuned on a window of ``--window`` px around the pubic symphysis,
enlarged to the network input (x2 for a 128 px window on a 256 px frame), so that the PS fills
four times the pixels it has in the whole frame. At inference the window is centred on stage 1's
PS (its largest component), and stage 2's labels replace stage 1's inside it.

    python benchmarks/ps_refinement.py train --out runs/ps-refine [--epochs 12] [--window 128]
    python benchmarks/ps_refinement.py evaluate runs/ps-refine/last.pt

``train`` checkpoints every epoch into ``--out`` and resumes from its ``last.pt`` when run again
with the same arguments. ``evaluate`` prints, side by side on the stage-1 checkpoint's
validation blocks, stage 1 alone (through its shipped ONNX file, as its model card), stage 1 +
stage 2, and stage 2 centred on the expert's PS (a ceiling: what the crop could give with a
perfect stage 1). Stage 2 runs in torch (fp32). Needs the dev extras (torch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ipp_seg.evaluate.report import evaluate_arrays, read_reference_aop, summarise_block
from ipp_seg.inference.backends import OnnxSegmenter
from ipp_seg.inference.preprocess import normalise_frame
from ipp_seg.inference.registry import ModelSpec
from ipp_seg.io.reader import read_frame
from ipp_seg.train.data import augment, find_pairs, load_cases
from ipp_seg.train.loop import (TrainSettings, cpu_has_fast_bf16, load_checkpoint_model, load_torch_file,
                                logits_on_grid, lr_at, read_checkpoint)
from ipp_seg.train.losses import segmentation_loss
from ipp_seg.train.ship import FRAMES_PER_BATCH, PSFHS_VALIDATION_BLOCKS, REFERENCE_AOP_FILE, segment_by_id

REPO = Path(__file__).resolve().parents[1]
PARENT = REPO / "models" / "dssau-net-s-heldout.pt"
PS, FH = 1, 2


def ps_centre(labels: np.ndarray) -> tuple[float, float] | None:
    """(x, y) centroid in pixels of the largest PS component, None without a PS."""
    count, components, stats, centroids = cv2.connectedComponentsWithStats((labels == PS).astype(np.uint8), 8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return float(centroids[largest][0]), float(centroids[largest][1])


def window_origin(centre: tuple[float, float], window: int) -> tuple[int, int]:
    """Top-left pixel (x0, y0) of the ``window`` x ``window`` px window centred on ``centre``."""
    return int(round(centre[0] - window / 2)), int(round(centre[1] - window / 2))


def window_input(normalised: np.ndarray, origin: tuple[int, int], window: int, size: int) -> np.ndarray:
    """The window of a normalised frame, enlarged (linear) to ``size`` x ``size``; outside the
    frame it reads the frame's darkest value, as padding to a square does."""
    s = window / size
    matrix = np.float32([[s, 0, origin[0] + 0.5 * s - 0.5], [0, s, origin[1] + 0.5 * s - 0.5]])
    return cv2.warpAffine(normalised, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=float(normalised.min()))


def window_labels(labels: np.ndarray, origin: tuple[int, int], window: int) -> np.ndarray:
    """The window of a label mask on its own grid (background outside the frame)."""
    out = np.zeros((window, window), np.uint8)
    h, w = labels.shape
    x0, y0 = origin
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(w, x0 + window), min(h, y0 + window)
    if xe > xs and ye > ys:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = labels[ys:ye, xs:xe]
    return out


def paste_window(stage1: np.ndarray, refined: np.ndarray, origin: tuple[int, int], ps_only: bool = False
                 ) -> np.ndarray:
    """Stage 1's labels with the window replaced by stage 2's; stage 1's PS outside the window
    is kept (the measurement takes the largest component). ``ps_only``: inside the window only
    the PS is stage 2's, and stage 1's head is kept wherever stage 2 does not draw the PS over it."""
    out = stage1.copy()
    window = refined.shape[0]
    h, w = out.shape
    x0, y0 = origin
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(w, x0 + window), min(h, y0 + window)
    if xe > xs and ye > ys:
        inside = refined[ys - y0:ye - y0, xs - x0:xe - x0]
        if ps_only:
            here = out[ys:ye, xs:xe]
            here[here == PS] = np.where(inside[here == PS] == FH, FH, 0)
            here[inside == PS] = PS
        else:
            out[ys:ye, xs:xe] = inside
    return out


def _batch(cases, rng, settings: TrainSettings, window: int, jitter_px: float):
    inputs, targets = [], []
    size = settings.input_size[0]
    for case in cases:
        image, labels = augment(case.image, case.labels, rng, settings.augmentation)
        centre = ps_centre(labels) or (rng.uniform(window / 2, labels.shape[1] - window / 2),
                                       rng.uniform(window / 2, labels.shape[0] - window / 2))
        # Stage 1's PS is not the expert's: the window is trained off-centre by about its error.
        centre = (centre[0] + rng.normal(0, jitter_px), centre[1] + rng.normal(0, jitter_px))
        origin = window_origin(centre, window)
        inputs.append(window_input(normalise_frame(image, settings.normalisation), origin, window, size))
        targets.append(window_labels(labels, origin, window))
    x = torch.from_numpy(np.stack(inputs))[:, None].contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(np.stack(targets).astype(np.int64))


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, parent = load_checkpoint_model(args.parent)
    settings = TrainSettings.from_dict(parent["settings"])
    model = model.to(memory_format=torch.channels_last)
    model.train()
    train_ids = parent["split"]["train"]
    cases = load_cases(args.data, set(train_ids), settings.mask_labels)
    if {c.image.shape for c in cases} != {tuple(settings.input_size)}:
        raise SystemExit("this experiment expects frames of the network input's size (PSFHS: 256 x 256)")
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = len(cases) // settings.batch_size
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch // 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = {"parent": str(args.parent), "window": args.window, "jitter_px": args.jitter, "lr": args.lr,
              "epochs": args.epochs, "seed": args.seed, "shape_weight": settings.shape_weight}
    start, step = 0, 0
    last = out / "last.pt"
    if last.exists():
        saved = load_torch_file(last)
        if saved["recipe"] != recipe:
            raise SystemExit(f"{last} was trained with {saved['recipe']}, not {recipe}: give another --out")
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        start, step = saved["epoch"], saved["step"]
    bf16 = cpu_has_fast_bf16()
    for epoch in range(start, args.epochs):
        started = time.perf_counter()
        order = rng.permutation(len(cases))
        losses = []
        for i in range(steps_per_epoch):
            batch = [cases[j] for j in order[i * settings.batch_size:(i + 1) * settings.batch_size]]
            x, y = _batch(batch, rng, settings, args.window, args.jitter)
            for group in optimiser.param_groups:
                group["lr"] = lr_at(step, total, warmup, args.lr, settings.min_lr_fraction)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = segmentation_loss(logits_on_grid(logits, (args.window, args.window)), y, settings.dice_weight,
                                     settings.ce_class_weights, settings.dice_class_weights, settings.shape_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            step += 1
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started)}
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "step": step, "recipe": recipe,
                    "config": parent["config"], "settings": parent["settings"], "split": parent["split"]},
                   out / "last.tmp")
        (out / "last.tmp").replace(last)
        with open(out / "history.jsonl", "a") as history:
            history.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def _refine(model, image: np.ndarray, stage1: np.ndarray, centre, settings: TrainSettings,
            window: int, ps_only: bool = False) -> np.ndarray:
    if centre is None:
        return stage1
    origin = window_origin(centre, window)
    x = window_input(normalise_frame(image, settings.normalisation), origin, window, settings.input_size[0])
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None, None])
    labels = logits_on_grid(logits, (window, window)).argmax(1)[0].numpy().astype(np.uint8)
    return paste_window(stage1, labels, origin, ps_only)


def _row(name: str, block: str, summary) -> str:
    m = summary.metrics
    return (f"| {name} | {block} | {m['dice_ps'].mean:.3f} | {m['dice_fh'].mean:.3f} | {m['dice_all'].mean:.3f} | "
            f"{m['hd_all'].mean:.1f} | {m['delta_aop'].mean:.1f} / {m['delta_aop'].median:.1f} | "
            f"{m['delta_aop_reference'].mean:.1f} / {m['delta_aop_reference'].median:.1f} | "
            f"{summary.n_failed_pred_gt_ok} | {summary.score:.3f} |")


def evaluate(args) -> None:
    torch.set_num_threads(args.threads)
    refine = read_checkpoint(args.checkpoint)
    model, _ = load_checkpoint_model(args.checkpoint)
    model.eval()
    settings = TrainSettings.from_dict(refine["settings"])
    window = refine["recipe"]["window"]
    ids = sorted(refine["split"]["validation"])
    found = find_pairs(args.data)
    pairs = {cid: img for cid, img, _ in found}
    truth = {c.case_id: c for c in load_cases(args.data, set(ids), settings.mask_labels, pairs=found)}
    reference = read_reference_aop(Path(args.data) / REFERENCE_AOP_FILE)
    stage1_onnx = Path(refine["recipe"]["parent"]).with_suffix(".onnx")
    segmenter = OnnxSegmenter(ModelSpec(stage1_onnx.stem, stage1_onnx, None, None), threads=None,
                              fixed_batch=FRAMES_PER_BATCH)
    stage1 = segment_by_id(segmenter, {cid: read_frame(pairs[cid]) for cid in ids})
    variants = {
        "stage 1 alone": stage1,
        "stage 1 + refinement": {cid: _refine(model, truth[cid].image, stage1[cid], ps_centre(stage1[cid]),
                                              settings, window) for cid in ids},
        "stage 1 + refinement of the PS only": {
            cid: _refine(model, truth[cid].image, stage1[cid], ps_centre(stage1[cid]), settings, window, True)
            for cid in ids},
        "refinement centred on the expert's PS (ceiling)": {
            cid: _refine(model, truth[cid].image, stage1[cid], ps_centre(truth[cid].labels), settings, window)
            for cid in ids},
    }
    print(f"{args.checkpoint}: {json.dumps(refine['recipe'])}, epoch {refine['epoch']}\n")
    print("| variant | block | Dice PS | Dice FH | Dice all | HD all px | mean / median abs dAoP (deg) | "
          "vs aop_reference.csv (deg) | failed (GT fine) | score |")
    print("|" + "---|" * 10)
    for name, predictions in variants.items():
        report = evaluate_arrays([(cid, predictions[cid], truth[cid].labels, truth[cid].image) for cid in ids],
                                 reference_aop=reference)
        print(_row(name, "overall", report.overall))
        for block, (first, last) in PSFHS_VALIDATION_BLOCKS.items():
            cases = [c for c in report.cases if first <= c.case_id <= last]
            print(_row(name, block, summarise_block(block, cases)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train")
    fit.add_argument("--out", required=True)
    fit.add_argument("--parent", type=Path, default=PARENT, help="stage 1's checkpoint (its split is kept)")
    fit.add_argument("--window", type=int, default=128, help="window side in frame pixels")
    fit.add_argument("--jitter", type=float, default=6.0, help="sd of the window centre's offset, px")
    fit.add_argument("--epochs", type=int, default=12)
    fit.add_argument("--lr", type=float, default=3e-4)
    fit.add_argument("--seed", type=int, default=2)
    score = commands.add_parser("evaluate")
    score.add_argument("checkpoint", type=Path)
    for sub in (fit, score):
        sub.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "psfhs"))
        sub.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    train(args) if args.command == "train" else evaluate(args)


if __name__ == "__main__":
    main()
