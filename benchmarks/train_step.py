"""Training images per second: the engine (search.train.train) against a plain fp32 PyTorch loop.

    python benchmarks/train_step.py                          # small CPU model, prints one JSON object
    python benchmarks/train_step.py --model model1 --device cuda --batch 512 --steps 100

Same model, batch, optimizer settings and images on both sides, in the same run.
Engine: search.train.train itself for one epoch of steps * batch images, so what is timed is
the engine's real step (augmentation on the device, forward/backward/SGD, and on CUDA
channels_last + bf16 autocast). Its history[0].images_per_s divides by the epoch's seconds,
which also cover the validation pass, so the validation split here is a single image: that
pass then costs one tiny forward, not a hidden share of the number.
Reference: model.train(), a DataLoader over a TensorDataset of pre-normalised float tensors,
fp32, no autocast, an SGD step. It does no augmentation and never syncs on the loss, so any
gap is the engine's doing, not a handicapped baseline.
"""

import argparse
import json
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_space import MODEL_1, Recipe, ResNetSpec
from resnet_space.model import build_model
from search.data import Cifar10, ImageSet, normalize
from search.train import resolve_device, train

SMALL = ResNetSpec((2, 2, 2), (16, 32, 64), 3, 1, 4)
MODELS = {"small": SMALL, "model1": MODEL_1}


def synthetic(n: int, seed: int) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                    torch.randint(0, 10, (n,), generator=gen))


def engine_images_per_s(spec, recipe: Recipe, device, steps: int, warmup: int) -> float:
    # A first short run warms cuDNN autotuning and the allocator; its number is discarded.
    tiny_val = synthetic(1, seed=2)
    for n_steps, seed in ((warmup, 3), (steps, 0)):
        data = Cifar10(synthetic(n_steps * recipe.batch_size, seed), tiny_val, tiny_val, [], "synthetic", "")
        result = train(spec, data, recipe, device=device, progress=False)
    return result.history[0].images_per_s


def reference_images_per_s(spec, recipe: Recipe, device, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    criterion = nn.CrossEntropyLoss()
    images = synthetic((steps + warmup) * recipe.batch_size, seed=0)
    dataset = TensorDataset(normalize(images.images), images.labels)  # normalised once, up front
    loader = iter(DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, drop_last=True))
    model.train()

    def step():
        x, y = next(loader)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()  # wait for the queued kernels before stopping the clock
    return steps * recipe.batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small",
                        help="small: ResNetSpec((2,2,2),(16,32,64),3,1,4); model1: the report's Model 1")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    args = parser.parse_args()

    device = resolve_device(args.device)
    load = os.getloadavg()[0]  # other work on the machine skews both numbers
    spec = MODELS[args.model]
    # Plain SGD at a constant rate, so both sides do the same arithmetic per step.
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
                    batch_size=args.batch, epochs=1, schedule="constant", crop_padding=4, flip=True)
    engine = engine_images_per_s(spec, recipe, device, args.steps, args.warmup)
    reference = reference_images_per_s(spec, recipe, device, args.steps, args.warmup)
    print(json.dumps({
        "model": args.model,
        "spec": spec.summary(),
        "batch": args.batch,
        "steps": args.steps,
        "engine_images_per_s": round(engine, 1),
        "reference_images_per_s": round(reference, 1),
        "ratio": round(engine / reference, 2),
        "engine_precision": "bf16 autocast, channels_last" if device.type == "cuda" else "fp32",
        "data": "synthetic uint8",
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(load, 2),
    }))


if __name__ == "__main__":
    main()
