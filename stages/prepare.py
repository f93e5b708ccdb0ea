"""Stage `prepare`: fetch the dataset `prepare.dataset` names (CIFAR-10, MNIST, Fashion-MNIST
or a folder of images), verify it, write scaled `.npy` arrays, a preview and a report of
skipped files.

python stages/prepare.py --out data/prepared --reports reports/prepare
"""

import argparse
import json
from pathlib import Path

from cifar_dcgan import cifar, datasets, download, idx
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.prepare import PrepareParams
from cifar_dcgan.errors import run_stage
from cifar_dcgan.prepared import DataInfo
from cifar_dcgan.store import redact
from cifar_dcgan.tracking import stage_run


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
        if p.dataset == "cifar10":
            archive = download.fetch_archive(p.url, p.md5, args.cache, p.retries)
            summary = cifar.prepare(archive, p.md5, args.out, args.reports, p.limit, redact(p.url))
        elif p.dataset == "folder":
            summary = datasets.prepare_folder(
                Path(p.path), p.resolution, p.channels, p.test_fraction, args.out, args.reports, p.limit
            )
        else:
            folder = download.fetch_folder(
                p.url, idx.download_names(), args.cache / p.dataset, p.retries, idx.HINT
            )
            summary = datasets.prepare_idx(p.dataset, folder, args.out, args.reports, p.limit, redact(p.url))
        data = DataInfo.load(args.out)
        tracker.log_metrics(
            {"train_images": summary.train_images, "test_images": summary.test_images}, step=0
        )
        tracker.log_dataset(data.record, "prepared")
        for report in ("summary.json", "skipped.json", "preview.png"):
            tracker.log_artifact(args.reports / report)
    print(
        f"prepared {summary.train_images} training and {summary.test_images} test images "
        f"of {data.image_shape} ({len(data.class_names) or 'no'} classes) in {args.out}, "
        f"values in [{summary.min_value}, {summary.max_value}]"
    )
    if skipped := json.loads((args.reports / "skipped.json").read_text()):
        print(f"skipped {len(skipped)} file(s): {args.reports / 'skipped.json'} says why")


if __name__ == "__main__":
    run_stage(main)
