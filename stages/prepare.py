"""Stage `prepare`: fetch CIFAR-10, verify it, write scaled `.npy` arrays and a preview.

python stages/prepare.py --out data/prepared --reports reports/prepare
"""

import argparse
from pathlib import Path

from cifar_dcgan import cifar, download
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.prepare import PrepareParams
from cifar_dcgan.errors import run_stage
from cifar_dcgan.store import redact
from cifar_dcgan.tracking import prepared_dataset, stage_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("data/downloads"),
        help="where downloaded archives are kept between runs",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params, TrackingParams, PrepareParams)
    p = params["prepare"]
    tracked = {**flatten({"prepare": p}), "prepare.url": redact(p.url)}  # no password in the store
    with stage_run("prepare", params["tracking"].experiment, tracked) as tracker:
        archive = download.fetch_archive(p.url, p.md5, args.cache, p.retries)
        summary = cifar.prepare(archive, p.md5, args.out, args.reports, p.limit, redact(p.url))
        tracker.log_metrics(
            {"train_images": summary.train_images, "test_images": summary.test_images}, step=0
        )
        tracker.log_dataset(prepared_dataset(args.out), "prepared")
        tracker.log_artifact(args.reports / "summary.json")
        tracker.log_artifact(args.reports / "preview.png")
    print(
        f"prepared {summary.train_images} training and {summary.test_images} test images "
        f"in {args.out}, values in [{summary.min_value}, {summary.max_value}]"
    )


if __name__ == "__main__":
    run_stage(main)
