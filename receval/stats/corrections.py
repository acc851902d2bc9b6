"""Multiple-comparison corrections of p-values.

* ``holm`` (default) — Holm (1979) step-down; controls the family-wise error
  rate under any dependence, uniformly more powerful than Bonferroni.
* ``bonferroni`` — p * m, capped at 1.
* ``bh`` — Benjamini & Hochberg (1995) step-up; controls the false discovery
  rate under independence or positive dependence.
* ``none`` — p-values unchanged (reported as such).

NaN p-values (tests that could not be run) are left NaN and do not count
towards m.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adjust_pvalues", "CORRECTIONS"]

CORRECTIONS = ("holm", "bonferroni", "bh", "none")


def adjust_pvalues(p: np.ndarray | list[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values, same order as ``p``.

    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(4).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "bh").round(4).tolist()
    [0.03, 0.04, 0.04]
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}; got {method!r}")
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    if method == "none":
        adj = q.copy()
    elif method == "bonferroni":
        adj = np.minimum(q * m, 1.0)
    elif method == "holm":
        order = np.argsort(q, kind="stable")
        stepped = (m - np.arange(m)) * q[order]
        adj_sorted = np.minimum(np.maximum.accumulate(stepped), 1.0)
        adj = np.empty(m)
        adj[order] = adj_sorted
    else:  # bh
        order = np.argsort(q, kind="stable")
        stepped = q[order] * m / np.arange(1, m + 1)
        adj_sorted = np.minimum(np.minimum.accumulate(stepped[::-1])[::-1], 1.0)
        adj = np.empty(m)
        adj[order] = adj_sorted
    out[ok] = adj
    return out
