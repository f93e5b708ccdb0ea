"""The one error type a user can cause, and how stages report it."""

import errno
import signal
import sys
from collections.abc import Callable

MAX_QUOTED = 200  # characters of a name, path or URL quoted in an error
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def clip(value: object, limit: int = MAX_QUOTED) -> str:
    """`value` as text cut to `limit` characters: an error line stays readable whatever an
    archive, a URL, a path or a params file holds."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: object, limit: int = MAX_QUOTED) -> str:
    """`repr(value)`: on one line (newlines and escapes shown as `\\n`, `\\x1b`), cut to `limit`
    characters; a cut one says how long it was."""
    size = len(value) if isinstance(value, str | bytes) else None
    text = repr(value[:limit] if size is not None and size > limit else value)  # never a huge copy
    size = size if size is not None and size > limit else len(text)
    return text if len(text) <= limit and size <= limit else f"{text[:limit]}… ({size:,} characters)"


class PipelineError(Exception):
    """A problem the user can fix: the message names the key, file or URL and what to do."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving a checkpoint; the message says how to resume."""


class Terminated(KeyboardInterrupt):
    """The stage was told to stop from outside (SIGTERM from `dvc queue kill`, a CI timeout,
    a closed terminal): it unwinds like Ctrl-C, so its MLflow run ends KILLED."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's or a command's main(); a PipelineError becomes one clear line and exit
    code 2, an interruption exit code 130 (Ctrl-C) or 128 + the signal's number (SIGTERM: 143).
    Every entry point (stages/*.py, cifar-dcgan-generate, cifar-dcgan-compare) runs through it."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interruption:
        print(f"interrupted{f': {interruption}' if str(interruption) else ''}", file=sys.stderr)
        sys.exit(128 + interruption.signum if isinstance(interruption, Terminated) else 130)
