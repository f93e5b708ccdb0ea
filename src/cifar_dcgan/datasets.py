"""`prepare` for the MNIST family (four IDX files) and for a folder of images: each source's
reader (cifar_dcgan.idx, cifar_dcgan.image_folder) feeding the shared writer
(cifar_dcgan.prepare_writer), so every dataset leaves the same outputs as CIFAR-10's.
"""

import hashlib
from pathlib import Path

import numpy as np

from cifar_dcgan import idx, image_folder
from cifar_dcgan.errors import PipelineError, clip
from cifar_dcgan.prepare_writer import Filled, PreparedSummary, Split, write_prepared

MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
]  # fmt: skip
IDX_DATASETS = {  # prepare.dataset -> (name, class names, decompressed files' md5s)
    "mnist": ("mnist", MNIST_CLASSES, idx.MNIST_MD5),
    "fashion_mnist": ("fashion-mnist", FASHION_MNIST_CLASSES, idx.FASHION_MNIST_MD5),
}
CHUNK = 256  # folder images decoded and written at a time: memory stays near one chunk


def prepare_idx(
    dataset: str, folder: Path, out_dir: Path, reports_dir: Path, limit: int | None, source: str
) -> PreparedSummary:
    """The four IDX files of `folder` (checked against the official digests) as 28x28x1
    images with their 10 classes."""
    name, class_names, digests = IDX_DATASETS[dataset]
    arrays = idx.load(folder, digests)
    train_images = arrays["train_images"][:limit]

    def fill(tmp: Path, splits: dict[str, Split]) -> Filled:
        for split, images, labels in (
            ("train", train_images, arrays["train_labels"][: len(train_images)]),
            ("test", arrays["test_images"], arrays["test_labels"]),
        ):
            splits[split] = Split(tmp, split, len(images), (28, 28, 1))
            splits[split].reserve()
            splits[split].write(0, images[..., None], labels)  # (n, 28, 28, 1)
            splits[split].close()
        return Filled(class_names, {})

    record = {
        "name": name if limit is None else f"{name}[:{len(train_images)}]",
        "dataset": dataset,
        "source": source,
    }
    digest = idx.digest(digests)
    return write_prepared(out_dir, reports_dir, record, digest, fill)


def prepare_folder(
    root: Path,
    resolution: int,
    channels: int,
    test_fraction: float,
    out_dir: Path,
    reports_dir: Path,
    limit: int | None,
) -> PreparedSummary:
    """Every image under `root` cropped to a square, resized to `resolution` and converted to
    `channels`; files that cannot be used are skipped and listed in skipped.json."""
    scan = image_folder.scan(root, test_fraction)
    entries = {split: [e for e in scan.entries if e.split == split] for split in ("train", "test")}
    if limit is not None:  # a sample of every class, stable when files are added: by path hash
        shuffled = sorted(entries["train"], key=lambda e: _path_hash(root, e.path))
        entries["train"] = sorted(shuffled[:limit], key=lambda e: e.path)
    for split, chosen in entries.items():
        if not chosen:
            raise PipelineError(
                f"{clip(root)}: no {split} images "
                + (
                    "(prepare.test_fraction held none out): raise it or add a test/ folder"
                    if split == "test"
                    else "left for training: add images"
                )
            )
    # the folder's own README (images/README.md, shipped with the project) is no skipped image
    skipped = [dict(item) for item in scan.skipped if item["path"] != "README.md"]
    shape = (resolution, resolution, channels)

    def fill(tmp: Path, splits: dict[str, Split]) -> Filled:
        for split, chosen in entries.items():
            out = splits[split] = Split(tmp, split, len(chosen), shape)
            out.reserve()
            count = 0
            for start in range(0, len(chosen), CHUNK):
                images, labels = _decode(root, chosen[start : start + CHUNK], resolution, channels, skipped)
                out.write(count, images, labels)
                count += len(labels)
            if count == 0:
                raise PipelineError(
                    f"{clip(root)}: none of the {len(chosen)} {split} images could be read; the last: "
                    f"{clip(skipped[-1]['path'])}: {skipped[-1]['reason']}"
                )
            out.close(count)
        return Filled(scan.class_names, {"skipped": skipped})

    record = {"name": f"folder:{root.name}", "dataset": "folder", "source": str(root)}
    # the same folder at another size or split is other data: its generators must not compete
    how = f"{image_folder.content_digest(root)} {resolution} {channels} {test_fraction} {limit}"
    return write_prepared(out_dir, reports_dir, record, hashlib.md5(how.encode()).hexdigest(), fill)


def _path_hash(root: Path, path: Path) -> str:
    return hashlib.md5(str(path.relative_to(root)).encode()).hexdigest()


def _decode(
    root: Path, entries: list, resolution: int, channels: int, skipped: list[dict]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, resolution, resolution, channels) uint8 images and their labels; an image that
    cannot be used is added to `skipped` with its reason."""
    images, labels = [], []
    for entry in entries:
        try:
            images.append(image_folder.load_image(entry.path, resolution, channels))
            labels.append(entry.label)
        except image_folder.SkipImage as reason:
            skipped.append({"path": str(entry.path.relative_to(root)), "reason": str(reason)})
    if not images:
        return np.zeros((0, resolution, resolution, channels), np.uint8), np.zeros(0, np.uint8)
    return np.stack(images), np.asarray(labels, np.uint8)
