"""TensorFlow loaded without its start-up notices. Importing this module loads TensorFlow
once, quietly; a stage or command imports it before anything that loads TensorFlow
(`TF_CPP_MIN_LOG_LEVEL=0` shows them).

While TensorFlow loads it writes its oneDNN notice (twice, each with absl's note on logging
before InitializeLog) straight to the stderr file descriptor, whatever TF_CPP_MIN_LOG_LEVEL
says: eight such lines in one `dvc exp run`. Every other line it writes is passed on.
"""

import contextlib
import os
import sys
import tempfile

START_UP_NOTICES = (
    "absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
)


@contextlib.contextmanager
def start_up_notices_dropped():
    """Hold the stderr file descriptor in a file meanwhile, then pass on every other line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not any(notice in line for notice in START_UP_NOTICES):
                    sys.stderr.write(line)


if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":  # asked to see everything TensorFlow says
    import tensorflow  # noqa: F401
else:
    with start_up_notices_dropped():
        import tensorflow  # noqa: F401
