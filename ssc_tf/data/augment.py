"""Per-image preprocessing shared by every source: training augmentation, evaluation resize
and normalization.

The training recipe is the paper's "standard augmentation" (docs/training.md), as each
dataset's record in `ssc_tf.data.datasets` selects it: CIFAR-10/100 pad 4 pixels
with zeros, take a random 32x32 crop and flip left-right with probability 1/2; Tiny-ImageNet
the same at 64x64 (its usual recipe, torchvision's `RandomCrop(64, padding=4)` + flip);
ImageNet an Inception-style random resized crop (area 8 %-100 % of the image, aspect ratio
3/4-4/3, 10 attempts, else the whole image: TF Model Garden's `random_crop_image_v2`)
decoded straight from the JPEG bytes, resized to 224x224 and rounded to uint8 (as
torchvision's crop of a PIL image is), then the flip; digits the pad-and-crop without the
flip, since a mirrored digit is not the same digit (or no digit at all). Every random op is
stateless and takes an explicit seed, so a pipeline built with the same seed yields the same
images, even from a parallel map.

Fashion-MNIST is stored at 28x28 grey: `pad_stored` pads it to 32x32 and repeats it over 3
channels before anything else (its readers call it), then it takes CIFAR's pad, crop and flip:
a mirrored shirt, bag or shoe is the same kind of clothing.

Evaluation: ImageNet images are resized so that the shorter side is 256 (aspect ratio kept)
and center-cropped to 224x224, in float32 (the exported serving graph does the same); the
other datasets are used at their native size.

Every training image thus leaves `train_augment` as uint8, a quarter of float32's bytes on its
way to an accelerator when `normalize` runs there (`ssc_tf.data.pipeline`).

`normalize` and `eval_resize` are the functions the pipelines use, so an exported serving
graph can call them on raw uint8 images and match training exactly.
"""

import tensorflow as tf

from ssc_tf.data import datasets

# Zero padding of the pad-and-random-crop recipe, in pixels.
CROP_PADDING = 4
# ImageNet's random resized crop: the fraction of the image's area it covers.
_CROP_AREA_RANGE = (0.08, 1.0)


def normalize(images, dataset):
    """Scales 0..255 pixels to zero mean and unit variance per channel.

    Computes `(images / 255 - mean_rgb) / stddev_rgb` over the last axis, with the
    statistics of the dataset's record.

    Args:
        images: uint8 or float tensor with values in 0..255 and 3 channels last, any rank
            (one image `(H, W, 3)` or a batch `(B, H, W, 3)`).
        dataset: str, one of `ssc_tf.data.datasets.NAMES`: whose statistics to use.

    Returns:
        A float32 tensor of the shape of `images`.

    Example:

    >>> normalize(tf.constant([[[0, 128, 255]]], tf.uint8), "imagenet2012").numpy().round(4)
    array([[[-2.1179,  0.2052,  2.64  ]]], dtype=float32)
    """
    record = datasets.get(dataset)
    images = tf.cast(images, tf.float32)
    mean = tf.constant(record.mean_rgb, tf.float32) * 255.0
    stddev = tf.constant(record.stddev_rgb, tf.float32) * 255.0
    return (images - mean) / stddev


def eval_resize(images, dataset):
    """Brings evaluation images to the model's input size (no randomness).

    For a dataset whose record has an `eval_shorter_side` (`imagenet2012`: 256): resizes
    (bilinear, antialiased) so that the shorter side is that, keeping the aspect ratio, then
    crops the center at the input size (224x224). Every other dataset is evaluated at its
    native size: the images come back unchanged.

    Args:
        images: one image `(H, W, 3)` or a batch `(B, H, W, 3)` of equal-sized images,
            uint8 or float with values in 0..255.
        dataset: str, one of `ssc_tf.data.datasets.NAMES`.

    Returns:
        For `imagenet2012` a float32 tensor `(..., 224, 224, 3)` with values in 0..255;
        otherwise `images` as a tensor, as given.
    """
    record = datasets.get(dataset)
    images = tf.convert_to_tensor(images)
    if record.eval_shorter_side is None:
        return images
    height, width = record.input_shape[:2]
    size = tf.cast(tf.shape(images)[-3:-1], tf.float32)
    scale = record.eval_shorter_side / tf.reduce_min(size)
    resized = tf.image.resize(
        images, tf.cast(tf.round(size * scale), tf.int32), method="bilinear", antialias=True
    )
    return tf.image.resize_with_crop_or_pad(resized, height, width)


def pad_stored(image, dataset):
    """Brings a stored image of a dataset with a `stored_size` to the model's input shape.

    Pads it with zeros centrally from `stored_size` to the height and width of the record's
    `input_shape` (Fashion-MNIST: 28x28 to 32x32, the black of its background) and repeats
    one grey channel over the record's channels. The readers and the serving signature's
    image decoder both call it, so a served 28x28 file is seen as in training.

    Args:
        image: uint8 tensor `(stored height, stored width, 1 or 3)`.
        dataset: str, one of `ssc_tf.data.datasets.NAMES`, whose record has a `stored_size`.

    Returns:
        A uint8 tensor of the record's `input_shape`.
    """
    record = datasets.get(dataset)
    height, width, channels = record.input_shape
    image = tf.image.resize_with_crop_or_pad(image, height, width)
    if channels != 1:
        image = tf.broadcast_to(image, (height, width, channels))
    return tf.ensure_shape(image, record.input_shape)


def train_augment(image, seed, dataset):
    """Applies the dataset's random training augmentation (see the module docstring).

    Args:
        image: one image. For `imagenet2012` a scalar string tensor holding the JPEG bytes
            (the crop is decoded directly, without decoding the whole image); otherwise a
            uint8 tensor `(H, W, 3)` at the dataset's input size.
        seed: int tensor of shape `(2,)`, the stateless seed of this image's augmentation.
        dataset: str, one of `ssc_tf.data.datasets.NAMES`.

    Returns:
        The augmented uint8 image `(H, W, 3)` of the dataset's `input_shape`.
    """
    record = datasets.get(dataset)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    if record.crop == datasets.RESIZED_CROP:
        image = _random_resized_crop_jpeg(image, crop_seed, record.input_shape[:2])
    else:
        image = _pad_and_random_crop(image, crop_seed, CROP_PADDING)
    if record.flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def _pad_and_random_crop(image, seed, padding):
    """A random window of the image's own size from the image zero-padded by `padding`."""
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed)


def _random_resized_crop_jpeg(encoded, seed, size):
    """Inception-style random crop of a JPEG, decoded crop only, resized to `size`, uint8."""
    window_offset, window_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(encoded),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        seed=seed,
        min_object_covered=_CROP_AREA_RANGE[0],
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=_CROP_AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop_window = tf.concat([window_offset[:2], window_size[:2]], axis=0)
    image = tf.image.decode_and_crop_jpeg(encoded, crop_window, channels=3)
    # Bilinear weights are convex: the resized values stay in 0..255.
    image = tf.cast(tf.round(tf.image.resize(image, size, method="bilinear")), tf.uint8)
    return tf.ensure_shape(image, (*size, 3))
