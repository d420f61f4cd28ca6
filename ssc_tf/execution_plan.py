"""How an SSC layer runs: its exactly equivalent execution forms, and the plan that picks one.

An `SSCConv2D` computes one function, but it can compute it in several ways whose speed depends
on the layer's shape, the batch, whether a gradient follows, and the runtime (see
docs/execution_plan.md for the measurements). A form names one way for each part:

- the K x K part (`KXK_FORMS`):
  - `grouped`: one grouped (or depthwise, for one input per block) convolution per run of
    equal-sized blocks;
  - `depthwise`: one depthwise convolution with channel multiplier `out_block` per run, then
    a sum over each block's inputs: the grouped convolution's MACs with kernels that have a
    gradient on every CPU;
  - `split`: one dense convolution per block (for a few blocks);
  - `shifted`: for runs whose blocks are square (k inputs and k filters, k >= 2), k depthwise
    convolutions with channel multiplier 1, the s-th pairing input i of each block with
    filter (i - s) mod k, each but the first followed by a channel permutation within the
    blocks (a gather in TensorFlow, a grouped 1 x 1 convolution of a 0/1 kernel in TFLite,
    where LiteRT runs GATHER outside XNNPACK); other runs grouped. XNNPACK's depthwise
    kernels are many times faster than its grouped convolution with two channels per group
    and than its depthwise one with a channel multiplier;
- the 1 x 1 part (`POINTWISE_FORMS`):
  - `bmm`: the channels reshaped to (M/p, p), transposed residue-major, one batched matrix
    product over the p residues, transposed back;
  - `conv`: one dense 1 x 1 convolution of the masked (M, N) kernel, with no transpose;
  - `gconv`: the channels transposed residue-major as for `bmm`, one grouped 1 x 1
    convolution with p groups of (M/p, N/p) kernels, transposed back: `bmm`'s MACs and stored
    weights in a convolution, which TFLite quantizes per channel and runs in XNNPACK.

A form is spelled `"kxk+pointwise"` (`"grouped+bmm"`); the part a pattern lacks is ignored.
`"dense"` runs the whole layer as one dense convolution of the masked kernel: all the dense
work, the test oracle, and the plan's floor where no structured form beats it.

The plan (`choose`) is a table lookup in measurements recorded in the package
(`execution_costs.json`, written by `tools/benchmark_layer.py --write_costs`): for the runtime
and batch regime, the measured form that was fastest for this layer shape, or, for a shape the
table lacks, for the nearest measured shape; on a GPU, whose times the table lacks until
`tools/gpu_check.sh` measures them, `UNMEASURED_FORM`. It is deterministic and never times
anything.
For a TFLite file, `plan_model` plans all of a model's layers within one storage budget, and
`guard` moves layers to `"dense"` where the file, timed on the machine that will run it, is
slower than its dense twin.

No TensorFlow here: the layer asks the plan with plain numbers, and the tools and tests read
the same table.
"""

import contextlib
import contextvars
import dataclasses
import functools
import json
import math
import os

from ssc_tf import arguments
from ssc_tf import pattern as pattern_lib

KXK_FORMS = ("grouped", "depthwise", "split", "shifted")
POINTWISE_FORMS = ("bmm", "conv", "gconv")
DENSE = "dense"
AUTO = "auto"
FORMS = (DENSE,) + tuple(f"{k}+{p}" for k in KXK_FORMS for p in POINTWISE_FORMS)
IMPLEMENTATIONS = (AUTO,) + FORMS

# Runtimes with their own rule. TensorFlow's CPU kernels differ with oneDNN on or off (off
# by default on CPUs without AVX-512 VNNI, BF16 or AMX, e.g. many AMD machines), and without
# oneDNN a grouped convolution has no gradient at all.
CPU_ONEDNN = "cpu_onednn"
CPU_EIGEN = "cpu_eigen"
GPU = "gpu"
# LiteRT on one thread at batch 1: float32 files (float16 files, which LiteRT runs in float32,
# use their rule), dynamic-range files (int8 weights, activations quantized at each op) and
# int8 files, whose kernels differ.
TFLITE = "tflite"
TFLITE_DYNAMIC = "tflite_dynamic"
TFLITE_INT8 = "tflite_int8"
RUNTIMES = (CPU_ONEDNN, CPU_EIGEN, GPU, TFLITE, TFLITE_DYNAMIC, TFLITE_INT8)
# LiteRT's runtimes: float, dynamic range and int8.
TFLITE_RUNTIMES = (TFLITE, TFLITE_DYNAMIC, TFLITE_INT8)
# TensorFlow's: what a SavedModel can be planned for (`ssc_tf.export --runtime`).
TF_RUNTIMES = (CPU_ONEDNN, CPU_EIGEN, GPU)

# The CPUs whose LiteRT kernels the table measures, each TFLite runtime once per CPU kind: a
# vendor and the instruction set of its int8 kernels (`litert_cpu`). XNNPACK picks its x86
# kernels by vector extension when a file runs: with AVX-512 VNNI dense int8 convolutions run
# several times faster than float, with AVX2 alone hardly faster. And one vendor's cores run
# the same kernels at another speed than another's: ResNet-32 10 %'s int8 file, planned with
# the AMD EPYC AVX-512 VNNI times, ran 1.28x its dense twin there and 0.37x on an Intel Xeon
# with AVX-512 VNNI and AMX (docs/execution_plan.md). So the fastest form of a layer differs
# between them. The packaged sections were measured on two AMD EPYC VMs, whose CPU family was
# not recorded: they stand for any AMD CPU with those extensions, and for no other vendor's.
# TensorFlow's runtimes are told apart by name (`ssc_tf.export --runtime` plans a SavedModel
# for one).
LITERT_CPUS = ("amd_avx512_vnni", "amd_avx2")
# The names the same sections had while kinds were keyed by extensions alone. They stay
# accepted, as aliases: a user who named one asked for exactly those measured times, and gets
# the same file as before; refusing them would break scripts for no change in what they plan.
LITERT_CPU_ALIASES = {"x86_avx512_vnni": "amd_avx512_vnni", "x86_avx2": "amd_avx2"}
# The LiteRT CPU of a cost table that `ssc_tf.tuning.tune` measured on the machine at hand: its
# sections are "tflite_int8@tuned" and the like, in a table of the user's cache, never the
# package's.
TUNED = "tuned"
# The CPU a TFLite file is planned for where neither the caller nor the host names one with a
# table (`convert_tflite --litert_cpu`). Phones, where the files go, have not been measured;
# their int8 dot-product instructions make dense int8 fast, as VNNI does.
DEFAULT_LITERT_CPU = LITERT_CPUS[0]

# Batch regimes: inference at a small batch (measured at 1), at a large batch (measured at
# 128), and a training step (forward and backward, measured at 128).
SMALL_BATCH = "small_batch"
LARGE_BATCH = "large_batch"
TRAIN = "train"
REGIMES = (SMALL_BATCH, LARGE_BATCH, TRAIN)
# Inference batches up to this size use the small-batch rule.
SMALL_BATCH_MAX = 8

# Forms measured only where they can pay: `split` costs a call per block, and `depthwise`
# holds an intermediate of `in_block` times the output's size.
SPLIT_MAX_BLOCKS = 16
DEPTHWISE_MAX_IN_BLOCK = 8
# `shifted` runs in_block depthwise convolutions and in_block - 1 permutations.
SHIFTED_MAX_BLOCK = 4

# A TFLite file stores every kernel a form runs, zeros included: forms that would store more
# than this many times the layer's live weights are not planned there, so the file keeps
# shrinking with the density (one dense 1 x 1 kernel of a 128-channel layer at p = 4 is
# twice its live weights).
TFLITE_MAX_STORED = 1.25

# `plan_model`'s default budget: `TFLITE_MAX_STORED`, raised where the table predicts that a
# file so small would run slower than the dense twin's, as far as it takes to run no slower.
MAX_STORED_AUTO = "auto"

# The cost table's key of the dense Keras `Conv2D` of each shape: the dense twin's layer.
DENSE_TWIN = "conv2d"

# What a TensorFlow runtime without times runs: the GPU's until `tools/gpu_check.sh` measures
# it. One grouped convolution for the K x K part and one dense 1 x 1 convolution of the masked
# kernel: the fewest kernels and passes over the activations, which bound a GPU at these widths
# more than multiplies do (docs/execution_plan.md#the-gpu-before-it-is-measured).
UNMEASURED_FORM = "grouped+conv"

COSTS_FILE = os.path.join(os.path.dirname(__file__), "execution_costs.json")

_runtime_override = contextvars.ContextVar("ssc_tf_runtime", default=None)
_costs_override = contextvars.ContextVar("ssc_tf_costs", default=None)
_forms_override = contextvars.ContextVar("ssc_tf_forms", default=None)
_litert_cpu_override = contextvars.ContextVar("ssc_tf_litert_cpu", default=DEFAULT_LITERT_CPU)


@dataclasses.dataclass(frozen=True)
class Form:
    """One execution form: `kxk` (a `KXK_FORMS` entry) and `pointwise` (a `POINTWISE_FORMS`
    entry), or both None for `"dense"`."""

    kxk: str | None
    pointwise: str | None

    @property
    def dense(self):
        return self.kxk is None

    @property
    def name(self):
        return DENSE if self.dense else f"{self.kxk}+{self.pointwise}"

    @property
    def grouped(self):
        """Whether the form may run a grouped convolution (`grouped` K x K and the runs that
        `shifted` leaves to it, `gconv` 1 x 1), which TensorFlow's CPU kernels without oneDNN
        cannot differentiate."""
        return self.kxk in ("grouped", "shifted") or self.pointwise == "gconv"


def parse(implementation):
    """The `Form` named `implementation` (one of `FORMS`), or raises a `ValueError` naming the
    argument and the allowed values; `"auto"` gives None (the plan decides)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            "Invalid value for argument `implementation`: expected one of "
            f"{IMPLEMENTATIONS}. Received: implementation={implementation!r}"
        )
    if implementation == AUTO:
        return None
    if implementation == DENSE:
        return Form(None, None)
    kxk, pointwise = implementation.split("+")
    return Form(kxk, pointwise)


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """What the plan knows of a layer: the pattern's arguments and the input's spatial size.

    Attributes:
        in_channels, filters, kernel_size, g, p: as in `SSCPattern`.
        strides: the (square) stride.
        input_size: (height, width) of the input.
    """

    in_channels: int
    filters: int
    kernel_size: int
    strides: int
    input_size: tuple
    g: int | None
    p: int | None

    def as_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields):
        """The shape of `as_dict`'s fields as a JSON table stores them (`input_size` a list)."""
        return cls(**{**fields, "input_size": tuple(fields["input_size"])})

    @property
    def key(self):
        """The table's key: every field, as a string."""
        h, w = self.input_size
        return (
            f"{self.in_channels}x{self.filters} k{self.kernel_size} s{self.strides} "
            f"{h}x{w} g{self.g} p{self.p}"
        )

    def features(self):
        """Where the shape lies for the nearest-shape rule: log sizes, and the work each part
        does relative to dense."""
        h, w = self.input_size
        kxk = 0.0 if self.g is None else 1.0 / self.g
        pointwise = 0.0 if self.p is None else (1.0 - kxk) / self.p
        return (
            math.log2(self.in_channels),
            math.log2(self.filters),
            math.log2(h * w / self.strides**2),
            self.kernel_size,
            4.0 * kxk,
            4.0 * pointwise,
        )


def candidates(shape):
    """The form names worth measuring for `shape` on a CPU, a GPU or in TFLite.

    `split` only for at most `SPLIT_MAX_BLOCKS` blocks, `depthwise` only for blocks of at most
    `DEPTHWISE_MAX_IN_BLOCK` inputs, `shifted` only where some run's blocks are square with at
    most `SHIFTED_MAX_BLOCK` inputs.
    """
    names = [DENSE]
    runs = _pattern(shape).runs if shape.g is not None else ()
    for kxk in KXK_FORMS:
        if shape.g is None and kxk != KXK_FORMS[0]:
            continue
        if kxk == "split" and (shape.g is None or shape.g > SPLIT_MAX_BLOCKS):
            continue
        if kxk == "depthwise" and (shape.g is None or -(-shape.in_channels // shape.g) >
                                   DEPTHWISE_MAX_IN_BLOCK):
            continue
        if kxk == "shifted" and not any(
                run.square and run.in_block <= SHIFTED_MAX_BLOCK for run in runs):
            continue
        for pointwise in POINTWISE_FORMS:
            if shape.p is None and pointwise != POINTWISE_FORMS[0]:
                continue
            names.append(f"{kxk}+{pointwise}")
    return names


def _pattern(shape):
    return pattern_lib.SSCPattern(
        shape.in_channels, shape.filters, shape.kernel_size, shape.g, shape.p
    )


def differentiable_on_eigen(shape, name):
    """Whether form `name` of `shape` has a gradient on TF's CPU kernels without oneDNN,
    which have none for a grouped convolution: a `grouped` K x K part only where every block
    has one input (it then runs depthwise), a `gconv` 1 x 1 part only for p = 1 (one group)
    or no live 1 x 1 weight; a `shifted` one where every run is square or has one input
    per block."""
    form = parse(name)
    if not form.grouped:
        return True
    pattern = _pattern(shape)
    kxk = form.kxk not in ("grouped", "shifted") or all(
        run.in_block == 1 or (form.kxk == "shifted" and run.square) for run in pattern.runs)
    pointwise = form.pointwise != "gconv" or shape.p == 1 or not pattern.num_pointwise_kernels
    return kxk and pointwise


def runs_in(shape, name, runtime, regime):
    """Whether form `name` of `shape` (or the dense twin, `DENSE_TWIN`) can run in `runtime`
    and `regime`: every form can, except that a training step on `CPU_EIGEN` needs a gradient
    there (`differentiable_on_eigen`). The plan picks, and `tools/benchmark_layer.py` times,
    only such forms."""
    if name == DENSE_TWIN or not (runtime == CPU_EIGEN and regime == TRAIN):
        return True
    return differentiable_on_eigen(shape, name)


def stored_weights(shape, name):
    """Weights (zeros included) that form `name` holds in a graph whose kernels are constants,
    as in a TFLite file: the dense kernel; or the K x K runs' kernels plus the 1 x 1 part's
    (p, M/p, N/p) residue matrices (`bmm`, `gconv`) or masked (M, N) kernel (`conv`);
    `shifted` adds the k - 1 grouped 1 x 1 permutation kernels (k x k per block) of each
    square run."""
    pattern = _pattern(shape)
    if name == DENSE:
        return pattern.dense_params
    stored = pattern.num_kxk_kernels * shape.kernel_size**2
    if parse(name).kxk == "shifted":
        stored += sum((r.in_block - 1) * r.in_block * r.out_channels
                      for r in pattern.runs if r.square)
    if pattern.num_pointwise_kernels:
        stored += (shape.in_channels * shape.filters if parse(name).pointwise == "conv"
                   else math.prod(pattern.residue_shape))
    return stored


def int8_isa(features):
    """The instruction set that decides how a CPU with vector extensions `features` (as
    `ssc_tf.timing.cpu_features` lists them) runs int8 convolutions, most capable first:
    "avx512_vnni_amx", "avx512_vnni", "avx512", "avx_vnni", "avx2", "i8mm" (ARM), "dotprod"
    (ARM) or "baseline"."""
    for isa, feature in (("avx512_vnni_amx", "amx_tile"), ("avx512_vnni", "avx512_vnni"),
                         ("avx512", "avx512f"), ("avx_vnni", "avx_vnni"), ("avx2", "avx2"),
                         ("i8mm", "i8mm"), ("dotprod", "asimddp")):
        if feature in features:
            return isa
    return "baseline"


def cpu_kind(vendor, family, features):
    """A CPU's kind in full, as a LiteRT cost table could be keyed by it: vendor, family and
    int8 instruction set (`ssc_tf.timing.Cpu`'s fields), e.g. "intel_family6_avx512_vnni_amx".
    """
    return f"{vendor}_family{family}_{int8_isa(features)}"


def litert_cpu(vendor, features):
    """The `LITERT_CPUS` entry measured on a CPU of `vendor` with vector extensions `features`
    (`ssc_tf.timing.Cpu`'s fields): the section of the same vendor and int8 instruction set,
    "amd_avx2" for an AMD CPU with AVX2 and no AVX-512; or None where the table has no such
    section (an Intel or ARM CPU), rather than another vendor's times."""
    kind = f"{vendor}_{int8_isa(features)}"
    return kind if kind in LITERT_CPUS else None


def check_litert_cpu(name):
    """The `LITERT_CPUS` entry `name` names: itself, or the one it is an alias of
    (`LITERT_CPU_ALIASES`); raises a `ValueError` naming the argument and the values otherwise.
    """
    name = LITERT_CPU_ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in LITERT_CPUS:
        raise arguments.invalid(
            "litert_cpu", f"one of {LITERT_CPUS} (or the earlier names "
            f"{tuple(LITERT_CPU_ALIASES)})", repr(name))
    return name


def section(runtime, litert_cpu=DEFAULT_LITERT_CPU):
    """The cost table's section of `runtime`: its name for TensorFlow's runtimes; for a TFLite
    runtime, its name and the LiteRT CPU (`"tflite_int8@amd_avx2"`; an alias in
    `LITERT_CPU_ALIASES` names its section; `TUNED` the section of a tuned table)."""
    if runtime not in TFLITE_RUNTIMES:
        return runtime
    return f"{runtime}@{litert_cpu if litert_cpu == TUNED else check_litert_cpu(litert_cpu)}"


# Every section a cost table may hold.
SECTIONS = tuple(dict.fromkeys(section(runtime, cpu) for runtime in RUNTIMES
                               for cpu in LITERT_CPUS))


def load_costs(path=COSTS_FILE):
    """The cost table: {"shapes": {key: LayerShape fields}, section: {regime: {key: {form:
    milliseconds}}}, "measured_on": {section: where and when}}, one `section` per runtime and,
    for TFLite, LiteRT CPU."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _load_version(path, modified):
    del modified  # The cache's key: a table rewritten since (a tuned one grows) is read again.
    return load_costs(path)


def _cached_costs(path):
    status = os.stat(path)
    return _load_version(path, (status.st_mtime_ns, status.st_size))


def measured(runtime, regime, path=COSTS_FILE, litert_cpu=DEFAULT_LITERT_CPU):
    """{shape key: {form name: milliseconds}} recorded for `runtime` and `regime` (for a TFLite
    runtime, on `litert_cpu`)."""
    return _cached_costs(path).get(section(runtime, litert_cpu), {}).get(regime, {})


def _regime_times(runtime, regime, path, litert_cpu):
    """(`measured`, the path of the table it read): a TensorFlow runtime or regime that a
    table other than the package's lacks (a tuned one: training is tuned only when asked) is
    read from the package's."""
    table = measured(runtime, regime, path, litert_cpu)
    if not table and path != COSTS_FILE and runtime not in TFLITE_RUNTIMES:
        return measured(runtime, regime, COSTS_FILE, litert_cpu), COSTS_FILE
    return table, path


def _nearest_key(shape, table, path):
    shapes = _cached_costs(path)["shapes"]
    target = shape.features()

    def distance(key):
        features = LayerShape.from_dict(shapes[key]).features()
        return sum((a - b) ** 2 for a, b in zip(features, target)), key

    return min(table, key=distance)


def choose(shape, runtime, regime, path=COSTS_FILE, litert_cpu=DEFAULT_LITERT_CPU):
    """The plan: the `Form` to run `shape` with, in `runtime` and `regime`.

    Args:
        shape: a `LayerShape`.
        runtime: one of `RUNTIMES`.
        regime: one of `REGIMES`.
        path: the cost table (the package's by default).
        litert_cpu: for a TFLite runtime, the `LITERT_CPUS` entry whose times to plan with
            (`TUNED` for a table `ssc_tf.tuning.tune` wrote).

    Returns:
        The fastest measured form of `shape`, or of the nearest measured shape when the table
        lacks `shape`. For TFLite, only forms that store at most `TFLITE_MAX_STORED` times the
        live weights; always only forms that `runs_in` the runtime and regime (training on
        `CPU_EIGEN` needs a gradient). For a runtime the table does not cover:
        `UNMEASURED_FORM` in TensorFlow (the GPU, until measured), the form that stores the
        fewest weights in TFLite. A TensorFlow runtime or regime that a table other than the
        package's lacks (a tuned one) is planned with the package's times.
    """
    if runtime not in RUNTIMES or regime not in REGIMES:
        raise ValueError(
            f"Invalid runtime or regime: expected one of {RUNTIMES} and one of {REGIMES}. "
            f"Received: runtime={runtime!r}, regime={regime!r}"
        )
    table, path = _regime_times(runtime, regime, path, litert_cpu)
    if not table:
        return fastest(shape, runtime, {}) if runtime in TFLITE_RUNTIMES else parse(
            UNMEASURED_FORM)
    # The nearest shape's forms may have a gradient that this shape's blocks lack.
    times = {name: ms for name, ms in _times(shape, table, path).items()
             if runs_in(shape, name, runtime, regime)}
    return fastest(shape, runtime, times)


def _times(shape, table, path):
    """`shape`'s measured times in `table`, or the nearest measured shape's."""
    return table.get(shape.key) or table[_nearest_key(shape, table, path)]


def fastest(shape, runtime, times):
    """The form the plan runs `shape` with in `runtime`, given measured `times` ({form name:
    milliseconds}, of this shape or of the nearest one): the fastest of `shape`'s
    `candidates`, for TFLite only among those that store at most `TFLITE_MAX_STORED` times
    the live weights (the smallest-storing one where none measured qualifies)."""
    allowed = candidates(shape)
    if runtime in TFLITE_RUNTIMES:
        live = _pattern(shape).live_params
        small = [n for n in allowed if stored_weights(shape, n) <= TFLITE_MAX_STORED * live]
        allowed = small or [min(allowed, key=lambda name: stored_weights(shape, name))]
    forms = {name: ms for name, ms in times.items() if name in allowed}
    if not forms:  # The nearest shape's measured forms are all too large for this one.
        return parse(min(allowed, key=lambda name: stored_weights(shape, name)))
    return parse(min(sorted(forms), key=forms.get))


def check_max_stored(max_stored):
    """Returns `max_stored` if `plan_model` takes it: `MAX_STORED_AUTO`, or a number >=
    `TFLITE_MAX_STORED` (the bound each layer's `choose` form already keeps), inf included."""
    if max_stored == MAX_STORED_AUTO:
        return max_stored
    if not arguments.is_number(max_stored) or not max_stored >= TFLITE_MAX_STORED:
        raise arguments.invalid(
            "max_stored", f"{MAX_STORED_AUTO!r} or a number >= {TFLITE_MAX_STORED}",
            repr(max_stored))
    return max_stored


def plan_model(shapes, runtime, path=COSTS_FILE, max_stored=MAX_STORED_AUTO,
               litert_cpu=DEFAULT_LITERT_CPU):
    """The forms of a whole model's layers in a TFLite file, within one storage budget.

    Per layer, the plan keeps a file within `TFLITE_MAX_STORED` times each layer's live weights
    (`choose`). Over a whole model the budget goes further: a small layer (a strided
    1 x 1 shortcut, a 32-channel layer) can store a faster form's zeros for a few hundred
    weights, which a large one's savings pay for. Starting from each layer's `choose` form,
    this repeatedly makes the one change of a layer's form, among its measured `candidates`,
    that saves the most measured milliseconds per extra stored weight, while the model's
    stored weights stay within the budget. Deterministic, like `choose`.

    Args:
        shapes: the `LayerShape` of each of the model's layers (repeats included: a layer
            shape that occurs five times counts five times).
        runtime: one of `TFLITE_RUNTIMES`.
        path: the cost table (the package's by default).
        max_stored: the most weights the file may store, as a multiple of the model's live
            weights: a number >= `TFLITE_MAX_STORED`, where a larger one trades size for
            speed, up to each layer's fastest measured form (`float("inf")`); or
            `MAX_STORED_AUTO` (the default): `TFLITE_MAX_STORED`, and then, while the
            measured times of the layers' forms add up to more than their dense twins'
            (`DENSE_TWIN`), the same changes beyond it, until they do not or none saves time.
            So the file is the smallest the plan finds that is no slower than the dense twin.
        litert_cpu: the `LITERT_CPUS` entry whose times to plan with: the CPU that will run
            the file (`TUNED` for a table `ssc_tf.tuning.tune` wrote).

    Returns:
        One `Form` per shape, in order.
    """
    if runtime not in TFLITE_RUNTIMES:
        raise ValueError(
            f"Invalid value for argument `runtime`: expected one of {TFLITE_RUNTIMES}. "
            f"Received: runtime={runtime!r}"
        )
    check_max_stored(max_stored)
    table = measured(runtime, SMALL_BATCH, path, litert_cpu)
    forms = [choose(shape, runtime, SMALL_BATCH, path, litert_cpu).name for shape in shapes]
    if not table:
        return [parse(name) for name in forms]
    # Per layer, {form: (measured ms, stored weights)} of its measured candidates, once.
    options, dense_twin_ms = [], []
    for shape in shapes:
        times = _times(shape, table, path)
        options.append({name: (times[name], stored_weights(shape, name))
                        for name in candidates(shape) if name in times})
        dense_twin_ms.append(times.get(DENSE_TWIN))
    live = sum(_pattern(shape).live_params for shape in shapes)
    auto = max_stored == MAX_STORED_AUTO
    budget = (TFLITE_MAX_STORED if auto else max_stored) * live
    stored = sum(stored_weights(shape, name) for shape, name in zip(shapes, forms))
    while change := _best_change(forms, options, stored, budget):
        i, forms[i], extra = change
        stored += extra
    if auto and None not in dense_twin_ms:
        while _slower_than_dense_twin(forms, options, dense_twin_ms) and (
                change := _best_change(forms, options, stored, math.inf)):
            i, forms[i], extra = change
            stored += extra
    return [parse(name) for name in forms]


def _best_change(forms, options, stored, budget):
    """(layer index, form, extra stored weights) of the change of one layer's form that saves
    the most measured ms per extra stored weight and keeps the `stored` weights within
    `budget`; None where no such change saves time."""
    changes = []
    for i, layer_options in enumerate(options):
        if forms[i] not in layer_options:  # A fallback form with no time to improve on.
            continue
        current_ms, current_stored = layer_options[forms[i]]
        for name, (ms, name_stored) in layer_options.items():
            saved, extra = current_ms - ms, name_stored - current_stored
            if saved > 0 and stored + extra <= budget:
                changes.append((-saved / max(extra, 1), i, name, extra))
    if not changes:
        return None
    _, i, name, extra = min(changes)
    return i, name, extra


def _slower_than_dense_twin(forms, options, dense_twin_ms):
    """Whether the measured ms of the layers' `forms` add up to more than their dense twins'
    (over the layers whose form has a time: not a fallback)."""
    pairs = [(layer_options[form][0], dense) for form, layer_options, dense
             in zip(forms, options, dense_twin_ms) if form in layer_options]
    return sum(ms for ms, _ in pairs) > sum(dense for _, dense in pairs)


# The guard (`guard`) counts a file as no slower than its dense twin when it runs within this
# fraction of the twin's measured time: two runs of one file on a busy 2-core machine differ
# by about as much, and a tighter bound would move layers to chase the noise.
GUARD_TOLERANCE = 0.02


def guard_order(shapes, forms, runtime, path=COSTS_FILE, litert_cpu=DEFAULT_LITERT_CPU,
                regime=SMALL_BATCH):
    """The layers that `guard` may move to `DENSE`, in the order it moves them.

    The layers whose planned form the table predicts costs the most milliseconds over the same
    layer in `DENSE` come first: moving them recovers the most time per layer moved, so the
    guard reaches its dense twin's speed with the most layers left structured (and their
    file small). Layers without both times (a fallback form) come after them, in model
    order; layers already `DENSE` are left out.

    Args:
        shapes: the `LayerShape` of each layer.
        forms: the `Form` (or form name) each runs, as planned (`plan_model`, or any other
            source of forms).
        runtime: one of `RUNTIMES`.
        path: the cost table (the package's by default).
        litert_cpu: for a TFLite runtime, the `LITERT_CPUS` entry (or `TUNED`) whose times
            predict.
        regime: the `REGIMES` entry whose times predict: `SMALL_BATCH` (the default) for a
            TFLite file, `SMALL_BATCH` or `LARGE_BATCH` for a SavedModel's two graphs.

    Returns:
        A list of indices into `shapes`.
    """
    table, path = _regime_times(runtime, regime, path, litert_cpu)
    excess = {}
    for i, (shape, form) in enumerate(zip(shapes, forms)):
        name = getattr(form, "name", form)
        if name == DENSE:
            continue
        times = _times(shape, table, path) if table else {}
        excess[i] = (times[name] - times[DENSE] if name in times and DENSE in times
                     else -math.inf)
    return sorted(excess, key=lambda i: -excess[i])


@dataclasses.dataclass(frozen=True)
class GuardResult:
    """What `guard` chose and measured.

    Attributes:
        forms: the `Form` of each layer in the file to ship.
        moved: the indices of the layers moved to `DENSE`, in the order moved.
        ms, dense_ms: the shipped file's measured milliseconds and its dense twin's. Where
            every movable layer was moved, the file is the dense twin: both are the twin's
            last measurement.
        measurements: (layers moved, ms, dense ms) of every file measured, in order; the
            first is the planned file's.
        movable: how many layers the guard could move (`guard`'s `order`).
    """

    forms: list
    moved: list
    ms: float
    dense_ms: float
    measurements: list
    movable: int

    @property
    def speedup(self):
        """The shipped file's speed over its dense twin's: dense ms / ms."""
        return self.dense_ms / self.ms

    def facts(self, names):
        """What the guard measured and moved, for JSON, with the layers named by `names` (one
        per layer): `ms`, `dense_ms`, `speedup` (of what ships), `planned_ms` and
        `planned_dense_ms` (the planned file's first measurement), `moved` (names),
        `movable`, `files_measured`."""
        _, planned_ms, planned_dense_ms = self.measurements[0]
        return {"ms": self.ms, "dense_ms": self.dense_ms, "speedup": self.speedup,
                "planned_ms": planned_ms, "planned_dense_ms": planned_dense_ms,
                "moved": [names[i] for i in self.moved], "movable": self.movable,
                "files_measured": len(self.measurements)}


def describe_guard(facts, planned="planned file"):
    """`GuardResult.facts` in words, one line: what `planned` measured against its dense twin
    and, where the guard moved layers, which and what that measured."""
    line = (f"{planned} {facts['planned_ms']:.3f} ms, dense twin "
            f"{facts['planned_dense_ms']:.3f} ms here "
            f"({facts['planned_dense_ms'] / facts['planned_ms']:.2f}x)")
    if not facts["moved"]:
        return line + "; shipped as planned"
    return (line + f"; moved {len(facts['moved'])} of {facts['movable']} SSC layers to dense "
            f"({', '.join(facts['moved'])}): {facts['ms']:.3f} against "
            f"{facts['dense_ms']:.3f} ms ({facts['speedup']:.2f}x)")


def guard(forms, order, measure, tolerance=GUARD_TOLERANCE):
    """Moves layers to `DENSE`, first to last of `order`, until the file is not slower than its
    dense twin when measured: the dense twin (every layer `DENSE`) is the floor.

    The planned file is measured first; if it is slower, a binary search over how many of
    `order`'s layers to move finds the fewest whose file is measured not slower, on the
    assumption that moving more layers does not make a file slower. It measures about
    log2(len(order)) + 1 files; the file it returns is one it measured not slower, or the
    dense twin, whatever the noise did.

    Args:
        forms: the planned `Form` (or form name) of each layer: `plan_model`'s, or any other
            source of forms, such as times tuned on the host.
        order: indices of the layers to move, first to last (`guard_order`).
        measure: a callable that takes one `Form` per layer and returns (milliseconds of that
            file, milliseconds of its dense twin), timed alike (in turns, on the machine
            that will run them).
        tolerance: a file within `1 + tolerance` times its dense twin's time counts as not
            slower (`GUARD_TOLERANCE`).

    Returns:
        A `GuardResult`.
    """
    planned = [parse(getattr(form, "name", form)) for form in forms]

    def moved(count):
        chosen = list(planned)
        for i in order[:count]:
            chosen[i] = parse(DENSE)
        return chosen

    measurements = []

    def slower(count):
        ms, dense_ms = measure(moved(count))
        measurements.append((count, ms, dense_ms))
        return ms > (1 + tolerance) * dense_ms

    # Invariant: the file with `slow` layers moved was measured slower; with `fast` it was
    # measured not slower, or it is the dense twin.
    slow, fast = 0, len(order)
    if not slower(0):
        fast = 0
    while fast - slow > 1:
        middle = (slow + fast) // 2
        if slower(middle):
            slow = middle
        else:
            fast = middle
    last = next((m for m in reversed(measurements) if m[0] == fast), None)
    if last is None:  # The dense twin itself: no slower by construction.
        dense_ms = measurements[-1][2]
        last = (fast, dense_ms, dense_ms)
    return GuardResult(moved(fast), list(order[:fast]), last[1], last[2], measurements,
                       len(order))


@contextlib.contextmanager
def target_runtime(runtime, forms=None, litert_cpu=DEFAULT_LITERT_CPU):
    """Plans the layers traced inside the block for `runtime` (one of `RUNTIMES`) instead of the
    one they are traced on: the TFLite converter traces on a CPU for a phone.

    `forms`, optional, is {layer name: `Form`}: those layers (with `implementation="auto"`)
    run these forms instead of their own `choose` (`plan_model`'s forms for a whole model).
    Every other layer chooses with the times of `litert_cpu` (one of `LITERT_CPUS`, or an
    alias) where
    `runtime` is a TFLite one."""
    if runtime not in RUNTIMES:
        raise ValueError(
            f"Invalid value for argument `runtime`: expected one of {RUNTIMES}. "
            f"Received: runtime={runtime!r}"
        )
    litert_cpu = check_litert_cpu(litert_cpu)
    runtime_token = _runtime_override.set(runtime)
    cpu_token = _litert_cpu_override.set(litert_cpu)
    try:
        with layer_forms(forms):
            yield
    finally:
        _litert_cpu_override.reset(cpu_token)
        _runtime_override.reset(runtime_token)


@contextlib.contextmanager
def layer_forms(forms):
    """The layers traced inside the block that `forms` ({layer name: `Form`}) names (with
    `implementation="auto"`) run those forms instead of their own `choose`; None: every layer
    chooses. A SavedModel's serving graph traces its model once with each batch regime's
    forms (`ssc_tf.serving.ServingModel`)."""
    token = _forms_override.set(dict(forms) if forms else None)
    try:
        yield
    finally:
        _forms_override.reset(token)


@contextlib.contextmanager
def cost_table(path):
    """Plans the layers traced inside the block with the times of the cost table at `path`
    (one that `ssc_tf.tuning.tune` wrote on this machine) instead of the package's; None
    keeps the package's."""
    token = _costs_override.set(path)
    try:
        yield
    finally:
        _costs_override.reset(token)


def costs_path():
    """The cost table an enclosing `cost_table` names, else the package's (`COSTS_FILE`)."""
    return _costs_override.get() or COSTS_FILE


def runtime_override():
    """The runtime set by an enclosing `target_runtime`, or None."""
    return _runtime_override.get()


def litert_cpu_override():
    """The LiteRT CPU set by an enclosing `target_runtime`, else `DEFAULT_LITERT_CPU`."""
    return _litert_cpu_override.get()


def form_override(layer_name):
    """The `Form` an enclosing `layer_forms` (or `target_runtime`) gives the layer
    `layer_name`, or None."""
    return (_forms_override.get() or {}).get(layer_name)
