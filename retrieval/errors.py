"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class ClipdexError(Exception):
    """A problem the user can act on; its message is the whole explanation."""
