"""PostgreSQL as the metadata store: remembered by the library without its password, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from tests.conftest import new_postgres_database


def test_the_library_remembers_its_database_without_the_password(postgres_server, tmp_path: Path) -> None:
    url = new_postgres_database(postgres_server)
    with_password = url.replace("clipdex@", "clipdex:s3cret@")
    library = Library(tmp_path / "lib", with_password, create=True)
    assert library.store.db.dialect.name == "postgresql"
    remembered = (tmp_path / "lib" / config.LIBRARY_CONFIG_FILE).read_text()
    assert "s3cret" not in remembered and json.loads(remembered)["database"] == url
    assert not (tmp_path / "lib" / config.DATABASE_FILE).exists()
    assert Library(tmp_path / "lib").store.db.dialect.name == "postgresql"  # no --database needed later
    with pytest.raises(ClipdexError, match="uses postgresql"):
        Library(tmp_path / "lib", new_postgres_database(postgres_server))


def test_unreachable_database_is_one_line(cli, tmp_path: Path) -> None:
    result = cli("--database", "postgresql+psycopg://nobody:pw@127.0.0.1:1/none", "index", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot open the library database postgresql+psycopg://nobody@127.0.0.1")
    assert "pw" not in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "library" / config.LIBRARY_CONFIG_FILE).exists()  # a URL that failed is not kept
    bad = cli("--database", "not a url with s3cret", "index", tmp_path)
    assert bad.exit_code == 1 and "not a database URL" in bad.stderr and "s3cret" not in bad.stderr
    in_query = cli("--database", "postgresql+psycopg://nobody@127.0.0.1:1/none?password=s3cret", "index", tmp_path)
    assert in_query.exit_code == 1 and "s3cret" not in in_query.stderr


def test_a_password_in_the_query_string_is_never_stored_or_shown(postgres_server, tmp_path: Path) -> None:
    url = new_postgres_database(postgres_server)
    library = Library(tmp_path / "lib", url + "?password=s3cret&connect_timeout=5", create=True)
    remembered = (tmp_path / "lib" / config.LIBRARY_CONFIG_FILE).read_text()
    assert "s3cret" not in remembered and "connect_timeout=5" in remembered
    from clipdex import api

    assert "s3cret" not in json.dumps(api.status(library))


def test_writers_on_different_machines_sharing_a_database_take_turns(postgres_server, tmp_path: Path) -> None:
    """Two library folders (two machines) on one PostgreSQL database: the file lock can't see the other, the
    advisory lock in the database does."""
    url = new_postgres_database(postgres_server)
    here = Library(tmp_path / "machine-a", url, create=True)
    there = Library(tmp_path / "machine-b", url, create=True)
    with here.writer():
        with pytest.raises(ClipdexError, match="being written by another clipdex process"):
            with there.writer():
                pass
    with there.writer():  # released with the first writer
        pass
