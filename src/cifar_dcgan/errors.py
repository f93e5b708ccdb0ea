"""The one error type a user can cause, and how stages report it."""

import signal
import sys
from collections.abc import Callable


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
