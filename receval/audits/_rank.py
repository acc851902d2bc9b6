"""Ranking the rows of a run for the audits, and checking them, in time linear in the rows.

``rank_rows(frame, k, by)`` returns the top-k rows of each block (rows sharing
the ``by`` columns, e.g. request_id and sample_id), blocks in ascending ``by``
order, rows by score descending, ties by item id text descending (byte order,
trec_eval's convention), with a 1-based ``rank``: the rows and order of

    frame.sort([*by, "score", item_id as text], descending=[False, ..., True, True])

with ``rank = int_range(1, len + 1).over(by)`` and ``rank <= k``, without
sorting the whole frame: the blocks are found in input order (a stable sort
groups them first when a block's rows are scattered), only the block heads are
sorted, and each block is ordered by score in a compiled kernel; item ids are
read as text only for rows whose score ties within their block.
``repeats_within_blocks`` tells, by item hashes per block, whether an item may
repeat within a block. Without numba, both fall back to polars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

_HASH_SEED = 0x5EED


#: rows from which the compiled helpers are loaded (importing numba costs ~0.6 s; a polars sort of
#: 2M rows about as much); below, they are used only when already loaded
COMPILED_MIN_ROWS = 1 << 21


def _kernels(n_rows: int | None = None, *, loaded_ok: bool = True) -> Any:
    """The compiled helpers (None without numba). With ``n_rows``: only from COMPILED_MIN_ROWS rows
    on, or (``loaded_ok``) when they are loaded already."""
    import sys

    if n_rows is not None and n_rows < COMPILED_MIN_ROWS and not (
            loaded_ok and "receval.audits._rank_kernel" in sys.modules):
        return None
    try:
        from receval.audits import _rank_kernel
    except Exception:  # numba missing or unusable: the numpy / polars paths
        return None
    return _rank_kernel


def _blocks(frame: pl.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pl.DataFrame]:
    """Starts of the runs of equal ``by`` values in row order (and the row count last), and their heads."""
    import polars as pl

    key = pl.col(by[0]) if len(by) == 1 else pl.struct(*by)
    run = frame.select(key.rle_id()).to_series().to_numpy()
    starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]]) if len(run) else np.zeros(0, dtype=np.int64)
    heads = frame.select(*by)[starts]
    return np.append(starts, frame.height).astype(np.int64), heads


def _increasing(heads: pl.DataFrame, by: Sequence[str]) -> bool:
    """Whether the heads are strictly increasing in ``by`` order (then they are also distinct)."""
    import polars as pl

    if heads.height < 2:
        return True
    later = heads.slice(1)
    earlier = heads.slice(0, heads.height - 1)
    after = pl.Series([False] * later.height)
    tied = pl.Series([True] * later.height)
    for c in by:
        a, b = later[c], earlier[c]
        after = after | (tied & (a > b))
        tied = tied & (a == b)
    return bool(after.all())


def _contiguous(heads: pl.DataFrame, by: Sequence[str]) -> bool:
    """Whether every block's rows are contiguous (its ``by`` values head one run only)."""
    import polars as pl

    if _increasing(heads, by):  # the usual case: a run sorted by request
        return True
    key = pl.col(by[0]) if len(by) == 1 else pl.struct(*by)
    return not heads.select(key.is_duplicated().any()).item()


def repeats_within_blocks(frame: pl.DataFrame, by: Sequence[str], item: str = "item_id") -> bool | None:
    """False when no ``item`` value repeats within a block of equal ``by`` values (certain);
    True when one may (equal hashes); None when undecided here (no numba, scattered blocks)."""
    kern = _kernels(frame.height)
    if kern is None or frame.height == 0:
        return None if frame.height else False
    starts, heads = _blocks(frame, by)
    if not _contiguous(heads, by):
        return None
    keys = frame[item].hash(seed=_HASH_SEED).to_numpy()
    return bool(kern.repeats_within(starts, keys))


def rank_rows(frame: pl.DataFrame, k: int | None, by: Sequence[str], *, item: str = "item_id") -> pl.DataFrame:
    """The top-k rows of each block, ranked (see the module doc), with an Int64 column ``rank``.

    ``frame`` holds ``by``, ``score`` (finite Float64) and ``item`` columns, no nulls in them.
    """
    import polars as pl

    kern = _kernels(frame.height)
    if kern is None or frame.height == 0:
        return _rank_polars(frame, k, by, item)
    starts, heads = _blocks(frame, by)
    if not _contiguous(heads, by):
        # a block's rows are scattered: group them (stable: rows keep their order within a block)
        frame = frame.sort(list(by), maintain_order=True)
        starts, heads = _blocks(frame, by)
    if _increasing(heads, by):
        order = np.arange(heads.height, dtype=np.int64)
    else:
        order = heads.select(pl.arg_sort_by(list(by))).to_series().to_numpy().astype(np.int64)
    n = frame.height
    rows = np.empty(n, dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    tie = np.empty(n, dtype=np.int64)
    score = np.ascontiguousarray(frame["score"].to_numpy(), dtype=np.float64)
    if kern.order_within(starts, order, score, rows, rank, tie):
        # runs of equal scores: by item id text, descending
        pos = np.flatnonzero(tie >= 0)
        text = frame[item].gather(rows[pos]).cast(pl.String)
        sub = pl.DataFrame({"t": tie[pos], "text": text})
        perm = sub.select(pl.arg_sort_by(["t", "text"], descending=[False, True])).to_series().to_numpy()
        rows[pos] = rows[pos][perm]
    if k is not None:
        keep = rank <= k
        rows, rank = rows[keep], rank[keep]
    return frame[rows].with_columns(rank=pl.Series("rank", rank, dtype=pl.Int64))


def _rank_polars(frame: pl.DataFrame, k: int | None, by: Sequence[str], item: str) -> pl.DataFrame:
    import polars as pl

    frame = frame.with_columns(__tie=pl.col(item).cast(pl.String))
    frame = frame.sort([*by, "score", "__tie"], descending=[False] * len(by) + [True, True])
    frame = frame.with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(*by)).drop("__tie")
    if k is not None:
        frame = frame.filter(pl.col("rank") <= k)
    return frame


def item_positions(items: pl.Series, catalog_items: pl.Series) -> np.ndarray:
    """Position of each item in ``catalog_items`` (unique ids), -1 when absent.

    Integer ids within a small range: a lookup table; otherwise a join. Ids of
    different types are compared as text, as the audits' joins do.
    """
    import polars as pl

    if items.dtype != catalog_items.dtype:
        items, catalog_items = items.cast(pl.String), catalog_items.cast(pl.String)
    if items.dtype.is_integer() and len(catalog_items) and len(items):
        cat = catalog_items.cast(pl.Int64).to_numpy()
        lo, hi = int(cat.min()), int(cat.max())
        if hi - lo < 4 * (len(cat) + len(items)) + 1024:
            table = np.full(hi - lo + 1, -1, dtype=np.int64)
            table[cat - lo] = np.arange(len(cat), dtype=np.int64)
            x = items.cast(pl.Int64).to_numpy() - lo
            inside = (x >= 0) & (x <= hi - lo)
            if inside.all():  # the usual case: one gather, no masked copies
                return table[x]
            out = np.full(len(x), -1, dtype=np.int64)
            out[inside] = table[x[inside]]
            return out
    left = pl.DataFrame({"k": items})
    right = pl.DataFrame({"k": catalog_items, "p": np.arange(len(catalog_items), dtype=np.int64)})
    return left.join(right, on="k", how="left", maintain_order="left")["p"].fill_null(-1).to_numpy()


def stable_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Stable argsort of integer keys in [0, n_keys) (a counting sort when numba is available)."""
    kern = _kernels(len(keys))
    if kern is None or n_keys > 4 * len(keys) + (1 << 20):
        return np.argsort(keys, kind="stable")
    return kern.counting_order(np.ascontiguousarray(keys, dtype=np.int64), int(n_keys))
