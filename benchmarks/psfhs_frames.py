"""What the frame-level accuracy benchmarks share: their command line (models, --data) and the
PSFHS frames of the validation blocks. Imported by the scripts beside it (run as scripts, their
folder is on the path)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ipp_seg.train.data import find_pairs
from ipp_seg.train.ship import PSFHS_VALIDATION_BLOCKS

REPO = Path(__file__).resolve().parents[1]


def model_arguments(doc: str, default_models: list[str]) -> argparse.Namespace:
    """MODEL ... (default ``default_models``) and --data (default ../shared/data/psfhs)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(default_models))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    return parser.parse_args()


def sampled_frame_arguments(doc: str) -> tuple[argparse.Namespace, list[str]]:
    """--every N (default 6), --model (default dssau-net-s) and --data; and the case IDs of
    every N-th frame of the folder's image_mha, for the scripts that change frames and measure
    what the model then reads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--every", type=int, default=6)
    parser.add_argument("--model", default="dssau-net-s")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    args = parser.parse_args()
    return args, sorted(p.stem for p in (args.data / "image_mha").glob("*.mha"))[:: args.every]


def case_pairs(data: Path) -> dict[str, tuple[Path, Path]]:
    """Case ID -> (image, label mask) of a PSFHS-layout folder."""
    return {cid: (img, lab) for cid, img, lab in find_pairs(data)}


def is_validation(case_id: str) -> bool:
    """Whether a case lies in one of the validation blocks no shipped recipe trained on."""
    return any(first <= case_id <= last for first, last in PSFHS_VALIDATION_BLOCKS.values())
