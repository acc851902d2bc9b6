"""Fused Poisson(1) bootstrap kernel (numba): replicate sums without a weight matrix.

For B replicates, n units and a per-unit statistics matrix x of k columns the
kernel computes S[b, :] = sum_i w_bi x_i with w_bi ~ Poisson(1), generating
each weight where it is consumed, so the B x n weight matrix never exists.
Importing this module imports numba; ``receval.stats.bootstrap`` imports it
only when the fused scheme runs.

The weights (counter-based: each is a function of (seed, b, i) alone):

* The seed goes through ``numpy.random.SeedSequence`` to one 64-bit root r.
* Replicate b owns a SplitMix64 stream (Steele, Lea & Flood 2014), the b-th
  "split" of a root stream: start s_b = mix64(r + (2b+1) G) and increment
  g_b = mix_gamma(r + (2b+2) G), with G = 0x9E3779B97F4A7C15. The increment
  is odd with enough bit flips, so replicates walk different Weyl sequences.
* Output j of that stream is the 64-bit word u_j = mix64(s_b + (j+1) g_b)
  (arithmetic mod 2^64); its two 32-bit halves are two uniforms. Unit i of
  replicate b takes half i mod 2 of output floor(i / 2): the low 32 bits for
  an even i, the high 32 bits for an odd i.
* Its weight is the Poisson(1) quantile of that 32-bit uniform h, the number
  of thresholds T_k = round(2^32 P(X <= k)) with h >= T_k; the CDF is computed
  in 60-digit decimal arithmetic, so every P(W <= k) is within 2^-33 (1.2e-10)
  of the Poisson(1) CDF, and weights run from 0 to 12 (P(X > 12) = 1.1e-10 is
  folded into 12).

Why 32-bit halves: one 64-bit mix serves two units, and comparisons in 32-bit
lanes cost half of those in 64-bit lanes; with the threshold count done as a
branch-free binary search (``_count8``), a weight costs about half of what one
exact 64-bit quantile per unit with eight comparisons did. A distribution
error of 1e-10 per probability is far below anything a bootstrap of 1,000
replicates can resolve (its own Monte Carlo error is ~1e-2 relative).

A weight does not depend on n, on how units are chunked, on how replicates are
split among threads, or on which statistics ride along; ``reference_weights``
recomputes them in pure Python. Each replicate's sums are accumulated in a
fixed order (unit chunks of fixed size, aligned groups of four replicates, the
same vectorised loop for every column), so they are identical for any number of
threads and do not depend on the other columns; columns of small integers
(counts, ones) are summed exactly.
"""

from __future__ import annotations

import decimal
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba as nb
import numpy as np

__all__ = ["gini_rows", "poisson_group_sums", "poisson_segment_sums", "poisson_sums", "poisson_sums_csc", "poisson_sums_csr", "poisson_thresholds", "poisson_weights",
           "reference_weights", "root_key"]

if sys.byteorder != "little":  # _chunk_weights reads a uint64 buffer as its 32-bit halves, low half first
    raise ImportError("receval's compiled bootstrap kernel assumes a little-endian machine")

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
UNIT_CHUNK = 512  # units per chunk: the weight buffers and the column chunks stay in L1/L2
REPLICATE_BLOCK = 32  # replicates sharing one read of the statistics matrix (a multiple of GROUP)
MIN_THREADED_CELLS = 1 << 22  # below this many (replicate, unit) cells one thread is faster than a pool
GROUP = 4  # replicates summed together: each column chunk is loaded once for four
_FAST = 8  # thresholds resolved for every weight (_count8); the rare h >= T_7 (P = 1.0e-5) are refined
LINE = 64  # bytes of a cache line: the narrowest row of the CSC kernel's weight matrix
LANES = 2 * LINE  # replicates of one 64-byte row of the CSC kernel: 4 bits per weight
WIDE_LINES = 4  # cache lines per unit at most in the CSC kernel (512 replicates per pass)
WIDE_LANES = 2 * LINE * WIDE_LINES
LANE_BYTES_MAX = 256 << 20  # the CSC kernel's weight matrix (units x row bytes) stays below this
PREFETCH = 16  # entries ahead whose weights the CSC kernel asks the CPU to load
RUN_MAX = 3000  # entries of a run summed as 16-bit integers at most (15 * 3000 < 2^16)


BITS = 32  # bits of the uniform each weight inverts: half of one 64-bit output


def poisson_thresholds() -> np.ndarray:
    """T_k = round(2^32 P(X <= k)) for Poisson(1) X, every k with T_k < 2^32 (12 values: weights 0..12)."""
    ctx = decimal.Context(prec=60)
    e_inv = ctx.exp(decimal.Decimal(-1))
    scale = decimal.Decimal(2**BITS)
    out: list[int] = []
    cdf = decimal.Decimal(0)
    for k in range(64):
        cdf = ctx.add(cdf, ctx.divide(e_inv, decimal.Decimal(math.factorial(k))))
        t = int(ctx.multiply(cdf, scale).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
        if t >= 2**BITS:
            break
        out.append(t)
    return np.array(out, dtype=np.uint32)


def root_key(seed: int | None) -> int:
    """The 64-bit root of the replicate streams for a seed (None: fresh entropy)."""
    return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0])


# ---------------------------------------------------------------------------
# pure-Python reference (slow; the tests compare the kernel with it)
# ---------------------------------------------------------------------------


def _py_mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _py_mix_gamma(z: int) -> int:
    z = ((z ^ (z >> 33)) * 0xFF51AFD7ED558CCD) & MASK64
    z = ((z ^ (z >> 33)) * 0xC4CEB9FE1A85EC53) & MASK64
    z = (z ^ (z >> 33)) | 1
    if bin(z ^ (z >> 1)).count("1") < 24:
        z ^= 0xAAAAAAAAAAAAAAAA
    return z


def reference_weights(root: int, replicates: range, units: range) -> np.ndarray:
    """Weights of the given replicates (rows) and units (columns), in pure Python (slow: tests)."""
    t = [int(v) for v in poisson_thresholds()]
    out = np.empty((len(replicates), len(units)), dtype=np.uint8)
    for r, b in enumerate(replicates):
        s = _py_mix64((root + (2 * b + 1) * GOLDEN) & MASK64)
        g = _py_mix_gamma((root + (2 * b + 2) * GOLDEN) & MASK64)
        for c, i in enumerate(units):
            u = _py_mix64((s + ((i >> 1) + 1) * g) & MASK64)
            h = (u >> (32 * (i & 1))) & 0xFFFFFFFF
            out[r, c] = sum(h >= tk for tk in t)
    return out


# ---------------------------------------------------------------------------
# compiled kernels
# ---------------------------------------------------------------------------

_U64 = nb.types.uint64


@nb.njit(inline="always")
def _mix64(z):
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


@nb.njit(inline="always")
def _mix_gamma(z):
    z = (z ^ (z >> _U64(33))) * _U64(0xFF51AFD7ED558CCD)
    z = (z ^ (z >> _U64(33))) * _U64(0xC4CEB9FE1A85EC53)
    z = (z ^ (z >> _U64(33))) | _U64(1)
    v = z ^ (z >> _U64(1))
    flips = 0
    while v:
        v &= v - _U64(1)
        flips += 1
    if flips < 24:
        z ^= _U64(0xAAAAAAAAAAAAAAAA)
    return z


@nb.njit(cache=True)
def _streams(root, b0, b1):
    starts = np.empty(b1 - b0, dtype=np.uint64)
    gammas = np.empty(b1 - b0, dtype=np.uint64)
    g = _U64(GOLDEN)
    for b in range(b0, b1):
        starts[b - b0] = _mix64(root + _U64(2 * b + 1) * g)
        gammas[b - b0] = _mix_gamma(root + _U64(2 * b + 2) * g)
    return starts, gammas


@nb.njit(inline="always")
def _quantile(u, t):
    w = 0
    while w < len(t) and u >= t[w]:
        w += 1
    return w


@nb.njit(inline="always")
def _count8(x, t0, t1, t2, t3, t4, t5, t6, t7):
    """How many of the first eight thresholds x reaches: the weight, unless x >= T_7 (then refine).

    A branch-free binary search over T_0..T_6 (three comparisons, the thresholds
    picked by selects), then T_7: vectorised, it costs about two thirds of
    eight comparisons and their sum.
    """
    b2 = x >= t3
    c = np.int32(4) if b2 else np.int32(0)
    b1 = x >= (t5 if b2 else t1)
    c += np.int32(2) if b1 else np.int32(0)
    c += np.int32(x >= ((t6 if b2 else t2) if b1 else (t4 if b2 else t0)))
    return c + np.int32(x >= t7)


@nb.njit(inline="always")
def _count8_u8(x, t0, t1, t2, t3, t4, t5, t6, t7):
    """_count8 with byte constants, for the kernels that store byte weights: they then vectorise
    four times wider (a byte cast of _count8's int32 measured 15-20% slower in those kernels)."""
    b2 = x >= t3
    c = np.uint8(4) if b2 else np.uint8(0)
    b1 = x >= (t5 if b2 else t1)
    c += np.uint8(2) if b1 else np.uint8(0)
    c += np.uint8(x >= ((t6 if b2 else t2) if b1 else (t4 if b2 else t0)))
    return c + np.uint8(x >= t7)


@nb.njit(inline="always")
def _dot4(xj, w0, w1, w2, w3, m):
    """sum_i w_r[i] xj[i] for the four weight rows of a replicate group, one load of xj for all four."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for i in range(m):
        x = xj[i]
        a0 += w0[i] * x
        a1 += w1[i] * x
        a2 += w2[i] * x
        a3 += w3[i] * x
    return a0, a1, a2, a3


@nb.njit(inline="always")
def _halves(u, i):
    """The 32-bit uniform of unit i in its stream's output u: the low half for an even i, the high for an odd."""
    return np.uint32((u >> _U64(32 * (i & 1))) & _U64(0xFFFFFFFF))


@nb.njit(inline="always")
def _chunk_weights(start, gamma, lo, hi, t, wbuf, ubuf):
    """Weights of units lo..hi-1 of one stream into wbuf[: hi - lo]; returns their sum.

    Two passes: the outputs floor(lo / 2)..floor((hi - 1) / 2) into ``ubuf``
    (uint64, at least (hi - lo) / 2 + 1 long), then the threshold count
    (``_count8``) of its 32-bit halves, which a little-endian machine stores in
    unit order.
    """
    j0 = lo >> 1
    nj = ((hi - 1) >> 1) - j0 + 1
    z = start + _U64(j0) * gamma
    for j in range(nj):
        z += gamma
        ubuf[j] = _mix64(z)
    h = ubuf.view(np.uint32)
    off = lo & 1
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    t4, t5, t6, t7 = t[4], t[5], t[6], t[7]
    total = 0
    n_tail = 0
    for i in range(hi - lo):
        x = h[off + i]
        c = _count8(x, t0, t1, t2, t3, t4, t5, t6, t7)
        n_tail += np.int32(x >= t7)
        total += c
        wbuf[i] = c
    if n_tail:  # P(h >= T_7) = 1.0e-5 per weight: about 0.5% of chunks of 512 units
        for i in range(hi - lo):
            x = h[off + i]
            if x >= t7:
                w = _quantile(x, t)
                total += w - _FAST
                wbuf[i] = w
    return total


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sums_block(xt, starts, gammas, t, b0, b1, chunk, out, wsum):
    """Sums of replicates b0..b1-1 (multiples of GROUP) into out[b0:b1], wsum[b0:b1].

    One pass over xt in chunks of units; per chunk, each group of 4 replicates
    draws its weights and then reads every column chunk once for all four.
    """
    k, n = xt.shape
    w = np.empty((GROUP, chunk))
    ub = np.empty(chunk // 2 + 2, dtype=np.uint64)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        m = hi - lo
        for b in range(b0, b1, GROUP):
            for r in range(GROUP):
                wsum[b + r] += _chunk_weights(starts[b + r], gammas[b + r], lo, hi, t, w[r], ub)
            w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
            for j in range(k):
                xj = xt[j, lo:hi]  # a 1-D view: contiguous loads (xt[j, lo + i] would gather)
                a0, a1, a2, a3 = _dot4(xj, w0, w1, w2, w3, m)
                out[b, j] += a0
                out[b + 1, j] += a1
                out[b + 2, j] += a2
                out[b + 3, j] += a3


@nb.njit(inline="always")
def _chunk_weights_at(start, gamma, idx, lo, hi, t, wbuf):
    """As _chunk_weights for the units idx[lo..hi-1] (any order): unit v takes half v mod 2 of output v // 2."""
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    t4, t5, t6, t7 = t[4], t[5], t[6], t[7]
    total = 0
    n_tail = 0
    for i in range(hi - lo):
        v = idx[lo + i]
        x = _halves(_mix64(start + _U64((v >> 1) + 1) * gamma), v)
        c = _count8(x, t0, t1, t2, t3, t4, t5, t6, t7)
        n_tail += np.int32(x >= t7)
        total += c
        wbuf[i] = c
    if n_tail:
        for i in range(hi - lo):
            v = idx[lo + i]
            x = _halves(_mix64(start + _U64((v >> 1) + 1) * gamma), v)
            if x >= t7:
                w = _quantile(x, t)
                total += w - _FAST
                wbuf[i] = w
    return total


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _group_sums_block(xs, idx, plan, starts, gammas, t, b0, b1, out, wsum):
    """Per-segment sums of replicates b0..b1-1 (multiples of GROUP): out[b, s, j] += sum over the units
    of segment s of w_b(unit) * xs[j, unit position]; plan rows (lo, hi, s, u) tile the positions,
    u >= 0 when the chunk's units are u, u + 1, ..., whose weights are then drawn as in the
    ungrouped kernel (a stream's outputs in order, two units per output), else -1 (one output
    per unit, any order). Both give the same weights."""
    k = xs.shape[0]
    w = np.empty((GROUP, UNIT_CHUNK))
    ub = np.empty(UNIT_CHUNK // 2 + 2, dtype=np.uint64)
    for c in range(plan.shape[0]):
        lo, hi, seg, u0 = plan[c, 0], plan[c, 1], plan[c, 2], plan[c, 3]
        m = hi - lo
        for b in range(b0, b1, GROUP):
            for r in range(GROUP):
                if u0 >= 0:
                    wsum[b + r] += _chunk_weights(starts[b + r], gammas[b + r], u0, u0 + m, t, w[r], ub)
                else:
                    wsum[b + r] += _chunk_weights_at(starts[b + r], gammas[b + r], idx, lo, hi, t, w[r])
            w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
            for j in range(k):
                xj = xs[j, lo:hi]
                a0, a1, a2, a3 = _dot4(xj, w0, w1, w2, w3, m)
                out[b, seg, j] += a0
                out[b + 1, seg, j] += a1
                out[b + 2, seg, j] += a2
                out[b + 3, seg, j] += a3


@nb.njit(cache=True, nogil=True)
def _csr_sums_block(indptr, indices, data, starts, gammas, t, b0, b1, chunk, out, wsum):
    """Sums of replicates b0..b1-1 of a CSR statistics matrix (units x columns) into out[b - b0].

    Cost O((b1 - b0) x (n + nonzeros)): a unit with weight 0 (37% of them)
    touches none of its nonzeros, and no dense row is ever formed.
    """
    n = len(indptr) - 1
    w = np.empty(chunk)
    ub = np.empty(chunk // 2 + 2, dtype=np.uint64)
    for b in range(b0, b1):
        r = b - b0
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            wsum[r] += _chunk_weights(starts[b - b0], gammas[b - b0], lo, hi, t, w, ub)
            for i in range(hi - lo):
                wi = w[i]
                if wi != 0.0:
                    for p in range(indptr[lo + i], indptr[lo + i + 1]):
                        out[r, indices[p]] += wi * data[p]


@nb.extending.intrinsic
def _prefetch_at(typingctx, arr, row, col):
    """Hint the CPU to load the cache line of arr[row, col] (llvm.prefetch: read, high locality)."""
    from llvmlite import ir
    from numba.core import cgutils

    sig = nb.types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        aryty, rowty, colty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        index = [context.cast(builder, args[1], rowty, nb.types.intp), context.cast(builder, args[2], colty, nb.types.intp)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index, wraparound=False)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _lane_weights_range(starts, gammas, t, lanes, u0, u1, tot):
    """Weights of replicates r < len(starts) of the units u0..u1-1 into their rows lanes[i].

    A row holds L = lanes.shape[1] bytes (a multiple of 64: whole cache lines),
    4 bits per weight (weights are at most 12): replicate r in byte r % L, low
    nibble for r < L, high nibble above (up to 2L replicates). Unused lanes are
    0 (their stream stays at 0, and mix64(0) = 0 < T_0). Unit by unit, all
    replicates at once (vectorised across replicates), so a row is written
    whole. tot[r] += the replicate's weight total over the units (integers:
    exact).
    """
    width = lanes.shape[1]
    nl = 2 * width
    m = len(starts)
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    t4, t5, t6, t7 = t[4], t[5], t[6], t[7]
    z = np.zeros(nl, dtype=np.uint64)
    g = np.zeros(nl, dtype=np.uint64)
    for r in range(m):
        g[r] = gammas[r]
        z[r] = starts[r] + _U64(u0 >> 1) * gammas[r]  # output u0 // 2 of the stream is the next one
    low = np.zeros(nl, dtype=np.uint32)  # the halves of the current output: units 2j and 2j + 1
    high = np.zeros(nl, dtype=np.uint32)
    c = np.zeros(nl, dtype=np.uint8)
    for i in range(u0, u1):
        if i == u0 or not (i & 1):
            for r in range(nl):
                zz = z[r] + g[r]
                z[r] = zz
                u = _mix64(zz)
                low[r] = np.uint32(u & _U64(0xFFFFFFFF))
                high[r] = np.uint32(u >> _U64(32))
        h = high if i & 1 else low
        tail = 0
        for r in range(nl):
            x = h[r]
            c[r] = _count8_u8(x, t0, t1, t2, t3, t4, t5, t6, t7)
            tail |= np.int64(x >= t7)
        if tail:  # P = 1.0e-5 per weight: refine
            for r in range(m):
                if c[r] == _FAST:
                    c[r] = np.uint8(_quantile(h[r], t))
        for r in range(nl):
            tot[r] += c[r]
        dst = lanes[i]
        for j in range(width):
            dst[j] = c[j] | (c[j + width] << np.uint8(4))


@nb.njit(cache=True, nogil=True)
def _csc_gather(lanes, colptr, rows, data, runs, out):
    """out[r, c] = sum over the entries p of column c of w_r(rows[p]) * data[p], for r < out.shape[0].

    ``lanes``: a row of L bytes (2L nibbles) per unit (``_lane_weights_range``); ``colptr`` may be
    a slice of a larger matrix's (absolute entry positions), ``out`` then the
    matching columns. ``runs=False``: each entry's product is added in entry
    order: the same products and additions as the CSR kernel's accumulation
    into a column (a unit with weight 0 adds +0.0, which leaves a sum
    unchanged; a non-finite value is skipped under weight 0, as there).
    ``runs=True``: the weights of a run of equal values are added as integers
    (exactly), then multiplied by the value once. Every replicate's arithmetic
    is the same whatever L: the row width changes only how many replicates
    share one pass over the entries.
    """
    width = lanes.shape[1]
    nl = 2 * width
    acc = np.zeros(nl)
    ilo = np.zeros(width, dtype=np.uint16)
    ihi = np.zeros(width, dtype=np.uint16)
    flo = np.zeros(width)
    fhi = np.zeros(width)
    m = out.shape[0]
    nnz = len(rows)
    run_max = RUN_MAX if runs else 1  # 15 (a nibble) times RUN_MAX fits in 16 bits
    for c in range(len(colptr) - 1):
        for r in range(nl):
            acc[r] = 0.0
        p = colptr[c]
        e = colptr[c + 1]
        while p < e:
            v = data[p]
            for j in range(width):
                ilo[j] = 0
                ihi[j] = 0
            stop = min(e, p + run_max)
            while True:
                if p + PREFETCH < nnz:
                    ahead = rows[p + PREFETCH]
                    for q in range(0, width, LINE):
                        _prefetch_at(lanes, ahead, q)
                wi = lanes[rows[p]]
                for j in range(width):
                    ilo[j] += wi[j] & np.uint8(15)
                    ihi[j] += wi[j] >> np.uint8(4)
                p += 1
                if p >= stop or not (data[p] == v):
                    break
            if math.isfinite(v):
                for j in range(width):
                    flo[j] = np.float64(ilo[j]) * v
                    fhi[j] = np.float64(ihi[j]) * v
            else:
                for j in range(width):
                    flo[j] = np.float64(ilo[j]) * v if ilo[j] != 0 else 0.0
                    fhi[j] = np.float64(ihi[j]) * v if ihi[j] != 0 else 0.0
            for j in range(width):
                acc[j] += flo[j]
                acc[width + j] += fhi[j]
        for r in range(m):
            out[r, c] = acc[r]


@nb.njit(cache=True, nogil=True)
def _weights_block(starts, gammas, t, n, out):
    """out[r, i] = weight of unit i in replicate r (uint8): the outputs of a row's stream, then the
    branch-free threshold count of their 32-bit halves; the rare h >= T_7 refined in a second look."""
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    t4, t5, t6, t7 = t[4], t[5], t[6], t[7]
    ub = np.empty((n + 1) // 2, dtype=np.uint64)
    h = ub.view(np.uint32)
    for r in range(len(starts)):
        g = gammas[r]
        z = starts[r]
        for j in range(len(ub)):
            z += g
            ub[j] = _mix64(z)
        row = out[r]
        tail = 0
        for i in range(n):
            x = h[i]
            row[i] = _count8_u8(x, t0, t1, t2, t3, t4, t5, t6, t7)
            tail |= np.int32(x >= t7)
        if tail:
            for i in range(n):
                if row[i] == _FAST:
                    row[i] = np.uint8(_quantile(h[i], t))


@nb.njit(inline="always")
def _insertion_sort(srt, smul, m, unit, budget):
    """Sort srt[:m] ascending in place (smul alongside unless ``unit``); False, leaving a permutation,
    when that takes more than ``budget`` moves."""
    moves = 0
    for p in range(1, m):
        v = srt[p]
        if srt[p - 1] <= v:
            continue
        w = smul[p]
        h = p
        while h > 0 and srt[h - 1] > v:
            srt[h] = srt[h - 1]
            if not unit:
                smul[h] = smul[h - 1]
            h -= 1
        srt[h] = v
        if not unit:
            smul[h] = w
        moves += p - h
        if moves > budget:
            return False
    return True


GINI_CELLS = 1 << 10  # coarse cells of the Gini kernel's two-level bucket map (8 KB of counts: in L1)


@nb.njit(cache=True, nogil=True)
def _gini_numerators(x, n_total, mult, unit, out):
    """out[i] = sum_k (2k - n - 1) x_(k) over row i of x, each column standing for mult[c] items
    (``unit``: one item each, mult unread), padded with zeros to n = n_total items; x >= 0.

    The row's m positive values are sorted by a bucket pass on their bit patterns
    (order-preserving for non-negative doubles), then by an insertion pass (equal
    values do not move), replaced by a full sort when it would move values more
    than 16 times per value. The m buckets follow the values' distribution: the
    span of bit patterns is cut into GINI_CELLS equal cells, a cell holding c
    values gets c buckets of equal width, so that buckets hold about one value
    each however skewed the values are (exposures of a long-tailed catalog crowd
    into a few binades). The bucket of a value is a non-decreasing function of
    it, so the buckets are in order and only the sort's speed depends on them.
    A run of equal values holding h items at positions s+1..s+h adds
    v * h * (2s + h - n) (ties need no order), runs taken in ascending order.
    """
    b, c = x.shape
    n = float(n_total)
    vals = np.empty(c)
    mul = np.ones(c)
    cell = np.empty(c, dtype=np.int32)
    keys = np.empty(c, dtype=np.int32)
    srt = np.empty(c)
    smul = np.ones(c)
    nc = GINI_CELLS
    ccnt = np.zeros(nc, dtype=np.int64)
    base = np.zeros(nc, dtype=np.int64)
    ratio = np.zeros(nc)
    cnt = np.zeros(c + 1, dtype=np.int32)
    for i in range(b):
        row = x[i]
        m = 0
        lo = np.inf
        hi = 0.0
        before = n  # items before the positive values: zeros, never shown
        for j in range(c):
            v = row[j]
            if v > 0 and (unit or mult[j] > 0):
                vals[m] = v
                if not unit:
                    mul[m] = mult[j]
                    before -= mult[j]
                m += 1
                lo = min(lo, v)
                hi = max(hi, v)
        if unit:
            before -= m
        if m == 0:
            out[i] = 0.0
            continue
        vb = vals[:m].view(np.int64)
        lob = np.array([lo]).view(np.int64)[0]
        span = np.array([hi]).view(np.int64)[0] - lob
        shift = 0
        while (span >> shift) >= nc:
            shift += 1
        # coarse cells, then ccnt[k] buckets of equal width in cell k (m buckets in all)
        ccnt[:] = 0
        for j in range(m):
            k = (vb[j] - lob) >> shift
            cell[j] = k
            ccnt[k] += 1
        width = 2.0**shift
        tot = 0
        for k in range(nc):
            base[k] = tot
            ratio[k] = ccnt[k] / width
            tot += ccnt[k]
        cnt[: m + 1] = 0
        for j in range(m):
            k = cell[j]
            f = np.int64(np.float64((vb[j] - lob) - (np.int64(k) << shift)) * ratio[k])
            if f >= ccnt[k]:  # rounding at the cell's top
                f = ccnt[k] - 1
            key = base[k] + f
            keys[j] = key
            cnt[key + 1] += 1
        for key in range(m):
            cnt[key + 1] += cnt[key]
        for j in range(m):
            d = cnt[keys[j]]
            srt[d] = vals[j]
            if not unit:
                smul[d] = mul[j]
            cnt[keys[j]] = d + 1
        # buckets are in order: an insertion pass moves values within their bucket only; equal
        # values do not move. Many distinct values in one bucket: a full sort bounds the cost.
        if not _insertion_sort(srt, smul, m, unit, 16 * m + 1024):
            o = np.argsort(srt[:m], kind="mergesort")
            srt[:m] = srt[:m][o]
            if not unit:
                smul[:m] = smul[:m][o]
        acc = 0.0
        pos = before
        p = 0
        while p < m:
            v = srt[p]
            h = 0.0
            while p < m and srt[p] == v:
                h += smul[p]
                p += 1
            acc += v * h * (2.0 * pos + h - n)
            pos += h
        out[i] = acc


def gini_rows(x: np.ndarray, n_total: int, mult: np.ndarray | None = None, *,
              threads: int | None = None) -> np.ndarray:
    """Gini index of each row of x (b, c) >= 0, each column standing for ``mult`` items (default 1),
    padded with zeros up to ``n_total`` items: sum_k (2k - n - 1) x_(k) / (n sum x), NaN where a row
    sums to 0. Rows are split among ``threads`` threads."""
    x = np.asarray(x, dtype=np.float64)
    b, c = x.shape
    unit = mult is None
    mult_ = np.ones(c) if unit else np.ascontiguousarray(mult, dtype=np.float64)
    num = np.zeros(b)
    if threads is None:
        threads = default_threads() if b * c >= MIN_THREADED_CELLS else 1
    spans = np.linspace(0, b, min(max(threads, 1), max(b, 1)) + 1).astype(np.int64)

    def run(k: int) -> None:
        lo, hi = int(spans[k]), int(spans[k + 1])
        if hi > lo:
            _gini_numerators(x[lo:hi], int(n_total), mult_, unit, num[lo:hi])

    _in_threads(run, range(len(spans) - 1), len(spans) - 1)
    total = x @ mult_
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (float(n_total) * total)


_T: np.ndarray | None = None


def _thresholds() -> np.ndarray:
    global _T
    if _T is None:
        _T = poisson_thresholds()
    return _T


def _in_threads(run, tasks, threads: int) -> None:
    """``run(task)`` for every task: on up to ``threads`` threads (the kernels release the GIL and each task
    writes only its own rows), or in order on this thread when there is one thread or one task."""
    tasks = list(tasks)
    if threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            run(task)
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
            list(pool.map(run, tasks))


def default_threads() -> int:
    """Worker threads for the kernel: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def poisson_sums(
    xt: np.ndarray,
    n_boot: int,
    root: int,
    *,
    chunk: int = UNIT_CHUNK,
    block: int = REPLICATE_BLOCK,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replicate sums S[b, j] = sum_i w_bi xt[j, i] and weight totals sum_i w_bi, b < n_boot.

    ``xt`` is the statistics matrix transposed, shape (k, n). Blocks of
    ``block`` replicates run on ``threads`` threads (default: the CPUs
    available, one for fewer than 2^22 replicate-unit cells); each block makes one pass over ``xt`` in chunks of ``chunk``
    units. None of the three changes a weight; sums depend on ``chunk`` only
    through float rounding, and not at all on ``block`` or ``threads``.
    """
    if chunk < 1 or block < 1:
        raise ValueError("chunk and block must be positive")
    xt = np.ascontiguousarray(xt, dtype=np.float64)
    # replicates run in aligned groups of GROUP (the last group padded), so every
    # replicate's arithmetic is the same whatever n_boot, block or threads
    padded = -(-n_boot // GROUP) * GROUP
    block = -(-block // GROUP) * GROUP
    out = np.zeros((padded, xt.shape[0]))
    wsum = np.zeros(padded)
    t = _thresholds()
    starts, gammas = _streams(np.uint64(root), 0, padded)
    blocks = [(b0, min(b0 + block, padded)) for b0 in range(0, padded, block)]
    if threads is None:
        threads = default_threads() if padded * xt.shape[1] >= MIN_THREADED_CELLS else 1

    def run(span: tuple[int, int]) -> None:
        _sums_block(xt, starts, gammas, t, span[0], span[1], int(chunk), out, wsum)

    _in_threads(run, blocks, threads)
    return out[:n_boot], wsum[:n_boot]


def poisson_group_sums(
    x: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    n_boot: int,
    root: int,
    *,
    block: int = REPLICATE_BLOCK,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replicate sums per group: S[b, g, j] = sum over units i with codes[i] == g of w_bi x[i, j].

    ``x`` has shape (n, k) (one row per unit), ``codes`` values in [0, n_groups).
    The weights are those of :func:`poisson_sums` (unit i keeps its weight
    whatever its group), so S summed over g is the ungrouped replicate sum up to
    float rounding; the cost is that of one ungrouped pass, O(n_boot x n x k),
    whatever the number of groups. Units are visited group by group in unit
    order, in chunks that never straddle two groups; sums depend on neither
    ``block`` nor ``threads``. Returns (S of shape (n_boot, n_groups, k), weight
    totals of shape (n_boot,)).
    """
    x = np.asarray(x, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=n_groups))]).astype(np.int64)
    return poisson_segment_sums(x[order], order, bounds, 0, n_boot, root, block=block, threads=threads)


def _segment_plan(idx: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Rows (lo, hi, segment, u) of at most UNIT_CHUNK positions tiling each segment; u = idx[lo]
    when the chunk's units are consecutive (idx[lo], idx[lo] + 1, ...: drawn in stream order), else -1."""
    plan = []
    for g in range(len(bounds) - 1):
        for lo in range(int(bounds[g]), int(bounds[g + 1]), UNIT_CHUNK):
            plan.append((lo, min(lo + UNIT_CHUNK, int(bounds[g + 1])), g))
    out = np.array(plan, dtype=np.int64).reshape(-1, 3)
    if not len(out):
        return np.zeros((0, 4), dtype=np.int64)
    breaks = np.r_[0, np.cumsum(np.diff(idx) != 1)]  # breaks[p]: unit steps != 1 before position p
    consecutive = breaks[out[:, 1] - 1] == breaks[out[:, 0]]
    return np.column_stack([out, np.where(consecutive, idx[out[:, 0]], -1)]).astype(np.int64)


def poisson_segment_sums(
    xs: np.ndarray,
    units: np.ndarray,
    bounds: np.ndarray,
    b0: int,
    b1: int,
    root: int,
    *,
    block: int = REPLICATE_BLOCK,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replicate sums per segment for replicates b0..b1-1: S[b - b0, s, j] = sum over the rows r of
    segment s (rows bounds[s]..bounds[s+1]-1 of ``xs``) of w_b(units[r]) * xs[r, j].

    ``units[r]`` is the unit whose weight row r takes (the weights of
    :func:`poisson_sums`); rows may be any subset of the units, in any order.
    Returns (S, totals of the weights of the rows' units per replicate).
    """
    xs_t = np.ascontiguousarray(np.asarray(xs, dtype=np.float64).T)
    k, n = xs_t.shape
    idx = np.ascontiguousarray(units, dtype=np.int64)
    bounds = np.asarray(bounds, dtype=np.int64)
    n_seg = len(bounds) - 1
    plan_arr = _segment_plan(idx, bounds)
    m = b1 - b0
    padded = -(-m // GROUP) * GROUP
    block = -(-block // GROUP) * GROUP
    out = np.zeros((padded, n_seg, k))
    wsum = np.zeros(padded)
    t = _thresholds()
    starts, gammas = _streams(np.uint64(root), int(b0), int(b0) + padded)
    blocks = [(lo, min(lo + block, padded)) for lo in range(0, padded, block)]
    if threads is None:
        threads = default_threads() if padded * n >= MIN_THREADED_CELLS else 1

    def run(span: tuple[int, int]) -> None:
        _group_sums_block(xs_t, idx, plan_arr, starts, gammas, t, span[0], span[1], out, wsum)

    _in_threads(run, blocks, threads)
    return out[:m], wsum[:m]


def poisson_sums_csr(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    n_columns: int,
    b0: int,
    b1: int,
    root: int,
    *,
    chunk: int = UNIT_CHUNK,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replicate sums of a sparse (CSR, units x columns) statistics matrix for replicates b0..b1-1.

    The same weights as :func:`poisson_sums` (a weight is a function of
    (seed, replicate, unit) alone), so sparse and dense statistics of one call
    share their replicates. Returns (sums of shape (b1 - b0, n_columns),
    weight totals). Replicates are split among ``threads`` threads; each
    replicate's sums are accumulated in unit order whatever the split.
    """
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    data = np.ascontiguousarray(data, dtype=np.float64)
    nb_ = b1 - b0
    out = np.zeros((nb_, int(n_columns)))
    wsum = np.zeros(nb_)
    t = _thresholds()
    starts, gammas = _streams(np.uint64(root), int(b0), int(b1))
    n = len(indptr) - 1
    if threads is None:
        threads = default_threads() if nb_ * (n + len(data)) >= MIN_THREADED_CELLS else 1
    spans = np.linspace(0, nb_, min(max(threads, 1), nb_) + 1).astype(np.int64)

    def run(k: int) -> None:
        lo, hi = int(spans[k]), int(spans[k + 1])
        if hi > lo:
            _csr_sums_block(indptr, indices, data, starts[lo:hi], gammas[lo:hi], t, 0, hi - lo, int(chunk),
                            out[lo:hi], wsum[lo:hi])

    _in_threads(run, range(len(spans) - 1), len(spans) - 1)
    return out, wsum


def lane_width(n_units: int, n_replicates: int) -> int:
    """Bytes per unit of the CSC kernel's weight rows: the fewest cache lines (at most
    ``WIDE_LINES``) that hold ``n_replicates`` nibbles, fewer when the rows would pass
    ``LANE_BYTES_MAX``."""
    lines = 1
    while lines < WIDE_LINES and 2 * LINE * lines < n_replicates and 2 * lines * LINE * max(n_units, 1) <= LANE_BYTES_MAX:
        lines *= 2
    return LINE * lines


def poisson_sums_csc(
    colptr: np.ndarray,
    rows: np.ndarray,
    data: np.ndarray,
    n_units: int,
    b0: int,
    b1: int,
    root: int,
    *,
    runs: bool = False,
    threads: int | None = None,
    width: int | None = None,
    scratch: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replicate sums of a sparse statistics matrix given by columns (CSC: units x columns).

    The same weights as :func:`poisson_sums`. Replicates run in passes of 2L
    (L = ``width`` bytes, whole cache lines, default :func:`lane_width`): a pass
    first writes the weights of all units into a (units x L) byte matrix, 4 bits
    per weight, one row of L / 64 adjacent cache lines per unit, then sums each
    column over its entries for all 2L replicates at once, loading one row per
    entry (requested ``PREFETCH`` entries ahead). The loads are random (a
    column's units are spread over the matrix) and their latency sets the cost,
    so the wider the row the fewer the passes and the loads: adjacent lines come
    at little more than the cost of one. The CSR kernel instead streams the
    whole matrix once per replicate and scatters into a row as wide as the
    matrix, which thrashes the cache when there are many columns.

    ``runs=False``: with row indices sorted within each column, the sums are
    those of :func:`poisson_sums_csr`, bit for bit (the same products, added in
    the same order). ``runs=True``: the entries of a column are summed by runs
    of equal values (store a column value by value to make them long): integer
    weight sums, one multiplication per run; the same sums up to float rounding.

    Threads split the units when writing the weights and the columns (by
    entries) when summing; one weight matrix is shared. Neither ``threads`` nor
    ``width`` changes a sum: each replicate's additions happen in the same
    order. Returns (sums of shape (b1 - b0, n_columns), weight totals).

    ``scratch``: a dict that keeps the weight rows and the sums' array between
    calls (a loop over blocks of replicates then maps their pages once; the
    returned sums are then a view of that array, valid until the next call).
    """
    colptr = np.ascontiguousarray(colptr, dtype=np.int64)
    rows = np.ascontiguousarray(rows, dtype=np.int32 if rows.dtype == np.int32 else np.int64)
    data = np.ascontiguousarray(data, dtype=np.float64)
    n = int(n_units)
    nb_ = b1 - b0
    n_cols = len(colptr) - 1
    wsum = np.zeros(nb_)
    if nb_ <= 0:
        return np.zeros((0, n_cols)), wsum
    out = _scratch(scratch, "out", (nb_, n_cols), np.float64)  # every entry is written by _csc_gather
    t = _thresholds()
    starts, gammas = _streams(np.uint64(root), int(b0), int(b1))
    width = lane_width(n, nb_) if width is None else int(width)
    if width < LINE or width % LINE:
        raise ValueError(f"width must be a positive multiple of {LINE}, got {width}")
    if threads is None:
        threads = default_threads() if nb_ * (n + len(data)) >= MIN_THREADED_CELLS else 1
    threads = max(1, int(threads))
    # units per weight-writing thread; columns per summing thread, balanced by entries
    u_cut = np.linspace(0, n, threads + 1).astype(np.int64)
    targets = np.linspace(0, colptr[-1], threads + 1)
    c_cut = np.searchsorted(colptr, targets, side="left").astype(np.int64)
    c_cut[0], c_cut[-1] = 0, n_cols
    c_cut = np.maximum.accumulate(np.minimum(c_cut, n_cols))
    lanes = _scratch(scratch, "lanes", (n, width), np.uint8)

    def weights(lo: int, hi: int) -> None:
        """Rows of replicates lo..hi-1; adds their totals to wsum."""
        tots = [np.zeros(2 * width, dtype=np.int64) for _ in range(threads)]

        def part(k: int) -> None:
            _lane_weights_range(starts[lo:hi], gammas[lo:hi], t, lanes, int(u_cut[k]), int(u_cut[k + 1]), tots[k])

        _map(part, threads)
        wsum[lo:hi] += np.sum(tots, axis=0)[: hi - lo]

    def gather(lo: int, hi: int) -> None:
        def part(k: int) -> None:
            c0, c1 = int(c_cut[k]), int(c_cut[k + 1])
            if c1 > c0:
                _csc_gather(lanes, colptr[c0 : c1 + 1], rows, data, runs, out[lo:hi, c0:c1])

        _map(part, threads)

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None

    def _map(fn, k):
        return list(pool.map(fn, range(k))) if pool is not None else [fn(i) for i in range(k)]

    try:
        for lo in range(0, nb_, 2 * width):  # 2L replicates per pass: two nibbles per byte
            hi = min(lo + 2 * width, nb_)
            weights(lo, hi)
            gather(lo, hi)
    finally:
        if pool is not None:
            pool.shutdown()
    return out, wsum


def _scratch(scratch: dict | None, key: str, shape: tuple[int, int], dtype: Any) -> np.ndarray:
    """An uninitialised array of ``shape``: fresh, or the first rows of the one ``scratch[key]`` keeps from an
    earlier call when it has as many columns and at least as many rows (its pages are mapped already)."""
    if scratch is None:
        return np.empty(shape, dtype=dtype)
    buf = scratch.get(key)
    if buf is None or buf.dtype != dtype or buf.shape[1] != shape[1] or buf.shape[0] < shape[0]:
        buf = scratch[key] = np.empty(shape, dtype=dtype)
    return buf[: shape[0]]


def poisson_weights(n: int, b0: int, b1: int, root: int) -> np.ndarray:
    """The weights of replicates b0..b1-1 for units 0..n-1, shape (b1 - b0, n), uint8."""
    starts, gammas = _streams(np.uint64(root), int(b0), int(b1))
    out = np.empty((b1 - b0, n), dtype=np.uint8)
    t = _thresholds()
    m = b1 - b0
    threads = default_threads() if m * n >= MIN_THREADED_CELLS else 1
    spans = np.linspace(0, m, min(threads, max(m, 1)) + 1).astype(np.int64)

    def run(k: int) -> None:
        lo, hi = int(spans[k]), int(spans[k + 1])
        if hi > lo:
            _weights_block(starts[lo:hi], gammas[lo:hi], t, int(n), out[lo:hi])

    _in_threads(run, range(len(spans) - 1), len(spans) - 1)
    return out
