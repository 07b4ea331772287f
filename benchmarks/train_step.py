"""Training images per second: the engine (search.engine.train.train) against a plain fp32 PyTorch loop.

    python benchmarks/train_step.py                 # small CPU model, median of 3; last line: one JSON object
    python benchmarks/train_step.py --repeats 1 --batch 16 --steps 2 --warmup 1          # a quick check
    python benchmarks/train_step.py --model model1 --device cuda --batch 512 --steps 100

Same model, batch, optimizer settings and images on both sides, in the same run; the two sides
take turns, --repeats times each, and the medians are compared (ratio: engine / reference).
Engine: search.engine.train.train itself for one epoch of steps * batch images, so what is timed is
the engine's real step (augmentation on the device, forward/backward/SGD, and on CUDA
channels_last + bf16 autocast). Its history[0].images_per_s divides by the epoch's seconds,
which also cover the validation pass, so the validation split here is a single image: that
pass then costs one tiny forward, not a hidden share of the number.
Reference: model.train(), a DataLoader over a TensorDataset of pre-normalised float tensors,
fp32, no autocast, an SGD step. It does no augmentation and never syncs on the loss, so any
gap is the engine's doing, not a handicapped baseline.

docs/measurements.md quotes the line this printed on the development machine, with its command.
"""

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_space import MODEL_1, Recipe
from resnet_space.model import build_model
from common import SMALL, add_measure_args, begin, machine_load, repeat
from search.engine.data import Dataset, ImageSet
from search.engine.train import resolve_device, train

MODELS = {"small": SMALL, "model1": MODEL_1}


def synthetic(n: int, seed: int) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                    torch.randint(0, 10, (n,), generator=gen))


def engine_images_per_s(spec, recipe: Recipe, device, steps: int, warmup: int):
    """A function that returns the engine's training images per second: train() for one epoch of
    `steps` batches. A first short run, once, warms cuDNN autotuning and the allocator."""
    tiny_val = synthetic(1, seed=2)

    def data(n_steps: int, seed: int) -> Dataset:
        return Dataset.of(synthetic(n_steps * recipe.batch_size, seed), tiny_val, tiny_val, [str(c) for c in range(10)],
                          "synthetic")

    if warmup:
        train(spec, data(warmup, 3), recipe, device=device, progress=False)
    timed = data(steps, 0)
    return lambda: train(spec, timed, recipe, device=device, progress=False).history[0].images_per_s


def reference_images_per_s(spec, recipe: Recipe, device, steps: int, warmup: int):
    """A function that returns the plain loop's training images per second over `steps` steps;
    the model is built and warmed (`warmup` steps) once."""
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    criterion = nn.CrossEntropyLoss()
    images = synthetic(max(steps, warmup) * recipe.batch_size, seed=0)
    about = Dataset.of(images, images, images, [str(c) for c in range(10)], "synthetic").description
    dataset = TensorDataset(about.normalize(images.images), images.labels)  # normalised once, up front
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, drop_last=True)
    model.train()

    def step(batches):
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    batches = iter(loader)
    for _ in range(warmup):
        step(batches)
    if device.type == "cuda":
        torch.cuda.synchronize()

    def measure() -> float:
        batches = iter(loader)  # one pass over the loader: the same batches a run of the engine trains on
        start = time.perf_counter()
        for _ in range(steps):
            step(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()  # wait for the queued kernels before stopping the clock
        return steps * recipe.batch_size / (time.perf_counter() - start)

    return measure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small",
                        help="small: ResNetSpec((2,2,2),(16,32,64),3,1,4); model1: the report's Model 1")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side, once")
    add_measure_args(parser)
    args = parser.parse_args()

    before = begin(args)
    device = resolve_device(args.device)
    spec = MODELS[args.model]
    # Plain SGD at a constant rate, so both sides do the same arithmetic per step.
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
                    batch_size=args.batch, epochs=1, schedule="constant", crop_padding=4, flip=True)
    medians, runs = repeat({
        "engine_images_per_s": engine_images_per_s(spec, recipe, device, args.steps, args.warmup),
        "reference_images_per_s": reference_images_per_s(spec, recipe, device, args.steps, args.warmup),
    }, args.repeats, digits=1)
    print(json.dumps({
        "model": args.model,
        "spec": spec.summary(),
        "batch": args.batch,
        "steps": args.steps,
        "engine_images_per_s": medians["engine_images_per_s"],
        "reference_images_per_s": medians["reference_images_per_s"],
        "ratio": round(medians["engine_images_per_s"] / medians["reference_images_per_s"], 2),
        "engine_precision": "bf16 autocast, channels_last" if device.type == "cuda" else "fp32",
        "data": "synthetic uint8",
        "repeats": args.repeats,
        "runs": runs,
        **machine_load(before, device),
    }))


if __name__ == "__main__":
    main()
