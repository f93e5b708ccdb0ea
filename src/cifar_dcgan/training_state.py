"""What a training knows besides its weights: one typed object that the training's callbacks
share and that a checkpoint keeps. Nothing else carries state between them."""

import dataclasses
from pathlib import Path

import numpy as np

from cifar_dcgan import checkpoint as checkpoint_lib
from cifar_dcgan.checkpoint import Checkpoint
from cifar_dcgan.config.train_gan import TrainGanParams


@dataclasses.dataclass
class TrainingState:
    params: TrainGanParams
    fingerprint: str = ""  # of params, data, evaluator and code: what a checkpoint is valid for
    checkpoint_dir: Path | None = None  # where checkpoints are written; None: kept in memory only
    eval_rng: np.random.Generator = None  # D's held-out accuracy draws at each snapshot
    # kept by checkpoints
    losses: list[np.ndarray] = dataclasses.field(default_factory=list)  # (iterations, 3) per epoch
    rows: list[dict] = dataclasses.field(default_factory=list)  # one per snapshot
    events: list[dict] = dataclasses.field(default_factory=list)  # detected failures and actions
    restarts: int = 0
    epochs_done: int = 0  # epochs whose end-of-epoch work is complete
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)  # training time per epoch
    fcd_floor: float | None = None  # FCD of as many real training images: the best reachable
    # the epoch ending now
    failure: str | None = None  # what the failure guard found in it
    discarded: bool = False  # its failure's action throws the epoch away (restart, stop)
    # how training goes on
    interrupted: str | None = None  # the signal's name once one arrived
    restart_requested: bool = False
    stopped_by: str | None = None  # the failure that stopped training
    last_good: Checkpoint | None = None  # what a restart goes back to

    def __post_init__(self):
        if self.eval_rng is None:
            self.eval_rng = np.random.default_rng(self.params.seed + 1)

    @property
    def keeps_epoch(self) -> bool:
        """Whether the epoch ending now gets its end-of-epoch work (not interrupted, not discarded)."""
        return not self.interrupted and not self.discarded

    @property
    def finished(self) -> bool:
        return not self.interrupted and self.epochs_done >= self.params.epochs

    @property
    def goes_on(self) -> bool:
        return not (self.interrupted or self.restart_requested or self.stopped_by)

    def capture(self, variables, run_id: str | None) -> Checkpoint:
        return Checkpoint(
            fingerprint=self.fingerprint,
            run_id=run_id,
            epochs_done=self.epochs_done,
            values=[v.numpy().copy() for v in variables],
            losses=np.concatenate(self.losses) if self.losses else np.zeros((0, 3), np.float32),
            rows=list(self.rows),
            eval_rng=self.eval_rng.bit_generator.state,
            events=list(self.events),
            restarts=self.restarts,
            epoch_seconds=list(self.epoch_seconds),
            layout=checkpoint_lib.layout(variables),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        self.losses = [checkpoint.losses]
        self.epochs_done = checkpoint.epochs_done
        self.rows = checkpoint.rows
        self.events, self.restarts = checkpoint.events, checkpoint.restarts
        self.epoch_seconds = list(checkpoint.epoch_seconds)
        self.eval_rng.bit_generator.state = checkpoint.eval_rng
