"""What the benchmark scripts share: where the images are, repeated measurement and the machine's load.

Every script measures each figure --repeats times (3 by default), reports the median with all
the runs beside it, and prints as its last line one JSON object that also says how loaded the
machine was (os.getloadavg() before and after), so a reader can tell a quiet run from a busy one.

docs/measurements.md quotes each script's output beside the command that printed it.
"""

import argparse
import os
import statistics
from pathlib import Path
from typing import Callable

import torch

from resnet_space import ResNetSpec
from search.engine.data import DATA_ENV

REPO = Path(__file__).resolve().parent.parent
REPEATS = 3
SMALL = ResNetSpec((2, 2, 2), (16, 32, 64), 3, 1, 4)  # N3 B2-2-2 C16-32-64 F3 k1 P4: the small network


def default_data() -> str:
    """$RESNET_SEARCH_DATA, else the JPEG copy of CIFAR-10 beside the clone."""
    return os.environ.get(DATA_ENV) or str(REPO.parent / "shared" / "datasets" / "cifar10-jpeg")


def add_measure_args(parser: argparse.ArgumentParser) -> None:
    """--repeats and --threads, which every script takes."""
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"runs of each measurement; the median is reported (default {REPEATS})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, one per core). On a machine whose "
                             "cores are busy with other work, fewer threads than cores avoids waiting on them")


def begin(args: argparse.Namespace) -> tuple[float, float, float]:
    """Apply --threads and return the load averages before measuring, for machine_load()."""
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return os.getloadavg()


def repeat(measures: dict[str, Callable[[], float]], repeats: int = REPEATS,
           digits: int = 2) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run every measurement `repeats` times and return (medians, runs), both keyed by name.

    The measurements take turns (a, b, a, b, ...), so a change in the machine's load during
    the run falls on all of them alike rather than on whichever ran last."""
    runs = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            runs[name].append(round(measure(), digits))
    medians = {name: round(statistics.median(values), digits) for name, values in runs.items()}
    return medians, runs


def machine_load(before: tuple[float, float, float], device="cpu") -> dict:
    """The machine's state beside a measurement: load averages (1, 5 and 15 minutes) taken
    with os.getloadavg() before it started (`before`) and now, cores, torch's threads, torch's
    version and the device. A load near or above the core count means other work shared the
    cores and the numbers are slower than a quiet machine's."""
    return {
        "load_avg_before": [round(v, 2) for v in before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
