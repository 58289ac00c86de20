"""Validation of a logit ensemble of shipped models (the mean of their logits per frame), on the
validation blocks of the first model's split, through ipp-seg's own reading, pre-processing and
measurement (ellipse method; no test-time mirroring).

    python benchmarks/ensemble.py dssau-net-s-heldout dssau-net-paper [--data ../shared/data/psfhs]

Each model gets the frame as it was trained to (a 3-channel paper config the grey frame on each
channel); all must share the input size and normalisation. Needs the dev extras (torch, to read
the split from the first model's weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ipp_seg.inference.backends import OnnxSegmenter  # noqa: E402
from ipp_seg.inference.registry import resolve_model  # noqa: E402
from ipp_seg.train.loop import load_torch_file  # noqa: E402
from ipp_seg.train.ship import PSFHS_VALIDATION_BLOCKS, validate_segmenter  # noqa: E402

SHOWN = (("dice_ps", "Dice PS"), ("dice_fh", "Dice FH"), ("dice_all", "Dice all"), ("hd_all_px", "HD all px"),
         ("mean_abs_delta_aop_deg", "mean dAoP"), ("median_abs_delta_aop_deg", "median dAoP"),
         ("mean_abs_delta_aop_reference_deg", "mean vs ref"), ("median_abs_delta_aop_reference_deg", "median vs ref"),
         ("failed_measurements", "failed"), ("score", "score"))


class LogitEnsemble:
    """The mean logits of several segmenters, fed as the first one's frames are prepared."""

    def __init__(self, members: list[OnnxSegmenter]) -> None:
        first = members[0].info
        for member in members[1:]:
            if (member.info.input_size, member.info.normalisation) != (first.input_size, first.normalisation):
                raise SystemExit("the models differ in input size or normalisation: their logits do not align")
        self.members, self.info = members, first

    def logits(self, batch: np.ndarray) -> np.ndarray:
        # A grey frame is the same on every channel: widened for a member trained on three.
        return np.mean([m.logits(np.repeat(batch, m.info.in_channels // self.info.in_channels, axis=1))
                        for m in self.members], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="Shipped model names (the first one's split is validated).")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/psfhs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    specs = [resolve_model(name) for name in args.models]
    members = [OnnxSegmenter(spec, threads=args.threads) for spec in specs]
    validation = load_torch_file(specs[0].torch_path)["split"]["validation"]
    runs = [(name, member) for name, member in zip(args.models, members)]
    if len(members) > 1:
        runs.append((" + ".join(args.models), LogitEnsemble(members)))
    print("| models | block | " + " | ".join(label for _, label in SHOWN) + " | s per frames |")
    print("|" + "---|" * (len(SHOWN) + 3))
    for name, segmenter in runs:
        result = validate_segmenter(segmenter, args.data, validation, PSFHS_VALIDATION_BLOCKS)[0]
        for block in ("overall", *PSFHS_VALIDATION_BLOCKS):
            figures = result["ellipse"][block]
            cells = [f"{figures[key]:.4g}" if isinstance(figures[key], float) else str(figures[key])
                     for key, _ in SHOWN]
            timing = f"{result['inference_seconds']} / {result['frames']}"
            print(f"| {name} | {block} | " + " | ".join(cells) + f" | {timing} |")


if __name__ == "__main__":
    main()
