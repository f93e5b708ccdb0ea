"""The MNIST-family IDX files (MNIST, Fashion-MNIST) read safely, gzip-compressed or not: the
header is checked and its announced size bounded before any payload is read, and the payload is
read in bounded chunks. Digests are of the decompressed content (header + payload), so one
digest matches the upstream .gz files, recompressed copies (Debian's) and uncompressed ones.
"""

import gzip
import hashlib
import zlib
from math import prod
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cifar_dcgan.errors import PipelineError, clip

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLITS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}
MAX_PAYLOAD = 2**30  # refuse headers that announce more than 1 GiB (the largest real file: 47 MB)
CHUNK = 2**20  # bytes read from the decompressed stream at a time
UINT8 = 0x08
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
HINT = "delete it and run again, or point prepare.url at a folder holding the four official files"

# md5 of each decompressed file (header + payload).
MNIST_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5 = {
    "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
    "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
    "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
}


def _fail(path: Path, problem: str) -> PipelineError:
    return PipelineError(f"{clip(path)}: {problem}; {HINT}")


def find(folder: Path) -> dict[str, Path]:
    """Each key of FILES -> its .gz or plain file in `folder` (the .gz when both are there)."""
    found, missing = {}, []
    for key, name in FILES.items():
        candidates = [folder / f"{name}.gz", folder / name]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            missing.append(f"{name}(.gz)")
        else:
            found[key] = path
    if missing:
        raise PipelineError(
            f"{clip(folder)} lacks {', '.join(missing)}: point prepare.url at a folder holding "
            f"the four official files ({', '.join(f'{name}.gz' for name in FILES.values())})"
        )
    return found


def _read_exactly(stream: BinaryIO, size: int, digest: "hashlib._Hash") -> bytearray:
    """Up to `size` bytes of `stream`, read CHUNK at a time (fewer only at the end of the
    stream), each added to `digest`: memory grows with the bytes actually there."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(CHUNK, size - len(data)))
        if not chunk:
            break
        digest.update(chunk)
        data += chunk
    return data


def _parse(path: Path, stream: BinaryIO, ndim: int) -> tuple[np.ndarray, str]:
    digest = hashlib.md5()
    magic = _read_exactly(stream, 4, digest)
    if len(magic) < 4 or magic[:2] != b"\0\0":
        raise _fail(path, f"not an IDX file (magic {bytes(magic[:4]).hex()}, expected 0000xxxx)")
    if magic[2] != UINT8:
        raise _fail(path, f"IDX data type 0x{magic[2]:02x}, expected 0x{UINT8:02x} (uint8)")
    if magic[3] != ndim:
        raise _fail(path, f"IDX file of {magic[3]} dimensions, expected {ndim}")
    header = _read_exactly(stream, 4 * ndim, digest)
    if len(header) < 4 * ndim:
        raise _fail(path, f"truncated header ({len(header)} of {4 * ndim} bytes of dimensions)")
    shape = tuple(int(size) for size in np.frombuffer(header, dtype=">u4"))
    payload_size = prod(shape)
    if payload_size > MAX_PAYLOAD:
        announced = f"header announces {shape} = {payload_size:,} bytes"
        raise _fail(path, f"{announced}, over the limit of {MAX_PAYLOAD:,} bytes")
    payload = _read_exactly(stream, payload_size, digest)
    if len(payload) < payload_size:
        raise _fail(path, f"truncated: {len(payload):,} of {payload_size:,} bytes of data")
    if stream.read(1):
        raise _fail(path, f"trailing bytes after the {payload_size:,} bytes of data")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape), digest.hexdigest()


def read(path: Path, ndim: int) -> tuple[np.ndarray, str]:
    """The uint8 array of the IDX file `path` (gzip-compressed when its name ends in .gz) and
    the md5 hex digest of its decompressed content."""
    try:
        with path.open("rb") as raw:
            if not path.name.endswith(".gz"):
                return _parse(path, raw, ndim)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse(path, stream, ndim)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise _fail(path, f"corrupt gzip stream ({clip(error)})") from None
    except OSError as error:
        raise _fail(path, f"cannot be read ({clip(error)})") from None


def load(folder: Path, md5: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The four arrays of FILES in `folder`: images (N, 28, 28) uint8, labels (N,) uint8 below
    10, as many labels as images; each file's decompressed md5 checked against `md5[key]` when
    given."""
    paths = find(folder)
    arrays = {}
    for key, path in paths.items():
        images = key.endswith("images")
        array, digest = read(path, ndim=3 if images else 1)
        expected = (md5 or {}).get(key)
        if expected is not None and digest != expected.lower():
            raise _fail(path, f"md5 of the decompressed content is {digest}, expected {expected}")
        if images and array.shape[1:] != IMAGE_SHAPE:
            raise _fail(path, f"images of {array.shape[1:]} pixels, expected {IMAGE_SHAPE}")
        if not images and array.size and array.max() >= NUM_CLASSES:
            raise _fail(path, f"label {array.max()}, expected labels 0 to {NUM_CLASSES - 1}")
        arrays[key] = array
    for images_key, labels_key in SPLITS.values():
        images, labels = arrays[images_key], arrays[labels_key]
        if len(images) != len(labels):
            counts = f"{len(labels):,} labels for the {len(images):,} images"
            raise _fail(paths[labels_key], f"{counts} of {clip(paths[images_key].name)}")
    return arrays


def download_names() -> list[str]:
    """What an http(s) `prepare.url` serves: the four official .gz files."""
    return [f"{name}.gz" for name in FILES.values()]


def digest(md5: dict[str, str]) -> str:
    """One digest for the four files (the prepared data's id): the md5 of their md5s."""
    return hashlib.md5("".join(md5[key] for key in FILES).encode()).hexdigest()
