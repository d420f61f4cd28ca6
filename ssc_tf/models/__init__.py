"""Keras models by name, built from the spec tables of `ssc_tf.architectures`.

`build("resnet32", num_classes=..., input_shape=..., g=..., p=...)`.
"""

from ssc_tf import architectures
from ssc_tf.models import blocks

MODELS = architectures.MODELS


def build(name, **kwargs):
    """Builds the model `name` (one of `MODELS`).

    Args:
        name: one of `MODELS`: vgg19, resnet32 or resnet50.
        **kwargs: `num_classes`, `input_shape` ((height, width, channels)), `g` and `p` (one
            value per width of `architectures.widths(name)`), and for resnet50 `p_1x1` (one p
            per width of `architectures.widths_1x1(name)`).

    Returns:
        The functional `keras.Model`, named `name`.

    Raises:
        ValueError: naming the argument, for an unknown model or a bad (g, p) list.
    """
    if name not in MODELS:
        raise ValueError(
            f"Invalid value for argument `name`: expected one of {sorted(MODELS)}. "
            f"Received: name={name!r}"
        )
    return _build(name, **kwargs)


def _build(name, num_classes, input_shape, g, p, p_1x1=()):
    settings = architectures.settings_of(name, g, p, p_1x1)
    return blocks.model(architectures.network(name, input_shape), settings, num_classes)


__all__ = ["MODELS", "build"]
