"""The forms a SavedModel's SSC layers run at each batch size: planned, tuned and guarded on
the machine that exports it.

A serving signature takes any batch, and a layer's fastest form differs between one image and
a hundred (docs/execution_plan.md): at batch 1 a form's extra kernels cost more than the work
they save. `plan` gives `ssc_tf.serving.ServingModel` one plan per batch regime, the small
batch (at most `execution_plan.SMALL_BATCH_MAX` images, timed at 1) and the large one (timed
at 128), and the serving graph holds both behind one `tf.cond` on the batch size where they
differ.

For the TensorFlow runtime of the process that exports (the machine that will serve, unless
`ssc_tf.export --runtime` names another):

- **tuned**: where the package has no times of this kind of CPU, the model's layer shapes are
  timed here in both regimes first (`ssc_tf.tuning`, cached);
- **guarded**: each regime's graph, with its batch norms folded as it is served, is timed at
  its batch against its dense twin (every planned layer in `execution_plan.DENSE`, which
  computes the same function), and where it is slower, layers move to the dense form until it
  is not (`execution_plan.guard`, as `ssc_tf.convert_tflite` guards a TFLite file).

Example:

>>> plan = serving_plan.plan(model, layers.current_runtime(), guard=False)
>>> ServingModel(model, "cifar10", batch_forms=plan.forms).save(path)
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
# counts): ResNet-32 runs in about 5 ms at batch 1 and 0.4 s at batch 128 on 2 cores, so a
# measurement takes about a second at batch 1 and 5 s at 128.
GUARD_REPEATS = {execution_plan.SMALL_BATCH: 50, execution_plan.LARGE_BATCH: 5}


@dataclasses.dataclass(frozen=True)
class ServingPlan:
    """What `plan` chose.

    Attributes:
        forms: {regime: {layer name: `execution_plan.Form`}} for each of `REGIMES`:
            `ServingModel`'s `batch_forms`.
        tuning: the `ssc_tf.tuning.Tuning` of this machine's times, or None where the
            package's planned.
        guard: None where the graphs were not guarded (`guard=False`, another runtime than
            this process's, or no SSC layer to plan); else {regime:
            `execution_plan.GuardResult.facts`, or None where every layer was planned dense}.
    """

    forms: dict
    tuning: tuning.Tuning | None
    guard: dict | None

    def form_names(self):
        """`forms` with each form's name, for JSON."""
        return {regime: {name: form.name for name, form in forms.items()}
                for regime, forms in self.forms.items()}


def plan(model, runtime, *, tune=True, guard=True, timer=None):
    """Plans `model`'s SSC layers for serving on `runtime`, at a small and a large batch.

    Args:
        model: the Keras model to serve, with batch norms or folded.
        runtime: one of `execution_plan.TF_RUNTIMES`. Tuning and the guard run only for this
            process's (`ssc_tf.layers.current_runtime`): another's times cannot be taken here.
        tune: bool, where the package has no times of `runtime` measured on this kind of CPU
            (`ssc_tf.tuning.fits_host`), time the model's layer shapes here first
            (`ssc_tf.tuning.for_host`). Defaults to True.
        guard: bool, time each regime's graph against its dense twin and move layers to the
            dense form until it is not slower. Defaults to True.
        timer: what the guard times graphs with: a callable that takes {name: function of
            a float32 image batch}, the batch, and the timed calls of each, and returns
            {name: milliseconds}; default `tf_ms`.

    Returns:
        A `ServingPlan`.
    """
    names, shapes = tuning.planned_layers(model)
    here = runtime == layers.current_runtime()
    tuned = tuning.for_host(model, runtime, REGIMES) if tune and here else None
    table = tuned.path if tuned else execution_plan.COSTS_FILE
    forms = {regime: [execution_plan.choose(shape, runtime, regime, table) for shape in shapes]
             for regime in REGIMES}
    guarded = None
    if guard and here and names:
        graphs = _Graphs(folding.fold_batch_norm(model), names, runtime)
        time_graphs = timer or tf_ms
        guarded = {}
        for regime in REGIMES:
            order = execution_plan.guard_order(shapes, forms[regime], runtime, table,
                                               regime=regime)
            if not order:
                guarded[regime] = None
                continue
            inputs = graphs.inputs(BATCH_SIZES[regime])

            def measure(chosen, inputs=inputs, regime=regime):
                ms = time_graphs({"ssc": graphs.get(chosen), "dense": graphs.dense()}, inputs,
                                 GUARD_REPEATS[regime])
                return ms["ssc"], ms["dense"]

            result = execution_plan.guard(forms[regime], order, measure)
            forms[regime] = result.forms
            guarded[regime] = result.facts(names)
    return ServingPlan({regime: dict(zip(names, chosen)) for regime, chosen in forms.items()},
                       tuned, guarded)


class _Graphs:
    """The forward graph of a model with its planned layers in given forms, traced once per
    combination of forms for any batch size, as a serving signature is."""

    def __init__(self, model, names, runtime):
        self._model = model
        self._names = names
        self._runtime = runtime
        self._traced = {}

    def get(self, forms):
        key = tuple(form.name for form in forms)
        if key not in self._traced:
            spec = tf.TensorSpec((None,) + tuple(self._model.input_shape[1:]), tf.float32)
            function = tf.function(lambda x: self._model(x, training=False))
            with execution_plan.target_runtime(self._runtime, dict(zip(self._names, forms))):
                self._traced[key] = function.get_concrete_function(spec)
        return self._traced[key]

    def dense(self):
        return self.get([execution_plan.parse(execution_plan.DENSE)] * len(self._names))

    def inputs(self, batch_size):
        """Random pixels of `batch_size` images, normalized as the model takes them."""
        shape = (batch_size,) + tuple(self._model.input_shape[1:])
        return tf.random.stateless_normal(shape, seed=(0, batch_size))


def tf_ms(functions, inputs, repeats):
    """Median milliseconds per call of each of {name: function} on `inputs`, called in turns
    (`timing.interleaved_ms`), on a GPU until its kernels have run: the guard's timer."""
    sync = (tf.test.experimental.sync_devices
            if layers.current_runtime() == execution_plan.GPU else None)
    return timing.interleaved_ms(functions, repeats, inputs, sync=sync)
