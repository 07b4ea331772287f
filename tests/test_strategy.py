"""The shipped sampler and pruner (search/strategy.py): it learns, and it is reproducible.

The objective is benchmarks/search_synthetic.py's: the real default space, sampling, budget
check and pruner, with a simulated learning curve instead of training.
"""

import optuna
import pytest

from benchmarks.search_synthetic import compare, search
from resnet_space.space import StudyFile
from search import strategy

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


def test_shipped_sampler_beats_random_under_the_same_pruner():
    # benchmarks/search_synthetic.py measures 20 seeds x 100 trials; this is 5 x 40.
    results = compare(["shipped", "random + shipped pruner"], seeds=5, trials=40, budget=5_000_000, epochs=30,
                      space_path=SPACE, checkpoints=(40,))
    shipped, random = results["shipped"][40], results["random + shipped pruner"][40]
    assert shipped["median"] > random["median"], results


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


def test_pruner_is_one_bracket_from_a_tenth_of_training():
    pruner = strategy.make_pruner(30)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert [strategy.first_rung(e) for e in (1, 9, 10, 30, 200)] == [1, 1, 1, 3, 20]
    assert [strategy.rung_epochs(e) for e in (1, 2, 4, 30, 200)] == [[], [1], [1, 3], [3, 9, 27], [20, 60, 180]]
    # One bracket: the sampler is shown the whole study, not a Hyperband bracket of it.
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    assert optuna.pruners._filter_study(study, study._storage.get_trial(trial._trial_id)) is study
