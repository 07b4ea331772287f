"""Retraining the winner: the best trial, the baseline, a named trial or a spec file,
trained again on training + validation images with several seeds and tested once after the final
epoch; recorded with the study, exported like `best --export`, resumable. On CPU, with a tiny
study of synthetic images (no real data needed)."""

import json
import os
import statistics
from pathlib import Path

import optuna
import pytest
import torch

from resnet_space import MODEL_1, Recipe, ResNetSpec, count
from resnet_space.model import build_model
from search.study import record
from search.commands.cli import main
from search.engine.data import Dataset, ImageSet, load_data
from search.commands.retrain import (RetrainError, RetrainSettings, choose_target, closest_to_mean, full_training_data,
                            retrain, summarize)
from search.engine.train import completed_epochs, train

from .conftest import TINY_SPACE, assert_user_error, run_cli, storage_url, write_image_folder

CLASSES = 10
TINY = ResNetSpec((1, 1), (8, 16), 3, 1, 4)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Decoded images cached in the test's own folder, and the study's images named as a user
    would name them (RESNET_SEARCH_DATA), for the subprocesses and this one."""
    cache, data = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("images")
    write_image_folder(data, train_per_class=32, test_per_class=10)
    given = {"RESNET_SEARCH_CACHE": str(cache), "RESNET_SEARCH_DATA": str(data)}
    old = {k: os.environ.get(k) for k in given}
    os.environ.update(given)
    yield given
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def cwd(tmp_path_factory, env):
    """A tiny study run as a user would, on synthetic images: the baseline (Model 1's shape
    scaled to the 2e5 budget) and another trial, 1 epoch each on 200 images, 100 held out."""
    cwd = tmp_path_factory.mktemp("retrain")
    result = run_cli("run", "--budget", "2e5", "--trials", "2", "--study", "s", "--finalists", "0", "--device", "cpu", "--epochs", "1",
                     "--limit-train", "200", "--val-size", "100", "--data", env["RESNET_SEARCH_DATA"], "--space", TINY_SPACE,
                     "--quiet", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return cwd


def load(cwd, name="s"):
    return optuna.load_study(study_name=name, storage=storage_url(cwd))


def settings(cwd, **values):
    return RetrainSettings(study=values.pop("study", "s"), storage=values.pop("storage", storage_url(cwd)),
                           device="cpu", **values)


def quiet(message):
    pass


# ---------------------------------------------------------------- end to end through the CLI


@pytest.fixture(scope="module")
def retrained(cwd, env):
    """`resnet-search retrain --seeds 2 --epochs 1` of the study's best trial, as a user would."""
    result = run_cli("retrain", "--study", "s", "--seeds", "2", "--epochs", "1", "--device", "cpu", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_retrain_records_every_seed_and_the_statistics(cwd, retrained):
    study = load(cwd)
    best = study.best_trial
    [entry] = record.StudyRecord.of(study).retrained
    assert set(record.RETRAINED_KEYS) <= set(entry)
    assert entry["label"] == f"trial {best.number}" and entry["trial"] == best.number and entry["baseline"] is False
    assert entry["summary"] == best.user_attrs["summary"] and entry["params"] == best.user_attrs["params"]
    assert entry["epochs"] == 1 and entry["seeds"] == 2 and entry["dataset"] == best.user_attrs["dataset"]
    assert entry["train_images"] == 300 and entry["test_images"] == 100  # training + validation images together
    accs = entry["test_acc"]
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    assert entry["mean"] == pytest.approx(statistics.mean(accs))
    assert entry["std"] == pytest.approx(statistics.stdev(accs))
    # The report shows it as recorded: the seed count, the mean and the search's validation accuracy.
    from search.commands.report import write_report

    write_report(study, cwd / "report-with-retrain")
    md = (cwd / "report-with-retrain" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| trial {best.number} |"))
    assert f"| {entry['epochs']} | 2 | {100 * entry['mean']:.2f}% ±" in row
    assert entry["min"] == min(accs) and entry["max"] == max(accs)

    run_dir = cwd / "studies" / "retrain" / "s" / f"trial-{best.number}" / "epochs-1"
    for seed in (0, 1):
        kept = json.loads((run_dir / f"seed-{seed}.json").read_text())
        assert kept["seed"] == seed and kept["test_acc"] == accs[seed] and kept["epochs"] == 1
        assert len(completed_epochs(run_dir / f"seed-{seed}", ResNetSpec.from_dict(best.user_attrs["spec"]),
                                    Recipe.from_dict({**best.user_attrs["recipe"], "epochs": 1}), seed)) == 1
        assert not (run_dir / f"seed-{seed}" / "best.pt").exists()  # nothing selected
    assert f"trial {best.number} retrained" in retrained.stdout and "mean" in retrained.stdout


def test_retrain_exports_the_seed_closest_to_the_mean(cwd, retrained):
    study = load(cwd)
    [entry] = record.StudyRecord.of(study).retrained
    out = Path(entry["export_dir"])
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model.pt2", "spec.json", "state_dict.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    accs = entry["test_acc"]
    pick = min(range(2), key=lambda i: (abs(accs[i] - statistics.mean(accs)), i))
    assert metrics["seed"] == pick == entry["export_seed"] and metrics["test_acc"] == accs[pick]
    assert metrics["retrained"]["test_acc"] == accs and [s["seed"] for s in metrics["retrained"]["per_seed"]] == [0, 1]
    assert metrics["trial"] == entry["trial"] and metrics["val_acc"] == study.best_value
    assert metrics["params"] == entry["params"] and metrics["study"] == "s" and metrics["train_images"] == 300

    # The exported program alone (it flips inside when the recipe does) gives the recorded test
    # accuracy of that seed, and the plain weights give test_acc_without_flip.
    data = load_data(os.environ["RESNET_SEARCH_DATA"], val_size=100, limit_train=200)
    module = torch.export.load(out / "model.pt2").module()
    x = data.test.images.float() / 255
    with torch.no_grad():
        acc = (module(x).argmax(1) == data.test.labels).float().mean().item()
        model = build_model(ResNetSpec.from_json((out / "spec.json").read_text()))
        model.load_state_dict(torch.load(out / "state_dict.pt"))
        plain = (model.eval()(data.description.normalize(data.test.images)).argmax(1) == data.test.labels).float().mean().item()
    assert acc == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert metrics["test_acc_without_flip"] == pytest.approx(plain, abs=1e-6)


def test_best_shows_the_retrained_result(cwd, retrained, env):
    result = run_cli("best", "--study", "s", cwd=cwd, env={**env, "COLUMNS": "200"})  # rows unwrapped
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    entry = record.StudyRecord.of(load(cwd)).retrained[0]
    # Labelled with its data set, epochs and seeds, beside the search's validation accuracy and Table 1.
    assert f"retrained on {entry['dataset']} ({entry['train_images']:,} images)" in text
    assert "epochs" in text and "seeds" in text and "search" in text and "Model 1 4 layers (8,6,4,3)" in text
    assert f"{entry['label']} {entry['summary']} 1 2 {load(cwd).best_value:.2%} {entry['mean']:.2%}" in text


# ---------------------------------------------------------------- resuming


def test_more_seeds_later_keep_the_finished_ones(cwd, env, tmp_path):
    out = tmp_path / "again"
    first = run_cli("retrain", "--study", "s", "--seeds", "1", "--epochs", "1", "--device", "cpu", "--out", out,
                    cwd=cwd, env=env)
    assert first.returncode == 0, first.stderr
    seed_file, checkpoint = out / "epochs-1" / "seed-0.json", out / "epochs-1" / "seed-0" / "last.pt"
    before = (seed_file.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns, seed_file.read_text())
    second = run_cli("retrain", "--study", "s", "--seeds", "2", "--epochs", "1", "--device", "cpu", "--out", out,
                     cwd=cwd, env=env)
    assert second.returncode == 0, second.stderr
    assert "seed 0: kept" in second.stderr
    assert (seed_file.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns, seed_file.read_text()) == before
    entries = [e for e in record.StudyRecord.of(load(cwd)).retrained if e["export_dir"].startswith(str(out))]
    assert sorted(e["seeds"] for e in entries) == [1, 2]  # other seeds: another entry
    two = next(e for e in entries if e["seeds"] == 2)
    assert two["test_acc"][0] == json.loads(before[2])["test_acc"]
    assert (out / "epochs-1" / "export-1-seeds" / "model.pt2").exists()
    assert (out / "epochs-1" / "export-2-seeds" / "model.pt2").exists()


def test_ctrl_c_keeps_finished_seeds_and_resumes_the_running_one(cwd, tmp_path):
    out = tmp_path / "stopped"

    def stop_in_seed_1(seed, epoch):
        if seed == 1 and epoch.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        retrain(settings(cwd, seeds=2, epochs=2, out=out), log=quiet, on_epoch=stop_in_seed_1)
    run_dir = out / "epochs-2"
    assert (run_dir / "seed-0.json").exists() and not (run_dir / "seed-1.json").exists()
    seed_0 = (run_dir / "seed-0.json").stat().st_mtime_ns
    before = len(record.StudyRecord.of(load(cwd)).retrained)

    seen, lines = [], []
    result = retrain(settings(cwd, seeds=2, epochs=2, out=out), log=lines.append,
                     on_epoch=lambda seed, e: seen.append((seed, e.epoch)))
    assert seen == [(1, 2)]  # seed 0 kept, seed 1 resumed after its first epoch
    assert (run_dir / "seed-0.json").stat().st_mtime_ns == seed_0
    assert any("resuming after epoch 1 of 2" in line for line in lines)
    assert result.seeds[1]["resumed_from_epoch"] == 1 and result.entry["epochs"] == 2
    assert len(record.StudyRecord.of(load(cwd)).retrained) == before + 1


def test_a_folder_of_another_run_starts_over(cwd, tmp_path):
    """Seeds recorded for other data (or another network) in the same folder are not reused."""
    out = tmp_path / "other"
    retrain(settings(cwd, seeds=1, epochs=1, out=out), log=quiet)
    identity = json.loads((out / "epochs-1" / "run.json").read_text())
    (out / "epochs-1" / "run.json").write_text(json.dumps({**identity, "train_images": 12345}))
    seen, lines = [], []
    retrain(settings(cwd, seeds=1, epochs=1, out=out), log=lines.append, on_epoch=lambda s, e: seen.append(s))
    assert seen == [0] and any("starting it over" in line for line in lines)


# ---------------------------------------------------------------- baseline and spec files


@pytest.fixture(scope="module")
def hand_made(cwd):
    """Studies made by hand in the first one's storage: 'hand' has a tiny seeded baseline that
    trained; 'nobase' has no baseline; 'overbase' a baseline over the budget; 'empty' no trials."""
    storage = storage_url(cwd)
    recorded = record.StudyRecord.of(load(cwd))
    recipe = Recipe(epochs=1, batch_size=64, lr=0.1, schedule="onecycle", warmup=0.2).to_dict()
    for name, baseline in (("hand", True), ("nobase", False)):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        record.write_study(study, budget=200_000, artifact_dir=recorded.artifact_dir, data=recorded.data,
                           val_size=100, limit_train=200, split_seed=0,
                           recipe_space=recorded.recipe_space)
        attrs = {"spec": TINY.to_dict(), "summary": TINY.summary(), "params": count(TINY).params, "recipe": recipe,
                 "val_acc_per_epoch": [0.25], "seed": 0, "dataset": recorded.dataset}
        if baseline:
            attrs.update(record.baseline_attrs("Model 1 (scaled)", TINY.to_dict()))
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.25,
                                                  user_attrs=attrs))
    # 'overbase': its baseline, Model 1, was over the budget and never trained.
    study = optuna.create_study(study_name="overbase", storage=storage, direction="maximize")
    record.write_study(study, budget=200_000, artifact_dir=recorded.artifact_dir, data=recorded.data,
                       val_size=100, limit_train=200, split_seed=0,
                       recipe_space=recorded.recipe_space)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
        **record.baseline_attrs("Model 1", MODEL_1.to_dict()), "summary": MODEL_1.summary(),
        "params": count(MODEL_1).params, "over_budget": True, "prune_reason": "over budget"}))
    optuna.create_study(study_name="empty", storage=storage)
    return storage


def test_baseline_retrains_the_seeded_baseline(cwd, hand_made, env):
    result = run_cli("retrain", "--study", "hand", "--storage", hand_made, "--baseline", "--seeds", "1",
                     "--device", "cpu", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    [entry] = record.StudyRecord.of(optuna.load_study(study_name="hand", storage=hand_made)).retrained
    assert entry["label"] == "baseline: Model 1 (scaled)" and entry["baseline"] is True and entry["trial"] == 0
    assert entry["seeds"] == 1 and entry["std"] is None and entry["mean"] == entry["test_acc"][0]
    assert entry["epochs"] == 1  # the recipe's own


def test_spec_file_of_a_trial_is_that_trial_and_another_gets_the_center_recipe(cwd, tmp_path):
    study = load(cwd)
    best = study.best_trial
    (tmp_path / "winner.json").write_text(json.dumps(best.user_attrs["spec"]))
    target = choose_target(study, settings(cwd, spec=tmp_path / "winner.json"))
    assert target.trial == best.number and target.label == f"trial {best.number}"
    assert target.recipe == Recipe.from_dict(best.user_attrs["recipe"])

    other = ResNetSpec((1, 1, 1), (4, 8, 16), 3, 1, 4)
    assert other.to_dict() not in [t.user_attrs.get("spec") for t in study.trials]
    (tmp_path / "other.json").write_text(other.to_json())
    target = choose_target(study, settings(cwd, spec=tmp_path / "other.json", epochs=3))
    assert target.trial is None and target.label == f"spec {other.summary()}" and target.recipe.epochs == 3
    lr = record.StudyRecord.of(study).recipe_space["lr"]
    assert target.recipe.lr == pytest.approx((lr["low"] * lr["high"]) ** 0.5)  # the middle of the log range
    assert target.folder.startswith("spec-")
    # Without --epochs, the study's own (its run had --epochs 1), not the study file's recipe.
    assert choose_target(study, settings(cwd, spec=tmp_path / "other.json")).recipe.epochs == 1


# ---------------------------------------------------------------- bad input


BAD = [
    (["--trial", "99"], "has no trial 99"),
    (["--study", "overbase", "--trial", "0"], "never trained"),  # Model 1, over the 2e5 budget
    (["--trial=-1"], "not a trial number"),
    (["--study", "overbase", "--baseline"], "never trained"),
    (["--spec", "{cwd}/model1.json"], "budget of 200,000"),
    (["--spec", "{cwd}/garbage.json"], "is not a spec"),
    (["--spec", "{cwd}/wrong-keys.json"], "is not a spec"),
    (["--spec", "{cwd}/missing.json"], "cannot be read"),
    (["--trial", "1", "--spec", "{cwd}/model1.json"], "not allowed with"),
    (["--baseline", "--trial", "1"], "not allowed with"),
    (["--seeds", "0"], "at least 1"),
    (["--epochs", "0"], "at least 1"),
    (["--out", "{cwd}/a-file"], "a-file is not a folder"),
    (["--study", "nobase", "--baseline"], "no seeded baseline"),
    (["--study", "empty"], "no completed trial"),
    (["--study", "nope"], "no study named 'nope'"),
]


@pytest.fixture(scope="module")
def bad_files(cwd, hand_made):
    (cwd / "model1.json").write_text(MODEL_1.to_json())
    (cwd / "garbage.json").write_text("{not json")
    (cwd / "wrong-keys.json").write_text('{"blocks": [1], "channels": [8], "width": 3}')
    (cwd / "a-file").write_text("not a folder")
    return cwd


@pytest.mark.parametrize("args, expect", BAD, ids=[f"{i:02d}" for i in range(len(BAD))])
def test_bad_input_is_one_line_and_exit_2(bad_files, args, expect, capsys):
    cwd = bad_files
    before = load(cwd).user_attrs
    argv = ["retrain", "--storage", storage_url(cwd), *[a.format(cwd=cwd) for a in args], "--device", "cpu"]
    if "--study" not in args:
        argv += ["--study", "s"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert load(cwd).user_attrs == before  # nothing recorded


def test_bad_input_through_the_console_script(bad_files, env):
    line = assert_user_error(run_cli("retrain", "--storage", storage_url(bad_files), "--study", "s", "--seeds", "0",
                                     cwd=bad_files, env=env))
    assert "at least 1" in line


# ---------------------------------------------------------------- the pieces


def test_statistics_and_the_seed_closest_to_the_mean():
    accs = [0.5, 0.7, 0.62]
    s = summarize(accs)
    assert s["mean"] == pytest.approx(statistics.mean(accs)) and s["std"] == pytest.approx(statistics.stdev(accs))
    assert (s["min"], s["max"]) == (0.5, 0.7)
    assert closest_to_mean(accs) == 2 and closest_to_mean([0.4, 0.6]) == 0  # a tie goes to the lower seed
    assert summarize([0.3]) == {"mean": 0.3, "std": None, "min": 0.3, "max": 0.3}


def test_write_retrained_replaces_the_same_trial_epochs_and_seeds():
    study = optuna.create_study()
    base = {"label": "trial 3", "trial": 3, "baseline": False, "summary": "x", "params": 1, "dataset": "d",
            "epochs": 10, "seeds": 3, "test_acc": [0.1, 0.2, 0.3], "mean": 0.2, "std": 0.1, "min": 0.1, "max": 0.3,
            "export_dir": "/e"}
    record.write_retrained(study, base)
    record.write_retrained(study, {**base, "epochs": 20})
    record.write_retrained(study, {**base, "seeds": 2})
    record.write_retrained(study, {**base, "dataset": "other"})
    record.write_retrained(study, {**base, "mean": 0.25})  # same trial, data, epochs, seeds: replaced
    kept = record.StudyRecord.of(study).retrained
    assert [(e["dataset"], e["epochs"], e["seeds"], e["mean"]) for e in kept] == [
        ("d", 20, 3, 0.2), ("d", 10, 2, 0.2), ("other", 10, 3, 0.2), ("d", 10, 3, 0.25)]
    with pytest.raises(TypeError, match="lacks"):
        record.write_retrained(study, {"label": "incomplete"})


def test_full_training_data_is_training_and_validation_together(cwd):
    study = load(cwd)
    data = full_training_data(record.StudyRecord.of(study), ResNetSpec.from_dict(study.best_trial.user_attrs["spec"]))
    split = load_data(os.environ["RESNET_SEARCH_DATA"], val_size=100, limit_train=200)
    assert len(data.train) == 300 and len(data.val) == 0 and len(data.test) == len(split.test)
    assert torch.equal(data.train.images, torch.cat([split.train.images, split.val.images]))
    assert data.description == split.description  # normalised as the search was: by its training split


def test_training_without_validation_selects_nothing(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (128, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(128) % CLASSES
    empty = ImageSet(images[:0], labels[:0])
    data = Dataset.of(ImageSet(images, labels), empty, empty, [str(c) for c in range(CLASSES)], "synthetic", "-")
    recipe = Recipe(epochs=2, batch_size=64, lr=0.05, schedule="onecycle", warmup=0.2)
    seen = []
    result = train(TINY, data, recipe, device="cpu", checkpoint_dir=tmp_path, progress=False, validate=False,
                   on_epoch=seen.append)
    assert [e.val_acc for e in seen] == [None, None] and result.best_epoch == 2
    assert (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()
    assert len(completed_epochs(tmp_path, TINY, recipe, 0)) == 2


def test_retrain_error_is_a_user_error():
    from resnet_space.errors import UserError

    assert issubclass(RetrainError, UserError)
