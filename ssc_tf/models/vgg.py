"""VGG-19 for CIFAR-sized inputs, as in GraSP (SPEC section 2)."""

import keras

from ssc_tf import widths
from ssc_tf.models import blocks

WIDTHS = widths.VGG19
# Five blocks of 3 x 3 convolutions, 2 x 2 max-pool between blocks.
STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def vgg19(num_classes, input_shape, g, p, name="vgg19"):
    """VGG-19 (CIFAR variant): conv-BN-ReLU x 16, global pooling, one linear classifier.

    Args:
        num_classes: classes of the classifier.
        input_shape: (height, width, channels) of the inputs.
        g: one g per width of `WIDTHS` (64, 128, 256, 512); 1 is dense.
        p: one p per width of `WIDTHS`.
        name: the model's name.

    The first convolution and the classifier stay dense.
    """
    gp = blocks.widths_to_gp(WIDTHS, g, p, "vgg19")
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for s, stage in enumerate(STAGES):
        if s:
            x = keras.layers.MaxPooling2D(2, name=f"block{s}_pool")(x)
        for i, filters in enumerate(stage):
            first = s == 0 and i == 0
            x = blocks.conv_bn(
                x, filters, 3, 1, (1, None) if first else gp[filters], f"block{s + 1}_{i + 1}"
            )
    return keras.Model(inputs, blocks.classifier(x, num_classes), name=name)
