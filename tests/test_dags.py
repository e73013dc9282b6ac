"""DAG integrity: every DAG file parses, reads like the flow, and stays light at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tierline import stages
from tierline.assets import PUBLISHED_TABLES, asset_uri

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ("great_expectations", "dbt", "pandas", "scipy", "psycopg", "tierline.load", "tierline.gates")


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= 1


def test_every_dag_has_docs_owner_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_every_task_alerts_on_failure(dagbag):
    from tierline.alerts import TaskFailureAlert

    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            callbacks = task.on_failure_callback if isinstance(task.on_failure_callback, list) else [
                task.on_failure_callback]
            assert any(isinstance(c, TaskFailureAlert) for c in callbacks), f"{dag_id}.{task.task_id}"


def test_dags_accept_history_without_catching_up(dagbag):
    from tierline.settings import EARLIEST_AS_OF

    for dag_id, dag in dagbag.dags.items():
        assert not dag.catchup, dag_id
        assert dag.start_date.in_timezone("Asia/Shanghai").isoformat()[:10] == EARLIEST_AS_OF, dag_id


def test_publication_watch_runs_at_the_configured_deadline(tmp_path):
    code = ("import runpy, sys; g = runpy.run_path(sys.argv[1]); "
            "print(g['publication_watch']().timetable.expression)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_HOME": str(tmp_path), "TIERLINE_PUBLISH_DEADLINE": "07:45"}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags" / "publication_watch.py")], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "45 7 * * *"
    bad = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags" / "publication_watch.py")],
                         env={**env, "TIERLINE_PUBLISH_DEADLINE": "9am"}, capture_output=True, text=True)
    assert "TIERLINE_PUBLISH_DEADLINE must be HH:MM (24 h, Asia/Shanghai), got '9am'" in bad.stderr


def test_customer_tiering_reads_like_the_flow(dagbag):
    dag = dagbag.dags["customer_tiering"]
    order = []
    task = next(t for t in dag.tasks if not t.upstream_task_ids)
    while task:
        order.append(task.task_id)
        downstream = list(task.downstream_list)
        assert len(downstream) <= 1
        task = downstream[0] if downstream else None
    assert tuple(order) == stages.DAG_TASKS == ("preflight", *stages.RUN)
    # every stage of the run is a function of the pipeline, in the same order
    from tierline import pipeline

    assert tuple(pipeline.STAGES) == stages.RUN
    assert dag.max_active_runs == 1
    assert "landing" in dag.params


def test_publish_emits_an_asset_per_published_table(dagbag):
    publish = dagbag.dags["customer_tiering"].get_task("publish")
    assert sorted(a.uri for a in publish.outlets) == sorted(asset_uri(t, "analytics") for t in PUBLISHED_TABLES)


def test_assets_name_the_configured_publish_schema(tmp_path):
    from tierline import config

    (tmp_path / "bi.yml").write_text("publish:\n  schema: bi\n")
    (tmp_path / "broken.yml").write_text("publish: [\n")
    assert config.published_schema(tmp_path / "bi.yml") == "bi"
    assert config.published_schema(tmp_path / "broken.yml") == config.published_schema() == "analytics"
    assert asset_uri("customer_tier", "bi").endswith("/bi/customer_tier")


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_keeps_heavy_imports_out_of_top_level(dag_file):
    # A fresh interpreter, as the DAG processor has: what does importing the file pull in?
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", code, str(dag_file)], env=env, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_asset_event_names_the_date_it_published():
    from datetime import date, datetime
    from types import SimpleNamespace

    from tierline.assets import published_date, published_event

    first = SimpleNamespace(timestamp=datetime(2026, 11, 2, 1), extra=published_event(date(2026, 11, 1), "r1"))
    second = SimpleNamespace(timestamp=datetime(2026, 11, 3, 1), extra=published_event(date(2026, 11, 2), "r2"))
    assert published_date([second, first]) == "2026-11-02"
    assert published_date([]) is None  # started by hand: the newest publication
