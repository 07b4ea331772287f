"""`resnet-search report`: what a study found, as a folder a person can open offline.

`write_report(study, out_dir)` writes `index.html` (self-contained: inline CSS, no scripts, no
external fonts; it references only the PNGs beside it), the PNGs, and `report.md` with the same
tables. `attach_to_study(study, out_dir)` puts the PNGs in the study's artifact store so that
optuna-dashboard lists them, replacing the previous refresh's files instead of piling up copies.

Accuracies in a study are fractions (validation accuracy, the objective); the seed report's
Table 1 holds test accuracies in percent. Everything shown is in percent, and every figure says
which of the two a point is.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import importlib.util
import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.trial import TrialState

from .record import best_trials, trial_counts

DPI = 150
SIZE = (7.0, 4.5)  # inches: 1050 x 675 pixels at 150 dpi
TOP_K = 10
CURVES_K = 8
ACC_PLOT = "accuracy_vs_params.png"
CURVES_PLOT = "learning_curves.png"
IMPORTANCE_PLOT = "param_importances.png"
PLOTS = (ACC_PLOT, CURVES_PLOT, IMPORTANCE_PLOT)
REPORTED = "as reported: test acc, true CIFAR-10, 200 epochs"
ARTIFACTS_ATTR = "report_artifacts"  # study user attr: {png filename: artifact id}

# Colour-blind-safe (Okabe-Ito) colours; grey for what is not the main story.
BLUE, ORANGE, VERMILLION, GREEN, PURPLE, SKY = "#0072B2", "#E69F00", "#D55E00", "#009E73", "#CC79A7", "#56B4E9"
CURVE_COLOURS = (BLUE, ORANGE, GREEN, PURPLE, SKY, "#882255", "#8C564B", "#000000")
GREY = "0.6"
RC = {
    "font.size": 9, "axes.labelsize": 9.5, "axes.titlesize": 10, "legend.fontsize": 8,
    "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "0.9", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "legend.frameon": False, "savefig.dpi": DPI, "figure.dpi": DPI, "font.family": "DejaVu Sans",
}


# ---------------------------------------------------------------- what the study holds


@dataclass
class TrialInfo:
    number: int
    state: str
    summary: str
    params: int | None
    macs: int | None
    curve: list[float]  # validation accuracy per epoch, fractions
    seconds: list[float]
    value: float | None  # the objective: best validation accuracy (complete trials)
    baseline: bool
    device: str
    prune_reason: str = ""
    fail_reason: str = ""
    over_budget: bool = False
    first_trial: int | None = None  # a retried or re-queued trial: the number of its first run
    resumed_from_epoch: int = 0  # epochs replayed from an earlier run's checkpoint
    own_seconds: float = 0.0  # seconds this trial itself trained (set by _own_seconds)

    @property
    def trained(self) -> bool:
        """Has validation accuracies of its own: a waiting trial (re-queued, retried) carries
        copies of its first run's, which it has not trained yet."""
        return bool(self.curve) and self.state != "WAITING"

    @property
    def best_acc(self) -> float | None:
        """Best validation accuracy: the objective if complete, else the best epoch before it stopped."""
        if self.value is not None:
            return self.value
        return max(self.curve) if self.curve else None

    @property
    def diverged(self) -> bool:
        return self.state == "PRUNED" and self.prune_reason.startswith("diverged")


def _info(t: optuna.trial.FrozenTrial) -> TrialInfo:
    a = t.user_attrs
    return TrialInfo(
        number=t.number, state=t.state.name, summary=a.get("summary", "?"), params=a.get("params"),
        macs=a.get("macs"), curve=[float(v) for v in a.get("val_acc_per_epoch") or []],
        seconds=[float(s) for s in a.get("seconds_per_epoch") or []],
        value=t.value if t.state == TrialState.COMPLETE else None, baseline=a.get("baseline") == "Model 1",
        device=str(a.get("device", "")), prune_reason=str(a.get("prune_reason", "")),
        fail_reason=str(a.get("fail_reason", "")),
        over_budget=bool(a.get("over_budget")), first_trial=a.get("first_trial"),
        resumed_from_epoch=int(a.get("resumed_from_epoch") or 0),
    )


def _own_seconds(infos: list[TrialInfo]) -> None:
    """The training seconds each trial spent itself. A trial retried after its worker died, or
    re-queued after Ctrl-C, starts with copies of its first run's user attrs and, resuming from
    the checkpoint, replays that run's epochs into its own lists: those are counted once, in
    the run that trained them."""
    earlier: dict[int, list[list[float]]] = {}
    for i in sorted(infos, key=lambda i: i.number):
        chain = i.first_trial if i.first_trial is not None and i.first_trial != i.number else None
        if i.state == "WAITING":
            i.own_seconds = 0.0
        elif i.resumed_from_epoch:
            i.own_seconds = sum(i.seconds[i.resumed_from_epoch:])
        elif chain is not None and any(i.seconds == s for s in earlier.get(chain, [])):
            i.own_seconds = 0.0  # copies, before its first epoch of its own
        else:
            i.own_seconds = sum(i.seconds)
        if i.seconds:
            earlier.setdefault(i.first_trial if chain is not None else i.number, []).append(i.seconds)


def dataset_phrase(name: str | None) -> str:
    """Which copy of CIFAR-10 the study searched on, in words a reader cannot misread."""
    if not name:
        return "an unrecorded dataset"
    if name == "CIFAR-10":
        return "true CIFAR-10"
    if "JPEG" in name:
        return f"the JPEG copy of CIFAR-10 ({name})"
    return f"an image-folder copy of CIFAR-10 ({name})"


def dataset_short(name: str | None) -> str:
    if not name:
        return "an unrecorded dataset"
    if name == "CIFAR-10":
        return "true CIFAR-10"
    return "the JPEG copy" if "JPEG" in name else "the image-folder copy"


def pareto_front(points: list[tuple[int, float, int]]) -> list[tuple[int, float, int]]:
    """(params, acc, trial) points that no other point beats: fewer or equal params and higher
    or equal accuracy, one of them strictly. Sorted by params."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda q: (q[0], -q[1], q[2])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def study_counts(study: optuna.Study, infos: list[TrialInfo]) -> dict:
    counts = trial_counts(study)  # the same numbers `resnet-search best` prints
    diverged = sum(i.diverged for i in infos)
    duplicate = sum(i.state == "PRUNED" and i.prune_reason.startswith("duplicate") for i in infos)
    _own_seconds(infos)
    hours = {"gpu_hours": 0.0, "cpu_hours": 0.0}
    for i in infos:
        key = "gpu_hours" if i.device.startswith("cuda") else "cpu_hours" if i.device.startswith("cpu") else None
        if key:
            hours[key] += i.own_seconds / 3600
    return {**counts, "pruned_by_pruner": counts["pruned"] - diverged - duplicate, "diverged": diverged,
            "duplicate": duplicate, "waiting": sum(i.state == "WAITING" for i in infos),
            "trained": sum(i.trained for i in infos), **hours}


@contextlib.contextmanager
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the sampled dimensions for validation accuracy, or None and why not.

    The seeded Model 1 trial is left out: its architecture is fixed, not sampled, so it has only
    the recipe's params and would shrink the shared search space to those."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("baseline") != "Model 1" and t.value is not None]
    if len(complete) < 2:
        return None, (f"parameter importances need at least 2 complete sampled trials; this study has "
                      f"{len(complete)}")
    if len({t.value for t in complete}) < 2:
        return None, "parameter importances cannot be computed: every complete trial has the same accuracy"
    # Only dimensions every such trial has and that could take more than one value (a fixed
    # single-choice dimension is not a search dimension: it would show as a zero bar).
    shared = set.intersection(*(set(t.distributions) for t in complete))
    params = sorted(k for k in shared if not any(t.distributions[k].single() for t in complete))
    if not params:
        return None, "parameter importances cannot be computed: the complete trials share no searched parameter"
    evaluator, name = importance_evaluator()
    with _quiet_optuna():
        sub = optuna.create_study(direction="maximize")
        sub.add_trials(complete)
        try:
            importances = optuna.importance.get_param_importances(sub, evaluator=evaluator, params=params)
        except Exception as e:  # noqa: BLE001 - optuna raises several kinds for degenerate studies
            return None, f"parameter importances cannot be computed ({name}): {type(e).__name__}: {e}"
    importances = {k: float(v) for k, v in importances.items() if math.isfinite(v)}
    if not importances:
        return None, "parameter importances cannot be computed: no sampled parameter varies across complete trials"
    return importances, (f"{name} over the {len(complete)} complete sampled trials (the seeded Model 1 left out), "
                         f"on the parameters they all share")


def importance_evaluator():
    """Optuna's default, fANOVA, when scikit-learn is installed (it needs it); else PED-ANOVA,
    which needs nothing beyond numpy. Returns (evaluator, name for the page)."""
    if importlib.util.find_spec("sklearn") is None:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"


# ---------------------------------------------------------------- figures


def _new_figure(size=SIZE) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _millions(x: float, _pos=None) -> str:
    m = x / 1e6
    if m == 0:
        return "0"
    if m >= 1:
        return f"{m:g}"
    return f"{m:.3g}"


def _fit_legend(fig: Figure, handles: list, fontsize: float = 7.5, ncols=(2, 1)) -> None:
    """A legend under the axes, in as many of `ncols` columns as fit the figure's width."""
    for ncols in [n for n in ncols if n <= max(1, len(handles) - 1)] or [1]:
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=fontsize,
                            handlelength=1.8, columnspacing=1.5)
        fig.canvas.draw()
        if legend.get_window_extent().width <= fig.bbox.width - 8 or ncols == 1:
            return
        legend.remove()


def _place_labels(fig: Figure, ax, labels: list[dict], right_edge: float | None = None) -> None:
    """Labels beside their points with no two overlapping: anchors close in x share a column to
    their right, spread vertically in the order of their points, with thin leader lines. Where
    the labels run off the figure, the x axis is widened on the right until they fit (then, as a
    last resort, the column goes left of its points). Call after the data and limits are set: it
    freezes the layout so the pixel positions stay true."""
    if not labels:
        return
    fig.canvas.draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    for _ in range(4):
        texts = _label_columns(fig, ax, labels, renderer)
        fig.canvas.draw()
        limit = (fig.bbox.x1 if right_edge is None else right_edge) - 6
        box = ax.get_window_extent(renderer)
        # Shrink the axis scale so every label's right end lands inside the figure.
        ratio = 1.0
        for t, item in texts:
            end = t.get_window_extent(renderer).x1
            if end > limit:
                anchor = item["column_x"] - box.x0  # the column's pixel offset from the axes' left
                width = end - item["column_x"]
                ratio = min(ratio, (limit - width - box.x0) / max(anchor, 1))
        if ratio >= 1.0:
            return
        if ratio <= 0.3:
            break
        for t, _ in texts:
            t.remove()
        scale = ax.xaxis.get_transform()
        lo, hi = scale.transform([ax.get_xlim()[0], ax.get_xlim()[1]])
        ax.set_xlim(ax.get_xlim()[0], scale.inverted().transform([lo + (hi - lo) / (ratio * 0.98)])[0])
    for t, item in texts:  # no room on the right: put that column left of its points
        if t.get_window_extent(renderer).x1 > (fig.bbox.x1 if right_edge is None else right_edge) - 2:
            t.set_position((item["column_left"], t.get_position()[1]))
            t.set_ha("right")


def _label_columns(fig: Figure, ax, labels: list[dict], renderer) -> list:
    box = ax.get_window_extent(renderer)
    px = DPI / 72
    size = 7.5
    step = size * 1.35 * px
    texts = []
    for item in labels:
        item["xd"], item["yd"] = ax.transData.transform((item["x"], item["y"]))
    columns: list[list[dict]] = []
    for item in sorted(labels, key=lambda i: i["xd"]):
        if columns and item["xd"] - columns[-1][0]["xd"] < 90 * px:
            columns[-1].append(item)
        else:
            columns.append([item])
    for column in columns:
        column.sort(key=lambda i: i["yd"])
        # Spread: each label at least `step` above the one below, the group centred on its points,
        # then kept inside the axes.
        ys = [i["yd"] for i in column]
        for k in range(1, len(ys)):
            ys[k] = max(ys[k], ys[k - 1] + step)
        shift = (sum(i["yd"] for i in column) - sum(ys)) / len(ys)
        ys = [y + min(0.0, shift) for y in ys]
        top, bottom = box.y1 - step / 2, box.y0 + step / 2
        ys[-1] = min(ys[-1], top)  # pushed down from the top only as far as needed...
        for k in range(len(ys) - 2, -1, -1):
            ys[k] = min(ys[k], ys[k + 1] - step)
        ys[0] = max(ys[0], bottom)  # ...and up from the bottom (too many labels for the height: overlap at the top)
        for k in range(1, len(ys)):
            ys[k] = max(ys[k], ys[k - 1] + step)
        right = max(i["xd"] for i in column) + (14 if len(column) > 1 else 5) * px
        left = min(i["xd"] for i in column) - (14 if len(column) > 1 else 5) * px
        if len(column) == 1:  # a lone label sits above and right of its point, off the points beside it
            ys = [min(ys[0] + 7 * px, box.y1 - step / 2)]
        for item, y in zip(column, ys):
            item["column_x"], item["column_left"] = right, left
            moved = len(column) > 1
            texts.append((ax.annotate(
                item["text"], xy=(item["x"], item["y"]), xycoords="data", xytext=(right, y),
                textcoords="figure pixels", ha="left", va="center", fontsize=size, color=item.get("color", "0.15"),
                annotation_clip=False,
                arrowprops=dict(arrowstyle="-", lw=0.5, color="0.6", shrinkA=1, shrinkB=3) if moved else None,
            ), item))
    return texts


def _t1_x(r: dict) -> int:
    return r.get("params") or r["reported_params"]


def plot_accuracy_vs_params(study: optuna.Study, infos: list[TrialInfo], path: Path) -> dict:
    """Every trained trial by parameters and best validation accuracy, the Pareto front, the
    budget, Table 1 as reported and Model 1 as measured. When the Table 1 models sit among trials
    near the budget while other trials are much smaller (a search under about 5M), a second panel
    zooms on that corner, where the comparison is, and carries the labels."""
    attrs = study.user_attrs
    budget = attrs.get("budget")
    table_1 = attrs.get("table_1") or []
    trained = [i for i in infos if i.trained and i.params is not None]
    complete = [i for i in trained if i.state == "COMPLETE"]
    baseline = next((i for i in infos if i.baseline), None)
    front = pareto_front([(i.params, i.best_acc, i.number) for i in complete])
    best = max(complete, key=lambda i: (i.value, -i.number)) if complete else None

    # The main panel's limits.
    xs = [i.params for i in trained] + [_t1_x(r) for r in table_1] + ([budget] if budget else [])
    if baseline is not None and baseline.params:
        xs.append(baseline.params)
    log_x = bool(xs) and max(xs) / max(min(xs), 1) > 20
    if not xs:
        xlim = None
    elif log_x:
        xlim = (min(xs) / 1.6, max(xs) * 1.6)
    else:
        lo, hi = min(xs), max(xs)
        span = max(hi - lo, 0.1 * hi, 1)
        xlim = (max(0, lo - 0.08 * span), hi + 0.08 * span)
    ys = [100 * i.best_acc for i in trained] + [r["reported_test_acc"] for r in table_1]
    if ys:
        pad = max(2.0, 0.06 * (max(ys) - min(ys)))
        ylim = (max(0.0, min(ys) - pad), min(100.0, max(ys) + pad))
    else:
        ylim = (0.0, 100.0)

    # A zoom on the Table 1 corner when complete trials are there and that corner is a small part
    # of the main panel.
    zoom = None
    if table_1 and complete and xlim:
        t1x = [_t1_x(r) for r in table_1]
        xlo, xhi = 0.92 * min(t1x), 1.015 * max(t1x + ([budget] if budget else []))
        near = [i for i in complete if xlo <= i.params <= xhi]
        if near:
            zys = [r["reported_test_acc"] for r in table_1] + [100 * i.value for i in near]
            pad = max(0.4, 0.08 * (max(zys) - min(zys)))
            zoom = (xlo, xhi, max(0.0, min(zys) - pad), min(100.0, max(zys) + pad))
            t = math.log10 if log_x else float
            x_share = (t(xhi) - t(max(xlo, xlim[0]))) / (t(xlim[1]) - t(xlim[0]))
            y_share = (zoom[3] - zoom[2]) / (ylim[1] - ylim[0])
            if x_share * y_share > 0.12:
                zoom = None

    with _rc():
        fig = _new_figure()
        if zoom:
            ax, zax = fig.subplots(1, 2, width_ratios=(1.45, 1))
        else:
            ax, zax = fig.add_subplot(), None
        handles = _draw_accuracy_points(ax, trained, front, table_1, baseline, budget)
        ax.set_ylim(*ylim)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("parameters (millions, log scale)")
        else:
            ax.set_xlabel("parameters (millions)")
        if xlim:
            ax.set_xlim(*xlim)
        ax.set_ylabel("accuracy (%)")
        ax.xaxis.set_major_formatter(FuncFormatter(_millions))
        if not trained:
            ax.text(0.03, 0.5, "no trained trials yet", transform=ax.transAxes, fontsize=10, color="0.4",
                    ha="left", va="center")

        labels = [{"x": _t1_x(r), "y": r["reported_test_acc"],
                   "text": r["model"] + ("" if r.get("params") is not None else " (reported count)")}
                  for r in table_1]
        best_label = None if best is None else {"x": best.params, "y": 100 * best.value,
                                                 "text": f"best: trial {best.number}", "color": BLUE}
        model_1 = None
        if baseline is not None and baseline.trained:
            model_1 = {"x": baseline.params, "y": 100 * baseline.best_acc, "text": "Model 1 (here)",
                       "color": VERMILLION}
        if zax is not None:
            xlo, xhi, ylo, yhi = zoom
            _draw_accuracy_points(zax, trained, front, table_1, baseline, budget)
            zax.set_xlim(xlo, xhi)
            zax.xaxis.set_major_formatter(FuncFormatter(_millions))
            zax.set_ylim(ylo, yhi)
            zax.set_xlabel("parameters (millions)")
            zax.set_title("zoom: beside Table 1", fontsize=8.5, color="0.3")
            ax.set_title("all trained trials", fontsize=8.5, color="0.3")
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((xlo, ylo), xhi - xlo, yhi - ylo, fill=False, ec="0.35", lw=0.7, ls=":",
                                   zorder=7))
            inside = [lab for lab in (best_label, model_1) if lab and xlo <= lab["x"] <= xhi and ylo <= lab["y"] <= yhi]
            outside = [lab for lab in (best_label, model_1) if lab and lab not in inside]
            _fit_legend(fig, handles)
            _place_labels(fig, zax, labels + inside)
            _place_labels(fig, ax, outside, right_edge=zax.get_window_extent().x0 - 30)
        else:
            _fit_legend(fig, handles)
            _place_labels(fig, ax, labels + [lab for lab in (best_label, model_1) if lab])
        fig.savefig(path, dpi=DPI, facecolor="white")
    return {"front": [p[2] for p in front], "log_x": log_x, "zoom": zoom is not None}


def _draw_accuracy_points(ax, trained, front, table_1, baseline, budget) -> list:
    """The layers of the accuracy plot on one axes; returns the legend handles."""
    complete = [i for i in trained if i.state == "COMPLETE"]
    others = [i for i in trained if i.state != "COMPLETE"]
    handles = []
    if others:
        ax.scatter([i.params for i in others], [100 * i.best_acc for i in others], s=22, facecolors="none",
                   edgecolors=GREY, linewidths=0.9, zorder=2)
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=GREY,
                              label=f"trial {_not_complete(others)}: best val acc so far"))
    plain = [i for i in complete if not i.baseline]
    if plain:
        ax.scatter([i.params for i in plain], [100 * i.value for i in plain], s=22, color=BLUE, alpha=0.85,
                   linewidths=0, zorder=3)
        handles.append(Line2D([], [], ls="", marker="o", color=BLUE, label="trial, complete: best validation acc"))
    if front:
        fx = [p[0] for p in front]
        fy = [100 * p[1] for p in front]
        ax.step(fx, fy, where="post", color=ORANGE, lw=1.4, zorder=4)
        ax.scatter(fx, fy, s=60, facecolors="none", edgecolors=ORANGE, linewidths=1.4, zorder=4)
        handles.append(Line2D([], [], color=ORANGE, marker="o", mfc="none", lw=1.4,
                              label="Pareto front of the complete trials"))
    if table_1:
        for r in table_1:
            exact = r.get("params") is not None
            ax.scatter([_t1_x(r)], [r["reported_test_acc"]], marker="D", s=26, facecolors="white", edgecolors="0.1",
                       linewidths=1.0, zorder=5, linestyles="solid" if exact else "dashed")
        handles.append(Line2D([], [], ls="", marker="D", mfc="white", mec="0.1",
                              label=f"seed report's Table 1, {REPORTED}"))
    if baseline is not None:
        if baseline.trained:
            ax.scatter([baseline.params], [100 * baseline.best_acc], marker="*", s=170, color=VERMILLION,
                       edgecolors="white", linewidths=0.6, zorder=6)
            n = len(baseline.curve)
            handles.append(Line2D([], [], ls="", marker="*", ms=11, color=VERMILLION,
                                  label=f"Model 1 as measured here (val acc, {n} epoch{'s' if n != 1 else ''})"))
        elif baseline.params:
            ax.scatter([baseline.params], [0], marker="x", s=40, color=VERMILLION, zorder=6, clip_on=False,
                       transform=ax.get_xaxis_transform())
            why = "over budget, not trained" if baseline.over_budget else f"{baseline.state.lower()}, not trained"
            handles.append(Line2D([], [], ls="", marker="x", color=VERMILLION, label=f"Model 1 in this study: {why}"))
    if budget:
        ax.axvline(budget, color=VERMILLION, ls="--", lw=1.1, zorder=1)
        handles.append(Line2D([], [], color=VERMILLION, ls="--", lw=1.1, label=f"budget: {budget:,} parameters"))
    return handles


def _not_complete(infos: list[TrialInfo]) -> str:
    """What the grey trials are, in words: pruned, failed and (while a search runs) running."""
    kinds = [k for k, states in (("pruned", ("PRUNED",)), ("failed", ("FAIL",)), ("running", ("RUNNING", "WAITING")))
             if any(i.state in states for i in infos)]
    return "stopped early or running" if "running" in kinds else "stopped early" + (
        f" ({' or '.join(kinds)})" if kinds else "")


def plot_learning_curves(infos: list[TrialInfo], path: Path, top: int = CURVES_K) -> dict:
    """Validation accuracy per epoch: the top complete trials in colour, labelled by rank as in
    the top-K table, trials stopped early in grey, Model 1 as measured dashed."""
    complete = sorted((i for i in infos if i.state == "COMPLETE" and i.trained), key=lambda i: (-i.value, i.number))
    shown = complete[:top]
    stopped = [i for i in infos if i.trained and i.state != "COMPLETE"]
    baseline = next((i for i in infos if i.baseline and i.trained and i not in shown), None)
    most = max([len(i.curve) for i in shown + stopped] or [1])
    dots = most <= 15  # markers on every epoch only while they stay apart
    with _rc():
        fig = _new_figure()
        ax = fig.add_subplot()
        for i in stopped:
            epochs = range(1, len(i.curve) + 1)
            ax.plot(epochs, [100 * v for v in i.curve], color=GREY, lw=0.9, alpha=0.7, marker="o",
                    ms=2.5 if dots or len(i.curve) == 1 else 0, zorder=2)
        handles = []
        colours = iter(CURVE_COLOURS * (1 + top // len(CURVE_COLOURS)))
        for k, i in enumerate(shown):
            epochs = range(1, len(i.curve) + 1)
            style = dict(color=VERMILLION, ls="--", marker="*", ms=7) if i.baseline else \
                dict(color=next(colours), ls="-", marker="o", ms=3.5)
            if not dots and len(i.curve) > 1:
                style["ms"] = 0
            ax.plot(epochs, [100 * v for v in i.curve], lw=1.5, zorder=3 if not i.baseline else 4, **style)
            handles.append(Line2D([], [], lw=1.5, **{**style, "ms": 7 if i.baseline else 3.5},
                                  label=f"#{k + 1} trial {i.number}{' = Model 1' if i.baseline else ''} "
                                        f"({100 * i.value:.2f}%)"))
        if baseline is not None:
            epochs = range(1, len(baseline.curve) + 1)
            ax.plot(epochs, [100 * v for v in baseline.curve], color=VERMILLION, lw=1.5, ls="--", marker="*",
                    ms=7 if dots or len(baseline.curve) == 1 else 0, zorder=4)
            handles.append(Line2D([], [], color=VERMILLION, ls="--", marker="*", ms=7,
                                  label=f"Model 1 here: trial {baseline.number}, {baseline.state.lower()}"))
        if stopped:
            handles.append(Line2D([], [], color=GREY, lw=0.9, marker="o", ms=2.5,
                                  label=f"{_not_complete(stopped)}: {len(stopped)} trials"))
        ax.set_xlim(0.7, most + 0.3)
        if most <= 12:
            ax.set_xticks(range(1, most + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        _fit_legend(fig, handles, fontsize=7.5, ncols=(4, 3, 2, 1))
        fig.savefig(path, dpi=DPI, facecolor="white")
    return {"shown": [i.number for i in shown], "stopped": [i.number for i in stopped]}


def plot_importances(importances: dict[str, float], path: Path, evaluator: str = "fANOVA") -> None:
    items = sorted(importances.items(), key=lambda kv: kv[1])
    with _rc():
        height = min(SIZE[1], max(2.6, 0.9 + 0.3 * len(items)))
        fig = _new_figure((SIZE[0], height))
        ax = fig.add_subplot()
        ax.barh([k for k, _ in items], [v for _, v in items], color=BLUE, height=0.6)
        for k, v in items:
            ax.text(v, k, f" {v:.2f}", va="center", ha="left", fontsize=8, color="0.2")
        ax.set_xlim(0, max(v for _, v in items) * 1.15 or 1)
        ax.set_xlabel(f"importance for validation accuracy ({evaluator}, normalised to sum to 1)")
        ax.grid(axis="y", visible=False)
        fig.savefig(path, dpi=DPI, facecolor="white")


@contextlib.contextmanager
def _rc():
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


# ---------------------------------------------------------------- tables and pages


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text (escaped in HTML)
    image: str | None = None
    image_alt: str = ""
    table: tuple[list[str], list[list[str]]] | None = None
    notes: list[str] = field(default_factory=list)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _top_rows(study: optuna.Study, top: int) -> list[dict]:
    exported = study.user_attrs.get("exported") or {}
    rows = []
    for rank, t in enumerate(best_trials(study, top), 1):
        a = t.user_attrs
        curve = a.get("val_acc_per_epoch") or []
        test = exported.get("test_acc") if exported.get("trial") == t.number else None
        rows.append({"rank": rank, "trial": t.number, "summary": a.get("summary", "?"),
                     "baseline": a.get("baseline") == "Model 1", "params": a.get("params"), "macs": a.get("macs"),
                     "val_acc": t.value, "epochs": len(curve), "seconds": sum(a.get("seconds_per_epoch") or []),
                     "test_acc": test})
    return rows


def _fmt_int(x) -> str:
    return "—" if x is None else f"{x:,}"


def _sections(study, infos, counts, rows, imp, imp_note, acc_info, curves_info) -> list[Section]:
    attrs = study.user_attrs
    dataset = dataset_phrase(attrs.get("dataset"))
    short = dataset_short(attrs.get("dataset"))
    budget = attrs.get("budget")
    val_size, limit = attrs.get("val_size"), attrs.get("limit_train")
    held_out = f"{val_size:,} images held out of its training split" if val_size else "a split held out of training"
    split = f"validation accuracy on {held_out}" + (f", training on {limit:,} images" if limit else "")
    sections = []

    overview = Section("Overview", [
        f"Study {study.study_name!r}: {counts['trials']} trials under a budget of {_fmt_int(budget)} parameters, "
        f"trained and compared on {dataset}. The objective is {split}.",
        "Accuracies of trials are validation accuracies on that data; the seed report's Table 1 gives test "
        "accuracies on true CIFAR-10 after 200 epochs. The two are not the same measurement.",
    ])
    exported = attrs.get("exported")
    if exported and exported.get("test_acc") is not None:
        where = f" (exported to {exported['dir']})" if exported.get("dir") else ""
        on = dataset_phrase(exported.get("dataset") or attrs.get("dataset"))
        overview.paragraphs.append(f"Exported winner: trial {exported.get('trial')}, test accuracy "
                                   f"{_pct(exported['test_acc'])} on the test split of {on}{where}.")
    sections.append(overview)

    counts_rows = [
        ["trials run", str(counts["trials"])],
        ["complete", str(counts["complete"])],
        ["pruned by the pruner", str(counts["pruned_by_pruner"])],
        ["stopped as diverged", str(counts["diverged"])],
        ["skipped as duplicates of a running trial", str(counts["duplicate"])],
        ["rejected by the budget (over budget, not trained)", str(counts["over_budget"])],
        ["failed", str(counts["failed"])],
        ["running", str(counts["running"])],
        ["waiting (queued or to retry)", str(counts["waiting"])],
        ["GPU-hours used", f"{counts['gpu_hours']:.3f}"],
        ["CPU-hours used", f"{counts['cpu_hours']:.3f}"],
    ]
    failures: dict[str, int] = {}
    for i in infos:
        if i.state == "FAIL":
            why = i.fail_reason.split(":")[0].split(" (")[0].strip() or "no reason recorded"
            failures[why] = failures.get(why, 0) + 1
    notes = [f"Failed: {', '.join(f'{n} {why}' for why, n in sorted(failures.items()))}."] if failures else []
    sections.append(Section("Counts", table=(["", "count"], counts_rows), notes=notes + [
        "Hours are the sum of the recorded training seconds per epoch of every trial, by the device it ran on; "
        "epochs a resumed trial replays from an earlier run's checkpoint count once."]))

    if rows:
        header = ["rank", "trial", "spec", "params", "MACs", "val acc", "epochs", "train s", "test acc"]
        body = [[str(r["rank"]), str(r["trial"]), r["summary"] + (" (Model 1)" if r["baseline"] else ""),
                 _fmt_int(r["params"]), _fmt_int(r["macs"]), _pct(r["val_acc"]), str(r["epochs"]),
                 f"{r['seconds']:.1f}", _pct(r["test_acc"])] for r in rows]
        notes = [f"val acc: best {split} ({short}). epochs: epochs trained. train s: training seconds in all. "
                 f"test acc: only for the exported winner, on the test split of {short}."]
        sections.append(Section(f"Top {len(rows)} trials", table=(header, body), notes=notes))
    else:
        sections.append(Section("Top trials", ["No trial has completed yet: nothing to rank."]))

    trained = counts["trained"]
    acc_text = [
        f"Every trained trial ({trained}) by its parameter count and best validation accuracy; the Pareto front "
        "joins the complete trials no other complete trial beats on both. The dashed line is the budget. "
        f"Diamonds are the seed report's Table 1 models, {REPORTED}, at their exact parameter counts where "
        "the spec is known (else the reported count).",
    ]
    baseline = next((i for i in infos if i.baseline), None)
    if baseline is None:
        acc_text.append("This study was not seeded with Model 1.")
    elif baseline.trained:
        n = len(baseline.curve)
        acc_text.append(f"The star is Model 1 as trained in this study (trial {baseline.number}, "
                        f"{_pct(baseline.best_acc)} validation accuracy after {n} epoch{'s' if n != 1 else ''}).")
    else:
        why = (f"over the budget ({_fmt_int(baseline.params)} parameters)" if baseline.over_budget
               else baseline.state.lower())
        acc_text.append(f"Model 1 was seeded as trial {baseline.number} but not trained here: {why}.")
    if acc_info.get("zoom"):
        acc_text.append("The right panel zooms on the corner of the Table 1 models (the dotted box on the left).")
    if not trained:
        acc_text.append("No trial has trained yet.")
    sections.append(Section("Accuracy against parameters", acc_text, image=ACC_PLOT,
                            image_alt="validation accuracy against parameter count, with the Pareto front, the "
                                      "budget and the seed report's Table 1"))

    if curves_info is None:
        sections.append(Section("Learning curves", ["No trial has trained yet: no learning curves."]))
    else:
        sections.append(Section("Learning curves", [
            f"Validation accuracy after each epoch of the top {len(curves_info['shown'])} complete trials, "
            f"coloured and numbered by their rank in the table above; trials stopped early by the pruner, "
            f"by divergence or by failure in grey ({len(curves_info['stopped'])})."],
            image=CURVES_PLOT, image_alt="validation accuracy per epoch"))

    if imp is None:
        sections.append(Section("Which dimensions matter", [imp_note + "."]))
    else:
        header = ["parameter", "importance"]
        body = [[k, f"{v:.3f}"] for k, v in sorted(imp.items(), key=lambda kv: -kv[1])]
        sections.append(Section("Which dimensions matter", [
            f"Optuna's parameter importances: {imp_note}. Few trials make these rough."],
            image=IMPORTANCE_PLOT, image_alt="parameter importances", table=(header, body)))

    table_1 = attrs.get("table_1") or []
    if table_1:
        header = ["model", "description", "reported test acc", "reported params", "exact params"]
        body = [[r["model"], r["description"], f"{r['reported_test_acc']:.2f}%", f"{r['reported_params']:,}",
                 _fmt_int(r.get("params"))] for r in table_1]
        sections.append(Section("The seed report's Table 1", [f"{REPORTED[0].upper()}{REPORTED[1:]}."],
                                table=(header, body)))
    return sections


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #666; margin-top: 0; font-size: 0.9em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { border-bottom: 2px solid #bbb; background: #fafafa; }
td.text, th.text { text-align: left; }
td.spec, th.spec { text-align: left; }
td.spec { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.95em; text-align: left; }
p.note { color: #555; font-size: 0.85em; }
"""


def _html(study, sections: list[Section], generated: str) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>resnet-search report: {e(study.study_name)}</title>", f"<style>{CSS}</style>", "</head>",
           "<body>", f"<h1>resnet-search report: study {e(study.study_name)}</h1>",
           f'<p class="meta">generated {e(generated)} from the study\'s storage</p>']
    for s in sections:
        out.append(f"<h2>{e(s.title)}</h2>")
        out += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        if s.image:
            out.append(f'<figure><img src="{e(s.image)}" alt="{e(s.image_alt)}" width="1050"></figure>')
        if s.table:
            header, body = s.table
            text_cols = {k for k, h in enumerate(header) if h in ("", "spec", "model", "description", "parameter")}

            def cls(k, h=header):
                return ' class="spec"' if h[k] == "spec" else ' class="text"' if k in text_cols else ""

            out.append("<table><thead><tr>" + "".join(f"<th{cls(k)}>{e(h)}</th>" for k, h in enumerate(header))
                       + "</tr></thead><tbody>")
            for row in body:
                out.append("<tr>" + "".join(f"<td{cls(k)}>{e(c)}</td>" for k, c in enumerate(row)) + "</tr>")
            out.append("</tbody></table>")
        out += [f'<p class="note">{e(n)}</p>' for n in s.notes]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(study, sections: list[Section], generated: str) -> str:
    out = [f"# resnet-search report: study {study.study_name}", "", f"_generated {generated} from the study's storage_",
           ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        if s.image:
            out += [f"![{s.image_alt}]({s.image})", ""]
        if s.table:
            header, body = s.table
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "|".join("---" if h in ("", "spec", "model", "description", "parameter") else "---:"
                                      for h in header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
            out.append("")
        for n in s.notes:
            out += [f"_{n}_", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- entry points


def write_report(study: optuna.Study, out_dir: Path, top: int = TOP_K) -> dict:
    """Write index.html, report.md and the PNGs into out_dir (created; stale report PNGs removed).
    Returns the numbers written, for tests and callers."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot this refresh cannot draw must not survive from the last one
        (out_dir / name).unlink(missing_ok=True)
    trials = study.get_trials(deepcopy=False)
    infos = [_info(t) for t in trials]
    counts = study_counts(study, infos)
    rows = _top_rows(study, top)
    imp, imp_note = param_importances(study)

    acc_info = plot_accuracy_vs_params(study, infos, out_dir / ACC_PLOT)
    curves_info = plot_learning_curves(infos, out_dir / CURVES_PLOT) if counts["trained"] else None
    if imp is not None:
        plot_importances(imp, out_dir / IMPORTANCE_PLOT, imp_note.split(" over ")[0])

    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = _sections(study, infos, counts, rows, imp, imp_note, acc_info, curves_info)
    (out_dir / "index.html").write_text(_html(study, sections, generated), encoding="utf-8")
    (out_dir / "report.md").write_text(_markdown(study, sections, generated), encoding="utf-8")
    best = rows[0] if rows else None
    return {
        "study": study.study_name,
        "dataset": study.user_attrs.get("dataset"),
        "budget": study.user_attrs.get("budget"),
        "counts": counts,
        "best": best,
        "top": rows,
        "importances": imp,
        "importance_note": imp_note,
        "pareto_front": acc_info["front"],
        "zoomed": acc_info["zoom"],  # the accuracy plot has a second panel on the Table 1 corner
        "curves": curves_info,
        "files": sorted(p.name for p in out_dir.iterdir() if p.name in (*PLOTS, "index.html", "report.md")),
        "out_dir": str(out_dir),
    }


def attach_to_study(study: optuna.Study, out_dir: Path, artifact_dir: str | Path | None = None) -> dict[str, str]:
    """Upload the report's PNGs as study artifacts, so optuna-dashboard lists them.

    A refresh writes over the files of the artifacts it uploaded before (same artifact id, same
    name), so the dashboard shows one copy of each plot however often the report is refreshed.
    A plot this refresh could not draw (no importances yet, say) is replaced by a PNG that says so.
    Returns {filename: artifact id}, also kept in the study user attr `report_artifacts`."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    artifact_dir = artifact_dir or study.user_attrs.get("artifact_dir")
    if not artifact_dir:
        raise ValueError(f"study {study.study_name!r} records no artifact_dir; pass artifact_dir")
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    out_dir = Path(out_dir)
    known = _study_artifacts(study)  # filename -> id, of artifacts still listed (not deleted)
    recorded = {k: v for k, v in (study.user_attrs.get(ARTIFACTS_ATTR) or {}).items() if v in known.values()}
    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PLOTS:
            path = out_dir / name
            previous = recorded.get(name) or known.get(name)
            if not path.exists():
                if previous is None:
                    continue
                path = Path(tmp) / name
                _placeholder(path, f"{name}: not drawn at the last refresh (see the report)")
            if previous is not None:
                with open(path, "rb") as f:
                    store.write(previous, f)
                ids[name] = previous
            else:
                ids[name] = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study,
                                            mimetype="image/png")
    study.set_user_attr(ARTIFACTS_ATTR, ids)
    return ids


def _study_artifacts(study: optuna.Study) -> dict[str, str]:
    """filename -> artifact id of the study's own artifacts. Read from the system attrs directly:
    an artifact deleted in optuna-dashboard is left as a null there, which
    optuna.artifacts.get_all_artifact_meta does not skip."""
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    found = {}
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():
        if not key.startswith(ARTIFACTS_ATTR_PREFIX):
            continue
        try:
            meta = json.loads(value)
        except (TypeError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("filename") in PLOTS:
            found[meta["filename"]] = meta["artifact_id"]
    return found


def _placeholder(path: Path, message: str) -> None:
    with _rc():
        fig = _new_figure((SIZE[0], 1.5))
        fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3")
        fig.savefig(path, dpi=DPI, facecolor="white")


# ---------------------------------------------------------------- headless Chromium check


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(index_html: Path, out_png: Path, chromium: str | None = None, size=(1200, 3000),
               timeout: float = 120) -> Path:
    """Render a page in headless Chromium to a PNG; raises RuntimeError with Chromium's words if it fails."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found (Debian: apt-get install chromium)")
    out_png = Path(out_png).resolve()
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out_png}",
               f"--window-size={size[0]},{size[1]}", Path(index_html).resolve().as_uri()]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out_png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-800:]}")
    return out_png


def screenshot_stats(png: Path) -> dict:
    """How much of a screenshot is ink and how much is colour (the plots are the only colour on the page)."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        width, height = rgb.size
        small = rgb.resize((max(1, width // 2), max(1, height // 2)))
    pixels = list(small.getdata())
    ink = sum(1 for r, g, b in pixels if min(r, g, b) < 200)
    colour = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60)
    return {"width": width, "height": height, "ink": ink / len(pixels), "colour": colour / len(pixels)}
