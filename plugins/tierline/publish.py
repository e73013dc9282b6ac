"""Write-audit-publish: copy the audited build tables into the published schema in one transaction.

dbt writes the marts into the build schema (write); the marts gate validates them there (audit);
this step makes them visible to readers (publish). Snapshot tables keep one slice per
``as_of_date``: the slice of the run's date is replaced, other dates are untouched. History tables
are replaced whole. Everything happens in a single transaction, so a reader sees either the
previous publication or this one, never a mix, and a run that fails before this step changes
nothing a reader can see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from psycopg import sql

from tierline import batches
from tierline.assets import PUBLISHED_TABLES, SNAPSHOT_KEYS, SNAPSHOT_TABLES


@dataclass
class Publication:
    run_id: str
    as_of_date: date
    rows: dict[str, int]


def _columns(conn, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
        "order by ordinal_position", (schema, table)).fetchall()
    return [r[0] for r in rows]


def _ensure_date_index(conn, schema: str, table: str) -> None:
    """Index a snapshot table by date: publish replaces one date's slice and the marts read the
    slices they compare with, which would otherwise scan every snapshot published so far."""
    index = f"{table}__as_of_date"
    if conn.execute("select to_regclass(%s)", (f'"{schema}"."{index}"',)).fetchone()[0] is None:
        conn.execute(sql.SQL("create index if not exists {} on {}.{} (as_of_date)").format(
            sql.Identifier(index), sql.Identifier(schema), sql.Identifier(table)))


def _ensure_table(conn, schema: str, build_schema: str, table: str, key: tuple[str, ...] | None) -> list[str]:
    """Create the published table from the build table, or add the build's new columns to it."""
    ident = sql.Identifier
    if key and "as_of_date" in key and _columns(conn, schema, table):
        _ensure_date_index(conn, schema, table)
    build_columns = _columns(conn, build_schema, table)
    if not build_columns:
        raise RuntimeError(f"{build_schema}.{table} does not exist: the marts layer did not build it")
    published = _columns(conn, schema, table)
    if not published:
        conn.execute(sql.SQL("create table {}.{} (like {}.{} including defaults)").format(
            ident(schema), ident(table), ident(build_schema), ident(table)))
        if key:
            conn.execute(sql.SQL("alter table {}.{} add primary key ({})").format(
                ident(schema), ident(table), sql.SQL(", ").join(ident(k) for k in key)))
            if "as_of_date" in key:
                _ensure_date_index(conn, schema, table)
        return build_columns
    dropped = [c for c in published if c not in build_columns]
    if dropped:
        raise RuntimeError(
            f"{schema}.{table}: the build no longer has column(s) {', '.join(dropped)}; removing a published "
            "column breaks readers, so drop it deliberately (a migration), not by a run"
        )
    for column in build_columns:
        if column not in published:
            data_type = conn.execute(
                "select format_type(atttypid, atttypmod) from pg_attribute "
                "where attrelid = %s::regclass and attname = %s",
                (f"{build_schema}.{table}", column)).fetchone()[0]
            conn.execute(sql.SQL("alter table {}.{} add column {} {}").format(
                ident(schema), ident(table), ident(column), sql.SQL(data_type)))
    return build_columns


def ensure_log(conn, schema: str) -> None:
    ident = sql.Identifier
    conn.execute(sql.SQL("create schema if not exists {}").format(ident(schema)))
    conn.execute(sql.SQL(
        """
        create table if not exists {}.publication_log (
            run_id text not null, as_of_date date not null, published_at timestamptz not null default now(),
            tier_spec_version text, tier_spec_hash text, row_counts jsonb not null,
            primary key (run_id, as_of_date))
        """).format(ident(schema)))


def published_dates(conn, schema: str) -> dict:
    """``{as_of_date: run id of its latest publication}`` from the publication log (empty before the first)."""
    exists = conn.execute("select to_regclass(%s) is not null", (f"{schema}.publication_log",)).fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute(sql.SQL(
        "select distinct on (as_of_date) as_of_date, run_id from {}.publication_log "
        "order by as_of_date, published_at desc").format(sql.Identifier(schema))).fetchall()
    return dict(rows)


def prepare(conn, *, build_schema: str, schema: str) -> None:
    """Create the published schema and any published table that does not exist yet, empty."""
    with conn.transaction():
        ensure_log(conn, schema)
        for table in PUBLISHED_TABLES:
            if not _columns(conn, schema, table):
                _ensure_table(conn, schema, build_schema, table, _key(table))


def _key(table: str) -> tuple[str, ...] | None:
    return SNAPSHOT_KEYS.get(table)


def publish(conn, *, build_schema: str, schema: str, as_of: date, run_id: str, tier_spec_version: str,
            tier_spec_hash: str) -> Publication:
    ident = sql.Identifier
    rows: dict[str, int] = {}
    with conn.transaction():
        conn.execute("set local lock_timeout = '120s'")
        ensure_log(conn, schema)
        for table in PUBLISHED_TABLES:
            snapshot = table in SNAPSHOT_TABLES
            columns = _ensure_table(conn, schema, build_schema, table, _key(table))
            column_list = sql.SQL(", ").join(ident(c) for c in columns)
            if snapshot:
                conn.execute(sql.SQL("delete from {}.{} where as_of_date = %s").format(ident(schema), ident(table)),
                             (as_of,))
            else:
                conn.execute(sql.SQL("delete from {}.{}").format(ident(schema), ident(table)))
            rows[table] = conn.execute(sql.SQL("insert into {}.{} ({}) select {} from {}.{}").format(
                ident(schema), ident(table), column_list, column_list, ident(build_schema), ident(table))).rowcount
            if snapshot:
                conn.execute(sql.SQL(
                    "create or replace view {}.{} as select * from {}.{} "
                    "where as_of_date = (select max(as_of_date) from {}.publication_log)").format(
                        ident(schema), ident(f"{table}_latest"), ident(schema), ident(table), ident(schema)))
        conn.execute(sql.SQL(
            "insert into {}.publication_log (run_id, as_of_date, tier_spec_version, tier_spec_hash, row_counts) "
            "values (%s, %s, %s, %s, %s::jsonb) on conflict (run_id, as_of_date) do update set "
            "published_at = now(), row_counts = excluded.row_counts").format(ident(schema)),
            (run_id, as_of, tier_spec_version, tier_spec_hash, json.dumps(rows)))
        batches.promote(conn, run_id=run_id, as_of=as_of)
    return Publication(run_id, as_of, rows)
