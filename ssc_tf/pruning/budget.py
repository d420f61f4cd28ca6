"""The pruned runs' weight budget: how many weights each method keeps, from SSC's count.

No TensorFlow here. A pruned run (`ssc_tf.pruning.PRUNED_METHODS`) prunes the convolutions
that SSC sparsifies, every one with a (g, p) setting; the first convolution and the
classifier stay dense, as in SSC (docs/architectures.md). By default those prunable layers
keep, together, exactly the live weights of the config's SSC pattern (`--g`, `--p`,
`--p_1x1`), so the pruned model and the SSC model keep the same total. `--kept_fraction`
sets the total instead, as a fraction of every counted weight (convolutions and classifier
kernel, as `ssc_tf.architectures.count` counts them).

The narrow network (`ssc_tf.pruning.NARROW`) has no prunable layers: its width multiplier is
the one whose dense network's weights come closest to that same total (`width_multiplier`).
"""

from ssc_tf import architectures
from ssc_tf import arguments


def prunable_layers(config):
    """The `architectures.ConvLayer`s a pruned run of `config` masks, in forward order."""
    return tuple(
        layer for layer in architectures.conv_layers(config.model, config.input_shape)
        if layer.setting is not None
    )


def layer_targets(config):
    """`{layer name: live weights}` of the SSC pattern of `config` at each prunable layer."""
    kwargs = config.pattern_kwargs()
    settings = architectures.settings_of(
        config.model, kwargs["g"], kwargs["p"], kwargs.get("p_1x1", ())
    )
    return {
        layer.name: architectures.live_params(
            layer.in_channels, layer.filters, layer.kernel_size,
            *architectures.layer_gp(layer, settings), kwargs["pointwise_layout"],
        )
        for layer in prunable_layers(config)
    }


def dense_counts(config):
    """`architectures.Counts` of the dense twin of `config` (the full widths)."""
    return architectures.count(
        config.model, config.num_classes, config.input_shape,
        *architectures.dense_pattern(config.model),
    )


def dense_params(config):
    """Every counted weight of the dense twin of `config` (the full widths)."""
    return dense_counts(config).dense_params


def kept_params(config):
    """The weights the whole model of `config` keeps, the first convolution and classifier
    kernel included: the SSC pattern's live weights, or round(`kept_fraction` x
    `dense_params`)."""
    if config.kept_fraction is None:
        return architectures.count(config.model, **config.pattern_kwargs()).live_params
    return round(config.kept_fraction * dense_params(config))


def width_multiplier(config):
    """The narrow network's width multiplier: `architectures.width_multiplier_for` of
    `kept_params(config)`, so that its weights are the closest to the SSC pattern's (or to
    `kept_fraction` of the dense twin's) that one channel more or less of its widest layer
    allows."""
    return architectures.width_multiplier_for(
        config.model, config.num_classes, config.input_shape, kept_params(config))


def target(config):
    """The weights the prunable layers of `config` keep together.

    Returns:
        SSC's live weights over those layers, or, with `config.kept_fraction` = f,
        round(f x every counted weight of the dense twin) less the weights that stay dense
        (the first convolution and the classifier kernel).

    Raises:
        ValueError: `kept_fraction` is below what the dense layers alone keep.
    """
    prunable = sum(layer.dense_params for layer in prunable_layers(config))
    if config.kept_fraction is None:
        return sum(layer_targets(config).values())
    total = dense_params(config)
    kept = kept_params(config) - (total - prunable)
    if kept < 0:
        raise arguments.invalid(
            "kept_fraction",
            f"at least {(total - prunable) / total:.6f}, the share of the first convolution "
            f"and the classifier, which stay dense",
            config.kept_fraction,
        )
    return kept

