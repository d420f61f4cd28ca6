"""The package's metadata: ranges in setup.cfg, exact pins in constraints.txt, console scripts
that point at real functions, and package data that exists. No network, no TensorFlow (but for
the last test)."""

import ast
import configparser
import importlib.util
import pathlib
import re
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / "setup.cfg")

CONSOLE_SCRIPTS = {
    "ssc-train": "ssc_tf.train:run",
    "ssc-evaluate": "ssc_tf.evaluate:run",
    "ssc-export": "ssc_tf.export:run",
    "ssc-convert-tflite": "ssc_tf.convert_tflite:run",
    "ssc-device-bundle": "ssc_tf.device_bundle:run",
    "ssc-density": "ssc_tf.density:run",
    "ssc-search-gp": "ssc_tf.search_gp:run",
    "ssc-serving-client": "ssc_tf.serving_client:run",
    "ssc-compare": "ssc_tf.compare:run",
}


def _lines(value):
    """The non-empty, non-comment lines of a multi-line setup.cfg value."""
    lines = (line.strip() for line in value.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _requirements():
    """(where, Requirement) for install_requires and every extra."""
    found = [("install_requires", Requirement(line))
             for line in _lines(CONFIG["options"]["install_requires"])]
    for extra, value in CONFIG["options.extras_require"].items():
        found += [(f"extra {extra!r}", Requirement(line)) for line in _lines(value)]
    return found


def _pins():
    """constraints.txt as {canonical name: version}; every line must be `name==version`."""
    pins = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"constraints.txt:{number}: not `name==version`: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints.txt:{number}: {match[1]} pinned twice"
        pins[name] = match[2]
    return pins


def test_install_requires_and_extras_are_ranges_not_pins():
    requirements = _requirements()
    assert any(where == "install_requires" for where, _ in requirements)
    for where, requirement in requirements:
        operators = {spec.operator for spec in requirement.specifier}
        assert operators, f"{where}: {requirement} has no version range"
        assert not operators & {"==", "==="}, f"{where}: {requirement} pins a version"
        # An upper bound, so that the next major (or TF minor) is opted into, not stumbled on.
        assert operators & {"<", "~="}, f"{where}: {requirement} has no upper bound"


def test_tensorflow_comes_only_from_the_cpu_or_gpu_extra():
    names = {canonicalize_name(Requirement(line).name)
             for line in _lines(CONFIG["options"]["install_requires"])}
    assert not names & {"tensorflow", "tensorflow-cpu"}
    extras = CONFIG["options.extras_require"]
    assert [Requirement(line).name for line in _lines(extras["cpu"])] == ["tensorflow-cpu"]
    assert [Requirement(line).name for line in _lines(extras["gpu"])] == ["tensorflow"]


def test_every_requirement_has_a_pin_that_its_range_allows():
    pins = _pins()
    for where, requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{where}: {requirement.name} has no line in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{where}: constraints.txt pins {requirement.name}=={pins[name]}, outside "
            f"setup.cfg's {requirement}"
        )


def test_constraints_leave_out_ssc_tf_and_keep_the_freeze_marker():
    # `make lock` rewrites what follows the marker; ssc_tf itself is never pinned.
    text = (ROOT / "constraints.txt").read_text()
    assert "\n# ---- pip freeze" in text
    assert "ssc-tf" not in _pins()


def test_console_scripts_are_the_documented_ones():
    value = CONFIG["options.entry_points"]["console_scripts"]
    scripts = dict(re.fullmatch(r"(\S+)\s*=\s*(\S+)", line).groups() for line in _lines(value))
    assert scripts == CONSOLE_SCRIPTS


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_console_script_points_at_a_run_function_of_an_ssc_tf_module(script):
    module, function = CONSOLE_SCRIPTS[script].split(":")
    assert module.startswith("ssc_tf.")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{script}: no module {module}"
    source = pathlib.Path(spec.origin)
    assert source.match(module.replace(".", "/") + ".py"), f"{script}: {module} is {source}"
    # Read, not imported: these modules import TensorFlow.
    tree = ast.parse(source.read_text(), filename=str(source))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert function in defined, f"{script}: {module} defines no top-level {function}()"


def test_package_data_names_the_costs_and_the_configs():
    globs = _lines(CONFIG["options.package_data"]["ssc_tf"])
    assert "execution_costs.json" in globs
    assert "configs/*.cfg" in globs


@pytest.mark.parametrize("pattern", _lines(CONFIG["options.package_data"]["ssc_tf"]))
def test_package_data_globs_match_files(pattern):
    assert sorted((ROOT / "ssc_tf").glob(pattern)), f"ssc_tf/{pattern} matches no file"


def test_top_level_configs_is_a_relative_link_to_the_packaged_configs():
    # The design's `--flagfile=configs/<name>.cfg` from a checkout; the wheel ships the files
    # through package_data, so the link must stay a link (not a copy that could drift) and
    # relative (so that it holds in any clone).
    link = ROOT / "configs"
    assert link.is_symlink(), "configs is not a symbolic link"
    assert link.readlink() == pathlib.Path("ssc_tf", "configs")
    assert sorted(p.name for p in link.glob("*.cfg")) == sorted(
        p.name for p in (ROOT / "ssc_tf" / "configs").glob("*.cfg"))


def test_missing_tfds_says_how_to_install_it(monkeypatch):
    from ssc_tf.data import tfds_datasets

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError) as raised:
        tfds_datasets._import_tfds()
    message = str(raised.value)
    assert "\n" not in message
    assert "TensorFlow Datasets" in message and "pip install 'ssc_tf[tfds]'" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
