"""Rebuild a checkpoint from a run packed on a borrowed GPU machine (scripts/device_train_paper.sh):
its pieces joined and checked against their sha256 list, the fp16 weights widened to fp32 (the
values are fp16's; the card says so), and the validation blocks named.

    python scripts/unpack_device_run.py PACK_DIR --out runs/dssau-net-paper-gpu.pt \\
        --data ../shared/data/psfhs --held-out 04602-04801 --held-out 04372-04401

The device run trains on a PNG copy of the training frames with ``--validation-count 0``, the
validation frames having been left out of that copy. ``--held-out`` records those frames as the
checkpoint's validation (the IDs of ``--data`` in each range), so that ``benchmarks/ablation.py``
and ``scripts/ship_model.py`` validate it as they do a CPU run. A range that overlaps the run's
training IDs is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ipp_seg.train.data import find_pairs, in_id_range, parse_id_range  # noqa: E402
from ipp_seg.train.loop import CONTENT_DIGEST, load_torch_file, save_checkpoint  # noqa: E402


def joined_pieces(pack: Path) -> bytes:
    """The pieces ``part-*`` of ``pack`` in order, each checked against ``parts.sha256``."""
    if not (pack / "parts.sha256").is_file():
        raise SystemExit(f"{pack}: no parts.sha256 there (not a folder packed by scripts/device_train_paper.sh)")
    listed = {}
    for line in (pack / "parts.sha256").read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split()
        listed[name.lstrip("*")] = digest
    pieces = sorted(p for p in pack.glob("part-*"))
    if sorted(p.name for p in pieces) != sorted(listed):
        raise SystemExit(f"{pack}: the pieces there ({[p.name for p in pieces]}) are not those listed "
                         f"in parts.sha256 ({sorted(listed)})")
    data = []
    for piece in pieces:
        raw = piece.read_bytes()
        if hashlib.sha256(raw).hexdigest() != listed[piece.name]:
            raise SystemExit(f"{piece}: its sha256 differs from parts.sha256 (a transfer that broke off)")
        data.append(raw)
    return b"".join(data)


def held_out_ids(data: Path, ranges: list[str], trained: set[str]) -> list[str]:
    ids = [case_id for case_id, _, _ in find_pairs(data)]
    chosen = []
    for text in ranges:
        try:
            first, last = parse_id_range(text)
        except ValueError as exc:
            raise SystemExit(f"--held-out: {exc}") from None
        block = [c for c in ids if in_id_range(c, first, last)]
        if not block:
            raise SystemExit(f"--held-out {text}: no case of {data} has an ID in that range")
        overlap = trained.intersection(block)
        if overlap:
            raise SystemExit(f"--held-out {text}: the run trained on {len(overlap)} of these frames "
                             f"(e.g. {sorted(overlap)[0]}); they cannot validate it")
        chosen.extend(block)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pack", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the full data folder the validation comes from")
    parser.add_argument("--held-out", action="append", default=[], metavar="FIRST-LAST")
    args = parser.parse_args()

    checkpoint = load_torch_file(io.BytesIO(joined_pieces(args.pack)))
    checkpoint["model"] = {k: (v.float() if v.is_floating_point() else v) for k, v in checkpoint["model"].items()}
    trained = set(checkpoint["split"]["train"])
    validation = held_out_ids(args.data, args.held_out, trained)
    checkpoint["split"] = {"train": checkpoint["split"]["train"], "validation": validation}
    if validation:
        checkpoint["validation_note"] = (f"validation frames ({', '.join(args.held_out)}) were left out of the "
                                         "training folder before the run and named afterwards by "
                                         "scripts/unpack_device_run.py")
    checkpoint.pop(CONTENT_DIGEST, None)  # computed again over what is kept
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, checkpoint)
    print(f"{args.out}: {checkpoint['config']['name']}, epoch {checkpoint['epoch']} of "
          f"{checkpoint['settings']['epochs']}, {len(trained)} training and {len(validation)} validation frames")


if __name__ == "__main__":
    main()
