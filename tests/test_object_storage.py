"""Checkpoints in object storage: workers on machines that share no disk, each with its own local
folder, one study and one bucket of a real S3-compatible server (moto's, on the loopback)."""

import signal
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
from optuna.trial import TrialState

from search.study.artifacts import masked, open_artifact_store

from .conftest import TINY_SPACE, S3Server, run_cli, storage_url, synthetic_root, the_retry, wait_for_epoch, worker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def test_two_workers_share_a_bucket_and_the_killed_ones_trial_resumes_from_it(tmp_path, postgres_url, s3_server,
                                                                                monkeypatch):
    url = f"s3://{S3Server.BUCKET}/team-a"
    a, b, c = (tmp_path / name for name in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    flags = ("--no-baseline", "--heartbeat", "1", "--artifacts", url)
    first, second = (worker(folder, postgres_url, "bucket", *flags, trials=2, epochs=8, limit=1000, env=s3_server.env)
                     for folder in (a, b))
    # The first worker's trial (its checkpoints are under a), while the second runs one too; its
    # epoch 1 is in the bucket once epoch 2 reports.
    victim = wait_for_epoch(postgres_url, "bucket", 2, where=lambda t, running: len(running) == 2
                            and t.user_attrs.get("checkpoint_dir", "").startswith(str(a)))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err

    study = optuna.load_study(study_name="bucket", storage=postgres_url)
    assert study.trials[victim.number].state == TrialState.FAIL
    retry = the_retry(study.trials, victim.number)
    assert retry.state in FINISHED and retry.user_attrs["resumed_from_trial"] == victim.number
    held = retry.user_attrs["resumed_from_epoch"]
    # The second worker's folder never held the first's checkpoint: it came from the bucket.
    assert held >= 1 and f"[resuming trial {victim.number} after epoch {held}]" in err
    assert retry.user_attrs["checkpoint_dir"].startswith(str(b))
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 2
    [folder_a] = (a / "studies" / "checkpoints").iterdir()  # bucket@DATABASE-DIGEST, as the bucket's keys
    [folder_b] = (b / "studies" / "checkpoints").iterdir()
    assert (folder_a / f"trial-{victim.number}" / "last.pt").exists() and not any(folder_b.iterdir())
    keys = s3_server.keys()  # the kept checkpoints and the run's report plots; no epoch checkpoint is left
    assert {f"team-a/{t.user_attrs['checkpoint_artifact']}" for t in finished} < set(keys)
    assert all(k.startswith("team-a/") and "checkpoints/" not in k for k in keys), keys

    # From a third folder: the winner's checkpoint, the retrain and the report, the bucket as their store.
    common = ("--storage", postgres_url, "--study", "bucket", "--artifacts", url)
    data = ("--data", str(synthetic_root()))
    exported = run_cli("best", *common, *data, "--export", c / "winner", cwd=c, env=s3_server.env)
    assert exported.returncode == 0, exported.stderr
    assert (c / "winner" / "model.pt2").exists() and (c / "winner" / "metrics.json").exists()
    retrained = run_cli("retrain", *common, *data, "--epochs", "1", "--seeds", "1", "--device", "cpu", cwd=c,
                        env=s3_server.env)
    assert retrained.returncode == 0, retrained.stderr
    assert any((c / "studies" / "retrain").rglob("seed-0.json"))
    reported = run_cli("report", *common, cwd=c, env=s3_server.env)
    assert reported.returncode == 0, reported.stderr
    assert any((c / "studies" / "reports").rglob("index.html"))
    plots = optuna.load_study(study_name="bucket", storage=postgres_url).user_attrs["report_artifacts"]
    assert {f"team-a/{artifact}" for artifact in plots.values()} <= set(s3_server.keys()) and len(plots) >= 3
    # optuna-dashboard (`resnet-search dashboard`'s app) serves a plot out of the bucket
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    app = optuna_dashboard.wsgi(postgres_url, artifact_store=open_artifact_store(url))
    environ, answer = {}, {}
    setup_testing_defaults(environ)
    study_id = optuna.storages.RDBStorage(postgres_url).get_study_id_from_name("bucket")
    plot = next(iter(plots))
    environ.update(PATH_INFO=f"/artifacts/{study_id}/{plots[plot]}", REQUEST_METHOD="GET")
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
    assert answer["status"].startswith("200") and body == next((c / "studies" / "reports").rglob(plot)).read_bytes()
    assert not (c / "s3:").exists() and not list(c.glob("*resnet-search*"))  # no folder made of the URL


def test_the_bucket_gone_mid_run_fails_the_trial_in_one_line_and_the_rerun_resumes(tmp_path, s3_server):
    url, storage = f"s3://{S3Server.BUCKET}/gone", storage_url(tmp_path)
    # The bucket named by the study file, not a flag
    (tmp_path / "space.toml").write_text(f"artifacts = {url!r}\n" + TINY_SPACE.read_text())
    flags = ("--no-baseline", "--space", tmp_path / "space.toml")
    run = worker(tmp_path, storage, "gone", *flags, trials=1, epochs=8, limit=2000, env=s3_server.env)
    victim = wait_for_epoch(storage, "gone", 1)
    s3_server.stop()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and s3_server.env["AWS_SECRET_ACCESS_KEY"] not in out + err
    assert last.startswith(f"resnet-search: error: artifact store {url}: cannot write checkpoints/gone/"), last
    assert f"trial {victim.number} is recorded as failed and resumes from its checkpoint" in last
    dead = optuna.load_study(study_name="gone", storage=storage).trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("interrupted (artifact store")
    trained = len(dead.user_attrs["val_acc_per_epoch"])
    assert trained >= 1 and (tmp_path / "studies" / "checkpoints" / "gone" / f"trial-{victim.number}").is_dir()

    s3_server.start()  # back, and empty: the local checkpoint is what the rerun resumes from
    again = worker(tmp_path, storage, "gone", *flags, trials=1, epochs=8, limit=2000, env=s3_server.env)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    [resumed] = [t for t in optuna.load_study(study_name="gone", storage=storage).trials if t.state in FINISHED]
    assert resumed.user_attrs["resumed_from_trial"] == victim.number
    assert resumed.user_attrs["resumed_from_epoch"] >= trained
    assert resumed.user_attrs["val_acc_per_epoch"][:trained] == dead.user_attrs["val_acc_per_epoch"]


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    text = ("https://AKIAEXAMPLE:pw@s3.example.com/b/k?X-Amz-Credential=AKIAEXAMPLE%2F20261205&X-Amz-Signature=abc123 "
            "secret wJalrXUtnFEMI/K7MDENG")
    shown = masked(text)
    for secret in ("AKIAEXAMPLE", "pw@", "abc123", "wJalrXUtnFEMI"):
        assert secret not in shown, shown
    assert "https://***@s3.example.com/b/k" in shown
