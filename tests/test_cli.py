"""The search end to end through the command line, on CPU with synthetic images."""

import json
import shlex
from pathlib import Path
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
import torch
from optuna.trial import TrialState

from resnet_space import ResNetSpec
from resnet_space.model import build_model
from search.engine.data import DataDescription, load_data

from search.study.record import Snapshot, TrialRecord

from .conftest import (CLI, TINY_SPACE, assert_user_error, cpu_run_flags, onnx_accuracy, run_cli, run_small_study,
                       storage_url, synthetic_root)

QUICK = cpu_run_flags()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A small study, run as a user would: 3 trials of 1 epoch, then resumed to 5."""
    cwd = tmp_path_factory.mktemp("study")
    run_small_study(cwd, "e2e", 3)
    return cwd


def load(cwd, name="e2e"):
    return optuna.load_study(study_name=name, storage=storage_url(cwd))


def trained(study):
    return [t for t in study.trials if TrialRecord.of(t).counts_as_trained]


def test_run_records_everything(workdir):
    study = load(workdir)
    assert len(trained(study)) == 3
    baseline = TrialRecord.of(study.trials[0])
    # Model 1 (4,976,426) is over 200,000: its shape scaled to the budget is the baseline.
    # At channels 6-12-24-48 it counts 176,800 (worked out in tests/test_space.py's baseline cases).
    assert baseline.baseline and baseline.label.startswith("N4 B8-6-4-3 C6-12-24-48 F3 k1 P4 (Model 1 scaled")
    assert baseline.params == 176_800 and baseline.counts_as_trained and baseline.curve
    assert len(study.user_attrs["table_1"]) == 8 and study.user_attrs["budget"] == 200_000
    assert study.metric_names == ["validation accuracy"]  # optuna-dashboard's axis, not "Objective 0"
    assert Path(study.user_attrs["data"]["root"]).is_absolute()
    for t in map(TrialRecord.of, trained(study)):
        assert t.params < 200_000
        spec = ResNetSpec.from_dict(t.spec)
        assert t.summary == spec.summary()
        assert sum(p.numel() for p in build_model(spec).parameters()) == t.params  # torch's own count
        assert len(t.seconds) == 1 and t.device == "cpu" and t.seed == 0 and t.recipe["epochs"] == 1
    for t in trained(study):
        assert t.intermediate_values[1] == TrialRecord.of(t).curve[0]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for t in complete:
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
        assert [m.artifact_id for m in metas] == [TrialRecord.of(t).checkpoint_artifact]
        assert [m.mimetype for m in metas] == ["application/octet-stream"]  # not a guess from ".pt"


def test_no_trial_at_or_over_budget_is_trained(workdir):
    for t in map(TrialRecord.of, load(workdir).trials):
        if t.params >= 200_000:
            assert t.state == "PRUNED" and t.over_budget and not t.curve


def test_a_macs_budget_is_a_second_wall_and_the_front_exports(tmp_path):
    """--macs-budget: a spec at or over it is never trained, recorded with both counts and the wall
    it hit; the baseline is Model 1's shape scaled under both walls; `best --front` lists the front
    and `best --export --trial` exports a trial of it as it exports the winner."""
    space = tmp_path / "wide.toml"  # 4 channels fit under 10M MACs, 64 never do; 20M params never bind
    space.write_text(TINY_SPACE.read_text().replace("fill = {low = 0.05, high = 0.2}", "first_channels = [4, 64]"))
    result = run_cli("run", "--budget", "20M", "--macs-budget", "10M", "--trials", "3", "--study", "macs", *QUICK,
                     "--space", space, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = load(tmp_path, "macs")
    assert study.user_attrs["macs_budget"] == 10_000_000 and study.user_attrs["settings"]["macs_budget"] == 10_000_000
    trials = [TrialRecord.of(t) for t in study.trials]
    baseline = trials[0]
    # Model 1's shape at C_1 = 5 counts 123,095 params and 9,508,240 MACs; at 6 it is over 10M MACs.
    assert baseline.baseline and baseline.label.startswith("N4 B8-6-4-3 C5-10-20-40 F3 k1 P4 (Model 1 scaled")
    assert (baseline.params, baseline.macs) == (123_095, 9_508_240) and baseline.counts_as_trained
    assert f"({baseline.params:,} params, {baseline.macs:,} MACs)" in result.stderr  # the trial's log line
    over = [r for r in trials if r.over_budget]
    assert over, "the seed drew no 64-wide spec: pick another"
    for r in over:
        assert r.walls_hit == ["macs"] and not r.curve and r.params < 20_000_000 and r.macs >= 10_000_000
        assert r.prune_reason == f"over budget: {r.macs:,} MACs >= 10,000,000"
    assert all(r.macs < 10_000_000 for r in trials if r.counts_as_trained)

    from search.commands.report.numbers import front_rows

    front = run_cli("best", "--study", "macs", "--front", cwd=tmp_path)
    assert front.returncode == 0, front.stderr
    hint = front.stdout.strip().splitlines()[-1]
    assert hint.startswith(f"export one with: {CLI} best --study macs --data ")
    exported = subprocess.run(shlex.split(hint.removeprefix("export one with: ")), cwd=tmp_path, capture_output=True,
                              text=True)
    assert exported.returncode == 0, exported.stderr  # the hint runs as printed
    assert (tmp_path / f"trial-{front_rows(Snapshot.of(study))[0]['trial']}" / "metrics.json").exists()
    rows = front_rows(Snapshot.of(study))
    assert rows and all(f"{r['params']:,}" in front.stdout and f"{r['macs']:,}" in front.stdout for r in rows)
    pick = rows[0]["trial"]
    out = tmp_path / "picked"
    exported = run_cli("best", "--study", "macs", "--export", out, "--trial", pick, "--data", synthetic_root(),
                       cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == pick and (metrics["params"], metrics["macs"]) == (trials[pick].params, trials[pick].macs)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model.pt2", "spec.json", "state_dict.pt"]


def test_resume_adds_trials_and_keeps_one_baseline(workdir):
    again = run_cli("run", "--budget", "2e5", "--trials", "5", "--study", "e2e", *QUICK, cwd=workdir)
    assert again.returncode == 0, again.stderr
    study = load(workdir)
    assert len(trained(study)) == 5
    assert sum(TrialRecord.of(t).baseline for t in study.trials) == 1
    same = run_cli("run", "--budget", "2e5", "--trials", "5", "--study", "e2e", *QUICK, cwd=workdir)
    assert same.returncode == 0 and len(load(workdir).trials) == 5  # already done: nothing new


def test_best_export_writes_files_that_load_with_plain_torch(workdir):
    out = workdir / "winner"
    result = run_cli("best", "--study", "e2e", "--export", out, "--data", synthetic_root(), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "Model 1" in result.stdout and "94.40%" in result.stdout  # Table 1 beside the results
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model.pt2", "spec.json", "state_dict.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    study = load(workdir)
    assert metrics["trial"] == study.best_trial.number and metrics["val_acc"] == study.best_trial.value
    assert 0 <= metrics["test_acc"] <= 1 and metrics["test_images"] == 200  # 10 classes x 20 test images
    assert metrics["params"] == TrialRecord.of(study.best_trial).params and metrics["study"] == "e2e"

    model = build_model(ResNetSpec.from_json((out / "spec.json").read_text()))
    model.load_state_dict(torch.load(out / "state_dict.pt"))
    test = load_data(synthetic_root(), val_size=200, limit_train=1).test
    about = DataDescription.from_dict(metrics["data"])  # normalised as the search's training split was
    assert metrics["normalisation"] == {"mean": list(about.mean), "std": list(about.std)}
    # The study's recipe evaluates with flip TTA, so the exported program averages the image's and
    # its mirror's logits: here worked out from the plain weights by hand.
    assert metrics["test_flip_tta"] is True
    x = about.normalize(test.images)
    expected = ((model.eval()(x) + model(x.flip(-1))) / 2).detach()
    # More images than any fixed batch limit: the test set repeated to 5,200.
    torch.save((test.images.float() / 255).repeat(26, 1, 1, 1), workdir / "inputs.pt")
    # -I: an isolated interpreter from another folder; the check shows this package was never imported.
    script = ("import sys, torch; m = torch.export.load(sys.argv[1]).module(); x = torch.load(sys.argv[2]); "
              "assert m(x[:1]).shape == (1, 10); torch.save(m(x), sys.argv[3]); "
              "assert not any(n.split('.')[0] in ('search', 'resnet_space') for n in sys.modules)")
    subprocess.run([sys.executable, "-I", "-c", script, out / "model.pt2", workdir / "inputs.pt",
                    workdir / "outputs.pt"], check=True, cwd="/")
    got = torch.load(workdir / "outputs.pt")
    assert got.shape == (5200, 10)
    got = got[:len(test)]
    assert torch.allclose(got, expected, atol=1e-4)
    # The recorded test accuracy is the exported program's own.
    assert (got.argmax(1) == test.labels).sum().item() / len(test) == pytest.approx(metrics["test_acc"], abs=1e-9)
    plain = (model(x).argmax(1) == test.labels).sum().item() / len(test)
    assert metrics["test_acc_without_flip"] == pytest.approx(plain, abs=1e-9)
    # model.onnx in ONNX Runtime on the CPU: the same program, the recorded test accuracy exactly.
    assert metrics["onnx"] == "model.onnx"
    assert onnx_accuracy(out / "model.onnx", test.images, test.labels) == metrics["test_acc"]


def test_without_the_onnx_extra_the_export_says_how_and_writes_the_rest(workdir, monkeypatch, capsys):
    from search.commands.cli import main
    from search.commands.export import ONNX_MISSING

    monkeypatch.chdir(workdir)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if never installed: importing it fails
    assert main(["best", "--study", "e2e", "--export", "no-onnx", "--data", str(synthetic_root())]) == 0
    assert ONNX_MISSING in capsys.readouterr().out.splitlines()
    assert sorted(p.name for p in (workdir / "no-onnx").iterdir()) == ["metrics.json", "model.pt2", "spec.json",
                                                                        "state_dict.pt"]


def test_dashboard_answers_for_the_study(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]


    server = subprocess.Popen([str(CLI), "dashboard", "--study", "e2e", "--port", str(port)], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.time() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.5)
        [summary] = [s for s in studies if s["study_name"] == "e2e"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == len(load(workdir).trials)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_model_1_trains_at_5e6_when_asked(tmp_path):
    result = run_cli("run", "--budget", "5e6", "--trials", "1", "--study", "m1",
                     *cpu_run_flags(limit_train=64, val_size=50), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [trial] = map(TrialRecord.of, load(tmp_path, "m1").trials)
    assert trial.baseline and trial.baseline_label == "Model 1" and trial.state == "COMPLETE"
    assert trial.params == 4_976_426 and len(trial.curve) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_plain_run_without_cuda_refuses_and_explains(tmp_path):
    line = assert_user_error(run_cli("run", "--budget", "5e6", cwd=tmp_path))
    assert "no CUDA device" in line and " h on this CPU" in line and "--device cpu" in line
    assert not (tmp_path / "studies").exists()  # nothing was created


def estimated_seconds(line: str) -> float:
    """The seconds in a refusal's "would take about N s|min|h on this CPU"."""
    number, unit = line.split("would take about ")[1].split(" on this CPU")[0].split()
    return float(number.replace(",", "")) * {"s": 1, "min": 60, "h": 3600}[unit]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cpu_estimates_are_within_a_factor_of_2_of_the_run(tmp_path):
    """`run`'s and `retrain`'s refusals on a CPU time the network's own step; the same command on the
    CPU then takes between half and twice that (the seeded baseline, the slowest kind per MAC)."""
    flags = [f for f in cpu_run_flags(epochs=2, limit_train=600, val_size=200) if f not in ("--device", "cpu")]
    run = ["run", "--budget", "2e5", "--trials", "1", "--study", "timed", *flags]
    estimate = estimated_seconds(assert_user_error(run_cli(*run, cwd=tmp_path)))
    assert run_cli(*run, "--device", "cpu", cwd=tmp_path).returncode == 0
    [baseline] = map(TrialRecord.of, load(tmp_path, "timed").trials)
    assert baseline.baseline and len(baseline.seconds) == 2
    assert sum(baseline.seconds) / 2 <= estimate <= 2 * sum(baseline.seconds), (estimate, baseline.seconds)

    retrain = ["retrain", "--study", "timed", "--baseline", "--seeds", "1", "--epochs", "2", "--data", synthetic_root()]
    estimate = estimated_seconds(assert_user_error(run_cli(*retrain, cwd=tmp_path)))
    assert run_cli(*retrain, "--device", "cpu", cwd=tmp_path).returncode == 0
    [seed] = (tmp_path / "studies" / "retrain" / "timed").glob("*/epochs-2/seed-0.json")
    took = json.loads(seed.read_text())["seconds"]
    assert took / 2 <= estimate <= 2 * took, (estimate, took)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_the_refusals_suggested_command_runs_as_printed(tmp_path):
    line = assert_user_error(run_cli("run", "--budget", "5e6", "--data", synthetic_root(), cwd=tmp_path))
    suggested = line.split("for a small search on this CPU run: ")[1]
    assert suggested.startswith(f"{CLI} run ") and f"--data {synthetic_root()}" in suggested
    # Shorter here than printed (the last flag given wins): the command, its flags and its data are the point.
    quick = "--trials 1 --finalists 0 --limit-train 200 --val-size 100 --epochs 1 --quiet"
    result = subprocess.run(f"{suggested} {quick}", shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert load(tmp_path, "cpu-try").trials


def test_run_refreshes_the_report_and_report_writes_one(workdir):
    assert (workdir / "studies" / "reports" / "e2e" / "index.html").exists()  # written at the end of run
    assert load(workdir).user_attrs.get("report_artifacts")  # the plots, attached for the dashboard
    result = run_cli("report", "--study", "e2e", "--out", workdir / "my-report", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "my-report" / "index.html").exists() and (workdir / "my-report" / "report.md").exists()
    assert "e2e" in result.stdout


def test_commands_after_a_run_find_its_study_without_study_flag(workdir):
    result = run_cli("best", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "study 'e2e': the storage's only study" in result.stderr and "best of study 'e2e'" in result.stdout


def test_without_a_name_the_study_whose_trials_ran_last_is_taken(tmp_path):
    from search.study.storage import StudyError, load_study, open_storage

    storage = open_storage(storage_url(tmp_path), create=True)
    with pytest.raises(StudyError, match="holds no study yet"):
        load_study(storage, None)
    said = []
    for name in ("older", "newer", "older-again"):
        optuna.create_study(study_name=name, storage=storage)
    for name in ("newer", "older", "newer--final"):  # a final stage is never taken for its search
        study = optuna.load_study(study_name=name, storage=storage) if name != "newer--final" else \
            optuna.create_study(study_name=name, storage=storage)
        study.tell(study.ask(), 0.5)
        time.sleep(0.01)
    assert load_study(storage, None, log=said.append).study_name == "older"
    assert said == ["study 'older': the last one run of 3 (older, newer, older-again); --study chooses another"]


def test_the_live_view_written_to_a_pipe_keeps_long_lines_whole(tmp_path):
    flags = [f for f in QUICK if f != "--quiet"]
    result = run_cli("run", "--budget", "2e5", "--trials", "1", "--study", "piped", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study_line = next(line for line in result.stderr.splitlines() if "study 'piped' on sqlite" in line)
    assert "validation images; device cpu" in study_line  # one line, not folded at 80 columns


def test_the_run_first_hint_names_the_command_as_typed(tmp_path):
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name="empty", storage=storage_url(tmp_path))
    line = assert_user_error(run_cli("best", "--study", "empty", cwd=tmp_path))
    assert f"run `{CLI} run` first" in line, line
    hinted = shlex.split(line.split("`")[1])
    assert subprocess.run([*hinted, "--help"], capture_output=True).returncode == 0  # runnable as printed
