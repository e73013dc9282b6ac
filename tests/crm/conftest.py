"""Every CRM test runs against a real emulator on loopback, through real HTTP."""

from __future__ import annotations

import random

import pytest

from tierline.crm import ZohoCrmConnector
from tierline_dev.crm_emulators.zoho import CrmEmulator

from .support import FakeSleep


@pytest.fixture
def crm():
    with CrmEmulator() as emulator:
        yield emulator


@pytest.fixture
def sleeps() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def make_connector(crm, sleeps):
    made = []

    def make(**overrides) -> ZohoCrmConnector:
        settings = {
            **crm.connector_kwargs(),
            "timeout": 5.0,
            "max_retries": 3,
            "backoff_base": 0.5,
            "backoff_max": 8.0,
            "sleep": sleeps,
            "rng": random.Random(7),
            **overrides,
        }
        connector = ZohoCrmConnector(**settings)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


@pytest.fixture
def connector(make_connector) -> ZohoCrmConnector:
    return make_connector()
