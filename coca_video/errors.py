"""One base class for errors a user can cause and fix: a bad input file, a bad config value, a missing path.

The CLI prints a :class:`UserError` as one line naming the culprit and exits with its ``exit_status`` (2; 1 for a
run in which no input succeeded); anything else is our bug and keeps its traceback. Raise the most specific subclass; the message always names the file or key.
"""

from __future__ import annotations

INTERRUPTED = 130  # the CLI's exit status after Ctrl-C (SIGINT), as shells report a process it ended: 128 + 2


class UserError(Exception):
    """A problem with what the user gave us (file, folder, value); the message says which and what is wrong."""

    exit_status = 2  # usage, config or input error


class ConfigError(UserError, ValueError):
    """A config file, override or value that does not fit its schema; names the file (or ``command line``) and key."""


class InputError(UserError, FileNotFoundError):
    """A path the user named that is missing, empty, or holds nothing usable (no videos, no parts to merge)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model; the message names the file."""


class DataError(UserError, ValueError):
    """Unusable data: a class list, annotation file, caption table or training set; the message names the file."""


class OutputError(UserError, OSError):
    """An output that cannot be written where asked (it would overwrite an input or a file we did not make)."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency a command needs is not installed; the message says which extra to pip install."""


class NothingSucceeded(DataError):
    """A batch run that went through every input and none succeeded (each failed row is kept and named)."""

    exit_status = 1
