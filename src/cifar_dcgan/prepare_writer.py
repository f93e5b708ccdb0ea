"""Writing `prepare`'s outputs, whatever the source: train/test images scaled to [-1, 1] in
`.npy` files streamed to disk, labels, `dataset.json`, and the reports (summary, preview,
skipped files). All of it or nothing: outputs go into temporary folders that replace the old
ones only when complete, with their disk space claimed before the first image."""

import contextlib
import json
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_dcgan.errors import NO_SPACE, PipelineError, clip
from cifar_dcgan.images import save_grid
from cifar_dcgan.prepared import DATASET_FILE, scale

REPORTS_BYTES = 2**20  # summary.json and the preview PNG (about 0.1 MB), with room to spare


@dataclass(frozen=True)
class PreparedSummary:
    train_images: int
    test_images: int
    train_per_class: list[int]
    test_per_class: list[int]
    min_value: float
    max_value: float
    source_md5: str  # the source's digest: the archive's md5, the IDX payloads' or the folder's


class Split:
    """One split's outputs: images streamed into a `.npy` with plain file writes at their
    final offsets (a memory map would count every written page as resident memory), labels
    and running statistics in memory."""

    def __init__(self, folder: Path, name: str, total: int, image_shape: tuple[int, int, int]):
        self.total, self.image_shape = total, image_shape
        self.image_bytes = int(np.prod(image_shape)) * 4
        self.labels = np.zeros(total, np.uint8)
        self.low, self.high = np.inf, -np.inf
        self.head = np.zeros((0, *image_shape), np.float32)  # the first images, for the preview
        self.images_path, self.labels_path = folder / f"{name}_images.npy", folder / f"{name}_labels.npy"
        self.file = open(self.images_path, "wb")
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (total, *image_shape),
        }
        np.lib.format.write_array_header_1_0(self.file, header)
        self.offset = self.file.tell()
        self.size = self.offset + total * self.image_bytes
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
        """uint8 `images` (n, *image_shape) and their labels at index `start`."""
        stop = min(start + len(labels), self.total)
        if stop <= start:
            return
        scaled = scale(images[: stop - start]).reshape(-1, *self.image_shape)  # (n, H, W, C) float32
        self.file.seek(self.offset + start * self.image_bytes)
        self.file.write(scaled.tobytes())
        self.labels[start:stop] = labels[: stop - start]
        self.low, self.high = min(self.low, scaled.min()), max(self.high, scaled.max())
        if start == 0:
            self.head = scaled[:49].copy()

    def close(self, count: int | None = None) -> None:
        """Finish the files; with `count` below `total` (images skipped on the way) keep the
        first `count` images: the file is cut and its header rewritten at the same length."""
        if count is not None and count < self.total:
            self.total, self.labels = count, self.labels[:count]
            self.file.truncate(self.offset + count * self.image_bytes)
            header = repr({"descr": "<f4", "fortran_order": False, "shape": (count, *self.image_shape)})
            length = self.offset - 10  # magic (6), version (2) and the header's length (2) come first
            self.file.seek(8)
            self.file.write(struct.pack("<H", length) + (header.ljust(length - 1) + "\n").encode("latin1"))
        self.file.close()
        np.save(self.labels_path, self.labels)

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the last flush too; the file goes anyway
            self.file.close()


@dataclass
class Filled:
    """What a source's `fill` found besides the images: class names (empty when unlabeled)
    and reports to write beside the summary (name -> JSON-able value)."""

    class_names: list[str]
    reports: dict[str, object]


def write_prepared(
    out_dir: Path,
    reports_dir: Path,
    record: dict,
    digest: str,
    fill: Callable[[Path, dict[str, Split]], Filled],
) -> PreparedSummary:
    """Run `fill(tmp, splits)`, which creates `splits["train"]` and `splits["test"]` in `tmp`
    (`Split(tmp, name, total, shape)`, reserved), writes and closes them; then write
    dataset.json (`record` with the shape, classes and counts) beside them and the summary,
    the preview and `fill`'s reports into `reports_dir`. A failure leaves neither folder,
    nor a temporary one."""
    tmp, tmp_reports = _fresh_temp_dir(out_dir), _fresh_temp_dir(reports_dir)
    splits: dict[str, Split] = {}
    try:
        with _disk_space(out_dir, lambda: sum(out.nbytes for out in splits.values()) + 2**10):
            filled = fill(tmp, splits)
            summary = _summary(splits, digest, len(filled.class_names))
            dataset = {
                **record,
                "digest": digest,
                "image_shape": list(splits["train"].image_shape),
                "classes": filled.class_names,
                "profile": {"train_images": summary.train_images, "test_images": summary.test_images},
            }
            (tmp / DATASET_FILE).write_text(json.dumps(dataset, indent=2) + "\n")
        with _disk_space(reports_dir, lambda: REPORTS_BYTES):
            (tmp_reports / "summary.json").write_text(json.dumps(summary.__dict__, indent=2) + "\n")
            for name, value in {"skipped": [], **filled.reports}.items():
                (tmp_reports / f"{name}.json").write_text(json.dumps(value, indent=2) + "\n")
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


def _summary(splits: dict[str, Split], digest: str, classes: int) -> PreparedSummary:
    train, test = splits["train"], splits["test"]
    return PreparedSummary(
        train_images=train.total,
        test_images=test.total,
        train_per_class=np.bincount(train.labels, minlength=max(classes, 1)).tolist(),
        test_per_class=np.bincount(test.labels, minlength=max(classes, 1)).tolist(),
        min_value=float(min(train.low, test.low)),
        max_value=float(max(train.high, test.high)),
        source_md5=digest,
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
