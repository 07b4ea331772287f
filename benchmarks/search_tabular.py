"""Does the shipped search strategy find a better network than random search, on real training results?

    python benchmarks/search_tabular.py [--seeds 50] [--trials 100] [--out results/search-tabular/results.json]

The search's own strategy code (search.study.strategy: make_sampler, make_pruner, reject_over_budget,
DEFAULT_FINALISTS) run ask/tell over NAS-Bench-201 (data: $RESNET_SEARCH_NB201, else
../shared/datasets/nas-bench-201 beside the clone; see its README), no training:

- Space: the 6 edges of the cell, each `trial.suggest_categorical` over the 5 operations.
- Budget: hard, on `params_formula` (the parameter count recomputed from the cell, which is what
  a budget check on a spec computes): 1e5 (4.7% of cells fit: no conv at all), 3e5, 6e5 and 9e5
  on CIFAR-10 (26%, 84%, 98%), 6e5 on CIFAR-100. A spec at or over the budget is rejected exactly as the
  search's objective rejects it (`reject_over_budget`, then told PRUNED with no values), costs
  nothing and is not counted as a trial; so is a proposal of a cell the study trained already,
  as the objective rejects a spec and recipe it trained already.
- Rungs on a 2-point table: a trained trial first costs 12 epochs and shows the pruner its
  12-epoch validation accuracy (a separate 12-epoch run of the cell, cosine schedule to zero),
  reported at the pruner's first rung, `rung_epochs(200)[0]`, of `make_pruner(200)`. If it is
  not stopped it goes on to 200 epochs (188 more, 200 in all) and its value is the 200-epoch
  mean validation accuracy over NAS-Bench-201's seeds, reported at step 200. So the pruner makes
  one decision per trial, on a real early signal (Spearman 0.82 with the 200-epoch value on
  CIFAR-10), at the price of 12 epochs: this measures its ranking rule (how many it keeps, how
  long it waits) and what pruning does to the sampler, not where its rungs fall; the whole
  learning curves of 200 cells (`curve_ranking`, `rung_losses`) measure that.
- Without pruning every trained trial costs 200 epochs.
- Final stage: the DEFAULT_FINALISTS best distinct completed specs by the search's values are
  trained again at full length unpruned (200 epochs each, not counted in the search's epochs
  below) and the winner is the best of them by 200-epoch value. With a table the re-score is
  the same number, so the winner is the best completed value; the stage is kept explicit for
  when the search's value and the re-score differ.
- Regret: the best 200-epoch value of any cell under the budget in the whole table, minus the
  winner's, in accuracy points. Compared after N trained trials, and at equal epochs: at the
  median number of search epochs the shipped strategy spent for N trials, each method's winner
  among the trials it completed within that many epochs.

Near the top, cells differ by less than NAS-Bench-201's spread between training seeds (0.1-0.3
points): compare methods by medians over many search seeds. Deterministic: every sampler draws
from (seed, trial number) alone. Prints markdown tables, then one JSON line (also written to --out);
the time each method took goes to stderr only, so stdout is the same on every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from resnet_space import Budget, Counts
from search.study import strategy
from search.study.layout import DEFAULT_FINALISTS
from search.commands.report import spearman as rank_correlation

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message=".*`gamma` has been deprecated", category=FutureWarning)
REPO = Path(__file__).resolve().parent.parent
NB201_ENV = "RESNET_SEARCH_NB201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # op_key digits index these
EDGES = 6
SHORT, FULL = 12, 200  # the table's two training lengths, in epochs
REAL_EPOCHS = 30  # the search's default training length, for mapping its rungs onto the 200-epoch curves
BUDGETS = (("cifar10", 100_000), ("cifar10", 300_000), ("cifar10", 600_000), ("cifar10", 900_000),
           ("cifar100", 600_000))
CHECKPOINTS = (25, 50, 100)
CURVE_EPOCHS = (1, 2, 3, 5, 10, 20, 50, 100, 150)


def data_dir() -> Path:
    """The one setting: $RESNET_SEARCH_NB201, else the copy beside the clone."""
    return Path(os.environ.get(NB201_ENV, REPO.parent / "shared" / "datasets" / "nas-bench-201"))


@dataclass(frozen=True)
class Table:
    """One data set's results: per cell (a tuple of 6 op names), params and the two accuracies."""
    dataset: str
    params: dict
    short: dict
    full: dict

    def best_under(self, budget: int) -> float:
        return max(v for k, v in self.full.items() if self.params[k] < budget)

    def feasible(self, budget: int) -> float:
        return sum(p < budget for p in self.params.values()) / len(self.params)


def load_table(dataset: str = "cifar10", root: Path | None = None, params_column: str = "params_formula") -> Table:
    params, short, full = {}, {}, {}
    with open((root or data_dir()) / "nb201.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = tuple(OPS[int(d)] for d in row["op_key"].zfill(EDGES))
            params[key] = int(row[f"{dataset}_{params_column}"])
            short[key] = float(row[f"{dataset}_valid_acc_12ep"])
            full[key] = float(row[f"{dataset}_valid_acc_200ep_mean"])
    assert len(params) == len(OPS) ** EDGES, len(params)
    return Table(dataset, params, short, full)


def legacy_pruner(max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner shipped before: successive halving from a tenth of training, reduction factor 3."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_epochs // 10), reduction_factor=3,
                                                  min_early_stopping_rate=0)


def _tpe(seed: int, **changes):
    """The shipped TPE with some of its settings changed (to measure a choice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kw = {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": strategy.N_STARTUP_TRIALS}
        return strategy.TrialSeededTPE(seed, **{**kw, **changes})


def _rung_pruner(**changes):
    kw = {"keep": strategy.KEEP_FRACTION, "min_trials": strategy.MIN_TRIALS_AT_RUNG}
    return strategy.RungPruner(strategy.rung_epochs(FULL), **{**kw, **changes})


# name: seed -> (sampler, pruner or None for no pruning). The first three are the comparison.
METHODS = {
    "shipped": lambda s: (strategy.make_sampler(s), strategy.make_pruner(FULL)),
    "random + pruner": lambda s: (strategy.make_sampler(s, "random"), strategy.make_pruner(FULL)),
    "random no pruning": lambda s: (strategy.make_sampler(s, "random"), None),
    # Choices measured (docs/search-tabular.md):
    "tpe no pruning": lambda s: (strategy.make_sampler(s), None),
    "tpe + previous pruner": lambda s: (strategy.make_sampler(s), legacy_pruner(FULL)),
    "random + previous pruner": lambda s: (strategy.make_sampler(s, "random"), legacy_pruner(FULL)),
    "tpe + pruner keep 1/3": lambda s: (strategy.make_sampler(s), _rung_pruner(keep=1 / 3)),
    "tpe + pruner wait 10": lambda s: (strategy.make_sampler(s), _rung_pruner(min_trials=10)),
    "tpe + pruner wait 0": lambda s: (strategy.make_sampler(s), _rung_pruner(min_trials=0)),
    "tpe univariate": lambda s: (_tpe(s, multivariate=False, group=False), strategy.make_pruner(FULL)),
    "tpe startup 20": lambda s: (_tpe(s, n_startup_trials=20), strategy.make_pruner(FULL)),
    "shipped training twins again": lambda s: (strategy.make_sampler(s), strategy.make_pruner(FULL)),
    "tpe gamma 0.25": lambda s: (_tpe(s, gamma=lambda n: min(math.ceil(0.25 * n), 25)), strategy.make_pruner(FULL)),
}
# As the objective does, a proposal of a spec the study trained already is rejected free (told
# PRUNED, no values); this variant trains such twins again, as the objective did before.
TRAIN_TWINS = {"shipped training twins again"}
REJECTION = strategy.REJECTION  # how rejections are told; changed only to measure the choice
DEFAULT_METHODS = ("shipped", "random + pruner", "random no pruning")


def search(method: str, seed: int, table: Table, budget: int, trials: int, min_epochs: int = 0,
           give_up_after: int = 1000) -> dict:
    """One study: asks until `trials` trained trials and `min_epochs` search epochs are reached.
    Returns, after every trained trial, (search epochs so far, regret of the winner so far)."""
    sampler, pruner = METHODS[method](seed)
    study = optuna.create_study(direction="maximize", sampler=sampler,
                                pruner=pruner or optuna.pruners.NopPruner())
    best = table.best_under(budget)
    rung = strategy.rung_epochs(FULL)[0] if pruner is not None else None
    trained = spent = rejected = in_a_row = 0
    completed, history, costs, seen = [], [], [], set()
    while trained < trials or spent < min_epochs:
        trial = study.ask()
        key = tuple(trial.suggest_categorical(f"edge{i}", OPS) for i in range(EDGES))
        params = table.params[key]
        if params >= budget:  # as the objective: rejected at once, never trained or counted
            # The table gives no MACs, and these budgets have no MACs wall.
            rejection = strategy.reject_over_budget(trial, Counts(params, 0), Budget(budget), REJECTION)
            study.tell(trial, state=rejection)
            rejected, in_a_row = rejected + 1, in_a_row + 1
            if in_a_row >= give_up_after:
                break
            continue
        if method not in TRAIN_TWINS and key in seen:
            study.tell(trial, state=TrialState.PRUNED)
            rejected, in_a_row = rejected + 1, in_a_row + 1
            if in_a_row >= give_up_after:
                break
            continue
        seen.add(key)
        trained, in_a_row = trained + 1, 0
        cost = FULL
        if rung is not None:
            trial.report(table.short[key], rung)
            if trial.should_prune():
                cost = SHORT
        spent += cost
        costs.append(cost)
        if cost == FULL:
            trial.report(table.full[key], FULL)
            study.tell(trial, table.full[key])
            completed.append((table.full[key], key))
        else:
            study.tell(trial, state=TrialState.PRUNED)
        history.append((spent, round(best - winner(table, completed), 4) if completed else None))
    return {"history": history, "rejected": rejected, "costs": costs,
            "distinct_trained": len({k for _, k in completed}), "winner": _winner_key(completed)}


def finalists(completed: list, size: int = DEFAULT_FINALISTS) -> list:
    """The final stage's entrants: the `size` best distinct specs of (value, spec) pairs."""
    out = []
    for _, key in sorted(completed, key=lambda vk: -vk[0]):
        if key not in out:
            out.append(key)
            if len(out) == size:
                break
    return out


def winner(table: Table, completed: list) -> float:
    """The final stage: the finalists trained again at full length; the best 200-epoch value."""
    return max(table.full[k] for k in finalists(completed))


def _winner_key(completed: list):
    return max(finalists(completed), key=lambda k: {k2: v for v, k2 in completed}[k]) if completed else None


def regret_after(run: dict, trials: int):
    return run["history"][trials - 1][1] if len(run["history"]) >= trials else None


def regret_within(run: dict, epochs: float):
    """The regret of the winner among the trials completed within `epochs` search epochs."""
    within = [r for spent, r in run["history"] if spent <= epochs and r is not None]
    return within[-1] if within else None


def _median_epochs(runs, trials: int):
    """The median search epochs at `trials` trained trials, over the runs that got that far (a
    run gives up after a long run of rejections)."""
    reached = [r["history"][trials - 1][0] for r in runs if len(r["history"]) >= trials]
    return statistics.median(reached) if reached else 0


def _quartiles(values) -> dict:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return {"median": values[0] if values else None, "p25": None, "p75": None, "n": len(values)}
    q1, median, q3 = statistics.quantiles(sorted(values), n=4, method="inclusive")
    return {"p25": round(q1, 3), "median": round(median, 3), "p75": round(q3, 3), "n": len(values)}


def compare(methods, seeds: int, trials: int, budgets=BUDGETS, root: Path | None = None, log=print) -> dict:
    """Every method over seeds 0..seeds-1 at every budget: quartiles of regret after each
    checkpoint of trained trials, and at the shipped strategy's median epochs for it."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tables, out = {}, {}
    checkpoints = [c for c in CHECKPOINTS if c <= trials] or [trials]
    reference = methods[0]
    for dataset, budget in budgets:
        table = tables.get(dataset) or tables.setdefault(dataset, load_table(dataset, root))
        runs, equal = {}, {}
        cell = {"dataset": dataset, "budget": budget, "feasible": round(table.feasible(budget), 4),
                "best_under_budget": table.best_under(budget), "methods": {}}
        for method in methods:
            start = time.perf_counter()
            min_epochs = max(equal.values(), default=0)
            runs[method] = [search(method, seed, table, budget, trials, min_epochs) for seed in range(seeds)]
            if method == reference:
                equal = {c: _median_epochs(runs[method], c) for c in checkpoints}
                cell["equal_epochs"] = {str(c): e for c, e in equal.items()}
            rs = runs[method]
            row = {}
            row["after"] = {str(c): _quartiles(regret_after(r, c) for r in rs) for c in checkpoints}
            row["within"] = {str(c): _quartiles(regret_within(r, e) for r in rs) for c, e in equal.items()}
            row["epochs"] = {str(c): _median_epochs(rs, c) for c in checkpoints}
            row["pruned_share"] = round(statistics.mean(
                sum(x == SHORT for x in r["costs"][:trials]) / trials for r in rs), 3)
            row["rejected_per_trial"] = round(statistics.mean(r["rejected"] for r in rs) / trials, 2)
            row["distinct_completed"] = round(statistics.mean(r["distinct_trained"] for r in rs), 1)
            cell["methods"][method] = row
            log(f"  {dataset} {budget:,} {method}: {time.perf_counter() - start:.1f} s")
        out[f"{dataset}@{budget}"] = cell
    return out


# --- How early epochs rank the last: the 200 whole learning curves (CIFAR-10, cells 0-199) ---

def load_curves(root: Path | None = None) -> list[list[float]]:
    path = (root or data_dir()) / "raw" / "learning-curves" / "curves-200-archs.csv"
    with open(path, newline="") as f:
        return [json.loads(row["val_accs"]) for row in csv.DictReader(f)]




def curve_ranking(curves, epochs=CURVE_EPOCHS) -> dict:
    """Spearman of epoch e's validation accuracy with the last epoch's, over all cells and over
    the better half by the last epoch (where a pruner's decisions matter)."""
    last = [c[-1] for c in curves]
    top = sorted(range(len(curves)), key=lambda i: -last[i])[: len(curves) // 2]
    return {e: {"all": round(rank_correlation([c[e - 1] for c in curves], last), 3),
                "top_half": round(rank_correlation([curves[i][e - 1] for i in top], [last[i] for i in top]), 3)}
            for e in epochs}


def rung_losses(curves, pruner_factory, epochs: int = REAL_EPOCHS, orders: int = 20) -> dict:
    """The pruner run on the curves as `epochs`-epoch trials (epoch e of `epochs` is epoch
    round(e / epochs * 200) of the curve), the 200 cells in `orders` random orders: how often it
    stops one of the final top 10%, and the share of epochs it saves."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n, steps = len(curves), [max(1, round(e / epochs * len(curves[0]))) for e in range(1, epochs + 1)]
    top = set(sorted(range(n), key=lambda i: -curves[i][-1])[: max(1, n // 10)])
    lost, spent, stops = 0, 0, {}
    for order in range(orders):
        cells = list(range(n))
        random.Random(order).shuffle(cells)
        study = optuna.create_study(direction="maximize", pruner=pruner_factory(epochs))
        for i in cells:
            trial = study.ask()
            for e, step in enumerate(steps, 1):
                trial.report(curves[i][step - 1], e)
                spent += 1
                if e < epochs and trial.should_prune():
                    lost += i in top
                    stops[e] = stops.get(e, 0) + 1
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, curves[i][-1])
    return {"top10_stopped_share": round(lost / (orders * len(top)), 3),
            "epochs_saved": round(1 - spent / (orders * n * epochs), 3),
            "stops_at_epoch": {e: round(c / orders, 1) for e, c in sorted(stops.items())}}


def fmt(q: dict) -> str:
    if q["median"] is None:
        return "-"
    if q["p25"] is None:
        return f"{q['median']:.2f}"
    return f"{q['median']:.2f} [{q['p25']:.2f}, {q['p75']:.2f}]"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--trials", type=int, default=100, help="trained trials per study")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated, the first is the reference for equal epochs; from: " + ", ".join(METHODS))
    p.add_argument("--budgets", default=",".join(f"{d}:{b}" for d, b in BUDGETS), help="dataset:params,...")
    p.add_argument("--rejection", choices=("pruned", "constraint", "fail"), default=strategy.REJECTION,
                   help="how over-budget proposals are told to the sampler (to measure the choice; "
                        f"the search's is {strategy.REJECTION!r})")
    p.add_argument("--no-curves", action="store_true", help="skip the learning-curve tables")
    p.add_argument("--out", default=str(REPO / "results" / "search-tabular" / "results.json"))
    args = p.parse_args(argv)
    global REJECTION
    REJECTION = args.rejection
    methods = args.methods.split(",")
    budgets = [(d, int(float(b))) for d, b in (x.split(":") for x in args.budgets.split(","))]
    out = {"seeds": args.seeds, "trials": args.trials, "methods": methods, "params": "params_formula",
           "rung": strategy.rung_epochs(FULL)[0], "short_epochs": SHORT, "full_epochs": FULL,
           "final_stage_size": DEFAULT_FINALISTS, "keep": strategy.KEEP_FRACTION,
           "min_trials_at_rung": strategy.MIN_TRIALS_AT_RUNG, "rung_fractions": list(strategy.RUNG_FRACTIONS),
           "rejection": REJECTION}
    if not args.no_curves:
        curves = load_curves()
        ranking = curve_ranking(curves)
        print(f"Spearman of epoch e with epoch 200 (validation accuracy, {len(curves)} CIFAR-10 cells, "
              "one 200-epoch cosine schedule): all cells, and the better half by epoch 200\n")
        print_table(["epoch"] + [str(e) for e in ranking],
                    [["all"] + [f"{r['all']:.2f}" for r in ranking.values()],
                     ["better half"] + [f"{r['top_half']:.2f}" for r in ranking.values()]])
        losses = {"previous (SH 3, 9, 27)": rung_losses(curves, legacy_pruner),
                  f"shipped (rungs {strategy.rung_epochs(REAL_EPOCHS)})": rung_losses(curves, strategy.make_pruner)}
        print(f"\nThe pruners on these curves as {REAL_EPOCHS}-epoch trials (epoch e of {REAL_EPOCHS} = "
              f"curve epoch round(e/{REAL_EPOCHS}*200)), 20 random orders of the 200 cells\n")
        print_table(["pruner", "final top 10% stopped", "epochs saved", "stops per study at epoch e"],
                    [[name, f"{r['top10_stopped_share']:.1%}", f"{r['epochs_saved']:.1%}",
                      ", ".join(f"e{e}: {c}" for e, c in r["stops_at_epoch"].items())] for name, r in losses.items()])
        out["curve_ranking"] = {str(e): r for e, r in ranking.items()}
        out["rung_losses"] = losses
        print()
    results = compare(methods, args.seeds, args.trials, budgets, log=lambda m: print(m, file=sys.stderr, flush=True))
    out["results"] = results
    line = json.dumps(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    for cell in results.values():
        cps = list(cell["equal_epochs"])
        print(f"\nRegret (points of 200-epoch validation accuracy) on {cell['dataset']}, budget "
              f"{cell['budget']:,} params ({cell['feasible']:.1%} of cells fit, best {cell['best_under_budget']:.2f}): "
              f"median [25%, 75%] over {args.seeds} seeds\n")
        header = ["method"] + [f"after {c}" for c in cps] + [
            f"within {cell['equal_epochs'][c]:,.0f} ep" for c in cps] + [
            "epochs at " + "/".join(cps), "pruned", "rejected per trial"]
        rows = []
        for method, row in cell["methods"].items():
            rows.append([method] + [fmt(row["after"][c]) for c in cps] + [fmt(row["within"][c]) for c in cps]
                        + ["/".join(f"{row['epochs'][c]:,.0f}" for c in cps), f"{row['pruned_share']:.0%}",
                           f"{row['rejected_per_trial']:.2f}"])
        print_table(header, rows)
    print()
    print(line)
    return out


if __name__ == "__main__":
    main()
