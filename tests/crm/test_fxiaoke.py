"""The 纷享销客 connector against its emulator over real HTTP: auth, error codes, paging, values."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
import requests

from tierline.crm import CrmAuthError, CrmBudgetExceeded, CrmRateLimited, CrmUnavailable, FxiaokeConnector
from tierline.crm import config as crm_config
from tierline.settings import PROJECT_ROOT
from tierline_dev.crm_emulators.base import FieldSpec, ModuleSpec
from tierline_dev.crm_emulators.fxiaoke import DEFAULT_PERSON, FxiaokeEmulator
from tierline_dev.crm_emulators.process import spawn

from .support import RecordingSession

MODULE = "AccountObj"
FIELDS = {"name": FieldSpec(max_length=200, mandatory=True), "tel": FieldSpec(max_length=30),
          "tierline_customer_id__c": FieldSpec(max_length=64, unique=True),
          "tierline_tier__c": FieldSpec("picklist", values=("VIP客户", "普通客户")),
          "tierline_churn_risk__c": FieldSpec("double"), "tierline_review_date__c": FieldSpec("date")}
TYPES = {"tierline_tier__c": "picklist", "tierline_churn_risk__c": "double", "tierline_review_date__c": "date"}


@pytest.fixture
def crm():
    with FxiaokeEmulator(modules={MODULE: ModuleSpec(FIELDS)}) as emulator:
        yield emulator


@pytest.fixture
def connector_class():
    return FxiaokeConnector


@pytest.fixture
def connector_options() -> dict:
    return {"field_types": TYPES}


@pytest.fixture
def make(make_connector):
    return make_connector


def account(n: int, **values) -> dict:
    return {"tierline_customer_id__c": f"C{n}", "name": f"客户 {n}", **values}


def create(connector, n: int, **values) -> str:
    [result] = connector.upsert(MODULE, [account(n, **values)], "tierline_customer_id__c")
    assert result.ok and result.action == "insert"
    return result.crm_id


def test_every_call_carries_the_corp_token_corp_id_and_operator_in_its_body_and_a_fresh_trace_id(crm, make):
    session = RecordingSession()
    connector = make(session=session)
    create(connector, 1)
    list(connector.iter_modified(MODULE, None, ["name"]))

    assert crm.counters()["token_requests"] == 1
    bodies = [b for b in session.bodies if "data" in b]
    assert {(b["corpId"], b["currentOpenUserId"]) for b in bodies} == {(crm.corp_id, crm.connector_kwargs()["open_user_id"])}
    assert all(b["corpAccessToken"] for b in bodies)
    traces = [u for u in session.urls if "thirdTraceId=" in u]
    assert len(traces) == len(session.urls) and len(set(traces)) == len(traces)
    assert all(crm.app_secret not in u and crm.permanent_code not in u for u in session.urls)


def test_wrong_app_credentials_fail_at_once_without_retrying(crm, make, sleeps):
    with pytest.raises(CrmAuthError) as raised:
        list(make(permanent_code="WRONG").iter_modified(MODULE, None, []))
    assert raised.value.code == "20015"
    with pytest.raises(CrmAuthError) as raised:
        list(make(app_secret="wrong").iter_modified(MODULE, None, []))

    assert raised.value.code == "20006" and sleeps.waits == []
    assert crm.counters()["calls"].get("POST /cgi/crm/v2/data/query") is None


def test_a_token_expired_mid_run_is_renewed_once_and_the_call_resent(crm, make):
    connector = make()
    create(connector, 1)
    crm.expire_tokens()

    create(connector, 2)

    assert connector.token_refreshes == 2 and crm.counters()["errors"] == {"20016": 1}


def test_the_token_is_renewed_before_it_lapses_and_reused_until_then(crm, make):
    clock = [0.0]
    connector = make(clock=lambda: clock[0])
    create(connector, 1)
    clock[0] = 6000.0
    create(connector, 2)
    assert connector.token_refreshes == 1
    clock[0], _ = 6700.0, crm.advance_clock(6700)

    create(connector, 3)

    assert connector.token_refreshes == 2 and crm.counters()["errors"] == {}  # renewed, never refused
    assert crm.counters()["token_requests"] == 2


def test_frequency_limits_are_retried_with_backoff_and_then_stop_the_run(crm, make, sleeps):
    connector = make()
    crm.rate_limit_next(2)
    create(connector, 1)
    assert len(sleeps.waits) == 2 and crm.counters()["errors"] == {"30004": 2}

    crm.rate_limit_next(10)
    with pytest.raises(CrmRateLimited) as raised:
        create(connector, 2)
    assert raised.value.code == "30004"


def test_a_spent_daily_allowance_stops_the_run_without_retrying(crm, make, sleeps):
    connector = make()
    create(connector, 1)
    crm.set_daily_limit(0)

    with pytest.raises(CrmBudgetExceeded, match="allowance"):
        create(connector, 2)
    assert sleeps.waits == []


def test_server_errors_and_lost_answers_are_retried_and_a_create_is_never_doubled(crm, make):
    connector = make(timeout=0.3)
    crm.fail_next(2, 502)
    create(connector, 1)
    crm.delay_next(1.0, match="/data/create")  # the CRM creates, the answer comes too late

    [result] = connector.upsert(MODULE, [account(2)], "tierline_customer_id__c")

    assert result.ok and result.action == "update"  # found on the look-up before resending
    assert len(crm.records(MODULE)) == 2
    crm.fail_next(10, 503)
    with pytest.raises(CrmUnavailable):
        create(connector, 3)


def test_a_refused_record_names_its_field_and_an_unknown_id_is_refused_not_created(crm, make):
    connector = make()
    crm_id = create(connector, 1)

    bad, missing = connector.update(MODULE, [{"id": crm_id, "tierline_tier__c": "钻石客户"}]) + \
        connector.update(MODULE, [{"id": "0000000000000000deadbeef", "tierline_tier__c": "VIP客户"}])

    assert (bad.ok, bad.code, bad.field) == (False, "32000", "tierline_tier__c")
    assert (missing.ok, missing.code) == (False, "32000") and "不存在" in missing.message
    assert len(crm.records(MODULE)) == 1


def test_numbers_and_dates_travel_as_the_platform_keeps_them(crm, make):
    connector = make()
    crm_id = create(connector, 1, tierline_churn_risk__c=0.043, tierline_review_date__c="2026-11-30")

    stored = crm.record_by_id(MODULE, crm_id)
    [read] = list(connector.iter_modified(MODULE, None, list(TYPES)))

    assert stored["tierline_churn_risk__c"] == "0.043" and isinstance(stored["tierline_review_date__c"], int)
    assert (read["tierline_churn_risk__c"], read["tierline_review_date__c"]) == (0.043, "2026-11-30")
    assert read["id"] == crm_id and read["Modified_By"]["id"] == crm.connector_kwargs()["open_user_id"]
    assert read["Modified_Time"].endswith("+08:00")


def test_the_change_feed_pages_past_the_offset_limit_and_reads_each_record_once(make):
    with FxiaokeEmulator(modules={MODULE: ModuleSpec(FIELDS)}, max_offset=200) as small:
        connector = make(**small.connector_kwargs(), max_offset=200)
        small.seed(MODULE, [{"id": f"{n:024x}", "name": f"客户 {n}"} for n in range(450)])
        since = datetime(2020, 1, 1, tzinfo=UTC)

        ids = [r["id"] for r in connector.iter_modified(MODULE, since, ["name"])]

        assert len(ids) == len(set(ids)) == 450
        assert small.counters()["errors"] == {}


def test_a_persons_edit_shows_their_user_as_modifier(crm, make):
    connector = make()
    crm_id = create(connector, 1)
    crm.advance_clock(3)
    crm.edit_record(MODULE, crm_id, {"tel": "+86 10 5555 0100"})

    [record] = list(connector.iter_modified(MODULE, None, ["tel"]))

    assert record["Modified_By"] == {"id": DEFAULT_PERSON["id"], "name": DEFAULT_PERSON["name"]}


def test_the_emulator_answers_errors_with_http_200_and_an_error_code(crm):
    base = crm.api_base
    missing = requests.post(f"{base}/cgi/crm/v2/data/query", json={"data": {}}, timeout=5)
    token = requests.post(f"{base}/cgi/corpAccessToken/get/V2",
                          json={"appId": crm.app_id, "appSecret": crm.app_secret, "permanentCode": crm.permanent_code},
                          timeout=5).json()
    forged = requests.post(f"{base}/cgi/crm/v2/data/query", json={
        "corpAccessToken": "FORGED", "corpId": crm.corp_id, "currentOpenUserId": "x", "data": {}}, timeout=5)

    assert (missing.status_code, missing.json()["errorCode"]) == (200, 20017)
    assert (token["errorCode"], token["corpId"], token["expiresIn"]) == (0, crm.corp_id, 7200)
    assert (forged.status_code, forged.json()["errorCode"]) == (200, 20016)


def test_logs_never_show_the_secret_or_the_token(crm, make, caplog):
    caplog.set_level(logging.DEBUG)
    connector = make()
    create(connector, 1)

    assert crm.app_secret not in caplog.text and crm.permanent_code not in caplog.text
    assert connector._token not in caplog.text


def test_the_cli_serves_an_object_set_up_for_a_configuration():
    config = PROJECT_ROOT / "config" / "crm.fxiaoke.yml"
    process, settings = spawn("fxiaoke", "--config", str(config))
    try:
        cfg = crm_config.load(config)
        with crm_config.make_connector(cfg, {k: settings[k] for k in crm_config.ENV["fxiaoke"]}) as connector:
            [result] = connector.upsert(MODULE, [{"tierline_customer_id__c": "C1", "name": "客户 1",
                                                  "tierline_tier__c": "战略客户"}], "tierline_customer_id__c")
            assert result.ok
            [record] = list(connector.iter_modified(MODULE, None, ["tierline_tier__c"]))
        assert record["tierline_tier__c"] == "战略客户"
        assert settings["env"]["TIERLINE_CRM_OPEN_USER_ID"] == settings["open_user_id"]
    finally:
        process.terminate()
        process.wait(timeout=5)
