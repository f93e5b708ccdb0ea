"""Resumable training state: one `.npz` file, replaced atomically at every epoch end and
when training is interrupted (Ctrl-C, SIGTERM).

It holds every variable of `DCGAN.state_variables()` (networks, optimizers, RNG states,
iteration, this epoch's losses), the training's `Progress` (loss history, snapshot rows,
failure log, ...), the MLflow run id, the name and shape of every variable, plus a
fingerprint of the params, the data, the evaluator and the training code: a checkpoint made
with other params, data or code is never resumed. Raising `train_gan.epochs` continues a
finished training; a finished training whose reports were cut short writes them. Beside it,
`epoch_000.png`: the probe grid drawn before training.

A checkpoint that cannot be used (unreadable, truncated, from other params or code, or
not matching the model's variables) is moved aside to `state.npz.rejected` with one line
saying why, and training starts over: a bad file never blocks the next `dvc repro`.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from cifar_dcgan import codebase
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.prepared import chunks

FILE = "state.npz"


@dataclasses.dataclass
class Progress:
    """What a training knows besides its weights, all of which a checkpoint keeps: a field
    added here is saved, loaded and restored with nothing else to change."""

    epochs_done: int = 0  # epochs whose end-of-epoch work (logging, snapshot) is complete
    losses: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (its, 3)
    rows: list[dict] = dataclasses.field(default_factory=list)  # one per snapshot
    events: list[dict] = dataclasses.field(default_factory=list)  # detected failures and actions
    restarts: int = 0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)  # training time per epoch
    eval_rng: dict | None = None  # the state of the RNG of D's held-out accuracy draws
    fcd_floor: float | None = None  # FCD of as many real training images: the best reachable
    reported: bool = False  # the finished training's reports are written (run.json, metrics.json)


@dataclasses.dataclass
class Checkpoint:
    fingerprint: str
    run_id: str | None
    values: list[np.ndarray]  # in DCGAN.state_variables() order
    layout: list[list]  # [variable name, shape] per value
    progress: Progress


def code_digest() -> str:
    """sha256 of the training code (every file `cifar_dcgan.training` runs: its import closure,
    this file included) and of the TensorFlow and Keras versions running it."""
    import keras
    import tensorflow as tf

    digest = hashlib.sha256(f"tensorflow {tf.__version__} keras {keras.__version__}".encode())
    for path in training_code(Path(__file__).with_name("training.py")):
        digest.update(path.relative_to(codebase.SOURCE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def training_code(training_module: Path) -> list[Path]:
    """The files whose code decides what training computes: a change to any starts over."""
    return sorted({Path(training_module).resolve(), *codebase.closure(training_module)})


def layout(variables) -> list[list]:
    """[name, shape] of each variable, in order: what a checkpoint's values must fit. Keras
    numbers layer names per process (`dense_3`): the numbers are left out."""
    names = [re.sub(r"_\d+(?=[/_:]|$)", "", getattr(v, "path", None) or v.name) for v in variables]
    return [[name, [int(d) for d in v.shape]] for name, v in zip(names, variables, strict=True)]


def fingerprint(
    model: ModelParams, params: TrainGanParams, real_images: np.ndarray, evaluator: str = ""
) -> str:
    """What makes two trainings the same: every param but `epochs` (a longer training
    continues a shorter one: the first epochs are the same), every byte of the data, the
    evaluator that scores the snapshots (its digest) and the training code (`code_digest`).
    (The data's sha256 takes about 0.8 s for CIFAR-10's 614 MB on a 2-core Xeon.)"""
    train = {k: v for k, v in dataclasses.asdict(params).items() if k != "epochs"}
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(model), train, evaluator, code_digest()]).encode())
    digest.update(f"{real_images.shape} {real_images.dtype}".encode())
    for part in chunks(real_images):  # read a chunk at a time, never held whole
        digest.update(np.ascontiguousarray(part).data)
    return digest.hexdigest()


def save(folder: Path, checkpoint: Checkpoint) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    progress = {k: v for k, v in dataclasses.asdict(checkpoint.progress).items() if k != "losses"}
    meta = {"fingerprint": checkpoint.fingerprint, "run_id": checkpoint.run_id, "layout": checkpoint.layout}
    arrays = {f"v{i}": value for i, value in enumerate(checkpoint.values)}
    tmp = folder / f".{FILE}.tmp"
    try:
        with open(tmp, "wb") as file:
            meta_array = np.array(json.dumps({**meta, **progress}))
            np.savez(file, meta=meta_array, losses=checkpoint.progress.losses, **arrays)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(folder / FILE)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        needed = sum(value.nbytes for value in checkpoint.values) + checkpoint.progress.losses.nbytes
        raise PipelineError(
            f"cannot write the checkpoint to {folder} ({error.strerror}): it needs about "
            f"{needed / 2**20:,.0f} MiB, {shutil.disk_usage(folder).free / 2**20:,.0f} MiB are free; free "
            "space there and run again (training resumes from the last checkpoint that was written)"
        ) from None


def load(folder: Path, expected_fingerprint: str, epochs: int) -> Checkpoint | None:
    """The checkpoint in `folder` if this training (of `epochs` epochs) can continue from it,
    or is that training finished but for its reports (interrupted while writing them), else
    None, saying why. An unreadable one, or one of other params, data or code, is moved
    aside (`set_aside`); one of a training already `epochs` long is left (run again after a
    change DVC sees, e.g. of the stage script, it starts over)."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            values = [data[f"v{i}"] for i in range(len(data.files) - 2)]
            losses = data["losses"]
        own = {key: meta.pop(key) for key in ("fingerprint", "run_id", "layout")}
        checkpoint = Checkpoint(values=values, progress=Progress(losses=losses, **meta), **own)
        if [list(v.shape) for v in values] != [shape for _, shape in checkpoint.layout]:
            raise ValueError("the stored arrays do not have the recorded shapes")
    except Exception as error:  # a damaged zip fails in many ways (BadZipFile, NotImplementedError, ...)
        set_aside(folder, f"it cannot be read ({type(error).__name__}: {str(error)[:200]})")
        return None
    if checkpoint.fingerprint != expected_fingerprint:
        set_aside(folder, "it was made with other params, data, evaluator or training code")
        return None
    done = checkpoint.progress.epochs_done
    if done == epochs and not checkpoint.progress.reported:
        print(f"checkpoint {path}: a finished training whose reports were not all written; writing them")
        return checkpoint
    if done >= epochs:
        print(
            f"checkpoint {path} is of a finished training of {done} epochs, not fewer than "
            f"train_gan.epochs = {epochs}; training from scratch"
        )
        return None
    return checkpoint


def set_aside(folder: Path, why: str) -> Path:
    """Move the checkpoint out of the way (to `state.npz.rejected`, replacing an older one)."""
    rejected = folder / f"{FILE}.rejected"
    (folder / FILE).replace(rejected)
    print(
        f"checkpoint {folder / FILE} not used: {why}; moved to {rejected}, training from scratch", flush=True
    )
    return rejected
