"""The README's Python examples run as written, in order (a later one may read what an earlier one
saved), and print what the README says they print."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.replace("/tmp/", f"{tmp_path}/"), str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "density=0.0599" in printed
    assert "4415 of 73728" in printed
    assert "4520960 MACs" in printed
    assert "159978\n" in printed
    assert re.search(r"^\d+ kB$", printed, flags=re.M)  # a Keras model of one's own, as TFLite
