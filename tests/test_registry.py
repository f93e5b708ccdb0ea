"""The registry as a boundary: only the native `.keras` generator this project registers is
loaded, checked against its sha256, and `@champion` moves only to a better generator."""

import contextlib
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from cifar_dcgan import registry
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.generate import main
from cifar_dcgan.registry import SHA_TAG, load_generator, promotion
from cifar_dcgan.tracking import stage_run
from conftest import SHAPE, SMALL_MODEL

SAME = {"fcd_samples": "64", "evaluator_digest": "judge-1"}


@pytest.mark.parametrize(
    "policy, new, current, moves, says",
    [
        ("if_better", {"fcd": "20", **SAME}, None, True, "it was free"),
        ("if_better", {"fcd": "20", **SAME}, {"fcd": "30", **SAME}, True, "FCD 20.000 beats 30.000"),
        (
            "if_better",
            {"fcd": "30", **SAME},
            {"fcd": "20", "version": "4", **SAME},
            False,
            "stays on version 4",
        ),
        ("if_better", {"fcd": "30", **SAME}, {"fcd": "30", **SAME}, False, "is not beaten"),
        (
            "if_better",
            {"fcd": "90", "hand_picked": "true", "epoch": "2", **SAME},
            {"fcd": "1", **SAME},
            True,
            "by hand",
        ),
        (
            "if_better",
            {"fcd": "90", **SAME},
            {"fcd": "1", **SAME, "evaluator_digest": "judge-2"},
            True,
            "other evaluator_digest",
        ),
        (
            "if_better",
            {"fcd": "90", **SAME},
            {"fcd": "1", **SAME, "fcd_samples": "2000"},
            True,
            "other fcd_samples",
        ),
        ("if_better", {"fcd": "90", **SAME}, SAME, True, "no FCD recorded"),
        ("always", {"fcd": "90", **SAME}, {"fcd": "1", **SAME}, True, "promote = always"),
        ("never", {"fcd": "1", **SAME}, None, False, "promote = never"),
    ],
)
def test_the_alias_moves_only_to_a_better_generator_measured_the_same_way(policy, new, current, moves, says):
    moved, reason = promotion(policy, "champion", new, current)
    assert moved is moves and says in reason


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("alias", "latest", "reserved"),
        ("alias", "v2", "reserved"),
        ("alias", "a/b", "Invalid alias name"),
        ("model_name", "a/b", "cannot contain '/'"),
    ],
)
def test_names_mlflow_would_refuse_are_refused_when_params_load(make_params, key, value, says):
    with pytest.raises(
        PipelineError, match=f"select_generator.{key} = '{value}' is not allowed by MLflow: .*{says}"
    ):
        make_params("select_generator", **{key: value})


@pytest.fixture
def generator(make_params):
    """generator(seed): a small untrained generator; seeds give different weights."""
    from cifar_dcgan.models import build_generator

    return lambda seed: build_generator(make_params("model", **SMALL_MODEL), 8, seed=seed, image_shape=SHAPE)


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def register(model, fcd: float, policy: str = "if_better"):
    with stage_run("select-generator", "registry", {}) as tracker:
        return registry.publish(tracker, model, "gen", "champion", "test", {"fcd": str(fcd), **SAME}, policy)


def champion(client) -> str:
    return str(client.get_model_version_by_alias("gen", "champion").version)


def test_a_registered_generator_loads_back_and_a_sweep_leaves_champion_on_the_best(store, generator):
    client = MlflowClient(store)
    first, worse, better = generator(0), generator(1), generator(2)
    assert register(first, 30.0).alias_moved and champion(client) == "1"
    kept = register(worse, 40.0)
    assert kept.version == "2" and not kept.alias_moved and champion(client) == "1"
    assert register(better, 20.0).alias_moved and champion(client) == "3"
    latents = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    loaded = load_generator("models:/gen@champion", store)
    np.testing.assert_allclose(
        loaded.predict(latents, verbose=0), better.predict(latents, verbose=0), atol=1e-6
    )
    by_number = load_generator("models:/gen/2", store)
    np.testing.assert_allclose(
        by_number.predict(latents, verbose=0), worse.predict(latents, verbose=0), atol=1e-6
    )
    run_id = client.get_model_version("gen", "1").run_id
    assert client.get_run(run_id).data.tags[SHA_TAG] == client.get_model_version("gen", "1").tags[SHA_TAG]
    by_run = load_generator(f"runs:/{run_id}/generator", store)
    np.testing.assert_allclose(
        by_run.predict(latents, verbose=0), first.predict(latents, verbose=0), atol=1e-6
    )


def test_a_generator_of_another_dataset_cannot_join_a_registered_model(store, generator):
    """An MNIST generator never competes with the CIFAR-10 champion: versions registered
    before the dataset tag count as CIFAR-10, and the error names a model name to use."""
    client = MlflowClient(store)
    assert register(generator(0), 30.0).alias_moved  # untagged: CIFAR-10, as every older version
    mnist = {"fcd": "1.0", **SAME, "dataset": "mnist", "dataset_digest": "f" * 32}
    with stage_run("select-generator", "registry", {}) as tracker:
        with pytest.raises(PipelineError, match=r"another dataset \(cifar-10.*mnist-dcgan-generator"):
            registry.publish(tracker, generator(1), "gen", "champion", "test", mnist, "always")
    assert champion(client) == "1" and len(client.search_model_versions("name = 'gen'")) == 1
    with stage_run("select-generator", "registry", {}) as tracker:
        registry.publish(tracker, generator(1), "mnist-gen", "champion", "test", mnist, "if_better")
    cifar = {"fcd": "20.0", **SAME, "dataset": "cifar-10", "dataset_digest": registry.CIFAR10_DIGEST}
    assert register_tagged(generator(2), cifar).alias_moved and champion(client) == "2"
    with stage_run("select-generator", "registry", {}) as tracker:  # a quote in the name: still checked
        registry.publish(tracker, generator(3), "it's", "champion", "test", cifar, "if_better")
        with pytest.raises(PipelineError, match="another dataset"):
            registry.publish(tracker, generator(3), "it's", "champion", "test", mnist, "if_better")


def register_tagged(model, tags: dict):
    with stage_run("select-generator", "registry", {}) as tracker:
        return registry.publish(tracker, model, "gen", "champion", "test", tags, "if_better")


def test_a_stored_generator_changed_after_registration_is_refused(store, generator, tmp_path, capsys):
    register(generator(0), 30.0)
    (stored,) = (tmp_path / "mlartifacts").rglob("generator/data/model.keras")
    generator(5).save(tmp_path / "other.keras")
    stored.write_bytes((tmp_path / "other.keras").read_bytes())
    with pytest.raises(SystemExit):
        main(["--model", "models:/gen@champion", "--grid", str(tmp_path / "g.png")])
    assert "refusing to load models:/gen@champion: its data/model.keras has sha256" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_a_version_whose_files_were_deleted_says_so_and_how_to_register_again(
    store, generator, tmp_path, capsys
):
    import shutil

    register(generator(0), 30.0)
    shutil.rmtree(tmp_path / "mlartifacts")  # e.g. cleaned up by hand; the store still lists the version
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "models:/gen@champion", "--grid", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "error: cannot load models:/gen@champion: its files are gone from the artifact store" in err
    assert "register the generator again with `dvc repro -f select-generator`" in err
    assert "check the model name and alias" not in err and not (tmp_path / "g.png").exists()


class Payload(mlflow.pyfunc.PythonModel):
    """A pyfunc model whose pickle writes a file when it is loaded: any code could run there."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))

    def predict(self, context, model_input):
        return model_input


def test_an_alias_moved_to_a_model_that_runs_code_is_refused_and_nothing_runs(
    store, generator, tmp_path, capsys
):
    client = MlflowClient(store)
    register(generator(0), 30.0)
    marker = tmp_path / "ran.txt"
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="evil", python_model=Payload(str(marker)), registered_model_name="gen", pip_requirements=[]
        )
    marker.unlink(missing_ok=True)
    client.set_registered_model_alias("gen", "champion", str(info.registered_model_version))
    with pytest.raises(SystemExit):
        main(["--model", "models:/gen@champion", "--grid", str(tmp_path / "g.png")])
    assert (
        "refusing to load models:/gen@champion: it is not a native .keras generator"
        in capsys.readouterr().err
    )
    assert not marker.exists() and not (tmp_path / "g.png").exists()
    with contextlib.suppress(Exception):  # the same version through MLflow's own loader runs the payload
        mlflow.pyfunc.load_model("models:/gen@champion")
    assert marker.read_text() == "ran"


def test_an_exported_savedmodel_version_is_refused(store, generator, tmp_path, capsys):
    from mlflow.models import infer_signature

    client = MlflowClient(store)
    model = generator(0)
    latents = np.zeros((1, 8), np.float32)
    with mlflow.start_run():
        info = mlflow.keras.log_model(
            model,
            name="exported",
            save_exported_model=True,
            signature=infer_signature(latents, model.predict(latents, verbose=0)),
            registered_model_name="gen",
        )
    client.set_registered_model_alias("gen", "champion", str(info.registered_model_version))
    with pytest.raises(PipelineError, match="it is not a native .keras generator"):
        load_generator("models:/gen@champion", store)
