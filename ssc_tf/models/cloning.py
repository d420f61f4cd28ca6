"""Copies of a functional model with some of its layers rebuilt, each holding weights derived
from its original's: what export-time rewrites (`folding.fold_batch_norm`, `masked.bake`)
share."""

import keras


def rebuilt(model, clone_function, weights_of, call_function=None):
    """A copy of `model` whose layers `clone_function` makes, with weights from `weights_of`.

    Args:
        model: a functional `keras.Model`.
        clone_function: layer -> the new, unbuilt layer (same name), as for
            `keras.models.clone_model`.
        weights_of: original layer -> the list of weights its copy gets (`set_weights`).
        call_function: optional, as for `keras.models.clone_model`: how each copied layer is
            called (for example to skip one).

    Returns:
        The new functional model; `model` is unchanged.
    """
    copy = keras.models.clone_model(
        model, clone_function=clone_function, call_function=call_function)
    for layer in copy.layers:
        if not layer.weights:  # The input layer, whose copy may take another name.
            continue
        layer.set_weights(weights_of(model.get_layer(layer.name)))
    return copy
