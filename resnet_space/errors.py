"""The one base class of every error a user can fix: the CLI prints its one-line message and
exits with code 2. Each part raises its own subclass (SpecError, SpaceError, DataError, ...)."""


class UserError(Exception):
    """Bad input or state a user can fix; the message is one line."""
