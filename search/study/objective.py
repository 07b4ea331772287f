"""One trial, as Optuna runs it: propose a network and its recipe, reject it if it is over the
budget or trained already, train it reporting each epoch to the pruner, record what it kept.
What a trial does when other workers are about (surplus, twins, retries) is faults.py's."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact

from resnet_space import Counts, Recipe, ResNetSpec, count, overrun, walls_hit
from resnet_space.errors import UserError

from ..engine.data import Dataset, UnsafeFile
from ..engine.train import Diverged, Epoch, TrainResult, completed_epochs, train
from ..private import trial_id
from . import record
from .faults import refuse_surplus, twin_to_step_aside_for
from .interrupts import CtrlC, how_stopped
from .layout import plural
from .plan import Plan
from .storage import open_artifact_store
from .strategy import reject_over_budget
from .view import LogLines

GIVE_UP_AFTER = 100  # proposals in a row rejected (over the budget, or trained already)


@dataclass
class Proposal:
    """What a trial trains: its network and recipe, their counts, and where its checkpoint lives
    (a retried or re-queued trial inherits its first run's)."""

    spec: ResNetSpec
    recipe: Recipe
    counts: Counts
    first_run: int  # the number of the trial's first run: its own, unless it is a retry or re-queue
    checkpoint_dir: Path
    known: record.TrialRecord  # what the trial knew before it ran (baseline, finalist, first run)


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
    def __init__(self, study: optuna.Study, plan: Plan, data: Dataset, view: LogLines):
        self.study, self.plan, self.data, self.view = study, plan, data, view
        self.store = open_artifact_store(plan.outputs.artifacts)
        self.rejected_in_a_row, self.gave_up = 0, None
        self.ctrl_c = CtrlC()
        self.in_flight = None  # the id of the trial last begun: after an outage, the one it cut short

    def __call__(self, trial: optuna.Trial) -> float:
        self.in_flight = trial_id(trial)
        try:
            with self.ctrl_c.arm():
                refuse_surplus(trial, self.plan.settings.trials)
                proposal = self.propose(trial)
                self.reject(trial, proposal)
                result = self.train(trial, proposal)
                self.keep(trial, proposal, result)
                return result.best_val_acc
        except KeyboardInterrupt as e:
            record.write_failed(trial, f"interrupted ({how_stopped(e)[0]}); its checkpoint is kept to resume from")
            raise
        except torch.cuda.OutOfMemoryError as e:
            record.write_failed(trial, f"CUDA out of memory: {str(e).splitlines()[0][:200]}")
            raise
        except UnsafeFile as e:
            record.write_failed(trial, str(e))
            raise
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next trial starts with the memory this one held

    def propose(self, trial: optuna.Trial) -> Proposal:
        """The trial's network and recipe: a finalist's as its search trial had them (longer), the
        baseline's spec under a sampled recipe, else both sampled; recorded before any check."""
        plan, known = self.plan, record.TrialRecord.of(trial)
        if known.finalist_of is not None:
            spec, recipe = ResNetSpec.from_dict(known.spec), Recipe.from_dict({**known.recipe, "epochs": plan.epochs})
        else:
            spec = (ResNetSpec.from_dict(known.spec) if known.baseline else
                    plan.study_file.sample_spec(trial, plan.budget, on_repair=lambda drawn: record.write_repaired(trial, drawn)))
            recipe = plan.study_file.sample_recipe(trial, plan.epochs)
        first_run = known.first_trial if known.first_trial is not None else trial.number
        checkpoint_dir = plan.outputs.checkpoints / f"trial-{first_run}"  # never a folder the database names
        counts = count(spec)
        record.write_identity(trial, spec=spec.to_dict(), summary=spec.summary(), params=counts.params,
                              macs=counts.macs, recipe=recipe.to_dict(), seed=plan.settings.seed,
                              device=str(plan.device), dataset=self.data.name, first_trial=first_run,
                              checkpoint_dir=str(checkpoint_dir.resolve()))
        return Proposal(spec, recipe, counts, first_run, checkpoint_dir, known)

    def reject(self, trial: optuna.Trial, p: Proposal) -> None:
        """Prune, untrained, a proposal at or over a wall of the budget, one another trial is
        training (faults.twin_to_step_aside_for), or one trained already under the same recipe:
        TPE proposes trained specs again in a categorical space, and a second training buys only
        seed noise."""
        hit = walls_hit(p.counts, self.plan.budget)
        if hit:
            reason = f"over budget: {overrun(p.counts, self.plan.budget)}"
            record.write_pruned(trial, reason, walls_hit=hit)
            reject_over_budget(trial, p.counts, self.plan.budget)  # as the sampler is told (strategy.py)
            raise optuna.TrialPruned(reason)
        twin = twin_to_step_aside_for(trial, p.spec, p.first_run, self.ctrl_c, self.view.log)
        if twin is not None:
            record.write_pruned(trial, f"duplicate: trial {twin} is training the same spec", duplicate_of=twin)
            raise optuna.TrialPruned(f"same spec as running trial {twin}")
        twin = trained_twin(trial, p.spec, p.recipe)
        if twin is not None:
            record.write_pruned(trial, f"duplicate: trial {twin} trained the same spec and recipe", duplicate_of=twin)
            shutil.rmtree(p.checkpoint_dir, ignore_errors=True)  # a copy's checkpoint: its twin trained what it held
            raise optuna.TrialPruned(f"same spec and recipe as trained trial {twin}")

    def train(self, trial: optuna.Trial, p: Proposal) -> TrainResult:
        """Train the proposal, resuming its checkpoint, each epoch reported to the pruner; a
        pruned or diverged trial's checkpoint is removed (it never resumes)."""
        record.write_training_started(trial)
        curve, seed, epochs = Curve(), self.plan.settings.seed, p.recipe.epochs
        resumed = completed_epochs(p.checkpoint_dir, p.spec, p.recipe, seed)
        for e in resumed:  # replay what the checkpoint holds, so the curve is whole
            curve.add(e)
            trial.report(e.val_acc, e.epoch)
        if resumed:
            record.write_resumed(trial, p.first_run, len(resumed))

        def report(e: Epoch) -> None:
            self.ctrl_c.check()  # a Ctrl-C a finaliser swallowed
            curve.add(e)
            record.write_curve(trial, curve.accs, curve.seconds, curve.losses)
            trial.report(e.val_acc, e.epoch)
            if e.epoch < epochs and trial.should_prune():  # after the last epoch there is nothing to save
                record.write_pruned(trial, f"pruned by the pruner after epoch {e.epoch} at {e.val_acc:.2%}")
                raise optuna.TrialPruned(f"epoch {e.epoch}: {e.val_acc:.2%}")

        self.view.log(f"trial {trial.number}: {p.spec.summary()} ({p.counts.params:,} params, {p.counts.macs:,} MACs)"
                      + (f" [seeded baseline: {p.known.baseline_label}]" if p.known.baseline else "")
                      + (f" [finalist: search trial {p.known.finalist_of}, {plural(epochs, 'epoch')}]"
                         if p.known.finalist_of is not None else "")
                      + (f" [resuming trial {p.first_run} after epoch {len(resumed)}]" if resumed else ""))
        try:
            return train(p.spec, self.data, p.recipe, device=self.plan.device, seed=seed, on_epoch=report,
                         checkpoint_dir=p.checkpoint_dir, progress=self.view.progress)
        except Diverged as e:
            record.write_pruned(trial, f"diverged: {e}")
            shutil.rmtree(p.checkpoint_dir, ignore_errors=True)
            raise optuna.TrialPruned(str(e)) from None
        except optuna.TrialPruned:
            shutil.rmtree(p.checkpoint_dir, ignore_errors=True)
            raise

    def keep(self, trial: optuna.Trial, p: Proposal, result: TrainResult) -> None:
        """The best epoch's checkpoint into the artifact store (a neutral MIME type: guessed from
        ".pt" it would name a game-console format), then the epoch checkpoints go."""
        store = self.plan.outputs.artifacts
        try:
            artifact = upload_artifact(artifact_store=self.store, file_path=str(p.checkpoint_dir / "best.pt"),
                                       study_or_trial=trial, mimetype="application/octet-stream")
        except OSError as e:  # the store became unwritable mid-run: the checkpoint stays to resume from
            record.write_failed(trial, f"checkpoint not kept: artifact store {store}: {e.strerror or e}")
            raise UserError(f"trial {trial.number}: cannot write its checkpoint to artifact store {store}: "
                            f"{e.strerror or e}") from None
        record.write_result(trial, result.best_epoch, artifact)
        shutil.rmtree(p.checkpoint_dir, ignore_errors=True)

    def enough(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop once the study holds its trained trials; rejected proposals take no place, but a
        long run of them means nothing in the space fits, and the search gives up saying so."""
        if self.ctrl_c.pending:
            study.stop()
        r = record.TrialRecord.of(trial)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if r.rejected else 0
        if self.rejected_in_a_row >= GIVE_UP_AFTER:
            self.gave_up = (f"the last {GIVE_UP_AFTER} proposals were all at or over the budget of {self.plan.budget}: "
                            "nothing in this space fits; raise --budget (or --macs-budget) or narrow the space"
                            if r.over_budget else
                            f"the last {GIVE_UP_AFTER} proposals were all over the budget or trained already: the space "
                            "holds no other network that fits; ask for fewer --trials or widen the space")
            study.stop()
        if record.trained_count(study) >= self.plan.settings.trials:
            study.stop()


def trained_twin(trial: optuna.Trial, spec: ResNetSpec, recipe: Recipe) -> int | None:
    """A trial that already trained this very spec under this very recipe, if any."""
    mine = json.loads(json.dumps(recipe.to_dict()))  # as the storage gives it back
    for r in record.records(trial.study, states=record.FINISHED):
        if r.counts_as_trained and r.spec == spec.to_dict() and r.recipe == mine:
            return r.number
    return None
