"""Rate limits, server errors, timeouts and the credit budget."""

from __future__ import annotations

import random
import time

import pytest

from tierline.crm import CrmBudgetExceeded, CrmRateLimited, CrmUnavailable

from .support import ID_FIELD, MODULE, customer, load


def full_jitter(seed: int, attempts: int, base: float = 0.5, cap: float = 8.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, min(cap, base * 2**attempt)) for attempt in range(attempts)]


def test_429_with_retry_after_waits_exactly_that_long(crm, connector, sleeps):
    crm.rate_limit_next(2, retry_after=7)

    assert all(r.ok for r in load(connector, 1))
    assert sleeps.waits == [7.0, 7.0]
    assert crm.counters()["calls"][f"POST /crm/v8/{MODULE}/upsert"] == 3


def test_429_without_retry_after_backs_off_with_full_jitter(crm, connector, sleeps):
    crm.rate_limit_next(3)

    load(connector, 1)

    assert sleeps.waits == full_jitter(7, 3)
    assert all(0 <= wait <= cap for wait, cap in zip(sleeps.waits, [0.5, 1.0, 2.0], strict=True))


def test_backoff_is_capped(crm, make_connector, sleeps):
    connector = make_connector(max_retries=8, backoff_base=1.0, backoff_max=3.0)
    crm.fail_next(8, 503)

    connector.current_user()

    assert len(sleeps.waits) == 8
    assert max(sleeps.waits) <= 3.0
    assert sleeps.waits == full_jitter(7, 8, base=1.0, cap=3.0)


def test_persistent_429_raises_rate_limited(crm, connector):
    crm.rate_limit_next(10, retry_after=1)

    with pytest.raises(CrmRateLimited) as raised:
        load(connector, 1)

    assert raised.value.code == "TOO_MANY_REQUESTS"
    assert connector.calls_made == 4


def test_per_minute_budget_answers_429_with_the_time_left_in_the_window(crm, connector, sleeps):
    crm.set_rate_limit(3, window_seconds=30)
    connector.current_user()
    connector.current_user()
    connector.current_user()

    with pytest.raises(CrmRateLimited):
        connector.current_user()

    assert len(sleeps.waits) == 3
    assert all(29 <= wait <= 30 for wait in sleeps.waits)


def test_per_minute_budget_is_enforced_in_real_time(crm, make_connector):
    crm.set_rate_limit(5, window_seconds=0.5, retry_after=False)
    connector = make_connector(sleep=time.sleep, backoff_base=0.05, backoff_max=0.2, max_retries=20)
    started = time.monotonic()

    for _ in range(8):
        connector.current_user()

    assert time.monotonic() - started >= 0.5
    assert crm.counters()["statuses"].get("429", 0) >= 1


def test_500s_are_retried_until_the_call_succeeds(crm, connector, sleeps):
    crm.fail_next(2, 500)

    results = load(connector, 3)

    assert [r.action for r in results] == ["insert"] * 3
    assert len(sleeps.waits) == 2
    assert crm.counters()["calls"][f"POST /crm/v8/{MODULE}/upsert"] == 3
    assert len(crm.records(MODULE)) == 3


def test_persistent_5xx_raises_unavailable_after_max_retries(crm, connector, sleeps):
    crm.fail_next(10, 503)

    with pytest.raises(CrmUnavailable) as raised:
        load(connector, 1)

    assert raised.value.status == 503
    assert connector.calls_made == 4
    assert len(sleeps.waits) == 3
    assert crm.records(MODULE) == []


def test_accounts_server_errors_are_retried_too(crm, connector, sleeps):
    crm.fail_next(2, 502, match="/oauth/v2/token")

    connector.current_user()

    assert crm.counters()["token_requests"] == 1
    assert crm.counters()["calls"]["POST /accounts/oauth/v2/token"] == 3
    assert len(sleeps.waits) == 2


def test_a_timed_out_upsert_is_retried_and_lands_once(crm, make_connector, sleeps):
    connector = make_connector(timeout=0.3)
    crm.delay_next(1.0, match="/upsert")

    (result,) = connector.upsert(MODULE, [customer(1)], ID_FIELD)

    # The first attempt was written before its response was held back; the retry updates it.
    assert result.ok and result.action == "update"
    assert len(sleeps.waits) == 1
    assert crm.counters()["write_calls"] == 2
    assert len(crm.records(MODULE)) == 1


def test_timeouts_on_every_attempt_raise_unavailable(crm, make_connector):
    connector = make_connector(timeout=0.1, max_retries=1)
    crm.delay_next(0.5, count=2)

    with pytest.raises(CrmUnavailable, match="Timeout"):
        connector.current_user()


def test_connection_refused_raises_unavailable(make_connector, sleeps):
    connector = make_connector(api_base="http://127.0.0.1:9", max_retries=2)

    with pytest.raises(CrmUnavailable, match="ConnectionError"):
        connector.current_user()
    assert len(sleeps.waits) == 2


def test_credit_budget_stops_calls_before_they_are_sent(crm, make_connector):
    connector = make_connector(credit_budget=3)
    load(connector, 300)

    with pytest.raises(CrmBudgetExceeded):
        load(connector, 1, start=300)

    assert connector.credits_used == 3
    assert crm.counters()["calls"][f"POST /crm/v8/{MODULE}/upsert"] == 3


def test_retries_spend_the_credit_budget(crm, make_connector):
    connector = make_connector(credit_budget=2)
    crm.fail_next(5, 500)

    with pytest.raises(CrmBudgetExceeded):
        connector.current_user()

    assert crm.counters()["calls"]["GET /crm/v8/users"] == 2


def test_the_crms_remaining_credits_header_stops_calls_at_zero(crm, connector):
    crm.set_credit_limit(4)
    connector.current_user()
    assert connector.credits_remaining is None  # Zoho only says once half is spent
    connector.current_user()
    assert connector.credits_remaining == 2
    connector.current_user()
    connector.current_user()
    assert connector.credits_remaining == 0

    with pytest.raises(CrmBudgetExceeded, match="0 API credits left"):
        connector.current_user()

    assert crm.counters()["credits_used"] == 4
