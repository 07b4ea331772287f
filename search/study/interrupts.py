"""Ctrl-C and SIGTERM (how Slurm and Kubernetes stop a job): the first one stops the command at
once, and what it stops is recorded whole."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is; the command exits with 143 (128 + SIGTERM) instead of 130."""


def interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def how_stopped(e: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the command, for messages; its exit code)."""
    return ("SIGTERM", 128 + signal.SIGTERM) if isinstance(e, Terminated) else ("Ctrl-C", 128 + signal.SIGINT)


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only there can signals be caught


def _set_handlers(handler) -> list:
    return [signal.signal(s, handler) for s in STOP_SIGNALS]


@contextlib.contextmanager
def ctrl_c_stops_once():
    """The first Ctrl-C stops the command; later ones, while it records what it stops, are ignored
    until the process exits (one landing in Python's shutdown would print a traceback). One a
    finaliser took, where Python would print "Exception ignored" and go on, is raised again."""
    if not in_main_thread():
        yield
        return

    def stop(signum, frame):
        _set_handlers(signal.SIG_IGN)
        raise interruption(signum)

    def raise_again(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _set_handlers(stop)
            signal.raise_signal(signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT)
        else:
            previous_hook(unraisable)

    previous, previous_hook = _set_handlers(stop), sys.unraisablehook
    sys.unraisablehook = raise_again
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, handler in zip(STOP_SIGNALS, previous):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, handler)


class CtrlC:
    """Ctrl-C while trials run: KeyboardInterrupt is raised once, at once only inside a trial's
    computation (arm: the engine's epochs), and the objective records the trial as interrupted.
    Anywhere else it is kept, and the trial stops at the next epoch's end or computation, or the
    search before the next trial: raised in a storage call it leaves the database session broken
    (the next write fails), in Optuna recording a trial it leaves `updated_state` unset, in a
    finaliser Python prints "Exception ignored" and goes on. Once one is taken the run is
    stopping, and later ones are ignored: raised while the stop is recorded, they would break it."""

    def __init__(self):
        self.pending, self.armed = False, False
        self.signum = signal.SIGINT
        self.previous, self.previous_hook = None, None

    def __enter__(self):
        if in_main_thread():
            self.previous = _set_handlers(self._caught)
        self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc) -> None:
        sys.unraisablehook = self.previous_hook
        if self.previous is not None:
            for sig, handler in zip(STOP_SIGNALS, self.previous):
                signal.signal(sig, signal.SIG_IGN if self.pending else handler)
            self.previous = None
        if self.pending and exc[0] is None:
            raise interruption(self.signum)

    def _unraisable(self, unraisable) -> None:
        """A Ctrl-C a finaliser took is already pending: the search stops at the next check."""
        if not (self.pending and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self.previous_hook(unraisable)

    def _caught(self, signum, frame) -> None:
        if not self.pending:
            self.signum = signum
        self.pending = True
        if self.armed:
            self.armed = False
            raise interruption(self.signum)

    @contextlib.contextmanager
    def arm(self):
        """Where Ctrl-C is raised at once: a trial's computation, which nothing reads half-done."""
        self.armed = True
        try:
            self.check()
            yield
        finally:
            self.armed = False

    def check(self) -> None:
        if self.pending:
            self.armed = False
            raise interruption(self.signum)
