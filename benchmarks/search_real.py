"""What a user gets on real images: each search's winner (after its final stage) retrained as
`resnet-search retrain` does it and tested once, against random search's winner retrained the same
way, the seeded baseline retrained the same way, and the baseline alone given the whole compute of
a search plus its retrain. CPU-sized.

    python benchmarks/search_real.py --seeds 3

On the JPEG copy of CIFAR-10 under studies/cpu-1e5.toml (the default space at 100,000 params),
for each seed s: the shipped sampler and random search (the same pruner, split, seed and trial
count), each followed by its final stage; the winner of each retrained on training + validation
images under its final-stage recipe and tested once after its final epoch (no selection on
test); Model 1's shape at the budget retrained the same way, for the final stage's epochs; and
that baseline retrained for as many epochs as the shipped search plus its retrain took seconds
(what a user pays on this machine; the MACs of each run are printed beside). The studies run
without a seeded baseline: on these cores the 30-block baseline trains at a fifth of the speed
of a searched network, and it is measured apart here. Resumable: each seed's studies live in
OUT/studies-seedS.db and its finished runs in OUT/results-seedS.json, so seeds can run as
processes of their own (--only-seed S; one thread each on a small machine) and any call prints
the tables over every seed found in OUT. Prints markdown tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna

from common import default_data
from resnet_space import baseline_spec, count
from search.study import record, strategy
from search.commands.report import pruner_trust
from search.commands.retrain import RetrainSettings, retrain
from search.study import SearchSettings, run_search

BUDGET = 100_000
SPACE = "cpu-1e5"
METHODS = ("tpe", "random", "baseline retrained", "baseline alone")


def quiet(message: str) -> None:
    pass


def storage(args, seed: int) -> str:
    return f"sqlite:///{args.out}/studies-seed{seed}.db"


def retrained_row(result) -> dict:
    e = result.entry
    return {"test_acc": e["mean"], "retrain_epochs": e["epochs"], "retrain_s": round(sum(s["seconds"] for s in result.seeds), 1),
            "retrain_mac_epochs": count(result.target.spec).macs * e["epochs"] * e["seeds"]}


def search_run(args, sampler: str, seed: int) -> dict:
    name = f"{sampler}-seed{seed}"
    settings = SearchSettings(budget=BUDGET, space=SPACE, study=name, storage=storage(args, seed), trials=args.trials,
                              epochs=args.epochs, device="cpu", data=args.data, limit_train=args.limit_train,
                              val_size=args.val_size, seed=seed, sampler=sampler, baseline=False,
                              artifacts=args.out / "artifacts", finalists=args.finalists,
                              final_epochs=args.final_epochs)
    study = run_search(settings)
    final = record.final_stage(study)
    stage, won = record.winner(study)
    searched = record.TrialRecord.of(record.best_trials(study, 1)[0])
    result = retrain(RetrainSettings(study=name, storage=storage(args, seed), seeds=1, device="cpu"), log=quiet,
                     study=study)
    trials = record.records(study) + record.records(final)
    return {"method": sampler, "seed": seed, "winner": record.TrialRecord.of(won).summary,
            "params": count(result.target.spec).params, "search_winner": searched.summary,
            "search_val_acc": searched.value, "final_val_acc": won.value,
            "final_changed_the_winner": record.TrialRecord.of(won).spec != searched.spec,
            "trained": record.trained_count(study),
            "pruned_by_pruner": sum(r.state == "PRUNED" and r.counts_as_trained for r in record.records(study)),
            "rejected": sum(r.rejected for r in record.records(study)),
            "search_s": round(sum(sum(r.seconds) for r in trials), 1),
            "mac_epochs": sum((r.macs or 0) * len(r.curve) for r in trials if r.counts_as_trained),
            "pruner_trust": pruner_trust(record.Snapshot.of(study)), **retrained_row(result)}


def baseline_run(args, seed: int, epochs: int, method: str) -> dict:
    """Model 1's shape at the budget, retrained as `retrain --spec` does it, for `epochs`."""
    spec = baseline_spec(BUDGET)
    spec_file = args.out / "baseline-spec.json"
    spec_file.write_text(spec.to_json())
    result = retrain(RetrainSettings(study=f"tpe-seed{seed}", storage=storage(args, seed), spec=str(spec_file),
                                     epochs=epochs, seeds=1, device="cpu"), log=quiet)
    row = retrained_row(result)
    return {"method": method, "seed": seed, "winner": spec.summary(), "params": count(spec).params,
            "search_s": 0.0, "mac_epochs": 0, **row}


def settings_of(args) -> dict:
    return {k: getattr(args, k) for k in ("trials", "epochs", "finalists", "final_epochs", "limit_train", "val_size")}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f} ({100 * min(values):.2f}-{100 * max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per search trial")
    parser.add_argument("--finalists", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=12, help="epochs of the final stage and the retrain")
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--only-seed", type=int, help="run this seed alone (the tables still cover every seed in OUT)")
    parser.add_argument("--out", type=Path, default=Path("results/search-real"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()

    def run_once(method: str, seed: int, make) -> dict:
        results_file = args.out / f"results-seed{seed}.json"
        results = json.loads(results_file.read_text()) if results_file.exists() else []
        found = next((r for r in results if r["method"] == method), None)
        if found is None:
            found = {**make(), "settings": settings_of(args)}
            results.append(found)
            results_file.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps({k: v for k, v in found.items() if k != "pruner_trust"}), flush=True)
        return found

    for seed in range(args.seeds) if args.only_seed is None else [args.only_seed]:
        shipped = run_once("tpe", seed, lambda: search_run(args, "tpe", seed))
        if args.trials > strategy.N_STARTUP_TRIALS:
            run_once("random", seed, lambda: search_run(args, "random", seed))
        else:  # every trial is one of TPE's random start-up trials, drawn as random search draws them
            print(f"seed {seed}: random search not run: with {args.trials} trials TPE is still in its "
                  f"{strategy.N_STARTUP_TRIALS} random start-up trials, the very draws of random search", flush=True)
        base = run_once("baseline retrained", seed,
                        lambda: baseline_run(args, seed, args.final_epochs, "baseline retrained"))
        # The baseline alone gets the seconds the shipped search and its retrain took, at its own pace.
        per_epoch = base["retrain_s"] / base["retrain_epochs"]
        epochs = max(1, round((shipped["search_s"] + shipped["retrain_s"]) / per_epoch))
        run_once("baseline alone", seed, lambda: baseline_run(args, seed, epochs, "baseline alone"))

    results = [r for path in sorted(args.out.glob("results-seed*.json")) for r in json.loads(path.read_text())]
    print(f"\nCIFAR-10 JPEG copy, budget {BUDGET:,}, {SPACE}; searches of {args.trials} trained trials x "
          f"{args.epochs} epochs, final stage {args.finalists} finalists x {args.final_epochs} epochs; "
          f"{args.limit_train:,} training / {args.val_size:,} validation images (retrained on both together), "
          f"test on 10,000; seeds {sorted({r['seed'] for r in results})}; this call {time.time() - started:.0f} s\n")
    print("| method | runs | retrained test acc %, mean ± std (min-max) | epochs retrained | compute s, search + "
          "retrain (mean) | GMAC-epochs per image (mean) |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if rows:
            print(f"| {method} | {len(rows)} | {spread([r['test_acc'] for r in rows])} | "
                  f"{', '.join(str(r['retrain_epochs']) for r in rows)} | "
                  f"{statistics.mean(r['search_s'] + r['retrain_s'] for r in rows):.0f} | "
                  f"{statistics.mean(r['mac_epochs'] + r['retrain_mac_epochs'] for r in rows) / 1e9:.2f} |")
    print("\n| run | winner | params | search's best (val %) | final-stage winner val % | retrained test % | "
          "trained | pruned | Spearman at the pruner's epochs with the last (trials) |")
    print("|---|---|---:|---|---:|---:|---:|---:|---|")
    for r in results:
        if r["method"] not in ("tpe", "random"):
            continue
        trust = ", ".join(f"e{t['epoch']} " + (f"{t['spearman']:+.2f} ({t['trials']})" if t["spearman"] is not None
                                               else f"- ({t['trials']})") for t in r["pruner_trust"])
        print(f"| {r['method']} seed {r['seed']} | {r['winner']} | {r['params']:,} | {r['search_winner']} "
              f"({100 * r['search_val_acc']:.2f}) | {100 * r['final_val_acc']:.2f} | {100 * r['test_acc']:.2f} | "
              f"{r['trained']} | {r['pruned_by_pruner']} | {trust or '-'} |")
    means = {m: statistics.mean(r["test_acc"] for r in results if r["method"] == m)
             for m in METHODS if any(r["method"] == m for r in results)}
    print(json.dumps({"results": str(args.out), "runs": len(results), "mean_test_acc": means, "settings": settings_of(args),
                      "seconds": round(time.time() - started)}))


if __name__ == "__main__":
    main()
