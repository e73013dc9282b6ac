"""OAuth: refresh on first use, re-auth on expiry, clear failures, and no secrets in the logs."""

from __future__ import annotations

import logging

import pytest

from tierline.crm import CrmAuthError, ZohoCrmConnector
from tierline_dev.crm_emulators.zoho import CrmEmulator

from .support import MODULE, RecordingSession, load


def test_first_call_fetches_a_token_that_later_calls_reuse(crm, connector):
    load(connector, 3)
    connector.current_user()
    list(connector.iter_modified(MODULE, None, ["Tierline_Tier"]))

    assert connector.token_refreshes == 1
    assert crm.counters()["token_requests"] == 1
    assert connector.calls_made == 3


def test_revoked_token_is_refreshed_once_and_the_call_retried(crm, connector):
    load(connector, 1)
    crm.expire_tokens()

    results = load(connector, 1, start=1)

    assert [r.action for r in results] == ["insert"]
    assert connector.token_refreshes == 2
    assert crm.counters()["statuses"]["401"] == 1
    assert len(crm.records(MODULE)) == 2


def test_token_lapsing_on_the_crm_clock_triggers_reauthentication(crm, connector):
    load(connector, 1)
    crm.advance_clock(3601)

    assert connector.current_user()["id"]
    assert connector.token_refreshes == 2
    assert crm.counters()["statuses"]["401"] == 1


def test_token_is_renewed_before_it_expires_without_a_401(crm, make_connector):
    now = [1000.0]
    connector = make_connector(clock=lambda: now[0])
    connector.current_user()
    now[0] += 3600 - 30  # inside the renewal margin of a one-hour token

    connector.current_user()

    assert connector.token_refreshes == 2
    assert "401" not in crm.counters()["statuses"]


def test_token_refused_right_after_refresh_raises_auth_error(sleeps):
    with CrmEmulator(token_ttl=0) as crm:
        connector = ZohoCrmConnector(**crm.connector_kwargs(), sleep=sleeps)
        with pytest.raises(CrmAuthError) as raised:
            connector.current_user()
        connector.close()

    assert raised.value.status == 401
    assert raised.value.code == "INVALID_TOKEN"
    assert connector.token_refreshes == 2


def test_wrong_refresh_token_raises_auth_error_without_calling_the_api(crm, make_connector):
    connector = make_connector(refresh_token="1000.revoked")

    with pytest.raises(CrmAuthError, match="invalid_code"):
        load(connector, 1)

    assert connector.calls_made == 0
    assert crm.counters()["write_calls"] == 0


def test_wrong_client_secret_raises_auth_error(make_connector):
    with pytest.raises(CrmAuthError, match="invalid_client"):
        make_connector(client_secret="nope").current_user()


def test_tokens_and_client_secrets_never_reach_the_logs(crm, make_connector, caplog):
    caplog.set_level(logging.DEBUG)
    session = RecordingSession()
    connector = make_connector(session=session)
    load(connector, 2)
    crm.expire_tokens()
    list(connector.iter_modified(MODULE, None, ["Tierline_Tier"]))

    tokens = {header.split(" ", 1)[1] for header in session.authorizations}
    assert len(tokens) == 2
    assert "crm GET" in caplog.text and "crm POST" in caplog.text
    for secret in (*tokens, crm.client_secret, crm.refresh_token):
        assert secret not in caplog.text
