"""Training choices as data: what the study file's [recipe] table fills in, and the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass, fields

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("multistep", "onecycle", "cosine", "constant")


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
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.lr > 0, "lr must be positive"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (all(0 < m < 1 for m in self.milestones), "milestones are fractions of training in (0, 1)"),
            (0 < self.gamma <= 1, "gamma must be in (0, 1]"),
            (0 <= self.warmup < 1, "warmup must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.crop_padding >= 0, "crop_padding must be >= 0"),
            (0 <= self.grayscale <= 1, "grayscale is a probability in [0, 1]"),
            (0 <= self.cutout <= 32, "cutout must be in [0, 32]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"recipe: {message}")

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"recipe: unknown keys {', '.join(sorted(unknown))}")
        defaults = cls()
        for key, value in data.items():
            expected = type(getattr(defaults, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is tuple and isinstance(value, list):
                value = tuple(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"recipe: {key} = {value!r} should be {expected.__name__}")
        return cls(**{k: float(v) if isinstance(getattr(defaults, k), float) else v for k, v in data.items()})

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
