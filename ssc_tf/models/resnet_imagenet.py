"""ResNet-50 for ImageNet (standard bottleneck network, SPEC section 2)."""

import keras

from ssc_tf import widths
from ssc_tf.models import blocks

WIDTHS = widths.RESNET50
WIDTHS_1X1 = widths.RESNET50_1X1
BLOCKS_PER_STAGE = (3, 4, 6, 3)


def resnet50(num_classes, input_shape, g, p, p_1x1, name="resnet50"):
    """ResNet-50: 7 x 7 stem, max-pool, four stages of bottlenecks, linear classifier.

    Args:
        num_classes: classes of the classifier.
        input_shape: (height, width, channels) of the inputs.
        g: one g per 3 x 3 width of `WIDTHS` (64, 128, 256, 512).
        p: one p per 3 x 3 width.
        p_1x1: one p per 1 x 1 width of `WIDTHS_1X1` (64 ... 2048); those convolutions have no
            K x K part, and p = 1 is dense.
        name: the model's name.
    """
    gp_3x3 = blocks.widths_to_gp(WIDTHS, g, p, "resnet50")
    gp_1x1 = blocks.widths_to_gp(WIDTHS_1X1, (None,) * len(WIDTHS_1X1), p_1x1, "resnet50")
    inputs = keras.Input(input_shape, name="images")
    x = blocks.conv_bn(inputs, 64, 7, 2, (1, None), "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, (filters, count) in enumerate(zip(WIDTHS, BLOCKS_PER_STAGE)):
        for b in range(count):
            strides = 2 if s and not b else 1
            x = blocks.bottleneck_block(
                x, filters, strides, gp_3x3[filters], gp_1x1, f"stage{s + 1}_block{b + 1}"
            )
    return keras.Model(inputs, blocks.classifier(x, num_classes), name=name)
