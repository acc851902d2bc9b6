"""Data contract and readers (canonical columns, column mapping, schemas, file formats)."""

from receval.data.contract import CANONICAL_COLUMNS, FRAME_KINDS, ColumnMapping, schema, validate
from receval.data.readers import read_file, read_trec_qrels, read_trec_run, to_polars

__all__ = [
    "CANONICAL_COLUMNS",
    "FRAME_KINDS",
    "ColumnMapping",
    "schema",
    "validate",
    "read_file",
    "read_trec_qrels",
    "read_trec_run",
    "to_polars",
]
