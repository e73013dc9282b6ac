"""Write-audit-publish: copy the audited build tables into the published schema in one transaction.

dbt writes the marts into the run's own build schema (write); the marts gate validates them
there and records what it validated — relation, row count and a version per table (its storage,
columns and the transactions that wrote its rows) —
while it holds them read-only (audit, ``audit``/``record_audit``); this step makes them visible
to readers (publish), after proving, inside its transaction and with the build tables locked,
that they are still exactly what was audited and that no other publication happened since the
run started building (``PublishRefused`` otherwise).

Snapshot tables keep one slice per ``as_of_date``: the slice of the run's date is replaced, other
dates are untouched. History tables are replaced whole when the run built them whole, and
changed by key (``customer_id``, ``valid_from``) when it built their change since the
publication (a run dated after every publication: ``runs.recorded_history_changes``). Current
tables (``dim_customer``, and ``customer_contact`` in the PII schema) are replaced whole by a run
of the latest published date or a later one; a re-run of an earlier date leaves them. Roles, grants and row-level security
(``tierline.access``) are applied before the data transaction, every time. Readers are never blocked: the data
transaction only deletes and inserts rows (``ROW EXCLUSIVE``, which no reader's lock conflicts
with), so a reader sees the previous publication or this one, never a mix, and never waits.
Schema changes — creating a table or its ``_latest`` view the first time, adding a column a new
release builds — happen before it (``prepare``), once, each in its own short transaction with a
short ``lock_timeout`` and bounded retries, so that publish never waits on a reader for long and
never queues readers behind it for more than that timeout.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg import sql

from tierline import access as access_module
from tierline import batches, warehouse
from tierline.assets import (
    ALL_PUBLISHED_TABLES,
    CURRENT_TABLES,
    HISTORY_TABLES,
    RETIRED_COLUMNS,
    SNAPSHOT_TABLES,
    published_schema,
)
from tierline.errors import PublishRefused

ident = sql.Identifier
DDL_ATTEMPTS = 5


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


def primary_key(conn, schema: str, table: str) -> list[str]:
    """The primary key of a built table: the model's ``primary_key`` constraint (its YAML is the one
    definition of a published key; dbt creates it with the enforced contract)."""
    rows = conn.execute(
        "select a.attname from pg_index i join pg_class c on c.oid = i.indrelid "
        "join pg_namespace n on n.oid = c.relnamespace "
        "join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey) "
        "where i.indisprimary and n.nspname = %s and c.relname = %s "
        "order by array_position(i.indkey::int2[], a.attnum)", (schema, table)).fetchall()
    return [r[0] for r in rows]


def _ddl(conn, lock_timeout: float, statements) -> None:
    """Run schema changes in one short transaction; a lock a reader holds makes it give up after
    ``lock_timeout`` (so readers queue behind it no longer than that) and try again, a few times,
    before the lock timeout surfaces as a transient error (the task is retried)."""
    _idle(conn)
    for attempt in range(DDL_ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
                for statement in statements:
                    conn.execute(statement)
            return
        except psycopg.errors.LockNotAvailable:
            if attempt == DDL_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)


def _idle(conn) -> None:
    """End the implicit transaction that catalog reads opened, so that what follows is a
    transaction of its own (not a savepoint that keeps its locks until the caller commits)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()


def _view(schema: str, table: str) -> sql.Composable:
    # security_invoker (PostgreSQL 15): the table's row-level security applies to the reader of the
    # view, not to its owner (who bypasses it)
    return sql.SQL(
        "create or replace view {}.{} with (security_invoker = true) as select * from {}.{} "
        "where as_of_date = (select max(as_of_date) from {}.publication_log)").format(
            ident(schema), ident(f"{table}_latest"), ident(schema), ident(table), ident(schema))


def ensure_log(conn, schema: str) -> None:
    if conn.execute("select to_regclass(%s)", (f"{schema}.publication_log",)).fetchone()[0]:
        return
    _idle(conn)
    with conn.transaction():
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


def prepare(conn, *, build_schema: str, schema: str, lock_timeout: float = 5) -> None:
    """Create what does not exist yet (published tables, empty, and their ``_latest`` views), add
    the columns a build has that the published table lacks and drop the ones a release retired
    (``RETIRED_COLUMNS``); change nothing otherwise."""
    ensure_log(conn, schema)
    for table in ALL_PUBLISHED_TABLES:
        build_columns = _columns(conn, build_schema, table)
        if not build_columns:
            raise PublishRefused(f"{build_schema}.{table} does not exist: the marts layer did not build it")
        target = published_schema(table, schema)
        published = _columns(conn, target, table)
        snapshot = table in SNAPSHOT_TABLES
        statements = []
        if not published:
            statements.append(sql.SQL("create schema if not exists {}").format(ident(target)))
            statements.append(sql.SQL("create table {}.{} (like {}.{} including defaults)").format(
                ident(target), ident(table), ident(build_schema), ident(table)))
            keys = primary_key(conn, build_schema, table)
            if snapshot and not keys:
                raise PublishRefused(f"{build_schema}.{table} has no primary key: its model must declare a "
                                     "primary_key constraint (dbt_project/models/marts)")
            if keys:
                statements.append(sql.SQL("alter table {}.{} add primary key ({})").format(
                    ident(target), ident(table), sql.SQL(", ").join(ident(k) for k in keys)))
        else:
            retired = [c for c in published if c not in build_columns and c in RETIRED_COLUMNS.get(table, ())]
            dropped = [c for c in published if c not in build_columns and c not in retired]
            if dropped:
                raise PublishRefused(
                    f"{target}.{table}: the build no longer has column(s) {', '.join(dropped)}; removing a "
                    "published column breaks readers, so drop it deliberately (assets.RETIRED_COLUMNS), not by a run")
            if retired and snapshot:
                # the view's `select *` names the column: it goes first and is created again below
                statements.append(sql.SQL("drop view if exists {}.{}").format(ident(target), ident(f"{table}_latest")))
            for column in retired:
                statements.append(sql.SQL("alter table {}.{} drop column {}").format(
                    ident(target), ident(table), ident(column)))
            for column in (c for c in build_columns if c not in published):
                data_type = conn.execute(
                    "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = %s::regclass "
                    "and attname = %s", (f"{build_schema}.{table}", column)).fetchone()[0]
                statements.append(sql.SQL("alter table {}.{} add column {} {}").format(
                    ident(target), ident(table), ident(column), sql.SQL(data_type)))
        columns_change = bool(statements)
        if snapshot and not conn.execute("select to_regclass(%s)", (f'"{schema}"."{table}__as_of_date"',)).fetchone()[0]:
            # publish replaces one date's slice and the marts read the slices they compare with,
            # which would otherwise scan every snapshot published so far (SHARE: readers go on)
            statements.append(sql.SQL("create index if not exists {} on {}.{} (as_of_date)").format(
                ident(f"{table}__as_of_date"), ident(schema), ident(table)))
        has_view, invoker = conn.execute(
            "select c.oid is not null, coalesce('security_invoker=true' = any(c.reloptions), false) "
            "from (select to_regclass(%s) as oid) as v left join pg_class c on c.oid = v.oid",
            (f"{schema}.{table}_latest",)).fetchone()
        if snapshot and (columns_change or not has_view):
            # the view's `select *` is expanded when it is created: recreate it only when columns change
            statements.append(_view(schema, table))
        elif snapshot and not invoker:  # a view an earlier release created
            statements.append(sql.SQL("alter view {}.{} set (security_invoker = true)").format(
                ident(schema), ident(f"{table}_latest")))
        if statements:
            _ddl(conn, lock_timeout, statements)
        described = _comments(conn, build_schema, table)
        relations = [("table", table), ("view", f"{table}_latest")] if snapshot else [("table", table)]
        statements = [statement for kind, relation in relations for statement in
                      _comment_changes(target, kind, relation, described, _comments(conn, target, relation))]
        if statements:
            _ddl(conn, lock_timeout, statements)
    _idle(conn)


def _comments(conn, schema: str, relation: str) -> dict[str | None, str | None]:
    """A relation's comment (key None) and its columns' comments; empty when it does not exist.
    The build tables carry the dbt descriptions (dbt's persist_docs on the marts)."""
    oid = conn.execute("select to_regclass(%s)::oid", (f'"{schema}"."{relation}"',)).fetchone()[0]
    if oid is None:
        return {}
    rows = conn.execute(
        "select null, obj_description(%(oid)s, 'pg_class') union all "
        "select attname::text, col_description(attrelid, attnum) from pg_attribute "
        "where attrelid = %(oid)s and attnum > 0 and not attisdropped", {"oid": oid}).fetchall()
    return dict(rows)


def _comment_changes(schema: str, kind: str, relation: str, described: dict, current: dict) -> list[sql.Composable]:
    """``comment on`` statements that make a published relation carry the build's descriptions.

    Set in ``prepare``, before the data transaction, and only where they differ (a steady run
    changes none): ``comment on`` takes SHARE UPDATE EXCLUSIVE, which no reader's lock conflicts
    with, but it is DDL and waits under the same short lock timeout as the other schema changes."""
    changes = []
    for column, text in described.items():
        if column not in current or current[column] == text:
            continue
        target = (sql.SQL("column {}.{}.{}").format(ident(schema), ident(relation), ident(column)) if column
                  else sql.SQL("{} {}.{}").format(sql.SQL(kind), ident(schema), ident(relation)))
        changes.append(sql.SQL("comment on {} is {}").format(target, sql.Literal(text)))
    return changes


def publication_state(conn, schema: str) -> str:
    """A digest of the publication log: changes whenever any run publishes (no log = empty log)."""
    if not conn.execute("select to_regclass(%s)", (f"{schema}.publication_log",)).fetchone()[0]:
        return "0:"
    return conn.execute(sql.SQL(
        "select count(*) || ':' || coalesce(md5(string_agg(run_id || '|' || as_of_date || '|' || published_at, ',' "
        "order by as_of_date, run_id)), '') from {}.publication_log").format(ident(schema))).fetchone()[0]


def published_rows(conn, schema: str, run_id: str, as_of: date) -> dict[str, int] | None:
    """The row counts this run published for this date, or None if it has not published it."""
    if not conn.execute("select to_regclass(%s)", (f"{schema}.publication_log",)).fetchone()[0]:
        return None
    row = conn.execute(sql.SQL("select row_counts from {}.publication_log where run_id = %s and as_of_date = %s")
                       .format(ident(schema)), (run_id, as_of)).fetchone()
    return row[0] if row else None


def audit(conn, build_schema: str, as_of: date) -> dict[str, tuple[int, int, str]]:
    """Lock the build tables read-only for the rest of the caller's transaction and return, per
    table, (relation oid, rows, version). The version is a digest of the table's storage (its
    relfilenode: a truncate or a rewrite gives it another), its columns, and the sum of a 64-bit
    hash of every row version's creating transaction (``xmin``). Writers of the table had ended
    before the lock was granted, so whatever writes it afterwards (an insert, an update, which
    writes a new row version, or a delete, which changes the count) is another transaction and
    moves the version. It reads no row's contents: 0.15 s per million ``customer_tier``-shaped rows,
    where a checksum of every row's text took 1.9 s (docs/decisions.md)."""
    tables = sql.SQL(", ").join(sql.SQL("{}.{}").format(ident(build_schema), ident(t)) for t in ALL_PUBLISHED_TABLES)
    conn.execute(sql.SQL("lock table {} in share mode").format(tables))
    result = {}
    for table in ALL_PUBLISHED_TABLES:
        relation = sql.SQL("{}.{}").format(ident(build_schema), ident(table)).as_string(conn)
        oid, rows, version = conn.execute(sql.SQL(
            "select r.oid, s.row_count, md5(concat_ws('|', pg_relation_filenode(r.oid), ("
            "  select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum)"
            "  from pg_attribute as a where a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped), s.xmins)) "
            "from (select %s::regclass::oid as oid) as r, ("
            "  select count(*) as row_count, coalesce(sum(hashint8extended(t.xmin::text::bigint, 0)), 0) as xmins"
            "  from {}.{} as t) as s"
        ).format(ident(build_schema), ident(table)), (relation,)).fetchone()
        result[table] = (int(oid), rows, version)
    return result


def record_audit(conn, run_id: str, as_of: date, audited: dict[str, tuple[int, int, str]]) -> None:
    conn.execute("delete from tierline.audits where run_id = %s and as_of_date = %s", (run_id, as_of))
    with conn.cursor() as cur:
        cur.executemany(
            "insert into tierline.audits (run_id, as_of_date, relation, relation_oid, row_count, version) "
            "values (%s, %s, %s, %s, %s, %s)",
            [(run_id, as_of, table, oid, rows, version) for table, (oid, rows, version) in audited.items()])


def _recorded_audit(conn, run_id: str, as_of: date) -> dict[str, tuple[int, int, str]]:
    rows = conn.execute("select relation, relation_oid, row_count, version from tierline.audits "
                        "where run_id = %s and as_of_date = %s", (run_id, as_of)).fetchall()
    return {relation: (int(oid), count, version) for relation, oid, count, version in rows}


def _verify(conn, *, build_schema: str, schema: str, as_of: date, run_id: str, expected_state: str) -> dict:
    recorded = _recorded_audit(conn, run_id, as_of)
    if not recorded:
        raise PublishRefused(f"run {run_id} of {as_of}: the marts gate recorded no audit for this run and date, "
                             "so nothing it could publish was audited; re-run the date")
    current = audit(conn, build_schema, as_of)
    for table in ALL_PUBLISHED_TABLES:
        if recorded.get(table) != current[table]:
            was, now = recorded.get(table), current[table]
            raise PublishRefused(
                f"{build_schema}.{table} is not what gate_marts audited for run {run_id} of {as_of} "
                f"(audited: {was[1] if was else 'nothing'} rows, now {now[1]} rows"
                f"{', written since' if was and was[1] == now[1] else ''}); nothing was published, re-run the date")
    state = publication_state(conn, schema)
    if expected_state is None:
        raise PublishRefused(f"run {run_id} of {as_of}: no record of the publication this run started building "
                             "from (dbt_staging records it); nothing was published, re-run the date")
    if state != expected_state:
        latest = conn.execute(sql.SQL("select run_id, as_of_date, published_at from {}.publication_log "
                                      "order by published_at desc limit 1").format(ident(schema))).fetchone()
        raise PublishRefused(
            f"run {run_id} of {as_of}: {schema} changed after this run started building"
            + (f" (latest: run {latest[0]} of {latest[1]} at {latest[2]:%Y-%m-%d %H:%M:%S})" if latest else "")
            + ", so its history tables and previous evaluations are stale; nothing was published, re-run the date")
    return current


def analyze(conn, publication: Publication, schema: str, lock_timeout: float = 5) -> None:
    """Refresh the statistics of the tables a committed publication wrote (warehouse.analyze): a
    snapshot table's new date was estimated at ~3 rows, and the run report's join of two
    100,000-row slices ran as a nested loop for minutes. A snapshot table gained a date: only
    that column's statistics (2.1 s for every column of every table on a 5,000-customer day). A
    history or current table was replaced whole: analyzed only when new or when its row count
    moved more than 10% (2.4 s of a 100k-customer day's publish otherwise, for the same
    customers' statistics again)."""
    for table in publication.rows:
        snapshot = table in SNAPSHOT_TABLES
        warehouse.analyze(conn, published_schema(table, schema), table, lock_timeout,
                          columns=("as_of_date",) if snapshot else (),
                          replaced_with=None if snapshot else publication.rows[table])


def _apply_history_change(conn, *, build_schema: str, target: str, table: str, column_list) -> tuple[int, int]:
    """Apply a history table's change (the rows the run adds or alters, keyed by customer and
    ``valid_from``) to its publication; refuse when a customer it names would not then have
    exactly one current row. Returns (rows written, rows the published table holds now)."""
    published, built = (sql.SQL("{}.{}").format(ident(target), ident(table)),
                        sql.SQL("{}.{}").format(ident(build_schema), ident(table)))
    conn.execute(sql.SQL("delete from {} as p where (p.customer_id, p.valid_from) in "
                         "(select customer_id, valid_from from {})").format(published, built))
    written = conn.execute(sql.SQL("insert into {} ({}) select {} from {}").format(
        published, column_list, column_list, built)).rowcount
    broken = conn.execute(sql.SQL(
        "select count(*) from (select customer_id from {} where customer_id in (select customer_id from {}) "
        "group by customer_id having count(*) filter (where is_current) <> 1) as broken").format(
            published, built)).fetchone()[0]
    if broken:
        raise PublishRefused(f"{target}.{table}: applying {build_schema}.{table} (this run's change to it) would leave "
                             f"{broken} customer(s) without exactly one current row; nothing was published")
    return written, conn.execute(sql.SQL("select count(*) from {}").format(published)).fetchone()[0]


def publish(conn, *, build_schema: str, schema: str, as_of: date, run_id: str, tier_spec_version: str,
            tier_spec_hash: str, expected_state: str | None, lock_timeout: float = 5,
            in_transaction=None, access=None, history_changes=()) -> Publication:
    """Publish the audited build (see the module docstring); ``in_transaction`` runs last inside
    the publish transaction (the run's bookkeeping, committed with the data or not at all).
    ``access`` (config ``access``): the roles and grants (tierline.access), applied before the
    data is, so that a table published for the first time is covered from its first rows.
    ``history_changes``: the history tables the run built as their change (the others whole)."""
    prepare(conn, build_schema=build_schema, schema=schema, lock_timeout=lock_timeout)
    if access is not None:
        access_module.apply(conn, access, schema, ddl=lambda statements: _ddl(conn, lock_timeout, statements))
    rows: dict[str, int] = {}
    with conn.transaction():
        # deletes and inserts conflict with no reader; this only bounds a wait on another writer
        conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
        audited = _verify(conn, build_schema=build_schema, schema=schema, as_of=as_of, run_id=run_id,
                          expected_state=expected_state)
        latest = conn.execute(sql.SQL("select max(as_of_date) from {}.publication_log").format(ident(schema))).fetchone()[0]
        for table in ALL_PUBLISHED_TABLES:
            if table in CURRENT_TABLES and latest is not None and as_of < latest:
                continue  # a re-run of an earlier date: the current state stays the latest date's
            snapshot = table in SNAPSHOT_TABLES
            target = published_schema(table, schema)
            column_list = sql.SQL(", ").join(ident(c) for c in _columns(conn, build_schema, table))
            if table in HISTORY_TABLES and table in history_changes:
                # every audited row is written (the build is locked since _verify counted it)
                _written, rows[table] = _apply_history_change(conn, build_schema=build_schema, target=target,
                                                               table=table, column_list=column_list)
                continue
            # a snapshot table's build holds only the run's date: any other row is refused below
            only_date = sql.SQL(" where as_of_date = %(d)s" if snapshot else "")
            conn.execute(sql.SQL("delete from {}.{}{}").format(ident(target), ident(table), only_date), {"d": as_of})
            rows[table] = conn.execute(sql.SQL("insert into {}.{} ({}) select {} from {}.{}{}").format(
                ident(target), ident(table), column_list, column_list, ident(build_schema), ident(table), only_date),
                {"d": as_of}).rowcount
            if rows[table] != audited[table][1]:
                raise PublishRefused(f"{build_schema}.{table}: {audited[table][1] - rows[table]} of its "
                                     f"{audited[table][1]} audited rows are not of {as_of}; nothing was published")
        conn.execute(sql.SQL(
            "insert into {}.publication_log (run_id, as_of_date, tier_spec_version, tier_spec_hash, row_counts) "
            "values (%s, %s, %s, %s, %s::jsonb) on conflict (run_id, as_of_date) do update set "
            "published_at = now(), row_counts = excluded.row_counts").format(ident(schema)),
            (run_id, as_of, tier_spec_version, tier_spec_hash, json.dumps(rows)))
        batches.promote(conn, run_id=run_id, as_of=as_of)
        if in_transaction is not None:
            in_transaction()
    return Publication(run_id, as_of, rows)
