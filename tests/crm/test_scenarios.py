"""The sync's guarantees, proven once for every CRM provider against its emulator (real HTTP, real PostgreSQL).

Each test runs per provider (``providers.PROVIDERS``) with that provider's shipped configuration:
``update`` mode, customers matched on the CRM's own record id as the extract carried it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta

import pytest

from tests.receivers import HttpReceiver, chat_connection
from tierline import alerts, cli, land, load
from tierline.crm import config as crm_config
from tierline.crm import pull, sync
from tierline.settings import PROJECT_ROOT
from tierline_dev.crm_emulators.configured import name_field

from . import providers
from .sync_support import AS_OF, customer, publish, query, wait_for_lock_release

NEXT_DAY = AS_OF + timedelta(days=1)
DAY_1, DAY_2, DAY_3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
# "METHOD /path" substrings of each provider's write calls, and of its create call
WRITE_CALLS = {"zoho": "PUT /crm/v8/", "fxiaoke": "/data/update"}
CREATE_CALLS = {"zoho": "/upsert", "fxiaoke": "/data/create"}


@pytest.fixture(params=providers.PROVIDERS)
def crm(request):
    harness = providers.start(request.param)
    try:
        yield harness
    finally:
        harness.close()
        harness.crm.stop()


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
    assert len(crm.records()) == 4
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
    assert len(crm.records()) == 3


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
    assert {crm_id: r.get(tier) for crm_id, r in by_field.records().items()} == {
        "A0": regular, "A1": regular, "A2": None, "A9": None}


def action_for(crm, tier: str) -> str:
    return next(rule.action for rule in crm.cfg.action_rules if rule.tier == [tier])


def test_only_changed_records_and_only_their_changed_fields_are_sent(crm, wh, run):
    rows = [customer(n) for n in range(1, 6)]
    crm.seed(rows)
    publish(wh, rows)
    run()
    crm.crm.reset_counters()

    again = run()

    assert crm.crm.counters()["write_calls"] == 0 and again["plan"]["updates"] == 0
    rows[2] = customer(3, tier="vip")
    publish(wh, rows, NEXT_DAY)
    changed = run()

    assert (crm.crm.counters()["write_calls"], crm.crm.counters()["records_written"]) == (1, 1)
    assert (changed["plan"]["updates"], changed["plan"]["unchanged"]) == (1, 4)
    [(written,)] = query(wh, "select last_written from crm_sync.record_state where last_run_id = %s",
                         changed["run_id"])
    assert written == {crm.field("tier"): crm.label("tier", "vip"), crm.field("next_action"): action_for(crm, "vip")}


def test_a_persons_edit_is_held_as_a_conflict_until_the_warehouse_agrees(crm, wh, run):
    rows = [customer(1), customer(2)]
    crm.seed(rows)
    publish(wh, rows)
    run()
    crm.crm.advance_clock(2)
    crm.edit(rows[0], "tier", crm.label("tier", "strategic"))
    publish(wh, [customer(1, tier="vip"), customer(2, tier="vip")], NEXT_DAY)

    held = run()

    assert (held["plan"]["new_conflicts"], held["plan"]["records_held_by_conflicts"]) == (1, 1)
    assert crm.value(rows[0], "tier") == crm.label("tier", "strategic")  # the person's value stays
    assert crm.value(rows[0], "next_action") == action_for(crm, "vip")  # the record's other fields are written
    assert crm.value(rows[1], "tier") == crm.label("tier", "vip")
    assert query(wh, "select customer_id, field, their_value, their_editor from crm_sync.conflicts") == [
        ("C00001", crm.field("tier"), crm.label("tier", "strategic"), crm.crm.default_person["name"])]
    crm.crm.reset_counters()
    assert run()["plan"]["updates"] == 0 and crm.crm.counters()["write_calls"] == 0  # still held, nothing sent

    publish(wh, [customer(1, tier="strategic"), customer(2, tier="vip")], NEXT_DAY + timedelta(days=1))
    agreed = run()

    assert agreed["plan"]["conflicts_resolved_by_agreement"] == 1
    assert query(wh, "select resolution from crm_sync.conflicts where resolved_at is not null") == [("agreed",)]
    publish(wh, [customer(1, tier="key"), customer(2, tier="vip")], NEXT_DAY + timedelta(days=2))
    run()
    assert crm.value(rows[0], "tier") == crm.label("tier", "key")  # ours again once they agreed


def test_a_refused_record_is_a_dead_letter_until_a_replay_succeeds(crm, wh, run):
    rows = [customer(n) for n in range(1, 4)]
    crm.seed(rows)
    publish(wh, rows)
    crm.crm.reject_records([rows[1]["crm_record_id"]], field=crm.field("churn_risk"), message="校验失败 fails a rule")

    refused = run()
    crm.crm.reset_counters()
    waiting = run()

    assert (refused["push"]["updated"], refused["push"]["dead_lettered"]) == (2, 1)
    [(customer_id, field, message)] = query(wh, "select customer_id, field, message from crm_sync.dead_letters")
    assert (customer_id, field) == ("C00002", crm.field("churn_risk")) and "fails a rule" in message
    assert waiting["plan"]["held_by_dead_letters"] == 1 and crm.crm.counters()["write_calls"] == 0
    crm.crm.clear_rejections()  # the admins fix the validation rule; the operator replays

    replayed = run(retry_dead_letters=True)

    assert (replayed["push"]["updated"], replayed["dead_letters"]) == (1, 0)
    assert crm.value(rows[1], "tier") == crm.label("tier", "regular")


def test_a_token_that_expires_mid_push_is_renewed_and_nothing_is_lost(crm, wh, tmp_path):
    small = crm.with_config(tmp_path, push={"batch_size": 2})
    rows = [customer(n) for n in range(1, 7)]
    small.seed(rows)
    publish(wh, rows)
    small.crm.expire_tokens_after_writes(1)

    result = sync.sync(warehouse_url=wh, connector=small.connector(), cfg=small.cfg)

    assert result["status"] == "ok" and result["push"]["updated"] == 6
    assert small.crm.counters()["token_requests"] == 2
    assert sum(small.crm.counters()["errors"].values()) == 1  # the one refused call, then renewed
    assert all(small.value(r, "tier") == small.label("tier", "regular") for r in rows)


def test_a_rate_limited_crm_is_waited_for_and_the_run_completes(crm, wh, tmp_path):
    small = crm.with_config(tmp_path, push={"batch_size": 2})
    rows = [customer(n) for n in range(1, 9)]
    small.seed(rows)
    publish(wh, rows)
    small.crm.set_rate_limit(2, window_seconds=0.4)  # the emulator's fast clock: 2 calls per 0.4 s
    # the connector's own pacing is set loose here, so the CRM does refuse and the retries are what is tested
    connector = small.connector(sleep=time.sleep, backoff_base=0.05, backoff_max=0.3, max_retries=30,
                                rate_limit=(1000, 1.0))
    started = time.monotonic()

    result = sync.sync(warehouse_url=wh, connector=connector, cfg=small.cfg)

    assert result["status"] == "ok" and result["push"]["updated"] == 8
    assert sum(small.crm.counters()["errors"].values()) >= 1  # refused at least once, waited, retried
    assert time.monotonic() - started >= 0.4
    assert all(small.value(r, "tier") == small.label("tier", "regular") for r in rows)


def test_the_connector_paces_itself_to_a_documented_limit_without_being_refused(crm, wh, tmp_path):
    small = crm.with_config(tmp_path, push={"batch_size": 2})
    rows = [customer(n) for n in range(1, 9)]
    small.seed(rows)
    publish(wh, rows)
    small.crm.set_rate_limit(3, window_seconds=0.3, per_interface=True)
    connector = small.connector(sleep=time.sleep, rate_limit=(3, 0.32))

    result = sync.sync(warehouse_url=wh, connector=connector, cfg=small.cfg)

    assert result["status"] == "ok" and result["push"]["updated"] == 8
    assert small.crm.counters()["errors"] == {}


def test_a_sync_process_killed_mid_push_loses_nothing_and_doubles_nothing_on_rerun(crm, wh, tmp_path):
    small = crm.with_config(tmp_path, push={"batch_size": 3})
    rows = [customer(n, tier=("vip", "key", "regular")[n % 3]) for n in range(1, 31)]
    small.seed(rows)
    publish(wh, rows)
    small.crm.delay_next(0.05, count=100, match=WRITE_CALLS[crm.name])
    env = {**os.environ, **small.crm.env(), crm_config.ENV_CONFIG: str(small.cfg.path),
           "PYTHONPATH": str(PROJECT_ROOT / "plugins"), "TIERLINE_HOME": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "tierline.cli", "crm-sync"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while small.crm.counters()["write_calls"] < 4:
            assert process.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    took = [r for r in rows if small.value(r, "tier") is not None]
    assert 0 < len(took) < len(rows)
    wait_for_lock_release(wh)
    small.crm.reset_counters()

    result = sync.sync(warehouse_url=wh, connector=small.connector(), cfg=small.cfg)

    assert result["status"] == "ok"
    # what the CRM took before the kill (recorded or not) is recognised, not sent again
    assert small.crm.counters()["records_written"] == len(rows) - len(took)
    assert len(small.records()) == len(rows)
    assert all(small.value(r, "tier") == small.label("tier", r["tier"]) for r in rows)
    assert query(wh, "select count(*) from crm_sync.outbox") == [(0,)]
    small.crm.reset_counters()
    sync.sync(warehouse_url=wh, connector=small.connector(), cfg=small.cfg)
    assert small.crm.counters()["write_calls"] == 0


def test_upsert_mode_creates_the_unmatched_once_even_when_a_create_goes_unanswered(crm, wh, tmp_path):
    upsert = crm.with_config(tmp_path, push={
        "mode": "upsert", "match": {"crm_field": crm.customer_id_field, "column": "customer_id"},
        "create_fields": {name_field(crm.cfg): "{customer_id}"}})
    rows = [customer(n) for n in range(1, 4)]
    upsert.crm.seed(upsert.module, [{"id": "A1", name_field(crm.cfg): "客户 1", crm.customer_id_field: "C00001"}])
    publish(wh, rows)
    upsert.crm.delay_next(1.0, match=CREATE_CALLS[crm.name])  # processed, but the answer comes too late

    result = sync.sync(warehouse_url=wh, connector=upsert.connector(timeout=0.3), cfg=upsert.cfg)

    assert result["status"] == "ok"
    assert (result["plan"]["matched"], result["plan"]["creates"], result["plan"]["updates"]) == (1, 2, 1)
    by_customer = {r[crm.customer_id_field]: r for r in upsert.records().values()}
    assert sorted(by_customer) == ["C00001", "C00002", "C00003"] and len(upsert.records()) == 3
    assert by_customer["C00003"][name_field(crm.cfg)] == "C00003"  # the create fields
    tier = upsert.field("tier")
    assert {r[tier] for r in by_customer.values()} == {upsert.label("tier", "regular")}


def test_a_pull_reads_what_changed_since_its_watermark(crm, wh, tmp_path):
    pull_mapping = crm.cfg.pulls[0]
    name = name_field(crm.cfg)
    accounts = [{"id": f"A{n}", name: f"客户 {n}", crm.customer_id_field: f"C{n}"} for n in range(1, 4)]
    crm.crm.seed(crm.module, accounts)
    connector = crm.connector()
    landing = tmp_path / "landing"

    first = pull.pull(landing, DAY_1, warehouse_url=wh, connector=connector, cfg=crm.cfg)
    crm.crm.advance_clock(5)
    crm.crm.edit_record(crm.module, "A2", {name: "客户 2 改名"})
    second = pull.pull(landing, DAY_2, warehouse_url=wh, connector=connector, cfg=crm.cfg)
    third = pull.pull(landing, DAY_3, warehouse_url=wh, connector=connector, cfg=crm.cfg)

    assert (first.files[0].rows_written, first.files[0].full_read) == (3, True)
    assert (second.files[0].rows_written, second.files[0].full_read) == (1, False)
    assert third.files[0].rows_written == 0 and not (landing / DAY_3.isoformat()).exists()
    day_two = rows_of(landing / DAY_2.isoformat() / pull_mapping.file)
    assert list(day_two) == ["C2"] and day_two["C2"]["customer_name"] == "客户 2 改名"
    assert day_two["C2"]["crm_record_id"] == "A2"
    [(watermark,)] = query(wh, "select watermark from crm_sync.pull_watermarks")
    assert watermark == datetime.fromisoformat(second.files[0].watermark)
    # the files load under the extract contract like any export
    for day in (DAY_1, DAY_2):
        manifest = land.land_extracts(landing, day, tmp_path / "landed")
        loaded = load.load_date(wh, manifest, day, f"pull-{day}", "Asia/Shanghai")
        assert [(f.rows_read, f.rows_quarantined) for f in loaded] == [((3, 0) if day == DAY_1 else (1, 0))]


def rows_of(path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def alert_channel(monkeypatch):
    """The pipeline's chat alert channel (tierline.alerts), a WeCom-style webhook on a local receiver."""
    with HttpReceiver() as hooks:
        monkeypatch.setenv("AIRFLOW_CONN_TIERLINE_ALERTS_CHAT", chat_connection(hooks.port))
        monkeypatch.setenv(alerts.ENV_CONNECTIONS, "tierline_alerts_chat")
        yield hooks


def test_dead_letters_at_their_threshold_alert_and_conflicts_below_theirs_do_not(crm, wh, tmp_path, monkeypatch,
                                                                                 capsys, alert_channel):
    rows = [customer(n) for n in range(1, 4)]
    crm.seed(rows)
    publish(wh, rows)
    crm.crm.reject_records([rows[1]["crm_record_id"]], field=crm.field("churn_risk"))
    for name, value in {**crm.crm.env(), crm_config.ENV_CONFIG: str(crm.cfg.path), "TIERLINE_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)

    assert cli.main(["crm-sync"]) == 0
    first = json.loads(capsys.readouterr().out)
    crm.crm.clear_rejections()
    crm.crm.advance_clock(2)
    crm.edit(rows[0], "tier", crm.label("tier", "strategic"))
    publish(wh, [customer(n, tier="vip") for n in range(1, 4)], NEXT_DAY)
    assert cli.main(["crm-sync"]) == 0
    second = json.loads(capsys.readouterr().out)

    assert first["alerts"] == ["crm_dead_letters"]
    assert (second["plan"]["new_conflicts"], second["alerts"]) == (1, [])  # 1 is below the shipped threshold of 20
    [text] = alert_channel.texts()
    for expected in ("crm_sync", "crm-sync", first["run_id"], "2026-11-01", "dead_letters 1", "alert_threshold 1",
                     f"crm_sync.dead_letters where last_run_id = '{first['run_id']}'", crm.name):
        assert expected in text, f"{expected!r} missing from the alert:\n{text}"


def test_the_dag_tasks_alert_on_new_conflicts_and_reconcile_mismatches(crm, wh, tmp_path, alert_channel):
    strict = crm.with_config(tmp_path, alerts={"dead_letters": 1, "reconcile_mismatches": 1, "new_conflicts": 1})
    rows = [customer(1), customer(2)]
    strict.seed(rows)
    publish(wh, rows)
    session = {"warehouse_url": wh, "connector": strict.connector(), "cfg": strict.cfg}

    sync.plan_step("manual__first", **session)
    sync.push_step("manual__first", **session)
    strict.crm.advance_clock(2)
    strict.edit(rows[1], "tier", strict.label("tier", "key"))  # a person, right after our write
    mismatched = sync.reconcile_step("manual__first", **session)
    strict.edit(rows[0], "tier", strict.label("tier", "strategic"))
    publish(wh, [customer(1, tier="vip"), customer(2, tier="vip")], NEXT_DAY)
    planned = sync.plan_step("manual__second", **session)

    # the tier edited right after our write is held too once the warehouse wants another value
    assert (mismatched["mismatch_count"], planned["new_conflicts"]) == (1, 2)
    mismatch, conflict = alert_channel.texts()
    assert "reconcile" in mismatch and "reconcile_mismatches 1" in mismatch
    assert "crm_sync.reconciliation where run_id = 'manual__first'" in mismatch
    assert "plan_changes" in conflict and "new_conflicts 2" in conflict and "2026-11-02" in conflict
    assert "crm_sync.conflicts where run_id = 'manual__second'" in conflict
