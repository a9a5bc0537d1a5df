"""Standard output as the CLI writes its data there, and how a process ends once the data is out.

A closed standard output (`clipdex status >&-`) or one that cannot take what is written (a full disk, `> /dev/full`)
ends the command with one line on stderr and status 1: never a traceback, never an "unexpected" error, never a
silent status 0 for an answer nobody got. A reader that closed its pipe early (`| true`) ends it quietly with
status 1 (cli/app.py). A closed descriptor 1 is first taken by /dev/null, so that no file the command opens (the
library's database) can become descriptor 1 and receive what a library writes to its standard output.
"""

from __future__ import annotations

import io
import os
import sys

from clipdex.retrieval.errors import ClipdexError

CLOSED = "standard output is closed (>&-): there is nowhere to print the answer; send it to a file, or to " \
         "/dev/null to discard it"


class OutputFailed(ClipdexError):
    """Standard output could not take the command's data."""


def _quiet() -> None:
    """What is still buffered goes nowhere from now on (Python's exit flushes it once more)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


class _Guarded(io.TextIOBase):
    """sys.stdout with its failures said in words: a closed one refuses the first character of data; a write or a
    flush that fails (other than a closed pipe, which app.py ends quietly) raises OutputFailed."""

    def __init__(self, stream, closed: bool) -> None:
        self._stream, self._closed = stream, closed

    def _failed(self, exc: OSError) -> OutputFailed:
        _quiet()
        return OutputFailed(f"cannot write to standard output: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        if self._closed and text:
            _quiet()
            raise OutputFailed(CLOSED)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def isatty(self) -> bool:
        return not self._closed and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return self._stream.encoding

    @property
    def errors(self) -> str | None:
        return self._stream.errors

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard() -> None:
    """Put the guard around sys.stdout (the console script and `python -m clipdex`, before any command runs)."""
    closed = sys.stdout is None
    if not closed:
        try:
            os.fstat(sys.stdout.fileno())
        except (OSError, ValueError):
            closed = True
    if closed:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != 1:
            os.dup2(null, 1)
            if null > 2:  # (a closed stdin or stderr keeps /dev/null too)
                os.close(null)
        sys.stdout = _Guarded(open(1, "w", encoding="utf-8", closefd=False), closed=True)
    elif not isinstance(sys.stdout, _Guarded):
        sys.stdout = _Guarded(sys.stdout, closed=False)


def flush() -> int:
    """Send out what is buffered before the process ends at once: 0, or 1 when it could not go out (said in a line
    on stderr unless the reader closed its pipe)."""
    from clipdex.cli.output import print_error

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OutputFailed as exc:
        print_error(str(exc))
        return 1
    except (OSError, ValueError):  # a closed pipe
        _quiet()
        return 1
    return 0
