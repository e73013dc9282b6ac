"""
### publication_watch — alert when the day's publication is missing at the deadline

Every day at `TIERLINE_PUBLISH_DEADLINE` (HH:MM, Asia/Shanghai, default 09:00) it checks
`analytics.publication_log` for the date `customer_tiering` should have published by then (the
day that ended at the last midnight). When that date is missing, whatever the cause (a failed or
slow run, a scheduler that did not run it, extracts that never arrived), it sends a
`stale_publication` alert through the alert connections (docs/production.md#alerts).

1. **check_publication** — read the publication log; alert if the date is missing. The task
   itself succeeds: it reports a problem elsewhere, it is not one.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from tierline.alerts import TaskFailureAlert
from tierline.settings import EARLIEST_AS_OF

TIMEZONE = "Asia/Shanghai"
DEADLINE = os.environ.get("TIERLINE_PUBLISH_DEADLINE", "09:00").strip()
_deadline = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", DEADLINE)
if not _deadline:
    raise ValueError(f"TIERLINE_PUBLISH_DEADLINE must be HH:MM (24 h, {TIMEZONE}), got {DEADLINE!r}")


@dag(
    dag_id="publication_watch",
    schedule=f"{int(_deadline[2])} {int(_deadline[1])} * * *",
    start_date=pendulum.parse(EARLIEST_AS_OF, tz=TIMEZONE),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tierline", "alerts"],
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": TaskFailureAlert(),
    },
)
def publication_watch():
    @task
    def check_publication(**context):
        from tierline import alerts

        due = context["logical_date"].in_timezone(TIMEZONE).date() - timedelta(days=1)
        return alerts.check_publication(due)

    check_publication()


publication_watch()
