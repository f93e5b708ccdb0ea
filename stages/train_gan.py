"""Stage `train-gan`: train the DCGAN, save generator snapshots, track it all in MLflow.
Resumes from the checkpoint when one of the same params and data exists (after Ctrl-C).

    python stages/train_gan.py --data data/prepared --snapshots models/snapshots \
        --checkpoint models/checkpoint --evaluator models/evaluator --reports reports/train_gan

With `train_gan.distribute: multi_worker`, start this same command on every machine of the
cluster, each with its TF_CONFIG; only the chief writes outputs and tracks.
"""

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

import cifar_dcgan.quiet_start  # noqa: F401  (first: TensorFlow loads without its start-up notices)
from cifar_dcgan import checkpoint
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import EMA_COVERED, TrainGanParams
from cifar_dcgan.errors import run_stage
from cifar_dcgan.evaluator import Evaluator
from cifar_dcgan.losses import LOSSES
from cifar_dcgan.machine import machine_tags, precision_notice
from cifar_dcgan.prepared import DataInfo
from cifar_dcgan.tracker import NullTracker
from cifar_dcgan.tracking import stage_run
from cifar_dcgan.training import is_chief, make_strategy, train_gan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--snapshots", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--evaluator", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params, TrackingParams, ModelParams, TrainGanParams)
    model, train = params["model"], params["train_gan"]
    strategy = make_strategy(train.distribute)  # before any other TensorFlow work
    if notice := precision_notice("train_gan.precision", train.precision):
        print(notice, file=sys.stderr, flush=True)
    data = DataInfo.load(args.data)
    model.check_shape(data.image_shape, train.latent_dim)  # before any run is opened
    real_images = np.load(args.data / "train_images.npy", mmap_mode="r")
    judge = Evaluator.load(args.evaluator)
    judge.check_images(data.image_shape, str(args.data), data.digest)
    # (on a cluster, every worker resumes from this folder: keep it on shared storage)
    iterations = train.epochs * (len(real_images) // train.batch_size)
    coverage = train.ema_coverage(iterations)
    if coverage < EMA_COVERED:
        print(
            f"warning: train_gan.g_ema = {train.g_ema:g} averages over about {1 / (1 - train.g_ema):,.0f} "
            f"updates; this run has {iterations:,}, which fill {coverage:.0%} of its weights: the average "
            "weighs its updates more evenly than that decay, the earliest ones too. "
            "Train longer or lower g_ema",
            file=sys.stderr,
            flush=True,
        )
    resume = checkpoint.load(
        args.checkpoint, checkpoint.fingerprint(model, train, real_images, judge.digest), train.epochs
    )
    with contextlib.ExitStack() as stack:
        if is_chief(strategy):
            run_params = flatten({"model": model, "train_gan": train})
            resume_run_id = resume.run_id if resume else None
            tracker = stack.enter_context(
                stage_run(
                    "train-gan",
                    params["tracking"].experiment,
                    run_params,
                    # FCDs of different judges never pool; the description says what d1/d2/g mean
                    {
                        "evaluator_digest": judge.digest,
                        "judge_task": judge.task,  # classes | rotation
                        **({"judge_accuracy": f"{judge.accuracy:.4f}"} if judge.accuracy is not None else {}),
                        "dataset": data.name,
                        "dataset_digest": data.digest,
                        # the evidence a comparison names: what trained, on how much, for how long
                        "code_digest": checkpoint.code_digest(),
                        "training_images": str(len(real_images)),
                        "iterations": str(iterations),
                        "g_ema_coverage": f"{coverage:.4f}",
                        "mlflow.note.content": LOSSES[train.loss].note,
                        **machine_tags(train.precision),  # what `auto` became here; oneDNN on or off
                    },
                    resume_run_id=resume_run_id,
                    system_metrics=True,
                )
            )
            tracker.log_dataset(data.record, "training")
            snapshots, reports, state = args.snapshots, args.reports, args.checkpoint
        else:  # another worker of a cluster computes its share; its files are thrown away
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            tracker = NullTracker()
            snapshots, reports, state = (scratch / name for name in ("snapshots", "reports", "checkpoint"))
        train_gan(real_images, model, train, snapshots, reports, tracker, state, resume, judge, strategy)


if __name__ == "__main__":
    run_stage(main)
