"""Whether a cine frame's angle of progression agrees with the frames around it in time.

Labour moves the fetal head over seconds: within half a second of a cine the anatomy, and so
the AoP, barely changes. A frame whose AoP lies far from that of the frames around it was
probably read from wrong masks (or they were): a bright structure taken for the symphysis in
one frame, a head outline that swallowed a shadow. The check is a plausibility test, not a
measurement: it flags, and changes no value.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["AOP_UNSTEADY", "AOP_UNSTEADY_DEG", "STEADINESS_WINDOW_MS", "MIN_NEIGHBOURS", "aop_off_its_neighbours",
           "aop_unsteady"]

#: The warning's reason code (:data:`~ipp_seg.measure.result.REASONS`).
AOP_UNSTEADY: str = "aop_unsteady"
#: How far (ms) before and after a frame its neighbours in time lie.
STEADINESS_WINDOW_MS: float = 500.0
#: How far (degrees) a frame's AoP may lie from the median of its neighbours' before it is flagged.
AOP_UNSTEADY_DEG: float = 10.0
#: How many measured neighbours a frame needs to be judged (with one, a jump cannot be told from
#: which of the two frames is wrong).
MIN_NEIGHBOURS: int = 2


def aop_unsteady(times_ms: Sequence[float | None], aops_deg: Sequence[float | None], *,
                 window_ms: float = STEADINESS_WINDOW_MS, limit_deg: float = AOP_UNSTEADY_DEG,
                 min_neighbours: int = MIN_NEIGHBOURS) -> list[bool]:
    """Which frames of one cine have an AoP more than ``limit_deg`` degrees from the median AoP
    of the cine's other measured frames within ``window_ms`` milliseconds of them, where most of
    those agree with each other (more than half lie within ``limit_deg / 2`` of their median).

    ``times_ms`` are the frames' times in the cine (ms after its first frame; None where unknown)
    and ``aops_deg`` their AoP in degrees (None where not measured), one of each per frame. A
    frame without a time or an AoP, or with fewer than ``min_neighbours`` measured neighbours
    in the window, is never flagged, and a frame without an AoP is nobody's neighbour. Returns
    one bool per frame, in their order.
    """
    if len(times_ms) != len(aops_deg):
        raise ValueError(f"one time per AoP: {len(times_ms)} times, {len(aops_deg)} angles")
    _check_limits(window_ms, limit_deg, min_neighbours)
    measured = [(i, float(t), float(a)) for i, (t, a) in enumerate(zip(times_ms, aops_deg))
                if t is not None and a is not None and math.isfinite(t) and math.isfinite(a)]
    flags = [False] * len(times_ms)
    for i, t, a in measured:
        flags[i] = aop_off_its_neighbours(t, a, [(u, b) for j, u, b in measured if j != i], window_ms=window_ms,
                                          limit_deg=limit_deg, min_neighbours=min_neighbours)
    return flags


def aop_off_its_neighbours(time_ms: float, aop_deg: float, others: Iterable[tuple[float, float | None]], *,
                           window_ms: float = STEADINESS_WINDOW_MS, limit_deg: float = AOP_UNSTEADY_DEG,
                           min_neighbours: int = MIN_NEIGHBOURS) -> bool:
    """:func:`aop_unsteady` for one frame at ``time_ms`` (ms) with AoP ``aop_deg`` (degrees),
    against ``others``: (time in ms, AoP in degrees or None) of the cine's other frames."""
    _check_limits(window_ms, limit_deg, min_neighbours)
    around = np.array([b for u, b in others if b is not None and math.isfinite(b) and abs(u - time_ms) <= window_ms],
                      dtype=np.float64)
    if around.size < min_neighbours:
        return False
    median = float(np.median(around))
    # The odd one out only: where the neighbours themselves disagree (two of them, one wrong), which of the frames is
    # wrong cannot be told.
    agree = np.count_nonzero(np.abs(around - median) <= limit_deg / 2) > around.size / 2
    return bool(agree and abs(aop_deg - median) > limit_deg)


def _check_limits(window_ms: float, limit_deg: float, min_neighbours: int) -> None:
    if not (math.isfinite(window_ms) and window_ms > 0):
        raise ValueError(f"window_ms must be positive and finite, got {window_ms!r}")
    if not (math.isfinite(limit_deg) and limit_deg > 0):
        raise ValueError(f"limit_deg must be positive and finite, got {limit_deg!r}")
    if min_neighbours < 1:
        raise ValueError(f"min_neighbours must be at least 1, got {min_neighbours!r}")
