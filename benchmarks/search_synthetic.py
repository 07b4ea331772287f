"""Does the shipped sampler learn? The search loop on a made-up, deterministic objective.

    python benchmarks/search_synthetic.py [--seeds 20] [--trials 100] [--budget 5e6] [--epochs 30]

Everything but the training is the search's own: its trial loop (search.study.objective), the
default space's proposals (search.study.networks.ResNetProposer), the exact budget check, the
twin rejection and the pruner, fed one value per epoch. The training
is a simulated learning curve: a final accuracy from a smooth made-up function of the spec and
learning rate, plus deterministic noise from a hash of the spec, reached along a curve whose
speed depends on the spec (so curves cross and the pruner can be wrong).

Compares the shipped configuration (search.study.strategy) with RandomSampler under the same pruner
(and, for reference, TPE with Hyperband), over the same seeds:
median and quartiles of the best final value of the completed trials after 25, 50 and 100
trained trials. Prints a markdown table, then one JSON line.

Simulated learning curves, not real training: what it prints says how the sampler and pruner
behave on a curve of known shape, not what they achieve on images. docs/measurements.md quotes
its table (--seeds 50) under that heading.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import time
import warnings
from pathlib import Path

import optuna

from resnet_space import Budget, Recipe, ResNetSpec, count, fits
from resnet_space.space import StudyFile
from search.engine.train import Epoch
from search.study import record, strategy
from search.study.networks import ResNetProposer
from search.study.objective import Objective, Stage, Trained
from search.commands.flags import budget_arg
from search.commands.report import spearman

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
DEFAULT_SPACE = Path(__file__).resolve().parent.parent / "studies" / "default.toml"


def _unit(*key) -> float:
    """A deterministic number in [-1, 1) from a hash of `key`."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1


def final_accuracy(spec, recipe, budget: int) -> float:
    """A made-up, smooth landscape with the shape of the real one: more parameters help (by
    log), depth has a sweet spot, 4 stages beat 3 and 5, a 5x5 kernel helps in the first
    stage and costs later, pool 4 and growth 2 help a little, and the learning rate has a
    sweet spot at 0.15; plus +/-0.4 points of noise fixed per spec and learning rate."""
    params = count(spec).params
    layers = 2 * sum(spec.blocks)
    acc = 0.955
    acc -= 0.02 * math.log(budget / params)
    acc -= 0.03 * math.log(layers / 30) ** 2
    acc -= {3: 0.010, 4: 0.0, 5: 0.006}.get(spec.stages, 0.015)
    acc += 0.003 * (spec.conv_kernels[0] == 5) - 0.003 * sum(f == 5 for f in spec.conv_kernels[1:])
    acc -= 0.001 * sum(k == 3 for k in spec.skip_kernels[1:])
    acc -= {1: 0.004, 2: 0.002}.get(spec.pool, 0.0)
    acc += 0.003 * (spec.channels[-1] >= 2 * spec.channels[-2])
    acc -= 0.02 * math.log(recipe.lr / 0.15) ** 2
    return acc + 0.004 * _unit(spec.to_json(), round(recipe.lr, 6))


def curve(spec, recipe, budget: int, epochs: int) -> list[float]:
    """Validation accuracy after each epoch: from 10% towards the final accuracy, faster for
    shallow networks and high learning rates, with +/-0.3 points of per-epoch noise."""
    final = final_accuracy(spec, recipe, budget)
    k = 0.15 * (30 / (2 * sum(spec.blocks))) ** 0.05 * (recipe.lr / 0.15) ** 0.05
    norm = 1 - math.exp(-k * epochs)
    key = (spec.to_json(), round(recipe.lr, 6))
    return [0.1 + (final - 0.1) * (1 - math.exp(-k * e)) / norm + 0.003 * _unit(*key, e)
            for e in range(1, epochs + 1)]


class CurveTrainer:
    """Answers as training would, from the made-up learning curve: a report each epoch, which the
    pruner may stop; every epoch run is counted."""

    def __init__(self, budget: int, epochs: int):
        self.budget, self.epochs, self.spent = budget, epochs, 0

    def identity(self, trial, p) -> dict:
        return {"seed": 0, "device": "made-up curve", "dataset": "synthetic", "train_images": None, "checkpoint_dir": ""}

    def train(self, trial, p, report, replay, interruptible) -> Trained:  # a lookup: nothing to interrupt
        spec, recipe = ResNetSpec.from_dict(p.spec), Recipe.from_dict(p.recipe)
        values = curve(spec, recipe, self.budget, self.epochs)
        for epoch, value in enumerate(values, 1):
            self.spent += 1
            report(Epoch(epoch, value, 0.0, 0.0, 0.0, 0.0))
        return Trained(max(values), values.index(max(values)) + 1)

    def discard(self, p) -> None:
        pass

    def keep(self, trial, p, trained) -> None:
        pass


def search(sampler, pruner, space: StudyFile, budget: int, epochs: int, trials: int,
           name: str, checkpoints=(25, 50, 100), max_epochs: int | None = None) -> dict:
    """One study of `trials` trained trials (or until `max_epochs` epochs are trained), through the
    search's own trial loop (search.study.objective) with the default space's own proposals; the
    best completed value after each checkpoint, and (epochs trained, best) after every completion."""
    study = optuna.create_study(study_name=name, direction="maximize", sampler=sampler, pruner=pruner)
    trainer = CurveTrainer(budget, epochs)
    objective = Objective(Stage(trials, Budget(budget), epochs), ResNetProposer(space, Budget(budget), epochs),
                          trainer, log=lambda message: None)
    found, timeline, best = {}, [], None

    def track(study, trial) -> None:
        nonlocal best
        r = record.TrialRecord.of(trial)
        if r.state == "COMPLETE":
            best = r.value if best is None else max(best, r.value)
            timeline.append((trainer.spent, best))
        trained = record.trained_count(study)
        if r.counts_as_trained and trained in checkpoints:
            found[trained] = best
        if max_epochs is not None and trainer.spent >= max_epochs:
            study.stop()

    study.optimize(objective, callbacks=[objective.enough, track])
    records = record.records(study)
    return {"best": found, "over_budget": sum(r.over_budget for r in records), "epochs": trainer.spent,
            "complete": sum(r.state == "COMPLETE" for r in records),
            "proposals": [(r.summary, round(r.recipe["lr"], 6)) for r in records],
            "timeline": timeline, "trained": record.trained_count(study)}


CONFIGS = {
    "shipped": lambda seed, epochs: (strategy.make_sampler(seed), strategy.make_pruner(epochs)),
    "random + shipped pruner": lambda seed, epochs: (strategy.make_sampler(seed, "random"),
                                                    strategy.make_pruner(epochs)),
    "TPE + Hyperband": lambda seed, epochs: (
        optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, n_startup_trials=10, seed=seed),
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)),
    "random + Hyperband": lambda seed, epochs: (optuna.samplers.RandomSampler(seed=seed),
                                               optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                                                              reduction_factor=3)),
}


def _quartiles(values) -> dict:
    q1, median, q3 = statistics.quantiles(sorted(values), n=4, method="inclusive")
    return {"p25": round(q1, 4), "median": round(median, 4), "p75": round(q3, 4)}


def compare(configs: list[str], seeds: int, trials: int, budget: int, epochs: int,
            space_path=DEFAULT_SPACE, checkpoints=(25, 50, 100)) -> dict:
    """Every config over seeds 0..seeds-1: per checkpoint of trained trials, the quartiles of
    the best completed value (0 where none has completed yet)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = StudyFile.load(space_path)
    checkpoints = tuple(c for c in checkpoints if c <= trials)
    results = {}
    for config in configs:
        start = time.perf_counter()
        runs = [search(*CONFIGS[config](seed, epochs), space, budget, epochs, trials, f"synthetic-{seed}",
                       checkpoints) for seed in range(seeds)]
        row = {"seconds": round(time.perf_counter() - start, 1)}
        for c in checkpoints:
            row[c] = _quartiles(r["best"][c] or 0.0 for r in runs)
        row["mean_epochs"] = round(statistics.mean(r["epochs"] for r in runs), 1)
        row["mean_complete"] = round(statistics.mean(r["complete"] for r in runs), 1)
        row["over_budget"] = sum(r["over_budget"] for r in runs)
        results[config] = row
    return results


def compare_per_epoch(configs: list[str], seeds: int, epoch_budgets: list[int], budget: int, epochs: int,
                      space_path=DEFAULT_SPACE) -> dict:
    """The same, by epochs trained instead of trials: each run goes on until it has trained
    max(epoch_budgets) epochs; the best completed value within each epoch budget."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = StudyFile.load(space_path)
    results = {}
    for config in configs:
        start = time.perf_counter()
        runs = [search(*CONFIGS[config](seed, epochs), space, budget, epochs, 10**9, f"synthetic-{seed}", (),
                       max_epochs=max(epoch_budgets)) for seed in range(seeds)]
        row = {"seconds": round(time.perf_counter() - start, 1)}
        for b in epoch_budgets:
            row[b] = _quartiles(max([best for spent, best in r["timeline"] if spent <= b], default=0.0) for r in runs)
        row["mean_trials"] = round(statistics.mean(r["trained"] for r in runs), 1)
        results[config] = row
    return results


def curve_rank_correlation(budget: int, epochs: int, draws: int = 400, space_path=DEFAULT_SPACE) -> dict:
    """Spearman rank correlation, over random draws of the space, between the simulated
    accuracy after epoch e and the final one: how much an early rung can tell."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = StudyFile.load(space_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    curves = []
    for _ in range(draws):
        trial = study.ask()
        spec, recipe = space.sample_spec(trial, budget), space.sample_recipe(trial, epochs)
        if fits(spec, budget):
            curves.append(curve(spec, recipe, budget, epochs))
        study.tell(trial, 0.0)

    final = [c[-1] for c in curves]
    return {e: round(spearman([c[e - 1] for c in curves], final), 2)
            for e in (1, 3, 9, 27) if e < epochs}


def quartiles(cell: dict) -> str:
    return f"{100 * cell['median']:.2f} [{100 * cell['p25']:.2f}, {100 * cell['p75']:.2f}]"


def print_table(columns: list[str], rows: dict[str, list[str]]) -> None:
    """A markdown table: one row per configuration."""
    print("| configuration | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--budget", type=budget_arg, default=5_000_000, help="as `run --budget` reads it: 5e6, 5M, 500k")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from: " + ", ".join(CONFIGS))
    p.add_argument("--epoch-budgets", default="",
                   help="also compare by epochs trained, e.g. 600,1200,2400 (each run trains up to the largest)")
    args = p.parse_args()
    configs, budget = args.configs.split(","), args.budget
    correlation = curve_rank_correlation(budget, args.epochs)
    results = compare(configs, args.seeds, args.trials, budget, args.epochs)
    checkpoints = [c for c in (25, 50, 100) if c <= args.trials]
    print(f"Best final validation accuracy (simulated) after N trained trials: median [25%, 75%] over "
          f"{args.seeds} seeds; default space, budget {budget:,}, {args.epochs} epochs; rank correlation of "
          "epoch e with the final accuracy: " + ", ".join(f"e{e} {r}" for e, r in correlation.items()) + "\n")
    print_table([f"after {c} trials" for c in checkpoints] + ["epochs trained (mean)", "completed (mean)", "seconds"],
                {config: [quartiles(row[c]) for c in checkpoints]
                 + [f"{row['mean_epochs']:,.0f}", f"{row['mean_complete']:.1f}", str(row["seconds"])]
                 for config, row in results.items()})
    out = {"seeds": args.seeds, "trials": args.trials, "budget": budget, "epochs": args.epochs,
           "rank_correlation_with_final": {str(e): r for e, r in correlation.items()},
           "results": {k: {str(c): v for c, v in row.items()} for k, row in results.items()}}
    if args.epoch_budgets:
        epoch_budgets = [int(b) for b in args.epoch_budgets.split(",")]
        per_epoch = compare_per_epoch(configs, args.seeds, epoch_budgets, budget, args.epochs)
        print("\nThe same, by epochs trained: best final value within E epochs (all trials' epochs together)\n")
        print_table([f"within {b:,} epochs" for b in epoch_budgets] + ["trials (mean)", "seconds"],
                    {config: [quartiles(row[b]) for b in epoch_budgets] + [f"{row['mean_trials']:.0f}", str(row["seconds"])]
                     for config, row in per_epoch.items()})
        out["per_epoch"] = {k: {str(c): v for c, v in row.items()} for k, row in per_epoch.items()}
    print()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
