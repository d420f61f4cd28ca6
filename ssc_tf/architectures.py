"""The paper's architectures as spec tables, walked into layers and counted, without TensorFlow.

Each network is described once, in `ARCHITECTURES`: a stem and a tuple of stages, each stage a
block kind, a width (filter count), a number of blocks, the first block's stride and an optional
pooling after it (in the spirit of the TF Model Garden's ResNet table). `network(model,
input_shape)` walks a table into the network's nodes: conv-BN-ReLU nodes, pooling nodes and
residual blocks, each convolution with its Keras layer name, channels, kernel, stride, output
size and the per-width setting it takes. `network(model, input_shape, width_multiplier)` walks
the same table with every filter count scaled by one factor (MobileNet's alpha), the narrow
dense baseline of `--sparsity=narrow`; `width_multiplier_for` finds the factor that keeps a
given number of weights. Every builder reads that walk: the Keras builder of
`ssc_tf.models`, and `count`, which totals the same convolutions with `SSCPattern` so that tools
trying thousands of (g, p) settings (ssc_tf.search_gp) need no model. Its totals equal
`models.report.model_stats` of the built model exactly: weights only (no bias, no batch norm),
every convolution plus the classifier's kernel, MACs of one example with the classifier counted
once per weight. The networks are described in docs/architectures.md.

Rules every walk follows:

- The first convolution of the network stays dense, as does the classifier.
- One (g, p) per width: a K x K convolution takes the --g/--p entry of its filter count.
- A 1 x 1 convolution takes p only (no K x K part): ResNet-50's take the --p_1x1 entry of their
  filter count; ResNet-32's projection shortcuts take the --p entry of their width, and are
  dense where that width is (g = 1). A p above the convolution's input channels counts as that
  many, so that no filter is left without a kernel (`ConvLayer.resolve`).
- A residual block has a projection shortcut (1 x 1 conv-BN, the block's stride) where its
  output shape differs from its input's in the table.
- A width multiplier a scales every filter count of the table, the stem's and the first
  convolution's too, to `scaled_width(filters, a)` channels; each convolution keeps the
  setting of its table width, so the (g, p) lists and their widths stay those of the table.
"""

import bisect
import dataclasses
import functools
import math

from ssc_tf import arguments
from ssc_tf import pattern as pattern_lib

# Which list a convolution's pattern comes from: the --g/--p entry of its width, or ResNet-50's
# --p_1x1 entry of its width (no K x K part).
GP = "gp"
P_1X1 = "p_1x1"

# Block kinds of a stage: conv-BN-ReLU layers (VGG), ResNet basic blocks (two 3 x 3 convs) and
# bottlenecks (v1.5, stride on the 3 x 3: 1 x 1 -> 3 x 3 -> 1 x 1 to `EXPANSION` x the width).
PLAIN = "plain"
BASIC = "basic"
BOTTLENECK = "bottleneck"
EXPANSION = {PLAIN: 1, BASIC: 1, BOTTLENECK: 4}
# The window of every K x K convolution after the stem.
KERNEL_SIZE = 3
# Keras names of the model's input and classifier layers.
INPUT_NAME = "images"
POOL_NAME = "pool"
LOGITS_NAME = "logits"


@dataclasses.dataclass(frozen=True)
class Pooling:
    """A max-pooling layer of a table.

    Attributes:
        pool_size: the (square) window.
        strides: the (square) stride.
        padding: 'valid' or 'same'.
    """

    pool_size: int
    strides: int
    padding: str


@dataclasses.dataclass(frozen=True)
class Stem:
    """A network's stem: one conv-BN-ReLU named `stem`, then an optional `stem_pool`.

    Attributes:
        filters: output channels.
        kernel_size: the (square) window.
        strides: the (square) stride.
        pool: the pooling after it, or None.
    """

    filters: int
    kernel_size: int
    strides: int
    pool: Pooling | None = None


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a table: `blocks` blocks of one kind and width.

    Attributes:
        block: `PLAIN` (a block is one conv-BN-ReLU), `BASIC` or `BOTTLENECK`.
        filters: the stage's width: filters of its K x K convolutions.
        blocks: how many blocks.
        strides: the stride of the first block (the others have 1).
        pool: a pooling after the stage (VGG's `block<s>_pool`), or None.
    """

    block: str
    filters: int
    blocks: int
    strides: int = 1
    pool: Pooling | None = None


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network's spec table.

    Attributes:
        stages: the `Stage`s in forward order.
        stem: the `Stem`, or None (VGG starts with its first stage).
        pointwise: the list a 1 x 1 convolution takes its p from: `GP` (the --p entry of its
            width) or `P_1X1` (ResNet-50's --p_1x1 entry of its filter count).
    """

    stages: tuple
    stem: Stem | None = None
    pointwise: str = GP


_VGG_POOL = Pooling(pool_size=2, strides=2, padding="valid")

# The paper's networks as GraSP (Wang et al., ICLR 2020) defines them (docs/architectures.md).
ARCHITECTURES = {
    # CIFAR VGG-19: 16 3 x 3 conv-BN-ReLU in five blocks, a 2 x 2 max-pool between blocks.
    "vgg19": Architecture(
        stages=(
            Stage(PLAIN, 64, 2, pool=_VGG_POOL),
            Stage(PLAIN, 128, 2, pool=_VGG_POOL),
            Stage(PLAIN, 256, 4, pool=_VGG_POOL),
            Stage(PLAIN, 512, 4, pool=_VGG_POOL),
            Stage(PLAIN, 512, 4),
        ),
    ),
    # CIFAR ResNet-32 with doubled widths (the standard network has 16, 32, 64).
    "resnet32": Architecture(
        stem=Stem(32, 3, 1),
        stages=(Stage(BASIC, 32, 5), Stage(BASIC, 64, 5, 2), Stage(BASIC, 128, 5, 2)),
    ),
    # ImageNet ResNet-50 (v1.5).
    "resnet50": Architecture(
        stem=Stem(64, 7, 2, pool=Pooling(pool_size=3, strides=2, padding="same")),
        stages=(
            Stage(BOTTLENECK, 64, 3),
            Stage(BOTTLENECK, 128, 4, 2),
            Stage(BOTTLENECK, 256, 6, 2),
            Stage(BOTTLENECK, 512, 3, 2),
        ),
        pointwise=P_1X1,
    ),
}
MODELS = tuple(ARCHITECTURES)


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One convolution of a model, named as in the Keras model.

    Attributes:
        name: the Keras layer's name.
        in_channels: input channels.
        filters: output channels.
        kernel_size: the (square) window size.
        strides: the (square) stride; padding is 'same'.
        output_size: (height, width) of the output for the model's input size (None where the
            input size is None).
        setting: `(GP, width)` or `(P_1X1, width)`: the per-width setting the layer takes; None
            for a layer that is always dense (the first convolution).
    """

    name: str
    in_channels: int
    filters: int
    kernel_size: int
    strides: int
    output_size: tuple
    setting: tuple | None

    @property
    def dense_params(self):
        """Weights of the dense kernel."""
        return self.kernel_size**2 * self.in_channels * self.filters

    @property
    def pixels(self):
        """Output positions of one example: MACs = pixels x live weights."""
        return math.prod(self.output_size)

    def resolve(self, g, p):
        """The (g, p) of this layer's pattern when its setting holds (g, p).

        A 1 x 1 convolution takes p only: (None, p), or the dense (1, None) where g == 1 (a
        dense width, and the dense twin). A p above its input channels M is taken as M (each
        filter reads the one input of its residue), since a larger one would leave filters
        without any kernel: ResNet-32's 32 -> 64 shortcut under the CIFAR-100 2 % ticket's
        p = 64 (docs/architectures.md). A K x K convolution takes (g, p) as it is.
        """
        if self.kernel_size != 1:
            return g, p
        if g == 1:
            return 1, None
        return None, None if p is None else min(p, self.in_channels)


@dataclasses.dataclass(frozen=True)
class Counts:
    """Weight and multiply-accumulate counts: live (what the pattern keeps) and dense (the
    dense layers of the same shapes). Per layer, or totals over every convolution and the
    classifier's kernel (no biases, no batch norm) as `count` and `model_stats` give them."""

    live_params: int
    dense_params: int
    macs: int
    dense_macs: int

    @property
    def kept_fraction(self):
        return self.live_params / self.dense_params


@dataclasses.dataclass(frozen=True)
class ConvBN:
    """conv -> batch norm (-> ReLU): Keras layers `<name>_conv`, `<name>_bn`, `<name>_relu`.

    Attributes:
        name: the prefix of the three layer names.
        conv: the `ConvLayer` (named `<name>_conv`).
        relu: whether a ReLU follows the batch norm.
    """

    name: str
    conv: ConvLayer
    relu: bool = True

    @property
    def bn_name(self):
        return f"{self.name}_bn"

    @property
    def relu_name(self):
        return f"{self.name}_relu"

    @property
    def output(self):
        """(channels, output size) of the node."""
        return self.conv.filters, self.conv.output_size


@dataclasses.dataclass(frozen=True)
class Pool:
    """A max-pooling node.

    Attributes:
        name: the Keras layer's name.
        pooling: its `Pooling`.
        output_size: (height, width) of its output.
    """

    name: str
    pooling: Pooling
    output_size: tuple


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """A residual block: ReLU(shortcut + main path), Keras layers `<name>_add`, `<name>_out`.

    Attributes:
        name: the block's name, the prefix of its layers' names.
        kind: `BASIC` or `BOTTLENECK`.
        layers: the main path's `ConvBN`s in order (the last without ReLU).
        shortcut: the projection shortcut's `ConvBN` (1 x 1, no ReLU), or None for the
            identity.
    """

    name: str
    kind: str
    layers: tuple
    shortcut: ConvBN | None

    @property
    def add_name(self):
        return f"{self.name}_add"

    @property
    def out_name(self):
        return f"{self.name}_out"

    @property
    def output(self):
        """(channels, output size) of the block."""
        return self.layers[-1].output


@dataclasses.dataclass(frozen=True)
class Classifier:
    """Global average pooling, then one dense linear layer (the logits, float32, with bias).

    Attributes:
        in_features: features entering the dense layer (its kernel is features x classes).
        pool_name: the pooling layer's name.
        name: the dense layer's name.
    """

    in_features: int
    pool_name: str = POOL_NAME
    name: str = LOGITS_NAME


@dataclasses.dataclass(frozen=True)
class Network:
    """The walk of one spec table for one input shape.

    Attributes:
        model: the model's name, one of `MODELS`.
        input_shape: (height, width, channels) of the inputs.
        nodes: `ConvBN`, `Pool` and `ResidualBlock` nodes in forward order.
        classifier: the `Classifier` after the last node.
        input_name: the Keras input layer's name.
    """

    model: str
    input_shape: tuple
    nodes: tuple
    classifier: Classifier
    input_name: str = INPUT_NAME

    @property
    def conv_layers(self):
        """Every `ConvLayer` in forward order (a block's main path before its shortcut)."""
        layers = []
        for node in self.nodes:
            if isinstance(node, ConvBN):
                layers.append(node.conv)
            elif isinstance(node, ResidualBlock):
                layers += [n.conv for n in node.layers]
                layers += [node.shortcut.conv] if node.shortcut else []
        return tuple(layers)


def _size(size, window, strides, padding):
    """Output size of a convolution or pooling; None stays None."""
    if padding == "same":
        return tuple(None if s is None else -(-s // strides) for s in size)
    return tuple(None if s is None else (s - window) // strides + 1 for s in size)


def scaled_width(filters, width_multiplier):
    """The channels of a table's filter count under a width multiplier: filters x multiplier
    rounded half up, at least 1."""
    return max(1, math.floor(filters * width_multiplier + 0.5))


class _Walker:
    """Walks one `Architecture` into nodes, from the current channels and size.

    `channels` are the built channels (scaled by the width multiplier), `width` the table's
    filter count of the last node (None before the first), which decides the projections.
    """

    def __init__(self, architecture, channels, size, width_multiplier):
        self.architecture = architecture
        self.width_multiplier = width_multiplier
        self.channels, self.size = channels, size
        self.width = None
        self.nodes = []

    def conv_bn(self, name, channels, size, filters, kernel_size, strides, relu=True):
        """A `ConvBN` from `channels` inputs of `size` to the table's `filters`, scaled; its
        setting follows its kernel and table width."""
        kind = self.architecture.pointwise if kernel_size == 1 else GP
        output_size = _size(size, kernel_size, strides, "same")
        conv = ConvLayer(f"{name}_conv", channels, scaled_width(filters, self.width_multiplier),
                         kernel_size, strides, output_size, (kind, filters))
        return ConvBN(name, conv, relu)

    def add(self, node, width):
        """Appends a `ConvBN` or `ResidualBlock` of table width `width`; its output is the
        next node's input."""
        self.nodes.append(node)
        self.channels, self.size = node.output
        self.width = width

    def pool(self, name, pooling):
        """Appends a `Pool`: the channels stay, the size shrinks."""
        size = _size(self.size, pooling.pool_size, pooling.strides, pooling.padding)
        self.nodes.append(Pool(name, pooling, size))
        self.size = size

    def stem(self, stem):
        """Appends the `Stem`'s conv-BN-ReLU and pooling."""
        self.add(self.conv_bn("stem", self.channels, self.size, stem.filters, stem.kernel_size,
                              stem.strides), stem.filters)
        if stem.pool:
            self.pool("stem_pool", stem.pool)

    def stage(self, index, stage):
        """Stage `index` (1, 2, ...): VGG's `block<s>_<i>` layers, or `stage<s>_block<b>`."""
        for b in range(1, stage.blocks + 1):
            strides = stage.strides if b == 1 else 1
            if stage.block == PLAIN:
                self.add(self.conv_bn(f"block{index}_{b}", self.channels, self.size,
                                      stage.filters, KERNEL_SIZE, strides), stage.filters)
            else:
                self.add(self.residual_block(f"stage{index}_block{b}", stage, strides),
                         EXPANSION[stage.block] * stage.filters)
        if stage.pool:
            self.pool(f"block{index}_pool", stage.pool)

    def residual_block(self, name, stage, strides):
        """A basic block or bottleneck of `stage`, with a projection where the table's shape
        changes (so a width multiplier keeps every projection)."""
        filters, out = stage.filters, EXPANSION[stage.block] * stage.filters
        if stage.block == BASIC:
            first = self.conv_bn(f"{name}_1", self.channels, self.size, filters, KERNEL_SIZE,
                                 strides)
            layers = (first, self.conv_bn(f"{name}_2", first.conv.filters, first.conv.output_size,
                                          out, KERNEL_SIZE, 1, relu=False))
        else:
            reduce = self.conv_bn(f"{name}_1", self.channels, self.size, filters, 1, 1)
            middle = self.conv_bn(f"{name}_2", reduce.conv.filters, self.size, filters,
                                  KERNEL_SIZE, strides)
            layers = (reduce, middle, self.conv_bn(f"{name}_3", middle.conv.filters,
                                                   middle.conv.output_size, out, 1, 1,
                                                   relu=False))
        shortcut = None
        if strides != 1 or self.width != out:
            shortcut = self.conv_bn(f"{name}_shortcut", self.channels, self.size, out, 1, strides,
                                    relu=False)
        return ResidualBlock(name, stage.block, layers, shortcut)


def _check_model(model):
    if model not in MODELS:
        raise ValueError(
            f"Invalid value for argument `model`: expected one of {MODELS}. "
            f"Received: model={model!r}"
        )


@functools.lru_cache(maxsize=None)
def _network(model, input_shape, width_multiplier):
    *size, channels = input_shape
    architecture = ARCHITECTURES[model]
    walker = _Walker(architecture, channels, tuple(size), width_multiplier)
    if architecture.stem:
        walker.stem(architecture.stem)
    for index, stage in enumerate(architecture.stages, start=1):
        walker.stage(index, stage)
    # The first convolution (the first node: the stem, or VGG's block1_1) stays dense.
    first, *rest = walker.nodes
    dense_first = dataclasses.replace(first, conv=dataclasses.replace(first.conv, setting=None))
    return Network(model, input_shape, (dense_first, *rest), Classifier(walker.channels))


def network(model, input_shape, width_multiplier=1.0):
    """Walks the spec table of `model` for `input_shape` (cached: the walk is immutable).

    Args:
        model: one of `MODELS`.
        input_shape: (height, width, channels) of the inputs; height and width may be None.
        width_multiplier: a number in (0, 1], the factor of every filter count of the table
            (`scaled_width`); 1 walks the table as it is.

    Returns:
        The `Network`.

    Raises:
        ValueError: naming the argument, for an unknown model or a multiplier outside (0, 1].
    """
    _check_model(model)
    arguments.check_range("width_multiplier", width_multiplier, 0, 1, low_open=True)
    return _network(model, tuple(input_shape), float(width_multiplier))


def _structure(model):
    """The convolutions of `model` for any input size (sizes None)."""
    return network(model, (None, None, None)).conv_layers


def _widths(model, kind):
    return tuple(sorted({l.setting[1] for l in _structure(model) if l.setting
                         and l.setting[0] == kind}))


def widths(model):
    """The widths of `model` in the order of the --g and --p lists (its K x K filter counts).

    Every layer of a width shares that width's (g, p), as in the paper (Verma et al., WACV
    2023): vgg19 (64, 128, 256, 512), resnet32 (32, 64, 128), resnet50 (64, 128, 256, 512).
    """
    return _widths(model, GP)


def widths_1x1(model):
    """The 1 x 1 filter counts of `model` in the order of the --p_1x1 list: resnet50 (64, 128,
    256, 512, 1024, 2048); empty for the models whose 1 x 1 convolutions take --p."""
    return _widths(model, P_1X1)


def dense_pattern(model):
    """The dense twin's `(g, p, p_1x1)` lists of `model`: g = 1 and p = None at every width
    (every layer a standard convolution), p_1x1 = 1 (a standard pointwise convolution)."""
    return (1,) * len(widths(model)), (None,) * len(widths(model)), (1,) * len(widths_1x1(model))


def conv_layers(model, input_shape, width_multiplier=1.0):
    """Every convolution of `model` in forward order (a block's main path before its shortcut).

    Args:
        model: one of `MODELS`.
        input_shape: (height, width, channels) of the inputs.
        width_multiplier: the factor of every filter count (`network`).

    Returns:
        A tuple of `ConvLayer`.
    """
    return network(model, input_shape, width_multiplier).conv_layers


def classifier_inputs(model, width_multiplier=1.0):
    """Features entering the classifier (its kernel is features x classes)."""
    return network(model, (None, None, None), width_multiplier).classifier.in_features


@functools.lru_cache(maxsize=None)
def live_params(in_channels, filters, kernel_size, g, p, layout=pattern_lib.JOINED):
    """Exact live weights of one convolution (cached: searches count the same shapes often).

    Raises:
        ValueError: from `SSCPattern`, when (g, p) leaves a filter without any kernel.
    """
    return pattern_lib.SSCPattern(in_channels, filters, kernel_size, g, p, layout).live_params


def layer_gp(layer, settings):
    """The (g, p) of `layer`'s pattern given `settings` (from `settings_of`).

    (1, None) for the dense first convolution; otherwise `ConvLayer.resolve` of its setting's
    (g, p): a 1 x 1 convolution takes p only.
    """
    return (1, None) if layer.setting is None else layer.resolve(*settings[layer.setting])


def _check_count(model, name, values, expected, what):
    if values is None or len(values) != len(expected):
        raise ValueError(
            f"Invalid value for argument `{name}` of model {model!r}: expected one value per "
            f"{what} {expected} ({len(expected)} values). Received: {name}={values!r}"
        )


def settings_of(model, g, p, p_1x1=()):
    """Maps each `ConvLayer.setting` of `model` to its (g, p), from the per-width lists.

    Args:
        model: one of `MODELS`.
        g: one g (int >= 1 or None) per width of `widths(model)`.
        p: one p (int >= 1 or None) per width.
        p_1x1: one p (int >= 1) per 1 x 1 width of `widths_1x1(model)` (resnet50 only).

    Returns:
        A dict from `(GP, width)` to (g, p) and from `(P_1X1, width)` to (None, p).

    Raises:
        ValueError: naming the argument, for a list of the wrong length, a bad value, or a
            width whose 1 x 1 convolutions would take p = None (no kernel).
    """
    _check_model(model)
    _check_count(model, "g", g, widths(model), "width")
    _check_count(model, "p", p, widths(model), "width")
    _check_count(model, "p_1x1", p_1x1, widths_1x1(model), "1 x 1 width")
    settings = {(GP, w): pattern_lib.check_g_p(gw, pw) for w, gw, pw in zip(widths(model), g, p)}
    settings.update(
        {(P_1X1, w): pattern_lib.check_g_p(None, pw) for w, pw in zip(widths_1x1(model), p_1x1)}
    )
    for layer in _structure(model):
        if layer.setting and layer_gp(layer, settings) == (None, None):
            raise ValueError(
                f"Invalid value for argument `p` of model {model!r}: width {layer.setting[1]} "
                f"has a 1 x 1 convolution ({layer.name}), which takes p only; None leaves it "
                f"no kernel. Received: p={p!r}"
            )
    return settings


def count(model, num_classes, input_shape, g, p, p_1x1=(), pointwise_layout=pattern_lib.JOINED,
          fan=pattern_lib.FANS[0], width_multiplier=1.0):
    """Exact totals of the model `models.build(model, ...)` would build, without building it.

    Takes the model factory's keyword arguments, so `count(config.model,
    **config.model_kwargs())` counts an experiment.

    Args:
        model: one of `MODELS`.
        num_classes: classes of the classifier.
        input_shape: (height, width, channels) of the inputs.
        g: one g per width of the model (int >= 1 or None).
        p: one p per width (int >= 1 or None).
        p_1x1: resnet50 only: one p per 1 x 1 width.
        pointwise_layout: the layout of the 1 x 1 parts (`pattern.LAYOUTS`).
        fan: unused (`pattern.FANS`): initial values change no count.
        width_multiplier: the factor of every filter count (`network`); the narrow dense
            baseline takes the dense (g, p) with the multiplier of `width_multiplier_for`.

    Returns:
        `Counts`, equal to `models.report.model_stats` of the built model.
    """
    del fan
    settings = settings_of(model, g, p, p_1x1)
    live = dense = macs = dense_macs = 0
    for layer in conv_layers(model, input_shape, width_multiplier):
        layer_live = live_params(
            layer.in_channels, layer.filters, layer.kernel_size, *layer_gp(layer, settings),
            pointwise_layout,
        )
        live, dense = live + layer_live, dense + layer.dense_params
        macs += layer.pixels * layer_live
        dense_macs += layer.pixels * layer.dense_params
    fc = classifier_inputs(model, width_multiplier) * num_classes
    return Counts(
        live_params=live + fc, dense_params=dense + fc, macs=macs + fc, dense_macs=dense_macs + fc
    )


def _dense_weights(model, num_classes, input_shape, width_multiplier):
    """Every counted weight of the dense `model` under `width_multiplier`."""
    walk = network(model, input_shape, width_multiplier)
    return (sum(layer.dense_params for layer in walk.conv_layers)
            + walk.classifier.in_features * num_classes)


def max_width(model):
    """The largest filter count of `model`'s convolutions: resnet32 128, vgg19 512, resnet50
    2048. A width multiplier k / max_width gives that convolution k channels."""
    return max(layer.filters for layer in _structure(model))


def width_multiplier_for(model, num_classes, input_shape, params):
    """The width multiplier at which the dense `model` keeps about `params` weights.

    Tries the multipliers k / `max_width(model)` for k = 1 ... max_width, the steps at which
    the widest convolution gains one channel and every other one at most one, and returns the
    one whose dense network's weights (every convolution and the classifier kernel, as `count`
    counts them) are closest to `params`; ties go to the larger. The count grows strictly
    with k (the widest layer gains a channel at every step), so a bisection finds it exactly.

    Args:
        model: one of `MODELS`.
        num_classes: classes of the classifier.
        input_shape: (height, width, channels) of the inputs (the channels count).
        params: the weight count to match, an integer >= 1.

    Returns:
        The multiplier k / max_width, a float in (0, 1]: 1 for `params` at or above the dense
        network's count.

    Raises:
        ValueError: naming the argument, for an unknown model or a bad count.
    """
    _check_model(model)
    arguments.check_int("num_classes", num_classes, minimum=1)
    arguments.check_int("params", params, minimum=1)
    steps = max_width(model)

    def weights(k):
        return _dense_weights(model, num_classes, input_shape, k / steps)

    # The first k whose count reaches `params`; the closest is it or the one below.
    k = min(bisect.bisect_left(range(1, steps + 1), params, key=weights) + 1, steps)
    if k > 1 and params - weights(k - 1) < weights(k) - params:
        k -= 1
    return k / steps
