"""Average the weights of two or more runs of one recipe (seeds differing) into one checkpoint.

    python scripts/average_weights.py runs/a/last.pt runs/b/last.pt --out runs/a-b

Writes OUT/last.pt, which records its members; ship it with
``python scripts/ship_model.py OUT --checkpoint last ...``. Runs of another recipe, config, epoch
or split are refused, and so is a run given twice. An earlier average (a shipped model, say)
may be a member: it counts as the runs it averaged, so adding a seed to it gives the mean of
all the runs, each weighed once.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ipp_seg.train.weight_average import average_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the averaged last.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        average_checkpoints(args.checkpoints, args.out)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"average_weights: {error}") from None


if __name__ == "__main__":
    main()
