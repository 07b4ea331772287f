"""How many proposals of a space the exact counter rejects, across budgets.

    python benchmarks/space_feasibility.py [--space studies/default.toml] [--draws 1000] [--seed 0]

Draws specs through the real sampling (StudyFile.sample_spec, with the recipe drawn too) from
Optuna's RandomSampler with a fixed seed, one study per budget, and counts those at or over
the budget (`fits`): parameter budgets alone, then parameter and MACs budgets together. Prints a
markdown table, then one JSON line. Target on the default space: at most 5% rejected at every
budget.

docs/measurements.md quotes the table this prints, with its command.
"""

import argparse
import json
import statistics
import time

import optuna

from resnet_space import Budget, count, fits
from resnet_space.space import StudyFile

BUDGETS = tuple(map(Budget, (50_000, 200_000, 1_000_000, 5_000_000, 20_000_000))) + (
    Budget(5_000_000, 300_000_000), Budget(1_000_000, 50_000_000), Budget(200_000, 10_000_000))


def feasibility(space: StudyFile, budget: Budget, draws: int, seed: int = 0) -> dict:
    """Draw `draws` proposals under `budget`; the rejected ones and the counts of the rest."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rejected = repaired = 0
    fitting = []
    for _ in range(draws):
        trial = study.ask()
        drawn = []
        spec = space.sample_spec(trial, budget, on_repair=drawn.append)
        space.sample_recipe(trial)
        counts = count(spec)
        repaired += bool(drawn)
        if fits(counts, budget):
            fitting.append(counts)
        else:
            rejected += 1
        study.tell(trial, 0.0)

    def share(values, wall):
        return round(statistics.median(values) / wall, 3) if values and wall else None

    return {"budget": budget.params, "macs_budget": budget.macs, "draws": draws, "rejected": rejected,
            "rejected_pct": round(100 * rejected / draws, 2), "repaired": repaired,
            "median_params_share": share([c.params for c in fitting], budget.params),
            "median_macs_share": share([c.macs for c in fitting], budget.macs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="studies/default.toml")
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = StudyFile.load(args.space)
    start = time.perf_counter()
    rows = [feasibility(space, budget, args.draws, args.seed) for budget in BUDGETS]
    print(f"Space {args.space}, {args.draws} random draws per budget (RandomSampler seed {args.seed})\n")
    print("| budget | MACs budget | draws | rejected | rejected % | repaired | median params / budget "
          "| median MACs / MACs budget |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        macs = "-" if r["macs_budget"] is None else f"{r['macs_budget']:,}"
        print(f"| {r['budget']:,} | {macs} | {r['draws']} | {r['rejected']} | {r['rejected_pct']:.1f}% "
              f"| {r['repaired']} | {r['median_params_share']} | {r['median_macs_share'] or '-'} |")
    print()
    print(json.dumps({"space": args.space, "seed": args.seed, "rows": rows,
                      "max_rejected_pct": max(r["rejected_pct"] for r in rows),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
