"""A stage process reduced to its tracking: `run_stage` around `stage_run`, as every stage
in `stages/` uses them. Used by tests that need many real processes at one instant.

    python stage_process.py READY_DIR WORKERS NAME   # wait until WORKERS processes are ready, then run
"""

import sys
import time
from pathlib import Path

import mlflow  # noqa: F401  (imported before the barrier: the start must be simultaneous)

from cifar_dcgan.errors import run_stage
from cifar_dcgan.tracking import stage_run


def main() -> None:
    ready, workers, name = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    (ready / name).touch()
    while len(list(ready.iterdir())) < workers:
        time.sleep(0.01)
    with stage_run("prepare", "parallel", {"worker": name}) as tracker:
        tracker.log_metrics({"done": 1.0}, step=0)


if __name__ == "__main__":
    run_stage(main)
