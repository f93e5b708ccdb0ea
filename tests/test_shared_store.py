"""Many writers on one tracking server: `mlflow server` backed by a real PostgreSQL on
127.0.0.1, as a team or a sweep over several machines shares it."""

import threading

import pytest
from mlflow import MlflowClient

import postgres
from cifar_dcgan import tracking
from cifar_dcgan.store import experiment_id

pytestmark = pytest.mark.skipif(postgres.available() is not None, reason=str(postgres.available()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on PostgreSQL, artifacts proxied into a folder; yields its URI."""
    with postgres.tracking_server(tmp_path_factory.mktemp("server")) as uri:
        yield uri


def test_machines_creating_one_experiment_at_once_all_get_it(server):
    """Every stage looks the experiment up and creates it when missing; on a server no file
    lock orders them, so several starting at once race: none may fail, all get one id."""
    workers, ids, errors = 8, [], []
    barrier = threading.Barrier(workers)

    def start():
        client = MlflowClient(server)
        barrier.wait()
        try:
            ids.append(experiment_id(client, "raced", server))
        except Exception as error:  # noqa: BLE001 - the test reports every failure
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(ids) == workers and len(set(ids)) == 1


def test_two_sweeps_experiments_of_one_name_get_their_own_parent_runs(server, monkeypatch):
    """`base-1` of two sweeps (another baseline commit, or another user) is not one experiment."""
    client = MlflowClient(server)
    experiment = experiment_id(client, "parents", server)
    monkeypatch.setenv("DVC_EXP_NAME", "base-1")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    first = tracking._experiment_parent(client, experiment)
    assert tracking._experiment_parent(client, experiment) == first  # its next stage: the same parent
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "b" * 40)
    other_sweep = tracking._experiment_parent(client, experiment)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    other_user = tracking._experiment_parent(client, experiment)
    assert len({first, other_sweep, other_user}) == 3


def test_a_parent_run_from_before_parents_recorded_their_user_is_still_found(server, monkeypatch):
    client = MlflowClient(server)
    experiment = experiment_id(client, "older-parents", server)
    older = client.create_run(
        experiment,
        run_name="base-2",
        tags={"dvc_experiment": "true", "dvc_exp_name": "base-2", "dvc_exp_baseline_rev": "c" * 40},
    ).info.run_id
    assert "mlflow.user" not in client.get_run(older).data.tags
    monkeypatch.setenv("DVC_EXP_NAME", "base-2")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "c" * 40)
    assert tracking._experiment_parent(client, experiment) == older  # not a second parent
