"""The seed report's Table 1 and its Model 1: the hand-tuned results every search is measured
against (facts as recovered in ../shared/reference/NOTES.md, the report's code, counted), and
the baseline a study seeds itself with at any budget."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from .count import Budget, count, fits
from .spec import ResNetSpec, Shape

MODEL_1 = ResNetSpec(blocks=(8, 6, 4, 3), channels=(32, 64, 128, 256), conv_kernels=3, skip_kernels=1, pool=4)
MODEL_2 = ResNetSpec(blocks=(1, 1, 5, 3), channels=(32, 64, 128, 256), conv_kernels=3, skip_kernels=1, pool=4)
MODEL_5 = ResNetSpec(blocks=(1, 1, 1, 1, 1), channels=(32, 64, 128, 256, 512), conv_kernels=3, skip_kernels=1,
                     pool=4)
MODEL_6 = ResNetSpec(blocks=(1, 1, 1, 1), channels=(64, 128, 256, 512), conv_kernels=3, skip_kernels=1, pool=4)


class Reported(NamedTuple):
    model: str
    description: str
    test_acc: float  # percent, best of 200 epochs on true CIFAR-10, as reported
    params: int  # as reported, rounded to thousands
    spec: ResNetSpec | None  # None where no spec of the family reproduces the reported count


TABLE_1 = [
    Reported(model="Model 1", description="4 layers (8,6,4,3), SGD, decaying LR", test_acc=94.40,
             params=4_976_000, spec=MODEL_1),
    Reported(model="Model 2", description="4 layers (1,1,5,3), SGD, decaying LR", test_acc=92.95,
             params=4_772_000, spec=MODEL_2),
    Reported(model="Model 3", description="Model 1 with Adam", test_acc=93.17, params=4_976_000, spec=MODEL_1),
    Reported(model="Model 4", description="Model 1 with constant LR 0.1", test_acc=91.67, params=4_976_000,
             spec=MODEL_1),
    Reported(model="Model 5", description="5 layers (1,1,1,1,1), 32..512, SGD", test_acc=92.78, params=4_905_000,
             spec=MODEL_5),
    Reported(model="Model 6", description="4 layers (1,1,1,1), 64..512, SGD", test_acc=93.87, params=4_903_000,
             spec=MODEL_6),
    Reported(model="Model 7", description="4 layers (7,6,2,2), smaller k_i (spec not recoverable)", test_acc=94.21,
             params=4_993_000, spec=None),
    Reported(model="Model 8", description="Model 5 with Adam", test_acc=91.75, params=4_905_000, spec=MODEL_5),
]


def table_1_rows() -> list[dict]:
    """Table 1 as JSON-ready rows, with each recovered spec's exact count, for a study to record."""
    return [{"model": r.model, "description": r.description, "reported_test_acc": r.test_acc,
             "reported_params": r.params, "params": count(r.spec).params if r.spec else None,
             "macs": count(r.spec).macs if r.spec else None,
             "summary": r.spec.summary() if r.spec else None} for r in TABLE_1]


def baseline_spec(budget: Budget | int, shape: Shape = Shape()) -> ResNetSpec | None:
    """The report's Model 1 (N4 B8-6-4-3 C32-64-128-256 F3 k1 P4, 4,976,426 params, 384,666,112
    MACs) when it fits strictly under `budget` (every wall of it); otherwise Model 1's shape scaled
    to the budget: blocks 8,6,4,3, widths c, 2c, 4c, 8c, with the widest c that fits; None when
    not even c = 1 fits.

    Any c, not multiples of 8, so the baseline uses as much of the budget as its shape allows (at
    1e6, c = 14 and 955,496 params, where multiples of 8 would give c = 8 and 31% of the
    budget). For other data (`shape`: the images' side and channels, the classes) it is the same
    network built for that data, counted so.
    """
    full = MODEL_1.for_shape(shape)
    if fits(full, budget):
        return full

    def scaled(c: int) -> ResNetSpec:
        return replace(full, channels=(c, 2 * c, 4 * c, 8 * c))

    if not fits(scaled(1), budget):
        return None
    low, high = 1, 2  # scaled(low) fits; find a high that does not
    while fits(scaled(high), budget):
        low, high = high, high * 2
    while high - low > 1:  # params grow with c, so bisect
        mid = (low + high) // 2
        low, high = (mid, high) if fits(scaled(mid), budget) else (low, mid)
    return scaled(low)
