"""Preflight: a bad configuration, warehouse or date folder fails in seconds, with one clear line each.

``make run`` is run as a user runs it (a subprocess, the real Makefile); the time bound is loose,
the message exact. The DAG's own preflight task is run once under Airflow to show a permanent
error is not retried there either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.receivers import free_port
from tierline import access, config, preflight, settings, warehouse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    for day in ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-03", "2026-11-06", "2026-11-07", "2026-11-08"):
        (root / day).mkdir(parents=True)
    (root / "2026-11-01" / "crm_customers.csv").write_text("customer_id\n")
    (root / "notes").mkdir()
    return root


def make_run(landing: Path, as_of: str, **env) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(["make", "-s", "--no-print-directory", "run", f"LANDING={landing}", f"AS_OF={as_of}"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - started


def test_config_typo_fails_make_run_in_seconds_with_the_key(landing, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(settings.config_path().parent, config)
    spec = config / "tier_spec.yml"
    spec.write_text(spec.read_text().replace("\ndimensions:", "\ndimensoins:", 1))

    proc, seconds = make_run(landing, "2026-11-01", TIERLINE_CONFIG=str(config / "tierline.yml"))

    assert proc.returncode != 0
    assert seconds < 15
    assert (f"  FAIL  config: {spec}: invalid configuration\n"
            "          dimensions: Field required\n"
            "          dimensoins: Extra inputs are not permitted\n") in proc.stderr
    assert ("tierline run for 2026-11-01: nothing was run (fix the preflight failure above; "
            "docs/production.md#failure-messages)\n") in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unreachable_warehouse_fails_make_run_in_seconds(landing):
    port = free_port()  # nothing listens there
    proc, seconds = make_run(landing, "2026-11-01", TIERLINE_WAREHOUSE_URL=f"postgresql://tierline@127.0.0.1:{port}/dw")

    assert proc.returncode != 0
    assert seconds < 15
    assert (f"  FAIL  warehouse: cannot reach postgresql://tierline@127.0.0.1:{port}/dw: connection failed: "
            f'connection to server at "127.0.0.1", port {port} failed: Connection refused. Is the server running, '
            "and are host, port, user, password and database right?\n") in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_mysql_url_gets_a_message_not_a_traceback(landing):
    proc, seconds = make_run(landing, "2026-11-01", TIERLINE_WAREHOUSE_URL="mysql://root:secret@127.0.0.1:3306/dw")

    assert proc.returncode != 0 and seconds < 15
    assert ("  FAIL  warehouse: TIERLINE_WAREHOUSE_URL (or AIRFLOW_CONN_TIERLINE_WAREHOUSE) must be a postgresql:// "
            "URL, got mysql:// ('127.0.0.1:3306/dw'); tierline's warehouse is PostgreSQL; "
            "see docs/production.md#using-an-existing-warehouse\n") in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "secret" not in proc.stderr + proc.stdout


def test_missing_date_folder_lists_the_nearest_dates(landing):
    checks = preflight.check(landing, date(2026, 11, 4))
    assert [c.line for c in checks if not c.ok] == [
        f"  FAIL  date folder: no folder {landing / '2026-11-04'}; nearest dates present: 2026-10-31 (before), "
        "2026-11-01 (before), 2026-11-03 (before), 2026-11-06 (after), 2026-11-07 (after), 2026-11-08 (after)"]
    assert [c.name for c in checks if c.ok] == ["config", "warehouse", "privileges", "landing"]


def test_missing_landing_and_dates_before_the_dags_start(landing, tmp_path):
    (missing,) = [c for c in preflight.check(tmp_path / "nowhere", date(2026, 11, 1)) if not c.ok]
    assert missing.line == (f"  FAIL  landing: {tmp_path / 'nowhere'} does not exist; give the folder that holds "
                            "the <YYYY-MM-DD> date folders")
    (early,) = [c for c in preflight.check(landing, date(1999, 12, 31)) if not c.ok]
    assert early.line == ("  FAIL  date: 1999-12-31 is before 2000-01-01, the earliest date the DAG runs "
                          "(tierline.settings.EARLIEST_AS_OF)")


def test_missing_privileges_are_named(warehouse_url, monkeypatch):
    role = f"tl_reader_{os.getpid()}"
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        access.ensure_roles(conn, config.load().access)  # server-wide: what any earlier publish left
        database = conn.info.dbname
        conn.execute(f"drop role if exists {role}")
        conn.execute(f"create role {role} login")
        conn.execute("create schema analytics")
        conn.execute(f"revoke temp on database {database} from public")
    parts = urlsplit(warehouse_url)
    monkeypatch.setenv(warehouse.ENV_URL, urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[1]}")))
    try:
        (failed,) = [c for c in preflight.check(None, None) if not c.ok]
        assert failed.line == (
            f"  FAIL  privileges: role {role} lacks CREATE on database {database}; TEMP on database {database}; "
            "USAGE, CREATE on schema analytics. Grant them (docs/production.md#using-an-existing-warehouse) "
            "or use a role that has them")
    finally:
        with warehouse.connect(warehouse_url, autocommit=True) as conn:
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")


def test_the_dags_preflight_task_fails_once_without_retry(tmp_path, warehouse_url, landing):
    """Under Airflow: a permanent preflight failure is not retried (one try, then the run fails)."""
    from tierline import cli

    config = tmp_path / "config"
    shutil.copytree(settings.config_path().parent, config)
    (config / "tierline.yml").write_text((config / "tierline.yml").read_text().replace("rfm:", "rfmm:", 1))
    env = {**cli.airflow_environ(), "TIERLINE_CONFIG": str(config / "tierline.yml"),
           "TIERLINE_RETRY_DELAY_SECONDS": "1", "TIERLINE_ALERT_CONNECTIONS": ""}
    cli.ensure_airflow_db(env)
    started = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "dags", "test", "customer_tiering",
                           "2026-11-01T05:00:00+00:00", "-c", f'{{"landing": "{landing}"}}'],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rfmm: Extra inputs are not permitted" in out
    assert out.count("[DAG TEST] starting task_id=preflight") == 1  # one try: a permanent error is not retried
    assert "starting task_id=land_extracts" not in out
    assert seconds < 120
