"""Load landed extracts into the ``raw`` schema with PostgreSQL's own CSV COPY, quarantining every bad row.

Each file goes to PostgreSQL as it is, by one ``COPY ... (format csv)`` into a temporary table of
text columns; the fields are then typed and checked there in set-based SQL generated from
:mod:`tierline.contract`. Python reads the file once beforehand (:mod:`tierline.csvfile`) to detect
its encoding and what ``COPY`` could not carry. A file ``COPY`` refuses or could not carry (bytes
not in its encoding, control characters, mixed line ends, a row with the wrong number of fields,
an unclosed quote) is parsed in Python instead, record by record, and its good records still load.

A row that breaks the contract goes to ``raw.quarantine`` with its file, exact physical line, raw
text (read back from the file) and reason; everything else goes to ``raw.<entity>``; for every
file rows read = rows loaded + rows quarantined is asserted. Each load of a date is a pending batch
(:mod:`tierline.batches`) that no other run sees until this run publishes, so each file is loaded
in its own transaction and session, independent files concurrently (a file after the files it
references); a retry of the run replaces its pending batch, so re-running a date is idempotent.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from tierline import batches, contract, csvfile, erasure, warehouse
from tierline.errors import ExtractError

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
RAW = "raw"
# Quarantined records copied at a time (their raw text is read back from the file beside them).
QUARANTINE_CHUNK = 10_000
# Files loaded at once: the machine this runs on has two cores, and PostgreSQL does the work.
WORKERS = 2
PG_ENCODING = {"utf-8": "UTF8", "utf-8-sig": "UTF8", "gb18030": "GB18030"}
PG_TYPES = {"int": "bigint", "numeric": "numeric", "amount": "numeric", "timestamp": "timestamptz", "date": "date"}
# Thousands separators (EXTRACTS.md), in their places only.
NUMERIC_GROUPED = r"^[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$"
AMOUNT_LIMIT = 10 ** (contract.AMOUNT_PRECISION - contract.AMOUNT_SCALE)


@dataclass
class FileLoad:
    file: str
    encoding: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    ignored_columns: list[str] = field(default_factory=list)
    soft_reference_misses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    path: str = "copy"  # copy: PostgreSQL's CSV COPY took the file; parsed: the record-by-record fallback


@dataclass(frozen=True)
class _Target:
    """Where and for whom a file is loaded."""

    as_of: date
    run_id: str
    batch_id: int


# ---------------------------------------------------------------------------------------------
# DDL


def _pg_type(column: contract.Column) -> str:
    return PG_TYPES.get(column.type, "text")


def ensure_raw_schema(conn) -> None:
    """Create the raw tables, quarantine, load log and batches, and the type-check helper (idempotent)."""
    ident = sql.Identifier
    conn.execute(sql.SQL("create schema if not exists {}").format(ident(RAW)))
    for entity in contract.ENTITIES:
        columns = [sql.SQL("{} {}").format(ident(c.name), sql.SQL(_pg_type(c))) for c in entity.columns]
        conn.execute(
            sql.SQL(
                "create table if not exists {}.{} ({}, _extract_date date not null, _line_no bigint not null, "
                "batch_id bigint not null)"
            ).format(ident(RAW), ident(entity.name), sql.SQL(", ").join(columns))
        )
        # A nullable column added to the contract later reaches tables created before it.
        present = {row[0] for row in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
            (RAW, entity.name))}
        for column in entity.columns:
            if column.name not in present:
                conn.execute(sql.SQL("alter table {}.{} add column {} {}").format(
                    ident(RAW), ident(entity.name), ident(column.name), sql.SQL(_pg_type(column))))
    conn.execute(
        """
        create table if not exists raw.quarantine (
            batch_id bigint not null, extract_date date not null, file text not null, line_no bigint not null,
            raw_text text, reason text not null, run_id text, quarantined_at timestamptz default now(),
            primary key (batch_id, file, line_no))
        """
    )
    conn.execute(
        """
        create table if not exists raw.load_log (
            batch_id bigint not null, extract_date date not null, file text not null, file_sha256 text not null,
            encoding text, rows_read bigint not null, rows_loaded bigint not null, rows_quarantined bigint not null,
            ignored_columns text[], soft_reference_misses jsonb, run_id text,
            loaded_at timestamptz default now(), erased_rows bigint not null default 0, primary key (batch_id, file))
        """
    )
    # erased_rows: rows ``tierline forget`` removed from the file since (tierline.erasure)
    if not conn.execute("select 1 from information_schema.columns where table_schema = %s and table_name = "
                        "'load_log' and column_name = 'erased_rows'", (RAW,)).fetchone():
        conn.execute("alter table raw.load_log add column erased_rows bigint not null default 0")
    batches.ensure_schema(conn)
    erasure.ensure_schema(conn)
    version = conn.execute("show server_version_num").fetchone()[0]
    if int(version) >= 160000:
        check = "select pg_input_is_valid(v, t)"
        conn.execute(
            f"create or replace function raw.tl_is_valid(v text, t text) returns boolean "
            f"language sql stable parallel safe as $$ {check} $$"
        )
    else:  # PostgreSQL 15 has no pg_input_is_valid; only values that pass the regex get here
        conn.execute(
            """
            create or replace function raw.tl_is_valid(v text, t text) returns boolean
            language plpgsql stable as $$
            begin
                execute format('select %L::%s', v, t);
                return true;
            exception when others then return false;
            end $$
            """
        )


def _lit(value) -> sql.Literal:
    return sql.Literal(value)


def _field(position: int) -> sql.Identifier:
    return sql.Identifier(f"c{position}")


def _value(position: int | None) -> sql.Composable:
    """The trimmed field at a position, with '' and the literal NULL as null."""
    if position is None:
        return sql.SQL("null::text")
    return sql.SQL("nullif(nullif(btrim({}, E' \\t'), ''), 'NULL')").format(_field(position))


def _typed_name(column: contract.Column) -> sql.Identifier:
    return sql.Identifier(f"{column.name}__typed")


TYPED = ("int", "numeric", "amount", "timestamp", "date")


def _typed(column: contract.Column, *, trusting: bool = False) -> sql.Composable:
    """The field as its contract type, null when it does not parse as one (its check says so).

    PostgreSQL's parser decides what a number or a date is (2025-02-30 is not a date); the number
    check also refuses NaN and infinities, and a shape test refuses what it would read as a
    timestamp but no export writes (`now`, `epoch`, `today`, month names). ``trusting`` casts
    without asking the parser first; a file with a value that does not parse then fails the
    statement, which runs again without trust (asking first parses every value twice, which costs
    more than all the other checks together).
    """
    c = sql.Identifier(column.name)

    def cast(value: str, pg_type: str) -> str:
        return f"{value}::{pg_type}" if trusting else (
            f"case when raw.tl_is_valid({value}, '{pg_type}') then {value}::{pg_type} end")

    if column.type == "int":
        return sql.SQL(cast("{c}", "bigint")).format(c=c)
    if column.type in ("numeric", "amount"):
        # thousands separators only in their places: 1,234.50 but not 1,2,3
        return sql.SQL(f"case when strpos({{c}}, ',') = 0 then {cast('{c}', 'numeric')} "
                       "when {c} ~ {grouped} then replace({c}, ',', '')::numeric end").format(
                           c=c, grouped=_lit(NUMERIC_GROUPED))
    pg_type = "timestamptz" if column.type == "timestamp" else "date"
    guard = "substr({c}, 5, 1) = '-' and substr({c}, 8, 1) = '-'"
    if column.type == "date":
        guard = "length({c}) = 10 and " + guard
    return sql.SQL(f"case when {guard} then {cast('{c}', pg_type)} end").format(c=c)


def _stored(column: contract.Column) -> sql.Composable:
    """What the raw table stores for a column of a row that passed every check."""
    if column.type in TYPED:
        return _typed_name(column)
    if column.choices:
        return sql.SQL("lower({})").format(sql.Identifier(column.name))
    return sql.Identifier(column.name)


def _checks(entity: contract.Entity, as_of: date) -> list[sql.Composable]:
    """Row-level checks in order; the first failing one is the row's quarantine reason."""
    ident = sql.Identifier
    checks: list[sql.Composable] = []
    for name in entity.key:
        checks.append(sql.SQL("case when {c} is null then {m} end").format(
            c=ident(name), m=_lit(f"missing primary key {name}")))
    for column in entity.columns:
        c = ident(column.name)
        if not column.nullable and column.name not in entity.key:
            checks.append(sql.SQL("case when {c} is null then {m} end").format(
                c=c, m=_lit(f"missing required value in {column.name}")))
        typed = _typed_name(column) if column.type in TYPED else None
        if typed is not None:
            kind = "numeric" if column.type == "amount" else column.type
            unparsed = sql.SQL("{t} is null").format(t=typed)
            if kind == "numeric":  # NaN sorts above Infinity
                unparsed += sql.SQL(" or not ({t} > '-Infinity' and {t} < 'Infinity')").format(t=typed)
            checks.append(sql.SQL("case when {c} is not null and ({u}) then format({m}, {c}) end").format(
                c=c, u=unparsed, m=_lit(f"unparsable {kind} in {column.name}: %s")))
        if column.choices:
            checks.append(sql.SQL("case when {c} is not null and lower({c}) <> all({v}) then format({m}, {c}) end")
                          .format(c=c, v=_lit(list(column.choices)),
                                  m=_lit(f"{column.name} %s is not one of {', '.join(column.choices)}")))
        if column.type == "amount":
            checks.append(sql.SQL("case when abs({t}) >= {limit} then format({m}, {c}) end").format(
                t=typed, limit=_lit(AMOUNT_LIMIT), c=c,
                m=_lit(f"{column.name} %s does not fit numeric({contract.AMOUNT_PRECISION}, "
                       f"{contract.AMOUNT_SCALE})")))
        if column.min is not None:
            checks.append(sql.SQL("case when {t} < {lo} then format({m}, {c}) end").format(
                t=typed, lo=_lit(column.min), c=c,
                m=_lit(f"{column.name} %s is below the minimum {column.min:g}")))
        if column.max is not None:
            checks.append(sql.SQL("case when {t} > {hi} then format({m}, {c}) end").format(
                t=typed, hi=_lit(column.max), c=c,
                m=_lit(f"{column.name} %s is above the maximum {column.max:g}")))
        if column.not_after is not None:
            checks.append(_not_after(column, as_of))
    return checks


def _not_after(column: contract.Column, as_of: date) -> sql.Composable:
    """A time later than the contract allows, in the session's (business) time zone.

    The load-time limit reads ``now()``, the start of the file's transaction: rerunning a date
    gives the same verdicts unless a value lies in the few days between two runs' limits.
    """
    end_of_date = sql.SQL("({}::date + 1)").format(_lit(as_of))
    if column.not_after == "extract_date":
        bound, message = end_of_date, f"{column.name} %s is after the extract date {as_of.isoformat()}"
    else:
        bound = sql.SQL("(greatest({e}::timestamptz, now()) + {g} * interval '1 day')").format(
            e=end_of_date, g=_lit(contract.EVENT_GRACE_DAYS))
        message = f"{column.name} %s is in the future"
    if column.type == "timestamp":
        bound = sql.SQL("{}::timestamptz").format(bound)
    return sql.SQL("case when {t} >= {b} then format({m}, {c}) end").format(
        t=_typed_name(column), b=bound, c=sql.Identifier(column.name), m=_lit(message))


# ---------------------------------------------------------------------------------------------
# Getting a file's records into tl_rows


def _create_rows_table(conn, n_fields: int) -> None:
    fields = sql.SQL(", ").join(sql.SQL("{} text").format(_field(i)) for i in range(1, n_fields + 1))
    conn.execute(sql.SQL(
        "create temp table tl_rows (_rec bigint generated always as identity, _line_no bigint, _span int, "
        "_reason text, _raw text, {}) on commit drop").format(fields))


def _copy_file(conn, path: Path, shape: csvfile.FileShape) -> str | None:
    """COPY the file as CSV into tl_rows; None when it worked, else why PostgreSQL refused it."""
    columns = sql.SQL(", ").join(_field(i) for i in range(1, len(shape.header) + 1))
    copy = sql.SQL("copy tl_rows ({}) from stdin with (format csv, header true, encoding {})").format(
        columns, _lit(PG_ENCODING[shape.encoding]))
    try:
        with conn.transaction(), conn.cursor().copy(copy) as stream, path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                stream.write(chunk)
    except psycopg.errors.DataError as exc:
        context = (exc.diag.context or "").strip().splitlines()
        return f"{exc.diag.message_primary}" + (f" ({context[0][:80]})" if context else "")
    return None


def _number_copied_rows(conn, shape: csvfile.FileShape) -> str | None:
    """Give COPYed records their physical lines; None when they account for every line of the file.

    Without a line break inside a quoted field, record n is line n + 1. Otherwise each record's
    first line follows from the line breaks inside the records before it.
    """
    records = conn.execute("select count(*) from tl_rows").fetchone()[0]
    if records == shape.data_lines:
        return None  # _line_no and _span stay null: _rec + 1 and 1
    breaks = sql.SQL(" + ").join(
        sql.SQL("coalesce(length({c}) - length(replace({c}, E'\\n', '')), 0)").format(c=_field(i))
        for i in range(1, len(shape.header) + 1))
    embedded = conn.execute(sql.SQL("select coalesce(sum({}), 0) from tl_rows").format(breaks)).fetchone()[0]
    if records + embedded != shape.data_lines:
        return f"COPY read {records} records over {records + embedded} lines, the file has {shape.data_lines}"
    conn.execute(sql.SQL(
        """
        update tl_rows r set _line_no = n._line_no, _span = n._span
        from (select _rec, _rec + 1 + coalesce(sum(_breaks) over (order by _rec rows between unbounded preceding
                                                                 and 1 preceding), 0) as _line_no,
                     1 + _breaks as _span
              from (select _rec, {} as _breaks from tl_rows) b) n
        where n._rec = r._rec
        """).format(breaks))
    return None


def _parse_file(conn, path: Path, shape: csvfile.FileShape) -> None:
    """Parse the file record by record into tl_rows; a bad record keeps its reason and raw text there."""
    columns = sql.SQL(", ").join(_field(i) for i in range(1, len(shape.header) + 1))
    empty = (None,) * len(shape.header)
    with conn.cursor().copy(sql.SQL("copy tl_rows (_line_no, _span, _reason, _raw, {}) from stdin").format(
            columns)) as stream:
        for record in csvfile.records(path, shape):
            if record.fields is None:
                stream.write_row((record.line_no, record.span, record.reason, record.raw_text, *empty))
            else:
                stream.write_row((record.line_no, record.span, None, None, *record.fields))


# ---------------------------------------------------------------------------------------------
# The per-file load, in two steps: what needs only the file, then what needs the files it references


@dataclass
class _Prepared:
    """A file read, typed and row-checked into the session's ``tl_checked``, waiting for its references."""

    path: Path
    sha256: str
    shape: csvfile.FileShape
    records: int
    lines: int
    how: str
    seconds: float


def prepare_file(conn, entity: contract.Entity, path: Path, sha256: str, target: _Target) -> _Prepared:
    """Read the file into ``tl_checked``: every record typed and checked, but for references and duplicates."""
    started = time.perf_counter()
    shape = csvfile.inspect(path, entity)
    with conn.transaction():
        _create_rows_table(conn, len(shape.header))
        refused = shape.fallback or _copy_file(conn, path, shape) or _number_copied_rows(conn, shape)
        if refused:
            log.info("%s: parsed record by record (%s)", entity.file_name, refused)
            conn.execute("truncate tl_rows")
            _parse_file(conn, path, shape)
        # a small sample is enough for the row count, which the planner must not guess: a fresh
        # temp table looks tiny, and joining it by nested loops is quadratic in the file's size
        conn.execute("set local default_statistics_target = 10")
        conn.execute("analyze tl_rows")
        records, lines = conn.execute("select count(*), coalesce(sum(coalesce(_span, 1)), 0) from tl_rows").fetchone()
        try:
            with conn.transaction():
                conn.execute(_checked_rows(entity, shape, target, trusting=True))
        except psycopg.errors.DataError:  # a value that does not parse: ask the parser about each one
            conn.execute(_checked_rows(entity, shape, target, trusting=False))
        conn.execute("drop table tl_rows")
        conn.execute("analyze tl_checked")
    return _Prepared(path, sha256, shape, records, lines, "parsed" if refused else "copy",
                     time.perf_counter() - started)


# a file with fewer than 1/LOOKUP_RATIO of the rows of a table it references looks its keys up
LOOKUP_RATIO = 10


def _lookups(conn, entity: contract.Entity, records: int) -> frozenset[str]:
    """The referenced raw tables that hold over LOOKUP_RATIO times the file's records (planner
    statistics: the loader analyzes what it adds)."""
    referenced = [ref.entity for ref in entity.references if ref.hard]
    if not referenced:
        return frozenset()
    sizes = conn.execute(
        "select c.relname, c.reltuples from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relname = any(%s)", [RAW, referenced]).fetchall()
    return frozenset(name for name, rows in sizes if rows > records * LOOKUP_RATIO)


def commit_file(conn, entity: contract.Entity, prepared: _Prepared, target: _Target) -> FileLoad:
    """Check references and duplicates, insert the good rows and quarantine the others, in one transaction."""
    started = time.perf_counter()
    shape = prepared.shape
    with conn.transaction():
        conn.execute("create temp table tl_bad (_line_no bigint, _span int, _reason text, _raw text) on commit drop")
        erased = erasure.any_erased(conn)
        conn.execute(_judge(entity, target, erased, _lookups(conn, entity, prepared.records)))
        conn.execute("analyze tl_bad")
        loaded = conn.execute(_insert_good(entity, target, erased)).rowcount
        quarantined = _quarantine(conn, entity, prepared, target)
        read = prepared.records
        if prepared.lines != shape.data_lines or read != loaded + quarantined:
            raise ExtractError(
                f"{entity.file_name}: rows read ({read}, over {prepared.lines} of {shape.data_lines} lines) != rows "
                f"loaded ({loaded}) + quarantined ({quarantined})")
        soft = _soft_reference_misses(conn, entity, target)
        conn.execute(
            "insert into raw.load_log (batch_id, extract_date, file, file_sha256, encoding, rows_read, rows_loaded, "
            "rows_quarantined, ignored_columns, soft_reference_misses, run_id) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
            (target.batch_id, target.as_of, entity.file_name, prepared.sha256, shape.encoding, read, loaded,
             quarantined, shape.ignored_columns, json.dumps(soft), target.run_id))
        conn.execute("drop table tl_checked")
    if loaded:
        # the batch is a value raw's statistics have never seen: staging's incremental read of it
        # (batch_id in (...)) was estimated at a handful of rows and ran for minutes at 100k customers
        batches.summarize(conn, entity.name)
        warehouse.analyze(conn, RAW, entity.name, columns=("batch_id",))
    return FileLoad(entity.file_name, shape.encoding, read, loaded, quarantined, shape.ignored_columns, soft,
                    round(prepared.seconds + time.perf_counter() - started, 3), prepared.how)


def _quarantine(conn, entity: contract.Entity, prepared: _Prepared, target: _Target) -> int:
    """Copy ``tl_bad`` into raw.quarantine, with each record's raw text read back from the file.

    The bad records stream in line order, and the file is read forward once beside them, so
    neither is held in memory whatever their number.
    """
    count = 0
    with conn.cursor(name="tl_bad_rows") as rows:
        rows.itersize = QUARANTINE_CHUNK
        rows.execute("select _line_no, _span, _raw, _reason from tl_bad order by _line_no")
        records = csvfile.with_raw_texts(prepared.path, prepared.shape, rows)
        # the cursor fetches while no COPY is open on the connection
        while chunk := list(itertools.islice(records, QUARANTINE_CHUNK)):
            with conn.cursor().copy("copy raw.quarantine (batch_id, extract_date, file, line_no, raw_text, reason, "
                                    "run_id) from stdin") as stream:
                for line, text, reason in chunk:
                    # a row about an erased person keeps no trace of them (tierline.erasure)
                    stream.write_row((target.batch_id, target.as_of, entity.file_name, line,
                                      None if reason == erasure.ERASED else text, reason, target.run_id))
            count += len(chunk)
    return count


def load_file(conn, entity: contract.Entity, path: Path, sha256: str, target: _Target) -> FileLoad:
    """Both steps at once, for a file whose references are loaded."""
    return commit_file(conn, entity, prepare_file(conn, entity, path, sha256, target), target)


def _checked_rows(entity: contract.Entity, shape: csvfile.FileShape, target: _Target, *,
                  trusting: bool) -> sql.Composable:
    """``tl_checked``: each record of tl_rows typed and checked on its own (references and duplicates later).

    It keeps only what the raw table stores, the line, the first failing check and a 64-bit hash
    of the key: a narrow table is cheap to write and to read again. Each field is trimmed and
    typed once (``offset 0`` keeps the planner from inlining those expressions into every check).
    """
    ident = sql.Identifier
    values = sql.SQL(", ").join(
        sql.SQL("{} as {}").format(_value(shape.positions.get(c.name)), ident(c.name)) for c in entity.columns)
    typed = sql.SQL("").join(sql.SQL(", {} as {}").format(_typed(c, trusting=trusting), _typed_name(c))
                             for c in entity.columns if c.type in TYPED)
    stored = sql.SQL(", ").join(sql.SQL("{} as {}").format(_stored(c), ident(c.name)) for c in entity.columns)
    key_text = sql.SQL("row({})::text").format(sql.SQL(", ").join(_stored(entity.column(k)) for k in entity.key))
    return sql.SQL(
        """
        create temp table tl_checked as
        select _line_no, _span, _raw, {stored}, coalesce(_parse_reason, {checks}) as _row_reason,
               hashtextextended({key_text}, 0) as _key_hash
        from (
            select *{typed} from (
                select coalesce(_line_no, _rec + 1) as _line_no, coalesce(_span, 1) as _span,
                       _reason as _parse_reason, _raw, {values}
                from tl_rows offset 0
            ) as fields offset 0
        ) as v
        """
    ).format(stored=stored, checks=sql.SQL(", ").join(_checks(entity, target.as_of)), key_text=key_text,
             typed=typed, values=values)


def _judge(entity: contract.Entity, target: _Target, erased: bool = False,
           lookups: frozenset[str] = frozenset()) -> sql.Composable:
    """Every record of ``tl_checked`` that fails a check into ``tl_bad``, with its reason.

    References are satisfied by the rows the run sees (:func:`_visible`); a key repeated with
    different content quarantines every row of it. Only the few bad records are written, so the
    insert of the good ones reads tl_checked again rather than a materialised copy of it. With
    ``erased`` (the warehouse has erased someone), a row about an erased person is quarantined
    as ``erased`` before any other reason is looked at (:mod:`tierline.erasure`). The referenced
    entities in ``lookups`` are read for the keys the file names only (:func:`_lookups`).
    """
    ident = sql.Identifier
    key = sql.SQL(", ").join(ident(k) for k in entity.key)
    content = sql.SQL("row({})::text").format(sql.SQL(", ").join(ident(c.name) for c in entity.columns))
    joins, fk_checks, erased_checks = [], [], []
    for i, column in enumerate(erasure.subject_columns(entity) if erased else ()):
        # each distinct customer is hashed once, not each of their rows (an orders file has ~10 a
        # customer): about 3 us a hash here
        alias = ident(f"erased{i}")
        joins.append(sql.SQL(
            "left join (select d.v from (select distinct {col} as v from tl_checked) d where {erased}) {a} "
            "on {a}.v = c.{col}").format(col=ident(column), erased=erasure.is_erased(sql.SQL("d.v")), a=alias))
        erased_checks.append(sql.SQL("case when {a}.v is not null then {m} end").format(
            a=alias, m=_lit(erasure.ERASED)))
    for i, ref in enumerate(r for r in entity.references if r.hard):
        alias = ident(f"ref{i}")
        # a file much smaller than the table it references (a daily delta) looks up only the
        # keys it names: its check costs what the file has, not a pass over every key the table
        # ever held (the 1% day's order lines at 100k customers: 1.09 s -> under 0.4 s); a file
        # as large as the table is checked against all of it (restricted, 4.5 s -> 6.4 s)
        named = sql.SQL(" and {k} in (select {col} from tl_checked)").format(
            k=ident(ref.key), col=ident(ref.column)) if ref.entity in lookups else sql.SQL("")
        joins.append(sql.SQL(
            "left join (select distinct {k} as ref_key from {s}.{t} where batch_id in {visible}{named}) {a} "
            "on {a}.ref_key = c.{col}"
        ).format(k=ident(ref.key), s=ident(RAW), t=ident(ref.entity), visible=_visible(target), a=alias,
                 col=ident(ref.column), named=named))
        fk_checks.append(sql.SQL("case when c.{col} is not null and {a}.ref_key is null then format({m}, c.{col}) end")
                         .format(col=ident(ref.column), a=alias,
                                 m=_lit(f"unknown {ref.column} %s (not in {ref.entity})")))
    return sql.SQL(
        """
        with repeated as (
            -- a pass over 64-bit hashes of the keys finds the few repeated ones (or a collision);
            -- only their rows are compared in full
            select _key_hash from tl_checked where _row_reason is null group by _key_hash having count(*) > 1
        ), conflicting as (
            select {key}, true as _conflict from tl_checked where _row_reason is null
            and _key_hash in (select _key_hash from repeated)
            group by {key} having count(distinct {content}) > 1
        )
        insert into tl_bad
        select _line_no, _span, _reason, _raw from (
            select c._line_no, c._span, c._raw,
                   coalesce({erased_checks}c._row_reason, case when d._conflict then {duplicate} end,
                            {fk_checks}) as _reason
            from tl_checked c
            left join conflicting d using ({key})
            {joins}
        ) as judged
        where _reason is not null
        """
    ).format(key=key, content=content, duplicate=_lit("duplicate key with different content in this file"),
             erased_checks=sql.SQL("").join(sql.SQL("{}, ").format(check) for check in erased_checks),
             fk_checks=sql.SQL(", ").join(fk_checks) if fk_checks else sql.SQL("null::text"),
             joins=sql.SQL(" ").join(joins))


def _insert_good(entity: contract.Entity, target: _Target, erased: bool = False) -> sql.Composable:
    """The rows that passed every check; a mention of an erased person (``referred_by``) is nulled."""
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in entity.columns)
    mentions = erasure.mention_columns(entity) if erased else ()
    values = sql.SQL(", ").join(
        sql.SQL("case when {e} then null else {c} end").format(e=erasure.is_erased(sql.Identifier(c.name)),
                                                               c=sql.Identifier(c.name))
        if c.name in mentions else sql.Identifier(c.name) for c in entity.columns)
    return sql.SQL(
        """
        insert into {s}.{t} ({cols}, _extract_date, _line_no, batch_id)
        select {values}, {d}, _line_no, {b} from tl_checked c
        where not exists (select from tl_bad b where b._line_no = c._line_no)
        """).format(s=sql.Identifier(RAW), t=sql.Identifier(entity.name), cols=cols, values=values,
                    d=_lit(target.as_of), b=_lit(target.batch_id))


def _soft_reference_query(entity: contract.Entity, target: _Target, ref: contract.Reference) -> sql.Composable:
    """How many of the batch's rows have a soft reference ``ref`` that points nowhere."""
    return sql.SQL(
        "select count(*) from {s}.{t} x where x.batch_id = {b} and x.{col} is not null "
        "and not exists (select 1 from {s}.{rt} r where r.{k} = x.{col} and r.batch_id in {visible})"
    ).format(s=sql.Identifier(RAW), t=sql.Identifier(entity.name), b=_lit(target.batch_id),
             visible=_visible(target), col=sql.Identifier(ref.column), rt=sql.Identifier(ref.entity),
             k=sql.Identifier(ref.key))


def _soft_reference_misses(conn, entity: contract.Entity, target: _Target) -> dict[str, int]:
    """Count loaded rows whose soft references point nowhere (reported by the raw gate).

    The batch was just inserted and has no statistics yet (they are refreshed after the commit):
    estimated at one row, its anti join ran as a nested loop, one pass over the referenced table
    per row (referred_by of 5,000 changed customers at 1M customers: 27.6 s). No nested loops
    here, for the rest of the file's transaction: a hash anti join is right at every size."""
    conn.execute("set local enable_nestloop = off")
    return {ref.column: conn.execute(_soft_reference_query(entity, target, ref)).fetchone()[0]
            for ref in entity.references if not ref.hard}


def _visible(target: _Target) -> sql.Composable:
    """The batches the run sees (one rule, :mod:`tierline.batches`), as an ``in`` list."""
    return sql.SQL("(select raw.visible_batches({}, {}))").format(_lit(target.as_of), _lit(target.run_id))


# ---------------------------------------------------------------------------------------------
# A date


def load_date(warehouse_url: str, manifest: dict, as_of: date, run_id: str, business_tz: str,
              progress=None, workers: int = WORKERS) -> list[FileLoad]:
    """Load the manifest's files into a new pending batch of ``as_of`` for ``run_id``.

    Nothing loaded becomes visible to other runs until the run publishes (:mod:`tierline.batches`);
    a retry of the same run replaces its earlier pending batch. See :class:`_Schedule` for the order.
    """
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        ensure_raw_schema(conn)
        target = _Target(as_of, run_id, batches.open_batch(conn, as_of, run_id))
    files = {e.name: (e, manifest["files"][e.file_name]) for e in contract.ENTITIES
             if e.file_name in manifest["files"]}
    results = _Schedule(files, workers).run(lambda name: _open(warehouse_url, business_tz), target, progress)
    return [results[e.name] for e in contract.ENTITIES if e.name in results]


def _open(warehouse_url: str, business_tz: str):
    conn = warehouse.open_session(warehouse_url)
    _session_settings(conn, business_tz)
    return conn


class _Schedule:
    """Load files ``workers`` steps at a time, each file's references before it.

    A file is loaded in two steps on its own session (:func:`prepare_file`, then :func:`commit_file`
    in one transaction). The first needs nothing but the file, so it may run while the files it
    references load; the second waits for them. Ready second steps go first (they unblock others),
    then the first steps, in an order that respects references, the most bytes depending on a file
    first (customers -> orders -> order items is the long pole). At most ``workers`` files wait
    between their steps, holding their checked rows in temporary tables.
    """

    def __init__(self, files: dict[str, tuple[contract.Entity, dict]], workers: int):
        self.files, self.workers = files, workers
        self.needs = {name: {r.entity for r in entity.references if r.entity != name and r.entity in files}
                      for name, (entity, _) in files.items()}

    def weight(self, name: str) -> int:
        return self.files[name][1]["bytes"] + sum(
            self.weight(other) for other, needs in self.needs.items() if name in needs)

    def run(self, connect, target: _Target, progress) -> dict[str, FileLoad]:
        to_prepare = sorted(self.files, key=self.weight, reverse=True)
        started: set[str] = set()
        prepared: dict[str, _Prepared] = {}
        done: dict[str, FileLoad] = {}
        conns = {}
        running: dict[Future, tuple[str, str]] = {}

        def prepare(name: str) -> _Prepared:
            entity, entry = self.files[name]
            conns[name] = connect(name)
            with _as_extract_error(entity):
                return prepare_file(conns[name], entity, Path(entry["path"]), entry["sha256"], target)

        def commit(name: str) -> FileLoad:
            entity, _ = self.files[name]
            with _as_extract_error(entity):
                result = commit_file(conns[name], entity, prepared[name], target)
            conns.pop(name).close()
            log.info("loaded %s", asdict(result))
            return result

        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tierline-load") as pool:
                while to_prepare or prepared or running:
                    busy = {name for name, _ in running.values()}
                    ready = [n for n in prepared if n not in busy and self.needs[n] <= done.keys()]
                    while ready and len(running) < self.workers:
                        name = ready.pop(0)
                        running[pool.submit(commit, name)] = (name, "commit")
                    waiting = len(prepared) + sum(step == "prepare" for _, step in running.values())
                    # files start in an order that respects references, so the first to wait can
                    # always go on: what it needs started before it
                    startable = [n for n in to_prepare if self.needs[n] <= started]
                    while startable and len(running) < self.workers and waiting < self.workers:
                        name = startable.pop(0)
                        to_prepare.remove(name)
                        started.add(name)
                        running[pool.submit(prepare, name)] = (name, "prepare")
                        waiting += 1
                    if not running:
                        raise ExtractError(f"cannot order the files {', '.join(prepared)} by their references")
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        name, step = running.pop(future)
                        if step == "prepare":
                            prepared[name] = future.result()
                        else:
                            del prepared[name]
                            done[name] = future.result()
                            if progress:
                                progress(done[name])
        finally:
            for conn in conns.values():
                conn.close()
        return done


@contextmanager
def _as_extract_error(entity: contract.Entity):
    """A value PostgreSQL refused in a way the checks did not foresee is the file's fault, not the
    server's: an ExtractError naming the file, never retried."""
    try:
        yield
    except psycopg.errors.DataError as exc:
        raise ExtractError(f"{entity.file_name}: {exc.diag.message_primary}") from exc


def _session_settings(conn, business_tz: str) -> None:
    """Settings of the loader's own sessions (autocommit: they outlive each file's transaction)."""
    conn.autocommit = True
    conn.execute(sql.SQL("set timezone = {}").format(_lit(business_tz)))
    # the per-file checks hash and materialise whole files; spilling them to disk costs more
    # than the memory
    conn.execute("set work_mem = '256MB'")
    conn.execute("set temp_buffers = '512MB'")
    conn.execute("set datestyle = 'ISO, YMD'")
