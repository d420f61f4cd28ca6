"""Experiment configuration: the absl flags, their plain config object, and flagfile loading.

The flags are defined here once (`define_flags`) and read once into an `ExperimentConfig`
(`ExperimentConfig.from_flags`); library code takes that object or its `model_kwargs()`, never
`FLAGS`. Each experiment of the paper is one flagfile under `configs/`, loaded either by a CLI's
`--flagfile=configs/<name>.cfg` or, without touching the global `FLAGS`, by `load_flagfile`.

No TensorFlow here: tools and tests read configs without starting it.
"""

import dataclasses
import difflib
import os

from absl import flags

from ssc_tf import widths as widths_lib

# Filter counts of the layers that share one (g, p), in the order of the --g and --p lists
# (SPEC section 2: the same (g, p) for every layer with the same number of filters).
WIDTHS = {
    "vgg19": widths_lib.VGG19,
    "resnet32": widths_lib.RESNET32,
    "resnet50": widths_lib.RESNET50,
}
# ResNet-50's 1x1 convolutions by filter count, in the order of the --p_1x1 list.
RESNET50_1X1_WIDTHS = widths_lib.RESNET50_1X1

NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "tinyimagenet": 200,
    "imagenet2012": 1000,
    "digits": 10,
}
INPUT_SHAPES = {
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "tinyimagenet": (64, 64, 3),
    "imagenet2012": (224, 224, 3),
    "digits": (32, 32, 3),
}

DATASETS = tuple(NUM_CLASSES)
MODELS = tuple(WIDTHS)

# How a list flag spells "no such part" (g: no K x K part; p: no 1 x 1 part).
_NONE = "none"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: dataset, model, per-width (g, p) and training schedule.

    Build it with `ExperimentConfig.from_flags(FLAGS)` in a CLI or with `load_flagfile(path)`;
    constructing it directly validates the same way. Every check raises `ValueError` naming
    the flag (`--g`, `--lr_boundaries`, ...) and the values it allows.

    Args:
        dataset: str, one of `DATASETS`.
        model: str, one of `MODELS`.
        epochs: int >= 1, the length of training.
        g: tuple of int >= 1 or None, one per width of `WIDTHS[model]`: the number of K x K
            blocks of the layers with that many filters (None: no K x K part). Required
            unless `dense`; with `dense`, validated if given and otherwise ignored.
        p: tuple of int >= 1 or None, like `g`: the 1 x 1 residue period (None: no 1 x 1 part).
            A width may not have both g and p None (its layers would hold no kernel).
        p_1x1: tuple of int >= 1, one per width of `RESNET50_1X1_WIDTHS`: the period of
            ResNet-50's 1 x 1 convolutions. Required for a sparse ResNet-50, empty for the
            other models.
        dense: bool, train the dense twin (every layer a standard convolution).
        ticket: float in (0, 100], the paper's label of the run: percent of the dense
            parameters kept. Required unless `dense`; must be None with `dense`. A label
            only: the exact kept fraction comes from the pattern (SPEC section 3).
        batch_size: int >= 1, the global batch size. Defaults to 128.
        learning_rate: float > 0, the initial SGD learning rate. Defaults to 0.1.
        lr_boundaries: tuple of int, strictly increasing epochs in [1, epochs) at which the
            learning rate is multiplied by `lr_decay`. Defaults to none.
        lr_decay: float in (0, 1], the step factor. Defaults to 0.1.
        momentum: float in [0, 1), the SGD momentum. Defaults to 0.9.
        weight_decay: float >= 0, the L2 coefficient. Defaults to 1e-4.
        validation_split: float in [0, 1), the fraction of the training data held out for
            validation. Defaults to 0.0.
        seed: int in [0, 2**32), seeds Python, numpy and TensorFlow. Defaults to 0.

    Example:

    >>> config = ExperimentConfig(dataset="cifar100", model="resnet32", epochs=250,
    ...                           g=(2, 6, 64), p=(2, 16, 32), ticket=5)
    >>> config.model_kwargs()["p"]
    (2, 16, 32)
    """

    dataset: str
    model: str
    epochs: int
    g: tuple = ()
    p: tuple = ()
    p_1x1: tuple = ()
    dense: bool = False
    ticket: float | None = None
    batch_size: int = 128
    learning_rate: float = 0.1
    lr_boundaries: tuple = ()
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    validation_split: float = 0.0
    seed: int = 0

    def __post_init__(self):
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("model", self.model, MODELS)
        for name in ("g", "p", "p_1x1", "lr_boundaries"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_widths()
        self._check_ticket()
        self._check_schedule()

    def _check_widths(self):
        widths = WIDTHS[self.model]
        for name in ("g", "p"):
            values = getattr(self, name)
            if not values and self.dense:
                continue
            if not values:
                raise ValueError(
                    f"Flag --{name} is required unless --dense: model {self.model!r} needs "
                    f"{len(widths)} values, one per width {widths} (an integer >= 1 or "
                    f"{_NONE!r}). Received: {name}={_format(values)}"
                )
            _check_per_width(name, values, self.model, widths, allow_none=True)
        for width, g, p in zip(widths, self.g, self.p):
            if g is None and p is None:
                raise ValueError(
                    f"Invalid values for flags --g and --p: at width {width} of model "
                    f"{self.model!r} both are {_NONE!r}, which leaves those layers no kernel. "
                    f"Received: g={_format(self.g)}, p={_format(self.p)}"
                )
        if self.model != "resnet50":
            if self.p_1x1:
                raise ValueError(
                    "Flag --p_1x1 applies only to --model=resnet50 (its 1x1 layers "
                    f"{RESNET50_1X1_WIDTHS}); leave it empty for --model={self.model}. "
                    f"Received: p_1x1={_format(self.p_1x1)}"
                )
        elif self.p_1x1 or not self.dense:
            if not self.p_1x1:
                raise ValueError(
                    "Flag --p_1x1 is required for --model=resnet50 unless --dense: "
                    f"{len(RESNET50_1X1_WIDTHS)} integers >= 1, one per 1x1 width "
                    f"{RESNET50_1X1_WIDTHS}. Received: p_1x1={_format(self.p_1x1)}"
                )
            _check_per_width(
                "p_1x1", self.p_1x1, self.model, RESNET50_1X1_WIDTHS, allow_none=False
            )

    def _check_ticket(self):
        if self.dense:
            if self.ticket is not None:
                raise ValueError(
                    "Flag --ticket labels an SSC run; a --dense run keeps 100 % and takes no "
                    f"ticket. Received: ticket={self.ticket}"
                )
            return
        if self.ticket is None:
            raise ValueError(
                "Flag --ticket is required unless --dense: the paper's label, percent of the "
                "dense parameters kept, in (0, 100] (for example 10)."
            )
        _check_range("ticket", self.ticket, 0, 100, low_open=True)

    def _check_schedule(self):
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.seed >= 2**32:
            raise ValueError(
                f"Invalid value for flag --seed: expected an integer in [0, 2**32). "
                f"Received: seed={self.seed}"
            )
        _check_range("learning_rate", self.learning_rate, 0, None, low_open=True)
        _check_range("lr_decay", self.lr_decay, 0, 1, low_open=True)
        _check_range("momentum", self.momentum, 0, 1, high_open=True)
        _check_range("weight_decay", self.weight_decay, 0, None)
        _check_range("validation_split", self.validation_split, 0, 1, high_open=True)
        previous = 0
        for boundary in self.lr_boundaries:
            if (
                not _is_int(boundary)
                or boundary <= previous
                or boundary >= self.epochs
            ):
                raise ValueError(
                    "Invalid value for flag --lr_boundaries: expected strictly increasing "
                    f"integer epochs in [1, epochs={self.epochs}). "
                    f"Received: lr_boundaries={_format(self.lr_boundaries)}"
                )
            previous = boundary

    @property
    def widths(self):
        """The filter counts that `g` and `p` refer to, in order."""
        return WIDTHS[self.model]

    @property
    def num_classes(self):
        return NUM_CLASSES[self.dataset]

    @property
    def input_shape(self):
        return INPUT_SHAPES[self.dataset]

    def model_kwargs(self):
        """Keyword arguments for the model factory.

        Returns:
            A dict with `num_classes`, `input_shape`, `g` and `p` (tuples, one value per
            width), plus `p_1x1` for ResNet-50. For `dense`, `g` is all 1 and `p` all None
            (every K x K layer a standard convolution) and ResNet-50's `p_1x1` is all 1 (a
            1 x 1 layer with period 1 is a standard pointwise convolution), whatever
            `g`/`p`/`p_1x1` hold.
        """
        widths = self.widths
        if self.dense:
            g, p = (1,) * len(widths), (None,) * len(widths)
            p_1x1 = (1,) * len(RESNET50_1X1_WIDTHS)
        else:
            g, p, p_1x1 = self.g, self.p, self.p_1x1
        kwargs = {
            "num_classes": self.num_classes,
            "input_shape": self.input_shape,
            "g": g,
            "p": p,
        }
        if self.model == "resnet50":
            kwargs["p_1x1"] = p_1x1
        return kwargs

    @classmethod
    def from_flags(cls, flag_values=flags.FLAGS):
        """Reads the parsed flags of `define_flags` into a validated config.

        Args:
            flag_values: the parsed `absl.flags.FlagValues` holding the experiment flags.
                Defaults to the global `FLAGS`.

        Returns:
            An `ExperimentConfig`.

        Raises:
            ValueError: a flag is missing or its value is not allowed; the message names it.
        """
        fv = flag_values
        for name, allowed in _REQUIRED.items():
            if fv[name].value is None:
                raise ValueError(f"Flag --{name} is required: {allowed}.")
        return cls(
            dataset=fv.dataset,
            model=fv.model,
            epochs=fv.epochs,
            g=_parse_list("g", fv.g, allow_none=True),
            p=_parse_list("p", fv.p, allow_none=True),
            p_1x1=_parse_list("p_1x1", fv.p_1x1, allow_none=False),
            dense=fv.dense,
            ticket=fv.ticket,
            batch_size=fv.batch_size,
            learning_rate=fv.learning_rate,
            lr_boundaries=_parse_list("lr_boundaries", fv.lr_boundaries, allow_none=False),
            lr_decay=fv.lr_decay,
            momentum=fv.momentum,
            weight_decay=fv.weight_decay,
            validation_split=fv.validation_split,
            seed=fv.seed,
        )


# The flags without a default, and what each takes.
_REQUIRED = {
    "dataset": f"one of {DATASETS}",
    "model": f"one of {MODELS}",
    "epochs": "an integer >= 1",
}
_DEFAULTS = {
    field.name: field.default
    for field in dataclasses.fields(ExperimentConfig)
    if field.default is not dataclasses.MISSING
}


def _flag_definitions():
    """(name, define function, positional args, help) of every experiment flag, in order."""
    d = _DEFAULTS
    return [
        ("dataset", flags.DEFINE_enum, (None, list(DATASETS)),
         "Dataset to train on ('digits' is bundled and needs no download)."),
        ("model", flags.DEFINE_enum, (None, list(MODELS)),
         "Architecture: vgg19 and resnet32 (CIFAR, Tiny-ImageNet) or resnet50 (ImageNet)."),
        ("g", flags.DEFINE_list, (list(d["g"]),),
         "K x K blocks per width, one integer >= 1 or 'none' for each width of the model "
         f"(vgg19 {WIDTHS['vgg19']}, resnet32 {WIDTHS['resnet32']}, resnet50 3x3 "
         f"{WIDTHS['resnet50']}), e.g. 1,2,4,16. Ignored with --dense."),
        ("p", flags.DEFINE_list, (list(d["p"]),),
         "1 x 1 residue period per width, like --g ('none': no 1 x 1 part). "
         "Ignored with --dense."),
        ("p_1x1", flags.DEFINE_list, (list(d["p_1x1"]),),
         "resnet50 only: period of the 1x1 convolutions per filter count "
         f"{RESNET50_1X1_WIDTHS}, six integers >= 1. Empty for the other models."),
        ("dense", flags.DEFINE_bool, (d["dense"],),
         "Train the dense twin: every convolution standard; --g, --p, --p_1x1 are ignored."),
        ("ticket", flags.DEFINE_float, (d["ticket"],),
         "The paper's label of the run, percent of the dense parameters kept (e.g. 5, 15). "
         "Required for SSC runs, unset for --dense. A label: the exact fraction comes from "
         "the pattern."),
        ("epochs", flags.DEFINE_integer, (None,), "Number of training epochs."),
        ("batch_size", flags.DEFINE_integer, (d["batch_size"],),
         "Global batch size (split across replicas)."),
        ("learning_rate", flags.DEFINE_float, (d["learning_rate"],),
         "Initial SGD learning rate."),
        ("lr_boundaries", flags.DEFINE_list, (list(d["lr_boundaries"]),),
         "Epochs at which the learning rate is multiplied by --lr_decay, strictly increasing "
         "and below --epochs, e.g. 100,150,200."),
        ("lr_decay", flags.DEFINE_float, (d["lr_decay"],),
         "Learning-rate factor applied at each of --lr_boundaries, in (0, 1]."),
        ("momentum", flags.DEFINE_float, (d["momentum"],), "SGD momentum, in [0, 1)."),
        ("weight_decay", flags.DEFINE_float, (d["weight_decay"],),
         "L2 weight-decay coefficient."),
        ("validation_split", flags.DEFINE_float, (d["validation_split"],),
         "Fraction of the training data held out for validation, in [0, 1). The paper used "
         "0.1 only to choose g and p."),
        ("seed", flags.DEFINE_integer, (d["seed"],),
         "Seed for Python, numpy and TensorFlow, in [0, 2**32)."),
    ]


def define_flags(flag_values=flags.FLAGS):
    """Defines the experiment flags on `flag_values`, once.

    Calling it again on the same `FlagValues` (two CLIs imported into one process) defines
    nothing new.

    Args:
        flag_values: the `absl.flags.FlagValues` to define them on. Defaults to the global
            `FLAGS`.

    Returns:
        `flag_values`.
    """
    for name, define, args, help_text in _flag_definitions():
        if name not in flag_values:
            define(name, *args, help_text, flag_values=flag_values)
    return flag_values


def load_flagfile(path):
    """Reads one experiment flagfile into a config, leaving the global `FLAGS` alone.

    The file holds one `--name=value` per line (`--name` or `--noname` for booleans), blank
    lines and `#` comments. Each name may appear once.

    Args:
        path: str or path-like, the flagfile.

    Returns:
        An `ExperimentConfig`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: a line is not a flag, names an unknown flag or repeats one, a value does
            not parse, or the config is invalid; the message names the file and the flag.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Flagfile not found: {path!r}")
    flag_values = define_flags(flags.FlagValues())
    known = sorted(flag_values)
    flag_values([path])  # Marks the flags parsed, so an empty file yields the defaults.
    seen = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if not line.startswith("--") or len(line) == 2:
                raise ValueError(
                    f"{where}: expected a flag '--name=value' or a '#' comment. "
                    f"Received: {line!r}"
                )
            name = _flag_name(line, flag_values)
            if name not in flag_values:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean --{close[0]}?" if close else ""
                raise ValueError(
                    f"{where}: unknown flag --{name}.{hint} Known flags: "
                    f"{', '.join(known)}."
                )
            if name in seen:
                raise ValueError(
                    f"{where}: flag --{name} is already set on line {seen[name]}; set each "
                    "flag once."
                )
            seen[name] = lineno
            try:
                flag_values([path, line])
            except (flags.Error, ValueError) as error:
                raise ValueError(f"{where}: {error}") from error
    try:
        return ExperimentConfig.from_flags(flag_values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _flag_name(line, flag_values):
    """The flag a '--name[=value]' line sets ('--nodense' sets 'dense')."""
    name = line[2:].split("=", 1)[0]
    if name not in flag_values and name.startswith("no") and name[2:] in flag_values:
        return name[2:]
    return name


def _parse_list(name, items, allow_none):
    """A comma-list flag's strings as a tuple of int (or None for 'none')."""
    values = []
    for item in items:
        if allow_none and item.lower() == _NONE:
            values.append(None)
            continue
        try:
            values.append(int(item))
        except ValueError:
            allowed = f"integers or {_NONE!r}" if allow_none else "integers"
            raise ValueError(
                f"Invalid value for flag --{name}: expected a comma-separated list of "
                f"{allowed}. Received: {name}={','.join(items)}"
            ) from None
    return tuple(values)


def _check_per_width(name, values, model, widths, allow_none):
    if len(values) != len(widths):
        raise ValueError(
            f"Invalid value for flag --{name}: model {model!r} needs {len(widths)} values, "
            f"one per width {widths}. Received {len(values)}: {name}={_format(values)}"
        )
    for value in values:
        if value is None and allow_none:
            continue
        if not _is_int(value) or value < 1:
            allowed = f"integers >= 1 or {_NONE!r}" if allow_none else "integers >= 1"
            raise ValueError(
                f"Invalid value for flag --{name}: expected {allowed}, one per width "
                f"{widths}. Received: {name}={_format(values)}"
            )


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for flag --{name}: expected one of {choices}. "
            f"Received: {name}={value!r}"
        )


def _check_int(name, value, minimum):
    if not _is_int(value) or value < minimum:
        raise ValueError(
            f"Invalid value for flag --{name}: expected an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_range(name, value, low, high, low_open=False, high_open=False):
    """Raises unless low (<|<=) value (<|<=) high; high None means unbounded."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high)
        )
    if not ok:
        interval = (
            f"{'(' if low_open else '['}{low}, "
            f"{'inf)' if high is None else str(high) + (')' if high_open else ']')}"
        )
        raise ValueError(
            f"Invalid value for flag --{name}: expected a number in {interval}. "
            f"Received: {name}={value!r}"
        )


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _format(values):
    return ",".join(_NONE if v is None else str(v) for v in values)

