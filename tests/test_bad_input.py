"""Bad input through the command line: one clear line on stderr, exit code 2, no traceback, and
nothing recorded changes: not the database, the folders or the data cache."""

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess

import optuna
import pytest
import torch
from PIL import Image

from .conftest import (TINY_SPACE, assert_user_error, cpu_run_flags, run_cli, run_main, run_small_study,
                       storage_url, synthetic_root)

QUICK = cpu_run_flags(limit_train=100, val_size=100)
M1 = ["--blocks", "8,6,4,3", "--channels", "32,64,128,256"]


def cache_env(cwd) -> dict:
    """The data cache under cwd (so a snapshot sees it), and the study's images named as a user would."""
    return {"RESNET_SEARCH_CACHE": str(cwd / "cache"), "RESNET_SEARCH_DATA": str(synthetic_root()),
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


def space_with(cwd, name: str, old: str, new: str) -> None:
    """A copy of the tiny space with one line changed."""
    text = TINY_SPACE.read_text()
    assert old in text, old
    (cwd / name).write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    """A real study with two trials, plus the bad files the cases point at."""
    cwd = tmp_path_factory.mktemp("bad")
    run_small_study(cwd, "base", 2, env=cache_env(cwd), limit_train=100, val_size=100)
    optuna.create_study(study_name="empty", storage=storage_url(cwd))
    (cwd / "bad.toml").write_text("[space\nstages = 3\n")
    (cwd / "bad-macs.toml").write_text("macs_budget = '500 MACs'\n" + TINY_SPACE.read_text())
    (cwd / "unknown-key.toml").write_text("[space]\nstages = [3]\nblocks = 1\nwidth = 3\n")
    (cwd / "even.toml").write_text("[space]\nstages = [3]\nblocks = 1\nconv_kernel = [4]\n")
    (cwd / "adagrad.toml").write_text("[space]\nstages = [3]\nblocks = 1\n[recipe]\noptimizer = 'adagrad'\n")
    (cwd / "rmsprop.toml").write_text(TINY_SPACE.read_text().replace('optimizer = "sgd"',
                                                                     'optimizer = ["sgd", "rmsprop", "adam"]'))
    (cwd / "low-high.toml").write_text(TINY_SPACE.read_text().replace("blocks = {low = 1, high = 2}",
                                                                      "blocks = {low = 2, high = 1}"))
    (cwd / "a-file").write_text("not a folder")
    space_with(cwd, "growth-huge.toml", "growth = [2.0]", "growth = [1e308]")
    space_with(cwd, "growth-1e10.toml", "growth = [2.0]", "growth = [1e10]")
    space_with(cwd, "wide-floor.toml", "min_channels = 4", "min_channels = 4096")
    (cwd / "artifacts-empty.toml").write_text("artifacts = ''\n" + TINY_SPACE.read_text())
    (cwd / "artifacts-bucket.toml").write_text("artifacts = 's3://bucket/x'\n" + TINY_SPACE.read_text())
    space_with(cwd, "crop.toml", "[recipe]", "[recipe]\ncrop_padding = 1000000")
    space_with(cwd, "ten-classes.toml", "[space]", "[space]\nclasses = 10")
    (cwd / "twelve-classes.json").write_text(json.dumps({"blocks": [1], "channels": [8], "classes": 12}))
    (cwd / "synthetic-link").symlink_to(synthetic_root())
    (cwd / "export-here").mkdir()
    (cwd / "export-here" / "keep.txt").write_text("mine")
    twelve = tuple(f"c{i}" for i in range(12))
    ten = ("cat", "dog") + tuple(f"c{i}" for i in range(8))
    for name, classes in (("corrupt", ten), ("one-class", ("cat",)), ("twelve", twelve),
                          ("empty-class", ("cat", "dog")), ("not-image", ("cat", "dog")),
                          ("mismatch", ("cat", "dog")), ("train-only", ("cat", "dog")), ("loop", ("cat", "dog"))):
        for split in ("train", "test"):
            for c in classes:
                (cwd / name / split / c).mkdir(parents=True)
                for i in range(6):
                    Image.new("RGB", (32, 32), (40 * i, 9, 9)).save(cwd / name / split / c / f"{i}.png")
    (cwd / "corrupt" / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    for f in (cwd / "empty-class" / "train" / "dog").iterdir():
        f.unlink()
    (cwd / "not-image" / "train" / "cat" / "notes.txt").write_text("not an image")
    (cwd / "mismatch" / "test" / "dog").rename(cwd / "mismatch" / "test" / "wolf")
    shutil.rmtree(cwd / "train-only" / "test")
    (cwd / "loop" / "train" / "cat" / "self.png").symlink_to("self.png")  # a link to itself
    for name in ("fresh", "bad-test"):  # never decoded, so a refusal would be the first to cache them
        for split in ("train", "test"):
            for c in ("cat", "dog"):
                (cwd / name / split / c).mkdir(parents=True)
                for i in range(6):
                    Image.new("RGB", (32, 32), (40 * i, 99, 9)).save(cwd / name / split / c / f"{i}.png")
    (cwd / "bad-test" / "test" / "dog" / "broken.png").write_bytes(b"\x89PNG torn")
    space_with(cwd, "lr-huge.toml", "lr = {low = 0.05, high = 0.2, log = true}", "lr = 1e308")
    space_with(cwd, "lr-range-huge.toml", "high = 0.2, log = true}", "high = 1e300, log = true}")
    space_with(cwd, "wd-huge.toml", "weight_decay = 5e-4", "weight_decay = 1e308")
    (cwd / "deep-tables.toml").write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    (cwd / "deep-arrays.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    os.mkfifo(cwd / "fifo.toml")
    (cwd / "empty.db").write_bytes(b"")
    con = sqlite3.connect(cwd / "foreign.db")
    con.execute("CREATE TABLE notes (text TEXT)")
    con.commit()
    con.close()
    return cwd


def snapshot(cwd) -> dict:
    """Every folder, link and file's bytes under cwd: the database, studies/ (artifacts,
    checkpoints, reports, retrain), the data cache and the data folders."""
    state = {}
    for folder, dirs, files in os.walk(cwd):
        for name in dirs + files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, cwd)
            if os.path.islink(path):
                state[key] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                state[key] = "folder"
            elif not os.path.isfile(path):
                state[key] = "not a regular file"  # a FIFO: reading it would block
            else:
                with open(path, "rb") as f:
                    state[key] = hashlib.sha1(f.read()).hexdigest()
    return state


CASES = [
    # budget
    (["run", "--budget", "0", *QUICK], "positive number"),
    (["run", "--budget=-5e6", *QUICK], "positive number"),
    (["run", "--budget", "NaN", *QUICK], "not a number"),
    (["run", "--budget", "lots", *QUICK], "not a number"),
    (["run", "--budget", "5e6", "--study", "base", *QUICK], "--budget 200,000, not 5,000,000"),
    (["run", "--budget", "-5e6", *QUICK], "'-5e6' must be a positive number of parameters (at least 1)"),
    (["run", "--budget", "0.5", *QUICK], "at least 1"),
    (["count", *M1, "--budget", "1.5"], "whole number"),
    (["count", *M1, "--budget", "inf"], "not a number"),
    # MACs budget
    (["run", "--macs-budget", "0", *QUICK], "MACs budget: '0' must be a positive number of MACs (at least 1)"),
    (["run", "--macs-budget", "-5e6", *QUICK], "MACs budget: '-5e6' must be a positive number of MACs"),
    (["run", "--macs-budget", "lots", *QUICK], "MACs budget: 'lots' is not a number"),
    (["run", "--macs-budget", "1.5", *QUICK], "MACs budget: '1.5' is not a whole number of MACs"),
    (["run", "--macs-budget", "1e16", *QUICK], "over the largest budget accepted (1e15 MACs)"),
    (["run", "--macs-budget", "5M", "--study", "base", *QUICK], "--macs-budget none, not 5,000,000"),
    (["run", "--space", "{cwd}/bad-macs.toml", "--device", "cpu"], "MACs budget: '500 MACs' is not a number"),
    # spec flags
    (["count", "--blocks", "0,6,4,3", "--channels", "32,64,128,256"], "at least 1"),
    (["count", "--blocks", "8,6,4", "--channels", "32,64,128,256"], "3 stages"),
    (["count", *M1, "--conv-kernel", "4"], "odd"),
    (["count", *M1, "--conv-kernel", "3,3"], "2 values given for 4 stages"),
    (["count", *M1, "--skip-kernel", "0"], "at least 1"),
    (["count", *M1, "--pool", "0"], "pool"),
    (["count", *M1, "--pool", "four"], "invalid int"),
    (["count", "--blocks", "8,six,4,3", "--channels", "32,64,128,256"], "not a comma-separated list"),
    (["count", "--blocks", "1,1,1,1,1,1,1", "--channels", "8,8,8,8,8,8,8"], "at most 6"),
    (["count", "--channels", "32,64"], "--blocks"),
    # study files
    (["run", "--space", "{cwd}/bad.toml", "--device", "cpu"], "not valid TOML"),
    (["run", "--space", "{cwd}/missing.toml", "--device", "cpu"], "does not exist"),
    (["run", "--space", "{cwd}/unknown-key.toml", "--device", "cpu"], "unknown keys width"),
    (["run", "--space", "{cwd}/even.toml", "--device", "cpu"], "odd"),
    (["run", "--space", "{cwd}/adagrad.toml", "--device", "cpu"], "optimizer must be one of"),
    (["run", "--space", "{cwd}", "--device", "cpu"], "cannot be read"),
    (["run", "--space", "{cwd}/rmsprop.toml", *QUICK[:-3], "--quiet"], "rmsprop"),
    (["run", "--space", "{cwd}/low-high.toml", *QUICK[:-3], "--quiet"], "low 2 is above high 1"),
    # storage URLs
    (["best", "--storage", "redis://localhost/0"], "not an Optuna RDB URL"),
    (["best", "--storage", "sqlite:///{cwd}/studies"], "is a directory"),
    (["best", "--storage", "postgresql://postgres@127.0.0.1:9/none"], "cannot reach storage"),
    (["run", "--storage", "nonsense", *QUICK], "not an Optuna RDB URL"),
    (["run", "--storage", "sqlite:///{cwd}/a-file/x.db", *QUICK], "{cwd}/a-file is not a folder"),
    (["best", "--storage", "sqlite:///{cwd}/a-file/x.db"], "no database file"),
    (["best", "--storage", "sqlite:///{cwd}/new/x.db"], "no database file"),
    (["report", "--storage", "sqlite:///{cwd}/new.db"], "no database file"),
    # study names: plain names, never paths
    (["run", "--study", "{cwd}/elsewhere", *QUICK], "not a study name"),
    (["run", "--study", "../../x", *QUICK], "not a study name"),
    (["run", "--study", "..", *QUICK], "not a study name"),
    (["report", "--study", "a/b"], "not a study name"),
    (["best", "--study", "nope"], "no study named 'nope'"),
    (["best", "--study", "empty"], "no completed trial"),
    (["dashboard", "--study", "nope"], "no study named 'nope'"),
    (["run", "--study", "", *QUICK], "not a study name"),
    # artifacts and output folders
    (["run", "--study", "new", *QUICK, "--artifacts", "{cwd}/a-file"], "{cwd}/a-file is not a folder"),
    (["run", "--study", "new", *QUICK, "--artifacts", "{cwd}/a-file/sub"], "{cwd}/a-file is not a folder"),
    # object storage (no server answers at the endpoint cache_env names)
    (["run", "--study", "new", *QUICK, "--artifacts", "s3://bucket/x"],
     "artifact store s3://bucket/x cannot be used: Could not connect to the endpoint URL"),
    (["best", "--study", "base", "--export", "{cwd}/exported", "--artifacts", "s3://bucket/x"],
     "artifact store s3://bucket/x cannot be used"),
    (["run", "--study", "new", *QUICK, "--artifacts", "s3://Bad_Bucket/x"], "'Bad_Bucket' is not a bucket name"),
    (["run", "--study", "new", *QUICK, "--artifacts", "s3://"], "artifact store 's3://': '' is not a bucket name"),
    (["run", "--study", "new", *QUICK, "--artifacts", "s3://AKIA:wJalr@bucket/x"],
     "artifact store 's3://***@bucket/x': credentials go in the environment"),
    (["run", "--study", "new", *QUICK, "--artifacts", "ftp://host/x"], "a folder, or s3://bucket/prefix"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/artifacts-empty.toml"], "artifacts = '' must be a non-empty"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/artifacts-bucket.toml"], "artifact store s3://bucket/x cannot"),
    (["dashboard", "--study", "empty", "--artifacts", "{cwd}/a-file/sub"], "{cwd}/a-file is not a folder"),
    (["dashboard", "--study", "base", "--port", "70000"], "port 70000"),
    (["best", "--study", "base", "--export", "{cwd}/a-file/sub"], "{cwd}/a-file is not a folder"),
    (["report", "--study", "base", "--out", "{cwd}/a-file"], "{cwd}/a-file is not a folder"),
    (["report", "--study", "base", "--out", "{cwd}/a-file/sub"], "{cwd}/a-file is not a folder"),
    (["retrain", "--study", "base", "--device", "cpu", "--out", "{cwd}/a-file/sub"], "{cwd}/a-file is not a folder"),
    (["retrain", "--study", "base", "--device", "cpu", "--spec", "{cwd}/a-file/x.json"], "cannot be read"),
    (["retrain", "--study", "base", "--device", "cpu", "--spec", "{cwd}/twelve-classes.json"], "has 10 classes"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/a-file/x.toml"], "cannot be read"),
    # study-file values that pass the type check but no network or recipe survives
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/growth-huge.toml"], "1e+308 must be between 1 and 16"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/growth-1e10.toml"], "must be between 1 and 16"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/wide-floor.toml"], "nothing in this space fits"),
    (["run", "--study", "new", *QUICK, "--budget", "100"], "nothing in this space fits"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/crop.toml"], "crop_padding must be in [0, 32]"),
    # numbers with a limit
    (["run", "--study", "new", *QUICK, "--seed", "-1"], "seed -1 must be between 0 and 4294967295"),
    (["run", "--study", "new", *QUICK, "--seed", str(2**64)], "must be between 0 and 4294967295"),
    (["run", "--study", "new", *QUICK, "--budget", "1e12", "--no-baseline"], "GiB"),
    (["run", "--study", "new", *QUICK, "--budget", "1e15"], "GiB"),
    (["run", "--study", "new", *QUICK, "--heartbeat", "99999999999"], "heartbeat 99999999999"),
    # data paths and images
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/missing"], "{cwd}/missing does not exist"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/a-file/sub"], "does not exist"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/train-only"], "has train/ but no test/"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/loop"], "self.png: Too many levels of symbolic links"),
    (["run", "--study", "base", *QUICK, "--data", "{cwd}/a-file"], "not a directory"),
    (["run", "--study", "base", *QUICK, "--data", "{cwd}/corrupt", "--val-size", "2", "--limit-train", "8"],
     "broken.jpg"),
    (["run", "--study", "base", *QUICK, "--data", "{cwd}/one-class"], "one folder per class"),
    (["run", "--study", "new", *QUICK[:-3], "--space", "{cwd}/ten-classes.toml", "--quiet", "--data", "{cwd}/twelve",
      "--val-size", "24", "--limit-train", "8"], "has 12 classes (c0, c1, c10"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/empty-class"], "has no images"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/not-image"], "notes.txt is not an image"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/mismatch"], "need the same class folders"),
    (["run", "--study", "base", *QUICK, "--limit-train", "0"], "at least 1"),
    (["run", "--study", "base", *QUICK, "--limit-train", "1000000"], "training limit"),
    (["run", "--study", "base", *QUICK, "--val-size", "60000"], "validation size"),
    (["run", "--study", "base", *QUICK, "--trial-images", "0"], "at least 1"),
    (["run", "--study", "base", *QUICK, "--trial-images", "101"], "--trial-images 101 is more than --limit-train 100"),
    (["run", "--study", "base", *QUICK[:4], *QUICK[6:], "--trial-images", "100000"],
     "--trial-images 100,000 must be between 1 and the"),
    (["run", "--study", "base", *QUICK, "--trial-images", "50"], "was run with --trial-images none, not 50"),
    # devices
    (["run", "--study", "base", *QUICK, "--device", "cuda:0"], "CUDA device"),
    (["run", "--study", "base", *QUICK, "--device", "tpu"], "is not auto, cpu, cuda"),
    (["run", "--study", "base", *QUICK, "--device", "cuda:x"], "is not auto, cpu, cuda"),
    # export paths
    (["best", "--study", "base", "--export", "{cwd}/export-here"], "not an empty directory"),
    (["best", "--study", "base", "--export", "{cwd}/a-file"], "not an empty directory"),
    (["best", "--study", "base", "--trial", "1"], "--trial 1 names the trial to export: give --export DIR with it"),
    (["best", "--study", "base", "--export", "{cwd}/new", "--trial", "99"], "has no trial 99 (its trials are 0 to"),
    (["best", "--study", "base", "--export", "{cwd}/new", "--trial", "-1"], "is not a trial number of at least 0"),
    (["best", "--study", "base", "--export", "{cwd}/new", "--trial", "one"], "'one' is not a trial number"),
    # numbers and commands
    (["run", "--study", "base", *QUICK, "--trials", "0"], "at least 1"),
    (["run", "--study", "base", *QUICK, "--epochs", "two"], "not an integer"),
    (["run", "--study", "base", *QUICK, "--timeout=-1"], "positive number"),
    (["train"], "invalid choice"),
    # recipe values no float32 holds
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/lr-huge.toml"], "lr must be in (0, 100], not 1e+308"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/lr-range-huge.toml"], "lr must be in (0, 100]"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/wd-huge.toml"], "weight_decay must be in [0, 1]"),
    # study files that are no files, or nested past reason
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/deep-tables.toml"], "nested too deeply"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/deep-arrays.toml"], "nested too deeply"),
    (["run", "--study", "new", *QUICK, "--space", "{cwd}/fifo.toml"], "not a regular file"),
    # SQLite files that are not Optuna's: read, never written
    (["best", "--storage", "sqlite:///{cwd}/empty.db"], "empty.db is not an Optuna database"),
    (["best", "--storage", "sqlite:///{cwd}/foreign.db"], "foreign.db is not an Optuna database"),
    (["run", "--study", "new", *QUICK, "--storage", "sqlite:///{cwd}/foreign.db"], "holds other tables"),
    # refusals that come before new images are decoded, or after, leave no cache
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/fresh", "--val-size", "2", "--storage", "foo://bar"],
     "not an Optuna RDB URL"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/fresh", "--val-size", "2", "--storage", "sqlite:///{cwd}"],
     "is a directory"),
    (["run", "--study", "base", *QUICK, "--data", "{cwd}/fresh", "--val-size", "2", "--limit-train", "8"],
     "was run with --space"),
    (["run", "--study", "new", *QUICK, "--data", "{cwd}/bad-test", "--val-size", "2", "--limit-train", "8"],
     "broken.png"),
    # names and folders
    (["run", "--study", "base--final", *QUICK], "is a search's final stage"),
    (["run", "--study", "new", *QUICK, "--artifacts", ""], "an empty path names no folder"),
    (["best", "--storage", "env:RESNET_SEARCH_NO_SUCH_VAR"], "RESNET_SEARCH_NO_SUCH_VAR is not set"),
    # the storage proxy
    (["run", "--study", "new", *QUICK, "--storage", "grpc://127.0.0.1"], "a storage proxy is grpc://HOST:PORT"),
    (["run", "--study", "new", *QUICK, "--storage", "grpc://127.0.0.1:9", "--storage-retry", "1"],
     "cannot reach storage proxy grpc://127.0.0.1:9 (waited 10 s)"),
    (["serve-storage", "--storage", "grpc://127.0.0.1:9"], "serves a database"),
    (["serve-storage", "--storage", "foo://bar"], "not an Optuna RDB URL"),
    (["dashboard", "--study", "base", "--host", "no-such-host.invalid"], "is not an address of this machine"),
]


@pytest.mark.parametrize("args, expect", CASES, ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(CASES)])
def test_bad_input(cwd, args, expect, monkeypatch, capsys):
    if torch.cuda.is_available() and "cuda:0" in args:
        pytest.skip("this machine has CUDA")
    before = snapshot(cwd)
    line = assert_user_error(run_main(*[a.format(cwd=cwd) for a in args], cwd=cwd, env=cache_env(cwd),
                                      monkeypatch=monkeypatch, capsys=capsys))
    assert expect.format(cwd=cwd) in line, line
    after = snapshot(cwd)
    assert after == before, {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k)}


def test_same_data_through_another_folder_name_is_the_same_data(cwd):
    """A study resumed with its data reached through a link (another folder name, the same
    images) is not refused as other data: data is known by its fingerprint."""
    result = run_cli("run", "--budget", "2e5", "--trials", "2", "--study", "base",
                     *cpu_run_flags(limit_train=100, val_size=100, data=cwd / "synthetic-link"), cwd=cwd,
                     env=cache_env(cwd))
    assert result.returncode == 0, result.stderr


def test_an_unreadable_class_folder_is_one_line(tmp_path, monkeypatch):
    """A class folder that cannot be listed (permissions; root reads any, so it is simulated)."""
    from search.engine import data

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32)).save(tmp_path / split / c / f"{i}.png")
    locked, scandir = tmp_path / "train" / "dog", os.scandir

    def refuse(path):
        if os.fspath(path) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(data.os, "scandir", refuse)
    with pytest.raises(data.DataError, match="cannot read .*dog: Permission denied"):
        data.load_data(tmp_path, val_size=2)


def test_a_refusal_in_a_new_folder_leaves_nothing_behind(cwd, tmp_path):
    """Refused as its images are decoded (the last check), a first run leaves no empty database,
    no studies/ folder and no cache: the data is read before the storage is opened."""
    line = assert_user_error(run_cli("run", "--study", "new", *QUICK, "--data", cwd / "corrupt", "--val-size", "2",
                                     "--limit-train", "8", cwd=tmp_path, env=cache_env(tmp_path)))
    assert "broken.jpg" in line and not list(tmp_path.iterdir())


def test_a_port_in_use_is_one_line(cwd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = snapshot(cwd)
        line = assert_user_error(run_cli("dashboard", "--study", "base", "--port", port, cwd=cwd, env=cache_env(cwd)))
    assert f"cannot serve on 127.0.0.1:{port}" in line and snapshot(cwd) == before


@pytest.fixture(scope="module")
def read_only(cwd, tmp_path_factory):
    """A read-only file system holding a copy of the study's database: what permissions cannot
    stop root from writing, a read-only mount does. Skipped, saying why, where mounting is not allowed."""
    mount = tmp_path_factory.mktemp("read-only")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {made.stderr.strip()[:200]}")
    shutil.copy(cwd / "studies" / "resnet-search.db", mount / "studies.db")
    (mount / "folder").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)])


READ_ONLY_CASES = [
    (["best", "--study", "base", "--export", "{ro}/folder/out"], "export path {ro}/folder/out cannot be written"),
    (["report", "--study", "base", "--out", "{ro}/folder/sub/report"], "report folder {ro}/folder/sub/report cannot"),
    (["retrain", "--study", "base", "--device", "cpu", "--out", "{ro}/folder/sub"], "cannot be written"),
    (["run", "--study", "new", *QUICK, "--artifacts", "{ro}/folder/artifacts"], "cannot be written"),
    (["run", "--study", "new", *QUICK, "--artifacts", "{ro}/folder"], "artifact store {ro}/folder cannot be written"),
    (["run", "--study", "base", *QUICK, "--storage", "sqlite:///{ro}/studies.db"], "studies.db cannot be written"),
    (["best", "--study", "base", "--export", "{cwd}/ro-export", "--storage", "sqlite:///{ro}/studies.db"],
     "studies.db cannot be written"),
    (["retrain", "--study", "base", "--device", "cpu", "--storage", "sqlite:///{ro}/studies.db"],
     "studies.db cannot be written"),
]


@pytest.mark.parametrize("args, expect", READ_ONLY_CASES, ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(READ_ONLY_CASES)])
def test_outputs_that_cannot_be_written_are_one_line(cwd, read_only, args, expect):
    before = snapshot(cwd)
    fill = {"cwd": cwd, "ro": read_only}
    line = assert_user_error(run_cli(*[a.format(**fill) for a in args], cwd=cwd, env=cache_env(cwd)))
    assert expect.format(**fill) in line, line
    assert snapshot(cwd) == before
    assert best_of_base_unchanged(read_only)


def best_of_base_unchanged(read_only) -> bool:
    return sorted(p.name for p in read_only.iterdir()) == ["folder", "studies.db"] and not any(
        (read_only / "folder").iterdir())
