"""Faults a long search meets: Ctrl-C while a study is being created, a worker killed and the
same command run again at once."""

import random
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from optuna.trial import TrialState

from search.study import record
from search.study import faults, networks
from search.engine.data import DataDescription, Dataset, ImageSet
from search.study.plan import Plan, SearchSettings
from search.study.storage import StudyError, open_storage
from resnet_space import ResNetSpec
from search.study.view import LogLines
from search.study.faults import requeue_cut_off, requeue_interrupted
from search.study.run import create_or_load

from .conftest import REPO, TINY_SPACE, cpu_run_flags, run_main
from .test_scale_out import FINISHED, wait_for_epoch, worker


def test_ctrl_c_while_creating_a_study_leaves_no_half_made_study(tmp_path, monkeypatch):
    """Interrupted between creating the study and writing its settings, the study is unmade, and
    the next run creates it whole (it would otherwise wait 60 s for settings and refuse the name)."""
    url = f"sqlite:///{tmp_path}/s.db"
    plan = Plan.of(SearchSettings(space=TINY_SPACE, study="made", storage=url, device="cpu",
                                  artifacts=tmp_path / "artifacts"))
    data = DataDescription("synthetic", str(tmp_path), ("a", "b"), 32, 3, (0.5,) * 3, (0.25,) * 3, "f00d")
    storage = open_storage(url, create=True)
    write_study = record.write_study

    def interrupted(study, **values):
        if "settings" in values:
            raise KeyboardInterrupt
        write_study(study, **values)

    monkeypatch.setattr(record, "write_study", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_or_load(storage, plan, data, enqueue=[({}, {})])
    assert optuna.get_all_study_names(storage) == []
    monkeypatch.setattr(record, "write_study", write_study)
    started = time.monotonic()
    study, created = create_or_load(storage, plan, data, enqueue=[({}, {})])
    assert created and time.monotonic() - started < 10
    assert record.StudyRecord.of(study).settings is not None and len(study.trials) == 1


def test_a_rerun_at_once_after_a_kill_trains_every_trial(tmp_path):
    """Killed mid-trial and run again at once: the dead trial is still RUNNING (its heartbeat is
    not stale yet). The rerun waits for it to go stale, trains its retry from the checkpoint, and
    exits 0 only with the study whole, recording no surplus trial."""
    storage = f"sqlite:///{tmp_path}/studies/resnet-search.db"
    flags = ("--no-baseline", "--heartbeat", "5")  # a grace of 15 s: the rerun starts within it
    first = worker(tmp_path, storage, "killed", *flags, trials=1, epochs=4, limit=1000)
    victim = wait_for_epoch(storage, "killed", 1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    again = worker(tmp_path, storage, "killed", *flags, trials=1, epochs=4, limit=1000)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert trials[victim.number].state == TrialState.FAIL
    [retry] = [t for t in trials if t.state in FINISHED]
    assert retry.system_attrs.get("failed_trial") == victim.number and retry.user_attrs["resumed_from_epoch"] >= 1
    assert not any("surplus" in t.user_attrs.get("fail_reason", "") for t in trials)


def test_ctrl_c_at_random_moments_always_ends_the_run(tmp_path):
    """Ctrl-C at seeded random moments while short trials run, then again and again until the
    process ends: every run ends with exit 130 and no traceback, and leaves no trial RUNNING.
    The later ones land wherever stopping takes the process: Optuna recording the trial, a
    finaliser, the log of what was kept, Python's shutdown."""
    rng = random.Random(0)
    storage = f"sqlite:///{tmp_path}/studies/resnet-search.db"
    for attempt in range(3):
        w = worker(tmp_path, storage, "sigints", "--no-baseline", trials=200, epochs=3, limit=100)
        wait_for_epoch(storage, "sigints", 1)
        time.sleep(rng.uniform(0, 2))
        while w.poll() is None:
            w.send_signal(signal.SIGINT)
            time.sleep(rng.uniform(0, 0.03))
        out, err = w.communicate(timeout=60)
        assert w.returncode == 130, (attempt, err)
        assert not any(s in err for s in ("Traceback", "Error", "Exception ignored")), (attempt, err)
        running = optuna.load_study(study_name="sigints", storage=storage).get_trials(states=(TrialState.RUNNING,))
        assert not running, (attempt, running)


@pytest.mark.parametrize("write_fails", [False, True], ids=["write-done", "write-fails"])
def test_ctrl_c_in_a_storage_call_waits_for_the_computation(tmp_path, monkeypatch, capsys, write_fails):
    """Ctrl-C while a trial writes to the storage is raised only once its write is done, as the
    next epoch computes: raised midway through the write it left the database session broken, the
    interrupted trial's record failed, and the run ended in a traceback with exit 1 (seen in CI).
    If the write fails instead, the trial is re-queued as for any storage error, and the run
    still stops with 130 (it used to go on with Ctrl-C ignored)."""
    raised_in_storage, sent = [], []

    def ctrl_c_while_writing_the_curve(conn, cursor, statement, parameters, context, executemany):
        if not sent and "val_acc_per_epoch" in str(parameters):
            sent.append(statement)
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                raised_in_storage.append(statement)
                raise
            if write_fails:
                raise sqlalchemy.exc.OperationalError(statement, parameters, Exception("disk I/O error"))

    storage = f"sqlite:///{tmp_path}/s.db"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # a stopped run leaves them ignored
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", ctrl_c_while_writing_the_curve)
    try:
        done = run_main("run", "--budget", "2e5", "--storage", storage, "--study", "c", "--trials", "1",
                        "--no-baseline", *cpu_run_flags(epochs=3, limit_train=100, val_size=100),
                        cwd=tmp_path, env={"RESNET_SEARCH_CACHE": str(tmp_path / "cache")},
                        monkeypatch=monkeypatch, capsys=capsys)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", ctrl_c_while_writing_the_curve)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert sent and not raised_in_storage
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    trial, *copy = optuna.load_study(study_name="c", storage=storage).trials
    if write_fails:
        assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith("cut off from the storage")
        assert [c.state for c in copy] == [TrialState.WAITING]
    else:
        assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith("interrupted (Ctrl-C)")
        assert len(trial.user_attrs["val_acc_per_epoch"]) == 1 and not copy  # the next epoch was cut short


def test_a_dead_workers_trial_records_why_it_failed(tmp_path):
    """Optuna fails a trial whose heartbeat went stale without a word of why: the soak
    (benchmarks/soak.py) found every killed worker's trial FAIL with no reason. The storage records
    one, and the retry it queues does not inherit it."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_s=1, create=True)
    study = optuna.create_study(storage=storage)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(dead._trial_id)  # then silence, as from a killed worker
    time.sleep(4.5)  # past the grace of 3 beats (SQLite keeps whole seconds)
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"].startswith("worker lost: no heartbeat")
    assert "retried from its checkpoint" in failed.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING and "fail_reason" not in retry.user_attrs
    assert retry.system_attrs["failed_trial"] == failed.number
    for attempt, said in ((2, "retried from its checkpoint"), (3, "not retried: its run was retried 2 times")):
        run = study.trials[-1]  # the retry, killed in turn
        storage.set_trial_state_values(run._trial_id, TrialState.RUNNING)
        storage.record_heartbeat(run._trial_id)
        time.sleep(4.5)
        optuna.storages.fail_stale_trials(study)
        fresh = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path}/s.db")  # as others read it
        assert said in fresh.trials[run.number].user_attrs["fail_reason"], attempt
    assert len(study.trials) == 3  # two retries, then no more


def test_copies_of_an_interrupted_trial_leave_one_to_resume_it(tmp_path):
    """Workers started together after a Ctrl-C each re-queue the interrupted trial (the soak's
    final workers queued trial 208 of the 60-minute run several times, and its first copy stepped
    aside as a duplicate). Two copies running at once: the lower-numbered one trains, the other
    steps aside, never both."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="copies", storage=storage)
    spec = ResNetSpec((1, 1), (8, 16), 3, 1, 4)
    attrs = {"spec": spec.to_dict(), "first_trial": 0, "fail_reason": "interrupted (Ctrl-C)"}
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs=attrs))
    workers = [optuna.load_study(study_name="copies", storage=storage) for _ in range(2)]
    for w in workers:  # each re-queues it, both before either records having done so
        assert requeue_interrupted(w) == [0]
        record.write_study(w, requeued=[])
    low, high = [w.ask() for w in workers]  # both copies popped, running together
    assert (low.number, high.number) == (1, 2) and low.user_attrs["first_trial"] == high.user_attrs["first_trial"] == 0
    assert faults._running_twin(low, spec.to_dict(), 0) is None
    assert faults._running_twin(high, spec.to_dict(), 0).number == low.number


def _interrupted_twins(tmp_path, monkeypatch):
    """Two trials that trained one spec one after the other, both stopped by Ctrl-C with a
    checkpoint each, and their copies queued (as the soak's finish saw it: trials 14 and 25)."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="twins", storage=open_storage(url, create=True))
    plan = Plan.of(SearchSettings(space=TINY_SPACE, study="twins", storage=url, device="cpu",
                                  baseline=False, artifacts=tmp_path / "artifacts"))
    about = DataDescription("synthetic", str(tmp_path), ("a", "b"), 32, 3, (0.5,) * 3, (0.25,) * 3, "f00d")
    images = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    objective = networks.objective(plan, Dataset(images, images, images, about), LogLines())
    started = []

    def stopped_by_ctrl_c(spec, data, recipe, *, checkpoint_dir, **kwargs):
        started.append(Path(checkpoint_dir))
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_dir) / "last.pt").write_bytes(b"an epoch")
        raise KeyboardInterrupt

    monkeypatch.setattr(networks, "train", stopped_by_ctrl_c)
    first = study.ask()
    with pytest.raises(KeyboardInterrupt):
        objective(first)
    study.tell(first, state=TrialState.FAIL)
    study.enqueue_trial(first.params)  # proposed again, a fresh trial: nothing of the first is running
    with pytest.raises(KeyboardInterrupt):
        objective(study.ask())
    study.tell(1, state=TrialState.FAIL)
    assert requeue_interrupted(study) == [0, 1]
    return study, objective, started


def test_a_copy_waits_for_a_twin_of_another_trial_then_steps_aside_if_it_trained_the_same(tmp_path, monkeypatch):
    """The copies of two interrupted trials of one spec run at once: one resumes, the other
    waits, and steps aside only once its twin has trained the same spec and recipe, removing the
    checkpoint it will never resume (stepping aside at once, it would never run again)."""
    study, objective, started = _interrupted_twins(tmp_path, monkeypatch)
    first_dir, second_dir = started
    resuming = study.ask()  # trial 0's copy, resuming it
    assert resuming.user_attrs["first_trial"] == 0
    record.write_training_started(resuming)
    waiting = study.ask()  # trial 1's copy
    outcome = []

    def run():
        try:
            objective.run(waiting)
        except optuna.TrialPruned as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=4)
    assert t.is_alive() and not outcome  # waits while its twin trains
    study.tell(resuming, 0.5)
    t.join(timeout=30)
    assert "same spec and recipe as trained trial 2" in str(outcome[0])
    assert record.TrialRecord.of(waiting).duplicate_of == resuming.number
    assert first_dir.exists() and not second_dir.exists()


def test_a_copy_resumes_once_its_twin_of_another_trial_is_stopped_again(tmp_path, monkeypatch):
    study, objective, started = _interrupted_twins(tmp_path, monkeypatch)
    resuming = study.ask()
    record.write_training_started(resuming)
    waiting = study.ask()
    outcome = []

    def run():
        try:
            objective.run(waiting)
        except KeyboardInterrupt:
            outcome.append("trained")

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=4)
    assert t.is_alive() and not outcome
    study.tell(resuming, state=TrialState.FAIL)  # interrupted again, say
    t.join(timeout=30)
    assert outcome == ["trained"] and started[2] == started[1]  # from trial 1's checkpoint


def test_copies_of_two_trials_of_one_spec_starting_together_wait_in_turn(tmp_path, monkeypatch):
    """Neither training yet, each sees the other: the higher-numbered waits, the lower goes on."""
    study, objective, _ = _interrupted_twins(tmp_path, monkeypatch)
    low, high = study.ask(), study.ask()
    spec = low.user_attrs["spec"]
    assert faults._running_twin(low, spec, 0) is None
    assert faults._running_twin(high, spec, 1).number == low.number


def test_a_trial_cut_off_by_an_outage_is_requeued_by_its_worker(tmp_path):
    """A trial cut off by a storage outage, Optuna's two retries spent, would never run again:
    its own worker fails it on reconnecting and queues it to resume, once, and not one that
    finished."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="cut", storage=storage)
    cut = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    cut.set_user_attr("first_trial", 0)
    requeue_cut_off(study, storage, cut._trial_id)
    requeue_cut_off(study, storage, cut._trial_id)  # again: it is FAIL now, nothing more is queued
    failed, again = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"].startswith("cut off from the storage")
    assert again.state == TrialState.WAITING and again.system_attrs["fixed_params"] == failed.params
    assert again.user_attrs["first_trial"] == 0 and "fail_reason" not in again.user_attrs
    done = study.ask()  # the copy, run and finished
    study.tell(done, 1.0)
    requeue_cut_off(study, storage, done._trial_id)
    assert done.number == again.number and len(study.trials) == 2  # a trial that finished is left alone


def test_a_cut_off_trial_failed_first_by_a_heartbeat_check_with_its_retries_spent_is_requeued(tmp_path):
    """A trial cut off by an outage that another worker's heartbeat check failed first, Optuna's
    retries spent (so that check queued nothing): its own worker queues the copy on reconnecting,
    writing why after the other worker's reason; a trial whose retry was queued, or that ended on
    its own, it leaves."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="cut", storage=storage)
    heartbeat_check = storage.get_heartbeat_stale_trial_callback()

    running = [study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}) for _ in range(4)]  # before any copy

    def failed(retry_history, reason=None):
        t = running.pop(0)
        t.set_user_attr("first_trial", t.number)
        if reason:
            t.set_user_attr("fail_reason", reason)
        storage.set_trial_system_attr(t._trial_id, "retry_history", retry_history)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # as fail_stale_trials does first
        return t

    def copies(t):
        return [c for c in study.get_trials(states=(TrialState.WAITING,)) if c.user_attrs["first_trial"] == t.number]

    spent = failed([0, 1])  # the heartbeat check writes its reason half a second after failing it
    threading.Timer(0.5, heartbeat_check, (study, storage.get_trial(spent._trial_id))).start()
    requeue_cut_off(study, storage, spent._trial_id)
    assert len(copies(spent)) == 1 and copies(spent)[0].system_attrs["fixed_params"] == spent.params
    assert storage.get_trial(spent._trial_id).user_attrs["fail_reason"].startswith("cut off from the storage")

    retried = failed([0])
    heartbeat_check(study, storage.get_trial(retried._trial_id))  # queues Optuna's retry
    requeue_cut_off(study, storage, retried._trial_id)
    assert storage.get_trial(retried._trial_id).user_attrs["fail_reason"].startswith("worker lost")
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2  # the copy above and this retry, no more

    own_end = failed([0, 1], reason="surplus: the study already had its 4 trials")
    requeue_cut_off(study, storage, own_end._trial_id)
    failed_by_optuna = failed([], reason=None)  # the objective raised as the outage ended, the storage back
    requeue_cut_off(study, storage, failed_by_optuna._trial_id, settle_s=0.3)
    assert not copies(own_end) and len(copies(failed_by_optuna)) == 1


def test_a_worker_stalled_past_the_grace_goes_on_after_its_trial_was_failed_under_it(tmp_path):
    """A worker stopped a while mid-trial (a stalled machine) finds, as it goes on, that another
    worker's heartbeat check failed its trial and queued the retry: Optuna refuses its next report
    or its result. It says so in a line, trains the retry from the checkpoint, and exits 0 with
    the study whole (CI saw a worker end in a traceback: "Cannot tell a FAIL trial")."""
    storage = f"sqlite:///{tmp_path}/studies/resnet-search.db"
    stalled = worker(tmp_path, storage, "stalled", "--no-baseline", "--heartbeat", "1", trials=1, epochs=4, limit=1000)
    victim = wait_for_epoch(storage, "stalled", 1)
    checker = optuna.load_study(study_name="stalled", storage=open_storage(storage, heartbeat_s=1))
    for attempt in range(3):  # stopped midway through a write, the worker holds SQLite's lock: let it finish
        stalled.send_signal(signal.SIGSTOP)
        try:
            time.sleep(4.5)  # past the grace of 3 beats (SQLite keeps whole seconds)
            optuna.storages.fail_stale_trials(checker)
            break
        except optuna.exceptions.StorageInternalError:
            pass
        finally:
            stalled.send_signal(signal.SIGCONT)
        time.sleep(0.5)
    out, err = stalled.communicate(timeout=600)
    assert stalled.returncode == 0 and "Traceback" not in err, err
    assert f"trial {victim.number} was failed by another worker while this one still ran it: worker lost" in out + err
    trials = optuna.load_study(study_name="stalled", storage=storage).trials
    assert trials[victim.number].state == TrialState.FAIL
    [retry] = [t for t in trials if t.state in FINISHED]
    assert retry.system_attrs.get("failed_trial") == victim.number and retry.user_attrs["resumed_from_epoch"] >= 1


def test_only_a_trial_a_heartbeat_check_failed_is_taken_over(tmp_path):
    """The worker goes on only from Optuna's refusal of its own trial failed as stale: not from
    another error on that trial, a trial still running, or one failed for another reason. Where
    the check queued no retry (its retries spent, or a check that died before writing why), the
    worker queues the copy itself."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="over", storage=storage)
    heartbeat_check = storage.get_heartbeat_stale_trial_callback()
    refused = ValueError(faults.RESULT_REFUSED)

    def trial(retry_history=(), reason=None, state=TrialState.FAIL):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.set_user_attr("first_trial", t.number)
        storage.set_trial_system_attr(t._trial_id, "retry_history", list(retry_history))
        if reason:
            t.set_user_attr("fail_reason", reason)
        if state != TrialState.RUNNING:
            storage.set_trial_state_values(t._trial_id, state)
        return t

    def copies(t):
        return [c for c in study.get_trials(states=(TrialState.WAITING,)) if c.user_attrs["first_trial"] == t.number]

    assert faults.taken_over(study, storage, trial(state=TrialState.RUNNING)._trial_id, refused) is None
    assert faults.taken_over(study, storage, trial(reason="interrupted (Ctrl-C)")._trial_id, refused) is None

    retried = trial()
    heartbeat_check(study, storage.get_trial(retried._trial_id))
    for bug in (ValueError("a bug"), RuntimeError("a bug")):
        assert faults.taken_over(study, storage, retried._trial_id, bug) is None
    said = faults.taken_over(study, storage, retried._trial_id, refused)
    assert said.startswith(f"trial {retried.number} was failed by another worker") and "; retried from" in said
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # the check's retry, no copy

    spent = trial([0, 1])
    heartbeat_check(study, storage.get_trial(spent._trial_id))  # queues nothing
    assert "re-queued it" in faults.taken_over(study, storage, spent._trial_id,
                                               optuna.exceptions.UpdateFinishedTrialError())
    assert len(copies(spent)) == 1 and copies(spent)[0].system_attrs["fixed_params"] == spent.params

    # A retry failed in turn: Optuna's next retry names the chain's first run as failed_trial.
    again = trial([retried.number], state=TrialState.RUNNING)
    storage.set_trial_system_attr(again._trial_id, "failed_trial", retried.number)
    storage.set_trial_state_values(again._trial_id, TrialState.FAIL)
    heartbeat_check(study, storage.get_trial(again._trial_id))
    assert "; retried from" in faults.taken_over(study, storage, again._trial_id, refused)
    assert len(copies(again)) == 1  # the check's retry, no copy

    unsaid = trial()  # failed by a check whose worker died before queuing the retry or writing why
    assert "recorded no reason" in faults.taken_over(study, storage, unsaid._trial_id, refused, settle_s=0.3)
    assert len(copies(unsaid)) == 1


def test_the_soak_follows_a_signal_to_the_copy_it_landed_on(monkeypatch):
    """A 3-minute soak SIGINTed the worker of trial 1 just after the server restart; the outage
    had cut trial 1 off, its worker had queued a copy (13), and the Ctrl-C landed on 13. The
    account called trial 1 "not interrupted" and 13's resume a violation; it follows the signal
    to the run that took it."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as the script runs: beside common.py
    from soak import landed_on

    cut = "cut off from the storage mid-trial; re-queued to resume from its checkpoint"
    recs = {r.number: r for r in (
        record.TrialRecord(1, "FAIL", None, first_trial=1, fail_reason=cut),
        record.TrialRecord(12, "COMPLETE", 0.5, first_trial=12),
        record.TrialRecord(13, "FAIL", None, first_trial=1, fail_reason="interrupted (Ctrl-C)"),
        record.TrialRecord(14, "COMPLETE", 0.5, first_trial=1),
    )}
    assert landed_on(1, recs) == 13
    assert landed_on(12, recs) == 12 and landed_on(13, recs) == 13
    recs[13].fail_reason = cut  # cut off too: on to the next copy
    assert landed_on(1, recs) == 14


def test_the_soak_finds_a_lineage_cut_short_that_no_signal_named(monkeypatch):
    """An hour's soak SIGINTed a worker it read as between trials; the signal met it as it began
    trial 757, which failed "interrupted", and the account, following only the signals it aimed,
    never asked whether 757 ran again. Every lineage a fault cut short must be trained after it."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from soak import untrained_lineages

    interrupted, lost = "interrupted (Ctrl-C); its checkpoint is kept to resume from", "worker lost: no heartbeat"
    recs = {r.number: r for r in (
        record.TrialRecord(5, "FAIL", None, first_trial=5, fail_reason=interrupted),
        record.TrialRecord(6, "COMPLETE", 0.5, first_trial=6),
        record.TrialRecord(7, "FAIL", None, first_trial=7, fail_reason=lost),
        record.TrialRecord(8, "FAIL", None, first_trial=5, fail_reason=lost),  # 5's copy, killed in turn
        record.TrialRecord(9, "FAIL", None, fail_reason=interrupted),  # cut before its identity: nothing to resume
        record.TrialRecord(10, "PRUNED", None, first_trial=7),  # 7's retry trained
        record.TrialRecord(11, "FAIL", None, first_trial=11, fail_reason="surplus: the study already had its trials"),
    )}
    assert untrained_lineages(recs) == [
        "trial 5's lineage (5 FAIL, 8 FAIL) was cut short by trial 8 (worker lost: no heartbeat) and not trained after it"]
    recs[12] = record.TrialRecord(12, "PRUNED", None, first_trial=5, duplicate=True, duplicate_of=7)  # 7's spec
    assert untrained_lineages(recs) == [  # 7 did not train, its retry 10 did: 12 steps aside for nothing trained
        "trial 5's lineage (5 FAIL, 8 FAIL, 12 PRUNED) was cut short by trial 8 (worker lost: no heartbeat) and not "
        "trained after it"]
    recs[12].duplicate_of = 10
    assert untrained_lineages(recs) == []
    recs[12].duplicate_of = 8  # a copy of its own lineage excuses nothing: only a trained run does
    assert len(untrained_lineages(recs)) == 1


def test_a_settings_refusal_shows_where_the_two_values_differ():
    from search.study.run import _difference

    was = {"stages": [2, 3], "blocks": {"low": 1, "high": 2}, "pool": [4]}
    assert _difference(was, {**was, "pool": [2]}) == ("{pool = [4]}", "{pool = [2]}")
    long_a, long_b = "x" * 200 + "A" + "y" * 50, "x" * 200 + "B" + "y" * 50
    shown = _difference(long_a, long_b)
    assert shown[0] != shown[1] and "A" in shown[0] and "B" in shown[1]


def test_a_study_with_no_settings_says_it_waits(tmp_path):
    from search.study.run import refuse_mixed_settings

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="bare")
    said = []
    with pytest.raises(StudyError, match="records no settings"):
        refuse_mixed_settings(study, {}, said.append, wait_s=0.2)
    assert said and "waiting up to 0.2 s" in said[0]
