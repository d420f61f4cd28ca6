"""The pattern's definition (docs/pattern.md) written out one kernel at a time: the independent
oracle that pattern and model counts are checked against."""

import numpy as np


def spec_block(c, channels, g):
    """The closed form of block(c; C, g) in docs/pattern.md."""
    q, r = divmod(channels, g)
    return c // (q + 1) if c < r * (q + 1) else r + (c - r * (q + 1)) // q


def spec_kernel_kinds(m_total, n_total, g, p):
    """Each kernel's kind by the definition in docs/pattern.md: 'k' (K x K), '1' (1 x 1) or ''
    (empty)."""
    kinds = np.full((m_total, n_total), "", dtype=object)
    for m in range(m_total):
        for n in range(n_total):
            if g is not None and spec_block(m, m_total, g) == spec_block(n, n_total, g):
                kinds[m, n] = "k"
            elif p is not None and m % p == n % p:
                kinds[m, n] = "1"
    return kinds


def spec_live_params(m_total, n_total, kernel_size, g, p):
    """Live weights of one layer: K*K per K x K kernel, 1 per 1 x 1 kernel."""
    kinds = spec_kernel_kinds(m_total, n_total, g, p)
    return kernel_size * kernel_size * int((kinds == "k").sum()) + int((kinds == "1").sum())
