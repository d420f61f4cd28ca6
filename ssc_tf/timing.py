"""Timing of callables for the benchmarks and the comparison runner, and the machine it ran on.

TensorFlow is imported only by `environment()`: `ssc_tf.compare` imports this module for its
dry run too, which starts no TensorFlow.
"""

import datetime
import os
import platform
import statistics
import sys
import time


def interleaved_ms(fns, repeats, *args, warmup=3, statistic=statistics.median, sync=None):
    """Milliseconds per call of each `fn(*args)` of `fns`, timed in turns so that drift (load,
    clock, thermals) hits all alike.

    Args:
        fns: dict of name -> callable, each called with `args`.
        repeats: int >= 1, timed calls of each.
        *args: the arguments of every call.
        warmup: untimed calls of each first (tracing, allocation).
        statistic: what to report of each callable's `repeats` times: the median (default),
            or e.g. `min` (the call least disturbed by other work on the machine).
        sync: None (default), or a callable, such as `tf.test.experimental.sync_devices`,
            that returns once the devices have done the work queued on them, called after
            every call and timed with it. A TensorFlow call on a GPU returns once its kernels
            are queued, so without it a GPU time is the launch's alone. On a CPU, TensorFlow
            returns finished results: leave it None, which adds nothing to the times.

    Returns:
        A dict of name -> milliseconds per call.
    """
    def call(fn):
        fn(*args)
        if sync is not None:
            sync()

    for fn in fns.values():
        for _ in range(warmup):
            call(fn)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            call(fn)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistic(t) for name, t in times.items()}


# The CPU's vector extensions that select TensorFlow's and XNNPACK's kernels (and whether TF
# turns oneDNN on by default): times measured with and without them are not comparable.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def cpu_features(cpuinfo="/proc/cpuinfo"):
    """The `CPU_FEATURES` this CPU has, in that order, from Linux's `cpuinfo` flags; None
    where that file cannot be read (another OS)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith(("flags", "Features"))), [])
    except OSError:
        return None
    return [feature for feature in CPU_FEATURES if feature in flags]


def machine(env):
    """The machine of an `environment()` record in words: its architecture and vector
    extensions, which decide TF's CPU kernels and XNNPACK's, and its GPUs ("x86_64 with
    avx2, avx512f; NVIDIA A100-SXM4-40GB")."""
    features = env.get("cpu_features")
    gpus = env.get("gpus")
    return (env["machine"] + (f" with {', '.join(features)}" if features else "")
            + (f"; {', '.join(gpus)}" if gpus else ""))


def environment():
    """When, and on what software and machine, a timing ran: a dict for its JSON."""
    import keras
    import tensorflow as tf

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(),
        # None: TensorFlow's default for the CPU (oneDNN only where it has AVX-512 VNNI or AMX).
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        # The GPUs TensorFlow sees, by model, and whether their float32 products and
        # convolutions may round to TensorFloat-32 (TF's default, on Ampere and later).
        "gpus": [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in tf.config.list_physical_devices("GPU")],
        "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
    }
