"""Exports a trained run for TF-Serving.

    python -m ssc_tf.export --model_dir=DIR --export_dir=serving/NAME

Writes the newest checkpoint of DIR as a SavedModel at `serving/NAME/<version>/`, the layout
TF-Serving watches: it serves the highest integer version and picks up new ones as they
appear. Signatures (see `ssc_tf.serving`): `serving_default` takes uint8 images of the
training size, `predict_image_bytes` encoded JPEG/PNG files; both preprocess in the graph and
return `probabilities` and the top-k `classes`.

Also written:

- `serving/NAME/<version>/assets.extra/ssc_tf_export.json`: the run's config, its epoch and
  the export settings. A later export into `serving/NAME` must be the same network (new
  weights are new versions; a different network needs its own NAME).
- `serving/models.config`: the model server's config, one entry per exported model under
  `serving/`, with base paths as the server sees them (`--serving_base_path`, `/models` by
  default, where the README's `docker run` mounts `serving/`). A models.config that this
  tool did not write is left alone.

Each SSC layer is traced in the forms the execution plan measured fastest on the TensorFlow
runtime that will serve it (`--runtime`: `cpu_onednn`, `cpu_eigen` or `gpu`; by default this
machine's), one for small batches and one for large ones, behind a `tf.cond` on the batch
size where they differ (`ssc_tf.serving_plan`, docs/execution_plan.md): the forms are fixed in
the graph. For this machine's runtime, on a CPU the package has no times of, the model's layer
shapes are measured here first (`--tune`, `ssc_tf.tuning`, cached in ~/.cache/ssc_tf); then
each batch's graph is timed against its dense twin, layers moving to the dense form until it
is not slower, and the batch up to which the small one serves is measured (`--guard`).

A version is written under a temporary name and renamed when complete, so a crash never
leaves a half-written version for the server, and no existing version is ever replaced.
"""

import dataclasses
import json
import logging
import os
import shutil
import sys

from absl import app
from absl import flags
import tensorflow as tf

from ssc_tf import arguments
from ssc_tf import execution_plan
from ssc_tf import flagfile
from ssc_tf import layers
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import serving
from ssc_tf import serving_plan
from ssc_tf.config import ExperimentConfig
from ssc_tf.models import masked
from ssc_tf.models import report

EXPORT_INFO = os.path.join("assets.extra", "ssc_tf_export.json")
MODELS_CONFIG = "models.config"
_MODELS_CONFIG_HEADER = (
    "# Written by `python -m ssc_tf.export`, anew on every export into this directory.\n"
    "# Serve with: tensorflow_model_server --model_config_file=<this file>\n"
)


def versions(export_dir):
    """The integer versions under `export_dir`, ascending (none if it does not exist)."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(export_dir))
    return sorted(
        int(name) for name in names
        if name.isdigit() and tf.io.gfile.isdir(os.path.join(export_dir, name))
    )


def read_export_info(version_dir):
    """The `ssc_tf_export.json` of an exported version, or None if it has none."""
    path = os.path.join(version_dir, EXPORT_INFO)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def export(model_dir, export_dir, *, version=None, top_k=5, serving_base_path="/models",
           runtime=None, tune=True, guard=True, timer=None):
    """Exports the newest checkpoint of `model_dir` as a new version under `export_dir`.

    Args:
        model_dir: str, a directory written by `ssc_tf.train`.
        export_dir: str, the model's directory for TF-Serving (its base path); its last
            component is the model's name in `models.config`.
        version: int >= 1 or None: the version to write; None takes the next free one (1
            for a new `export_dir`). An existing version is never replaced.
        top_k: int in [1, num_classes], how many classes the `classes` output lists.
            Defaults to 5.
        serving_base_path: str, where the model server sees the parent of `export_dir`
            (the `-v` target of `docker run`), for `models.config`. Defaults to "/models".
        runtime: one of `execution_plan.TF_RUNTIMES`, the TensorFlow runtime that will serve
            the SavedModel, whose measured times choose each SSC layer's form; None (the
            default) takes this process's (`ssc_tf.layers.current_runtime`).
        tune: bool, for this process's runtime where the package has no times of it measured
            on this kind of CPU (`ssc_tf.tuning.fits_host`): time the model's layer shapes
            here at batch 1 and 128 first (`ssc_tf.tuning.tune`, cached per CPU model and
            library versions) and plan with those times. Defaults to True.
        guard: bool, for this process's runtime: time the graph of each batch regime (at
            batch 1 and 128) against its dense twin, and move layers to the dense form until
            it is not slower (`ssc_tf.serving_plan`). Defaults to True.
        timer: the guard's timer (`ssc_tf.serving_plan.plan`'s); default
            `ssc_tf.serving_plan.tf_ms`.

    Returns:
        A dict: `path` (the version directory), `version`, `name`, `models_config` (its
        path, or None when an existing models.config was not ours and was left alone),
        `bytes` (the whole SavedModel), `variables_bytes` (its variables),
        `live_params`, `dense_params`, `epoch`, `runtime`, `tuning` (how this machine's
        times were measured, `ssc_tf.tuning.Tuning` as a dict, or None where the package's
        planned), `forms` ({regime: {layer: form name}}), `small_batch_max` (the largest
        batch that runs the small-batch forms) and `guard` (what was timed and moved,
        `ssc_tf.serving_plan.ServingPlan.guard`; None where nothing was).

    Raises:
        FileNotFoundError: `model_dir` holds no run or no checkpoint.
        ValueError: a bad argument; `export_dir` holds another network or SavedModels not
            written by this tool; `version` exists. Nothing is written then.
    """
    name = os.path.basename(os.path.normpath(export_dir))
    if not name or name in (".", ".."):
        raise arguments.invalid(
            "export_dir", "a directory named after the model, e.g. serving/cifar10_resnet32",
            repr(export_dir))
    if version is not None:
        arguments.check_int("version", version, minimum=1)
    if runtime is None:
        runtime = layers.current_runtime()
    arguments.check_choice("runtime", runtime, execution_plan.TF_RUNTIMES)
    arguments.check_bool("tune", tune)
    arguments.check_bool("guard", guard)
    model, config, _, epoch = model_dir_lib.load_model(model_dir)
    existing = versions(export_dir)
    _check_same_model(export_dir, existing, config)
    if version is None:
        version = existing[-1] + 1 if existing else 1
    elif version in existing:
        spelled = arguments.spelled("version")
        raise ValueError(
            f"Invalid value for {arguments.kind()} {spelled}: {export_dir}/{version} exists and "
            f"is never replaced. Leave {spelled} out to write the next free one, "
            f"{existing[-1] + 1}."
        )

    path = os.path.join(export_dir, str(version))
    tmp = os.path.join(export_dir, f".tmp-{version}")
    if tf.io.gfile.exists(tmp):  # left by a crashed export
        tf.io.gfile.rmtree(tmp)
    stats = report.model_stats(model)  # before baking: a mask's ones are the live weights
    # A pruned run's mask is baked into plain kernels: the SavedModel holds no mask.
    model = masked.bake(model)
    planned = serving_plan.plan(model, runtime, tune=tune, guard=guard, timer=timer)
    try:
        # The SSC layers' forms are fixed while the signatures are traced.
        with execution_plan.target_runtime(runtime):
            serving.ServingModel(model, config.dataset, top_k=top_k,
                                 batch_forms=planned.forms,
                                 small_batch_max=planned.small_batch_max).save(tmp)
        info = {
            "config": dataclasses.asdict(config),
            "epoch": epoch,
            "model_dir": os.path.abspath(model_dir),
            "top_k": top_k,
            "runtime": runtime,
            "tuned": planned.tuning is not None,
            "forms": planned.form_names(),
            "small_batch_max": planned.small_batch_max,
            "guard": planned.guard,
            "signatures": [serving.SERVING_DEFAULT, serving.PREDICT_IMAGE_BYTES],
        }
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(tmp, EXPORT_INFO)))
        model_dir_lib.write_json(os.path.join(tmp, EXPORT_INFO), info)
        tf.io.gfile.rename(tmp, path)
    finally:
        if tf.io.gfile.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)

    return {
        "path": path,
        "version": version,
        "name": name,
        "models_config": write_models_config(
            os.path.dirname(os.path.normpath(export_dir)) or ".", serving_base_path),
        "bytes": saved_bytes(path),
        "variables_bytes": saved_bytes(os.path.join(path, "variables")),
        "live_params": stats.live_params,
        "dense_params": stats.dense_params,
        "epoch": epoch,
        "runtime": runtime,
        "tuning": dataclasses.asdict(planned.tuning) if planned.tuning else None,
        "forms": planned.form_names(),
        "small_batch_max": planned.small_batch_max,
        "guard": planned.guard,
    }


def _check_same_model(export_dir, existing, config):
    """Raises `ValueError` unless every version in `existing` is this network's export."""
    spelled = arguments.spelled("export_dir")
    for version in existing:
        info = read_export_info(os.path.join(export_dir, str(version)))
        if info is None:
            raise ValueError(
                f"{spelled}={export_dir!r} holds version {version}, which ssc_tf.export did "
                f"not write (no {EXPORT_INFO}): export into a directory of its own."
            )
        differing = model_dir_lib.model_differences(ExperimentConfig(**info["config"]), config)
        if differing:
            raise ValueError(
                f"{spelled}={export_dir!r} holds a different model (version {version}: "
                f"{'; '.join(differing)}). Each model needs its own {spelled}; new "
                "versions there must be the same network."
            )


def write_models_config(serving_dir, serving_base_path="/models"):
    """Writes `serving_dir/models.config` for every ssc_tf export under `serving_dir`.

    Args:
        serving_dir: str, the directory that holds one directory per exported model.
        serving_base_path: str, where the model server sees `serving_dir`.

    Returns:
        The path written, or None if a models.config exists that this tool did not write
        (it is left unchanged).
    """
    path = os.path.join(serving_dir, MODELS_CONFIG)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            if not f.read().startswith(_MODELS_CONFIG_HEADER):
                return None
    names = sorted(
        name.rstrip("/") for name in tf.io.gfile.listdir(serving_dir)
        if any(
            read_export_info(os.path.join(serving_dir, name.rstrip("/"), str(version)))
            for version in versions(os.path.join(serving_dir, name.rstrip("/")))
        )
    )
    entries = "".join(
        "  config {\n"
        f"    name: {json.dumps(name)}\n"
        f"    base_path: {json.dumps(serving_base_path.rstrip('/') + '/' + name)}\n"
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names
    )
    model_dir_lib.write_atomically(
        path, f"{_MODELS_CONFIG_HEADER}model_config_list {{\n{entries}}}\n")
    return path


def saved_bytes(directory):
    """The bytes of every file under `directory` (a SavedModel, or its variables)."""
    return sum(
        tf.io.gfile.stat(os.path.join(root, name)).length
        for root, _, files in tf.io.gfile.walk(directory)
        for name in files
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    # SavedModel saving logs every step at INFO.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    for name, what in (("model_dir", "the directory of a training run"),
                       ("export_dir", "where the model's versions go, e.g. serving/NAME")):
        if not FLAGS[name].value:
            raise app.UsageError(f"Flag --{name} is required: {what}.")
    try:
        with arguments.as_flags():
            result = export(
                FLAGS.model_dir, FLAGS.export_dir, version=FLAGS.version, top_k=FLAGS.top_k,
                serving_base_path=FLAGS.serving_base_path, runtime=FLAGS.runtime,
                tune=FLAGS.tune, guard=FLAGS.guard)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"Error: {e}")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"Wrote {result['path']} (signatures {serving.SERVING_DEFAULT}, "
          f"{serving.PREDICT_IMAGE_BYTES}).")
    print(format_guard(result, FLAGS.guard))
    if result["models_config"] is None:
        serving_dir = os.path.dirname(os.path.normpath(FLAGS.export_dir)) or "."
        print(f"Left {os.path.join(serving_dir, MODELS_CONFIG)} unchanged (not written by "
              f"ssc_tf.export): add model {result['name']!r} to it.")


def format_guard(result, guard_flag):
    """What was timed and chosen for `export`'s `result` with `guard=guard_flag`, one line
    each, as the CLI prints it."""
    guard = result["guard"]
    if guard is None:
        why = ("off (--noguard)" if not guard_flag else
               "not run: planned for another runtime than this process's (--runtime), or no "
               "SSC layer to plan")
        return f"Guard: {why}."
    lines = []
    for regime in serving_plan.REGIMES:
        facts = guard[regime] or {"plans_ms": None}
        line = f"Guard at batch {serving_plan.BATCH_SIZES[regime]}: "
        if facts["plans_ms"]:
            line += ("plans with the package's times {package:.3f} ms, with this machine's "
                     "{tuned:.3f} ms; ").format(**facts["plans_ms"])
        lines.append(line + (execution_plan.describe_guard(facts, "planned graph")
                             if "planned_ms" in facts else "every SSC layer is planned dense"))
    if guard["switch"]:
        timed = ", ".join(f"{t['batch']}: {t['small']:.2f} against {t['large']:.2f} ms"
                          for t in guard["switch"])
        most = result["small_batch_max"]
        served = (f"Batches of up to {most} image{'s' if most > 1 else ''} run the "
                  "small-batch graph" if most else
                  "Every batch runs the large-batch graph")
        lines.append(f"{served} (timed against each other at {timed}).")
    return "\n".join(lines)


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    flags.DEFINE_string(
        "model_dir", None, "Directory of a training run (ssc_tf.train --model_dir).")
    flags.DEFINE_string(
        "export_dir", None,
        "The model's TF-Serving directory, e.g. serving/cifar10_resnet32: versions go in "
        "integer subdirectories, and its name is the model's name on the server.")
    flags.DEFINE_integer(
        "version", None, "Version to write (never replaced); default: the next free one.",
        lower_bound=1)
    flags.DEFINE_integer(
        "top_k", 5, "How many classes the `classes` output lists, most probable first.",
        lower_bound=1)
    flags.DEFINE_string(
        "serving_base_path", "/models",
        "Where the model server sees the parent of --export_dir (docker run -v ...:/models), "
        "for the base paths in models.config.")
    flags.DEFINE_enum(
        "runtime", None, list(execution_plan.TF_RUNTIMES),
        "The TensorFlow runtime that will serve the SavedModel, whose measured times choose "
        "each SSC layer's form: cpu_onednn (TF's CPU kernels with oneDNN, on by default on "
        "CPUs with AVX-512 VNNI, BF16 or AMX), cpu_eigen (without it) or gpu; default: this "
        "machine's.")
    flags.DEFINE_bool(
        "tune", True,
        "For this machine's runtime on a CPU the package has no times of (its TensorFlow "
        "tables were measured on AMD EPYC CPUs): first time the model's own SSC layer shapes "
        "in each form here at batch 1 and 128, cached in ~/.cache/ssc_tf ($XDG_CACHE_HOME) "
        "per CPU model and library versions, and plan with those times. --notune plans with "
        "the package's.")
    flags.DEFINE_bool(
        "guard", True,
        "For this machine's runtime, time the served graphs whole (about 10 s for "
        "ResNet-32): at batch 1 and at 128, this machine's tuned plan against the package's "
        "where they differ (the faster kept), then against its dense twin (every SSC layer "
        "as one dense convolution, the same function), moving SSC layers to the dense form, "
        "those predicted to cost most first, until it is not slower; then the two graphs "
        "against each other at 1, 2, 4 and 8 images, for up to which batch the small-batch "
        "one serves. --noguard keeps the plans untimed (small-batch forms up to 8 images).")


def run():
    """The `python -m ssc_tf.export` and `ssc-export` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
