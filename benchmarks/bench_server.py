"""The tracking server under load: N trials at once logging per-iteration metrics to one
`mlflow server` on PostgreSQL, as a sweep on N machines does.

    make bench-server           (python benchmarks/bench_server.py --writers 1 2 4 8 16 32)

With more writers than the server has database connections (4 workers x 15: 60) on a small
machine, a round may not end: the refused values are sent again and again (docs/sweeps.md).

A real PostgreSQL and `mlflow server` on 127.0.0.1, started as the tests start them but
with the server's default 4 worker processes (the team server's command in
docs/tracking.md). Each writer is a process of its own, like a trial on another machine:
all start together, look the experiment up or create it (`store.experiment_id`), open a run
and log `--epochs` epochs of what train-gan logs per epoch at the defaults, through the
tracker train-gan uses (`MlflowTracker`: the three losses of each of 390 iterations, batched
on a writer thread, and three epoch means; not its few per-epoch timings, its snapshot's
scores and grid image, or the system metrics sampled every 10 s). They log as fast as they
can, with no training in between: N writers here load the server like many more real
trials, each of which logs once per epoch of minutes. Then every run's every metric is read back and counted.

Prints a Markdown table: per N, the wall seconds, values stored per second, runs the
tracker tagged `tracking_errors` or that spilled values to a file, and values lost (logged
but not read back). Nothing is asserted. Needs PostgreSQL 15 and the `cluster` extra.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 390  # the default training's iterations per epoch
HISTORIES = ("d1", "d2", "g")
MEANS = ("epoch_d1", "epoch_d2", "epoch_g")


def writer(uri: str, index: int, writers: int, epochs: int, folder: str, start) -> dict:
    """One trial's logging; the run id, its seconds and whether it spilled values."""
    from mlflow import MlflowClient

    from cifar_dcgan.store import experiment_id
    from cifar_dcgan.tracking import MlflowTracker

    client = MlflowClient(uri)
    spill = Path(folder) / f"spill-{index}.jsonl"
    start.wait()  # every writer at once, the experiment's creation included
    began = time.perf_counter()
    experiment = experiment_id(client, f"load-{writers}", uri)  # a new one per round
    run = client.create_run(experiment, run_name=f"writer-{index}")
    tracker = MlflowTracker(client, run.info.run_id, uri, spill_path=spill)
    rng = np.random.default_rng(index)
    for epoch in range(1, epochs + 1):
        history = rng.uniform(0, 2, (STEPS_PER_EPOCH, len(HISTORIES)))
        for i, key in enumerate(HISTORIES):
            tracker.log_history(key, history[:, i], (epoch - 1) * STEPS_PER_EPOCH + 1)
        tracker.log_metrics(dict.fromkeys(MEANS, 1.0), step=epoch)
        tracker.flush(final=False)  # what train-gan does at each epoch's end
    tracker.flush()
    tracker.close()
    client.set_terminated(run.info.run_id)
    return {"run_id": run.info.run_id, "seconds": time.perf_counter() - began, "spilled": spill.exists()}


def load(uri: str, writers: int, epochs: int, folder: Path) -> dict:
    """`writers` at once, each its own process; what they took, and what they lost."""
    from mlflow import MlflowClient

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(writers, mp_context=context) as pool:
        start = manager.Barrier(writers, timeout=600)
        began = time.perf_counter()
        futures = [pool.submit(writer, uri, i, writers, epochs, str(folder), start) for i in range(writers)]
        outcomes, failed = [], []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as error:  # a writer that could not even open its run
                failed.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        wall = time.perf_counter() - began  # the writers' start (spawn, imports) included
    client = MlflowClient(uri)
    expected = {key: epochs * STEPS_PER_EPOCH for key in HISTORIES} | dict.fromkeys(MEANS, epochs)
    lost, tagged = 0, 0
    for outcome in outcomes:
        run = client.get_run(outcome["run_id"])
        tagged += "tracking_errors" in run.data.tags
        for key, count in expected.items():
            stored = client.get_metric_history(outcome["run_id"], key)
            lost += count - len({m.step for m in stored})
    logged = writers * sum(expected.values())
    log_seconds = max((o["seconds"] for o in outcomes), default=float("nan"))
    return {
        "writers": writers,
        "log_s": log_seconds,
        "wall_s": wall,
        "values_per_s": (logged - lost - len(failed) * sum(expected.values())) / log_seconds,
        "failed": failed,
        "tagged": tagged,
        "spilled": sum(o["spilled"] for o in outcomes),
        "lost": lost + len(failed) * sum(expected.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--epochs", type=int, default=10, help="epochs each writer logs (default 10)")
    parser.add_argument("--server-workers", type=int, default=4, help="mlflow server's processes (default 4)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # the writers' "View run at" lines
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the server and database still go
    sys.path.insert(0, str(REPO / "tests"))
    from bench_step import cpu_name

    import postgres

    if postgres.available():
        sys.exit(postgres.available())
    folder = Path(tempfile.mkdtemp(prefix="bench-server-"))
    rows = []
    try:
        with postgres.tracking_server(folder, workers=args.server_workers) as uri:
            load(uri, 1, 1, folder)  # not reported: the server's first requests are slower
            for writers in args.writers:
                rows.append(load(uri, writers, args.epochs, folder))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    values = args.epochs * (len(HISTORIES) * STEPS_PER_EPOCH + len(MEANS))
    print(
        f"\n{cpu_name()}; `mlflow server` with {args.server_workers} workers on PostgreSQL 15, all on "
        f"this machine; each writer logs {args.epochs} epochs = {values:,} values\n"
    )
    print(
        "| writers | log s (slowest) | wall s | values stored / s | failed | tagged errors | spilled | lost |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['writers']} | {r['log_s']:.1f} | {r['wall_s']:.1f} | {r['values_per_s']:,.0f} | "
            f"{len(r['failed'])} | {r['tagged']} | {r['spilled']} | {r['lost']} |"
        )
    for r in rows:
        for failure in r["failed"][:3]:
            print(f"{r['writers']} writers: {failure}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
