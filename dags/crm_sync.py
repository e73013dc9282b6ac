"""
### crm_sync — reverse ETL: published tiers, lifecycle stages and next actions into the CRM

Runs whenever `customer_tiering` publishes `analytics.customer_tier` (Asset schedule), for the
date that publication published (its Asset event's `as_of_date`; the newest published date when
started by hand or when a later publication superseded it), to Zoho CRM or 纷享销客 (`provider` in `config/crm.yml`, which also holds
the field mapping, ownership, sync mode and next-action rules); connection: `TIERLINE_CRM_*`
environment variables (docs/crm.md).

1. **plan_changes** — map the published rows to CRM values, read what changed in the CRM since
   the last run, record a person's edits of protected fields as conflicts (`crm_sync.conflicts`,
   never overwritten silently), and store one write per changed record in `crm_sync.outbox`.
2. **push_changes** — write the outbox: updates by CRM record id (creates only in `upsert`
   mode), in batches of at most 100 (纷享销客: one record per call);
   per batch, one transaction updates `crm_sync.record_state` for what the CRM confirmed and
   moves refused records to `crm_sync.dead_letters` (`make crm-retry` replays them). When the
   CRM stays rate limited or unavailable, the task fails after saving its progress and its
   Airflow retry continues with what is left.
3. **reconcile** — read the written records back; fields the CRM holds differently go to
   `crm_sync.reconciliation` and the task's result.

Each task alerts (`tierline.alerts`) when its new conflicts, dead letters or mismatches reach the
thresholds under `alerts` in `crm.yml`. A run with nothing changed sends nothing. Every task is
safe to repeat.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from tierline.alerts import TaskFailureAlert
from tierline.assets import asset_uri
from tierline.config import published_schema
from tierline.settings import EARLIEST_AS_OF


def _fail_fast(func, *args):
    """Configuration and request errors do not get better by retrying; the CRM being busy does."""
    from airflow.sdk.exceptions import AirflowFailException

    from tierline.crm import CrmAuthError, CrmRequestError
    from tierline.errors import TierlineError

    try:
        return func(*args)
    except (TierlineError, CrmAuthError, CrmRequestError) as exc:
        raise AirflowFailException(str(exc)) from exc


@dag(
    dag_id="crm_sync",
    schedule=[Asset(asset_uri("customer_tier", published_schema()))],
    start_date=pendulum.parse(EARLIEST_AS_OF, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tierline", "crm"],
    default_args={
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": timedelta(seconds=int(os.environ.get("TIERLINE_CRM_RETRY_DELAY_SECONDS", "600"))),
        "on_failure_callback": TaskFailureAlert(),
    },
)
def crm_sync():
    @task
    def plan_changes(**context):
        from tierline.assets import published_date
        from tierline.crm import sync

        # the date the triggering publication published (none when the run was started by hand)
        events = [event for per_asset in context["triggering_asset_events"].values() for event in per_asset]
        return _fail_fast(lambda: sync.plan_step(context["run_id"], as_of=published_date(events)))

    @task
    def push_changes(**context):
        from dataclasses import asdict

        from tierline.crm import sync

        result = _fail_fast(sync.push_step, context["run_id"])
        if result.unsent:
            raise RuntimeError(f"{result.unsent} records not sent ({result.stopped_reason}); "
                               "progress is saved, the retry continues from crm_sync.outbox")
        return asdict(result)

    @task
    def reconcile(**context):
        from tierline.crm import sync

        result = _fail_fast(sync.reconcile_step, context["run_id"])
        if result["mismatch_count"]:
            print(f"{result['mismatch_count']} CRM fields differ from what was written; "
                  "see crm_sync.reconciliation")
        return result

    plan_changes() >> push_changes() >> reconcile()


crm_sync()
