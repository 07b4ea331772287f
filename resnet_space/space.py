"""The search space, read from a study file (TOML) and sampled through an Optuna trial.

Every value in [space] and [recipe] is one of:
  a scalar            fixed:           pool = 4
  a list              choices:         conv_kernel = [3, 5]
  {low, high[, log]}  a range:         blocks = {low = 1, high = 6}
Keys in [recipe] that hold a list by nature (milestones) are fixed as written; to search them,
write {choices = [[...], ...]}.

Width is chosen last, from what still fits: after depth, kernels, pool and growth are drawn,
`fill` (a fraction of the budget) picks the widest C_1 whose network stays under fill * budget,
on parameters and, where the study sets `macs_budget`, on MACs too.
So almost every sampled spec is feasible, instead of the sampler learning the budget by failing.
`first_channels` given as choices replaces that rule, which the paper's space uses to hit its
exact widths.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .count import Budget, fits
from .errors import UserError
from .recipe import Recipe, is_number
from .spec import MAX_SIDE, ResNetSpec, Shape, SpecError, max_stages, parse_budget, positive_int

SPACE_KEYS = {
    "stages", "blocks", "conv_kernel", "skip_kernel", "pool", "growth",
    "first_channels", "fill", "channel_step", "min_channels", "classes",
}
SPACE_DEFAULTS = {"channel_step": 8, "min_channels": 8, "growth": 2.0, "pool": 4,
                  "conv_kernel": 3, "skip_kernel": 1, "fill": {"low": 0.5, "high": 1.0}}
FIXED_SPACE_KEYS = {"channel_step", "min_channels", "classes"}  # read as written, never drawn
KERNEL_KEYS = {"conv_kernel", "skip_kernel"}
RECIPE_KEYS = set(Recipe().to_dict())
LIST_VALUED_RECIPE_KEYS = {"milestones"}
TOP_LEVEL_KEYS = {"budget", "macs_budget", "space", "recipe", "description", "artifacts"}
# C_i+1 / C_i: the report's networks double. Past 16 the first stages are a rounding error
# beside the last, and far past it the widths overflow (1e308 ** 2 is infinite).
MAX_GROWTH = 16


class SpaceError(UserError, ValueError):
    """A study file that cannot be used; the message is one line naming the file and key."""


def _is_range(value) -> bool:
    return isinstance(value, dict) and "low" in value and "high" in value


def suggest(trial, name: str, value):
    """Draw one value for `name` from a fixed scalar, a list of choices or a {low, high} range.
    A range with integer ends draws integers (log or not); any float end makes it draw floats."""
    if isinstance(value, dict) and "choices" in value:
        picked = trial.suggest_categorical(name, [repr(c) if isinstance(c, list) else c for c in value["choices"]])
        return next(c for c in value["choices"] if (repr(c) if isinstance(c, list) else c) == picked)
    if isinstance(value, list):
        return trial.suggest_categorical(name, value)
    if _is_range(value):
        low, high, log = value["low"], value["high"], bool(value.get("log", False))
        if isinstance(low, int) and isinstance(high, int):
            return trial.suggest_int(name, low, high, log=log)
        return trial.suggest_float(name, float(low), float(high), log=log)
    return value


def _options(where: str, value) -> list:
    """Every value a dimension can take (a range by its ends), once its form is checked."""
    if isinstance(value, list):
        if not value:
            raise SpaceError(f"{where}: an empty list offers no choice")
        return value
    if not isinstance(value, dict):
        return [value]
    if "choices" in value:
        if set(value) != {"choices"}:
            raise SpaceError(f"{where}: {value!r} mixes choices with other keys (write {{choices = [...]}})")
        if not isinstance(value["choices"], list) or not value["choices"]:
            raise SpaceError(f"{where}: choices = {value['choices']!r} must be a non-empty list")
        return value["choices"]
    unknown = set(value) - {"low", "high", "log"}
    if unknown:
        raise SpaceError(f"{where}: unknown keys {', '.join(sorted(unknown))} in {value!r} "
                         "(a range has low, high and log; a choice has choices)")
    if not _is_range(value):
        raise SpaceError(f"{where}: the range {value!r} needs both low and high")
    low, high, log = value["low"], value["high"], value.get("log", False)
    for end in (low, high):
        if not is_number(end):
            raise SpaceError(f"{where}: range end {end!r} is not a finite number")
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log = {log!r} must be true or false")
    if low > high:
        raise SpaceError(f"{where}: low {low!r} is above high {high!r}")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, not {low!r}")
    return [low, high]


def _check_space_option(key: str, value) -> None:
    """One value [space] `key` may take; SpecError or SpaceError naming key and value if wrong."""
    where = f"[space] {key}"
    if key in ("growth", "fill"):
        if not is_number(value):
            raise SpaceError(f"{where}: {value!r} is not a finite number")
        if key == "growth" and not 1 <= value <= MAX_GROWTH:
            raise SpaceError(f"{where}: {value!r} must be between 1 and {MAX_GROWTH} (C_i+1 / C_i)")
        if key == "fill" and not 0 < value <= 1:
            raise SpaceError(f"{where}: {value!r} must be a fraction of the budget in (0, 1]")
        return
    positive_int(where, value)
    if key == "stages" and value > max_stages(MAX_SIDE):
        raise SpaceError(f"{where}: {value} is too many, at most {max_stages(MAX_SIDE)} (for {MAX_SIDE}x{MAX_SIDE} "
                         "images)")
    if key in KERNEL_KEYS and value % 2 == 0:
        raise SpaceError(f"{where}: kernel {value} must be odd (1, 3, 5, 7)")
    if key == "classes" and value < 2:
        raise SpaceError(f"{where}: {value} must be at least 2")


@dataclass
class StudyFile:
    """A study file as read, and the data shape its networks are built for: CIFAR-10's until
    `for_shape` fits it to the data (whose classes fill [space] classes where the file states none)."""

    path: Path
    budget: Budget
    space: dict
    recipe: dict = field(default_factory=dict)
    shape: Shape = Shape()
    artifacts: str | None = None  # where `run` keeps checkpoints when --artifacts is not given (a folder or s3://...)

    @classmethod
    def load(cls, path) -> "StudyFile":
        path = Path(path)
        if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO or device would block reading
            raise SpaceError(f"study file {path} cannot be read: not a regular file")
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SpaceError(f"study file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpaceError(f"study file {path} cannot be read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise SpaceError(f"study file {path} is not valid TOML: {e}") from None
        except RecursionError:
            raise SpaceError(f"study file {path} is nested too deeply to be a study file") from None
        try:
            unknown = set(data) - TOP_LEVEL_KEYS
            if unknown:
                raise SpaceError(f"unknown top-level keys {', '.join(sorted(unknown))} "
                                 f"(known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
            if not isinstance(data.get("description", ""), str):
                raise SpaceError(f"description = {data['description']!r} must be a string")
            if "artifacts" in data and not (isinstance(data["artifacts"], str) and data["artifacts"].strip()):
                raise SpaceError(f"artifacts = {data['artifacts']!r} must be a non-empty string (a folder or s3://...)")
            for table in ("space", "recipe"):
                if not isinstance(data.get(table, {}), dict):
                    raise SpaceError(f"{table} = {data[table]!r} must be a table ([{table}])")
            recipe = dict(data.get("recipe", {}))
            for key in LIST_VALUED_RECIPE_KEYS & recipe.keys():
                if isinstance(recipe[key], list):
                    recipe[key] = tuple(recipe[key])  # a tuple is a fixed value to suggest()
            macs = parse_budget(data["macs_budget"], "MACs") if "macs_budget" in data else None
            space = {**SPACE_DEFAULTS, **data.get("space", {})}
            study = cls(path, Budget(parse_budget(data.get("budget", "5M")), macs), space, recipe,
                        Shape(classes=space.get("classes", Shape().classes)), data.get("artifacts"))
            study.validate()
        except (SpaceError, SpecError) as e:
            raise SpaceError(f"study file {path}: {e}") from None
        return study

    def validate(self) -> None:
        """Check every value every dimension can take, so that no trial meets a bad one mid-search.
        Raises SpaceError, or SpecError for a bad integer; load() names the file in either."""
        unknown = set(self.space) - SPACE_KEYS
        if unknown:
            raise SpaceError(f"[space] unknown keys {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(SPACE_KEYS))})")
        if "stages" not in self.space or "blocks" not in self.space:
            raise SpaceError("[space] needs stages and blocks")
        for key, value in self.space.items():
            where = f"[space] {key}"
            if key in FIXED_SPACE_KEYS and isinstance(value, (list, dict)):
                raise SpaceError(f"{where}: {value!r} must be one fixed integer (it is not searched)")
            if key in KERNEL_KEYS and _is_range(value):
                raise SpaceError(f"{where}: the range {value!r} would draw even kernels; list the odd ones, "
                                 "e.g. [3, 5]")
            for option in _options(where, value):
                _check_space_option(key, option)

        unknown = set(self.recipe) - RECIPE_KEYS
        if unknown:
            raise SpaceError(f"[recipe] unknown keys {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(RECIPE_KEYS))})")
        # Each value of each key is tried in a Recipe that is otherwise valid: the first option
        # of every key checked before it. Recipe's limits are intervals, so a range's two ends
        # vouch for the values between them.
        base = {}
        for key, value in self.recipe.items():
            options = _options(f"[recipe] {key}", value)
            for option in options:
                try:
                    Recipe.from_dict({**base, key: option})
                except ValueError as e:
                    raise SpaceError(f"[recipe] {e}") from None
            base[key] = options[0]

    @property
    def stated_classes(self) -> int | None:
        """The classes the file states ([space] classes), or None: whatever the data has."""
        return self.space.get("classes")

    def for_shape(self, shape: Shape) -> "StudyFile":
        """This study file fitted to data of `shape`: its networks built for that side, channels
        and classes. Refuses a stated class count or a number of stages the data cannot take."""
        if self.stated_classes not in (None, shape.classes):
            raise SpaceError(f"study file {self.path}: [space] classes = {self.stated_classes} but the data has "
                             f"{shape.classes} classes")
        most = max(_options("[space] stages", self.space["stages"]))
        if most > max_stages(shape.side):
            raise SpaceError(f"study file {self.path}: [space] stages goes up to {most}, but {shape.side}x{shape.side} "
                             f"images allow at most {max_stages(shape.side)} (each stage after the first halves "
                             "the map); lower stages")
        return dataclasses.replace(self, space={**self.space, "classes": shape.classes}, shape=shape)

    def sample_spec(self, trial, budget: Budget | int, on_repair=None) -> ResNetSpec:
        """Draw one spec: depth, kernels, pool and growth, then the width that fills the budget
        (every wall of it: parameters, and MACs where it has that wall).

        When even the narrowest width (min_channels) is over the budget, the drawn depth is
        repaired by `fit_depth` (fewer stages, then smaller kernels, then proportionally fewer
        blocks, each only as far as needed) instead of being rejected. The suggested values stay as
        drawn, from the same distributions in every trial, and the spec is a fixed function of
        them: TPE's multivariate, grouped model needs each parameter's distribution unchanged
        across trials, which narrowing a range per trial would break. A repair calls
        on_repair(drawn), drawn the summary of the depth as drawn (the search records it with the
        trial: search/record.py's repaired_from). The spec is still over budget
        when no network of the space fits at all: callers reject it by its count (`fits`).
        """
        s = self.space
        n = suggest(trial, "stages", s["stages"])
        blocks = [suggest(trial, f"blocks_{i + 1}", s["blocks"]) for i in range(n)]
        conv = [suggest(trial, f"conv_kernel_{i + 1}", s["conv_kernel"]) for i in range(n)]
        skip = [suggest(trial, f"skip_kernel_{i + 1}", s["skip_kernel"]) if i else 1 for i in range(n)]
        pool = suggest(trial, "pool", s["pool"])
        growth = suggest(trial, "growth", s["growth"])
        step, floor = s["channel_step"], s["min_channels"]

        def make(c1: int, blocks=blocks, conv=conv, skip=skip) -> ResNetSpec:
            return ResNetSpec.built_for(self.shape, tuple(blocks), widths(c1, growth, len(blocks), step), tuple(conv),
                                        tuple(skip), pool)

        if "first_channels" in s:
            return make(suggest(trial, "first_channels", s["first_channels"]))
        budget = Budget.of(budget)
        target = budget.scaled(suggest(trial, "fill", s["fill"]))
        narrowest = floor
        least = {key: min(_options(f"[space] {key}", s[key])) for key in ("stages", "blocks", "conv_kernel", "skip_kernel")}
        if not _is_range(s["stages"]):  # choices: only those; a range offers every count between
            least["stage_counts"] = _options("[space] stages", s["stages"])
        depth = fit_depth(lambda b, f, k: make(narrowest, b, f, k), tuple(blocks), tuple(conv), tuple(skip),
                          least, budget)
        if depth != (tuple(blocks), tuple(conv), tuple(skip)) and on_repair is not None:
            on_repair(make(narrowest).summary())
        return make(widest_first_channels(lambda c1: make(c1, *depth), target, floor), *depth)

    def smallest_specs(self) -> list[ResNetSpec]:
        """The space's smallest network at each number of stages it allows: the least blocks,
        kernels, growth and width, the largest pool (the smallest head). Counts are not monotone
        in stages, so when none of these fits, nothing in the space does."""
        s = self.space
        least = {key: min(_options(f"[space] {key}", s[key]))
                 for key in ("blocks", "conv_kernel", "skip_kernel", "growth", "first_channels", "min_channels")
                 if key in s}
        c1 = least.get("first_channels", least["min_channels"])
        stages = _options("[space] stages", s["stages"])
        counts = range(min(stages), max(stages) + 1) if _is_range(s["stages"]) else stages
        return [ResNetSpec.built_for(self.shape, (least["blocks"],) * n, widths(c1, least["growth"], n, s["channel_step"]),
                                     (least["conv_kernel"],) * n, (1,) + (least["skip_kernel"],) * (n - 1),
                                     max(_options("[space] pool", s["pool"]))) for n in counts]

    def center_recipe(self, epochs: int | None = None) -> tuple[Recipe, dict]:
        """The recipe at the middle of every searched range (geometric for log ranges, first of
        choices), and the trial params that select it: what the seeded baseline trains under."""
        return center_recipe(self.recipe, epochs)

    def sample_recipe(self, trial, epochs: int | None = None) -> Recipe:
        return sample_recipe(self.recipe, trial, epochs)


def widths(c1: int, growth: float, stages: int, step: int) -> tuple[int, ...]:
    """Stage widths: C_1 to the channel, the wider stages to channel_step. Params grow with C_1
    squared, so steps of 8 in C_1 would leave up to a third of a small budget unused."""
    return (c1,) + tuple(max(step, round(c1 * growth**i / step) * step) for i in range(1, stages))


def sample_recipe(table: dict, trial, epochs: int | None = None) -> Recipe:
    """A recipe drawn from a [recipe] table (as a study file holds it, or as a study records it)."""
    recipe = {k: suggest(trial, k, tuple(v) if k in LIST_VALUED_RECIPE_KEYS and isinstance(v, list) else v)
              for k, v in table.items()}
    if epochs:
        recipe["epochs"] = epochs
    return Recipe.from_dict(recipe)


def center_recipe(table: dict, epochs: int | None = None) -> tuple[Recipe, dict]:
    """The recipe at the middle of every searched range of a [recipe] table (StudyFile.center_recipe)."""
    trial = _CenterTrial()
    return sample_recipe(table, trial, epochs), trial.params


class _CenterTrial:
    """Answers suggestions like an Optuna trial would, always with the middle of the range."""

    def __init__(self):
        self.params = {}

    def suggest_categorical(self, name, choices):
        self.params[name] = choices[0]
        return choices[0]

    def suggest_int(self, name, low, high, log=False):
        self.params[name] = round(math.sqrt(low * high)) if log else (low + high) // 2
        return self.params[name]

    def suggest_float(self, name, low, high, log=False):
        self.params[name] = math.sqrt(low * high) if log else (low + high) / 2
        return self.params[name]


def fit_depth(narrowest, blocks: tuple[int, ...], conv: tuple[int, ...], skip: tuple[int, ...],
              least: dict, budget: Budget | int) -> tuple[tuple[int, ...], ...]:
    """The drawn (blocks, conv kernels, skip kernels), reduced until `narrowest(blocks, conv, skip)`
    (the network at the narrowest width) fits under every wall of the budget, keeping stages,
    then blocks, then kernels, in that order of priority, and never going below the space's least values
    (`least`: stages, blocks, conv_kernel, skip_kernel; and stage_counts, the numbers of stages
    the space offers, when not every one from the least up).

    The rule: keep the most leading stages whose smallest network (least blocks and kernels in
    every stage) fits; from the last stage back (the widest, where kernels cost most), give
    stages the least kernels until the drawn blocks fit; then scale every stage's blocks to
    max(least, ceil(B_i * m / max B)) with the largest m <= max B that fits. Depth goes last
    because it is the report's main lever (Model 1 is deep and 3x3) and a 5x5 convolution costs
    2.8 times a 3x3 one. A draw that already fits is returned unchanged, and so is one that no
    reduction saves (the caller's count rejects it).
    """
    def ok(b, f, k) -> bool:
        return fits(narrowest(b, f, k), budget)

    if ok(blocks, conv, skip):
        return blocks, conv, skip
    few, small_conv, small_skip = least["blocks"], least["conv_kernel"], least["skip_kernel"]
    offered = least.get("stage_counts", range(least["stages"], len(blocks) + 1))
    # Counts are not monotone in stages (the head shrinks with the map), so each n is tried.
    n = next((n for n in sorted(offered, reverse=True) if least["stages"] <= n <= len(blocks)
              and ok((few,) * n, (small_conv,) * n, (1,) + (small_skip,) * (n - 1))), None)
    if n is None:
        return blocks, conv, skip
    blocks, conv, skip = blocks[:n], list(conv[:n]), list(skip[:n])
    for i in reversed(range(n)):
        if ok(blocks, conv, skip):
            break
        conv[i] = small_conv
        skip[i] = small_skip if i else skip[i]
    top = max(blocks)

    def scaled(m: int) -> tuple[int, ...]:
        return tuple(max(few, -(-b * m // top)) for b in blocks)

    # The largest m that fits (1 if none): counts grow with m, so a bisection finds it in ~log2(top)
    # counts, where stepping down one at a time would never end for blocks = {high = 10**18}.
    low, high = 1, top + 1  # ok at low or low is 1; never ok at high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(scaled(mid), conv, skip) else (low, mid)
    return scaled(low), tuple(conv), tuple(skip)


def widest_first_channels(make, target: Budget, floor: int) -> int:
    """Largest C_1 (at least `floor`) whose spec fits under `target` (the budget scaled by fill,
    Budget.scaled, on every wall).

    Counts grow with C_1, so a binary search finds it in ~20 counts. Returns the floor even when
    it does not fit: the caller's budget check rejects it.
    """
    def ok(c1):
        return fits(make(c1), target)

    low = floor
    if not ok(low):
        return low
    high = low
    while ok(high * 2):
        high *= 2
    high *= 2  # ok(low) holds, ok(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low
