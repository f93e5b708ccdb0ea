"""What `prepare` wrote, as the later stages read it: the image shape, the class names and
the record of where the data came from (`dataset.json`). Every stage takes the shape and
the classes from here, never from constants, so one parameter (`prepare.dataset`) changes
the data everywhere."""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_dcgan.errors import PipelineError, clip

DATASET_FILE = "dataset.json"  # name, source, digest, shape, classes and counts of the prepared data


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], the range of the generator's tanh: how `prepare`
    writes images and how training restores the pixels it holds."""
    return (images.astype(np.float32) - 127.5) / 127.5


@dataclass(frozen=True)
class DataInfo:
    image_shape: tuple[int, int, int]  # (side, side, channels)
    class_names: tuple[str, ...]  # empty for unlabeled images
    record: dict = field(default_factory=dict)  # dataset.json as written

    @property
    def labeled(self) -> bool:
        return len(self.class_names) >= 2

    @property
    def name(self) -> str:
        return str(self.record.get("name", "unknown"))

    @property
    def digest(self) -> str:
        return str(self.record.get("digest", ""))

    @classmethod
    def load(cls, data_dir: Path) -> "DataInfo":
        """Read `data_dir`'s dataset.json and the training images' shape (from the .npy header)."""
        try:
            record = json.loads((data_dir / DATASET_FILE).read_text())
            shape = np.load(data_dir / "train_images.npy", mmap_mode="r").shape
            classes = record["classes"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PipelineError(
                f"{clip(data_dir)} does not hold data prepared by this version ({error}); "
                "run `dvc repro prepare`"
            ) from None
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] not in (1, 3):
            raise PipelineError(
                f"{clip(data_dir)}/train_images.npy holds images of shape {shape[1:]}, not "
                "(side, side, 1 or 3); run `dvc repro prepare`"
            )
        return cls((shape[1], shape[2], shape[3]), tuple(str(c) for c in classes), record)


def chunks(images: np.ndarray, nbytes: int = 2**25) -> Iterator[np.ndarray]:
    """`images` a chunk of about `nbytes` at a time. A memory-mapped `.npy` is read with plain
    file reads: pages read through the mapping would count as the process's resident memory
    until it ends, a whole 10 GB file's worth after one pass."""
    rows = max(1, nbytes // max(1, images[:1].nbytes))
    if not (isinstance(images, np.memmap) and images.filename):
        for start in range(0, len(images), rows):
            yield np.asarray(images[start : start + rows])
        return
    row_items = int(np.prod(images.shape[1:]))
    with open(images.filename, "rb") as file:
        file.seek(images.offset)
        for start in range(0, len(images), rows):
            count = min(rows, len(images) - start)
            yield np.fromfile(file, images.dtype, count * row_items).reshape(count, *images.shape[1:])
