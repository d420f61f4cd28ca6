"""Filter counts of the paper's architectures (SPEC section 2), without TensorFlow.

Every layer with the same number of filters shares one (g, p), so these are also the orders of
the per-width --g, --p and --p_1x1 lists. The model factories and the config read them here.
"""

VGG19 = (64, 128, 256, 512)
# ResNet-32 for CIFAR with doubled widths (the standard network has 16, 32, 64).
RESNET32 = (32, 64, 128)
# ResNet-50's 3 x 3 convolutions, and its 1 x 1 convolutions, by filter count.
RESNET50 = (64, 128, 256, 512)
RESNET50_1X1 = (64, 128, 256, 512, 1024, 2048)
