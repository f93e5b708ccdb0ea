"""The CIFAR-10 python archive read safely: its tar stream one member at a time, with every
header bounded (a GNU long name or PAX header is read whole into memory by tarfile, so 300 KB
of gzip could hold a 300 MB name), and its pickled batches with an unpickler that can build
only the arrays, lists, dicts, ints and bytes of the format (a plain pickle.load runs any
code a crafted batch names).
"""

import io
import pickle
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cifar_dcgan.errors import PipelineError, clip, quoted

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
            raise pickle.UnpicklingError(f"refusing to load global {quoted(f'{module}.{name}')}") from None


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
            raise _HeaderRefused(f"refused the sparse member {quoted(self.name)}")
        return super()._proc_member(tar)

    def _refuse_sparse(self, member, *args):
        raise _HeaderRefused(f"refused the sparse member {quoted(member.name)}")

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
    shown = clip(archive)
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
                        f"{shown}: unexpected member {quoted(member.name)} (a {_kind(member)}); "
                        f"a CIFAR-10 archive holds only regular files {ROOT}/{{"
                        f"{', '.join(sorted(allowed))}}}. {HINT}"
                    )
                if member.size > MAX_MEMBER_BYTES:
                    raise PipelineError(
                        f"{shown}: member {quoted(member.name)} is {member.size} "
                        f"bytes, over the {MAX_MEMBER_BYTES} limit. {HINT}"
                    )
                if parts[1] not in OPTIONAL:
                    yield parts[1], tar.extractfile(member).read()
    except _HeaderRefused as error:
        raise PipelineError(f"{shown}: {error}; it is not a CIFAR-10 archive. {HINT}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as error:
        raise PipelineError(
            f"{shown} is not a readable .tar.gz ({type(error).__name__}: "
            f"{clip(error)}); it is truncated or corrupt. {HINT}"
        ) from None


def load_batch(name: str, payload: bytes) -> dict:
    """Unpickle one member with the restricted unpickler."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise PipelineError(
            f"{ROOT}/{name}: {clip(error)}; the archive is not a genuine CIFAR-10 "
            f"archive and was not loaded. {HINT}"
        ) from None
    except Exception as error:  # any malformed pickle stream
        raise PipelineError(
            f"{ROOT}/{name} is not a valid pickle ({type(error).__name__}: {clip(error)}). {HINT}"
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


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "symlink" if member.issym() else "hard link"
    return "directory" if member.isdir() else "regular file" if member.isfile() else "special file"


def check_meta(meta: dict) -> list[str]:
    """The class names of `batches.meta`, checked."""
    names = meta.get(b"label_names")
    if not (
        isinstance(names, list) and len(names) == NUM_CLASSES and all(isinstance(n, bytes) for n in names)
    ):
        raise PipelineError(f"{ROOT}/{META}: b'label_names' must list {NUM_CLASSES} classes")
    return [clip(name.decode("utf-8", "replace"), 64) for name in names]
