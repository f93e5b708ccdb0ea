"""What tracking costs: MLflow logging per iteration, system metrics, the compare command."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cifar_dcgan.tracker import NullTracker
from cifar_dcgan.tracking import MlflowTracker

REPO = Path(__file__).resolve().parents[1]


def tracking_cost(steps_per_epoch: int = 390, epochs: int = 20, snapshot_every: int = 10) -> dict[str, float]:
    """Time the training thread spends in tracking calls for `epochs` epochs of `steps_per_epoch`
    iterations at the default params: per epoch 3 loss histories and 3 means, per snapshot
    two accuracies and a grid image."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp())
    try:
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        run = client.create_run(client.create_experiment("bench", (folder / "art").as_uri()))
        results = {}
        for name, tracker in (("off", NullTracker()), ("on", MlflowTracker(client, run.info.run_id, "x"))):
            grid = np.random.default_rng(0).uniform(0, 1, (240, 240, 3)).astype(np.float32)
            start = time.perf_counter()
            for epoch in range(1, epochs + 1):
                history = np.random.default_rng(epoch).uniform(0, 2, (steps_per_epoch, 3))
                for i, key in enumerate(("d1", "d2", "g")):
                    tracker.log_history(key, history[:, i], (epoch - 1) * steps_per_epoch + 1)
                tracker.log_metrics({"epoch_d1": 1.0, "epoch_d2": 1.0, "epoch_g": 1.0}, step=epoch)
                if epoch % snapshot_every == 0:
                    tracker.log_metrics({"acc_real": 0.5, "acc_fake": 0.5}, step=epoch)
                    tracker.log_image(grid, key="generated", step=epoch)
            training_thread = time.perf_counter() - start
            tracker.flush()
            results[name] = training_thread
            results[f"{name}_flush"] = time.perf_counter() - start - training_thread
        per_iteration = (results["on"] - results["off"]) / (steps_per_epoch * epochs)
        return {"ms_per_iteration": 1000 * per_iteration, "flush_s": results["on_flush"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def system_metrics_cost(seconds: float = 40.0) -> dict[str, float]:
    """CPU time MLflow's system-metrics sampler (what train-gan and train-evaluator start, every
    10 s) takes, measured on an otherwise idle process: its share of one core."""
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    folder = Path(tempfile.mkdtemp())
    try:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("bench", (folder / "art").as_uri()))
        cpu, wall = time.process_time(), time.perf_counter()
        monitor = SystemMetricsMonitor(run.info.run_id, tracking_uri=uri)
        monitor.start()
        time.sleep(seconds)
        monitor.finish()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        samples = len(client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage"))
        return {"core_share": cpu / wall, "cpu_s": cpu, "wall_s": wall, "samples": samples}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def compare_command(runs: int = 50, epochs: int = 20) -> float:
    """Seconds `cifar-dcgan-compare` takes, as a whole command, on `runs` finished training
    runs of `epochs` scored snapshots each (5 configurations x 10 seeds) in a SQLite store."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    folder = Path(tempfile.mkdtemp())
    try:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment = client.create_experiment("cifar10-dcgan", (folder / "art").as_uri())
        rng = np.random.default_rng(0)
        keys = ("fcd", "kid", "class_entropy", "diversity", "epoch_seconds", "seconds_per_iteration")
        for i in range(runs):
            tags = {"stage": "train-gan", "evaluator_digest": "bench"}
            run = client.create_run(experiment, run_name=f"r{i}/train-gan", tags=tags)
            params = {"train_gan.seed": str(i % 10), "train_gan.label_smoothing": str(i // 10 / 10)}
            metrics = [Metric(k, float(rng.uniform(1, 50)), 0, e) for k in keys for e in range(1, epochs + 1)]
            client.log_batch(
                run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()]
            )
            client.set_terminated(run.info.run_id)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        command = [str(Path(sys.executable).parent / "cifar-dcgan-compare"), "--out", str(folder / "out")]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
