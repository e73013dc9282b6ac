"""Every CRM test runs against a real emulator on loopback, through real HTTP: the CRM session
(``crm``, ``sleeps``, ``make_connector``, ``connector``) is shared here; a provider's module
overrides ``crm``, ``connector_class`` and ``connector_options``."""

from __future__ import annotations

import random

import pytest

from tierline.crm import ZohoCrmConnector
from tierline_dev.crm_emulators.zoho import CrmEmulator

from .support import FakeSleep
from .sync_support import create_published_tables


@pytest.fixture
def crm():
    with CrmEmulator() as emulator:
        yield emulator


@pytest.fixture
def sleeps() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def connector_class():
    """The connector under test; a module testing another provider overrides this and ``crm``."""
    return ZohoCrmConnector


@pytest.fixture
def connector_options() -> dict:
    """Provider-specific connector arguments (a module may override)."""
    return {}


@pytest.fixture
def make_connector(crm, sleeps, connector_class, connector_options):
    """Connectors to the test's emulator with fast, deterministic retries; closed after the test."""
    made = []

    def make(**overrides):
        settings = {
            **crm.connector_kwargs(),
            "timeout": 5.0,
            "max_retries": 3,
            "backoff_base": 0.5,
            "backoff_max": 8.0,
            "sleep": sleeps,
            "rng": random.Random(7),
            **connector_options,
            **overrides,
        }
        connector = connector_class(**settings)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


@pytest.fixture
def connector(make_connector) -> ZohoCrmConnector:
    return make_connector()


@pytest.fixture
def wh(warehouse_url) -> str:
    """The test's own warehouse with the published tables the sync reads (filled by ``publish``)."""
    create_published_tables(warehouse_url)
    return warehouse_url

