"""The end of a finished training: losses.csv, the three plots, metrics.json (what `dvc exp
show` lists), run.json (for selection) and their artifacts in the tracking run. Written once
the last epoch's checkpoint is saved, outside the training's signal handling: an interruption
here ends the reports, and the next run writes them from that checkpoint."""

import json
from pathlib import Path

import numpy as np

from cifar_dcgan.checkpoint import Progress
from cifar_dcgan.epoch_end import write_failures
from cifar_dcgan.images import save_line_plot
from cifar_dcgan.snapshots import LOSS_COLUMNS
from cifar_dcgan.tracker import Tracker


def headline_metrics(rows: list[dict], iterations: int, seconds: float, failures: int) -> dict:
    """The numbers `dvc exp show` lists for a training: best FCD and its epoch, the last
    snapshot's quality and D accuracies, the last epoch's mean losses, speed, failures."""
    last = rows[-1]
    metrics = {}
    if "fcd" in last:
        best = min(rows, key=lambda row: (row["fcd"], -row["epoch"]))
        metrics |= {"best_fcd": best["fcd"], "best_fcd_epoch": best["epoch"]}
        metrics |= {"last_fcd": last["fcd"], "last_kid": last["kid"]}
        metrics |= {k: last[k] for k in ("class_entropy", "diversity")}
    metrics |= {k: last[k] for k in ("acc_real", "acc_fake", "d1", "d2", "g")}
    metrics |= {
        "s_per_iter": seconds / max(iterations, 1),
        "train_min": seconds / 60,
        "failures": failures,
    }
    return metrics


def write_final_reports(
    progress: Progress, fcd_samples: int, tracker: Tracker, reports_dir: Path, evaluator_digest: str | None
) -> None:
    write_failures(progress, reports_dir, stopped=False)
    losses = progress.losses  # (iterations, 3)
    write_losses(reports_dir / "losses.csv", losses)
    reports = ["losses.png", "accuracy.png", "snapshots.csv", "metrics.json"]
    if "fcd" in progress.rows[-1]:
        reports.append("quality.png")
    plot(reports_dir, progress, losses, fcd_samples)
    last, seconds = progress.rows[-1], float(sum(progress.epoch_seconds))
    summary = {
        "epochs": last["epoch"],
        "iterations": last["iteration"],
        "restarts": progress.restarts,
        "fcd_floor": progress.fcd_floor,
        "evaluator_digest": evaluator_digest,
        "run_id": tracker.run_id,
    }
    (reports_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    tracker.log_metrics({"train_minutes": seconds / 60}, step=last["epoch"])
    tracker.log_artifact(reports_dir / "grids" / f"epoch_{last['epoch']:03d}.png", "grids")
    final = headline_metrics(progress.rows, len(losses), seconds, len(progress.events))
    (reports_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    for name in reports:
        tracker.log_artifact(reports_dir / name, "reports")


def write_losses(path: Path, losses: np.ndarray) -> None:
    iterations = np.arange(1, len(losses) + 1)
    with open(path, "w") as file:
        file.write("iteration,d1,d2,g\n")
        np.savetxt(
            file, np.column_stack([iterations, losses]), fmt=["%d", "%.6f", "%.6f", "%.6f"], delimiter=","
        )


def plot(folder: Path, progress: Progress, losses: np.ndarray, fcd_samples: int) -> None:
    rows = progress.rows
    iterations, epochs = np.arange(1, len(losses) + 1), [row["epoch"] for row in rows]
    title = "Discriminator (d1 real, d2 fake) and generator (g) losses"
    save_line_plot(
        folder / "losses.png",
        iterations,
        dict(zip(LOSS_COLUMNS, losses.T)),
        "iteration",
        "binary cross-entropy",
        title,
    )
    accuracy = {k: [row[k] for row in rows] for k in ("acc_real", "acc_fake")}
    save_line_plot(
        folder / "accuracy.png",
        epochs,
        accuracy,
        "epoch",
        "discriminator accuracy",
        "D accuracy at each snapshot",
    )
    if "fcd" in rows[-1]:
        quality = {
            "FCD of generated images": [row["fcd"] for row in rows],
            "FCD of real images": [progress.fcd_floor] * len(epochs),
        }
        title = f"FCD at each snapshot ({fcd_samples} images vs. the real test split)"
        save_line_plot(folder / "quality.png", epochs, quality, "epoch", "FCD (lower is better)", title)
