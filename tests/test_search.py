"""The search called from Python (run_search), on small synthetic images: what --trials counts,
studies that refuse mixed settings, and a space in which nothing fits."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from resnet_space import Budget
from resnet_space.errors import UserError
from search.study import record
from search.study import objective
from search.study import SearchSettings, run_search
from search.study.layout import Outputs, storage_tag

from .conftest import TINY_SPACE, assert_user_error, run_cli, write_image_folder

optuna.logging.set_verbosity(optuna.logging.WARNING)


def settings(tmp_path, data_root, **changes) -> SearchSettings:
    base = dict(budget=200_000, space=str(TINY_SPACE), study="s", storage=f"sqlite:///{tmp_path}/s.db",
                trials=2, epochs=1, device="cpu", data=str(data_root), val_size=50, seed=0,
                artifacts=str(tmp_path / "artifacts"), finalists=0)  # the final stage: test_final_stage.py
    return SearchSettings(**{**base, **changes})


def test_run_search_from_python_counts_trained_trials(tmp_path, synthetic_data):
    stopped = []
    study = run_search(settings(tmp_path, synthetic_data), on_stop=lambda study, outputs: stopped.append(outputs))
    trials = record.records(study)
    assert sum(r.counts_as_trained for r in trials) == 2
    assert all(r.curve and r.params < 200_000 for r in trials if r.counts_as_trained)
    assert record.StudyRecord.of(study).settings["epochs"] == 1
    [outputs] = stopped  # where the command line writes its report: beside the artifacts, derived in one place
    # Not the default storage: the folder names it too, so that a study "s" of another storage has its own.
    assert outputs.reports.parent == tmp_path / "reports" and outputs.reports.name.startswith("s@s-")
    assert Outputs(outputs.artifacts, "s").reports == tmp_path / "reports" / "s"
    elsewhere = Outputs(outputs.artifacts, "s", f"sqlite:///{tmp_path}/other/s.db")
    assert len({outputs.reports, elsewhere.reports, Outputs(outputs.artifacts, "s").reports}) == 3
    assert storage_tag("postgresql://u:secret@db:5432/studies").startswith("studies-")
    assert "secret" not in storage_tag("postgresql://u:secret@db:5432/studies")


def test_rejected_proposals_do_not_use_up_trials(tmp_path, synthetic_data):
    # first_channels 8 fits under 20,000 params; 64 never does: about half the proposals are rejected.
    space = tmp_path / "half.toml"
    space.write_text(TINY_SPACE.read_text().replace('fill = {low = 0.05, high = 0.2}', 'first_channels = [8, 64]'))
    study = run_search(settings(tmp_path, synthetic_data, space=str(space), budget=20_000, trials=3, baseline=False))
    trials = record.records(study)
    assert sum(r.counts_as_trained for r in trials) == 3
    assert sum(r.over_budget for r in trials) >= 1, "the seed drew no 64-wide spec: pick another"
    assert all(not r.curve for r in trials if r.over_budget)


def test_a_space_where_nothing_fits_is_refused_before_anything_is_recorded(tmp_path, synthetic_data):
    with pytest.raises(UserError, match="its smallest network, .* nothing in this space fits"):
        run_search(settings(tmp_path, synthetic_data, budget=500, baseline=False))
    assert not (tmp_path / "s.db").exists()


@pytest.fixture(scope="module")
def resumable(tmp_path_factory, synthetic_data):
    """A finished study, and the snapshot a refused resume must leave unchanged."""
    tmp = tmp_path_factory.mktemp("mixed")
    other_space = tmp / "other.toml"
    other_space.write_text(TINY_SPACE.read_text().replace("skip_kernel = [1, 3]", "skip_kernel = [1]"))
    other_recipe = tmp / "other-recipe.toml"
    other_recipe.write_text(TINY_SPACE.read_text().replace("label_smoothing = 0.1", "label_smoothing = 0.2"))
    other_data = write_image_folder(tmp / "other-data", train_per_class=31)
    study = run_search(settings(tmp, synthetic_data, trials=1))
    return tmp, {"space": {"space": str(other_space)}, "recipe": {"space": str(other_recipe)},
                 "data": {"data": str(other_data)}}, len(study.trials)


@pytest.mark.parametrize("change, flag", [
    ({"epochs": 2}, "--epochs 1, not 2"),
    ({"budget": 300_000}, "--budget 200,000, not 300,000"),
    ({"seed": 1}, "--seed 0, not 1"),
    ({"val_size": 60}, "--val-size 50, not 60"),
    ({"limit_train": 100}, "--limit-train none, not 100"),
    ({"sampler": "random"}, "--sampler tpe, not random"),
    ("space", "--space (its [space] table)"),
    ("recipe", "--space (its [recipe] table)"),
    ("data", "--data"),
])
def test_resuming_with_other_settings_is_refused_before_anything_is_recorded(resumable, synthetic_data, change, flag):
    tmp, others, trials = resumable
    if isinstance(change, str):
        change = others[change]
    with pytest.raises(UserError, match="was run with") as refused:
        run_search(settings(tmp, synthetic_data, trials=3, **change))
    assert flag in str(refused.value) and "new --study" in str(refused.value)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp}/s.db")
    assert len(study.trials) == trials


def test_refusal_through_the_cli_is_one_line(resumable, synthetic_data):
    tmp, *_ = resumable
    result = run_cli("run", "--budget", "2e5", "--study", "s", "--storage", f"sqlite:///{tmp}/s.db", "--device", "cpu",
                     "--space", TINY_SPACE, "--epochs", "3", "--val-size", "50", "--data", synthetic_data,
                     "--artifacts", tmp / "artifacts", "--quiet", cwd=tmp)
    assert "--epochs 1, not 3" in assert_user_error(result)


def test_shipped_study_files_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    from search.study.layout import resolve_space, shipped_spaces

    monkeypatch.chdir(tmp_path)
    assert {"default", "paper", "cpu-small"} <= set(shipped_spaces())
    from resnet_space.space import StudyFile

    shipped = resolve_space("cpu-small")
    assert shipped.is_absolute() and shipped.name == "cpu-small.toml" and StudyFile.load(shipped).budget == Budget(200_000)
    (tmp_path / "cpu-small.toml").write_text("# mine\n")
    assert resolve_space("cpu-small.toml") == Path("cpu-small.toml")  # a user's own file wins


def test_same_seed_same_search(tmp_path, synthetic_data):
    """One worker on a fresh study, run twice with the same seed, proposes the same specs and
    recipes in the same order; another seed proposes others."""
    def proposed(name, seed):
        study = run_search(settings(tmp_path, synthetic_data, study=name, seed=seed, trials=4, limit_train=200,
                                    baseline=False))
        return [(r.summary, r.recipe["lr"]) for r in record.records(study)]

    first = proposed("a", 3)
    assert len(first) == 4 and first == proposed("b", 3)
    assert first != proposed("c", 4)


def test_no_baseline_where_not_even_its_narrowest_fits_says_why(tmp_path, synthetic_data):
    """Model 1's shape at channels 1-2-4-8 counts 5,235 params; the tiny space's N2 B1-1 C4-8 counts
    2,654: under a budget of 4,000 the search trains, without a baseline, and says so in one line."""
    from search.study.view import LogLines

    lines = []

    class Collect(LogLines):
        def log(self, message):
            lines.append(message)

    study = run_search(settings(tmp_path, synthetic_data, budget=4_000, trials=1), Collect())
    [said] = [line for line in lines if line.startswith("no baseline")]
    assert "channels 1-2-4-8" in said and "4,000 params" in said
    trials = record.records(study)
    assert not any(r.baseline for r in trials) and sum(r.counts_as_trained for r in trials) == 1


def test_a_spec_and_recipe_trained_already_is_not_trained_again(tmp_path, synthetic_data, monkeypatch):
    """A space of two networks under a fixed recipe: each trains once, every later proposal of
    either is recorded as a duplicate (free, no place among --trials), and asking for a third
    network ends in one line once the proposals are all duplicates."""
    monkeypatch.setattr(objective, "GIVE_UP_AFTER", 20)  # each duplicate costs Optuna's bookkeeping
    space = tmp_path / "two.toml"
    space.write_text(TINY_SPACE.read_text().replace('fill = {low = 0.05, high = 0.2}', 'first_channels = [8, 12]')
                     .replace("stages = [2, 3]", "stages = [2]").replace("blocks = {low = 1, high = 2}", "blocks = 1")
                     .replace("skip_kernel = [1, 3]", "skip_kernel = [1]")
                     .replace("lr = {low = 0.05, high = 0.2, log = true}", "lr = 0.1"))
    with pytest.raises(UserError, match="holds no other network"):
        run_search(settings(tmp_path, synthetic_data, space=str(space), trials=3, baseline=False, limit_train=100))
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db")
    trials = record.records(study)
    trained = [r.summary for r in trials if r.counts_as_trained]
    assert sorted(trained) == sorted(set(trained)) and len(trained) == 2
    assert all("trained the same spec and recipe" in r.prune_reason for r in trials if r.duplicate)
