"""The search: one call runs a study, from a notebook as from the command line.

    from search.study import SearchSettings, run_search
    study = run_search(SearchSettings(budget=5_000_000, trials=50))
    print(study.best_trial.number, study.best_value)

One trial = sample a spec (width last, so it nearly always fits), reject it by its exact count
if it does not fit under the budget (recorded as pruned, zero training), else train it, reporting
validation accuracy each epoch to the pruner, and keep its best checkpoint as an artifact.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from resnet_space import MODEL_1, ResNetSpec, baseline_spec, count, fits
from resnet_space.errors import UserError
from resnet_space.space import StudyFile
from resnet_space.table1 import table_1_rows

from . import record
from .data import Cifar10, load_cifar10
from .layout import DEFAULT_ARTIFACTS, DEFAULT_SPACE, DEFAULT_STORAGE, DEFAULT_STUDY, HEARTBEAT_S, Outputs, resolve_space
from .storage import StudyError, open_storage, redact, storage_outage
from .strategy import make_pruner, make_sampler
from .train import Diverged, completed_epochs, cpu_estimate_hours, resolve_device, train


@dataclass
class SearchSettings:
    """Everything a search is run with. The CLI fills it from its flags; defaults are the CLI's."""

    budget: int | None = None  # parameters; None takes the study file's
    space: str | Path = DEFAULT_SPACE  # a study file, or the name of a shipped one
    study: str = DEFAULT_STUDY
    storage: str = DEFAULT_STORAGE
    trials: int = 100  # trained trials in the study in all: running again resumes up to this
    timeout: float | None = None  # seconds after which no new trial starts
    epochs: int | None = None  # overrides the recipe's
    device: str = "auto"  # auto refuses to search on a CPU; name "cpu" to mean it
    data: str | Path | None = None
    limit_train: int | None = None
    val_size: int = 5000
    seed: int = 0
    sampler: str = "tpe"  # or "random", the control a search must beat (search/strategy.py)
    artifacts: str | Path = DEFAULT_ARTIFACTS
    baseline: bool = True
    heartbeat: int = HEARTBEAT_S
    storage_retry: float = 60


class Quiet:
    """How a search shows itself: log lines on stderr. The CLI's live view replaces it."""

    progress = False  # or a rich Progress for the trainer's epoch bar

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def watch(self, study: optuna.Study):
        """A context entered around each stretch of optimisation."""
        return contextlib.nullcontext()

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        r = record.TrialRecord.of(trial)
        value = f"{r.value:.2%}" if r.value is not None else "-"
        self.log(f"trial {r.number} {r.state.lower()}: {value} {r.prune_reason}".rstrip())


def run_search(settings: SearchSettings, view: Quiet | None = None) -> optuna.Study:
    """Run (or resume) the study named in settings until it holds settings.trials trained trials,
    the timeout passes, or Ctrl-C (KeyboardInterrupt, raised after the trial is recorded). Bad
    settings raise a UserError subclass with a one-line message before anything is recorded."""
    view = view or Quiet()
    space = StudyFile.load(resolve_space(str(settings.space)))
    budget = settings.budget or space.budget
    device = resolve_device(settings.device)
    if settings.device == "auto" and device.type == "cpu":
        raise UserError(cpu_refusal(space, settings))
    storage = open_storage(settings.storage, settings.heartbeat, retry_s=settings.storage_retry)
    data = load_cifar10(settings.data, val_size=settings.val_size, limit_train=settings.limit_train,
                        seed=settings.seed, classes=space.space["classes"])

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial replaces Optuna's
    outputs = Outputs(Path(settings.artifacts), settings.study)
    max_epochs = space.center_recipe(settings.epochs)[0].epochs
    sampler, pruner = make_sampler(settings.seed, settings.sampler), make_pruner(max_epochs)
    study, created = create_or_load(storage, settings, space, budget, data, outputs, sampler, pruner)
    if created and settings.baseline and baseline_for(budget, space.space["classes"]) is None:
        view.log(f"no baseline: not even Model 1's shape at its narrowest (channels 1-2-4-8) fits under "
                 f"{budget:,} params")

    objective = Objective(study, space, budget, settings, data, device, outputs, view)
    done = trained_trials(study)
    requeued = requeue_interrupted(study) if done < settings.trials else []
    view.log(f"study {settings.study!r} on {redact(settings.storage)}: {done} of {settings.trials} trials finished"
             + (f", resuming interrupted trial(s) {', '.join(map(str, requeued))}" if requeued else "")
             + f"; budget {budget:,} params; {data.name}: {len(data.train):,} train / {len(data.val):,} "
             f"validation images; device {device}")
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    while trained_trials(study) < settings.trials:
        try:
            with view.watch(study):
                study.optimize(objective, callbacks=[objective.enough, view.on_trial], gc_after_trial=True,
                               timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
                               catch=(torch.cuda.OutOfMemoryError, SurplusTrial))
            break
        except KeyboardInterrupt:
            view.log("interrupted: the running trial is recorded as failed and its checkpoint kept; "
                     "run the same command again to resume it and continue the study")
            raise
        except Exception as e:
            outage = storage_outage(e)
            if outage is None:
                raise
            # The server went away: reconnect with backoff for a bounded time. What was recorded
            # stays in the database; the trial in flight is failed by its heartbeat and retried.
            view.log(f"storage unreachable ({str(outage).splitlines()[0][:120]}); "
                     f"retrying for up to {settings.storage_retry:g} s")
            storage = open_storage(settings.storage, settings.heartbeat, retry_s=settings.storage_retry)
            study = optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner)
            objective.study = study
    refresh_report(study, outputs.reports, view.log)
    if objective.gave_up:
        raise UserError(objective.gave_up)
    return study


def baseline_for(budget: int, classes: int = 10) -> tuple[ResNetSpec, str] | None:
    """(spec, label) of the study's seeded baseline: the report's Model 1 where it fits, else its
    shape scaled to the budget; None where not even the narrowest fits."""
    spec = baseline_spec(budget, classes=classes)
    if spec is None:
        return None
    head = f" with a {classes}-class head" if classes != MODEL_1.classes else ""
    if spec.channels == MODEL_1.channels:
        return spec, "Model 1" + head
    return spec, f"Model 1 scaled to the budget{head}, {count(spec).params:,} params"


def create_or_load(storage, settings: SearchSettings, space: StudyFile, budget: int, data: Cifar10,
                   outputs: Outputs, sampler, pruner) -> tuple[optuna.Study, bool]:
    """Create the study, or load it to resume. Only the process that creates it enqueues the
    baseline, and creation is atomic in the database, so several workers enqueue it once."""
    recipe_table = {k: list(v) if isinstance(v, tuple) else v for k, v in space.recipe.items()}
    given = {"budget": budget, "space": space.space, "recipe": recipe_table,
             "epochs": space.center_recipe(settings.epochs)[0].epochs, "dataset": data.identity(),
             "limit_train": settings.limit_train, "val_size": settings.val_size, "seed": settings.seed,
             "sampler": settings.sampler}
    given = json.loads(json.dumps(given))  # as the storage gives it back: lists, not tuples
    try:
        study = optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize", load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner)
        refuse_mixed_settings(study, given)
        return study, False
    record.write_study(
        study, budget=budget, space_file=str(space.path), space=space.space,
        recipe_space=recipe_table,
        artifact_dir=str(outputs.artifacts.resolve()), split_seed=settings.seed, table_1=table_1_rows(),
        data_root=data.root, dataset=data.name, val_size=settings.val_size, limit_train=settings.limit_train,
    )
    baseline = baseline_for(budget, space.space["classes"]) if settings.baseline else None
    if baseline is not None:
        spec, label = baseline
        study.enqueue_trial(space.center_recipe()[1], user_attrs=record.baseline_attrs(label, spec.to_dict()))

    record.write_study(study, settings=given)  # last: other workers wait for it before their first trial
    return study, True


def refuse_mixed_settings(study: optuna.Study, given: dict, wait_s: float = 60) -> None:
    """Refuse to add trials measured differently from those the study holds. A study just created
    by another worker gets its settings written last (after its baseline is queued), so a worker
    that finds none waits for them, however many trials it already sees."""
    deadline = time.monotonic() + wait_s
    recorded = record.StudyRecord.of(study)
    while recorded.settings is None and time.monotonic() < deadline:
        time.sleep(0.5)
        recorded = record.StudyRecord.of(study)
    if recorded.settings is None:
        raise StudyError(f"study {study.study_name!r} records no settings (made by an older version, or its "
                         "creator died while creating it); start a new --study name")
    for key, flag in record.SETTING_FLAGS.items():
        if recorded.settings.get(key) != given[key]:
            was, now = (_shown(v) for v in (recorded.settings.get(key), given[key]))
            raise StudyError(f"study {study.study_name!r} was run with {flag} {was}, not {now}: its trials would "
                             "not compare; resume it with the same setting, or pass a new --study NAME")


def _shown(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = "none" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def trained_trials(study: optuna.Study) -> int:
    return sum(r.counts_as_trained for r in record.records(study, states=record.FINISHED))


GIVE_UP_AFTER = 100  # proposals in a row over the budget; the shipped space rejects under 5%


class SurplusTrial(Exception):
    """Several workers asked for trials at once and this one is past the study's total."""


class Objective:
    def __init__(self, study: optuna.Study, space: StudyFile, budget: int, settings: SearchSettings,
                 data: Cifar10, device: torch.device, outputs: Outputs, view: Quiet):
        self.study, self.space, self.budget, self.settings = study, space, budget, settings
        self.data, self.device, self.outputs, self.view = data, device, outputs, view
        outputs.artifacts.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(outputs.artifacts))
        self.rejected_in_a_row, self.gave_up = 0, None

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            record.write_failed(trial, "interrupted (Ctrl-C); its checkpoint is kept to resume from")
            raise
        except torch.cuda.OutOfMemoryError as e:
            record.write_failed(trial, f"CUDA out of memory: {str(e).splitlines()[0][:200]}")
            raise
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next trial starts with the memory this one held

    def enough(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop once the study holds its trained trials; rejected proposals take no place, but a
        long run of them means nothing in the space fits, and the search gives up saying so."""
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if record.TrialRecord.of(trial).over_budget else 0
        if self.rejected_in_a_row >= GIVE_UP_AFTER:
            self.gave_up = (f"the last {GIVE_UP_AFTER} proposals were all at or over the budget of {self.budget:,} "
                            "params: nothing in this space fits; raise --budget or narrow the space")
            study.stop()
        if trained_trials(study) >= self.settings.trials:
            study.stop()

    def _run(self, trial: optuna.Trial) -> float:
        s = self.settings
        self._refuse_surplus(trial)
        known = record.TrialRecord.of(trial)
        spec = (ResNetSpec.from_dict(known.spec) if known.baseline else
                self.space.sample_spec(trial, self.budget, on_repair=lambda drawn: record.write_repaired(trial, drawn)))
        recipe = self.space.sample_recipe(trial, s.epochs)
        counts = count(spec)
        # A retried (worker died) or re-queued (Ctrl-C) trial inherits its first run's checkpoint dir.
        first_run = known.first_trial if known.first_trial is not None else trial.number
        checkpoint_dir = Path(known.checkpoint_dir or self.outputs.checkpoints / f"trial-{trial.number}")
        record.write_identity(trial, spec=spec.to_dict(), summary=spec.summary(), params=counts.params,
                              macs=counts.macs, recipe=recipe.to_dict(), seed=s.seed, device=str(self.device),
                              dataset=self.data.name, first_trial=first_run,
                              checkpoint_dir=str(checkpoint_dir.resolve()))
        if not fits(spec, self.budget):
            reason = f"over budget: {counts.params:,} params >= {self.budget:,}"
            record.write_pruned(trial, reason, over_budget=True)
            raise optuna.TrialPruned(reason)
        twin = self._running_twin(trial, spec)
        if twin is not None:
            record.write_pruned(trial, f"duplicate: trial {twin} is training the same spec", duplicate=True)
            raise optuna.TrialPruned(f"same spec as running trial {twin}")

        curve, seconds = [], []
        resumed = completed_epochs(checkpoint_dir, spec, recipe, s.seed)
        for e in resumed:  # replay what the checkpoint holds, so the curve is whole
            curve.append(e.val_acc)
            seconds.append(e.seconds)
            trial.report(e.val_acc, e.epoch)
        if resumed:
            record.write_resumed(trial, first_run, len(resumed))

        def report(e):
            curve.append(e.val_acc)
            seconds.append(e.seconds)
            record.write_curve(trial, curve, seconds, e.loss)
            trial.report(e.val_acc, e.epoch)
            if e.epoch < recipe.epochs and trial.should_prune():  # after the last epoch there is nothing to save
                record.write_pruned(trial, f"pruned by the pruner after epoch {e.epoch} at {e.val_acc:.2%}")
                raise optuna.TrialPruned(f"epoch {e.epoch}: {e.val_acc:.2%}")

        self.view.log(f"trial {trial.number}: {spec.summary()} ({counts.params:,} params)"
                      + (f" [seeded baseline: {known.baseline_label}]" if known.baseline else "")
                      + (f" [resuming trial {first_run} after epoch {len(curve)}]" if resumed else ""))
        try:
            result = train(spec, self.data, recipe, device=self.device, seed=s.seed, on_epoch=report,
                           checkpoint_dir=checkpoint_dir, progress=self.view.progress)
        except Diverged as e:
            record.write_pruned(trial, f"diverged: {e}")
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            raise optuna.TrialPruned(str(e)) from None
        except optuna.TrialPruned:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # a pruned trial never resumes
            raise
        # A neutral MIME type: guessed from ".pt", it would name a game-console format.
        artifact = upload_artifact(artifact_store=self.store, file_path=str(checkpoint_dir / "best.pt"),
                                   study_or_trial=trial, mimetype="application/octet-stream")
        record.write_result(trial, result.best_epoch, artifact)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the artifact store holds what is kept
        return result.best_val_acc

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        """With several workers, each may start a trial just as the study reaches its total.
        Trials numbered lower go first; one that finds the total already taken steps aside."""
        taken = record.records(trial.study, states=(*record.FINISHED, TrialState.RUNNING))
        if sum(r.number < trial.number and (r.state == "RUNNING" or r.counts_as_trained)
               for r in taken) >= self.settings.trials:
            record.write_failed(trial, f"surplus: the study already had its {self.settings.trials} trials")
            trial.study.stop()
            raise SurplusTrial(f"the study already has its {self.settings.trials} trials")

    @staticmethod
    def _running_twin(trial: optuna.Trial, spec: ResNetSpec) -> int | None:
        """Another running trial on the same spec, if any (constant liar makes it rare). Each
        trial records its spec before it looks, so of two that start together at least the
        later one sees the other; both may step aside, neither trains the spec twice."""
        for r in record.records(trial.study, states=(TrialState.RUNNING,)):
            if r.number != trial.number and r.spec == spec.to_dict():
                return r.number
        return None


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Trials stopped by Ctrl-C go back in the queue once, to resume from their checkpoints."""
    done = set(record.StudyRecord.of(study).requeued)
    again = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if record.TrialRecord.of(t).interrupted and t.number not in done]
    for t in again:
        study.enqueue_trial(t.params, user_attrs=record.requeue_attrs(t))
        done.add(t.number)
    if again:
        record.write_study(study, requeued=sorted(done))
    return [t.number for t in again]


def refresh_report(study: optuna.Study, out: Path, log) -> None:
    """The report and the plots the dashboard shows, redrawn after a search; a plotting
    problem is logged in one line and never fails the search that produced the results."""
    from .report import attach_to_study, write_report

    try:
        write_report(study, out)
        attach_to_study(study, out)
        log(f"report: {out / 'index.html'}")
    except Exception as e:  # noqa: BLE001
        log(f"report not refreshed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")


def cpu_refusal(space: StudyFile, settings: SearchSettings) -> str:
    epochs = settings.epochs or space.center_recipe()[0].epochs
    images = settings.limit_train or 45_000
    macs = count(MODEL_1).macs
    hours, rate = cpu_estimate_hours(macs, images, epochs)
    return (f"no CUDA device here: one trial like the report's Model 1 ({macs:,} MACs/image, "
            f"{images:,} images x {epochs} epochs) would take about {hours:,.0f} h on this CPU "
            f"({rate / 1e9:.1f} GMAC/s measured); for a small search on this CPU run: resnet-search run "
            f"--device cpu --space cpu-small --study cpu-try --epochs 2 --limit-train 2000 --val-size 1000 --trials 5")
