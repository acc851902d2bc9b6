"""Statistics on per-unit vectors: bootstrap intervals (tests and corrections follow)."""

from receval.stats.bootstrap import BootstrapResult, bootstrap_means

__all__ = ["BootstrapResult", "bootstrap_means"]
