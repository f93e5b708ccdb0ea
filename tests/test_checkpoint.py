"""A checkpoint is a file that outlives its run: a damaged or foreign one is moved aside with
one line, and training starts over; it never blocks the next `dvc repro`."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cifar_dcgan import checkpoint
from conftest import REPO, SMALL_MODEL, synthetic_images


@pytest.fixture
def saved(tmp_path, make_params):
    """A checkpoint of the shape train-gan writes, and the fingerprint it was made for."""
    model, params = make_params("model", **SMALL_MODEL), make_params("train_gan")
    images = synthetic_images(64).astype(np.float32)
    print_ = checkpoint.fingerprint(model, params, images, "judge")
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((5, 4)).astype(np.float32), np.arange(3, dtype=np.int64)]
    progress = checkpoint.Progress(
        epochs_done=1, losses=np.ones((4, 3), np.float32), rows=[{"epoch": 1}], eval_rng={"state": 1}
    )
    state = checkpoint.Checkpoint(
        fingerprint=print_, run_id="r1", values=values, layout=[["d/kernel", [5, 4]], ["iteration", [3]]],
        progress=progress,
    )  # fmt: skip
    checkpoint.save(tmp_path / "ckpt", state)
    return tmp_path / "ckpt", print_, state


def loads_or_is_set_aside(folder, print_, original, capsys) -> str:
    loaded = checkpoint.load(folder, print_, epochs=2)
    if loaded is None:
        assert not (folder / checkpoint.FILE).exists() and (folder / f"{checkpoint.FILE}.rejected").is_file()
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and "moved to" in out and "training from scratch" in out
        return out
    for a, b in zip(loaded.values, original.values, strict=True):
        np.testing.assert_array_equal(a, b)
    return "loaded"


def test_a_sound_checkpoint_loads_back(saved, capsys):
    folder, print_, state = saved
    assert loads_or_is_set_aside(folder, print_, state, capsys) == "loaded"


def test_a_truncated_checkpoint_is_set_aside(saved, capsys):
    folder, print_, state = saved
    path = folder / checkpoint.FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "it cannot be read (BadZipFile" in loads_or_is_set_aside(folder, print_, state, capsys)
    assert checkpoint.load(folder, print_, epochs=2) is None  # the next run finds no checkpoint at all


def test_a_flipped_byte_anywhere_is_caught_or_harmless(saved, capsys):
    folder, print_, state = saved
    pristine = (folder / checkpoint.FILE).read_bytes()
    caught = 0
    for position in np.linspace(0, len(pristine) - 1, 40).astype(int):
        damaged = bytearray(pristine)
        damaged[position] ^= 0x10
        (folder / checkpoint.FILE).write_bytes(bytes(damaged))
        caught += loads_or_is_set_aside(folder, print_, state, capsys) != "loaded"
        (folder / f"{checkpoint.FILE}.rejected").unlink(missing_ok=True)
    assert caught >= 30  # the zip's CRCs cover every array and the metadata


def test_metadata_of_another_code_version_is_set_aside(saved, capsys):
    folder, print_, state = saved
    with np.load(folder / checkpoint.FILE) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "added_later": 1}))
    with open(folder / checkpoint.FILE, "wb") as file:
        np.savez(file, **arrays)
    assert "it cannot be read (TypeError" in loads_or_is_set_aside(folder, print_, state, capsys)


def test_a_change_to_the_training_code_is_another_fingerprint(tmp_path, saved, capsys):
    """The same params and data, with an edited gan.py (here: one comment more)."""
    folder, print_, state = saved
    copy = tmp_path / "src"
    shutil.copytree(
        REPO / "src" / "cifar_dcgan", copy / "cifar_dcgan", ignore=shutil.ignore_patterns("__pycache__")
    )
    with open(copy / "cifar_dcgan" / "gan.py", "a") as file:
        file.write("\n# a later version\n")
    compute = (
        "import sys, numpy as np; sys.path.insert(0, 'tests'); from conftest import *; "
        "from cifar_dcgan import checkpoint; from cifar_dcgan.config import load_params; "
        "from cifar_dcgan.config.sections import SECTIONS; "
        "p = load_params('params.yaml', SECTIONS['model'], SECTIONS['train_gan']); "
        "from cifar_dcgan.config import parse_section; import dataclasses; "
        "m = parse_section('model', {**dataclasses.asdict(p['model']), **SMALL_MODEL}, SECTIONS['model']); "
        "print(checkpoint.fingerprint(m, p['train_gan'], synthetic_images(64).astype(np.float32), 'judge'))"
    )
    prints = {}
    for name, source in (("same", REPO / "src"), ("edited", copy)):
        env = {**os.environ, "PYTHONPATH": str(source)}
        result = subprocess.run(
            [sys.executable, "-c", compute], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
        prints[name] = result.stdout.split()[-1]
    assert prints["same"] == print_  # a new process, the same code: the checkpoint resumes
    assert prints["edited"] != print_
    out = loads_or_is_set_aside(folder, prints["edited"], state, capsys)
    assert "made with other params, data, evaluator or training code" in out
