"""Keras models by name, built from the spec tables of `ssc_tf.architectures`.

`build("resnet32", num_classes=..., input_shape=..., g=..., p=...)`; `masked=True` builds the
pruning baselines' dense twin whose sparsified convolutions carry a fixed mask
(`ssc_tf.models.masked`); `width_multiplier` scales every width of the network
(`architectures.network`), which with the dense (g, p) builds the narrow dense baseline.
"""

from ssc_tf import architectures
from ssc_tf import pattern
from ssc_tf.models import blocks
from ssc_tf.models import masked as masked_lib

MODELS = architectures.MODELS


def build(name, **kwargs):
    """Builds the model `name` (one of `MODELS`).

    Args:
        name: one of `MODELS`: vgg19, resnet32 or resnet50.
        **kwargs: `num_classes`, `input_shape` ((height, width, channels)), `g` and `p` (one
            value per width of `architectures.widths(name)`), for resnet50 `p_1x1` (one p
            per width of `architectures.widths_1x1(name)`), `pointwise_layout` (one of
            `pattern.LAYOUTS`, default "joined": which inputs the 1 x 1 kernels of its
            `SSCConv2D` layers read), `fan` (one of `pattern.FANS`, default "dense": the fans
            of their initializers), `masked` (default False):
            the dense twin with a `MaskedConv2D` for every convolution that SSC sparsifies,
            which needs the dense (g, p) (g = 1 everywhere), and `width_multiplier` (default
            1.0, in (0, 1]): the factor of every filter count of the spec table
            (`architectures.scaled_width`), the first convolution's and the classifier's
            inputs included.

    Returns:
        The functional `keras.Model`, named `name`.

    Raises:
        ValueError: naming the argument, for an unknown model, a bad (g, p) list or a
            width multiplier outside (0, 1].
    """
    if name not in MODELS:
        raise ValueError(
            f"Invalid value for argument `name`: expected one of {sorted(MODELS)}. "
            f"Received: name={name!r}"
        )
    return _build(name, **kwargs)


def _build(name, num_classes, input_shape, g, p, p_1x1=(), masked=False,
           pointwise_layout=pattern.JOINED, fan=pattern.FANS[0], width_multiplier=1.0):
    settings = architectures.settings_of(name, g, p, p_1x1)
    if masked and settings != architectures.settings_of(name, *architectures.dense_pattern(name)):
        raise ValueError(
            f"Invalid value for argument `masked`: a masked model is the dense twin, so it "
            f"takes g = 1 at every width. Received: g={g!r}, p={p!r}"
        )
    builder = (masked_lib.MaskedBuilder() if masked
               else blocks.Builder(pointwise_layout=pointwise_layout, fan=fan))
    return builder.model(architectures.network(name, input_shape, width_multiplier), settings,
                         num_classes)


__all__ = ["MODELS", "build"]
