"""A sync killed mid-push and run again converges: every record once, every update present, nothing re-sent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from tierline import settings
from tierline.crm import ZohoCrmConnector, sync
from tierline.crm import config as crm_config
from tierline_dev.crm_emulators.configured import zoho_module

from .support import FakeSleep
from .sync_support import (
    AS_OF,
    MODULE,
    UPSERT,
    crm_by_id,
    customer,
    publish,
    query,
    settings_with,
    wait_for_lock_release,
)


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after it runs, no handler catches it."""


class DiesAfterUpserts(ZohoCrmConnector):
    """Dies right after the CRM confirmed its ``limit``-th upsert, before the sync can record it."""

    def __init__(self, limit: int, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit
        self.upserts = 0

    def upsert(self, module, records, duplicate_check_field):
        return self._dies_after(super().upsert(module, records, duplicate_check_field))

    def update(self, module, records):
        return self._dies_after(super().update(module, records))

    def _dies_after(self, results):
        self.upserts += 1
        if self.upserts == self.limit:
            raise Killed
        return results


@pytest.fixture
def cfg(tmp_path):
    return settings_with(tmp_path, push=UPSERT)


@pytest.fixture
def crm(crm, cfg):
    crm.define_module(MODULE, zoho_module(cfg))
    return crm


def test_a_sync_process_killed_mid_push_converges_on_rerun(crm, wh, connector, cfg, tmp_path):
    rows = [customer(n, tier=("vip", "key", "regular")[n % 3]) for n in range(1, 1001)]
    publish(wh, rows)
    crm.delay_next(0.05, count=1000, match="upsert")
    env = {**os.environ, "PYTHONPATH": str(settings.PROJECT_ROOT / "plugins"), "TIERLINE_HOME": str(tmp_path)}
    env.update({**crm.env(), crm_config.ENV_CONFIG: str(cfg.path)})
    process = subprocess.Popen([sys.executable, "-m", "tierline.cli", "crm-sync"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while crm.counters()["write_calls"] < 4:
            assert process.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.kill()
    finally:
        process.wait(timeout=10)
    in_crm = len(crm.records(MODULE))
    confirmed = query(wh, "select count(*) from crm_sync.record_state")[0][0]
    assert 0 < confirmed <= in_crm < 1000
    wait_for_lock_release(wh)
    crm.reset_counters()

    result = sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)

    assert result["status"] == "ok"
    # What the CRM took before the kill (confirmed or not) is recognised, not re-sent.
    assert crm.counters()["records_written"] == 1000 - in_crm
    stored = crm_by_id(crm)
    assert len(crm.records(MODULE)) == len(stored) == 1000
    expected = {"vip": "VIP", "key": "Key", "regular": "Regular"}
    assert all(stored[r["customer_id"]]["Tierline_Tier"] == expected[r["tier"]] for r in rows)
    assert query(wh, "select count(*) from crm_sync.record_state") == [(1000,)]
    assert query(wh, "select count(*) from crm_sync.outbox") == [(0,)]

    crm.reset_counters()
    sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)
    assert crm.counters()["write_calls"] == 0


def test_a_run_killed_between_the_crm_write_and_the_state_update_loses_no_update(crm, wh, connector, cfg):
    publish(wh, [customer(n) for n in range(1, 301)])
    sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)
    publish(wh, [customer(n, tier="vip") for n in range(1, 301)], AS_OF + timedelta(days=1))
    dying = DiesAfterUpserts(2, **crm.connector_kwargs(), sleep=FakeSleep(), max_retries=3)

    with pytest.raises(Killed):
        sync.sync(warehouse_url=wh, connector=dying, cfg=cfg)
    dying.close()

    assert query(wh, "select count(*) from crm_sync.record_state "
                     "where synced_values ->> 'Tierline_Tier' = 'VIP'") == [(100,)]
    assert query(wh, "select count(*) from crm_sync.outbox") == [(200,)]
    assert sum(r["Tierline_Tier"] == "VIP" for r in crm.records(MODULE)) == 200
    crm.reset_counters()

    result = sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)

    assert result["status"] == "ok"
    assert crm.counters()["records_written"] == 100  # only the batch the CRM never saw
    assert len(crm.records(MODULE)) == 300
    assert {r["Tierline_Tier"] for r in crm.records(MODULE)} == {"VIP"}
    assert query(wh, "select count(*) from crm_sync.outbox") == [(0,)]
    crm.reset_counters()
    sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)
    assert crm.counters()["write_calls"] == 0
