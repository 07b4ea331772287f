"""The shipped sampler and pruner (search/study/strategy.py): the pruner's rule, and reproducible proposals.

Whether the strategy beats random search is measured on real results, not here:
tests/test_search_tabular.py (NAS-Bench-201). The proposals below come from
benchmarks/search_synthetic.py's loop: the real default space, sampling, budget check and pruner.
"""

import optuna
import pytest

from benchmarks.search_synthetic import search
from resnet_space.space import StudyFile
from search.study import strategy

from .conftest import REPO

SPACE = REPO / "studies" / "default.toml"


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def proposals(seed: int, trials: int, kind: str = "tpe") -> list:
    space = StudyFile.load(SPACE)
    run = search(strategy.make_sampler(seed, kind), strategy.make_pruner(30), space, 5_000_000, 30, trials,
                 "repro", checkpoints=())
    return run["proposals"]


@pytest.mark.parametrize("kind", strategy.SAMPLERS)
def test_same_seed_same_proposals(kind):
    first = proposals(seed=7, trials=15, kind=kind)
    assert first == proposals(seed=7, trials=15, kind=kind)
    assert len(first) == 15 and len(set(first)) > 10  # specs and learning rates, past the start-up too
    assert first != proposals(seed=8, trials=15, kind=kind)


def test_workers_sharing_a_study_draw_different_start_up_trials():
    """Two workers, each with its own sampler built from the same seed, asking in turn from one
    storage: each trial number is handed out once, so no two draws coincide."""
    space, storage = StudyFile.load(SPACE), optuna.storages.InMemoryStorage()
    workers = [optuna.create_study(study_name="shared", storage=storage, load_if_exists=True,
                                   sampler=strategy.make_sampler(7)) for _ in range(2)]
    drawn = []
    for i in range(10):
        trial = workers[i % 2].ask()
        drawn.append((space.sample_spec(trial, 5_000_000).summary(), round(space.sample_recipe(trial).lr, 6)))
    assert len(set(drawn)) == 10
    # And the draws are the trial numbers', not the workers': one worker alone draws the same.
    assert drawn == proposals(seed=7, trials=10)


def test_rungs_start_at_half_of_training():
    assert [strategy.rung_epochs(e) for e in (1, 2, 3, 4, 10, 30, 200)] == [[], [1], [1], [2], [5], [15], [100]]
    for epochs in range(1, 301):
        assert all(epochs / 2 - 1 < r < epochs for r in strategy.rung_epochs(epochs)), epochs


def _trial_at(study, value_by_step: dict, complete: bool = True):
    """A trial that reported these values; told COMPLETE (or left running) afterwards. Returns
    what the pruner said after each report."""
    trial, said = study.ask(), []
    for step, value in sorted(value_by_step.items()):
        trial.report(value, step)
        said.append(trial.should_prune())
    if complete:
        study.tell(trial, max(value_by_step.values()))
    return said


def test_pruner_waits_for_enough_trials_at_the_rung_then_stops_a_clearly_bad_one():
    n, rung = strategy.MIN_TRIALS_AT_RUNG, strategy.rung_epochs(30)[0]
    study = optuna.create_study(direction="maximize", pruner=strategy.make_pruner(30))
    # Fewer than n trials at the rung: even a much worse one goes on.
    for i in range(n):
        assert _trial_at(study, {rung: 0.9 - (0.5 if i == n - 1 else 0.01 * i)}) == [False]
    # Now n have reached it: a clearly bad one is stopped, a good one is not.
    assert _trial_at(study, {rung: 0.1}) == [True]
    assert _trial_at(study, {rung: 0.95}) == [False]
    # Trials still running at the rung count as having reached it.
    running = optuna.create_study(direction="maximize", pruner=strategy.make_pruner(30))
    for _ in range(n):
        _trial_at(running, {rung: 0.9}, complete=False)
    assert _trial_at(running, {rung: 0.1}) == [True]


def test_pruner_keeps_the_best_fraction_and_never_decides_before_half_of_training():
    rung = strategy.rung_epochs(30)[0]
    study = optuna.create_study(direction="maximize", pruner=strategy.make_pruner(30))
    for i in range(20):  # values 0.0 .. 0.95 at every epoch, all before the rung judged already
        said = _trial_at(study, {e: i / 20 for e in range(1, 30)})
        assert not any(said[: rung - 1])  # epochs before the rung: never stopped
    stopped = [_trial_at(study, {e: v for e in range(1, 30)})[rung - 1] for v in (0.02, 0.3, 0.6, 0.9)]
    # Among 20 at the rung, the best KEEP_FRACTION go on.
    assert stopped == [True, True, False, False] and strategy.KEEP_FRACTION == 0.5


def test_pruner_is_used_as_one_bracket():
    # The sampler is shown the whole study (no Hyperband-style brackets).
    study = optuna.create_study(pruner=strategy.make_pruner(30))
    trial = study.ask()
    assert optuna.pruners._filter_study(study, study._storage.get_trial(trial._trial_id)) is study
