"""The data layer's errors: one line each, naming the file (and line) and what to do."""

from __future__ import annotations


class DataError(ValueError):
    """A data source that cannot be read; the message says what to do."""


class ConlluError(DataError):
    """A CoNLL-U file that cannot be read: the message names the file and line."""


class DataWarning(UserWarning):
    """Something in a data source was skipped, not fatal: the message says what and how much."""
