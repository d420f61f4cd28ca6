"""Tests of ssc_tf.timing: interleaved calls, warm-up, the statistic, on a fake clock."""

import statistics

import pytest

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
    assert [name for name, _ in calls] == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert all(args == ("x",) for _, args in calls)
    assert ms == pytest.approx({"a": 2.0, "b": 20.0})


def test_statistic_min_reports_the_least_disturbed_call(monkeypatch):
    make, _ = _fake_clock(monkeypatch, {"a": [0.004, 0.001, 0.009]})
    ms = timing.interleaved_ms({"a": make("a")}, 3, warmup=0, statistic=min)
    assert ms == pytest.approx({"a": 1.0})
    make, _ = _fake_clock(monkeypatch, {"a": [0.004, 0.001, 0.009]})
    ms = timing.interleaved_ms({"a": make("a")}, 3, warmup=0, statistic=statistics.mean)
    assert ms == pytest.approx({"a": 14.0 / 3})


def test_environment_names_the_software_and_machine():
    env = timing.environment()
    assert set(env) == {"date", "tensorflow", "keras", "python", "machine", "cpu_count",
                        "cpu_features", "tf_enable_onednn_opts"}
    assert env["tensorflow"].count(".") >= 2 and env["cpu_count"] >= 1


def test_machine_names_the_architecture_and_its_vector_extensions():
    assert timing.machine({"machine": "x86_64", "cpu_features": ["avx2", "avx512f"]}) == (
        "x86_64 with avx2, avx512f")
    # Records from before cpu_features, and machines whose flags say none.
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
