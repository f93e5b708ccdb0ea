"""Stage `select-generator`: pick a snapshot by the rule in params, record why, register it.

    python stages/select_generator.py --snapshots models/snapshots --training reports/train_gan \
        --out models/generator.keras --reports reports/select_generator
"""

import argparse
import json
from pathlib import Path

import numpy as np

import cifar_dcgan.quiet_start  # noqa: F401  (first: TensorFlow loads without its start-up notices)
from cifar_dcgan import registry
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.select import SelectParams
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.errors import run_stage
from cifar_dcgan.models import load_model
from cifar_dcgan.prepared import DataInfo
from cifar_dcgan.selection import select_generator, version_tags
from cifar_dcgan.tracking import stage_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--snapshots", type=Path, required=True)
    parser.add_argument("--training", type=Path, required=True, help="train-gan's reports folder")
    parser.add_argument("--data", type=Path, required=True, help="prepare's output (test images for FID)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params, TrackingParams, SelectParams, TrainGanParams)
    p = params["select_generator"]
    training = json.loads((args.training / "run.json").read_text())
    data = DataInfo.load(args.data)
    training_run_id = training["run_id"]
    with stage_run(
        "select-generator",
        params["tracking"].experiment,
        flatten({"select_generator": p}),
        {"training_run_id": training_run_id} if training_run_id else {},
        parent_run_id=training_run_id,  # outside a DVC experiment: nested under the training
    ) as tracker:
        selection = select_generator(
            args.training / "snapshots.csv",
            args.snapshots,
            args.training / "grids",
            training_run_id,
            p,
            args.out,
            args.reports,
            np.load(args.data / "test_images.npy", mmap_mode="r"),
            params["train_gan"].latent_distribution,
        )
        quality = {
            k: v for k, v in selection.items() if k in ("chosen_fcd", "chosen_kid", "fid") and v is not None
        }
        if selection.get("fid_note") and selection.get("fid") is None:
            tracker.set_tags({"fid_skipped": selection["fid_note"]})
        tracker.log_metrics({"selected_epoch": selection["epoch"], **quality}, step=0)
        tracker.log_artifact(args.reports / "selection.json")
        tracker.log_artifact(args.reports / "contact_sheet.png")
        description = f"epoch {selection['epoch']} of training run {training_run_id}; {selection['rule']}"
        registration = registry.publish(
            tracker,
            load_model(args.out),
            p.model_name,
            p.alias,
            description,
            {
                **version_tags(selection, p, params["train_gan"].fcd_samples, training),
                "dataset": data.name,
                "dataset_digest": data.digest,
            },
            p.promote,
        )
    print(f"selected epoch {selection['epoch']} ({selection['rule']}) -> {args.out}")
    if registration:
        print(f"registered {p.model_name} version {registration.version}; {registration.reason}")


if __name__ == "__main__":
    run_stage(main)
