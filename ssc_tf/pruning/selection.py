"""Which weights a pruning score keeps: top-k selection and SynFlow's schedule, in numpy.

No TensorFlow here. `ssc_tf.pruning.scores` computes each method's scores, one array per
masked layer; this module turns them into 0/1 masks with an exact count:

- `keep_top`: the `kept` largest scores over all layers together (the global threshold of
  SNIP, GraSP, SynFlow and the random baseline);
- `keep_top_per_layer`: the largest within each layer, each layer its own count;
- `synflow_fractions`: the kept fraction after each round of SynFlow's iterative pruning.

Ties are broken deterministically: among equal scores, the earlier layer (in the dict's order)
and then the lower flat (C-order) index is kept first, so a count is always met exactly.

Example:

>>> import numpy as np
>>> keep_top({"a": np.array([3.0, 1.0]), "b": np.array([2.0, 2.0])}, 2)
{'a': array([ True, False]), 'b': array([ True, False])}
"""

import numpy as np

from ssc_tf import arguments


def keep_top(scores, kept):
    """Masks that keep the `kept` largest scores over all layers together.

    Args:
        scores: dict `{layer name: numpy array}` of scores; `-inf` and `inf` are allowed,
            NaN is not.
        kept: int in [0, total number of scores], how many entries to keep.

    Returns:
        `{layer name: bool array of that layer's shape}`, in the order of `scores`, with
        exactly `kept` True entries in all: the largest scores, ties kept in layer order and
        then flat index order.

    Raises:
        ValueError: `kept` is out of range, or a score is NaN.
    """
    names = list(scores)
    arrays = [_checked_scores(name, scores[name]) for name in names]
    flat = np.concatenate([array.ravel() for array in arrays]) if arrays else np.zeros(0)
    _check_kept("kept", kept, flat.size, "the number of scores")
    return _split(_top(flat, kept), names, arrays)


def keep_top_per_layer(scores, kept_per_layer):
    """Masks that keep, in each layer, that layer's count of its largest scores.

    Args:
        scores: dict `{layer name: numpy array}` of scores, as for `keep_top`.
        kept_per_layer: dict `{layer name: int}` with the same names, each count in
            [0, that layer's size].

    Returns:
        `{layer name: bool array of that layer's shape}`, in the order of `scores`, each with
        exactly its count of True entries: the layer's largest scores, ties kept in flat index
        order.

    Raises:
        ValueError: the names differ, a count is out of range, or a score is NaN.
    """
    if set(kept_per_layer) != set(scores):
        raise ValueError(
            f"Invalid value for argument `kept_per_layer`: expected one count per layer of "
            f"`scores` {list(scores)}. Received counts for {list(kept_per_layer)}"
        )
    layer_masks = {}
    for name, layer_scores in scores.items():
        array = _checked_scores(name, layer_scores)
        _check_kept("kept_per_layer", kept_per_layer[name], array.size,
                    f"the size of layer {name!r}")
        layer_masks[name] = _top(array.ravel(), kept_per_layer[name]).reshape(array.shape)
    return layer_masks


def synflow_fractions(final_fraction, rounds):
    """The fraction of weights SynFlow keeps after each round of its exponential schedule.

    Tanaka et al. 2020 (Algorithm 1) prune iteratively: after round k of n the network keeps
    `final_fraction ** (k / n)` of its weights, so every round removes the same share of what
    is left and the last round reaches `final_fraction`.

    Args:
        final_fraction: float in [0, 1], the fraction kept at the end.
        rounds: int >= 1, the number of rounds n.

    Returns:
        A float64 numpy array of the `rounds` fractions, non-increasing, the last one exactly
        `final_fraction`.

    Raises:
        ValueError: an argument is out of range.

    Example:

    >>> synflow_fractions(0.01, 2)
    array([0.1 , 0.01])
    """
    arguments.check_range("final_fraction", final_fraction, 0, 1)
    arguments.check_int("rounds", rounds, minimum=1)
    return float(final_fraction) ** (np.arange(1, rounds + 1) / rounds)


def _checked_scores(name, layer_scores):
    array = np.asarray(layer_scores)
    if np.isnan(array).any():
        raise ValueError(
            f"Invalid value for argument `scores`: expected numbers, not NaN. Received NaN "
            f"in layer {name!r}"
        )
    return array


def _check_kept(name, kept, size, what):
    if not arguments.is_int(kept) or not 0 <= kept <= size:
        raise arguments.invalid(name, f"an integer in [0, {size}], {what}", repr(kept))


def _top(flat, kept):
    """The bool mask of the `kept` largest entries of the 1-D `flat`, ties to lower indices."""
    keep = np.zeros(flat.shape, dtype=bool)
    if kept == 0:
        return keep
    # The kept-th largest score, in linear time; the ties at it fill what is left in order.
    threshold = np.partition(flat, flat.size - kept)[flat.size - kept]
    keep = flat > threshold
    ties = np.flatnonzero(flat == threshold)[: kept - np.count_nonzero(keep)]
    keep[ties] = True
    return keep


def _split(flat_mask, names, arrays):
    layer_masks = {}
    start = 0
    for name, array in zip(names, arrays):
        layer_masks[name] = flat_mask[start:start + array.size].reshape(array.shape)
        start += array.size
    return layer_masks
