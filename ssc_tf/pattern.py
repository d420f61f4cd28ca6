"""The SSC sparsity pattern in numpy: which kernels exist, how they run, what they cost.

A convolution with M input channels, N filters and a kh x kw window holds M kernels per filter.
In a structured sparse convolution (SSC) each kernel is one of three kinds (docs/pattern.md):

- a full kh x kw kernel where input m and filter n fall in the same of g contiguous, balanced
  channel blocks: `block(m; M, g) == block(n; N, g)`;
- a 1 x 1 kernel (the window's center tap) where the kernel is not kh x kw and
  `(m - offset) % p == n % p`;
- an empty kernel otherwise.

`g=None` drops the kh x kw part, `p=None` the 1 x 1 part. Neither has to divide M or N.

The paper fixes how many 1 x 1 kernels a filter has, about (M - M/g) / p (eq. (10)), not which
inputs they read. The `offset` is the layout's (docs/pattern.md, "The 1 x 1 layout"):

- `"joined"` (the default): offset = ceil(M/g) mod p, so that in a square layer filter n reads
  input n + M/g, the same place in the next block, and every block reaches the next. The layer's
  connection graph (inputs and filters, joined by every kernel) is then one group, and the
  1 x 1 counts follow eq. (10). Where that offset leaves the graph in several groups (only
  possible with fewer filters than inputs), the smallest offset that joins it is taken.
- `"aligned"`: offset = 0, ssc_tf's layout before the joined one, kept to load its files. When the
  block size divides p, it closes the channels into isolated groups (a block and its residue
  classes are a union of blocks) and gives each filter of a square layer M/p - 1 kernels.

This module needs no TensorFlow: the layer, the tools and the tests all read the pattern, its
exact counts and its execution plan from here, and nothing else recomputes them.
"""

import dataclasses
import math
import numbers

import numpy as np

from ssc_tf import arguments

PADDINGS = ("valid", "same")

# How the 1 x 1 part picks its inputs (SSCPattern's `layout`; the module docstring).
JOINED = "joined"
ALIGNED = "aligned"
LAYOUTS = (JOINED, ALIGNED)
# The fans an SSC layer's VarianceScaling initializer scales each live weight by: the dense
# kernel's ("dense") or the pattern's own, `SSCPattern.fan_in` / `fan_out` ("live").
FANS = ("dense", "live")


def check_positive_int(name, value, allow_none=False):
    """Returns `value` as an int, or raises a `ValueError` naming the argument.

    Args:
        name: the argument's name, used in the message.
        value: the value to check.
        allow_none: whether `None` is an allowed value.
    """
    if value is None and allow_none:
        return None
    if not arguments.is_int(value) or value < 1:
        allowed = "a positive integer" + (" or None" if allow_none else "")
        raise arguments.invalid(name, allowed, repr(value))
    return int(value)


def check_pair(name, value):
    """Standardizes an int or a pair of ints (kernel size, strides) to a tuple of 2 ints >= 1."""
    values = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(values) != 2 or not all(arguments.is_int(v) and v >= 1 for v in values):
        raise arguments.invalid(
            name, "a positive integer or a tuple of 2 positive integers", repr(value))
    return tuple(int(v) for v in values)


def check_padding(padding):
    """Returns `padding` lower-cased, or raises a `ValueError` listing the allowed values."""
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise arguments.invalid("padding", f"one of {PADDINGS}", repr(padding))
    return padding.lower()


def check_g_p(g, p):
    """Validates the pattern's `g` and `p` (each an int >= 1 or None, not both None)."""
    g = check_positive_int("g", g, allow_none=True)
    p = check_positive_int("p", p, allow_none=True)
    if g is None and p is None:
        raise ValueError(
            "Invalid values for arguments `g` and `p`: at least one must be a positive integer "
            "(g=None drops the KxK part, p=None the 1x1 part). Received: g=None, p=None"
        )
    return g, p


def block_sizes(channels, g):
    """Sizes of the g contiguous, balanced blocks of `channels` channels (larger blocks first)."""
    q, r = divmod(channels, g)
    return np.array([q + 1] * r + [q] * (g - r), dtype=np.int64)


def block_ids(channels, g):
    """The block (0 .. g-1) of each of `channels` channels."""
    return np.repeat(np.arange(g, dtype=np.int64), block_sizes(channels, g))


def paper_density(g, p, kernel_size):
    """The paper's estimate of the kept fraction per filter, eq. (10).

    density ~= 1/g + (1 - 1/g) / (p * kh * kw). The exact fraction is `SSCPattern.density`.
    """
    kh, kw = check_pair("kernel_size", kernel_size)
    kxk = 0.0 if g is None else 1.0 / g
    return kxk + (0.0 if p is None else (1.0 - kxk) / (p * kh * kw))


def connected_groups(adjacency):
    """The connected components of the bipartite graph of an (M, N) bool `adjacency` (input m
    and filter n joined where it is True); an input or a filter without an edge is one."""
    adjacency = np.asarray(adjacency, dtype=bool)
    unseen_in = np.ones(adjacency.shape[0], dtype=bool)
    unseen_out = np.ones(adjacency.shape[1], dtype=bool)
    groups = 0
    while unseen_in.any() or unseen_out.any():
        groups += 1
        reach_in, reach_out = np.zeros_like(unseen_in), np.zeros_like(unseen_out)
        if unseen_in.any():
            reach_in[np.argmax(unseen_in)] = True
        else:
            reach_out[np.argmax(unseen_out)] = True
        while True:
            more_out = reach_out | adjacency[reach_in].any(axis=0)
            more_in = reach_in | adjacency[:, more_out].any(axis=1)
            if (more_out == reach_out).all() and (more_in == reach_in).all():
                break
            reach_in, reach_out = more_in, more_out
        unseen_in &= ~reach_in
        unseen_out &= ~reach_out
    return groups


def conv_output_length(length, kernel, stride, padding):
    """Output length of a convolution along one axis (TensorFlow's rule); None stays None."""
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return max((length - kernel) // stride + 1, 0)


def center_tap_window(length, kernel, stride, padding):
    """Where a window's center tap reads the input along one axis.

    Output position o of the convolution reads the input at `start + o * stride` through the
    tap at index `kernel // 2` of its window. Returns `(start, count, pad_end)`: `count` output
    positions, and `pad_end` zeros that must follow the input because the center tap of the last
    windows lies in 'same' padding (only possible for even kernel sizes).
    """
    count = conv_output_length(length, kernel, stride, padding)
    pad_before = 0
    if padding == "same":
        pad_before = max((count - 1) * stride + kernel - length, 0) // 2
    start = kernel // 2 - pad_before
    pad_end = max(start + (count - 1) * stride + 1 - length, 0)
    return start, count, pad_end


@dataclasses.dataclass(frozen=True)
class KxKRun:
    """Consecutive blocks with equal (input, output) sizes: one grouped convolution.

    Attributes:
        num_blocks: the number of blocks (the groups of the convolution).
        in_start: first input channel of the run.
        in_block: input channels per block.
        out_start: first filter of the run.
        out_block: filters per block.
    """

    num_blocks: int
    in_start: int
    in_block: int
    out_start: int
    out_block: int

    @property
    def in_channels(self):
        return self.num_blocks * self.in_block

    @property
    def out_channels(self):
        return self.num_blocks * self.out_block

    @property
    def square(self):
        """Whether each block has as many inputs as filters, at least 2: the run can be
        computed as `in_block` depthwise convolutions ("shifted", `shifted_taps`)."""
        return self.in_block == self.out_block >= 2

    def shifted_taps(self, shift):
        """The run's kernel as the depthwise kernel of shift `shift` of a square run.

        With k = in_block, shift s pairs input i of block b with filter (i - s) mod k of that
        block. Returns, for each input (channel b * k + i of the run), the flat index of that
        pair's kernel in the run's (in_block, out_channels) kernel (each tap of the window
        alike).
        """
        k = self.in_block
        b, i = np.divmod(np.arange(self.in_channels), k)
        return (i * self.out_channels + b * k + (i - shift) % k).astype(np.int64)

    def shifted_order(self, shift):
        """Where each filter of a square run finds its term of shift `shift`: filter j of
        block b takes the depthwise output of input (j + s) mod k of that block (k =
        in_block), so the run's outputs are `outputs[..., shifted_order(s)]`."""
        k = self.in_block
        b, j = np.divmod(np.arange(self.out_channels), k)
        return (b * k + (j + shift) % k).astype(np.int64)


class SSCPattern:
    """The sparsity pattern of one SSC layer, with its exact counts and execution plan.

    Args:
        in_channels: M, the number of input channels.
        filters: N, the number of filters.
        kernel_size: an int or a pair (kh, kw).
        g: the number of channel blocks of the kh x kw part (int >= 1), or None for no
            kh x kw part.
        p: the residue modulus of the 1 x 1 part (int >= 1), or None for no 1 x 1 part.
        layout: which inputs the 1 x 1 kernels read, one of `LAYOUTS` (the module docstring):
            `"joined"` (default) or `"aligned"` (ssc_tf's earlier layout).

    Attributes:
        offset: the 1 x 1 part pairs input m with filter n where
            `(m - offset) % p == n % p` (0 without a 1 x 1 part).

    Raises:
        ValueError: for a bad argument, or when some filter would have no kernel at all (g
            larger than `in_channels` with too large or no p).

    Example:

    >>> pattern = SSCPattern(512, 512, 3, g=16, p=2)
    >>> round(pattern.density, 4)
    0.1146
    >>> pattern.offset, pattern.connected_groups()
    (0, 1)
    """

    def __init__(self, in_channels, filters, kernel_size, g, p, layout=JOINED):
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = check_pair("kernel_size", kernel_size)
        self.g, self.p = check_g_p(g, p)
        self.layout = arguments.check_choice("layout", layout, LAYOUTS)
        m, n = self.in_channels, self.filters
        if self.g is None:
            self.kxk_mask = np.zeros((m, n), dtype=bool)
        else:
            self.kxk_mask = block_ids(m, self.g)[:, None] == block_ids(n, self.g)[None, :]
        self.offset = 0
        if self.p is None:
            self.pointwise_mask = np.zeros((m, n), dtype=bool)
        elif self.layout == ALIGNED or self.g is None:
            self.pointwise_mask = self._pointwise_mask(0)
        else:
            self.offset, self.pointwise_mask = self._joined()
        empty = np.flatnonzero(~(self.kxk_mask | self.pointwise_mask).any(axis=0))
        if empty.size:
            raise ValueError(
                f"Invalid values for arguments `g` and `p`: g={self.g}, p={self.p} leave "
                f"{empty.size} of {n} filters without any kernel (the first is filter "
                f"{empty[0]}) for in_channels={m}. Every filter needs a kernel: use g <= {m} "
                f"(in_channels), or a p <= {m} that gives the remaining filters 1x1 kernels."
            )
        self.runs = self._kxk_runs()

    def _pointwise_mask(self, offset):
        m, n = self.in_channels, self.filters
        same_class = (np.arange(m)[:, None] - offset) % self.p == np.arange(n)[None, :] % self.p
        return same_class & ~self.kxk_mask

    def _joined(self):
        """The joined layout's (offset, 1 x 1 mask): offset ceil(M/g) mod p, or where that
        leaves the connection graph in several groups, the smallest offset that joins it."""
        first = -(-self.in_channels // self.g) % self.p
        for offset in [first] + [o for o in range(self.p) if o != first]:
            mask = self._pointwise_mask(offset)
            if connected_groups(self.kxk_mask | mask) == 1:
                return offset, mask
        return first, self._pointwise_mask(first)

    def connected_groups(self):
        """The groups of inputs and filters that the layer's kernels join (1 where every
        input reaches every filter through the layer's kernels and their transposes)."""
        return connected_groups(self.kxk_mask | self.pointwise_mask)

    def _kxk_runs(self):
        if self.g is None:
            return ()
        runs = []
        in_start = out_start = 0
        pairs = zip(block_sizes(self.in_channels, self.g), block_sizes(self.filters, self.g))
        for in_block, out_block in pairs:
            in_block, out_block = int(in_block), int(out_block)
            last = runs[-1] if runs else None
            if last is not None and (last.in_block, last.out_block) == (in_block, out_block):
                runs[-1] = dataclasses.replace(last, num_blocks=last.num_blocks + 1)
            else:
                runs.append(KxKRun(1, in_start, in_block, out_start, out_block))
            in_start += in_block
            out_start += out_block
        # Blocks without inputs or without filters hold no kernel; such blocks come last, so
        # the runs that remain cover a prefix of the filters.
        return tuple(r for r in runs if r.in_block and r.out_block)

    @property
    def kxk_filters(self):
        """Filters [0, kxk_filters) are the ones the kh x kw runs produce; the rest get none."""
        return self.runs[-1].out_start + self.runs[-1].out_channels if self.runs else 0

    @property
    def residue_shape(self):
        """Shape (p, ceil(M/p), ceil(N/p)) of the 1 x 1 part as a batch of matrices.

        Input m = (i * p + s + offset) mod (p * ceil(M/p)) and filter n = j * p + s meet at
        [s, i, j]: the inputs, zero-padded to p * ceil(M/p) channels and rotated by `offset`
        (`tf.roll(x, -offset, axis=-1)`), then read residue-major.
        """
        if self.p is None:
            return None
        return (self.p, -(-self.in_channels // self.p), -(-self.filters // self.p))

    def _pointwise_positions(self):
        """The live 1 x 1 kernels in residue order: flat index in `residue_shape`, m, n."""
        p, a, c = self.residue_shape
        s, i, j = np.meshgrid(np.arange(p), np.arange(a), np.arange(c), indexing="ij")
        m, n = ((i * p + s + self.offset) % (a * p)).ravel(), (j * p + s).ravel()
        inside = (m < self.in_channels) & (n < self.filters)
        live = np.zeros_like(inside)
        live[inside] = self.pointwise_mask[m[inside], n[inside]]
        return np.flatnonzero(live), m[live], n[live]

    @property
    def residue_index(self):
        """Flat positions in `residue_shape` of the live 1 x 1 weights, in storage order."""
        return self._pointwise_positions()[0]

    def weight_shapes(self):
        """The layer's weight variables, in order: a list of (name, shape).

        One grouped-convolution kernel (kh, kw, in_block, out_channels) per kh x kw run, then
        the live 1 x 1 weights as a flat vector in residue order. Only live weights are stored.
        """
        kh, kw = self.kernel_size
        shapes = [
            (f"kxk_kernel_{i}", (kh, kw, r.in_block, r.out_channels))
            for i, r in enumerate(self.runs)
        ]
        if self.p is not None:
            shapes.append(("pointwise_kernel", (int(self.pointwise_mask.sum()),)))
        return shapes

    def dense_index(self):
        """Flat index into the dense (kh, kw, M, N) kernel of every live weight, in the order of
        `weight_shapes` with each variable flattened in C order."""
        kh, kw = self.kernel_size
        m_total, n_total = self.in_channels, self.filters
        parts = []
        for r in self.runs:
            h, w, i, o = np.meshgrid(
                np.arange(kh), np.arange(kw), np.arange(r.in_block), np.arange(r.out_channels),
                indexing="ij",
            )
            m = r.in_start + (o // r.out_block) * r.in_block + i
            parts.append((((h * kw + w) * m_total + m) * n_total + r.out_start + o).ravel())
        if self.p is not None:
            center = (kh // 2) * kw + kw // 2
            parts.append(center * m_total * n_total + self.pointwise_dense_index())
        return np.concatenate(parts).astype(np.int64)

    def pointwise_dense_index(self):
        """Flat index into the (M, N) 1 x 1 kernel of every live 1 x 1 weight, in storage
        order: the masked kernel of the 1 x 1 part run as one dense 1 x 1 convolution."""
        if self.p is None:
            return np.zeros((0,), dtype=np.int64)
        _, m, n = self._pointwise_positions()
        return (m * self.filters + n).astype(np.int64)

    def grouped_pointwise_index(self):
        """Flat index into the (ceil(M/p), p * ceil(N/p)) kernel of every live 1 x 1 weight,
        in storage order: the 1 x 1 part as one grouped 1 x 1 convolution with p groups, on the
        inputs rotated as for `residue_shape` and ordered residue-major (rotated input
        i * p + s at s * ceil(M/p) + i), whose output
        s * ceil(N/p) + j is filter j * p + s. Residue matrix [s, i, j] sits at [i, s, j]."""
        if self.p is None:
            return np.zeros((0,), dtype=np.int64)
        p, a, c = self.residue_shape
        s, rest = np.divmod(self.residue_index, a * c)
        i, j = np.divmod(rest, c)
        return ((i * p + s) * c + j).astype(np.int64)

    def kernel_mask(self):
        """The dense 0/1 mask, bool of shape (kh, kw, M, N): the test oracle's pattern."""
        kh, kw = self.kernel_size
        mask = np.zeros((kh, kw, self.in_channels, self.filters), dtype=bool)
        mask[:, :] = self.kxk_mask
        mask[kh // 2, kw // 2] |= self.pointwise_mask
        return mask

    @property
    def num_kxk_kernels(self):
        return int(self.kxk_mask.sum())

    @property
    def num_pointwise_kernels(self):
        return int(self.pointwise_mask.sum())

    @property
    def live_params(self):
        """Exact number of live kernel weights (no bias)."""
        kh, kw = self.kernel_size
        return self.num_kxk_kernels * kh * kw + self.num_pointwise_kernels

    @property
    def dense_params(self):
        """Kernel weights of the dense convolution of the same shape (no bias)."""
        kh, kw = self.kernel_size
        return kh * kw * self.in_channels * self.filters

    @property
    def density(self):
        """The exact kept fraction, live_params / dense_params."""
        return self.live_params / self.dense_params

    def fan_in(self):
        """Live taps feeding each filter, shape (N,): kernels x window size."""
        kh, kw = self.kernel_size
        return self.kxk_mask.sum(axis=0) * kh * kw + self.pointwise_mask.sum(axis=0)

    def fan_out(self):
        """Live taps reading each input channel, shape (M,)."""
        kh, kw = self.kernel_size
        return self.kxk_mask.sum(axis=1) * kh * kw + self.pointwise_mask.sum(axis=1)

    def output_size(self, input_size, strides=1, padding="valid"):
        """Output (height, width) for an input (height, width)."""
        strides, padding = check_pair("strides", strides), check_padding(padding)
        return tuple(
            conv_output_length(length, k, s, padding)
            for length, k, s in zip(input_size, self.kernel_size, strides)
        )

    def macs(self, input_size, strides=1, padding="valid"):
        """Exact multiply-accumulates of one example, for an input (height, width)."""
        return math.prod(self.output_size(input_size, strides, padding)) * self.live_params

    def dense_macs(self, input_size, strides=1, padding="valid"):
        """Multiply-accumulates of the dense convolution of the same shape, one example."""
        return math.prod(self.output_size(input_size, strides, padding)) * self.dense_params

    def __repr__(self):
        kh, kw = self.kernel_size
        return (
            f"SSCPattern(in_channels={self.in_channels}, filters={self.filters}, "
            f"kernel_size=({kh}, {kw}), g={self.g}, p={self.p}, layout={self.layout!r}, "
            f"density={self.density:.4f})"
        )
