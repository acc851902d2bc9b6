"""Result plumbing shared by the audits.

Every audit reduces its input to a per-unit matrix (one row per request or
user), declares its quantities as functions of that matrix's column sums
(:class:`_Stat`), and reports each one as an :class:`Estimate` (point and
bootstrap interval) in rows of one group each. This module holds that common
part: the estimate type, the statistic wrapper, one routine from statistics to
estimates, the overall + per-group row builder, and the ``to_dict`` /
``to_frame`` renderers. The audits keep their own inputs and formulas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from receval.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

#: group name of the catalog items (or users) whose group value is null
MISSING_GROUP = "(missing)"
#: group name of the overall row
ALL_GROUP = "(all)"


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for NaN / infinity / None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval (None: undefined / not computed)."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


def estimate_dict(est: Estimate | None) -> dict[str, float | None] | None:
    return None if est is None else est.to_dict()


class _Stat:
    """Per-unit statistics (dense or scipy.sparse) and the function of their column sums.

    ``recentre``: not a smooth function of means (e.g. Gini); its replicates
    are recentred on the estimate by ``bootstrap_replicates``.
    ``fold``: ``finish`` returns a signed, smooth statistic d of which the
    absolute value |d| is reported (e.g. PopRSP); the interval of |d| is the
    image of d's percentile interval under |.| (:func:`fold_interval`).
    """

    def __init__(self, stats: Any, finish: Callable[[np.ndarray], np.ndarray], recentre: bool = False,
                 fold: bool = False):
        self.stats = stats
        self.finish = finish
        self.recentre = recentre
        self.fold = fold


def fold_interval(value: float, low: float, high: float) -> tuple[float, float, float]:
    """(|d|, low, high) for |d| from a signed estimate d and its interval [low, high].

    Why not the percentile interval of |d*|: near d = 0 the replicates |d*| are
    pushed away from 0 (every replicate is >= 0, most are > |d|), so that
    interval can lie entirely above the estimate and never reach parity.
    {|t| : t in [low, high]} is [0, max(-low, high)] when [low, high] holds 0,
    else [min, max] of the absolute bounds: it covers |theta| whenever
    [low, high] covers theta, so it keeps the signed interval's coverage, and it
    holds |d| whenever [low, high] holds d.
    """
    if low <= 0.0 <= high:
        return abs(value), 0.0, abs(max(-low, high))  # abs: no -0.0
    return abs(value), min(abs(low), abs(high)), max(abs(low), abs(high))


def bootstrap_estimates(
    stats: Sequence[_Stat], n_units: int, *, n_boot: int, level: float, seed: int | None,
    replicates: Callable[[], tuple[np.ndarray, str]] | None = None,
    totals: Callable[[Any], np.ndarray] | None = None,
) -> tuple[list[Estimate], str | None]:
    """One :class:`Estimate` per statistic; intervals from one set of unit-level replicates.

    Replicates where a statistic is undefined (not finite) are ignored by the
    percentile interval. ``replicates``: computes (replicates of shape
    (n_boot, len(stats)), method) in place of ``bootstrap_replicates``;
    ``totals(stats array)``: its column sums, shape (1, columns), in place of
    ``stats.sum(axis=0)``. Returns (estimates, bootstrap method or None).
    """
    from receval.stats.bootstrap import bootstrap_replicates, percentile_interval

    column_sums: dict[int, np.ndarray] = {}  # column sums, once per stats array
    for st in stats:
        if id(st.stats) not in column_sums:
            column_sums[id(st.stats)] = totals(st.stats) if totals is not None else \
                np.asarray(st.stats.sum(axis=0), dtype=np.float64).reshape(1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = np.array([float(st.finish(column_sums[id(st.stats)])[0]) for st in stats])
    low = high = np.full(len(stats), np.nan)
    method = None
    if n_boot > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            if replicates is not None:
                reps, method = replicates()
            else:
                reps, method = bootstrap_replicates(list(stats), n_units, n_boot=n_boot, seed=seed)
        reps[~np.isfinite(reps)] = np.nan  # e.g. a ratio over a resample without the group
        low, high = percentile_interval(reps, level)
    out = []
    for i, st in enumerate(stats):
        v = _num(point[i])
        fold = getattr(st, "fold", False)
        if v is None:
            out.append(Estimate(None))
        elif n_boot == 0:
            out.append(Estimate(abs(v) if fold else v))
        else:
            lo, hi = _num(low[i]), _num(high[i])
            if fold and lo is not None and hi is not None:
                v, lo, hi = fold_interval(v, lo, hi)
            elif fold:
                v = abs(v)
            out.append(Estimate(v, lo, hi))
    return out, method


class Background:
    """One function call on a thread of its own, e.g. Python or numpy work while compiled kernels that
    release the GIL run on the calling thread (or the other way round); ``result()`` waits for it and
    re-raises its error. The numbers never depend on it: only when the work runs. As a context
    manager it waits for the thread on leaving the block, also when the block raises (the caller's
    error comes first, as when the two ran in turn)."""

    def __init__(self) -> None:
        self._thread: Any = None
        self._out: Any = None
        self._error: BaseException | None = None

    def start(self, fn: Callable[..., Any], *args: Any) -> Background:
        import threading

        def run() -> None:
            try:
                self._out = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="receval-background", daemon=True)
        self._thread.start()
        return self

    @classmethod
    def done(cls, value: Any) -> Background:
        """A result computed already (no thread)."""
        out = cls()
        out._out = value
        return out

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.join()

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._out


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class AuditRow:
    """One row (overall or a user group). ``values`` is empty when ``suppressed``."""

    group: str
    n_requests: int
    suppressed: bool
    values: dict[str, Estimate | None] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Estimate | None:
        return self.values.get(name)

    def to_dict(self, fields: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "n_requests": self.n_requests, "suppressed": self.suppressed}
        for name in fields:
            out[name] = estimate_dict(self.values.get(name))
        return out


@dataclass(frozen=True)
class UserRow:
    """One row of a user-level audit: ``n_users`` users of the group, of whom
    ``n_undefined`` have no value (e.g. no history) and are left out of the
    values. ``values`` is empty when ``suppressed`` (fewer than
    ``min_group_size`` users with a value)."""

    group: str
    n_users: int
    n_undefined: int
    suppressed: bool
    values: dict[str, Estimate | None] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Estimate | None:
        return self.values.get(name)

    def to_dict(self, fields: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "n_users": self.n_users, "n_undefined": self.n_undefined,
                               "suppressed": self.suppressed}
        for name in fields:
            out[name] = estimate_dict(self.values.get(name))
        return out


USER_ROW_HEAD = ("group", "n_users", "n_undefined", "suppressed")


def find_group(rows: Sequence[Any], name: str) -> Any:
    """The row of group ``name``; KeyError when absent."""
    for g in rows:
        if g.group == name:
            return g
    raise KeyError(name)


def rows_frame(rows: Sequence[dict[str, Any]], head: Sequence[str], fields: Sequence[str]) -> pl.DataFrame:
    """A polars frame from row dicts: the ``head`` columns, then ``<q>``, ``<q>_low``, ``<q>_high`` per field.

    ``group`` and ``grouping`` are text, ``suppressed`` boolean, other head columns integers.
    """
    import polars as pl

    data: dict[str, list[Any]] = {c: [] for c in head}
    for name in fields:
        for suffix in ("", "_low", "_high"):
            data[name + suffix] = []
    for d in rows:
        for c in head:
            data[c].append(d[c])
        for name in fields:
            est = d[name] or {}
            data[name].append(est.get("value"))
            data[name + "_low"].append(est.get("low"))
            data[name + "_high"].append(est.get("high"))
    schema: dict[str, Any] = {c: pl.String if c in ("group", "grouping") else pl.Boolean if c == "suppressed"
                              else pl.Int64 for c in head}
    schema.update({c: pl.Float64 for c in data if c not in schema})
    return pl.DataFrame(data, schema=schema)


@dataclass(frozen=True)
class _Audit:
    """An overall row and one row per user group (:class:`AuditRow`), over the quantities ``FIELDS``."""

    overall: AuditRow
    groups: tuple[AuditRow, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    FIELDS: ClassVar[tuple[str, ...]] = ()
    HEAD: ClassVar[tuple[str, ...]] = ("group", "n_requests", "suppressed")  # to_frame's first columns

    def group(self, name: str) -> AuditRow:
        return find_group(self.groups, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; holds no request, user or item id."""
        return {
            "settings": dict(self.settings),
            "counts": dict(self.counts),
            "overall": self.overall.to_dict(self.FIELDS),
            "groups": [g.to_dict(self.FIELDS) for g in self.groups],
        }

    def to_frame(self) -> pl.DataFrame:
        """One row per row (overall first, then user groups): ``HEAD``, ``<q>``, ``<q>_low``, ``<q>_high``."""
        rows = [r.to_dict(self.FIELDS) for r in (self.overall, *self.groups)]
        return rows_frame(rows, self.HEAD, self.FIELDS)


@dataclass(frozen=True)
class _UserAudit(_Audit):
    """As :class:`_Audit` with rows of :class:`UserRow` (user and request counts)."""

    HEAD: ClassVar[tuple[str, ...]] = USER_ROW_HEAD


#: under the fused scheme, group_rows sums every group in one grouped pass (False: masked copies)
_GROUPED_PASS = True


def group_rows(
    mat: np.ndarray,
    finishes: dict[str, Callable[[np.ndarray], np.ndarray]],
    codes: np.ndarray,
    names: list[str],
    *,
    min_group_size: int,
    n_boot: int,
    level: float,
    seed: int | None,
    fold: Sequence[str] = (),
    row: Callable[..., Any] | None = None,
) -> tuple[Any, tuple[Any, ...], str | None]:
    """Overall row and one row per group; intervals from one set of unit-level replicates.

    A group's statistics read ``mat`` with the other groups' rows zeroed, so every
    replicate resamples all units and each group keeps its own resampled units.
    ``fold`` names the quantities whose finish is signed and reported in
    absolute value (:func:`fold_interval`). ``row(name, n, suppressed, values)`` builds a
    row (default :class:`AuditRow`).
    """
    from receval.stats.bootstrap import _check

    n_units = mat.shape[0]
    n_per = np.bincount(codes, minlength=len(names)) if names else np.zeros(0, dtype=np.int64)
    reported = [j for j, _ in enumerate(names) if n_per[j] >= min_group_size and n_per[j] > 0]
    # the scheme bootstrap_replicates would choose for the overall block and one masked copy per group
    compiled = n_boot > 0 and n_units > 0 and \
        _check(n_boot, 0.5, "auto", n_units, mat.shape[1] * (1 + len(reported))) == "poisson-fused"
    fused = _GROUPED_PASS and compiled
    # under the compiled scheme the replicates number the units in group order (unit i = position
    # i of the stable sort by group), so each group's units are consecutive and their weights are
    # drawn in stream order; the point estimates read ``mat`` as given
    order = np.argsort(codes, kind="stable") if compiled else None
    base, base_codes = (mat, codes) if fused or order is None else (mat[order], codes[order])
    blocks: list[tuple[str, Any]] = [(ALL_GROUP, base)]
    for j in reported:
        # fused: every group's sums come from one grouped pass (no masked copies)
        blocks.append((names[j], j if fused else base * (base_codes == j)[:, None]))
    stats: list[_Stat] = []
    keys: list[tuple[str, str]] = []
    for gname, block in blocks:
        for fname, fin in finishes.items():
            stats.append(_Stat(block, fin, fold=fname in fold))
            keys.append((gname, fname))
    if fused:
        per_group = np.stack([np.bincount(codes, weights=mat[:, j], minlength=max(len(names), 1))
                              for j in range(mat.shape[1])], axis=1) if n_units else None

        def totals(block: Any) -> np.ndarray:
            return mat.sum(axis=0, keepdims=True) if block is mat else per_group[block][None, :]

        found, method = bootstrap_estimates(
            stats, n_units, n_boot=n_boot, level=level, seed=seed, totals=totals,
            replicates=lambda: (_grouped_replicates(mat, codes, order, len(names), stats, n_boot=n_boot, seed=seed),
                                "poisson-fused"))
    else:
        found, method = bootstrap_estimates(stats, n_units, n_boot=n_boot, level=level, seed=seed)
    by_key = dict(zip(keys, found, strict=True))
    make = row or AuditRow

    def one(gname: str, n: int) -> Any:
        suppressed = gname != ALL_GROUP and n < min_group_size
        # a group without units has no statistics: undefined values unless suppressed
        vals = {} if suppressed else {f: by_key.get((gname, f), Estimate(None)) for f in finishes}
        return make(gname, int(n), bool(suppressed), vals)

    overall = one(ALL_GROUP, n_units)
    groups = tuple(one(name, int(n_per[j])) for j, name in enumerate(names))
    return overall, groups, method


def _grouped_replicates(mat: np.ndarray, codes: np.ndarray, order: np.ndarray, n_groups: int, stats: list[_Stat], *,
                        n_boot: int, seed: int | None) -> np.ndarray:
    """Replicates of group_rows' statistics (``.stats``: ``mat`` for the overall row, a group index
    otherwise) from one grouped pass of the fused kernel: the weights ``bootstrap_replicates``
    gives under "poisson-fused" to ``mat[order]`` (``order`` sorts the units by group), the sums
    of its masked copies up to float rounding.

    Columns constant over the units (ones, a fixed universe size, zeros) are not
    summed: their sums are the constant times the group's weight total.
    """
    from receval.stats._bootstrap_kernel import poisson_group_sums, root_key

    x = np.asarray(mat, dtype=np.float64)[order]
    codes = codes[order]
    k = x.shape[1]
    const = np.array([bool((x[:, j] == x[0, j]).all()) for j in range(k)])
    # each distinct non-constant column once (e.g. a count kept under two names)
    source = np.full(k, -1)
    summed: list[int] = []
    for j in np.flatnonzero(~const):
        same = next((i for i in summed if np.array_equal(x[:, i], x[:, j])), None)
        source[j] = len(summed) if same is None else summed.index(same)
        if same is None:
            summed.append(int(j))
    cols = np.column_stack([x[:, summed], np.ones(len(x))])
    g = max(n_groups, 1)
    sums, _ = poisson_group_sums(cols, codes if n_groups else np.zeros(len(x), dtype=np.int64), g, n_boot,
                                 root_key(seed))
    full = np.empty((n_boot, g, k))
    for j in range(k):
        full[:, :, j] = x[0, j] * sums[:, :, -1] if const[j] else sums[:, :, source[j]]
    overall = full.sum(axis=1)
    out = np.full((n_boot, len(stats)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, st in enumerate(stats):
            out[:, i] = st.finish(overall if st.stats is mat else full[:, st.stats, :])
    return out


# --------------------------------------------------------------------------- settings and arguments


def interval_settings(min_group_size: int, n_boot: int, level: float, seed: int | None,
                      method: str | None) -> dict[str, Any]:
    """The settings every audit reports last, in this order."""
    return {"min_group_size": min_group_size, "n_boot": n_boot, "level": level, "seed": seed,
            "bootstrap_method": method}


def check_k(k: Any) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise UsageError(f"k must be a positive integer or None, got {k!r}")


def check_interval_args(min_group_size: Any, n_boot: Any, level: Any) -> None:
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 0:
        raise UsageError(f"min_group_size must be a non-negative integer, got {min_group_size!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise UsageError(f"n_boot must be a non-negative integer (0: no intervals), got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
