"""Does the search beat random search, and the seeded baseline, on real images? (CPU-sized)

On the JPEG copy of CIFAR-10, under studies/cpu-1e5.toml (the default space at 100,000 params):
the shipped sampler and random search under the same pruner, the same seeds and the same number
of trained trials, then the seeded baseline (Model 1's shape at the budget) alone, trained for as
many epochs as one search's mean training seconds buy (what a user pays; it varies with the
machine's load). Each run's compute is also counted in MACs per image over its trained epochs:
the deep, narrow baseline does fewer MACs per second on a CPU than the searched networks. Each
winner is scored as `best --export` scores it: its best validation epoch, and that checkpoint
once on the test split. Resumable: studies live in OUT/studies.db and finished runs are kept in
OUT/results.json.

    python benchmarks/search_real.py --seeds 3 --trials 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna
import torch

from resnet_space import baseline_spec, count
from resnet_space.model import build_model
from resnet_space.space import StudyFile
from search import record
from search.data import load_cifar10
from search.export import export_trial
from search.layout import resolve_space
from search.report import pruner_trust
from search.study import SearchSettings, run_search
from search.train import evaluate, load_weights, train

from common import default_data

BUDGET = 100_000
SPACE = "cpu-1e5"


def search_run(args, sampler: str, seed: int) -> dict:
    name = f"{sampler}-seed{seed}"
    settings = SearchSettings(budget=BUDGET, space=SPACE, study=name, storage=f"sqlite:///{args.out}/studies.db",
                              trials=args.trials, device="cpu", data=args.data, limit_train=args.limit_train,
                              val_size=args.val_size, seed=seed, sampler=sampler, baseline=False,
                              artifacts=args.out / "artifacts")
    study = run_search(settings)
    trials = record.records(study)
    best = record.best_trials(study, 1)[0]
    metrics = export_trial(study, best, args.out / "exports" / name)
    return {"method": sampler, "seed": seed, "winner": record.TrialRecord.of(best).summary,
            "params": metrics["params"], "val_acc": best.value, "test_acc": metrics["test_acc"],
            "trained": sum(r.counts_as_trained for r in trials),
            "pruned_by_pruner": sum(r.state == "PRUNED" and r.counts_as_trained for r in trials),
            "rejected": sum(r.rejected for r in trials),
            "compute_s": round(sum(sum(r.seconds) for r in trials), 1), "mac_epochs": mac_epochs(trials),
            "pruner_trust": pruner_trust(study)}


def mac_epochs(trials: list[record.TrialRecord]) -> int:
    """A search's compute: MACs per image of each trained epoch, summed over its trials."""
    return sum((r.macs or 0) * len(r.curve) for r in trials if r.counts_as_trained)


def baseline_run(args, seed: int, compute_s: float) -> dict:
    """The baseline alone: trained under the recipe's centre for as many epochs as one search's
    training seconds buy, scored like a search winner (best validation epoch, that checkpoint on
    test)."""
    spec = baseline_spec(BUDGET)
    space = StudyFile.load(resolve_space(SPACE))
    data = load_cifar10(args.data, val_size=args.val_size, limit_train=args.limit_train, seed=seed)
    one = train(spec, data, space.center_recipe(1)[0], device="cpu", seed=seed, progress=False)
    epochs = max(1, round(compute_s / one.history[0].seconds))
    recipe = space.center_recipe(epochs)[0]
    checkpoints = args.out / "baseline" / f"seed{seed}"
    result = train(spec, data, recipe, device="cpu", seed=seed, progress=False, checkpoint_dir=checkpoints)
    model = build_model(spec)
    model.load_state_dict(load_weights(checkpoints / "best.pt"))
    test_acc = evaluate(model, data.test.images, data.test.labels, torch.device("cpu"), recipe.flip_tta)
    return {"method": "baseline alone", "seed": seed, "winner": spec.summary(), "params": count(spec).params,
            "val_acc": result.best_val_acc, "test_acc": test_acc, "epochs": epochs,
            "mac_epochs": count(spec).macs * epochs,
            "compute_s": round(sum(e.seconds for e in result.history), 1)}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f} ({100 * min(values):.2f}-{100 * max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--limit-train", type=int, default=4000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/search-real"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    done = {(r["method"], r["seed"]) for r in results}
    started = time.time()
    for seed in range(args.seeds):
        for sampler in ("tpe", "random"):
            if (sampler, seed) not in done:
                results.append(search_run(args, sampler, seed))
                results_file.write_text(json.dumps(results, indent=2) + "\n")
    compute = statistics.mean(r["compute_s"] for r in results if r["method"] in ("tpe", "random"))
    for seed in range(args.seeds):
        if ("baseline alone", seed) not in done:
            results.append(baseline_run(args, seed, compute))
            results_file.write_text(json.dumps(results, indent=2) + "\n")

    print(f"CIFAR-10 JPEG copy, budget {BUDGET:,}, {SPACE}, {args.trials} trained trials per search, "
          f"{args.limit_train:,} training / {args.val_size:,} validation images, seeds 0-{args.seeds - 1}; "
          f"this call {time.time() - started:.0f} s\n")
    print("| method | runs | winner val acc %, mean ± std (min-max) | its test acc % | GMAC-epochs per image (mean) "
          "| compute s (mean) |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in ("tpe", "random", "baseline alone"):
        rows = [r for r in results if r["method"] == method]
        print(f"| {method} | {len(rows)} | {spread([r['val_acc'] for r in rows])} | "
              f"{spread([r['test_acc'] for r in rows])} | {statistics.mean(r['mac_epochs'] for r in rows) / 1e9:.2f} "
              f"| {statistics.mean(r['compute_s'] for r in rows):.0f} |")
    print("\n| run | winner | params | val % | test % | trained | pruned | rejected | "
          "Spearman with the last epoch at the pruner's epochs (trials) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        trust = ", ".join(f"e{t['epoch']} " + (f"{t['spearman']:+.2f} ({t['trials']})" if t["spearman"] is not None
                                               else f"- ({t['trials']})") for t in r.get("pruner_trust", []))
        print(f"| {r['method']} seed {r['seed']} | {r['winner']} | {r['params']:,} | {100 * r['val_acc']:.2f} | "
              f"{100 * r['test_acc']:.2f} | {r.get('trained', '-')} | {r.get('pruned_by_pruner', '-')} | "
              f"{r.get('rejected', '-')} | {trust or '-'} |")
    print(json.dumps({"results": str(results_file), "runs": len(results)}))


if __name__ == "__main__":
    main()
