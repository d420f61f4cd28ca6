"""What the benchmarks share: interleaved median timing, and the machine a timing ran on."""

import datetime
import os
import platform
import statistics
import sys
import time

import keras
import tensorflow as tf


def interleaved_median_ms(fns, repeats, *args, warmup=3):
    """Median milliseconds of each `fn(*args)` of `fns`, timed in turns so that drift (load,
    clock, thermals) hits all alike.

    Args:
        fns: dict of name -> callable, each called with `args`.
        repeats: int >= 1, timed calls of each.
        *args: the arguments of every call.
        warmup: untimed calls of each first (tracing, allocation).

    Returns:
        A dict of name -> median milliseconds per call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn(*args)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def environment():
    """When, and on what software and machine, a benchmark ran: a dict for its JSON."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # None: TensorFlow's default for the CPU (oneDNN only where it has AVX-512 VNNI or AMX).
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }
