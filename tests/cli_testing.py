"""What the command-line tests share."""

import re

# A line of TensorFlow's C++ log, which ignores TF_CPP_MIN_LOG_LEVEL at start-up (on oneDNN
# CPUs: "oneDNN custom operations are on", behind absl's notice): absl's notice, or a
# glog-style "I0000 00:00:..." record.
_TF_NATIVE_LOG = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} \d\d:\d\d:")


def own_lines(stderr):
    """The lines of a tool's `stderr` that the tool wrote: TensorFlow's native log left out."""
    return [line for line in stderr.strip().splitlines() if not _TF_NATIVE_LOG.match(line)]
