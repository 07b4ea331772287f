"""Each private optuna and torch name the project uses (search/private.py), checked against the
installed releases: a release that drops or renames one fails here, by name."""

import optuna
import pytest
import torch

from search import private


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")


def test_trial_id_is_the_storages_id_of_a_live_trial(study):
    trial = study.ask()
    assert isinstance(private.trial_id(trial), int)
    assert private.study_storage(study).get_trial(private.trial_id(trial)).number == trial.number


def test_study_storage_and_id_name_the_study(study):
    assert isinstance(private.study_storage(study), optuna.storages.BaseStorage)
    assert private.study_storage(study).get_study_name_from_id(private.study_id(study)) == study.study_name


@pytest.mark.parametrize("make", [optuna.samplers.RandomSampler, optuna.samplers.TPESampler])
def test_reseed_makes_a_samplers_draws_repeat(make):
    sampler = make(seed=0)
    draws = []
    for _ in range(2):
        private.reseed(sampler, 7)
        if isinstance(sampler, optuna.samplers.TPESampler):
            private.reseed(private.tpe_random_sampler(sampler), 7)  # its start-up draws
        study = optuna.create_study(sampler=sampler)
        draws.append(study.ask().suggest_float("x", 0, 1))
    assert draws[0] == draws[1]


def test_tpe_draws_its_start_up_from_a_random_sampler():
    assert isinstance(private.tpe_random_sampler(optuna.samplers.TPESampler(seed=0)), optuna.samplers.RandomSampler)


def test_artifact_metadata_is_written_under_the_prefix(study, tmp_path):
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "store").mkdir()
    artifact = upload_artifact(artifact_store=FileSystemArtifactStore(tmp_path / "store"),
                               file_path=str(tmp_path / "a.txt"), study_or_trial=study)
    keys = private.study_storage(study).get_study_system_attrs(private.study_id(study))
    assert private.artifacts_attr_prefix() + artifact in keys


def test_inductor_names_its_cpp_compiler():
    try:
        assert isinstance(private.cpp_compiler(), str)
    except Exception as e:  # noqa: BLE001 - no compiler here: the name itself must still be importable
        assert not isinstance(e, (ImportError, AttributeError)), e


def test_unwrapped_is_the_module_torch_compile_wraps():
    model = torch.nn.Linear(2, 2)
    assert private.unwrapped(torch.compile(model)) is model and private.unwrapped(model) is model


def test_optunas_heartbeat_interface_is_what_fail_stale_trials_checks_for():
    import inspect

    base = private.heartbeat_base()
    assert {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
            "get_heartbeat_stale_trial_callback"} <= base.__abstractmethods__
    assert "BaseHeartbeat" in inspect.getsource(optuna.storages.fail_stale_trials)
