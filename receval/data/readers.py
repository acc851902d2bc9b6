"""Readers: any supported frame or file -> a polars DataFrame.

Accepted inputs: pandas DataFrame, polars DataFrame or LazyFrame, pyarrow
Table or RecordBatch, and paths to Parquet, CSV/TSV, JSON Lines, TREC run
(``qid Q0 docno rank score tag``) and TREC qrels (``qid iter docno rel``) files.
Nothing is validated here; :func:`receval.data.contract.validate` does that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:
    import polars as pl

__all__ = ["FileFormat", "to_polars", "read_file", "read_trec_run", "read_trec_qrels"]

FileFormat = Literal["auto", "trec", "parquet", "csv", "tsv", "jsonl"]

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".run": "trec",
    ".trec": "trec",
    ".qrels": "trec",
}

_TREC_RUN_COLUMNS = ("request_id", "q0", "item_id", "rank", "score", "tag")
_TREC_QRELS_COLUMNS = ("request_id", "iteration", "item_id", "label")


def to_polars(
    obj: Any,
    *,
    kind: str = "run",
    format: FileFormat = "auto",
    name: str | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Convert a frame or read a file into a polars DataFrame (no validation).

    ``columns``: when given, only those of them that exist are kept (lazy
    frames and files read no other column).
    """
    import polars as pl

    label = name or kind
    if isinstance(obj, pl.DataFrame):
        return obj
    if isinstance(obj, pl.LazyFrame):
        present = obj.collect_schema().names()
        if _projectable(columns, present):
            obj = obj.select([c for c in present if c in columns])  # type: ignore[operator]
        return obj.collect()
    if isinstance(obj, str | os.PathLike):
        frame = read_file(obj, kind=kind, format=format)
        if _projectable(columns, frame.columns):
            frame = frame.select([c for c in frame.columns if c in columns])  # type: ignore[operator]
        return frame
    module = type(obj).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            names = [str(c) for c in obj.columns]
            if _projectable(columns, names) and len(set(names)) == len(names):
                obj = obj[[c for c in obj.columns if str(c) in columns]]
            return _from_pandas(obj, label)
    if module == "pyarrow":
        import pyarrow as pa

        if isinstance(obj, pa.Table | pa.RecordBatch):
            if _projectable(columns, obj.schema.names):
                obj = obj.select([c for c in obj.schema.names if c in columns])  # type: ignore[operator]
            return pl.from_arrow(obj)  # type: ignore[return-value]
    if module == "pyspark":
        raise UsageError(
            f"{label}: a Spark DataFrame is accepted by receval.evaluate and receval.compare (ranking and "
            "calibration metrics) and by the disparity, calibration, exposure, popularity, safety, miscalibration "
            "and drift audits, which run "
            "on Spark (docs/scale.md); this step needs a local frame: collect it (df.toArrow()) or write Parquet"
        )
    raise UsageError(
        f"{label}: expected a pandas/polars/pyarrow frame or a file path, got {type(obj).__name__}"
    )


def _projectable(columns: list[str] | None, present: list[str]) -> bool:
    # keep every column when one is missing: the contract's error then lists
    # what is there and suggests the likely match
    return columns is not None and all(c in present for c in columns)


def _from_pandas(frame: Any, label: str) -> pl.DataFrame:
    import polars as pl

    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise InputError(label, [Violation(str(dup), "column names must be unique", len(frame))])
    try:
        return pl.from_pandas(frame.rename(columns=str), include_index=False)
    except Exception as exc:  # mixed object columns and the like
        bad = []
        for c in frame.columns:
            col = frame[c]
            if col.dtype == object:
                names = col.map(lambda v: type(v).__name__)
                kinds = names.value_counts()
                if len(kinds) > 1:
                    bad.append(
                        Violation(
                            str(c),
                            f"must hold one type; found {', '.join(f'{k} ({n})' for k, n in kinds.items())}",
                            int(len(col) - kinds.iloc[0]),
                            tuple(repr(v) for v in col[names != kinds.index[0]].head(3)),
                            "ids that mix numbers and text ('007' vs 7) are ambiguous; cast the column to str",
                        )
                    )
        if bad:
            raise InputError(label, bad) from None
        raise InputError(label, [Violation("(frame)", f"cannot be converted: {exc}", len(frame))]) from None


def _detect(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    for s in reversed(suffixes):
        if s in (".gz", ".zst", ".bz2"):
            continue
        if s in _EXTENSIONS:
            return _EXTENSIONS[s]
    # unknown extension: a whitespace-separated TREC file has 4 or 6 fields per line
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(first.split()) in (4, 6) and "," not in first:
        return "trec"
    raise UsageError(
        f"cannot tell the format of {path} from its name; pass format='trec', 'parquet', 'csv', 'tsv' or 'jsonl'"
    )


def read_file(path: str | os.PathLike, *, kind: str = "run", format: FileFormat = "auto") -> pl.DataFrame:
    """Read a Parquet, CSV/TSV, JSON Lines or TREC file into polars."""
    import polars as pl

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{kind}: file not found: {path}")
    if path.is_dir() and format in ("auto", "parquet"):
        fmt = "parquet"
    else:
        fmt = _detect(path) if format == "auto" else format
    try:
        if fmt == "parquet":
            target = str(path / "**/*.parquet") if path.is_dir() else path
            return pl.read_parquet(target)
        if fmt in ("csv", "tsv"):
            return pl.read_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema_length=10000)
        if fmt == "jsonl":
            return pl.read_ndjson(path)
        if fmt == "trec":
            return read_trec_qrels(path) if kind == "labels" else read_trec_run(path)
    except (InputError, UsageError):
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{kind}: cannot read {path} as {fmt}: {first}") from None
    raise UsageError(f"unknown format {format!r}; use auto, trec, parquet, csv, tsv or jsonl")


def _read_trec(path: Path, columns: tuple[str, ...], what: str) -> pl.DataFrame:
    import polars as pl

    n = len(columns)
    pattern = r"^\s*" + r"\s+".join([r"(\S+)"] * n) + r"\s*$"
    lines = pl.read_csv(
        path,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["line"],
        schema_overrides={"line": pl.String},
        comment_prefix=None,
    ).with_row_index("line_no", offset=1)
    lines = lines.filter(pl.col("line").str.strip_chars().str.len_bytes() > 0)
    fields = lines.select(
        pl.col("line_no"), pl.col("line"), pl.col("line").str.extract_groups(pattern).alias("f")
    ).unnest("f")
    names = [str(i) for i in range(1, n + 1)]
    fields = fields.rename(dict(zip(names, columns, strict=True)))
    bad = fields.filter(pl.col(columns[0]).is_null())
    if bad.height:
        ex = tuple(f"line {r['line_no']}: {r['line'][:60]!r}" for r in bad.head(3).iter_rows(named=True))
        raise InputError(
            f"{what} file {path}",
            [Violation("(line)", f"must have exactly {n} whitespace-separated fields ({' '.join(columns)})", bad.height, ex)],
        )
    return fields.drop("line_no", "line")


def read_trec_run(path: str | os.PathLike) -> pl.DataFrame:
    """Read a TREC run file: ``qid Q0 docno rank score tag`` per line.

    Ids stay text; the score is parsed as a double (trec_eval 10.0); the rank
    column is ignored by the metrics, as in trec_eval.
    """
    import polars as pl

    frame = _read_trec(Path(path), _TREC_RUN_COLUMNS, "TREC run")
    score = frame["score"].cast(pl.Float64, strict=False)
    bad = frame.filter(score.is_null())
    if bad.height:
        raise InputError(
            f"TREC run file {path}",
            [Violation("score", "must be a number", bad.height, tuple(repr(v) for v in bad["score"].head(3).to_list()))],
        )
    return frame.with_columns(score=score).select("request_id", "item_id", "score", "rank", "tag")


def read_trec_qrels(path: str | os.PathLike) -> pl.DataFrame:
    """Read a TREC qrels file: ``qid iteration docno relevance`` per line."""
    import polars as pl

    frame = _read_trec(Path(path), _TREC_QRELS_COLUMNS, "TREC qrels")
    label = frame["label"].cast(pl.Float64, strict=False)
    bad = frame.filter(label.is_null())
    if bad.height:
        raise InputError(
            f"TREC qrels file {path}",
            [Violation("label", "must be a number", bad.height, tuple(repr(v) for v in bad["label"].head(3).to_list()))],
        )
    return frame.with_columns(label=label).select("request_id", "item_id", "label")
