"""Tests of ssc_tf.pruning.selection: exact top-k masks, their ties, SynFlow's schedule."""

import numpy as np
import pytest

from ssc_tf.pruning import selection


def _reference_top(scores, kept):
    """keep_top by a full sort: score descending, then layer order, then flat index."""
    flat = np.concatenate([np.ravel(s) for s in scores.values()])
    layer = np.concatenate([np.full(np.size(s), i) for i, s in enumerate(scores.values())])
    index = np.concatenate([np.arange(np.size(s)) for s in scores.values()])
    order = np.lexsort((index, layer, -flat))
    keep = np.zeros(flat.size, dtype=bool)
    keep[order[:kept]] = True
    return keep


def test_keep_top_keeps_the_largest_scores_over_all_layers():
    scores = {"a": np.array([[3.0, 1.0], [4.0, 1.5]]), "b": np.array([5.0, 9.0, 2.0, 6.0])}
    result = selection.keep_top(scores, 4)
    assert list(result) == ["a", "b"]
    np.testing.assert_array_equal(result["a"], [[False, False], [True, False]])
    np.testing.assert_array_equal(result["b"], [True, True, False, True])
    assert result["a"].dtype == bool and result["a"].shape == (2, 2)


def test_keep_top_breaks_ties_by_layer_order_then_flat_index():
    scores = {"a": np.array([1.0, 2.0, 2.0]), "b": np.array([2.0, 0.0])}
    np.testing.assert_array_equal(selection.keep_top(scores, 2)["a"], [False, True, True])
    result = selection.keep_top(scores, 3)
    np.testing.assert_array_equal(result["a"], [False, True, True])
    np.testing.assert_array_equal(result["b"], [True, False])
    # The dict's order, not the names, decides.
    reordered = selection.keep_top({"b": scores["b"], "a": scores["a"]}, 2)
    np.testing.assert_array_equal(reordered["b"], [True, False])
    np.testing.assert_array_equal(reordered["a"], [False, True, False])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_top_matches_a_full_sort_on_many_ties(seed):
    rng = np.random.default_rng(seed)
    scores = {"a": rng.integers(0, 4, (3, 5)).astype(float), "b": rng.integers(0, 4, 7) - 0.0,
              "c": np.array([-np.inf, np.inf, 2.0])}
    for kept in range(0, 26):
        result = selection.keep_top(scores, kept)
        flat = np.concatenate([m.ravel() for m in result.values()])
        np.testing.assert_array_equal(flat, _reference_top(scores, kept))
        assert flat.sum() == kept


def test_keep_top_keeps_none_or_all():
    scores = {"a": np.array([1.0, -1.0]), "b": np.zeros((2, 2))}
    assert not any(m.any() for m in selection.keep_top(scores, 0).values())
    assert all(m.all() for m in selection.keep_top(scores, 6).values())
    assert selection.keep_top({}, 0) == {}


@pytest.mark.parametrize("kept", [-1, 7, 2.0, True, None])
def test_keep_top_rejects_a_count_out_of_range(kept):
    with pytest.raises(ValueError, match=r"argument `kept`: expected an integer in \[0, 6\]"):
        selection.keep_top({"a": np.ones(2), "b": np.ones(4)}, kept)


def test_keep_top_rejects_nan():
    with pytest.raises(ValueError, match="`scores`.*NaN in layer 'b'"):
        selection.keep_top({"a": np.ones(2), "b": np.array([1.0, np.nan])}, 1)


def test_keep_top_per_layer_keeps_each_layers_count():
    scores = {"a": np.array([[3.0, 1.0], [4.0, 1.5]]), "b": np.array([5.0, 9.0, 2.0, 2.0])}
    result = selection.keep_top_per_layer(scores, {"b": 3, "a": 1})
    assert list(result) == ["a", "b"]
    np.testing.assert_array_equal(result["a"], [[False, False], [True, False]])
    np.testing.assert_array_equal(result["b"], [True, True, True, False])
    result = selection.keep_top_per_layer(scores, {"a": 4, "b": 0})
    assert result["a"].all() and not result["b"].any()


def test_keep_top_per_layer_rejects_other_names_and_counts_out_of_range():
    scores = {"a": np.ones(2), "b": np.ones(3)}
    with pytest.raises(ValueError, match="`kept_per_layer`: expected one count per layer"):
        selection.keep_top_per_layer(scores, {"a": 1})
    with pytest.raises(ValueError, match=r"`kept_per_layer`: expected an integer in \[0, 3\], "
                                         r"the size of layer 'b'. Received: kept_per_layer=4"):
        selection.keep_top_per_layer(scores, {"a": 1, "b": 4})


def test_synflow_fractions_follow_the_exponential_schedule():
    np.testing.assert_allclose(selection.synflow_fractions(0.01, 2), [0.1, 0.01])
    np.testing.assert_allclose(selection.synflow_fractions(0.001, 3), [0.1, 0.01, 0.001])
    fractions = selection.synflow_fractions(0.05, 100)
    assert fractions.shape == (100,)
    assert fractions[-1] == 0.05
    np.testing.assert_allclose(fractions[0], 0.05 ** 0.01)
    # Each round keeps the same share of what the previous one kept.
    np.testing.assert_allclose(fractions[1:] / fractions[:-1], 0.05 ** 0.01)
    np.testing.assert_array_equal(selection.synflow_fractions(1.0, 4), np.ones(4))


@pytest.mark.parametrize(
    "final_fraction, rounds, argument",
    [(1.5, 10, "final_fraction"), (-0.1, 10, "final_fraction"), (0.1, 0, "rounds"),
     (0.1, 2.0, "rounds")],
)
def test_synflow_fractions_reject_values_out_of_range(final_fraction, rounds, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        selection.synflow_fractions(final_fraction, rounds)
