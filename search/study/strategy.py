"""The sampler, the pruner and how a proposal over the budget is told to the sampler, as the
search ships them (optuna, no torch).

    sampler = make_sampler(seed)        # TPE: multivariate, grouped, constant liar; or "random"
    pruner = make_pruner(max_epochs)    # one rung at half of training: keep the best half, after 5

The pruner's rule: a trial is judged only at the rungs, RUNG_FRACTIONS of training (one rung, at
half: epoch 15 of 30, never before half); there it goes on if it is in the best KEEP_FRACTION
(half) of all the trials that reached that rung (complete, pruned or still running), and no
trial is stopped at a rung until MIN_TRIALS_AT_RUNG (5) others have reached it. Why
(benchmarks/search_tabular.py, docs/measurements.md):
- Not before half: on real short runs the first epochs ranked the last badly (rank correlation
  -0.5..+0.3 at epoch 1 of 4). On NAS-Bench-201's 200-epoch curves, among the better half of
  the cells, epochs 20-100 rank epoch 200 at Spearman 0.69-0.71 and epoch 150 at 0.92.
- Waiting for trials: successive halving cannot wait; with fewer than 6 trials
  at a rung it stopped every trial that was not the best so far. Run on the 200 curves as
  30-epoch trials it stopped 52% of the final top 10%; this rule stops 5% and saves 24% of
  the epochs (keeping a third instead of half: 10% stopped, 32% saved).
- One bracket, one sampler: every trial, pruned or not, is shown to TPE (no Hyperband brackets).

Budget rejections: the objective ends a proposal at or over the budget with TrialPruned before
any report, so TPE sees it PRUNED with no values and ranks it worst of all, learning where the
budget is; measured against telling it as a constraint violation (`trial.set_constraint`) and
against leaving it out of the model (FAIL): results/search-tabular/rejection-constraint-20-seeds.md.

Reproducible: a trial's random draws depend on the study seed and the trial's number alone, so
one worker run again on a fresh study proposes the same trials, and workers sharing a study
(each trial number is handed out once by the storage) draw different ones, with no process id.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
from optuna.trial import TrialState

from ..private import reseed, tpe_random_sampler

N_STARTUP_TRIALS = 10  # random trials before TPE models the study
RUNG_FRACTIONS = (0.5,)  # where the pruner decides, as fractions of training
KEEP_FRACTION = 0.5  # at a rung, a trial goes on if it is in this best fraction of those that reached it
MIN_TRIALS_AT_RUNG = 5  # and nothing is stopped at a rung until this many other trials have reached it
_REACHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


SAMPLERS = ("tpe", "random")  # random: the control a search must beat, under the same pruner


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for one trial of a study: independent streams per (seed, trial number)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random draws for a trial depend only on the study seed and the trial's number.
    One worker on a fresh study proposes the same trials every time; workers sharing a study hold
    different trial numbers, so their start-up draws differ, with no process id involved."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.study_seed = seed

    def before_trial(self, study, trial) -> None:
        reseed(self, trial_seed(self.study_seed, trial.number))
        reseed(tpe_random_sampler(self), trial_seed(self.study_seed, trial.number))
        super().before_trial(study, trial)


class TrialSeededRandom(optuna.samplers.RandomSampler):
    """Random search, seeded per trial like TrialSeededTPE."""

    def __init__(self, seed: int):
        super().__init__(seed=seed)
        self.study_seed = seed

    def before_trial(self, study, trial) -> None:
        reseed(self, trial_seed(self.study_seed, trial.number))
        super().before_trial(study, trial)


def make_sampler(seed: int, kind: str = "tpe") -> optuna.samplers.BaseSampler:
    """TPE over the whole space jointly (multivariate, grouped for the stage-dependent
    parameters), with constant liar so concurrent workers avoid each other's running trials;
    or, with kind="random", random search to compare it with."""
    if kind == "random":
        return TrialSeededRandom(seed)
    if kind != "tpe":
        raise ValueError(f"sampler {kind!r} is not one of {', '.join(SAMPLERS)}")
    with warnings.catch_warnings():  # multivariate, group and constant_liar are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TrialSeededTPE(seed, multivariate=True, group=True, constant_liar=True,
                              n_startup_trials=N_STARTUP_TRIALS)


def rung_epochs(max_epochs: int) -> list[int]:
    """The epochs at which the pruner decides: RUNG_FRACTIONS of training, rounded down, at
    least 1 and before the last epoch (after it there is nothing left to save). `best` and the
    report check at these epochs how far the pruner can be trusted."""
    return sorted({max(1, int(max_epochs * f)) for f in RUNG_FRACTIONS} - {max_epochs}
                  if max_epochs > 1 else set())


class RungPruner(optuna.pruners.BasePruner):
    """Stops a trial at a rung when it is outside the best `keep` fraction of the trials that
    reached that rung (complete, pruned or running), and only once at least `min_trials` other
    trials have reached it. Decides at the rung epochs only; a NaN value is always stopped."""

    def __init__(self, rungs, keep: float = KEEP_FRACTION, min_trials: int = MIN_TRIALS_AT_RUNG):
        if not 0 < keep <= 1:
            raise ValueError(f"keep {keep} must be in (0, 1]")
        self.rungs, self.keep, self.min_trials = frozenset(rungs), keep, min_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=_REACHED)
                  if t.number != trial.number and step in t.intermediate_values]
        others = [v for v in others if not math.isnan(v)]
        if len(others) < self.min_trials:
            return False
        sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
        better = sum(sign * v > sign * value for v in others)
        return better >= self.keep * (len(others) + 1)


def make_pruner(max_epochs: int) -> RungPruner:
    """The search's pruner for trials of `max_epochs` epochs: see the module docstring."""
    return RungPruner(rung_epochs(max_epochs))
