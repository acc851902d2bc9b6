"""A run validated and ranked once, shared by several audits.

``prepare(run, k=...)`` reads the run, checks it (the run contract of the
audits: request_id, item_id, finite numeric score, no nulls, no item twice per
request and sample) and ranks every request's list (score descending, ties by
item id text descending) once. :func:`~receval.audits.exposure.exposure_audit`
and :func:`~receval.audits.popularity.popularity_bias_audit` accept the result
in place of ``run`` and skip those steps; their results are identical to the
calls on the run itself (the same rows in the same order, cut at each audit's
``k``). :func:`~receval.audits.disparity.disparity_audit` accepts it too and
scores the original run (its metrics rank the run as ``receval.evaluate``
does).

When a prepared run cannot reproduce an audit's own reading exactly (a run
with ``sample_id`` column or given as a list of sampled rankings, which
``popularity_bias_audit`` refuses or ranks by request alone), that audit reads
the original run instead: results never depend on whether the run was
prepared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from receval.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = ["PreparedRun", "prepare"]

_RUN_COLUMNS = ["request_id", "item_id", "score", "sample_id", "user_id"]


class PreparedRun:
    """A run checked and ranked once (see :func:`prepare`); pass it as the ``run`` of an audit.

    Attributes: ``source`` (the run as given), ``k`` (the cut of the ranking,
    None: whole lists), ``sampled`` (given as a list of rankings or with a
    ``sample_id`` column), ``n_rows`` (ranked rows kept).
    """

    def __init__(self, source: Any, ranked: pl.DataFrame, k: int | None, sampled: bool):
        self.source = source
        self.k = k
        self.sampled = sampled
        self._ranked = ranked  # request_id, item_id, score, sample_id[, user_id], rank; blocks in order

    @property
    def n_rows(self) -> int:
        return self._ranked.height

    def __repr__(self) -> str:
        return f"PreparedRun(k={self.k}, rows={self.n_rows:,}, sampled={self.sampled})"

    def ranked(self, k: int | None) -> pl.DataFrame:
        """The ranked rows cut at ``k`` (None: all the prepared rows): what ``rank_rows(run, k)`` returns.

        A ranking cut at k is the first k rows of the whole one, so any k up to
        the prepared one is a filter; a larger k (or None) would need rows the
        preparation dropped.
        """
        import polars as pl

        if self.k is not None and (k is None or k > self.k):
            raise UsageError(f"the run was prepared at k={self.k}, the audit asks for k={k}: prepare it with "
                             f"k={'None' if k is None else k} (or larger; None keeps whole lists)")
        if k is None or (self.k is not None and k == self.k):
            return self._ranked
        return self._ranked.filter(pl.col("rank") <= k)


def _load(run: Any) -> Any:
    """The run as a polars frame holding the columns the audits read (a list: one frame per sample)."""
    from receval.data.readers import to_polars

    if isinstance(run, list | tuple):
        return [to_polars(r, kind="run", columns=["request_id", "item_id", "score", "sample_id"]) for r in run]
    return to_polars(run, kind="run", columns=_present(run))


def _present(run: Any) -> list[str] | None:
    """Of the columns the audits read, those the input has (so that a reader keeps only them)."""
    names: list[str] | None = None
    module = type(run).__module__.split(".")[0]
    try:
        if module == "pandas":
            names = [str(c) for c in run.columns]
        elif module == "pyarrow":
            names = list(run.schema.names)
        elif module == "polars" and hasattr(run, "collect_schema"):
            names = list(run.collect_schema().names())
    except Exception:  # noqa: BLE001 - an odd object: the reader reports it
        names = None
    if names is None:
        return None
    present = [c for c in _RUN_COLUMNS if c in names]
    return present or None


def prepare(run: Any, *, k: int | None = None) -> PreparedRun:
    """Check and rank ``run`` once for several audits.

    Parameters
    ----------
    run : what :func:`~receval.audits.exposure.exposure_audit` accepts: a frame
        (polars, pandas, arrow, path) with request_id, item_id, score and
        optionally sample_id and user_id, or a list of frames (sampled
        rankings).
    k : keep the top ``k`` of each list (None: whole lists). Audits may then
        use any k up to it; an audit asking for more raises UsageError.

    Returns
    -------
    PreparedRun : pass it as ``run`` to ``exposure_audit``,
    ``popularity_bias_audit`` and ``disparity_audit``.

    Raises
    ------
    UsageError : bad ``k``.  InputError : bad data (as the audits raise it).
    """
    from receval.audits._rank import rank_rows
    from receval.audits._result import check_k
    from receval.audits.exposure import _run_frame

    check_k(k)
    raw = _load(run)
    sampled = isinstance(raw, list) or "sample_id" in raw.columns
    frame = _run_frame(raw)  # request_id, item_id, score (Float64), sample_id
    if not isinstance(raw, list) and "user_id" in raw.columns:
        frame = frame.with_columns(user_id=raw["user_id"])
    return PreparedRun(run, rank_rows(frame, k, ("request_id", "sample_id")), k, sampled)
