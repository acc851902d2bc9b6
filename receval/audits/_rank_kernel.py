"""Compiled helpers of the audits' ranking (numba; imported only when numba is available).

The run's rows come in blocks (rows of one request, or one request and
sample). These kernels work on one block at a time, so their cost is linear
in the rows for lists of ordinary length: a repeated item within a block, and
the order of a block by score.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_SMALL = 32  # blocks up to this long are handled by quadratic loops, longer ones sort


@nb.njit(cache=True)
def repeats_within(starts, keys):
    """Whether a block starts[j]..starts[j+1]-1 holds some key twice."""
    for j in range(len(starts) - 1):
        a, b = starts[j], starts[j + 1]
        if b - a <= _SMALL:
            for i in range(a, b):
                for m in range(i + 1, b):
                    if keys[i] == keys[m]:
                        return True
        else:
            s = np.sort(keys[a:b])
            for i in range(1, b - a):
                if s[i] == s[i - 1]:
                    return True
    return False


@nb.njit(cache=True)
def order_within(starts, blocks, score, rows, rank, tie):
    """Rows of the blocks, block ``blocks[0]`` first, each by score descending.

    Block b holds rows starts[b]..starts[b+1]-1. Writes, per output position p:
    rows[p] the row, rank[p] its 1-based rank in its block, tie[p] the index of
    the run of equal scores (within a block) it belongs to, or -1 when its score
    is unique in its block. Returns the number of such runs; their order is
    left to the caller (it depends on the item ids).
    """
    p = 0
    n_ties = 0
    sb = np.empty(_SMALL)
    for j in range(len(blocks)):
        b = blocks[j]
        a, e = starts[b], starts[b + 1]
        m = e - a
        if m <= _SMALL:  # insertion sort of the block's scores, descending (stable)
            for i in range(m):
                s = score[a + i]
                h = i
                while h > 0 and sb[h - 1] < s:
                    sb[h] = sb[h - 1]
                    rows[p + h] = rows[p + h - 1]
                    h -= 1
                sb[h] = s
                rows[p + h] = a + i
        else:
            idx = np.argsort(-score[a:e], kind="mergesort")
            for i in range(m):
                rows[p + i] = a + idx[i]
        i = 0
        while i < m:
            s = score[rows[p + i]]
            h = i + 1
            while h < m and score[rows[p + h]] == s:
                h += 1
            if h - i > 1:
                for c in range(i, h):
                    tie[p + c] = n_ties
                n_ties += 1
            else:
                tie[p + i] = -1
            for c in range(i, h):
                rank[p + c] = c + 1
            i = h
        p += m
    return n_ties


@nb.njit(cache=True, nogil=True)
def counting_scatter(keys, n_keys, a, b, out_a, out_b):
    """out_a[p], out_b[p] = a[i], b[i] for i at its place p in the stable order of ``keys`` (integers
    in [0, n_keys)): ``a[counting_order(keys)]`` without the order array; returns each key's count."""
    cnt = np.zeros(n_keys + 1, dtype=np.int64)
    for i in range(len(keys)):
        cnt[keys[i] + 1] += 1
    counts = cnt[1:].copy()
    for k in range(n_keys):
        cnt[k + 1] += cnt[k]
    for i in range(len(keys)):
        k = keys[i]
        p = cnt[k]
        out_a[p] = a[i]
        out_b[p] = b[i]
        cnt[k] = p + 1
    return counts


@nb.njit(cache=True)
def counting_order(keys, n_keys):
    """Stable order of ``keys`` (integers in [0, n_keys)): a counting sort, O(len + n_keys)."""
    cnt = np.zeros(n_keys + 1, dtype=np.int64)
    for i in range(len(keys)):
        cnt[keys[i] + 1] += 1
    for k in range(n_keys):
        cnt[k + 1] += cnt[k]
    out = np.empty(len(keys), dtype=np.int64)
    for i in range(len(keys)):
        k = keys[i]
        out[cnt[k]] = i
        cnt[k] += 1
    return out


@nb.njit(cache=True, nogil=True)
def exposure_per_request(starts, g, val, target, n_groups, awrf, ok, n_requests_g):
    """One pass over the rows of each request (rows starts[q]..starts[q+1]-1, group g, exposure val):
    AWRF = 1 - JSD(exposure distribution over groups, target) and whether it is defined (positive
    exposure), and the number of requests showing each group.

    The formula of exposure._awrf: the groups a request does not show contribute
    their target mass (t log2(t / (t/2)) = t each).
    """
    t_total = 0.0
    for j in range(n_groups):
        t_total += target[j]
    gs = np.empty(64, dtype=np.int64)
    sums = np.empty(64)
    for q in range(len(starts) - 1):
        a, e = starts[q], starts[q + 1]
        if e - a > len(gs):
            gs = np.empty(2 * (e - a), dtype=np.int64)
            sums = np.empty(2 * (e - a))
        m = 0
        for r in range(a, e):
            h = 0
            while h < m and gs[h] != g[r]:
                h += 1
            if h == m:
                gs[m] = g[r]
                sums[m] = 0.0
                m += 1
            sums[h] += val[r]
        row = 0.0
        for h in range(m):
            n_requests_g[gs[h]] += 1
            row += sums[h]
        if not row > 0:
            ok[q] = False
            awrf[q] = 0.0
            continue
        s = 0.0
        present = 0.0
        for h in range(m):
            p = sums[h] / row
            t = target[gs[h]]
            mid = 0.5 * (p + t)
            if p > 0:
                s += p * np.log2(p / mid)
            if t > 0:
                s += t * np.log2(t / mid)
            present += t
        jsd = min(max(0.5 * (s + (t_total - present)), 0.0), 1.0)
        ok[q] = True
        awrf[q] = 1.0 - jsd


@nb.njit(cache=True, nogil=True)
def expected_exposure_lists(starts, w, rank, cum, out):
    """EE-L, EE-D, EE-R and 1 per request when each request is one list without labels: every row is
    an item of grade 0, one tier of L_q items with target (W(min(L_q, cap_q)) - W(0)) / L_q."""
    for q in range(len(starts) - 1):
        a, e = starts[q], starts[q + 1]
        size = e - a
        cap = 0
        for r in range(a, e):
            cap = max(cap, rank[r])
        star = (cum[min(size, cap)] - cum[0]) / size
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for r in range(a, e):
            eps = w[r]
            d = eps - star
            s0 += d * d
            s1 += eps * eps
            s2 += eps * star
        out[q, 0] = s0
        out[q, 1] = s1
        out[q, 2] = s2
        out[q, 3] = 1.0
