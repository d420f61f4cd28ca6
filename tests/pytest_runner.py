"""Entry point of the Bazel py_tests in tests/BUILD: runs pytest on the given files.

Bazel runs this from the runfiles root of the workspace, where setup.cfg and tests/
sit as in the source tree; the exit code is pytest's, so a failing test fails the target.
tests/BUILD passes `-m "not slow"`: the end-to-end tests run once, in `make test`.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    # Python put this file's real directory first on sys.path: the source tree, since
    # runfiles are symlinks. Drop it so the tests import only what Bazel declared.
    if os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]
    code = pytest.main([
        "-c", "setup.cfg",          # [tool:pytest]: registered markers, warning filters
        "-p", "no:cacheprovider",   # the runfiles tree is read-only: no .pytest_cache
        "-v",
        *sys.argv[1:],
    ])
    # A module whose every test is marked slow has nothing left under `-m "not slow"`: that
    # is a pass (it imported and collected), not pytest's "no tests collected" failure.
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and "-m" in sys.argv:
        code = pytest.ExitCode.OK
    sys.exit(code)
