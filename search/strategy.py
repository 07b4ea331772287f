"""The sampler and pruner the search ships, in one place (optuna only: no torch, fast to import).

    sampler = make_sampler(seed)        # TPE: multivariate, grouped, constant liar; or "random"
    pruner = make_pruner(max_epochs)    # successive halving on epochs: rungs at 3, 9, 27 of 30

Why successive halving and not Hyperband: with Hyperband, Optuna shows the sampler only the
trials of the trial's own bracket (4 brackets at 30 epochs, reduction factor 3), so TPE learns
from a quarter of the study and its random start-up runs in every bracket (40 random trials
instead of 10). Successive halving is one bracket: TPE learns from every trial, pruned ones
ranked by how far they got. The first rung is a tenth of training, so no trial is judged on its
first epoch alone (at 10 epochs or fewer it is epoch 1). README quotes what
benchmarks/search_synthetic.py measures of this pairing against random search and Hyperband.

Reproducible: a trial's random draws depend on the study seed and the trial's number alone, so
one worker run again on a fresh study proposes the same trials, and workers sharing a study
(each trial number is handed out once by the storage) draw different ones, with no process id.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna

N_STARTUP_TRIALS = 10  # random trials before TPE models the study
REDUCTION_FACTOR = 3


SAMPLERS = ("tpe", "random")  # random: the control a search must beat, under the same pruner


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for one trial of a study: independent streams per (seed, trial number)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _reseed(generator, seed: int) -> None:
    # Optuna's public reseed_rng() takes fresh entropy; its generators are reseeded here instead.
    generator._rng.rng.seed(seed)


class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random draws for a trial depend only on the study seed and the trial's number.
    One worker on a fresh study proposes the same trials every time; workers sharing a study hold
    different trial numbers, so their start-up draws differ, with no process id involved."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.study_seed = seed

    def before_trial(self, study, trial) -> None:
        _reseed(self, trial_seed(self.study_seed, trial.number))
        _reseed(self._random_sampler, trial_seed(self.study_seed, trial.number))
        super().before_trial(study, trial)


class TrialSeededRandom(optuna.samplers.RandomSampler):
    """Random search, seeded per trial like TrialSeededTPE."""

    def __init__(self, seed: int):
        super().__init__(seed=seed)
        self.study_seed = seed

    def before_trial(self, study, trial) -> None:
        _reseed(self, trial_seed(self.study_seed, trial.number))
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


def first_rung(max_epochs: int) -> int:
    """The epoch of the first pruning decision: a tenth of training, at least 1."""
    return max(1, max_epochs // 10)


def rung_epochs(max_epochs: int) -> list[int]:
    """The epochs at which the pruner decides (r, 3r, 9r, ... before the last epoch, after which
    there is nothing left to save): where `best` and the report check how far it can be trusted."""
    rungs, epoch = [], first_rung(max_epochs)
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= REDUCTION_FACTOR
    return rungs


def make_pruner(max_epochs: int) -> optuna.pruners.SuccessiveHalvingPruner:
    """Asynchronous successive halving on epochs: at epochs r, 3r, 9r, ... (r = a tenth of
    training), a trial goes on only if it is in the best third of the trials that reached that
    epoch. One bracket, so the sampler sees every trial."""
    if max_epochs < 1:
        raise ValueError(f"max_epochs {max_epochs} must be >= 1")
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=first_rung(max_epochs),
                                                  reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0)
