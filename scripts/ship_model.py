"""Ship a finished training run as models/<name>.{onnx,pt,json,md}.

    python scripts/ship_model.py runs/dssau-net-s --name dssau-net-s \
        --command "ipp-seg train ../shared/data/psfhs --config dssau-net-s ..."

A final model trained on every frame (``--validation-count 0``) has no validation of its own:
``--validated-by runs/<same recipe, held-out split>/last.pt`` puts that run's figures on its card,
labelled as such.

    python scripts/ship_model.py --revalidate dssau-net-s-heldout
    python scripts/ship_model.py --revalidate dssau-net-s --validated-by models/dssau-net-s-heldout.pt

measures a shipped model's validation again with this ipp-seg and rewrites its card, its weights
and training record untouched (for figures added since it was shipped).

A run on your own frames (``ipp-seg train YOUR_DATA ...``) ships into a folder that
``$IPP_SEG_MODELS`` then names, validated on the run's own validation frames:

    python scripts/ship_model.py runs/ours --name ours --command "ipp-seg train ..." \
        --data YOUR_DATA --models-dir ~/ipp-seg-models \
        --data-description "Hospital X, 2026, 400 frames; internal use only"
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ipp_seg.train.ship import card_blocks, revalidate_card, ship_model

REPO = Path(__file__).resolve().parents[1]
PSFHS_DATA = REPO.parent / "shared/data/psfhs"


def _revalidation_data(models_dir: Path, name: str) -> Path:
    """The shared PSFHS data for a model its card says was trained on it; any other is refused
    without --data (it would be validated on PSFHS frames under PSFHS's blocks)."""
    card = json.loads((models_dir / f"{name}.json").read_text(encoding="utf-8"))
    if not card.get("training", {}).get("data_is_psfhs", True):
        raise ValueError(f"{name} was not trained on the PSFHS data: name its data folder with --data")
    return PSFHS_DATA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--name")
    parser.add_argument("--command", help="The exact command that trained the run.")
    parser.add_argument("--revalidate", metavar="NAME", help="Measure shipped model NAME's validation again.")
    parser.add_argument("--data", type=Path, default=None,
                        help="The data folder holding the run's validation frames (default: the folder the run "
                             "trained on, as its checkpoint records it; for --revalidate, the shared PSFHS data).")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models",
                        help="Where the model goes (default: the repository's models/).")
    parser.add_argument("--data-description",
                        help="The training data's source, citation and licence, for the card (default: PSFHS's for "
                             "the PSFHS data; for other data, its folder's name and that these were not recorded).")
    parser.add_argument("--validated-by", type=Path, default=None,
                        help="For a run trained on every frame: the checkpoint (same recipe and epoch, trained "
                             "without the validation blocks) whose validation goes on the card.")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="Ship the run's best epoch by validation (default) or its last.")
    parser.add_argument("--fp16-weights", action="store_true",
                        help="Store the weights as float16 in both files (for the paper configs: half the size).")
    parser.add_argument("--replace", action="store_true",
                        help="Overwrite a model of the same name in the models folder (refused without it).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if not args.revalidate and (args.run_dir is None or not args.name or not args.command):
        parser.error("shipping a run needs RUN_DIR, --name and --command")
    try:
        if args.revalidate:
            data = args.data or _revalidation_data(args.models_dir, args.revalidate)
            card = revalidate_card(args.models_dir, args.revalidate, card_blocks(data), data,
                                   validated_by=args.validated_by)
        else:  # without --data, the folder the run trained on, as its checkpoint records it
            card = ship_model(args.run_dir, args.models_dir, args.name, args.command, data=args.data,
                              validated_by=args.validated_by, checkpoint_name=f"{args.checkpoint}.pt",
                              fp16_weights=args.fp16_weights, data_description=args.data_description,
                              replace=args.replace)
    except (OSError, ValueError, KeyError) as exc:  # nothing half-shipped is left behind
        parser.exit(2, f"ship_model.py: {str(exc).strip(chr(34))}\n")
    print(json.dumps(card["validation"], indent=2))


if __name__ == "__main__":
    main()
