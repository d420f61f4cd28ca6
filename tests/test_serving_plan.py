"""A SavedModel's forms per batch: the two graphs behind one cond, and the guard of each."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import execution_plan
from ssc_tf import export
from ssc_tf import layers
from ssc_tf import serving
from ssc_tf import serving_plan
from ssc_tf import tuning
from ssc_tf.data import augment, datasets
from ssc_tf.layers import SSCConv2D

STRUCTURED = execution_plan.parse("grouped+bmm")
DENSE = execution_plan.parse(execution_plan.DENSE)


def _model():
    """Three SSC layers of distinct shapes on the digits' inputs, seeded."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(datasets.get("digits").input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = SSCConv2D(16, 3, g=4, p=4, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = SSCConv2D(32, 3, g=4, p=4, strides=2, padding="same")(x)
    x = SSCConv2D(32, 3, g=2, p=2, padding="same")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


def _structured(function):
    """A fake time of a graph: 1 and one more per layer in `grouped+bmm` (its batched matrix
    product)."""
    return 1.0 + sum(op.type == "BatchMatMulV2" for op in function.graph.get_operations())


@pytest.fixture
def planned_structured(monkeypatch):
    """Every layer planned `grouped+bmm` in both regimes, whatever the table says."""
    monkeypatch.setattr(execution_plan, "choose", lambda *args, **kwargs: STRUCTURED)


def test_each_batch_is_guarded_on_its_own(planned_structured):
    """Slower than its dense twin up to batch 2 and faster from 4: the guard moves layers to
    dense in the small-batch graph only, which then runs up to 2 images."""
    model = _model()
    calls = []

    def timer(functions, inputs, repeats):
        batch = inputs.shape[0]
        calls.append((batch, sorted(functions), repeats))
        return {name: _structured(f) if batch <= 2 else 1 / _structured(f)
                for name, f in functions.items()}

    plan = serving_plan.plan(model, layers.current_runtime(), tune=False, timer=timer)
    names, shapes = tuning.planned_layers(model)
    small, large = (plan.guard[regime] for regime in serving_plan.REGIMES)
    assert set(plan.forms[execution_plan.LARGE_BATCH].values()) == {STRUCTURED}
    assert large["moved"] == [] and large["speedup"] == 4.0 and large["files_measured"] == 1
    # Every structured layer costs time: the small-batch graph ends as its dense twin,
    # reached by a binary search over the layers in `guard_order`'s order.
    assert set(plan.forms[execution_plan.SMALL_BATCH].values()) == {DENSE}
    order = execution_plan.guard_order(shapes, [STRUCTURED] * 3, layers.current_runtime(),
                                       regime=execution_plan.SMALL_BATCH)
    assert small["moved"] == [names[i] for i in order] and small["movable"] == 3
    assert small["ms"] == small["dense_ms"] == small["planned_dense_ms"] < small["planned_ms"]
    assert small["files_measured"] <= math.ceil(math.log2(3)) + 1
    assert small["plans_ms"] is large["plans_ms"] is None  # one plan: the package's times
    # The small-batch graph (dense: 1 ms) is faster at 1 and 2 images, slower at 4 (against
    # 0.25): it serves up to 2.
    assert plan.small_batch_max == 2
    assert plan.guard["switch"] == [{"batch": 1, "small": 1.0, "large": 4.0},
                                    {"batch": 2, "small": 1.0, "large": 4.0},
                                    {"batch": 4, "small": 1.0, "large": 0.25}]
    repeats = serving_plan.GUARD_REPEATS
    assert calls == (
        [(1, ["dense", "ssc"], repeats[execution_plan.SMALL_BATCH])] * small["files_measured"]
        + [(128, ["dense", "ssc"], repeats[execution_plan.LARGE_BATCH])]
        + [(batch, ["large", "small"], serving_plan.SWITCH_REPEATS) for batch in (1, 2, 4)])
    assert execution_plan.form_override(names[0]) is None


def test_a_small_batch_graph_slower_than_the_large_batch_one_at_1_image_is_dropped(
        monkeypatch):
    """The guard keeps the small-batch graph's structured layers (not slower than dense), but
    the large-batch graph of other forms runs one image faster still: one graph serves all."""
    model = _model()
    names, _ = tuning.planned_layers(model)
    large = dict.fromkeys(names, execution_plan.parse("grouped+conv"))
    monkeypatch.setattr(execution_plan, "choose",
                        lambda shape, runtime, regime, *args, **kwargs:
                        STRUCTURED if regime == execution_plan.SMALL_BATCH
                        else execution_plan.parse("grouped+conv"))

    def timer(functions, inputs, repeats):
        return {name: 0.5 if name == "large" else 1.0 for name in functions}

    plan = serving_plan.plan(model, layers.current_runtime(), tune=False, timer=timer)
    assert plan.small_batch_max == 0
    assert plan.forms[execution_plan.SMALL_BATCH] == plan.forms[execution_plan.LARGE_BATCH] == large
    assert plan.guard["switch"] == [{"batch": 1, "small": 1.0, "large": 0.5}]
    served = serving.ServingModel(model, "digits", batch_forms=plan.forms,
                                  small_batch_max=plan.small_batch_max)
    assert not _has_cond(served.probabilities)


def test_the_faster_of_the_tuned_and_the_packaged_plan_is_kept(monkeypatch, tmp_path):
    """Where this machine's times plan otherwise than the package's, both graphs are timed:
    here the tuned plan (`grouped+conv`) runs faster than the package's (`grouped+bmm`)."""
    table = tmp_path / "tuned.json"
    table.write_text('{"shapes": {}}')  # no times: the guard's order falls back to the package's
    tuned = tuning.Tuning(str(table), "cpu", [], [], [], 0.0)
    monkeypatch.setattr(tuning, "for_host", lambda *args: tuned)
    monkeypatch.setattr(
        execution_plan, "choose",
        lambda shape, runtime, regime, path=execution_plan.COSTS_FILE, **kwargs:
        execution_plan.parse("grouped+conv" if path == tuned.path else "grouped+bmm"))

    def timer(functions, inputs, repeats):
        return {name: _structured(f) for name, f in functions.items()}

    plan = serving_plan.plan(_model(), layers.current_runtime(), timer=timer)
    assert plan.tuning is tuned
    for regime in serving_plan.REGIMES:
        assert plan.guard[regime]["plans_ms"] == {"package": 4.0, "tuned": 1.0}
        # As fast as its dense twin, timed with both plans: kept, nothing timed again.
        assert plan.guard[regime]["moved"] == [] and plan.guard[regime]["files_measured"] == 1
        assert {f.name for f in plan.forms[regime].values()} == {"grouped+conv"}
    # The same forms at every batch: one graph, nothing to switch.
    assert plan.guard["switch"] is None
    assert plan.small_batch_max == execution_plan.SMALL_BATCH_MAX


def test_a_dense_plan_timed_faster_is_kept_with_its_times(monkeypatch, tmp_path):
    table = tmp_path / "tuned.json"
    table.write_text('{"shapes": {}}')
    tuned = tuning.Tuning(str(table), "cpu", [], [], [], 0.0)
    monkeypatch.setattr(tuning, "for_host", lambda *args: tuned)
    monkeypatch.setattr(
        execution_plan, "choose",
        lambda shape, runtime, regime, path=execution_plan.COSTS_FILE, **kwargs:
        DENSE if path == tuned.path else STRUCTURED)

    def timer(functions, inputs, repeats):
        return {name: _structured(f) for name, f in functions.items()}

    plan = serving_plan.plan(_model(), layers.current_runtime(), timer=timer)
    for regime in serving_plan.REGIMES:
        assert plan.guard[regime] == {"plans_ms": {"package": 4.0, "tuned": 1.0}}
        assert set(plan.forms[regime].values()) == {DENSE}


@pytest.mark.parametrize("guard, other_runtime", [(False, False), (True, True)],
                         ids=["noguard", "other_runtime"])
def test_the_guard_runs_only_when_asked_for_this_processes_runtime(
        planned_structured, monkeypatch, guard, other_runtime):
    runtime = layers.current_runtime()
    if other_runtime:
        runtime = next(r for r in execution_plan.TF_RUNTIMES if r != runtime)
    monkeypatch.setattr(tuning, "for_host", lambda *args: pytest.fail("tuned"))

    def timer(*args):
        pytest.fail("timed")

    plan = serving_plan.plan(_model(), runtime, tune=other_runtime, guard=guard, timer=timer)
    assert plan.guard is None and plan.tuning is None
    assert {form for forms in plan.forms.values() for form in forms.values()} == {STRUCTURED}


def test_a_model_without_planned_layers_is_neither_tuned_nor_guarded(monkeypatch):
    monkeypatch.setattr(tuning, "tune", lambda *args: pytest.fail("tuned"))
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    plan = serving_plan.plan(model, layers.current_runtime(), timer=lambda *args: {})
    assert plan == serving_plan.ServingPlan({r: {} for r in serving_plan.REGIMES},
                                            execution_plan.SMALL_BATCH_MAX, None, None)


def _probabilities(model, pixels):
    logits = model(augment.normalize(tf.constant(pixels, tf.float32), "digits"), training=False)
    return tf.nn.softmax(logits).numpy()


def _has_cond(function):
    return bool(_branches(function))


def _branches(function):
    """The operation types of each branch of the conds in `function`'s graph, [(then, else)]."""
    graph = function.get_concrete_function().graph
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}

    def types(name):
        return {node.op for node in library[name].node_def}

    return [(types(op.get_attr("then_branch").name), types(op.get_attr("else_branch").name))
            for op in graph.get_operations() if op.type in ("If", "StatelessIf")]


def test_a_savedmodel_runs_each_batchs_forms_behind_one_cond(tmp_path):
    model = _model()
    names, _ = tuning.planned_layers(model)
    forms = {execution_plan.SMALL_BATCH: dict.fromkeys(names, DENSE),
             execution_plan.LARGE_BATCH: dict.fromkeys(names, STRUCTURED)}
    served = serving.ServingModel(model, "digits", batch_forms=forms, small_batch_max=2)
    # Batches of up to 2 take the first branch: the dense forms' convolutions alone; the
    # other runs `grouped+bmm`'s batched matrix products.
    [(small, large)] = _branches(served.probabilities)
    assert "BatchMatMulV2" not in small and "Conv2D" in small
    assert "BatchMatMulV2" in large
    assert execution_plan.form_override(names[0]) is None
    same = {regime: forms[execution_plan.LARGE_BATCH] for regime in serving_plan.REGIMES}
    assert not _has_cond(serving.ServingModel(model, "digits", batch_forms=same).probabilities)
    served.save(str(tmp_path / "m"))
    signature = tf.saved_model.load(str(tmp_path / "m")).signatures[serving.SERVING_DEFAULT]
    rng = np.random.default_rng(0)
    # Up to 2 images run the dense forms, more the structured ones: the same function.
    for batch in (1, 2, 3):
        pixels = rng.integers(0, 256, (batch, 32, 32, 3), np.uint8)
        np.testing.assert_allclose(signature(images=tf.constant(pixels))["probabilities"],
                                   _probabilities(model, pixels), atol=1e-5)


def test_the_cli_says_what_was_timed_and_chosen():
    facts = {"ms": 4.0, "dense_ms": 4.1, "speedup": 4.1 / 4.0, "planned_ms": 5.0,
             "planned_dense_ms": 4.0, "moved": ["a", "b"], "movable": 3, "files_measured": 3,
             "plans_ms": None}
    kept = dict(facts, ms=3.0, dense_ms=4.0, speedup=4 / 3, planned_ms=3.0, moved=[],
                plans_ms={"package": 3.5, "tuned": 3.0})
    result = {"guard": {execution_plan.SMALL_BATCH: facts, execution_plan.LARGE_BATCH: kept,
                        "switch": [{"batch": 1, "small": 4.0, "large": 4.5},
                                   {"batch": 2, "small": 6.0, "large": 6.5},
                                   {"batch": 4, "small": 9.0, "large": 8.0}]},
              "small_batch_max": 2}
    assert export.format_guard(result, True).splitlines() == [
        "Guard at batch 1: planned graph 5.000 ms, dense twin 4.000 ms here (0.80x); "
        "moved 2 of 3 SSC layers to dense (a, b): 4.000 against 4.100 ms (1.02x)",
        "Guard at batch 128: plans with the package's times 3.500 ms, with this machine's "
        "3.000 ms; planned graph 3.000 ms, dense twin 4.000 ms here (1.33x); shipped "
        "as planned",
        "Batches of up to 2 images run the small-batch graph (timed against each other at "
        "1: 4.00 against 4.50 ms, 2: 6.00 against 6.50 ms, 4: 9.00 against 8.00 ms)."]
    dense = {"guard": {execution_plan.SMALL_BATCH: None,
                       execution_plan.LARGE_BATCH: {"plans_ms": {"package": 2.0, "tuned": 1.0}},
                       "switch": None}, "small_batch_max": 8}
    assert export.format_guard(dense, True).splitlines() == [
        "Guard at batch 1: every SSC layer is planned dense",
        "Guard at batch 128: plans with the package's times 2.000 ms, with this machine's "
        "1.000 ms; every SSC layer is planned dense"]
    assert export.format_guard({"guard": None}, False) == "Guard: off (--noguard)."
    dropped = {"guard": {**result["guard"], "switch": [{"batch": 1, "small": 5.0,
                                                         "large": 4.0}]},
               "small_batch_max": 0}
    assert export.format_guard(dropped, True).splitlines()[-1] == (
        "Every batch runs the large-batch graph (timed against each other at 1: 5.00 against "
        "4.00 ms).")


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_forms": {execution_plan.SMALL_BATCH: {}}}, "argument `batch_forms`: expected None "
     "or a dict of"),
    ({"small_batch_max": -1}, r"argument `small_batch_max`: expected an integer >= 0"),
    ({"small_batch_max": 2.0}, r"argument `small_batch_max`: expected an integer >= 0"),
])
def test_bad_serving_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        serving.ServingModel(_model(), "digits", **kwargs)
