"""Experiment flagfiles: the configs shipped with the package, and reading one into a config.

Each experiment of the paper is one flagfile in `ssc_tf/configs/` (installed with the
package; `names()` lists them). Wherever a flagfile is taken, a config's name stands for its
file: `--flagfile=cifar100_resnet32_5pct` reads `ssc_tf/configs/cifar100_resnet32_5pct.cfg`
(a file of that name in the working directory comes first), and any other value is a path.

- `load(name_or_path)` reads one flagfile into an `ExperimentConfig` without touching the
  global `FLAGS` (tools and tests).
- `parse_flags(argv)` is absl's parser with the names resolved; the CLIs pass it to
  `absl.app.run` (`run_app`).

Example:

>>> load("cifar10_resnet32_10pct").p
(2, 4, 4)
"""

import difflib
import os
import sys

from absl import app
from absl import flags

from ssc_tf import experiment_flags

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
SUFFIX = ".cfg"


def names():
    """The names of the packaged configs, sorted."""
    return sorted(
        name[: -len(SUFFIX)] for name in os.listdir(CONFIGS_DIR) if name.endswith(SUFFIX)
    )


def resolve(name_or_path):
    """The file a `--flagfile` value stands for.

    Args:
        name_or_path: str or path-like: an existing file, or the name of a packaged config
            (with or without `.cfg`).

    Returns:
        The path of the flagfile.

    Raises:
        FileNotFoundError: it is neither a file nor a config's name; the message lists the
            names.
    """
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    name = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    packaged = os.path.join(CONFIGS_DIR, name + SUFFIX)
    if os.path.dirname(path) in ("", "configs") and os.path.isfile(packaged):
        return packaged
    close = difflib.get_close_matches(name, names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(
        f"Flagfile not found: {path!r} is neither a file nor the name of a packaged config.{hint}"
        f" Configs: {', '.join(names())}."
    )


def load(name_or_path):
    """Reads one experiment flagfile into a config, leaving the global `FLAGS` alone.

    The file holds one `--name=value` per line (`--name` or `--noname` for booleans), blank
    lines and `#` comments. Each name may appear once.

    Args:
        name_or_path: str or path-like, the flagfile or a packaged config's name.

    Returns:
        An `ExperimentConfig`.

    Raises:
        FileNotFoundError: there is no such file or config.
        ValueError: a line is not a flag, names an unknown flag or repeats one, a value does
            not parse, or the config is invalid; the message names the file and the flag.
    """
    path = resolve(name_or_path)
    flag_values = experiment_flags.define_flags(flags.FlagValues())
    known = sorted(flag_values)
    flag_values([path])  # Marks the flags parsed, so an empty file yields the defaults.
    seen = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if not line.startswith("--") or len(line) == 2:
                raise ValueError(
                    f"{where}: expected a flag '--name=value' or a '#' comment. "
                    f"Received: {line!r}"
                )
            name = _flag_name(line, flag_values)
            if name not in flag_values:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean --{close[0]}?" if close else ""
                raise ValueError(
                    f"{where}: unknown flag --{name}.{hint} Known flags: "
                    f"{', '.join(known)}."
                )
            if name in seen:
                raise ValueError(
                    f"{where}: flag --{name} is already set on line {seen[name]}; set each "
                    "flag once."
                )
            seen[name] = lineno
            try:
                flag_values([path, line])
            except (flags.Error, ValueError) as error:
                raise ValueError(f"{where}: {error}") from error
    try:
        return experiment_flags.config_from_flags(flag_values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def parse_flags(argv, flag_values=flags.FLAGS):
    """absl's flag parser, with each `--flagfile=NAME` (or `--flagfile NAME`) of a packaged
    config resolved first.

    Args:
        argv: the command line, program name first.
        flag_values: the `FlagValues` to parse into. Defaults to the global `FLAGS`.

    Returns:
        The arguments left after the flags, as absl returns them.

    Raises:
        flags.Error: a flag does not parse, or a `--flagfile` is neither a file nor a config.
    """
    resolved = []
    args = iter(argv)
    for arg in args:
        prefix, equals, value = arg.partition("=")
        if prefix in ("--flagfile", "-flagfile"):
            if not equals:  # '--flagfile NAME', in two arguments
                value = next(args, "")
            if value:
                try:
                    arg = f"{prefix}={resolve(value)}"
                except FileNotFoundError as error:
                    raise flags.IllegalFlagValueError(str(error)) from None
        resolved.append(arg)
    return flag_values(resolved)


def run_app(main):
    """`absl.app.run(main)` with `parse_flags`: what every ssc_tf command line runs. A flag
    that does not parse ends the program with absl's one-line message, as `app.run`'s own
    parser does."""
    app.run(main, flags_parser=_parse_flags_with_usage)


def _parse_flags_with_usage(argv):
    try:
        return parse_flags(argv)
    except flags.Error as error:
        sys.stderr.write(
            f"FATAL Flags parsing error: {error}\n"
            "Pass --helpshort or --helpfull to see help on flags.\n"
        )
        sys.exit(1)


def _flag_name(line, flag_values):
    """The flag a '--name[=value]' line sets ('--nojit_compile' sets 'jit_compile')."""
    name = line[2:].split("=", 1)[0]
    if name not in flag_values and name.startswith("no") and name[2:] in flag_values:
        return name[2:]
    return name
