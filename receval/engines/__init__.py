"""Engines that run the reduce step: in memory (polars), out of core, or on Spark.

* ``"polars"`` — the embedded default: the input becomes one polars frame and
  one request-complete chunk (:mod:`receval.evaluation`).
* ``"streaming"`` — Parquet inputs larger than memory: polars' streaming
  engine validates the input and hash-partitions it by request into buckets
  on disk; each bucket is one request-complete chunk (:mod:`.streaming`).
* ``"spark"`` — a PySpark DataFrame (or a path read by Spark): repartitioned
  by request, each partition streamed through the same numpy kernel with
  ``mapInArrow`` (:mod:`.spark`).

The off-policy estimators run on Spark too (:mod:`.spark_ope`:
``logged_feedback`` on Spark DataFrames, the estimators' own per-row columns
summed per request inside ``mapInArrow``).

The chunked engines share the per-chunk code (:mod:`._chunks`) and the driver
side that turns per-request rows into statistics (:mod:`._assemble`), so a
metric is defined once and computed by the same numpy code everywhere.

Nothing here imports pyspark: a Spark DataFrame is recognised by the module
name of its class, and pyspark is imported only when one is passed.
"""

from __future__ import annotations

from typing import Any, Literal

from receval.errors import UsageError

__all__ = ["Engine", "ENGINES", "is_spark_frame", "resolve_engine"]

Engine = Literal["auto", "polars", "streaming", "spark"]
ENGINES = ("auto", "polars", "streaming", "spark")


def is_spark_frame(obj: Any) -> bool:
    """True for a PySpark DataFrame (classic or Spark Connect), without importing pyspark."""
    cls = type(obj)
    return cls.__module__.split(".")[0] == "pyspark" and cls.__name__ == "DataFrame"


def resolve_engine(engine: str, *frames: Any) -> str:
    """The engine to use: ``"auto"`` picks Spark when any input is a Spark DataFrame."""
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    spark_inputs = any(is_spark_frame(f) for f in frames if f is not None)
    if engine == "auto":
        return "spark" if spark_inputs else "polars"
    if spark_inputs and engine != "spark":
        raise UsageError(
            f"engine={engine!r} cannot read a Spark DataFrame; use engine='spark' (or 'auto'), "
            "or collect the frame first (df.toArrow())"
        )
    return engine
