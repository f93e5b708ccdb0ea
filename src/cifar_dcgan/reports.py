"""The end of a finished training: losses.csv, the three plots, metrics.json (what `dvc exp
show` lists), run.json (for selection) and their artifacts in the tracking run."""

import json
from pathlib import Path

import keras
import numpy as np

from cifar_dcgan.callbacks import LOSSES, write_failures
from cifar_dcgan.images import save_line_plot
from cifar_dcgan.tracker import Tracker
from cifar_dcgan.training_state import TrainingState


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


class FinalReports(keras.callbacks.Callback):
    """Written once, when the last epoch is done (not after an interruption or a stop)."""

    def __init__(
        self, state: TrainingState, tracker: Tracker, reports_dir: Path, evaluator_digest: str | None
    ):
        super().__init__()
        self.state, self.tracker, self.reports_dir, self.evaluator_digest = (
            state,
            tracker,
            reports_dir,
            evaluator_digest,
        )

    def on_train_end(self, logs=None):
        if not self.state.finished:
            return
        state = self.state
        write_failures(state, self.reports_dir)
        losses = np.concatenate(state.losses)  # (iterations, 3)
        self.write_losses(losses)
        reports = ["losses.png", "accuracy.png", "snapshots.csv", "metrics.json"]
        if "fcd" in state.rows[-1]:
            reports.append("quality.png")
        self.plot(losses)
        last, seconds = state.rows[-1], float(sum(state.epoch_seconds))
        summary = {
            "epochs": last["epoch"],
            "iterations": last["iteration"],
            "restarts": state.restarts,
            "fcd_floor": state.fcd_floor,
            "evaluator_digest": self.evaluator_digest,
            "run_id": self.tracker.run_id,
        }
        (self.reports_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.tracker.log_metrics({"train_minutes": seconds / 60}, step=last["epoch"])
        self.tracker.log_artifact(self.reports_dir / "grids" / f"epoch_{last['epoch']:03d}.png", "grids")
        final = headline_metrics(state.rows, len(losses), seconds, len(state.events))
        (self.reports_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        for name in reports:
            self.tracker.log_artifact(self.reports_dir / name, "reports")

    def write_losses(self, losses: np.ndarray) -> None:
        iterations = np.arange(1, len(losses) + 1)
        with open(self.reports_dir / "losses.csv", "w") as file:
            file.write("iteration,d1,d2,g\n")
            np.savetxt(
                file, np.column_stack([iterations, losses]), fmt=["%d", "%.6f", "%.6f", "%.6f"], delimiter=","
            )

    def plot(self, losses: np.ndarray) -> None:
        rows, folder = self.state.rows, self.reports_dir
        iterations, epochs = np.arange(1, len(losses) + 1), [row["epoch"] for row in rows]
        title = "Discriminator (d1 real, d2 fake) and generator (g) losses"
        save_line_plot(
            folder / "losses.png",
            iterations,
            dict(zip(LOSSES, losses.T)),
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
                "FCD of real images": [self.state.fcd_floor] * len(epochs),
            }
            title = f"FCD at each snapshot ({self.state.params.fcd_samples} images vs. the real test split)"
            save_line_plot(folder / "quality.png", epochs, quality, "epoch", "FCD (lower is better)", title)
