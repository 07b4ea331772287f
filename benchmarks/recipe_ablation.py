"""What each choice of the fast recipe is worth: train one small spec under the fast recipe of
studies/default.toml with each choice switched off in turn, and under the paper's recipe, all
for the same few epochs on the same images; print validation accuracy per variant as JSON.

    python benchmarks/recipe_ablation.py --epochs 5 --limit-train 10000 --seeds 2
    python benchmarks/recipe_ablation.py --epochs 1 --limit-train 512 --val-size 100 --seeds 1   # a quick check
    python benchmarks/recipe_ablation.py --lr-sweep 0.05,0.14,0.4 --space studies/cpu-1e5.toml   # its lr, two shapes

Its repeats are the seeds (each variant's accuracy is their mean); the last line, one JSON
object, also carries the machine's load before and after (benchmarks/common.py machine_load).

On CPU this is a small-model, short-schedule proxy: it ranks choices, it does not promise
what they are worth on Model 1 at full length (benchmarks/gpu.py measures that on a GPU).

docs/measurements.md quotes the table this printed with 3 seeds, beside its command
(--epochs 5 --limit-train 10000 --val-size 2000 --seeds 3 --device cpu).
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from resnet_space import ResNetSpec
from resnet_space.space import StudyFile
from common import default_data, machine_load
from search.engine.data import load_data
from search.engine.train import evaluate, load_model, resolve_device, train

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def variants(fast, paper):
    return {
        "fast": fast,
        "fast without label smoothing": replace(fast, label_smoothing=0.0),
        "fast without Nesterov": replace(fast, nesterov=False),
        "fast with multistep instead of one-cycle": replace(fast, schedule="multistep", warmup=0.0),
        "paper recipe": paper,
    }


def final_accuracy(spec, data, recipe, seed, device, checkpoints: Path) -> dict:
    """Final-epoch validation accuracy, and for the fast recipe also without flip TTA: the same
    weights evaluated both ways, so TTA's worth costs no second training run."""
    result = train(spec, data, recipe, device=device, seed=seed, progress=False, checkpoint_dir=checkpoints)
    out = {"val_acc": result.history[-1].val_acc}
    if recipe.flip_tta:
        model = load_model(spec, checkpoints / "last.pt")
        out["val_acc_without_tta"] = evaluate(model, data.val, data.description, torch.device("cpu"))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-train", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--space", default=str(STUDIES / "default.toml"),
                        help="study file whose recipe is the fast recipe here (default studies/default.toml)")
    parser.add_argument("--lr-sweep", metavar="LR,LR,...",
                        help="instead of the ablation: the fast recipe at each learning rate, on a shallow wide "
                             "and a deep narrow spec of about 160,000 params, to tell whether the best rate "
                             "depends on the network")
    args = parser.parse_args()

    before = os.getloadavg()
    data = load_data(args.data, val_size=args.val_size, limit_train=args.limit_train)
    spec = ResNetSpec((1, 1, 1), (16, 32, 64), 3, 1, 4)
    fast, _ = StudyFile.load(args.space).center_recipe(args.epochs)
    paper, _ = StudyFile.load(STUDIES / "paper.toml").center_recipe(args.epochs)
    runs_of = {(name, spec): recipe for name, recipe in variants(fast, paper).items()}
    if args.lr_sweep:
        shapes = {"shallow": ResNetSpec((1, 1, 1), (24, 48, 96), 3, 1, 4),
                  "deep": ResNetSpec((3, 3, 3), (12, 24, 48), 3, 1, 4)}
        runs_of = {(f"{shape} {s.summary()}, lr {lr}", s): replace(fast, lr=float(lr))
                   for shape, s in shapes.items() for lr in args.lr_sweep.split(",")}
    results = {}
    for (name, spec), recipe in runs_of.items():
        start = time.perf_counter()
        runs = [final_accuracy(spec, data, recipe, seed, args.device, Path(tempfile.mkdtemp()))
                for seed in range(args.seeds)]
        results[name] = {key: round(statistics.mean(r[key] for r in runs), 4) for key in runs[0]}
        results[name].update(per_seed=[r["val_acc"] for r in runs], seconds=round(time.perf_counter() - start, 1),
                             val_acc_median=round(statistics.median(r["val_acc"] for r in runs), 4))
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps({
        "spec": None if args.lr_sweep else spec.summary(), "epochs": args.epochs, "train_images": len(data.train),
        "val_images": len(data.val), "seeds": args.seeds, "dataset": data.name,
        "results": results, **machine_load(before, resolve_device(args.device)),
    }))


if __name__ == "__main__":
    main()
