"""The sweep on Ray: the judge trained once on one node, then one Ray Tune trial per arm and
seed, rerun from its last reported epoch checkpoint when its node dies (`max_failures`).

No scheduler stops trials early: stopping seeds on interim FCD would let the surviving seeds
flatter their arm, and a snapshot's FCD is too noisy to stop on."""

import contextlib
import dataclasses
import shutil
import tempfile
from pathlib import Path

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.sweep.plan import Trial
from cifar_dcgan.sweep.trial import run_trial
from cifar_dcgan.sweep.workspace import Source, check_environment, clone, command

JUDGE_STAGES = ("train-discriminator-sanity", "train-evaluator")  # and prepare, which both need


def prepare_judge(source: Source) -> None:
    """On one node: the stages before train-gan, restored from the DVC remote's run cache or
    run once, then pushed there with their run cache, for every trial to restore."""
    check_environment(source.environment)
    folder = Path(tempfile.mkdtemp(prefix="cifar-dcgan-judge-"))
    log = folder / "judge.log"
    repo = clone(source, folder, log)
    command(
        ["dvc", "pull", "--run-cache", "--quiet"], repo, source, log, check=False
    )  # empty on a first sweep
    command(["dvc", "repro", "--pull", *JUDGE_STAGES], repo, source, log)
    command(["dvc", "push", "--run-cache"], repo, source, log)
    shutil.rmtree(folder, ignore_errors=True)


def _trainable(config: dict, source: Source) -> None:
    """One Ray Tune trial: a DVC experiment, its epoch checkpoints reported to Ray."""
    from ray import tune

    trial = Trial(**{**config["trial"], "overrides": tuple(config["trial"]["overrides"])})
    folder = Path(tempfile.mkdtemp(prefix=f"cifar-dcgan-{trial.name}-"))

    def report(metrics: dict, kept: Path | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(kept)) if kept else None)

    checkpoint = tune.get_checkpoint()
    try:
        with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume:
            run_trial(trial, source, folder, Path(resume) if resume else None, report)
    except PipelineError as error:  # a training that failed fails again: only a dead node or process is rerun
        tune.report({"finished": 0, "failure": str(error)[-3000:]})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(
    trials: list[Trial], source: Source, address: str, storage: Path, cpus: float, max_failures: int
) -> list[dict]:
    """Run the sweep on the Ray cluster at `address`; one outcome per trial: its name, the
    epoch it resumed from, its error if any, and the seconds its parts took."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise PipelineError("Ray is not installed: `make cluster` (pip install -e '.[cluster]')") from None
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as error:  # unreachable, refused (token), or another Ray's version
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise PipelineError(
            f"cannot join the Ray cluster at {address} ({type(error).__name__}: {first}): start it "
            "(`ray start`, docs/sweeps.md), name it with RAY_ADDRESS or --ray-address, and set "
            "RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
        ) from None
    try:
        ray.get(ray.remote(num_cpus=cpus, max_retries=max_failures)(prepare_judge).remote(source))
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trainable, source=source), {"cpu": cpus}),
            param_space={"trial": tune.grid_search([dataclasses.asdict(trial) for trial in trials])},
            run_config=tune.RunConfig(
                name=source.sweep,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # each holds every snapshot so far
                verbose=1,
            ),
        )
        grid = tuner.fit()
    except ray.exceptions.RayError as error:  # the judge's task failed, or its node died every time
        cause = getattr(error, "cause", None) or error
        raise PipelineError(f"the sweep's judge could not be prepared: {cause}") from None
    finally:
        ray.shutdown()
    outcomes = []
    for result in grid:
        metrics = result.metrics or {}
        name = result.config["trial"]["name"]
        outcomes.append(
            {
                "name": name,
                "finished": bool(metrics.get("finished")),
                "resumed_from_epoch": metrics.get("resumed_from_epoch", 0),
                "error": str(result.error).strip().splitlines()[-1]
                if result.error
                else metrics.get("failure"),
                "seconds": {key: metrics[key] for key in ("setup_s", "repro_s", "push_s") if key in metrics},
                "path": result.path,
            }
        )
    return sorted(outcomes, key=lambda outcome: outcome["name"])
