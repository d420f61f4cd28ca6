r"""(g, p) search: per-width settings of a model that keep a target fraction of its weights.

    python -m ssc_tf.search_gp --model=resnet32 --dataset=cifar100 --target=0.08
    ssc-search-gp --model=vgg19 --target=0.05 --dense_stages=2 --top=5 --json
    ssc-search-gp --model=resnet32 --target=0.05 --write_flagfile=/tmp/r32.cfg

The paper (Verma et al., WACV 2023) picks one (g, p) per width by hand from eq. (10) and
observes that early layers are the ones to prune least. This tool does that search exhaustively
over a grid: it lists the settings whose exact kept fraction (live / dense weights over every
convolution and the classifier, as ssc_tf.density reports it) lies within --tolerance of
--target, with exact weight counts and MACs. Counting uses `SSCPattern` on the walk of the spec
table in `ssc_tf.architectures` (no model is built), so a search takes seconds. Each width's
layers are counted as the model builds them: its 1 x 1 convolutions (ResNet-32's projection
shortcuts) take p only, and are dense where the width's g is 1.

Search space: for every width, g and p take the values of a grid (powers of two and every value
of the paper's supplementary tables: 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 15, 16, 19,
25, 30, 32, 35, 40, 64, 128, ...) inside --g_range and --p_range, plus the two ends of each
range; values above the width are skipped, as are settings that leave a filter without a kernel.
g = 1 is a dense width and is written with the smallest p of --p_range (p has no effect there).
p = none (no 1 x 1 part) is not searched. ResNet-50's 1 x 1 widths (--p_1x1) take p from
--p_range, 1 being dense. With --monotone (the default) g and p never decrease as the width
grows (separately for ResNet-50's 3 x 3 and 1 x 1 widths, so a dense resnet50 1x1:256 makes
1x1:128 dense too). --dense_stages=N keeps the first N widths of the ranking order dense.

Ranking rule (prune early layers least): widths are taken in the order the network first uses
them (vgg19 64, 128, 256, 512; resnet32 32, 64, 128; resnet50 1x1:64, 3x3:64, 1x1:256,
1x1:128, 3x3:128, 1x1:512, 3x3:256, 1x1:1024, 3x3:512, 1x1:2048). Candidates within the
tolerance are sorted by their per-width kept fractions, rounded to 3 decimals (0.1 %),
lexicographically descending from the first width; ties by closeness to --target, then by fewer
MACs, then by the g, p (and p_1x1) lists ascending, so the order is total and reproducible. The
search walks the widths in that order with bounds on what the later widths can still keep, and
stops after --top candidates.
"""

import dataclasses
import glob
import heapq
import itertools
import json
import math
import os

import numpy as np
from absl import flags, logging

from ssc_tf import architectures
from ssc_tf import arguments
from ssc_tf import config as config_lib
from ssc_tf import flagfile
from ssc_tf.data import datasets

FLAGS = flags.FLAGS

# Powers of two and the values of the paper's supplementary (g, p) tables.
GRID = tuple(sorted({2**k for k in range(12)} | {3, 5, 6, 9, 10, 11, 12, 15, 19, 25, 30, 35, 40}))
DEFAULT_RANGE = (1, 64)
DEFAULT_DATASETS = {"vgg19": "cifar10", "resnet32": "cifar10", "resnet50": "imagenet2012"}
# Writes a (g, p) list as the flags spell it.
_format = config_lib.format_list
# Per-width kept fractions are compared at this many decimals by the ranking rule.
RANK_DECIMALS = 3
# Fields of a base config that a written flagfile copies: the training schedule and data
# (a field left at None is left out).
SCHEDULE = ("epochs", "lr_boundaries", "batch_size", "learning_rate", "lr_decay", "momentum",
            "weight_decay", "validation_split", "train_examples", "seed")
# Pruning by bounds compares float fractions: this margin keeps a bound that lands exactly on
# the window's edge from dropping a branch; the exact check is made on each candidate.
_SLACK = 1e-9
# Partial settings a search may expand: a tight tolerance on a deep model (resnet50's ten
# widths) can leave too many to walk. Reached, the search keeps what it has (a correct prefix
# of the ranking) and says so.
MAX_STEPS = 100_000


class _OutOfSteps(Exception):
    """The search expanded `MAX_STEPS` partial settings."""


@dataclasses.dataclass(frozen=True)
class Candidate(architectures.Counts):
    """One setting of every width, with its exact counts (the `Counts` totals, as
    `architectures.count` gives them).

    Attributes:
        model: the model's name.
        g: one g per width of `architectures.widths(model)`, the --g list.
        p: one p per width, the --p list.
        p_1x1: ResNet-50's --p_1x1 list (empty for the other models).
        widths: labels of the widths in ranking order.
        kept_per_width: live / dense weights of each width's layers, in ranking order.
    """

    model: str
    g: tuple
    p: tuple
    p_1x1: tuple
    widths: tuple
    kept_per_width: tuple

    @property
    def macs_fraction(self):
        return self.macs / self.dense_macs


@dataclasses.dataclass
class _Level:
    """One width's setting: its layers' dense weights and the options it may take.

    The option arrays are sorted by rounded kept fraction, descending, then by g and p.
    """

    setting: tuple
    label: str
    dense_params: int
    g: np.ndarray  # 0 for ResNet-50's 1 x 1 widths (no K x K part)
    p: np.ndarray
    live: np.ndarray
    macs: np.ndarray
    rank: np.ndarray


def rank_key(candidate, target):
    """The ranking rule's sort key (ascending: best first)."""
    return (
        tuple(-round(k, RANK_DECIMALS) for k in candidate.kept_per_width),
        abs(candidate.kept_fraction - target),
        candidate.macs,
        candidate.g,
        candidate.p,
        candidate.p_1x1,
    )


def grid_values(value_range):
    """The grid's values inside [min, max], plus both ends."""
    lo, hi = value_range
    return tuple(sorted({v for v in GRID if lo <= v <= hi} | {lo, hi}))


# What --g_range and --p_range allow.
_RANGE_EXPECTED = "two integers MIN,MAX with 1 <= MIN <= MAX"


def _check_range(name, value_range):
    """Returns `value_range` as a tuple (min, max) of integers with 1 <= min <= max."""
    values = tuple(value_range) if isinstance(value_range, (tuple, list)) else (value_range,)
    if len(values) != 2 or not all(map(arguments.is_int, values)) or not (
            1 <= values[0] <= values[1]):
        raise arguments.invalid(name, _RANGE_EXPECTED, ",".join(map(str, values)))
    return values


def _label(model, setting):
    kind, width = setting
    if not architectures.widths_1x1(model):
        return str(width)
    return f"{'3x3' if kind == architectures.GP else '1x1'}:{width}"


def _options(layers, pairs):
    """(g, p, live, macs) of every pair a width's layers accept (SSCPattern's check)."""
    options = []
    for g, p in pairs:
        live = macs = 0
        try:
            for layer in layers:
                n = architectures.live_params(
                    layer.in_channels, layer.filters, layer.kernel_size, *layer.resolve(g, p)
                )
                live, macs = live + n, macs + n * layer.pixels
        except ValueError:
            continue
        options.append((g or 0, p, live, macs))
    return options


def _pairs(setting, dense, g_values, p_values):
    kind, width = setting
    if kind == architectures.P_1X1:
        return [(None, 1)] if dense else [(None, p) for p in p_values if p <= width]
    dense_pair = (1, p_values[0])
    if dense:
        return [dense_pair]
    pairs = [(g, p) for g in g_values if 1 < g <= width for p in p_values if p <= width]
    return ([dense_pair] if 1 in g_values else []) + pairs


def _level(model, setting, layers, dense, g_values, p_values):
    options = _options(layers, _pairs(setting, dense, g_values, p_values))
    label = _label(model, setting)
    if not options:
        raise ValueError(
            f"Invalid values for {arguments.kind()}s {arguments.spelled('g_range')} and "
            f"{arguments.spelled('p_range')}: they leave width {label} no "
            f"valid (g, p) (values above the width are skipped; every filter needs a kernel). "
            f"Received: g values {g_values}, p values {p_values}"
        )
    dense_params = sum(l.dense_params for l in layers)
    rank = [round(live / dense_params, RANK_DECIMALS) for _, _, live, _ in options]
    order = sorted(range(len(options)), key=lambda k: (-rank[k], options[k][:2]))
    g, p, live, macs = (np.array([options[k][c] for k in order], dtype=np.int64)
                        for c in range(4))
    return _Level(setting, label, dense_params, g, p, live, macs, np.array(rank)[order])


class _Space:
    """The search space of one model: fixed (always dense) counts and one `_Level` per width."""

    def __init__(self, model, num_classes, input_shape, g_values, p_values, dense_stages):
        self.model = model
        layers = architectures.conv_layers(model, input_shape)
        fc = architectures.classifier_inputs(model) * num_classes
        fixed = [l for l in layers if l.setting is None]  # the first convolution: dense
        self.fixed_live = fc + sum(l.dense_params for l in fixed)
        self.fixed_macs = fc + sum(l.dense_params * l.pixels for l in fixed)
        self.dense_params = fc + sum(l.dense_params for l in layers)
        self.dense_macs = fc + sum(l.dense_params * l.pixels for l in layers)
        settings = list(dict.fromkeys(l.setting for l in layers if l.setting is not None))
        if not arguments.is_int(dense_stages) or not 0 <= dense_stages <= len(settings):
            raise arguments.invalid(
                "dense_stages",
                f"an integer in [0, {len(settings)}] (model {model!r} has {len(settings)} "
                f"widths: {', '.join(_label(model, s) for s in settings)})",
                repr(dense_stages),
            )
        self.levels = [
            _level(model, s, [l for l in layers if l.setting == s], i < dense_stages,
                   g_values, p_values)
            for i, s in enumerate(settings)
        ]
        mins = [int(lv.live.min()) for lv in self.levels]
        maxs = [int(lv.live.max()) for lv in self.levels]
        # What the widths from i on can keep at least / at most (monotone ignored: a bound).
        self.min_rest = [sum(mins[i:]) for i in range(len(mins))] + [0]
        self.max_rest = [sum(maxs[i:]) for i in range(len(maxs))] + [0]
        self.steps = 0

    def _step(self):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _OutOfSteps

    def allowed(self, i, chosen, monotone):
        """Mask of level i's options that keep g and p non-decreasing with the width."""
        level = self.levels[i]
        mask = np.ones(level.live.shape, dtype=bool)
        if not monotone:
            return mask
        kind, width = level.setting
        for j, k in enumerate(chosen):
            other = self.levels[j]
            if other.setting[0] != kind:
                continue
            if other.setting[1] < width:
                mask &= (level.g >= other.g[k]) & (level.p >= other.p[k])
            else:
                mask &= (level.g <= other.g[k]) & (level.p <= other.p[k])
        return mask

    def candidate(self, chosen):
        """The `Candidate` of one option index per level."""
        picks = {lv.setting: (lv, k) for lv, k in zip(self.levels, chosen)}
        widths = architectures.widths(self.model)

        def values(kind, field, widths):
            return tuple(int(getattr(lv, field)[k]) for lv, k in
                         (picks[(kind, w)] for w in widths))

        return Candidate(
            model=self.model,
            g=values(architectures.GP, "g", widths),
            p=values(architectures.GP, "p", widths),
            p_1x1=values(architectures.P_1X1, "p", architectures.widths_1x1(self.model)),
            widths=tuple(lv.label for lv in self.levels),
            kept_per_width=tuple(int(lv.live[k]) / lv.dense_params
                                 for lv, k in zip(self.levels, chosen)),
            live_params=self.fixed_live + sum(int(lv.live[k]) for lv, k in
                                              zip(self.levels, chosen)),
            dense_params=self.dense_params,
            macs=self.fixed_macs + sum(int(lv.macs[k]) for lv, k in zip(self.levels, chosen)),
            dense_macs=self.dense_macs,
        )

    def ranked(self, target, tolerance, monotone):
        """Every candidate within the tolerance, lazily, in the ranking rule's order."""
        key = lambda c: rank_key(c, target)  # noqa: E731
        last = len(self.levels) - 1
        self.steps = 0

        def walk(i, chosen, live):
            self._step()
            level = self.levels[i]
            totals = live + level.live
            mask = self.allowed(i, chosen, monotone)
            if i == last:
                mask &= np.abs(totals / self.dense_params - target) <= tolerance
                yield from sorted((self.candidate(chosen + (k,)) for k in np.flatnonzero(mask)),
                                  key=key)
                return
            mask &= (totals + self.min_rest[i + 1]) / self.dense_params <= (
                target + tolerance + _SLACK)
            mask &= (totals + self.max_rest[i + 1]) / self.dense_params >= (
                target - tolerance - _SLACK)
            # Options are sorted by rounded kept fraction: each run of equal ones is merged.
            for _, run in itertools.groupby(np.flatnonzero(mask), key=lambda k: level.rank[k]):
                yield from heapq.merge(
                    *(walk(i + 1, chosen + (k,), int(totals[k])) for k in run), key=key
                )

        return walk(0, (), self.fixed_live)

    def nearest(self, target, monotone):
        """The candidate whose kept fraction is closest to `target` (branch and bound)."""
        best = [math.inf, None]
        last = len(self.levels) - 1

        def visit(i, chosen, live):
            self._step()
            level = self.levels[i]
            totals = live + level.live
            idx = np.flatnonzero(self.allowed(i, chosen, monotone))
            if not idx.size:
                return
            if i == last:
                distance = np.abs(totals[idx] / self.dense_params - target)
                k = int(np.argmin(distance))
                if distance[k] < best[0]:
                    best[:] = [distance[k], chosen + (int(idx[k]),)]
                return
            low = (totals[idx] + self.min_rest[i + 1]) / self.dense_params
            high = (totals[idx] + self.max_rest[i + 1]) / self.dense_params
            gap = np.maximum(np.maximum(low - target, target - high), 0)
            for n in np.argsort(gap, kind="stable"):
                if gap[n] >= best[0]:
                    break
                visit(i + 1, chosen + (int(idx[n]),), int(totals[idx[n]]))

        self.steps = 0
        try:
            visit(0, (), self.fixed_live)
        except _OutOfSteps:
            pass
        return None if best[1] is None else self.candidate(best[1])


def search(model, target, tolerance=0.005, dataset=None, g_range=DEFAULT_RANGE,
           p_range=DEFAULT_RANGE, dense_stages=0, monotone=True, top=10):
    """The best `top` per-width (g, p) settings of `model` within `tolerance` of `target`.

    Args:
        model: one of `architectures.MODELS`.
        target: float in (0, 1], the kept fraction (live / dense weights) to hit.
        tolerance: float in [0, 1), the largest |kept fraction - target| accepted.
        dataset: one of `config.DATASETS` (classes and input size); None: `DEFAULT_DATASETS`.
        g_range: (min, max) of g; the grid's values inside, plus both ends.
        p_range: (min, max) of p (and of ResNet-50's p_1x1), likewise.
        dense_stages: keep the first this many widths (ranking order) dense.
        monotone: g and p never decrease as the width grows.
        top: int >= 1, how many candidates to return.

    Returns:
        A list of up to `top` `Candidate`s in the ranking rule's order (see the module
        docstring), each within `tolerance` of `target`.

    Raises:
        ValueError: a bad argument (the message names it: "argument `target`", or
            "flag --target" inside `arguments.as_flags()`, as the command line calls it), or
            no candidate within the tolerance (the message gives the nearest kept fraction).
    """
    arguments.check_choice("model", model, architectures.MODELS)
    dataset = DEFAULT_DATASETS[model] if dataset is None else dataset
    arguments.check_choice("dataset", dataset, datasets.NAMES)
    arguments.check_range("target", target, 0, 1, low_open=True)
    arguments.check_range("tolerance", tolerance, 0, 1, high_open=True)
    g_range = _check_range("g_range", g_range)
    p_range = _check_range("p_range", p_range)
    arguments.check_int("top", top, minimum=1)
    record = datasets.get(dataset)
    space = _Space(model, record.num_classes, record.input_shape,
                   grid_values(g_range), grid_values(p_range), dense_stages)
    candidates, stopped = [], False
    try:
        for candidate in space.ranked(target, tolerance, monotone):
            candidates.append(candidate)
            if len(candidates) == top:
                break
    except _OutOfSteps:
        stopped = True
    if not candidates:
        near = space.nearest(target, monotone)
        found = "none is valid" if near is None else (
            f"the nearest found keeps {near.kept_fraction:.8g} (g={_format(near.g)}, "
            f"p={_format(near.p)}{_p_1x1_text(near)})")
        where = f" in {MAX_STEPS:,} steps, the search's limit, to rank" if stopped else ""
        raise ValueError(
            f"No (g, p) setting of {model} found within --tolerance={tolerance:g} of "
            f"--target={target:g}{where}: {found}. Widen --tolerance, --g_range or --p_range, "
            f"lower --dense_stages or pass --nomonotone."
        )
    if stopped:
        logging.warning("The search stopped after %d steps: the %d candidates listed are the "
                        "best, more may exist. Widen --tolerance to see them.",
                        MAX_STEPS, len(candidates))
    return candidates


def _p_1x1_text(candidate):
    return f", p_1x1={_format(candidate.p_1x1)}" if candidate.p_1x1 else ""


def table(candidates, target, tolerance):
    """The candidates as a text table, with the search's header."""
    first = candidates[0]
    gp = "g | p | p_1x1" if first.p_1x1 else "g | p"
    lines = [
        f"{first.model}: kept fraction {target:g} +- {tolerance:g}; kept per width in ranking "
        f"order {', '.join(first.widths)}",
        f"{'rank':>4}  {gp:<44} {'kept per width':<{6 * len(first.widths)}} {'live':>11} "
        f"{'dense':>11} {'kept':>9} {'MACs':>15} {'MACs/dense':>10}",
    ]
    for rank, c in enumerate(candidates, start=1):
        settings = f"{_format(c.g)} | {_format(c.p)}" + (
            f" | {_format(c.p_1x1)}" if c.p_1x1 else "")
        kept = " ".join(f"{round(k, RANK_DECIMALS):.{RANK_DECIMALS}f}" for k in c.kept_per_width)
        lines.append(
            f"{rank:>4}  {settings:<44} {kept:<{6 * len(c.widths)}} {c.live_params:>11,} "
            f"{c.dense_params:>11,} {c.kept_fraction:>9.6g} {c.macs:>15,} "
            f"{c.macs_fraction:>10.4f}"
        )
    return "\n".join(lines)


def candidate_json(rank, candidate):
    return {
        "rank": rank,
        "g": list(candidate.g),
        "p": list(candidate.p),
        "p_1x1": list(candidate.p_1x1),
        "widths": list(candidate.widths),
        "kept_per_width": list(candidate.kept_per_width),
        "live_params": candidate.live_params,
        "dense_params": candidate.dense_params,
        "kept_fraction": candidate.kept_fraction,
        "macs": candidate.macs,
        "dense_macs": candidate.dense_macs,
        "macs_fraction": candidate.macs_fraction,
    }


def schedule_source(dataset, model, base_flagfile, configs_dir):
    """The flagfile whose schedule a written flagfile copies, and its config.

    `base_flagfile` if given (its dataset must be `dataset`), else the first config in
    `configs_dir` for the dataset and model, else the first for the dataset.
    """
    if base_flagfile:
        base = flagfile.load(base_flagfile)
        if base.dataset != dataset:
            raise ValueError(
                f"Invalid value for flag --base_flagfile: its --dataset={base.dataset} differs "
                f"from the search's --dataset={dataset} (the schedule depends on the dataset)."
            )
        return base_flagfile, base
    loaded = [(path, flagfile.load(path))
              for path in sorted(glob.glob(os.path.join(configs_dir, "*.cfg")))]
    for wanted in (lambda c: c.model == model, lambda c: True):
        for path, config in loaded:
            if config.dataset == dataset and wanted(config):
                return path, config
    raise ValueError(
        f"No config for --dataset={dataset} in --configs_dir={configs_dir} to copy the "
        "schedule from: pass --base_flagfile."
    )


def flagfile_text(candidate, dataset, target, tolerance, rank, source, base):
    """A flagfile of `candidate` with the schedule of `base` (an `ExperimentConfig`)."""
    config = dataclasses.replace(
        base, dataset=dataset, model=candidate.model, g=candidate.g, p=candidate.p,
        p_1x1=candidate.p_1x1, sparsity="ssc", ticket=round(100 * target, 6),
    )
    lines = [
        f"# Written by ssc_tf.search_gp: rank {rank} for --model={candidate.model} "
        f"--dataset={dataset} --target={target:g} --tolerance={tolerance:g}.",
        f"# Exact kept fraction {candidate.kept_fraction:.6g} ({candidate.live_params:,} of "
        f"{candidate.dense_params:,} weights); --ticket is the target in percent.",
        f"# Schedule copied from {source}.",
        f"--dataset={config.dataset}",
        f"--model={config.model}",
        f"--ticket={config.ticket:g}",
        f"--g={_format(config.g)}",
        f"--p={_format(config.p)}",
    ]
    if config.p_1x1:
        lines.append(f"--p_1x1={_format(config.p_1x1)}")
    for name in SCHEDULE:
        value = getattr(config, name)
        if value is None:
            continue
        lines.append(f"--{name}={_format(value) if isinstance(value, tuple) else value}")
    return "\n".join(lines) + "\n"


def _define_flags():
    flags.DEFINE_enum("model", None, list(architectures.MODELS), "The model to search.")
    flags.DEFINE_enum("dataset", None, list(datasets.NAMES),
                      "Sets the classes and input size; default cifar10 for vgg19 and "
                      "resnet32, imagenet2012 for resnet50.")
    flags.DEFINE_float("target", None,
                       "Kept fraction to hit, in (0, 1]: live / dense weights of every "
                       "convolution and the classifier (0.05 keeps 5 %).")
    flags.DEFINE_float("tolerance", 0.005,
                       "Largest accepted |kept fraction - target|, a fraction in [0, 1).")
    flags.DEFINE_list("g_range", [str(v) for v in DEFAULT_RANGE],
                      "MIN,MAX of g: the grid's values inside, plus both ends.")
    flags.DEFINE_list("p_range", [str(v) for v in DEFAULT_RANGE],
                      "MIN,MAX of p (and of resnet50's p_1x1), like --g_range.")
    flags.DEFINE_integer("dense_stages", 0,
                         "Keep the first N widths (ranking order) dense: g=1, or p_1x1=1.")
    flags.DEFINE_bool("monotone", True,
                      "g and p never decrease as the width grows (prune early layers least).")
    flags.DEFINE_integer("top", 10, "How many candidates to list, best first.")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
    flags.DEFINE_string("write_flagfile", None,
                        "Write candidate --rank as an experiment flagfile to this path.")
    flags.DEFINE_integer("rank", 1, "Which listed candidate --write_flagfile writes (1 = best).")
    flags.DEFINE_string("base_flagfile", None,
                        "Flagfile whose schedule (epochs, learning rate, ...) the written "
                        "flagfile copies; default: a config of --configs_dir for the dataset.")
    flags.DEFINE_string("configs_dir", flagfile.CONFIGS_DIR,
                        "Where the schedule is looked up without --base_flagfile; default: the "
                        "packaged configs.")
    flags.mark_flags_as_required(["model", "target"])


def _parse_range(name, items):
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        raise arguments.invalid(name, _RANGE_EXPECTED, ",".join(items)) from None


def main(argv):
    try:
        # Messages name flags (--target), not the library's arguments (`target`).
        with arguments.as_flags():
            _run(argv)
    except (ValueError, FileNotFoundError) as error:
        # One line on stderr and exit status 1, not absl's usage dump.
        raise SystemExit(f"Error: {error}") from None


def _write_flagfile(candidates, dataset):
    """Writes candidate --rank to --write_flagfile; returns what the output reports of it."""
    if FLAGS.rank > len(candidates):
        raise ValueError(f"Invalid value for flag --rank: only {len(candidates)} candidates "
                         f"were found. Received: rank={FLAGS.rank}")
    candidate = candidates[FLAGS.rank - 1]
    source, base = schedule_source(dataset, FLAGS.model, FLAGS.base_flagfile, FLAGS.configs_dir)
    text = flagfile_text(candidate, dataset, FLAGS.target, FLAGS.tolerance, FLAGS.rank, source,
                         base)
    try:
        with open(FLAGS.write_flagfile, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        raise ValueError(
            f"Invalid value for flag --write_flagfile: cannot write {FLAGS.write_flagfile!r} "
            f"({error.strerror}). Pass a file path in an existing directory."
        ) from None
    return {"path": FLAGS.write_flagfile, "rank": FLAGS.rank,
            "kept_fraction": candidate.kept_fraction, "schedule_from": source}


def _run(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    arguments.check_int("rank", FLAGS.rank, minimum=1)
    dataset = FLAGS.dataset or DEFAULT_DATASETS[FLAGS.model]
    candidates = search(
        FLAGS.model, FLAGS.target, FLAGS.tolerance, dataset,
        _parse_range("g_range", FLAGS.g_range), _parse_range("p_range", FLAGS.p_range),
        FLAGS.dense_stages, FLAGS.monotone,
        max(FLAGS.top, FLAGS.rank) if FLAGS.write_flagfile else FLAGS.top,
    )
    written = _write_flagfile(candidates, dataset) if FLAGS.write_flagfile else None
    shown = candidates[:FLAGS.top]
    if FLAGS.json:
        print(json.dumps({
            "model": FLAGS.model, "dataset": dataset, "target": FLAGS.target,
            "tolerance": FLAGS.tolerance,
            "candidates": [candidate_json(r, c) for r, c in enumerate(shown, start=1)],
            "written_flagfile": written,
        }, indent=2))
        return
    print(table(shown, FLAGS.target, FLAGS.tolerance))
    if written:
        print(f"wrote {written['path']}: rank {written['rank']}, kept fraction "
              f"{written['kept_fraction']:.6g}, schedule from {written['schedule_from']}")


def run():
    """The `python -m ssc_tf.search_gp` and `ssc-search-gp` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
