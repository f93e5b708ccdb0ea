"""End to end on other images: the Fashion-MNIST recipe on the real Debian files, and an
unlabeled folder judged by rotations, each through the real `dvc` CLI and MLflow store."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from conftest import REPO, TINY_EVALUATOR, run, set_params, tiny_training

pytestmark = pytest.mark.slow

FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def use_recipe(project: Path, name: str) -> None:
    shutil.copy(REPO / "recipes" / name, project / "params.yaml")


def snapshot_rows(project: Path) -> list[dict]:
    with open(project / "reports" / "train_gan" / "snapshots.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason=f"{FASHION_MNIST} absent (make test installs dataset-fashion-mnist)"
)
def test_the_fashion_mnist_recipe_runs_on_debians_files_and_registers_under_its_own_name(project):
    use_recipe(project, "fashion_mnist.yaml")
    set_params(
        project,
        prepare={"url": str(FASHION_MNIST), "limit": 128},
        train_discriminator_sanity={"batch_size": 32},
        train_evaluator=TINY_EVALUATOR,
        train_gan=tiny_training(batch_size=32, fcd_samples=64),
        select_generator={"fid_samples": 0},
    )
    run(["dvc", "repro"], project)
    dataset = json.loads((project / "data" / "prepared" / "dataset.json").read_text())
    assert dataset["image_shape"] == [28, 28, 1] and dataset["classes"][9] == "Ankle boot"
    test_images = np.load(project / "data" / "prepared" / "test_images.npy", mmap_mode="r")
    assert test_images.shape == (10_000, 28, 28, 1)
    judge = json.loads((project / "models" / "evaluator" / "judge.json").read_text())
    assert judge["task"] == "classes" and len(judge["classes"]) == 10
    rows = snapshot_rows(project)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for key in ("fcd", "precision", "recall", "density", "coverage"):
        assert all(np.isfinite(float(row[key])) for row in rows), key
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'fashion-mnist-dcgan-generator'")
    assert version.tags["dataset"] == "fashion-mnist[:128]"
    experiment = client.get_experiment_by_name("fashion-mnist-dcgan")
    (training,) = client.search_runs([experiment.experiment_id], "tags.stage = 'train-gan'")
    assert training.data.tags["judge_task"] == "classes" and "precision" in training.data.metrics
    # the evidence a comparison names: the training's code, images and length, the real images' entropy
    tags = training.data.tags
    assert (
        len(tags["code_digest"]) == 64
        and tags["training_images"] == "128"
        and float(tags["judge_accuracy"]) > 0
    )
    assert int(tags["iterations"]) == 2 * (128 // int(training.data.params["train_gan.batch_size"]))
    assert 0 <= training.data.metrics["class_entropy_real_images"] <= np.log2(10)
    assert training.data.metrics["load_per_core"] > 0


def write_shapes(folder: Path, count: int, start: int = 0) -> None:
    """`count` PNGs of an upright "house": a bright block on a dark ground, its roof on top.
    Turned, it is another picture, so the rotation task can be learned."""
    rng = np.random.default_rng(start)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        image = rng.integers(40, 90, (40, 48, 3)).astype(np.uint8)  # a grainy dark ground
        left, width = rng.integers(6, 16), rng.integers(16, 26)
        image[20:36, left : left + width] = rng.integers(120, 255, 3)
        for row in range(8, 20):  # the roof narrows towards the top
            inset = (20 - row) * width // 24
            image[row, left + inset : left + width - inset] = 255
        Image.fromarray(image).save(folder / f"house_{i:03}.png")


def test_the_cat_face_recipe_trains_on_an_unlabeled_folder_and_reruns_prepare_only_on_change(project):
    """The cat-face recipe's layers at 128 px, at a tenth of its widths: a rotation judge, a
    registered generator, and `dvc status` following the folder's content."""
    write_shapes(project / "images", 96)
    (project / "images" / "notes.txt").write_text("not an image")
    use_recipe(project, "cat_faces.yaml")
    set_params(
        project,
        prepare={"test_fraction": 0.25},
        model={"d_filters": [4, 8, 8, 16, 16], "g_seed_filters": 16, "g_filters": [16, 8, 8, 4]},
        train_discriminator_sanity={"batch_size": 32, "iterations": 40},
        train_evaluator={**TINY_EVALUATOR, "epochs": 2},
        train_gan=tiny_training(),
        select_generator={"fid_samples": 0, "model_name": "houses-generator"},
    )
    run(["dvc", "repro"], project)
    dataset = json.loads((project / "data" / "prepared" / "dataset.json").read_text())
    assert dataset["classes"] == [] and dataset["image_shape"] == [128, 128, 3]
    skipped = json.loads((project / "reports" / "prepare" / "skipped.json").read_text())
    assert [item["path"] for item in skipped] == ["notes.txt"]
    judge = json.loads((project / "models" / "evaluator" / "judge.json").read_text())
    assert judge["task"] == "rotation" and judge["chance_accuracy"] == 0.25
    reference = json.loads((project / "reports" / "train_evaluator" / "reference.json").read_text())
    assert 0.0 <= reference["test_accuracy"] <= 1.0 and reference["task"] == "rotation"
    rows = snapshot_rows(project)
    assert all(np.isfinite(float(row["fcd"])) for row in rows)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'houses-generator'")
    assert version.tags["dataset"] == "folder:images"

    # the folder unchanged: nothing to do; an image added: prepare and what follows rerun
    assert "up to date" in run(["dvc", "status"], project).stdout
    (project / "images" / "README.md").write_text("edited notes")
    assert "up to date" in run(["dvc", "status"], project).stdout
    write_shapes(project / "images", 1, start=500)
    status = yaml.safe_load(run(["dvc", "status", "--json"], project).stdout or "{}")
    assert "prepare" in status
