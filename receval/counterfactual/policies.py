"""Target policies from a candidate model's scores.

A scorer gives ``request_id, item_id, score`` over the candidate items of each
request; the estimators need a target frame ``request_id, item_id, position,
probability`` (per-position marginals summing to 1 per request and position).

* :func:`deterministic_topk`: the ranking receval's metrics use (score
  descending, ties by item id descending in byte order, integer ids by their
  decimal text); probability 1 for the item at each position 1..k.
* :func:`softmax_policy`: a softmax over score / temperature (k = 1), or for
  k > 1 the Plackett-Luce policy (draw items without replacement with softmax
  weights) and its per-position marginals, computed exactly by enumerating the
  ordered k-prefixes when there are at most ``max_exact`` of them per request,
  otherwise by seeded Monte Carlo with the Gumbel-top-k trick.

Both return a :class:`TargetPolicy`, which can be passed straight to
``logged_feedback`` as the target (it has ``to_pandas``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import permutations

import numpy as np
import pandas as pd

from receval.errors import InputError, UsageError, Violation

__all__ = ["TargetPolicy", "deterministic_topk", "softmax_policy"]

_CELLS = 4_000_000  # matrix cells processed at once (memory bound)


@dataclass(frozen=True)
class TargetPolicy:
    """A target policy frame and how it was computed.

    frame : pandas ``request_id, item_id, position, probability``
    method : ``"deterministic"``, ``"closed_form"`` (softmax, k = 1),
        ``"exact"`` (Plackett-Luce by enumeration) or ``"monte_carlo"``
        (Gumbel-top-k); with mixed candidate counts some requests may be exact
        and others Monte Carlo, reported as ``"exact+monte_carlo"``
    n_samples : Monte Carlo samples per request (0 when nothing was sampled)
    max_se : largest binomial standard error sqrt(p(1-p)/n_samples) over the
        Monte Carlo marginals (0 when exact)
    details : requests per method
    """

    frame: pd.DataFrame
    method: str
    n_samples: int = 0
    max_se: float = 0.0
    details: dict[str, int] = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        """The target frame (a copy), so a TargetPolicy can be given to ``logged_feedback``."""
        return self.frame.copy()


def _prepare(scores, k: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Validate and sort the scores; returns (frame sorted by request then rank, starts, counts)."""
    if hasattr(scores, "to_pandas"):
        scores = scores.to_pandas()
    if not isinstance(scores, pd.DataFrame):
        raise UsageError(f"scores must be a pandas or polars frame, got {type(scores).__name__}")
    missing = [c for c in ("request_id", "item_id", "score") if c not in scores.columns]
    if missing:
        raise UsageError(f"scores is missing required column(s) {missing}; it has {list(scores.columns)}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise UsageError(f"k must be an integer >= 1, got {k!r}")
    df = scores[["request_id", "item_id", "score"]].reset_index(drop=True)
    violations: list[Violation] = []
    try:
        s = df["score"].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"score must be numeric, got dtype {df['score'].dtype}") from None
    bad = np.flatnonzero(~np.isfinite(s))
    if len(bad):
        ex = tuple(f"row {int(r)} ({s[r]!r})" for r in bad[:5])
        violations.append(Violation("score", "must be finite (no NaN or infinity)", len(bad), ex))
    nulls = df[["request_id", "item_id"]].isna().any(axis=1).to_numpy()
    if nulls.any():
        violations.append(Violation("request_id, item_id", "must not be null", int(nulls.sum())))
    dup = df.duplicated(["request_id", "item_id"]).to_numpy()
    if dup.any():
        ex = tuple(f"row {int(r)}: ({df['request_id'].iat[r]!r}, {df['item_id'].iat[r]!r})" for r in np.flatnonzero(dup)[:5])
        violations.append(Violation("request_id, item_id", "each (request, item) must be scored once", int(dup.sum()), ex))
    if violations:
        raise InputError("scores", violations)
    # ranking order: request, score descending, item id descending in byte order
    req_codes, _ = pd.factorize(df["request_id"], sort=True)
    text = df["item_id"].astype(str).to_numpy(dtype=str)
    _, id_rank = np.unique(text, return_inverse=True)  # ascending code point = UTF-8 byte order
    order = np.lexsort((-id_rank, -s, req_codes))
    df = df.iloc[order].reset_index(drop=True)
    df["score"] = s[order]
    req = req_codes[order]
    counts = np.bincount(req)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    short = counts < k
    if short.any():
        ids = df["request_id"].to_numpy()[starts[short]]
        ex = ", ".join(f"request {i!r} ({c} candidates)" for i, c in zip(ids[:5], counts[short][:5], strict=True))
        raise UsageError(
            f"k={k} exceeds the number of candidates in {int(short.sum())} of {len(counts)} requests "
            f"(fewest: {int(counts.min())}), e.g. {ex}"
        )
    return df, starts, counts


def deterministic_topk(scores, k: int) -> TargetPolicy:
    """Rank each request's candidates and put probability 1 on the item at each position 1..k.

    Order: score descending, ties by item id descending in byte order (integer
    ids by their decimal text) -- the convention of receval's ranking metrics.
    """
    df, starts, counts = _prepare(scores, k)
    rank = np.arange(len(df)) - np.repeat(starts, counts)
    keep = rank < k
    out = pd.DataFrame(
        {
            "request_id": df["request_id"].to_numpy()[keep],
            "item_id": df["item_id"].to_numpy()[keep],
            "position": (rank[keep] + 1).astype(np.int64),
            "probability": np.ones(int(keep.sum())),
        }
    )
    return TargetPolicy(out, "deterministic", details={"deterministic": len(counts)})


def _padded(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, fill: float) -> np.ndarray:
    width = int(counts.max())
    col = np.arange(width)
    valid = col[None, :] < counts[:, None]
    idx = np.where(valid, starts[:, None] + col[None, :], 0)
    return np.where(valid, values[idx], fill)


def _n_prefixes(n: int, k: int) -> int:
    return math.perm(n, k)


def _exact_marginals(z: np.ndarray, k: int) -> np.ndarray:
    """Plackett-Luce marginals (R, n, k) by enumerating ordered k-prefixes.

    ``z`` (R, n): log weights sorted descending per row. The normaliser of each
    step, the log-sum over the items not chosen yet, is computed without
    cancellation or underflow: with m the best remaining item,
    sum_rest exp(z) = exp(z_m) [exp(L_m - z_m) - sum_{c chosen, c > m} exp(z_c - z_m)],
    L_m = logsumexp(z[m:]), a quantity >= exp(z_m).
    """
    R, n = z.shape
    perms = np.array(list(permutations(range(n), k)), dtype=np.int64)  # (P, k)
    P = len(perms)
    # L[:, a] = logsumexp(z[:, a:]) by a reverse running logaddexp
    L = np.logaddexp.accumulate(z[:, ::-1], axis=1)[:, ::-1]
    logp = np.zeros((R, P))
    for j in range(k):
        chosen = perms[:, :j]  # (P, j)
        taken = np.zeros((P, n + 1), dtype=bool)
        if j:
            np.put_along_axis(taken, chosen, True, axis=1)
        m = np.argmin(taken, axis=1)  # first index not chosen (P,)
        zm = z[:, m]  # (R, P)
        inner = np.exp(L[:, m] - zm)
        if j:
            after = chosen > m[:, None]  # (P, j)
            zc = z[:, chosen]  # (R, P, j)
            with np.errstate(under="ignore"):
                inner = inner - np.exp(np.where(after[None], zc - zm[:, :, None], -np.inf)).sum(axis=2)
        log_rest = zm + np.log(np.maximum(inner, 1.0))
        logp += z[:, perms[:, j]] - log_rest
    with np.errstate(under="ignore"):
        prob = np.exp(logp)  # (R, P)
    out = np.empty((R, n, k))
    rows = np.repeat(np.arange(R) * n, P)
    for j in range(k):
        idx = rows + np.tile(perms[:, j], R)
        out[:, :, j] = np.bincount(idx, weights=prob.ravel(), minlength=R * n).reshape(R, n)
    return out


def _mc_marginals(z: np.ndarray, k: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Monte Carlo marginals (R, n, k): Gumbel-top-k, ``n_samples`` rankings per request."""
    R, n = z.shape
    out = np.zeros((R, n, k))
    per_sample = max(1, _CELLS // max(n, 1))
    s_chunk = min(n_samples, per_sample)
    r_chunk = max(1, _CELLS // (s_chunk * n))
    for r0 in range(0, R, r_chunk):
        zz = z[r0 : r0 + r_chunk]
        rr = len(zz)
        counts = np.zeros(rr * n * k)
        done = 0
        while done < n_samples:
            s = min(s_chunk, n_samples - done)
            g = zz[:, None, :] + rng.gumbel(size=(rr, s, n))  # -inf padding stays -inf
            if k < n:
                top = np.argpartition(-g, k - 1, axis=2)[:, :, :k]
            else:
                top = np.broadcast_to(np.arange(n), g.shape).copy()
            gv = np.take_along_axis(g, top, axis=2)
            top = np.take_along_axis(top, np.argsort(-gv, axis=2, kind="stable"), axis=2)  # (rr, s, k)
            idx = (np.arange(rr)[:, None, None] * n + top) * k + np.arange(k)[None, None, :]
            counts += np.bincount(idx.ravel(), minlength=rr * n * k)
            done += s
        out[r0 : r0 + rr] = counts.reshape(rr, n, k) / n_samples
    return out


def softmax_policy(
    scores,
    k: int = 1,
    temperature: float = 1.0,
    *,
    max_exact: int = 50_000,
    n_samples: int = 10_000,
    seed: int | None = 0,
) -> TargetPolicy:
    """Softmax (k = 1) or Plackett-Luce (k > 1) target policy over each request's candidates.

    pi(a | x) = exp(s_a / T) / sum_b exp(s_b / T). For k > 1 items are drawn
    without replacement with these weights (Plackett-Luce) and the frame holds
    the per-position marginals P(item a at position j), j = 1..k: exact (by
    enumerating the n!/(n-k)! ordered prefixes) for requests with at most
    ``max_exact`` prefixes, otherwise estimated from ``n_samples`` seeded
    Gumbel-top-k rankings (standard error sqrt(p(1-p)/n_samples) per cell).
    Every frame row set sums to 1 per (request, position).
    """
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
        raise UsageError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not isinstance(max_exact, int | np.integer) or max_exact < 0:
        raise UsageError(f"max_exact must be an integer >= 0, got {max_exact!r}")
    df, starts, counts = _prepare(scores, k)
    R = len(counts)
    from receval._memory import check_dense

    check_dense("softmax_policy: the request x candidate x position marginals",
                (R, int(counts.max()) if R else 0, k), copies=2,
                hint="the longest request sets the width: cap the candidates per request or split the requests")
    z = _padded(df["score"].to_numpy() / temperature, starts, counts, -np.inf)  # sorted descending
    z = z - z[:, :1]
    marg = np.zeros((R, z.shape[1], k))
    details: dict[str, int] = {}
    max_se = 0.0
    used_mc = False
    if k == 1:
        with np.errstate(under="ignore"):
            w = np.exp(z)
        marg[:, :, 0] = w / w.sum(axis=1, keepdims=True)
        details["closed_form"] = R
    else:
        rng = np.random.default_rng(seed)
        mc = np.zeros(R, dtype=bool)
        for n in np.unique(counts):
            rows = np.flatnonzero(counts == n)
            if _n_prefixes(int(n), k) <= max_exact:
                P = _n_prefixes(int(n), k)
                step = max(1, _CELLS // (P * k))
                for r0 in range(0, len(rows), step):
                    sel = rows[r0 : r0 + step]
                    marg[sel, :n, :] = _exact_marginals(z[sel, :n], k)
            else:
                mc[rows] = True
        if mc.any():
            used_mc = True
            rows = np.flatnonzero(mc)
            width = int(counts[rows].max())
            mm = _mc_marginals(z[rows, :width], k, int(n_samples), rng)
            marg[rows, :width, :] = mm
            max_se = float(np.sqrt(mm * (1 - mm) / n_samples).max())
        if (~mc).any():
            details["exact"] = int((~mc).sum())
        if mc.any():
            details["monte_carlo"] = int(mc.sum())
    method = "+".join(details) if len(details) > 1 else next(iter(details))
    # long frame: request, position, item in ranking order
    width = z.shape[1]
    col = np.arange(width)
    valid = col[None, :] < counts[:, None]
    r_idx, c_idx = np.nonzero(valid)  # row-major: request, then rank
    src = starts[r_idx] + c_idx
    reps = np.tile(np.arange(k), len(src))
    src_rep = np.repeat(src, k)
    probs = marg[r_idx, c_idx, :].ravel()
    out = pd.DataFrame(
        {
            "request_id": df["request_id"].to_numpy()[src_rep],
            "item_id": df["item_id"].to_numpy()[src_rep],
            "position": (reps + 1).astype(np.int64),
            "probability": probs,
        }
    )
    req_rep = np.repeat(r_idx, k)
    order = np.lexsort((np.arange(len(out)), reps, req_rep))
    out = out.iloc[order].reset_index(drop=True)
    return TargetPolicy(out, method, int(n_samples) if used_mc else 0, max_se, details)
