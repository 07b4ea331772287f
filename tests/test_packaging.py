"""A non-editable install: the wheel ships the study files of studies/ (one copy in the
repository), and `run --space cpu-small` finds them by name from any folder."""

import os
import subprocess
import sys
import zipfile

import optuna

from search.study.record import StudyRecord

from .conftest import REPO, cpu_run_flags


def test_wheel_ships_the_study_files_and_run_finds_them_from_any_folder(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("resnet_search-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.endswith(".toml")) == \
        sorted(f"resnet_space/studies/{p.name}" for p in (REPO / "studies").glob("*.toml"))
    assert not any(n.endswith(".db") for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    flags = cpu_run_flags(limit_train=100, val_size=100)
    flags[flags.index("--space") + 1] = "cpu-small"  # by name, not by path
    result = subprocess.run([sys.executable, "-m", "search.commands.cli", "run", "--study", "w", "--trials", "1", *flags],
                            cwd=elsewhere, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{elsewhere}/studies/resnet-search.db")
    assert StudyRecord.of(study).study_file == str(site / "resnet_space" / "studies" / "cpu-small.toml")
