"""Fairness and data-quality gates (read the disparity and data-quality audit results)."""

from __future__ import annotations

from typing import Any


def fairness_gate(spec, audit: Any, make, GateError, level: float) -> dict[str, Any]:
    raise GateError("the fairness gate is not supported by this receval version")


def data_quality_gate(spec, reports: Any, make, GateError, all_of) -> dict[str, Any]:
    raise GateError("the data-quality gate is not supported by this receval version")
