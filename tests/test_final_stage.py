"""The final stage: the search's best distinct specs and its baseline trained again, longer and
unpruned, in a study of their own; the best of them is the winner that `best`, `best --export`,
`retrain` and the report name. It resumes after Ctrl-C like the search does."""

from __future__ import annotations

import io
import json

import optuna
import pytest

from rich.console import Console

from search.commands.live import LiveView
from search.study import record
from search.study.view import LogLines
from search.study import SearchSettings, run_search

from .conftest import TINY_SPACE, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)


def settings(tmp_path, data_root, **changes) -> SearchSettings:
    base = dict(budget=200_000, space=str(TINY_SPACE), study="s", storage=f"sqlite:///{tmp_path}/s.db",
                trials=4, epochs=1, device="cpu", data=str(data_root), limit_train=300, val_size=100, seed=0,
                artifacts=str(tmp_path / "artifacts"), finalists=2)
    return SearchSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_data):
    """A search and its final stage, shown as `run` shows it on a terminal (its screen kept)."""
    tmp = tmp_path_factory.mktemp("final")
    screen = io.StringIO()
    view = LiveView(Console(file=screen, force_terminal=True, width=120))
    study = run_search(settings(tmp, synthetic_data, trial_images=120), view=view)
    (tmp / "screen.txt").write_text(screen.getvalue())
    return tmp, study


def test_the_live_view_labels_the_baseline_and_the_finalists(finished):
    tmp, study = finished
    screen = (tmp / "screen.txt").read_text()
    baseline = next(r for r in record.records(study) if r.baseline)
    assert f"trial {baseline.number}, seeded baseline" in screen  # its epoch bar
    for r in record.finalist_trials(record.final_stage(study)):
        assert f"finalist of trial {r.finalist_of}" in screen


def test_the_finalists_are_the_best_distinct_specs_and_the_baseline_trained_longer_in_their_own_study(finished):
    tmp, study = finished
    final = record.final_stage(study)
    assert final is not None and final.study_name == "s--final"
    assert record.StudyRecord.of(final).stage == "final"
    search = {r.number: r for r in record.records(study)}
    ranked = [record.TrialRecord.of(t) for t in record.best_trials(study, 100)]
    distinct = []
    for r in ranked:
        if r.spec not in [d.spec for d in distinct]:
            distinct.append(r)
    finalists = record.finalist_trials(final)
    baseline = next(r for r in search.values() if r.baseline)
    expected = [r.number for r in distinct[:2]] + ([] if baseline in distinct[:2] else [baseline.number])
    assert [r.finalist_of for r in finalists] == expected
    for r in finalists:
        source = search[r.finalist_of]
        assert r.state == "COMPLETE" and r.spec == source.spec
        assert len(r.curve) == 2 and r.recipe["epochs"] == 2  # twice the search's epochs, none pruned
        assert {k: v for k, v in r.recipe.items() if k != "epochs"} == \
               {k: v for k, v in source.recipe.items() if k != "epochs"}
        assert len(r.losses) == 2
    # The search's own history holds only its own training length: no 2-epoch curve among its trials.
    assert all(len(r.curve) <= 1 for r in search.values())
    # Its trials trained on --trial-images of the training images, the finalists on all of them.
    assert {r.train_images for r in search.values() if r.state != "FAIL" and not r.rejected} == {120}
    assert {r.train_images for r in finalists} == {300}
    assert record.StudyRecord.of(study).trial_images == 120 and record.StudyRecord.of(final).trial_images is None


def test_the_winner_is_the_best_finalist_by_validation(finished):
    _, study = finished
    stage, trial = record.winner(study)
    final = record.final_stage(study)
    assert stage.study_name == final.study_name
    assert trial.value == max(r.value for r in record.finalist_trials(final))


def test_best_export_and_retrain_take_the_final_stages_winner(finished, synthetic_data):
    tmp, study = finished
    storage = f"sqlite:///{tmp}/s.db"
    _, won = record.winner(study)
    source = record.TrialRecord.of(won).finalist_of
    shown = run_cli("best", "--study", "s", "--storage", storage, "--export", tmp / "winner", "--data", synthetic_data,
                    "--artifacts", tmp / "artifacts", cwd=tmp, env={"COLUMNS": "80"})
    assert shown.returncode == 0, shown.stderr
    assert "final stage" in shown.stdout and "winner" in shown.stdout
    # The final stage's table whole at 80 columns: no line wider, no trailing space, no number cut.
    lines = shown.stdout.splitlines()
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines if not line.startswith("exported ")), lines
    for r in record.finalist_trials(record.final_stage(study)):
        assert f"{r.params:,}" in shown.stdout and f"{r.macs:,}" in shown.stdout
    metrics = json.loads((tmp / "winner" / "metrics.json").read_text())
    assert (metrics["trial"], metrics["stage"], metrics["epochs"], metrics["val_acc"]) == (source, "final", 2, won.value)

    # --trial of that very search trial: its final-stage run by default, saying so; --stage search: its search run.
    for stage, epochs in (("final", 2), ("search", 1)):
        out = tmp / f"trial-{source}-{stage}"
        picked = run_cli("best", "--study", "s", "--storage", storage, "--export", out, "--trial", source, "--stage",
                         stage, "--data", synthetic_data, "--artifacts", tmp / "artifacts", cwd=tmp)
        assert picked.returncode == 0, picked.stderr
        assert ("final-stage run" in picked.stderr) == (stage == "final")
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["trial"], metrics["stage"], metrics["epochs"]) == (source, stage, epochs)

    retrained = run_cli("retrain", "--study", "s", "--storage", storage, "--device", "cpu", "--seeds", "1", "--data",
                        synthetic_data, "--artifacts", tmp / "artifacts", cwd=tmp)
    assert retrained.returncode == 0, retrained.stderr
    [entry] = record.StudyRecord.of(optuna.load_study(study_name="s", storage=storage)).retrained
    assert entry["label"].endswith("(final stage)") and entry["trial"] == source and entry["epochs"] == 2


def test_the_report_shows_both_stages(finished):
    from search.commands.report import write_report

    tmp, study = finished
    numbers = write_report(study, tmp / "report")
    rows = numbers["final_stage"]
    assert len(rows) == len(record.finalist_trials(record.final_stage(study)))
    assert sum(r["winner"] for r in rows) == 1 and rows[0]["winner"]  # best first
    assert "Final stage" in (tmp / "report" / "report.md").read_text()


def test_no_final_stage_with_zero_finalists(tmp_path, synthetic_data):
    study = run_search(settings(tmp_path, synthetic_data, trials=2, finalists=0))
    assert record.StudyRecord.of(study).final_study is None
    stage, trial = record.winner(study)
    assert stage.study_name == "s" and trial.number == record.best_trials(study, 1)[0].number


def test_ctrl_c_in_the_final_stage_resumes_it_without_training_a_finalist_twice(tmp_path, synthetic_data):
    class StopInFinalStage(LogLines):
        def log(self, message):
            pass

        def on_trial(self, study, trial):
            if record.StudyRecord.of(study).stage == "final":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(settings(tmp_path, synthetic_data, trials=2), StopInFinalStage())
    storage = f"sqlite:///{tmp_path}/s.db"
    final = optuna.load_study(study_name="s--final", storage=storage)
    first = [r for r in record.records(final) if r.state == "COMPLETE"]
    assert len(first) == 1

    study = run_search(settings(tmp_path, synthetic_data, trials=2))
    finalists = record.finalist_trials(record.final_stage(study))
    assert all(r.state == "COMPLETE" for r in finalists)
    complete = [r for r in record.records(record.final_stage(study)) if r.state == "COMPLETE"]
    assert len(complete) == len(finalists)  # the finished finalist was not trained again
    assert record.trained_count(study) == 2  # the search itself took no more trials
