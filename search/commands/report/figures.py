"""The report's PNGs, drawn with matplotlib: accuracy against parameters and against MACs, learning
curves, and parameter importances (Optuna's own matplotlib plot). Colour-blind-safe (Okabe-Ito) colours."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ...study.record import StudyRecord, TrialRecord
from .numbers import REPORTED, Mark, importance_evaluator, pareto_front, quiet_optuna

DPI = 150
SIZE = (7.0, 4.5)  # inches: 1050 x 675 pixels at 150 dpi
CURVES_K = 8
ACC_PLOT = "accuracy_vs_params.png"
ACC_MACS_PLOT = "accuracy_vs_macs.png"
CURVES_PLOT = "learning_curves.png"
IMPORTANCE_PLOT = "param_importances.png"
PLOTS = (ACC_PLOT, ACC_MACS_PLOT, CURVES_PLOT, IMPORTANCE_PLOT)
COSTS = {"params": "parameters", "macs": "MACs per image"}  # the x axes of the accuracy plots, in words

BLUE, ORANGE, VERMILLION, GREEN, PURPLE, SKY = "#0072B2", "#E69F00", "#D55E00", "#009E73", "#CC79A7", "#56B4E9"
CURVE_COLOURS = (BLUE, ORANGE, GREEN, PURPLE, SKY, "#882255", "#8C564B", "#000000")
GREY = "0.6"
RC = {
    "font.size": 9, "axes.labelsize": 9.5, "axes.titlesize": 10, "legend.fontsize": 8,
    "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "0.9", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "legend.frameon": False, "savefig.dpi": DPI, "figure.dpi": DPI, "font.family": "DejaVu Sans",
    "figure.figsize": SIZE,
}


@contextlib.contextmanager
def _style():
    with matplotlib.rc_context(RC):
        yield


def _new_figure(size=SIZE) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _millions(x: float, _pos=None) -> str:
    m = x / 1e6
    return "0" if m == 0 else f"{m:g}" if m >= 1 else f"{m:.3g}"


def _fit_legend(fig: Figure, handles: list, ncols=(2, 1)) -> None:
    """A legend under the axes, in as many of `ncols` columns as fit the figure's width."""
    for n in [n for n in ncols if n <= max(1, len(handles) - 1)] or [1]:
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=n, fontsize=7.5, handlelength=1.8,
                            columnspacing=1.5)
        fig.canvas.draw()
        if legend.get_window_extent().width <= fig.bbox.width - 8 or n == 1:
            return
        legend.remove()


def placeholder(path: Path, message: str) -> None:
    with _style():
        fig = _new_figure((SIZE[0], 1.5))
        fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3")
        fig.savefig(path, dpi=DPI, facecolor="white")


# ---------------------------------------------------------------- accuracy against parameters or MACs


def table_1_cost(row: dict, cost: str) -> int | None:
    """A Table 1 row's count on the plot's axis: exact where its spec is known, else the reported
    parameters; MACs only where the spec is known (and the study recorded them)."""
    if cost == "macs":
        return row.get("macs")
    return row["params"] if row.get("params") is not None else row["reported_params"]


@dataclass
class Layers:
    """What an accuracy plot draws on each of its panels, against `cost` (params or macs)."""

    cost: str
    trained: list[TrialRecord]
    front: list[tuple]  # (cost, accuracy, trial) points of the complete trials' Pareto front
    table_1: list[dict]  # Table 1's rows whose cost is known
    baseline: TrialRecord | None
    budget: int | None  # the budget's wall on `cost`; None: no wall


def plot_accuracy(study: StudyRecord, trials: list[TrialRecord], marks: list[Mark], path: Path,
                  cost: str = "params") -> dict:
    """Every trained trial by its `cost` (params or macs) and best validation accuracy, the Pareto
    front on that cost, the budget's wall on it, Table 1 as reported and Model 1 as measured;
    `marks` numbered as in the table under the plot. When the Table 1 models sit among trials near
    the budget while other trials are much smaller (a search under about 5M), a second panel zooms
    on that corner."""
    budget = study.budget if cost == "params" else study.macs_budget
    table_1 = [r for r in study.table_1 if table_1_cost(r, cost) is not None]
    marks = [m for m in marks if getattr(m, cost) is not None]
    trained = [r for r in trials if r.trained and getattr(r, cost) is not None]
    complete = [r for r in trained if r.state == "COMPLETE"]
    baseline = next((r for r in trials if r.baseline), None)
    front = pareto_front([(getattr(r, cost), r.best_acc, r.number) for r in complete])
    layers = Layers(cost, trained, front, table_1, baseline, budget)

    xs = ([getattr(r, cost) for r in trained] + [getattr(m, cost) for m in marks if m.kind == "table_1"]
          + ([budget] if budget else []))
    if baseline is not None and getattr(baseline, cost):
        xs.append(getattr(baseline, cost))
    log_x = bool(xs) and max(xs) / max(min(xs), 1) > 20
    if not xs:
        xlim = None
    elif log_x:
        xlim = (min(xs) / 1.6, max(xs) * 1.6)
    else:
        span = max(max(xs) - min(xs), 0.1 * max(xs), 1)
        xlim = (max(0, min(xs) - 0.08 * span), max(xs) + 0.08 * span)
    ys = [100 * r.best_acc for r in trained] + [r["reported_test_acc"] for r in table_1]
    pad = max(2.0, 0.06 * (max(ys) - min(ys))) if ys else 0
    ylim = (max(0.0, min(ys) - pad), min(100.0, max(ys) + pad)) if ys else (0.0, 100.0)

    # A zoom on the Table 1 corner when complete trials are there and that corner is a small part
    # of the main panel.
    zoom = None
    if table_1 and complete and xlim:
        t1x = [getattr(m, cost) for m in marks if m.kind == "table_1"]
        xlo, xhi = 0.92 * min(t1x), 1.015 * max(t1x + ([budget] if budget else []))
        near = [r for r in complete if xlo <= getattr(r, cost) <= xhi]
        if near:
            zys = [r["reported_test_acc"] for r in table_1] + [100 * r.value for r in near]
            zpad = max(0.4, 0.08 * (max(zys) - min(zys)))
            zoom = (xlo, xhi, max(0.0, min(zys) - zpad), min(100.0, max(zys) + zpad))
            t = math.log10 if log_x else float
            x_share = (t(xhi) - t(max(xlo, xlim[0]))) / (t(xlim[1]) - t(xlim[0]))
            if x_share * (zoom[3] - zoom[2]) / (ylim[1] - ylim[0]) > 0.12:
                zoom = None

    with _style():
        fig = _new_figure()
        ax, zax = fig.subplots(1, 2, width_ratios=(1.45, 1)) if zoom else (fig.add_subplot(), None)
        handles = _draw_accuracy_points(ax, layers)
        ax.set_ylim(*ylim)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{COSTS[cost]} (millions, log scale)" if log_x else f"{COSTS[cost]} (millions)")
        if xlim:
            ax.set_xlim(*xlim)
        ax.set_ylabel("accuracy (%)")
        ax.xaxis.set_major_formatter(FuncFormatter(_millions))
        if not trained:
            ax.text(0.03, 0.5, "no trained trials yet", transform=ax.transAxes, fontsize=10, color="0.4",
                    ha="left", va="center")
        inside = []
        if zax is not None:
            xlo, xhi, ylo, yhi = zoom
            _draw_accuracy_points(zax, layers)
            zax.set_xlim(xlo, xhi)
            zax.xaxis.set_major_formatter(FuncFormatter(_millions))
            zax.set_ylim(ylo, yhi)
            zax.set_xlabel(f"{COSTS[cost]} (millions)")
            zax.set_title("zoom: beside Table 1", fontsize=8.5, color="0.3")
            ax.set_title("all trained trials", fontsize=8.5, color="0.3")
            ax.add_patch(Rectangle((xlo, ylo), xhi - xlo, yhi - ylo, fill=False, ec="0.35", lw=0.7, ls=":", zorder=7))
            inside = [m for m in marks if xlo <= getattr(m, cost) <= xhi and ylo <= m.acc <= yhi]
        _fit_legend(fig, handles)
        if zax is not None:
            _number(zax, inside, cost)
        _number(ax, [m for m in marks if m not in inside], cost)
        fig.savefig(path, dpi=DPI, facecolor="white")
    return {"front": [p[2] for p in front], "log_x": log_x, "zoom": zoom is not None}


MARK_COLOURS = {"table_1": "0.1", "best": BLUE, "baseline": VERMILLION}
MARK_RADIUS = {"table_1": 4, "best": 4, "baseline": 7}  # points: half the marker's width
SHARED = 0.04  # points closer than this (a share of the axes) share one number label


def _number(ax, marks: list[Mark], cost: str) -> None:
    """Write each mark's number just above and right of its point; the table under the plot says
    what each number is. Points that nearly coincide share one label ("1–8", "3, 10")."""
    to_axes = ax.transData + ax.transAxes.inverted()
    at = {m.number: to_axes.transform((getattr(m, cost), m.acc)) for m in marks}
    groups: list[list[Mark]] = []
    for m in marks:
        near = next((g for g in groups if any(math.dist(at[m.number], at[o.number]) < SHARED for o in g)), None)
        if near is None:
            groups.append([m])
        else:
            near.append(m)
    for group in groups:
        gap = max(MARK_RADIUS[m.kind] for m in group) + 1
        colour = MARK_COLOURS[group[0].kind] if len({m.kind for m in group}) == 1 else "0.1"
        ax.annotate(_numbers_text([m.number for m in group]), (getattr(group[0], cost), group[0].acc), xytext=(gap, gap),
                    textcoords="offset points", ha="left", va="bottom", fontsize=7.5, fontweight="bold",
                    color=colour, annotation_clip=False, zorder=8)


def _numbers_text(numbers: list[int]) -> str:
    """[1, 2, 3, 5, 7, 8] -> "1–3, 5, 7, 8"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}, {b}" if b == a + 1 else f"{a}–{b}" for a, b in runs)


def _draw_accuracy_points(ax, layers: Layers) -> list:
    """The layers of an accuracy plot on one axes, x their `cost`; returns the legend handles."""
    trained, front, table_1, baseline = layers.trained, layers.front, layers.table_1, layers.baseline
    budget, cost = layers.budget, layers.cost
    complete = [r for r in trained if r.state == "COMPLETE"]
    others = [r for r in trained if r.state != "COMPLETE"]
    handles = []
    if others:
        ax.scatter([getattr(r, cost) for r in others], [100 * r.best_acc for r in others], s=22, facecolors="none",
                   edgecolors=GREY, linewidths=0.9, zorder=2)
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=GREY,
                              label=f"trial {_not_complete(others)}: best val acc so far"))
    plain = [r for r in complete if not r.baseline]
    if plain:
        ax.scatter([getattr(r, cost) for r in plain], [100 * r.value for r in plain], s=22, color=BLUE, alpha=0.85,
                   linewidths=0, zorder=3)
        handles.append(Line2D([], [], ls="", marker="o", color=BLUE, label="trial, complete: best validation acc"))
    if front:
        fx, fy = [p[0] for p in front], [100 * p[1] for p in front]
        ax.step(fx, fy, where="post", color=ORANGE, lw=1.4, zorder=4)
        ax.scatter(fx, fy, s=60, facecolors="none", edgecolors=ORANGE, linewidths=1.4, zorder=4)
        handles.append(Line2D([], [], color=ORANGE, marker="o", mfc="none", lw=1.4,
                              label="Pareto front of the complete trials"))
    if table_1:
        for r in table_1:
            exact = r.get("params") is not None
            ax.scatter([table_1_cost(r, cost)], [r["reported_test_acc"]], marker="D", s=26,
                       facecolors="white", edgecolors="0.1", linewidths=1.0, zorder=5,
                       linestyles="solid" if exact else "dashed")
        handles.append(Line2D([], [], ls="", marker="D", mfc="white", mec="0.1",
                              label=f"seed report's Table 1, {REPORTED}"))
    if baseline is not None:
        if baseline.trained:
            ax.scatter([getattr(baseline, cost)], [100 * baseline.best_acc], marker="*", s=170, color=VERMILLION,
                       edgecolors="white", linewidths=0.6, zorder=6)
            n = len(baseline.curve)
            handles.append(Line2D([], [], ls="", marker="*", ms=11, color=VERMILLION,
                                  label=f"{baseline.baseline_label} as measured here (val acc, {n} epoch{'s' if n != 1 else ''})"))
        elif getattr(baseline, cost):
            ax.scatter([getattr(baseline, cost)], [0], marker="x", s=40, color=VERMILLION, zorder=6, clip_on=False,
                       transform=ax.get_xaxis_transform())
            why = "over budget, not trained" if baseline.over_budget else f"{baseline.state.lower()}, not trained"
            handles.append(Line2D([], [], ls="", marker="x", color=VERMILLION, label=f"{baseline.baseline_label} in this study: {why}"))
    if budget:
        ax.axvline(budget, color=VERMILLION, ls="--", lw=1.1, zorder=1)
        handles.append(Line2D([], [], color=VERMILLION, ls="--", lw=1.1, label=f"budget: {budget:,} {COSTS[cost]}"))
    return handles


def _not_complete(trials: list[TrialRecord]) -> str:
    """What the grey trials are, in words: pruned, failed and (while a search runs) running."""
    kinds = [k for k, states in (("pruned", ("PRUNED",)), ("failed", ("FAIL",)), ("running", ("RUNNING", "WAITING")))
             if any(r.state in states for r in trials)]
    return "stopped early or running" if "running" in kinds else "stopped early" + (
        f" ({' or '.join(kinds)})" if kinds else "")


# ---------------------------------------------------------------- learning curves


def plot_learning_curves(trials: list[TrialRecord], path: Path, top: int = CURVES_K) -> dict:
    """Validation accuracy per epoch: the top complete trials in colour, labelled by rank as in
    the top-K table, trials stopped early in grey, Model 1 as measured dashed."""
    complete = sorted((r for r in trials if r.state == "COMPLETE" and r.trained), key=lambda r: (-r.value, r.number))
    shown = complete[:top]
    stopped = [r for r in trials if r.trained and r.state != "COMPLETE"]
    baseline = next((r for r in trials if r.baseline and r.trained and r not in shown), None)
    most = max([len(r.curve) for r in shown + stopped] or [1])
    dots = most <= 15  # markers on every epoch only while they stay apart
    with _style():
        fig = _new_figure()
        ax = fig.add_subplot()
        for r in stopped:
            ax.plot(range(1, len(r.curve) + 1), [100 * v for v in r.curve], color=GREY, lw=0.9, alpha=0.7,
                    marker="o", ms=2.5 if dots or len(r.curve) == 1 else 0, zorder=2)
        handles = []
        colours = iter(CURVE_COLOURS * (1 + top // len(CURVE_COLOURS)))
        for k, r in enumerate(shown):
            style = dict(color=VERMILLION, ls="--", marker="*", ms=7) if r.baseline else \
                dict(color=next(colours), ls="-", marker="o", ms=3.5)
            if not dots and len(r.curve) > 1:
                style["ms"] = 0
            ax.plot(range(1, len(r.curve) + 1), [100 * v for v in r.curve], lw=1.5, zorder=4 if r.baseline else 3,
                    **style)
            handles.append(Line2D([], [], lw=1.5, **{**style, "ms": 7 if r.baseline else 3.5},
                                  label=f"#{k + 1} trial {r.number}{' = the baseline' if r.baseline else ''} "
                                        f"({100 * r.value:.2f}%)"))
        if baseline is not None:
            ax.plot(range(1, len(baseline.curve) + 1), [100 * v for v in baseline.curve], color=VERMILLION, lw=1.5,
                    ls="--", marker="*", ms=7 if dots or len(baseline.curve) == 1 else 0, zorder=4)
            handles.append(Line2D([], [], color=VERMILLION, ls="--", marker="*", ms=7,
                                  label=f"{baseline.baseline_label} here: trial {baseline.number}, "
                                        f"{baseline.state.lower()}"))
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
        _fit_legend(fig, handles, ncols=(4, 3, 2, 1))
        fig.savefig(path, dpi=DPI, facecolor="white")
    return {"shown": [r.number for r in shown], "stopped": [r.number for r in stopped]}


# ---------------------------------------------------------------- parameter importances


def plot_importances(sub, params: list[str], method: str, path: Path) -> None:
    """Optuna's matplotlib importance plot of `sub` (the complete sampled trials), restyled to
    match the other figures. Its style sheet and pyplot figure stay inside this function."""
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("agg")  # a report writer shows no windows: no GUI backend for pyplot
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_param_importances

    with _style(), quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        ax = plot_param_importances(sub, evaluator=importance_evaluator()[0], params=params,
                                    target_name="validation accuracy")
        fig = ax.figure
        try:
            fig.set_size_inches(SIZE[0], min(SIZE[1], max(2.6, 0.9 + 0.3 * len(params))))
            ax.set_facecolor("white")
            ax.grid(axis="x", color="0.9", linewidth=0.6)
            ax.grid(axis="y", visible=False)
            for bar in ax.patches:
                bar.set_color(BLUE)
            for text in ax.texts:
                text.set(fontsize=8, color="0.2", text=f" {text.get_text()}")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.set_title("", loc="left")
            ax.set_ylabel("")
            ax.set_xlabel(f"importance for validation accuracy ({method}, normalised to sum to 1)", color="0.1",
                          fontsize=9.5)
            ax.tick_params(colors="0.1", labelsize=8.5)
            for side in ("left", "bottom"):
                ax.spines[side].set(visible=True, color="0.1", linewidth=0.8)
            fig.set_layout_engine("constrained")
            fig.savefig(path, dpi=DPI, facecolor="white")
        finally:
            plt.close(fig)
