"""Alerts reach a real SMTP server (aiosmtpd) and a real HTTP receiver through Airflow's notifiers.

Channels are Airflow connections given the Airflow way, as ``AIRFLOW_CONN_*`` variables, so the
same lookup runs here as in a task. Each message must name the DAG, the date, the task, the reason,
the counts and where to look.
"""

from __future__ import annotations

import json

import pytest

from tests.receivers import HttpReceiver, SmtpReceiver
from tierline import alerts


@pytest.fixture
def smtp_server():
    with SmtpReceiver() as smtp:
        yield smtp.port, smtp.messages


@pytest.fixture
def http_receiver():
    with HttpReceiver() as hooks:
        yield hooks.port, hooks.received


def _conn(monkeypatch, conn_id: str, **fields):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


ALERT = dict(dag_id="customer_tiering", as_of_date="2026-11-01", task="gate_raw",
             reason="raw gate failed: sales_orders.customer_id references unknown customers (30 rows)",
             counts={"failed_checks": 1, "rows": 30}, where="run folder /state/runs/2026-11-01/manual_x")


def _assert_names_everything(text: str):
    for expected in ("customer_tiering", "2026-11-01", "gate_raw", "unknown customers (30 rows)",
                     "failed_checks 1", "rows 30", "/state/runs/2026-11-01/manual_x"):
        assert expected in text, f"{expected!r} missing from the alert:\n{text}"


def test_task_failure_alert_goes_by_email_and_to_every_chat(monkeypatch, smtp_server, http_receiver):
    smtp_port, mailbox = smtp_server
    http_port, received = http_receiver
    _conn(monkeypatch, "alert_mail", conn_type="smtp", host="127.0.0.1", port=smtp_port,
          extra={"to": "oncall@example.com", "from_email": "tierline@example.com", "disable_tls": True,
                 "disable_ssl": True, "timeout": 5, "retry_limit": 0})
    _conn(monkeypatch, "alert_dingtalk", conn_type="dingding", host=f"http://127.0.0.1:{http_port}",
          password="dingtoken")
    _conn(monkeypatch, "alert_wecom", conn_type="http", host="127.0.0.1", port=http_port, schema="http",
          extra={"chat": "wecom", "endpoint": "cgi-bin/webhook/send?key=wecomkey"})
    _conn(monkeypatch, "alert_feishu", conn_type="http", host="127.0.0.1", port=http_port, schema="http",
          extra={"chat": "feishu", "endpoint": "open-apis/bot/v2/hook/feishutoken"})
    _conn(monkeypatch, "alert_slack", conn_type="slackwebhook", host=f"http://127.0.0.1:{http_port}/slack",
          password="T000/B000/XXX")
    monkeypatch.setenv(alerts.ENV_CONNECTIONS, "alert_mail,alert_dingtalk,alert_wecom,alert_feishu,alert_slack,"
                                               "alert_not_defined")

    outcome = alerts.notify("task_failed", **ALERT)

    assert outcome == dict.fromkeys(["alert_mail", "alert_dingtalk", "alert_wecom", "alert_feishu", "alert_slack"],
                                    "sent")
    (sender, recipients, message), = mailbox
    assert (sender, recipients) == ("tierline@example.com", ["oncall@example.com"])
    assert message["Subject"] == "[tierline] customer_tiering 2026-11-01: task failed (gate_raw)"
    html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    _assert_names_everything(html)

    by_path = {path: body for path, body in received}
    assert set(by_path) == {"/robot/send?access_token=dingtoken", "/cgi-bin/webhook/send?key=wecomkey",
                            "/open-apis/bot/v2/hook/feishutoken", "/slack/T000/B000/XXX"}
    _assert_names_everything(by_path["/robot/send?access_token=dingtoken"]["text"]["content"])
    _assert_names_everything(by_path["/cgi-bin/webhook/send?key=wecomkey"]["text"]["content"])
    assert by_path["/cgi-bin/webhook/send?key=wecomkey"]["msgtype"] == "text"
    _assert_names_everything(by_path["/open-apis/bot/v2/hook/feishutoken"]["content"]["text"])
    assert by_path["/open-apis/bot/v2/hook/feishutoken"]["msg_type"] == "text"
    _assert_names_everything(by_path["/slack/T000/B000/XXX"]["text"])


def test_a_broken_channel_does_not_stop_the_others_or_raise(monkeypatch, http_receiver):
    http_port, received = http_receiver
    _conn(monkeypatch, "alert_mail", conn_type="smtp", host="127.0.0.1", port=1,  # nothing listens on port 1
          extra={"to": "oncall@example.com", "from_email": "t@example.com", "disable_tls": True,
                 "disable_ssl": True, "timeout": 2, "retry_limit": 0})
    _conn(monkeypatch, "alert_feishu", conn_type="http", host="127.0.0.1", port=http_port, schema="http",
          extra={"chat": "feishu", "endpoint": "hook"})
    monkeypatch.setenv(alerts.ENV_CONNECTIONS, "alert_mail,alert_feishu")

    outcome = alerts.notify("crm_dead_letters", dag_id="crm_sync", as_of_date="2026-11-02", task="push_changes",
                            reason="the CRM refused 3 records", counts={"dead_letters": 3},
                            where="crm_sync.dead_letters; make crm-retry")

    assert outcome["alert_feishu"] == "sent"
    assert outcome["alert_mail"].startswith(("ConnectionRefusedError", "SMTPConnectError", "OSError"))
    (_, body), = received
    assert "CRM refused records (dead letters)" in body["content"]["text"]
    assert "dead_letters 3" in body["content"]["text"]


def test_unknown_kind_and_unusable_connection_type_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown alert kind"):
        alerts.notify("oops", **ALERT)
    _conn(monkeypatch, "alert_ftp", conn_type="ftp", host="example.com")
    monkeypatch.setenv(alerts.ENV_CONNECTIONS, "alert_ftp")
    outcome = alerts.notify("gate_warning", **ALERT)
    assert "is not an alert channel" in outcome["alert_ftp"]


def test_stale_publication_alerts_only_when_the_date_is_missing(monkeypatch, warehouse_url, http_receiver):
    from datetime import date

    from tierline import publish, warehouse

    http_port, received = http_receiver
    _conn(monkeypatch, "alert_wecom", conn_type="http", host="127.0.0.1", port=http_port, schema="http",
          extra={"chat": "wecom", "endpoint": "send"})
    monkeypatch.setenv(alerts.ENV_CONNECTIONS, "alert_wecom")

    assert alerts.check_publication(date(2026, 11, 1))["published"] is False  # no publication log yet
    with warehouse.connect(warehouse_url) as conn:
        publish.ensure_log(conn, "analytics")
        conn.execute("insert into analytics.publication_log (run_id, as_of_date, row_counts) "
                     "values ('manual__a', '2026-10-30', '{}'), ('manual__b', '2026-11-01', '{}')")
    assert alerts.check_publication(date(2026, 11, 1)) == {
        "expected": "2026-11-01", "published": True, "latest_published": "2026-11-01"}
    assert alerts.check_publication(date(2026, 11, 3))["published"] is False

    assert len(received) == 2  # the two missing dates, nothing for the published one
    text = received[1][1]["text"]["content"]
    assert text.splitlines()[0] == "[tierline] customer_tiering 2026-11-03: no publication by the deadline (publish)"
    assert "the latest published date is 2026-11-01" in text and "days_behind 2" in text
    assert "analytics.publication_log" in text


def test_gate_warnings_alert_only_when_there_are_warnings(monkeypatch, http_receiver):
    from types import SimpleNamespace

    http_port, received = http_receiver
    _conn(monkeypatch, "alert_wecom", conn_type="http", host="127.0.0.1", port=http_port, schema="http",
          extra={"chat": "wecom", "endpoint": "send"})
    monkeypatch.setenv(alerts.ENV_CONNECTIONS, "alert_wecom")
    context = {"ti": SimpleNamespace(dag_id="customer_tiering", task_id="gate_staging", run_id="manual__x",
                                     try_number=1), "ds": "2026-11-02", "run_id": "manual__x"}

    alerts.gate_warnings({"gate": "staging", "passed": True, "warnings": []}, context)
    assert received == []
    alerts.gate_warnings({"gate": "staging", "passed": True,
                          "warnings": ["orders with unknown channel: 3 rows", "phones not normalised: 12 rows"]}, context)
    (_, body), = received
    lines = body["text"]["content"].splitlines()
    assert lines[0] == "[tierline] customer_tiering 2026-11-02: quality gate warning (gate_staging)"
    assert lines[4] == "reason: orders with unknown channel: 3 rows; phones not normalised: 12 rows"
    assert lines[5] == "counts: warnings 2"
    assert lines[6].startswith("where to look: run folder ") and lines[6].find("2026-11-02/manual__x") > 0
