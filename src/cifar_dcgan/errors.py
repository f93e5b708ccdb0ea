"""The one error type a user can cause, and how stages report it."""

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem the user can fix: the message names the key, file or URL and what to do."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving a checkpoint; the message says how to resume."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a PipelineError becomes one clear line and exit code 2, an
    interruption exit code 130 (as for Ctrl-C)."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interruption:
        print(f"interrupted: {interruption or 'no checkpoint was due'}", file=sys.stderr)
        sys.exit(130)
