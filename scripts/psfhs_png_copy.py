"""Write a PNG copy of a PSFHS-layout folder's training frames, for a borrowed GPU machine.

    python scripts/psfhs_png_copy.py ../shared/data/psfhs .gpudata/psfhs-train-png \\
        --leave-out 04602-04801 --leave-out 04372-04401

The GPU machine has no SimpleITK to read MetaImage files, and a call may carry only 64 MiB: the
frames go as 8-bit PNG pairs (``images/ID.png``, ``masks/ID.png``; about 28 MB for the 828
training frames), exactly as ``ipp-seg train`` reads them from the MHA files (greyscale, labels
0/1/2), so that a run on the copy trains on the same pixels. The validation blocks are left out
of the copy, and the runs use ``--validation-count 0``; ``scripts/unpack_device_run.py`` names
the blocks as the run's validation afterwards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ipp_seg.train.data import find_pairs, in_id_range, load_cases, parse_id_range  # noqa: E402


def in_ranges(case_id: str, ranges: list[tuple[str, str]]) -> bool:
    return any(in_id_range(case_id, first, last) for first, last in ranges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="A PSFHS-layout folder (image_mha/, label_mha/) or PNG pairs.")
    parser.add_argument("out", type=Path, help="The folder to write (images/, masks/); must not exist.")
    parser.add_argument("--leave-out", action="append", default=[], metavar="FIRST-LAST",
                        help="A block of case IDs not to copy (repeatable): the validation blocks.")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new folder")
    try:
        ids = [case_id for case_id, _, _ in find_pairs(args.data)]
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if not ids:
        parser.error(f"{args.data} holds no image/mask pairs")
    blocks = []
    for text in args.leave_out:  # a range that names nothing (IDs without their zeros, say) would copy them all
        try:
            blocks.append(parse_id_range(text))
        except ValueError as exc:
            parser.error(f"--leave-out: {exc}")
        if not any(in_ranges(case_id, blocks[-1:]) for case_id in ids):
            parser.error(f"--leave-out {text}: no case ID of {args.data} lies in it (IDs run {ids[0]}-{ids[-1]})")
    kept = {case_id for case_id in ids if not in_ranges(case_id, blocks)}
    if not kept:
        parser.error(f"no case of {args.data} is left to copy")
    (args.out / "images").mkdir(parents=True)
    (args.out / "masks").mkdir()
    for case in load_cases(args.data, ids=kept):
        for folder, pixels in (("images", case.image), ("masks", case.labels)):
            if not cv2.imwrite(str(args.out / folder / f"{case.case_id}.png"), pixels):
                raise SystemExit(f"cannot write {args.out / folder / case.case_id}.png")
    print(f"{len(kept)} frames copied to {args.out}")


if __name__ == "__main__":
    main()
