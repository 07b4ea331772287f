"""The ResNet family as data: one validated spec per network.

A spec has N stages; stage i has B_i blocks of C_i channels with F_i x F_i convolutions and a
k_i x k_i projection shortcut where shape changes; the head average-pools with kernel P.
Every stage after the first halves the 32x32 input, so N is at most 6 (a 1x1 final map).
"""

from __future__ import annotations

import decimal
import json
import re
from dataclasses import asdict, dataclass

from .errors import UserError

IMAGE_SIDE = 32
IN_CHANNELS = 3
MAX_STAGES = 6  # 32 / 2**5 == 1


class SpecError(UserError, ValueError):
    """An invalid spec or spec-related input; its message is one line fit for a user."""


def positive_int(name: str, value) -> int:
    """`value` if it is an integer of at least 1 (True is not one), else a SpecError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name}: {value!r} is not an integer")
    if value < 1:
        raise SpecError(f"{name}: {value} must be at least 1")
    return value


def _positive_ints(name: str, values) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise SpecError(f"{name}: {values!r} is not a list of integers")
    values = tuple(values)
    if not values:
        raise SpecError(f"{name}: at least one value is needed")
    return tuple(positive_int(name, v) for v in values)


@dataclass(frozen=True)
class ResNetSpec:
    blocks: tuple[int, ...]
    channels: tuple[int, ...]
    conv_kernels: tuple[int, ...]
    skip_kernels: tuple[int, ...]
    pool: int = 4
    classes: int = 10

    def __post_init__(self):
        object.__setattr__(self, "blocks", _positive_ints("blocks", self.blocks))
        n = len(self.blocks)
        for name in ("channels", "conv_kernels", "skip_kernels"):
            values = getattr(self, name)
            if name != "channels" and isinstance(values, int) and not isinstance(values, bool):
                values = (values,) * n  # one kernel for every stage
            values = _positive_ints(name, values)
            if len(values) != n:
                raise SpecError(f"{name}: {len(values)} values given for {n} stages")
            object.__setattr__(self, name, values)
        if n > MAX_STAGES:
            raise SpecError(f"blocks: {n} stages would shrink the 32x32 input below 1x1 (at most {MAX_STAGES})")
        for name in ("conv_kernels", "skip_kernels"):
            for k in getattr(self, name):
                if k % 2 == 0:
                    raise SpecError(f"{name}: kernel {k} must be odd (1, 3, 5, 7)")
        for name in ("pool", "classes"):
            positive_int(name, getattr(self, name))
        if self.classes < 2:
            raise SpecError(f"classes: {self.classes} must be at least 2")

    @property
    def stages(self) -> int:
        return len(self.blocks)

    @property
    def final_side(self) -> int:
        """Side of the last feature map: each later stage halves it (padding k//2, stride 2)."""
        side = IMAGE_SIDE
        for _ in range(self.stages - 1):
            side = (side - 1) // 2 + 1
        return side

    @property
    def pool_kernel(self) -> int:
        """The pool kernel actually applied: P, capped at the final map's side."""
        return min(self.pool, self.final_side)

    def summary(self) -> str:
        def join(values):
            return values[0] if len(set(values)) == 1 else "-".join(map(str, values))

        return (
            f"N{self.stages} B{'-'.join(map(str, self.blocks))} C{'-'.join(map(str, self.channels))} "
            f"F{join(self.conv_kernels)} k{join(self.skip_kernels)} P{self.pool}"
            + ("" if self.classes == 10 else f" classes{self.classes}")
        )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ResNetSpec":
        if not isinstance(data, dict):
            raise SpecError("a spec must be a JSON object")
        known = {"blocks", "channels", "conv_kernels", "skip_kernels", "pool", "classes"}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown spec keys: {', '.join(sorted(unknown))}")
        missing = {"blocks", "channels"} - set(data)
        if missing:
            raise SpecError(f"spec lacks: {', '.join(sorted(missing))}")
        return cls(
            blocks=data["blocks"],
            channels=data["channels"],
            conv_kernels=data.get("conv_kernels", 3),
            skip_kernels=data.get("skip_kernels", 1),
            pool=data.get("pool", 4),
            classes=data.get("classes", 10),
        )

    @classmethod
    def from_json(cls, text: str) -> "ResNetSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"spec is not valid JSON: {e}") from None


def spec_from_text(blocks: str, channels: str, conv_kernel: str = "3", skip_kernel: str = "1", pool: int = 4,
                   classes: int = 10) -> "ResNetSpec":
    """A spec from `count`'s flags: '8,6,4,3' lists, a kernel given once standing for every stage."""
    blocks_, channels_ = parse_int_list("--blocks", blocks), parse_int_list("--channels", channels)
    conv, skip = parse_int_list("--conv-kernel", conv_kernel), parse_int_list("--skip-kernel", skip_kernel)
    n = len(blocks_)
    return ResNetSpec(blocks_, channels_, conv * n if len(conv) == 1 else conv, skip * n if len(skip) == 1 else skip,
                      pool, classes)


def parse_int_list(name: str, text: str) -> tuple[int, ...]:
    """'8,6,4,3' -> (8, 6, 4, 3), with a one-line error naming the flag."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"{name}: {text!r} is not a comma-separated list of integers") from None


_BUDGET = re.compile(r"^\s*([+-]?)([0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)([eE][+-]?[0-9]+)?\s*([kKmMgG]?)\s*$")
_SUFFIX = {"": 0, "k": 3, "m": 6, "g": 9}
MAX_BUDGET = 10**15  # far beyond any network; a cap keeps '1e999999999' from becoming a huge integer


def parse_budget(text, unit: str = "parameters") -> int:
    """A budget of `unit` (parameters, or MACs) from '5e6', '5000000', '5_000_000', '5M', '4.1M',
    '500k' or '1G', exactly.

    The number is read as a decimal (never a float), so '4.1M' is 4,100,000 and '2.01M' is
    2,010,000. It must be a whole number, at least 1 and at most 1e15; anything else raises
    SpecError with one line, naming the budget by its unit.
    """
    name = "budget" if unit == "parameters" else f"{unit} budget"
    match = _BUDGET.match(str(text))
    if not match:
        raise SpecError(f"{name}: {text!r} is not a number (write 5e6, 5000000, 5_000_000, 5M or 500k)")
    sign, mantissa, exponent, suffix = match.groups()
    mantissa = mantissa.replace("_", "")
    # Decimal arithmetic on the digits: a shift of the exponent is exact, whatever the precision.
    exact = decimal.Context(prec=len(mantissa) + 1, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    value = decimal.Decimal(sign + mantissa + (exponent or "")).scaleb(_SUFFIX[suffix.lower()], context=exact)
    if value < 1:
        raise SpecError(f"{name}: {text!r} must be a positive number of {unit} (at least 1)")
    if value > MAX_BUDGET:
        raise SpecError(f"{name}: {text!r} is over the largest budget accepted (1e15 {unit})")
    if value != value.to_integral_value():
        raise SpecError(f"{name}: {text!r} is not a whole number of {unit} ({value:f})")
    return int(value)
