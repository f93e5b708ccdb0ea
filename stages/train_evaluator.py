"""Stage `train-evaluator`: train the classifier that judges generated images (on the data's
classes, or on rotations for unlabeled images), and cache the real test split's feature
statistics. Depends only on `prepare`'s outputs and the
`train_evaluator` params, so GAN experiments never retrain it.

python stages/train_evaluator.py --data data/prepared --out models/evaluator \
    --reports reports/train_evaluator
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import cifar_dcgan.quiet_start  # noqa: F401  (first: TensorFlow loads without its start-up notices)
from cifar_dcgan import evaluator
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.evaluator import EvaluatorParams
from cifar_dcgan.errors import run_stage
from cifar_dcgan.machine import machine_tags, precision_notice
from cifar_dcgan.prepared import DataInfo
from cifar_dcgan.tracking import stage_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params, TrackingParams, EvaluatorParams)
    p = params["train_evaluator"]
    if notice := precision_notice("train_evaluator.precision", p.precision):
        print(notice, file=sys.stderr, flush=True)
    data = DataInfo.load(args.data)
    p.check_image_size(data.image_shape)
    train, test = (  # images memory-mapped: a batch is read at a time where the data allows
        (
            np.load(args.data / f"{split}_images.npy", mmap_mode="r"),
            np.load(args.data / f"{split}_labels.npy"),
        )
        for split in ("train", "test")
    )
    with stage_run(
        "train-evaluator",
        params["tracking"].experiment,
        flatten({"train_evaluator": p}),
        machine_tags(p.precision),  # what `auto` became here; oneDNN on or off
        system_metrics=True,
    ) as tracker:
        tracker.log_dataset(data.record, "training")
        start, cpu_start = time.monotonic(), time.process_time()
        classifier, history = evaluator.train_classifier(
            train, test, p, tracker, len(data.class_names), verbose=1 if sys.stdout.isatty() else 2
        )
        timing = {
            "train_minutes": (time.monotonic() - start) / 60,
            "cpu_minutes": (time.process_time() - cpu_start) / 60,
        }
        metrics = evaluator.write_outputs(
            classifier,
            history,
            train,
            test,
            p.seed,
            args.out,
            args.reports,
            list(data.class_names),
            timing,
            data.digest,
        )
        tracker.log_metrics(metrics, step=p.epochs)
        tracker.log_artifact(args.reports / "history.csv", "reports")
    task = "classes" if data.labeled else "rotation"
    if not data.labeled and metrics["test_accuracy"] < evaluator.NEAR_CHANCE:
        print(
            f"warning: the rotation judge reached {metrics['test_accuracy']:.0%} on the test images' "
            "rotations (chance: 25%): these images look alike when turned, so its FCD says little; "
            "add class folders to prepare.path for a classifier judge, or train it longer",
            file=sys.stderr,
        )
    print(
        f"evaluator ({task}): test accuracy {metrics['test_accuracy']:.4f} after {p.epochs} epochs "
        f"({metrics['train_minutes']:.1f} min); FCD of real training images {metrics['real_fcd']:.3f}"
    )


if __name__ == "__main__":
    run_stage(main)
