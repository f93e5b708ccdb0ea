"""Fetch the CIFAR-10 python archive, parse it safely, and write scaled `.npy` arrays.

    python stages/prepare.py   (what `dvc repro prepare` runs)

The archive is downloaded with pooch (retries, progress bar, md5 checked before the file
gets its final name) or read in place when the URL is `file://` or a local path. Its
pickled batches are read with an unpickler that can build only the arrays, lists, dicts,
ints and bytes of the format, streamed one member at a time and written straight to the
outputs, so peak memory stays near the size of one batch. The tar headers are bounded too,
as is every name quoted in an error. Outputs are written into temporary folders that replace
the old ones only when complete, with their disk space claimed before the first image.
"""

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_dcgan.cifar_archive import (
    HINT,
    IMAGE_BYTES,
    META,
    NUM_CLASSES,
    ROOT,
    TEST_BATCH,
    TRAIN_BATCHES,
    check_batch,
    check_meta,
    iter_members,
    load_batch,
)
from cifar_dcgan.errors import NO_SPACE, PipelineError, clip
from cifar_dcgan.images import save_grid
from cifar_dcgan.store import redact

REPORTS_BYTES = 2**20  # summary.json and the preview PNG (about 0.1 MB), with room to spare


DATASET_FILE = "dataset.json"  # name, source URL, archive md5 and counts of the prepared data


@dataclass(frozen=True)
class PreparedSummary:
    train_images: int
    test_images: int
    train_per_class: list[int]
    test_per_class: list[int]
    min_value: float
    max_value: float
    source_md5: str


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], the range of the generator's tanh."""
    return (images.astype(np.float32) - 127.5) / 127.5


class _Split:
    """One split's outputs: images streamed into a `.npy` with plain file writes at their
    final offsets (a memory map would count every written page as resident memory), labels
    and running statistics in memory."""

    def __init__(self, folder: Path, name: str, total: int, per_batch: int):
        self.total, self.per_batch = total, per_batch
        self.labels = np.zeros(total, np.uint8)
        self.low, self.high = np.inf, -np.inf
        self.head = np.zeros((0, 32, 32, 3), np.float32)  # the first images, for the preview
        self.images_path, self.labels_path = folder / f"{name}_images.npy", folder / f"{name}_labels.npy"
        self.file = open(self.images_path, "wb")
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (total, 32, 32, 3),
        }
        np.lib.format.write_array_header_1_0(self.file, header)
        self.offset = self.file.tell()
        self.size = self.offset + total * IMAGE_BYTES * 4
        self.nbytes = self.size + 128 + total  # with the labels' .npy

    def reserve(self) -> None:
        """Claim the images' disk space now: a full disk fails here, at once, not minutes later."""
        self.file.flush()
        if hasattr(os, "posix_fallocate"):  # absent on macOS and Windows
            try:
                os.posix_fallocate(self.file.fileno(), 0, self.size)
                return
            except OSError as error:
                if error.errno in NO_SPACE:
                    raise
        self.file.truncate(self.size)  # a file system without it: blocks are taken as written

    def write(self, start: int, images: np.ndarray, labels: np.ndarray) -> None:
        stop = min(start + len(labels), self.total)
        if stop <= start:
            return
        scaled = scale(images[: stop - start])  # (n, 32, 32, 3) float32
        self.file.seek(self.offset + start * IMAGE_BYTES * 4)
        self.file.write(scaled.tobytes())
        self.labels[start:stop] = labels[: stop - start]
        self.low, self.high = min(self.low, scaled.min()), max(self.high, scaled.max())
        if start == 0:
            self.head = scaled[:49].copy()

    def close(self) -> None:
        self.file.close()
        np.save(self.labels_path, self.labels)

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the last flush too; the file goes anyway
            self.file.close()


def prepare(
    archive: Path, md5: str, out_dir: Path, reports_dir: Path, limit: int | None, source: str = ""
) -> PreparedSummary:
    """Write train/test images and labels as `.npy` into `out_dir`, with `dataset.json` (what
    the data is, for the runs that train on it), and the summary and preview into
    `reports_dir`: all of it, or nothing (a failure leaves neither folder, nor a temporary one).
    `source` (the URL) is written without its password."""
    tmp, tmp_reports = _fresh_temp_dir(out_dir), _fresh_temp_dir(reports_dir)
    splits: dict[str, _Split] = {}
    try:
        with _disk_space(out_dir, lambda: sum(out.nbytes for out in splits.values()) + 2**10):
            _write_splits(archive, tmp, limit, splits)
            summary = _summary(splits, md5)
            dataset = {
                "name": "cifar-10" if limit is None else f"cifar-10[:{summary.train_images}]",
                "digest": md5,
                "source": redact(source) if source else str(archive),
                "profile": {"train_images": summary.train_images, "test_images": summary.test_images},
            }
            (tmp / DATASET_FILE).write_text(json.dumps(dataset, indent=2) + "\n")
        with _disk_space(reports_dir, lambda: REPORTS_BYTES):
            (tmp_reports / "summary.json").write_text(json.dumps(summary.__dict__, indent=2) + "\n")
            save_grid(splits["train"].head, tmp_reports / "preview.png")
        _replace_dir(tmp, out_dir)
        _replace_dir(tmp_reports, reports_dir)
    except BaseException:
        for out in splits.values():
            out.discard()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_reports, ignore_errors=True)
        raise
    return summary


def _write_splits(archive: Path, folder: Path, limit: int | None, splits: dict[str, _Split]) -> None:
    """Stream the archive's batches into `splits` ("train" and "test"), both created at the
    first batch (every batch has its size) with their disk space claimed then."""
    seen = set()
    for name, payload in iter_members(archive):
        batch = load_batch(name, payload)
        seen.add(name)
        if name == META:
            check_meta(batch)
            continue
        images, labels = check_batch(name, batch)
        if not splits:
            train = len(labels) * len(TRAIN_BATCHES)
            splits["train"] = _Split(folder, "train", min(train, limit) if limit else train, len(labels))
            splits["test"] = _Split(folder, "test", len(labels), len(labels))
            for out in splits.values():
                out.reserve()
        split = "test" if name == TEST_BATCH else "train"
        out = splits[split]
        if len(labels) != out.per_batch:
            raise PipelineError(
                f"{ROOT}/{name} holds {len(labels)} images, other batches "
                f"{out.per_batch}; the archive is corrupt. {HINT}"
            )
        out.write(0 if split == "test" else TRAIN_BATCHES.index(name) * out.per_batch, images, labels)
    missing = sorted((set(TRAIN_BATCHES) | {TEST_BATCH, META}) - seen)
    if missing:
        raise PipelineError(f"{clip(archive)}: missing member(s) {missing}; {HINT}")
    for out in splits.values():
        out.close()


def _summary(splits: dict[str, _Split], md5: str) -> PreparedSummary:
    train, test = splits["train"], splits["test"]
    return PreparedSummary(
        train_images=train.total,
        test_images=test.total,
        train_per_class=np.bincount(train.labels, minlength=NUM_CLASSES).tolist(),
        test_per_class=np.bincount(test.labels, minlength=NUM_CLASSES).tolist(),
        min_value=float(min(train.low, test.low)),
        max_value=float(max(train.high, test.high)),
        source_md5=md5,
    )


@contextlib.contextmanager
def _disk_space(folder: Path, needed: Callable[[], int]) -> Iterator[None]:
    """Turn a failed write into `folder` into one line; for a full disk (or quota) it says how
    much space the folder's files take."""
    try:
        yield
    except OSError as error:
        full = error.errno in NO_SPACE
        need = f"; its files need {needed() / 1e6:.1f} MB there" if full else ""
        raise PipelineError(
            f"cannot write {clip(folder)}: {error.strerror}{need}; "
            f"{'free some space' if full else 'make it writable'} or choose another output folder"
        ) from None


def _fresh_temp_dir(out_dir: Path) -> Path:
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as error:
        raise PipelineError(
            f"cannot write to {out_dir.parent}: {error.strerror}; "
            "make the directory writable or choose another output"
        ) from None
    return tmp


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
