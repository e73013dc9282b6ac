"""Run isolation: each run builds into its own schemas, and runs on one warehouse take turns.

**Build schemas.** A run's staging, intermediate and marts relations live in schemas named from
the run: ``<runs.build_prefix>_<YYYYMMDD>_<8 hex of sha1(run id)>_<layer>`` (``build_schemas``;
``RunContext.schemas`` is the one place that hands them out). No other run, and no what-if,
writes them. ``tierline.build_runs`` registers them; a published run's schemas are dropped
right after it publishes, a failed run's are kept for debugging, the ``runs.keep_failed_builds``
most recent ones only.

**The run lock.** One row, ``tierline.run_lock``, says which run holds the warehouse, from its
first task (land) to its publish, across Airflow tasks that run in different processes. A task
that runs holds a session advisory lock on its own connection; that is how a waiting run knows
the holder is alive: a killed task's backend ends with its connection (``kill -9`` frees it at
once) and a silent client is dropped by TCP keepalives. Between two tasks of a run (Airflow's
scheduling gap or retry delay) the row keeps the warehouse for ``runs.lock_grace_seconds``.
A run whose task finds the warehouse held waits, printing whom it waits for, and refuses with
``RunLockRefused`` after ``runs.lock_wait_seconds``. The run releases it when it publishes or
fails permanently; a transient failure keeps it for the retry.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

from psycopg import sql

from tierline import warehouse
from tierline.errors import RunLockRefused, is_transient

CONTROL_SCHEMA = "tierline"
LAYERS = ("staging", "intermediate", "marts")
# pg_advisory_lock(classid, objid) of a running task; 0x746c = "tl"
LOCK_KEY = (0x746C, 1)
_CONTROL_KEY = (0x746C, 2)


def build_schemas(prefix: str, as_of: date, run_id: str) -> dict[str, str]:
    """The run's own schemas, one per layer; at most 20 + 18 + 13 = 51 characters."""
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    base = f"{prefix}_{as_of:%Y%m%d}_{digest}"
    return {layer: f"{base}_{layer}" for layer in LAYERS}


def ensure_control(conn) -> None:
    """Create the control tables once (two runs may start at the same moment: serialised)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s, %s)", _CONTROL_KEY)
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(CONTROL_SCHEMA)))
        conn.execute(
            """
            create table if not exists tierline.run_lock (
                name text primary key, run_id text, as_of_date date, stage text, holder text,
                backend_pid integer, acquired_at timestamptz, renewed_at timestamptz, expires_at timestamptz)
            """)
        conn.execute("insert into tierline.run_lock (name) values ('warehouse') on conflict do nothing")
        conn.execute(
            """
            create table if not exists tierline.build_runs (
                run_id text not null, as_of_date date not null, schemas text[] not null,
                status text not null check (status in ('building', 'published', 'failed', 'dropped')),
                publication_state text, created_at timestamptz not null default now(), finished_at timestamptz,
                primary key (run_id, as_of_date))
            """)
        conn.execute(
            """
            create table if not exists tierline.audits (
                run_id text not null, as_of_date date not null, relation text not null, relation_oid oid not null,
                row_count bigint not null, version text not null, audited_at timestamptz not null default now(),
                primary key (run_id, as_of_date, relation))
            """)
        # the history tables a run's marts built as their change since the publication (a
        # history model's post-hook records it with the table: publish applies the change)
        if not conn.execute("select 1 from information_schema.columns where table_schema = 'tierline' "
                            "and table_name = 'build_runs' and column_name = 'history_changes'").fetchone():
            conn.execute("alter table tierline.build_runs add column history_changes text[]")
        # an audit recorded a checksum of every row's text before the version (publish.audit)
        # replaced it; such a row no longer matches anything, and its run audits again
        if conn.execute("select 1 from information_schema.columns where table_schema = 'tierline' "
                        "and table_name = 'audits' and column_name = 'checksum'").fetchone():
            conn.execute("alter table tierline.audits drop column checksum, add column version text not null default ''")


@dataclass
class Holder:
    run_id: str | None
    as_of_date: date | None
    stage: str | None
    holder: str | None
    acquired_at: object
    expires_at: object
    alive: bool
    expired: bool

    def describe(self) -> str:
        where = f"task {self.stage} running on {self.holder}" if self.alive else (
            f"between tasks after {self.stage} (on {self.holder}); it keeps the warehouse until {self.expires_at:%H:%M:%S %Z}")
        return f"run {self.run_id} of {self.as_of_date} ({where}; holding the warehouse since {self.acquired_at:%H:%M:%S %Z})"


def _holder(conn, *, lock: bool) -> Holder:
    row = conn.execute(
        "select run_id, as_of_date, stage, holder, acquired_at, expires_at, "
        "exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.pid = r.backend_pid "
        "        and l.classid = %s and l.objid = %s and l.granted), coalesce(expires_at < now(), true) "
        "from tierline.run_lock r where name = 'warehouse'" + (" for update" if lock else ""), LOCK_KEY).fetchone()
    return Holder(*row)


def current_holder(warehouse_url: str) -> Holder | None:
    """Who holds the warehouse now (None when nobody does), for the CLI's messages."""
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        ensure_control(conn)
        holder = _holder(conn, lock=False)
    return holder if holder.run_id and (holder.alive or not holder.expired) else None


class RunLock:
    """Hold the warehouse for one task of a run (see the module docstring)."""

    def __init__(self, warehouse_url: str, *, run_id: str, as_of: date, stage: str, wait_seconds: float,
                 grace_seconds: float, poll_seconds: float = 2.0, say=None):
        self.url, self.run_id, self.as_of, self.stage = warehouse_url, run_id, as_of, stage
        self.wait_seconds, self.grace_seconds, self.poll_seconds = wait_seconds, grace_seconds, poll_seconds
        self.say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        self._conn_cm = None
        self.conn = None
        self.waited_seconds = 0.0

    def acquire(self) -> RunLock:
        self._conn_cm = warehouse.connect(self.url, autocommit=True, application_name="tierline run lock")
        self.conn = self._conn_cm.__enter__()
        try:
            ensure_control(self.conn)
            self._wait()
        except BaseException:
            self._close()
            raise
        return self

    def _wait(self) -> None:
        started = time.monotonic()
        told = None
        me = f"{socket.gethostname()}:{os.getpid()}"
        while True:
            with self.conn.transaction():
                holder = _holder(self.conn, lock=True)
                mine = holder.run_id == self.run_id and holder.as_of_date == self.as_of
                free = holder.run_id is None or (not holder.alive and (mine or holder.expired))
                if free and self.conn.execute("select pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()[0]:
                    self.conn.execute(
                        "update tierline.run_lock set run_id = %s, as_of_date = %s, stage = %s, holder = %s, "
                        "backend_pid = pg_backend_pid(), acquired_at = case when run_id = %s and as_of_date = %s "
                        "then acquired_at else now() end, renewed_at = now(), expires_at = now() "
                        "where name = 'warehouse'",
                        (self.run_id, self.as_of, self.stage, me, self.run_id, self.as_of))
                    self.waited_seconds = time.monotonic() - started
                    if told:
                        self.say(f"tierline: run {self.run_id} of {self.as_of} got the warehouse after "
                                 f"{self.waited_seconds:.0f} s")
                    return
            waited = time.monotonic() - started
            if waited >= self.wait_seconds:
                raise RunLockRefused(
                    f"run {self.run_id} of {self.as_of} ({self.stage}) refused after waiting {waited:.0f} s "
                    f"(runs.lock_wait_seconds = {self.wait_seconds:g}) for {holder.describe()}. Runs on one warehouse "
                    "take turns; run this date again when that run has finished. A run whose process died frees "
                    "the warehouse at once; one stopped between its tasks, after runs.lock_grace_seconds.")
            if told != (holder.run_id, holder.alive, holder.stage):
                self.say(f"tierline: run {self.run_id} of {self.as_of} ({self.stage}) waits for {holder.describe()}; "
                         f"refusing after {self.wait_seconds:g} s")
                told = (holder.run_id, holder.alive, holder.stage)
            time.sleep(min(self.poll_seconds, max(0.05, self.wait_seconds - waited)))

    def keep(self) -> None:
        """The task ended and the run goes on (next task, or a retry): keep the warehouse a while."""
        self.conn.execute(
            "update tierline.run_lock set expires_at = now() + make_interval(secs => %s), renewed_at = now() "
            "where name = 'warehouse' and run_id = %s and as_of_date = %s",
            (self.grace_seconds, self.run_id, self.as_of))

    def release(self) -> None:
        """The run is over (published, or failed for good): the next run may start."""
        self.conn.execute(
            "update tierline.run_lock set run_id = null, as_of_date = null, stage = null, holder = null, "
            "backend_pid = null, acquired_at = null, renewed_at = now(), expires_at = null "
            "where name = 'warehouse' and run_id = %s and as_of_date = %s", (self.run_id, self.as_of))

    def _close(self) -> None:
        if self._conn_cm is not None:
            self._conn_cm.__exit__(None, None, None)  # closing the session frees the advisory lock
            self._conn_cm = self.conn = None


@contextmanager
def hold(ctx, stage: str, *, final: bool = False):
    """Hold the warehouse for one task of ``ctx``'s run: released when the run publishes
    (``final``) or fails permanently, kept for ``runs.lock_grace_seconds`` otherwise."""
    cfg = ctx.config.runs
    lock = RunLock(ctx.warehouse_url, run_id=ctx.run_id, as_of=ctx.as_of, stage=stage,
                   wait_seconds=cfg.lock_wait_seconds, grace_seconds=cfg.lock_grace_seconds,
                   poll_seconds=cfg.lock_poll_seconds).acquire()
    try:
        yield lock
    except BaseException as exc:
        if isinstance(exc, Exception) and not is_transient(exc):
            lock.release()
            mark_failed(lock.conn, ctx)
        else:
            lock.keep()
        raise
    else:
        if final:
            lock.release()
        else:
            lock.keep()
    finally:
        lock._close()


@contextmanager
def exclusive(warehouse_url: str, cfg, operation: str):
    """Hold the warehouse for an operation that is not a run (``tierline forget``, retention): it
    waits for a run in progress like a run would (``cfg`` is the ``runs`` config), no run starts
    while it holds it, and it is released when the operation ends, however it ends."""
    lock = RunLock(warehouse_url, run_id=f"{operation} {socket.gethostname()}:{os.getpid()}", as_of=date.today(),
                   stage=operation, wait_seconds=cfg.lock_wait_seconds, grace_seconds=cfg.lock_grace_seconds,
                   poll_seconds=cfg.lock_poll_seconds).acquire()
    try:
        yield lock
    finally:
        try:
            lock.release()
        finally:
            lock._close()


# -- build schemas ----------------------------------------------------------------------------------


def register(conn, ctx, publication_state: str | None = None) -> None:
    """Record the run's build schemas before anything is built in them, and (when its build
    starts) the state of the publication the build reads, which publish checks is unchanged."""
    schemas = [ctx.schemas[layer] for layer in LAYERS]
    conn.execute(
        "insert into tierline.build_runs (run_id, as_of_date, schemas, status, publication_state) "
        "values (%s, %s, %s, 'building', %s) on conflict (run_id, as_of_date) do update set "
        "schemas = excluded.schemas, status = 'building', finished_at = null, "
        "publication_state = coalesce(excluded.publication_state, build_runs.publication_state)",
        (ctx.run_id, ctx.as_of, schemas, publication_state))


def recorded_publication_state(conn, ctx) -> str | None:
    row = conn.execute("select publication_state from tierline.build_runs where run_id = %s and as_of_date = %s",
                       (ctx.run_id, ctx.as_of)).fetchone()
    return row[0] if row else None


def recorded_history_changes(conn, ctx) -> list[str]:
    """The history tables this run's marts built as their change since the publication (the
    others it built whole): written by the history model's post-hook in the table's own
    transaction (dbt_project/macros/published.sql, ``history_record_build``)."""
    row = conn.execute("select history_changes from tierline.build_runs where run_id = %s and as_of_date = %s",
                       (ctx.run_id, ctx.as_of)).fetchone()
    return list(row[0] or []) if row else []


def mark_failed(conn, ctx) -> None:
    conn.execute("update tierline.build_runs set status = 'failed', finished_at = now() "
                 "where run_id = %s and as_of_date = %s and status = 'building'", (ctx.run_id, ctx.as_of))


def drop_schemas(conn, schemas) -> None:
    for schema in schemas:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


def status(conn, ctx) -> str | None:
    row = conn.execute("select status from tierline.build_runs where run_id = %s and as_of_date = %s",
                       (ctx.run_id, ctx.as_of)).fetchone()
    return row[0] if row else None


def mark_published(conn, ctx) -> None:
    """Inside the publish transaction: the run's build is published (a retry only cleans up)."""
    conn.execute("update tierline.build_runs set status = 'published', finished_at = now() "
                 "where run_id = %s and as_of_date = %s", (ctx.run_id, ctx.as_of))


def finish_published(conn, ctx) -> None:
    """Drop the published run's build schemas: what they held is in the published schema now."""
    drop_schemas(conn, [ctx.schemas[layer] for layer in LAYERS])
    conn.execute("delete from tierline.audits where run_id = %s and as_of_date = %s", (ctx.run_id, ctx.as_of))


def reap(conn, ctx, keep: int) -> list[str]:
    """Drop the build schemas of earlier runs that did not publish, but for the ``keep`` most
    recent (kept for debugging). Called by a run that holds the warehouse, so none of them runs."""
    rows = conn.execute(
        "select run_id, as_of_date, schemas from tierline.build_runs "
        "where status in ('building', 'failed') and not (run_id = %s and as_of_date = %s) "
        "order by created_at desc offset %s", (ctx.run_id, ctx.as_of, keep)).fetchall()
    dropped = []
    for run_id, as_of, schemas in rows:
        drop_schemas(conn, schemas)
        conn.execute("update tierline.build_runs set status = 'dropped', finished_at = coalesce(finished_at, now()) "
                     "where run_id = %s and as_of_date = %s", (run_id, as_of))
        conn.execute("delete from tierline.audits where run_id = %s and as_of_date = %s", (run_id, as_of))
        dropped += schemas
    return dropped
