"""Stage `train-gan`: train the DCGAN, save generator snapshots, track it all in MLflow.

    python stages/train_gan.py --data data/prepared --snapshots models/snapshots \
        --reports reports/train_gan
"""

import argparse
from pathlib import Path

import numpy as np

from cifar_dcgan.config import flatten, load_params
from cifar_dcgan.errors import run_stage
from cifar_dcgan.tracking import stage_run
from cifar_dcgan.training import train_gan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--snapshots", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params, "tracking", "model", "train_gan")
    real_images = np.load(args.data / "train_images.npy", mmap_mode="r")
    run_params = flatten({k: params[k] for k in ("model", "train_gan")})
    with stage_run("train-gan", params["tracking"].experiment, run_params) as tracker:
        train_gan(real_images, params["model"], params["train_gan"], args.snapshots, args.reports, tracker)


if __name__ == "__main__":
    run_stage(main)
