"""Several workers on one PostgreSQL study, and workers that die or are interrupted."""

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.study.record import TrialRecord
from search.study.proxy import HEARTBEAT
from search.study.storage import WORKER_LOST, open_storage

from .conftest import CLI, REPO, free_port, the_retry, wait_for_epoch, worker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def test_four_workers_share_one_study(tmp_path, postgres_url):
    workers = [worker(tmp_path, postgres_url, "four") for _ in range(4)]
    for w in workers:
        out, err = w.communicate(timeout=900)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="four", storage=postgres_url)
    trials = study.get_trials()
    assert sum(TrialRecord.of(t).counts_as_trained for t in trials) == 12
    assert sum(TrialRecord.of(t).baseline for t in trials) == 1
    for t in map(TrialRecord.of, trials):
        if t.params is not None and t.params >= 200_000:
            assert not t.curve  # never trained
    # A trial is created before it draws its spec: what must not overlap is the training itself.
    trained = [(TrialRecord.of(t).training_began, t) for t in trials
               if t.datetime_complete and "val_acc_per_epoch" in t.user_attrs]
    for (start_a, a), (start_b, b) in itertools.combinations(trained, 2):
        overlap = start_a < b.datetime_complete and start_b < a.datetime_complete
        assert not (overlap and a.user_attrs["spec"] == b.user_attrs["spec"]), (a.number, b.number)


def test_killed_worker_trial_is_retried_from_its_checkpoint(tmp_path, postgres_url):
    first = worker(tmp_path, postgres_url, "killed", "--no-baseline", "--heartbeat", "1", trials=2, epochs=4,
                   limit=1000)
    victim = wait_for_epoch(postgres_url, "killed", 1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    time.sleep(4)  # past the grace period of 3 heartbeats
    second = worker(tmp_path, postgres_url, "killed", "--no-baseline", "--heartbeat", "1", trials=2, epochs=4,
                    limit=1000)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    study = optuna.load_study(study_name="killed", storage=postgres_url)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL
    retry = the_retry(study.trials, victim.number)
    assert retry.state in FINISHED and retry.params == dead.params
    assert retry.user_attrs["resumed_from_trial"] == victim.number
    assert retry.user_attrs["resumed_from_epoch"] >= 1
    assert retry.user_attrs["val_acc_per_epoch"][:1] == dead.user_attrs["val_acc_per_epoch"][:1]
    assert len([t for t in study.trials if t.state in FINISHED]) == 2


def test_sigterm_is_taken_as_ctrl_c_and_exits_143(tmp_path):
    """Schedulers (Slurm, Kubernetes) stop a job with SIGTERM: the trial is failed with its reason,
    its checkpoint kept to resume from, and the worker says so in one line."""
    storage = f"sqlite:///{tmp_path}/studies/resnet-search.db"
    first = worker(tmp_path, storage, "sigterm", "--no-baseline", trials=1, epochs=8, limit=2000)
    victim = wait_for_epoch(storage, "sigterm", 1)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("stopped by SIGTERM") and "run the same command again" in last
    dead = optuna.load_study(study_name="sigterm", storage=storage).trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("interrupted (SIGTERM)")
    assert (tmp_path / "studies" / "checkpoints" / "sigterm" / f"trial-{victim.number}" / "last.pt").exists()


def test_ctrl_c_records_the_trial_and_the_next_run_resumes_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/studies/resnet-search.db"
    first = worker(tmp_path, storage, "sigint", "--no-baseline", trials=1, epochs=8, limit=2000)
    victim = wait_for_epoch(storage, "sigint", 1)
    first.send_signal(signal.SIGINT)
    started = time.time()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130 and time.time() - started < 60, err
    assert "Traceback" not in err and "run the same command again" in err
    study = optuna.load_study(study_name="sigint", storage=storage)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("interrupted")
    assert (tmp_path / "studies" / "checkpoints" / "sigint" / f"trial-{victim.number}" / "last.pt").exists()

    again = worker(tmp_path, storage, "sigint", "--no-baseline", trials=1, epochs=8, limit=2000)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    study = optuna.load_study(study_name="sigint", storage=storage)
    [resumed] = [t for t in study.trials if t.state in FINISHED]
    assert resumed.params == dead.params and resumed.user_attrs["resumed_from_trial"] == victim.number
    assert resumed.user_attrs["resumed_from_epoch"] >= 1


def rode_out(w, storage, study_name, victim) -> None:
    """The worker finished after its storage came back, saying it was gone, with nothing recorded
    before the outage lost and the study's one trial trained."""
    out, err = w.communicate(timeout=600)
    assert w.returncode == 0, err
    assert "storage unreachable" in err and "Traceback" not in err
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert study.trials[victim.number].user_attrs["val_acc_per_epoch"][:1] == \
        victim.user_attrs["val_acc_per_epoch"][:1]
    assert len([t for t in study.trials if t.state in FINISHED]) == 1


def test_worker_rides_out_a_storage_outage(tmp_path):
    """The server stops mid-trial and comes back: the worker reconnects, the trial in flight is
    retried from its checkpoint, and nothing recorded before the outage is lost."""
    root = tempfile.mkdtemp(prefix="resnet-search-outage-")
    os.chmod(root, 0o755)
    script = ["bash", str(REPO / "scripts" / "postgres.sh")]
    started = subprocess.run([*script, "start", f"{root}/pg", "55439"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"PostgreSQL could not be started: {started.stderr.strip()[:300]}")
    url = started.stdout.strip()
    try:
        w = worker(tmp_path, url, "outage", "--no-baseline", "--heartbeat", "1", "--storage-retry", "60",
                   trials=1, epochs=8, limit=1000)
        victim = wait_for_epoch(url, "outage", 1)
        subprocess.run([*script, "stop", f"{root}/pg"], check=True, capture_output=True)
        time.sleep(8)  # longer than an epoch, so the worker meets the outage, not only its heartbeats
        subprocess.run([*script, "restart", f"{root}/pg", "55439"], check=True, capture_output=True)
        rode_out(w, url, "outage", victim)
    finally:
        subprocess.run([*script, "stop", f"{root}/pg"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_unreachable_storage_gives_up_after_the_bound(tmp_path):
    started = time.time()
    w = worker(tmp_path, "postgresql://postgres@127.0.0.1:9/none", "x", "--storage-retry", "3")
    out, err = w.communicate(timeout=120)
    assert w.returncode == 2 and "cannot reach storage" in err and "tried for 3 s" in err
    assert len(err.strip().splitlines()) == 1 and time.time() - started < 60


def serve_storage(database: str, port: int) -> subprocess.Popen:
    """`resnet-search serve-storage` in front of `database`, on 127.0.0.1:port."""
    return subprocess.Popen([str(CLI), "serve-storage", "--storage", database, "--host", "127.0.0.1", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def proxy(postgres_url):
    """`resnet-search serve-storage` in front of the PostgreSQL database; yields its grpc:// URL."""
    port = free_port()
    server = serve_storage(postgres_url, port)
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
        assert "Traceback" not in err, err


def test_four_workers_through_the_storage_proxy_and_a_killed_one(tmp_path, postgres_url, proxy):
    """A worker through the proxy SIGKILLed mid-trial, then four more: the study ends whole (every
    trial accounted, the total exact), and the dead trial failed with its reason and was retried
    from its checkpoint as on the database directly. (benchmarks/proxy_connections.py counts the
    database's connections with and without the proxy.)"""
    flags = ("--no-baseline", "--heartbeat", "1")
    first = worker(tmp_path, proxy, "proxied", *flags, trials=6, epochs=4, limit=1000)
    victim = wait_for_epoch(postgres_url, "proxied", 1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    workers = [worker(tmp_path, proxy, "proxied", *flags, trials=6, epochs=4, limit=1000) for _ in range(4)]
    for w in workers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="proxied", storage=postgres_url)
    records = [TrialRecord.of(t) for t in study.trials]
    assert sum(r.counts_as_trained for r in records) == 6
    assert not any(r.state in ("RUNNING", "WAITING") for r in records)
    dead = records[victim.number]
    assert dead.state == "FAIL" and dead.fail_reason.startswith(WORKER_LOST) and "retried" in dead.fail_reason
    retry = the_retry(study.trials, victim.number)
    assert retry.state in FINISHED and retry.user_attrs["resumed_from_epoch"] >= 1
    assert not retry.user_attrs.get("fail_reason")


def test_through_the_proxy_a_retry_is_not_stale_from_its_failed_runs_beat(tmp_path):
    """Optuna's retry copies the failed run's system attrs, among them its last heartbeat behind
    the proxy: a retry just started must not look stale before its own first beat, and a retry
    of a retry must not keep the reason its failed run was given."""
    port = free_port()
    server = serve_storage(f"sqlite:///{tmp_path}/p.db", port)
    try:
        storage = open_storage(f"grpc://127.0.0.1:{port}", heartbeat_s=1, retry_s=30)
        study = optuna.create_study(study_name="beats", storage=storage)
        x = {"x": optuna.distributions.FloatDistribution(0, 1)}
        first = study.ask(x)
        storage.set_trial_system_attr(first._trial_id, HEARTBEAT, time.time() - 60)  # its worker died long ago
        time.sleep(storage.grace_period + 0.5)  # and it started longer ago than the grace
        optuna.storages.fail_stale_trials(study)
        retry = study.ask(x)  # the queued retry, running, before its worker's first beat
        inherited = storage.get_trial(retry._trial_id).system_attrs
        assert inherited["failed_trial"] == first.number and inherited[HEARTBEAT] < time.time() - 59
        assert storage._get_stale_trial_ids(study._study_id) == []
        time.sleep(storage.grace_period + 0.5)  # its worker dies before it beats
        optuna.storages.fail_stale_trials(study)
        [next_retry] = study.get_trials(states=(TrialState.WAITING,))
        assert next_retry.system_attrs["retry_history"] == [first.number, retry.number]
        assert study.trials[retry.number].user_attrs["fail_reason"].startswith(WORKER_LOST)
        assert not next_retry.user_attrs.get("fail_reason")
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_worker_rides_out_the_storage_proxy_going_away(tmp_path):
    """The proxy stops mid-trial and comes back on its port: the worker reconnects, the trial in
    flight is retried from its checkpoint, and the study ends whole."""
    database = f"sqlite:///{tmp_path}/p.db"
    port = free_port()
    server = serve_storage(database, port)
    try:
        w = worker(tmp_path, f"grpc://127.0.0.1:{port}", "gone", "--no-baseline", "--heartbeat", "1",
                   "--storage-retry", "60", trials=1, epochs=8, limit=1000)
        victim = wait_for_epoch(database, "gone", 1)
        server.terminate()
        server.wait(timeout=30)
        time.sleep(5)
        server = serve_storage(database, port)
        rode_out(w, database, "gone", victim)
    finally:
        server.terminate()
        server.wait(timeout=30)
