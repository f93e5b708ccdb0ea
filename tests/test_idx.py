"""cifar_dcgan.idx on tiny synthetic IDX files, and on Debian's Fashion-MNIST when installed."""

import gzip
import hashlib
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cifar_dcgan import idx
from cifar_dcgan.errors import PipelineError

# dataset-fashion-mnist installs them here; FASHION_MNIST_DIR points at an unpacked copy instead.
FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8) as an IDX file."""
    header = bytes([0, 0, idx.UINT8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


def synthetic(n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n - 2, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n - 2, dtype=np.uint8),
    }


def write_folder(folder: Path, arrays: dict[str, np.ndarray], suffix: str = ".gz") -> Path:
    folder.mkdir(exist_ok=True)
    for key, array in arrays.items():
        write(folder / f"{idx.FILES[key]}{suffix}", idx_bytes(array))
    return folder


@pytest.mark.parametrize("name", ["labels", "labels.gz"])
def test_read_round_trip(tmp_path, name):
    array = np.arange(7, dtype=np.uint8)
    content = idx_bytes(array)
    got, digest = idx.read(write(tmp_path / name, content), ndim=1)
    assert got.dtype == np.uint8 and np.array_equal(got, array)
    assert digest == hashlib.md5(content).hexdigest()


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_load_round_trip_with_md5(tmp_path, suffix):
    arrays = synthetic()
    folder = write_folder(tmp_path / "data", arrays, suffix)
    md5 = {key: hashlib.md5(idx_bytes(array)).hexdigest() for key, array in arrays.items()}
    loaded = idx.load(folder, md5)
    assert loaded.keys() == arrays.keys()
    for key, array in arrays.items():
        assert loaded[key].dtype == np.uint8 and np.array_equal(loaded[key], array)


def test_same_digest_plain_and_gzipped(tmp_path):
    content = idx_bytes(np.arange(12, dtype=np.uint8).reshape(1, 3, 4))
    plain = write(tmp_path / "images", content)
    compressed = tmp_path / "images.gz"
    compressed.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    assert idx.read(plain, 3)[1] == idx.read(compressed, 3)[1] == hashlib.md5(content).hexdigest()


def test_find_prefers_gz(tmp_path):
    arrays = synthetic()
    write_folder(tmp_path, arrays, "")
    write_folder(tmp_path, arrays, ".gz")
    found = idx.find(tmp_path)
    assert found == {key: tmp_path / f"{name}.gz" for key, name in idx.FILES.items()}


def test_find_names_missing_files(tmp_path):
    arrays = synthetic()
    del arrays["test_labels"], arrays["train_images"]
    write_folder(tmp_path, arrays)
    with pytest.raises(PipelineError) as error:
        idx.find(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "t10k-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" in message
    missing = message.split(" lacks ")[1].split(":")[0]
    assert "train-labels" not in missing and "t10k-images" not in missing
    assert "prepare.url" in message


def test_md5_mismatch_says_expected_and_got(tmp_path):
    arrays = synthetic()
    folder = write_folder(tmp_path, arrays)
    md5 = {key: hashlib.md5(idx_bytes(array)).hexdigest() for key, array in arrays.items()}
    got = md5["test_images"]
    md5["test_images"] = "0" * 32
    expected = f"t10k-images-idx3-ubyte.gz: .*is {got}, expected {'0' * 32}"
    with pytest.raises(PipelineError, match=expected):
        idx.load(folder, md5)


LABELS = idx_bytes(np.arange(6, dtype=np.uint8))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x1f\x8b" + LABELS[2:], "not an IDX file"),
        (b"\0\0", "not an IDX file"),
        (b"\0\0\x0d\x01" + LABELS[4:], "data type 0x0d"),
        (b"\0\0\x08\x03" + LABELS[4:], "3 dimensions, expected 1"),
        (LABELS[:6], "truncated header"),
        (LABELS[:-1], "truncated: 5 of 6 bytes"),
        (LABELS + b"\0", "trailing bytes"),
        (
            bytes([0, 0, 8, 1]) + struct.pack(">I", idx.MAX_PAYLOAD + 1),
            "over the limit of 1,073,741,824 bytes",
        ),
    ],
)
@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"])
def test_corrupt_file_refused(tmp_path, content, problem, name):
    path = write(tmp_path / name, content)
    with pytest.raises(PipelineError, match=problem) as error:
        idx.read(path, ndim=1)
    assert str(path) in str(error.value) and "delete it and run again" in str(error.value)


@pytest.mark.parametrize(
    "content",
    [
        gzip.compress(LABELS)[:-12],  # cut inside the deflate stream
        gzip.compress(LABELS)[:-4],  # the length field missing
        b"\x1f\x8b\x08\0" + bytes(20),  # a gzip header over garbage
        b"not gzip at all",
        gzip.compress(LABELS)[:-8] + b"\xff\xff\xff\xff" + gzip.compress(LABELS)[-4:],  # bad CRC
    ],
)
def test_corrupt_gzip_refused(tmp_path, content):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match="corrupt gzip stream|truncated") as error:
        idx.read(path, ndim=1)
    assert str(path) in str(error.value) and "prepare.url" in str(error.value)


def test_header_bomb_refused_without_allocating(tmp_path):
    bomb = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 10**6, 10**6)
    path = write(tmp_path / "train-images-idx3-ubyte.gz", bomb + bytes(100))
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError, match="over the limit of 1,073,741,824 bytes"):
            idx.read(path, ndim=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_unreadable_file(tmp_path):
    with pytest.raises(PipelineError, match="cannot be read"):
        idx.read(tmp_path / "absent", ndim=1)


def test_label_count_mismatch(tmp_path):
    arrays = synthetic()
    arrays["test_labels"] = arrays["test_labels"][:-1]
    folder = write_folder(tmp_path, arrays)
    with pytest.raises(PipelineError, match="t10k-labels-idx1-ubyte.gz: 2 labels for the 3 images"):
        idx.load(folder, None)


def test_label_out_of_range(tmp_path):
    arrays = synthetic()
    arrays["train_labels"][3] = 10
    folder = write_folder(tmp_path, arrays)
    with pytest.raises(PipelineError, match="train-labels-idx1-ubyte.gz: label 10, expected"):
        idx.load(folder, None)


def test_wrong_image_size(tmp_path):
    arrays = synthetic()
    arrays["test_images"] = np.zeros((3, 32, 32), dtype=np.uint8)
    folder = write_folder(tmp_path, arrays)
    with pytest.raises(PipelineError, match=r"t10k-images-idx3-ubyte.gz: images of \(32, 32\)"):
        idx.load(folder, None)


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"{FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)",
)
def test_debian_fashion_mnist():
    arrays = idx.load(FASHION_MNIST_DIR, idx.FASHION_MNIST_MD5)
    assert arrays["train_images"].shape == (60_000, 28, 28)
    assert arrays["test_images"].shape == (10_000, 28, 28)
    assert np.array_equal(np.bincount(arrays["train_labels"]), [6_000] * 10)
    assert np.array_equal(np.bincount(arrays["test_labels"]), [1_000] * 10)
