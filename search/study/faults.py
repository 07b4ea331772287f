"""How a search rides out faults with several workers on one study: workers killed (their trials
retried from checkpoints), Ctrl-C or SIGTERM (the trial re-queued once), the storage going away
(the trial in flight re-queued), trials begun past the study's total (surplus), two trials on
one spec at once (twins), and checkpoints in a shared folder that name code to run. The normal
path of a trial is objective.py; this module is what it calls when others are about."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..engine.data import UnsafeFile, load_plain
from . import record
from .interrupts import CtrlC
from .storage import WORKER_LOST, RDBStorage, open_storage, retries

TWIN_POLL_S = 2.0  # how often a copy waiting for a twin on its spec looks again
CUT_OFF = "cut off from the storage mid-trial; re-queued to resume from its checkpoint"
RESULT_REFUSED = "Cannot tell a FAIL trial."  # Optuna's refusal of a result for a trial failed meanwhile


class SurplusTrial(Exception):
    """Several workers asked for trials at once and this one is past the study's total."""


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


def refuse_surplus(trial: optuna.Trial, total: int) -> None:
    """With several workers, each may start a trial just as the study reaches its total.
    Trials numbered lower go first; one that finds the total already taken steps aside."""
    taken = record.records(trial.study, states=(*record.FINISHED, TrialState.RUNNING))
    if sum(r.number < trial.number and (r.state == "RUNNING" or r.counts_as_trained) for r in taken) >= total:
        record.write_failed(trial, f"surplus: the study already had its {total} trials")
        trial.study.stop()
        raise SurplusTrial(f"the study already has its {total} trials")


def twin_to_step_aside_for(trial: optuna.Trial, spec: dict, first_run: int, ctrl_c: CtrlC, log) -> int | None:
    """The running trial on this spec that this one steps aside for, if any. A fresh proposal
    steps aside for any, and so does a copy for another copy of its own trial (which resumes the
    same checkpoint). A copy of another trial owes its checkpoint a resume: it waits for the twin
    to end (then a twin that trained the same recipe excuses it); stepping aside, it was lost."""
    waited_for = None
    while (twin := _running_twin(trial, spec, first_run)) is not None:
        if first_run == trial.number or twin.first_trial == first_run:
            return twin.number
        if twin.number != waited_for:
            log(f"trial {trial.number}: waits for trial {twin.number}, on the same spec, to end "
                f"before resuming trial {first_run}")
            waited_for = twin.number
        time.sleep(TWIN_POLL_S)
        ctrl_c.check()
        optuna.storages.fail_stale_trials(trial.study)  # a twin whose worker died ends too
    return None


def _running_twin(trial: optuna.Trial, spec: dict, first_run: int) -> record.TrialRecord | None:
    """Another running trial on the same spec (constant liar makes one rare). Each trial
    records its spec before it looks, so of two that start together at least the later one
    sees the other. A copy passes a later copy not yet training, which gives way to it: of its
    own trial, by stepping aside (so the lowest-numbered copy resumes it, whoever started
    first); of another trial, by waiting. A training twin is never passed."""
    mine, copy = spec, first_run != trial.number
    for r in record.records(trial.study, states=(TrialState.RUNNING,)):
        if r.number == trial.number or r.spec != mine:
            continue
        gives_way = copy and r.number > trial.number and r.first_trial not in (None, r.number)
        if r.training_began or not gives_way:
            return r
    return None


def reconnect(study: optuna.Study, settings, outage: BaseException, in_flight: int | None,
              log) -> tuple[optuna.Study, RDBStorage]:
    """The study and its storage again after the storage went away, reconnected with backoff for a bounded time
    (settings.storage_retry). What was recorded stays in the database; the trial this worker had
    in flight is re-queued to resume from its checkpoint (requeue_cut_off)."""
    log(f"storage unreachable ({str(outage).splitlines()[0][:120]}); retrying for up to {settings.storage_retry:g} s")
    storage = open_storage(settings.storage, settings.heartbeat, retry_s=settings.storage_retry)
    study = optuna.load_study(study_name=settings.study, storage=storage, sampler=study.sampler, pruner=study.pruner)
    if in_flight is not None:
        requeue_cut_off(study, storage, in_flight)
    return study, storage


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
    queues nothing: then this worker queues the copy. The storage is the study's own, not
    Optuna's cache of it, which would not show that reason."""
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:
        try:
            storage.write_fail_reason(trial_id, CUT_OFF)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                study.enqueue_trial(trial.params, user_attrs=record.requeue_attrs(trial))
            return
        except optuna.exceptions.UpdateFinishedTrialError:
            trial = storage.get_trial(trial_id)  # failed by another worker's heartbeat check meanwhile
    if trial.state != TrialState.FAIL:
        return
    trial, reason = _settled_fail_reason(storage, trial_id, trial, settle_s)
    # No reason: Optuna failed it itself as the outage ended. Any other reason: its own end, or a retry queued.
    if reason is None or (reason.startswith(WORKER_LOST) and storage.retries_spent(trial)):
        study.enqueue_trial(trial.params, user_attrs=record.requeue_attrs(trial))
        storage.write_fail_reason(trial_id, f"{CUT_OFF} (a heartbeat check had failed it, its retries spent)"
                                  if reason else CUT_OFF)


def taken_over(study: optuna.Study, storage: RDBStorage, trial_id: int | None, error: Exception,
               settle_s: float = 10.0) -> str | None:
    """A line saying so, if `error` is this worker's trial refused as finished (its next report,
    or its result) because another worker's heartbeat check failed it while it still ran: its
    heartbeat was late past the grace period (the machine or the storage stalled, the process
    stopped a while). That worker queued the retry, which resumes from the checkpoint; one not
    queued (its retries spent, or that worker gone before it could) is queued here, as for a
    trial cut off by an outage."""
    refused = (isinstance(error, optuna.exceptions.UpdateFinishedTrialError)
               or (isinstance(error, ValueError) and str(error) == RESULT_REFUSED))
    if trial_id is None or not refused:
        return None
    trial = storage.get_trial(trial_id)
    if trial.state != TrialState.FAIL:
        return None
    trial, reason = _settled_fail_reason(storage, trial_id, trial, settle_s)
    if reason is not None and not reason.startswith(WORKER_LOST):
        return None
    said = reason or f"{WORKER_LOST}failed by a heartbeat check that recorded no reason"
    # Through the proxy the reason is written before the trial fails, and the retry queued after.
    if not _retry_queued(study, trial.number, settle_s if reason and "; retried" in reason else 0):
        study.enqueue_trial(trial.params, user_attrs=record.requeue_attrs(trial))
        said += "; its worker, alive, re-queued it to resume from its checkpoint"
        storage.write_fail_reason(trial_id, said)
    return f"trial {trial.number} was failed by another worker while this one still ran it: {said}"


def _retry_queued(study: optuna.Study, number: int, wait_s: float) -> bool:
    """Whether a heartbeat check queued the retry of trial `number`, waiting up to wait_s for it."""
    deadline = time.monotonic() + wait_s
    while not any(retries(t, number) for t in study.get_trials(deepcopy=False)):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _settled_fail_reason(storage: RDBStorage, trial_id: int, trial: optuna.trial.FrozenTrial, settle_s: float):
    """(the failed trial, why it failed) once the worker that failed it has written why, which it
    does just after; None if nothing is written within settle_s."""
    deadline = time.monotonic() + settle_s
    while "fail_reason" not in trial.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)
        trial = storage.get_trial(trial_id)
    return trial, trial.user_attrs.get("fail_reason")
