"""benchmarks/search_tabular.py in small: the search's own trial loop on NAS-Bench-201's real results.

A few seeds, trials and one budget, in a few seconds; the whole comparison is the benchmark's.
"""

import optuna
import pytest

from benchmarks import search_tabular as tab
from search.study import objective, strategy

DATA = tab.data_dir()  # $RESNET_SEARCH_NB201, else ../shared/datasets/nas-bench-201 beside the clone
pytestmark = pytest.mark.skipif(not (DATA / "nb201.csv").is_file(),
                                reason=f"NAS-Bench-201 table not found at {DATA} (set {tab.NB201_ENV})")
BUDGET = 600_000
METHODS = list(tab.DEFAULT_METHODS) + ["random no pruning"]


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(scope="module")
def table():
    return tab.load_table("cifar10")


@pytest.fixture(scope="module")
def runs(table):
    return {m: [tab.search(m, seed, table, BUDGET, trials=30) for seed in range(3)] for m in METHODS}


def outline(run: dict) -> list:
    return [(r.number, r.spec["cell"], r.state, r.value) for r in run["trained"]] + [run["seconds"], run["rejected"]]


def test_the_table_is_whole_and_its_budget_rule_is_the_search_s(table):
    assert len(table.params) == 5 ** 6
    assert min(table.params.values()) == 73_306 and max(table.params.values()) == 1_531_546
    assert 0 < table.feasible(BUDGET) < 1
    assert table.best_under(BUDGET) < max(table.full.values())
    assert all(2 <= len(v) <= 3 for v in table.seeds.values())


def test_the_benchmark_runs_the_search_s_own_decisions(table):
    """Proposals scripted into the benchmark's study end as the search's objective ends them,
    recorded the same way: over the budget, trained, a twin of a trained cell."""
    over = max(table.params, key=table.params.get)
    fits = min(table.params, key=table.params.get)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    for cell in (over, fits, fits):
        study.enqueue_trial({f"edge{i}": op for i, op in enumerate(cell)})
    ledger = tab.Ledger()
    loop = objective.Objective(objective.Stage(2, tab.Budget(BUDGET), tab.FULL), tab.CellProposer(table),
                               tab.TableTrainer(table, tab.Reading(), 0, ledger, None), log=lambda m: None)
    study.optimize(loop, n_trials=3, callbacks=[loop.enough])
    rejected, trained, twin = [objective.record.TrialRecord.of(t) for t in study.trials]
    assert rejected.state == "PRUNED" and rejected.over_budget and rejected.walls_hit == ["params"]
    assert rejected.prune_reason == f"over budget: {table.params[over]:,} params >= {BUDGET:,}"
    assert trained.state == "COMPLETE" and trained.counts_as_trained and len(ledger.seconds) == 1
    assert twin.state == "PRUNED" and twin.duplicate_of == trained.number and not twin.counts_as_trained
    assert "trained the same spec and recipe" in twin.prune_reason


def test_same_seed_same_numbers(table, runs):
    for method in METHODS:
        assert outline(tab.search(method, 0, table, BUDGET, trials=30)) == outline(runs[method][0]), method
    assert outline(runs["shipped"][0]) != outline(runs["shipped"][1])


def test_a_run_is_told_one_seed_and_its_finalists_another(table, runs):
    reading = tab.Reading()
    for r in runs["random no pruning"][0]["trained"]:
        cell = tuple(r.spec["cell"])
        assert r.value in table.seeds[cell]
        assert r.value == reading.value(table, cell, 0, final=False)
        if len(set(table.seeds[cell])) > 1:
            assert reading.value(table, cell, 0, final=True) != r.value
    kind = tab.search("random no pruning", 0, table, BUDGET, trials=5, reading=tab.Reading(noisy=False))
    assert all(r.value == table.full[tuple(r.spec["cell"])] for r in kind["trained"])


def test_regret_is_never_negative_and_every_winner_fits(table, runs):
    for method, rs in runs.items():
        for seed, r in enumerate(rs):
            cell, seconds = tab.final_stage(r["trained"], table, BUDGET, seed, 3)
            assert table.params[cell] < BUDGET and seconds > 0
            assert tab.regret(table, BUDGET, cell) >= 0


def test_costs_are_counted_in_training_seconds_and_a_stopped_trial_pays_its_rung(table, runs):
    for r in runs["random no pruning"]:
        assert r["epochs"] == [tab.FULL] * 30
        assert r["seconds"] == pytest.approx([table.seconds[tuple(t.spec["cell"])] for t in r["trained"]])
    rung = strategy.rung_epochs(tab.FULL)[0]
    for r in runs["shipped"] + runs["random + pruner"]:
        assert set(r["epochs"]) <= {rung, tab.FULL} and rung in r["epochs"]
        # The pruner waits: the first trials at the rung all go on to full length.
        assert r["epochs"][: strategy.MIN_TRIALS_AT_RUNG] == [tab.FULL] * strategy.MIN_TRIALS_AT_RUNG
        for t, epochs, seconds in zip(r["trained"], r["epochs"], r["seconds"]):
            assert seconds == pytest.approx(table.seconds[tuple(t.spec["cell"])] * epochs / tab.FULL)
            assert (t.state == "PRUNED") == (epochs == rung)
    kind = tab.search("shipped", 0, table, BUDGET, trials=30, reading=tab.Reading(noisy=False))
    assert set(kind["epochs"]) == {tab.SHORT, tab.FULL}


def test_rejections_are_free_and_not_trials(table):
    tight = 100_000  # only cells with at most one 1x1 conv and no 3x3 fit
    r = tab.search("random no pruning", 0, table, tight, trials=5)
    assert r["rejected"] > 0 and len(r["trained"]) == 5 and r["epochs"] == [tab.FULL] * 5


def test_equal_compute_and_the_paired_test(table):
    results = tab.compare(METHODS, seeds=5, trials=20, budgets=[("cifar10", BUDGET)], log=lambda m: None)
    cell = results[f"cifar10@{BUDGET}"]
    assert set(cell["methods"]) == set(METHODS)
    # Every method trained at least as long as the first spent, so each has a value there.
    for row in cell["methods"].values():
        assert row["equal"]["20"]["n"] == 5 and row["equal"]["20"]["median"] >= 0
    assert "p_reference_lower" in cell["methods"]["random + pruner"]
    assert cell["methods"]["random no pruning"]["seconds"]["20"] >= cell["equal_seconds"]["20"]


def test_curves_rank_late_epochs_better_and_the_pruner_keeps_the_best(table):
    curves = tab.load_curves()
    ranking = tab.curve_ranking(curves, epochs=(1, 100, 150))
    assert ranking[1]["all"] < ranking[100]["all"] < ranking[150]["all"]
    shipped = tab.rung_losses(curves, strategy.make_pruner, orders=2)
    halving = tab.rung_losses(curves, tab.successive_halving, orders=2)
    assert shipped["top10_stopped_share"] < halving["top10_stopped_share"]
    assert set(shipped["stops_at_epoch"]) <= set(strategy.rung_epochs(tab.REAL_EPOCHS))
