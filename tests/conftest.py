"""Shared fixtures: every test that touches the warehouse gets its own real PostgreSQL database.

The server is the one the project would use: ``TIERLINE_WAREHOUSE_URL`` when set, otherwise the
embedded PostgreSQL under ``$TIERLINE_HOME``.
"""

from __future__ import annotations

import uuid

import pytest

from tierline import warehouse


@pytest.fixture(scope="session")
def server_url() -> str:
    return warehouse.url()


@pytest.fixture
def warehouse_url(server_url, monkeypatch) -> str:
    database = f"tierline_test_{uuid.uuid4().hex[:10]}"
    target = warehouse.with_database(server_url, database)
    warehouse.ensure_database(target)
    monkeypatch.setenv(warehouse.ENV_URL, target)
    yield target
    warehouse.drop_database(target)
