"""The search: one call runs a study, from a notebook as from the command line.

    from search.study import SearchSettings, run_search
    study = run_search(SearchSettings(budget=5_000_000, trials=50))
    print(study.best_trial.number, study.best_value)

One trial = sample a spec (width last, so it nearly always fits), reject it by its exact counts
if it is at or over a wall of the budget, parameters or MACs (recorded as pruned with the walls
it hit, zero training), else train it, reporting
validation accuracy each epoch to the pruner, and keep its best checkpoint as an artifact.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.trial import TrialState

from resnet_space import MODEL_1, Recipe, ResNetSpec, count, overrun, walls_hit
from resnet_space.errors import UserError
from resnet_space.table1 import table_1_rows

from . import record
from .layout import Outputs, plural
from .data import DataDescription, Dataset, UnsafeFile, find_data, load_plain
from .interrupts import CtrlC, how_stopped
from .live import Quiet
from .private import trial_id
from .plan import Plan, SearchSettings, baseline_for  # noqa: F401 - the search's API, importable from here
from .storage import WORKER_LOST, RDBStorage, StudyError, open_artifact_store, open_storage, redact, storage_outage
from .strategy import make_pruner, make_sampler
from .train import Diverged, completed_epochs, cpu_estimate_hours, train


@dataclass
class Run:
    """What the stages of one run_search call share: the storage, the data, the view, the deadline."""

    storage: optuna.storages.BaseStorage
    data: Dataset
    view: Quiet
    deadline: float | None  # time.monotonic() past which no trial starts; None: no --timeout


def run_search(settings: SearchSettings, view: Quiet | None = None) -> optuna.Study:
    """Run (or resume) the study named in settings until it holds settings.trials trained trials,
    the timeout passes, or Ctrl-C (KeyboardInterrupt, raised after the trial is recorded); then its
    final stage (settings.finalists > 0): the best few distinct specs and the baseline trained
    again, longer and unpruned, in a study of their own, whose best names the winner. Bad
    settings raise a UserError subclass with a one-line message before anything is recorded."""
    view = view or Quiet()
    plan = Plan.of(settings)
    if settings.device == "auto" and plan.device.type == "cpu":
        raise UserError(cpu_refusal(plan))
    # The data before the storage: a refusal of the data (found only as it is decoded) leaves no
    # database behind, and a decode is cached, so the next run does not pay it again. The plan is
    # fitted to the data's shape before any image is decoded.
    source = find_data(settings.data, classes=plan.space.stated_classes)
    plan = plan.for_data(source.shape)
    data = source.load(val_size=settings.val_size, limit_train=settings.limit_train, seed=settings.seed,
                       status=view.status)
    storage = open_storage(settings.storage, settings.heartbeat, retry_s=settings.storage_retry, create=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial replaces Optuna's
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout

    baseline = [] if plan.baseline is None else [
        (plan.recipe_params, record.baseline_attrs(plan.baseline[1], plan.baseline[0].to_dict()))]
    study, created = create_or_load(storage, plan, data.description, enqueue=baseline, log=view.log)
    source.keep_decoded()
    if created and settings.baseline and plan.baseline is None:
        view.log(f"no baseline: not even Model 1's shape at its narrowest (channels 1-2-4-8) fits under "
                 f"{plan.budget}")
    run = Run(storage, data, view, deadline)
    study = optimize(run, study, plan)
    if settings.finalists and record.trained_count(study) >= settings.trials:  # else timed out: it waits for a run
        run_final_stage(run, study, plan)
    refresh_report(study, plan.outputs, view.log)
    return study


def run_final_stage(run: Run, study: optuna.Study, plan: Plan) -> None:
    """Train the search's finalists again, longer and unpruned, in the final stage's own study."""
    settings = plan.settings
    candidates = finalists(study, settings.finalists)
    final_plan = plan.final_stage(len(candidates))
    final, created = create_or_load(run.storage, final_plan, run.data.description,
                                    enqueue=[({}, record.finalist_attrs(r)) for r in candidates], log=run.view.log)
    if not created:  # resumed: the finalists are those queued when the stage began
        final_plan = plan.final_stage(len(record.finalist_trials(final)))
    record.write_study(study, final_study=final.study_name)
    run.view.log(f"final stage: {final_plan.settings.trials} finalists of study {settings.study!r} trained again for "
                 f"{plural(final_plan.epochs, 'epoch')}, unpruned, in study {final.study_name!r}")
    optimize(run, final, final_plan)


def optimize(run: Run, study: optuna.Study, plan: Plan) -> optuna.Study:
    """Train the stage's trials until it holds plan.settings.trials, riding out storage outages.
    Returns the study (a new object after a reconnection)."""
    s, data, view, deadline = plan.settings, run.data, run.view, run.deadline
    refuse_unsafe_checkpoints(plan.outputs.checkpoints)
    objective = Objective(study, plan, data, view)
    done = record.trained_count(study)
    requeued = requeue_interrupted(study) if done < s.trials else []
    view.log(f"study {s.study!r} on {redact(s.storage)}: {done} of {s.trials} trials finished"
             + (f", resuming interrupted trial(s) {', '.join(map(str, requeued))}" if requeued else "")
             + f"; budget {plan.budget}; {data.name} ({data.description.shape}): {len(data.train):,} train / "
             f"{len(data.val):,} validation images; device {plan.device}")
    while record.trained_count(study) < s.trials:
        try:
            wait_for_running(study, s.trials, s.heartbeat, deadline)
            with view.watch(study, s.trials), objective.ctrl_c:
                study.optimize(objective, callbacks=[objective.enough, view.on_trial], gc_after_trial=True,
                               timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
                               catch=(torch.cuda.OutOfMemoryError, SurplusTrial))
            if objective.gave_up or (deadline is not None and time.monotonic() >= deadline):
                break
            # Else stopped as surplus with the study short: what the running trials leave is trained next.
        except KeyboardInterrupt as e:
            view.log(f"stopped by {how_stopped(e)[0]}: the running trial is recorded as failed and its checkpoint "
                     "kept; run the same command again to resume it and continue the study")
            raise
        except Exception as e:
            outage = storage_outage(e)
            if outage is None:
                raise
            # The server went away: reconnect with backoff for a bounded time. What was recorded
            # stays in the database; the trial in flight is failed by its heartbeat and retried.
            view.log(f"storage unreachable ({str(outage).splitlines()[0][:120]}); "
                     f"retrying for up to {s.storage_retry:g} s")
            storage = open_storage(s.storage, s.heartbeat, retry_s=s.storage_retry)
            study = optuna.load_study(study_name=s.study, storage=storage, sampler=study.sampler, pruner=study.pruner)
            objective.study = study
            if objective.in_flight is not None:
                requeue_cut_off(study, storage, objective.in_flight)
    if objective.gave_up:
        refresh_report(study, plan.outputs, view.log)
        raise UserError(objective.gave_up)
    return study


def refuse_unsafe_checkpoints(folder: Path) -> None:
    """Refuse, before the stage starts, a checkpoint under `folder` that names code to run (a
    shared folder anyone can write to); each trial checks its own again as it resumes."""
    for path in sorted(folder.glob("trial-*/last.pt")):
        try:
            load_plain(path, "checkpoint")
        except UnsafeFile:
            raise
        except Exception:  # noqa: BLE001 - torn or foreign: that trial starts over; only code is refused
            continue


def wait_for_running(study: optuna.Study, total: int, heartbeat_s: int, deadline: float | None) -> None:
    """Wait while the trials running fill what the study lacks: for them to finish, or, a dead
    worker's, for their heartbeats to go stale, when Optuna fails them and queues their retries
    (a rerun at once after a kill finds its trial still RUNNING). No worker leaves a study short."""
    while deadline is None or time.monotonic() < deadline:
        trials = record.records(study, states=(*record.FINISHED, TrialState.RUNNING))
        trained = sum(r.counts_as_trained for r in trials)
        if trained >= total or trained + sum(r.state == "RUNNING" for r in trials) < total:
            return
        time.sleep(min(heartbeat_s, 5))  # a finished trial is seen within 5 s, a stale one within a beat
        optuna.storages.fail_stale_trials(study)


def strategy(plan: Plan) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """The stage's sampler and pruner. The final stage's trials are all queued and measured whole."""
    if plan.stage == "final":
        return optuna.samplers.RandomSampler(seed=plan.settings.seed), optuna.pruners.NopPruner()
    return make_sampler(plan.settings.seed, plan.settings.sampler), make_pruner(plan.epochs)


def finalists(study: optuna.Study, k: int) -> list[record.TrialRecord]:
    """The search's best k distinct specs by validation accuracy among its trials trained to the
    end, then the seeded baseline if it trained and is not among them."""
    picked, seen = [], set()
    for t in record.best_trials(study, len(study.get_trials(deepcopy=False))):
        r = record.TrialRecord.of(t)
        key = json.dumps(r.spec, sort_keys=True)
        if key not in seen and len(picked) < k:
            picked.append(r)
            seen.add(key)
    baseline = next((r for r in record.records(study, states=record.FINISHED)
                     if r.baseline and r.trained and not r.diverged), None)
    if baseline is not None and json.dumps(baseline.spec, sort_keys=True) not in seen:
        picked.append(baseline)
    return picked


def create_or_load(storage, plan: Plan, data: DataDescription, enqueue: list[tuple[dict, dict]],
                   log=None) -> tuple[optuna.Study, bool]:
    """Create the stage's study, or load it to resume. Only the process that creates it enqueues
    `enqueue` ((params, user attrs) per trial: the baseline, or the finalists), and creation is
    atomic in the database, so several workers enqueue them once."""
    given = json.loads(json.dumps(plan.study_settings(data.identity())))  # as the storage gives it back
    sampler, pruner = strategy(plan)
    try:
        study = optuna.create_study(study_name=plan.study, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize", load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.study, storage=storage, sampler=sampler, pruner=pruner)
        refuse_mixed_settings(study, given, log)
        return study, False
    s = plan.settings
    try:
        record.write_study(
            study, budget=plan.budget.params, macs_budget=plan.budget.macs, space_file=str(plan.space.path),
            space=plan.space.space,
            recipe_space=given["recipe"], artifact_dir=str(plan.outputs.artifacts.resolve()), split_seed=s.seed,
            table_1=table_1_rows(), data=data.to_dict(), val_size=s.val_size,
            limit_train=s.limit_train, stage=plan.stage,
        )
        for params, attrs in enqueue:
            study.enqueue_trial(params, user_attrs=attrs)
        record.write_study(study, settings=given)  # last: other workers wait for it before their first trial
    except BaseException:
        # Stopped half-made (Ctrl-C, an error): unmade, so that the next run creates it whole
        # instead of waiting for settings that never come. A storage gone cannot be cleaned.
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=plan.study, storage=storage)
        raise
    return study, True


def refuse_mixed_settings(study: optuna.Study, given: dict, log=None, wait_s: float = 60) -> None:
    """Refuse to add trials measured differently from those the study holds. A study just created
    by another worker gets its settings written last (after its baseline is queued), so a worker
    that finds none waits for them, however many trials it already sees, saying so."""
    deadline = time.monotonic() + wait_s
    recorded = record.StudyRecord.of(study)
    if recorded.settings is None and log is not None:
        log(f"study {study.study_name!r} records no settings yet: waiting up to {wait_s:g} s for the worker "
            "creating it to write them")
    while recorded.settings is None and time.monotonic() < deadline:
        time.sleep(0.5)
        recorded = record.StudyRecord.of(study)
    if recorded.settings is None:
        raise StudyError(f"study {study.study_name!r} records no settings (its creator died while creating it, "
                         "or it was not made by resnet-search); start a new --study name")
    for key, flag in record.SETTING_FLAGS.items():
        was, now = recorded.settings.get(key), given[key]
        if key == "dataset" and isinstance(was, str):  # the same data is the same fingerprint (after #),
            was, now = was.rpartition("#")[2], now.rpartition("#")[2]  # by whichever folder name
        if was != now:
            was, now = _difference(recorded.settings.get(key), given[key])
            raise StudyError(f"study {study.study_name!r} was run with {flag} {was}, not {now}: its trials would "
                             "not compare; resume it with the same setting, or pass a new --study NAME")


def _difference(was, now) -> tuple[str, str]:
    """The two values as shown side by side: of two tables, only the keys that differ; of two long
    texts, the stretch around where they part, so the difference is always in view."""
    if isinstance(was, dict) and isinstance(now, dict):
        keys = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
        return tuple("{" + ", ".join(f"{k} = {_shown(side.get(k))}" for k in keys) + "}" for side in (was, now))
    was, now = _shown(was), _shown(now)
    if len(was) <= 80 and len(now) <= 80:
        return was, now
    part = next((i for i, (a, b) in enumerate(zip(was, now)) if a != b), min(len(was), len(now)))
    start = max(0, part - 30)
    return tuple(("..." if start else "") + text[start:start + 70] + ("..." if len(text) > start + 70 else "")
                 for text in (was, now))


def _shown(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "none" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


GIVE_UP_AFTER = 100  # proposals in a row rejected (over the budget, or trained already)
TWIN_POLL_S = 2.0  # how often a copy waiting for a twin on its spec looks again
CUT_OFF = "cut off from the storage mid-trial; re-queued to resume from its checkpoint"


class SurplusTrial(Exception):
    """Several workers asked for trials at once and this one is past the study's total."""


class Objective:
    def __init__(self, study: optuna.Study, plan: Plan, data: Dataset, view: Quiet):
        self.study, self.plan, self.data, self.view = study, plan, data, view
        self.store = open_artifact_store(plan.outputs.artifacts)
        self.rejected_in_a_row, self.gave_up = 0, None
        self.ctrl_c = CtrlC()
        self.in_flight = None  # the id of the trial last begun: after an outage, the one it cut short

    def __call__(self, trial: optuna.Trial) -> float:
        self.in_flight = trial_id(trial)
        try:
            with self.ctrl_c.arm():
                return self._run(trial)
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

    def _run(self, trial: optuna.Trial) -> float:
        plan, s = self.plan, self.plan.settings
        self._refuse_surplus(trial)
        known = record.TrialRecord.of(trial)
        if known.finalist_of is not None:  # trained again as it was, only longer
            spec, recipe = ResNetSpec.from_dict(known.spec), Recipe.from_dict({**known.recipe, "epochs": plan.epochs})
        else:
            spec = (ResNetSpec.from_dict(known.spec) if known.baseline else
                    plan.space.sample_spec(trial, plan.budget, on_repair=lambda drawn: record.write_repaired(trial, drawn)))
            recipe = plan.space.sample_recipe(trial, plan.epochs)
        counts = count(spec)
        # A retried (worker died) or re-queued (Ctrl-C) trial inherits its first run's checkpoint dir.
        first_run = known.first_trial if known.first_trial is not None else trial.number
        checkpoint_dir = plan.outputs.checkpoints / f"trial-{first_run}"  # never a folder the database names
        record.write_identity(trial, spec=spec.to_dict(), summary=spec.summary(), params=counts.params,
                              macs=counts.macs, recipe=recipe.to_dict(), seed=s.seed, device=str(plan.device),
                              dataset=self.data.name, first_trial=first_run,
                              checkpoint_dir=str(checkpoint_dir.resolve()))
        hit = walls_hit(counts, plan.budget)
        if hit:
            reason = f"over budget: {overrun(counts, plan.budget)}"
            record.write_pruned(trial, reason, walls_hit=hit)
            raise optuna.TrialPruned(reason)
        twin = self._twin_to_step_aside_for(trial, spec, first_run)
        if twin is not None:
            record.write_pruned(trial, f"duplicate: trial {twin} is training the same spec", duplicate_of=twin)
            raise optuna.TrialPruned(f"same spec as running trial {twin}")
        twin = self._trained_twin(trial, spec, recipe)
        if twin is not None:
            # TPE proposes trained specs again in a categorical space; training one again buys
            # only seed noise (benchmarks/search_tabular.py, "shipped training twins again").
            record.write_pruned(trial, f"duplicate: trial {twin} trained the same spec and recipe", duplicate_of=twin)
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # a copy's checkpoint: its twin trained what it held
            raise optuna.TrialPruned(f"same spec and recipe as trained trial {twin}")
        record.write_training_started(trial)

        curve, seconds, losses = [], [], []
        resumed = completed_epochs(checkpoint_dir, spec, recipe, s.seed)
        for e in resumed:  # replay what the checkpoint holds, so the curve is whole
            curve.append(e.val_acc)
            seconds.append(e.seconds)
            losses.append(e.loss)
            trial.report(e.val_acc, e.epoch)
        if resumed:
            record.write_resumed(trial, first_run, len(resumed))

        def report(e):
            self.ctrl_c.check()  # a Ctrl-C a finaliser swallowed
            curve.append(e.val_acc)
            seconds.append(e.seconds)
            losses.append(e.loss)
            record.write_curve(trial, curve, seconds, losses)
            trial.report(e.val_acc, e.epoch)
            if e.epoch < recipe.epochs and trial.should_prune():  # after the last epoch there is nothing to save
                record.write_pruned(trial, f"pruned by the pruner after epoch {e.epoch} at {e.val_acc:.2%}")
                raise optuna.TrialPruned(f"epoch {e.epoch}: {e.val_acc:.2%}")

        self.view.log(f"trial {trial.number}: {spec.summary()} ({counts.params:,} params, {counts.macs:,} MACs)"
                      + (f" [seeded baseline: {known.baseline_label}]" if known.baseline else "")
                      + (f" [finalist: search trial {known.finalist_of}, {plural(recipe.epochs, 'epoch')}]"
                         if known.finalist_of is not None else "")
                      + (f" [resuming trial {first_run} after epoch {len(curve)}]" if resumed else ""))
        try:
            result = train(spec, self.data, recipe, device=plan.device, seed=s.seed, on_epoch=report,
                           checkpoint_dir=checkpoint_dir, progress=self.view.progress)
        except Diverged as e:
            record.write_pruned(trial, f"diverged: {e}")
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            raise optuna.TrialPruned(str(e)) from None
        except optuna.TrialPruned:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # a pruned trial never resumes
            raise
        # A neutral MIME type: guessed from ".pt", it would name a game-console format.
        try:
            artifact = upload_artifact(artifact_store=self.store, file_path=str(checkpoint_dir / "best.pt"),
                                       study_or_trial=trial, mimetype="application/octet-stream")
        except OSError as e:  # the store became unwritable mid-run: the checkpoint stays to resume from
            record.write_failed(trial, f"checkpoint not kept: artifact store {plan.outputs.artifacts}: {e.strerror or e}")
            raise UserError(f"trial {trial.number}: cannot write its checkpoint to artifact store "
                            f"{plan.outputs.artifacts}: {e.strerror or e}") from None
        record.write_result(trial, result.best_epoch, artifact)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the artifact store holds what is kept
        return result.best_val_acc

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        """With several workers, each may start a trial just as the study reaches its total.
        Trials numbered lower go first; one that finds the total already taken steps aside."""
        total = self.plan.settings.trials
        taken = record.records(trial.study, states=(*record.FINISHED, TrialState.RUNNING))
        if sum(r.number < trial.number and (r.state == "RUNNING" or r.counts_as_trained) for r in taken) >= total:
            record.write_failed(trial, f"surplus: the study already had its {total} trials")
            trial.study.stop()
            raise SurplusTrial(f"the study already has its {total} trials")

    @staticmethod
    def _trained_twin(trial: optuna.Trial, spec: ResNetSpec, recipe: Recipe) -> int | None:
        """A trial that already trained this very spec under this very recipe, if any."""
        for r in record.records(trial.study, states=record.FINISHED):
            if r.counts_as_trained and r.spec == spec.to_dict() and r.recipe == json.loads(json.dumps(recipe.to_dict())):
                return r.number
        return None

    def _twin_to_step_aside_for(self, trial: optuna.Trial, spec: ResNetSpec, first_run: int) -> int | None:
        """The running trial on this spec that this one steps aside for, if any. A fresh proposal
        steps aside for any, and so does a copy for another copy of its own trial (which resumes the
        same checkpoint). A copy of another trial owes its checkpoint a resume: it waits for the twin
        to end (then a twin that trained the same recipe excuses it); stepping aside, it was lost."""
        waited_for = None
        while (twin := self._running_twin(trial, spec, first_run)) is not None:
            if first_run == trial.number or twin.first_trial == first_run:
                return twin.number
            if twin.number != waited_for:
                self.view.log(f"trial {trial.number}: waits for trial {twin.number}, on the same spec, to end "
                              f"before resuming trial {first_run}")
                waited_for = twin.number
            time.sleep(TWIN_POLL_S)
            self.ctrl_c.check()
            optuna.storages.fail_stale_trials(trial.study)  # a twin whose worker died ends too
        return None

    @staticmethod
    def _running_twin(trial: optuna.Trial, spec: ResNetSpec, first_run: int) -> record.TrialRecord | None:
        """Another running trial on the same spec (constant liar makes one rare). Each trial
        records its spec before it looks, so of two that start together at least the later one
        sees the other. A copy passes a later copy not yet training, which gives way to it: of its
        own trial, by stepping aside (so the lowest-numbered copy resumes it, whoever started
        first); of another trial, by waiting. A training twin is never passed."""
        mine, copy = spec.to_dict(), first_run != trial.number
        for r in record.records(trial.study, states=(TrialState.RUNNING,)):
            if r.number == trial.number or r.spec != mine:
                continue
            gives_way = copy and r.number > trial.number and r.first_trial not in (None, r.number)
            if r.training_began or not gives_way:
                return r
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


def requeue_cut_off(study: optuna.Study, storage: RDBStorage, trial_id: int, settle_s: float = 10.0) -> None:
    """A trial this worker was running when the storage went away stays RUNNING until its
    heartbeat goes stale, and Optuna retries a trial only twice: with kills besides, an outage
    lost it for good. The worker fails it itself and queues it to resume from its checkpoint,
    unless it finished first or another worker's heartbeat check failed it and queued its retry.
    That check wins while this worker reconnects with backoff, and with the retries spent it
    queues nothing (a 3-minute soak lost a trial so): then this worker queues the copy. The
    storage is the study's own, not Optuna's cache of it, which would not show that reason."""
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", CUT_OFF)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                study.enqueue_trial(trial.params, user_attrs=record.requeue_attrs(trial))
            return
        except optuna.exceptions.UpdateFinishedTrialError:
            trial = storage.get_trial(trial_id)  # failed by another worker's heartbeat check meanwhile
    if trial.state != TrialState.FAIL:
        return
    deadline = time.monotonic() + settle_s
    while "fail_reason" not in trial.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker that failed it writes why just after; this worker's write comes last
        trial = storage.get_trial(trial_id)
    reason = trial.user_attrs.get("fail_reason")
    # No reason: Optuna failed it itself as the outage ended. Any other reason: its own end, or a retry queued.
    if reason is None or (reason.startswith(WORKER_LOST) and storage.retries_spent(trial)):
        study.enqueue_trial(trial.params, user_attrs=record.requeue_attrs(trial))
        storage.write_fail_reason(trial_id, f"{CUT_OFF} (a heartbeat check had failed it, its retries spent)"
                                  if reason else CUT_OFF)


def refresh_report(study: optuna.Study, outputs: Outputs, log) -> None:
    """The report and the plots the dashboard shows, redrawn after a search; a plotting
    problem is logged in one line and never fails the search that produced the results."""
    from .report import attach_to_study, write_report

    out = outputs.reports
    try:
        write_report(study, out)
        attach_to_study(study, out, outputs.artifacts)
        log(f"report: {out / 'index.html'}")
    except Exception as e:  # noqa: BLE001
        log(f"report not refreshed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")


def cpu_refusal(plan: Plan) -> str:
    images = plan.settings.limit_train or 45_000
    macs = count(MODEL_1).macs
    hours, rate = cpu_estimate_hours(macs, images, plan.epochs)
    return (f"no CUDA device here: one trial like the report's Model 1 ({macs:,} MACs/image, "
            f"{images:,} images x {plural(plan.epochs, 'epoch')}) would take about {hours:,.0f} h on this CPU "
            f"({rate / 1e9:.1f} GMAC/s measured); for a small search on this CPU run: {invoked_as()} run "
            f"--device cpu --space cpu-small --study cpu-try --epochs 2 --limit-train 2000 --val-size 1000 --trials 5"
            + (f" --data {shlex.quote(str(plan.settings.data))}" if plan.settings.data else ""))


def invoked_as() -> str:
    """The command as the user typed it (.venv/bin/resnet-search, say), so a suggestion runs as printed."""
    typed = Path(sys.argv[0])
    return shlex.quote(str(typed)) if typed.name == "resnet-search" else "resnet-search"
