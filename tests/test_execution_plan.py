"""Tests of the execution plan: form names, the table lookup, and the plan's choice at every layer
shape of the packaged configs computing the same function as the dense oracle."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import SSCConv2D
from ssc_tf import architectures
from ssc_tf import execution_plan
from ssc_tf import flagfile
from ssc_tf import pattern as pattern_lib
from ssc_tf.models import blocks

from layer_testing import (
    ATOL, GROUPED_GRADIENTS, outputs_and_gradients, random_inputs, same_weights,
)

SHAPE = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 4, 4)


def _config_shapes(names=None):
    """The distinct SSC layer shapes of the named configs (default: every CIFAR and
    Tiny-ImageNet config), TF-free."""
    if names is None:
        names = [n for n in flagfile.names() if n.startswith(("cifar", "tinyimagenet"))]
    shapes = {}
    for name in names:
        config = flagfile.load(name)
        kwargs = config.model_kwargs()
        settings = architectures.settings_of(
            config.model, kwargs["g"], kwargs["p"], kwargs.get("p_1x1", ())
        )
        for layer in architectures.conv_layers(config.model, kwargs["input_shape"]):
            g, p = architectures.layer_gp(layer, settings)
            if blocks.is_dense(layer.kernel_size, g, p):
                continue
            size = tuple(o * layer.strides for o in layer.output_size)
            shape = execution_plan.LayerShape(
                layer.in_channels, layer.filters, layer.kernel_size, layer.strides, size, g, p
            )
            shapes[shape.key] = shape
    return list(shapes.values())


CONFIG_SHAPES = _config_shapes()


def test_parse_names_every_form():
    assert execution_plan.parse("auto") is None
    assert execution_plan.parse("dense").dense
    for name in execution_plan.FORMS:
        assert execution_plan.parse(name).name == name
    with pytest.raises(ValueError, match=r"`implementation`: expected one of \('auto', 'dense'"):
        execution_plan.parse("grouped")


def test_candidates_follow_the_pattern():
    # 16 inputs per block: too many for depthwise.
    assert execution_plan.candidates(SHAPE) == [
        "dense", "grouped+bmm", "grouped+conv", "grouped+gconv", "split+bmm", "split+conv",
        "split+gconv",
    ]
    eight_per_block = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 8, 4)
    assert execution_plan.candidates(eight_per_block) == [
        "dense", "grouped+bmm", "grouped+conv", "grouped+gconv", "depthwise+bmm",
        "depthwise+conv", "depthwise+gconv", "split+bmm", "split+conv", "split+gconv",
    ]
    # No 1 x 1 part: one name per K x K form; no K x K part: one per 1 x 1 form; split only
    # up to SPLIT_MAX_BLOCKS blocks; shifted only for square blocks of 2 to SHIFTED_MAX_BLOCK.
    no_pointwise = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 64, None)
    assert execution_plan.candidates(no_pointwise) == ["dense", "grouped+bmm", "depthwise+bmm"]
    two_per_block = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 32, None)
    assert execution_plan.candidates(two_per_block) == [
        "dense", "grouped+bmm", "depthwise+bmm", "shifted+bmm"]
    wider = execution_plan.LayerShape(64, 128, 3, 1, (16, 16), 32, None)
    assert "shifted+bmm" not in execution_plan.candidates(wider)
    no_kxk = execution_plan.LayerShape(64, 64, 1, 1, (16, 16), None, 4)
    assert execution_plan.candidates(no_kxk) == [
        "dense", "grouped+bmm", "grouped+conv", "grouped+gconv"]


def _table(tmp_path, times, runtime=execution_plan.CPU_EIGEN, regime=execution_plan.TRAIN,
           litert_cpu=execution_plan.DEFAULT_LITERT_CPU):
    shape_fields = {SHAPE.key: SHAPE.as_dict()}
    costs = {"shapes": shape_fields, execution_plan.section(runtime, litert_cpu): {regime: times}}
    # A new file per table: the plan caches each file it reads.
    path = tmp_path / f"costs_{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(costs))
    return str(path)


def test_choose_takes_the_fastest_measured_form(tmp_path):
    path = _table(tmp_path, {SHAPE.key: {"conv2d": 1.0, "dense": 1.1, "split+conv": 0.4,
                                         "depthwise+bmm": 0.5}})
    form = execution_plan.choose(SHAPE, execution_plan.CPU_EIGEN, execution_plan.TRAIN, path)
    assert form.name == "split+conv"


def test_choose_uses_the_nearest_measured_shape(tmp_path):
    path = _table(tmp_path, {SHAPE.key: {"dense": 1.0, "split+conv": 0.5}})
    wider = execution_plan.LayerShape(72, 72, 3, 1, (16, 16), 4, 4)
    form = execution_plan.choose(wider, execution_plan.CPU_EIGEN, execution_plan.TRAIN, path)
    assert form.name == "split+conv"
    # A form the nearest shape won but this shape does not have is never chosen.
    path = _table(tmp_path, {SHAPE.key: {"dense": 1.0, "split+conv": 0.5}})
    many_blocks = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 32, 4)
    form = execution_plan.choose(many_blocks, execution_plan.CPU_EIGEN, execution_plan.TRAIN,
                                 path)
    assert form.name == "dense"


def test_stored_weights_count_what_each_form_holds():
    # 8 -> 8, g = 2, p = 2: two 4 x 4 blocks of 3 x 3 kernels (288 weights) and 16 live
    # 1 x 1 weights, which bmm holds in (2, 4, 4) residue matrices, gconv in a grouped
    # (4, 2 * 4) kernel and conv in an 8 x 8 kernel.
    shape = execution_plan.LayerShape(8, 8, 3, 1, (4, 4), 2, 2)
    assert pattern_lib.SSCPattern(8, 8, 3, 2, 2).live_params == 288 + 16
    stored = {name: execution_plan.stored_weights(shape, name)
              for name in ("dense", "grouped+bmm", "depthwise+gconv", "split+conv",
                           "shifted+bmm")}
    # shifted also holds three 0/1 permutation kernels, 4 x 4 per block.
    assert stored == {"dense": 576, "grouped+bmm": 288 + 32, "depthwise+gconv": 288 + 32,
                      "split+conv": 288 + 64, "shifted+bmm": 288 + 32 + 3 * 4 * 8}


def test_tflite_plans_only_forms_that_keep_the_file_small(tmp_path):
    # 128 -> 128, g = 15, p = 4: the masked 1 x 1 kernel (16,384 weights) would double the
    # layer's 13,6xx live weights; the residue matrices hold 4,096.
    shape = execution_plan.LayerShape(128, 128, 3, 1, (8, 8), 15, 4)
    times = {"dense": 1.0, "grouped+conv": 0.2, "grouped+bmm": 0.3}
    costs = {"shapes": {shape.key: shape.as_dict()},
             execution_plan.section(execution_plan.TFLITE): {
                 execution_plan.SMALL_BATCH: {shape.key: times}},
             execution_plan.CPU_EIGEN: {execution_plan.SMALL_BATCH: {shape.key: times}}}
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs))
    assert execution_plan.choose(shape, execution_plan.TFLITE, execution_plan.SMALL_BATCH,
                                 str(path)).name == "grouped+bmm"
    assert execution_plan.choose(shape, execution_plan.CPU_EIGEN, execution_plan.SMALL_BATCH,
                                 str(path)).name == "grouped+conv"


def test_each_litert_cpu_has_its_own_tflite_sections():
    assert execution_plan.section(
        execution_plan.TFLITE_INT8, "amd_avx2") == "tflite_int8@amd_avx2"
    assert execution_plan.section(execution_plan.TFLITE) == "tflite@amd_avx512_vnni"
    # The names of before the vendor was part of the kind name the same sections.
    assert execution_plan.section(
        execution_plan.TFLITE_INT8, "x86_avx2") == "tflite_int8@amd_avx2"
    assert execution_plan.check_litert_cpu("x86_avx512_vnni") == "amd_avx512_vnni"
    # TensorFlow's runtimes have one section each, whatever the CPU.
    assert execution_plan.section(execution_plan.CPU_EIGEN, "amd_avx2") == "cpu_eigen"
    assert len(execution_plan.SECTIONS) == 3 + 3 * len(execution_plan.LITERT_CPUS)
    with pytest.raises(ValueError, match=(
            r"^Invalid value for argument `litert_cpu`: expected one of \('amd_avx512_vnni', "
            r"'amd_avx2'\) \(or the earlier names \('x86_avx512_vnni', 'x86_avx2'\)\). "
            r"Received: litert_cpu='arm'$")):
        execution_plan.section(execution_plan.TFLITE, "arm")


# /proc/cpuinfo's features (`timing.CPU_FEATURES`) of the machines the kinds are told apart by.
AMD_ZEN4 = ("amd", "25", ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"))
AMD_ZEN3 = ("amd", "25", ("avx2",))
INTEL_SAPPHIRE_RAPIDS = ("intel", "6", ("avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                        "avx_vnni", "amx_tile"))
INTEL_CASCADE_LAKE = ("intel", "6", ("avx2", "avx512f", "avx512_vnni"))
INTEL_ALDER_LAKE = ("intel", "6", ("avx2", "avx_vnni"))
NEOVERSE_N1 = ("arm_0x41", "0xd0c", ("asimddp",))


def test_cpu_kind_names_the_vendor_family_and_int8_instruction_set():
    kinds = [execution_plan.cpu_kind(*cpu) for cpu in (
        AMD_ZEN4, AMD_ZEN3, INTEL_SAPPHIRE_RAPIDS, INTEL_CASCADE_LAKE, INTEL_ALDER_LAKE,
        NEOVERSE_N1)]
    assert kinds == [
        "amd_family25_avx512_vnni", "amd_family25_avx2", "intel_family6_avx512_vnni_amx",
        "intel_family6_avx512_vnni", "intel_family6_avx_vnni", "arm_0x41_family0xd0c_dotprod"]
    assert execution_plan.int8_isa(("asimddp", "i8mm")) == "i8mm"
    assert execution_plan.int8_isa(()) == "baseline"


def test_only_a_cpu_of_the_vendor_that_measured_a_section_gets_its_times():
    litert_cpu = {name: execution_plan.litert_cpu(vendor, features)
                  for name, (vendor, _, features) in {
                      "zen4": AMD_ZEN4, "zen3": AMD_ZEN3, "sapphire": INTEL_SAPPHIRE_RAPIDS,
                      "cascade": INTEL_CASCADE_LAKE, "alder": INTEL_ALDER_LAKE,
                      "n1": NEOVERSE_N1}.items()}
    # The same AVX-512 VNNI on an Intel CPU runs XNNPACK's int8 kernels at another speed.
    assert litert_cpu == {"zen4": "amd_avx512_vnni", "zen3": "amd_avx2", "sapphire": None,
                          "cascade": None, "alder": None, "n1": None}


def test_plan_for_a_litert_cpu_reads_its_times(tmp_path):
    # Dense int8 is fast with VNNI and slow without: each CPU's plan follows its own times.
    vnni = {"conv2d": 0.2, "dense": 0.2, "grouped+bmm": 0.5, "grouped+conv": 0.45}
    avx2 = {"conv2d": 2.0, "dense": 2.0, "grouped+bmm": 0.5, "grouped+conv": 0.45}
    costs = {"shapes": {SHAPE.key: SHAPE.as_dict()}}
    for cpu, times in (("amd_avx512_vnni", vnni), ("amd_avx2", avx2)):
        costs[execution_plan.section(execution_plan.TFLITE_INT8, cpu)] = {
            execution_plan.SMALL_BATCH: {SHAPE.key: times}}
    path = tmp_path / "cpus.json"
    path.write_text(json.dumps(costs))
    planned = {cpu: execution_plan.plan_model([SHAPE], execution_plan.TFLITE_INT8, str(path),
                                              litert_cpu=cpu)[0].name
               for cpu in execution_plan.LITERT_CPUS}
    assert planned == {"amd_avx512_vnni": "dense", "amd_avx2": "grouped+bmm"}
    assert execution_plan.choose(SHAPE, execution_plan.TFLITE_INT8, execution_plan.SMALL_BATCH,
                                 str(path), "x86_avx2").name == "grouped+bmm"


# Every experiment of the supplement: CIFAR, Tiny-ImageNet and ImageNet.
SUPPLEMENT_SHAPES = _config_shapes(
    [n for n in flagfile.names() if n.startswith(("cifar", "tinyimagenet", "imagenet"))])


@pytest.mark.parametrize("regime", execution_plan.REGIMES)
def test_unmeasured_gpu_runs_one_grouped_and_one_1x1_convolution(tmp_path, regime):
    # A table with CPU times only, as the package's until a gpu section is merged.
    path = _table(tmp_path, {SHAPE.key: {"dense": 0.1}}, regime=regime)
    planned = {execution_plan.choose(shape, execution_plan.GPU, regime, path).name
               for shape in SUPPLEMENT_SHAPES}
    assert planned == {"grouped+conv"}
    # ResNet-50's 1 x 1 layers (no K x K part) among them.
    assert any(shape.g is None for shape in SUPPLEMENT_SHAPES)


def test_unmeasured_tflite_runtime_keeps_the_smallest_file(tmp_path):
    path = _table(tmp_path, {SHAPE.key: {"dense": 0.1}})
    form = execution_plan.choose(SHAPE, execution_plan.TFLITE, execution_plan.SMALL_BATCH, path)
    # `conv`'s M x N kernel would store 3,072 weights more than the residue matrices.
    assert form.name == "grouped+bmm"


def test_target_runtime_overrides_and_restores():
    assert execution_plan.runtime_override() is None
    with execution_plan.target_runtime(execution_plan.TFLITE):
        assert execution_plan.runtime_override() == execution_plan.TFLITE
    assert execution_plan.runtime_override() is None
    with pytest.raises(ValueError, match="`runtime`"):
        with execution_plan.target_runtime("phone"):
            pass
    with pytest.raises(ValueError, match=r"^Invalid value for argument `litert_cpu`: "):
        with execution_plan.target_runtime(execution_plan.TFLITE, litert_cpu="arm64"):
            pass
    assert execution_plan.runtime_override() is None
    assert execution_plan.litert_cpu_override() == execution_plan.DEFAULT_LITERT_CPU


def test_table_holds_exactly_the_layer_shapes_of_the_configs_each_section_measured():
    costs = execution_plan.load_costs()
    sections = {execution_plan.section(runtime, cpu): (runtime, cpu)
                for runtime in execution_plan.RUNTIMES for cpu in execution_plan.LITERT_CPUS}
    # Every section but the GPU's, which a run of tools/gpu_check.sh adds.
    assert set(costs["measured_on"]) - {execution_plan.GPU} == set(sections) - {
        execution_plan.GPU}
    for name, measured_on in costs["measured_on"].items():
        runtime, cpu = sections[name]
        keys = {s.key for s in _config_shapes(measured_on["configs"])}
        regimes = execution_plan.REGIMES if runtime in execution_plan.TF_RUNTIMES else (
            execution_plan.SMALL_BATCH,)
        for regime in regimes:
            # Every shape of the configs it measured, and no other (a shape no config has
            # any more, whose old times a nearest-shape lookup could pick).
            measured = set(execution_plan.measured(runtime, regime, litert_cpu=cpu))
            assert measured == keys, (name, regime, sorted(measured ^ keys)[:3])
    # The CPU runtimes cover every CIFAR and Tiny-ImageNet config.
    assert len(_config_shapes(costs["measured_on"][execution_plan.CPU_EIGEN]["configs"])) == len(
        CONFIG_SHAPES)


# Shapes no config has, which take the nearest measured shape's times: in 128 x 128 g = 19
# (blocks of 6 and 7 inputs) the nearest shape's fastest training form is `grouped+conv`,
# whose gradient that shape has and this one lacks.
OFF_TABLE_SHAPES = [
    execution_plan.LayerShape(in_channels=128, filters=128, kernel_size=1, strides=strides,
                              input_size=(9, 8), g=19, p=15)
    for strides in (1, 2)
]


def test_eigen_training_never_plans_a_grouped_convolution_without_gradient():
    for shape in CONFIG_SHAPES + OFF_TABLE_SHAPES:
        form = execution_plan.choose(shape, execution_plan.CPU_EIGEN, execution_plan.TRAIN)
        assert execution_plan.differentiable_on_eigen(shape, form.name), shape.key


def test_differentiable_on_eigen_names_the_grouped_convolutions():
    # 64 -> 64, g = 8, p = 4: eight inputs per block, so `grouped` is a grouped convolution,
    # and `gconv` groups four residues.
    shape = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 8, 4)
    differentiable = {name: execution_plan.differentiable_on_eigen(shape, name)
                      for name in execution_plan.candidates(shape)}
    assert [name for name, ok in differentiable.items() if not ok] == [
        "grouped+bmm", "grouped+conv", "grouped+gconv", "depthwise+gconv", "split+gconv"]
    # Square blocks of two run shifted (depthwise and gathers); 2 -> 4 per block grouped.
    square = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 32, None)
    assert execution_plan.differentiable_on_eigen(square, "shifted+bmm")
    wider = execution_plan.LayerShape(64, 128, 3, 1, (16, 16), 32, None)
    assert not execution_plan.differentiable_on_eigen(wider, "shifted+bmm")
    # One input per block runs depthwise; p = 1 is one group.
    one_per_block = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 64, 1)
    assert all(execution_plan.differentiable_on_eigen(one_per_block, name)
               for name in execution_plan.candidates(one_per_block))


def test_runs_in_asks_for_a_gradient_only_of_training_on_eigen():
    shape = execution_plan.LayerShape(64, 64, 3, 1, (16, 16), 8, 4)
    names = execution_plan.candidates(shape) + [execution_plan.DENSE_TWIN]
    for runtime in execution_plan.RUNTIMES:
        for regime in execution_plan.REGIMES:
            runs = [name for name in names
                    if execution_plan.runs_in(shape, name, runtime, regime)]
            if (runtime, regime) == (execution_plan.CPU_EIGEN, execution_plan.TRAIN):
                assert runs == ["dense", "depthwise+bmm", "depthwise+conv", "split+bmm",
                                "split+conv", execution_plan.DENSE_TWIN]
            else:
                assert runs == names, (runtime, regime)


def _planned_forms():
    """pytest params (shape, form name) for every structured form the plan picks at a config
    shape, any runtime and LiteRT CPU, with the input cut to at most 7 x 7 (the forms' code does
    not depend on the size beyond the stride's padding, which an odd size exercises) and one
    case per channel shape and form that runs. `dense` is the oracle itself, so it has no case.
    The fast tier keeps each form's case with the fewest weights; the slow tier, every other."""
    cases = {}
    for shape in CONFIG_SHAPES:
        small = dataclasses.replace(shape, input_size=tuple(min(s, 7) for s in shape.input_size))
        for runtime in execution_plan.RUNTIMES:
            for regime in execution_plan.REGIMES:
                for cpu in execution_plan.LITERT_CPUS:
                    form = execution_plan.choose(shape, runtime, regime, litert_cpu=cpu).name
                    if form == "dense":
                        continue
                    # Without a live 1 x 1 weight the 1 x 1 forms build nothing: one case.
                    runs = form if pattern_lib.SSCPattern(
                        shape.in_channels, shape.filters, shape.kernel_size, shape.g, shape.p
                    ).num_pointwise_kernels else form.split("+")[0]
                    cases.setdefault((small.key, runs), (small, form))
    smallest = {}
    for shape, form in sorted(cases.values(), key=lambda case: case[0].in_channels
                              * case[0].filters * case[0].kernel_size ** 2):
        smallest.setdefault(form, shape)
    return [pytest.param(shape, form, id=f"{shape.key}-{form}",
                         marks=() if smallest[form] == shape else pytest.mark.slow)
            for shape, form in cases.values()]


PLANNED = _planned_forms()


@pytest.mark.parametrize("shape,form", PLANNED)
def test_planned_form_matches_dense_at_every_config_shape(shape, form):
    in_shape = (1,) + tuple(shape.input_size) + (shape.in_channels,)
    keras.utils.set_random_seed(0)
    layers = same_weights(
        ("dense", form), shape.filters, in_shape, kernel_size=shape.kernel_size, g=shape.g,
        p=shape.p, strides=shape.strides, padding="same",
    )
    x = random_inputs(in_shape)
    upstream = random_inputs(layers["dense"].compute_output_shape(in_shape), seed=3)
    expected, expected_grads = outputs_and_gradients(layers["dense"], x, upstream)
    if not execution_plan.differentiable_on_eigen(shape, form) and not GROUPED_GRADIENTS:
        np.testing.assert_allclose(layers[form](x), expected, atol=ATOL, rtol=1e-4)
        return
    got, grads = outputs_and_gradients(layers[form], x, upstream)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=1e-4)
    for a, b in zip(grads, expected_grads):
        np.testing.assert_allclose(a, b, atol=ATOL * 10, rtol=1e-4)


def test_auto_layer_runs_the_planned_form_of_its_regime(monkeypatch):
    picked = []
    original = execution_plan.choose

    def choose(shape, runtime, regime, path, litert_cpu):
        assert path == execution_plan.COSTS_FILE  # no `cost_table` encloses the calls
        picked.append((runtime, regime, litert_cpu))
        return original(shape, runtime, regime, path, litert_cpu=litert_cpu)

    monkeypatch.setattr(execution_plan, "choose", choose)
    layer = SSCConv2D(64, 3, g=4, p=4, padding="same")
    layer(random_inputs((1, 16, 16, 64)))
    layer(random_inputs((16, 16, 16, 64)))
    layer(random_inputs((16, 16, 16, 64)), training=True)
    runtimes = {r for r, _, _ in picked}
    assert len(runtimes) == 1 and execution_plan.TFLITE not in runtimes
    assert {g for _, g, _ in picked} == set(execution_plan.REGIMES)
    del picked[:]
    for cpu in (None,) + execution_plan.LITERT_CPUS:
        with execution_plan.target_runtime(
                execution_plan.TFLITE, **({"litert_cpu": cpu} if cpu else {})):
            layer(random_inputs((1, 16, 16, 64)))
    # A layer that plans itself (not one of plan_model's forms: a nested model's) plans for
    # the LiteRT CPU the conversion names, by default the default one.
    assert picked == [(execution_plan.TFLITE, execution_plan.SMALL_BATCH, cpu)
                      for cpu in (execution_plan.DEFAULT_LITERT_CPU,)
                      + execution_plan.LITERT_CPUS]


def test_plan_model_spends_the_models_storage_budget_where_it_saves_most(tmp_path):
    # 64 -> 64, g = 4, p = 4: 9,984 live weights; grouped+bmm stores 10,240, grouped+conv
    # 13,312 (the masked 1 x 1 kernel), more than 1.25x alone. Two such layers may store
    # 24,960: one of them can run conv, not both.
    stored = {name: execution_plan.stored_weights(SHAPE, name)
              for name in ("grouped+bmm", "grouped+conv")}
    live = pattern_lib.SSCPattern(64, 64, 3, 4, 4).live_params
    assert (live, stored["grouped+bmm"], stored["grouped+conv"]) == (9984, 10240, 13312)
    path = _table(tmp_path, {SHAPE.key: {"dense": 1.0, "grouped+bmm": 0.5, "grouped+conv": 0.3}},
                  execution_plan.TFLITE, execution_plan.SMALL_BATCH)
    assert execution_plan.choose(SHAPE, execution_plan.TFLITE, execution_plan.SMALL_BATCH,
                                 path).name == "grouped+bmm"
    forms = execution_plan.plan_model([SHAPE, SHAPE], execution_plan.TFLITE, path)
    assert [f.name for f in forms] == ["grouped+conv", "grouped+bmm"]
    # Three layers have room for two upgrades; one layer alone for none.
    forms = execution_plan.plan_model([SHAPE] * 3, execution_plan.TFLITE, path)
    assert [f.name for f in forms] == ["grouped+conv", "grouped+conv", "grouped+bmm"]
    assert [f.name for f in execution_plan.plan_model([SHAPE], execution_plan.TFLITE, path)] == [
        "grouped+bmm"]
    total = sum(execution_plan.stored_weights(SHAPE, f.name) for f in forms)
    assert total <= execution_plan.TFLITE_MAX_STORED * 3 * live
    # A budget of 13,312 / 9,984 live weights lets one layer alone upgrade; none stops all.
    forms = execution_plan.plan_model([SHAPE], execution_plan.TFLITE, path, 13312 / 9984)
    assert [f.name for f in forms] == ["grouped+conv"]
    forms = execution_plan.plan_model([SHAPE] * 3, execution_plan.TFLITE, path, float("inf"))
    assert [f.name for f in forms] == ["grouped+conv"] * 3
    for bad in (1.0, float("nan"), "1.5", True):
        with pytest.raises(ValueError, match="`max_stored`: expected 'auto' or a number >= 1.25"):
            execution_plan.plan_model([SHAPE], execution_plan.TFLITE, path, bad)


def test_plan_model_prefers_the_larger_saving_per_stored_weight(tmp_path):
    # Room for one upgrade: the 72-channel layer's saves 0.3 ms for 3,888 more weights, the
    # 64-channel layer's 0.05 ms for 3,072.
    wider = execution_plan.LayerShape(72, 72, 3, 1, (16, 16), 4, 4)
    costs = {"shapes": {SHAPE.key: SHAPE.as_dict(), wider.key: wider.as_dict()},
             execution_plan.section(execution_plan.TFLITE): {execution_plan.SMALL_BATCH: {
                 SHAPE.key: {"grouped+bmm": 0.5, "grouped+conv": 0.45},
                 wider.key: {"grouped+bmm": 0.5, "grouped+conv": 0.2}}}}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(costs))
    forms = execution_plan.plan_model([SHAPE, wider], execution_plan.TFLITE, str(path))
    assert [f.name for f in forms] == ["grouped+bmm", "grouped+conv"]
    with pytest.raises(ValueError, match="`runtime`.*tflite"):
        execution_plan.plan_model([SHAPE], execution_plan.CPU_EIGEN, str(path))


@pytest.mark.parametrize("dense_twin_ms, planned", [
    (0.6, "grouped+bmm"),  # Within 1.25x the file is already faster than the dense twin.
    (0.48, "grouped+conv"),  # It stores 13,312 weights, 1.33x, to run no slower.
    (0.4, "dense"),  # No structured form is as fast: the dense kernel's 36,864.
])
def test_plan_model_auto_stores_more_only_to_run_no_slower_than_dense(
        tmp_path, dense_twin_ms, planned):
    times = {"conv2d": dense_twin_ms, "dense": 0.4, "grouped+bmm": 0.5, "grouped+conv": 0.45}
    path = _table(tmp_path, {SHAPE.key: times}, execution_plan.TFLITE,
                  execution_plan.SMALL_BATCH)
    auto = execution_plan.plan_model([SHAPE], execution_plan.TFLITE, path)
    assert auto == execution_plan.plan_model([SHAPE], execution_plan.TFLITE, path, "auto")
    assert [f.name for f in auto] == [planned]
    assert [f.name for f in execution_plan.plan_model(
        [SHAPE], execution_plan.TFLITE, path, 1.25)] == ["grouped+bmm"]


def test_target_runtime_forms_override_the_named_layers_plan():
    """A form that `target_runtime` names for a layer replaces its plan while tracing; other
    layers keep theirs, and the function stays the dense oracle's."""
    layers = same_weights(("dense", "auto"), 16, (1, 8, 8, 16), kernel_size=3, g=4, p=4,
                          padding="same")
    layer = layers["auto"]
    x = random_inputs((1, 8, 8, 16))
    forced = {layer.name: execution_plan.parse("depthwise+bmm")}
    ops = {}
    for name, forms in (("planned", None), ("forced", forced), ("other", {"other": forced})):
        with execution_plan.target_runtime(execution_plan.TFLITE, forms):
            traced = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape))
        ops[name] = sorted(op.type for op in traced.graph.get_operations())
        np.testing.assert_allclose(traced(x), layers["dense"](x), atol=ATOL, rtol=1e-4)
    assert {"DepthwiseConv2dNative", "BatchMatMulV2"} <= set(ops["forced"])
    assert ops["other"] == ops["planned"] != ops["forced"]
    assert execution_plan.form_override(layer.name) is None


def _guard_table(tmp_path):
    """A synthetic int8 table of three layer shapes on the default CPU: (path, shapes, forms)
    where the planned forms are predicted 0.5, 0.1 and 0.3 ms slower than dense."""
    shapes = [dataclasses.replace(SHAPE, filters=filters) for filters in (64, 32, 16)]
    times = {}
    for shape, excess in zip(shapes, (0.5, 0.1, 0.3)):
        times[shape.key] = {"conv2d": 1.0, "dense": 1.0, "grouped+bmm": 1.0 + excess}
    costs = {"shapes": {shape.key: shape.as_dict() for shape in shapes},
             execution_plan.section(execution_plan.TFLITE_INT8): {
                 execution_plan.SMALL_BATCH: times}}
    path = tmp_path / "guard.json"
    path.write_text(json.dumps(costs))
    return str(path), shapes, ["grouped+bmm"] * 3


def test_guard_order_moves_the_layers_predicted_to_cost_most_over_dense_first(tmp_path):
    path, shapes, forms = _guard_table(tmp_path)
    order = execution_plan.guard_order(shapes, forms, execution_plan.TFLITE_INT8, path)
    assert order == [0, 2, 1]
    # A layer already dense has nothing to move; one whose form has no time comes last.
    forms = ["dense", "grouped+conv", "grouped+bmm"]
    assert execution_plan.guard_order(shapes, forms, execution_plan.TFLITE_INT8, path) == [2, 1]


def _fake_timer(layer_ms, dense_layer_ms, rest_ms=1.0):
    """A `measure` whose file takes `rest_ms` plus each layer's ms in its form (dense:
    `dense_layer_ms`), and its dense twin `rest_ms` plus the dense ones; records each call."""
    calls = []

    def measure(forms):
        calls.append([form.name for form in forms])
        ms = rest_ms + sum(dense_layer_ms if form.dense else own
                           for form, own in zip(forms, layer_ms))
        return ms, rest_ms + dense_layer_ms * len(forms)

    return measure, calls


def test_guard_moves_the_fewest_layers_that_make_the_file_not_slower(tmp_path):
    path, shapes, forms = _guard_table(tmp_path)
    order = execution_plan.guard_order(shapes, forms, execution_plan.TFLITE_INT8, path)
    # On this machine layer 0 runs 0.9 ms over dense, layer 2 0.02 ms, layer 1 0.01 ms under
    # it: moving layer 0 alone brings the file within the tolerance of its dense twin.
    measure, calls = _fake_timer([1.9, 0.99, 1.02], 1.0)
    result = execution_plan.guard(forms, order, measure)
    assert [f.name for f in result.forms] == ["dense", "grouped+bmm", "grouped+bmm"]
    assert result.moved == [0]
    assert (result.ms, result.dense_ms) == pytest.approx((4.01, 4.0))
    assert result.speedup == pytest.approx(4.0 / 4.01)
    # The planned file, then the binary search over 1..3 moved layers: 1 (not slower) and done
    # once 0 (slower) and 1 bracket it.
    assert [m[0] for m in result.measurements] == [0, 1]
    assert result.measurements[0] == pytest.approx((0, 4.91, 4.0))
    assert calls[0] == forms


def test_guard_keeps_a_file_that_is_not_slower_and_falls_back_to_the_dense_twin(tmp_path):
    path, shapes, forms = _guard_table(tmp_path)
    order = execution_plan.guard_order(shapes, forms, execution_plan.TFLITE_INT8, path)
    measure, calls = _fake_timer([0.5, 0.5, 0.5], 1.0)
    kept = execution_plan.guard(forms, order, measure)
    assert ([f.name for f in kept.forms], kept.moved, len(calls)) == (forms, [], 1)
    assert kept.speedup == pytest.approx(4.0 / 2.5)
    # Every layer slower, so every file short of all-dense is: the dense twin, unmeasured
    # (measuring it again would only measure the noise), reported at the twin's last time.
    measure, calls = _fake_timer([3.0, 3.0, 3.0], 1.0)
    floor = execution_plan.guard(forms, order, measure)
    assert [f.name for f in floor.forms] == ["dense"] * 3
    assert floor.moved == [0, 2, 1]
    assert [m[0] for m in floor.measurements] == [0, 1, 2]
    assert floor.ms == floor.dense_ms == 4.0 and floor.speedup == 1.0
    assert ["dense"] * 3 not in calls
