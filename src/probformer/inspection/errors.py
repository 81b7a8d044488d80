"""The one error type of the inspection commands: bad input, stated in one line."""


class InspectionError(ValueError):
    """A missing or unreadable model directory, a bad CoNLL-U file, a sentence that cannot be inspected."""
