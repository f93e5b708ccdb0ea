"""Train the DCGAN with `fit()`, saving snapshots and reporting through an injected tracker.

    python stages/train_gan.py   (what `dvc repro train-gan` runs)

The loop is Keras `fit()`; each epoch's end is `cifar_dcgan.epoch_end.EpochEnd`, the final
reports `cifar_dcgan.reports`. Outputs: `epoch_NNN.keras` generator snapshots; in the
reports folder `losses.csv`
(d1/d2/g per iteration), `snapshots.csv` (one row per snapshot: D's accuracy, mean losses
and, given an evaluator, FCD / KID / class score / class entropy / diversity),
`metrics.json` (final and best numbers for `dvc exp show`), `grids/epoch_NNN.png` (7x7
samples from fixed probe latent points), `losses.png` / `accuracy.png` / `quality.png` and
`run.json` (the tracking run, for selection).
"""

import contextlib
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan import checkpoint as checkpoint_lib
from cifar_dcgan.checkpoint import Checkpoint, Progress
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import RESTART_SEED_STEP, TrainGanParams
from cifar_dcgan.epoch_end import EpochEnd, finish_iteration_on_signal
from cifar_dcgan.errors import PipelineError, TrainingInterrupted
from cifar_dcgan.evaluator import Evaluator
from cifar_dcgan.gan import DCGAN, held_images
from cifar_dcgan.losses import LOSSES
from cifar_dcgan.machine import dtype_policy, gpu_visible
from cifar_dcgan.models import adam, build_discriminator, build_generator
from cifar_dcgan.reports import write_final_reports
from cifar_dcgan.snapshots import Snapshots
from cifar_dcgan.tracker import Tracker


def make_strategy(distribute: str) -> tf.distribute.Strategy:
    """`none`: the default (one device); `mirrored`: every local GPU, or every logical CPU
    device when there is no GPU; `multi_worker`: the cluster described by TF_CONFIG. Create
    it before any other TensorFlow work (multi_worker must be created at program start)."""
    if distribute == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    elif distribute == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    if not gpu_visible():  # measured on CPUs only: on a GPU, TensorFlow's own behaviour is kept
        # one op at a time: concurrent ops let the step's float sums differ in their last bits
        # from run to run by the third iteration, which training amplifies; one at a time, with
        # sums_in_graph_order(), a run repeats bit for bit, and on 2 cores it is not slower (the
        # ops themselves still use every core). A process that already ran TensorFlow keeps
        # its threading.
        if distribute == "none":
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_inter_op_parallelism_threads(1)
        sums_in_graph_order()
    return strategy


def sums_in_graph_order() -> None:
    """Keep every sum of three or more gradients (AddN) a sum in the graph's order, for the
    tf.functions this thread calls from now on. Grappler's memory optimizer rewrites such sums
    (those of D's sigmoid cross-entropy, of batch norm) into additions onto a temporary
    variable in whatever order the terms arrive; that order changes once TensorFlow's executor
    has timed the step's ops (after about 90 calls), and from then on the last bits of D's
    gradients differed from run to run. Its other rewrites (swapping to host memory,
    recomputation) are for GPUs."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.eager import context  # the config tf.functions are optimized with

    options = context.context().function_call_options
    config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
    config.graph_options.rewrite_options.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    options.config_proto_serialized = config


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes files and tracks: always, except on the workers of a
    multi-worker cluster other than the chief (or worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def real_index_batches(
    n: int, half_batch: int, sampling: str, seed: int, d_steps: int = 1
) -> tf.data.Dataset:
    """An endless dataset of (half_batch, d_steps) indices into the real images, one column
    per D step of an iteration: drawn with replacement like the classic code, or successive
    slices of reshuffled passes. (Replicas split the rows: each D step's column is the same
    half-batch on one device or many.)"""
    if sampling == "shuffled":
        indices = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    else:
        indices = tf.data.Dataset.random(seed=seed).map(lambda x: tf.math.floormod(x, n))
    return indices.batch(d_steps, drop_remainder=True).batch(half_batch, drop_remainder=True).prefetch(2)


REPORTS = ("losses.csv", "snapshots.csv", "losses.png", "accuracy.png", "quality.png")
REPORTS += ("failures.json", "run.json", "metrics.json")


def clear_earlier_outputs(snapshots_dir: Path, reports_dir: Path, keep_snapshots: bool) -> None:
    """Delete what an earlier training wrote there (its reports and grids, and unless resuming
    its snapshots), and nothing else: the folders may be shared or given by hand (`--reports reports`)."""
    own = [(reports_dir, name) for name in REPORTS] + [(reports_dir / "grids", "epoch_*.png")]
    if not keep_snapshots:
        own.append((snapshots_dir, "epoch_*.keras"))
    for folder, pattern in own:
        for path in folder.glob(pattern):
            if path.is_file() or path.is_symlink():  # a link (from DVC's cache): the link only
                path.unlink()


def train_gan(
    real_images: np.ndarray,
    model: ModelParams,
    params: TrainGanParams,
    snapshots_dir: Path,
    reports_dir: Path,
    tracker: Tracker,
    checkpoint_dir: Path | None = None,
    resume: Checkpoint | None = None,
    evaluator: Evaluator | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> DCGAN:
    """Train (from `resume` if given); returns the trained DCGAN (files are written on the way).
    SIGINT/SIGTERM finish the current iteration, save a checkpoint and raise TrainingInterrupted.
    Under `strategy` (default: `make_strategy(params.distribute)`) every replica gets an
    equal share of each half-batch."""
    strategy = strategy or make_strategy(params.distribute)
    steps = steps_per_epoch(len(real_images), params, strategy.num_replicas_in_sync)
    clear_earlier_outputs(snapshots_dir, reports_dir, keep_snapshots=resume is not None)
    for folder in (snapshots_dir, reports_dir / "grids"):
        folder.mkdir(parents=True, exist_ok=True)
    gan = build_gan(model, params, real_images, steps, strategy)
    digest = evaluator.digest if evaluator else None
    fingerprint = checkpoint_lib.fingerprint(model, params, real_images, digest or "")
    snapshots = Snapshots(params, tracker, real_images, snapshots_dir, reports_dir, evaluator)
    progress = resume.progress if resume else Progress()
    progress.reported = False  # until this training's own reports are written
    epoch_end = EpochEnd(params, tracker, snapshots, reports_dir, checkpoint_dir, fingerprint, progress)
    epoch_end.set_model(gan)
    if progress.fcd_floor is None:
        progress.fcd_floor = snapshots.judge_real_images()
    if resume:
        restore(gan, resume, checkpoint_dir)
        snapshots.redraw(progress.rows)
        if int(gan.iteration.numpy()) // steps > progress.epochs_done:  # stopped before its epoch's end work
            epoch_end.end(progress.epochs_done + 1)
        done = int(gan.iteration.numpy())
        if progress.epochs_done >= params.epochs:
            print(f"training finished at iteration {done}; writing its reports", flush=True)
        else:
            print(
                f"resuming at iteration {done} (epoch {done // steps + 1}) from {checkpoint_dir}", flush=True
            )
    snapshots.first_grid(
        gan.snapshot_generator(), checkpoint_dir / "epoch_000.png" if checkpoint_dir else None, bool(resume)
    )
    epoch_end.last_good = epoch_end.capture()
    with finish_iteration_on_signal(epoch_end):
        _fit_from(gan, epoch_end, real_images, steps)
        while epoch_end.outcome == "restart" and not epoch_end.interrupted:
            progress.restarts += 1
            epoch_end.go_back(seed=params.seed + RESTART_SEED_STEP * progress.restarts)
            print(f"restart {progress.restarts} of {params.max_restarts} from iteration "
                  f"{int(gan.iteration.numpy())} with a new seed", flush=True)  # fmt: skip
            _fit_from(gan, epoch_end, real_images, steps)
    if epoch_end.interrupted:
        epoch_end.save_checkpoint()
        raise TrainingInterrupted(
            f"training stopped by {epoch_end.interrupted} after iteration {int(gan.iteration.numpy())}; "
            f"checkpoint saved in {checkpoint_dir}: run `dvc repro` again to resume"
        )
    if epoch_end.stopped_by:
        raise PipelineError(
            f"training stopped: failure '{epoch_end.stopped_by}' (see {reports_dir / 'failures.json'}); the "
            "checkpoint and snapshots of the last good epoch are kept. Lower the learning rates or change "
            "train_gan.on_failure in params.yaml"
        )
    # the last epoch's checkpoint is saved: training is done, whatever happens to the reports
    write_final_reports(progress, params.fcd_samples, tracker, reports_dir, digest)
    progress.reported = True
    epoch_end.save_checkpoint()
    return gan


def steps_per_epoch(images: int, params: TrainGanParams, replicas: int) -> int:
    """floor(images / batch_size), refusing a batch larger than the data or one that does not
    split evenly among the replicas."""
    if images < params.batch_size:
        raise PipelineError(
            f"train_gan.batch_size = {params.batch_size} is larger than the "
            f"{images} training images; lower it or raise prepare.limit"
        )
    if (params.batch_size // 2) % replicas:
        raise PipelineError(
            f"train_gan.batch_size = {params.batch_size}: half of it must divide evenly among the "
            f"{replicas} replicas of train_gan.distribute = {params.distribute}; "
            f"use a multiple of {2 * replicas}"
        )
    if replicas > 1:
        print(f"training on {replicas} replicas ({params.distribute})", flush=True)
    return images // params.batch_size


def build_gan(
    model: ModelParams,
    params: TrainGanParams,
    real_images: np.ndarray,
    steps: int,
    strategy: tf.distribute.Strategy,
) -> DCGAN:
    """Both networks, their optimizers and the DCGAN, seeded, built under the strategy."""
    keras.utils.set_random_seed(params.seed)
    image_shape = tuple(real_images.shape[1:])  # (H, W, C) as prepare wrote them
    with strategy.scope():
        with dtype_policy(params.precision):
            discriminator = build_discriminator(
                model, params.seed, LOSSES[params.loss].activation, image_shape=image_shape
            )
            generator = build_generator(model, params.latent_dim, params.seed, image_shape=image_shape)
        d_optimizer = adam(params.d_learning_rate, params.beta1, params.precision)
        g_optimizer = adam(params.g_learning_rate, params.beta1, params.precision)
        gan = DCGAN(discriminator, generator, tf.constant(held_images(real_images)), params, steps)
        gan.compile(d_optimizer, g_optimizer)
        gan.state_variables()  # builds both optimizers under the strategy
    return gan


def restore(gan: DCGAN, resume: Checkpoint, checkpoint_dir: Path | None) -> None:
    """Weights, optimizers and RNG states from `resume`; a checkpoint whose variables do not
    fit the model is moved aside (the fingerprint should have caught it)."""
    expected = checkpoint_lib.layout(gan.state_variables())
    found = [[name, list(value.shape)] for (name, _), value in zip(resume.layout, resume.values)]
    if found != expected:
        rejected = checkpoint_lib.set_aside(checkpoint_dir, "its variables do not fit the model")
        raise PipelineError(f"the checkpoint does not fit the model; it was moved to {rejected}: run again")
    for variable, value in zip(gan.state_variables(), resume.values, strict=True):
        variable.assign(value)


def _fit_from(gan: DCGAN, epoch_end: EpochEnd, real_images, steps: int) -> None:
    """fit() from the current iteration: a partial epoch's remaining steps first, then whole epochs."""
    params = epoch_end.train_params
    done = int(gan.iteration.numpy())
    parts = [(done // steps, steps - done % steps)] if done % steps else []
    parts.append((-(-done // steps), steps))
    for first_epoch, steps_this_part in parts:
        if first_epoch >= params.epochs or not epoch_end.goes_on:
            continue
        epochs = first_epoch + 1 if steps_this_part < steps else params.epochs
        dataset = real_index_batches(
            len(real_images), params.batch_size // 2, params.sampling, params.seed, params.d_steps
        )
        gan.fit(
            dataset.skip(int(gan.iteration.numpy())),
            initial_epoch=first_epoch,
            epochs=epochs,
            steps_per_epoch=steps_this_part,
            callbacks=[epoch_end],
            shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
