"""Stage `train-discriminator-sanity`: D must learn real vs. noise, or the pipeline stops.

python stages/train_discriminator_sanity.py --data data/prepared --reports reports/sanity
"""

import argparse
from pathlib import Path

import numpy as np

import cifar_dcgan.quiet_start  # noqa: F401  (first: TensorFlow loads without its start-up notices)
from cifar_dcgan import sanity
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.sanity import SanityParams
from cifar_dcgan.errors import run_stage
from cifar_dcgan.tracking import stage_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params, TrackingParams, ModelParams, SanityParams)
    p = params["train_discriminator_sanity"]
    real_images = np.load(args.data / "train_images.npy", mmap_mode="r")
    params["model"].check_shape(real_images.shape[1:], None)  # a size G cannot reach: before any training
    run_params = flatten({k: params[k] for k in ("model", "train_discriminator_sanity")})
    with stage_run("train-discriminator-sanity", params["tracking"].experiment, run_params) as tracker:
        result = sanity.train_sanity(real_images, params["model"], p, tracker)
        sanity.write_reports(result, args.reports)
        tracker.log_metrics({f"final_{k}": v for k, v in result.final.items()}, step=p.iterations)
        print(
            f"sanity: acc_real {result.final['acc_real']:.3f}, "
            f"acc_fake {result.final['acc_fake']:.3f} after {p.iterations} iterations"
        )
        sanity.check_gate(result, p.min_accuracy)


if __name__ == "__main__":
    run_stage(main)
