"""The sync's guarantees, proven once for every CRM provider against its emulator (real HTTP, real PostgreSQL).

Each test runs per provider (``providers.PROVIDERS``) with that provider's shipped configuration:
``update`` mode, customers matched on the CRM's own record id as the extract carried it.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tierline.crm import sync
from tierline_dev.crm_emulators.configured import name_field

from . import providers
from .sync_support import AS_OF, create_published_tables, customer, publish

NEXT_DAY = AS_OF + timedelta(days=1)


@pytest.fixture(params=providers.PROVIDERS)
def crm(request):
    harness = providers.start(request.param)
    try:
        yield harness
    finally:
        harness.close()
        harness.crm.stop()


@pytest.fixture
def wh(warehouse_url) -> str:
    create_published_tables(warehouse_url)
    return warehouse_url


@pytest.fixture
def run(crm, wh, tmp_path):
    connector = crm.connector()

    def run_sync(**kwargs):
        options = {"warehouse_url": wh, "connector": connector, "cfg": crm.cfg, "out_dir": tmp_path / "dry", **kwargs}
        return sync.sync(**options)

    return run_sync


def test_update_mode_writes_only_records_the_crm_has_and_reports_the_others(crm, wh, run):
    rows = [customer(n, tier=("vip", "key", "regular")[n % 3]) for n in range(1, 7)]
    rows[5]["crm_record_id"] = None  # keyed in the order system: no CRM record
    crm.seed(rows[:4])  # customer 5's record is not in the CRM (deleted, or another org)
    publish(wh, rows)

    dry = run(dry_run=True)
    lines = [json.loads(line) for line in open(dry["dry_run_file"], encoding="utf-8")]
    result = run()

    for summary in (dry["plan"], lines[0], result["plan"]):
        assert (summary["matched"], summary["updates"], summary["creates"], summary["skipped_unmatched"]) == (4, 4, 0, 2)
    assert sorted(line["customer_id"] for line in lines if line["kind"] == "unmatched") == ["C00005", "C00006"]
    assert result["status"] == "ok" and result["push"]["created"] == 0
    assert len(crm.crm.records(crm.module)) == 4
    for row in rows[:4]:
        assert crm.value(row, "tier") == crm.label("tier", row["tier"])
    assert crm.crm.counters()["records_written"] == 4


def test_a_record_the_crm_gains_later_is_matched_by_the_next_run(crm, wh, run):
    rows = [customer(n) for n in range(1, 4)]
    crm.seed(rows[:2])
    publish(wh, rows)
    first = run()
    crm.crm.advance_clock(5)
    crm.seed(rows[2:])  # a CRM user creates the missing account

    second = run()

    assert (first["plan"]["skipped_unmatched"], second["plan"]["skipped_unmatched"]) == (1, 0)
    assert (second["plan"]["matched"], second["plan"]["updates"]) == (3, 1)
    assert crm.value(rows[2], "tier") == crm.label("tier", "regular")
    assert len(crm.crm.records(crm.module)) == 3


def test_a_customer_published_later_finds_a_record_read_by_an_earlier_run(crm, wh, run):
    rows = [customer(n) for n in range(1, 4)]
    crm.seed(rows)
    publish(wh, rows[:2])
    run()
    publish(wh, rows, NEXT_DAY)
    crm.crm.reset_counters()

    result = run()

    # the third account was read (and kept) by the first run's full read; nobody touched it since
    assert (result["plan"]["matched"], result["plan"]["updates"], result["plan"]["full_read"]) == (3, 1, False)
    assert crm.value(rows[2], "tier") == crm.label("tier", "regular")


def test_matching_on_a_field_and_a_key_two_records_share_is_written_to_neither(crm, wh, tmp_path):
    by_field = crm.with_config(tmp_path, push={"match": {"crm_field": crm.customer_id_field, "column": "customer_id"}})
    rows = [customer(n) for n in range(1, 5)]
    name = name_field(by_field.cfg)
    accounts = [{"id": f"A{n}", name: f"客户 {n}", crm.customer_id_field: r["customer_id"]}
                for n, r in enumerate(rows[:3])]
    accounts.append({"id": "A9", name: "客户 3 (dup)", crm.customer_id_field: rows[2]["customer_id"]})
    by_field.crm.seed(by_field.module, accounts)
    publish(wh, rows)

    result = sync.sync(warehouse_url=wh, connector=by_field.connector(), cfg=by_field.cfg)

    plan = result["plan"]
    assert (plan["matched"], plan["updates"], plan["skipped_ambiguous"], plan["skipped_unmatched"]) == (2, 2, 1, 1)
    tier, regular = by_field.field("tier"), by_field.label("tier", "regular")
    assert {r["id"]: r.get(tier) for r in by_field.crm.records(by_field.module)} == {
        "A0": regular, "A1": regular, "A2": None, "A9": None}
