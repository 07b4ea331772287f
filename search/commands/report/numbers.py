"""The numbers a report shows, each from one reading of the study (record.Snapshot): counts and hours,
the top trials, the Pareto fronts (accuracy against params, MACs, or both), parameter
importances, how far early epochs predict the final accuracy (pruner trust), the retrained
networks, and the numbered points of the accuracy plots.

Accuracies in a study are fractions (validation accuracy, the objective); the seed report's
Table 1 holds test accuracies in percent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from dataclasses import dataclass, field

import numpy as np
import optuna

from ...study.record import Snapshot, StudyRecord, TrialRecord, finalist_winner, latest_finalists, ranked, trial_counts
from ...study.strategy import rung_epochs

REPORTED = "as reported: test acc, true CIFAR-10, 200 epochs"


def dataset_phrase(name: str | None) -> str:
    """The data the study searched on, in words a reader cannot misread: true CIFAR-10 (what
    Table 1 reports on) named as such, any image folder (a JPEG copy of CIFAR-10 among them) by its
    folder's name."""
    if not name:
        return "an unrecorded dataset"
    if name == "CIFAR-10":
        return "true CIFAR-10"
    folder, marked, kind = name.partition(" (image folder")
    return f"the image folder {folder}" + (" (JPEG)" if "JPEG" in kind else "") if marked else name


def dataset_short(name: str | None) -> str:
    if not name:
        return "an unrecorded dataset"
    if name == "CIFAR-10":
        return "true CIFAR-10"
    return "the image folder" if "image folder" in name else name


# ---------------------------------------------------------------- counts and hours


def own_seconds(trials: list[TrialRecord]) -> dict[int, float]:
    """The training seconds each trial spent itself, by trial number. A trial retried after its
    worker died, or re-queued after Ctrl-C, starts with copies of its first run's user attrs and,
    resuming from the checkpoint, replays that run's epochs into its own lists: those are counted
    once, in the run that trained them."""
    own, earlier = {}, {}
    for r in sorted(trials, key=lambda r: r.number):
        chain = r.first_trial if r.first_trial is not None and r.first_trial != r.number else None
        if r.state == "WAITING":
            own[r.number] = 0.0
        elif r.resumed_from_epoch:
            own[r.number] = sum(r.seconds[r.resumed_from_epoch:])
        elif chain is not None and r.seconds in earlier.get(chain, []):
            own[r.number] = 0.0  # copies, before its first epoch of its own
        else:
            own[r.number] = sum(r.seconds)
        if r.seconds:
            earlier.setdefault(chain if chain is not None else r.number, []).append(r.seconds)
    return own


def study_counts(snapshot: Snapshot) -> dict:
    """trial_counts (the numbers `resnet-search best` prints) and what the report adds to them."""
    trials = snapshot.trials
    counts = trial_counts(trials)
    diverged = sum(r.diverged for r in trials)
    duplicate = sum(r.state == "PRUNED" and r.duplicate for r in trials)
    own = own_seconds(trials)
    hours = {"gpu_hours": 0.0, "cpu_hours": 0.0}
    for r in trials:
        key = "gpu_hours" if r.device.startswith("cuda") else "cpu_hours" if r.device.startswith("cpu") else None
        if key:
            hours[key] += own[r.number] / 3600
    return {**counts, "pruned_by_pruner": counts["pruned"] - diverged - duplicate, "diverged": diverged,
            "duplicate": duplicate, "waiting": sum(r.state == "WAITING" for r in trials),
            "trained": sum(r.trained for r in trials), **hours}


def failures(trials: list[TrialRecord]) -> dict[str, int]:
    """Failed trials by the first words of their reason."""
    found: dict[str, int] = {}
    for r in trials:
        if r.state == "FAIL":
            why = r.fail_reason.split(":")[0].split(" (")[0].strip() or "no reason recorded"
            found[why] = found.get(why, 0) + 1
    return found


def top_rows(snapshot: Snapshot, top: int, with_baseline: bool = False) -> list[dict]:
    """The best `top` complete trials by validation accuracy; with_baseline adds the seeded
    baseline (rank "base") when it ranks lower, since it is what the search is measured against."""
    exported = snapshot.study.exported or {}
    shown = list(enumerate(ranked(snapshot.trials)[:top], 1))
    baseline = next((r for r in snapshot.trials if r.baseline and r.trained), None) if with_baseline else None
    if baseline is not None and baseline.number not in [r.number for _, r in shown]:
        shown.append(("base", baseline))
    rows = []
    for rank, r in shown:
        test = exported.get("test_acc") if exported.get("trial") == r.number else None
        rows.append({"rank": rank, "trial": r.number, "summary": r.summary,
                     "baseline": r.baseline_label if r.baseline else "", "label": r.label,
                     "params": r.params, "macs": r.macs, "val_acc": r.best_acc, "complete": r.value is not None,
                     "epochs": len(r.curve), "seconds": sum(r.seconds), "test_acc": test})
    return rows


def final_stage_rows(snapshot: Snapshot) -> list[dict]:
    """The final stage beside the search: each finalist's search trial, its validation accuracy in
    the search and in the final stage (trained again, longer, unpruned), best first; the winner
    marked. Empty before the final stage began."""
    final = snapshot.final
    if final is None:
        return []
    won = finalist_winner(final)
    won = won.number if won is not None else None
    search = {r.number: r for r in snapshot.trials}
    rows = []
    for r in latest_finalists(final):
        source = search.get(r.finalist_of)
        rows.append({"trial": r.finalist_of, "final_trial": r.number, "summary": r.summary,
                     "baseline": r.baseline_label if r.baseline else "", "label": r.label, "params": r.params,
                     "macs": r.macs, "search_val_acc": source.best_acc if source else None,
                     "search_epochs": len(source.curve) if source else None,
                     "val_acc": r.value if r.state == "COMPLETE" else None, "state": r.state,
                     "epochs": r.recipe.get("epochs"), "seconds": sum(r.seconds), "winner": r.number == won})
    return sorted(rows, key=lambda row: (row["val_acc"] is None, -(row["val_acc"] or 0), row["final_trial"]))


# ---------------------------------------------------------------- the accuracy plot's numbers


def pareto_front(points: list[tuple]) -> list[tuple]:
    """(cost, ..., acc, trial) points that no other point beats: no higher cost and no lower
    accuracy, better in one of them; of identical points, the first trial's. Costs are params,
    or params and MACs, or any others; sorted by the costs."""
    def beats(q, p) -> bool:
        costs_q, costs_p = q[:-2], p[:-2]
        no_worse = all(a <= b for a, b in zip(costs_q, costs_p)) and q[-2] >= p[-2]
        return no_worse and (q[:-1] != p[:-1] or q[-1] < p[-1])

    return sorted((p for p in points if not any(beats(q, p) for q in points if q is not p)),
                  key=lambda p: (p[:-2], -p[-2], p[-1]))


def front_rows(snapshot: Snapshot) -> list[dict]:
    """`best --front` and the report's front table: the complete trials no other complete trial
    beats on validation accuracy, params and MACs together, fewest params first."""
    complete = {r.number: r for r in snapshot.trials
                if r.state == "COMPLETE" and r.value is not None and r.params is not None and r.macs is not None}
    front = pareto_front([(r.params, r.macs, r.value, r.number) for r in complete.values()])
    return [{"trial": n, "summary": complete[n].summary,
             "baseline": complete[n].baseline_label if complete[n].baseline else "", "label": complete[n].label,
             "params": p, "macs": m, "val_acc": acc, "epochs": len(complete[n].curve)} for p, m, acc, n in front]


@dataclass
class Mark:
    """A numbered point of the accuracy plots, listed in the table under them."""
    number: int
    name: str
    params: int
    macs: int | None  # None: not known (Table 1's Model 7, or a study that recorded no MACs for Table 1)
    acc: float  # percent
    measured: str
    kind: str  # "table_1", "best" or "baseline"


def accuracy_marks(study: StudyRecord, trials: list[TrialRecord]) -> list[Mark]:
    """Table 1's models in their order, then the best trial, then Model 1 as trained here."""
    marks = []
    for r in study.table_1:
        exact = r.get("params") is not None
        marks.append(Mark(len(marks) + 1, r["model"] + ("" if exact else " (reported count)"),
                          r["params"] if exact else r["reported_params"], r.get("macs"), r["reported_test_acc"],
                          REPORTED, "table_1"))
    complete = [r for r in trials if r.state == "COMPLETE" and r.trained and r.params is not None]
    if complete:
        best = max(complete, key=lambda r: (r.value, -r.number))
        marks.append(Mark(len(marks) + 1, f"best: trial {best.number}", best.params, best.macs, 100 * best.value,
                          "best validation acc here", "best"))
    baseline = next((r for r in trials if r.baseline and r.trained and r.params is not None), None)
    if baseline is not None:
        marks.append(Mark(len(marks) + 1, f"{baseline.baseline_label} as trained here (trial {baseline.number})",
                          baseline.params, baseline.macs, 100 * baseline.best_acc, "best validation acc here",
                          "baseline"))
    return marks


# ---------------------------------------------------------------- parameter importances


@dataclass
class Importances:
    values: dict[str, float] | None  # parameter -> importance, summing to 1; None when not computable
    method: str  # "fANOVA" or "PED-ANOVA"
    trials: int  # complete sampled trials behind them
    why_not: str = ""  # why values is None
    sampled: optuna.Study | None = field(default=None, repr=False, compare=False)  # behind values (sampled_study)

    @property
    def note(self) -> str:
        if self.values is None:
            return self.why_not
        return (f"{self.method} over the {self.trials} complete sampled trials (the seeded Model 1 left out), "
                f"on the parameters they all share")


def importance_evaluator():
    """Optuna's default, fANOVA, when scikit-learn is installed (it needs it); else PED-ANOVA,
    which needs nothing beyond numpy. Returns (evaluator, name for the page)."""
    if importlib.util.find_spec("sklearn") is None:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"


@contextlib.contextmanager
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def sampled_study(snapshot: Snapshot) -> tuple[optuna.Study | None, list[str], str]:
    """An in-memory study of the complete sampled trials and the parameters they all searched,
    or None and why not. The seeded Model 1 trial is left out: its architecture is fixed, not
    sampled, so it has only the recipe's params and would shrink the shared space to those."""
    complete = [t for t, r in zip(snapshot.frozen, snapshot.trials)
                if r.state == "COMPLETE" and t.value is not None and not r.baseline]
    if len(complete) < 2:
        return None, [], (f"parameter importances need at least 2 complete sampled trials; this study has "
                          f"{len(complete)}")
    if len({t.value for t in complete}) < 2:
        return None, [], "parameter importances cannot be computed: every complete trial has the same accuracy"
    # Only dimensions every such trial has and that could take more than one value (a fixed
    # single-choice dimension is not a search dimension: it would show as a zero bar).
    shared = set.intersection(*(set(t.distributions) for t in complete))
    params = sorted(k for k in shared if not any(t.distributions[k].single() for t in complete))
    if not params:
        return None, [], "parameter importances cannot be computed: the complete trials share no searched parameter"
    with quiet_optuna():
        sub = optuna.create_study(direction="maximize")
        sub.add_trials(complete)
    return sub, params, ""


def param_importances(snapshot: Snapshot) -> Importances:
    """Importances of the sampled dimensions for validation accuracy, or why there are none."""
    evaluator, method = importance_evaluator()
    sub, params, why_not = sampled_study(snapshot)
    if sub is None:
        return Importances(None, method, 0, why_not)
    trials = len(sub.trials)
    with quiet_optuna():
        try:
            values = optuna.importance.get_param_importances(sub, evaluator=evaluator, params=params)
        except Exception as e:  # noqa: BLE001 - optuna raises several kinds for degenerate studies
            return Importances(None, method, trials,
                               f"parameter importances cannot be computed ({method}): {type(e).__name__}: {e}")
    values = {k: float(v) for k, v in values.items() if math.isfinite(v)}
    if not values:
        return Importances(None, method, trials, "parameter importances cannot be computed: no sampled parameter "
                                                 "varies across complete trials")
    return Importances(values, method, trials, sampled=sub)


# ---------------------------------------------------------------- pruner trust


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    values, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first occurrence
    return (first + (counts + 1) / 2)[inverse.ravel()]


def spearman(x, y) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 pairs or a
    constant column, where it says nothing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or len(x) != len(y) or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx @ ry) / math.sqrt((rx @ rx) * (ry @ ry)))


def pruner_trust(snapshot: Snapshot) -> list[dict]:
    """How well the validation accuracy at each epoch where the pruner decides orders the trials
    as the last epoch does, over the complete trials that ran every epoch (the longest curve among
    complete trials): one {"epoch": e, "last": E, "trials": n, "spearman": rho or None} per rung."""
    full = [r for r in snapshot.trials if r.state == "COMPLETE" and r.trained]
    epochs = max((len(r.curve) for r in full), default=0)
    full = [r for r in full if len(r.curve) == epochs]
    final = [r.curve[-1] for r in full]
    return [{"epoch": e, "last": epochs, "trials": len(full),
             "spearman": spearman([r.curve[e - 1] for r in full], final)} for e in rung_epochs(epochs)]


# ---------------------------------------------------------------- retrained networks


def retrained(snapshot: Snapshot) -> list[dict]:
    """The study's retrained networks (`resnet-search retrain`), each with the validation accuracy
    the search measured for its trial; found networks first, then the baselines, so a found
    network and Model 1 stand side by side."""
    entries = snapshot.study.retrained
    by_number = {r.number: r for r in snapshot.trials}
    rows = []
    for entry in entries:
        trial = by_number.get(entry.get("trial"))
        rows.append({**entry, "val_acc": trial.best_acc if trial is not None else None})
    return sorted(rows, key=lambda r: bool(r.get("baseline")))


def model_1_reported(study: StudyRecord) -> dict:
    """Table 1's Model 1 as the study recorded it, else as this package knows it."""
    row = next((r for r in study.table_1 if r.get("model") == "Model 1"), None)
    if row is None:
        from resnet_space.table1 import table_1_rows

        row = table_1_rows()[0]
    return row
