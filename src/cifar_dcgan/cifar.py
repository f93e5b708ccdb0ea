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

from pathlib import Path

from cifar_dcgan.cifar_archive import (
    HINT,
    META,
    ROOT,
    TEST_BATCH,
    TRAIN_BATCHES,
    check_batch,
    check_meta,
    iter_members,
    load_batch,
)
from cifar_dcgan.errors import PipelineError, clip
from cifar_dcgan.prepare_writer import Filled, PreparedSummary, Split, write_prepared
from cifar_dcgan.store import redact

IMAGE_SHAPE = (32, 32, 3)


def prepare(
    archive: Path, md5: str, out_dir: Path, reports_dir: Path, limit: int | None, source: str = ""
) -> PreparedSummary:
    """Write train/test images and labels as `.npy` into `out_dir`, with `dataset.json` (what
    the data is, for the runs that train on it), and the summary and preview into
    `reports_dir`: all of it, or nothing. `source` (the URL) is written without its password."""
    record = {
        "name": "cifar-10" if limit is None else f"cifar-10[:{limit}]",
        "dataset": "cifar10",
        "source": redact(source) if source else str(archive),
    }
    return write_prepared(
        out_dir, reports_dir, record, md5, lambda tmp, splits: _write_splits(archive, tmp, limit, splits)
    )


def _write_splits(archive: Path, folder: Path, limit: int | None, splits: dict[str, Split]) -> Filled:
    """Stream the archive's batches into `splits` ("train" and "test"), both created at the
    first batch (every batch has its size) with their disk space claimed then."""
    seen, class_names = set(), []
    for name, payload in iter_members(archive):
        batch = load_batch(name, payload)
        seen.add(name)
        if name == META:
            class_names = check_meta(batch)
            continue
        images, labels = check_batch(name, batch)
        if not splits:
            train = len(labels) * len(TRAIN_BATCHES)
            per_batch = len(labels)
            splits["train"] = Split(folder, "train", min(train, limit) if limit else train, IMAGE_SHAPE)
            splits["test"] = Split(folder, "test", per_batch, IMAGE_SHAPE)
            for out in splits.values():
                out.reserve()
        split = "test" if name == TEST_BATCH else "train"
        out = splits[split]
        if len(labels) != per_batch:
            raise PipelineError(
                f"{ROOT}/{name} holds {len(labels)} images, other batches "
                f"{per_batch}; the archive is corrupt. {HINT}"
            )
        out.write(0 if split == "test" else TRAIN_BATCHES.index(name) * per_batch, images, labels)
    missing = sorted((set(TRAIN_BATCHES) | {TEST_BATCH, META}) - seen)
    if missing:
        raise PipelineError(f"{clip(archive)}: missing member(s) {missing}; {HINT}")
    for out in splits.values():
        out.close()
    return Filled(class_names, {})
