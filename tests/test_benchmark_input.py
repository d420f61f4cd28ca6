"""Tests of tools/benchmark_input.py, run once at a tiny size: the variants it times and what
it writes of each, never how fast anything ran."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "benchmark_input.py")


def test_times_every_variant_of_both_inputs_and_writes_their_batches(tmp_path):
    output = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, TOOL, "--cifar_examples=24", "--imagenet_examples=6", "--batch_size=3",
         "--epochs=1", f"--output={output}"],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert (report["batch_size"], report["epochs"]) == (3, 1)
    assert report["cpu_count"] == os.cpu_count() and "tensorflow" in report
    variants = [(r["input"], r["deterministic"], r["normalize_on"]) for r in report["rows"]]
    assert variants == [(name, in_order, where) for name in ("cifar", "imagenet")
                        for in_order in (True, False) for where in ("host", "device")]
    pixels = {"cifar": 32 * 32 * 3, "imagenet": 224 * 224 * 3}
    for row in report["rows"]:
        assert row["dataset"] == {"cifar": "cifar10", "imagenet": "imagenet2012"}[row["input"]]
        assert row["examples"] == {"cifar": 24, "imagenet": 6}[row["input"]]
        # Host batches are normalized float32; device ones travel as uint8, a quarter.
        dtype, size = ("float32", 4) if row["normalize_on"] == "host" else ("uint8", 1)
        assert row["batch_dtype"] == dtype
        assert row["batch_bytes"] == 3 * pixels[row["input"]] * size
        assert row["images_per_s"] > 0
    assert result.stdout.count("\ncifar ") == 4 and result.stdout.count("\nimagenet ") == 4
