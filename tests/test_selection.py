"""Choosing a snapshot, and using the chosen generator."""

import csv
import json

import keras
import numpy as np
import pytest

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.generate import interpolate, main, slerp
from cifar_dcgan.selection import select_generator
from conftest import SHAPE, SMALL_MODEL


def fake_training(tmp_path, make_params, rows, quality=True):
    """A train-gan output folder: snapshots.csv rows and a small generator per epoch."""
    from cifar_dcgan.models import build_generator

    snapshots, reports = tmp_path / "snapshots", tmp_path / "train_gan"
    snapshots.mkdir()
    reports.mkdir()
    generator = build_generator(make_params("model", **SMALL_MODEL), 8, seed=0, image_shape=SHAPE)
    for row in rows:
        generator.save(snapshots / f"epoch_{row['epoch']:03d}.keras")
    with open(reports / "snapshots.csv", "w", newline="") as file:
        columns = ["epoch", "iteration", "acc_real", "acc_fake", "d1", "d2", "g"]
        writer = csv.DictWriter(file, columns + ["fcd", "kid"] * quality, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"iteration": 10 * r["epoch"], "d1": 0.5, "d2": 0.5, "g": 1.0, **r} for r in rows)
    return snapshots, reports


ROWS = [
    {"epoch": 1, "acc_real": 0.9, "acc_fake": 0.8, "fcd": 40.0, "kid": 0.03},
    {"epoch": 2, "acc_real": 0.55, "acc_fake": 0.4, "fcd": 25.0, "kid": 0.025},
    {"epoch": 3, "acc_real": 0.7, "acc_fake": 0.6, "fcd": 30.0, "kid": 0.02},
    {"epoch": 4, "acc_real": float("nan"), "acc_fake": 0.5, "fcd": 10.0, "kid": 0.01},  # diverged
]


def select(tmp_path, make_params, **changes):
    snapshots, reports = fake_training(tmp_path, make_params, ROWS)
    params = make_params("select_generator", **changes)
    out = tmp_path / "generator.keras"
    return select_generator(
        reports / "snapshots.csv", snapshots, reports / "grids", "run123", params, out, tmp_path / "selection"
    ), out


@pytest.mark.parametrize(
    "changes, epoch",
    [
        ({}, 2),  # the lowest FCD among usable snapshots: epoch 4 diverged (NaN)
        ({"criterion": "kid"}, 3),
        ({"criterion": "last"}, 3),
        ({"criterion": "acc_real", "target_acc_real": 0.5}, 2),
        ({"epoch": 1}, 1),
    ],
)
def test_rules_pick_the_expected_snapshot(tmp_path, make_params, changes, epoch):
    selection, out = select(tmp_path, make_params, **changes)
    assert selection["epoch"] == epoch
    assert out.read_bytes() == (tmp_path / "snapshots" / f"epoch_{epoch:03d}.keras").read_bytes()
    saved = json.loads((tmp_path / "selection" / "selection.json").read_text())
    assert saved["epoch"] == epoch and saved["training_run_id"] == "run123"
    assert [c["epoch"] for c in saved["candidates"]] == [1, 2, 3, 4]
    assert [c["usable"] for c in saved["candidates"]] == [True, True, True, False]
    assert [c["flag"] for c in saved["candidates"]] == ["", "", "", "nan"]
    assert (tmp_path / "selection" / "contact_sheet.png").stat().st_size > 5000
    chosen = ROWS[epoch - 1]
    assert (saved["chosen_fcd"], saved["chosen_kid"]) == (chosen["fcd"], chosen["kid"])
    assert (saved["last_epoch"], saved["last_fcd"]) == (4, 10.0)
    shown = json.loads((tmp_path / "selection" / "metrics.json").read_text())
    assert shown == {"chosen_epoch": epoch, "chosen_fcd": chosen["fcd"], "chosen_kid": chosen["kid"]}


def test_selecting_by_fcd_needs_scored_snapshots(tmp_path, make_params):
    snapshots, reports = fake_training(tmp_path, make_params, ROWS, quality=False)
    with pytest.raises(PipelineError, match="criterion = fcd, but the snapshots have no 'fcd' column"):
        select_generator(
            reports / "snapshots.csv",
            snapshots,
            reports / "grids",
            None,
            make_params("select_generator"),
            tmp_path / "generator.keras",
            tmp_path / "selection",
        )
    assert not (tmp_path / "generator.keras").exists()


def test_a_pick_that_is_not_a_snapshot_lists_the_available_epochs(tmp_path, make_params):
    with pytest.raises(
        PipelineError,
        match=r"select_generator.epoch = 7 is not a saved snapshot; "
        r"available epochs: \[1, 2, 3, 4\]",
    ):
        select(tmp_path, make_params, epoch=7)
    assert not (tmp_path / "generator.keras").exists()


def test_a_diverged_snapshot_is_never_picked(tmp_path, make_params):
    with pytest.raises(PipelineError, match="epoch = 4: that snapshot is flagged 'nan'"):
        select(tmp_path, make_params, epoch=4)


@pytest.fixture
def generator_file(tmp_path, make_params):
    from cifar_dcgan.models import build_generator

    path = tmp_path / "generator.keras"
    build_generator(make_params("model", **SMALL_MODEL), 8, seed=0, image_shape=SHAPE).save(path)
    return path


def test_generate_writes_images_and_grids(tmp_path, generator_file):
    main(
        [
            "--model",
            str(generator_file),
            "--n",
            "5",
            "--seed",
            "1",
            "--out-dir",
            str(tmp_path / "imgs"),
            "--grid",
            str(tmp_path / "grid.png"),
        ]
    )
    files = sorted((tmp_path / "imgs").iterdir())
    assert len(files) == 5
    image = keras.utils.load_img(files[0])
    assert image.size == (32, 32)
    grid = np.asarray(keras.utils.load_img(tmp_path / "grid.png"))
    assert grid.shape == (4 * (2 + 34), 4 * (2 + 7 * 34), 3)  # one row of 7 cells of 32 + 2, 4x upscaled


def test_constant_latent_gives_one_deterministic_image(tmp_path, generator_file):
    for name in ("a", "b"):
        main(
            [
                "--model",
                str(generator_file),
                "--constant",
                "0.75",
                "--n",
                "1",
                "--out-dir",
                str(tmp_path / name),
            ]
        )
    first, second = (np.asarray(keras.utils.load_img(tmp_path / n / "image_0000.png")) for n in ("a", "b"))
    np.testing.assert_array_equal(first, second)


def test_interpolation_ends_at_both_points_and_slerp_keeps_the_norm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 100))
    for method in ("linear", "slerp"):
        path = interpolate(a, b, 7, method)
        assert path.shape == (7, 100)
        np.testing.assert_allclose(path[0], a, rtol=1e-5)
        np.testing.assert_allclose(path[-1], b, rtol=1e-5)
    middle = slerp(a / np.linalg.norm(a), b / np.linalg.norm(b), 0.5)
    assert np.linalg.norm(middle) == pytest.approx(1.0)
    assert np.linalg.norm(interpolate(a, b, 3, "linear")[1]) < min(np.linalg.norm(a), np.linalg.norm(b))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nowhere.keras", "--grid", "g.png"], "model file not found: nowhere.keras"),
        (["--n", "-5", "--grid", "g.png"], "error: argument --n: must be at least 1 (got -5)"),
        (["--steps", "1", "--grid", "g.png"], "error: argument --steps: must be 2 to 1024 (got 1)"),
        (
            ["--model", "models:/no-such-model@champion", "--grid", "g.png"],
            "cannot load models:/no-such-model@champion",
        ),
        ([], "nothing to write"),
        (
            ["--n", "5000", "--grid", "g.png"],
            "a grid shows at most 1024 images (got 5000); write more with --out-dir",
        ),
        (["--interpolate", "slerp", "--steps", "100000", "--grid", "g.png"], "--steps: must be 2 to 1024"),
    ],
)
def test_generate_bad_arguments(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "(got 10)" not in err  # the default --steps is fine: only what is wrong is named


def test_a_model_with_a_lambda_layer_is_refused_unless_allowed(tmp_path, capsys):
    inputs = keras.Input((8,))
    outputs = keras.layers.Reshape((32, 32, 3))(keras.layers.Dense(3072)(inputs))
    outputs = keras.layers.Lambda(lambda x: x * 0.5)(outputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(SystemExit):
        main(["--model", str(path), "--grid", str(tmp_path / "g.png")])
    assert f"refusing to load {path}: it contains a Lambda layer" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
    main(["--model", str(path), "--grid", str(tmp_path / "g.png"), "--allow-unsafe"])
    assert (tmp_path / "g.png").exists()


def test_latent_points_follow_the_training_distribution():
    import argparse

    from cifar_dcgan.generate import latents

    args = argparse.Namespace(seed=0, interpolate=None, constant=None, n=500, distribution="uniform")
    uniform = np.concatenate(list(latents(args, 100)))
    assert uniform.dtype == np.float32 and uniform.min() >= -1.0 and uniform.max() <= 1.0
    gaussian = np.concatenate(
        list(latents(argparse.Namespace(**{**vars(args), "distribution": "gaussian"}), 100))
    )
    assert gaussian.min() < -3.0 and gaussian.max() > 3.0


def test_generate_prints_no_tensorflow_start_up_lines(tmp_path, generator_file):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = Path(sys.executable).parent / "cifar-dcgan-generate"
    result = subprocess.run(
        [str(command), "--model", str(generator_file), "--n", "2", "--grid", str(tmp_path / "g.png")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    for noise in ("cpu_feature_guard", "oneDNN custom operations", "absl::InitializeLog"):
        assert noise not in result.stderr + result.stdout
    assert result.stdout.strip() == f"generated 2 image(s) from {generator_file}"


def test_latents_drawn_in_chunks_are_the_points_of_one_draw():
    import argparse

    from cifar_dcgan.generate import latents

    for distribution in ("gaussian", "uniform"):
        args = argparse.Namespace(seed=3, interpolate=None, constant=None, n=10, distribution=distribution)
        chunks = list(latents(args, 8, chunk=3))
        assert [len(c) for c in chunks] == [3, 3, 3, 1]
        np.testing.assert_array_equal(
            np.concatenate(chunks), np.concatenate(list(latents(args, 8, chunk=10)))
        )


def test_many_images_are_written_in_chunks_numbered_in_order(tmp_path, generator_file, monkeypatch):
    from cifar_dcgan import generate

    monkeypatch.setattr(generate, "CHUNK", 4)  # a small chunk: the boundaries show with few images
    main(["--model", str(generator_file), "--n", "10", "--out-dir", str(tmp_path / "chunked"), "--seed", "1"])
    monkeypatch.setattr(generate, "CHUNK", 1000)
    main(["--model", str(generator_file), "--n", "10", "--out-dir", str(tmp_path / "whole"), "--seed", "1"])
    names = sorted(p.name for p in (tmp_path / "chunked").iterdir())
    assert names == [f"image_{i:04d}.png" for i in range(10)]
    for name in names:
        assert (tmp_path / "chunked" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "-1", "--grid", "g.png"], "argument --seed: must be 0 or more (got -1)"),
        (["--grid", "out.npy"], "argument --grid: out.npy must end in .png (the grid is written as a PNG"),
        (["--grid", "a_folder"], "argument --grid: a_folder is a folder; give a file name ending in .png"),
        (["--grid", "a_file/g.png"], "argument --grid: a_file/g.png cannot be written: a_file is a file"),
        (["--out-dir", "a_file"], "argument --out-dir: a_file is a file, not a folder"),
        (["--out-dir", "a_file/images"], "argument --out-dir: a_file/images cannot be written: a_file is a"),
        (["--constant", "nan", "--grid", "g.png"], "argument --constant: must be a finite number (got nan;"),
        (
            ["--constant=-inf", "--out-dir", "images"],
            "argument --constant: must be a finite number (got -inf",
        ),
    ],
    ids=[
        "negative seed",
        "npy grid",
        "grid folder",
        "grid in a file",
        "out-dir file",
        "out-dir in a file",
        "nan constant",
        "infinite constant",
    ],  # fmt: skip
)
def test_generate_command_gives_usage_errors_not_tracebacks(tmp_path, generator_file, argv, message):
    """The installed command, as a user runs it: exit code 2, usage, one error line naming the
    argument, and nothing written."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("kept")
    before = sorted(p.name for p in tmp_path.iterdir())
    command = Path(sys.executable).parent / "cifar-dcgan-generate"
    result = subprocess.run(
        [str(command), "--model", str(generator_file), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("usage: cifar-dcgan-generate") and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"cifar-dcgan-generate: error: {message}" + errors[0].partition(message)[2]]
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "a_file").read_text() == "kept"
    )
    assert result.stdout == ""
