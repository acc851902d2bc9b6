"""Paired significance tests on per-unit differences.

Every test takes ``d``, the per-unit differences candidate - baseline (units
are requests or users, paired across the two runs), and returns a two-sided
p-value with the statistic and an effect size.

* ``paired_t`` — Student's t on the mean difference, n - 1 degrees of freedom.
  Effect size: Cohen's d_z = mean(d) / sd(d).
* ``wilcoxon`` — Wilcoxon signed-rank test (scipy; zero differences dropped,
  ``zero_method="wilcox"``; exact distribution for small n, normal
  approximation with tie correction otherwise). Effect size: matched-pairs
  rank-biserial correlation (W+ - W-) / (W+ + W-).
* ``randomization`` — sign-flip permutation test of the mean difference with
  ``n_perm`` random sign vectors; p = (b + 1) / (m + 1), where b counts
  permuted |sum| at least as large as the observed one, so p is never 0
  (Phipson & Smyth 2010). Effect size: d_z.

Degenerate inputs follow documented conventions instead of crashing: all
differences zero gives p = 1; a constant non-zero difference (sd = 0, where t
is undefined) gives the exact sign-test p-value 2 * 0.5^n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TestResult", "paired_test", "TESTS"]

TESTS = ("paired_t", "wilcoxon", "randomization")
_DENOMINATORS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 50, 100)


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    effect_size: float
    n: int
    note: str = ""

    __test__ = False  # not a pytest class


def _sign_test_p(n: int) -> float:
    return min(1.0, 2.0 * 0.5**n)


def _degenerate(d: np.ndarray, test: str) -> TestResult | None:
    n = len(d)
    if n == 0:
        return TestResult(test, math.nan, math.nan, math.nan, 0, "no paired units")
    if np.all(d == 0):
        return TestResult(test, 0.0, 1.0, 0.0, n, "all differences are zero")
    if np.all(d == d[0]):
        nz = int(np.count_nonzero(d))
        sign = 1.0 if d[0] > 0 else -1.0
        return TestResult(test, math.copysign(math.inf, d[0]), _sign_test_p(nz), sign * math.inf if test != "wilcoxon" else sign,
                          n, "constant non-zero difference: exact sign-test p-value")
    return None


def paired_t(d: np.ndarray) -> TestResult:
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    deg = _degenerate(d, "paired_t")
    if deg is not None:
        return deg
    n = len(d)
    mean, sd = d.mean(), d.std(ddof=1)
    t = mean / (sd / math.sqrt(n))
    p = float(2.0 * stats.t.sf(abs(t), n - 1))
    return TestResult("paired_t", float(t), p, float(mean / sd), n)


def wilcoxon(d: np.ndarray) -> TestResult:
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    deg = _degenerate(d, "wilcoxon")
    if deg is not None:
        return deg
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    w_plus, w_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
    r = (w_plus - w_minus) / (w_plus + w_minus)
    return TestResult("wilcoxon", float(res.statistic), float(res.pvalue), r, len(d),
                      f"{len(d) - len(nz)} zero differences dropped" if len(nz) < len(d) else "")


def randomization_many(
    d: np.ndarray, *, n_perm: int = 10_000, seed: int | None = 0
) -> np.ndarray:
    """Sign-flip p-values for several columns of differences at once.

    ``d`` has shape (n_units, n_columns); every permutation flips the signs of
    whole units (rows), so columns share permutations. A permuted sum is
    ``2 * (B @ d) - d.sum()`` with B a random 0/1 matrix. It is first computed
    in float32 (fast); permutations whose float32 sum lies within a generous
    rounding band of the observed |sum| are recomputed exactly in float64, so
    the count of "at least as extreme" permutations is that of exact
    arithmetic. Ties with the observed statistic (within 1e-9 relative) count
    as at least as extreme (conservative).
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    keep = np.any(d != 0, axis=1)  # units with no difference anywhere do not move any sum
    d = d[keep]
    n, m = d.shape
    if n == 0:
        return np.ones(m)
    # Columns whose differences are multiples of 1/q for a small q (hit@k: 1,
    # precision@k: k) are scaled to integers: float32 then sums them exactly
    # (below 2^24), which matters because such statistics tie the observed one
    # often and would otherwise all be recomputed in float64.
    exact_cols = np.zeros(m, dtype=bool)
    for j in range(m):
        for q in _DENOMINATORS:
            scaled = d[:, j] * q
            rounded = np.rint(scaled)
            if np.abs(rounded).sum() < 2**23 and np.all(np.abs(scaled - rounded) <= 1e-9 * max(1.0, q)):
                d[:, j] = rounded
                exact_cols[j] = True
                break
    total = d.sum(axis=0)
    observed = np.abs(total)
    scale = np.abs(d).sum(axis=0)
    tie = observed - 1e-9 * scale  # exact sums this close count as ties
    # float32 error of a blocked dot product grows like eps * sqrt(n) * ||d||_2;
    # the band is 64x that (plus the chunked accumulation, same order), and
    # anything inside it is recomputed in float64
    band = 64.0 * np.finfo(np.float32).eps * np.sqrt(n) * np.sqrt((d * d).sum(axis=0)) + 1e-12
    band[exact_cols] = -1.0  # integer sums in float32 are exact: nothing to recompute
    tie[exact_cols] = observed[exact_cols]
    d32 = d.astype(np.float32)
    rng = np.random.default_rng(seed)
    at_least = np.zeros(m, dtype=np.int64)
    # permutations in blocks of 256, units in chunks of 4096: each chunk's 0/1
    # matrix is made and multiplied while it sits in cache (3x faster than one
    # big product); the packed bits are kept for exact recomputation
    block, chunk = 256, 4096
    done = 0
    while done < n_perm:
        b = min(block, n_perm - done)
        acc = np.zeros((b, m), dtype=np.float32)
        packed = []
        for c in range(0, n, chunk):
            cc = min(chunk, n - c)
            n_bytes = (b * cc + 7) // 8
            raw = rng.bit_generator.random_raw((n_bytes + 7) // 8).view(np.uint8)[:n_bytes]
            packed.append(raw)
            acc += np.unpackbits(raw)[: b * cc].reshape(b, cc).astype(np.float32) @ d32[c : c + cc]
        approx = np.abs(2.0 * acc.astype(np.float64) - total)
        border = np.abs(approx - observed) <= band
        extreme = approx >= tie
        rows = np.flatnonzero(border.any(axis=1))
        if len(rows):
            exact = np.zeros((len(rows), m))
            for i, c in enumerate(range(0, n, chunk)):
                cc = min(chunk, n - c)
                bits = np.unpackbits(packed[i])[: b * cc].reshape(b, cc)[rows]
                exact += bits.astype(np.float64) @ d[c : c + cc]
            extreme[rows] = np.abs(2.0 * exact - total) >= tie
        at_least += extreme.sum(axis=0)
        done += b
    return (at_least + 1.0) / (n_perm + 1.0)


def randomization(d: np.ndarray, *, n_perm: int = 10_000, seed: int | None = 0) -> TestResult:
    d = np.asarray(d, dtype=np.float64)
    deg = _degenerate(d, "randomization")
    if deg is not None and deg.note == "no paired units":
        return deg
    if deg is not None and deg.note == "all differences are zero":
        return deg
    p = float(randomization_many(d, n_perm=n_perm, seed=seed)[0])
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    eff = float(d.mean() / sd) if sd > 0 else math.copysign(math.inf, d.mean())
    return TestResult("randomization", float(d.sum()), p, eff, len(d), f"{n_perm} sign-flip permutations")


def paired_test(d: np.ndarray, test: str, *, n_perm: int = 10_000, seed: int | None = 0) -> TestResult:
    """Dispatch to one of :data:`TESTS`."""
    if test == "paired_t":
        return paired_t(d)
    if test == "wilcoxon":
        return wilcoxon(d)
    if test == "randomization":
        return randomization(d, n_perm=n_perm, seed=seed)
    raise ValueError(f"test must be one of {', '.join(TESTS)}; got {test!r}")
