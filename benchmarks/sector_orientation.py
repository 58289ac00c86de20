"""Is the frame upside down? The ``sector_upside_down`` check, on the PSFHS frames as recorded,
turned by 180 degrees and flipped top to bottom, and on the validation frames that a network
measures turned with no warning about the frame.

    python benchmarks/sector_orientation.py [MODEL ...] [--data ../shared/data/psfhs]

Prints, for every PSFHS frame in each display, how many sectors meet the frame's top edge (there
the check reads nothing), percentiles of the narrowing (:func:`ipp_seg.io.sector.sector_profile`:
the imaged sector's width near the top of the frame over its width deep in it, read for every
frame, the edge or not), and how many frames the check flags (``sector_narrowing`` above
``MAX_SECTOR_NARROWING``): as recorded these are false alarms. Then, for each MODEL (default:
the default's held-out twin), the validation frames turned by 180 degrees that it measures with
no other warning about the frame (as ``benchmarks/display_faults.py`` counts them), and how many
of them the check flags.
"""

from __future__ import annotations

import numpy as np
from psfhs_frames import case_pairs, is_validation, model_arguments

from ipp_seg.inference import Predictor
from ipp_seg.io import read_frame
from ipp_seg.io.sector import MAX_SECTOR_NARROWING, sector_narrowing, sector_profile

DISPLAYS = {"as recorded": lambda a: a, "turned 180": lambda a: a[::-1, ::-1], "flipped top-bottom": lambda a: a[::-1]}
SAYS_NOTHING_OF_THE_FRAME = {"spacing_unknown", "hsd_undefined", "hsd_unstable", "sector_upside_down"}


def main() -> None:
    args = model_arguments(__doc__, ["dssau-net-s-heldout"])
    pairs = case_pairs(args.data)
    pixels = {cid: read_frame(image).pixels for cid, (image, _) in sorted(pairs.items())}
    print(f"MAX_SECTOR_NARROWING = {MAX_SECTOR_NARROWING}; {len(pixels)} PSFHS frames")
    pct = (0, 1, 5, 50, 95, 99, 100)
    for name, turn in DISPLAYS.items():
        shown = [np.ascontiguousarray(turn(p)) for p in pixels.values()]
        profiles = [sector_profile(f) for f in shown]
        values = np.array([np.nan if pr is None else pr.narrowing for pr in profiles])
        at_top = sum(pr is not None and pr.meets_top for pr in profiles)
        flagged = sum(v is not None and v > MAX_SECTOR_NARROWING for v in map(sector_narrowing, shown))
        print(f"  {name}: sector meets the top edge {at_top}; narrowing p{pct} = "
              f"{np.nanpercentile(values, pct).round(3).tolist()}; flagged {flagged} ({100 * flagged / len(shown):.1f} %)")
    validation = [cid for cid in pixels if is_validation(cid)]
    for model in args.models:
        predictor = Predictor(model)
        quiet, caught = [], 0
        for cid in validation:
            result = predictor.predict_pixels(np.ascontiguousarray(pixels[cid][::-1, ::-1]))
            m = result.measurement
            if m.status != "failed" and not set(m.reasons) - SAYS_NOTHING_OF_THE_FRAME:
                quiet.append(cid)
                caught += "sector_upside_down" in m.reasons
        print(f"{model}: {len(validation)} validation frames turned by 180 degrees; {len(quiet)} measured with no "
              f"other warning about the frame; {caught} of them flagged sector_upside_down")


if __name__ == "__main__":
    main()
