"""Which database a library uses, and how a database URL may be shown or remembered: never with a password.

A password can hide in two places of a SQLAlchemy URL, `user:secret@host` and `?password=secret`; both are
removed before a URL is printed, stored in config.json or reported by `status`. libpq finds the password itself
(PGPASSWORD, ~/.pgpass) when the library is opened again.
"""

from __future__ import annotations

from pathlib import Path

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.storage.reading import sqlite_url

_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "sslpassword")


def without_password(url: str) -> str:
    """`url` with any password removed (user info and query string), as a string that is safe to show."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k.lower() not in _SECRET_QUERY_KEYS}
    return parsed._replace(password=None, query=query).render_as_string(hide_password=False)


def database_url_for(root: Path, remembered: str | None, given: str | None) -> tuple[str, str | None]:
    """(URL to open, URL to remember or None): the URL the library was created with, remembered in its config
    file; SQLite in the folder by default."""
    if given is None:
        return remembered or sqlite_url(str(root / config.DATABASE_FILE)), None
    from sqlalchemy.engine import make_url

    try:
        url = make_url(given)
    except Exception:
        raise ClipdexError(
            "not a database URL (expected e.g. postgresql+psycopg://user@host/db; the value is not shown, "
            "as it may hold a password)"
        ) from None
    safe = without_password(url.render_as_string(hide_password=False))
    if remembered and without_password(remembered) != safe:
        raise ClipdexError(f"the library at {root} uses {without_password(remembered)}, not {safe}")
    return url.render_as_string(hide_password=False), None if remembered else safe
