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


def validation_frame_arguments(doc: str) -> tuple[argparse.Namespace, list[str]]:
    """--model (default dssau-net-s-heldout, never trained on these frames) and --data; and the
    case IDs of the folder's validation frames, for the scripts that change them and measure."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="dssau-net-s-heldout")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    args = parser.parse_args()
    return args, sorted(p.stem for p in (args.data / "image_mha").glob("*.mha") if is_validation(p.stem))


def case_pairs(data: Path) -> dict[str, tuple[Path, Path]]:
    """Case ID -> (image, label mask) of a PSFHS-layout folder."""
    return {cid: (img, lab) for cid, img, lab in find_pairs(data)}


def is_validation(case_id: str) -> bool:
    """Whether a case lies in one of the validation blocks no shipped recipe trained on."""
    return any(first <= case_id <= last for first, last in PSFHS_VALIDATION_BLOCKS.values())


def aop_changes(predictor, data: Path, ids: list[str], variants: dict, module, name: str, before,
                ways: tuple[str, str]) -> tuple[dict, dict]:
    """How each of ``variants`` (label -> function of a frame's pixels giving the changed frame)
    moves the AoP ``predictor`` reads on the frames ``ids`` of ``data``'s image_mha: |change| from
    the frame as recorded, as ipp-seg reads it now (``ways[0]``) and with ``module.name`` replaced
    by ``before`` (``ways[1]``, in this process only). Returns ({(variant, way): [|change|, ...]},
    {(variant, way): frames whose measurement failed})."""
    from ipp_seg.io import read_frame

    now = getattr(module, name)
    changes = {(variant, way): [] for variant in variants for way in ways}
    failed = dict.fromkeys(changes, 0)
    for case in ids:
        pixels = read_frame(data / "image_mha" / f"{case}.mha").pixels
        own = predictor.predict_pixels(pixels).measurement.aop_deg
        for variant, change in variants.items():
            frame = change(pixels)
            for way, function in zip(ways, (now, before)):
                setattr(module, name, function)
                try:
                    aop = predictor.predict_pixels(frame).measurement.aop_deg
                finally:
                    setattr(module, name, now)
                if aop is None:
                    failed[variant, way] += 1
                elif own is not None:
                    changes[variant, way].append(abs(aop - own))
    return changes, failed


def aop_change_benchmark(doc: str, variants: dict, module, name: str, before, ways: tuple[str, str],
                         what: str) -> None:
    """The whole of a script that changes the validation frames and measures what the model then
    reads (:func:`validation_frame_arguments`, :func:`aop_changes`, :func:`print_changes`)."""
    from ipp_seg.inference import Predictor

    args, ids = validation_frame_arguments(doc)
    predictor = Predictor(args.model)
    changes, failed = aop_changes(predictor, args.data, ids, variants, module, name, before, ways)
    print(f"{len(ids)} validation frames, model {args.model}")
    print_changes(changes, failed, what)


def print_changes(changes: dict, failed: dict, what: str) -> None:
    """The table of :func:`aop_changes`, in Markdown: median / mean / max |change| per variant and way."""
    import numpy as np

    print(f"| {what} | way | median / mean / max abs AoP change (deg) | failed |")
    print("|---|---|---|---|")
    for (variant, way), values in changes.items():
        v = np.array(values)
        print(f"| {variant} | {way} | {np.median(v):.2f} / {v.mean():.2f} / {v.max():.1f} | {failed[variant, way]} |")
