"""Exact parameter and MAC counts in closed form: pure Python, no torch, microseconds per spec.

The model builder in model.py is the reference; tests/test_space.py checks these formulas against
`model.parameters()` and torch's FlopCounterMode for every spec hypothesis generates.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

from .spec import IMAGE_SIDE, IN_CHANNELS, ResNetSpec


class Counts(NamedTuple):
    params: int
    macs: int


def count(spec: ResNetSpec) -> Counts:
    # Every conv is bias-free and followed by BatchNorm (2 trainable tensors of c_out each);
    # a conv's MACs are its weights times the output map's area.
    c_in = spec.channels[0]
    weights = 9 * IN_CHANNELS * c_in  # 3x3 stem
    params, macs = weights + 2 * c_in, weights * IMAGE_SIDE * IMAGE_SIDE
    side = IMAGE_SIDE
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


def fits(params_or_spec: int | ResNetSpec, budget: int) -> bool:
    """The one budget rule: a network fits when its parameter count is strictly under the budget;
    at or above it, it does not. Takes a spec (counted here) or a parameter count."""
    if isinstance(params_or_spec, ResNetSpec):
        params = count(params_or_spec).params
    elif isinstance(params_or_spec, numbers.Integral) and not isinstance(params_or_spec, bool):
        params = int(params_or_spec)
    else:
        raise TypeError(f"fits: {params_or_spec!r} is neither a ResNetSpec nor a parameter count")
    return params < budget
