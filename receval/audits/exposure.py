"""Exposure fairness of item or provider groups in ranked lists.

``exposure_audit(run, groups, ...)`` measures how the attention of users is
shared between groups of items (providers, item categories, ...) by the
rankings of a run, and compares it with a target share:

* position-weighted **exposure** under a browsing model (``"log"``:
  ``1/log2(1+rank)``; ``"rbp"``: ``patience^(rank-1)``; ``"cascade"``:
  ``patience^(rank-1) * prod_{j<rank} (1 - stop_j)``);
* per group: **exposure share** against a **target share** (``"equal"`` per
  catalog item, ``"merit"``: proportional to relevance, or a declared
  mapping), their ratio and difference, the mean exposure per item and the
  **disparate exposure ratio** against a reference group (Singh & Joachims
  2018);
* **AWRF** (attention-weighted rank fairness, TREC Fair Ranking 2021/22):
  ``1 - JSD(a(L), target)`` per request, averaged;
* **Gini** of item exposure over the whole catalog;
* **expected exposure** EE-L / EE-D / EE-R (Diaz et al. 2020), for
  stochastic rankings given as several sampled rankings per request.

Everything but the merit target, AWRF under merit and EE's relevance tiers is
label-free. Intervals resample requests (percentile bootstrap with
``receval.stats.bootstrap``): every quantity is a function of column sums of a
per-request matrix, so one set of replicates serves them all. No Python loop
runs over requests or items.

Formulas and conventions: docs/audits.md, "Exposure fairness".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from receval.audits._result import (
    MISSING_GROUP,
    Estimate,
    _num,  # noqa: F401  (re-exported: other audits import it from here)
    _Stat,
    bootstrap_estimates,
    check_interval_args,
    check_k,
    estimate_dict,
    find_group,
    interval_settings,
    rows_frame,
)
from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = ["MISSING_GROUP", "Estimate", "GroupExposure", "ExposureAudit", "exposure_audit"]

BROWSING_MODELS = ("log", "rbp", "cascade")


#: the per-group quantities, in output order
GROUP_FIELDS = (
    "exposure_share",
    "target_share",
    "share_ratio",
    "share_difference",
    "mean_item_exposure",
    "mean_item_utility",
    "disparate_exposure_ratio",
)


@dataclass(frozen=True)
class GroupExposure:
    """One group's row. Quantities are None when ``suppressed`` (or undefined)."""

    group: str
    n_items: int  # catalog items of the group
    n_items_shown: int  # of them, shown in some top-k list
    n_requests: int  # requests showing at least one item of the group
    suppressed: bool
    exposure_share: Estimate | None = None
    target_share: Estimate | None = None
    share_ratio: Estimate | None = None
    share_difference: Estimate | None = None
    mean_item_exposure: Estimate | None = None
    mean_item_utility: Estimate | None = None
    disparate_exposure_ratio: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": self.group,
            "n_items": self.n_items,
            "n_items_shown": self.n_items_shown,
            "n_requests": self.n_requests,
            "suppressed": self.suppressed,
        }
        for name in GROUP_FIELDS:
            out[name] = estimate_dict(getattr(self, name))
        return out


@dataclass(frozen=True)
class ExposureAudit:
    """Result of :func:`exposure_audit`; ``to_dict()`` is JSON-safe and holds no item id."""

    groups: tuple[GroupExposure, ...]
    awrf: Estimate
    gini: Estimate
    ee_l: Estimate
    ee_d: Estimate
    ee_r: Estimate
    reference_group: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def group(self, name: str) -> GroupExposure:
        return find_group(self.groups, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "counts": dict(self.counts),
            "reference_group": self.reference_group,
            "groups": [g.to_dict() for g in self.groups],
            "awrf": self.awrf.to_dict(),
            "gini": self.gini.to_dict(),
            "expected_exposure": {"ee_l": self.ee_l.to_dict(), "ee_d": self.ee_d.to_dict(), "ee_r": self.ee_r.to_dict()},
        }

    def to_frame(self) -> pl.DataFrame:
        """One row per group (polars): counts, then ``<quantity>``, ``<quantity>_low``, ``<quantity>_high``."""
        return rows_frame([g.to_dict() for g in self.groups],
                          ("group", "n_items", "n_items_shown", "n_requests", "suppressed"), GROUP_FIELDS)


# --------------------------------------------------------------------------- inputs


def _check_args(browsing: str, patience: float, k: int | None, target: Any, min_group_size: int,
                n_boot: int, level: float, labels: Any) -> None:
    if browsing not in BROWSING_MODELS:
        raise UsageError(f"unknown browsing model {browsing!r}: use one of {', '.join(map(repr, BROWSING_MODELS))}")
    if not (isinstance(patience, int | float) and 0.0 < float(patience) <= 1.0):
        raise UsageError(f"patience must lie in (0, 1], got {patience!r}")
    check_k(k)
    if isinstance(target, str):
        if target not in ("equal", "merit"):
            raise UsageError(f"unknown target {target!r}: use 'equal', 'merit' or a mapping group -> share")
        if target == "merit" and labels is None:
            raise UsageError("target='merit' needs labels=... (request_id, item_id, label): merit is the relevance share")
    elif not isinstance(target, Mapping):
        raise UsageError(f"target must be 'equal', 'merit' or a mapping group -> share, got {type(target).__name__}")
    check_interval_args(min_group_size, n_boot, level)


def _require(frame: pl.DataFrame, name: str, columns: Sequence[str], hint: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(name, [Violation(c, "required column is missing", frame.height, (), hint) for c in missing])


def _run_frame(run: Any) -> pl.DataFrame:
    import polars as pl

    from receval.data.readers import to_polars

    cols = ["request_id", "item_id", "score", "sample_id"]
    if isinstance(run, list | tuple):
        if not run:
            raise UsageError("run: an empty list of sampled rankings")
        parts = []
        for i, r in enumerate(run):
            f = to_polars(r, kind="run", columns=cols)
            _require(f, "run", ["request_id", "item_id", "score"], "a run has request_id, item_id, score")
            parts.append(f.select("request_id", "item_id", "score").with_columns(sample_id=pl.lit(i, dtype=pl.Int64)))
        frame = pl.concat(parts, how="vertical_relaxed")
    else:
        frame = to_polars(run, kind="run", columns=cols)
        _require(frame, "run", ["request_id", "item_id", "score"], "a run has request_id, item_id, score")
        if "sample_id" not in frame.columns:
            frame = frame.with_columns(sample_id=pl.lit(0, dtype=pl.Int64))
        frame = frame.select("request_id", "item_id", "score", "sample_id")
    violations = []
    for c in ("request_id", "item_id", "score", "sample_id"):
        n = frame[c].null_count()
        if n:
            violations.append(Violation(c, "must not be null", n))
    if not frame["score"].dtype.is_numeric():
        violations.append(Violation("score", "must be numeric", frame.height, (f"dtype {frame['score'].dtype}",)))
    else:
        score = frame["score"].cast(pl.Float64)
        bad = int((~score.is_finite()).fill_null(False).sum())
        if bad:
            violations.append(Violation("score", "must be finite", bad))
    if violations:
        raise InputError("run", violations)
    dup = frame.select(pl.struct("request_id", "sample_id", "item_id").is_duplicated()).to_series()
    if dup.any():
        raise InputError("run", [Violation(
            "item_id", "an item may appear once per request (and sample)", int(dup.sum()),
            hint="drop the repeated (request_id, sample_id, item_id) rows")])
    return frame.with_columns(pl.col("score").cast(pl.Float64))


def _groups_frame(groups: Any, group_column: str) -> pl.DataFrame:
    import polars as pl

    from receval.data.readers import to_polars

    frame = to_polars(groups, kind="catalog", name="groups", columns=["item_id", group_column])
    _require(frame, "groups", ["item_id", group_column],
             f"the groups table maps item_id to a group column (group_column={group_column!r})")
    frame = frame.select("item_id", pl.col(group_column).cast(pl.String).fill_null(MISSING_GROUP).alias("group"))
    violations = []
    if frame["item_id"].null_count():
        violations.append(Violation("item_id", "must not be null", frame["item_id"].null_count()))
    dup = frame["item_id"].is_duplicated()
    if dup.any():
        violations.append(Violation("item_id", "each item may belong to one group only", int(dup.sum()),
                                    hint="one row per item in the groups table"))
    if frame.height == 0:
        violations.append(Violation("item_id", "the groups table must hold at least one item", 0))
    if violations:
        raise InputError("groups", violations)
    return frame


def _labels_frame(labels: Any) -> pl.DataFrame:
    import polars as pl

    from receval.data.readers import to_polars

    frame = to_polars(labels, kind="labels", columns=["request_id", "item_id", "label"])
    _require(frame, "labels", ["request_id", "item_id", "label"], "labels have request_id, item_id, label")
    frame = frame.select("request_id", "item_id", "label")
    violations = []
    for c in ("request_id", "item_id", "label"):
        if frame[c].null_count():
            violations.append(Violation(c, "must not be null", frame[c].null_count()))
    if not frame["label"].dtype.is_numeric():
        violations.append(Violation("label", "must be numeric", frame.height, (f"dtype {frame['label'].dtype}",)))
    elif (~frame["label"].cast(pl.Float64).is_finite()).fill_null(False).any():
        violations.append(Violation("label", "must be finite", int((~frame["label"].cast(pl.Float64).is_finite()).sum())))
    dup = frame.select(pl.struct("request_id", "item_id").is_duplicated()).to_series()
    if dup.any():
        violations.append(Violation("item_id", "one label per (request_id, item_id)", int(dup.sum())))
    if violations:
        raise InputError("labels", violations)
    return frame.with_columns(pl.col("label").cast(pl.Float64))


def _harmonise(a: pl.DataFrame, b: pl.DataFrame, column: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    import polars as pl

    if a[column].dtype != b[column].dtype:
        return a.with_columns(pl.col(column).cast(pl.String)), b.with_columns(pl.col(column).cast(pl.String))
    return a, b


def _unknown_items(items: pl.Series, frame: str) -> InputError:
    distinct = items.n_unique()
    return InputError(f"{frame} and groups", [Violation(
        "item_id", "every item must be in the groups table", items.len(),
        tuple(repr(v) for v in items.unique(maintain_order=True).head(5).to_list()),
        f"{distinct} distinct item{'s' if distinct != 1 else ''} {'are' if distinct != 1 else 'is'} missing from "
        "the groups table; add them (a null group value puts an item in the '(missing)' group)",
    )])


# --------------------------------------------------------------------------- kernels


def _position_weights(browsing: str, patience: float, n: int) -> np.ndarray:
    """w_1..w_n of a position-based model (cascade: its RBP part)."""
    rank = np.arange(1, n + 1, dtype=np.float64)
    if browsing == "log":
        return 1.0 / np.log2(1.0 + rank)
    return float(patience) ** (rank - 1.0)


def _jsd_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence in bits (= scipy jensenshannon(p, q, base=2) ** 2)."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log2(p / m), 0.0)
        kq = np.where(q > 0, q * np.log2(q / m), 0.0)
    return np.clip(0.5 * (kp.sum(axis=1) + kq.sum(axis=1)), 0.0, 1.0)


def exposure_audit(
    run: Any,
    groups: Any,
    *,
    group_column: str = "provider",
    k: int | None = None,
    browsing: str = "log",
    patience: float = 0.8,
    target: str | Mapping[str, float] = "equal",
    labels: Any = None,
    min_group_size: int = 20,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
) -> ExposureAudit:
    """Exposure fairness audit of the groups of ``groups`` in the rankings of ``run``.

    Parameters
    ----------
    run : a frame (polars, pandas, arrow, path) with request_id, item_id, score
        and optionally ``sample_id`` (several sampled rankings of a stochastic
        policy per request), or a list of such frames, one per sample.
        Ranked by score descending, ties by item id descending in byte order
        (trec_eval); cut at ``k`` when given.
    groups : frame with ``item_id`` and ``group_column``: the catalog. Null
        group values form the group ``"(missing)"``.
    browsing : ``"log"`` (1/log2(1+rank)), ``"rbp"`` (patience^(rank-1)) or
        ``"cascade"`` (patience^(rank-1) * prod over the items above of
        (1 - stop), stop = (2^g - 1) / 2^g_max from the labels, 0 without).
    target : ``"equal"`` (share of catalog items), ``"merit"`` (share of the
        positive labels of the audited requests; needs ``labels``) or a
        mapping group -> share summing to 1 (absent groups get 0).
    labels : frame with request_id, item_id, label (optional).
    min_group_size : groups with fewer catalog items are listed with
        ``suppressed=True`` and every quantity None.
    n_boot : bootstrap replicates over requests (0: no intervals).

    Raises
    ------
    UsageError : bad arguments (browsing model, target, ...).
    InputError : bad data, e.g. run items missing from the groups table.
    """
    import polars as pl
    import scipy.sparse as sp

    from receval.metrics.beyond import gini_of_rows

    _check_args(browsing, patience, k, target, min_group_size, n_boot, level, labels)
    frame = _run_frame(run)
    cat = _groups_frame(groups, group_column)
    lab = _labels_frame(labels) if labels is not None else None

    # ---- catalog: group codes in name order, item positions
    names = sorted(cat["group"].unique().to_list())
    n_groups = len(names)
    code_of = pl.DataFrame({"group": names, "__g": np.arange(n_groups, dtype=np.int64)})
    cat = cat.join(code_of, on="group", how="left", maintain_order="left").with_columns(
        __pos=pl.int_range(pl.len(), dtype=pl.Int64))
    n_catalog = cat.height
    n_items = np.bincount(cat["__g"].to_numpy(), minlength=n_groups).astype(np.int64)

    if isinstance(target, Mapping):
        declared = _declared_target(target, names)

    # ---- rank: score desc, then item id text desc (byte order), per request and sample
    frame = frame.with_columns(__tie=pl.col("item_id").cast(pl.String))
    frame = frame.sort(["request_id", "sample_id", "score", "__tie"], descending=[False, False, True, True])
    frame = frame.with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("request_id", "sample_id"))
    if k is not None:
        frame = frame.filter(pl.col("rank") <= k)
    frame = frame.with_columns(
        __q=pl.col("request_id").rle_id().cast(pl.Int64),
    ).with_columns(__ns=pl.col("sample_id").n_unique().over("__q").cast(pl.Float64))
    n_req = int(frame["__q"].max()) + 1 if frame.height else 0
    if n_req == 0:
        raise InputError("run", [Violation("request_id", "the run must hold at least one ranked item", 0)])

    fr, cj = _harmonise(frame, cat.select("item_id", "__g", "__pos"), "item_id")
    frame = fr.join(cj, on="item_id", how="left", maintain_order="left")
    if frame["__g"].null_count():
        raise _unknown_items(frame.filter(pl.col("__g").is_null())["item_id"], "run")

    # ---- labels of the audited requests
    if lab is not None:
        reqs = frame.select("request_id", "__q").unique(maintain_order=True)
        lab_h, reqs = _harmonise(lab, reqs, "request_id")
        lab = lab_h.join(reqs, on="request_id", how="inner", maintain_order="left")
        lab, cj = _harmonise(lab, cat.select("item_id", "__g"), "item_id")
        lab = lab.join(cj, on="item_id", how="left", maintain_order="left")
        pos = lab.filter(pl.col("label") > 0)
        if pos["__g"].null_count():
            raise _unknown_items(pos.filter(pl.col("__g").is_null())["item_id"], "labels")
        lab = lab.with_columns(gain=pl.col("label").clip(lower_bound=0.0))
        fr, lj = _harmonise(frame, lab.select("request_id", "item_id", "gain"), "item_id")
        fr, lj = _harmonise(fr, lj, "request_id")
        frame = fr.join(lj, on=["request_id", "item_id"], how="left", maintain_order="left").with_columns(
            pl.col("gain").fill_null(0.0))
    else:
        frame = frame.with_columns(gain=pl.lit(0.0))

    rank = frame["rank"].to_numpy().astype(np.float64)
    if browsing == "log":
        att = 1.0 / np.log2(1.0 + rank)
    else:
        att = float(patience) ** (rank - 1.0)
    if browsing == "cascade" and lab is not None:
        gmax = float(lab["gain"].max() or 0.0)
        if gmax > 0:
            stop = (2.0 ** frame["gain"].to_numpy() - 1.0) / 2.0**gmax
            cont = pl.DataFrame({"q": frame["__q"], "s": frame["sample_id"], "c": 1.0 - stop})
            reach = cont.select(pl.col("c").shift(1, fill_value=1.0).cum_prod().over("q", "s"))["c"].to_numpy()
            att = att * reach

    q = frame["__q"].to_numpy()
    g = frame["__g"].to_numpy()
    ns = frame["__ns"].to_numpy()
    cell = q * n_groups + g
    from receval._memory import check_dense  # guard: refuse before allocating, not an OOM kill

    check_dense("exposure_audit: the request x group exposure and relevance matrices", (n_req, n_groups), copies=5,
                hint="use a coarser group_column (fewer groups), audit a sample of requests, or split the run")
    a_mat = np.bincount(cell, weights=att / ns, minlength=n_req * n_groups).reshape(n_req, n_groups)
    shown = np.bincount(cell, minlength=n_req * n_groups).reshape(n_req, n_groups) > 0
    n_requests_g = shown.sum(axis=0)
    n_shown_g = _distinct_per_group(frame["__pos"].to_numpy(), g, n_groups)
    if lab is not None:
        lq = lab.filter(pl.col("gain") > 0)
        r_mat = np.bincount(lq["__q"].to_numpy() * n_groups + lq["__g"].to_numpy(), weights=lq["gain"].to_numpy(),
                            minlength=n_req * n_groups).reshape(n_req, n_groups)
    else:
        r_mat = np.zeros((n_req, n_groups))

    # ---- group quantities: functions of the column sums of [A | R | 1]
    m_stats = np.hstack([a_mat, r_mat, np.ones((n_req, 1))])
    if n_groups > _DENSE_MAX_GROUPS:
        # a request touches at most k groups: with many groups (providers) the
        # request x group matrix is mostly zeros and the bootstrap product costs
        # O(n_boot x nonzeros) in sparse form instead of O(n_boot x requests x groups)
        m_stats = sp.csr_matrix(m_stats)
    merit = target == "merit"
    if merit:
        fixed_target = None
    elif isinstance(target, Mapping):
        fixed_target = declared
    else:
        fixed_target = n_items / n_catalog
    ok_groups = np.flatnonzero(n_items >= min_group_size)
    # reference of the disparate exposure ratio: the largest unsuppressed group
    # (first by name on ties) with positive exposure (merit: positive relevance)
    basis = r_mat.sum(axis=0) if merit else a_mat.sum(axis=0)
    eligible = ok_groups[basis[ok_groups] > 0]
    ref = int(eligible[np.argmax(n_items[eligible])]) if len(eligible) else None

    memo: list[Any] = [None, None]  # (sums array, its parts): every group stat reads the same block

    def parts(s: np.ndarray) -> dict[str, np.ndarray]:
        if memo[0] is s:
            return memo[1]
        memo[1] = _parts(s)
        memo[0] = s
        return memo[1]

    def _parts(s: np.ndarray) -> dict[str, np.ndarray]:
        s = np.asarray(s, dtype=np.float64)
        a, r, n = s[:, :n_groups], s[:, n_groups : 2 * n_groups], s[:, 2 * n_groups]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = a / a.sum(axis=1, keepdims=True)
            tgt = r / r.sum(axis=1, keepdims=True) if merit else np.broadcast_to(fixed_target, a.shape)
            exp_item = a / (n[:, None] * n_items)
            util_item = r / (n[:, None] * n_items)
            if merit:
                treat = exp_item / util_item
                der = treat / treat[:, [ref]] if ref is not None else np.full(a.shape, np.nan)
            else:
                der = exp_item / exp_item[:, [ref]] if ref is not None else np.full(a.shape, np.nan)
            return {
                "exposure_share": share,
                "target_share": tgt,
                "share_ratio": share / tgt,
                "share_difference": share - tgt,
                "mean_item_exposure": exp_item,
                "mean_item_utility": util_item if lab is not None else np.full(a.shape, np.nan),
                "disparate_exposure_ratio": der,
            }

    stats: list[_Stat] = []
    keys: list[tuple[str, int]] = []
    for name in GROUP_FIELDS:
        for j in ok_groups:
            stats.append(_Stat(m_stats, lambda s, name=name, j=j: parts(s)[name][:, j]))
            keys.append((name, int(j)))

    # ---- AWRF per request
    row_att = a_mat.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = a_mat / row_att[:, None]
        if merit:
            row_rel = r_mat.sum(axis=1)
            tdist = r_mat / row_rel[:, None]
            awrf_ok = (row_att > 0) & (row_rel > 0)
        else:
            tdist = np.broadcast_to(fixed_target, a_mat.shape)
            awrf_ok = row_att > 0
    awrf_q = np.where(awrf_ok, 1.0 - _jsd_bits(np.where(awrf_ok[:, None], dist, 0.0),
                                               np.where(awrf_ok[:, None], tdist, 0.0)), 0.0)
    awrf_stat = _Stat(np.column_stack([awrf_q, awrf_ok.astype(np.float64)]), lambda s: s[:, 0] / s[:, 1])

    # ---- Gini of item exposure over the catalog (items never shown count 0)
    item_pos = frame["__pos"].to_numpy()
    items_shown, item_col = np.unique(item_pos, return_inverse=True)
    x_mat = sp.csr_matrix((att / ns, (q, item_col)), shape=(n_req, len(items_shown)))
    x_mat.sum_duplicates()
    gini_stat = _Stat(x_mat, lambda s: gini_of_rows(np.asarray(s), n_catalog), recentre=True)

    # ---- expected exposure
    ee = _expected_exposure(frame, lab, browsing, patience, n_req)
    ee_stats = [_Stat(ee, lambda s, c=c: s[:, c] / _n_req_w(s)) for c in range(3)]

    all_stats = [*stats, awrf_stat, gini_stat, *ee_stats]
    ests, method = bootstrap_estimates(all_stats, n_req, n_boot=n_boot, level=level, seed=seed)
    found = dict(zip(keys, ests, strict=False))
    rows = []
    for j, name in enumerate(names):
        suppressed = bool(n_items[j] < min_group_size)
        values = {} if suppressed else {f: found[(f, j)] for f in GROUP_FIELDS}
        if not suppressed and lab is None:
            values["mean_item_utility"] = None
        if not suppressed and ref is None:
            values["disparate_exposure_ratio"] = None
        rows.append(GroupExposure(name, int(n_items[j]), int(n_shown_g[j]), int(n_requests_g[j]), suppressed, **values))
    base = len(stats)
    return ExposureAudit(
        groups=tuple(rows),
        awrf=ests[base],
        gini=ests[base + 1],
        ee_l=ests[base + 2],
        ee_d=ests[base + 3],
        ee_r=ests[base + 4],
        reference_group=None if ref is None else names[ref],
        settings={
            "group_column": group_column,
            "k": k,
            "browsing": browsing,
            "patience": None if browsing == "log" else float(patience),
            "target": {n: float(t) for n, t in zip(names, declared, strict=True) if t > 0}
            if isinstance(target, Mapping) else target,
            "labels": lab is not None,
            **interval_settings(min_group_size, n_boot, level, seed, method),
        },
        counts={
            "n_requests": n_req,
            "n_samples_max": int(frame["__ns"].max()),
            "n_catalog_items": n_catalog,
            "n_items_shown": len(items_shown),
            "n_groups": n_groups,
            "n_groups_suppressed": int((n_items < min_group_size).sum()),
            "requests_awrf_undefined": int((~awrf_ok).sum()),
        },
    )


#: above this many groups the per-request group statistics are kept sparse
_DENSE_MAX_GROUPS = 16


def _n_req_w(s: np.ndarray) -> np.ndarray:
    """Weighted number of requests: the last column of the EE statistics."""
    return s[:, 3]


def _distinct_per_group(item_pos: np.ndarray, g: np.ndarray, n_groups: int) -> np.ndarray:
    first = np.unique(item_pos, return_index=True)[1]
    return np.bincount(g[first], minlength=n_groups)


def _declared_target(target: Mapping[str, float], names: list[str]) -> np.ndarray:
    known = set(names)
    unknown = [str(key) for key in target if str(key) not in known]
    if unknown:
        raise UsageError(f"target names group(s) not in the groups table: {unknown[:5]}; groups are {names[:10]}")
    try:
        values = {str(key): float(v) for key, v in target.items()}
    except (TypeError, ValueError):
        raise UsageError("target shares must be numbers") from None
    if any(not math.isfinite(v) or v < 0 for v in values.values()):
        raise UsageError("target shares must be finite and >= 0")
    total = sum(values.values())
    if abs(total - 1.0) > 1e-9:
        raise UsageError(f"declared target shares must sum to 1, got {total:.12g}")
    return np.array([values.get(n, 0.0) for n in names])


def _expected_exposure(frame: pl.DataFrame, lab: pl.DataFrame | None, browsing: str, patience: float,
                       n_req: int) -> np.ndarray:
    """Per-request [EE-L, EE-D, EE-R, 1] (Diaz et al. 2020), see docs/audits.md.

    Universe of request q: the items of its top-k lists plus its positively
    labelled items. eps_d = mean over q's samples of w(rank_d) (0 when not
    shown). Target: items sorted by grade (descending) into tiers of equal
    grade; a tier occupying positions s+1..s+c gets (W(s+c) - W(s)) / c per
    item, W(j) = sum_{i<=min(j, L_q)} w_i, L_q the longest list of q.
    """
    import polars as pl

    w_kind = "log" if browsing == "log" else "rbp"
    w = _rank_weights(frame["rank"].to_numpy(), w_kind, patience) / frame["__ns"].to_numpy()
    shown = frame.select("__q", "item_id", "gain").with_columns(__w=w).group_by("__q", "item_id", maintain_order=True).agg(
        eps=pl.col("__w").sum(), gain=pl.col("gain").first())
    cap = frame.group_by("__q", maintain_order=True).agg(cap=pl.col("rank").max())
    if lab is not None:
        rel = lab.filter(pl.col("gain") > 0).select("__q", "item_id", "gain")
        shown, rel = _harmonise(shown, rel, "item_id")
        missing = rel.join(shown, on=["__q", "item_id"], how="anti", maintain_order="left").with_columns(eps=pl.lit(0.0))
        uni = pl.concat([shown.select("__q", "item_id", "eps", "gain"), missing.select("__q", "item_id", "eps", "gain")],
                        how="vertical_relaxed")
    else:
        uni = shown.select("__q", "item_id", "eps", "gain")
    uni = uni.join(cap, on="__q", how="left", maintain_order="left").with_columns(
        start=(pl.col("gain").rank("min", descending=True).over("__q") - 1).cast(pl.Int64),
        size=pl.len().over("__q", "gain").cast(pl.Int64),
    )
    cap_q = uni["cap"].to_numpy().astype(np.int64)
    start = uni["start"].to_numpy()
    size = uni["size"].to_numpy()
    n_max = int(cap_q.max())
    cum = np.concatenate([[0.0], np.cumsum(_position_weights(w_kind, patience, n_max))])
    star = (cum[np.minimum(start + size, cap_q)] - cum[np.minimum(start, cap_q)]) / size
    eps = uni["eps"].to_numpy()
    qq = uni["__q"].to_numpy()
    out = np.empty((n_req, 4))
    out[:, 0] = np.bincount(qq, weights=(eps - star) ** 2, minlength=n_req)
    out[:, 1] = np.bincount(qq, weights=eps * eps, minlength=n_req)
    out[:, 2] = np.bincount(qq, weights=eps * star, minlength=n_req)
    out[:, 3] = 1.0
    return out


def _rank_weights(rank: np.ndarray, kind: str, patience: float) -> np.ndarray:
    rank = rank.astype(np.float64)
    return 1.0 / np.log2(1.0 + rank) if kind == "log" else float(patience) ** (rank - 1.0)
