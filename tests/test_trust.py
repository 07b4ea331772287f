"""Nothing read from disk or the database is trusted: a file that would run code as it is loaded
is refused unread wherever one is read, and no path the database holds decides where anything
is read or written."""

import json
import pathlib
import sqlite3

import optuna
import pytest
import torch

from search.study import record
from search.engine.data import UnsafeFile, load_plain

from .conftest import assert_user_error, cpu_run_flags, run_cli, run_main, run_small_study, storage_url, synthetic_root


class Payload:
    """Unpickled, it creates the file `marker`: what a crafted checkpoint would do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def plant(path, marker) -> None:
    """A torch.save file at `path` that runs code when loaded without weights_only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"identity": {}, "model": Payload(marker), "images": Payload(marker)}, path)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("trust")
    run_small_study(cwd, "s", 2, env={"RESNET_SEARCH_CACHE": str(cwd / "cache")}, limit_train=100, val_size=100)
    return cwd


@pytest.fixture
def cwd(study_dir, tmp_path):
    """A copy of the study's folder, to plant files in."""
    import shutil

    copy = tmp_path / "w"
    shutil.copytree(study_dir, copy)
    return copy


def env(cwd) -> dict:
    return {"RESNET_SEARCH_CACHE": str(cwd / "cache")}


def refused(result, marker) -> str:
    line = assert_user_error(result)
    assert "names code to run" in line, line
    assert not marker.exists(), "the payload ran"
    return line


def test_load_plain_refuses_a_payload_and_reads_plain_tensors(tmp_path):
    plant(tmp_path / "evil.pt", tmp_path / "ran")
    with pytest.raises(UnsafeFile, match="names code to run"):
        load_plain(tmp_path / "evil.pt", "checkpoint")
    assert not (tmp_path / "ran").exists()
    torch.save({"w": torch.ones(2), "history": [{"epoch": 1}]}, tmp_path / "plain.pt")
    assert load_plain(tmp_path / "plain.pt", "checkpoint")["history"] == [{"epoch": 1}]


def test_best_export_refuses_a_payload_in_the_artifact_store(cwd):
    marker = cwd / "ran"
    winner = record.TrialRecord.of(record.best_trials(optuna.load_study(study_name="s", storage=storage_url(cwd)), 1)[0])
    plant(cwd / "studies" / "artifacts" / winner.checkpoint_artifact, marker)
    refused(run_cli("best", "--study", "s", "--export", cwd / "out", "--data", synthetic_root(), cwd=cwd, env=env(cwd)), marker)
    assert not (cwd / "out").exists()


def test_report_runs_no_code_from_the_artifact_store(cwd):
    marker = cwd / "ran"
    for artifact in (cwd / "studies" / "artifacts").iterdir():
        plant(artifact, marker)
    result = run_cli("report", "--study", "s", cwd=cwd, env=env(cwd))
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def test_a_resume_refuses_a_payload_in_checkpoints(cwd):
    marker = cwd / "ran"
    trials = len(optuna.load_study(study_name="s", storage=storage_url(cwd)).trials)
    plant(cwd / "studies" / "checkpoints" / "s" / "trial-7" / "last.pt", marker)
    line = refused(run_cli("run", "--budget", "2e5", "--trials", "3", "--study", "s",
                           *cpu_run_flags(limit_train=100, val_size=100), cwd=cwd, env=env(cwd)), marker)
    assert "trial-7/last.pt" in line
    assert len(optuna.load_study(study_name="s", storage=storage_url(cwd)).trials) == trials


def test_retrain_refuses_a_payload_in_its_last_checkpoint_and_writes_nothing(cwd):
    from .test_bad_input import snapshot

    marker = cwd / "ran"
    study = optuna.load_study(study_name="s", storage=storage_url(cwd))
    best = record.best_trials(study, 1)[0].number
    plant(cwd / "studies" / "retrain" / "s" / f"trial-{best}" / "epochs-1" / "seed-0" / "last.pt", marker)
    before = snapshot(cwd)
    refused(run_cli("retrain", "--study", "s", "--device", "cpu", "--epochs", "1", "--seeds", "1", "--data", synthetic_root(),
                    cwd=cwd, env=env(cwd)), marker)
    assert snapshot(cwd) == before


def test_a_payload_in_the_decoded_image_cache_is_refused(cwd):
    marker = cwd / "ran"
    cached = list((cwd / "cache" / "decoded").glob("*.pt"))
    assert cached
    for path in cached:
        plant(path, marker)
    refused(run_cli("run", "--budget", "2e5", "--trials", "1", "--study", "other", *cpu_run_flags(limit_train=100, val_size=100),
                    cwd=cwd, env=env(cwd)), marker)
    refused(run_cli("best", "--study", "s", "--export", cwd / "out", "--data", synthetic_root(), cwd=cwd, env=env(cwd)), marker)


def set_attr(db, table: str, key: str, value) -> None:
    con = sqlite3.connect(db)
    con.execute(f"UPDATE {table} SET value_json = ? WHERE key = ?", (json.dumps(value), key))
    con.commit()
    con.close()


def test_paths_in_the_database_decide_nothing(cwd, tmp_path):
    """An attacker with write access to the database points every recorded path elsewhere; the
    commands read and write only under the folders they were given."""
    elsewhere = tmp_path / "elsewhere"
    db = cwd / "studies" / "resnet-search.db"
    set_attr(db, "study_user_attributes", "artifact_dir", str(elsewhere / "artifacts"))
    data = record.StudyRecord.of(optuna.load_study(study_name="s", storage=storage_url(cwd))).data
    set_attr(db, "study_user_attributes", "data", {**data, "root": str(elsewhere / "data")})
    set_attr(db, "trial_user_attributes", "checkpoint_dir", str(elsewhere / "checkpoint"))
    given = {"RESNET_SEARCH_CACHE": str(cwd / "cache"), "RESNET_SEARCH_DATA": str(synthetic_root())}
    for args in (["report", "--study", "s"], ["best", "--study", "s", "--export", cwd / "out"]):
        result = run_cli(*args, cwd=cwd, env=given)
        assert result.returncode == 0, result.stderr
    result = run_cli("run", "--budget", "2e5", "--trials", "3", "--study", "s", *cpu_run_flags(limit_train=100, val_size=100), cwd=cwd,
                     env=given)
    assert result.returncode == 0, result.stderr
    assert not elsewhere.exists()


def test_an_image_folder_study_needs_its_data_named_again(cwd, monkeypatch, capsys):
    line = assert_user_error(run_main("best", "--study", "s", "--export", cwd / "out", cwd=cwd, env=env(cwd),
                                      monkeypatch=monkeypatch, capsys=capsys))
    assert "pass --data" in line and not (cwd / "out").exists()


@pytest.mark.parametrize("key, value, expect", [
    ("artifact_dir", 12345, "artifact_dir = 12345"),
    ("settings", "garbage", "settings = 'garbage'"),
    ("val_size", -3, "val_size -3"),
    ("final_study", "other", "final_study other than"),
])
def test_odd_study_attributes_are_one_line(cwd, key, value, expect, monkeypatch, capsys):
    from .test_bad_input import snapshot

    set_attr(cwd / "studies" / "resnet-search.db", "study_user_attributes", key, value)
    if key in ("final_study",):
        con = sqlite3.connect(cwd / "studies" / "resnet-search.db")
        study_id = con.execute("SELECT study_id FROM studies WHERE study_name = 's'").fetchone()[0]
        con.execute("INSERT OR REPLACE INTO study_user_attributes (study_id, key, value_json) VALUES (?, ?, ?)",
                    (study_id, key, json.dumps(value)))
        con.commit()
        con.close()
    before = snapshot(cwd)
    for args in (["report", "--study", "s"], ["run", "--budget", "2e5", "--trials", "3", "--study", "s", *cpu_run_flags(limit_train=100, val_size=100)]):
        line = assert_user_error(run_main(*args, cwd=cwd, env=env(cwd), monkeypatch=monkeypatch, capsys=capsys))
        assert expect in line, line
    assert snapshot(cwd) == before


def test_a_trial_attribute_that_is_not_an_artifact_id_is_refused(cwd, monkeypatch, capsys):
    set_attr(cwd / "studies" / "resnet-search.db", "trial_user_attributes", "checkpoint_artifact", "../../etc/passwd")
    line = assert_user_error(run_main("best", "--study", "s", "--export", cwd / "out", "--data", synthetic_root(), cwd=cwd,
                                      env=env(cwd), monkeypatch=monkeypatch, capsys=capsys))
    assert "not an artifact id" in line


def test_a_storage_url_can_come_from_the_environment(cwd, monkeypatch, capsys):
    url = storage_url(cwd)
    fixtures = {"monkeypatch": monkeypatch, "capsys": capsys}
    result = run_main("best", "--study", "s", "--storage", "env:MY_DB", cwd=cwd, env={**env(cwd), "MY_DB": url}, **fixtures)
    assert result.returncode == 0, result.stderr
    result = run_main("best", "--study", "s", cwd=cwd.parent, env={**env(cwd), "RESNET_SEARCH_STORAGE": url}, **fixtures)
    assert result.returncode == 0, result.stderr
    monkeypatch.delenv("RESNET_SEARCH_STORAGE")
    line = assert_user_error(run_main("best", "--study", "s", "--storage", "env:UNSET_VAR_X", cwd=cwd, env=env(cwd),
                                      **fixtures))
    assert "UNSET_VAR_X is not set" in line


def test_a_killed_export_is_written_over_by_the_same_command(study_dir, tmp_path):
    from search.commands.export import IN_PROGRESS

    out = tmp_path / "winner"
    out.mkdir()
    (out / IN_PROGRESS).write_text("")  # what a SIGKILL midway leaves: the marker and some files
    (out / "spec.json").write_text("{}")
    (out / "model.pt2").write_bytes(b"torn")
    result = run_cli("best", "--study", "s", "--export", out, "--data", synthetic_root(), cwd=study_dir,
                     env=env(study_dir))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model.pt2", "spec.json", "state_dict.pt"]
    again = assert_user_error(run_cli("best", "--study", "s", "--export", out, "--data", synthetic_root(),
                                      cwd=study_dir, env=env(study_dir)))
    assert "not an empty directory" in again  # a whole export is never written over


def test_a_folder_with_the_marker_and_a_file_of_its_own_is_not_taken_for_a_half_export(study_dir, tmp_path):
    from search.commands.export import IN_PROGRESS

    out = tmp_path / "mine"
    out.mkdir()
    (out / IN_PROGRESS).write_text("")
    (out / "notes.txt").write_text("mine")
    line = assert_user_error(run_cli("best", "--study", "s", "--export", out, "--data", synthetic_root(),
                                     cwd=study_dir, env=env(study_dir)))
    assert "not an empty directory" in line and (out / "notes.txt").read_text() == "mine"
