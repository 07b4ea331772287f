"""What the search plugs into the trial loop (objective.py): ResNet specs proposed from its study
file (a finalist or the seeded baseline as queued), trained by the engine with a checkpoint
every epoch, the best one kept as an Optuna artifact."""

from __future__ import annotations

import shutil

import optuna
from optuna.artifacts import upload_artifact

from resnet_space import Budget, Counts, Recipe, ResNetSpec, count
from resnet_space.errors import UserError
from resnet_space.space import StudyFile

from ..engine.data import Dataset
from ..engine.train import Diverged, completed_epochs, train
from . import record
from .layout import plural
from .objective import Interruptible, Objective, Proposal, Replay, Report, Stage, Trained
from .plan import Plan
from .artifacts import EpochCheckpoints, open_artifact_store
from .view import LogLines


def objective(plan: Plan, data: Dataset, view: LogLines) -> Objective:
    """The search's objective for a stage of `plan`."""
    stage = Stage(plan.settings.trials, plan.budget, plan.epochs)
    return Objective(stage, ResNetProposer(plan.study_file, plan.budget, plan.epochs), EngineTrainer(plan, data, view),
                     view.log)


class ResNetProposer:
    def __init__(self, study_file: StudyFile, budget: Budget, epochs: int):
        self.study_file, self.budget, self.epochs = study_file, budget, epochs

    def propose(self, trial: optuna.Trial, known: record.TrialRecord) -> tuple[dict, str, dict, Counts]:
        """A finalist trains again as its search trial did, only longer; the baseline's spec is
        queued with it; else both spec (width last, repaired to fit) and recipe are sampled."""
        if known.finalist_of is not None:
            spec, recipe = ResNetSpec.from_dict(known.spec), Recipe.from_dict({**known.recipe, "epochs": self.epochs})
        else:
            spec = (ResNetSpec.from_dict(known.spec) if known.baseline else self.study_file.sample_spec(
                trial, self.budget, on_repair=lambda drawn: record.write_repaired(trial, drawn)))
            recipe = self.study_file.sample_recipe(trial, self.epochs)
        return spec.to_dict(), spec.summary(), recipe.to_dict(), count(spec)


class EngineTrainer:
    def __init__(self, plan: Plan, data: Dataset, view: LogLines):
        self.plan, self.data, self.view = plan, data, view
        self.store = open_artifact_store(plan.outputs.artifacts)
        self.mirror = EpochCheckpoints(self.store, plan.outputs.checkpoints)

    def checkpoint_dir(self, p: Proposal):
        """A retried or re-queued trial's is its first run's; never a folder the database names."""
        return self.plan.outputs.checkpoints / f"trial-{p.first_run}"

    def identity(self, trial: optuna.Trial, p: Proposal) -> dict:
        return {"seed": self.plan.settings.seed, "device": str(self.plan.device), "dataset": self.data.name,
                "train_images": len(self.data.train), "checkpoint_dir": str(self.checkpoint_dir(p).resolve())}

    def train(self, trial: optuna.Trial, p: Proposal, report: Report, replay: Replay,
              interruptible: Interruptible) -> Trained:
        spec, recipe, seed = ResNetSpec.from_dict(p.spec), Recipe.from_dict(p.recipe), self.plan.settings.seed
        folder = self.checkpoint_dir(p)
        # a retry on another machine resumes from the store's copy
        self.mirror.pull(folder, lambda f: len(completed_epochs(f, spec, recipe, seed)))
        held = completed_epochs(folder, spec, recipe, seed)
        replay(held)
        self.view.log(f"trial {trial.number}: {p.summary} ({p.counts.params:,} params, {p.counts.macs:,} MACs)"
                      + (f" [seeded baseline: {p.known.baseline_label}]" if p.known.baseline else "")
                      + (f" [finalist: search trial {p.known.finalist_of}, {plural(recipe.epochs, 'epoch')}]"
                         if p.known.finalist_of is not None else "")
                      + (f" [resuming trial {p.first_run} after epoch {len(held)}]" if held else ""))
        label = (f"trial {trial.number}" + (", seeded baseline" if p.known.baseline else "")
                 + (f", finalist of trial {p.known.finalist_of}" if p.known.finalist_of is not None else ""))

        def on_epoch(epoch):
            report(epoch)  # first: a trial pruned, or failed meanwhile by another worker, pushes nothing
            self.mirror.push(folder)

        try:
            result = train(spec, self.data, recipe, device=self.plan.device, seed=seed, on_epoch=on_epoch,
                           checkpoint_dir=folder, progress=self.view.progress, label=label, interruptible=interruptible)
        except Diverged as e:
            record.write_pruned(trial, f"diverged: {e}")
            raise optuna.TrialPruned(str(e)) from None
        return Trained(result.best_val_acc, result.best_epoch)

    def discard(self, p: Proposal) -> None:
        folder = self.checkpoint_dir(p)
        self.mirror.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)

    def keep(self, trial: optuna.Trial, p: Proposal, trained: Trained) -> None:
        """The best epoch's checkpoint into the artifact store (a neutral MIME type: guessed from
        ".pt" it would name a game-console format), then the epoch checkpoints go."""
        folder, store = self.checkpoint_dir(p), self.plan.outputs.artifacts
        try:
            artifact = upload_artifact(artifact_store=self.store, file_path=str(folder / "best.pt"),
                                       study_or_trial=trial, mimetype="application/octet-stream")
        except OSError as e:  # the store became unwritable mid-run: the checkpoint stays to resume from
            record.write_failed(trial, f"checkpoint not kept: artifact store {store}: {e.strerror or e}")
            raise UserError(f"trial {trial.number}: cannot write its checkpoint to artifact store {store}: "
                            f"{e.strerror or e}") from None
        record.write_kept(trial, artifact)
        self.mirror.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)
