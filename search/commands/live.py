"""How `run` shows a search while it runs: log lines with the study's counts after each trial
(CountedLog, for --quiet and pipes), or a rich live view of the study with the trainer's epoch
bar beneath it (LiveView); and the progress bar `retrain` shows."""

from __future__ import annotations

import contextlib

import optuna

from ..study import record
from ..study.view import LogLines


def terminal(stderr: bool = True):
    """A rich console on stderr (or stdout): the terminal's width, or written to a file or a
    pipe, $COLUMNS (80 if unset). Tables fold to it; lines of text are printed whole."""
    from rich.console import Console

    return Console(stderr=stderr, log_path=False)


def progress_bar(transient: bool = False, console=None):
    """The one progress bar on stderr: what, bar, done of total, a free text (`info`), elapsed;
    above them a status line (`.status`) that wraps rather than squeezing the bars."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class WithStatus(Progress):
        status = ""

        def get_renderables(self):
            if self.status:
                yield Text(self.status)
            yield from super().get_renderables()

    return WithStatus(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console or terminal(),
                      transient=transient)


def counts_line(study: optuna.Study) -> str:
    """The study's counts and its best trial, on one line."""
    counts = record.trial_counts(record.records(study))
    try:
        best = record.TrialRecord.of(study.best_trial)
        best = f"{best.value:.2%} (trial {best.number}, {best.summary}, {best.params:,} params, {best.macs:,} MACs)"
    except ValueError:
        best = "-"
    return (f"complete {counts['complete']}  pruned {counts['pruned']}  over budget {counts['over_budget']}  "
            f"failed {counts['failed']}  best {best}")


class CountedLog(LogLines):
    """Log lines, and the study's counts after each trial: `run --quiet`."""

    def on_trial(self, study, trial) -> None:
        super().on_trial(study, trial)
        self.log(counts_line(study))


class LiveView(LogLines):
    """A rich view of the study (trials, pruned, over budget, best) with the trainer's epoch bar
    beneath it, on a terminal; written to a file or a pipe, the log lines alone."""

    def __init__(self, console=None):
        self.study, self.total = None, 0
        self.progress, self.task = None, None
        self.console = console or terminal()

    def _refresh(self) -> None:
        if self.progress:
            self.progress.status = counts_line(self.study)
            self.progress.update(self.task, completed=min(record.trained_count(self.study), self.total))

    def status(self, message: str):
        if self.console.is_terminal:
            return self.console.status(message)
        return super().status(message)

    def log(self, message: str) -> None:
        if self.console.is_terminal:  # to a file, whole lines
            self.console.log(message)
        else:
            super().log(message)

    def on_trial(self, study, trial) -> None:
        super().on_trial(study, trial)
        self._refresh()

    @contextlib.contextmanager
    def watch(self, study, total: int):
        self.study, self.total = study, total
        # A new bar each time: a rich display started again draws over the lines logged since it stopped.
        self.progress = progress_bar(console=self.console)
        final = record.StudyRecord.of(study).stage == "final"
        self.task = self.progress.add_task("finalists" if final else "trials", total=total, info="")
        self._refresh()
        try:
            with self.progress:
                yield
        finally:
            self.progress = None
