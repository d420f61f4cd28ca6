"""Tests of ssc_tf.pattern: the pattern against its definition (docs/pattern.md), counts, plans,
errors."""

import numpy as np
import pytest

from ssc_tf import arguments
from ssc_tf import pattern as pattern_lib
from ssc_tf.pattern import SSCPattern
from spec_oracle import spec_block, spec_groups, spec_kernel_kinds, spec_offset

# Every (channels, g, p) of the supplement's tables (docs/supplement.md), as 3x3 layers with as
# many inputs as filters (the first layer of a stage sees the previous width: added below).
VGG_WIDTHS = (64, 128, 256, 512)
RESNET32_WIDTHS = (32, 64, 128)
SUPPLEMENT_ROWS = [
    (VGG_WIDTHS, (1, 2, 4, 16), (1, 2, 2, 2)),
    (VGG_WIDTHS, (1, 1, 4, 16), (1, 2, 4, 16)),
    (VGG_WIDTHS, (1, 4, 8, 64), (1, 4, 8, 25)),
    (VGG_WIDTHS, (1, 1, 2, 10), (1, 2, 2, 15)),
    (VGG_WIDTHS, (1, 1, 3, 30), (1, 2, 4, 30)),
    (VGG_WIDTHS, (1, 1, 3, 35), (1, 2, 4, 35)),
    (VGG_WIDTHS, (1, 4, 8, 64), (1, 4, 12, 40)),
    (RESNET32_WIDTHS, (2, 4, 15), (2, 4, 4)),
    (RESNET32_WIDTHS, (2, 8, 64), (2, 8, 32)),
    (RESNET32_WIDTHS, (16, 32, 64), (8, 32, 64)),
    (RESNET32_WIDTHS, (2, 4, 16), (2, 4, 4)),
    (RESNET32_WIDTHS, (2, 6, 64), (2, 16, 32)),
    (RESNET32_WIDTHS, (16, 32, 64), (16, 64, 64)),
    (RESNET32_WIDTHS, (1, 2, 11), (1, 4, 10)),
    (RESNET32_WIDTHS, (2, 4, 16), (2, 4, 8)),
    (RESNET32_WIDTHS, (2, 10, 64), (2, 16, 32)),
    (RESNET32_WIDTHS, (1, 6, 16), (2, 6, 6)),
    (RESNET32_WIDTHS, (2, 6, 15), (2, 3, 4)),
    (RESNET32_WIDTHS, (2, 4, 16), (2, 4, 5)),
    (RESNET32_WIDTHS, (1, 4, 15), (2, 16, 16)),
    (RESNET32_WIDTHS, (2, 4, 19), (2, 4, 4)),
    (RESNET32_WIDTHS, (4, 8, 8), (4, 8, 9)),
]


def _supplement_layers():
    cases = set()
    for widths, gs, ps in SUPPLEMENT_ROWS:
        for i, (width, g, p) in enumerate(zip(widths, gs, ps)):
            cases.add((width, width, g, p))
            if i:
                cases.add((widths[i - 1], width, g, p))
    return sorted(cases)


SUPPLEMENT_LAYERS = _supplement_layers()


def test_block_sizes_are_balanced_and_larger_first():
    np.testing.assert_array_equal(pattern_lib.block_sizes(128, 19), [7] * 14 + [6] * 5)
    np.testing.assert_array_equal(pattern_lib.block_sizes(3, 5), [1, 1, 1, 0, 0])


@pytest.mark.parametrize("channels,g", [(128, 19), (512, 30), (3, 2), (7, 7), (5, 9), (64, 16)])
def test_block_ids_match_spec_closed_form(channels, g):
    expected = [spec_block(c, channels, g) for c in range(channels)]
    np.testing.assert_array_equal(pattern_lib.block_ids(channels, g), expected)


def test_block_ids_match_keras_groups_when_g_divides():
    np.testing.assert_array_equal(pattern_lib.block_ids(64, 16), np.arange(64) // 4)


@pytest.mark.parametrize(
    "m,n,g,p",
    [(128, 128, 19, 15), (3, 64, 1, 1), (64, 3, 8, 2), (20, 12, 5, 3), (6, 16, 8, 1),
     (16, 6, 8, 2), (10, 14, 3, None), (9, 13, None, 4), (12, 12, 12, None), (7, 5, 2, 9)],
)
@pytest.mark.parametrize("layout", pattern_lib.LAYOUTS)
def test_masks_match_spec_definition(m, n, g, p, layout):
    pattern = SSCPattern(m, n, 3, g, p, layout)
    assert pattern.offset == spec_offset(m, n, g, p, layout)
    kinds = spec_kernel_kinds(m, n, g, p, layout)
    np.testing.assert_array_equal(pattern.kxk_mask, kinds == "k")
    np.testing.assert_array_equal(pattern.pointwise_mask, kinds == "1")


@pytest.mark.parametrize("m,n,g,p", SUPPLEMENT_LAYERS)
def test_live_params_equal_independent_mask_count(m, n, g, p):
    pattern = SSCPattern(m, n, 3, g, p)
    kinds = spec_kernel_kinds(m, n, g, p)
    expected = 9 * int((kinds == "k").sum()) + int((kinds == "1").sum())
    assert pattern.live_params == expected
    assert int(pattern.kernel_mask().sum()) == expected
    assert sum(int(np.prod(shape)) for _, shape in pattern.weight_shapes()) == expected


def test_spec_density_examples():
    assert round(SSCPattern(512, 512, 3, 16, 2).density * 100, 2) == 11.46
    # Eq. (10) gives 2.00 %: the joined layout 2.01 %, the aligned one (whose filters each
    # lose a 1 x 1 kernel to their own block) 1.99 %.
    assert round(SSCPattern(512, 512, 3, 64, 25).density * 100, 2) == 2.01
    assert round(SSCPattern(512, 512, 3, 64, 25, pattern_lib.ALIGNED).density * 100, 2) == 1.99


@pytest.mark.parametrize("m,n,g,p", [(512, 512, 16, 2), (512, 512, 64, 25), (128, 128, 16, 4)])
def test_paper_density_approximates_exact_density(m, n, g, p):
    exact = SSCPattern(m, n, 3, g, p).density
    assert pattern_lib.paper_density(g, p, 3) == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("m,n,g,p", SUPPLEMENT_LAYERS + [(16, 6, 8, 2), (5, 9, 7, 3)])
def test_runs_rebuild_kxk_mask_in_at_most_three_runs(m, n, g, p):
    pattern = SSCPattern(m, n, 3, g, p)
    assert len(pattern.runs) <= 3
    rebuilt = np.zeros((m, n), dtype=bool)
    for run in pattern.runs:
        for b in range(run.num_blocks):
            ins = slice(run.in_start + b * run.in_block, run.in_start + (b + 1) * run.in_block)
            outs = slice(run.out_start + b * run.out_block,
                         run.out_start + (b + 1) * run.out_block)
            rebuilt[ins, outs] = True
    np.testing.assert_array_equal(rebuilt, pattern.kxk_mask)
    assert not pattern.kxk_mask[:, pattern.kxk_filters:].any()


@pytest.mark.parametrize("m,n,g,p,k", [(128, 128, 19, 15, 3), (10, 7, 3, 4, 5), (6, 9, None, 2, 3),
                                       (12, 12, 4, None, (3, 5))])
def test_dense_index_places_each_live_weight_once(m, n, g, p, k):
    pattern = SSCPattern(m, n, k, g, p)
    index = pattern.dense_index()
    assert len(np.unique(index)) == len(index) == pattern.live_params
    np.testing.assert_array_equal(np.sort(index), np.flatnonzero(pattern.kernel_mask()))


def _rotated_input(pattern, rotated):
    """The input at position `rotated` of the inputs padded to p * ceil(M/p) channels and
    rotated by the offset (`residue_shape`)."""
    _, a, _ = pattern.residue_shape
    return (rotated + pattern.offset) % (a * pattern.p)


# (128, 128, 3, 15) and (64, 64, 3, 32) have offsets 13 and 22; (10, 7, 3, 4) has 0.
@pytest.mark.parametrize("m,n,p", [(10, 7, 4), (128, 128, 15), (8, 8, 1)])
def test_residue_index_maps_to_same_residue_pairs(m, n, p):
    pattern = SSCPattern(m, n, 3, 3, p)
    _, a, c = pattern.residue_shape
    s, i, j = np.unravel_index(pattern.residue_index, pattern.residue_shape)
    m_idx, n_idx = _rotated_input(pattern, i * p + s), j * p + s
    assert (m_idx < m).all() and (n_idx < n).all()
    assert pattern.pointwise_mask[m_idx, n_idx].all()
    assert len(pattern.residue_index) == pattern.num_pointwise_kernels


@pytest.mark.parametrize("m,n,p", [(10, 7, 4), (128, 128, 15), (8, 8, 1), (64, 64, 32)])
def test_grouped_pointwise_index_reads_residue_major_inputs(m, n, p):
    """Kernel [r, s * c + j] of the grouped 1 x 1 convolution joins residue-major input
    s * a + r (rotated input r * p + s) and output s * c + j (filter j * p + s) in group s:
    every live 1 x 1 weight lands on a distinct position of its own group, at its own (m, n)."""
    pattern = SSCPattern(m, n, 3, 3, p)
    _, a, c = pattern.residue_shape
    r, col = np.divmod(pattern.grouped_pointwise_index(), p * c)
    s, j = np.divmod(col, c)
    m_idx, n_idx = _rotated_input(pattern, r * p + s), j * p + s
    assert len(np.unique(pattern.grouped_pointwise_index())) == pattern.num_pointwise_kernels
    np.testing.assert_array_equal(
        m_idx * n + n_idx, pattern.pointwise_dense_index())


def _eq10_count(pattern):
    """Eq. (10)'s 1 x 1 kernels per filter: a 1/p share of the M - M/g kernels outside its
    block."""
    m = pattern.in_channels
    return (m - m / pattern.g) / pattern.p


SUPPLEMENT_SPARSE_LAYERS = [(m, n, g, p) for m, n, g, p in SUPPLEMENT_LAYERS if g > 1]


@pytest.mark.parametrize("m,n,g,p", SUPPLEMENT_SPARSE_LAYERS)
def test_joined_layout_joins_every_supplement_layer_with_eq10_counts(m, n, g, p):
    """One connected group per layer (so per stage: identity shortcuts join layer to layer),
    the filters' mean 1 x 1 count within 0.5 of eq. (10), each filter's within 1 where g and p
    divide M (elsewhere the residue classes differ in size by one input)."""
    pattern = SSCPattern(m, n, 3, g, p)
    assert pattern.connected_groups() == 1
    counts = pattern.pointwise_mask.sum(axis=0)
    assert abs(counts.mean() - _eq10_count(pattern)) <= 0.5
    bound = 1 if m % g == 0 and m % p == 0 else 2
    assert np.abs(counts - _eq10_count(pattern)).max() <= bound


@pytest.mark.parametrize("m,g,p,aligned_groups,aligned_count,joined_count", [
    (32, 16, 8, 4, 3, 4),      # ResNet-32 2 % tickets, stage 1: eq. (10) 3.75
    (64, 32, 64, 32, 0, 1),    # CIFAR-100 2 %, stage 2: no 1 x 1 kernel at all; eq. (10) 0.97
    (128, 64, 64, 32, 1, 2),   # the 2 % tickets' stage 3: eq. (10) 1.97
    (128, 64, 32, 16, 3, 4),   # the 5 % tickets' stage 3: eq. (10) 3.94
    (512, 64, 40, 5, None, None),  # Tiny-ImageNet VGG-19 2 %
])
def test_aligned_layout_closes_groups_that_the_joined_one_joins(
        m, g, p, aligned_groups, aligned_count, joined_count):
    aligned = SSCPattern(m, m, 3, g, p, pattern_lib.ALIGNED)
    joined = SSCPattern(m, m, 3, g, p)
    assert (aligned.offset, aligned.connected_groups()) == (0, aligned_groups)
    assert (joined.offset, joined.connected_groups()) == ((m // g) % p, 1)
    if aligned_count is not None:
        assert set(aligned.pointwise_mask.sum(axis=0)) == {aligned_count}
        assert set(joined.pointwise_mask.sum(axis=0)) == {joined_count}


def test_joined_layout_is_connected_over_a_sweep_of_shapes():
    """Every accepted (M, N, g, p) with a 1 x 1 part and g >= 2 (no blocks: g=None is p
    groups by definition) over a sweep of widths, narrower, equal and wider layers."""
    checked = 0
    for m in (4, 6, 9, 16, 24):
        for n in sorted({m, 2 * m, m + 3, max(1, m // 2)}):
            for g in range(2, min(m, n) + 1):
                for p in range(1, m + 1):
                    try:
                        pattern = SSCPattern(m, n, 3, g, p)
                    except ValueError:
                        continue
                    if pattern.num_pointwise_kernels:
                        checked += 1
                        assert pattern.connected_groups() == 1, (m, n, g, p)
    assert checked == 3137


@pytest.mark.parametrize("m,n,g,p,first,offset", [
    (7, 5, 4, 7, 2, 3), (9, 7, 5, 9, 2, 3), (10, 6, 5, 10, 2, 4), (9, 4, 3, 8, 3, 0),
])
def test_where_the_first_offset_leaves_groups_the_smallest_joining_one_is_taken(
        m, n, g, p, first, offset):
    """In these narrower layers ceil(M/g) mod p (`first`) leaves several groups, as does the
    aligned layout in all but the last: the smallest offset that joins them is taken, as the
    oracle's independent union-find finds it."""
    pattern = SSCPattern(m, n, 3, g, p)
    assert -(-m // g) % p == first
    assert spec_groups(m, n, g, p) == 1 < pattern_lib.connected_groups(
        pattern.kxk_mask | ((np.arange(m)[:, None] - first) % p == np.arange(n) % p))
    assert pattern.offset == spec_offset(m, n, g, p) == offset
    assert pattern.connected_groups() == 1
    aligned = SSCPattern(m, n, 3, g, p, pattern_lib.ALIGNED)
    assert aligned.connected_groups() == spec_groups(m, n, g, p, pattern_lib.ALIGNED)


def test_special_cases_keep_offset_zero():
    """Without blocks (g=None, the 1 x 1 part alone), without a 1 x 1 part, and at g = 1 (the
    kh x kw part holds every kernel) there is nothing to rotate."""
    assert SSCPattern(16, 16, 1, None, 4).offset == 0
    assert SSCPattern(16, 16, 3, 4, None).offset == 0
    assert SSCPattern(16, 16, 3, 1, 4).num_pointwise_kernels == 0


def test_bad_layout_names_the_argument():
    with pytest.raises(ValueError, match=r"`layout`.*joined.*aligned.*'residue'"):
        SSCPattern(16, 16, 3, 4, 2, "residue")


def test_fans_count_live_taps():
    pattern = SSCPattern(512, 512, 3, 16, 2)
    # 32 KxK kernels of 9 taps, and 1x1 kernels at the 240 same-residue inputs outside the block.
    np.testing.assert_array_equal(pattern.fan_in(), np.full(512, 32 * 9 + 240))
    np.testing.assert_array_equal(pattern.fan_out(), np.full(512, 32 * 9 + 240))


def test_macs_are_output_pixels_times_live_weights():
    pattern = SSCPattern(128, 128, 3, 16, 4)
    assert pattern.macs((8, 8), 1, "same") == 64 * pattern.live_params
    assert pattern.macs((8, 8), 2, "valid") == 9 * pattern.live_params
    assert pattern.dense_macs((8, 8), 1, "same") == 64 * 9 * 128 * 128


@pytest.mark.parametrize("length,kernel,stride,padding,expected", [
    (8, 3, 1, "same", (0, 8, 0)),
    (8, 3, 2, "same", (1, 4, 0)),
    (9, 3, 2, "same", (0, 5, 0)),
    (8, 3, 1, "valid", (1, 6, 0)),
    (8, 1, 2, "same", (0, 4, 0)),
    (4, 2, 1, "same", (1, 4, 1)),
])
def test_center_tap_window(length, kernel, stride, padding, expected):
    assert pattern_lib.center_tap_window(length, kernel, stride, padding) == expected


@pytest.mark.parametrize("kwargs,message", [
    (dict(g=0, p=2), "`g`.*Received: g=0"),
    (dict(g=2, p=-1), "`p`.*Received: p=-1"),
    (dict(g=2.5, p=2), "`g`.*Received: g=2.5"),
    (dict(g=True, p=2), "`g`.*Received: g=True"),
    (dict(g="2", p=2), "`g`.*Received: g='2'"),
    (dict(g=None, p=None), "at least one"),
    (dict(g=8, p=None), "g=8, p=None leave 4 of 8 filters without any kernel"),
    (dict(g=8, p=6), "g=8, p=6 leave 1 of 8 filters"),
    (dict(g=8, p=5, layout="aligned"), "g=8, p=5 leave 1 of 8 filters"),
])
def test_bad_g_p_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SSCPattern(4, 8, 3, **kwargs)


def test_g_larger_than_filters_is_allowed_when_every_filter_has_a_kernel():
    pattern = SSCPattern(64, 8, 3, 16, None)
    assert pattern.kxk_mask.any(axis=0).all()
    assert pattern.live_params == 8 * 4 * 9


def test_bad_kernel_size_and_padding_name_the_argument():
    with pytest.raises(ValueError, match="`kernel_size`.*Received: kernel_size=0"):
        SSCPattern(4, 4, 0, 1, None)
    with pytest.raises(ValueError, match="`padding`.*'valid', 'same'.*Received: padding='full'"):
        pattern_lib.check_padding("full")


def test_check_positive_int_returns_an_int_and_names_the_argument_in_one_line():
    check = pattern_lib.check_positive_int
    assert check("g", np.int64(3)) == 3 and type(check("g", np.int64(3))) is int
    assert check("g", np.uint8(1), allow_none=True) == 1
    assert check("g", None, allow_none=True) is None
    with pytest.raises(ValueError) as error:
        check("g", 0, allow_none=True)
    assert str(error.value) == (
        "Invalid value for argument `g`: expected a positive integer or None. Received: g=0")
    for value in (None, 0, -2, 1.0, True, "1"):
        with pytest.raises(ValueError) as error:
            check("in_channels", value)
        assert str(error.value) == (
            "Invalid value for argument `in_channels`: expected a positive integer. "
            f"Received: in_channels={value!r}")
    # Read by a command line (`arguments.as_flags`), the same check names the flag.
    with arguments.as_flags(), pytest.raises(ValueError, match="^Invalid value for flag --g: "):
        check("g", 0, allow_none=True)


def test_check_pair_takes_numpy_integers_and_rejects_the_rest():
    assert pattern_lib.check_pair("strides", np.int32(2)) == (2, 2)
    assert pattern_lib.check_pair("kernel_size", (np.int64(1), 3)) == (1, 3)
    for value in (0, (3, 0), (3, 3, 3), (3, True), True, (3, 1.0)):
        with pytest.raises(ValueError) as error:
            pattern_lib.check_pair("kernel_size", value)
        assert str(error.value) == (
            "Invalid value for argument `kernel_size`: expected a positive integer or a tuple "
            f"of 2 positive integers. Received: kernel_size={value!r}")


@pytest.mark.parametrize("k,num_blocks", [(2, 3), (3, 2), (4, 1)])
def test_shifted_pairs_every_input_and_filter_of_a_block_once(k, num_blocks):
    """Over the k shifts of a square run, each (input, filter) pair of a block meets exactly
    once, through its own kernel: the depthwise taps of shift s at input b * k + i hold the
    kernel of filter (i - s) mod k, and that filter reads the shift's output at that input."""
    run = pattern_lib.KxKRun(num_blocks, 0, k, 0, k)
    assert run.square and not pattern_lib.KxKRun(2, 0, 2, 0, 3).square
    assert not pattern_lib.KxKRun(4, 0, 1, 0, 1).square
    met = np.zeros((k * num_blocks, k * num_blocks), int)
    for shift in range(k):
        taps = run.shifted_taps(shift)
        order = run.shifted_order(shift)
        inputs, filters = np.divmod(taps, run.out_channels)
        for channel, (i, n) in enumerate(zip(inputs, filters)):
            assert i == channel % k  # The kernel row of the input it convolves.
            met[channel, n] += 1
            assert order[n] == channel  # Filter n reads this shift's output here.
    blocks = np.arange(k * num_blocks) // k
    np.testing.assert_array_equal(met, (blocks[:, None] == blocks[None, :]).astype(int))
