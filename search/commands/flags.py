"""The command line's flag types, each refusing a bad value in one line that argparse prints as
the flag's error, and the settings dataclasses filled from the parsed flags."""

from __future__ import annotations

import argparse
import dataclasses
import os

from resnet_space import SpecError, parse_budget


def budget_arg(unit: str):
    """A flag parser for a budget of `unit`, in parse_budget's exact syntax."""
    def parse(text: str) -> int:
        try:
            return parse_budget(text, unit)
        except SpecError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def integer_at_least(minimum: int, what: str = "an integer"):
    """A flag parser for whole numbers of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not {what} of at least {minimum}")
        return value
    return parse


positive_int = integer_at_least(1)
trial_number = integer_at_least(0, "a trial number")  # trials are numbered from 0


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def storage_url(text: str) -> str:
    """A storage URL as given, or read from the environment variable `env:VAR` names, so that a
    password never shows in the process list."""
    if not text.startswith("env:"):
        return text
    name = text.removeprefix("env:")
    if not os.environ.get(name):
        raise argparse.ArgumentTypeError(f"{text}: environment variable {name or '(none named)'} is not set")
    return os.environ[name]


def artifacts_folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no folder")
    return text


def settings_from(cls, args, **given):
    """A settings dataclass filled from the flags of the same names (and `given`)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}, **given)
