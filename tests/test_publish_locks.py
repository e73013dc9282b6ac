"""Publish never waits on a reader for long, and a killed pipeline process holds no lock
(issue 8, item 3). The reader loop during real publishes is in test_pipeline_e2e."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tierline import publish, warehouse
from tierline.assets import ALL_PUBLISHED_TABLES
from tierline.errors import PublishRefused, is_transient

ROOT = Path(__file__).resolve().parents[1]


def _build_tables(conn, schema: str) -> None:
    conn.execute(f"create schema {schema}")
    for table in ALL_PUBLISHED_TABLES:  # as dbt builds them: with the model's primary key
        conn.execute(f"create table {schema}.{table} (customer_id text, as_of_date date, "
                     "primary key (customer_id, as_of_date))")


def test_a_new_column_waits_briefly_for_an_idle_reader_then_gives_up_as_transient(warehouse_url):
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        _build_tables(conn, "build")
        publish.prepare(conn, build_schema="build", schema="analytics")
        conn.execute("insert into analytics.publication_log (run_id, as_of_date, row_counts) "
                     "values ('r', '2026-11-01', '{}')")
        conn.execute("alter table build.customer_tier add column tier_note text")

    idle = psycopg.connect(warehouse_url)  # a BI session idle inside a transaction
    idle.execute("select count(*) from analytics.customer_tier_latest").fetchone()
    waits = []

    def reader():
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute("set lock_timeout = '2s'")
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                started = time.monotonic()
                conn.execute("select count(*) from analytics.customer_tier_latest").fetchone()
                waits.append(time.monotonic() - started)
                time.sleep(0.05)

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.monotonic()
    try:
        with warehouse.connect(warehouse_url) as conn:
            with pytest.raises(psycopg.errors.LockNotAvailable) as refused:
                publish.prepare(conn, build_schema="build", schema="analytics", lock_timeout=0.5)
    finally:
        thread.join()
    took = time.monotonic() - started
    assert is_transient(refused.value)
    assert took < 15, f"the schema change waited {took:.1f} s on an idle reader"
    # readers queued behind the waiting ALTER for at most its lock timeout, never failed
    assert waits and max(waits) < 1.5

    idle.rollback()
    idle.close()
    with warehouse.connect(warehouse_url) as conn:
        publish.prepare(conn, build_schema="build", schema="analytics", lock_timeout=0.5)
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'analytics' "
            "and table_name = 'customer_tier_latest'")]
    assert "tier_note" in columns  # the view follows the table, re-created only because a column came


def test_descriptions_reach_published_tables_and_views_as_comments_without_waiting_for_readers(warehouse_url):
    """dbt's descriptions (persist_docs on the build) are copied by prepare, outside the data
    transaction: COMMENT ON does not conflict with a reader idle in a transaction (issue 13)."""
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        _build_tables(conn, "build")
        conn.execute("comment on table build.customer_tier is 'One row per customer and date'")
        conn.execute("comment on column build.customer_tier.customer_id is 'CRM customer id, 客户编号'")
        publish.prepare(conn, build_schema="build", schema="analytics")
        conn.execute("insert into analytics.publication_log (run_id, as_of_date, row_counts) "
                     "values ('r', '2026-11-01', '{}')")
        conn.execute("comment on column build.customer_tier.customer_id is 'changed: it''s the CRM id'")

    idle = psycopg.connect(warehouse_url)  # a BI session idle inside a transaction
    idle.execute("select count(*) from analytics.customer_tier_latest").fetchone()
    try:
        started = time.monotonic()
        with warehouse.connect(warehouse_url) as conn:
            publish.prepare(conn, build_schema="build", schema="analytics", lock_timeout=0.5)
        took = time.monotonic() - started
    finally:
        idle.rollback()
        idle.close()
    assert took < 2, f"copying comments waited {took:.1f} s on an idle reader"
    with warehouse.connect(warehouse_url) as conn:
        comments = dict(conn.execute(
            "select c.relname || coalesce('.' || a.attname, ''), coalesce(col_description(c.oid, a.attnum), "
            "obj_description(c.oid, 'pg_class')) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "left join pg_attribute a on a.attrelid = c.oid and a.attname = 'customer_id' "
            "where n.nspname = 'analytics' and c.relname in ('customer_tier', 'customer_tier_latest')").fetchall())
        table_comment = conn.execute("select obj_description('analytics.customer_tier'::regclass, 'pg_class')"
                                     ).fetchone()[0]
    assert comments == {"customer_tier.customer_id": "changed: it's the CRM id",
                        "customer_tier_latest.customer_id": "changed: it's the CRM id"}
    assert table_comment == "One row per customer and date"


def test_a_killed_pipeline_process_leaves_no_backend_holding_locks(warehouse_url):
    """kill -9 of a pipeline process in the middle of a statement, holding a lock readers need:
    the server notices within seconds (client_connection_check_interval) and frees the lock."""
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("create table victim (id int)")
    code = (
        "import sys, time\n"
        "from tierline import warehouse\n"
        "with warehouse.connect(sys.argv[1]) as conn:\n"
        "    conn.execute('lock table victim in access exclusive mode')\n"
        "    print(conn.info.backend_pid, flush=True)\n"
        "    conn.execute('select pg_sleep(120)')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, warehouse_url], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")})
    backend = int(process.stdout.readline())
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = time.monotonic()
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        while conn.execute("select count(*) from pg_stat_activity where pid = %s", (backend,)).fetchone()[0]:
            assert time.monotonic() - killed_at < 10, "the killed client's backend still runs and holds its lock"
            time.sleep(0.2)
        conn.execute("set lock_timeout = '2s'")
        assert conn.execute("select count(*) from victim").fetchone()[0] == 0


def test_a_published_key_is_the_primary_key_the_model_declares(warehouse_url):
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        for schema, key in (("keyed", ", primary key (model, as_of_date)"), ("unkeyed", "")):
            conn.execute(f"create schema {schema}")
            for table in ALL_PUBLISHED_TABLES:
                conn.execute(f"create table {schema}.{table} (model text, as_of_date date, customer_id text{key})")
        publish.prepare(conn, build_schema="keyed", schema="analytics")
        assert publish.primary_key(conn, "analytics", "clv_model_fit") == ["model", "as_of_date"]
        with pytest.raises(PublishRefused, match="primary_key constraint"):
            publish.prepare(conn, build_schema="unkeyed", schema="elsewhere")


def test_a_history_change_is_applied_by_key_and_refused_when_a_customer_would_have_two_current_rows(warehouse_url):
    """A run dated after every publication publishes the change of a history table (publish's
    ``history_changes``): its rows replace the published rows with their keys. A change that
    would leave a customer with no or two current rows (a model that forgot to close a stretch)
    is refused, and nothing of it stays."""
    columns = "customer_id text, tier text, valid_from date, valid_to date, is_current boolean"
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("create schema build")
        conn.execute("create schema analytics")
        for schema in ("build", "analytics"):
            conn.execute(f"create table {schema}.tier_history ({columns})")
        conn.execute("insert into analytics.tier_history values ('a', 'vip', '2026-10-01', '2026-11-01', false), "
                     "('a', 'key', '2026-11-01', null, true), ('b', 'key', '2026-10-01', null, true)")
        # b moves up on 2026-11-03: its open stretch closed, a new one opened
        conn.execute("insert into build.tier_history values ('b', 'key', '2026-10-01', '2026-11-03', false), "
                     "('b', 'vip', '2026-11-03', null, true)")
        column_list = sql.SQL("customer_id, tier, valid_from, valid_to, is_current")
        with conn.transaction():
            written, total = publish._apply_history_change(conn, build_schema="build", target="analytics",
                                                           table="tier_history", column_list=column_list)
        assert (written, total) == (2, 4)
        assert conn.execute("select customer_id, tier, valid_to, is_current from analytics.tier_history "
                            "order by 1, valid_from").fetchall() == [
            ("a", "vip", date(2026, 11, 1), False), ("a", "key", None, True),
            ("b", "key", date(2026, 11, 3), False), ("b", "vip", None, True)]
        # a change that opens a stretch for a without closing its open one
        conn.execute("truncate build.tier_history")
        conn.execute("insert into build.tier_history values ('a', 'strategic', '2026-11-04', null, true)")
        with pytest.raises(PublishRefused, match="1 customer"):
            with conn.transaction():
                publish._apply_history_change(conn, build_schema="build", target="analytics",
                                              table="tier_history", column_list=column_list)
        assert conn.execute("select count(*) from analytics.tier_history").fetchone()[0] == 4
