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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from receval.audits._result import (
    MISSING_GROUP,
    Background,
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
    from receval.audits._rank import repeats_within_blocks

    # linear-time check by item hashes within (request, sample) blocks; the exact count when it may fail
    if repeats_within_blocks(frame, ("request_id", "sample_id")) is not False and (
            dup := frame.select(pl.struct("request_id", "sample_id", "item_id").is_duplicated()).to_series()).any():
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
    # items in id order: the sums over items (Gini, shares) then do not depend on the table's row order,
    # which a Spark DataFrame does not have
    return frame.sort("item_id")


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


def _kernels(n_rows: int, *, loaded_ok: bool = True) -> Any:
    from receval.audits._rank import _kernels

    return _kernels(n_rows, loaded_ok=loaded_ok)


def _request_groups(q: np.ndarray, g: np.ndarray, val: np.ndarray, n_req: int, n_groups: int) -> Any:
    """Exposure per request and group (scipy CSR, duplicates summed)."""
    import scipy.sparse as sp

    a_csr = sp.csr_matrix((val, (q, g)), shape=(n_req, n_groups))
    a_csr.sum_duplicates()
    return a_csr


def _awrf(a_csr: Any, r_csr: Any, fixed_target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per request: 1 - JSD(exposure distribution over groups, target), and whether it is defined.

    The same numbers as ``_jsd_bits`` on the dense request x group rows, from the
    groups a request shows (and, under merit, the groups of its relevant
    items) only: a group with p = 0 < t contributes t log2(t / (t/2)) = t to the
    divergence, so the groups a request does not show add up to the target mass
    it leaves out. ``r_csr`` (merit): relevance per request and group, the
    target; else the fixed target shares.
    """
    n_req, n_groups = a_csr.shape
    row_att = np.bincount(np.repeat(np.arange(n_req), np.diff(a_csr.indptr)), weights=a_csr.data, minlength=n_req)
    if r_csr is None:
        ok = row_att > 0
        rows = np.repeat(np.arange(n_req), np.diff(a_csr.indptr))
        cols = a_csr.indices
        a = a_csr.data
        t = np.asarray(fixed_target, dtype=np.float64)[cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = a / row_att[rows]
        t_left = float(np.asarray(fixed_target, dtype=np.float64).sum()) - np.bincount(rows, weights=t, minlength=n_req)
    else:
        # entries on the union of the groups shown and the groups relevant, per request
        ra = np.repeat(np.arange(n_req), np.diff(a_csr.indptr))
        rr = np.repeat(np.arange(n_req), np.diff(r_csr.indptr))
        key = np.concatenate([ra * n_groups + a_csr.indices, rr * n_groups + r_csr.indices])
        cells, inv = np.unique(key, return_inverse=True)
        a = np.bincount(inv.ravel(), weights=np.concatenate([a_csr.data, np.zeros(len(rr))]), minlength=len(cells))
        r = np.bincount(inv.ravel(), weights=np.concatenate([np.zeros(len(ra)), r_csr.data]), minlength=len(cells))
        rows = cells // n_groups
        row_rel = np.bincount(rr, weights=r_csr.data, minlength=n_req)
        ok = (row_att > 0) & (row_rel > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = a / row_att[rows]
            t = r / row_rel[rows]
        t_left = np.zeros(n_req)  # every group with t > 0 is an entry
    keep = ok[rows]
    p = np.where(keep, p, 0.0)
    t = np.where(keep, t, 0.0)
    m = 0.5 * (p + t)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log2(p / m), 0.0)
        kq = np.where(t > 0, t * np.log2(t / m), 0.0)
    jsd = np.clip(0.5 * (np.bincount(rows, weights=kp + kq, minlength=n_req) + np.where(ok, t_left, 0.0)), 0.0, 1.0)
    return np.where(ok, 1.0 - jsd, 0.0), ok


def _column_runs(q: np.ndarray, item_pos: np.ndarray, g: np.ndarray, val: np.ndarray, rank: np.ndarray | None,
                 cat_g: np.ndarray, rel: tuple[np.ndarray, np.ndarray, np.ndarray] | None, n_groups: int,
                 dense: Callable[[], np.ndarray], n_req: int, item_rows: np.ndarray) -> tuple[Any, tuple]:
    """The exposure audit's statistics as one ColumnRuns matrix, and how to read its column sums.

    Columns: one per item shown (its exposure, items ordered by group, so that A
    is a sum over consecutive columns), then R per group (with labels), the
    dense per-request columns (AWRF numerator and indicator, EE-L, EE-D, EE-R)
    and ones. Entries of an item column are stored by value (``rank`` given:
    the value is a function of the rank), units ascending within a value: the
    fused kernel adds a run's weights as integers. ``dense``: a function returning
    the (requests x 5) per-request columns, called once the item columns are placed
    (they may still be computed on another thread). ``item_rows``: the rows of each
    catalog item, np.bincount(item_pos, minlength=len(cat_g)).
    """
    from receval.audits._rank import stable_order
    from receval.stats.bootstrap import ColumnRuns

    shown = np.flatnonzero(item_rows)
    by_group = shown[np.argsort(cat_g[shown], kind="stable")]
    n_shown = len(shown)
    col_of_pos = np.full(len(cat_g), -1, dtype=np.int64)
    col_of_pos[by_group] = np.arange(n_shown)
    col = col_of_pos[item_pos]
    if rank is not None:
        vid, n_vid = rank - 1, int(rank.max())
    else:
        _, vid = np.unique(val, return_inverse=True)
        vid = vid.ravel()
        n_vid = int(vid.max()) + 1
    # rows are in request order: a stable sort by (column, value) leaves units ascending within a run
    key = col * n_vid + vid
    n_keys = n_shown * n_vid
    k = 5  # dense columns
    n_rel = len(rel[0]) if rel is not None else 0
    n_item_entries = len(key)
    total = n_item_entries + n_rel + (k + 1) * n_req
    rows = np.empty(total, dtype=np.int32 if n_req < 2**31 else np.int64)
    data = np.empty(total)
    kern = _kernels(len(key))  # as stable_order: the counting sort when the helpers are loaded
    if kern is not None and n_keys <= 4 * len(key) + (1 << 20):
        # the counting sort places the rows' units and values directly (stable_order, then two gathers)
        key_counts = kern.counting_scatter(key, n_keys, q, val, rows[:n_item_entries], data[:n_item_entries])
        counts = [key_counts.reshape(n_shown, n_vid).sum(axis=1)]
    else:
        order = stable_order(key, n_keys)
        np.take(q, order, out=rows[:n_item_entries])
        np.take(val, order, out=data[:n_item_entries])
        counts = [np.bincount(col, minlength=n_shown)]
    at = n_item_entries
    if rel is not None:
        r_q, r_g, r_v = rel
        o = np.lexsort((r_q, r_v, r_g))
        rows[at : at + n_rel] = r_q[o]
        data[at : at + n_rel] = r_v[o]
        counts.append(np.bincount(r_g, minlength=n_groups))
        at += n_rel
    unit = np.arange(n_req)
    dense = dense()
    if dense.shape != (n_req, k):  # pragma: no cover - caller and layout out of sync
        raise ValueError(f"dense columns of shape {dense.shape}, expected {(n_req, k)}")
    for j in range(k + 1):
        rows[at : at + n_req] = unit
        data[at : at + n_req] = dense[:, j] if j < k else 1.0
        at += n_req
    counts.append(np.full(k + 1, n_req))
    colptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    # column sums: the items' from the rows as they are (no gather), the others from their entries
    dense_at = n_item_entries + n_rel
    sums = np.concatenate([
        np.bincount(col, weights=val, minlength=n_shown),
        np.bincount(rel[1], weights=rel[2], minlength=n_groups) if rel is not None else np.zeros(0),
        np.add.reduceat(data[dense_at:], np.arange(0, (k + 1) * n_req, n_req)),
    ])
    mat = ColumnRuns(colptr, rows, data, n_req, column_sums=sums)

    g_cols = cat_g[by_group]
    present = np.unique(g_cols)
    starts = np.searchsorted(g_cols, present)
    r0 = n_shown
    d0 = r0 + (n_groups if rel is not None else 0)

    def to_groups(s: np.ndarray) -> np.ndarray:
        """[A | R | 1] from the column sums."""
        s = np.asarray(s, dtype=np.float64)
        out = np.zeros((s.shape[0], 2 * n_groups + 1))
        if n_shown:
            out[:, present] = np.add.reduceat(s[:, :n_shown], starts, axis=1)
        if rel is not None:
            out[:, n_groups : 2 * n_groups] = s[:, r0:d0]
        out[:, 2 * n_groups] = s[:, d0 + k]
        return out

    return mat, (to_groups, slice(0, n_shown), (d0, d0 + 1), (d0 + 2, d0 + 3, d0 + 4), d0 + k)


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
    engine: str = "auto",
) -> ExposureAudit:
    """Exposure fairness audit of the groups of ``groups`` in the rankings of ``run``.

    Parameters
    ----------
    run : a frame (polars, pandas, arrow, path) with request_id, item_id, score
        and optionally ``sample_id`` (several sampled rankings of a stochastic
        policy per request), or a list of such frames, one per sample; or a
        :class:`~receval.audits.PreparedRun` (``receval.audits.prepare``: checked
        and ranked once for several audits, the same result).
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
    engine : ``"auto"`` (Spark when an input is a PySpark DataFrame), ``"polars"``
        or ``"spark"`` (a path is then read by Spark). On Spark the run is
        checked and ranked on the executors and only its top-``k`` rows reach
        the driver (the request x item exposure matrix the Gini and the
        intervals read); the groups and labels tables are collected. Same
        result as locally.

    Raises
    ------
    UsageError : bad arguments (browsing model, target, ...).
    InputError : bad data, e.g. run items missing from the groups table.
    """
    import polars as pl
    import scipy.sparse as sp

    from receval.audits._prepared import PreparedRun
    from receval.audits._rank import item_positions, rank_rows
    from receval.metrics.beyond import gini_of_rows
    from receval.stats.bootstrap import _check

    _check_args(browsing, patience, k, target, min_group_size, n_boot, level, labels)
    if not isinstance(run, PreparedRun):
        from receval.engines.spark_audits import audit_engine

        runs = run if isinstance(run, list | tuple) else [run]
        if audit_engine(engine, *runs, groups, labels, audit="exposure_audit") == "spark":
            from receval.engines.spark_audits import exposure_inputs_spark

            run, groups, labels = exposure_inputs_spark(run, groups, labels, k=k, group_column=group_column)
    prepared = run if isinstance(run, PreparedRun) else None
    frame = _run_frame(run) if prepared is None else None
    cat = _groups_frame(groups, group_column)
    lab = _labels_frame(labels) if labels is not None else None

    # ---- catalog: group codes in name order, item positions
    names = sorted(cat["group"].unique().to_list())
    n_groups = len(names)
    code_of = pl.DataFrame({"group": names, "__g": np.arange(n_groups, dtype=np.int64)})
    cat = cat.join(code_of, on="group", how="left", maintain_order="left").with_columns(
        __pos=pl.int_range(pl.len(), dtype=pl.Int64))
    n_catalog = cat.height
    cat_g = cat["__g"].to_numpy()
    n_items = np.bincount(cat_g, minlength=n_groups).astype(np.int64)

    if isinstance(target, Mapping):
        declared = _declared_target(target, names)

    # ---- rank: score desc, then item id text desc (byte order), per request and sample
    if prepared is None:
        frame = rank_rows(frame, k, ("request_id", "sample_id"))
    else:  # checked and ranked once by receval.audits.prepare: the same rows, cut at k
        frame = prepared.ranked(k).select("request_id", "item_id", "score", "sample_id", "rank")
    if frame.height == 0:
        raise InputError("run", [Violation("request_id", "the run must hold at least one ranked item", 0)])
    frame = frame.with_columns(__q=pl.col("request_id").rle_id().cast(pl.Int64))
    q = frame["__q"].to_numpy()
    n_req = int(q[-1]) + 1
    rank_np = frame["rank"].to_numpy()
    # samples per request: its (request, sample) blocks, each starting at rank 1
    ns_q = np.bincount(q[rank_np == 1], minlength=n_req).astype(np.float64)
    ns = ns_q[q]
    item_pos = item_positions(frame["item_id"], cat["item_id"])
    if (item_pos < 0).any():
        raise _unknown_items(frame.filter(pl.Series(item_pos < 0))["item_id"], "run")
    g = cat_g[item_pos]
    frame = frame.with_columns(__g=pl.Series(g), __pos=pl.Series(item_pos), __ns=pl.Series(ns))

    # ---- labels of the audited requests
    if lab is not None:
        q_first = np.r_[True, q[1:] != q[:-1]]
        reqs = frame.filter(pl.Series(q_first)).select("request_id", "__q")
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

    rank = rank_np.astype(np.float64)
    if browsing == "log":
        att = 1.0 / np.log2(1.0 + rank)
    else:
        att = float(patience) ** (rank - 1.0)
    by_rank = True  # attention is a function of the rank alone
    if browsing == "cascade" and lab is not None:
        gmax = float(lab["gain"].max() or 0.0)
        if gmax > 0:
            stop = (2.0 ** frame["gain"].to_numpy() - 1.0) / 2.0**gmax
            cont = pl.DataFrame({"q": frame["__q"], "s": frame["sample_id"], "c": 1.0 - stop})
            reach = cont.select(pl.col("c").shift(1, fill_value=1.0).cum_prod().over("q", "s"))["c"].to_numpy()
            att = att * reach
            by_rank = False

    val = att / ns  # a row's exposure: its attention, averaged over the request's samples
    item_rows = np.bincount(item_pos, minlength=n_catalog)  # rows showing each catalog item
    n_shown_g = _distinct_per_group(item_rows, cat_g, n_groups)
    if lab is not None:
        lq = lab.filter(pl.col("gain") > 0)
        r_q, r_g, r_v = lq["__q"].to_numpy(), lq["__g"].to_numpy(), lq["gain"].to_numpy()
    else:
        r_q = r_g = np.zeros(0, dtype=np.int64)
        r_v = np.zeros(0)
    r_csr = sp.csr_matrix((r_v, (r_q, r_g)), shape=(n_req, n_groups))
    r_csr.sum_duplicates()

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
    basis = np.bincount(r_g, weights=r_v, minlength=n_groups) if merit else np.bincount(g, weights=val, minlength=n_groups)
    eligible = ok_groups[basis[ok_groups] > 0]
    ref = int(eligible[np.argmax(n_items[eligible])]) if len(eligible) else None

    # ---- per (request, group) exposure, sparse (a request touches at most k groups), and AWRF
    # (the compiled pass by size alone, so that an input always takes the same path: its
    # logarithms and additions differ from numpy's in the last bits)
    # ---- and expected exposure. Compiled: on a thread of its own while this one builds the
    # statistics matrix below (``per_request.result()``: the EE columns, once AWRF is written)
    kern = _kernels(len(q), loaded_ok=False)
    a_csr = None

    def expected() -> np.ndarray:
        return _expected_exposure(frame, lab, browsing, patience, n_req, w=val if by_rank else None)

    if kern is not None and not merit:  # one compiled pass over each request's rows
        q_starts = np.r_[np.flatnonzero(np.r_[True, q[1:] != q[:-1]]), len(q)]
        awrf_q, awrf_ok = np.empty(n_req), np.empty(n_req, dtype=bool)
        n_requests_g = np.zeros(n_groups, dtype=np.int64)

        def awrf_and_ee() -> np.ndarray:
            kern.exposure_per_request(q_starts, g, val, np.asarray(fixed_target, dtype=np.float64), n_groups,
                                      awrf_q, awrf_ok, n_requests_g)
            return expected()

        per_request = Background().start(awrf_and_ee)
    else:
        a_csr = _request_groups(q, g, val, n_req, n_groups)
        n_requests_g = np.bincount(a_csr.indices, minlength=n_groups)
        awrf_q, awrf_ok = _awrf(a_csr, r_csr if merit else None, fixed_target)
        per_request = Background.done(expected())

    # ---- statistics. Group quantities are functions of the column sums of [A | R | 1]
    # (A, R: exposure, relevance per request and group); the Gini reads the column
    # sums of the request x item exposure matrix.
    n_shown = int(n_shown_g.sum())
    columns = (2 * n_groups + 1) + 2 + n_shown + 4  # the widths bootstrap_replicates counts
    fused = _FUSED_COLUMN_RUNS and n_boot > 0 and _check(n_boot, 0.5, "auto", n_req, columns) == "poisson-fused"

    memo: list[Any] = [None, None]  # (sums array, its parts): every group stat reads the same block

    def parts(s: np.ndarray) -> dict[str, np.ndarray]:
        if memo[0] is s:
            return memo[1]
        memo[1] = _parts(to_groups(s))
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

    def dense_columns() -> np.ndarray:
        ee_ = per_request.result()  # waits for AWRF and EE
        return np.column_stack([awrf_q, awrf_ok, ee_[:, :3]])

    if fused:
        # one statistics matrix for everything, summed in one pass of the CSC kernel: the
        # items' exposures (A is their sum per group), R, AWRF, EE and a column of ones
        container, layout = _column_runs(q, item_pos, g, val, rank_np if by_rank and ns_q.max() == 1 else None,
                                         cat_g, (r_q, r_g, r_v) if lab is not None else None, n_groups,
                                         dense_columns, n_req, item_rows)
        m_stats = gini_src = awrf_src = ee_src = container
        to_groups, gini_cols, awrf_cols, ee_cols, ones_col = layout
    else:
        ones = np.ones((n_req, 1))
        if a_csr is None:
            a_csr = _request_groups(q, g, val, n_req, n_groups)
        if n_groups > _DENSE_MAX_GROUPS:
            # a request touches at most k groups: with many groups (providers) the
            # request x group matrix is mostly zeros and the bootstrap product costs
            # O(n_boot x nonzeros) in sparse form instead of O(n_boot x requests x groups)
            m_stats = sp.hstack([a_csr, r_csr, sp.csr_matrix(ones)], format="csr")
        else:
            m_stats = np.hstack([a_csr.toarray(), r_csr.toarray(), ones])
        col_of_pos = np.cumsum(item_rows > 0) - 1  # items shown, in catalog order
        gini_src = sp.csr_matrix((val, (q, col_of_pos[item_pos])), shape=(n_req, n_shown))
        gini_src.sum_duplicates()
        ee_src = per_request.result()  # AWRF is written too
        awrf_src = np.column_stack([awrf_q, awrf_ok.astype(np.float64)])

        def to_groups(s: np.ndarray) -> np.ndarray:
            return s

        gini_cols, awrf_cols, ee_cols, ones_col = slice(None), (0, 1), (0, 1, 2), 3

    per_request.join()  # AWRF and the requests per group are written
    stats: list[_Stat] = []
    keys: list[tuple[str, int]] = []
    for name in GROUP_FIELDS:
        for j in ok_groups:
            stats.append(_Stat(m_stats, lambda s, name=name, j=j: parts(s)[name][:, j]))
            keys.append((name, int(j)))
    awrf_stat = _Stat(awrf_src, lambda s: s[:, awrf_cols[0]] / s[:, awrf_cols[1]])
    gini_stat = _Stat(gini_src, lambda s: gini_of_rows(np.asarray(s)[:, gini_cols], n_catalog), recentre=True)
    ee_stats = [_Stat(ee_src, lambda s, c=c: s[:, ee_cols[c]] / s[:, ones_col]) for c in range(3)]

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
            "n_samples_max": int(ns_q.max()),
            "n_catalog_items": n_catalog,
            "n_items_shown": n_shown,
            "n_groups": n_groups,
            "n_groups_suppressed": int((n_items < min_group_size).sum()),
            "requests_awrf_undefined": int((~awrf_ok).sum()),
        },
    )


#: above this many groups the per-request group statistics are kept sparse
_DENSE_MAX_GROUPS = 16
#: under the fused scheme, sum one ColumnRuns matrix (False: the scipy matrices of the other schemes)
_FUSED_COLUMN_RUNS = True


def _n_req_w(s: np.ndarray) -> np.ndarray:
    """Weighted number of requests: the last column of the EE statistics."""
    return s[:, 3]


def _distinct_per_group(item_rows: np.ndarray, cat_g: np.ndarray, n_groups: int) -> np.ndarray:
    """Catalog items of each group shown at least once (``item_rows``: the rows showing each catalog item)."""
    return np.bincount(cat_g[item_rows > 0], minlength=n_groups)


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
                       n_req: int, w: np.ndarray | None = None) -> np.ndarray:
    """Per-request [EE-L, EE-D, EE-R, 1] (Diaz et al. 2020), see docs/audits.md.

    Universe of request q: the items of its top-k lists plus its positively
    labelled items. eps_d = mean over q's samples of w(rank_d) (0 when not
    shown). Target: items sorted by grade (descending) into tiers of equal
    grade; a tier occupying positions s+1..s+c gets (W(s+c) - W(s)) / c per
    item, W(j) = sum_{i<=min(j, L_q)} w_i, L_q the longest list of q.
    ``w``: the rows' w(rank_d) / (samples of q) when the caller has them (the
    audit's row exposure when attention is a function of the rank alone: the
    same numbers), else computed here.
    """
    import polars as pl

    w_kind = "log" if browsing == "log" else "rbp"
    rank = frame["rank"].to_numpy()
    ns = frame["__ns"].to_numpy()
    if w is None:
        w = _rank_weights(rank, w_kind, patience) / ns
    q = frame["__q"].to_numpy()
    q_starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])  # rows are grouped by request, every request has rows
    cap_q = np.maximum.reduceat(rank, q_starts)
    if lab is None and ns.max() == 1:
        # one list per request, no labels: each row is an item of the universe (items are distinct
        # within a list), all of grade 0, so one tier of L_q items: the rows of the request
        kern = _kernels(len(q))  # the same arithmetic as below, in the same order
        if kern is not None:
            cum = np.concatenate([[0.0], np.cumsum(_position_weights(w_kind, patience, int(cap_q.max())))])
            out = np.empty((n_req, 4))
            kern.expected_exposure_lists(np.r_[q_starts, len(q)], w, rank, cum, out)
            return out
        size = np.diff(np.r_[q_starts, len(q)])[q]
        cap = cap_q[q]
        cum = np.concatenate([[0.0], np.cumsum(_position_weights(w_kind, patience, int(cap_q.max())))])
        star = (cum[np.minimum(size, cap)] - cum[np.minimum(0, cap)]) / size
        return _ee_sums(q, w, star, n_req)
    if ns.max() == 1:  # (request, item) pairs are distinct: nothing to add up
        shown = frame.select("__q", "item_id", "gain").with_columns(eps=w)
    else:
        shown = frame.select("__q", "item_id", "gain").with_columns(__w=w).group_by(
            "__q", "item_id", maintain_order=True).agg(eps=pl.col("__w").sum(), gain=pl.col("gain").first())
    cap = pl.DataFrame({"__q": q[q_starts], "cap": cap_q})
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
    return _ee_sums(uni["__q"].to_numpy(), uni["eps"].to_numpy(), star, n_req)


def _ee_sums(qq: np.ndarray, eps: np.ndarray, star: np.ndarray, n_req: int) -> np.ndarray:
    out = np.empty((n_req, 4))
    out[:, 0] = np.bincount(qq, weights=(eps - star) ** 2, minlength=n_req)
    out[:, 1] = np.bincount(qq, weights=eps * eps, minlength=n_req)
    out[:, 2] = np.bincount(qq, weights=eps * star, minlength=n_req)
    out[:, 3] = 1.0
    return out


def _rank_weights(rank: np.ndarray, kind: str, patience: float) -> np.ndarray:
    rank = rank.astype(np.float64)
    return 1.0 / np.log2(1.0 + rank) if kind == "log" else float(patience) ** (rank - 1.0)
