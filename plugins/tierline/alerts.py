"""Alerts: one message, sent through Airflow notifiers to the channels set up as Airflow connections.

``notify(kind, *, dag_id, as_of_date, task, reason, counts, where)`` is the one call every part of
tierline uses (a task failure callback, a gate with warnings, the publication watch, the CRM sync's
dead letters, mismatches and conflicts). The message names the DAG, the date, the task, the reason,
the counts and where to look, and goes to every channel whose connection exists:

- ``TIERLINE_ALERT_CONNECTIONS`` lists the Airflow connection ids to use (comma separated,
  default ``tierline_alerts_email,tierline_alerts_chat``). A listed id that is not defined is
  skipped; none defined means the alert is only logged.
- The connection's type says what it is: ``smtp`` (email: recipients in the extra ``to``, sender
  in ``from_email``), ``slackwebhook`` (Slack incoming webhook), ``dingding`` (DingTalk custom
  robot, token as the password), or ``http`` with the extra ``chat`` set to ``wecom`` or
  ``feishu`` (the robot's webhook: host plus the extra ``endpoint``).

Sending never raises: an alert that cannot be delivered is logged, and the failure it reports
stays the task's failure. This module imports nothing heavy at top level (DAG files import it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

ENV_CONNECTIONS = "TIERLINE_ALERT_CONNECTIONS"
DEFAULT_CONNECTIONS = ("tierline_alerts_email", "tierline_alerts_chat")

# kind -> headline; the kinds are the alert vocabulary (docs/production.md lists what to do for each)
KINDS = {
    "task_failed": "task failed",
    "gate_warning": "quality gate warning",
    "stale_publication": "no publication by the deadline",
    "crm_dead_letters": "CRM refused records (dead letters)",
    "crm_mismatches": "CRM fields differ from what was written",
    "crm_conflicts": "CRM edits conflict with published values",
}
CHAT_FLAVOURS = ("wecom", "feishu")


@dataclass(frozen=True)
class Alert:
    kind: str
    dag_id: str
    as_of_date: str
    task: str
    reason: str
    counts: dict = field(default_factory=dict)
    where: str = ""

    @property
    def subject(self) -> str:
        return f"[tierline] {self.dag_id} {self.as_of_date}: {KINDS[self.kind]} ({self.task})"

    @property
    def text(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items()) or "-"
        return "\n".join([
            self.subject,
            f"dag: {self.dag_id}",
            f"date: {self.as_of_date}",
            f"task: {self.task}",
            f"reason: {self.reason}",
            f"counts: {counts}",
            f"where to look: {self.where or '-'}",
        ])

    @property
    def html(self) -> str:
        from html import escape

        counts = ", ".join(f"{escape(str(k))} {escape(str(v))}" for k, v in self.counts.items()) or "-"
        rows = [("DAG", self.dag_id), ("date", self.as_of_date), ("task", self.task),
                ("reason", self.reason), ("counts", None), ("where to look", self.where or "-")]
        body = "".join(
            f"<tr><th align=left>{name}</th><td>{counts if value is None else escape(value)}</td></tr>"
            for name, value in rows)
        return f"<p><b>{escape(KINDS[self.kind])}</b></p><table>{body}</table>"


def connection_ids() -> list[str]:
    raw = os.environ.get(ENV_CONNECTIONS)
    ids = DEFAULT_CONNECTIONS if raw is None else raw.split(",")
    return [i.strip() for i in ids if i.strip()]


def _get_connection(conn_id: str):
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # an undefined connection raises AirflowNotFoundException (or a lookup error)
        log.debug("alert connection %s not available: %s", conn_id, exc)
        return None


def notifier_for(conn, alert: Alert) -> BaseNotifier:
    """The Airflow notifier that delivers ``alert`` through connection ``conn``."""
    conn_type = (conn.conn_type or "").lower()
    extra = conn.extra_dejson
    if conn_type in ("smtp", "email"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        to = extra.get("to")
        if not to:
            raise ValueError(f"connection {conn.conn_id}: set the recipients in its extra 'to'")
        return SmtpNotifier(smtp_conn_id=conn.conn_id, to=to, from_email=extra.get("from_email") or None,
                            subject=alert.subject, html_content=alert.html)
    if conn_type == "slackwebhook":
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(slack_webhook_conn_id=conn.conn_id, text=alert.text)
    if conn_type == "dingding":
        return _DingTalkNotifier(conn.conn_id, alert.text)
    if conn_type == "http" and extra.get("chat") in CHAT_FLAVOURS:
        from airflow.providers.http.notifications.http import HttpNotifier

        body = ({"msgtype": "text", "text": {"content": alert.text}} if extra["chat"] == "wecom"
                else {"msg_type": "text", "content": {"text": alert.text}})
        return HttpNotifier(http_conn_id=conn.conn_id, endpoint=extra.get("endpoint", ""), json=body,
                            headers={"Content-Type": "application/json"})
    raise ValueError(f"connection {conn.conn_id}: type {conn.conn_type!r} is not an alert channel "
                     f"(smtp, slackwebhook, dingding, or http with extra chat in {CHAT_FLAVOURS})")


class _DingTalkNotifier(BaseNotifier):
    """The DingTalk provider has a hook but no notifier; this is the notifier over its hook."""

    def __init__(self, conn_id: str, text: str):
        super().__init__()
        self.conn_id, self.text = conn_id, text

    def notify(self, context) -> None:
        from airflow.providers.dingding.hooks.dingding import DingdingHook

        DingdingHook(dingding_conn_id=self.conn_id, message_type="text", message=self.text).send()


def send(alert: Alert) -> dict[str, str]:
    """Deliver ``alert`` to every configured channel; return ``{conn_id: "sent" | error}``."""
    if alert.kind not in KINDS:
        raise ValueError(f"unknown alert kind {alert.kind!r}; one of {sorted(KINDS)}")
    log.warning("%s", alert.text)
    outcome: dict[str, str] = {}
    for conn_id in connection_ids():
        conn = _get_connection(conn_id)
        if conn is None:
            continue
        try:
            # notify(), not __call__: the message is final text, not a Jinja template to render
            notifier_for(conn, alert).notify({})
            outcome[conn_id] = "sent"
        except Exception as exc:  # a broken channel must not hide the failure being reported
            outcome[conn_id] = f"{type(exc).__name__}: {exc}"
            log.error("alert %s via %s not delivered: %s", alert.kind, conn_id, exc)
    if not outcome:
        log.warning("no alert connection defined (%s): the alert above is only in this log",
                    ", ".join(connection_ids()) or ENV_CONNECTIONS + " is empty")
    return outcome


def notify(kind: str, *, dag_id: str, as_of_date, task: str, reason: str, counts: dict | None = None,
           where: str = "") -> dict[str, str]:
    """Send one alert; see the module docstring. Returns what happened per channel."""
    return send(Alert(kind, dag_id, str(as_of_date)[:10], task, str(reason), dict(counts or {}), where))


def _where(context) -> str:
    from tierline import settings

    ti = context.get("ti") or context.get("task_instance")
    run_id = context.get("run_id") or getattr(ti, "run_id", "")
    places = []
    ds = context.get("ds")
    if ds and run_id:
        import re

        places.append(f"run folder {settings.runs_dir() / ds / re.sub(r'[^A-Za-z0-9_.-]+', '_', run_id)}")
    if ti is not None:
        places.append(f"Airflow log of {getattr(ti, 'dag_id', '')}/{run_id}/{ti.task_id} "
                      f"try {getattr(ti, 'try_number', '?')}")
    return "; ".join(places)


class TaskFailureAlert(BaseNotifier):
    """``on_failure_callback`` of tierline's DAGs: the task's final failure as a ``task_failed`` alert."""

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        dag = context.get("dag")
        exc = context.get("exception")
        counts = {"try": getattr(ti, "try_number", "?"), "max_tries": getattr(ti, "max_tries", "?")}
        notify("task_failed", dag_id=getattr(dag, "dag_id", "") or getattr(ti, "dag_id", ""),
               as_of_date=context.get("ds", ""), task=getattr(ti, "task_id", ""),
               reason=f"{type(exc).__name__}: {exc}" if exc else "the task failed (no exception recorded)",
               counts=counts, where=_where(context))


def gate_warnings(result: dict, context) -> None:
    """Alert when a gate passed with warnings (the run goes on)."""
    warnings = (result or {}).get("warnings") or []
    if warnings:
        ti = context.get("ti")
        notify("gate_warning", dag_id=ti.dag_id, as_of_date=context["ds"], task=ti.task_id,
               reason="; ".join(warnings)[:2000], counts={"warnings": len(warnings)}, where=_where(context))


def check_publication(expected, *, dag_id: str = "publication_watch", task: str = "check_publication") -> dict:
    """Alert ``stale_publication`` unless ``expected`` (a date) has been published; return what was found."""
    from tierline import config as config_module
    from tierline import publish, warehouse

    schema = config_module.load().publish.schema_
    with warehouse.connect() as conn:
        published = publish.published_dates(conn, schema)
    latest = max(published, default=None)
    found = {"expected": str(expected), "published": expected in published,
             "latest_published": str(latest) if latest else None}
    if not found["published"]:
        behind = (expected - latest).days if latest else None
        notify("stale_publication", dag_id="customer_tiering", as_of_date=expected, task="publish",
               reason=f"{schema}.publication_log has no publication for {expected} at the deadline "
                      f"(checked by {dag_id}.{task}); the latest published date is {latest or 'none'}",
               counts={"days_behind": behind if behind is not None else "no publication yet"},
               where=f"Airflow: customer_tiering runs for {expected}; {schema}.publication_log; "
                     "docs/production.md#alerts")
    return found
