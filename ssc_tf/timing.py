"""Timing of callables for the benchmarks and the comparison runner, and the machine it ran on.

TensorFlow is imported only by `environment()`: `ssc_tf.compare` imports this module for its
dry run too, which starts no TensorFlow.
"""

import dataclasses
import datetime
import os
import platform
import statistics
import sys
import time


def interleaved_ms(fns, repeats, *args, warmup=3, statistic=statistics.median, sync=None):
    """Milliseconds per call of each `fn(*args)` of `fns`, timed in turns so that drift (load,
    clock, thermals) hits all alike, each round starting with the next callable so that none
    is always called first.

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
    names = list(fns)
    for i in range(repeats):
        # Each round starts one callable later: the first call of a round ran 5-8 % slower
        # than the same SavedModel called second (2-core Intel Xeon, batch 1), a bias that a
        # fixed order would give one callable alone.
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            call(fns[name])
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistic(t) for name, t in times.items()}


# The CPU's vector extensions that select TensorFlow's and XNNPACK's kernels (and whether TF
# turns oneDNN on by default): times measured with and without them are not comparable. ARM's
# int8 dot products (`asimddp`) and matrix products (`i8mm`) play VNNI's and AMX's part there.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                "asimddp", "i8mm")
# Short names of the x86 vendors in `cpuinfo`'s `vendor_id`: one extension runs at another
# speed on each vendor's cores (the same int8 file ran 1.28x its dense twin on an AMD EPYC
# with AVX-512 VNNI and 0.37x on an Intel Xeon with it, docs/execution_plan.md).
CPU_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}


@dataclasses.dataclass(frozen=True)
class Cpu:
    """What decides how fast a CPU runs a kernel, as Linux's `cpuinfo` names it.

    Attributes:
        vendor: "intel" or "amd" (`CPU_VENDORS`), another x86 `vendor_id` in lower case, or
            for ARM "arm_" and the `CPU implementer` code ("arm_0x41": Arm's own cores).
        family: the x86 `cpu family` ("25": AMD's Zen 3 and 4) or the ARM `CPU part`
            ("0xd0c": Neoverse N1); "" where `cpuinfo` gives none.
        model_name: the x86 `model name` ("Intel(R) Xeon(R) Processor"), else "".
        features: the `CPU_FEATURES` it has, in that order.
    """

    vendor: str
    family: str
    model_name: str
    features: tuple


def cpu(cpuinfo="/proc/cpuinfo"):
    """This CPU as a `Cpu`, from Linux's `cpuinfo` (its first processor); None where that
    file cannot be read (another OS)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            fields = {}
            for line in f:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        return None
    if "vendor_id" in fields:
        vendor = CPU_VENDORS.get(fields["vendor_id"], fields["vendor_id"].lower())
        family = fields.get("cpu family", "")
    elif "CPU implementer" in fields:
        vendor, family = f"arm_{fields['CPU implementer']}", fields.get("CPU part", "")
    else:
        vendor, family = "", ""
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return Cpu(vendor, family, fields.get("model name", ""),
               tuple(feature for feature in CPU_FEATURES if feature in flags))


def cpu_features(cpuinfo="/proc/cpuinfo"):
    """The `CPU_FEATURES` this CPU has, in that order, from Linux's `cpuinfo` flags; None
    where that file cannot be read (another OS)."""
    info = cpu(cpuinfo)
    return None if info is None else list(info.features)


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

    info = cpu()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_features": None if info is None else list(info.features),
        # Who made the CPU and which family it is: with its features, the CPU's kind
        # (`ssc_tf.execution_plan.cpu_kind`), of which a LiteRT cost table holds times.
        **{f"cpu_{name}": None if info is None else getattr(info, name)
           for name in ("vendor", "family", "model_name")},
        # None: TensorFlow's default for the CPU (oneDNN only where it has AVX-512 VNNI or AMX).
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        # The GPUs TensorFlow sees, by model, and whether their float32 products and
        # convolutions may round to TensorFloat-32 (TF's default, on Ampere and later).
        "gpus": [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in tf.config.list_physical_devices("GPU")],
        "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
    }
