"""Batches augmented per second: the engine's whole-batch augmentation against torchvision's per-image pipeline.

    python benchmarks/data_path.py                      # prints one JSON object
    python benchmarks/data_path.py --device cuda --batches 200

Both sides make the same thing: a batch of 512 images, randomly cropped (padding 4), randomly
flipped and normalised. The engine prepares the images once on the device (its one-off cost is
reported apart) and draws each batch with search.data.TrainingSet.batch; the baseline is
RandomCrop, RandomHorizontalFlip, ToTensor and Normalize over PIL images through a DataLoader
(num_workers 0 and the core count).
The PIL images are built in memory from the same uint8 tensors, so disk reads are not measured.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms

from resnet_space import Recipe
from common import default_data
from search.data import CIFAR10_MEAN, CIFAR10_STD, TrainingSet, load_cifar10
from search.train import resolve_device

BATCH = 512
POOL = 10_000  # images to draw batches from; enough that batches are not the same few images


class PILImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        hwc = images.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(np.ascontiguousarray(a)) for a in hwc]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def source_images(data: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    if data.exists():
        d = load_cifar10(data, val_size=1000, limit_train=POOL)
        return d.train.images, d.train.labels, f"{d.name} at {data}"
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (POOL, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, 10, (POOL,), generator=gen), "synthetic uint8 (no data found)"


def engine_batches_per_s(images, device, batches: int) -> tuple[float, float]:
    """(batches/s, seconds of the one-off preparation) as search.train.train does it: the set
    prepared once on the device (search.data.TrainingSet), then each batch one gather."""
    recipe = Recipe(crop_padding=4, flip=True)
    start = time.perf_counter()
    train_set = TrainingSet(images.to(device), recipe, torch.bfloat16 if device.type == "cuda" else torch.float32)
    prepare_s = time.perf_counter() - start
    gen = torch.Generator(device=device).manual_seed(0)

    def one_batch():
        # Drawing the batch's images is part of the engine's per-step data work, so it is timed too.
        index = torch.randint(0, len(images), (BATCH,), generator=gen, device=device)
        return train_set.batch(index, gen)

    for _ in range(3):  # warm-up: allocator, kernel caches
        one_batch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        one_batch()
    if device.type == "cuda":
        torch.cuda.synchronize()  # kernels are asynchronous: wait for the last before stopping the clock
    return batches / (time.perf_counter() - start), prepare_s


def torchvision_batches_per_s(images, labels, workers: int, batches: int) -> float:
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])
    dataset = PILImages(images, labels, transform)
    # Sampling with replacement gives exactly warm-up + timed batches whatever the pool size.
    sampler = RandomSampler(dataset, replacement=True, num_samples=(batches + 1) * BATCH)
    loader = iter(DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers))
    next(loader)  # warm-up: worker start-up is a one-off cost, not a per-batch one
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batches", type=int, default=20,
                        help="timed batches per torchvision loader; the engine is timed over 20 times as many")
    args = parser.parse_args()

    device = resolve_device(args.device)
    images, labels, source = source_images(Path(args.data))
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]  # other work on the machine skews every number below
    # The engine is timed over more batches: it is fast enough that a few would be mostly noise.
    engine, prepare_s = engine_batches_per_s(images, device, args.batches * 20)
    baseline = {w: torchvision_batches_per_s(images, labels, w, args.batches) for w in sorted({0, cores})}
    best = max(baseline.values())
    print(json.dumps({
        "batch": BATCH,
        "data": source,
        "engine_batches_per_s": round(engine, 2),
        "engine_one_off_prepare_s": round(prepare_s, 3),
        "torchvision_batches_per_s": {f"workers_{w}": round(v, 2) for w, v in baseline.items()},
        "ratio_vs_workers_0": round(engine / baseline[0], 1),
        "ratio_vs_best_torchvision": round(engine / best, 1),
        "target_ratio": 50,
        "target_met": engine / best >= 50,
        "batches_timed": {"engine": args.batches * 20, "torchvision": args.batches},
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cores": cores,
        "load_avg_1min": round(load, 2),
    }))


if __name__ == "__main__":
    main()
