"""Validators of argument values, shared by the library and its command-line tools.

Each check raises a one-line `ValueError` that names the value and what it allows. A library
call spells the name as Keras does (``Invalid value for argument `seed` ...``); a CLI reads its
flags inside `as_flags()`, and the same checks then spell it as a flag
(``Invalid value for flag --seed ...``), so a user sees the name they typed.

No TensorFlow or numpy here: the config and the tools import it without starting either.
"""

import contextlib
import contextvars
import numbers

_AS_FLAGS = contextvars.ContextVar("ssc_tf_arguments_as_flags", default=False)


@contextlib.contextmanager
def as_flags():
    """Within this context, messages name values as flags (`--name`)."""
    token = _AS_FLAGS.set(True)
    try:
        yield
    finally:
        _AS_FLAGS.reset(token)


def spelled(name):
    """`name` as the user wrote it: "--name" for a flag, "`name`" for an argument."""
    return f"--{name}" if _AS_FLAGS.get() else f"`{name}`"


def kind():
    """"flag" or "argument", for messages."""
    return "flag" if _AS_FLAGS.get() else "argument"


def invalid(name, expected, received):
    """The `ValueError` of a value outside what `name` allows.

    Args:
        name: the argument's (flag's) name.
        expected: what it allows, e.g. "an integer >= 1".
        received: what was passed, as it should be printed.
    """
    return ValueError(
        f"Invalid value for {kind()} {spelled(name)}: expected {expected}. "
        f"Received: {name}={received}"
    )


def is_int(value):
    """Whether `value` is an integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a real number (numpy's too, inf and nan included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(name, value):
    """Returns `value` if it is True or False; raises `ValueError` naming `name` otherwise."""
    if not isinstance(value, bool):
        raise invalid(name, "True or False", repr(value))
    return value


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`; raises `ValueError` listing them."""
    if value not in choices:
        raise invalid(name, f"one of {tuple(choices)}", repr(value))
    return value


def check_int(name, value, minimum, maximum=None):
    """Returns `value` if it is an integer in [minimum, maximum) (no upper end if None)."""
    if not is_int(value) or value < minimum or (maximum is not None and value >= maximum):
        expected = (
            f"an integer >= {minimum}" if maximum is None
            else f"an integer in [{minimum}, {maximum})"
        )
        raise invalid(name, expected, repr(value))
    return value


def check_range(name, value, low, high, low_open=False, high_open=False):
    """Returns `value` if low (<|<=) value (<|<=) high; `high` None means unbounded."""
    ok = is_number(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high)
        )
    if not ok:
        upper = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        interval = f"{'(' if low_open else '['}{low}, {upper}"
        raise invalid(name, f"a number in {interval}", repr(value))
    return value
