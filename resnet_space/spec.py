"""The ResNet family as data: one validated spec per network.

A spec has N stages; stage i has B_i blocks of C_i channels with F_i x F_i convolutions and a
k_i x k_i projection shortcut where shape changes; the head average-pools with kernel P. A spec
is built for one kind of image (its side, its channels) and one number of classes. Every stage
after the first halves the map, so N is at most the stages that bring it to 1x1 (`max_stages`):
5 at 16x16, 6 at 32x32, 8 at 128x128.
"""

from __future__ import annotations

import decimal
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

from .errors import UserError

MIN_SIDE, MAX_SIDE = 16, 128  # square images of these sides and between


def max_stages(side: int) -> int:
    """The most stages an image of this side allows: each after the first halves the map
    (rounding up), and the last may be no smaller than 1x1."""
    stages = 1
    while side > 1:
        side, stages = (side + 1) // 2, stages + 1
    return stages


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


class Shape(NamedTuple):
    """What a network is built for: square images of `side` pixels with `channels` channels, and
    `classes` outputs. CIFAR-10's is the default."""

    side: int = 32
    channels: int = 3
    classes: int = 10

    def __str__(self) -> str:
        return f"{self.side}x{self.side} {'grayscale' if self.channels == 1 else 'colour'}, {self.classes} classes"


@dataclass(frozen=True)
class ResNetSpec:
    blocks: tuple[int, ...]
    channels: tuple[int, ...]
    conv_kernels: tuple[int, ...]
    skip_kernels: tuple[int, ...]
    pool: int = 4
    classes: int = 10
    image_side: int = 32  # the square input it is built for
    in_channels: int = 3  # 3 for colour, 1 for grayscale

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
        for name in ("pool", "classes", "image_side", "in_channels"):
            positive_int(name, getattr(self, name))
        if n > max_stages(self.image_side):
            raise SpecError(f"blocks: {n} stages would shrink the {self.image_side}x{self.image_side} input below "
                            f"1x1 (at most {max_stages(self.image_side)})")
        for name in ("conv_kernels", "skip_kernels"):
            for k in getattr(self, name):
                if k % 2 == 0:
                    raise SpecError(f"{name}: kernel {k} must be odd (1, 3, 5, 7)")
        if self.classes < 2:
            raise SpecError(f"classes: {self.classes} must be at least 2")
        if not MIN_SIDE <= self.image_side <= MAX_SIDE:
            raise SpecError(f"image_side: {self.image_side} must be between {MIN_SIDE} and {MAX_SIDE} pixels")
        if self.in_channels not in (1, 3):
            raise SpecError(f"in_channels: {self.in_channels} must be 1 (grayscale) or 3 (colour)")

    @classmethod
    def built_for(cls, shape: Shape, blocks, channels, conv_kernels, skip_kernels, pool: int = 4) -> "ResNetSpec":
        """A spec built for `shape` from the start (checked against its side, not CIFAR's)."""
        return cls(blocks, channels, conv_kernels, skip_kernels, pool, shape.classes, shape.side, shape.channels)

    @property
    def shape(self) -> Shape:
        return Shape(self.image_side, self.in_channels, self.classes)

    def for_shape(self, shape: Shape) -> "ResNetSpec":
        """The same network built for another input and number of classes."""
        return replace(self, image_side=shape.side, in_channels=shape.channels, classes=shape.classes)

    @property
    def stages(self) -> int:
        return len(self.blocks)

    @property
    def final_side(self) -> int:
        """Side of the last feature map: each later stage halves it (padding k//2, stride 2)."""
        side = self.image_side
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
            + ("" if (self.image_side, self.in_channels) == (32, 3)
               else f" {self.image_side}px{' gray' if self.in_channels == 1 else ''}")
        )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ResNetSpec":
        if not isinstance(data, dict):
            raise SpecError("a spec must be a JSON object")
        known = {"blocks", "channels", "conv_kernels", "skip_kernels", "pool", "classes", "image_side", "in_channels"}
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
            image_side=data.get("image_side", 32),
            in_channels=data.get("in_channels", 3),
        )

    @classmethod
    def from_json(cls, text: str) -> "ResNetSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"spec is not valid JSON: {e}") from None


def spec_from_text(blocks: str, channels: str, conv_kernel: str = "3", skip_kernel: str = "1", pool: int = 4,
                   shape: Shape = Shape()) -> "ResNetSpec":
    """A spec from `count`'s flags: '8,6,4,3' lists, a kernel given once standing for every stage."""
    blocks_, channels_ = parse_int_list("--blocks", blocks), parse_int_list("--channels", channels)
    conv, skip = parse_int_list("--conv-kernel", conv_kernel), parse_int_list("--skip-kernel", skip_kernel)
    n = len(blocks_)
    return ResNetSpec.built_for(shape, blocks_, channels_, conv * n if len(conv) == 1 else conv,
                                skip * n if len(skip) == 1 else skip, pool)


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
