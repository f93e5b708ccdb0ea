"""Resumable training state: one `.npz` file, replaced atomically at every epoch end and
when training is interrupted (Ctrl-C, SIGTERM).

It holds every variable of `DCGAN.state_variables()` (networks, optimizers, RNG states,
iteration, this epoch's losses), the loss history of finished epochs, the snapshot rows, the
evaluation RNG, the failure log and the MLflow run id, plus a fingerprint of the params and
data: a checkpoint made with other params or data is never resumed. Raising `train_gan.epochs`
continues a finished training. Beside it, `epoch_000.png`: the probe grid drawn before training.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cifar_dcgan.config import ModelParams, TrainGanParams

FILE = "state.npz"


@dataclasses.dataclass
class Checkpoint:
    fingerprint: str
    run_id: str | None
    epochs_done: int  # epochs whose end-of-epoch work (logging, snapshot) is complete
    values: list[np.ndarray]  # in DCGAN.state_variables() order
    losses: np.ndarray  # (epochs_done * steps_per_epoch, 3)
    rows: list[dict]
    eval_rng: dict
    events: list[dict] = dataclasses.field(default_factory=list)  # detected failures so far
    restarts: int = 0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)  # training time per epoch


def fingerprint(
    model: ModelParams, params: TrainGanParams, real_images: np.ndarray, evaluator: str = ""
) -> str:
    """What makes two trainings the same: every param but `epochs` (a longer training
    continues a shorter one: the first epochs are the same), (a sample of) the data and the
    evaluator that scores the snapshots (its digest)."""
    train = {k: v for k, v in dataclasses.asdict(params).items() if k != "epochs"}
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(model), train, evaluator]).encode())
    digest.update(str(real_images.shape).encode())
    digest.update(np.ascontiguousarray(real_images[:: max(1, len(real_images) // 64)]).tobytes())
    return digest.hexdigest()


def save(folder: Path, checkpoint: Checkpoint) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        k: getattr(checkpoint, k)
        for k in (
            "fingerprint",
            "run_id",
            "epochs_done",
            "rows",
            "eval_rng",
            "events",
            "restarts",
            "epoch_seconds",
        )
    }
    arrays = {f"v{i}": value for i, value in enumerate(checkpoint.values)}
    tmp = folder / f".{FILE}.tmp"
    with open(tmp, "wb") as file:
        np.savez(file, meta=np.array(json.dumps(meta)), losses=checkpoint.losses, **arrays)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(folder / FILE)


def load(folder: Path, expected_fingerprint: str, epochs: int) -> Checkpoint | None:
    """The checkpoint in `folder` if this training (of `epochs` epochs) can continue from it,
    else None, saying why: other params or data, or a training already `epochs` long (run
    again after a code change, it starts over)."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            values = [data[f"v{i}"] for i in range(len(data.files) - 2)]
            losses = data["losses"]
    except (OSError, ValueError, KeyError) as error:
        print(f"ignoring unreadable checkpoint {path} ({error}); training from scratch")
        return None
    if meta["fingerprint"] != expected_fingerprint:
        print(f"checkpoint {path} was made with other params or data; training from scratch")
        return None
    if meta["epochs_done"] >= epochs:
        print(
            f"checkpoint {path} is of a finished training of {meta['epochs_done']} epochs, not fewer than "
            f"train_gan.epochs = {epochs}; training from scratch"
        )
        return None
    return Checkpoint(values=values, losses=losses, **meta)
