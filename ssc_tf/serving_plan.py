"""The forms a SavedModel's SSC layers run at each batch size: planned, tuned and guarded on
the machine that exports it.

A serving signature takes any batch, and a layer's fastest form differs between one image and
a hundred (docs/execution_plan.md): at batch 1 a form's extra kernels cost more than the work
they save. `plan` gives `ssc_tf.serving.ServingModel` one plan per batch regime, the small
batch (timed at 1) and the large one (timed at 128), and the serving graph holds both behind
one `tf.cond` on the batch size where they differ: batches of up to `small_batch_max` images
run the first.

For the TensorFlow runtime of the process that exports (the machine that will serve, unless
`ssc_tf.export --runtime` names another):

- **tuned**: where the package has no times of this kind of CPU, the model's layer shapes are
  timed here in both regimes first (`ssc_tf.tuning`, cached);
- **timed whole** (`guard`): each regime's graph, with its batch norms folded as it is served,
  is timed at its batch: where the tuned times and the package's plan differently, both
  plans, the faster kept; then against its dense twin (every planned layer in
  `execution_plan.DENSE`, which computes the same function), and where it is slower, layers
  move to the dense form until it is not (`execution_plan.guard`, as `ssc_tf.convert_tflite`
  guards a TFLite file). Last, the two graphs are timed against each other at 1, 2, 4 and 8
  images, and the small one serves the batches below the first at which it ran slower.

Example:

>>> plan = serving_plan.plan(model, layers.current_runtime(), guard=False)
>>> ServingModel(model, "cifar10", batch_forms=plan.forms,
...              small_batch_max=plan.small_batch_max).save(path)
"""

import dataclasses

import tensorflow as tf

from ssc_tf import execution_plan
from ssc_tf import layers
from ssc_tf import timing
from ssc_tf import tuning
from ssc_tf.models import folding

# The regimes a serving graph runs, and the batch each is timed at (the cost table's).
REGIMES = (execution_plan.SMALL_BATCH, execution_plan.LARGE_BATCH)
BATCH_SIZES = {execution_plan.SMALL_BATCH: 1,
               execution_plan.LARGE_BATCH: tuning.LARGE_BATCH_SIZE}
# Timed calls of each graph the guard measures, in turns with its dense twin's (the median
# counts): ResNet-32 runs in about 5 ms at batch 1 and 0.2 s at batch 128 on 2 cores, so a
# measurement takes about half a second at batch 1 and 3 s at 128.
GUARD_REPEATS = {execution_plan.SMALL_BATCH: 50, execution_plan.LARGE_BATCH: 5}
# The batches at which the small-batch graph is timed against the large-batch one, smallest
# first, each with this many timed calls: it serves the batches below the first at which it
# ran slower (the table has times at 1 and 128 only), none if it ran slower at 1.
SWITCH_BATCHES = (1, 2, 4, execution_plan.SMALL_BATCH_MAX)
SWITCH_REPEATS = 20
# The two plans that may be compared: with the package's times and with this machine's.
PACKAGE = "package"
TUNED = "tuned"


@dataclasses.dataclass(frozen=True)
class ServingPlan:
    """What `plan` chose.

    Attributes:
        forms: {regime: {layer name: `execution_plan.Form`}} for each of `REGIMES`:
            `ServingModel`'s `batch_forms`.
        small_batch_max: the largest batch that runs the small-batch forms:
            `execution_plan.SMALL_BATCH_MAX`, or where both graphs were timed, the last of
            `SWITCH_BATCHES` before the first at which the small-batch one ran slower. Where
            it ran slower at batch 1, 0, and `forms` holds the large-batch forms for both
            regimes: one graph.
        tuning: the `ssc_tf.tuning.Tuning` of this machine's times, or None where the
            package's planned.
        guard: None where the graphs were not timed (`guard=False`, another runtime than
            this process's, or no SSC layer to plan); else, for each regime:
            `execution_plan.GuardResult.facts` and `plans_ms`, the milliseconds of the
            package's and the tuned plan (`PACKAGE`, `TUNED`) where both were timed (else
            None), the faster kept; where every layer of the kept plan is dense, `plans_ms`
            alone, or None if only one plan was made. And `switch`: a list of {"batch",
            "small", "large"} (batch size, ms of each graph) as timed at `SWITCH_BATCHES`, or
            None.
    """

    forms: dict
    small_batch_max: int
    tuning: tuning.Tuning | None
    guard: dict | None

    def form_names(self):
        """`forms` with each form's name, for JSON."""
        return {regime: {name: form.name for name, form in forms.items()}
                for regime, forms in self.forms.items()}


def plan(model, runtime, *, tune=True, guard=True, timer=None):
    """Plans `model`'s SSC layers for serving on `runtime`, at a small and a large batch.

    Where the graphs are timed (`guard`), for each regime: where this machine's tuned times
    and the package's plan differently, both plans are timed and the faster kept (per-layer
    times miss what a whole graph costs: a layer barely faster alone can be slower between
    its neighbours); then the guard moves layers to dense until the graph is not slower than
    its dense twin. Last, where the two regimes' forms differ, the batch up to which the
    small-batch graph runs is measured (`SWITCH_BATCHES`).

    Args:
        model: the Keras model to serve, with batch norms or folded.
        runtime: one of `execution_plan.TF_RUNTIMES`. Tuning and the guard run only for this
            process's (`ssc_tf.layers.current_runtime`): another's times cannot be taken here.
        tune: bool, where the package has no times of `runtime` measured on this kind of CPU
            (`ssc_tf.tuning.fits_host`), time the model's layer shapes here first
            (`ssc_tf.tuning.for_host`). Defaults to True.
        guard: bool, time the graphs as above. Defaults to True.
        timer: what the graphs are timed with: a callable that takes {name: function of a
            float32 image batch}, the batch, and the timed calls of each, and returns
            {name: milliseconds}; default `tf_ms`.

    Returns:
        A `ServingPlan`.
    """
    names, shapes = tuning.planned_layers(model)
    here = runtime == layers.current_runtime()
    tuned = tuning.for_host(model, runtime, REGIMES) if tune and here else None
    tables = {PACKAGE: execution_plan.COSTS_FILE}
    if tuned:
        tables[TUNED] = tuned.path
    plans = {regime: {source: [execution_plan.choose(shape, runtime, regime, table)
                               for shape in shapes]
                      for source, table in tables.items()}
             for regime in REGIMES}
    if not (guard and here and names):
        # The host's times where it was tuned, else the package's.
        forms = {regime: options[TUNED if tuned else PACKAGE]
                 for regime, options in plans.items()}
        return ServingPlan(_by_name(names, forms), execution_plan.SMALL_BATCH_MAX, tuned, None)
    timed = _Timed(model, names, shapes, runtime, timer or tf_ms)
    forms, guarded = {}, {}
    for regime in REGIMES:
        forms[regime], guarded[regime] = timed.guard(regime, plans[regime], tables)
    small_batch_max, guarded["switch"] = execution_plan.SMALL_BATCH_MAX, None
    if forms[execution_plan.SMALL_BATCH] != forms[execution_plan.LARGE_BATCH]:
        small_batch_max, guarded["switch"] = timed.switch(forms)
        if not small_batch_max:
            forms[execution_plan.SMALL_BATCH] = forms[execution_plan.LARGE_BATCH]
    return ServingPlan(_by_name(names, forms), small_batch_max, tuned, guarded)


def _by_name(names, forms):
    return {regime: dict(zip(names, chosen)) for regime, chosen in forms.items()}


class _Timed:
    """Times a model's forward graph with its planned layers in given forms, traced once per
    combination of forms for any batch size, as a serving signature is, with its batch norms
    folded as it is served."""

    def __init__(self, model, names, shapes, runtime, timer):
        self._model = folding.fold_batch_norm(model)
        self._names = names
        self._shapes = shapes
        self._runtime = runtime
        self._timer = timer
        self._traced = {}

    def graph(self, forms):
        key = tuple(form.name for form in forms)
        if key not in self._traced:
            spec = tf.TensorSpec((None,) + tuple(self._model.input_shape[1:]), tf.float32)
            function = tf.function(lambda x: self._model(x, training=False))
            with execution_plan.target_runtime(self._runtime, dict(zip(self._names, forms))):
                self._traced[key] = function.get_concrete_function(spec)
        return self._traced[key]

    def time(self, graphs, batch_size, repeats):
        """{name: ms} of {name: forms}, timed in turns on random inputs of `batch_size`."""
        shape = (batch_size,) + tuple(self._model.input_shape[1:])
        inputs = tf.random.stateless_normal(shape, seed=(0, batch_size))
        return self._timer({name: self.graph(forms) for name, forms in graphs.items()},
                           inputs, repeats)

    def guard(self, regime, plans, tables):
        """(forms, facts) of `regime`: the faster of `plans` ({source: forms}), guarded
        against its dense twin. Where every layer of the faster is planned dense, the facts
        are `plans_ms` alone, or None where only one plan was made."""
        batch, repeats = BATCH_SIZES[regime], GUARD_REPEATS[regime]
        dense = [execution_plan.parse(execution_plan.DENSE)] * len(self._names)
        source, plans_ms = list(plans)[-1], None  # the tuned plan where there is one
        # The faster plan's time and its dense twin's, timed with the other plan's.
        measured = []
        if len({tuple(form.name for form in forms) for forms in plans.values()}) > 1:
            ms = self.time({**plans, "dense": dense}, batch, repeats)
            plans_ms = {name: ms[name] for name in plans}
            source = min(plans_ms, key=plans_ms.get)
            measured.append((ms[source], ms["dense"]))
        forms = plans[source]
        order = execution_plan.guard_order(self._shapes, forms, self._runtime,
                                           tables[source], regime=regime)
        if not order:
            return forms, plans_ms and {"plans_ms": plans_ms}

        def measure(chosen):
            if measured:  # the first: the faster plan itself
                return measured.pop()
            ms = self.time({"ssc": chosen, "dense": dense}, batch, repeats)
            return ms["ssc"], ms["dense"]

        result = execution_plan.guard(forms, order, measure)
        return result.forms, {**result.facts(self._names), "plans_ms": plans_ms}

    def switch(self, forms):
        """(the last of `SWITCH_BATCHES` before the first at which the small-batch `forms` ran
        slower than the large-batch ones, 0 if the first; [{"batch", "small", "large"}] as
        timed)."""
        graphs = {"small": forms[execution_plan.SMALL_BATCH],
                  "large": forms[execution_plan.LARGE_BATCH]}
        small_batch_max, timed = 0, []
        for batch in SWITCH_BATCHES:
            timed.append({"batch": batch, **self.time(graphs, batch, SWITCH_REPEATS)})
            if timed[-1]["small"] > timed[-1]["large"]:
                break
            small_batch_max = batch
        return small_batch_max, timed


def tf_ms(functions, inputs, repeats):
    """Median milliseconds per call of each of {name: function} on `inputs`, called in turns
    (`timing.interleaved_ms`), on a GPU until its kernels have run: the guard's timer."""
    sync = (tf.test.experimental.sync_devices
            if layers.current_runtime() == execution_plan.GPU else None)
    return timing.interleaved_ms(functions, repeats, inputs, sync=sync)
