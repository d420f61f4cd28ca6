"""ResNet-32 for CIFAR with doubled widths [32, 64, 128], as in GraSP (SPEC section 2)."""

import keras

from ssc_tf.models import blocks

BASE_WIDTHS = (16, 32, 64)  # the standard ResNet-32; the paper doubles them (ssc_tf.widths)
BLOCKS_PER_STAGE = 5


def resnet32(num_classes, input_shape, g, p, width_multiplier=2, name="resnet32"):
    """ResNet-32: a dense 3 x 3 stem, three stages of five basic blocks, linear classifier.

    Args:
        num_classes: classes of the classifier.
        input_shape: (height, width, channels) of the inputs.
        g: one g per stage width ([32, 64, 128] with the default multiplier 2).
        p: one p per stage width.
        width_multiplier: multiplies the standard widths [16, 32, 64]; the paper uses 2.
        name: the model's name.
    """
    widths = tuple(width_multiplier * w for w in BASE_WIDTHS)
    gp = blocks.widths_to_gp(widths, g, p, "resnet32")
    inputs = keras.Input(input_shape, name="images")
    x = blocks.conv_bn(inputs, widths[0], 3, 1, (1, None), "stem")
    for s, filters in enumerate(widths):
        for b in range(BLOCKS_PER_STAGE):
            strides = 2 if s and not b else 1
            x = blocks.basic_block(x, filters, strides, gp[filters], f"stage{s + 1}_block{b + 1}")
    return keras.Model(inputs, blocks.classifier(x, num_classes), name=name)
