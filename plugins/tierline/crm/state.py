"""The CRM integration's state in the warehouse (schema ``crm_sync``).

- ``record_state``: per customer, what the CRM holds for us: the checksum of the values last
  planned, the CRM id, the values we last wrote or confirmed (``synced_values``), the last known
  CRM values of our fields (``crm_values``), protected fields a person changed since our last
  write of them (``person_edits``), the fields of the last write and the CRM's ``Modified_Time``
  of it (from the read-back). Writes change it only once the CRM confirmed them.
- ``outbox``: the planned writes not yet confirmed or dead-lettered; a push drains it.
- ``dead_letters``: records the CRM (or the value mapping) refused, with the error and attempts.
- ``conflicts``: a person's edit the sync did not overwrite; open while ``resolved_at`` is null.
- ``reconciliation``: fields whose CRM value differed from what we wrote, per run.
- ``runs``: one row per sync run with its result.
- ``crm_records``: every CRM record the sync has read, by id, with the value it is matched on
  (``push.match``): how a published customer finds an existing record without a CRM call.
- ``sync_watermarks`` / ``pull_watermarks``: how far the sync and the pull have read the CRM.
- ``provider``: the CRM this state belongs to (one row); another provider is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from tierline.errors import ConfigError

SCHEMA = "crm_sync"

DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {SCHEMA}.record_state (
    customer_id text primary key,
    crm_id text,
    checksum text not null,
    synced_values jsonb not null default '{{}}',
    crm_values jsonb not null default '{{}}',
    person_edits jsonb not null default '{{}}',
    last_written jsonb,
    last_run_id text,
    synced_at timestamptz,
    crm_modified_at timestamptz,
    updated_at timestamptz not null default now()
);
create table if not exists {SCHEMA}.outbox (
    customer_id text primary key,
    run_id text not null,
    action text not null check (action in ('create', 'update')),
    crm_id text,
    payload jsonb not null,
    written jsonb not null,
    previous jsonb not null,
    confirmed jsonb not null,
    crm_values jsonb not null,
    checksum text not null,
    planned_at timestamptz not null default now()
);
create table if not exists {SCHEMA}.dead_letters (
    customer_id text primary key,
    payload jsonb not null,
    checksum text,
    error_code text,
    message text,
    field text,
    attempts integer not null default 1,
    first_failed_at timestamptz not null default now(),
    last_failed_at timestamptz not null default now(),
    last_run_id text
);
create table if not exists {SCHEMA}.conflicts (
    conflict_id bigserial primary key,
    customer_id text not null,
    field text not null,
    our_value jsonb,
    their_value jsonb,
    their_editor text,
    their_editor_id text,
    their_modified_at timestamptz,
    detected_at timestamptz not null default now(),
    run_id text,
    resolved_at timestamptz,
    resolution text
);
create unique index if not exists conflicts_open on {SCHEMA}.conflicts (customer_id, field)
    where resolved_at is null;
create table if not exists {SCHEMA}.reconciliation (
    run_id text not null,
    customer_id text not null,
    field text not null,
    expected jsonb,
    actual jsonb,
    crm_modified_by text,
    crm_modified_at timestamptz,
    detected_at timestamptz not null default now(),
    primary key (run_id, customer_id, field)
);
create table if not exists {SCHEMA}.runs (
    run_id text primary key,
    module text not null,
    mode text not null,
    status text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    read_back_since timestamptz,
    result jsonb not null default '{{}}'
);
create table if not exists {SCHEMA}.sync_watermarks (
    module text primary key,
    crm_time timestamptz,
    fields_hash text not null,
    updated_at timestamptz not null default now()
);
create table if not exists {SCHEMA}.crm_records (
    module text not null,
    crm_id text not null,
    match_value text,
    crm_modified_at timestamptz,
    primary key (module, crm_id)
);
create index if not exists crm_records_by_value on {SCHEMA}.crm_records (module, match_value);
create table if not exists {SCHEMA}.provider (
    provider text primary key,
    claimed_at timestamptz not null default now()
);
create table if not exists {SCHEMA}.pull_watermarks (
    module text primary key,
    watermark timestamptz not null,
    ids_at_watermark jsonb not null default '[]',
    fields_hash text not null,
    updated_at timestamptz not null default now()
);
"""

# Rows go to the server as one JSON array per statement: one round trip for a batch of any size.
_CHUNK = 5000


def ensure(conn, provider: str) -> None:
    """Create the state tables; refuse state that belongs to another CRM provider. A sync that
    runs as a login of the ``tierline_crm_sync`` group (README, "Roles") may not create anything:
    it uses the tables the pipeline's role created and granted it (tierline.access)."""
    with conn.transaction():
        # Two first runs at once must not race on "create ... if not exists".
        conn.execute("select pg_advisory_xact_lock(hashtext('tierline.crm_sync.ddl'))")
        may_create = conn.execute(
            "select coalesce((select has_schema_privilege(oid, 'CREATE') from pg_namespace where nspname = %s), "
            "has_database_privilege(current_database(), 'CREATE'))", (SCHEMA,)).fetchone()[0]
        if may_create:
            conn.execute(DDL)
        conn.execute(f"insert into {SCHEMA}.provider (provider) select %s "
                     f"where not exists (select from {SCHEMA}.provider)", (provider,))
        owner = conn.execute(f"select provider from {SCHEMA}.provider").fetchone()[0]
    if owner != provider:
        raise ConfigError(f"schema {SCHEMA} holds the sync state of a {owner} CRM and the configuration now names "
                          f"{provider} (config/crm.yml provider): record ids, watermarks and conflicts do not carry "
                          f"over; to start afresh with {provider}, drop schema {SCHEMA} cascade")


# One encoder, built once: json.dumps with options builds a new one per call, which dominates a
# plan of 100,000 records.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_SORTED_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, sort_keys=True)


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    return (_SORTED_ENCODER if sort_keys else _ENCODER).encode(value)


def bulk(conn, statement: str, rows: Iterable[Mapping[str, Any]], **params: Any) -> int:
    """Run ``statement`` (which reads ``jsonb_to_recordset(%(rows)s::jsonb)``) over ``rows`` in chunks."""
    done = 0
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == _CHUNK:
            done += conn.execute(statement, {**params, "rows": dumps(chunk)}).rowcount
            chunk = []
    if chunk:
        done += conn.execute(statement, {**params, "rows": dumps(chunk)}).rowcount
    return done


class Busy(RuntimeError):
    """Another sync of the same module holds the lock."""


class run_lock:
    """A session-level advisory lock per module: one sync step at a time, across processes."""

    def __init__(self, conn, module: str):
        self._conn = conn
        self._key = f"tierline.crm_sync.{module}"

    def __enter__(self):
        got = self._conn.execute("select pg_try_advisory_lock(hashtext(%s))", (self._key,)).fetchone()[0]
        if not got:
            raise Busy(f"another CRM sync of this module is running (advisory lock {self._key!r}); try again later")
        return self

    def __exit__(self, *exc_info):
        if not self._conn.closed:
            self._conn.execute("select pg_advisory_unlock(hashtext(%s))", (self._key,))
