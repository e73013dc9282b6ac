"""Retries match the failure (issue 8, item 10): the warehouse's failures are retried wherever
they happen, dbt included; data, rule, configuration and test failures never are.

The Airflow tests run the real DAG (`airflow dags test` through the CLI) against a private
PostgreSQL that the test starts, restarts and stops by its own pid.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.private_pg import PrivatePostgres
from tierline import cli, settings, warehouse
from tierline.errors import ConfigError, TransientError, is_transient
from tierline_dev import generate

DAY = date(2026, 11, 1)


def test_connection_and_server_errors_are_transient_data_errors_are_not(warehouse_url, tmp_path):
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"postgresql://nobody@/x?host={tmp_path}", connect_timeout=2)
    assert is_transient(refused.value)
    with warehouse.connect(warehouse_url) as conn:
        with pytest.raises(psycopg.DataError) as overflow:
            conn.execute("select 1e40::numeric(18, 2)")
    assert not is_transient(overflow.value)
    assert not is_transient(ConfigError("config/tier_spec.yml: invalid"))
    # a killed session (admin shutdown, 57P01) is the server's doing, wherever it surfaces
    with warehouse.connect(warehouse_url, autocommit=True) as victim, warehouse.connect(warehouse_url) as admin:
        admin.execute("select pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError) as killed:
            victim.execute("select 1")
    assert is_transient(killed.value)
    assert is_transient(RuntimeError("wrapped")) is False
    try:
        try:
            raise killed.value
        except psycopg.Error as exc:
            raise RuntimeError("a library wrapped it") from exc
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


@pytest.fixture(scope="module")
def private_server():
    server = PrivatePostgres().init().start()
    yield server
    server.destroy()


@pytest.fixture
def airflow_run(private_server, tmp_path, monkeypatch):
    """Run the DAG for DAY against a fresh database of the private server; 1 s retry delay."""
    url = private_server.url(f"retries_{int(time.time() * 1000) % 10**9}")
    warehouse.ensure_database(url)
    monkeypatch.setenv(warehouse.ENV_URL, url)
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TIERLINE_RETRY_DELAY_SECONDS", "1")
    landing = tmp_path / "landing"
    generate.generate(landing, customers=150, days=1, seed=5, start_date=DAY, progress=False)

    def run():
        started = time.monotonic()
        code = cli.run(landing, DAY, quiet=True)
        return code, time.monotonic() - started

    yield {"url": url, "landing": landing, "run": run, "server": private_server}


def _stage(name: str) -> dict:
    run_dir = max((settings.runs_dir() / DAY.isoformat()).iterdir(), key=lambda p: p.stat().st_mtime)
    return json.loads((run_dir / f"stage_{name}.json").read_text())


def test_warehouse_restart_during_dbt_staging_is_retried_and_the_run_publishes(airflow_run):
    server: PrivatePostgres = airflow_run["server"]
    restarted = threading.Event()
    stop = threading.Event()

    def restart_when_dbt_runs():
        # staging models build in a fraction of a second on this data: watch from one session,
        # every few milliseconds, for dbt working on a staging model (its build, or the state
        # bookkeeping around it; not a catalog query between nodes), then restart the server
        database = psycopg.conninfo.conninfo_to_dict(airflow_run["url"])["dbname"]
        conn = None
        while not stop.is_set() and not restarted.is_set():
            try:
                conn = conn or psycopg.connect(server.url("postgres"), connect_timeout=2, autocommit=True)
                busy = conn.execute(
                    "select count(*) from pg_stat_activity where application_name = 'dbt' and state = 'active' "
                    "and datname = %s and query ilike %s", (database, "%stg\\_%")).fetchone()[0]
            except psycopg.OperationalError:
                conn, busy = None, 0
            if busy:
                conn.close()
                server.restart()
                restarted.set()
            time.sleep(0.005)

    watcher = threading.Thread(target=restart_when_dbt_runs, daemon=True)
    watcher.start()
    try:
        code, _ = airflow_run["run"]()
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert restarted.is_set(), "the warehouse was never restarted during a dbt build"
    assert code == 0, "the run did not finish by itself after the warehouse restarted"
    # dbt_staging's first try failed as the warehouse's fault (TransientError), Airflow retried it
    log = "".join(p.read_text() for p in (settings.home() / "logs").rglob("*.log"))
    assert "Retryable: " in log and "TransientError" in log
    assert _stage("dbt_staging")["status"] == "ok"
    with warehouse.connect(airflow_run["url"]) as conn:
        assert conn.execute("select count(*) from analytics.publication_log where as_of_date = %s",
                            (DAY,)).fetchone()[0] == 1


def test_failed_dbt_test_is_not_retried(airflow_run):
    from tierline import batches, load

    # published history that breaks a dbt relationships test (an interaction of an unknown
    # customer, written straight into raw, as a bad migration would): the data's fault
    earlier = DAY - timedelta(days=2)
    with warehouse.connect(airflow_run["url"]) as conn:
        load.ensure_raw_schema(conn)
        batch = batches.open_batch(conn, earlier, "migration")
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'raw' "
            "and table_name = 'crm_interactions'")]
        values = {"interaction_id": "BROKEN-1", "customer_id": "NOBODY", "channel": "phone",
                  "occurred_at": "2026-10-30 10:00:00", "updated_at": "2026-10-30 10:00:00",
                  "_extract_date": earlier, "_line_no": 2, "_file_sha256": "injected", "batch_id": batch}
        conn.execute(
            f"insert into raw.crm_interactions ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))})",
            [values.get(c) for c in columns])
        batches.promote(conn, run_id="migration", as_of=earlier)
    code, _ = airflow_run["run"]()
    assert code != 0
    staging = _stage("dbt_staging")
    assert staging["status"] == "failed" and staging["try_number"] == 1
    assert staging["error_type"] == "DbtFailed" and staging["retryable"] is False
    assert "relationships" in staging["error"]
    # what the Airflow UI shows without a log (issue 13, item 5): the task's XCom names the test
    with sqlite3.connect(settings.home() / "airflow" / "airflow.db") as db:
        (value,) = db.execute("select value from xcom where task_id = 'dbt_staging' and key = 'dbt_nodes'").fetchone()
    nodes = json.loads(value) if isinstance(value, str | bytes) else value
    nodes = json.loads(nodes) if isinstance(nodes, str) else nodes
    failed = [n for n in nodes["not_ok"] if n["status"] == "fail"]
    assert len(failed) == 1 and failed[0]["node"].startswith("test.tierline.relationships_stg_crm__interactions")
    assert failed[0]["failures"] == 1 and nodes["counts"]["fail"] == 1


def test_config_typo_fails_at_once_without_retries(airflow_run, tmp_path, monkeypatch, capfd):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    source = settings.PROJECT_ROOT / "config"
    (config_dir / "tierline.yml").write_text((source / "tierline.yml").read_text().replace(
        "max_quarantine_rate:", "max_quarantine_rat:"))
    (config_dir / "tier_spec.yml").write_text((source / "tier_spec.yml").read_text())
    monkeypatch.setenv("TIERLINE_CONFIG", str(config_dir / "tierline.yml"))
    monkeypatch.setenv("TIERLINE_RETRY_DELAY_SECONDS", "30")
    code, seconds = airflow_run["run"]()
    assert code != 0
    said = capfd.readouterr().err + "".join(p.read_text() for p in (settings.home() / "logs").rglob("*.log"))
    assert "max_quarantine_rat" in said
    # two retries would have waited 2 x 30 s
    assert seconds < 60, f"a configuration error took {seconds:.0f} s to fail: it was retried"


def test_dbt_connection_failure_is_transient(tmp_path, monkeypatch):
    from tierline import dbt, pipeline

    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))
    monkeypatch.setenv(warehouse.ENV_URL, f"postgresql://postgres@/nowhere?host={tmp_path}")
    ctx = pipeline.context(DAY, "refused", tmp_path)
    with pytest.raises(TransientError, match="Retryable"):
        dbt.build("staging", warehouse_url=ctx.warehouse_url, dbt_vars=ctx.dbt_vars(), run_dir=ctx.run_dir)
    assert Path(ctx.run_dir).exists()
