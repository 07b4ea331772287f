"""Does the shipped search strategy find a better network than random search, on real training results?

    python benchmarks/search_tabular.py [--seeds 50] [--trials 100] [--noise-free] [--out FILE]

The search's own trial loop (search.study.objective: propose, reject over the budget or as a
twin, train with reports, prune at the rung, and the final stage's choice of finalists and of
the winner) with its own sampler and pruner (search.study.strategy), over NAS-Bench-201 (data:
$RESNET_SEARCH_NB201, else ../shared/datasets/nas-bench-201 beside the clone; see its README),
no training: the loop proposes cells (CellProposer) and the table answers as training would
(TableTrainer).

- Space: the 6 edges of the cell, each `trial.suggest_categorical` over the 5 operations.
- Budget: hard, on `params_formula` (the parameter count recomputed from the cell): 3e5, 6e5 and
  9e5 on CIFAR-10 (26%, 84%, 98% of cells fit), 6e5 on CIFAR-100. A cell at or over it, or one
  the study trained already, is rejected as the search rejects a spec: free, not a trial.
- The table read as a run sees it (the default): a trial reports the 12-epoch run's accuracy at
  the pruner's rung (half of training) and, if it goes on, one training seed's 200-epoch value at
  the end, the seed picked from the search seed and the cell; a trial stopped at the rung costs
  the epochs before it. The final stage trains its finalists again unpruned, and the table
  answers with another seed. Regret is measured on the seeds' mean. --noise-free reads it
  kindly instead: every value the mean, a stopped trial charged the 12 epochs of the short run.
- Compute: the table's own training seconds (`train_time_200ep_s`, scaled by the epochs run).
- Regret: the best 200-epoch value (seed mean) of any cell under the budget, minus the winner's,
  in accuracy points: after N trained trials, and at equal compute (each method's winner among
  the trials it finished within the first method's median training seconds for N trials), with
  a one-sided paired Wilcoxon test (same seeds) that the first method's regret is lower.

Near the top, cells differ by less than NAS-Bench-201's spread between training seeds (0.1-0.3
points): compare methods by medians over many search seeds. Deterministic: every sampler draws
from (seed, trial number) alone. Prints markdown tables, then one JSON line (also written to --out);
the time each method took goes to stderr only, so stdout is the same on every run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from resnet_space import Budget, Counts
from search.commands.report import spearman as rank_correlation
from search.engine.train import Epoch
from search.study import record, strategy
from search.study.layout import DEFAULT_FINALISTS
from search.study.objective import Objective, Stage, Trained, finalists

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
REPO = Path(__file__).resolve().parent.parent
NB201_ENV = "RESNET_SEARCH_NB201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # op_key digits index these
EDGES = 6
SHORT, FULL = 12, 200  # the table's two training lengths, in epochs
REAL_EPOCHS = 30  # the search's default training length, for mapping its rungs onto the 200-epoch curves
BUDGETS = (("cifar10", 300_000), ("cifar10", 600_000), ("cifar10", 900_000), ("cifar100", 600_000))
CHECKPOINTS = (25, 50, 100)
CURVE_EPOCHS = (1, 2, 3, 5, 10, 20, 50, 100, 150)


def data_dir() -> Path:
    """The one setting: $RESNET_SEARCH_NB201, else the copy beside the clone."""
    return Path(os.environ.get(NB201_ENV, REPO.parent / "shared" / "datasets" / "nas-bench-201"))


@dataclass(frozen=True)
class Table:
    """One data set's results, per cell (a tuple of 6 op names): params, the 12-epoch run's
    validation accuracy, each training seed's 200-epoch validation accuracy, their mean, and the
    seconds a 200-epoch training took."""
    dataset: str
    params: dict
    short: dict
    seeds: dict  # cell -> [200-epoch validation accuracy of each training seed] (2 or 3)
    seconds: dict  # cell -> seconds of its 200-epoch training

    @property
    def full(self) -> dict:
        return self._full

    def __post_init__(self):
        object.__setattr__(self, "_full", {k: statistics.fmean(v) for k, v in self.seeds.items()})

    def best_under(self, budget: int) -> float:
        return max(v for k, v in self.full.items() if self.params[k] < budget)

    def feasible(self, budget: int) -> float:
        return sum(p < budget for p in self.params.values()) / len(self.params)


def load_table(dataset: str = "cifar10", root: Path | None = None, params_column: str = "params_formula") -> Table:
    params, short, seeds, seconds = {}, {}, {}, {}
    with open((root or data_dir()) / "nb201.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = tuple(OPS[int(d)] for d in row["op_key"].zfill(EDGES))
            params[key] = int(row[f"{dataset}_{params_column}"])
            short[key] = float(row[f"{dataset}_valid_acc_12ep"])
            seeds[key] = [float(v) for v in json.loads(row[f"{dataset}_valid_acc_200ep_seeds"])]
            seconds[key] = float(row[f"{dataset}_train_time_200ep_s"])
    assert len(params) == len(OPS) ** EDGES, len(params)
    return Table(dataset, params, short, seeds, seconds)


@dataclass(frozen=True)
class Reading:
    """How the table answers for training. noisy (the default): the search is told one training
    seed's 200-epoch value, picked from the search seed and the cell; a finalist is re-scored
    with another seed; a trial stopped at the rung has cost what the product's rung costs (the
    epochs before it). Noise-free (the reading before): every value is the seeds' mean, and a
    stopped trial costs the 12 epochs of the table's short run."""
    noisy: bool = True

    def seed_index(self, search_seed: int, cell: tuple, n: int, final: bool) -> int:
        digest = hashlib.blake2b(repr((search_seed, cell)).encode(), digest_size=4).digest()
        return (int.from_bytes(digest, "big") + final) % n

    def value(self, table: Table, cell: tuple, search_seed: int, final: bool) -> float:
        if not self.noisy:
            return table.full[cell]
        values = table.seeds[cell]
        return values[self.seed_index(search_seed, cell, len(values), final)]

    def stopped_epochs(self, rung: int) -> int:
        return rung if self.noisy else SHORT


@dataclass
class Ledger:
    """What a search's trials cost, in the table's training seconds and in epochs, in order."""
    seconds: list = field(default_factory=list)
    epochs: list = field(default_factory=list)

    def charge(self, table: Table, cell: tuple, epochs: int) -> None:
        self.add(table.seconds[cell] * epochs / FULL, epochs)

    def add(self, seconds: float, epochs: int) -> None:
        self.seconds.append(seconds)
        self.epochs.append(epochs)


class CellProposer:
    """NAS-Bench-201 cells for the search's trial loop: each edge suggest_categorical over the
    5 operations; a finalist is its search trial's cell. Counts are the table's parameters (it has
    no MACs, and these budgets have no MACs wall)."""

    def __init__(self, table: Table):
        self.table = table

    def propose(self, trial: optuna.Trial, known) -> tuple[dict, str, dict, Counts]:
        cell = (tuple(known.spec["cell"]) if known.finalist_of is not None else
                tuple(trial.suggest_categorical(f"edge{i}", OPS) for i in range(EDGES)))
        return {"cell": list(cell)}, "|".join(cell), {"epochs": FULL}, Counts(self.table.params[cell], 0)


class TableTrainer:
    """Answers as training would, from the table: with a pruner, the 12-epoch run's accuracy
    reported at the pruner's rung, then, if the trial goes on, its 200-epoch value reported at the
    last epoch (Reading says which); each epoch trained is charged to the ledger."""

    def __init__(self, table: Table, reading: Reading, search_seed: int, ledger: Ledger, rung: int | None,
                 final: bool = False):
        self.table, self.reading, self.seed, self.ledger, self.rung, self.final = (table, reading, search_seed,
                                                                                   ledger, rung, final)

    def identity(self, trial, p) -> dict:
        return {"seed": self.seed, "device": "table", "dataset": self.table.dataset, "train_images": None,
                "checkpoint_dir": ""}

    def train(self, trial, p, report, replay, interruptible) -> Trained:  # a lookup: nothing to interrupt
        cell = tuple(p.spec["cell"])
        if self.rung is None:
            self.ledger.charge(self.table, cell, FULL)
        else:
            try:
                report(Epoch(self.rung, self.table.short[cell], 0.0, 0.0, 0.0, 0.0))
            except optuna.TrialPruned:  # stopped at the rung: it cost the epochs before it
                self.ledger.charge(self.table, cell, self.reading.stopped_epochs(self.rung))
                raise
            self.ledger.add(self.table.seconds[cell], FULL)  # it went on to the end
        value = self.reading.value(self.table, cell, self.seed, self.final)
        report(Epoch(FULL, value, 0.0, 0.0, 0.0, 0.0))
        return Trained(value, FULL)

    def discard(self, p) -> None:
        pass

    def keep(self, trial, p, trained) -> None:
        pass


@dataclass(frozen=True)
class Method:
    """A search configuration: its sampler and pruner (None: no pruning) for a seed, the pruner's
    rung fraction, and the final stage's size."""
    sampler: object
    pruner: object = None
    finalists: int = DEFAULT_FINALISTS


def _tpe(seed: int, **changes):
    """The shipped TPE with some of its settings changed (to measure a choice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kw = {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": strategy.N_STARTUP_TRIALS}
        return strategy.TrialSeededTPE(seed, **{**kw, **changes})


def _rung_at(fraction: float):
    return lambda: strategy.RungPruner([max(1, round(FULL * fraction))])


def shipped_pruner():
    return strategy.make_pruner(FULL)


# The first two are the comparison; the rest are levers, one change each from the shipped.
METHODS = {
    "shipped": Method(strategy.make_sampler, shipped_pruner),
    "random + pruner": Method(lambda s: strategy.make_sampler(s, "random"), shipped_pruner),
    "random no pruning": Method(lambda s: strategy.make_sampler(s, "random")),
    "tpe no pruning": Method(strategy.make_sampler),
    "screen at 1/4": Method(strategy.make_sampler, _rung_at(0.25)),
    "final stage 1": Method(strategy.make_sampler, shipped_pruner, finalists=1),
    "final stage 5": Method(strategy.make_sampler, shipped_pruner, finalists=5),
    "tpe startup 5": Method(lambda s: _tpe(s, n_startup_trials=5), shipped_pruner),
    "tpe startup 20": Method(lambda s: _tpe(s, n_startup_trials=20), shipped_pruner),
}
DEFAULT_METHODS = ("shipped", "random + pruner")


def search(method: str, seed: int, table: Table, budget: int, trials: int, min_seconds: float = 0,
           reading: Reading = Reading()) -> dict:
    """One study through the search's own trial loop (search.study.objective), until `trials`
    trained trials and `min_seconds` of training are reached. Returns the trained trials' records
    in order, with what each cost (seconds, epochs), and how many proposals were rejected."""
    m = METHODS[method]
    pruner = m.pruner() if m.pruner else None
    study = optuna.create_study(direction="maximize", sampler=m.sampler(seed),
                                pruner=pruner or optuna.pruners.NopPruner())
    ledger = Ledger()
    rung = min(pruner.rungs) if pruner is not None else None
    objective = Objective(Stage(10**9, Budget(budget), FULL), CellProposer(table),
                          TableTrainer(table, reading, seed, ledger, rung), log=lambda message: None)

    def stop(study, trial) -> None:
        if len(ledger.epochs) >= trials and sum(ledger.seconds) >= min_seconds:
            study.stop()

    study.optimize(objective, callbacks=[objective.enough, stop])
    records = record.records(study)
    trained = [r for r in records if r.counts_as_trained]
    assert len(trained) == len(ledger.epochs), (len(trained), len(ledger.epochs))
    return {"trained": trained, "seconds": ledger.seconds, "epochs": ledger.epochs,
            "rejected": sum(r.rejected for r in records), "gave_up": objective.gave_up}


def final_stage(trained: list, table: Table, budget: int, seed: int, size: int, reading: Reading = Reading()):
    """The search's final stage on these trained trials, through the same code as the search's:
    its choice of finalists (the best `size` distinct cells), each trained again unpruned (re-scored
    with another training seed), and the winner the best of them by that value. Returns
    (winning cell, the stage's training seconds)."""
    entrants = finalists(trained, size)
    if not entrants:
        return None, 0.0
    final = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for r in entrants:
        final.enqueue_trial({}, user_attrs=record.finalist_attrs(r))
    ledger = Ledger()
    objective = Objective(Stage(len(entrants), Budget(budget), FULL), CellProposer(table),
                          TableTrainer(table, reading, seed, ledger, None, final=True), log=lambda message: None)
    final.optimize(objective, n_trials=len(entrants), callbacks=[objective.enough])
    won = record.finalist_winner(record.records(final))
    return tuple(won.spec["cell"]), sum(ledger.seconds)


def regret(table: Table, budget: int, cell) -> float | None:
    """Points of 200-epoch validation accuracy (the seeds' mean) below the best cell under the budget."""
    return None if cell is None else round(table.best_under(budget) - table.full[cell], 4)


def regret_after(run: dict, n: int, table: Table, budget: int, seed: int, size: int, reading: Reading):
    """The winner's regret after the first n trained trials (None if the run has fewer)."""
    if len(run["trained"]) < n:
        return None
    return regret(table, budget, final_stage(run["trained"][:n], table, budget, seed, size, reading)[0])


def within(run: dict, seconds: float) -> int:
    """How many of the run's trained trials finished within `seconds` of training."""
    spent, n = 0.0, 0
    for cost in run["seconds"]:
        spent += cost
        if spent > seconds:
            break
        n += 1
    return n


def _median_seconds(runs, n: int) -> float:
    reached = [sum(r["seconds"][:n]) for r in runs if len(r["seconds"]) >= n]
    return statistics.median(reached) if reached else 0.0


def _quartiles(values) -> dict:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return {"median": values[0] if values else None, "p25": None, "p75": None, "n": len(values)}
    q1, median, q3 = statistics.quantiles(sorted(values), n=4, method="inclusive")
    return {"p25": round(q1, 3), "median": round(median, 3), "p75": round(q3, 3), "n": len(values)}


def one_sided_p(ours: list, theirs: list) -> float | None:
    """Wilcoxon signed-rank test on paired regrets (same seeds), one-sided: ours lower."""
    pairs = [(a, b) for a, b in zip(ours, theirs) if a is not None and b is not None]
    if len(pairs) < 5 or all(a == b for a, b in pairs):
        return None
    from scipy.stats import wilcoxon

    return float(wilcoxon([a for a, _ in pairs], [b for _, b in pairs], alternative="less").pvalue)


def compare(methods, seeds: int, trials: int, budgets=BUDGETS, root: Path | None = None, log=print,
            reading: Reading = Reading()) -> dict:
    """Every method over seeds 0..seeds-1 at every budget: regret after each checkpoint of trained
    trials, and at the first method's median training seconds for it (equal compute); the one-sided
    paired test of the first method against each other."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tables, out = {}, {}
    checkpoints = [c for c in CHECKPOINTS if c <= trials] or [trials]
    reference = methods[0]
    for dataset, budget in budgets:
        table = tables.get(dataset) or tables.setdefault(dataset, load_table(dataset, root))
        runs, equal, regrets = {}, {}, {}
        cell = {"dataset": dataset, "budget": budget, "feasible": round(table.feasible(budget), 4),
                "best_under_budget": table.best_under(budget), "methods": {}}
        for method in methods:
            start = time.perf_counter()
            size = METHODS[method].finalists
            min_seconds = max(equal.values(), default=0)
            rs = runs[method] = [search(method, seed, table, budget, trials, min_seconds, reading)
                                 for seed in range(seeds)]
            if method == reference:
                equal = {c: _median_seconds(rs, c) for c in checkpoints}
                cell["equal_seconds"] = {str(c): round(e) for c, e in equal.items()}
            after = {c: [regret_after(r, c, table, budget, seed, size, reading) for seed, r in enumerate(rs)]
                     for c in checkpoints}
            at_equal = {c: [regret_after(r, within(r, e), table, budget, seed, size, reading) if within(r, e) else None
                            for seed, r in enumerate(rs)] for c, e in equal.items()}
            regrets[method] = at_equal
            row = {"after": {str(c): _quartiles(v) for c, v in after.items()},
                   "equal": {str(c): _quartiles(v) for c, v in at_equal.items()},
                   "seconds": {str(c): round(_median_seconds(rs, c)) for c in checkpoints},
                   "pruned_share": round(statistics.mean(
                       sum(e < FULL for e in r["epochs"][:trials]) / trials for r in rs), 3),
                   "rejected_per_trial": round(statistics.mean(r["rejected"] for r in rs) / trials, 2),
                   "gave_up": sum(bool(r["gave_up"]) for r in rs)}
            if method != reference:
                row["p_reference_lower"] = {str(c): one_sided_p(regrets[reference][c], at_equal[c]) for c in equal}
            cell["methods"][method] = row
            log(f"  {dataset} {budget:,} {method}: {time.perf_counter() - start:.1f} s")
        out[f"{dataset}@{budget}"] = cell
    return out


# --- How early epochs rank the last: the 200 whole learning curves (CIFAR-10, cells 0-199) ---

def load_curves(root: Path | None = None, column: str = "val_accs") -> list[list[float]]:
    """The 200 cells' whole curves: validation accuracy per epoch, or training accuracy (`train_accs`)."""
    path = (root or data_dir()) / "raw" / "learning-curves" / "curves-200-archs.csv"
    with open(path, newline="") as f:
        return [json.loads(row[column]) for row in csv.DictReader(f)]


def speed_ranking(val_curves, train_curves, epochs=CURVE_EPOCHS) -> dict:
    """Training-speed estimation (Ru et al. 2021) against the rung's validation accuracy: Spearman
    with the final validation accuracy of the sum of training accuracies up to epoch e (the curves
    hold training accuracy, not loss; the sum of the errors ranks the same, reversed), beside epoch
    e's validation accuracy; over all cells and the better half by the last epoch."""
    last = [c[-1] for c in val_curves]
    top = sorted(range(len(val_curves)), key=lambda i: -last[i])[: len(val_curves) // 2]

    def rho(values, cells):
        return round(rank_correlation([values[i] for i in cells], [last[i] for i in cells]), 3)

    out = {}
    for e in epochs:
        speed = [sum(c[:e]) for c in train_curves]
        val = [c[e - 1] for c in val_curves]
        cells = range(len(val_curves))
        out[e] = {"val_all": rho(val, cells), "speed_all": rho(speed, cells), "val_top_half": rho(val, top),
                  "speed_top_half": rho(speed, top)}
    return out




def curve_ranking(curves, epochs=CURVE_EPOCHS) -> dict:
    """Spearman of epoch e's validation accuracy with the last epoch's, over all cells and over
    the better half by the last epoch (where a pruner's decisions matter)."""
    last = [c[-1] for c in curves]
    top = sorted(range(len(curves)), key=lambda i: -last[i])[: len(curves) // 2]
    return {e: {"all": round(rank_correlation([c[e - 1] for c in curves], last), 3),
                "top_half": round(rank_correlation([curves[i][e - 1] for i in top], [last[i] for i in top]), 3)}
            for e in epochs}


def successive_halving(max_epochs: int) -> optuna.pruners.BasePruner:
    """Successive halving from a tenth of training, reduction factor 3: what the rung rule is measured against."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_epochs // 10), reduction_factor=3,
                                                  min_early_stopping_rate=0)


def rung_losses(curves, pruner_factory, epochs: int = REAL_EPOCHS, orders: int = 20, signals=None) -> dict:
    """The pruner run on the curves as `epochs`-epoch trials (epoch e of `epochs` is epoch
    round(e / epochs * 200) of the curve), the 200 cells in `orders` random orders: how often it
    stops one of the final top 10%, and the share of epochs it saves. signals: what the pruner
    is shown per cell and curve epoch instead of the validation curve (training speed, say)."""
    signals = signals or curves
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
                trial.report(signals[i][step - 1], e)
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
                   help="comma-separated, the first is the reference for equal compute; from: " + ", ".join(METHODS))
    p.add_argument("--budgets", default=",".join(f"{d}:{b}" for d, b in BUDGETS),
                   help="dataset:params,... (none: the learning-curve tables alone)")
    p.add_argument("--noise-free", action="store_true",
                   help="read the table kindly: every value the seeds' mean, a stopped trial costing 12 epochs")
    p.add_argument("--no-curves", action="store_true", help="skip the learning-curve tables")
    p.add_argument("--out", default=str(REPO / "results" / "search-tabular" / "results.json"))
    args = p.parse_args(argv)
    reading = Reading(noisy=not args.noise_free)
    methods = args.methods.split(",")
    budgets = [] if args.budgets == "none" else [(d, int(float(b))) for d, b in (x.split(":") for x in
                                                                              args.budgets.split(","))]
    out = {"seeds": args.seeds, "trials": args.trials, "methods": methods, "params": "params_formula",
           "reading": "noisy" if reading.noisy else "noise-free", "rung": strategy.rung_epochs(FULL)[0],
           "full_epochs": FULL, "final_stage_size": DEFAULT_FINALISTS, "keep": strategy.KEEP_FRACTION,
           "min_trials_at_rung": strategy.MIN_TRIALS_AT_RUNG, "rung_fractions": list(strategy.RUNG_FRACTIONS)}
    if not args.no_curves:
        curves = load_curves()
        ranking = curve_ranking(curves)
        print(f"Spearman of epoch e with epoch 200 (validation accuracy, {len(curves)} CIFAR-10 cells, "
              "one 200-epoch cosine schedule): all cells, and the better half by epoch 200\n")
        print_table(["epoch"] + [str(e) for e in ranking],
                    [["all"] + [f"{r['all']:.2f}" for r in ranking.values()],
                     ["better half"] + [f"{r['top_half']:.2f}" for r in ranking.values()]])
        train_curves = load_curves(column="train_accs")
        speed = [[sum(c[:e]) for e in range(1, len(c) + 1)] for c in train_curves]
        losses = {"successive halving (3, 9, 27)": rung_losses(curves, successive_halving),
                  f"shipped (rungs {strategy.rung_epochs(REAL_EPOCHS)})": rung_losses(curves, strategy.make_pruner),
                  "shipped, ranking by training speed": rung_losses(curves, strategy.make_pruner, signals=speed)}
        print(f"\nThe pruners on these curves as {REAL_EPOCHS}-epoch trials (epoch e of {REAL_EPOCHS} = "
              f"curve epoch round(e/{REAL_EPOCHS}*200)), 20 random orders of the 200 cells\n")
        print_table(["pruner", "final top 10% stopped", "epochs saved", "stops per study at epoch e"],
                    [[name, f"{r['top10_stopped_share']:.1%}", f"{r['epochs_saved']:.1%}",
                      ", ".join(f"e{e}: {c}" for e, c in r["stops_at_epoch"].items())] for name, r in losses.items()])
        speed = speed_ranking(curves, train_curves)
        print("\nThe rung's ranking against training speed: Spearman with epoch 200's validation accuracy of "
              "epoch e's validation accuracy, and of the sum of training accuracies over epochs 1..e\n")
        print_table(["epoch"] + [str(e) for e in speed],
                    [["validation, all"] + [f"{r['val_all']:.2f}" for r in speed.values()],
                     ["training speed, all"] + [f"{r['speed_all']:.2f}" for r in speed.values()],
                     ["validation, better half"] + [f"{r['val_top_half']:.2f}" for r in speed.values()],
                     ["training speed, better half"] + [f"{r['speed_top_half']:.2f}" for r in speed.values()]])
        out["speed_ranking"] = {str(e): r for e, r in speed.items()}
        out["curve_ranking"] = {str(e): r for e, r in ranking.items()}
        out["rung_losses"] = losses
        print()
    results = compare(methods, args.seeds, args.trials, budgets, log=lambda m: print(m, file=sys.stderr, flush=True),
                      reading=reading)
    out["results"] = results
    line = json.dumps(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    for cell in results.values():
        cps = list(cell["equal_seconds"])
        print(f"\nRegret (points of 200-epoch validation accuracy, the seeds' mean) on {cell['dataset']}, budget "
              f"{cell['budget']:,} params ({cell['feasible']:.1%} of cells fit, best {cell['best_under_budget']:.2f}), "
              f"{out['reading']} reading: median [25%, 75%] over {args.seeds} seeds\n")
        header = ["method"] + [f"after {c}" for c in cps] + [
            f"within {cell['equal_seconds'][c] / 3600:,.0f} h" for c in cps] + [
            "p (first lower), equal h", "train h at " + "/".join(cps), "pruned", "rejected per trial"]
        rows = []
        for method, row in cell["methods"].items():
            p_values = row.get("p_reference_lower", {})
            rows.append([method] + [fmt(row["after"][c]) for c in cps] + [fmt(row["equal"][c]) for c in cps]
                        + ["/".join("-" if p_values.get(c) is None else f"{p_values[c]:.3g}" for c in cps) if p_values
                           else "-"]
                        + ["/".join(f"{row['seconds'][c] / 3600:,.0f}" for c in cps), f"{row['pruned_share']:.0%}",
                           f"{row['rejected_per_trial']:.2f}"])
        print_table(header, rows)
    print()
    print(line)
    return out


if __name__ == "__main__":
    main()
