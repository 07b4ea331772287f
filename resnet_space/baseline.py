"""The baseline every study is measured against: the report's Model 1, or its shape at the budget."""

from __future__ import annotations

from dataclasses import replace

from .count import fits
from .spec import MODEL_1, ResNetSpec


def baseline_spec(budget: int, step: int = 1) -> ResNetSpec | None:
    """The report's Model 1 (N4 B8-6-4-3 C32-64-128-256 F3 k1 P4, 4,976,426 params) when it fits
    strictly under `budget`; otherwise Model 1's shape scaled to the budget: blocks 8,6,4,3,
    widths c, 2c, 4c, 8c, with the widest c that is a multiple of `step` and fits; None when
    not even c = step fits.

    The step defaults to 1, so the baseline uses as much of the budget as its shape allows
    (at 1e6, c = 14 and 955,496 params, where multiples of 8 would give c = 8 and 31% of the
    budget): it is trained once, so its fair share of parameters matters more than the speed of
    widths that are multiples of 8. Pass step=8 for those.
    """
    if step < 1:
        raise ValueError(f"baseline_spec: step {step} must be at least 1")
    if fits(MODEL_1, budget):
        return MODEL_1

    def scaled(c: int) -> ResNetSpec:
        return replace(MODEL_1, channels=(c, 2 * c, 4 * c, 8 * c))

    if not fits(scaled(step), budget):
        return None
    low, high = 1, 2  # multiples of step: scaled(low * step) fits; find one that does not
    while fits(scaled(high * step), budget):
        low, high = high, high * 2
    while high - low > 1:  # params grow with c, so bisect
        mid = (low + high) // 2
        low, high = (mid, high) if fits(scaled(mid * step), budget) else (low, mid)
    return scaled(low * step)
