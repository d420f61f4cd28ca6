"""The experiment's absl flags, generated once from `ExperimentConfig`'s fields.

`define_flags` defines one flag per field (its type, default, choices and help come from the
field); `config_from_flags` reads the parsed flags back into a validated config, whose errors
then name the flags (`--g`, `--seed`).

Example:

>>> from absl import flags
>>> flag_values = define_flags(flags.FlagValues())
>>> flag_values(["train", "--dataset=digits", "--model=resnet32", "--epochs=2", "--sparsity=dense"])
['train']
>>> config_from_flags(flag_values).model_kwargs()["g"]
(1, 1, 1)
"""

import dataclasses

from absl import flags

from ssc_tf import arguments
from ssc_tf import config as config_lib

_DEFINE = {
    config_lib.ENUM: flags.DEFINE_enum,
    config_lib.INTEGER: flags.DEFINE_integer,
    config_lib.FLOAT: flags.DEFINE_float,
    config_lib.BOOL: flags.DEFINE_bool,
    config_lib.INT_LIST: flags.DEFINE_list,
}


def _fields():
    return dataclasses.fields(config_lib.ExperimentConfig)


def _required(field):
    return field.default is dataclasses.MISSING


def define_flags(flag_values=flags.FLAGS):
    """Defines the experiment flags on `flag_values`, once.

    Calling it again on the same `FlagValues` (two CLIs imported into one process) defines
    nothing new.

    Args:
        flag_values: the `absl.flags.FlagValues` to define them on. Defaults to the global
            `FLAGS`.

    Returns:
        `flag_values`.
    """
    for field in _fields():
        if field.name in flag_values:
            continue
        meta = field.metadata
        default = None if _required(field) else field.default
        args = (field.name, default)
        if meta["flag"] == config_lib.INT_LIST:
            args = (field.name, config_lib.format_list(default).split(",") if default else [])
        elif meta["flag"] == config_lib.ENUM:
            args += (list(meta["choices"]),)
        _DEFINE[meta["flag"]](*args, meta["help"], flag_values=flag_values)
    return flag_values


def config_from_flags(flag_values=flags.FLAGS):
    """Reads the parsed flags of `define_flags` into a validated config.

    Args:
        flag_values: the parsed `absl.flags.FlagValues` holding the experiment flags.
            Defaults to the global `FLAGS`.

    Returns:
        An `ExperimentConfig`.

    Raises:
        ValueError: a flag is missing or its value is not allowed; the message names it.
    """
    values = {}
    for field in _fields():
        value = flag_values[field.name].value
        meta = field.metadata
        if _required(field) and value is None:
            expected = meta.get("expected") or f"one of {tuple(meta['choices'])}"
            raise ValueError(f"Flag --{field.name} is required: {expected}.")
        if meta["flag"] == config_lib.INT_LIST:
            value = _parse_list(field.name, value, meta["allow_none"])
        values[field.name] = value
    with arguments.as_flags():
        return config_lib.ExperimentConfig(**values)


def _parse_list(name, items, allow_none):
    """A comma-list flag's strings as a tuple of int (or None for 'none')."""
    values = []
    for item in items:
        if allow_none and item.lower() == config_lib.NONE:
            values.append(None)
            continue
        try:
            values.append(int(item))
        except ValueError:
            allowed = f"integers or {config_lib.NONE!r}" if allow_none else "integers"
            raise ValueError(
                f"Invalid value for flag --{name}: expected a comma-separated list of "
                f"{allowed}. Received: {name}={','.join(items)}"
            ) from None
    return tuple(values)
