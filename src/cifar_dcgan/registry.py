"""The model registry, as a boundary: what this project registers, when `@champion` moves, and
how a registered generator is loaded without running anything the store may carry.

A version is registered from the native `.keras` file that `mlflow.keras.save_model` writes
(`generator/data/model.keras` of the selection run), with that file's sha256 as the version
tag `keras_sha256`. Loading (`load_generator("models:/name@alias")`) downloads only that file
and the `MLmodel` descriptor, refuses any other flavour (an exported SavedModel, a pickled
pyfunc: both run code when loaded), refuses a file whose sha256 differs from the tag, and opens
it with Keras' safe mode.

When the alias moves (`select_generator.promote`):
- `if_better` (default): unless the current holder has a lower FCD measured the same way (the
  same evaluator, the same number of samples). A hand pick (`select_generator.epoch`) moves it:
  that is the user's decision. A sweep's experiments therefore leave it on the best of them.
- `always`: every selection moves it. `never`: versions are registered, the alias is left alone.
"""

import dataclasses
import hashlib
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.store import redact, store_lock

SHA_TAG = "keras_sha256"  # model-version tag: sha256 of data/model.keras
KERAS_FILE = "data/model.keras"  # inside the logged MLflow model folder
COMPARABLE = ("evaluator_digest", "fcd_samples")  # FCDs are comparable only when these agree
CIFAR10_DIGEST = "c58f30108f718f92721af3b95e74349a"  # versions registered before the tag were CIFAR-10's


@dataclasses.dataclass(frozen=True)
class Registration:
    version: str
    alias_moved: bool
    reason: str  # why the alias moved or stayed


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def promotion(
    policy: str, alias: str, new: Mapping[str, str], current: Mapping[str, str] | None
) -> tuple[bool, str]:
    """Whether `alias` moves to a version tagged `new`, from a version tagged `current` (None:
    the alias is free), and why: one line for the stage's output."""
    if policy == "never":
        return False, f"select_generator.promote = never: @{alias} left where it was"
    if policy == "always" or current is None:
        return True, f"@{alias} moved" + (
            " (select_generator.promote = always)" if current else " (it was free)"
        )
    if new.get("hand_picked") == "true":
        return True, f"@{alias} moved: epoch {new.get('epoch')} was picked by hand (select_generator.epoch)"
    differs = [key for key in COMPARABLE if current.get(key) != new.get(key)]
    if "fcd" not in current or differs:
        why = f"other {', '.join(differs)}" if differs else "no FCD recorded"
        return True, f"@{alias} moved: the current holder cannot be compared ({why})"
    if float(new["fcd"]) < float(current["fcd"]):
        return True, f"@{alias} moved: FCD {float(new['fcd']):.3f} beats {float(current['fcd']):.3f}"
    return False, (
        f"@{alias} stays on version {current.get('version', '?')}: its FCD {float(current['fcd']):.3f} "
        f"is not beaten by {float(new['fcd']):.3f} (select_generator.promote = if_better)"
    )


def register(client, uri: str, run_id: str, name: str, alias: str, description: str, tags, policy: str):
    """Register `runs:/run_id/generator` (logged, its run tagged with the `.keras` file's sha256)
    as a new version of `name` with `tags` and that sha256, and move `alias` by `policy`."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    tags = {**{k: str(v) for k, v in tags.items()}, SHA_TAG: client.get_run(run_id).data.tags[SHA_TAG]}
    version = str(mlflow.register_model(f"runs:/{run_id}/generator", name, tags=tags).version)
    client.update_model_version(name, version, description=description)
    with store_lock(uri):  # two experiments of a sweep finishing together: one decides at a time
        try:
            holder = client.get_model_version_by_alias(name, alias)
            current = {**holder.tags, "version": str(holder.version)}
        except mlflow.exceptions.MlflowException:
            current = None
        moved, reason = promotion(policy, alias, tags, current)
        if moved:
            client.set_registered_model_alias(name, alias, version)
    return Registration(version, moved, reason)


def check_dataset(client, name: str, digest: str, dataset: str) -> None:
    """Refuse to add a generator of one dataset to a registered model whose versions are of
    another: an MNIST generator must never compete with (or take the alias of) a CIFAR-10 one."""
    quote = '"' if "'" in name else "'"  # MLflow's filter takes either quote
    for version in client.search_model_versions(f"name = {quote}{name}{quote}", max_results=1):
        theirs = version.tags.get("dataset_digest", CIFAR10_DIGEST)
        if theirs != digest:
            raise PipelineError(
                f"select_generator.model_name = {name!r} holds generators of another dataset "
                f"({version.tags.get('dataset', 'cifar-10')}, digest {theirs}), not of {dataset} "
                f"(digest {digest}); give this data a registered model of its own, e.g. "
                f"select_generator.model_name: {dataset.split('[')[0].replace(':', '-')}-dcgan-generator"
            )


def publish(tracker, model, name: str, alias: str, description: str, tags, promote: str) -> Registration:
    """Log a Keras generator as an MLflow model of the tracker's run (native `.keras`, its
    sha256 as the run tag `keras_sha256`), register it as a new version of `name` tagged with
    `tags`, and move `alias` by the `promote` policy (`promotion`). The requirements name the
    TensorFlow distribution actually installed."""
    import keras
    import mlflow.keras
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    client, run_id = tracker.client, tracker.run_id
    check_dataset(client, name, tags.get("dataset_digest", CIFAR10_DIGEST), tags.get("dataset", "?"))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(model.input_shape[-1])))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
    )
    # explicit requirements: inferring them costs seconds per call
    requirements = [tensorflow_requirement(), f"keras=={keras.__version__}"]
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "generator"
        mlflow.keras.save_model(model, str(saved), signature=signature, pip_requirements=requirements)
        client.set_tag(run_id, SHA_TAG, file_sha256(saved / KERAS_FILE))
        client.log_artifacts(run_id, str(saved), "generator")
    return register(client, tracker.uri, run_id, name, alias, description, tags, promote)


def tensorflow_requirement() -> str:
    """The pip requirement of the TensorFlow that is installed: `tensorflow-cpu`, `tensorflow`
    (GPU machines) or another build, at its version."""
    from importlib import metadata

    for name in ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tensorflow-macos", "tf-nightly"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    import tensorflow as tf

    return f"tensorflow=={tf.__version__}"


MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def load_generator(uri: str, tracking: str, allow_unsafe: bool = False):
    """A generator registered by this project (`models:/name@alias`, `models:/name/3`) or logged
    by a selection run (`runs:/<run id>/generator`), loaded without running stored code."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    try:
        if uri.startswith("runs:/"):
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            expected = client.get_run(run_id).data.tags.get(SHA_TAG)
            base = f"runs:/{run_id}/{path.strip('/') or 'generator'}"
        else:
            match = MODEL_URI.match(uri)
            if not match:
                raise PipelineError(
                    f"{uri}: expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/generator"
                )
            name = match["name"]
            found = (
                client.get_model_version_by_alias(name, match["alias"])
                if match["alias"]
                else client.get_model_version(name, match["version"])
            )
            expected = found.tags.get(SHA_TAG)
            base = client.get_model_version_download_uri(name, found.version)
        with tempfile.TemporaryDirectory() as folder:
            return _open_verified(uri, base, expected, Path(folder), allow_unsafe)
    except MlflowException as error:
        raise PipelineError(
            f"cannot load {uri} from the tracking store {redact(tracking)}: "
            f"{str(error).splitlines()[0]}; check the model name and alias"
        ) from None


def _open_verified(uri: str, base: str, expected: str | None, folder: Path, allow_unsafe: bool):
    import keras

    descriptor = _download(uri, base, "MLmodel", folder)
    flavors = (yaml.safe_load(descriptor.read_text()) or {}).get("flavors") or {}
    flavor = flavors.get("keras")
    if not flavor or flavor.get("save_exported_model") or flavor.get("data") != "data":
        raise PipelineError(
            f"refusing to load {uri}: it is not a native .keras generator as this pipeline registers "
            f"(flavours: {', '.join(flavors) or 'none'}); loading it could run code stored with it"
        )
    if not expected:
        raise PipelineError(
            f"refusing to load {uri}: it has no {SHA_TAG} tag, so its file cannot be checked; "
            "register it again with `dvc repro -f select-generator`, or pass a .keras file you trust"
        )
    keras_file = _download(uri, base, KERAS_FILE, folder)
    actual = file_sha256(keras_file)
    if actual != expected:
        raise PipelineError(
            f"refusing to load {uri}: its {KERAS_FILE} has sha256 {actual[:12]}..., but {SHA_TAG} says "
            f"{expected[:12]}...; the stored file was changed after registration"
        )
    try:
        return keras.models.load_model(keras_file, safe_mode=not allow_unsafe)
    except ValueError as error:
        raise PipelineError(f"refusing to load {uri}: {str(error).splitlines()[0]}") from None


def _download(uri: str, base: str, name: str, folder: Path) -> Path:
    """The file `name` of the logged model at `base`, into `folder`. The version's record is in
    the store by now, so a file that is not there was deleted from the artifact store."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(f"{base.rstrip('/')}/{name}", dst_path=str(folder)))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PipelineError(
                f"cannot load {uri}: its files are gone from the artifact store (no {name} in "
                f"{redact(base)}); they were deleted or moved after registration: register the "
                "generator again with `dvc repro -f select-generator`, or pass a .keras file"
            ) from None
        detail = ([line for line in str(error).splitlines() if line.strip()] or [error.error_code])[-1][:300]
        raise PipelineError(
            f"cannot load {uri}: downloading {name} from the artifact store ({redact(base)}) failed: "
            f"{detail}; check that the artifact store is reachable"
        ) from None
