"""The experiment configuration: `ExperimentConfig`, one validated object per training run.

Each field is described once, with its flag: `ssc_tf.experiment_flags` defines the absl flags
from these fields and reads them back into a config; `ssc_tf.flagfile` loads a config from a
flagfile (each experiment of the paper is one, shipped in `ssc_tf/configs/`). Library code
takes the config or its `model_kwargs()`, never `FLAGS`.

No TensorFlow here: tools and tests read configs without starting it.
"""

import dataclasses

from ssc_tf import architectures
from ssc_tf import arguments
from ssc_tf import pattern
from ssc_tf import pruning
from ssc_tf.data import datasets
from ssc_tf.pruning import budget

DATASETS = datasets.NAMES
MODELS = architectures.MODELS

# How a list flag spells "no such part" (g: no K x K part; p: no 1 x 1 part).
NONE = "none"

# The flag types of `_field`: absl's enum, integer, float, bool, and a comma-separated list of
# integers (`allow_none`: 'none' stands for None).
ENUM, INTEGER, FLOAT, BOOL, INT_LIST = "enum", "integer", "float", "bool", "int_list"


def _field(flag, help, default=dataclasses.MISSING, **options):
    """A config field described once: its flag type, help text and options (`choices` of an
    enum, `allow_none` of a list, `expected` for a required field's message)."""
    return dataclasses.field(
        default=default, metadata={"flag": flag, "help": help, **options}
    )


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: dataset, model, per-width (g, p) and training schedule.

    Build it with `ssc_tf.experiment_flags.config_from_flags(FLAGS)` in a CLI or with
    `ssc_tf.flagfile.load(name_or_path)`; constructing it directly validates the same way.
    Every check raises a one-line `ValueError` naming the argument (the flag, when read from
    flags) and the values it allows. Each field's meaning is its `help` below, which is also
    its flag's help text: `dataset`, `model` and `epochs` are required; `g` and `p` (one value
    per width of `architectures.widths(model)`) and `ticket` unless `sparsity` is 'dense'; `p_1x1` (one
    value per `architectures.widths_1x1(model)`) for a sparse ResNet-50. Lists become tuples,
    so a config is hashable.

    Example:

    >>> config = ExperimentConfig(dataset="cifar100", model="resnet32", epochs=250,
    ...                           g=(2, 6, 64), p=(2, 16, 32), ticket=5)
    >>> config.model_kwargs()["p"]
    (2, 16, 32)
    """

    dataset: str = _field(
        ENUM, "Dataset to train on ('digits' is bundled and needs no download).",
        choices=DATASETS,
    )
    model: str = _field(
        ENUM, "Architecture: vgg19 and resnet32 (CIFAR, Tiny-ImageNet) or resnet50 (ImageNet).",
        choices=MODELS,
    )
    epochs: int = _field(INTEGER, "Number of training epochs.", expected="an integer >= 1")
    g: tuple = _field(
        INT_LIST,
        "K x K blocks per width, one integer >= 1 or 'none' (no K x K part) for each width of "
        "the model (" + "; ".join(f"{m} {architectures.widths(m)}" for m in MODELS)
        + "; resnet50's are its 3 x 3 widths), e.g. 1,2,4,16. Ignored with --sparsity=dense.",
        default=(), allow_none=True,
    )
    p: tuple = _field(
        INT_LIST,
        "1 x 1 residue period per width, like --g ('none': no 1 x 1 part). Every 1 x 1 "
        "convolution (a ResNet shortcut) takes its width's p alone. Ignored with --sparsity=dense.",
        default=(), allow_none=True,
    )
    p_1x1: tuple = _field(
        INT_LIST,
        "resnet50 only: period of the 1 x 1 convolutions per filter count "
        f"{architectures.widths_1x1('resnet50')}, six integers >= 1. Empty for the other "
        "models.",
        default=(), allow_none=False,
    )
    pointwise_layout: str = _field(
        ENUM,
        "Which inputs SSC's 1 x 1 kernels read: joined (each filter's 1 x 1 inputs start in "
        "the next block, so every layer is one connected group) or aligned (ssc_tf's earlier "
        "layout, which closes some configs' channels into isolated groups; for runs and "
        "comparisons from before the joined layout). A pruned or narrow run keeps this "
        "pattern's count; the dense twin ignores it (docs/pattern.md).",
        default=pattern.JOINED, choices=pattern.LAYOUTS,
    )
    fan: str = _field(
        ENUM,
        "SSC only: the fans that scale each live weight's initial value (he_normal): dense "
        "(the dense kernel's, as a masked dense convolution starts, so it learns at the pace of "
        "the masked baselines under batch norm) or live (the pattern's own fan-in, ssc_tf's "
        "earlier choice, which learns many times slower at small budgets; for comparisons). "
        "It sets the initialization only: a resumed run keeps its weights (docs/pattern.md).",
        default=pattern.FANS[0], choices=pattern.FANS,
    )
    sparsity: str = _field(
        ENUM,
        "How the network is sparse: ssc (the --g/--p pattern), dense (the dense twin: every "
        "convolution standard, --g/--p/--p_1x1 ignored), narrow (the dense twin with every "
        "width scaled by one multiplier, chosen so that its weights are the closest to the "
        "--g/--p pattern's: genuinely smaller and faster), random, snip, grasp, synflow (a "
        "mask computed on the dense twin at initialization, then fixed) or magnitude "
        "(tfmot's gradual magnitude pruning, in its own process). Pruned runs keep the "
        "weights that the --g/--p pattern keeps, or --kept_fraction (docs/baselines.md).",
        default=pruning.SSC, choices=pruning.METHODS,
    )
    kept_fraction: float | None = _field(
        FLOAT,
        "Pruned and narrow runs only: the fraction of the model's weights (convolutions and "
        "classifier kernel) to keep, in (0, 1], instead of the --g/--p pattern's; a pruned "
        "run keeps the first convolution and the classifier dense, a narrow one narrows them "
        "too. Default: the pattern's exact count.",
        default=None,
    )
    random_per_layer: bool = _field(
        BOOL,
        "--sparsity=random only: keep each layer at the SSC pattern's density for that layer "
        "instead of one global uniform draw.",
        default=False,
    )
    ticket: float | None = _field(
        FLOAT,
        "The paper's label of the run, percent of the dense parameters kept (e.g. 5, 15). "
        "Required unless --sparsity=dense, which ignores it (a pruned run keeps the pattern's "
        "count, so it takes the same label). A label: the exact fraction comes from the "
        "pattern (docs/supplement.md).",
        default=None,
    )
    batch_size: int = _field(INTEGER, "Global batch size (split across replicas).", default=128)
    learning_rate: float = _field(FLOAT, "Initial SGD learning rate.", default=0.1)
    lr_boundaries: tuple = _field(
        INT_LIST,
        "Epochs at which the learning rate is multiplied by --lr_decay, strictly increasing "
        "and below --epochs, e.g. 100,150,200.",
        default=(), allow_none=False,
    )
    lr_decay: float = _field(
        FLOAT, "Learning-rate factor applied at each of --lr_boundaries, in (0, 1].",
        default=0.1,
    )
    momentum: float = _field(FLOAT, "SGD momentum, in [0, 1).", default=0.9)
    weight_decay: float = _field(FLOAT, "L2 weight-decay coefficient.", default=1e-4)
    validation_split: float = _field(
        FLOAT,
        "Fraction of the training data held out for validation, in [0, 1). The paper used "
        "0.1 only to choose g and p.",
        default=0.0,
    )
    train_examples: int | None = _field(
        INTEGER,
        "Train on only the first N examples of the training data (after the "
        "--validation_split hold-out), in the dataset's fixed, shuffled order: a smaller "
        "training set, the same in every run, to compare methods with less data. Default: "
        "all of them.",
        default=None,
    )
    seed: int = _field(
        INTEGER, "Seed for Python, numpy and TensorFlow, in [0, 2**32).", default=0
    )

    def __post_init__(self):
        arguments.check_choice("dataset", self.dataset, DATASETS)
        arguments.check_choice("model", self.model, MODELS)
        arguments.check_choice("sparsity", self.sparsity, pruning.METHODS)
        for name in ("g", "p", "p_1x1", "lr_boundaries"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_widths()
        self._check_ticket()
        self._check_pruning()
        self._check_schedule()

    def _check_widths(self):
        widths = self.widths
        for name in ("g", "p"):
            values = getattr(self, name)
            if not values and self.dense:
                continue
            if not values:
                raise ValueError(
                    f"{_kind()} {_spelled(name)} is required unless {_spelled('sparsity')}=dense: "
                    f"model {self.model!r} needs {len(widths)} values, one per width {widths} "
                    f"(an integer >= 1 or {NONE!r}). Received: {name}={format_list(values)}"
                )
            _check_per_width(name, values, self.model, widths, allow_none=True)
        for width, g, p in zip(widths, self.g, self.p):
            if g is None and p is None:
                raise ValueError(
                    f"Invalid values for {arguments.kind()}s {_spelled('g')} and "
                    f"{_spelled('p')}: at width {width} of model {self.model!r} both are "
                    f"{NONE!r}, which leaves those layers no kernel. "
                    f"Received: g={format_list(self.g)}, p={format_list(self.p)}"
                )
        widths_1x1 = architectures.widths_1x1(self.model)
        if not widths_1x1:
            if self.p_1x1:
                raise ValueError(
                    f"{_kind()} {_spelled('p_1x1')} applies only to {_spelled('model')}=resnet50 "
                    f"(its 1x1 layers {architectures.widths_1x1('resnet50')}); leave it empty "
                    f"for {_spelled('model')}={self.model}. "
                    f"Received: p_1x1={format_list(self.p_1x1)}"
                )
        elif self.p_1x1 or not self.dense:
            if not self.p_1x1:
                raise ValueError(
                    f"{_kind()} {_spelled('p_1x1')} is required for "
                    f"{_spelled('model')}={self.model} unless {_spelled('sparsity')}=dense: "
                    f"{len(widths_1x1)} integers >= 1, one per "
                    f"1x1 width {widths_1x1}. Received: p_1x1={format_list(self.p_1x1)}"
                )
            _check_per_width("p_1x1", self.p_1x1, self.model, widths_1x1, allow_none=False)

    def _check_ticket(self):
        if self.dense and self.ticket is None:
            return
        if self.ticket is None:
            raise ValueError(
                f"{_kind()} {_spelled('ticket')} is required unless {_spelled('sparsity')}=dense: "
                "the paper's label, percent of the dense parameters kept, in (0, 100] (for "
                "example 10)."
            )
        arguments.check_range("ticket", self.ticket, 0, 100, low_open=True)

    def _check_pruning(self):
        if self.kept_fraction is not None:
            if self.sparsity not in pruning.BUDGET_METHODS:
                raise ValueError(
                    f"{_kind()} {_spelled('kept_fraction')} sets a pruned run's budget (or a "
                    f"narrow one's), with {_spelled('sparsity')} one of "
                    f"{pruning.BUDGET_METHODS}. Received: "
                    f"kept_fraction={self.kept_fraction}, sparsity={self.sparsity!r}"
                )
            arguments.check_range("kept_fraction", self.kept_fraction, 0, 1, low_open=True)
        if self.random_per_layer and self.sparsity != pruning.RANDOM:
            raise ValueError(
                f"{_kind()} {_spelled('random_per_layer')} applies only to "
                f"{_spelled('sparsity')}={pruning.RANDOM!r}. Received: "
                f"sparsity={self.sparsity!r}"
            )
        if self.random_per_layer and self.kept_fraction is not None:
            raise ValueError(
                f"{_kind()} {_spelled('random_per_layer')} keeps each layer at the pattern's "
                f"density, so it takes no {_spelled('kept_fraction')}. Received: "
                f"kept_fraction={self.kept_fraction}"
            )

    @property
    def dense(self):
        """Whether this is the dense twin (`sparsity` 'dense')."""
        return self.sparsity == pruning.DENSE

    @property
    def masked(self):
        """Whether the model is the dense twin under a pruning mask (`pruning.PRUNED_METHODS`)."""
        return self.sparsity in pruning.PRUNED_METHODS

    @property
    def narrow(self):
        """Whether the model is the narrow dense twin (`sparsity` 'narrow')."""
        return self.sparsity == pruning.NARROW

    def _check_schedule(self):
        arguments.check_int("epochs", self.epochs, minimum=1)
        arguments.check_int("batch_size", self.batch_size, minimum=1)
        arguments.check_int("seed", self.seed, minimum=0, maximum=2**32)
        arguments.check_range("learning_rate", self.learning_rate, 0, None, low_open=True)
        arguments.check_range("lr_decay", self.lr_decay, 0, 1, low_open=True)
        arguments.check_range("momentum", self.momentum, 0, 1, high_open=True)
        arguments.check_range("weight_decay", self.weight_decay, 0, None)
        arguments.check_range("validation_split", self.validation_split, 0, 1, high_open=True)
        if self.train_examples is not None:
            arguments.check_int("train_examples", self.train_examples, minimum=1)
        previous = 0
        for boundary in self.lr_boundaries:
            if not arguments.is_int(boundary) or not previous < boundary < self.epochs:
                raise arguments.invalid(
                    "lr_boundaries",
                    f"strictly increasing integer epochs in [1, epochs={self.epochs})",
                    format_list(self.lr_boundaries),
                )
            previous = boundary

    @property
    def widths(self):
        """The filter counts that `g` and `p` refer to, in order."""
        return architectures.widths(self.model)

    @property
    def num_classes(self):
        return datasets.get(self.dataset).num_classes

    @property
    def input_shape(self):
        return datasets.get(self.dataset).input_shape

    def model_kwargs(self):
        """Keyword arguments for the model factory.

        Returns:
            A dict with `num_classes`, `input_shape`, `g` and `p` (tuples, one value per
            width), plus `p_1x1` for ResNet-50 and `pointwise_layout` and `fan` for SSC. For
            every other method, the dense twin (`sparsity` 'dense'; the pruned methods add
            `masked=True`, 'narrow' its `width_multiplier` from `pruning.budget`), `g` is
            all 1 and `p` all None (every layer a standard convolution) and ResNet-50's
            `p_1x1` is all 1 (a 1 x 1 layer with period 1 is a standard pointwise
            convolution), whatever `g`/`p`/`p_1x1` hold.
        """
        ssc = self.sparsity == pruning.SSC
        g, p, p_1x1 = (self.g, self.p, self.p_1x1) if ssc else architectures.dense_pattern(
            self.model)
        kwargs = {"num_classes": self.num_classes, "input_shape": self.input_shape, "g": g,
                  "p": p}
        if architectures.widths_1x1(self.model):
            kwargs["p_1x1"] = p_1x1
        if ssc:
            kwargs["pointwise_layout"] = self.pointwise_layout
            kwargs["fan"] = self.fan
        if self.masked:
            kwargs["masked"] = True
        if self.narrow:
            kwargs["width_multiplier"] = budget.width_multiplier(self)
        return kwargs

    def pattern_kwargs(self):
        """`model_kwargs` of the SSC pattern (--g, --p, --p_1x1) whatever `sparsity` is: the
        pruned and narrow runs' budget (`ssc_tf.pruning.budget`). Empty (g, p) for a dense
        run."""
        kwargs = {"num_classes": self.num_classes, "input_shape": self.input_shape,
                  "g": self.g, "p": self.p, "pointwise_layout": self.pointwise_layout}
        if architectures.widths_1x1(self.model):
            kwargs["p_1x1"] = self.p_1x1
        return kwargs


def format_list(values):
    """A list field as its flag spells it: `2,none,32`."""
    return ",".join(NONE if v is None else str(v) for v in values)


def _kind():
    return arguments.kind().capitalize()


_spelled = arguments.spelled


def _check_per_width(name, values, model, widths, allow_none):
    if len(values) != len(widths):
        raise ValueError(
            f"Invalid value for {arguments.kind()} {_spelled(name)}: model {model!r} needs "
            f"{len(widths)} values, one per width {widths}. Received {len(values)}: "
            f"{name}={format_list(values)}"
        )
    for value in values:
        if value is None and allow_none:
            continue
        if not arguments.is_int(value) or value < 1:
            allowed = f"integers >= 1 or {NONE!r}" if allow_none else "integers >= 1"
            raise arguments.invalid(
                name, f"{allowed}, one per width {widths}", format_list(values)
            )
