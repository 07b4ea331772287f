"""How a search shows itself while it runs: plain log lines (Quiet), or a rich live view of the
study with the trainer's epoch bar beneath it (LiveView)."""

from __future__ import annotations

import contextlib
import sys

import optuna

from . import record


class Quiet:
    """Log lines on stderr, one per trial; what `run --quiet` and Python callers get."""

    progress = False  # or a rich Progress for the trainer's epoch bar

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def watch(self, study: optuna.Study, total: int):
        """A context entered around each stretch of optimisation of a stage of `total` trials."""
        return contextlib.nullcontext()

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        r = record.TrialRecord.of(trial)
        value = f"{r.value:.2%}" if r.value is not None else "-"
        self.log(f"trial {r.number} {r.state.lower()}: {value} {r.prune_reason}".rstrip())


class LiveView(Quiet):
    """A rich view of the study (trials, pruned, over budget, best) with the trainer's epoch bar
    beneath it; with quiet, the log lines of Quiet and a count line after each trial."""

    def __init__(self, quiet: bool):
        self.study, self.total, self.quiet = None, 0, quiet
        self.progress = False
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                     console=Console(stderr=True, log_path=False))
            self.task = self.progress.add_task("trials", total=None, info="")

    def _refresh(self) -> str:
        counts = record.trial_counts(self.study)
        try:
            best = record.TrialRecord.of(self.study.best_trial)
            best = f"{best.value:.2%} (trial {best.number}, {best.summary}, {best.params:,} params, {best.macs:,} MACs)"
        except ValueError:
            best = "-"
        line = (f"complete {counts['complete']}  pruned {counts['pruned']}  over budget {counts['over_budget']}  "
                f"failed {counts['failed']}  best {best}")
        if self.progress:
            self.progress.update(self.task, completed=min(record.trained_count(self.study), self.total), info=line)
        return line

    def log(self, message: str) -> None:
        if self.progress:
            self.progress.console.log(message)
        else:
            super().log(message)

    def on_trial(self, study, trial) -> None:
        super().on_trial(study, trial)
        line = self._refresh()
        if self.quiet:
            self.log(line)

    @contextlib.contextmanager
    def watch(self, study, total: int):
        self.study, self.total = study, total
        if self.progress:
            final = record.StudyRecord.of(study).stage == "final"
            self.progress.update(self.task, description="finalists" if final else "trials", total=total)
        self._refresh()
        if not self.progress:
            yield
            return
        with self.progress:
            yield
