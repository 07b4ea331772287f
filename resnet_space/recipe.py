"""Training choices as data: what the study file's [recipe] table fills in, and the trainer reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("multistep", "onecycle", "cosine", "constant")
MAX_LR = 100.0  # far past any that trains; past float32's range torch cannot even set it


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.1  # peak learning rate, for a batch of batch_size
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 200
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, for multistep
    gamma: float = 0.1  # multistep factor
    warmup: float = 0.0  # fraction of training spent rising to lr (onecycle, cosine)
    label_smoothing: float = 0.0
    crop_padding: int = 4  # random crop of 32 from a zero-padded 32 + 2 * crop_padding; 0 is off
    flip: bool = True
    grayscale: float = 0.0  # probability of converting an image to grayscale
    cutout: int = 0  # side of the square cut out of each image; 0 is off
    flip_tta: bool = False  # average predictions over the image and its mirror at evaluation

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))
        checks = [
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("lr", 0 < self.lr <= MAX_LR, f"must be in (0, {MAX_LR:g}]"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", 0 <= self.weight_decay <= 1, "must be in [0, 1]"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("milestones", all(0 < m < 1 for m in self.milestones), "are fractions of training in (0, 1)"),
            ("gamma", 0 < self.gamma <= 1, "must be in (0, 1]"),
            ("warmup", 0 <= self.warmup < 1, "must be in [0, 1)"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("crop_padding", 0 <= self.crop_padding <= 32, "must be in [0, 32]"),  # past 32 a crop sees only padding
            ("grayscale", 0 <= self.grayscale <= 1, "is a probability in [0, 1]"),
            ("cutout", 0 <= self.cutout <= 32, "must be in [0, 32]"),
        ]
        for name, ok, requirement in checks:
            if not ok:
                raise ValueError(f"{name} {requirement}, not {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        """A recipe from TOML or JSON values: an integer stands for a float and a list for a
        tuple; any other type is an error naming the key."""
        defaults = cls()
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe keys {', '.join(sorted(unknown))}")
        return cls(**{key: _converted(key, value, type(getattr(defaults, key))) for key, value in data.items()})

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


_KINDS = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string",
          tuple: "a list of numbers"}


def is_number(value) -> bool:
    """A finite int or float (True is no number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _converted(key: str, value, expected: type):
    """`value` as the field's type; only exact types pass, so True is not an int nor 1 a bool."""
    if expected is float and is_number(value):
        return float(value)
    if expected is tuple and isinstance(value, (list, tuple)) and all(is_number(v) for v in value):
        return tuple(float(v) for v in value)
    if expected in (int, bool, str) and type(value) is expected:
        return value
    raise ValueError(f"{key} must be {_KINDS[expected]}, not {value!r}")
