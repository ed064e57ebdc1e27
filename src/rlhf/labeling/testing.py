"""Throw-away databases for the labeling tests: SQLite in a folder, or a fresh PostgreSQL database
on the server named by $RLHF_TEST_PG_URL (`.ci/run` starts one on 127.0.0.1 and sets it).

    with temporary_database("postgresql", tmp_path) as url: ...

Where no PostgreSQL can be had, `temporary_database("postgresql", ...)` raises NoDatabase with a
sentence saying why, which the tests turn into a skip; but where $RLHF_TEST_PG_REQUIRED=1 (set by
.ci/run once its server is up) that is an error, so CI never skips the PostgreSQL tests silently.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PG_ENV = "RLHF_TEST_PG_URL"
REQUIRED_ENV = "RLHF_TEST_PG_REQUIRED"
BACKENDS = ("sqlite", "postgresql")


class NoDatabase(Exception):
    """This kind of database cannot be had here; the message says why."""


class DatabaseRequired(RuntimeError):
    """PostgreSQL was promised ($RLHF_TEST_PG_REQUIRED=1) but cannot be had."""


def _none(message: str) -> Exception:
    if os.environ.get(REQUIRED_ENV) == "1":
        return DatabaseRequired(f"{message} (and ${REQUIRED_ENV}=1: a PostgreSQL server was "
                                "promised)")
    return NoDatabase(message)


def postgres_admin_url() -> str:
    """The server URL for creating test databases, or NoDatabase saying why there is none."""
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        raise _none(f"${PG_ENV} is not set: no PostgreSQL server to test against "
                    "(.ci/run starts one; or point it at postgresql+psycopg://user@host/db)")
    try:
        import psycopg  # noqa: F401 - only whether the driver is there
    except ImportError:
        raise _none("the PostgreSQL driver is not installed (pip install -e '.[postgres]')"
                    ) from None
    return url


@contextmanager
def temporary_database(backend: str, folder: Path, name: str = "labels") -> Iterator[str]:
    """A SQLAlchemy URL of an empty database, dropped (PostgreSQL) when the block ends."""
    if backend == "sqlite":
        yield f"sqlite:///{Path(folder) / (name + '.db')}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = make_url(postgres_admin_url())
    db = f"rlhf_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=_null_pool())
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
    except Exception as e:  # noqa: BLE001 - any failure to reach the server means: none here
        admin.dispose()
        raise _none(f"cannot create a database on the PostgreSQL server at "
                    f"{admin_url.render_as_string(hide_password=True)}: "
                    f"{str(e).splitlines()[0]}") from None
    try:
        yield admin_url.set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def count(url_or_engine: Any, sql: str) -> int:
    """The integer a one-value query returns, on any backend."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import Engine

    engine = url_or_engine if isinstance(url_or_engine, Engine) else create_engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        if engine is not url_or_engine:
            engine.dispose()
