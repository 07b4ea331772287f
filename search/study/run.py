"""The search: one call runs a study, from a notebook as from the command line.

    from search.study import SearchSettings, run_search
    study = run_search(SearchSettings(budget=5_000_000, trials=50))
    print(study.best_trial.number, study.best_value)

A study is created (or loaded to resume, refused if its settings differ), seeded with the
baseline, and its trials run (objective.py, with networks.py) until it holds its total, riding
out faults (faults.py); then its final stage: the best few distinct specs and the baseline
trained again, longer and unpruned, in a study of their own, whose best is the winner.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from resnet_space import MODEL_1, count
from resnet_space.errors import UserError
from resnet_space.table1 import table_1_rows

from ..engine.data import DataDescription, Dataset, find_data, training_images
from ..engine.train import cpu_estimate
from . import record
from .faults import SurplusTrial, reconnect, refuse_unsafe_checkpoints, requeue_interrupted, taken_over, wait_for_running
from .interrupts import how_stopped, interruption
from .layout import Outputs, invoked_as, plural
from .networks import objective as search_objective
from .objective import finalists
from .plan import Plan, SearchSettings, baseline_for
from .storage import StudyError, open_storage, redact, storage_outage
from .strategy import make_pruner, make_sampler
from .view import LogLines

OnStop = Callable[[optuna.Study, Outputs], None]


@dataclass
class Run:
    """What the stages of one run_search call share: the storage, the data, the view, the deadline."""

    storage: optuna.storages.BaseStorage
    data: Dataset
    view: LogLines
    deadline: float | None  # time.monotonic() past which no trial starts; None: no --timeout
    on_stop: OnStop | None  # called with the study as the search stops, done or given up


def run_search(settings: SearchSettings, view: LogLines | None = None, on_stop: OnStop | None = None) -> optuna.Study:
    """Run (or resume) the study named in settings until it holds settings.trials trained trials,
    the timeout passes, or Ctrl-C (KeyboardInterrupt, raised after the trial is recorded); then its
    final stage (settings.finalists > 0): the best few distinct specs and the baseline trained
    again, longer and unpruned, in a study of their own, whose best names the winner. Bad
    settings raise a UserError subclass with a one-line message before anything is recorded.
    on_stop(study, its folders) runs as the search stops, done or given up (the command line
    refreshes the report there)."""
    view = view or LogLines()
    plan = Plan.of(settings)
    if settings.device == "auto" and plan.device.type == "cpu":
        raise UserError(cpu_refusal(plan))
    # The data before the storage: a refusal of the data (found only as it is decoded) leaves no
    # database behind, and a decode is cached, so the next run does not pay it again. The plan is
    # fitted to the data's shape before any image is decoded.
    source = find_data(settings.data, classes=plan.study_file.stated_classes)
    plan = plan.for_data(source.shape)
    data = source.load(val_size=settings.val_size, limit_train=settings.limit_train, seed=settings.seed,
                       status=view.status)
    if settings.trial_images is not None:
        data.fewer_train(settings.trial_images)  # refused now, before the storage is opened
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
    run = Run(storage, data, view, deadline, on_stop)
    study = optimize(run, study, plan)
    if settings.finalists and record.trained_count(study) >= settings.trials:  # else timed out: it waits for a run
        run_final_stage(run, study, plan)
    if on_stop is not None:
        on_stop(study, plan.outputs)
    return study


def run_final_stage(run: Run, study: optuna.Study, plan: Plan) -> None:
    """Train the search's finalists again, longer and unpruned, in the final stage's own study."""
    settings = plan.settings
    candidates = finalists(record.records(study), settings.finalists)
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
    if s.trial_images is not None:  # the search's cheap fidelity; the final stage trains on all
        data = data.fewer_train(s.trial_images)
    refuse_unsafe_checkpoints(plan.outputs.checkpoints)
    objective = search_objective(plan, data, view)
    done = record.trained_count(study)
    requeued = requeue_interrupted(study) if done < s.trials else []
    view.log(f"study {s.study!r} on {redact(s.storage)}: {done} of {s.trials} trials finished"
             + (f", resuming interrupted trial(s) {', '.join(map(str, requeued))}" if requeued else "")
             + f"; budget {plan.budget}; {data.name} ({data.description.shape}): {len(data.train):,} train"
             + (f" (of {len(run.data.train):,}: --trial-images)" if s.trial_images is not None else "")
             + f" / {len(data.val):,} validation images; device {plan.device}")
    try:
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
            except Exception as e:
                if (outage := storage_outage(e)) is not None:
                    study, run.storage = reconnect(study, s, outage, objective.in_flight, view.log)
                elif (lost := taken_over(study, run.storage, objective.in_flight, e)) is not None:
                    view.log(lost)
                else:
                    raise
                objective.in_flight = None  # dealt with: it must not be taken for the next error's trial
                if objective.ctrl_c.pending:  # a Ctrl-C that came meanwhile stops the run, as asked
                    raise interruption(objective.ctrl_c.signum) from e
    except KeyboardInterrupt as e:
        view.log(f"stopped by {how_stopped(e)[0]}: the running trial is recorded as failed and its checkpoint "
                 "kept; run the same command again to resume it and continue the study")
        raise
    if objective.gave_up:
        if run.on_stop is not None:
            run.on_stop(study, plan.outputs)
        raise UserError(objective.gave_up)
    return study


def strategy(plan: Plan) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """The stage's sampler and pruner. The final stage's trials are all queued and measured whole."""
    if plan.stage == "final":
        return optuna.samplers.RandomSampler(seed=plan.settings.seed), optuna.pruners.NopPruner()
    return make_sampler(plan.settings.seed, plan.settings.sampler), make_pruner(plan.epochs)


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
        study.set_metric_names(["validation accuracy"])  # what optuna-dashboard names the objective
        record.write_study(
            study, budget=plan.budget.params, macs_budget=plan.budget.macs, study_file=str(plan.study_file.path),
            space=plan.study_file.space,
            recipe_space=given["recipe"], artifact_dir=plan.outputs.artifacts_at, split_seed=s.seed,
            table_1=table_1_rows(), data=data.to_dict(), val_size=s.val_size,
            limit_train=s.limit_train, trial_images=s.trial_images, stage=plan.stage,
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


def cpu_refusal(plan: Plan) -> str:
    """What a search would cost here, from its first trial: the seeded baseline (Model 1 where none
    is seeded), timed on this CPU; and a search that fits a CPU, ready to paste."""
    s = plan.settings
    baseline = baseline_for(plan.budget) if s.baseline else None
    spec, label = baseline or (MODEL_1, "Model 1")
    images = s.trial_images or training_images(s.data, s.val_size, s.limit_train)
    took = cpu_estimate(spec, plan.recipe, train_images=images, epochs=plan.epochs,
                        eval_images=s.val_size * plan.epochs)
    return (f"no CUDA device here: the search's first trial, {label} ({count(spec).macs:,} MACs/image, "
            f"{images:,} images x {plural(plan.epochs, 'epoch')}, {s.val_size:,} validation images each), would take "
            f"{took}; for a small search on this CPU run: {invoked_as()} run "
            "--device cpu --space cpu-small --study cpu-try --epochs 2 --limit-train 2000 --val-size 1000 --trials 5 "
            "--no-baseline"
            + (f" --data {shlex.quote(str(plan.settings.data))}" if plan.settings.data else ""))
