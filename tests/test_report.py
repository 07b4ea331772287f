"""The study report: files, self-containment, plots and numbers, on synthetic studies
(fast, no data) and on a small real study built through the CLI on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from resnet_space import ResNetSpec, count
from resnet_space.table1 import table_1_rows as table_1_records
from search.commands import report
from search.study import record

from . import render_report
from .conftest import DATA, REPO, needs_data, run_small_study

JPEG = "cifar10-jpeg (image folder, JPEG)"


def described(name: str) -> dict:
    """A study's record of its data, as search.engine.data.DataDescription.to_dict() writes it."""
    return {"name": name, "root": "/data", "classes": [str(c) for c in range(10)], "side": 32, "channels": 3,
            "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "fingerprint": "0123456789abcdef"}
CHROMIUM = render_report.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium); "
                             "the rendered-page check did not run")

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------- helpers


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value:
                self.refs.append(value)


def check_self_contained(out: Path) -> list[str]:
    """Every reference in index.html is a relative path to a file inside the folder."""
    text = (out / "index.html").read_text()
    parser = Refs()
    parser.feed(text)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    refs = parser.refs + re.findall(r"url\(\s*['\"]?([^'\")]+)", text) + re.findall(r"@import\s+['\"]([^'\"]+)", text)
    for ref in refs:
        parsed = urlparse(ref)
        assert not parsed.scheme and not parsed.netloc and not ref.startswith(("/", "//")), ref
        target = (out / unquote(parsed.path)).resolve()
        assert target.is_relative_to(out.resolve()) and target.is_file(), ref
    return refs


def check_pngs(out: Path, names) -> None:
    for name in names:
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width >= 600 and im.height >= 250, (name, im.size)
            extrema = im.convert("L").getextrema()
            assert extrema[0] < 100 and extrema[1] > 200, (name, extrema)  # not blank


def md_section(md: str, title: str) -> str:
    """The text of one section of report.md, from its heading to the next."""
    start = md.index(f"\n## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def md_table(md: str, first_cell: str, section: str | None = None) -> list[str]:
    """The cells of the markdown table row starting with first_cell (in that section, if given)."""
    if section is not None:
        md = md_section(md, section)
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in report.md")


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# ---------------------------------------------------------------- synthetic studies

DISTS = {
    "stages": CategoricalDistribution([3, 4]),
    "blocks_1": IntDistribution(1, 8),
    "blocks_2": IntDistribution(1, 8),
    "conv_kernel_1": CategoricalDistribution([3]),  # fixed: must not show as a dimension
    "fill": FloatDistribution(0.5, 1.0),
    "lr": FloatDistribution(0.01, 0.5, log=True),
}
MODEL_1_SPEC = {"blocks": [8, 6, 4, 3], "channels": [32, 64, 128, 256], "conv_kernels": 3, "skip_kernels": 1,
                "pool": 4}


def add(study, hint, state, params=None, acc=None, curve=None, secs=None, device="cuda", *, baseline=False,
        prune_reason=None, over_budget=False, duplicate_of=None, fail_reason=None, first_trial=None, resumed_from=0):
    """A finished trial, its record written through search.study.record as the search writes it."""
    trial = create_trial(
        state=state, value=acc if state == TrialState.COMPLETE else None,
        params={"stages": 3 + hint % 2, "blocks_1": 1 + hint % 8, "blocks_2": 2 + hint % 5, "conv_kernel_1": 3,
                "fill": 0.5 + 0.05 * (hint % 10), "lr": 0.01 * (1 + hint % 7)},
        distributions=DISTS, intermediate_values={k + 1: v for k, v in enumerate(curve or [])},
        user_attrs=record.baseline_attrs("Model 1", MODEL_1_SPEC) if baseline else {})
    record.write_identity(trial, {"spec": MODEL_1_SPEC, "summary": f"N4 B{hint}-2-2-2 C32-64-128-256 F3 k1 P4",
                                  "params": params, "macs": None if params is None else params * 40, "recipe": {},
                                  "seed": hint, "device": device, "dataset": JPEG, "train_images": 45_000,
                                  "first_trial": len(study.trials) if first_trial is None else first_trial,
                                  "checkpoint_dir": ""})
    if curve:
        record.write_curve(trial, curve, secs or [60.0] * len(curve), [])
    if resumed_from:
        record.write_resumed(trial, first_trial, resumed_from)
    if prune_reason:
        record.write_pruned(trial, prune_reason, walls_hit=("params",) if over_budget else (), duplicate_of=duplicate_of)
    if fail_reason:
        record.write_failed(trial, fail_reason)
    study.add_trial(trial)


def curve_to(acc, n):
    return [round(acc * (0.6 + 0.4 * k / max(n - 1, 1)), 4) for k in range(n)]


def synthetic_study(artifact_dir: Path, name="synthetic", storage=None) -> optuna.Study:
    """A study like a GPU search under 5M: the baseline trained, complete trials near the budget,
    pruned, over-budget, diverged and failed trials, one trial on CPU."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    record.write_study(study, budget=5_000_000, table_1=table_1_records(), data=described(JPEG), val_size=5000,
                       artifact_dir=str(artifact_dir))
    # trial 0: the seeded baseline, trained.
    add(study, 0, TrialState.COMPLETE, 4_976_426, 0.9312, curve_to(0.9312, 30), baseline=True)
    accs = [0.9351, 0.9205, 0.9402, 0.9011, 0.9288, 0.9370, 0.8825]
    sizes = [4_950_000, 3_100_000, 4_990_001, 1_200_000, 4_700_000, 4_998_500, 600_000]
    for k, (acc, params) in enumerate(zip(accs, sizes), 1):
        add(study, k, TrialState.COMPLETE, params, acc, curve_to(acc, 30))
    add(study, 8, TrialState.PRUNED, 2_500_000, None, [0.41, 0.52, 0.55], prune_reason="pruned by the pruner")
    add(study, 9, TrialState.PRUNED, 4_100_000, None, [0.38], prune_reason="pruned by the pruner after epoch 1")
    add(study, 10, TrialState.PRUNED, 5_200_000, over_budget=True, prune_reason="over budget: 5,200,000 params")
    add(study, 11, TrialState.PRUNED, 3_300_000, None, [0.1, 0.1], prune_reason="diverged: loss is nan")
    add(study, 12, TrialState.FAIL, 2_000_000, None, [0.30, 0.45], secs=[30.0, 30.0])
    add(study, 13, TrialState.COMPLETE, 150_000, 0.61, curve_to(0.61, 2), secs=[7.0, 11.0], device="cpu")
    return study


EXPECTED = {"trials": 14, "complete": 9, "pruned": 3, "over_budget": 1, "failed": 1, "running": 0,
            "pruned_by_pruner": 2, "diverged": 1, "trained": 13,
            "gpu_hours": (8 * 30 * 60 + 3 * 60 + 60 + 2 * 60 + 60) / 3600, "cpu_hours": 18 / 3600}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    study = synthetic_study(base / "artifacts")
    out = base / "report"
    return study, out, report.write_report(study, out)


def test_synthetic_report_writes_every_file(synthetic):
    study, out, result = synthetic
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html", "report.md", report.ACC_PLOT, report.ACC_MACS_PLOT, report.CURVES_PLOT, report.IMPORTANCE_PLOT])
    assert result["files"] == sorted(p.name for p in out.iterdir())
    refs = check_self_contained(out)
    assert sorted(refs) == sorted([report.ACC_PLOT, report.ACC_MACS_PLOT, report.CURVES_PLOT, report.IMPORTANCE_PLOT])
    check_pngs(out, refs)
    md = (out / "report.md").read_text()
    for name in refs:
        assert f"]({name})" in md


def test_synthetic_counts_and_hours(synthetic):
    study, out, result = synthetic
    counts = result["counts"]
    for key, value in EXPECTED.items():
        assert counts[key] == pytest.approx(value), key
    md = (out / "report.md").read_text()
    assert md_table(md, "trials run")[1] == "14"
    assert md_table(md, "pruned by the pruner")[1] == "2"
    assert md_table(md, "rejected by the budget (over budget, not trained)")[1] == "1"
    assert md_table(md, "failed")[1] == "1"
    assert md_table(md, "GPU-hours used")[1] == f"{EXPECTED['gpu_hours']:.3f}"
    assert md_table(md, "CPU-hours used")[1] == f"{EXPECTED['cpu_hours']:.3f}"


def test_synthetic_top_table_matches_the_study(synthetic):
    study, out, result = synthetic
    assert [r["trial"] for r in result["top"]] == [3, 6, 1, 0, 5, 2, 4, 7, 13]
    best = result["best"]
    assert best["trial"] == 3 and best["val_acc"] == 0.9402
    assert best["params"] == 4_990_001 and best["epochs"] == 30 and best["seconds"] == pytest.approx(1800)
    md = (out / "report.md").read_text()
    row = md_table(md, "1", "Top 9 trials")
    assert row[1] == "3" and row[3] == "4,990,001" and row[4] == "199,600,040" and row[5] == "94.02%"
    assert row[6] == "30" and row[7] == "1800.0" and row[8] == "—"
    assert md_table(md, "4", "Top 9 trials")[2] == "N4 B0-2-2-2 C32-64-128-256 F3 k1 P4 (Model 1)"
    assert "the image folder cifar10-jpeg (JPEG)" in md and "true CIFAR-10" in md
    assert "as reported: test acc, true CIFAR-10, 200 epochs" in md


def test_synthetic_pareto_front_and_plots_info(synthetic):
    _, _, result = synthetic
    # complete trials by params: 13 (0.15M, 61%), 7 (0.6M), 4 (1.2M), 2 (3.1M), 5 (4.7M), 1 (4.95M), 0, 3, 6
    assert result["pareto_front"] == [13, 7, 4, 2, 5, 1, 3]
    assert result["zoomed"]  # Table 1 and the trials near 5M are a small corner of the whole
    assert result["curves"]["shown"] == [3, 6, 1, 0, 5, 2, 4, 7]
    assert sorted(result["curves"]["stopped"]) == [8, 9, 11, 12]


def test_synthetic_importances_skip_fixed_dimensions(synthetic):
    study, out, result = synthetic
    imp = result["importances"]
    assert imp and set(imp) <= set(DISTS) - {"conv_kernel_1"} and "conv_kernel_1" not in imp
    assert sum(imp.values()) == pytest.approx(1.0, abs=1e-6)
    method = "fANOVA" if importlib.util.find_spec("sklearn") else "PED-ANOVA"
    # complete trials 1-7 and 13; trial 0 is the seeded baseline
    assert result["importance_note"] == (f"{method} over the 8 complete sampled trials (the seeded Model 1 left "
                                         f"out), on the parameters they all share")
    structured = report.param_importances(record.Snapshot.of(study))
    assert structured.method == method and structured.trials == 8 and structured.why_not == ""
    md = (out / "report.md").read_text()
    assert md_table(md, "parameter")[1] == "importance"
    rows = [line for line in md_section(md, "Which dimensions matter").splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(imp)  # the header and one row a parameter


def test_synthetic_accuracy_points_are_numbered_in_a_table(synthetic):
    _, out, _ = synthetic
    md = (out / "report.md").read_text()
    section = "Accuracy against parameters"
    assert md_table(md, "#", section) == ["#", "point", "params", "MACs", "accuracy", "measured as"]
    assert md_table(md, "1", section) == ["1", "Model 1", "4,976,426", "384,666,112", "94.40%", report.numbers.REPORTED]
    assert md_table(md, "7", section)[1:5] == ["Model 7 (reported count)", "4,993,000", "—", "94.21%"]
    assert md_table(md, "9", section) == ["9", "best: trial 3", "4,990,001", f"{40 * 4_990_001:,}", "94.02%",
                                          "best validation acc here"]
    assert md_table(md, "10", section)[1:5] == ["Model 1 as trained here (trial 0)", "4,976,426", f"{40 * 4_976_426:,}",
                                                "93.12%"]
    assert "| 11 |" not in md_section(md, section)

def test_resumed_and_retried_trials_count_their_epochs_once(tmp_path):
    study = optuna.create_study(direction="maximize")
    # Trial 0 is interrupted after 2 epochs; trial 1 is its re-queued copy, still waiting (same attrs);
    # trial 2 is a retry that resumed from epoch 2 and trained 2 more; trial 3 ran out of GPU memory.
    add(study, 0, TrialState.FAIL, 1_000_000, None, [0.3, 0.4], secs=[60.0, 60.0], first_trial=0,
        fail_reason="interrupted (Ctrl-C); its checkpoint is kept to resume from")
    add(study, 1, TrialState.WAITING, 1_000_000, None, [0.3, 0.4], secs=[60.0, 60.0], first_trial=0)
    add(study, 2, TrialState.COMPLETE, 1_000_000, 0.6, [0.3, 0.4, 0.5, 0.6], secs=[60.0] * 4, first_trial=0,
        resumed_from=2)
    add(study, 3, TrialState.FAIL, 2_000_000, None, [0.2], secs=[90.0], fail_reason="CUDA out of memory: ...")
    add(study, 4, TrialState.PRUNED, 1_000_000, prune_reason="duplicate: trial 2 is training the same spec",
        duplicate_of=2)
    result = report.write_report(study, tmp_path / "r")
    counts = result["counts"]
    assert counts["duplicate"] == 1 and counts["pruned_by_pruner"] == 0 and counts["pruned"] == 1
    assert counts["gpu_hours"] == pytest.approx((120 + 120 + 90) / 3600)
    assert counts["waiting"] == 1 and counts["failed"] == 2 and counts["trained"] == 3
    assert sorted(result["curves"]["stopped"]) == [0, 3]  # the waiting copy is not drawn
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Failed: 1 CUDA out of memory, 1 interrupted." in md
    assert md_table(md, "waiting (queued or to retry)")[1] == "1"


def test_exported_winner_test_accuracy_is_shown(tmp_path):
    study = synthetic_study(tmp_path / "artifacts")
    record.write_exported(study, trial=3, test_acc=0.9377, dir=str(tmp_path / "winner"), dataset=JPEG)
    result = report.write_report(study, tmp_path / "report")
    assert result["top"][0]["test_acc"] == 0.9377 and all(r["test_acc"] is None for r in result["top"][1:])
    md = (tmp_path / "report" / "report.md").read_text()
    assert md_table(md, "1", "Top 9 trials")[8] == "93.77%" and md_table(md, "2", "Top 9 trials")[8] == "—"
    assert "Exported winner: trial 3, test accuracy 93.77%" in md
    check_self_contained(tmp_path / "report")  # the export folder is named, not linked


def test_zero_trained_trials_still_writes_a_report(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="untrained")
    record.write_study(study, budget=200_000, table_1=table_1_records(), data=described("CIFAR-10"))
    add(study, 0, TrialState.PRUNED, 4_976_426, baseline=True, over_budget=True, prune_reason="over budget")
    add(study, 1, TrialState.FAIL, 50_000)
    out = tmp_path / "report"
    result = report.write_report(study, out)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_vs_macs.png", "accuracy_vs_params.png", "index.html",
                                                     "report.md"]
    assert result["counts"]["trained"] == 0 and result["top"] == [] and result["best"] is None
    assert result["importances"] is None and "at least 2 complete" in result["importance_note"]
    check_self_contained(out)
    check_pngs(out, ["accuracy_vs_params.png"])
    md = (out / "report.md").read_text()
    assert "No trial has trained yet" in md and "No trial has completed yet" in md
    assert "not trained here: over the budget (4,976,426 parameters)" in md
    assert "trained and compared on true CIFAR-10" in md
    html = (out / "index.html").read_text()
    assert "No trial has trained yet" in html and "parameter importances need at least 2 complete" in html


def test_bare_study_without_attrs(tmp_path):
    study = optuna.create_study(direction="maximize")
    result = report.write_report(study, tmp_path / "r")
    assert result["counts"]["trials"] == 0 and (tmp_path / "r" / "index.html").exists()
    check_pngs(tmp_path / "r", ["accuracy_vs_params.png"])


def test_importances_that_cannot_be_computed_are_explained(tmp_path):
    study = optuna.create_study(direction="maximize")
    add(study, 1, TrialState.COMPLETE, 100_000, 0.5, [0.5])
    add(study, 2, TrialState.COMPLETE, 120_000, 0.5, [0.5])  # same accuracy
    result = report.write_report(study, tmp_path / "r")
    assert result["importances"] is None and "same accuracy" in result["importance_note"]
    assert "same accuracy" in (tmp_path / "r" / "index.html").read_text()


def test_a_plot_not_drawn_this_time_does_not_survive_from_last_time(tmp_path, synthetic):
    study, _, _ = synthetic
    out = tmp_path / "report"
    report.write_report(study, out)
    assert (out / report.IMPORTANCE_PLOT).exists()
    bare = optuna.create_study(direction="maximize")
    report.write_report(bare, out)
    assert not (out / report.IMPORTANCE_PLOT).exists() and not (out / report.CURVES_PLOT).exists()
    check_self_contained(out)


def test_attach_replaces_instead_of_piling_up(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = synthetic_study(tmp_path / "artifacts", storage=storage)
    out = tmp_path / "report"
    report.write_report(study, out)
    first = report.attach_to_study(study, out, tmp_path / "artifacts")
    assert sorted(first) == sorted(report.PLOTS)
    again = report.attach_to_study(optuna.load_study(study_name="synthetic", storage=storage), out,
                                   tmp_path / "artifacts")
    assert again == first
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == sorted(report.PLOTS)
    assert all(m.mimetype == "image/png" for m in metas)
    assert record.StudyRecord.of(optuna.load_study(study_name="synthetic", storage=storage)).report_artifacts == first
    for name, artifact_id in first.items():
        assert (tmp_path / "artifacts" / artifact_id).read_bytes() == (out / name).read_bytes()

    # A refresh where importances cannot be drawn: the old artifact is overwritten with a note.
    (out / report.IMPORTANCE_PLOT).unlink()
    third = report.attach_to_study(study, out, tmp_path / "artifacts")
    assert third == first
    with Image.open(tmp_path / "artifacts" / first[report.IMPORTANCE_PLOT]) as im:
        assert im.format == "PNG"

    # One deleted in optuna-dashboard (its attr set to null) is uploaded anew, the null tolerated.
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    other = optuna.storages.RDBStorage(storage)  # as optuna-dashboard, another process, leaves it
    other.set_study_system_attr(other.get_study_id_from_name("synthetic"),
                                ARTIFACTS_ATTR_PREFIX + first[report.ACC_PLOT], "null")
    fourth = report.attach_to_study(study, out, tmp_path / "artifacts")
    assert fourth[report.ACC_PLOT] != first[report.ACC_PLOT]
    assert fourth[report.CURVES_PLOT] == first[report.CURVES_PLOT]


def test_dashboard_lists_and_serves_the_attached_plots(tmp_path):
    """optuna-dashboard's own app, called in-process: the study lists the PNGs and serves them."""
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore
    from wsgiref.util import setup_testing_defaults

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = synthetic_study(tmp_path / "artifacts", storage=storage)
    report.write_report(study, tmp_path / "report")
    ids = report.attach_to_study(study, tmp_path / "report", tmp_path / "artifacts")
    app = optuna_dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(tmp_path / "artifacts"))

    def get(path):
        environ, answer = {}, {}
        setup_testing_defaults(environ)
        environ.update(PATH_INFO=path, REQUEST_METHOD="GET")

        def start_response(status, headers, exc_info=None):
            answer.update(status=status, headers=dict(headers))

        body = b"".join(app(environ, start_response))
        assert answer["status"].startswith("200"), (path, answer["status"])
        return answer["headers"], body

    study_id = storage.get_study_id_from_name("synthetic")
    _, body = get(f"/api/studies/{study_id}")
    listed = {a["filename"]: a["artifact_id"] for a in json.loads(body)["artifacts"]}
    assert listed == ids
    headers, body = get(f"/artifacts/{study_id}/{ids[report.ACC_PLOT]}")
    assert headers["Content-Type"] == "image/png" and body == (tmp_path / "report" / report.ACC_PLOT).read_bytes()


def test_dataset_phrases():
    assert report.dataset_phrase("CIFAR-10") == "true CIFAR-10"
    assert report.dataset_phrase(JPEG) == "the image folder cifar10-jpeg (JPEG)"
    assert report.dataset_phrase("CIFAR-100") == "CIFAR-100"


def test_pareto_front():
    points = [(10, 0.5, 0), (20, 0.4, 1), (20, 0.6, 2), (30, 0.6, 3), (40, 0.7, 4), (5, 0.1, 5)]
    assert [p[2] for p in report.pareto_front(points)] == [5, 0, 2, 4]
    # On params and MACs together: trial 3, beaten on params alone, is the cheapest in MACs; trial 1
    # (more of both than trial 0, less accurate) and trial 6 (trial 0's twin, later) are beaten.
    both = [(10, 90, 0.5, 0), (20, 95, 0.4, 1), (20, 50, 0.6, 2), (30, 10, 0.6, 3), (10, 90, 0.5, 6)]
    assert [p[-1] for p in report.pareto_front(both)] == [0, 2, 3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([0.1, 0.5, 0.9])), max_size=12))
def test_the_front_is_exactly_the_points_none_beats(costs):
    points = [(*c, i) for i, c in enumerate(costs)]
    front = report.pareto_front(points)

    def beaten(p):
        return any(q[:3] != p[:3] and q[0] <= p[0] and q[1] <= p[1] and q[2] >= p[2] or q[:3] == p[:3] and q[3] < p[3]
                   for q in points)
    assert sorted(front) == sorted(p for p in points if not beaten(p))


def test_the_front_of_a_study_and_the_macs_plot(synthetic):
    study, out, result = synthetic
    trials = {r.number: r for r in record.records(study)}
    # The synthetic trials have MACs = 40 x params: the front on both is the front on params.
    assert [r["trial"] for r in result["front"]] == result["pareto_front"] == result["macs_front"]
    assert all(r["macs"] == trials[r["trial"]].macs for r in result["front"])
    md = (out / "report.md").read_text()
    assert "## Accuracy against MACs" in md and "## The trade-off front" in md and "The study has no MACs budget" in md
    assert md_table(md, str(result["front"][0]["trial"]), "The trade-off front")[3] == f"{result['front'][0]['macs']:,}"


def test_points_too_close_to_tell_apart_share_one_label():
    from search.commands.report.figures import _numbers_text

    assert _numbers_text([8, 1, 2, 3, 5, 6, 4, 7]) == "1–8"
    assert _numbers_text([3, 10]) == "3, 10" and _numbers_text([1, 2, 3, 5, 7, 8]) == "1–3, 5, 7, 8"


def test_the_report_imports_neither_torch_nor_the_engine(tmp_path):
    """Not at import, nor while it draws a whole report (with importances) and attaches it."""
    storage = f"sqlite:///{tmp_path}/s.db"
    synthetic_study(tmp_path / "artifacts", storage=storage)
    code = ("import json, sys, optuna, search.commands.report as r; "
            f"s = optuna.load_study(study_name='synthetic', storage={storage!r}); "
            f"r.write_report(s, {str(tmp_path / 'report')!r}); r.attach_to_study(s, {str(tmp_path / 'report')!r}, "
            f"{str(tmp_path / 'artifacts')!r}); "
            "print(json.dumps([m for m in ('torch', 'search.engine.train', 'search.engine.data', 'search.study.run', 'search.commands.export') "
            "if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# ---------------------------------------------------------------- pruner trust


def test_spearman_by_hand():
    assert report.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert report.spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # ranks [3, 4, 2, 1] against [1, 2, 3, 4]: d^2 sums to 18, rho = 1 - 6 * 18 / (4 * 15) = -0.8
    assert report.spearman([0.5, 0.55, 0.4, 0.3], [1, 2, 3, 4]) == pytest.approx(-0.8)
    # a tie: ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]: 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert report.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-7)
    assert report.spearman([1, 2], [1, 2]) is None  # fewer than 3
    assert report.spearman([5, 5, 5], [1, 2, 3]) is None and report.spearman([1, 2, 3], [7, 7, 7]) is None


def trust_study(curves: list[list[float]]) -> optuna.Study:
    """Complete trials with these curves (final accuracy = the last epoch), plus trials that must
    not count: a complete one with fewer epochs, a pruned one, a failed one."""
    study = optuna.create_study(direction="maximize")
    for k, curve in enumerate(curves):
        add(study, k, TrialState.COMPLETE, 100_000 + k, max(curve), curve)
    n = len(curves)
    add(study, n, TrialState.COMPLETE, 90_000, 0.99, [0.99] * (len(curves[0]) - 1))
    add(study, n + 1, TrialState.PRUNED, 90_000, None, [0.99], prune_reason="pruned by the pruner after epoch 1")
    add(study, n + 2, TrialState.FAIL, 90_000, None, [0.01, 0.99], fail_reason="CUDA out of memory")
    return study


def test_pruner_trust_same_order_reversed_and_ties():
    study = trust_study([
        # epoch 1 in the final order; epoch 2 as [0.5, 0.55, 0.4, 0.3] (rho -0.8); epoch 3 tied in the middle
        [0.1, 0.50, 0.30, 0.60],
        [0.2, 0.55, 0.40, 0.70],
        [0.3, 0.40, 0.40, 0.80],
        [0.4, 0.30, 0.50, 0.90],
    ])
    trust = report.pruner_trust(record.Snapshot.of(study))
    # At 4 epochs the pruner decides after epoch 2 (half of training): that row only.
    assert [r["epoch"] for r in trust] == [2] and all(r["trials"] == 4 and r["last"] == 4 for r in trust)
    assert trust[0]["spearman"] == pytest.approx(-0.8)
    assert report.spearman([0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9]) == pytest.approx(1.0)  # epoch 1's
    assert report.spearman([0.30, 0.40, 0.40, 0.50], [0.6, 0.7, 0.8, 0.9]) == pytest.approx(0.9486833, abs=1e-7)

    reversed_ = report.pruner_trust(record.Snapshot.of(trust_study([[0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])))
    assert reversed_ == [{"epoch": 1, "last": 2, "trials": 3, "spearman": pytest.approx(-1.0)}]


def test_pruner_trust_says_nothing_without_enough_trials(tmp_path):
    assert report.pruner_trust(record.Snapshot.of(optuna.create_study(direction="maximize"))) == []
    two = trust_study([[0.1, 0.5], [0.2, 0.6]])
    assert report.pruner_trust(record.Snapshot.of(two)) == [{"epoch": 1, "last": 2, "trials": 2, "spearman": None}]
    flat = trust_study([[0.3, 0.5], [0.3, 0.6], [0.3, 0.7]])  # every trial equal after epoch 1
    assert report.pruner_trust(record.Snapshot.of(flat)) == [{"epoch": 1, "last": 2, "trials": 3, "spearman": None}]
    result = report.write_report(flat, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert md_table(md, "epoch e", "Can early epochs be trusted?") == ["epoch e", "trials",
                                                                       "Spearman rho with final accuracy"]
    assert md_table(md, "1", "Can early epochs be trusted?") == ["1", "3", "—"]
    assert result["pruner_trust"] == [{"epoch": 1, "last": 2, "trials": 3, "spearman": None}]


def test_synthetic_pruner_trust_in_the_report(synthetic):
    _, out, result = synthetic
    # trials 0-7 ran 30 epochs, each curve a fixed multiple of its final accuracy: the same order at every epoch
    assert [r["epoch"] for r in result["pruner_trust"]] == [15]  # the pruner's rung at 30 epochs
    assert all(r["trials"] == 8 and r["spearman"] == pytest.approx(1.0) for r in result["pruner_trust"])
    md = (out / "report.md").read_text()
    section = md_section(md, "Can early epochs be trusted?")
    assert "over the 8 complete trials that ran every epoch" in section and "(30)" in section
    assert md_table(md, "15", "Can early epochs be trusted?") == ["15", "8", "1.00"]
    assert "| 3 |" not in section and "| 29 |" not in section  # no decision there


# ---------------------------------------------------------------- retrained networks

RETRAINED = [
    {"label": "baseline: Model 1", "trial": 0, "baseline": True, "summary": "N4 B8-6-4-3 C32-64-128-256 F3 k1 P4",
     "params": 4_976_426, "dataset": "CIFAR-10", "epochs": 200, "seeds": 2, "test_acc": [0.9421, 0.9437],
     "mean": 0.9429, "std": 0.0008, "min": 0.9421, "max": 0.9437, "export_dir": "/x/baseline"},
    {"label": "trial 3", "trial": 3, "baseline": False, "summary": "N4 B3-2-2-2 C32-64-128-256 F3 k1 P4",
     "params": 4_990_001, "dataset": "CIFAR-10", "epochs": 200, "seeds": 3,
     "test_acc": [0.951, 0.948, 0.954], "mean": 0.951, "std": 0.0031, "min": 0.948, "max": 0.954,
     "export_dir": "/x/trial-3"},
]


def test_retrained_networks_beside_their_search_and_table_1(tmp_path, synthetic):
    _, plain, _ = synthetic
    assert "Retrained" not in (plain / "report.md").read_text()  # no attr, no section

    study = synthetic_study(tmp_path / "artifacts")
    record.write_study(study, retrained=RETRAINED)
    result = report.write_report(study, tmp_path / "report")
    # the found network first, then the baseline beside it
    assert [(r["label"], r["val_acc"]) for r in result["retrained"]] == [("trial 3", 0.9402),
                                                                        ("baseline: Model 1", 0.9312)]
    md = (tmp_path / "report" / "report.md").read_text()
    section = "Retrained on the full training set"
    assert md_table(md, "retrained", section) == [
        "retrained", "spec", "params", "data set", "epochs", "seeds", "test acc", "min–max", "search val acc"]
    assert md_table(md, "trial 3", section) == [
        "trial 3", "N4 B3-2-2-2 C32-64-128-256 F3 k1 P4", "4,990,001", "true CIFAR-10", "200", "3",
        "95.10% ± 0.31", "94.80–95.40%", "94.02%"]
    assert md_table(md, "baseline: Model 1", section) == [
        "baseline: Model 1", "N4 B8-6-4-3 C32-64-128-256 F3 k1 P4", "4,976,426", "true CIFAR-10", "200", "2",
        "94.29% ± 0.08", "94.21–94.37%", "93.12%"]
    assert md_table(md, "Table 1 Model 1, as reported", section) == [
        "Table 1 Model 1, as reported", "N4 B8-6-4-3 C32-64-128-256 F3 k1 P4", "4,976,426", "true CIFAR-10", "200",
        "—", "94.40%", "—", "—"]
    lines = md_section(md, section).splitlines()
    assert lines.index(next(x for x in lines if x.startswith("| trial 3 "))) + 1 == lines.index(
        next(x for x in lines if x.startswith("| baseline: Model 1 ")))
    assert "Retrained on the full training set" in (tmp_path / "report" / "index.html").read_text()


# ---------------------------------------------------------------- headless Chromium


def render(out: Path, png: Path) -> dict:
    result = subprocess.run([sys.executable, str(Path(render_report.__file__)), str(out), "--out", str(png),
                             "--height", "6000"], capture_output=True, text=True, timeout=180)
    assert result.returncode in (0, 1), result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    return {**stats, "rc": result.returncode}


@needs_chromium
def test_chromium_renders_the_page_with_its_plots(synthetic, tmp_path):
    _, out, _ = synthetic
    stats = render(out, tmp_path / "page.png")
    assert stats["rc"] == 0 and stats["ok"] and stats["width"] == 1200
    # The check can fail: the same page without its PNGs has text but no plot colour.
    broken = tmp_path / "no-images"
    shutil.copytree(out, broken)
    for name in report.PLOTS:
        (broken / name).unlink()
    stats = render(broken, tmp_path / "broken.png")
    assert stats["rc"] == 1 and stats["ink"] > 0.01 and stats["colour"] < 0.002


# ---------------------------------------------------------------- a real study on CPU


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("real-study")
    study = run_small_study(cwd, "rep", 4, data=DATA)  # the real images: the report names their copy
    out = cwd / "report"
    return study, out, report.write_report(study, out)


@needs_data
def test_real_study_report(real):
    study, out, result = real
    refs = check_self_contained(out)
    assert report.ACC_PLOT in refs and report.ACC_MACS_PLOT in refs and report.CURVES_PLOT in refs
    check_pngs(out, refs)
    trials = record.records(study)
    md = (out / "report.md").read_text()
    complete = [r for r in trials if r.state == "COMPLETE"]
    over = [r for r in trials if r.over_budget]
    # --trials 4 counts trained trials; the first is the baseline, Model 1's shape scaled to 2e5
    assert sum(r.counts_as_trained for r in trials) == 4 and not over
    assert trials[0].baseline and trials[0].counts_as_trained and trials[0].baseline_label.startswith("Model 1 scaled")
    assert md_table(md, "trials run")[1] == str(len(trials))
    assert md_table(md, "complete")[1] == str(len(complete))
    assert md_table(md, "rejected by the budget (over budget, not trained)")[1] == str(len(over))
    assert md_table(md, "failed")[1] == str(sum(r.state == "FAIL" for r in trials))
    assert md_table(md, "GPU-hours used")[1] == "0.000"
    assert result["counts"]["cpu_hours"] == pytest.approx(sum(sum(r.seconds) for r in trials) / 3600)
    best = max(complete, key=lambda r: (r.value, -r.number))
    spec = ResNetSpec.from_dict(best.spec)
    top = f"Top {len(complete)} trials"
    row = md_table(md, "1", top)
    assert row[1] == str(best.number) and row[5] == pct(best.value) and row[6] == "1"
    label = f" ({best.baseline_label})" if best.baseline else ""
    assert row[2] == spec.summary() + label
    assert row[3] == f"{count(spec).params:,}" and row[4] == f"{count(spec).macs:,}"
    ranked = [line for line in md_section(md, top).splitlines() if re.match(r"\| \d+ \| \d+ \|", line)]
    assert len(ranked) == len(complete)
    assert result["pruner_trust"] == []  # one epoch: nothing earlier to compare
    assert "the image folder cifar10-jpeg (JPEG)" in md and "200 images held out" in md
    baseline = trials[0]
    assert (f"The star is the seeded baseline, Model 1 scaled to the budget, 176,800 params, "
            f"{count(ResNetSpec.from_dict(baseline.spec)).macs:,} MACs, as trained in this "
            f"study (trial 0, {pct(baseline.best_acc)} validation accuracy after 1 epoch)") in md
    assert not result["zoomed"]  # no trial near Table 1's 5M


@needs_data
@needs_chromium
def test_real_study_report_renders(real, tmp_path):
    _, out, _ = real
    stats = render(out, tmp_path / "real.png")
    assert stats["rc"] == 0 and stats["ok"], stats


def test_best_shows_the_baseline_and_the_pruner_trust(tmp_path, capsys):
    """`best --top 3`: the baseline (fourth by accuracy) still shown, and the Spearman table at the
    pruner's epochs of a 30-epoch study (3, 9 and 27)."""
    from search.commands.console import print_best

    study = synthetic_study(tmp_path / "artifacts")
    print_best(study, 3)
    out = capsys.readouterr().out
    cells = [line.split()[:2] for line in out.splitlines() if re.match(r"\s*(\d+|base)\s+\d+\s+N\d", line)]
    assert cells[:4] == [["1", "3"], ["2", "6"], ["3", "1"], ["base", "0"]]
    assert "the pruner's epochs against epoch 30" in " ".join(out.split())
    trust = out[out.index("the pruner's epochs"):]
    rows = [line.split() for line in trust.splitlines() if re.fullmatch(r"\s*\d+\s+\d+\s+[+-]\d\.\d\d", line)]
    assert rows == [["15", "8", "+1.00"]]


def test_the_committed_example_report_names_no_machine_paths():
    """docs/example-report is read on other machines: no absolute path of the one it was made on."""
    pages = [REPO / "docs" / "example-report" / name for name in ("report.md", "index.html")]
    for page in pages:
        text = page.read_text()
        found = re.findall(r"(?<![\w.])/(?:tmp|work|root|home|Users|var)/[^\s\"'<)]*", text)
        assert not found, (page.name, found[:3])


@pytest.mark.parametrize("columns", ["80", None])
def test_every_table_is_whole_at_80_columns(tmp_path, capsys, monkeypatch, columns):
    """`best` and `best --front` written to a pipe fold to $COLUMNS (80 if unset): no line wider,
    no trailing space, and every number whole on a line of its own."""
    from search.commands import console

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    study = synthetic_study(tmp_path / "artifacts")
    console.print_best(study, top=10)
    console.print_front(study, "sqlite:///x.db", None)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(len(line) <= 80 and line == line.rstrip() for line in lines[:-1]), lines
    text = "\n".join(lines)
    for t in study.trials:
        r = record.TrialRecord.of(t)
        if r.state == "COMPLETE":
            assert f"{r.params:,}" in text and f"{r.macs:,}" in text, (r.params, r.macs)
