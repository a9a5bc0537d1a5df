"""Pause points: where a kill -9 must be survivable, a test stops the process there on purpose.

Killing at random moments almost never lands inside a commit or a save, so a test that relies on it passes
even when the code it guards is broken. A test sets config.PAUSE_ENV to `name` (or `name@N`, the N-th time the
point is reached) and config.PAUSE_FILE_ENV to a path; the process creates that file at the point and waits to
be killed. Unset, as everywhere outside tests, a point costs one environment lookup."""

from __future__ import annotations

import os
import time
from pathlib import Path

from clipdex.retrieval import config

_reached: dict[str, int] = {}


def pause_point(name: str) -> None:
    """Stop here, forever, when a test asked for this point (see the module's docstring)."""
    wanted = os.environ.get(config.PAUSE_ENV)
    if not wanted or wanted.partition("@")[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] != int(wanted.partition("@")[2] or 1):
        return
    Path(os.environ[config.PAUSE_FILE_ENV]).write_text(str(os.getpid()), encoding="utf-8")
    while True:
        time.sleep(1)
