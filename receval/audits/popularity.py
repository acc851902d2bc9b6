"""Popularity bias of the top-k lists of a run.

``popularity_bias_audit(run, catalog, ...)`` measures how much a run favours
popular items (phi(i) = the catalog's popularity column, e.g. interaction
counts; the long tail Gamma = items with phi(i) <= the ``tail_quantile``
quantile of catalog popularity, as receval's ``long_tail_share`` metric):

* **ARP** = mean over requests of the mean popularity of the list;
* **APLT** = mean over requests of the share of long-tail items of the list;
* **ACLT** = mean over requests of the number of long-tail items of the list;
* **PopRSP** (statistical parity of the recommendation rate of the short head
  and the long tail) and, with labels, **PopREO** (equal opportunity: the
  same on relevant items), std_g / mean_g over g in {head, tail}.

Overall and per user group (requests keyed by ``request_id`` or ``user_id``),
with percentile bootstrap intervals over requests (``receval.stats.bootstrap``):
every quantity is a function of column sums of a per-request matrix. PopRSP
and PopREO are bootstrapped signed and folded (``_result.fold_interval``).

With ``history`` (user_id, item_id), ``audit.lift`` holds the **popularity
lift** of Abdollahpouri et al. 2019 per user: GAP_p(u) = mean popularity of
the user's history items, GAP_r(u) = of their recommended top-k items, and
Delta GAP = (mean GAP_r - mean GAP_p) / mean GAP_p over all users, the
niche / diverse / blockbuster profile groups and the declared user groups,
with intervals over users. ``exclude_history=True`` leaves each user's history
out of the recommendation rates (Zhu et al.'s convention).

Formulas and conventions: docs/audits.md, "Popularity bias".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from receval.audits._result import (  # noqa: F401  (Estimate, _Stat, _Audit, AuditRow: re-exported from here)
    ALL_GROUP,
    MISSING_GROUP,
    USER_ROW_HEAD,
    AuditRow,
    Background,
    Estimate,
    UserRow,
    _Audit,
    _num,
    _Stat,
    check_interval_args,
    check_k,
    find_group,
    group_rows,
    interval_settings,
    rows_frame,
)
from receval.audits.exposure import _harmonise, _labels_frame, _require, _run_frame
from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = ["ALL_GROUP", "AuditRow", "LIFT_FIELDS", "PROFILE_GROUPS", "PopularityAudit", "PopularityLift",
           "popularity_bias_audit", "POPULARITY_FIELDS"]

#: the quantities of a row, in output order
POPULARITY_FIELDS = (
    "arp",
    "aplt",
    "aclt",
    "rec_rate_head",
    "rec_rate_tail",
    "pop_rsp",
    "rel_rec_rate_head",
    "rel_rec_rate_tail",
    "pop_reo",
)
#: the quantities of a popularity-lift row, in output order
LIFT_FIELDS = ("gap_profile", "gap_recommended", "delta_gap")
#: profile groups by the share of short-head items in the users' history, in output order
PROFILE_GROUPS = ("niche", "diverse", "blockbuster")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PopularityLift:
    """Popularity lift (Abdollahpouri et al. 2019) of :func:`popularity_bias_audit` with ``history``.

    Rows of users (:class:`UserRow`): ``overall``, ``profile_groups`` (niche,
    diverse, blockbuster) and ``groups`` (declared user groups), each with
    ``gap_profile``, ``gap_recommended`` and ``delta_gap``. Users without a
    history are counted in ``n_undefined`` and left out of the values.
    """

    overall: UserRow
    profile_groups: tuple[UserRow, ...]
    groups: tuple[UserRow, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    FIELDS: ClassVar[tuple[str, ...]] = LIFT_FIELDS

    def profile_group(self, name: str) -> UserRow:
        return find_group(self.profile_groups, name)

    def group(self, name: str) -> UserRow:
        return find_group(self.groups, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; holds no user or item id."""
        return {
            "settings": dict(self.settings),
            "counts": dict(self.counts),
            "overall": self.overall.to_dict(self.FIELDS),
            "profile_groups": [g.to_dict(self.FIELDS) for g in self.profile_groups],
            "groups": [g.to_dict(self.FIELDS) for g in self.groups],
        }

    def to_frame(self) -> pl.DataFrame:
        """One row per row: ``grouping`` ("all", "profile", "declared"), counts, ``<q>``, ``<q>_low``, ``<q>_high``."""
        rows = [{"grouping": "all", **self.overall.to_dict(self.FIELDS)}]
        rows += [{"grouping": "profile", **g.to_dict(self.FIELDS)} for g in self.profile_groups]
        rows += [{"grouping": "declared", **g.to_dict(self.FIELDS)} for g in self.groups]
        return rows_frame(rows, ("grouping", *USER_ROW_HEAD), self.FIELDS)


@dataclass(frozen=True)
class PopularityAudit(_Audit):
    """Result of :func:`popularity_bias_audit`; ``lift`` is set when a history was given."""

    FIELDS: ClassVar[tuple[str, ...]] = POPULARITY_FIELDS
    lift: PopularityLift | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; holds no request, user or item id."""
        out = super().to_dict()
        out["lift"] = None if self.lift is None else self.lift.to_dict()
        return out


# --------------------------------------------------------------------------- shared helpers


def _check_common(k: Any, min_group_size: Any, n_boot: Any, level: float, user_groups: Any,
                  group_column: Any) -> None:
    check_k(k)
    check_interval_args(min_group_size, n_boot, level)
    if user_groups is not None and not isinstance(group_column, str):
        raise UsageError("user_groups needs group_column=... (the column of user_groups holding the group)")
    if user_groups is None and group_column is not None:
        raise UsageError("group_column is given but user_groups is not")


def _ranked(run: Any, k: int | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(top-k rows with request_id, item_id, rank, __q; one row per request with request_id, __q[, user_id]).

    Order: score descending, ties by item id text descending (as exposure_audit).
    """
    import polars as pl

    from receval.audits._prepared import PreparedRun
    from receval.audits._rank import rank_rows
    from receval.data.readers import to_polars

    if isinstance(run, PreparedRun):
        if run.sampled:  # read as this audit reads a run (a list refused, ranked by request alone)
            return _ranked(run.source, k)
        frame = run.ranked(k)  # the rows rank_rows gives below: sample_id is the constant 0
    else:
        if isinstance(run, list | tuple):
            raise UsageError("run: one run frame expected (sampled rankings are for exposure_audit)")
        raw = to_polars(run, kind="run", columns=["request_id", "item_id", "score", "user_id"])
        frame = _run_frame(raw.select([c for c in raw.columns if c != "user_id"]))
        if "user_id" in raw.columns:
            frame = frame.with_columns(user_id=raw["user_id"])
        frame = rank_rows(frame, k, ("request_id",))
    if frame.height == 0:
        raise InputError("run", [Violation("request_id", "the run must hold at least one ranked item", 0)])
    frame = frame.with_columns(__q=pl.col("request_id").rle_id().cast(pl.Int64))
    q = frame["__q"].to_numpy()
    first = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])  # each request's first row (rows are grouped)
    req_cols = ["request_id", "__q"]
    if "user_id" in frame.columns:
        user = frame["user_id"]
        # a request's rows all name its first row's user (nulls equal), else count the offenders
        head = user.gather(np.repeat(first, np.diff(np.r_[first, len(q)])))
        same = (user == head) | (user.is_null() & head.is_null())
        if not same.fill_null(False).all():
            users = frame.select("__q", "user_id").unique()
            bad = users["__q"].is_duplicated()
            raise InputError("run", [Violation("user_id", "one user per request", int(bad.sum()),
                                               hint="a request belongs to a single user")])
        req_cols.append("user_id")
    requests = frame.select(req_cols)[first]
    return frame.select("request_id", "item_id", "rank", "__q"), requests


def _user_group_codes(requests: pl.DataFrame, user_groups: Any, group_column: str | None) -> tuple[np.ndarray, list[str]]:
    """Group code of every request (by __q) and the group names (sorted, '(missing)' included when used)."""
    import polars as pl

    from receval.data.readers import to_polars

    n_req = requests.height
    if user_groups is None:
        return np.zeros(n_req, dtype=np.int64), []
    assert group_column is not None
    table = to_polars(user_groups, kind="attributes", name="user_groups",
                      columns=["request_id", "user_id", group_column])
    if group_column not in table.columns:
        raise InputError("user_groups", [Violation(group_column, "required column is missing", table.height, (),
                                                   f"available columns are {table.columns[:12]}")])
    if "request_id" in table.columns:
        key = "request_id"
    elif "user_id" in table.columns:
        key = "user_id"
        if "user_id" not in requests.columns:
            raise InputError("run", [Violation("user_id", "required column is missing", 0, (),
                                               "user_groups is keyed by user_id: give the run a user_id column "
                                               "or key user_groups by request_id")])
    else:
        raise InputError("user_groups", [Violation("request_id", "required column is missing", table.height, (),
                                                   "user_groups is keyed by request_id or user_id")])
    table = table.select(key, pl.col(group_column).cast(pl.String).alias("__group"))
    violations = []
    if table[key].null_count():
        violations.append(Violation(key, "must not be null", table[key].null_count()))
    dup = table[key].drop_nulls().is_duplicated()
    if dup.any():
        violations.append(Violation(key, "one group per key", int(dup.sum()), hint=f"one row per {key} in user_groups"))
    if violations:
        raise InputError("user_groups", violations)
    from receval.audits._rank import item_positions

    # requests are in __q order: each request's row of the table (keys are unique there), or none
    if table.height and requests.height:
        row = item_positions(requests[key], table[key])
        labels = table["__group"].gather(np.where(row >= 0, row, 0)).scatter(np.flatnonzero(row < 0), None)
    else:
        labels = pl.Series([None] * requests.height, dtype=pl.String)
    labels = labels.fill_null(MISSING_GROUP)
    names = sorted(labels.unique().to_list())
    lookup = {n: i for i, n in enumerate(names)}
    codes = labels.replace_strict(lookup, return_dtype=pl.Int64).to_numpy()
    return codes, names


def _unknown(items: pl.Series, frame: str, table: str) -> InputError:
    distinct = items.n_unique()
    return InputError(f"{frame} and {table}", [Violation(
        "item_id", f"every item must be in the {table} table", items.len(),
        tuple(repr(v) for v in items.unique(maintain_order=True).head(5).to_list()),
        f"{distinct} distinct item{'s' if distinct != 1 else ''} {'are' if distinct != 1 else 'is'} missing from "
        f"the {table} table; add {'them' if distinct != 1 else 'it'}",
    )])


def _rows(
    mat: np.ndarray,
    finishes: dict[str, Callable[[np.ndarray], np.ndarray]],
    codes: np.ndarray,
    names: list[str],
    *,
    min_group_size: int,
    n_boot: int,
    level: float,
    seed: int | None,
    fold: tuple[str, ...] = (),
) -> tuple[AuditRow, tuple[AuditRow, ...], str | None]:
    """Overall row and one row per user group (request-level bootstrap): see ``_result.group_rows``."""
    return group_rows(mat, finishes, codes, names, min_group_size=min_group_size, n_boot=n_boot, level=level,
                      seed=seed, fold=fold)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _signed_rsp(p_head: np.ndarray, p_tail: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b): PopRSP / PopREO before the fold, a smooth ratio of means.

    For two rates, std / mean (population std) is |a - b| / (a + b); NaN when
    both are 0 or undefined.

    Bootstrapped signed and folded afterwards (``_result.fold_interval``), so the
    interval of PopRSP reaches 0 near parity instead of lying above the estimate.
    """
    return _ratio(p_head - p_tail, p_head + p_tail)


# --------------------------------------------------------------------------- audit


def _catalog_popularity(catalog: Any, popularity: str) -> pl.DataFrame:
    import polars as pl

    from receval.data.readers import to_polars

    cat = to_polars(catalog, kind="catalog", columns=["item_id", popularity])
    _require(cat, "catalog", ["item_id", popularity],
             f"the catalog maps item_id to item popularity (popularity={popularity!r}, e.g. interaction counts)")
    cat = cat.select("item_id", pl.col(popularity).alias("__pop"))
    s = cat["__pop"]
    violations = []
    if cat["item_id"].null_count():
        violations.append(Violation("item_id", "must not be null", cat["item_id"].null_count()))
    dup = cat["item_id"].is_duplicated()
    if dup.any():
        violations.append(Violation("item_id", "one row per item", int(dup.sum())))
    if cat.height == 0:
        violations.append(Violation("item_id", "the catalog must hold at least one item", 0))
    if not (s.dtype.is_numeric() and s.dtype != pl.Boolean):
        violations.append(Violation(popularity, "must be numeric", s.len(), (f"dtype {s.dtype}",)))
    else:
        if s.null_count():
            violations.append(Violation(popularity, "must not be null", s.null_count(),
                                        tuple(repr(v) for v in cat.filter(s.is_null())["item_id"].head(3).to_list()),
                                        "give every catalog item a popularity (0 if never interacted with)"))
        x = s.cast(pl.Float64)
        bad = (~x.is_finite() | (x < 0)).fill_null(False)
        if bad.any():
            violations.append(Violation(popularity, "must be finite and >= 0", int(bad.sum()),
                                        tuple(repr(v) for v in cat.filter(bad)["item_id"].head(3).to_list())))
    if violations:
        raise InputError("catalog", violations)
    return cat.with_columns(pl.col("__pop").cast(pl.Float64))


def _head_and_tail(cat: Any, tail_quantile: float) -> tuple[Any, float, int, int]:
    """The catalog with ``__tail`` (popularity <= its ``tail_quantile`` quantile), that threshold, and the numbers
    of short-head and long-tail items. Shared by the Spark engine."""
    import polars as pl

    threshold = float(np.quantile(cat["__pop"].to_numpy(), float(tail_quantile)))
    cat = cat.with_columns(__tail=pl.col("__pop") <= threshold)
    n_tail = int(cat["__tail"].sum())
    return cat, threshold, cat.height - n_tail, n_tail


def popularity_bias_audit(
    run: Any,
    catalog: Any,
    *,
    k: int | None = 10,
    popularity: str = "popularity",
    tail_quantile: float = 0.8,
    labels: Any = None,
    user_groups: Any = None,
    group_column: str | None = None,
    history: Any = None,
    exclude_history: bool = False,
    profile_cuts: tuple[float, float] = (0.2, 0.8),
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 20,
    engine: str = "auto",
) -> PopularityAudit:
    """Popularity bias of the top-k lists of ``run`` (see the module doc and docs/audits.md).

    Parameters
    ----------
    run : request_id, item_id, score (optional user_id; required with
        ``history``); ranked by score descending, ties by item id text descending.
        Or a :class:`~receval.audits.PreparedRun` (``receval.audits.prepare``).
    catalog : item_id and the ``popularity`` column (numeric, >= 0, no nulls).
    tail_quantile : long tail = items with popularity <= this quantile of the
        catalog's popularity (numpy linear quantile); the rest is the short head.
    labels : request_id, item_id, label; label > 0 is relevant (PopREO).
    user_groups : table keyed by request_id (or user_id, then the run needs a
        user_id column) with ``group_column``; requests without a row or with a
        null group form the ``"(missing)"`` group.
    history : user_id, item_id: the users' past interactions (repeated pairs
        count once). Adds ``audit.lift``: the popularity lift (GAP, Abdollahpouri
        et al. 2019) per user, overall, per profile group (niche / diverse /
        blockbuster) and per declared user group.
    exclude_history : leave each user's history items out of the
        recommendation rates (numerators and denominators of PopRSP / PopREO),
        as Zhu et al.; needs ``history``.
    profile_cuts : (lo, hi) percentiles of the users' share of short-head items
        in their history: below lo niche, from hi on blockbuster, else diverse.
    min_group_size : user groups with fewer requests (lift: fewer users with
        a history) are listed with ``suppressed=True`` and no values.
    n_boot : bootstrap replicates (0: no intervals); requests are resampled,
        users for the lift.
    engine : ``"auto"`` (Spark when an input is a PySpark DataFrame), ``"polars"``
        or ``"spark"`` (paths read by Spark): the per-request reduce runs on
        Spark, the statistics on the driver (docs/scale.md); ``history`` is
        local only.

    Raises
    ------
    UsageError : bad arguments.  InputError : bad data, e.g. items missing from the catalog.
    """
    import polars as pl

    _check_common(k, min_group_size, n_boot, level, user_groups, group_column)
    if isinstance(tail_quantile, bool) or not isinstance(tail_quantile, int | float) or not 0.0 <= tail_quantile <= 1.0:
        raise UsageError(f"tail_quantile must lie in [0, 1], got {tail_quantile!r}")
    if not isinstance(exclude_history, bool):
        raise UsageError(f"exclude_history must be True or False, got {exclude_history!r}")
    if exclude_history and history is None:
        raise UsageError("exclude_history=True needs history=... (user_id, item_id): the items to leave out")
    from receval.audits._rank import item_positions

    cuts = _check_cuts(profile_cuts)
    from receval.engines.spark_audits import audit_engine

    if audit_engine(engine, run, catalog, labels, user_groups, history, audit="popularity_bias_audit") == "spark":
        # per-request rows on Spark, statistics here
        from receval.audits._prepared import PreparedRun
        from receval.engines.spark_audits import popularity_spark

        if isinstance(run, PreparedRun):  # Spark reads the run as given
            run = run.source
        return popularity_spark(run, catalog, k=k, popularity=popularity, tail_quantile=tail_quantile, labels=labels,
                                user_groups=user_groups, group_column=group_column, history=history, n_boot=n_boot,
                                level=level, seed=seed, min_group_size=min_group_size)
    frame, requests = _ranked(run, k)
    cat = _catalog_popularity(catalog, popularity)
    lab = _labels_frame(labels) if labels is not None else None

    cat, threshold, n_head, n_tail = _head_and_tail(cat, tail_quantile)
    pop = cat["__pop"].to_numpy()

    item_pos = item_positions(frame["item_id"], cat["item_id"])
    if (item_pos < 0).any():
        raise _unknown(frame.filter(pl.Series(item_pos < 0))["item_id"], "run", "catalog")
    frame = frame.with_columns(__pop=pl.Series(pop[item_pos]), __tail=cat["__tail"].gather(item_pos))

    n_req = requests.height
    q = frame["__q"].to_numpy()

    # ---- history: users, their distinct past items, which recommended slots repeat them
    hist = hinfo = None
    uq = np.zeros(0, dtype=np.int64)  # user code of every request
    n_users = 0
    in_hist = np.zeros(frame.height)
    h_head = h_tail = np.zeros(n_req)  # history items per request's user, head / tail
    if history is not None:
        users, uq = _run_users(requests)
        n_users = users.height
        hist, hinfo = _history_frame(history)
        hist, cj = _harmonise(hist, cat.select("item_id", "__pop", "__tail"), "item_id")
        hist = hist.join(cj, on="item_id", how="left", maintain_order="left")
        if hist["__pop"].null_count():
            raise _unknown(hist.filter(pl.col("__pop").is_null())["item_id"], "history", "catalog")
        hist = _history_of_run_users(hist, users, hinfo)
        hu = hist["__u"].to_numpy()
        htail = hist["__tail"].to_numpy().astype(np.float64)
        h_head = np.bincount(hu, weights=1.0 - htail, minlength=n_users)[uq]
        h_tail = np.bincount(hu, weights=htail, minlength=n_users)[uq]
        # recommended slots holding an item of the user's own history
        slots = frame.select("item_id").with_columns(__u=pl.Series(uq[q]))
        slots, hj = _harmonise(slots, hist.select("__u", "item_id").with_columns(__h=pl.lit(1.0)), "item_id")
        in_hist = slots.join(hj, on=["__u", "item_id"], how="left", maintain_order="left")["__h"].fill_null(0.0)
        in_hist = in_hist.to_numpy()

    # the user groups' table is read and matched on a thread while the request matrix is built; its
    # errors come after the matrix's, as when the two ran in turn
    with Background().start(_user_group_codes, requests, user_groups, group_column) as group_codes:
        mat, n_relevant, n_relevant_in_history = _request_matrix(
            frame, requests, cat, lab, n_head=n_head, n_tail=n_tail, hist=hist, uq=uq, in_hist=in_hist,
            h_head=h_head, h_tail=h_tail, exclude_history=exclude_history)
    finishes = _finishes(lab is not None)
    codes, names = group_codes.result()
    overall, groups, method = _rows(mat, finishes, codes, names, min_group_size=min_group_size,
                                    n_boot=n_boot, level=level, seed=seed, fold=("pop_rsp", "pop_reo"))
    lift = None
    if hist is not None:
        lift = _lift(mat[:, 0], uq, n_users, hist, hinfo, cuts, codes, names, group_column,
                     min_group_size=min_group_size, n_boot=n_boot, level=level, seed=seed)
    counts = {
        "n_requests": n_req,
        "n_catalog_items": cat.height,
        "n_head_items": n_head,
        "n_tail_items": n_tail,
        "tail_threshold": _num(threshold),
        "n_relevant": n_relevant,
        "n_groups": len(names),
        "n_groups_suppressed": sum(g.suppressed for g in groups),
    }
    if hist is not None:
        counts["n_recommended_in_history"] = int(in_hist.sum())
        counts["n_relevant_in_history"] = n_relevant_in_history
    return PopularityAudit(
        overall=overall,
        groups=groups,
        settings={
            "k": k,
            "popularity": popularity,
            "tail_quantile": float(tail_quantile),
            "labels": lab is not None,
            "group_column": group_column,
            "history": hist is not None,
            "exclude_history": exclude_history,
            **interval_settings(min_group_size, n_boot, level, seed, method),
        },
        counts=counts,
        lift=lift,
    )


def _request_matrix(frame: pl.DataFrame, requests: pl.DataFrame, cat: pl.DataFrame, lab: pl.DataFrame | None, *,
                    n_head: int, n_tail: int, hist: pl.DataFrame | None = None, uq: np.ndarray | None = None,
                    in_hist: np.ndarray | None = None, h_head: Any = 0.0, h_tail: Any = 0.0,
                    exclude_history: bool = False) -> tuple[np.ndarray, int, int]:
    """The per-request matrix (one row per request, in ``__q`` order) whose column sums give every quantity
    (``_finishes``), the relevant labels used and those in the users' history. ``frame``: the ranked top-k
    rows with ``__q``, ``__pop``, ``__tail``; ``cat``: item_id, ``__tail``. Shared by the Spark engine
    (receval/engines/spark_audits.py), which calls it on request-complete chunks."""
    import polars as pl

    n_req = requests.height
    q = frame["__q"].to_numpy()
    tail = frame["__tail"].to_numpy().astype(np.float64)
    if in_hist is None:
        in_hist = np.zeros(frame.height)
    length = np.bincount(q, minlength=n_req).astype(np.float64)
    n_tail_q = np.bincount(q, weights=tail, minlength=n_req)
    mat = np.zeros((n_req, 12))
    mat[:, 0] = np.bincount(q, weights=frame["__pop"].to_numpy(), minlength=n_req) / length  # ARP_q
    mat[:, 1] = n_tail_q / length  # APLT_q
    mat[:, 2] = n_tail_q  # ACLT_q
    mat[:, 3] = 1.0
    if exclude_history:
        keep = 1.0 - in_hist
        mat[:, 4] = np.bincount(q, weights=(1.0 - tail) * keep, minlength=n_req)  # head items recommended
        mat[:, 5] = np.bincount(q, weights=tail * keep, minlength=n_req)  # tail items recommended
    else:  # counts of 0/1 values: exact either way
        mat[:, 4] = length - n_tail_q
        mat[:, 5] = n_tail_q
    # items each request could be recommended: the group, less the user's history when excluded
    mat[:, 10] = n_head - (h_head if exclude_history else 0.0)
    mat[:, 11] = n_tail - (h_tail if exclude_history else 0.0)
    n_relevant = n_relevant_in_history = 0
    if lab is not None:
        reqs, lb = _harmonise(requests.select("request_id", "__q"), lab.filter(pl.col("label") > 0), "request_id")
        rel = lb.join(reqs, on="request_id", how="inner", maintain_order="left")
        rel, cj = _harmonise(rel, cat.select("item_id", "__tail"), "item_id")
        rel = rel.join(cj, on="item_id", how="left", maintain_order="left")
        if rel["__tail"].null_count():
            raise _unknown(rel.filter(pl.col("__tail").is_null())["item_id"], "labels", "catalog")
        if hist is not None:
            rel = rel.with_columns(__u=pl.Series(uq[rel["__q"].to_numpy()]))
            rel, hj = _harmonise(rel, hist.select("__u", "item_id").with_columns(__h=pl.lit(True)), "item_id")
            rel = rel.join(hj, on=["__u", "item_id"], how="left", maintain_order="left").with_columns(
                pl.col("__h").fill_null(False))
            n_relevant_in_history = int(rel["__h"].sum())
            if exclude_history:
                rel = rel.filter(~pl.col("__h"))
        n_relevant = rel.height
        rq = rel["__q"].to_numpy()
        rt = rel["__tail"].to_numpy().astype(np.float64)
        mat[:, 8] = np.bincount(rq, weights=1.0 - rt, minlength=n_req)
        mat[:, 9] = np.bincount(rq, weights=rt, minlength=n_req)
        fr, rj = _harmonise(frame, rel.select("request_id", "item_id").with_columns(__rel=pl.lit(1.0)), "item_id")
        fr, rj = _harmonise(fr, rj, "request_id")
        hit = fr.join(rj, on=["request_id", "item_id"], how="left", maintain_order="left")["__rel"].fill_null(0.0)
        hit_np = hit.to_numpy()
        mat[:, 6] = np.bincount(q, weights=hit_np * (1.0 - tail), minlength=n_req)
        mat[:, 7] = np.bincount(q, weights=hit_np * tail, minlength=n_req)

    return mat, n_relevant, n_relevant_in_history


def _finishes(with_labels: bool) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each quantity as a function of (replicate) column sums of the per-request matrix."""
    def rate(col: int, universe: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda s: _ratio(s[:, col], s[:, universe])

    finishes: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "arp": lambda s: _ratio(s[:, 0], s[:, 3]),
        "aplt": lambda s: _ratio(s[:, 1], s[:, 3]),
        "aclt": lambda s: _ratio(s[:, 2], s[:, 3]),
        "rec_rate_head": rate(4, 10),
        "rec_rate_tail": rate(5, 11),
        "pop_rsp": lambda s: _signed_rsp(rate(4, 10)(s), rate(5, 11)(s)),  # folded in _rows
    }
    if with_labels:
        finishes.update({
            "rel_rec_rate_head": lambda s: _ratio(s[:, 6], s[:, 8]),
            "rel_rec_rate_tail": lambda s: _ratio(s[:, 7], s[:, 9]),
            "pop_reo": lambda s: _signed_rsp(_ratio(s[:, 6], s[:, 8]), _ratio(s[:, 7], s[:, 9])),
        })
    return finishes


# --------------------------------------------------------------------------- popularity lift (GAP)


def _check_cuts(cuts: Any) -> tuple[float, float]:
    ok = isinstance(cuts, tuple | list) and len(cuts) == 2 and all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in cuts)
    if not ok or not 0.0 <= cuts[0] <= cuts[1] <= 1.0:
        raise UsageError(f"profile_cuts must be two percentiles 0 <= lo <= hi <= 1, got {cuts!r}")
    return float(cuts[0]), float(cuts[1])


def _run_users(requests: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """(users of the run: user_id, __u in order of first request; the user code of every request by __q)."""
    import polars as pl

    if "user_id" not in requests.columns:
        raise InputError("run", [Violation("user_id", "required column is missing", 0, (),
                                           "a history is per user: give the run a user_id column (one user per "
                                           "request; a copy of request_id when every request is another user)")])
    if requests["user_id"].null_count():
        rows = requests.filter(pl.col("user_id").is_null())["request_id"]
        raise InputError("run", [Violation("user_id", "must not be null", rows.len(), (),
                                           "every request needs its user for a user-level audit")])
    users = requests.select("user_id").unique(maintain_order=True).with_columns(
        __u=pl.int_range(pl.len(), dtype=pl.Int64))
    rq, uj = _harmonise(requests.select("__q", "user_id"), users, "user_id")
    uq = rq.join(uj, on="user_id", how="left").sort("__q")["__u"].to_numpy()
    return users, uq


def _history_of_run_users(hist: pl.DataFrame, users: pl.DataFrame, hinfo: dict[str, int]) -> pl.DataFrame:
    """The history rows of the run's users, with their code ``__u``; counts the other users in ``hinfo``."""
    hist, uj = _harmonise(hist, users, "user_id")
    hinfo["n_history_users_not_in_run"] = int(hist.join(uj, on="user_id", how="anti")["user_id"].n_unique())
    return hist.join(uj, on="user_id", how="inner", maintain_order="left")


def _history_frame(history: Any, *, weight: str | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Distinct (user_id, item_id) pairs of a history table (``__w``: summed weights when ``weight`` is
    given, else 1), and counts: rows, repeated pairs."""
    import polars as pl

    from receval.data.readers import to_polars

    cols = ["user_id", "item_id"] + ([weight] if weight else [])
    table = to_polars(history, kind="history", name="history", columns=cols)
    _require(table, "history", cols, "the history holds the users' past interactions: user_id, item_id"
             + (f" and the weight column {weight!r}" if weight else ""))
    w = pl.col(weight) if weight else pl.lit(1.0)
    violations = []
    for c in ("user_id", "item_id"):
        if table[c].null_count():
            violations.append(Violation(c, "must not be null", table[c].null_count(),
                                        tuple(f"row {i}" for i in table.with_row_index("__r").filter(
                                            pl.col(c).is_null())["__r"].head(3).to_list())))
    if weight:
        s = table[weight]
        if not (s.dtype.is_numeric() and s.dtype != pl.Boolean):
            violations.append(Violation(weight, "must be numeric", s.len(), (f"dtype {s.dtype}",)))
        else:
            x = s.cast(pl.Float64)
            bad = (x.is_null() | ~x.is_finite() | (x < 0)).fill_null(True)
            if bad.any():
                violations.append(Violation(weight, "must be finite, >= 0 and not null", int(bad.sum()),
                                            tuple(f"row {i}" for i in np.flatnonzero(bad.to_numpy())[:3])))
    if violations:
        raise InputError("history", violations)
    table = table.select("user_id", "item_id", w.cast(pl.Float64).alias("__w"))
    pairs = table.group_by("user_id", "item_id", maintain_order=True).agg(pl.col("__w").sum() if weight
                                                                          else pl.col("__w").first())
    return pairs, {"n_history_rows": table.height, "n_history_repeats": table.height - pairs.height}


def _profile_codes(head_share: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """0 niche, 1 diverse, 2 blockbuster from the users' short-head share.

    Each user's mid-rank percentile is (r - 1/2) / n, r its rank by share (the
    mean rank on ties): niche below lo, blockbuster from hi on, else diverse.
    Without ties and with n a multiple of 5, cuts (0.2, 0.8) give exactly the
    bottom and top 20% of users. Tied users share a percentile, hence a group
    (ids never decide): a block of ties goes where its middle lies, e.g.
    everybody tied is diverse.
    """
    x = np.sort(head_share)
    # mean rank of a tie block = (#below + 1 + #at-most) / 2
    below = np.searchsorted(x, head_share, side="left")
    at_most = np.searchsorted(x, head_share, side="right")
    pct = (below + at_most) / (2.0 * max(len(x), 1))
    return np.where(pct < cuts[0], 0, np.where(pct >= cuts[1], 2, 1)).astype(np.int64)


def _per_user_codes(uq: np.ndarray, req_codes: np.ndarray, n_users: int, group_column: str | None,
                    what: str) -> np.ndarray:
    """Each user's declared group code from its requests' codes; InputError when a user has two."""
    pairs = np.unique(np.column_stack([uq, req_codes]), axis=0)
    conflict = np.flatnonzero(np.bincount(pairs[:, 0], minlength=n_users) > 1)
    if len(conflict):
        raise InputError("user_groups", [Violation(
            group_column or "group", f"one group per user ({what} is per user)", len(conflict),
            hint="the requests of a user fall in different groups; key user_groups by user_id")])
    ucode = np.zeros(n_users, dtype=np.int64)
    ucode[pairs[:, 0]] = pairs[:, 1]
    return ucode


def _lift(
    arp_q: np.ndarray,
    uq: np.ndarray,
    n_users: int,
    hist: pl.DataFrame,
    hinfo: dict[str, int],
    cuts: tuple[float, float],
    req_codes: np.ndarray,
    names: list[str],
    group_column: str | None,
    *,
    min_group_size: int,
    n_boot: int,
    level: float,
    seed: int | None,
) -> PopularityLift:
    """GAP_p, GAP_r and Delta GAP per user group; bootstrap over users with a history."""
    hu = hist["__u"].to_numpy()
    n_hist = np.bincount(hu, minlength=n_users)
    defined = n_hist > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_p = np.bincount(hu, weights=hist["__pop"].to_numpy(), minlength=n_users) / n_hist
        head_share = np.bincount(hu, weights=1.0 - hist["__tail"].to_numpy().astype(np.float64),
                                 minlength=n_users) / n_hist
        # a user's recommended popularity: mean over their requests of the list's mean popularity
        gap_r = np.bincount(uq, weights=arp_q, minlength=n_users) / np.bincount(uq, minlength=n_users)
    idx = np.flatnonzero(defined)
    mat = np.column_stack([gap_p[idx], gap_r[idx], np.ones(len(idx))])
    finishes = {
        "gap_profile": lambda s: _ratio(s[:, 0], s[:, 2]),
        "gap_recommended": lambda s: _ratio(s[:, 1], s[:, 2]),
        "delta_gap": lambda s: _ratio(s[:, 1] - s[:, 0], s[:, 0]),
    }
    prof = _profile_codes(head_share[idx], cuts)
    n_undefined = n_users - len(idx)

    def prof_row(g: str, n: int, suppressed: bool, vals: dict) -> UserRow:
        if g == ALL_GROUP:
            return UserRow(g, n_users, n_undefined, suppressed, vals)
        return UserRow(g, n, 0, suppressed, vals)

    kw = {"min_group_size": min_group_size, "n_boot": n_boot, "level": level, "seed": seed}
    overall, profile, method = group_rows(mat, finishes, prof, list(PROFILE_GROUPS), row=prof_row, **kw)
    declared: tuple[UserRow, ...] = ()
    if names:
        ucode = _per_user_codes(uq, req_codes, n_users, group_column, "the popularity lift")
        total = np.bincount(ucode, minlength=len(names))
        undef = np.bincount(ucode[~defined], minlength=len(names))

        def decl_row(g: str, n: int, suppressed: bool, vals: dict) -> UserRow:
            if g == ALL_GROUP:  # the overall row again: already built above
                return overall
            j = names.index(g)
            return UserRow(g, int(total[j]), int(undef[j]), suppressed, vals)

        _, declared, _ = group_rows(mat, finishes, ucode[idx], names, row=decl_row, **kw)
    return PopularityLift(
        overall=overall,
        profile_groups=profile,
        groups=declared,
        settings={"profile_cuts": list(cuts), **interval_settings(min_group_size, n_boot, level, seed, method)},
        counts={
            "n_users": n_users,
            "n_users_no_history": n_undefined,
            **hinfo,
            "n_history_items_used": int(len(hu)),
        },
    )
