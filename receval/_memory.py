"""Guards on dense allocations that grow with the product of two input sizes.

A few computations build a dense matrix proportional to, e.g., requests x groups. On inputs where that
cannot fit, receval raises :class:`receval.errors.ResourceError` *before* allocating, instead of being
killed by the operating system half-way. The limit is ``RECEVAL_MAX_DENSE_BYTES`` (bytes) when set,
else half of the machine's physical memory.
"""

from __future__ import annotations

import math
import os

__all__ = ["dense_limit_bytes", "check_dense"]


def dense_limit_bytes() -> int:
    """The largest dense allocation receval attempts: ``RECEVAL_MAX_DENSE_BYTES`` or half the physical memory."""
    env = os.environ.get("RECEVAL_MAX_DENSE_BYTES")
    if env:
        try:
            return max(0, int(float(env)))
        except ValueError:
            from receval.errors import UsageError

            raise UsageError(f"RECEVAL_MAX_DENSE_BYTES must be a number of bytes, got {env!r}") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: a conservative 8 GiB
        total = 16 << 30
    return total // 2


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_dense(what: str, shape: tuple[int, ...], *, itemsize: int = 8, copies: int = 1, hint: str = "") -> None:
    """Raise ResourceError when ``copies`` dense arrays of ``shape`` would exceed :func:`dense_limit_bytes`."""
    need = math.prod(int(s) for s in shape) * itemsize * copies
    limit = dense_limit_bytes()
    if need > limit:
        from receval.errors import ResourceError

        dims = " x ".join(f"{int(s):,}" for s in shape)
        raise ResourceError(
            f"{what} needs {copies} dense array(s) of {dims} ({_size(need)}), above the limit of {_size(limit)} "
            f"(RECEVAL_MAX_DENSE_BYTES, default half the physical memory); refused before allocating"
            + (f". {hint}" if hint else "")
        )
