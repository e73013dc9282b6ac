"""The emulator itself, spoken to over raw HTTP: Zoho's shapes, the control API, persistence, the CLI."""

from __future__ import annotations

import pytest
import requests

from tierline.crm import CrmRateLimited, ZohoCrmConnector
from tierline_dev.crm_emulators.process import spawn
from tierline_dev.crm_emulators.zoho import CrmEmulator

from .support import ID_FIELD, MODULE, customer, load


@pytest.fixture
def token(crm) -> str:
    response = requests.post(
        f"{crm.accounts_base}/oauth/v2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": crm.client_id,
            "client_secret": crm.client_secret,
            "refresh_token": crm.refresh_token,
        },
        timeout=5,
    )
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["api_domain"] == crm.api_base
    return body["access_token"]


def api(crm, token, method, path, **kwargs):
    headers = {"Authorization": f"Zoho-oauthtoken {token}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{crm.api_base}/crm/v8{path}", headers=headers, timeout=5, **kwargs)


def test_token_endpoint_answers_bad_grants_with_200_and_an_error_key(crm):
    response = requests.post(
        f"{crm.accounts_base}/oauth/v2/token",
        params={
            "grant_type": "refresh_token",
            "client_id": crm.client_id,
            "client_secret": "x",
            "refresh_token": "y",
        },
        timeout=5,
    )

    assert response.status_code == 200
    assert response.json() == {"error": "invalid_client"}


def test_token_requests_sent_to_the_api_host_get_404(crm):
    response = requests.post(
        f"{crm.api_base}/oauth/v2/token", data={"grant_type": "refresh_token"}, timeout=5
    )

    assert response.status_code == 404
    assert response.json()["code"] == "INVALID_URL_PATTERN"


def test_requests_without_the_zoho_auth_scheme_are_refused(crm, token):
    response = requests.get(
        f"{crm.api_base}/crm/v8/{MODULE}",
        params={"fields": ID_FIELD},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )

    assert response.status_code == 401
    assert response.json()["code"] == "AUTHENTICATION_FAILURE"


def test_list_requires_fields_and_caps_page_size(crm, token):
    missing = api(crm, token, "GET", f"/{MODULE}")
    too_big = api(crm, token, "GET", f"/{MODULE}", params={"fields": ID_FIELD, "per_page": 201})
    typo = api(crm, token, "GET", f"/{MODULE}", params={"fields": "Tierline_Tierr"})

    assert (missing.status_code, missing.json()["code"]) == (400, "REQUIRED_PARAM_MISSING")
    assert (too_big.status_code, too_big.json()["details"]["param"]) == (400, "per_page")
    assert (typo.status_code, typo.json()["details"]["api_name"]) == (400, "Tierline_Tierr")


def test_page_numbers_stop_at_2000_records(crm, token):
    response = api(crm, token, "GET", f"/{MODULE}", params={"fields": ID_FIELD, "page": 11, "per_page": 200})

    assert response.status_code == 400
    assert response.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"


def test_list_info_matches_zoho(crm, token, connector):
    load(connector, 3)

    body = api(crm, token, "GET", f"/{MODULE}", params={"fields": ID_FIELD, "per_page": 2}).json()

    assert [r[ID_FIELD] for r in body["data"]] == ["C00002", "C00001"]  # Zoho's default: id, newest first
    info = body["info"]
    assert info["more_records"] is True and info["next_page_token"]
    assert (info["per_page"], info["count"], info["page"], info["sort_by"], info["sort_order"]) == (
        2,
        2,
        1,
        "id",
        "desc",
    )


def test_upsert_over_100_records_is_a_whole_request_error(crm, token):
    response = api(crm, token, "POST", f"/{MODULE}/upsert", json={"data": [customer(n) for n in range(101)]})

    assert response.status_code == 400
    assert response.json()["code"] == "LIMIT_EXCEEDED"
    assert crm.records(MODULE) == []


def test_upsert_success_shape_matches_zoho(crm, token):
    body = api(
        crm,
        token,
        "POST",
        f"/{MODULE}/upsert",
        json={"data": [customer(1)], "duplicate_check_fields": [ID_FIELD]},
    ).json()

    (item,) = body["data"]
    assert (item["code"], item["status"], item["action"], item["message"]) == (
        "SUCCESS",
        "success",
        "insert",
        "record added",
    )
    assert item["duplicate_field"] is None
    assert set(item["details"]) >= {"id", "Modified_Time", "Modified_By", "Created_Time", "Created_By"}


def test_unknown_module_and_wrong_method(crm, token):
    unknown = api(crm, token, "GET", "/Customers", params={"fields": ID_FIELD})
    wrong = api(crm, token, "GET", f"/{MODULE}/upsert")

    assert (unknown.status_code, unknown.json()["code"]) == (400, "INVALID_MODULE")
    assert (wrong.status_code, wrong.json()["code"]) == (400, "INVALID_REQUEST_METHOD")


def test_control_api_over_http_injects_faults_and_reports_counters(crm, connector, sleeps):
    control = f"{crm.api_base}/__emulator"
    requests.post(f"{control}/faults/fail", json={"count": 1, "status": 500}, timeout=5).raise_for_status()
    requests.post(f"{control}/faults/fail", json={"count": 1, "status": 429, "retry_after": 3}, timeout=5)

    load(connector, 1)

    counters = requests.get(f"{control}/counters", timeout=5).json()
    assert counters["statuses"] == {"200": 2, "500": 1, "429": 1}
    assert counters["write_calls"] == 3 and counters["records_written"] == 1
    assert sleeps.waits[1] == 3.0


def test_control_api_person_edit_clock_and_reset(crm, connector):
    load(connector, 1)
    control = f"{crm.api_base}/__emulator"
    before = crm.record(MODULE, "C00000")["Modified_Time"]
    requests.post(f"{control}/clock/advance", json={"seconds": 60}, timeout=5).raise_for_status()

    edited = requests.post(
        f"{control}/person-edit",
        json={"module": MODULE, "external_id": "C00000", "changes": {"Tierline_Tier": "Key"}},
        timeout=5,
    ).json()
    bad = requests.post(
        f"{control}/person-edit",
        json={"module": MODULE, "external_id": "C00000", "changes": {"Tierline_Tier": "Diamond"}},
        timeout=5,
    )

    assert edited["Tierline_Tier"] == "Key" and edited["Modified_By"]["name"] == "Patricia Boyle"
    assert edited["Modified_Time"] != before
    assert bad.status_code == 400
    requests.post(f"{control}/reset", timeout=5).raise_for_status()
    assert crm.records(MODULE) == []
    assert crm.counters()["calls"] == {}


def test_control_api_rate_limit_and_expiry(crm, connector, sleeps):
    control = f"{crm.api_base}/__emulator"
    connector.current_user()
    requests.post(f"{control}/tokens/expire", timeout=5).raise_for_status()
    requests.post(
        f"{control}/rate-limit", json={"requests": 1, "window_seconds": 60}, timeout=5
    ).raise_for_status()

    connector.current_user()
    with pytest.raises(CrmRateLimited):
        connector.current_user()

    assert connector.token_refreshes == 2
    assert all(55 <= wait <= 60 for wait in sleeps.waits)


def test_sqlite_store_survives_a_restart(tmp_path):
    db = str(tmp_path / "crm.sqlite")
    with CrmEmulator(db_path=db) as first, ZohoCrmConnector(**first.connector_kwargs()) as connector:
        (created,) = connector.upsert(MODULE, [customer(1)], ID_FIELD)

    with CrmEmulator(db_path=db) as second, ZohoCrmConnector(**second.connector_kwargs()) as connector:
        (again,) = connector.upsert(MODULE, [customer(1, Tierline_Tier="VIP")], ID_FIELD)
        (other,) = connector.upsert(MODULE, [customer(2)], ID_FIELD)

    assert (again.action, again.crm_id) == ("update", created.crm_id)
    assert int(other.crm_id) > int(created.crm_id)


def test_cli_serves_on_the_requested_port():
    process, settings = spawn("zoho")
    try:
        connection = {k: v for k, v in settings.items() if k not in ("provider", "env")}
        with ZohoCrmConnector(**connection) as connector:
            assert connector.current_user()["full_name"] == "Tierline Integration"
        assert settings["env"]["TIERLINE_CRM_API_BASE"] == settings["api_base"]
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_person_edits_refuse_fields_the_module_does_not_have(crm, connector):
    load(connector, 1)

    with pytest.raises(ValueError, match="Vip_Tier"):
        crm.person_edits(MODULE, "C00000", {"Vip_Tier": "VIP"})
    with pytest.raises(KeyError):
        crm.person_edits(MODULE, "C99999", {"Tierline_Tier": "VIP"})
