"""Fetch the CIFAR-10 python archive, parse it safely, and write scaled `.npy` arrays.

    python stages/prepare.py   (what `dvc repro prepare` runs)

The archive is downloaded with pooch (retries, progress bar, md5 checked before the file
gets its final name) or read in place when the URL is `file://` or a local path. Its
pickled batches are read with an unpickler that can build only the arrays, lists, dicts,
ints and bytes of the format, streamed one member at a time and written straight to the
outputs, so peak memory stays near the size of one batch.
"""

import io
import json
import pickle
import shutil
import tarfile
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch
import requests

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.images import save_grid

ROOT = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
OPTIONAL = {"readme.html"}
BATCH_IMAGES = 10_000
IMAGE_BYTES = 32 * 32 * 3
MAX_MEMBER_BYTES = 64 * 2**20  # a real batch is 30.7 MB: anything far larger is not CIFAR-10
NUM_CLASSES = 10
HINT = (
    "check prepare.url / prepare.md5 in params.yaml, or pass a local copy with "
    "`dvc exp run -S prepare.url=/path/to/cifar-10-python.tar.gz`"
)

# The only globals a CIFAR-10 batch pickle may name; each maps to a harmless constructor.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): lambda text, encoding="utf-8": text.encode(encoding),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays, lists, dicts, ints and bytes; refuses every other global."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}'") from None


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


def fetch_archive(url: str, md5: str, cache_dir: Path, retries: int) -> Path:
    """Return a local path to the archive whose md5 is `md5`, downloading it if needed."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return _download(url, md5, cache_dir, retries)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise PipelineError(
                f"prepare.url = {url!r}: a file:// URL of another host ({parsed.netloc}) cannot be read "
                "here; copy the archive to this machine and give its path, or serve it over http(s)"
            )
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        path = Path(url)
    else:
        raise PipelineError(
            f"prepare.url = {url!r}: unsupported scheme '{parsed.scheme}'; "
            "use http(s)://, file:// or a local path"
        )
    if path.is_dir():
        raise PipelineError(
            f"prepare.url = {url!r} is a folder ({path}), not the archive; give the path of "
            "cifar-10-python.tar.gz itself"
        )
    if path.exists() and not path.is_file():
        raise PipelineError(
            f"prepare.url = {url!r} is not a regular file ({path} is a device, pipe or socket); "
            "give the path of cifar-10-python.tar.gz"
        )
    if not path.is_file():
        raise PipelineError(f"archive not found: {path} (from prepare.url = {url!r}); {HINT}")
    actual = pooch.file_hash(str(path), alg="md5")
    if actual != md5:
        raise PipelineError(
            f"md5 mismatch for {path}: expected {md5}, got {actual}; "
            f"the file is corrupt or another version. {HINT}"
        )
    return path


def _download(url: str, md5: str, cache_dir: Path, retries: int) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name or "cifar-10-python.tar.gz"
    fetcher = pooch.create(
        path=cache_dir, base_url="", registry={name: f"md5:{md5}"}, urls={name: url}, retry_if_failed=retries
    )
    try:
        return Path(fetcher.fetch(name, progressbar=True))
    except requests.exceptions.HTTPError as error:
        raise PipelineError(
            f"download of {url} failed: HTTP {error.response.status_code} "
            f"after {retries + 1} attempt(s); {HINT}"
        ) from None
    except requests.exceptions.RequestException as error:
        raise PipelineError(
            f"cannot reach {url} ({type(error).__name__}) after {retries + 1} "
            f"attempt(s); check the network or {HINT}"
        ) from None
    except ValueError as error:  # pooch's hash mismatch
        raise PipelineError(f"md5 mismatch for {url}: {error}; {HINT}") from None
    except OSError as error:
        raise PipelineError(
            f"cannot write the download cache {cache_dir}: {error}; make it writable or free some space"
        ) from None


def iter_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Stream (name, bytes) of each batch member, rejecting anything outside the layout."""
    allowed = set(TRAIN_BATCHES) | {TEST_BATCH, META} | OPTIONAL
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                name = member.name.rstrip("/")
                if member.isdir() and name == ROOT:
                    continue
                parts = name.split("/")
                if len(parts) != 2 or parts[0] != ROOT or parts[1] not in allowed or not member.isfile():
                    raise PipelineError(
                        f"{archive}: unexpected member '{member.name}' (a {_kind(member)}); "
                        f"a CIFAR-10 archive holds only regular files {ROOT}/{{"
                        f"{', '.join(sorted(allowed))}}}. {HINT}"
                    )
                if member.size > MAX_MEMBER_BYTES:
                    raise PipelineError(
                        f"{archive}: member '{member.name}' is {member.size} "
                        f"bytes, over the {MAX_MEMBER_BYTES} limit. {HINT}"
                    )
                if parts[1] not in OPTIONAL:
                    yield parts[1], tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise PipelineError(
            f"{archive} is not a readable .tar.gz ({type(error).__name__}: "
            f"{error}); it is truncated or corrupt. {HINT}"
        ) from None


def load_batch(name: str, payload: bytes) -> dict:
    """Unpickle one member with the restricted unpickler."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise PipelineError(
            f"{ROOT}/{name}: {error}; the archive is not a genuine CIFAR-10 "
            f"archive and was not loaded. {HINT}"
        ) from None
    except Exception as error:  # any malformed pickle stream
        raise PipelineError(
            f"{ROOT}/{name} is not a valid pickle ({type(error).__name__}: {error}). {HINT}"
        ) from None
    if not isinstance(batch, dict):
        raise PipelineError(f"{ROOT}/{name}: expected a dict, got {type(batch).__name__}")
    return batch


def check_batch(name: str, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return (uint8 images (n, 32, 32, 3), labels (n,)) after checking them; n is 10,000 in
    the official archive (smaller batches of the same layout are accepted, for tests)."""
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and 1 <= data.shape[0] <= BATCH_IMAGES
        and data.shape[1] == IMAGE_BYTES
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise PipelineError(
            f"{ROOT}/{name}: b'data' must be uint8 (n <= {BATCH_IMAGES}, {IMAGE_BYTES}), got {got}. {HINT}"
        )
    if not (
        isinstance(labels, list)
        and len(labels) == len(data)
        and all(type(v) is int and 0 <= v < NUM_CLASSES for v in labels)
    ):
        raise PipelineError(
            f"{ROOT}/{name}: b'labels' must be a list of {len(data)} ints in 0..{NUM_CLASSES - 1}. {HINT}"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (n, 32, 32, 3)
    return images, np.asarray(labels, dtype=np.uint8)


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
        self.file.truncate(self.offset + total * IMAGE_BYTES * 4)

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


def prepare(
    archive: Path, md5: str, out_dir: Path, reports_dir: Path, limit: int | None, source: str = ""
) -> PreparedSummary:
    """Write train/test images and labels as `.npy` into `out_dir`, with `dataset.json` (what
    the data is, for the runs that train on it), and the summary and preview into
    `reports_dir`: all of it, or nothing (a failure leaves neither folder)."""
    tmp, tmp_reports = _fresh_temp_dir(out_dir), _fresh_temp_dir(reports_dir)
    splits: dict[str, _Split] = {}
    try:
        seen = set()
        for name, payload in iter_members(archive):
            batch = load_batch(name, payload)
            seen.add(name)
            if name == META:
                _check_meta(batch)
                continue
            images, labels = check_batch(name, batch)
            split = "test" if name == TEST_BATCH else "train"
            if split not in splits:  # sized by the first batch: every batch has the same size
                total = len(labels) * (1 if split == "test" else len(TRAIN_BATCHES))
                total = min(total, limit) if split == "train" and limit else total
                splits[split] = _Split(tmp, split, total, len(labels))
            out = splits[split]
            if len(labels) != out.per_batch:
                raise PipelineError(
                    f"{ROOT}/{name} holds {len(labels)} images, other batches "
                    f"{out.per_batch}; the archive is corrupt. {HINT}"
                )
            out.write(0 if split == "test" else TRAIN_BATCHES.index(name) * out.per_batch, images, labels)
        missing = sorted((set(TRAIN_BATCHES) | {TEST_BATCH, META}) - seen)
        if missing:
            raise PipelineError(f"{archive}: missing member(s) {missing}; {HINT}")
        for out in splits.values():
            out.close()
        train, test = splits["train"], splits["test"]
        summary = PreparedSummary(
            train_images=train.total,
            test_images=test.total,
            train_per_class=np.bincount(train.labels, minlength=NUM_CLASSES).tolist(),
            test_per_class=np.bincount(test.labels, minlength=NUM_CLASSES).tolist(),
            min_value=float(min(train.low, test.low)),
            max_value=float(max(train.high, test.high)),
            source_md5=md5,
        )
        (tmp_reports / "summary.json").write_text(json.dumps(summary.__dict__, indent=2) + "\n")
        dataset = {
            "name": "cifar-10" if limit is None else f"cifar-10[:{train.total}]",
            "digest": md5,
            "source": source or str(archive),
            "profile": {"train_images": train.total, "test_images": test.total},
        }
        (tmp / DATASET_FILE).write_text(json.dumps(dataset, indent=2) + "\n")
        save_grid(train.head, tmp_reports / "preview.png")
        _replace_dir(tmp, out_dir)
        _replace_dir(tmp_reports, reports_dir)
    except BaseException:
        for out in splits.values():
            out.file.close()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_reports, ignore_errors=True)
        raise
    return summary


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "symlink" if member.issym() else "hard link"
    return "directory" if member.isdir() else "regular file" if member.isfile() else "special file"


def _check_meta(meta: dict) -> None:
    names = meta.get(b"label_names")
    if not (isinstance(names, list) and len(names) == NUM_CLASSES):
        raise PipelineError(f"{ROOT}/{META}: b'label_names' must list {NUM_CLASSES} classes")


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
