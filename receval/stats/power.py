"""Power analysis for the online A/B test that follows an offline comparison.

An A/B test compares two independent arms, so what matters is the variance of
the metric per unit *within* each arm, not the paired variance seen offline.
With per-unit standard deviations sigma_A and sigma_B (measured offline on the
same units), a two-sided test at level alpha with power 1 - beta detects a
difference delta with

    n per arm = (z_{1-alpha/2} + z_{1-beta})^2 * (sigma_A^2 + sigma_B^2) / delta^2

and, conversely, with n units per arm the minimum detectable effect is

    MDE = (z_{1-alpha/2} + z_{1-beta}) * sqrt((sigma_A^2 + sigma_B^2) / n).

For a paired design (interleaving, or the same users seeing both) pass the
standard deviation of the paired differences as ``sd_a`` and ``sd_b=0``.
This is the normal approximation; it is accurate for the thousands of units
such tests need. The unit must match the randomisation unit of the online
test (users, usually): use ``compare(..., unit="user")`` to measure per-user
standard deviations.
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["sample_size", "minimum_detectable_effect"]


def _z(alpha: float, power: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    nd = NormalDist()
    return nd.inv_cdf(1 - alpha / 2) + nd.inv_cdf(power)


def sample_size(sd_a: float, sd_b: float, mde: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Units per arm needed to detect an absolute difference ``mde``.

    >>> round(sample_size(1.0, 1.0, 0.1))   # 2 * (1.96 + 0.84)^2 / 0.01
    1570
    """
    if mde == 0 or not math.isfinite(mde):
        return math.inf
    if sd_a < 0 or sd_b < 0:
        raise ValueError("standard deviations must be >= 0")
    n = _z(alpha, power) ** 2 * (sd_a**2 + sd_b**2) / mde**2
    return float(math.ceil(n * (1 - 1e-12)))  # rounding noise must not add a unit


def minimum_detectable_effect(sd_a: float, sd_b: float, n_per_arm: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest absolute difference detectable with ``n_per_arm`` units per arm.

    >>> round(minimum_detectable_effect(1.0, 1.0, 1570), 3)
    0.1
    """
    if n_per_arm <= 0:
        raise ValueError("n_per_arm must be > 0")
    return _z(alpha, power) * math.sqrt((sd_a**2 + sd_b**2) / n_per_arm)
