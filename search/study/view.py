"""How a search shows itself while it runs, at its plainest: a log line per event on stderr.
The command line's richer views (commands/live.py) build on this one."""

from __future__ import annotations

import contextlib
import sys

import optuna

from . import record


class LogLines:
    """Log lines on stderr, one per trial: what Python callers get, and what the command line's
    views build on."""

    progress = None  # or a rich Progress the trainer adds its epoch bar to

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
