"""PostgreSQL fixtures for the consumer tests (one server per session, one database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.postgres_fixture import fresh_database, postgres_server


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
async def postgres_dsn(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a fresh, empty database on the session's PostgreSQL."""
    async with fresh_database(postgres_admin_dsn) as dsn:
        yield dsn
