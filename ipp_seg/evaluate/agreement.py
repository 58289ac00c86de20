"""Agreement of a measurement with a reference: Bland-Altman bias and limits of agreement.

A mean absolute error says how far off a measurement is, not which way. Clinical method
comparison (Bland & Altman, Lancet 1986; Stat Methods Med Res 1999) reports the mean signed
difference (the bias), the 95 % limits of agreement (bias +- 1.96 SD of the differences), and
whether the difference grows with the size of the quantity (proportional bias: the slope of the
difference regressed on the mean of the two measurements). A tool whose AoP reads low for a
descended head, say, has a negative slope there, and a user deciding on AoP thresholds needs
to know it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LIMITS_Z", "Agreement", "bland_altman"]

# The normal quantile of the 95 % limits of agreement, as Bland and Altman give them.
LIMITS_Z = 1.96


@dataclass(frozen=True)
class Agreement:
    """Bland-Altman agreement of ``n`` paired values, in the measurement's own unit.

    ``bias`` = mean(measured - reference); ``sd`` = sample standard deviation of the
    differences (None for fewer than 2 pairs); ``lower`` / ``upper`` = bias -/+ 1.96 sd;
    ``proportional_slope`` = least-squares slope of the difference on the pair's mean (unitless;
    None for fewer than 3 pairs or when the means do not vary): -0.2 means the measurement
    reads 0.2 units lower for each unit more of the quantity.
    """

    n: int
    bias: float
    sd: float | None
    lower: float | None
    upper: float | None
    proportional_slope: float | None

    def to_dict(self) -> dict:
        return {"n": self.n, "bias": self.bias, "sd": self.sd, "lower": self.lower, "upper": self.upper,
                "proportional_slope": self.proportional_slope}


def bland_altman(measured: Sequence[float | None], reference: Sequence[float | None]) -> Agreement | None:
    """Agreement of ``measured`` with ``reference``, paired by position.

    Pairs where either value is None or not finite are left out (a failed measurement has no
    value to compare; it is counted elsewhere). Returns None when no pair is left.

    Raises:
        ValueError: when the two sequences differ in length.
    """
    if len(measured) != len(reference):
        raise ValueError(f"measured and reference differ in length: {len(measured)} vs {len(reference)}")
    pairs = [(float(m), float(r)) for m, r in zip(measured, reference)
             if m is not None and r is not None and math.isfinite(m) and math.isfinite(r)]
    if not pairs:
        return None
    values = np.asarray(pairs, dtype=np.float64)
    difference = values[:, 0] - values[:, 1]
    bias = float(difference.mean())
    n = len(pairs)
    if n < 2:
        return Agreement(n, bias, None, None, None, None)
    sd = float(difference.std(ddof=1))
    slope = None
    means = values.mean(axis=1)
    centred = means - means.mean()
    spread = float((centred * centred).sum())
    # A spread below rounding of the values themselves is no spread: the slope would be noise.
    if n >= 3 and spread > 1e-12 * max(1.0, float((means * means).sum())):
        slope = float((centred * (difference - bias)).sum() / spread)
    return Agreement(n, bias, sd, bias - LIMITS_Z * sd, bias + LIMITS_Z * sd, slope)
