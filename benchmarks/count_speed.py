"""Specs counted per second by the analytic counter, against building the torch model to count.

    python benchmarks/count_speed.py                 # median of 3 runs; last line: one JSON object
    python benchmarks/count_speed.py --repeats 1 --specs 2000 --built 5     # a quick check

Each run counts --specs random specs analytically and builds the first --built of them as
torch models to count their parameters; speedup is the ratio of the two medians.

docs/measurements.md quotes the line this printed on the development machine, with its command.
"""

import argparse
import json
import random
import time

from resnet_space import ResNetSpec, count
from resnet_space.model import build_model
from common import add_measure_args, begin, machine_load, repeat


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=20_000, help="specs counted analytically per run")
    parser.add_argument("--built", type=int, default=50, help="specs built as torch models per run")
    add_measure_args(parser)
    args = parser.parse_args()

    before = begin(args)
    specs = random_specs(args.specs)
    built = specs[:args.built]

    def analytic() -> float:
        start = time.perf_counter()
        for spec in specs:
            count(spec)
        return len(specs) / (time.perf_counter() - start)

    def building() -> float:
        start = time.perf_counter()
        for spec in built:
            sum(p.numel() for p in build_model(spec).parameters())
        return len(built) / (time.perf_counter() - start)

    medians, runs = repeat({"analytic_specs_per_s": analytic, "build_and_count_specs_per_s": building},
                           args.repeats, digits=1)
    print(json.dumps({
        "analytic_specs_per_s": round(medians["analytic_specs_per_s"]),
        "build_and_count_specs_per_s": medians["build_and_count_specs_per_s"],
        "speedup": round(medians["analytic_specs_per_s"] / medians["build_and_count_specs_per_s"]),
        "specs": {"counted": len(specs), "built": len(built)},
        "repeats": args.repeats,
        "runs": runs,
        **machine_load(before),
    }))


if __name__ == "__main__":
    main()
