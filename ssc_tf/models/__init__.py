"""Model factories by name: `build("resnet32", num_classes=..., input_shape=..., g=..., p=...)`."""

from ssc_tf.models.resnet_cifar import resnet32
from ssc_tf.models.resnet_imagenet import resnet50
from ssc_tf.models.vgg import vgg19

MODELS = {"vgg19": vgg19, "resnet32": resnet32, "resnet50": resnet50}


def build(name, **kwargs):
    """Builds the model `name` (one of `MODELS`) with the factory's keyword arguments."""
    if name not in MODELS:
        raise ValueError(
            f"Invalid value for argument `name`: expected one of {sorted(MODELS)}. "
            f"Received: name={name!r}"
        )
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "build", "resnet32", "resnet50", "vgg19"]
