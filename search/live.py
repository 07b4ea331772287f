"""How a search shows itself while it runs: plain log lines (Quiet), or a rich live view of the
study with the trainer's epoch bar beneath it (LiveView)."""

from __future__ import annotations

import contextlib
import sys

import optuna

from . import record


def terminal(stderr: bool = True):
    """A rich console on stderr (or stdout); written to a file or a pipe, lines are not folded
    at 80 columns, so paths stay whole."""
    from rich.console import Console

    shown = Console(stderr=stderr, log_path=False)
    return shown if shown.is_terminal else Console(stderr=stderr, log_path=False, width=200)


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


class Quiet:
    """Log lines on stderr, one per trial; what `run --quiet` and Python callers get."""

    progress = False  # or a rich Progress for the trainer's epoch bar

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def watch(self, study: optuna.Study, total: int):
        """A context entered around each stretch of optimisation of a stage of `total` trials."""
        return contextlib.nullcontext()

    def status(self, message: str):
        """A context held through a long wait before the trials (decoding images): shown while it
        lasts where a terminal shows it, never a line of the log (a refusal stays one line)."""
        return contextlib.nullcontext()

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        r = record.TrialRecord.of(trial)
        said = " ".join(x for x in (f"{r.value:.2%}" if r.value is not None else "", r.prune_reason or r.fail_reason) if x)
        self.log(f"trial {r.number} {r.state.lower()}" + (f": {said}" if said else ""))


class LiveView(Quiet):
    """A rich view of the study (trials, pruned, over budget, best) with the trainer's epoch bar
    beneath it; with quiet, the log lines of Quiet and a count line after each trial."""

    def __init__(self, quiet: bool):
        self.study, self.total, self.quiet = None, 0, quiet
        self.progress, self.task = False, None
        self.console = None if quiet else terminal()

    def _refresh(self) -> str:
        counts = record.trial_counts(record.records(self.study))
        try:
            best = record.TrialRecord.of(self.study.best_trial)
            best = f"{best.value:.2%} (trial {best.number}, {best.summary}, {best.params:,} params, {best.macs:,} MACs)"
        except ValueError:
            best = "-"
        line = (f"complete {counts['complete']}  pruned {counts['pruned']}  over budget {counts['over_budget']}  "
                f"failed {counts['failed']}  best {best}")
        if self.progress:
            self.progress.status = line
            self.progress.update(self.task, completed=min(record.trained_count(self.study), self.total))
        return line

    def status(self, message: str):
        if self.console is not None and self.console.is_terminal:
            return self.console.status(message)
        return super().status(message)

    def log(self, message: str) -> None:
        if self.console is not None and self.console.is_terminal:  # to a file, whole lines
            self.console.log(message)
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
        if self.quiet:
            self._refresh()
            yield
            return
        # A new bar each time: a rich display started again draws over the lines logged since it stopped.
        self.progress = progress_bar(console=self.console)
        final = record.StudyRecord.of(study).stage == "final"
        self.task = self.progress.add_task("finalists" if final else "trials", total=total, info="")
        self._refresh()
        try:
            with self.progress:
                yield
        finally:
            self.progress = False
