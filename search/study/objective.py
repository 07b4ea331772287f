"""One trial's decisions, the same for the search and for every benchmark that measures it:
propose, reject (over the budget, as the sampler is told; a twin of a running or trained trial),
train with a report each epoch and prune at the rung, record what it kept; and, after the search,
the final stage's choice of finalists and of the winner.

What is proposed and how it is trained plug in: the search proposes ResNet specs from its study
file and trains them with the engine (networks.py); the tabular benchmark proposes NAS-Bench-201
cells and answers from the published table as training would (benchmarks/search_tabular.py).
Optuna tells the sampler: a returned value, or a TrialPruned, ends each trial.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ContextManager, Protocol

import optuna
import torch

from resnet_space import Budget, Counts, overrun, walls_hit

from ..engine.data import UnsafeFile
from ..engine.train import Epoch
from ..private import trial_id
from . import record
from .artifacts import StoreUnreachable
from .faults import refuse_surplus, twin_to_step_aside_for
from .interrupts import CtrlC, how_stopped

GIVE_UP_AFTER = 100  # proposals in a row rejected (over the budget, or trained already)


@dataclass(frozen=True)
class Stage:
    """What the objective needs of a stage: its total of trained trials, the budget's walls, and
    the epochs each trial trains."""

    trials: int
    budget: Budget
    epochs: int


@dataclass
class Proposal:
    """What a trial trains, as it records it: the spec (a ResNet spec's dict, or a benchmark's
    cell), its one-line summary, the recipe, their counts, and the first run of a retried or
    re-queued trial (its own number otherwise), whose checkpoint it inherits."""

    spec: dict
    summary: str
    recipe: dict
    counts: Counts
    first_run: int
    known: record.TrialRecord  # what the trial knew before it ran (baseline, finalist, first run)


@dataclass
class Trained:
    best_value: float  # the objective: the best epoch's validation accuracy
    best_epoch: int


Report = Callable[[Epoch], None]
Replay = Callable[[list[Epoch]], None]
Interruptible = Callable[[], ContextManager]


class Proposer(Protocol):
    def propose(self, trial: optuna.Trial, known: record.TrialRecord) -> tuple[dict, str, dict, Counts]:
        """(spec, summary, recipe, counts) of the trial: a finalist's or the baseline's as `known`
        says, else drawn from the trial."""


class Trainer(Protocol):
    def identity(self, trial: optuna.Trial, p: Proposal) -> dict:
        """What the trial records of where and how it trains, beside its spec and recipe."""

    def train(self, trial: optuna.Trial, p: Proposal, report: Report, replay: Replay,
              interruptible: Interruptible) -> Trained:
        """Train the proposal: replay(epochs) with the epochs a checkpoint already holds, then
        report(epoch) after each epoch trained; what report raises (TrialPruned) ends training.
        Pure computation runs inside interruptible(), where Ctrl-C is raised at once."""

    def discard(self, p: Proposal) -> None:
        """What the trial kept to resume from goes: it was pruned, diverged or is a twin."""

    def keep(self, trial: optuna.Trial, p: Proposal, trained: Trained) -> None:
        """Keep what the trial trained (its best checkpoint) once it completed."""


@dataclass
class Curve:
    """Validation accuracy, seconds and training loss per epoch, as the trial records them."""

    accs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def add(self, e: Epoch) -> None:
        self.accs.append(e.val_acc)
        self.seconds.append(e.seconds)
        self.losses.append(e.loss)


class Objective:
    """The trial loop as Optuna runs it: study.optimize(Objective(...), callbacks=[objective.enough])."""

    def __init__(self, stage: Stage, proposer: Proposer, trainer: Trainer, log: Callable[[str], None] = print):
        self.stage, self.proposer, self.trainer, self.log = stage, proposer, trainer, log
        self.rejected_in_a_row, self.gave_up = 0, None
        self.ctrl_c = CtrlC()
        self.in_flight = None  # the id of the trial last begun: after an outage, the one it cut short

    def __call__(self, trial: optuna.Trial) -> float:
        self.in_flight = trial_id(trial)
        try:
            self.ctrl_c.check()
            return self.run(trial)
        except KeyboardInterrupt as e:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # failed meanwhile by another worker
                record.write_failed(trial, f"interrupted ({how_stopped(e)[0]}); its checkpoint is kept to resume from")
            raise
        except torch.cuda.OutOfMemoryError as e:
            record.write_failed(trial, f"CUDA out of memory: {str(e).splitlines()[0][:200]}")
            raise
        except UnsafeFile as e:
            record.write_failed(trial, str(e))
            raise
        except StoreUnreachable as e:  # failed as interrupted: the next run queues it to resume
            record.write_failed(trial, f"interrupted ({e}); its checkpoint is kept to resume from")
            raise StoreUnreachable(f"{e}; trial {trial.number} is recorded as failed and resumes from its checkpoint "
                                   "when this command runs again") from None
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next trial starts with the memory this one held

    def run(self, trial: optuna.Trial) -> float:
        """Propose, reject, train with reports, keep: the trial's value, or TrialPruned."""
        refuse_surplus(trial, self.stage.trials)
        proposal = self.propose(trial)
        self.reject(trial, proposal)
        trained = self.train(trial, proposal)
        self.trainer.keep(trial, proposal, trained)
        record.write_result(trial, trained.best_epoch)
        return trained.best_value

    def propose(self, trial: optuna.Trial) -> Proposal:
        known = record.TrialRecord.of(trial)
        spec, summary, recipe, counts = self.proposer.propose(trial, known)
        first_run = known.first_trial if known.first_trial is not None else trial.number
        p = Proposal(spec, summary, json.loads(json.dumps(recipe)), counts, first_run, known)
        record.write_identity(trial, {"spec": spec, "summary": summary, "params": counts.params,
                                      "macs": counts.macs, "recipe": recipe, "first_trial": first_run,
                                      **self.trainer.identity(trial, p)})
        return p

    def reject(self, trial: optuna.Trial, p: Proposal) -> None:
        """Prune, untrained, a proposal at or over a wall of the budget, one another trial is
        training (faults.twin_to_step_aside_for), or one trained already under the same recipe:
        TPE proposes trained specs again in a categorical space, and a second training buys only
        seed noise."""
        hit = walls_hit(p.counts, self.stage.budget)
        if hit:
            reason = f"over budget: {overrun(p.counts, self.stage.budget)}"
            record.write_pruned(trial, reason, walls_hit=hit)
            raise optuna.TrialPruned(reason)  # told PRUNED with no values: see strategy.py
        twin = twin_to_step_aside_for(trial, p.spec, p.first_run, self.ctrl_c, self.log)
        if twin is not None:
            record.write_pruned(trial, f"duplicate: trial {twin} is training the same spec", duplicate_of=twin)
            raise optuna.TrialPruned(f"same spec as running trial {twin}")
        twin = trained_twin(trial, p.spec, p.recipe)
        if twin is not None:
            record.write_pruned(trial, f"duplicate: trial {twin} trained the same spec and recipe", duplicate_of=twin)
            self.trainer.discard(p)  # a copy's checkpoint: its twin trained what it held
            raise optuna.TrialPruned(f"same spec and recipe as trained trial {twin}")

    def train(self, trial: optuna.Trial, p: Proposal) -> Trained:
        """Train, each epoch recorded and reported to the pruner, which may stop the trial at a
        rung; a pruned or diverged trial's checkpoint goes (it never resumes)."""
        record.write_training_started(trial)
        curve, epochs = Curve(), self.stage.epochs

        def replay(held: list[Epoch]) -> None:  # what a checkpoint holds, so the curve is whole
            for e in held:
                curve.add(e)
                trial.report(e.val_acc, e.epoch)
            if held:
                record.write_resumed(trial, p.first_run, len(held))

        def report(e: Epoch) -> None:
            self.ctrl_c.check()  # a Ctrl-C a finaliser swallowed
            curve.add(e)
            record.write_curve(trial, curve.accs, curve.seconds, curve.losses)
            trial.report(e.val_acc, e.epoch)
            if e.epoch < epochs and trial.should_prune():  # after the last epoch there is nothing to save
                record.write_pruned(trial, f"pruned by the pruner after epoch {e.epoch} at {e.val_acc:.2%}")
                raise optuna.TrialPruned(f"epoch {e.epoch}: {e.val_acc:.2%}")

        try:
            return self.trainer.train(trial, p, report, replay, self.ctrl_c.arm)
        except optuna.TrialPruned:
            self.trainer.discard(p)
            raise

    def enough(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop once the study holds its trained trials; rejected proposals take no place, but a
        long run of them means nothing in the space fits, and the search gives up saying so."""
        if self.ctrl_c.pending:
            study.stop()
        r = record.TrialRecord.of(trial)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if r.rejected else 0
        if self.rejected_in_a_row >= GIVE_UP_AFTER:
            self.gave_up = (f"the last {GIVE_UP_AFTER} proposals were all at or over the budget of {self.stage.budget}: "
                            "nothing in this space fits; raise --budget (or --macs-budget) or narrow the space"
                            if r.over_budget else
                            f"the last {GIVE_UP_AFTER} proposals were all over the budget or trained already: the space "
                            "holds no other network that fits; ask for fewer --trials or widen the space")
            study.stop()
        if record.trained_count(study) >= self.stage.trials:
            study.stop()
        self.in_flight = None  # told: no outage or other worker cut it short


def trained_twin(trial: optuna.Trial, spec: dict, recipe: dict) -> int | None:
    """A trial that already trained this very spec under this very recipe, if any."""
    for r in record.records(trial.study, states=record.FINISHED):
        if r.counts_as_trained and r.spec == spec and r.recipe == recipe:
            return r.number
    return None


def finalists(trials: list[record.TrialRecord], k: int) -> list[record.TrialRecord]:
    """The final stage's entrants: the best k distinct specs by validation accuracy among the
    trials trained to the end, then the seeded baseline if it trained and is not among them."""
    picked, seen = [], set()
    for r in record.ranked(trials):
        key = json.dumps(r.spec, sort_keys=True)
        if key not in seen and len(picked) < k:
            picked.append(r)
            seen.add(key)
    baseline = next((r for r in trials if r.baseline and r.state in ("COMPLETE", "PRUNED") and r.trained
                     and not r.diverged), None)
    if baseline is not None and json.dumps(baseline.spec, sort_keys=True) not in seen:
        picked.append(baseline)
    return picked
