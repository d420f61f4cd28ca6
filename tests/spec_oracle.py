"""The pattern's definition (docs/pattern.md) written out one kernel at a time: the independent
oracle that pattern and model counts are checked against."""

import numpy as np


def spec_block(c, channels, g):
    """The closed form of block(c; C, g) in docs/pattern.md."""
    q, r = divmod(channels, g)
    return c // (q + 1) if c < r * (q + 1) else r + (c - r * (q + 1)) // q


def _spec_groups(kinds):
    """Connected groups of inputs and filters joined by a kernel (a union-find, written
    independently of `pattern.connected_groups`)."""
    m_total, n_total = kinds.shape
    parent = list(range(m_total + n_total))

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for m in range(m_total):
        for n in range(n_total):
            if kinds[m, n]:
                parent[root(m)] = root(m_total + n)
    return len({root(x) for x in range(m_total + n_total)})


def _spec_kinds(m_total, n_total, g, p, offset):
    kinds = np.full((m_total, n_total), "", dtype=object)
    for m in range(m_total):
        for n in range(n_total):
            if g is not None and spec_block(m, m_total, g) == spec_block(n, n_total, g):
                kinds[m, n] = "k"
            elif p is not None and (m - offset) % p == n % p:
                kinds[m, n] = "1"
    return kinds


def spec_offset(m_total, n_total, g, p, layout="joined"):
    """The 1 x 1 offset of docs/pattern.md: 0 for the aligned layout (or without blocks or
    without a 1 x 1 part); for the joined one ceil(M/g) mod p, or where that leaves the layer
    in several groups, the smallest offset that joins it."""
    if layout == "aligned" or g is None or p is None:
        return 0
    first = -(-m_total // g) % p
    for offset in [first] + [o for o in range(p) if o != first]:
        if _spec_groups(_spec_kinds(m_total, n_total, g, p, offset)) == 1:
            return offset
    return first


def spec_kernel_kinds(m_total, n_total, g, p, layout="joined"):
    """Each kernel's kind by the definition in docs/pattern.md: 'k' (K x K), '1' (1 x 1) or ''
    (empty)."""
    return _spec_kinds(m_total, n_total, g, p, spec_offset(m_total, n_total, g, p, layout))


def spec_groups(m_total, n_total, g, p, layout="joined"):
    """Connected groups of the layer's inputs and filters under its kernels."""
    return _spec_groups(spec_kernel_kinds(m_total, n_total, g, p, layout))


def spec_live_params(m_total, n_total, kernel_size, g, p, layout="joined"):
    """Live weights of one layer: K*K per K x K kernel, 1 per 1 x 1 kernel."""
    kinds = spec_kernel_kinds(m_total, n_total, g, p, layout)
    return kernel_size * kernel_size * int((kinds == "k").sum()) + int((kinds == "1").sum())
