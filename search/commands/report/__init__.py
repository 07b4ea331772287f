"""`resnet-search report`: what a study found, as a folder a person can open offline.

`write_report(study, out_dir)` writes `index.html` (self-contained: inline CSS, no scripts, no
external fonts; it references only the PNGs beside it), the PNGs, and `report.md` with the same
sections. `attach_to_study(study, out_dir)` puts the PNGs in the study's artifact store so that
optuna-dashboard lists them. `pruner_trust(Snapshot.of(study))` says how well early epochs predict
the final accuracy.

write_report reads the study once (search.record.Snapshot); numbers.py computes from that
reading, figures.py draws, pages.py writes the pages, attach.py attaches. None imports torch or
the training engine.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import optuna

from ...study.record import Snapshot
from . import figures, numbers, pages
from .attach import attach_to_study
from .figures import ACC_MACS_PLOT, ACC_PLOT, CURVES_PLOT, IMPORTANCE_PLOT, PLOTS
from .numbers import Importances, dataset_phrase, param_importances, pareto_front, pruner_trust, spearman

__all__ = ["write_report", "attach_to_study", "Snapshot", "pruner_trust", "param_importances", "Importances",
           "spearman", "pareto_front", "dataset_phrase", "ACC_PLOT", "ACC_MACS_PLOT", "CURVES_PLOT", "IMPORTANCE_PLOT",
           "PLOTS"]

TOP_K = 10


def write_report(study: optuna.Study, out_dir: Path, top: int = TOP_K) -> dict:
    """Write index.html, report.md and the PNGs into out_dir (created; stale report PNGs removed).
    Returns the numbers written, for tests and callers."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot this refresh cannot draw must not survive from the last one
        (out_dir / name).unlink(missing_ok=True)
    snapshot = Snapshot.of(study)
    recorded, trials = snapshot.study, snapshot.trials
    counts = numbers.study_counts(snapshot)
    rows = numbers.top_rows(snapshot, top)
    imp = param_importances(snapshot)
    marks = numbers.accuracy_marks(recorded, trials)

    acc = figures.plot_accuracy(recorded, trials, marks, out_dir / ACC_PLOT)
    acc_macs = figures.plot_accuracy(recorded, trials, marks, out_dir / ACC_MACS_PLOT, cost="macs")
    curves = figures.plot_learning_curves(trials, out_dir / CURVES_PLOT) if counts["trained"] else None
    if imp.values is not None:
        figures.plot_importances(imp.sampled, list(imp.values), imp.method, out_dir / IMPORTANCE_PLOT)

    result = {
        "study": study.study_name,
        "dataset": recorded.dataset,
        "budget": recorded.budget,
        "macs_budget": recorded.macs_budget,
        "counts": counts,
        "best": rows[0] if rows else None,
        "top": rows,
        "importances": imp.values,
        "importance_note": imp.note,
        "pareto_front": acc["front"],  # accuracy against params
        "macs_front": acc_macs["front"],  # accuracy against MACs
        "front": numbers.front_rows(snapshot),  # accuracy, params and MACs together (`best --front`)
        "zoomed": acc["zoom"],  # the accuracy plot has a second panel on the Table 1 corner
        "macs_zoomed": acc_macs["zoom"],
        "curves": curves,
        "pruner_trust": pruner_trust(snapshot),
        "retrained": numbers.retrained(snapshot),
        "final_stage": numbers.final_stage_rows(snapshot),
    }
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown = pages.sections(recorded, trials, result, marks, imp)
    (out_dir / "index.html").write_text(pages.to_html(study.study_name, shown, generated), encoding="utf-8")
    (out_dir / "report.md").write_text(pages.to_markdown(study.study_name, shown, generated), encoding="utf-8")
    result["files"] = sorted(p.name for p in out_dir.iterdir() if p.name in (*PLOTS, "index.html", "report.md"))
    result["out_dir"] = str(out_dir)
    return result
