"""Ranking metrics: the per-request reduce kernel.

The kernel takes a *chunk of complete requests* as flat numpy arrays (run rows
contiguous by request, labels contiguous by request) and returns one value per
request and metric. It never loops over requests in Python: requests are
grouped into buckets of similar list length, each bucket is laid out as a
padded 2-D matrix (one row per request), and sorting, label matching and every
metric are whole-matrix numpy operations. Small rows sort fast (the rows fit in
cache), which is why this beats a global multi-key sort by an order of
magnitude.

Because the kernel only needs complete requests, the same function runs
unchanged on any engine that can hand it request-complete chunks (the polars
path here; Spark's ``mapInArrow`` over request-partitioned data later).

Conventions (trec_eval 10.0, see docs/metrics.md):

* order by score descending, ties broken by item id descending in byte order
  (integer ids compare by their decimal text, as trec_eval would see them);
* labels: grade > 0 gives gain; grade >= ``min_label`` is relevant; negative
  grades are judged-not-relevant; items absent from the labels are not
  relevant;
* R counts every relevant label of the request, retrieved or not;
* a request with no relevant item scores 0 on every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from receval.metrics.registry import Metric

__all__ = ["RankingChunk", "ChunkScores", "DuplicateItems", "HashCollision", "score_chunk"]

# Upper bound on matrix cells processed at once: bounds memory (about 20
# float64/int64 matrices of this many cells live at a time) and keeps the
# working set cache-friendly.
CELL_BUDGET = 1 << 21


class DuplicateItems(Exception):
    """Raised by the kernel when a request lists an item twice."""

    def __init__(self, side: str, n_rows: int, example_rows: np.ndarray):
        super().__init__(side)
        self.side = side
        self.n_rows = n_rows
        self.example_rows = example_rows


class HashCollision(Exception):
    """Two different text ids hashed to the same key inside one request."""


@dataclass
class RankingChunk:
    """Flat arrays for a set of complete requests (codes 0..n_requests-1).

    ``run_starts`` / ``lab_starts`` have length ``n_requests + 1``: rows of
    request ``q`` are ``starts[q]:starts[q+1]``. Requests may have no run rows
    (judged but not retrieved) or no label rows.
    """

    run_starts: np.ndarray  # int64, (Q+1,)
    item_key: np.ndarray  # int64, (n_run,): equal ids <=> equal keys (up to verify)
    score: np.ndarray  # float64, (n_run,)
    lab_starts: np.ndarray  # int64, (Q+1,)
    lab_item_key: np.ndarray  # int64, (n_lab,)
    grade: np.ndarray  # float64, (n_lab,)
    tiebreak: Callable[[np.ndarray], np.ndarray]
    """run row indices -> sortable array (byte order of the id text)."""
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    """(run rows, label rows) -> exact equality, when keys are hashes."""
    verify_run: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    """(run rows, run rows) -> exact equality, when keys are hashes."""

    @property
    def n_requests(self) -> int:
        return len(self.run_starts) - 1


def _gain(grades: np.ndarray, kind: str) -> np.ndarray:
    positive = grades > 0
    if kind == "linear":
        return np.where(positive, grades, 0.0)
    return np.where(positive, np.expm1(grades * np.log(2.0)), 0.0)


class _LabelStats:
    """Per-request quantities that depend on the labels only (R, ideal DCG)."""

    def __init__(self, chunk: RankingChunk):
        self.chunk = chunk
        q = chunk.n_requests
        self.code = np.repeat(np.arange(q, dtype=np.int64), np.diff(chunk.lab_starts))
        self._r: dict[float, np.ndarray] = {}
        self._idcg: dict[tuple[str, int | None], np.ndarray] = {}
        self._ideal_rank: tuple[np.ndarray, np.ndarray] | None = None

    def n_relevant(self, threshold: float) -> np.ndarray:
        if threshold not in self._r:
            rel = (self.chunk.grade >= threshold).astype(np.float64)
            self._r[threshold] = np.bincount(
                self.code, weights=rel, minlength=self.chunk.n_requests
            )
        return self._r[threshold]

    def idcg(self, gain: str, k: int | None) -> np.ndarray:
        key = (gain, k)
        if key not in self._idcg:
            grade = self.chunk.grade
            if self._ideal_rank is None:
                # grades descending within each request: the ideal ranking
                order = np.lexsort((-grade, self.code))
                rank = np.arange(len(grade)) - self.chunk.lab_starts[self.code[order]]
                self._ideal_rank = (order, rank)
            order, rank = self._ideal_rank
            contrib = _gain(grade[order], gain) / np.log2(rank + 2.0)
            if k is not None:
                contrib = np.where(rank < k, contrib, 0.0)
            # summed in rank order, like DCG, so an ideal ranking gives exactly 1
            self._idcg[key] = _sequential_group_sums(contrib, self.chunk.lab_starts)
        return self._idcg[key]


def _sequential_group_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum each group ``values[starts[q]:starts[q+1]]`` left to right.

    Sequential (not pairwise) summation in the given order, the way trec_eval
    accumulates DCG; groups are padded into row-wise matrices by length bucket.
    """
    lens = np.diff(starts)
    out = np.zeros(len(lens), dtype=np.float64)
    present = np.flatnonzero(lens > 0)
    if len(present) == 0:
        return out
    bucket = np.ceil(np.log2(lens[present])).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    edges = np.flatnonzero(np.diff(bucket[order])) + 1
    for group in np.split(present[order], edges):
        width = int(lens[group].max())
        step = max(1, CELL_BUDGET // width)
        for s in range(0, len(group), step):
            rows = group[s : s + step]
            cols = np.arange(width)
            valid = cols < lens[rows][:, None]
            pos = np.where(valid, starts[rows][:, None] + cols, 0)
            matrix = np.where(valid, values[pos], 0.0)
            out[rows] = np.cumsum(matrix, axis=1)[:, -1]
    return out


def _fix_ties(keys_sorted: np.ndarray, order: np.ndarray, pos: np.ndarray, chunk: RankingChunk) -> np.ndarray:
    """Reorder runs of equal scores by item id descending (byte order).

    Only cells inside tie blocks are touched, so the cost is proportional to
    the number of tied items, not to the table.
    """
    eq = keys_sorted[:, 1:] == keys_sorted[:, :-1]
    if not eq.any():
        return eq
    in_block = np.zeros(keys_sorted.shape, dtype=bool)
    in_block[:, 1:] |= eq
    in_block[:, :-1] |= eq
    r, c = np.nonzero(in_block)
    start = np.ones(len(r), dtype=bool)
    inner = c > 0
    start[inner] = ~eq[r[inner], c[inner] - 1]
    block = np.cumsum(start) - 1
    old = order[r, c]
    tb = chunk.tiebreak(pos[r, old])
    asc = np.lexsort((tb, block))  # ascending id within each block
    bounds = np.flatnonzero(start)
    ends = np.append(bounds[1:], len(r))
    t = np.arange(len(r))
    src = asc[bounds[block] + ends[block] - 1 - t]  # mirror: descending id
    order[r, c] = old[src]
    return eq


def _lower_bound(sorted_rows: np.ndarray, row: np.ndarray, target: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Vectorised binary search: first column of ``sorted_rows[row]`` >= target."""
    lo = np.zeros(len(row), dtype=np.int64)
    hi = length.astype(np.int64, copy=True)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        below = sorted_rows[row, np.minimum(mid, sorted_rows.shape[1] - 1)] < target
        go_right = active & below
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


def _match_labels(chunk: RankingChunk, rows: np.ndarray, pos: np.ndarray, valid: np.ndarray, lens: np.ndarray):
    """Grades of the run cells of one block of requests (0 where unjudged).

    Also detects duplicate items within a request.
    """
    nr, width = pos.shape
    items = np.where(valid, chunk.item_key[pos], np.iinfo(np.int64).max)
    iorder = np.argsort(items, axis=1, kind="stable")  # pads (max) stay after real ids
    isorted = np.take_along_axis(items, iorder, axis=1)
    vsorted = np.take_along_axis(valid, iorder, axis=1)
    dup = (isorted[:, 1:] == isorted[:, :-1]) & vsorted[:, 1:] & vsorted[:, :-1]
    repeats = np.zeros(0, dtype=np.int64)
    if dup.any():
        dr, dc = np.nonzero(dup)
        a = pos[dr, iorder[dr, dc]]
        repeats = pos[dr, iorder[dr, dc + 1]]  # stable sort: the later occurrence
        if chunk.verify_run is not None and not chunk.verify_run(a, repeats).all():
            raise HashCollision()

    grades = np.zeros((nr, width), dtype=np.float64)
    judged = np.zeros((nr, width), dtype=bool)
    lab_lens = chunk.lab_starts[rows + 1] - chunk.lab_starts[rows]
    total = int(lab_lens.sum())
    if total:
        lr = np.repeat(np.arange(nr), lab_lens)
        offsets = np.cumsum(lab_lens) - lab_lens
        li = np.repeat(chunk.lab_starts[rows], lab_lens) + (np.arange(total) - np.repeat(offsets, lab_lens))
        target = chunk.lab_item_key[li]
        lo = _lower_bound(isorted, lr, target, lens[lr])
        found = lo < lens[lr]
        found[found] = isorted[lr[found], lo[found]] == target[found]
        fr, fl, fli = lr[found], lo[found], li[found]
        col = iorder[fr, fl]
        if chunk.verify is not None and len(fr) and not chunk.verify(pos[fr, col], fli).all():
            raise HashCollision()
        grades[fr, col] = chunk.grade[fli]
        judged[fr, col] = True
    return grades, judged, repeats


def _tie_block_mean_rank(eq: np.ndarray, width: int) -> np.ndarray:
    """1-based average rank of each cell's block of equal scores."""
    nr = eq.shape[0]
    cols = np.broadcast_to(np.arange(width), (nr, width))
    new_block = np.ones((nr, width), dtype=bool)
    if width > 1 and eq.size:
        new_block[:, 1:] = ~eq
    block_end = np.ones((nr, width), dtype=bool)
    if width > 1 and eq.size:
        block_end[:, :-1] = ~eq
    first = np.maximum.accumulate(np.where(new_block, cols, 0), axis=1)
    last = np.minimum.accumulate(np.where(block_end, cols, width)[:, ::-1], axis=1)[:, ::-1]
    return (first + last) / 2.0 + 1.0


def _block_values(
    metrics: Sequence[Metric],
    grades: np.ndarray,
    valid: np.ndarray,
    lens: np.ndarray,
    eq: np.ndarray,
    rows: np.ndarray,
    stats: _LabelStats,
    out: dict[Metric, np.ndarray],
) -> None:
    nr, width = grades.shape
    ranks = np.arange(1, width + 1, dtype=np.float64)
    cache: dict[tuple, np.ndarray] = {}

    def rel_of(t: float) -> np.ndarray:
        key = ("rel", t)
        if key not in cache:
            cache[key] = (grades >= t) & valid
        return cache[key]

    def cum_of(t: float) -> np.ndarray:
        key = ("cum", t)
        if key not in cache:
            cache[key] = np.cumsum(rel_of(t), axis=1, dtype=np.int64)
        return cache[key]

    def at_cut(cum: np.ndarray, k: int | None) -> np.ndarray:
        return cum[:, (width if k is None else min(k, width)) - 1]

    for metric in metrics:
        name, k = metric.name, metric.k
        if name == "ndcg":
            gain = metric.param("gain")
            g = _gain(grades, gain)
            kk = width if k is None else min(k, width)
            dcg = np.cumsum(g[:, :kk] / np.log2(ranks[:kk] + 1.0), axis=1)[:, -1]
            ideal = stats.idcg(gain, k)[rows]
            val = np.divide(dcg, ideal, out=np.zeros(nr), where=ideal > 0)
        else:
            t = metric.param("min_label")
            n_rel = stats.n_relevant(t)[rows]
            has = n_rel > 0
            if name == "map":
                rel, cum = rel_of(t), cum_of(t)
                kk = width if k is None else min(k, width)
                # summed left to right in rank order, as trec_eval does: a row-wise
                # .sum() is pairwise and its rounding would depend on the padded
                # width, i.e. on which other requests share the block
                prec = np.cumsum(np.where(rel[:, :kk], cum[:, :kk] / ranks[:kk], 0.0), axis=1)[:, -1]
                val = np.divide(prec, n_rel, out=np.zeros(nr), where=has)
            elif name == "mrr":
                rel = rel_of(t)
                kk = width if k is None else min(k, width)
                first = np.argmax(rel[:, :kk], axis=1)
                hit = rel[np.arange(nr), first]
                val = np.where(hit, 1.0 / (first + 1.0), 0.0)
            elif name == "precision":
                val = at_cut(cum_of(t), k) / float(k)  # type: ignore[arg-type]
            elif name == "recall":
                val = np.divide(at_cut(cum_of(t), k), n_rel, out=np.zeros(nr), where=has)
            elif name == "hit":
                val = (at_cut(cum_of(t), k) > 0).astype(np.float64)
            elif name == "r_precision":
                cum = cum_of(t)
                idx = np.clip(n_rel.astype(np.int64) - 1, 0, width - 1)
                found = cum[np.arange(nr), idx]
                val = np.divide(found, n_rel, out=np.zeros(nr), where=has)
            elif name == "auc":
                rel = rel_of(t)
                n_pos = rel.sum(axis=1).astype(np.float64)
                n_neg = lens - n_pos
                if metric.param("ties") == "average":
                    rank_of_cell = _tie_block_mean_rank(eq, width)
                else:
                    rank_of_cell = np.broadcast_to(ranks, (nr, width))
                sum_rank = np.where(rel, rank_of_cell, 0.0).sum(axis=1)
                u = n_pos * lens - sum_rank - n_pos * (n_pos - 1.0) / 2.0
                pairs = n_pos * n_neg
                val = np.divide(u, pairs, out=np.zeros(nr), where=pairs > 0)
                # a list with relevant items and nothing to misorder is perfect
                val = np.where((n_pos > 0) & (n_neg == 0), 1.0, val)
            else:  # pragma: no cover - registry and kernel out of sync
                raise KeyError(f"no kernel for metric {metric}")
            val = np.where(has, val, 0.0)
        out[metric][rows] = val


@dataclass
class ChunkScores:
    """What the kernel returns for one chunk.

    ``values``: metric -> per-request values. ``row_grade``: the matched label
    grade of every run row (0 where unjudged), when asked for. ``top``: per
    request, the run rows at ranks 1..k (-1 past the end of the list), when
    asked for.
    """

    values: dict[Metric, np.ndarray]
    row_grade: np.ndarray | None = None
    top: np.ndarray | None = None


def score_chunk(
    chunk: RankingChunk,
    metrics: Sequence[Metric],
    *,
    row_grades: bool = False,
    top_k: int = 0,
) -> ChunkScores:
    """Per-request values of ``metrics`` for every request of ``chunk``.

    Requests without run rows score 0. Raises :class:`DuplicateItems` when a
    request lists an item twice and :class:`HashCollision` if hashed text ids
    collide (the caller then retries with exact keys). ``row_grades`` and
    ``top_k`` ask for the per-row grades and the top-k run rows, which the
    calibration and beyond-accuracy metrics consume.
    """
    q = chunk.n_requests
    out = {m: np.zeros(q, dtype=np.float64) for m in metrics}
    row_grade = np.zeros(len(chunk.score), dtype=np.float64) if row_grades else None
    top = np.full((q, top_k), -1, dtype=np.int64) if top_k else None
    stats = _LabelStats(chunk)
    duplicates: list[np.ndarray] = []
    lens_all = np.diff(chunk.run_starts)
    present = np.flatnonzero(lens_all > 0)
    if len(present) == 0:
        return ChunkScores(out, row_grade, top)
    # bucket requests by list length (powers of two) so padding stays < 2x
    bucket = np.ceil(np.log2(lens_all[present])).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    bucket_sorted = bucket[order]
    edges = np.flatnonzero(np.diff(bucket_sorted)) + 1
    for group in np.split(present[order], edges):
        width = int(lens_all[group].max())
        step = max(1, CELL_BUDGET // width)
        for s in range(0, len(group), step):
            rows = group[s : s + step]
            lens = lens_all[rows]
            cols = np.arange(width)
            valid = cols < lens[:, None]
            pos = np.where(valid, chunk.run_starts[rows][:, None] + cols, 0)
            keys = np.where(valid, -chunk.score[pos], np.nan)  # NaN pads sort last
            order_ = np.argsort(keys, axis=1)
            keys_sorted = np.take_along_axis(keys, order_, axis=1)
            eq = _fix_ties(keys_sorted, order_, pos, chunk)
            grades, _, repeats = _match_labels(chunk, rows, pos, valid, lens)
            if len(repeats):
                duplicates.append(repeats)
                continue
            if row_grade is not None:
                row_grade[pos[valid]] = grades[valid]
            if top is not None:
                kk = min(top_k, width)
                ranked = np.take_along_axis(pos, order_[:, :kk], axis=1)
                top[rows, :kk] = np.where(valid[:, :kk], ranked, -1)
            grades = np.take_along_axis(grades, order_, axis=1)
            _block_values(metrics, grades, valid, lens.astype(np.float64), eq, rows, stats, out)
    if duplicates:
        rows_ = np.sort(np.concatenate(duplicates))
        raise DuplicateItems("run", len(rows_), rows_)
    return ChunkScores(out, row_grade, top)
