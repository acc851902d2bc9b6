"""Miscalibration of recommendations to the users' interests (Steck 2018).

``miscalibration_audit(run, history, catalog, ...)`` compares, per user, the
distribution of item categories (genres, topics, ...) over the user's history
with the distribution over their top-k recommendations:

* p(c|u) = sum_{i in H(u)} w_ui p(c|i) / sum_{i in H(u)} w_ui over the user's
  history H(u) (w_ui = 1, or a declared weight column such as play counts);
* q(c|u) = sum_{i in L} w_r(i) p(c|i) / sum_{i in L} w_r(i) over the top-k
  list L, w_r = 1 (``position_weight="uniform"``) or 1/log2(1 + r) (``"log"``);
* p(c|i) = 1/|categories(i)| for each of the item's categories (Steck);
* C_KL(p, q) = sum_c p(c|u) log(p(c|u) / q~(c|u)), q~ = (1 - alpha) q + alpha p,
  natural logarithm; 0 when the list mirrors the history, at most log(1/alpha).

Reported as the mean over users (a user with several requests contributes
the mean over them), overall and per declared user group, with percentile
bootstrap intervals over users. Users without a history are undefined: they
are counted (``n_undefined``) and left out, never silently dropped.

Formulas and conventions: docs/audits.md, "Miscalibration".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from receval.audits._result import (
    ALL_GROUP,
    MISSING_GROUP,
    UserRow,
    _UserAudit,
    group_rows,
    interval_settings,
)
from receval.audits.exposure import _harmonise, _require
from receval.audits.popularity import (
    _check_common,
    _history_frame,
    _history_of_run_users,
    _per_user_codes,
    _ranked,
    _ratio,
    _run_users,
    _unknown,
    _user_group_codes,
)
from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = ["MISCALIBRATION_FIELDS", "MiscalibrationAudit", "miscalibration_audit"]

#: the quantities of a row, in output order
MISCALIBRATION_FIELDS = ("miscalibration",)
POSITION_WEIGHTS = ("uniform", "log")


@dataclass(frozen=True)
class MiscalibrationAudit(_UserAudit):
    """Result of :func:`miscalibration_audit`: rows of users (:class:`~receval.audits._result.UserRow`).

    ``to_dict()`` is JSON-safe and holds no request, user or item id.
    """

    FIELDS: ClassVar[tuple[str, ...]] = MISCALIBRATION_FIELDS


def _categories(catalog: Any, category: str) -> tuple[pl.DataFrame, list[str], dict[str, int]]:
    """(item_id, __c category code, __pc = 1/|categories of the item|), category names, counts.

    A list column gives several categories per item (repeats within an item
    count once); a scalar column one. A null or empty value is the category
    ``"(missing)"``.
    """
    import polars as pl

    from receval.data.readers import to_polars

    cat = to_polars(catalog, kind="catalog", columns=["item_id", category])
    _require(cat, "catalog", ["item_id", category],
             f"the catalog maps item_id to its categories (category={category!r}: text, or a list of text)")
    cat = cat.select("item_id", pl.col(category).alias("__c"))
    violations = []
    if cat["item_id"].null_count():
        violations.append(Violation("item_id", "must not be null", cat["item_id"].null_count()))
    dup = cat["item_id"].is_duplicated()
    if dup.any():
        violations.append(Violation("item_id", "one row per item", int(dup.sum()),
                                    hint="give an item several categories as a list, in one row"))
    if cat.height == 0:
        violations.append(Violation("item_id", "the catalog must hold at least one item", 0))
    dtype = cat["__c"].dtype
    is_list = isinstance(dtype, pl.List | pl.Array)
    inner = dtype.inner if is_list else dtype  # type: ignore[union-attr]
    textual = inner in (pl.String, pl.Categorical, pl.Boolean, pl.Null) or isinstance(inner, pl.Enum) or \
        inner.is_integer()
    if not textual:
        violations.append(Violation(category, "must be text (or integer codes), or a list of them",
                                    cat.height, (f"dtype {dtype}",),
                                    "float or nested categories are ambiguous; cast them to text"))
    if violations:
        raise InputError("catalog", violations)
    n_missing = int(cat["__c"].is_null().sum())
    if is_list:
        empty = cat["__c"].is_null() | (cat["__c"].list.len() == 0 if isinstance(dtype, pl.List) else False)
        n_missing = int(empty.sum())
        long = cat.with_columns(__c=pl.when(empty).then(None).otherwise(pl.col("__c"))).explode("__c")
    else:
        long = cat
    long = long.with_columns(pl.col("__c").cast(pl.String).fill_null(MISSING_GROUP))
    distinct = long.unique(subset=["item_id", "__c"], maintain_order=True)
    names = sorted(distinct["__c"].unique().to_list())
    codes = pl.DataFrame({"__c": names, "__code": np.arange(len(names), dtype=np.int64)})
    table = distinct.join(codes, on="__c", how="left", maintain_order="left").select(
        "item_id", pl.col("__code").alias("__c"), (1.0 / pl.len().over("item_id")).alias("__pc"))
    counts = {
        "n_catalog_items": cat.height,
        "n_categories": len(names),
        "n_items_missing_category": n_missing,
        "n_repeated_item_categories": long.height - distinct.height,
    }
    return table, names, counts


def _distribution(rows: pl.DataFrame, unit: str, cats: pl.DataFrame, frame_name: str) -> pl.DataFrame:
    """(unit, __c, mass) normalised per unit, from rows (unit, item_id, __w): sum of w * p(c|i) / sum of w."""
    import polars as pl

    rows, cj = _harmonise(rows, cats, "item_id")
    long = rows.join(cj, on="item_id", how="left", maintain_order="left")
    if long["__c"].null_count():
        raise _unknown(long.filter(pl.col("__c").is_null())["item_id"], frame_name, "catalog")
    # sorted: group_by's output order varies between runs, and float sums must not (byte-identical reports)
    return (long.group_by(unit, "__c").agg(mass=(pl.col("__w") * pl.col("__pc")).sum()).sort(unit, "__c")
            .with_columns(mass=pl.col("mass") / pl.col("mass").sum().over(unit)))


def miscalibration_audit(
    run: Any,
    history: Any,
    catalog: Any,
    *,
    category: str = "category",
    k: int | None = 10,
    alpha: float = 0.01,
    position_weight: str = "uniform",
    history_weight: str | None = None,
    user_groups: Any = None,
    group_column: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 20,
    engine: str = "auto",
) -> MiscalibrationAudit:
    """Miscalibration C_KL (Steck 2018) of the top-k lists of ``run`` to the users' histories.

    Parameters
    ----------
    run : request_id, user_id, item_id, score; ranked by score descending, ties
        by item id text descending, cut at ``k``.
    history : user_id, item_id (and ``history_weight``): the users' past
        interactions; repeated (user, item) pairs count once (their weights add).
    catalog : item_id and ``category``: text, integer codes, or a list of them
        per item (each of an item's categories gets 1/|categories|). Null or
        empty categories form the category ``"(missing)"``.
    alpha : mixing weight of q~ = (1 - alpha) q + alpha p, in (0, 1]; keeps
        C_KL finite (at most log(1/alpha)).
    position_weight : ``"uniform"`` (every slot of the list counts 1) or
        ``"log"`` (slot r counts 1/log2(1 + r)).
    history_weight : optional numeric column of ``history`` (>= 0) weighting
        each interaction; default 1 per distinct item.
    user_groups : table keyed by user_id (or request_id, one group per user)
        with ``group_column``; users without a row form ``"(missing)"``.
    min_group_size : groups with fewer users with a history are listed with
        ``suppressed=True`` and no values.
    n_boot : bootstrap replicates over users (0: no intervals).
    engine : ``"auto"`` (Spark when an input is a PySpark DataFrame), ``"polars"``
        or ``"spark"``: run and history rows are partitioned by user and each
        user's C_KL computed on Spark (docs/scale.md).

    Raises
    ------
    UsageError : bad arguments.  InputError : bad data, e.g. items missing from the catalog.

    Examples
    --------
    >>> import polars as pl
    >>> run = pl.DataFrame({"request_id": [1, 1], "user_id": ["u", "u"], "item_id": ["a", "b"],
    ...                     "score": [2.0, 1.0]})
    >>> hist = pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"]})
    >>> cat = pl.DataFrame({"item_id": ["a", "b"], "category": ["x", "y"]})
    >>> miscalibration_audit(run, hist, cat, n_boot=0, min_group_size=1).overall["miscalibration"].value
    0.0
    """
    _check_common(k, min_group_size, n_boot, level, user_groups, group_column)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < float(alpha) <= 1.0:
        raise UsageError(f"alpha must lie in (0, 1], got {alpha!r}: alpha = 0 makes C_KL infinite as soon as "
                         "a category of the history is missing from the list")
    if position_weight not in POSITION_WEIGHTS:
        raise UsageError(f"unknown position_weight {position_weight!r}: use one of "
                         f"{', '.join(map(repr, POSITION_WEIGHTS))}")
    if history_weight is not None and not isinstance(history_weight, str):
        raise UsageError(f"history_weight must name a column of history, got {history_weight!r}")
    alpha = float(alpha)
    from receval.engines.spark_audits import audit_engine

    if audit_engine(engine, run, history, catalog, user_groups, audit="miscalibration_audit") == "spark":
        # per-user values on Spark (user-complete chunks), statistics here
        from receval.engines.spark_audits import miscalibration_spark

        return miscalibration_spark(run, history, catalog, category=category, k=k, alpha=alpha,
                                    position_weight=position_weight, history_weight=history_weight,
                                    user_groups=user_groups, group_column=group_column, n_boot=n_boot, level=level,
                                    seed=seed, min_group_size=min_group_size)
    frame, requests = _ranked(run, k)
    users, uq = _run_users(requests)
    n_users, n_req = users.height, requests.height
    cats, names, ccounts = _categories(catalog, category)
    hist, hinfo = _history_frame(history, weight=history_weight)
    hist = _history_of_run_users(hist, users, hinfo)

    ckl_u, hw, has_rows = _user_values(frame, uq, n_users, n_req, hist, cats, alpha, position_weight)
    return _result(requests, uq, n_users, ckl_u, hw, has_rows, hinfo, ccounts, user_groups=user_groups,
                   group_column=group_column, category=category, k=k, alpha=alpha, position_weight=position_weight,
                   history_weight=history_weight, n_boot=n_boot, level=level, seed=seed,
                   min_group_size=min_group_size)


def _user_values(frame: pl.DataFrame, uq: np.ndarray, n_users: int, n_req: int, hist: pl.DataFrame,
                 cats: pl.DataFrame, alpha: float, position_weight: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C_KL per user: the mean over their requests, history weight per user, user has history rows).

    ``frame``: the ranked top-k rows (``__q``, ``rank``); ``uq``: the user code of each request; ``hist``: the
    history pairs of the run's users (``__u``, item_id, ``__w``). Every value depends only on the user's
    rows: the Spark engine (receval/engines/spark_audits.py) calls this on user-complete chunks.
    """
    import polars as pl

    # p(c|u): users with a positive history weight
    p_long = _distribution(hist.select("__u", "item_id", "__w"), "__u", cats, "history")
    hw = np.bincount(hist["__u"].to_numpy(), weights=hist["__w"].to_numpy(), minlength=n_users)
    has_rows = np.bincount(hist["__u"].to_numpy(), minlength=n_users) > 0
    defined = hw > 0
    # q(c|u) of every request
    rank = frame["rank"].to_numpy().astype(np.float64)
    w_r = np.ones_like(rank) if position_weight == "uniform" else 1.0 / np.log2(1.0 + rank)
    q_long = _distribution(frame.select("__q", "item_id").with_columns(__w=pl.Series(w_r)), "__q", cats, "run")

    # C_KL per request of a defined user: sum over the user's categories (p > 0 only)
    req = pl.DataFrame({"__q": np.arange(n_req, dtype=np.int64), "__u": uq}).filter(
        pl.Series(defined[uq]))
    terms = (req.join(p_long.rename({"mass": "p"}), on="__u", how="inner")
             .join(q_long.rename({"mass": "q"}), on=["__q", "__c"], how="left")
             .with_columns(pl.col("q").fill_null(0.0)).sort("__q", "__c"))  # a fixed summation order
    p = terms["p"].to_numpy()
    qt = (1.0 - alpha) * terms["q"].to_numpy() + alpha * p
    ckl_q = np.bincount(terms["__q"].to_numpy(), weights=p * np.log(p / qt), minlength=n_req)
    ckl_q = np.maximum(ckl_q, 0.0)  # KL >= 0; q = p may leave -1e-17 of rounding
    # a user's value: the mean over their requests
    ckl_u = np.bincount(uq, weights=ckl_q, minlength=n_users) / np.bincount(uq, minlength=n_users)

    return ckl_u, hw, has_rows


def _result(requests: pl.DataFrame, uq: np.ndarray, n_users: int, ckl_u: np.ndarray, hw: np.ndarray,
            has_rows: np.ndarray, hinfo: dict[str, int], ccounts: dict[str, int], *, user_groups: Any,
            group_column: str | None, category: str, k: int | None, alpha: float, position_weight: str,
            history_weight: str | None, n_boot: int, level: float, seed: int | None,
            min_group_size: int) -> MiscalibrationAudit:
    """The audit from the per-user values: user groups, bootstrap over users, counts."""
    n_req = requests.height
    defined = hw > 0
    idx = np.flatnonzero(defined)
    mat = np.column_stack([ckl_u[idx], np.ones(len(idx))])
    finishes = {"miscalibration": lambda s: _ratio(s[:, 0], s[:, 1])}
    n_undefined = n_users - len(idx)
    req_codes, gnames = _user_group_codes(requests, user_groups, group_column)
    ucode = _per_user_codes(uq, req_codes, n_users, group_column, "miscalibration") if gnames else \
        np.zeros(n_users, dtype=np.int64)
    total = np.bincount(ucode, minlength=len(gnames))
    undef = np.bincount(ucode[~defined], minlength=len(gnames))

    def row(g: str, n: int, suppressed: bool, vals: dict) -> UserRow:
        if g == ALL_GROUP:
            return UserRow(g, n_users, n_undefined, suppressed, vals)
        j = gnames.index(g)
        return UserRow(g, int(total[j]), int(undef[j]), suppressed, vals)

    overall, groups, method = group_rows(mat, finishes, ucode[idx], gnames, min_group_size=min_group_size,
                                         n_boot=n_boot, level=level, seed=seed, row=row)
    return MiscalibrationAudit(
        overall=overall,
        groups=groups,
        settings={
            "category": category,
            "k": k,
            "alpha": alpha,
            "position_weight": position_weight,
            "history_weight": history_weight,
            "group_column": group_column,
            **interval_settings(min_group_size, n_boot, level, seed, method),
        },
        counts={
            "n_requests": n_req,
            "n_users": n_users,
            "n_users_no_history": int((~has_rows).sum()),
            "n_users_zero_history_weight": int((has_rows & ~defined).sum()),
            **hinfo,
            **ccounts,
            "n_groups": len(gnames),
            "n_groups_suppressed": sum(g.suppressed for g in groups),
        },
    )
