"""Turn validated run and label frames into the kernel's flat arrays.

This is the only place that touches every row besides the kernel itself:
it groups run rows by request (free when the run is already grouped, a single
stable sort otherwise), gives every request a dense code shared by run and
labels, and turns item ids into int64 keys (integer ids as they are; text ids
by a 64-bit hash whose matches are verified against the text, so a collision
can never silently merge two items).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from receval.errors import InputError, Violation
from receval.metrics.ranking import RankingChunk

_HASH_SEED = 0x5EED


@dataclass
class Prepared:
    chunk: RankingChunk
    request_ids: pl.Series  # code -> request id
    n_run_requests: int  # codes [0, n_run_requests) have run rows
    has_labels: np.ndarray  # bool per code
    run_rows: np.ndarray | None  # kernel run row -> input row (None: identity)
    make_exact: Callable[[], RankingChunk]
    run_frame: pl.DataFrame  # the run in kernel row order (all validated columns)


def _harmonise(run: pl.DataFrame, labels: pl.DataFrame, column: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Ids are compared as text when one side has text ids (TREC files)."""
    a, b = run.schema[column], labels.schema[column]
    if a == b:
        return run, labels
    if a == pl.String:
        return run, labels.with_columns(pl.col(column).cast(pl.String))
    return run.with_columns(pl.col(column).cast(pl.String)), labels


def _boundaries(ids: pl.Series) -> np.ndarray:
    if ids.dtype == pl.Int64:
        values = ids.to_numpy()
        change = values[1:] != values[:-1]
    else:
        change = (ids.slice(1) != ids.slice(0, len(ids) - 1)).fill_null(True).to_numpy()
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)


def _hash(items: pl.Series) -> np.ndarray:
    return items.hash(seed=_HASH_SEED).to_numpy().view(np.int64)


def _item_keys(run_items: pl.Series, lab_items: pl.Series, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """int64 keys of run and label items: equal ids <=> equal keys (hashes: up to verification)."""
    if run_items.dtype == pl.Int64:
        return run_items.to_numpy(), lab_items.to_numpy()
    if exact:
        # dense codes over the union of both sides: no hashing, no collision
        codes = pl.concat([run_items, lab_items]).cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()
        return codes[: len(run_items)], codes[len(run_items) :]
    return _hash(run_items), _hash(lab_items)


def _tiebreak_fn(items: pl.Series) -> Callable[[np.ndarray], np.ndarray]:
    if items.dtype == pl.Int64:
        values = items.to_numpy()
        return lambda rows: values[rows].astype(str)
    return lambda rows: np.asarray(items.gather(rows).to_list(), dtype=str)


def _check_label_duplicates(labels: pl.DataFrame) -> None:
    # count the rows that repeat an earlier pair (the same convention as the run)
    dup = labels.select(~pl.struct("request_id", "item_id").is_first_distinct()).to_series()
    if dup.any():
        rows = labels.with_row_index("__row").filter(dup).head(3)
        examples = tuple(
            f"row {r['__row']}: ({r['request_id']!r}, {r['item_id']!r})" for r in rows.iter_rows(named=True)
        )
        raise InputError(
            "labels",
            [
                Violation(
                    "request_id, item_id",
                    "each (request, item) pair must be judged once",
                    int(dup.sum()),
                    examples,
                    "keep one judgement per pair (e.g. the maximum grade) before evaluating",
                )
            ],
        )


def prepare(run: pl.DataFrame, labels: pl.DataFrame) -> Prepared:
    run, labels = _harmonise(run, labels, "request_id")
    run, labels = _harmonise(run, labels, "item_id")
    _check_label_duplicates(labels)

    run_rows: np.ndarray | None = None
    starts = _boundaries(run["request_id"]) if run.height else np.zeros(0, dtype=np.int64)
    block_ids = run["request_id"].gather(starts)
    if block_ids.n_unique() != len(block_ids):
        # a request's rows are scattered: group them with one stable sort
        order = run.select(pl.arg_sort_by("request_id", maintain_order=True)).to_series()
        run = run[order]
        run_rows = order.to_numpy()
        starts = _boundaries(run["request_id"])
        block_ids = run["request_id"].gather(starts)
    n_run_requests = len(starts)
    run_starts = np.append(starts, run.height).astype(np.int64)

    blocks = pl.DataFrame({"request_id": block_ids, "__code": np.arange(n_run_requests, dtype=np.int64)})
    lab = labels.join(blocks, on="request_id", how="left", maintain_order="left")
    only = lab.filter(pl.col("__code").is_null())["request_id"].unique(maintain_order=True)
    if len(only):
        extra = pl.DataFrame({"request_id": only, "__extra": np.arange(len(only), dtype=np.int64) + n_run_requests})
        lab = lab.join(extra, on="request_id", how="left", maintain_order="left").with_columns(
            pl.coalesce("__code", "__extra").alias("__code")
        )
    n_codes = n_run_requests + len(only)
    lab_code = lab["__code"].to_numpy()
    order = np.argsort(lab_code, kind="stable")
    lab = lab[order]
    lab_code = lab_code[order]
    lab_counts = np.bincount(lab_code, minlength=n_codes)
    lab_starts = np.concatenate([[0], np.cumsum(lab_counts)]).astype(np.int64)
    run_starts = np.concatenate([run_starts, np.full(len(only), run.height, dtype=np.int64)])

    run_items, lab_items = run["item_id"], lab["item_id"]
    score = run["score"].to_numpy()
    grade = lab["label"].to_numpy()
    text = run_items.dtype == pl.String

    def build(exact: bool) -> RankingChunk:
        verify = verify_run = None
        if text and not exact:
            def verify(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                return (run_items.gather(a) == lab_items.gather(b)).to_numpy()

            def verify_run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                return (run_items.gather(a) == run_items.gather(b)).to_numpy()

        run_keys, lab_keys = _item_keys(run_items, lab_items, exact)
        return RankingChunk(
            run_starts=run_starts,
            item_key=run_keys,
            score=score,
            lab_starts=lab_starts,
            lab_item_key=lab_keys,
            grade=grade,
            tiebreak=_tiebreak_fn(run_items),
            verify=verify,
            verify_run=verify_run,
        )

    return Prepared(
        chunk=build(exact=False),
        request_ids=pl.concat([block_ids, only]) if len(only) else block_ids,
        n_run_requests=n_run_requests,
        has_labels=lab_counts > 0,
        run_rows=run_rows,
        make_exact=lambda: build(exact=True),
        run_frame=run,
    )
