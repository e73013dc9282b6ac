"""
### customer_tiering — CRM and sales extracts to customer value, VIP tier and lifecycle

The order of the tasks is `tierline.stages`. Daily, per logical date (the extract date, `<landing>/<YYYY-MM-DD>/*.csv` per EXTRACTS.md):

0. **preflight** — configuration, warehouse (reachable, version, privileges), landing and date
   folder, in seconds; records the run's identity in its run folder (`run.json`).
1. **land_extracts** — immutable, content-addressed copy of the date's files plus a manifest.
2. **load_raw** — one `COPY` per file into `raw.*`; bad rows to `raw.quarantine` with reasons.
3. **gate_raw** — Great Expectations: counts balance, quarantine rate, keys, references.
4. **dbt_staging** — seeds, staging and intermediate models with their dbt tests.
5. **gate_staging** — cleaned data invariants.
6. **fit_clv** — BG/NBD + Gamma-Gamma on the SQL summary: P(alive), expected purchases, CLV
   (rule-based values when history is too thin or a fit is out of bounds).
7. **dbt_marts** — `customer_value`, `customer_tier`, `customer_lifecycle`, `tier_history` in the build schema;
   the publication's tables exist afterwards (created empty the first time, new columns added).
8. **gate_marts** — business invariants and drift against the last publication.
9. **publish** — one transaction into `analytics`; emits an Asset per published table, whose event
   names the date it published (`crm_sync` syncs that date).
10. **report** — run summary (rows, quarantine, tier mix, time per stage) as text and HTML.
11. **apply_retention** — removes the landing copies, raw row versions, quarantined raw text and
   run folders older than the `retention` periods, and says what it removed. It comes after the
   publication and cannot unpublish: a failure fails the run's last task (and alerts), and
   `make run` reports the run as published with the retention failure.

A failed gate stops everything after it: nothing is published and the last good publication
stays as it was. Only warehouse connection and server failures are retried (dbt's included);
data, rule, configuration and test failures fail the run at once (`tierline.errors`).
Params: `landing` — the folder holding the date folders.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, chain, dag, task

from tierline import stages
from tierline.alerts import TaskFailureAlert
from tierline.assets import PUBLISHED_TABLES, asset_uri, published_event
from tierline.config import published_schema
from tierline.settings import EARLIEST_AS_OF

PUBLISHED_SCHEMA = published_schema()
PUBLISHED_ASSETS = [Asset(asset_uri(table, PUBLISHED_SCHEMA), extra={"table": f"{PUBLISHED_SCHEMA}.{table}"})
                    for table in PUBLISHED_TABLES]


def _run(**context):
    """Run this task's stage of tierline.pipeline (the task id names it, tierline.stages) for this
    DAG run; only a transient failure is retried.

    Everything happens inside the ``try``, reading the configuration included: a typo in a
    config file is as permanent as a bad extract (tierline.errors decides which is which).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from tierline import errors, pipeline

    try:
        ctx = pipeline.context(context["ds"], context["run_id"], context["params"]["landing"],
                               try_number=context["ti"].try_number)
        return pipeline.run(context["ti"].task_id, ctx)
    except Exception as exc:
        if errors.is_transient(exc):
            raise  # the warehouse's connection or server: Airflow retries the task
        # Bad data, a failed check, a refused lock or a bug does not get better by retrying; our
        # own errors say what and where, anything else is named by its type.
        raise AirflowFailException(str(exc) if isinstance(exc, errors.TierlineError)
                                   else f"{type(exc).__name__}: {exc}") from exc


def _lineage_parent(context) -> None:
    """dbt's OpenLineage events (tierline.lineage) name this task's run as their parent."""
    from tierline import lineage

    if lineage.enabled():
        from airflow.providers.openlineage.plugins.macros import lineage_parent_id, lineage_root_parent_id

        os.environ[lineage.PARENT_ENV] = lineage_parent_id(context["ti"])
        os.environ[lineage.ROOT_PARENT_ENV] = lineage_root_parent_id(context["ti"])


def _dbt(context) -> None:
    """One dbt build; its outcome per model and test goes to the XCom ``dbt_nodes`` whether it
    passed or failed, so the UI (task -> XCom) names the failed model or test without a log."""
    from airflow.sdk.exceptions import AirflowFailException

    from tierline import dbt

    _lineage_parent(context)
    try:
        result = _run(**context)
    except AirflowFailException as exc:
        if isinstance(exc.__cause__, dbt.DbtFailed):
            context["ti"].xcom_push(key="dbt_nodes", value=exc.__cause__.summary)
        raise
    context["ti"].xcom_push(key="dbt_nodes", value=result.summary)


def _gate(context):
    """A gate that passes with warnings lets the run go on and sends a ``gate_warning`` alert."""
    from tierline import alerts

    result = _run(**context)
    alerts.gate_warnings(result, context)
    return result


@dag(
    dag_id="customer_tiering",
    schedule="@daily",
    # Any date since EARLIEST_AS_OF runs (make run, backfills); catchup off: no flood on first deploy.
    start_date=pendulum.parse(EARLIEST_AS_OF, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tierline"],
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(seconds=int(os.environ.get("TIERLINE_RETRY_DELAY_SECONDS", "120"))),
        "on_failure_callback": TaskFailureAlert(),
    },
    params={
        "landing": Param(
            os.environ.get("TIERLINE_LANDING", "/opt/tierline/inbox"),
            type="string",
            description="Folder holding <YYYY-MM-DD>/<file>.csv extract folders",
        )
    },
)
def customer_tiering():
    @task
    def preflight(**context):
        from airflow.sdk.exceptions import AirflowFailException

        from tierline import preflight as checks
        from tierline.errors import TierlineError

        try:
            checks.run_for_dag(context["params"]["landing"], context["ds"], context["run_id"],
                               context["logical_date"])
        except TierlineError as exc:
            # a typo, a missing folder or privilege: retrying changes nothing (unreachable: retried)
            raise AirflowFailException(str(exc)) from exc

    @task
    def land_extracts(**context):
        return _run(**context)

    @task
    def load_raw(**context):
        _run(**context)

    @task
    def gate_raw(**context):
        return _gate(context)

    @task
    def dbt_staging(**context):
        _dbt(context)

    @task
    def gate_staging(**context):
        return _gate(context)

    @task
    def fit_clv(**context):
        return _run(**context)

    @task
    def dbt_marts(**context):
        _dbt(context)

    @task
    def gate_marts(**context):
        return _gate(context)

    @task(outlets=PUBLISHED_ASSETS)
    def publish(**context):
        # each Asset event says which date it published: crm_sync syncs that date
        publication = _run(**context)
        for asset in PUBLISHED_ASSETS:
            context["outlet_events"][asset].extra = published_event(publication.as_of_date, publication.run_id)

    @task
    def report(**context):
        from tierline import report as report_module

        print(report_module.as_text(_run(**context)))

    @task
    def apply_retention(**context):
        result = _run(**context)
        print(f"retention for {result['as_of_date']}: removed {result['removed']}")
        return result

    # in the order of tierline.stages, the one definition of the flow
    tasks = [preflight(), land_extracts(), load_raw(), gate_raw(), dbt_staging(), gate_staging(), fit_clv(),
             dbt_marts(), gate_marts(), publish(), report(), apply_retention()]
    by_id = {task.operator.task_id: task for task in tasks}
    chain(*(by_id[name] for name in stages.DAG_TASKS))

customer_tiering()
