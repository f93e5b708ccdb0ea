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
import errno
import io
import json
import logging
import os
import pickle
import shutil
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch
import requests

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.images import save_grid
from cifar_dcgan.store import redact

ROOT = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
OPTIONAL = {"readme.html"}
BATCH_IMAGES = 10_000
IMAGE_BYTES = 32 * 32 * 3
MAX_MEMBER_BYTES = 64 * 2**20  # a real batch is 30.7 MB: anything far larger is not CIFAR-10
MAX_MEMBERS = 32  # the archive holds 8 files and their folder; tarfile keeps every header read
MAX_HEADER_BYTES = 64 * 2**10  # GNU long names and PAX records of the whole archive (the official has none)
MAX_QUOTED = 200  # characters of a name, path or URL quoted in an error
REPORTS_BYTES = 2**20  # summary.json and the preview PNG (about 0.1 MB), with room to spare
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NUM_CLASSES = 10
ARCHIVE_BYTES = 170_498_071  # cifar-10-python.tar.gz
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
            raise pickle.UnpicklingError(f"refusing to load global {_quote(f'{module}.{name}')}") from None


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
    """Return a local path to the archive whose md5 is `md5`, downloading it if needed.
    Errors show the URL without its user name or password."""
    parsed, shown = urllib.parse.urlparse(url), _quote(redact(url))
    if parsed.scheme in ("http", "https"):
        return _download(url, md5, cache_dir, retries)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            host = _clip(parsed.hostname or "?")
            raise PipelineError(
                f"prepare.url = {shown}: a file:// URL of another host ({host}) cannot be read here; "
                "copy the archive to this machine and give its path, or serve it over http(s)"
            )
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        path = Path(url)
    else:
        raise PipelineError(
            f"prepare.url = {shown}: unsupported scheme {_quote(parsed.scheme)}; "
            "use http(s)://, file:// or a local path"
        )
    if path.is_dir():
        raise PipelineError(
            f"prepare.url = {shown} is a folder ({_clip(path)}), not the archive; give the path of "
            "cifar-10-python.tar.gz itself"
        )
    if path.exists() and not path.is_file():
        raise PipelineError(
            f"prepare.url = {shown} is not a regular file ({_clip(path)} is a device, pipe or socket); "
            "give the path of cifar-10-python.tar.gz"
        )
    if not path.is_file():
        raise PipelineError(f"archive not found: {_clip(path)} (from prepare.url = {shown}); {HINT}")
    actual = pooch.file_hash(str(path), alg="md5")
    if actual != md5:
        raise PipelineError(
            f"md5 mismatch for {_clip(path)}: expected {md5}, got {actual}; "
            f"the file is corrupt or another version. {HINT}"
        )
    return path


def _download(url: str, md5: str, cache_dir: Path, retries: int) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name or "cifar-10-python.tar.gz"
    fetcher = pooch.create(
        path=cache_dir, base_url="", registry={name: f"md5:{md5}"}, urls={name: url}, retry_if_failed=retries
    )
    shown, redacting = _clip(redact(url)), _RedactUrl(url)
    pooch.get_logger().addFilter(redacting)  # its "Downloading file ... from <url>" line
    try:
        return Path(fetcher.fetch(name, progressbar=True))
    except requests.exceptions.HTTPError as error:
        raise PipelineError(
            f"download of {shown} failed: HTTP {error.response.status_code} "
            f"after {retries + 1} attempt(s); {HINT}"
        ) from None
    except requests.exceptions.RequestException as error:
        raise PipelineError(
            f"cannot reach {shown} ({type(error).__name__}) after {retries + 1} "
            f"attempt(s); check the network or {HINT}"
        ) from None
    except ValueError as error:  # pooch's hash mismatch
        raise PipelineError(f"md5 mismatch for {shown}: {_clip(error)}; {HINT}") from None
    except OSError as error:
        need = (
            f" (the official archive takes {ARCHIVE_BYTES / 1e6:.1f} MB)" if error.errno in NO_SPACE else ""
        )
        raise PipelineError(
            f"cannot write the download cache {_clip(cache_dir)}: {error.strerror}{need}; "
            "make it writable or free some space"
        ) from None
    finally:
        pooch.get_logger().removeFilter(redacting)


class _RedactUrl(logging.Filter):
    """Shows `url` without its user name or password in the log records it passes."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.shown = url, redact(url)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.shown if arg == self.url else arg for arg in record.args)
        return True


EXTENDED_HEADERS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _HeaderRefused(Exception):
    """A tar header refused before its content is read; the message says which and why."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extensions are bounded before they are read: tarfile reads a GNU long
    name or a PAX header whole into memory (300 KB of gzip can hold a 300 MB name), and the
    sparse maps of a sparse member unbounded. A CIFAR-10 archive has no sparse members."""

    def _proc_member(self, tar):
        if self.type in EXTENDED_HEADERS:
            tar.spend(self)
        elif self.type == tarfile.GNUTYPE_SPARSE:
            raise _HeaderRefused(f"refused the sparse member {_quote(self.name)}")
        return super()._proc_member(tar)

    def _refuse_sparse(self, member, *args):
        raise _HeaderRefused(f"refused the sparse member {_quote(member.name)}")

    # the sparse maps that PAX headers announce (GNU formats 0.0, 0.1 and 1.0)
    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


class _BoundedTarFile(tarfile.TarFile):
    """A tar stream read with `_BoundedTarInfo`, counting the bytes of its extended headers."""

    tarinfo = _BoundedTarInfo
    header_bytes = 0

    def spend(self, header: tarfile.TarInfo) -> None:
        """Count `header` and its content; refuse it, unread, past MAX_HEADER_BYTES in all."""
        long_name = header.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
        kind = "GNU long name" if long_name else "PAX header"
        self.header_bytes += tarfile.BLOCKSIZE * (1 + -(-max(header.size, 0) // tarfile.BLOCKSIZE))
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _HeaderRefused(
                f"refused a {kind} of {header.size} bytes: the extended headers of the archive may hold "
                f"{MAX_HEADER_BYTES // 1024} KiB in all (those of a CIFAR-10 archive hold under 1 KiB)"
            )


def iter_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Stream (name, bytes) of each batch member, rejecting anything outside the layout, and
    any header, member or number of members far beyond what the layout needs."""
    allowed = set(TRAIN_BATCHES) | {TEST_BATCH, META} | OPTIONAL
    shown = _clip(archive)
    try:
        with _BoundedTarFile.open(archive, mode="r|gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise PipelineError(f"{shown}: more than {MAX_MEMBERS} members; {HINT}")
                name = member.name.rstrip("/")
                if member.isdir() and name == ROOT:
                    continue
                parts = name.split("/")
                if len(parts) != 2 or parts[0] != ROOT or parts[1] not in allowed or not member.isfile():
                    raise PipelineError(
                        f"{shown}: unexpected member {_quote(member.name)} (a {_kind(member)}); "
                        f"a CIFAR-10 archive holds only regular files {ROOT}/{{"
                        f"{', '.join(sorted(allowed))}}}. {HINT}"
                    )
                if member.size > MAX_MEMBER_BYTES:
                    raise PipelineError(
                        f"{shown}: member {_quote(member.name)} is {member.size} "
                        f"bytes, over the {MAX_MEMBER_BYTES} limit. {HINT}"
                    )
                if parts[1] not in OPTIONAL:
                    yield parts[1], tar.extractfile(member).read()
    except _HeaderRefused as error:
        raise PipelineError(f"{shown}: {error}; it is not a CIFAR-10 archive. {HINT}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as error:
        raise PipelineError(
            f"{shown} is not a readable .tar.gz ({type(error).__name__}: "
            f"{_clip(error)}); it is truncated or corrupt. {HINT}"
        ) from None


def load_batch(name: str, payload: bytes) -> dict:
    """Unpickle one member with the restricted unpickler."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise PipelineError(
            f"{ROOT}/{name}: {_clip(error)}; the archive is not a genuine CIFAR-10 "
            f"archive and was not loaded. {HINT}"
        ) from None
    except Exception as error:  # any malformed pickle stream
        raise PipelineError(
            f"{ROOT}/{name} is not a valid pickle ({type(error).__name__}: {_clip(error)}). {HINT}"
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
            _check_meta(batch)
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
        raise PipelineError(f"{_clip(archive)}: missing member(s) {missing}; {HINT}")
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
            f"cannot write {_clip(folder)}: {error.strerror}{need}; "
            f"{'free some space' if full else 'make it writable'} or choose another output folder"
        ) from None


def _clip(value: object) -> str:
    """`value` as text cut to MAX_QUOTED characters: an error line stays readable whatever an
    archive, a URL or a path holds."""
    text = str(value)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "…"


def _quote(value: object) -> str:
    """`value` clipped and quoted on one line (newlines and escapes shown as `\\n`, `\\x1b`)."""
    return repr(_clip(value))


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
