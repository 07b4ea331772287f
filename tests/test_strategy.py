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


def proposals(seed: int, worker: int, trials: int) -> list:
    space = StudyFile.load(SPACE)
    run = search(strategy.make_sampler(seed, worker), strategy.make_pruner(30), space, 5_000_000, 30, trials,
                 "repro", checkpoints=())
    return run["proposals"]


def test_shipped_sampler_beats_random_under_the_same_pruner():
    # benchmarks/search_synthetic.py measures 20 seeds x 100 trials; this is 5 x 40.
    results = compare(["shipped", "random + shipped pruner"], seeds=5, trials=40, budget=5_000_000, epochs=30,
                      space_path=SPACE, checkpoints=(40,))
    shipped, random = results["shipped"][40], results["random + shipped pruner"][40]
    assert shipped["median"] > random["median"], results


def test_same_seed_same_proposals():
    first = proposals(seed=7, worker=0, trials=15)
    assert first == proposals(seed=7, worker=0, trials=15)
    assert len(first) == 15 and len(set(first)) > 10  # specs and learning rates, past the start-up too


def test_workers_draw_different_start_up_trials():
    zero, one = proposals(seed=7, worker=0, trials=10), proposals(seed=7, worker=1, trials=10)
    assert not set(zero) & set(one)
    assert strategy.sampler_seed(7, 0) != strategy.sampler_seed(7, 1)
    assert strategy.sampler_seed(7, 1) == strategy.sampler_seed(7, 1)  # no process id, no clock
    with pytest.raises(ValueError):
        strategy.sampler_seed(7, -1)


def test_pruner_is_one_bracket_from_a_tenth_of_training():
    pruner = strategy.make_pruner(30)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert [strategy.first_rung(e) for e in (1, 9, 10, 30, 200)] == [1, 1, 1, 3, 20]
    # One bracket: the sampler is shown the whole study, not a Hyperband bracket of it.
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    assert optuna.pruners._filter_study(study, study._storage.get_trial(trial._trial_id)) is study
