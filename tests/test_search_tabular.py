"""benchmarks/search_tabular.py in small: the search's strategy on NAS-Bench-201's real results.

A few seeds, trials and one budget, in a few seconds; the whole comparison is the benchmark's.
"""

import optuna
import pytest

from benchmarks import search_tabular as tab
from search.study import strategy
from search.study.layout import DEFAULT_FINALISTS

DATA = tab.data_dir()  # $RESNET_SEARCH_NB201, else ../shared/datasets/nas-bench-201 beside the clone
pytestmark = pytest.mark.skipif(not (DATA / "nb201.csv").is_file(),
                                reason=f"NAS-Bench-201 table not found at {DATA} (set {tab.NB201_ENV})")
BUDGET = 600_000
METHODS = list(tab.DEFAULT_METHODS)


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(scope="module")
def table():
    return tab.load_table("cifar10")


@pytest.fixture(scope="module")
def runs(table):
    return {m: [tab.search(m, seed, table, BUDGET, trials=30) for seed in range(3)] for m in METHODS}


def test_the_table_is_whole_and_its_budget_rule_is_the_search_s(table):
    assert len(table.params) == 5 ** 6
    assert min(table.params.values()) == 73_306 and max(table.params.values()) == 1_531_546
    assert 0 < table.feasible(BUDGET) < 1
    assert table.best_under(BUDGET) < max(table.full.values())


def test_same_seed_same_numbers(table, runs):
    for method in METHODS:
        again = tab.search(method, 0, table, BUDGET, trials=30)
        assert again == runs[method][0], method
    assert runs["shipped"][0]["history"] != runs["shipped"][1]["history"]


def test_regret_is_never_negative_and_every_winner_fits(table, runs):
    for method, rs in runs.items():
        for r in rs:
            regrets = [x for _, x in r["history"] if x is not None]
            assert regrets and min(regrets) >= 0, method
            assert table.params[r["winner"]] < BUDGET
            assert round(table.best_under(BUDGET) - table.full[r["winner"]], 4) == regrets[-1]
            # More trials never make the winner worse: the final stage takes the best so far.
            assert regrets == sorted(regrets, reverse=True)


def test_costs_are_counted_in_epochs(runs):
    for r in runs["random no pruning"]:
        assert r["costs"] == [tab.FULL] * 30
        assert [spent for spent, _ in r["history"]] == [tab.FULL * n for n in range(1, 31)]
    for r in runs["shipped"] + runs["random + pruner"]:
        assert set(r["costs"]) <= {tab.SHORT, tab.FULL}
        # The pruner waits: the first trials at the rung all go on to full length.
        assert r["costs"][: strategy.MIN_TRIALS_AT_RUNG] == [tab.FULL] * strategy.MIN_TRIALS_AT_RUNG
        assert tab.SHORT in r["costs"]


def test_rejections_are_free_and_not_trials(table):
    tight = 100_000  # only cells with at most one 1x1 conv and no 3x3 fit
    r = tab.search("random no pruning", 0, table, tight, trials=5)
    assert r["rejected"] > 0 and len(r["costs"]) == 5 and r["history"][-1][0] == 5 * tab.FULL


def test_equal_epochs_and_the_final_stage(table):
    results = tab.compare(METHODS, seeds=2, trials=20, budgets=[("cifar10", BUDGET)], log=lambda m: None)
    cell = results[f"cifar10@{BUDGET}"]
    assert set(cell["methods"]) == set(METHODS)
    equal = cell["equal_epochs"]["20"]
    # Every method ran at least as many epochs as the shipped strategy spent, so each has a value there.
    for row in cell["methods"].values():
        assert row["within"]["20"]["n"] == 2 and row["within"]["20"]["median"] >= 0
    assert cell["methods"]["random no pruning"]["epochs"]["20"] == 20 * tab.FULL >= equal
    completed = [(90.0, ("a",)), (91.0, ("b",)), (91.0, ("b",)), (89.0, ("c",)), (88.0, ("d",))]
    assert tab.finalists(completed) == [("b",), ("a",), ("c",)][: DEFAULT_FINALISTS]


def test_curves_rank_late_epochs_better_and_the_pruner_keeps_the_best(table):
    curves = tab.load_curves()
    ranking = tab.curve_ranking(curves, epochs=(1, 100, 150))
    assert ranking[1]["all"] < ranking[100]["all"] < ranking[150]["all"]
    shipped = tab.rung_losses(curves, strategy.make_pruner, orders=2)
    previous = tab.rung_losses(curves, tab.legacy_pruner, orders=2)
    assert shipped["top10_stopped_share"] < previous["top10_stopped_share"]
    assert set(shipped["stops_at_epoch"]) <= set(strategy.rung_epochs(tab.REAL_EPOCHS))
