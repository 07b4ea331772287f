"""Exact parameter and MAC counts in closed form: pure Python, no torch, microseconds per spec.

The model builder in model.py is the reference; tests/test_space.py checks these formulas against
`model.parameters()` and torch's FlopCounterMode for every spec hypothesis generates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from .spec import ResNetSpec


class Counts(NamedTuple):
    params: int
    macs: int


def count(spec: ResNetSpec) -> Counts:
    # Every conv is bias-free and followed by BatchNorm (2 trainable tensors of c_out each);
    # a conv's MACs are its weights times the output map's area.
    c_in = spec.channels[0]
    side = spec.image_side
    weights = 9 * spec.in_channels * c_in  # 3x3 stem
    params, macs = weights + 2 * c_in, weights * side * side
    for stage, (blocks, c, f, k) in enumerate(zip(spec.blocks, spec.channels, spec.conv_kernels, spec.skip_kernels)):
        if stage:
            side = (side + 1) // 2  # stride-2 first block, padding kernel // 2
        area = side * side
        # The first block maps c_in -> c; the other blocks - 1 map c -> c.
        first = f * f * c * (c_in + c)
        rest = (blocks - 1) * 2 * f * f * c * c
        shortcut = k * k * c_in * c if stage else 0  # only stage 1 keeps shape in its first block
        weights = first + rest + shortcut
        params += weights + 2 * c * (2 * blocks + (shortcut > 0))
        macs += weights * area
        c_in = c
    pooled = side // min(spec.pool, side)
    features = c_in * pooled * pooled * spec.classes
    return Counts(params + features + spec.classes, macs + features)


@dataclass(frozen=True)
class Budget:
    """The walls a network must stay strictly under: parameters, and, when given, multiply-
    accumulates per image (at the side its networks are built for). A search, its space and its
    baseline hold one of these."""

    params: int
    macs: int | None = None

    @classmethod
    def of(cls, value: "Budget | int") -> "Budget":
        """A Budget as given, or a parameter count as a budget of parameters alone."""
        return value if isinstance(value, Budget) else cls(value)

    def scaled(self, fill: float) -> "Budget":
        """The walls a spec filling at most `fill` of each wall stays under: count <= fill * wall
        and count < wall, as one strict wall min(wall, floor(fill * wall) + 1) for integer counts."""
        def wall(w):
            return None if w is None else min(w, math.floor(fill * w) + 1)
        return Budget(wall(self.params), wall(self.macs))

    def __str__(self) -> str:
        return f"{self.params:,} params" + ("" if self.macs is None else f" and {self.macs:,} MACs")

    def walls(self, counts: Counts) -> list[tuple[str, int, int]]:
        """(name, count, wall) for each wall this budget has: what every budget decision reads."""
        given = (("params", counts.params, self.params), ("macs", counts.macs, self.macs))
        return [(name, n, wall) for name, n, wall in given if wall is not None]


def walls_hit(spec_or_counts: ResNetSpec | Counts, budget: Budget | int) -> tuple[str, ...]:
    """The one budget rule: the walls ("params", "macs") a network's count is at or above; it fits
    when the tuple is empty, strictly under every wall. Takes a spec (counted here) or its Counts;
    an integer budget is a budget of parameters alone."""
    if isinstance(spec_or_counts, ResNetSpec):
        counts = count(spec_or_counts)
    elif isinstance(spec_or_counts, Counts):
        counts = spec_or_counts
    else:
        raise TypeError(f"walls_hit: {spec_or_counts!r} is neither a ResNetSpec nor its Counts")
    return tuple(name for name, n, wall in Budget.of(budget).walls(counts) if n >= wall)


def overrun(counts: Counts, budget: Budget | int) -> str:
    """The walls a network is at or over, as said in a trial's record: '250,000 params >= 200,000'."""
    units = {"params": "params", "macs": "MACs"}
    return " and ".join(f"{n:,} {units[name]} >= {wall:,}" for name, n, wall in Budget.of(budget).walls(counts)
                        if n >= wall)


def fits(spec_or_counts: ResNetSpec | Counts, budget: Budget | int) -> bool:
    """Whether a network fits under the budget: no wall hit (`walls_hit`)."""
    return not walls_hit(spec_or_counts, budget)
