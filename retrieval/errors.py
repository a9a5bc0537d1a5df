"""The errors a user can act on, by kind. Each kind says once how the CLI exits and what HTTP status the web API
answers with; everything else that goes wrong is unexpected (the CLI's last net, an HTTP 500). A Ctrl-C is not an
error: commands end with status 130 and keep what they wrote."""

from __future__ import annotations


class ClipdexError(Exception):
    """A problem the user can act on; its message is the whole explanation."""

    exit_code = 1
    http_status = 400


class UsageError(ClipdexError):
    """Options that cannot go together, or that are missing: said before any work, exit status 2 as for the
    command line's own usage errors."""

    exit_code = 2


class NotFound(ClipdexError):
    """What was asked for is not there: a file, a library, an item, a model's weights."""

    http_status = 404


class Refused(ClipdexError):
    """Understood, and declined to keep data safe: another model's library, a file that changed, a busy writer."""

    http_status = 409


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's own first line (a library's message may go on with SQL, parameters or a traceback), or its
    type when it says nothing."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:limit]
