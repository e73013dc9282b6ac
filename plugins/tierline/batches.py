"""Raw batches: every load of an extract date is a batch that stays invisible until its run publishes.

``raw.load_batch`` has one row per load of a date by a run. Every row the loader writes (raw
entity tables, ``raw.quarantine``, ``raw.load_log``) carries its ``batch_id``. A batch is
``pending`` while its run is under way; the publish transaction promotes it to ``published``
(:func:`promote`), which makes the date's earlier publication ``superseded`` (its rows are removed,
the batch row stays for audit). A batch that never publishes stays ``pending`` (invisible), and
becomes ``rejected`` (its rows removed) once the same run reloads the date or another run of the
date publishes.

Which batches a run sees is decided in one place, the SQL function ``raw.visible_batches(as_of,
run_id)``: the published batches of earlier dates, plus, for ``as_of`` itself, the run's own
pending batch (or, for a run that loaded nothing for that date, its published batch). dbt reads
raw only through the ``visible_raw`` macro, which calls it, and the loader's reference checks call
it too, so nothing of a date whose run failed can reach staging or satisfy a reference.
"""

from __future__ import annotations

from datetime import date

from psycopg import sql

from tierline import warehouse
from tierline.contract import ENTITIES
from tierline.errors import TierlineError

RAW = "raw"
STATUSES = ("pending", "published", "rejected", "superseded")
ENTITY_TABLES = tuple(e.name for e in ENTITIES)
# Tables whose rows belong to a batch besides the entity tables.
LOG_TABLES = ("quarantine", "load_log")
# Serialises the one-off upgrade of a warehouse that predates batches.
_SCHEMA_LOCK = 7_311_842_001


def ensure_schema(conn) -> None:
    """Create ``raw.load_batch`` and the visibility function; upgrade older raw tables in place.

    Tables written before batches existed get a ``batch_id``; their rows become one published
    batch per extract date (they were what the warehouse published so far).
    """
    conn.execute("select pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    statuses = sql.SQL(", ").join(sql.Literal(s) for s in STATUSES)
    conn.execute(sql.SQL(
        """
        create table if not exists raw.load_batch (
            batch_id bigint generated always as identity primary key,
            extract_date date not null,
            run_id text not null,
            status text not null default 'pending' check (status in ({statuses})),
            created_at timestamptz not null default now(),
            decided_at timestamptz)
        """).format(statuses=statuses))
    indexes = {r[0] for r in conn.execute(
        "select indexname from pg_indexes where schemaname = %s and tablename = 'load_batch'", (RAW,))}
    if "load_batch__one_published" not in indexes:
        conn.execute("create unique index load_batch__one_published on raw.load_batch (extract_date) "
                     "where status = 'published'")
    if "load_batch__one_pending_per_run" not in indexes:
        conn.execute("create unique index load_batch__one_pending_per_run on raw.load_batch (extract_date, run_id) "
                     "where status = 'pending'")
    conn.execute(
        """
        create or replace function raw.visible_batches(p_as_of date, p_run_id text) returns setof bigint
        language sql stable parallel safe as $$
            select b.batch_id from raw.load_batch b
            where (b.status = 'published' and b.extract_date < p_as_of)
               or b.batch_id = (
                   select coalesce(max(d.batch_id) filter (where d.status = 'pending' and d.run_id = p_run_id),
                                   max(d.batch_id) filter (where d.status = 'published'))
                   from raw.load_batch d where d.extract_date = p_as_of)
        $$
        """)
    for table in (*ENTITY_TABLES, *LOG_TABLES):
        _upgrade(conn, table, "extract_date" if table in LOG_TABLES else "_extract_date")


def _columns(conn, table: str) -> set[str]:
    rows = conn.execute("select column_name from information_schema.columns where table_schema = %s "
                        "and table_name = %s", (RAW, table)).fetchall()
    return {r[0] for r in rows}


def _upgrade(conn, table: str, date_column: str) -> None:
    ident = sql.Identifier
    target = sql.SQL("{}.{}").format(ident(RAW), ident(table))
    if "batch_id" not in _columns(conn, table):
        conn.execute(sql.SQL("alter table {} add column batch_id bigint").format(target))
        dates = conn.execute(sql.SQL("select distinct {} from {}").format(ident(date_column), target)).fetchall()
        for (day,) in dates:
            batch_id = conn.execute(
                "select batch_id from raw.load_batch where extract_date = %s and status = 'published'", (day,)
            ).fetchone()
            if batch_id is None:
                batch_id = conn.execute(
                    "insert into raw.load_batch (extract_date, run_id, status, decided_at) "
                    "values (%s, 'loaded before batches', 'published', now()) returning batch_id", (day,)).fetchone()
            conn.execute(sql.SQL("update {} set batch_id = %s where {} = %s").format(target, ident(date_column)),
                         (batch_id[0], day))
        conn.execute(sql.SQL("alter table {} alter column batch_id set not null").format(target))
        if table in LOG_TABLES:
            # their primary key was per extract date; it is per batch now
            conn.execute(sql.SQL("alter table {} drop constraint if exists {}").format(
                target, ident(f"{table}_pkey")))
            key = ("batch_id", "file", "line_no") if table == "quarantine" else ("batch_id", "file")
            conn.execute(sql.SQL("alter table {} add primary key ({})").format(
                target, sql.SQL(", ").join(ident(k) for k in key)))
    if table in LOG_TABLES:
        return
    # DDL only where something changes: even a no-op ALTER waits for every reader of the table
    indexes = {r[0] for r in conn.execute(
        "select indexname from pg_indexes where schemaname = %s and tablename = %s", (RAW, table))}
    if f"{table}__batch_brin" not in indexes:
        # rows arrive batch after batch: a BRIN index finds a batch's rows at almost no cost per insert
        conn.execute(sql.SQL("create index {} on {} using brin (batch_id)").format(
            ident(f"{table}__batch_brin"), target))
    for obsolete in indexes & {f"{table}__batch_id", f"{table}__extract_date"}:
        conn.execute(sql.SQL("drop index {}.{}").format(ident(RAW), ident(obsolete)))
    if "_file_sha256" in _columns(conn, table):
        # the file's checksum is in raw.load_log (batch, file); 65 bytes a row were a third of a write
        conn.execute(sql.SQL("alter table {} drop column _file_sha256").format(target))


def summarize(conn, table: str, lock_timeout: float = 5) -> bool:
    """Summarize the page ranges of ``table``'s batch index that rows were added to since it was
    last summarized, in a short maintenance transaction (:func:`tierline.warehouse.maintenance`).
    A BRIN index does not summarize ranges filled after its creation until a VACUUM does (no
    autosummarize): an unsummarized range matches every batch, so a lookup of one batch read the
    whole table (at 100k customers every one of staging's reads of a day's order lines scanned all
    2.9M). False when another process (autovacuum) held the table past ``lock_timeout``."""
    with warehouse.maintenance(conn, lock_timeout) as upkeep:
        conn.execute("select brin_summarize_new_values(%s::regclass)",
                     [sql.Identifier(RAW, f"{table}__batch_brin").as_string(conn)])
    return upkeep.done


def open_batch(conn, as_of: date, run_id: str) -> int:
    """Open a pending batch for (as_of, run_id), replacing the run's earlier unpublished load of the date."""
    earlier = [r[0] for r in conn.execute(
        "update raw.load_batch set status = 'rejected', decided_at = now() "
        "where extract_date = %s and run_id = %s and status = 'pending' returning batch_id", (as_of, run_id))]
    discard_rows(conn, earlier)
    return conn.execute("insert into raw.load_batch (extract_date, run_id) values (%s, %s) returning batch_id",
                        (as_of, run_id)).fetchone()[0]


def discard_rows(conn, batch_ids: list[int]) -> None:
    """Remove the raw and quarantine rows of replaced batches (their load log stays for audit)."""
    if not batch_ids:
        return
    for table in (*ENTITY_TABLES, "quarantine"):
        conn.execute(sql.SQL("delete from {}.{} where batch_id = any(%s)").format(
            sql.Identifier(RAW), sql.Identifier(table)), (batch_ids,))


def run_batch(conn, *, run_id: str, as_of: date) -> int:
    """The batch a run sees for its own date (its pending batch, else the date's publication)."""
    row = conn.execute(
        "select max(b) from raw.visible_batches(%s, %s) as v(b) join raw.load_batch on batch_id = b "
        "where extract_date = %s", (as_of, run_id, as_of)).fetchone()
    if row[0] is None:
        raise TierlineError(f"run {run_id} has loaded nothing for {as_of}: run load_raw for the date first")
    return row[0]


def promote(conn, *, run_id: str, as_of: date) -> int:
    """Publish the run's pending batch for ``as_of``; call inside the publish transaction.

    The date's earlier publication becomes ``superseded`` and older unpublished loads of the date
    ``rejected``; the rows of both are removed from raw (their batch rows stay for audit). A newer
    pending batch of the date (a later run still under way) is left alone.
    """
    row = conn.execute(
        "select batch_id, status from raw.load_batch where extract_date = %s and run_id = %s "
        "order by batch_id desc limit 1 for update", (as_of, run_id)).fetchone()
    if row is None or row[1] not in ("pending", "published"):
        state = "nothing" if row is None else f"batch {row[0]}, now {row[1]} (a later load of the date replaced it)"
        raise TierlineError(
            f"run {run_id} has no pending raw batch for {as_of} ({state}): re-run the date from load_raw")
    batch_id, status = row
    if status == "published":  # a retried publish whose first attempt committed
        return batch_id
    newer = conn.execute("select batch_id from raw.load_batch where extract_date = %s and status = 'published' "
                         "and batch_id > %s", (as_of, batch_id)).fetchone()
    if newer:
        raise TierlineError(
            f"run {run_id}: a later load of {as_of} (batch {newer[0]}) is already published; re-run the date")
    replaced = conn.execute(
        "update raw.load_batch set status = case when status = 'published' then 'superseded' else 'rejected' end, "
        "decided_at = now() where extract_date = %s and batch_id < %s and status in ('published', 'pending') "
        "returning batch_id", (as_of, batch_id)).fetchall()
    discard_rows(conn, [r[0] for r in replaced])
    conn.execute("update raw.load_batch set status = 'published', decided_at = now() where batch_id = %s",
                 (batch_id,))
    return batch_id
