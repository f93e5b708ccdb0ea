"""`prepare` for the MNIST family and for a folder of images: the same outputs as CIFAR-10's,
the shape and classes recorded for every later stage, and bad input that loses nothing."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_dcgan import datasets, idx
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.prepared import DataInfo


def write_idx(folder: Path, train: int = 60, test: int = 20, seed: int = 0) -> None:
    """The four IDX files, gzipped, of small MNIST-like data (digits as bright squares)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("t10k", test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 8 + 2 * label, 4:24] = 255
        for kind, array in (("images", images), ("labels", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            name = f"{split}-{kind}-idx{array.ndim}-ubyte.gz"
            (folder / name).write_bytes(gzip.compress(header + array.tobytes()))


def digests_of(folder: Path) -> dict[str, str]:
    return {key: idx.read(path, 3 if "images" in key else 1)[1] for key, path in idx.find(folder).items()}


def test_mnist_files_become_28x28x1_images_with_their_ten_classes(tmp_path, monkeypatch):
    write_idx(tmp_path / "src")
    name, classes, _ = datasets.IDX_DATASETS["fashion_mnist"]
    monkeypatch.setitem(datasets.IDX_DATASETS, "fashion_mnist", (name, classes, digests_of(tmp_path / "src")))
    out, reports = tmp_path / "data", tmp_path / "reports"
    summary = datasets.prepare_idx("fashion_mnist", tmp_path / "src", out, reports, 50, "file:///src")
    assert (summary.train_images, summary.test_images) == (50, 20)
    info = DataInfo.load(out)
    assert info.image_shape == (28, 28, 1) and info.class_names[0] == "T-shirt/top" and info.labeled
    train = np.load(out / "train_images.npy")
    assert train.dtype == np.float32 and train.min() >= -1 and train.max() == 1.0
    assert np.load(out / "train_labels.npy").tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert json.loads((reports / "skipped.json").read_text()) == []
    assert (reports / "preview.png").stat().st_size > 0


def test_mnist_files_of_another_digest_are_refused_and_nothing_is_written(tmp_path):
    write_idx(tmp_path / "src")
    with pytest.raises(PipelineError, match="md5"):
        datasets.prepare_idx("mnist", tmp_path / "src", tmp_path / "data", tmp_path / "r", None, "x")
    assert not (tmp_path / "data").exists() and not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def draw(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_a_folder_of_class_folders_becomes_labeled_data_and_bad_files_are_listed(tmp_path):
    root = tmp_path / "images"
    for i in range(30):
        draw(root / "red" / f"{i}.png", (200 + i, 0, 0))
        draw(root / "blue" / f"{i}.jpg", (0, 0, 200 + i), (30, 50))
    (root / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "red" / "empty.jpg").write_bytes(b"")
    out, reports = tmp_path / "data", tmp_path / "reports"
    summary = datasets.prepare_folder(root, 32, 3, 0.2, out, reports, None)
    info = DataInfo.load(out)
    assert info.image_shape == (32, 32, 3) and info.class_names == ("blue", "red")
    assert summary.train_images + summary.test_images == 60 and summary.test_images > 0
    train, labels = np.load(out / "train_images.npy"), np.load(out / "train_labels.npy")
    assert train.shape == (summary.train_images, 32, 32, 3)
    red = train[labels == 1]
    assert (red[..., 0] > 0.5).all() and (red[..., 2] < -0.9).all()  # colours kept, scaled to [-1, 1]
    skipped = {item["path"]: item["reason"] for item in json.loads((reports / "skipped.json").read_text())}
    assert set(skipped) == {"blue/broken.png", "red/empty.jpg"}
    assert all(reason for reason in skipped.values())
    assert info.digest and info.record["dataset"] == "folder"


def test_a_flat_folder_is_unlabeled_grey_at_the_asked_size(tmp_path):
    root = tmp_path / "images"
    for i in range(40):
        draw(root / f"{i:02}.png", (i * 5, i * 5, i * 5), (64, 48))
    datasets.prepare_folder(root, 28, 1, 0.25, tmp_path / "data", tmp_path / "reports", 10)
    info = DataInfo.load(tmp_path / "data")
    assert info.image_shape == (28, 28, 1) and info.class_names == () and not info.labeled
    assert np.load(tmp_path / "data" / "train_images.npy").shape[0] == 10  # prepare.limit


def test_a_limit_on_class_folders_keeps_every_class_and_the_size_is_part_of_the_digest(tmp_path):
    root = tmp_path / "images"
    for name in ("a", "b", "c"):
        for i in range(20):
            draw(root / name / f"{i:02}.png", (10 * i, 0, 0))
    datasets.prepare_folder(root, 32, 3, 0.2, tmp_path / "d1", tmp_path / "r1", 12)
    labels = np.load(tmp_path / "d1" / "train_labels.npy")
    assert len(labels) == 12 and set(labels.tolist()) == {0, 1, 2}
    datasets.prepare_folder(root, 16, 3, 0.2, tmp_path / "d2", tmp_path / "r2", 12)
    assert DataInfo.load(tmp_path / "d1").digest != DataInfo.load(tmp_path / "d2").digest


def test_a_folder_with_nothing_usable_fails_in_one_line_and_leaves_nothing(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.png").write_bytes(b"junk")
    (root / "b.png").write_bytes(b"")
    with pytest.raises(PipelineError) as error:
        datasets.prepare_folder(root, 32, 3, 0.5, tmp_path / "data", tmp_path / "reports", None)
    assert "\n" not in str(error.value) and "images" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
