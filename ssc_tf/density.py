r"""Density report: per-layer live / dense weights and MACs of an experiment's model.

    python -m ssc_tf.density --flagfile=cifar100_resnet32_5pct
    ssc-density --flagfile=cifar100_resnet32_5pct --json
    ssc-density --all            # markdown table over every packaged config

Counts are exact, from each layer's pattern: weights only (no bias, no batch norm); totals cover
every convolution and the classifier. The kept fraction is printed as measured next to the
paper's ticket label, never rounded to it. It and the MACs are read against the dense twin: the
model's own dense counts, or for `--sparsity=narrow` (a dense network of narrower layers) the
full-width twin's.
"""

import glob
import json
import os

from absl import flags

from ssc_tf import experiment_flags
from ssc_tf import flagfile
from ssc_tf.pruning import budget

FLAGS = flags.FLAGS


def _stats(config):
    from ssc_tf import models
    from ssc_tf.models.report import model_stats

    return model_stats(models.build(config.model, **config.model_kwargs()))


def _twin(config, stats):
    """(weights, MACs) of the dense twin that `config`'s kept fraction and MACs are read
    against: the model's own dense counts, or the full-width twin's for a narrow network."""
    if not config.narrow:
        return stats.dense_params, stats.dense_macs
    twin = budget.dense_counts(config)
    return twin.dense_params, twin.dense_macs


def _label(config):
    return "dense" if config.dense else f"{config.ticket:g} %"


def _gp(value):
    return "-" if value is None else str(value)


def layer_table(config, stats):
    lines = [
        f"{config.dataset} {config.model}: paper's ticket {_label(config)}",
        f"{'layer':<26} {'in':>5} {'out':>5} {'k':>3} {'g':>4} {'p':>4} "
        f"{'live':>10} {'dense':>10} {'kept':>8} {'MACs':>14}",
    ]
    for c in stats.layers:
        lines.append(
            f"{c.name:<26} {c.in_channels:>5} {c.out_channels:>5} {c.kernel_size[0]:>3} "
            f"{_gp(c.g):>4} {_gp(c.p):>4} {c.live_params:>10,} {c.dense_params:>10,} "
            f"{100 * c.live_params / c.dense_params:>7.2f}% {c.macs:>14,}"
        )
    lines.append(
        f"{'total (convs + classifier)':<51} {stats.live_params:>10,} {stats.dense_params:>10,} "
        f"{100 * stats.kept_fraction:>7.2f}% {stats.macs:>14,}"
    )
    twin_params, twin_macs = _twin(config, stats)
    lines.append(
        f"kept fraction {100 * stats.live_params / twin_params:.2f} % of the dense twin's "
        f"{twin_params:,} (paper's label: {_label(config)}); MACs "
        f"{stats.macs / twin_macs:.4f} of dense ({twin_macs:,})"
    )
    return "\n".join(lines)


def report_json(config, stats):
    twin_params, twin_macs = _twin(config, stats)
    return {
        "dataset": config.dataset,
        "model": config.model,
        "ticket": config.ticket,
        "layers": [
            {
                "name": c.name,
                "in_channels": c.in_channels,
                "out_channels": c.out_channels,
                "kernel_size": list(c.kernel_size),
                "strides": list(c.strides),
                "g": c.g,
                "p": c.p,
                "live_params": c.live_params,
                "dense_params": c.dense_params,
                "macs": c.macs,
            }
            for c in stats.layers
        ],
        "live_params": stats.live_params,
        "dense_params": stats.dense_params,
        "kept_fraction": stats.live_params / twin_params,
        "macs": stats.macs,
        "dense_macs": stats.dense_macs,
        "dense_twin_params": twin_params,
        "dense_twin_macs": twin_macs,
    }


def all_table(paths):
    lines = [
        "| config | model | g | p | paper's ticket | kept (exact) | live params | MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        config = flagfile.load(path)
        stats = _stats(config)
        g = "dense" if config.dense else ", ".join(_gp(v) for v in config.g)
        p = "dense" if config.dense else ", ".join(_gp(v) for v in config.p)
        if config.p_1x1:
            p += " (1x1: " + ", ".join(_gp(v) for v in config.p_1x1) + ")"
        lines.append(
            f"| {os.path.basename(path)} | {config.model} | {g} | {p} | {_label(config)} | "
            f"{100 * stats.live_params / _twin(config, stats)[0]:.2f} % | {stats.live_params:,} | "
            f"{stats.macs / 1e6:,.1f} M |"
        )
    return "\n".join(lines)


def main(argv):
    try:
        _run(argv)
    except (ValueError, FileNotFoundError) as error:
        # One line on stderr and exit status 1, not a traceback or absl's usage dump.
        raise SystemExit(f"Error: {error}") from None


def _run(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.all:
        paths = sorted(glob.glob(os.path.join(FLAGS.configs_dir, "*.cfg")))
        if not paths:
            raise ValueError(f"Invalid value for flag --configs_dir: --all found no *.cfg in "
                             f"{FLAGS.configs_dir!r}.")
        print(all_table(paths))
        return
    if FLAGS.dataset is None and FLAGS.model is None:
        raise ValueError("Pass --flagfile=<config name or file> (or flags), or --all.")
    config = experiment_flags.config_from_flags(FLAGS)
    stats = _stats(config)
    if FLAGS.json:
        print(json.dumps(report_json(config, stats), indent=2))
    else:
        print(layer_table(config, stats))


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    experiment_flags.define_flags()
    flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
    flags.DEFINE_bool("all", False, "Print a markdown table over every config in --configs_dir.")
    flags.DEFINE_string("configs_dir", flagfile.CONFIGS_DIR,
                        "Where --all looks for *.cfg flagfiles; default: the packaged configs.")


def run():
    """The `python -m ssc_tf.density` and `ssc-density` command line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
