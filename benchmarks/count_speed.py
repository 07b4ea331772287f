"""Specs counted per second by the analytic counter, against building the torch model to count.

    python benchmarks/count_speed.py            # prints one JSON object
"""

import json
import random
import time

import torch

from resnet_space import ResNetSpec, count
from resnet_space.model import build_model


def random_specs(n: int, seed: int = 0) -> list[ResNetSpec]:
    rng = random.Random(seed)
    specs = []
    for _ in range(n):
        stages = rng.randint(3, 5)
        c1 = rng.choice([16, 24, 32, 48, 64])
        specs.append(ResNetSpec(
            blocks=tuple(rng.randint(1, 6) for _ in range(stages)),
            channels=tuple(c1 * 2**i for i in range(stages)),
            conv_kernels=tuple(rng.choice([3, 5]) for _ in range(stages)),
            skip_kernels=tuple(rng.choice([1, 3]) for _ in range(stages)),
            pool=rng.choice([1, 2, 4]),
        ))
    return specs


def main():
    specs = random_specs(20_000)
    start = time.perf_counter()
    for spec in specs:
        count(spec)
    analytic = len(specs) / (time.perf_counter() - start)

    built = specs[:50]
    start = time.perf_counter()
    for spec in built:
        sum(p.numel() for p in build_model(spec).parameters())
    building = len(built) / (time.perf_counter() - start)
    print(json.dumps({
        "analytic_specs_per_s": round(analytic),
        "build_and_count_specs_per_s": round(building, 1),
        "speedup": round(analytic / building),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
