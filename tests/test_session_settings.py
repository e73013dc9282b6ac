"""Every session the pipeline opens (psycopg, the loader's, dbt's, Great Expectations') runs with
the pipeline's session settings (warehouse.SESSION_OPTIONS: a killed client frees its locks) and
its tuning (warehouse.TUNING_OPTIONS: no JIT, 64 MB work_mem), read back from the server."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import sqlalchemy

from tierline import gates, load, warehouse

SETTINGS = ("jit", "work_mem", "client_connection_check_interval", "idle_in_transaction_session_timeout")
EXPECTED = {"jit": "off", "work_mem": "64MB", "client_connection_check_interval": "2s",
            "idle_in_transaction_session_timeout": "10min"}


def _read(conn) -> dict[str, str]:
    return {name: conn.execute(f"show {name}").fetchone()[0] for name in SETTINGS}


def test_psycopg_sessions_have_the_pipeline_settings(warehouse_url):
    with warehouse.connect(warehouse_url) as conn:
        assert _read(conn) == EXPECTED


def test_the_loaders_sessions_have_the_pipeline_settings(warehouse_url):
    # they were plain psycopg connections: no keepalives, no lock safety, JIT on
    conn = load._open(warehouse_url, "Asia/Shanghai")
    try:
        # the loader raises work_mem for its own hashing of whole files
        assert _read(conn) == {**EXPECTED, "work_mem": "256MB"}
        assert conn.info.get_parameters().get("keepalives") == "1"
    finally:
        conn.close()


def test_dbt_sessions_have_the_pipeline_settings(warehouse_url, monkeypatch):
    # dbt's psycopg2 sessions get them through libpq's PGOPTIONS (profiles.yml has no options)
    monkeypatch.setenv("PGOPTIONS", warehouse.dbt_env(warehouse_url)["PGOPTIONS"])
    with psycopg.connect(warehouse_url) as conn:
        assert _read(conn) == EXPECTED


def test_gx_datasources_have_the_pipeline_settings_and_their_schema(warehouse_url):
    engine = sqlalchemy.create_engine(gates.datasource_url(warehouse_url, "analytics"))
    try:
        with engine.connect() as conn:
            found = {name: conn.exec_driver_sql(f"show {name}").scalar() for name in SETTINGS}
            assert found == EXPECTED
            assert conn.exec_driver_sql("show search_path").scalar() == "analytics"
    finally:
        engine.dispose()


def test_a_warehouse_urls_own_options_override_the_tuning_but_not_the_safety(warehouse_url):
    options = quote("-c work_mem=128MB -c jit=on -c idle_in_transaction_session_timeout=0")
    url = f"{warehouse_url}{'&' if '?' in warehouse_url else '?'}options={options}"
    with warehouse.connect(url) as conn:
        assert _read(conn) == {**EXPECTED, "work_mem": "128MB", "jit": "on"}


def test_upkeep_commits_the_callers_work_and_yields_to_other_upkeep(warehouse_url):
    """warehouse.maintenance (ANALYZE of a table just written, the batch index's summary): the
    caller's transaction is committed first, and a table another session's upkeep holds is left
    to it after lock_timeout (False) instead of waiting; free, the work runs (True)."""
    with warehouse.connect(warehouse_url) as conn, warehouse.connect(warehouse_url, autocommit=True) as other:
        conn.execute("drop table if exists public.tl_upkeep; create table public.tl_upkeep (v int)")
        conn.commit()
        conn.execute("insert into public.tl_upkeep values (1), (2)")
        other.execute("begin; lock table public.tl_upkeep in share update exclusive mode")  # as autovacuum does
        assert warehouse.analyze(conn, "public", "tl_upkeep", lock_timeout=0.2) is False
        # the insert before it was committed, not rolled back with the upkeep
        assert other.execute("select count(*) from public.tl_upkeep").fetchone()[0] == 2
        other.execute("rollback")
        assert warehouse.analyze(conn, "public", "tl_upkeep", lock_timeout=0.2) is True
        assert conn.execute("select reltuples from pg_class where oid = 'public.tl_upkeep'::regclass").fetchone()[0] == 2
        conn.execute("drop table public.tl_upkeep")
        conn.commit()


def test_a_table_replaced_by_about_as_many_rows_keeps_its_statistics(warehouse_url):
    """A history or current table replaced whole after publish: analyzed when new or when its row
    count moved more than 10%, else left with the statistics it has (its last analysis stays)."""
    def last_analyzed(conn):
        return conn.execute("select pg_stat_get_last_analyze_time('public.tl_replaced'::regclass)").fetchone()[0]

    with warehouse.connect(warehouse_url) as conn:
        conn.execute("drop table if exists public.tl_replaced; create table public.tl_replaced (v int, w text)")
        conn.execute("insert into public.tl_replaced select g, g::text from generate_series(1, 1000) as g")
        assert warehouse.analyze(conn, "public", "tl_replaced", replaced_with=1000) is True
        first = last_analyzed(conn)
        assert first is not None, "a table without statistics was not analyzed"
        conn.execute("delete from public.tl_replaced")
        conn.execute("insert into public.tl_replaced select g, g::text from generate_series(1, 1050) as g")
        assert warehouse.analyze(conn, "public", "tl_replaced", replaced_with=1050) is True
        assert last_analyzed(conn) == first, "5% more rows: analyzed again"
        conn.execute("insert into public.tl_replaced select g, g::text from generate_series(1, 200) as g")
        assert warehouse.analyze(conn, "public", "tl_replaced", replaced_with=1250) is True
        assert last_analyzed(conn) > first, "25% more rows than the statistics know: not analyzed"
        assert conn.execute("select reltuples from pg_class where oid = 'public.tl_replaced'::regclass").fetchone()[0] == 1250
        conn.execute("drop table public.tl_replaced")
        conn.commit()
