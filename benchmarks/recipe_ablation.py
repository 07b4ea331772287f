"""What each choice of the fast recipe is worth: train one small spec under the fast recipe of
studies/default.toml with each choice switched off in turn, and under the paper's recipe, all
for the same few epochs on the same images; print validation accuracy per variant as JSON.

    python benchmarks/recipe_ablation.py --epochs 6 --limit-train 5000 --seeds 2

On CPU this is a small-model, short-schedule proxy: it ranks choices, it does not promise
what they are worth on Model 1 at full length (benchmarks/gpu.py measures that on a GPU).
"""

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from resnet_space import ResNetSpec
from resnet_space.space import StudyFile
from common import default_data
from search.data import load_cifar10
from search.train import train

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def variants(fast, paper):
    return {
        "fast": fast,
        "fast without label smoothing": replace(fast, label_smoothing=0.0),
        "fast without flip TTA": replace(fast, flip_tta=False),
        "fast without Nesterov": replace(fast, nesterov=False),
        "fast with multistep instead of one-cycle": replace(fast, schedule="multistep", warmup=0.0),
        "fast at batch 128 (lr scaled by 1/4)": replace(fast, batch_size=128, lr=fast.lr / 4),
        "paper recipe": paper,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit-train", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data = load_cifar10(args.data, val_size=args.val_size, limit_train=args.limit_train)
    spec = ResNetSpec((2, 2, 2), (16, 32, 64), 3, 1, 4)
    fast, _ = StudyFile.load(STUDIES / "default.toml").center_recipe(args.epochs)
    paper, _ = StudyFile.load(STUDIES / "paper.toml").center_recipe(args.epochs)
    results = {}
    for name, recipe in variants(fast, paper).items():
        accs, start = [], time.perf_counter()
        for seed in range(args.seeds):
            accs.append(train(spec, data, recipe, device=args.device, seed=seed, progress=False).history[-1].val_acc)
        results[name] = {"final_val_acc_mean": round(statistics.mean(accs), 4), "per_seed": accs,
                         "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps({
        "spec": spec.summary(), "epochs": args.epochs, "train_images": len(data.train),
        "val_images": len(data.val), "seeds": args.seeds, "dataset": data.name, "torch": torch.__version__,
        "device": args.device, "results": results,
    }))


if __name__ == "__main__":
    main()
