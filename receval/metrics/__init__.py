"""Metric registry and kernels."""

from receval.metrics.registry import REGISTRY, Metric, MetricSpec, parse_metric, parse_metrics

__all__ = ["REGISTRY", "Metric", "MetricSpec", "parse_metric", "parse_metrics"]
