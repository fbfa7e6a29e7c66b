"""The one exception type for mistakes a user can fix (shown as one line, no traceback)."""


class MasksynthError(Exception):
    """A user-facing error: bad path, bad option, unusable data. The CLI prints it in one line."""
