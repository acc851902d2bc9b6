"""Beyond-accuracy metrics: coverage, novelty, diversity, popularity bias.

They look at *what* is recommended (the top-k lists and an item catalog),
not at whether it is relevant. Two scopes:

* **per request** (a mean of one value per list, reported per request too):
  ``novelty``, ``arp``, ``long_tail_share``, ``diversity``;
* **population** (a property of all lists together, no per-request value):
  ``coverage``, ``gini``, ``personalization``.

Every metric becomes :class:`~receval.metrics.base.MetricStats` whose rows are
requests, so population metrics get intervals by resampling requests with the
same replicates as every other metric:

* ``coverage`` and ``gini``: a sparse request x item count matrix over the
  items recommended at least once (items never recommended are known to sum
  to 0, so they need no column); ``finish`` counts the items with a positive
  sum, or computes the Gini index of the sums plus the zeros of the items
  never shown.
* ``personalization``: for the sampled requests S, the row of request a is
  ``[O[a, S] | e_a]``: its similarities to the other sampled lists (zero
  diagonal) and an indicator column. Column sums under weights w give
  ``(wO)_j`` and ``w_j``, from which ``finish`` forms the weighted mean over
  pairs of distinct requests ``sum_{a != b} w_a w_b O_ab / sum_{a != b} w_a w_b``.

The point estimate, a slice (``MetricStats.take``) and partial sums are exact.
The plug-in bootstrap replicates of ``coverage`` and ``gini`` are biased (a
resample holds about 63% of the distinct requests, so fewer items are shown):
their percentile interval sits below (coverage) or above (Gini) the estimate
unless the caller recentres the replicates; see the docs.

Formulas and conventions: docs/metrics.md, "Beyond-accuracy metrics".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from receval.errors import InputError, UsageError, Violation
from receval.metrics.registry import MetricSpec, Param, register

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import polars as pl

    from receval.metrics.base import EvalContext, MetricStats
    from receval.metrics.registry import Metric

__all__ = ["compute", "no_catalog"]

#: seed of the request sample drawn by ``personalization`` when there are more
#: non-empty lists than ``sample``
SAMPLE_SEED = 0


_POPULARITY = Param(str, "popularity", doc="catalog column holding item popularity (e.g. interaction counts), >= 0")

register(
    MetricSpec(
        "coverage",
        True,
        "optional",
        kind="beyond",
        description="share of the catalog recommended at least once in the top k (population)",
    )
)
register(
    MetricSpec(
        "novelty",
        True,
        "optional",
        {"popularity": _POPULARITY},
        kind="beyond",
        description="mean self-information -log2 p(i) of the top-k items, p = add-one smoothed popularity share",
    )
)
register(
    MetricSpec(
        "diversity",
        True,
        "optional",
        {
            "by": Param(
                str,
                "category",
                doc="catalog column: labels (dissimilarity 1 if different) or list/array feature vectors (cosine distance)",
            )
        },
        kind="beyond",
        description="intra-list diversity: mean pairwise dissimilarity of the top-k items",
        aliases=("ild",),
    )
)
register(
    MetricSpec(
        "gini",
        False,
        "optional",
        kind="beyond",
        description="Gini index of item exposure counts in the top k over the whole catalog (population)",
    )
)
register(
    MetricSpec(
        "arp",
        False,
        "optional",
        {"popularity": _POPULARITY},
        kind="beyond",
        description="average recommendation popularity: mean popularity of the top-k items",
    )
)
register(
    MetricSpec(
        "long_tail_share",
        True,
        "optional",
        {
            "popularity": _POPULARITY,
            "tail_quantile": Param(
                float, 0.8, minimum=0.0, maximum=1.0,
                doc="items with popularity <= this quantile (in [0, 1]) of catalog popularity form the long tail",
            ),
        },
        kind="beyond",
        description="share of the top-k items in the long tail (APLT)",
        aliases=("aplt",),
    )
)
register(
    MetricSpec(
        "personalization",
        True,
        "optional",
        {
            "sample": Param(
                int, 1000, minimum=1, maximum=10_000,
                doc="number of requests sampled (seeded) when there are more; cost grows with its square",
            )
        },
        kind="beyond",
        description="1 - mean cosine overlap of the top-k lists over pairs of requests (population)",
    )
)

_PER_REQUEST = ("novelty", "arp", "long_tail_share", "diversity")


def compute(metrics: list[Metric], ctx: EvalContext) -> dict[Metric, MetricStats]:
    """Per-unit statistics of beyond-accuracy ``metrics`` over ``ctx``'s top-k lists.

    Raises
    ------
    UsageError
        No catalog was given.
    InputError
        A recommended item is missing from the catalog, or a catalog column a
        metric needs is missing or invalid.
    """
    if ctx.catalog is None:
        raise no_catalog(metrics)
    lists = _Lists(ctx)
    out: dict[Metric, MetricStats] = {}
    for m in metrics:
        idx = lists.cut(m.k)
        if m.name == "coverage":
            out[m] = _coverage(lists, m.k)
        elif m.name == "gini":
            out[m] = _gini(lists, m.k)
        elif m.name == "personalization":
            out[m] = _personalization(idx, m.param("sample"), lists.n_units)
        elif m.name == "diversity":
            out[m] = _diversity(lists, idx, m)
        elif m.name in _PER_REQUEST:
            out[m] = _popularity_metric(lists, idx, m)
        else:  # pragma: no cover - registry and dispatch out of sync
            raise KeyError(f"no beyond-accuracy kernel for {m}")
    return out


def no_catalog(metrics: list[Metric]) -> UsageError:
    """The error for beyond-accuracy ``metrics`` asked for without a catalog."""
    names = ", ".join(str(m) for m in metrics)
    return UsageError(
        f"{names} need{'s' if len(metrics) == 1 else ''} an item catalog: pass catalog=... (CLI: --catalog PATH) "
        "(a frame or file with an item_id column plus popularity / category columns, "
        "renamed with catalog_columns={'popularity': 'your_name'})"
    )


class _Lists:
    """The top-k lists as catalog positions, plus cached catalog columns."""

    def __init__(self, ctx: EvalContext):
        import numpy as np

        self.catalog: pl.DataFrame = ctx.catalog  # type: ignore[assignment]
        self.n_items = self.catalog.height
        self.n_units = ctx.n_units
        top = ctx.top_rows if ctx.top_rows is not None else np.full((ctx.n_units, 0), -1, dtype=np.int64)
        valid = top >= 0
        pos = _catalog_positions(self.catalog["item_id"], ctx.row_item.gather(top[valid]))
        idx = np.full(top.shape, -1, dtype=np.int64)
        idx[valid] = pos
        self.idx = idx  # (n_units, k_max): catalog position, -1 past the end of a list
        self._columns: dict[str, np.ndarray] = {}
        self._incidence: dict[int | None, tuple[Any, np.ndarray, int]] = {}

    def cut(self, k: int | None) -> np.ndarray:
        return self.idx if k is None else self.idx[:, :k]

    def popularity(self, column: str, metric: Metric) -> np.ndarray:
        """The catalog column as float64, checked: present, numeric, no nulls, finite, >= 0."""
        import numpy as np
        import polars as pl

        if column in self._columns:
            return self._columns[column]
        s = self._column(column, metric, "item popularity")
        violations: list[Violation] = []
        if not (s.dtype.is_numeric() and s.dtype != pl.Boolean):
            raise InputError("catalog", [Violation(column, "must be numeric", s.len(), (f"dtype {s.dtype}",),
                                                   f"{metric} reads item popularity (e.g. interaction counts) from it")])
        if s.null_count():
            violations.append(Violation(column, "must not be null", s.null_count(), _examples(self.catalog, s.is_null()),
                                        "give every catalog item a popularity (0 if never interacted with)"))
        x = s.cast(pl.Float64).fill_null(0.0).to_numpy()
        bad = ~np.isfinite(x) | (x < 0)
        if bad.any():
            violations.append(Violation(column, "must be finite and >= 0", int(bad.sum()),
                                        _examples(self.catalog, pl.Series(bad))))
        if violations:
            raise InputError("catalog", violations)
        self._columns[column] = x
        return x

    def _column(self, column: str, metric: Metric, what: str) -> pl.Series:
        if column not in self.catalog.columns:
            raise InputError("catalog", [Violation(
                column, "required column is missing", self.catalog.height, (),
                f"{metric} reads {what} from catalog column {column!r}; available columns are "
                f"{self.catalog.columns[:12]}; rename yours with catalog_columns={{{column!r}: 'your_name'}} "
                f"or name it in the metric, e.g. '{metric.name}({'by' if metric.name == 'diversity' else 'popularity'}=your_name)'",
            )])
        return self.catalog[column]

    def incidence(self, k: int | None) -> tuple[Any, np.ndarray, int]:
        """Exposure counts of the items shown in some top-k list, by request.

        Returns a sparse 0/1 matrix (n_units, c), the number of items behind
        each column, and the number m of distinct items shown. An item shown
        in one request only gets no column of its own: all such items of a
        request share one column (its exposure under any weights is that
        request's weight), which is exact for coverage and Gini and makes the
        bootstrap's product narrower.
        """
        import numpy as np
        import scipy.sparse as sp

        if k not in self._incidence:
            idx = self.cut(k)
            rows, cols = np.nonzero(idx >= 0)
            items = idx[rows, cols]
            _, item_of, shows = np.unique(items, return_inverse=True, return_counts=True)
            m = len(shows)
            single = shows[item_of] == 1
            # column key: the item for items shown more than once, else -1 - request
            key = np.where(single, -1 - rows, item_of)
            keys, first, col, mult = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            mult = np.where(keys < 0, mult, 1)
            # columns numbered by first appearance (request order): the bootstrap's
            # sparse product then writes its output rows nearly in sequence
            rank = np.argsort(np.argsort(first))
            mat = sp.csr_matrix((np.ones(len(items)), (rows, rank[col])), shape=(self.n_units, len(keys)))
            mat.sum_duplicates()
            mat.data[:] = 1.0  # a request's grouped items: one entry, not their number
            mult = mult[np.argsort(rank)].astype(np.float64)
            self._incidence[k] = (mat, mult, m)
        return self._incidence[k]


def _examples(frame: pl.DataFrame, mask: pl.Series) -> tuple[str, ...]:
    return tuple(repr(v) for v in frame.filter(mask)["item_id"].head(3).to_list())


def _catalog_positions(catalog_ids: pl.Series, items: pl.Series) -> np.ndarray:
    """Catalog row of every recommended item; ids compared as text when the dtypes differ."""
    import polars as pl

    if catalog_ids.dtype != items.dtype:
        catalog_ids = catalog_ids.cast(pl.String)
        items = items.cast(pl.String)
    lookup = pl.DataFrame({"item_id": catalog_ids, "__pos": pl.int_range(catalog_ids.len(), eager=True, dtype=pl.Int64)})
    pos = pl.DataFrame({"item_id": items}).join(lookup, on="item_id", how="left", maintain_order="left")["__pos"]
    missing = pos.null_count()
    if missing:
        absent = items.filter(pos.is_null())
        distinct = absent.n_unique()
        raise InputError("run and catalog", [Violation(
            "item_id",
            "every recommended item must be in the catalog",
            missing,
            tuple(repr(v) for v in absent.unique(maintain_order=True).head(5).to_list()),
            f"{distinct} distinct item{'s' if distinct != 1 else ''} of the top-k lists "
            f"{'are' if distinct != 1 else 'is'} not in the catalog's item_id column; add "
            f"{'them' if distinct != 1 else 'it'} to the catalog (beyond-accuracy metrics never drop items silently)",
        )])
    return pos.to_numpy()


def _mean(values: np.ndarray, defined: np.ndarray, reason: str) -> MetricStats:
    from receval.metrics.base import mean_stats

    if defined.all():
        return mean_stats(values)
    ms = mean_stats(values, defined=defined)
    assert ms.extra is not None
    ms.extra[reason] = int((~defined).sum())
    return ms


def _popularity_metric(lists: _Lists, idx: np.ndarray, m: Metric) -> MetricStats:
    """novelty, arp, long_tail_share: the mean over a list of a per-item value."""
    import numpy as np

    pop = lists.popularity(m.param("popularity"), m)
    if m.name == "novelty":
        # add-one smoothing: defined for items of popularity 0
        item_value = -np.log2((pop + 1.0) / (pop.sum() + len(pop)))
    elif m.name == "arp":
        item_value = pop
    else:  # long_tail_share
        q = m.param("tail_quantile")
        threshold = float(np.quantile(pop, q)) if len(pop) else 0.0
        item_value = (pop <= threshold).astype(np.float64)
    padded = np.append(item_value, 0.0)  # index -1 (past the end of a list) reads the 0
    length = (idx >= 0).sum(axis=1)
    total = padded[idx].sum(axis=1)
    defined = length > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(defined, total / np.maximum(length, 1), np.nan)
    return _mean(values, defined, "requests_with_empty_list")


def _diversity(lists: _Lists, idx: np.ndarray, m: Metric) -> MetricStats:
    """Intra-list diversity: mean dissimilarity over the L(L-1)/2 pairs of a list."""
    import numpy as np
    import polars as pl

    by = m.param("by")
    column = lists._column(by, m, "item categories or feature vectors")
    valid = idx >= 0
    length = valid.sum(axis=1).astype(np.float64)
    shown = np.unique(idx[valid])  # catalog rows of the recommended items
    values_shown = column.gather(shown)
    if values_shown.null_count():
        bad = lists.catalog["item_id"].gather(shown).filter(values_shown.is_null())
        raise InputError("catalog", [Violation(
            by, "must not be null for a recommended item", len(bad), tuple(repr(v) for v in bad.head(3).to_list()),
            f"{m} compares the {by!r} values of the items in each list",
        )])
    local = np.where(valid, np.searchsorted(shown, np.maximum(idx, 0)), -1)
    if isinstance(column.dtype, pl.List | pl.Array):
        vectors = _unit_vectors(values_shown, by, lists.catalog["item_id"].gather(shown))
        # sum_{i<j} cos(x_i, x_j) = (||sum_i x_i||^2 - L) / 2 for unit vectors x_i
        padded = np.vstack([vectors, np.zeros((1, vectors.shape[1]))])
        sq = np.empty(len(idx))
        step = max(1, (1 << 22) // max(1, idx.shape[1] * vectors.shape[1]))
        for s in range(0, len(idx), step):
            total = padded[local[s : s + step]].sum(axis=1)
            sq[s : s + step] = np.einsum("ij,ij->i", total, total)
        # rounding can push 1 - cos a few ulps outside [0, 2]
        similar = np.clip((sq - length) / 2.0, -length * (length - 1) / 2.0, length * (length - 1) / 2.0)
    else:
        if isinstance(values_shown.dtype, pl.Categorical | pl.Enum):
            values_shown = values_shown.cast(pl.String)
        try:
            codes = values_shown.rank("dense").cast(pl.Int64).to_numpy() - 1
        except Exception:  # noqa: BLE001 - e.g. a struct column
            raise InputError("catalog", [Violation(
                by, "must hold category labels or list/array feature vectors", lists.catalog.height,
                (f"dtype {column.dtype}",),
            )]) from None
        # same-category pairs of a list: sum_g c_g (c_g - 1) / 2, c_g its items of category g
        n_codes = int(codes.max()) + 1 if len(codes) else 1
        rows, cols = np.nonzero(valid)
        key = rows * n_codes + codes[local[rows, cols]]
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        sq_counts = np.bincount(rows[first], weights=counts.astype(np.float64) ** 2, minlength=len(idx))
        similar = (sq_counts - length) / 2.0
    pairs = length * (length - 1) / 2.0
    defined = length >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(defined, 1.0 - similar / np.maximum(pairs, 1.0), np.nan)
    return _mean(values, defined, "requests_with_fewer_than_2_items")


def _unit_vectors(values: pl.Series, column: str, ids: pl.Series) -> np.ndarray:
    import numpy as np
    import polars as pl

    def bad(rule: str, mask: np.ndarray, hint: str = "") -> InputError:
        ex = tuple(repr(v) for v in ids.filter(pl.Series(mask)).head(3).to_list())
        return InputError("catalog", [Violation(column, rule, int(mask.sum()), ex, hint)])

    lengths = values.list.len().to_numpy() if isinstance(values.dtype, pl.List) else None
    if lengths is not None and len(lengths) and (lengths != lengths[0]).any():
        raise bad("feature vectors must all have the same length", lengths != np.bincount(lengths).argmax())
    flat = values.explode() if isinstance(values.dtype, pl.List) else values.arr.explode()
    if not flat.dtype.is_numeric():
        raise InputError("catalog", [Violation(column, "feature vectors must be numeric", len(values), (f"dtype {values.dtype}",))])
    d = len(flat) // max(1, len(values))
    x = flat.cast(pl.Float64).to_numpy().reshape(len(values), d)
    broken = ~np.isfinite(x).all(axis=1)
    if broken.any():
        raise bad("feature vectors must be finite (no null or NaN element)", broken)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    if (norm == 0).any():
        raise bad("feature vectors must be non-zero", norm == 0, "cosine distance is undefined for a zero vector")
    return x / norm[:, None]


def _coverage(lists: _Lists, k: int | None) -> MetricStats:
    import numpy as np

    from receval.metrics.base import MetricStats

    mat, mult, m = lists.incidence(k)
    n_items = lists.n_items

    def finish(sums: np.ndarray) -> np.ndarray:
        # items behind the columns with a positive exposure, in slices of columns
        xt = np.asarray(sums, dtype=np.float64).T  # (c, b), C-contiguous from the bootstrap
        shown = np.zeros(xt.shape[1])
        step = max(1, (1 << 21) // max(1, xt.shape[1]))
        for s in range(0, xt.shape[0], step):
            shown += mult[s : s + step] @ (xt[s : s + step] > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return shown / n_items

    return MetricStats(mat, finish, scope="population", extra={"catalog_items": n_items, "recommended_items": m}, recentre=True)


def _gini(lists: _Lists, k: int | None) -> MetricStats:
    from receval.metrics.base import MetricStats

    mat, mult, m = lists.incidence(k)
    n_items = lists.n_items

    def finish(sums: np.ndarray) -> np.ndarray:
        return gini_of_rows(sums, n_items, mult)

    return MetricStats(mat, finish, scope="population", extra={"catalog_items": n_items, "recommended_items": m}, recentre=True)


def gini_of_rows(x: np.ndarray, n_total: int, mult: np.ndarray | None = None) -> np.ndarray:
    """Gini index of each row of ``x`` (b, c), each column standing for ``mult`` items.

    The rows are padded with zeros up to ``n_total`` items (items never shown).
    ``G = sum_i (2i - n - 1) x_(i) / (n sum x)``, x ascending, i = 1..n. With
    integer values (counts under integer bootstrap weights) the sort is
    replaced by a histogram, built in slices of columns to bound memory: the
    h items of value v occupy positions s+1..s+h, which contribute
    ``v * h * (2s + h - n)``. Otherwise each row is sorted. NaN where a row
    sums to 0.
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    b, c = x.shape
    if mult is None:
        mult = np.ones(c)
    m = int(mult.sum())  # items behind the columns
    n = float(n_total)
    xt = x.T  # (c, b): C-contiguous when x is the transpose of a sparse product
    total = x @ mult
    vmax = float(x.max()) if x.size else 0.0
    num = None
    if x.size and vmax < 4 * c + 1024:
        width = int(vmax) + 1
        hist = np.zeros(width * b, dtype=np.float64)
        lane = np.arange(b, dtype=np.int64)
        step = max(1, (1 << 21) // b)
        for s in range(0, c, step):
            part = xt[s : s + step]
            keys = part.astype(np.int64)
            if not np.array_equal(keys, part):
                break  # not counts: sort instead
            keys *= b
            keys += lane
            weights = np.broadcast_to(mult[s : s + step, None], keys.shape)
            hist += np.bincount(keys.ravel(), weights=weights.ravel(), minlength=width * b)
        else:
            h = hist.reshape(width, b)
            h[0] += n_total - m  # items never shown
            before = np.cumsum(h, axis=0) - h
            num = (np.arange(width, dtype=np.float64)[:, None] * h * (2.0 * before + h - n)).sum(axis=0)
    if num is None:
        kernel = _gini_kernel(x)
        if kernel is not None:  # the same sums, sorted by a compiled bucket pass (receval.stats._bootstrap_kernel)
            return kernel(x, n_total, None if (mult == 1).all() else mult)
        coef = 2.0 * np.arange(n_total - m + 1, n_total + 1, dtype=np.float64) - n - 1.0
        num = np.sort(np.repeat(x, mult.astype(np.int64), axis=1), axis=1) @ coef
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (n * total)


#: values per call above which gini_of_rows loads the compiled kernel (importing numba costs ~0.6 s)
GINI_KERNEL_CELLS = 1 << 22


def _gini_kernel(x: np.ndarray) -> Any:
    """The compiled Gini of rows, when it applies (x >= 0) and pays: numba already loaded, or a large x."""
    import sys


    if x.size == 0 or ("receval.stats._bootstrap_kernel" not in sys.modules and x.size < GINI_KERNEL_CELLS):
        return None
    from receval.stats.bootstrap import fused_available

    if not fused_available() or not (x >= 0).all():
        return None
    from receval.stats._bootstrap_kernel import gini_rows

    return gini_rows


def _personalization(idx: np.ndarray, sample: int, n_units: int) -> MetricStats:
    """1 - mean cosine overlap |A ∩ B| / sqrt(|A| |B|) over pairs of distinct (sampled) requests."""
    import numpy as np
    import scipy.sparse as sp

    from receval.metrics.base import MetricStats

    length = (idx >= 0).sum(axis=1)
    nonempty = np.flatnonzero(length > 0)
    if len(nonempty) > sample:
        chosen = np.sort(np.random.default_rng(SAMPLE_SEED).choice(nonempty, size=sample, replace=False))
    else:
        chosen = nonempty
    s = len(chosen)
    extra = {"sampled_requests": s, "requests_with_items": len(nonempty), "sample_seed": SAMPLE_SEED}
    if s < 2:
        def undefined(sums: np.ndarray) -> np.ndarray:
            return np.full(len(sums), np.nan)

        return MetricStats(np.zeros((n_units, 1)), undefined, scope="population", extra=extra, recentre=True)
    sub = idx[chosen]
    rows, cols = np.nonzero(sub >= 0)
    _, col = np.unique(sub[rows, cols], return_inverse=True)
    a = sp.csr_matrix((np.ones(len(rows)), (rows, col)), shape=(s, int(col.max()) + 1))
    overlap = (a @ a.T).tocoo()  # |A ∩ B| for every pair of sampled lists
    off = overlap.row != overlap.col
    r, c = overlap.row[off], overlap.col[off]
    sim = overlap.data[off] / np.sqrt(length[chosen][r].astype(np.float64) * length[chosen][c])
    stats = sp.csr_matrix(
        (np.concatenate([sim, np.ones(s)]), (np.concatenate([chosen[r], chosen]), np.concatenate([c, s + np.arange(s)]))),
        shape=(n_units, 2 * s),
    )

    def finish(sums: np.ndarray) -> np.ndarray:
        sums = np.asarray(sums, dtype=np.float64)
        w_overlap, w = sums[:, :s], sums[:, s:]
        num = (w_overlap * w).sum(axis=1)  # sum_{a != b} w_a w_b O_ab
        total = w.sum(axis=1)
        den = total * total - (w * w).sum(axis=1)  # sum_{a != b} w_a w_b
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - num / den

    return MetricStats(stats, finish, scope="population", extra=extra, recentre=True)
