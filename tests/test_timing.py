"""Tests of ssc_tf.timing: interleaved calls, warm-up, the statistic and the device sync, on a
fake clock; the machine record."""

import statistics

import pytest
import tensorflow as tf

from ssc_tf import timing


def _fake_clock(monkeypatch, durations):
    """Each callable advances a fake `perf_counter` by its next duration (seconds)."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    calls = []

    def make(name):
        def fn(*args):
            calls.append((name, args))
            now[0] += durations[name].pop(0)
        return fn

    return make, calls


def test_calls_are_interleaved_after_warmup_and_the_median_is_reported(monkeypatch):
    make, calls = _fake_clock(monkeypatch, {
        "a": [9.0, 0.001, 0.003, 0.002],  # the warm-up call (tracing) is not counted
        "b": [9.0, 0.010, 0.030, 0.020],
    })
    ms = timing.interleaved_ms({"a": make("a"), "b": make("b")}, 3, "x", warmup=1)
    # Warm-up, then rounds that each start one callable later: none is always first.
    assert [name for name, _ in calls] == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert all(args == ("x",) for _, args in calls)
    assert ms == pytest.approx({"a": 2.0, "b": 20.0})


def test_statistic_min_reports_the_least_disturbed_call(monkeypatch):
    make, _ = _fake_clock(monkeypatch, {"a": [0.004, 0.001, 0.009]})
    ms = timing.interleaved_ms({"a": make("a")}, 3, warmup=0, statistic=min)
    assert ms == pytest.approx({"a": 1.0})
    make, _ = _fake_clock(monkeypatch, {"a": [0.004, 0.001, 0.009]})
    ms = timing.interleaved_ms({"a": make("a")}, 3, warmup=0, statistic=statistics.mean)
    assert ms == pytest.approx({"a": 14.0 / 3})


def test_sync_runs_after_every_call_and_its_wait_is_timed(monkeypatch):
    # A GPU call returns once its kernels are queued (no time here); the sync waits for them
    # (5 ms after "a", 7 ms after "b"), and that wait is the call's time.
    make, calls = _fake_clock(monkeypatch, {
        "a": [0.0] * 3, "b": [0.0] * 3, "sync": [0.005, 0.007] * 2 + [0.007, 0.005]})
    ms = timing.interleaved_ms({"a": make("a"), "b": make("b")}, 2, warmup=1,
                               sync=make("sync"))
    assert [name for name, _ in calls] == (["a", "sync", "b", "sync"] * 2
                                           + ["b", "sync", "a", "sync"])
    assert ms == pytest.approx({"a": 5.0, "b": 7.0})


def test_environment_names_the_software_and_machine():
    env = timing.environment()
    assert set(env) == {"date", "tensorflow", "keras", "python", "machine", "cpu_count",
                        "cpu_features", "cpu_vendor", "cpu_family", "cpu_model_name",
                        "tf_enable_onednn_opts", "gpus", "tensor_float_32"}
    cpu = timing.cpu()
    assert (env["cpu_vendor"], env["cpu_family"]) == (cpu.vendor, cpu.family)
    assert env["tensorflow"].count(".") >= 2 and env["cpu_count"] >= 1
    # tests/conftest.py turns TensorFloat-32 off. One name per GPU, none on a CPU machine.
    assert env["tensor_float_32"] is False
    assert len(env["gpus"]) == len(tf.config.list_physical_devices("GPU"))
    assert all(isinstance(name, str) and name for name in env["gpus"])


def test_machine_names_the_architecture_and_its_vector_extensions():
    assert timing.machine({"machine": "x86_64", "cpu_features": ["avx2", "avx512f"]}) == (
        "x86_64 with avx2, avx512f")
    assert timing.machine({"machine": "x86_64", "cpu_features": ["avx2"],
                           "gpus": ["NVIDIA A100-SXM4-40GB"] * 2}) == (
        "x86_64 with avx2; NVIDIA A100-SXM4-40GB, NVIDIA A100-SXM4-40GB")
    # Records from before cpu_features and gpus, and machines whose flags say none.
    assert timing.machine({"machine": "aarch64"}) == "aarch64"
    assert timing.machine({"machine": "x86_64", "cpu_features": []}) == "x86_64"


def test_cpu_features_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\n"
                       "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert timing.cpu_features(str(cpuinfo)) == ["avx2", "avx512f", "avx512_vnni"]
    cpuinfo.write_text("processor\t: 0\n")
    assert timing.cpu_features(str(cpuinfo)) == []
    assert timing.cpu_features(str(tmp_path / "missing")) is None


# The first processor's lines of /proc/cpuinfo on three machines (flags shortened).
INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 7
"""
AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize("text, expected", [
    (INTEL_CPUINFO, timing.Cpu("intel", "6", "Intel(R) Xeon(R) Processor",
                               ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                                "amx_tile"))),
    (AMD_CPUINFO, timing.Cpu("amd", "25", "AMD EPYC 9R14 96-Core Processor",
                             ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"))),
    (ARM_CPUINFO, timing.Cpu("arm_0x41", "0xd0c", "", ("asimddp",))),
    ("vendor_id\t: HygonGenuine\ncpu family\t: 24\n", timing.Cpu("hygongenuine", "24", "", ())),
    ("processor\t: 0\n", timing.Cpu("", "", "", ())),
], ids=["intel", "amd", "arm", "other_x86", "empty"])
def test_cpu_reads_vendor_family_and_features_of_the_first_processor(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert timing.cpu(str(cpuinfo)) == expected
    assert timing.cpu_features(str(cpuinfo)) == list(expected.features)


def test_cpu_of_a_machine_without_cpuinfo_is_none(tmp_path):
    assert timing.cpu(str(tmp_path / "missing")) is None
