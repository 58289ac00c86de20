"""Ablation table: training runs compared on the validation blocks, through the ONNX inference
path users run (the same evaluation as the model cards).

    python benchmarks/ablation.py runs/dssau-net-s runs/conv-unet-s [--tta] [--data ../shared/data/psfhs]
        [--checkpoint last] [--seen 04402-04601]

For each run (a run folder, or a checkpoint file such as a weight average or a shipped ``.pt``):
its best checkpoint exported to a temporary ONNX file, segmented and measured on
its validation IDs, per block (ellipse AoP method), plus the validation Dice of every epoch from
the run's history, so that runs stopped at different epochs still compare at equal epochs.
``--checkpoint last`` evaluates each run's last epoch instead of its best one. ``--seen FIRST-LAST``
adds a block of frames the run trained on: the gap between it and the validation blocks is how
much of the error is generalisation rather than fit.
Needs the dev extras (torch).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ipp_seg.nn.configs import get_config
from ipp_seg.nn.export import export_checkpoint
from ipp_seg.train.lineage import run_cost
from ipp_seg.train.loop import BEST, LAST, load_checkpoint_model
from ipp_seg.train.ship import PSFHS_VALIDATION_BLOCKS as BLOCKS, validate_onnx

REPO = Path(__file__).resolve().parents[1]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def _pair(metrics: dict, name: str) -> str:
    """"mean / median" of ``mean_<name>`` and ``median_<name>``, "-" where not measured."""
    mean, median = metrics.get(f"mean_{name}"), metrics.get(f"median_{name}")
    return "-" if mean is None else f"{mean:.1f} / {median:.1f}"


def _bias(agreement: dict | None) -> str:
    """Bland-Altman "bias (lower to upper), slope" of an agreement dict, "-" where not measured."""
    if not agreement or agreement.get("lower") is None:
        return "-"
    slope = agreement.get("proportional_slope")
    return (f"{agreement['bias']:+.1f} ({agreement['lower']:+.1f} to {agreement['upper']:+.1f})"
            + ("" if slope is None else f", {slope:+.2f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    parser.add_argument("--tta", action="store_true", help="also evaluate with test-time mirroring")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--seen", default=None, metavar="FIRST-LAST",
                        help="also evaluate the run's training frames with IDs in this range")
    args = parser.parse_args()
    seen = tuple(args.seen.split("-")) if args.seen else None

    print("| run | config | params (M) | GMACs @256 | epochs | train h | TTA | block | Dice PS | Dice FH | Dice all | "
          "HD all px | mean / median abs dAoP (deg) | vs aop_reference.csv (deg) | bias vs aop_reference.csv, "
          "95 % limits, slope (deg) | failed | score | s per 230 frames |")
    print("|" + "---|" * 18)
    curves = {}
    for run in args.runs:
        if run.is_file():  # a run's own checkpoint is named by its run, any other file by itself
            path, name = run, run.parent.name if run.name in (BEST, LAST) else run.stem
        else:
            path, name = run / (BEST if args.checkpoint == "best" else LAST), run.name
        model, checkpoint = load_checkpoint_model(path)
        config = get_config(checkpoint["config"]["name"])
        if run.is_dir() and not checkpoint.get("weight_average"):  # an average has no curve of its own
            curves[name] = {h["epoch"]: (h["dice_ps"], h["dice_fh"]) for h in history(run)}
        hours = run_cost(checkpoint, path)[1]
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_checkpoint(model, checkpoint, Path(tmp) / f"{name}.onnx")
            tta_modes = (False, True) if args.tta else (False,)
            results = list(validate_onnx(onnx_path, args.data, checkpoint["split"]["validation"], BLOCKS,
                                         tta_modes=tta_modes)) if checkpoint["split"]["validation"] else []
            if seen:
                trained = [c for c in checkpoint["split"]["train"] if seen[0] <= c <= seen[1]]
                seen_block = {f"seen in training ({seen[0]}-{seen[1]})": seen}
                for result in validate_onnx(onnx_path, args.data, trained, seen_block, tta_modes=tta_modes):
                    result["ellipse"].pop("overall", None)  # the same frames as the block
                    results.append(result)
            for result in results:
                tta = result["tta"]
                for block, m in result["ellipse"].items():
                    if block.startswith("style:"):
                        continue
                    print(f"| {name} | {config.name} | {config.params / 1e6:.2f} | {config.macs_256 / 1e9:.2f} | "
                          f"{checkpoint['epoch']}/{checkpoint['settings']['epochs']} | {hours:.2f} | "
                          f"{'yes' if tta else 'no'} | {block} | {m['dice_ps']:.3f} | {m['dice_fh']:.3f} | "
                          f"{m['dice_all']:.3f} | {m['hd_all_px']:.1f} | {_pair(m, 'abs_delta_aop_deg')} | "
                          f"{_pair(m, 'abs_delta_aop_reference_deg')} | "
                          f"{_bias(m.get('aop_reference_agreement'))} | {m['failed_measurements']} | "
                          f"{m['score']:.3f} | {result['inference_seconds']:.0f} |")
    epochs = sorted({e for c in curves.values() for e in c})
    if not epochs:
        return
    print("\nValidation Dice PS / FH by epoch (from each run's history):\n")
    print("| epoch | " + " | ".join(curves) + " |")
    print("|---|" + "---|" * len(curves))
    for epoch in epochs:
        cells = [f"{c[epoch][0]:.3f} / {c[epoch][1]:.3f}" if epoch in c else "" for c in curves.values()]
        print(f"| {epoch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
