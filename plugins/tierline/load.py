"""Load landed extracts into the ``raw`` schema with COPY, quarantining every bad row.

Python only reads each file's header, detects its encoding and checks that it is readable; the
rows themselves travel to PostgreSQL untouched by one ``COPY`` per file and are split, typed and
checked there in set-based SQL generated from :mod:`tierline.contract`. A row that breaks the
contract goes to ``raw.quarantine`` with its file, line, raw text and reason; everything else goes
to ``raw.<entity>``. Each load of a date is a pending batch (:mod:`tierline.batches`) that no other
run sees until this run publishes; each file is loaded in its own transaction, and a retry of the
run replaces its pending batch, so re-running a date is idempotent.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from psycopg import sql

from tierline import batches, contract, warehouse
from tierline.errors import ExtractError

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
RAW = "raw"
# Control characters that never occur in a text extract: COPY then hands over each physical line
# as one value, so the raw text of a bad row survives byte for byte.
LINE_COPY_OPTIONS = "format csv, delimiter E'\\x01', quote E'\\x02', header true"
PG_ENCODING = {"utf-8": "UTF8", "utf-8-sig": "UTF8", "gb18030": "GB18030"}
CSV_FIELD = r'(?:"(?:[^"]|"")*"|[^,"]*)'
CSV_LINE = f"^{CSV_FIELD}(?:,{CSV_FIELD})*$"
NUMERIC = r"^[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)?(\.[0-9]+)?$"


@dataclass
class FileFormat:
    encoding: str
    header: list[str]
    positions: dict[str, int]  # contract column -> 1-based field position
    ignored_columns: list[str]


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


# ---------------------------------------------------------------------------------------------
# Reading a file's shape


def detect_encoding(path: Path, name: str) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as such, else GB18030."""
    with path.open("rb") as handle:
        head = handle.read(3)
    if head == codecs.BOM_UTF8:
        candidates = ["utf-8-sig"]
    else:
        candidates = ["utf-8", "gb18030"]
    for encoding in candidates:
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        offset = 0
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    decoder.decode(chunk)
                    offset += len(chunk)
                decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError as exc:
            failure = offset + exc.start
    raise ExtractError(
        f"{name}: cannot decode as {' or '.join(candidates)} (first bad byte at offset {failure}); "
        "re-export the file as UTF-8 or GB18030"
    )


def _read_head_and_tail(path: Path, encoding: str) -> tuple[str, bytes]:
    with path.open("rb") as handle:
        first = handle.readline()
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        handle.seek(max(size - 65536, 0))
        tail = handle.read()
    return first.decode(encoding), tail


def inspect_file(path: Path, entity: contract.Entity) -> FileFormat:
    """Check that a file is readable under the contract; raise ExtractError naming the problem."""
    if path.stat().st_size == 0:
        raise ExtractError(f"{entity.file_name}: the file is empty (no header line)")
    encoding = detect_encoding(path, entity.file_name)
    first_line, tail = _read_head_and_tail(path, encoding)
    header = next(csv.reader([first_line.lstrip("\ufeff").rstrip("\r\n")]))
    names = [h.strip().strip("\u3000").lower() for h in header]
    missing = [c for c in entity.required if c not in names]
    if missing:
        for delimiter in (";", "\t", "|"):
            if len(names) == 1 and delimiter in first_line:
                raise ExtractError(
                    f"{entity.file_name}: the header is delimited by {delimiter!r}, the contract requires ','"
                )
        raise ExtractError(
            f"{entity.file_name}: missing required column(s) {', '.join(missing)}; "
            f"header has {', '.join(names) or 'nothing'}"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1 and n in {c.name for c in entity.columns}})
    if duplicated:
        raise ExtractError(f"{entity.file_name}: column(s) {', '.join(duplicated)} appear more than once")
    if tail and not tail.endswith(b"\n"):
        last = tail.rsplit(b"\n", 1)[-1].decode(encoding, errors="replace")
        if last.count('"') % 2 or len(next(csv.reader([last]), [])) < len(names):
            raise ExtractError(
                f"{entity.file_name}: the file is truncated: its last line has no line end and is "
                f"incomplete ({last[:60]!r}); re-send the whole file"
            )
    known = {c.name for c in entity.columns}
    return FileFormat(
        encoding=encoding,
        header=names,
        positions={n: i + 1 for i, n in enumerate(names) if n in known},
        ignored_columns=[n for n in names if n not in known],
    )


# ---------------------------------------------------------------------------------------------
# DDL


def _pg_type(column: contract.Column) -> str:
    return {"int": "bigint", "numeric": "numeric", "timestamp": "timestamptz", "date": "date"}.get(
        column.type, "text"
    )


def ensure_raw_schema(conn) -> None:
    """Create the raw tables, quarantine, load log and batches, and the parsing helpers (idempotent)."""
    ident = sql.Identifier
    conn.execute(sql.SQL("create schema if not exists {}").format(ident(RAW)))
    for entity in contract.ENTITIES:
        columns = [sql.SQL("{} {}").format(ident(c.name), sql.SQL(_pg_type(c))) for c in entity.columns]
        conn.execute(
            sql.SQL(
                "create table if not exists {}.{} ({}, _extract_date date not null, _line_no bigint not null, "
                "_file_sha256 text not null, batch_id bigint not null)"
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
            loaded_at timestamptz default now(), primary key (batch_id, file))
        """
    )
    batches.ensure_schema(conn)
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
    conn.execute(
        sql.SQL(
            """
            create or replace function raw.tl_csv_fields(line text) returns text[]
            language sql immutable parallel safe as $$
                select array_agg(case when m[1] like '"%' then replace(substr(m[1], 2, length(m[1]) - 2), '""', '"')
                                      else m[1] end order by n)
                from regexp_matches(line, '(?:^|,)("(?:[^"]|"")*"|[^,"]*)', 'g') with ordinality as r(m, n)
            $$
            """
        )
    )


# ---------------------------------------------------------------------------------------------
# The per-file load


def _lit(value) -> sql.Literal:
    return sql.Literal(value)


def _value(position: int | None) -> sql.Composable:
    """The trimmed field at a position, with '' and the literal NULL as null."""
    if position is None:
        return sql.SQL("null::text")
    return sql.SQL("nullif(nullif(btrim(_f[{}], E' \\t'), ''), 'NULL')").format(sql.Literal(position))


def _checks(entity: contract.Entity, fmt: FileFormat, as_of: date) -> list[sql.Composable]:
    """Row-level checks in order; the first failing one is the row's quarantine reason."""
    ident = sql.Identifier
    n_fields = len(fmt.header)
    checks: list[sql.Composable] = [
        sql.SQL("case when _f is null and coalesce(_line, '') = '' then 'blank line' end"),
        sql.SQL("case when _f is null then 'malformed CSV quoting' end"),
        sql.SQL("case when cardinality(_f) <> {n} then format('expected %s fields, found %s', {n}, cardinality(_f)) end")
        .format(n=_lit(n_fields)),
    ]
    for name in entity.key:
        checks.append(sql.SQL("case when {c} is null then {m} end").format(
            c=ident(name), m=_lit(f"missing primary key {name}")))
    for column in entity.columns:
        c = ident(column.name)
        if not column.nullable and column.name not in entity.key:
            checks.append(sql.SQL("case when {c} is null then {m} end").format(
                c=c, m=_lit(f"missing required value in {column.name}")))
        valid = _valid(column)
        if valid is not None:
            checks.append(sql.SQL("case when {c} is not null and not {v} then format({m}, {c}) end").format(
                c=c, v=valid, m=_lit(f"unparsable {column.type} in {column.name}: %s")))
        if column.choices:
            checks.append(sql.SQL("case when {c} is not null and lower({c}) <> all({v}) then format({m}, {c}) end")
                          .format(c=c, v=_lit(list(column.choices)),
                                  m=_lit(f"{column.name} %s is not one of {', '.join(column.choices)}")))
        typed = _typed(column)
        if column.min is not None:
            checks.append(sql.SQL("case when {t} < {lo} then format({m}, {c}) end").format(
                t=typed, lo=_lit(column.min), c=c,
                m=_lit(f"{column.name} %s is below the minimum {column.min:g}")))
        if column.max is not None:
            checks.append(sql.SQL("case when {t} > {hi} then format({m}, {c}) end").format(
                t=typed, hi=_lit(column.max), c=c,
                m=_lit(f"{column.name} %s is above the maximum {column.max:g}")))
    for name in entity.not_after_run_date:
        checks.append(sql.SQL("case when {t} >= ({d}::date + 1)::timestamptz then format({m}, {c}) end").format(
            t=_typed(entity.column(name)), d=_lit(as_of), c=ident(name),
            m=_lit(f"{name} %s is after the extract date {as_of.isoformat()}")))
    return checks


def _valid(column: contract.Column) -> sql.Composable | None:
    """Whether a field parses as its contract type.

    A character-set guard keeps out what PostgreSQL would parse but the contract does not allow
    (`now`, `epoch`, `NaN`, `Infinity`, exponents, month names); PostgreSQL's own parser then
    decides the rest (2025-02-30 is not a date). Full regular expressions cost several times more
    per field, so the thousands-separator pattern is only checked on values that have a comma.
    """
    c = sql.Identifier(column.name)
    if column.type == "int":
        return sql.SQL("(translate({c}, '0123456789+-', '') = '' and raw.tl_is_valid({c}, 'bigint'))").format(c=c)
    if column.type == "numeric":
        return sql.SQL(
            "(translate({c}, '0123456789+-.,', '') = '' and (strpos({c}, ',') = 0 or {c} ~ {p}) "
            "and raw.tl_is_valid(replace({c}, ',', ''), 'numeric'))").format(c=c, p=_lit(NUMERIC))
    if column.type == "timestamp":
        return sql.SQL(
            "(translate({c}, '0123456789-:.TZtz +', '') = '' and substr({c}, 5, 1) = '-' and substr({c}, 8, 1) = '-' "
            "and raw.tl_is_valid({c}, 'timestamptz'))").format(c=c)
    if column.type == "date":
        return sql.SQL(
            "(length({c}) = 10 and translate({c}, '0123456789-', '') = '' and raw.tl_is_valid({c}, 'date'))"
        ).format(c=c)
    return None


def _typed(column: contract.Column) -> sql.Composable:
    c = sql.Identifier(column.name)
    if column.type == "int":
        return sql.SQL("{}::bigint").format(c)
    if column.type == "numeric":
        return sql.SQL("replace({}, ',', '')::numeric").format(c)
    if column.type == "timestamp":
        return sql.SQL("{}::timestamptz").format(c)
    if column.type == "date":
        return sql.SQL("{}::date").format(c)
    if column.choices:
        return sql.SQL("lower({})").format(c)
    return c


def load_file(conn, entity: contract.Entity, path: Path, sha256: str, as_of: date, run_id: str,
              batch_id: int) -> FileLoad:
    started = time.perf_counter()
    ident = sql.Identifier
    fmt = inspect_file(path, entity)
    conn.execute("drop table if exists tl_lines, tl_checked")
    conn.execute("create temp table tl_lines (_line_no bigint generated always as identity (start with 2), _line text)")
    copy = sql.SQL("copy tl_lines (_line) from stdin with ({opts}, encoding {enc})").format(
        opts=sql.SQL(LINE_COPY_OPTIONS), enc=_lit(PG_ENCODING[fmt.encoding]))
    with conn.cursor().copy(copy) as stream, path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            stream.write(chunk)
    # without statistics the planner takes the fresh temp table for a few rows and joins it to
    # itself and to the referenced tables with nested loops: quadratic in the file's size
    conn.execute("analyze tl_lines")

    values = sql.SQL(", ").join(
        sql.SQL("{} as {}").format(_value(fmt.positions.get(c.name)), ident(c.name)) for c in entity.columns
    )
    key = sql.SQL(", ").join(ident(k) for k in entity.key)
    content = sql.SQL("row({})::text").format(sql.SQL(", ").join(ident(c.name) for c in entity.columns))
    checks = sql.SQL(", ").join(_checks(entity, fmt, as_of))

    joins, fk_checks = [], []
    for i, ref in enumerate(r for r in entity.references if r.hard):
        alias = ident(f"ref{i}")
        joins.append(sql.SQL(
            "left join (select distinct {k} as ref_key from {s}.{t} where batch_id in {visible}) {a} "
            "on {a}.ref_key = c.{col}"
        ).format(k=ident(ref.key), s=ident(RAW), t=ident(ref.entity), visible=_visible(as_of, run_id), a=alias,
                 col=ident(ref.column)))
        fk_checks.append(sql.SQL("case when c.{col} is not null and {a}.ref_key is null then format({m}, c.{col}) end")
                         .format(col=ident(ref.column), a=alias,
                                 m=_lit(f"unknown {ref.column} %s (not in {ref.entity})")))

    conn.execute(sql.SQL(
        """
        create temp table tl_checked as
        -- the split runs once per line (offset 0 keeps the planner from inlining it into every
        -- field), and the values are materialised for the same reason: every check reads them
        with valued as materialized (
            select _line_no, _line, _f, {values}
            from tl_lines
            cross join lateral (
                select case when _line is null or _line = '' then null
                            when strpos(_line, '"') = 0 then string_to_array(_line, ',')
                            when _line ~ {csv_line} then raw.tl_csv_fields(_line)
                       end as _f
                offset 0
            ) as parsed
        ), first_check as (
            select *, coalesce({checks}) as _reason0 from valued
        ), repeated as (
            -- a hash pass finds the few repeated keys; only their rows are compared in full
            select {key} from first_check where _reason0 is null group by {key} having count(*) > 1
        ), conflicting as (
            select {key} from first_check inner join repeated using ({key}) where _reason0 is null
            group by {key} having count(distinct {content}) > 1
        )
        select c.*, coalesce(c._reason0,
                             case when d.conflict then 'duplicate key with different content in this file' end,
                             {fk_checks}) as _reason
        from first_check c
        left join (select {key}, true as conflict from conflicting) d using ({key})
        {joins}
        """
    ).format(csv_line=_lit(CSV_LINE), values=values, checks=checks, key=key, content=content,
             fk_checks=sql.SQL(", ").join(fk_checks) if fk_checks else sql.SQL("null"),
             joins=sql.SQL(" ").join(joins)))

    target_columns = sql.SQL(", ").join(ident(c.name) for c in entity.columns)
    typed = sql.SQL(", ").join(_typed(c) for c in entity.columns)
    loaded = conn.execute(sql.SQL(
        "insert into {s}.{t} ({cols}, _extract_date, _line_no, _file_sha256, batch_id) "
        "select {typed}, {d}, _line_no, {sha}, {b} from tl_checked where _reason is null"
    ).format(s=ident(RAW), t=ident(entity.name), cols=target_columns, typed=typed, d=_lit(as_of),
             sha=_lit(sha256), b=_lit(batch_id))).rowcount
    quarantined = conn.execute(sql.SQL(
        "insert into raw.quarantine (batch_id, extract_date, file, line_no, raw_text, reason, run_id) "
        "select {b}, {d}, {f}, _line_no, _line, _reason, {r} from tl_checked where _reason is not null"
    ).format(b=_lit(batch_id), d=_lit(as_of), f=_lit(entity.file_name), r=_lit(run_id))).rowcount
    read = conn.execute("select count(*) from tl_lines").fetchone()[0]
    soft = _soft_reference_misses(conn, entity, as_of, run_id, batch_id)
    result = FileLoad(entity.file_name, fmt.encoding, read, loaded, quarantined, fmt.ignored_columns, soft,
                      round(time.perf_counter() - started, 3))
    if read != loaded + quarantined:
        raise ExtractError(
            f"{entity.file_name}: rows read ({read}) != rows loaded ({loaded}) + quarantined ({quarantined})"
        )
    conn.execute(
        "insert into raw.load_log (batch_id, extract_date, file, file_sha256, encoding, rows_read, rows_loaded, "
        "rows_quarantined, ignored_columns, soft_reference_misses, run_id) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
        (batch_id, as_of, entity.file_name, sha256, fmt.encoding, read, loaded, quarantined, fmt.ignored_columns,
         json.dumps(soft), run_id),
    )
    conn.execute("drop table if exists tl_lines, tl_checked")
    return result


def _soft_reference_misses(conn, entity: contract.Entity, as_of: date, run_id: str, batch_id: int) -> dict[str, int]:
    """Count loaded rows whose soft references point nowhere (reported by the raw gate)."""
    misses = {}
    for ref in (r for r in entity.references if not r.hard):
        query = sql.SQL(
            "select count(*) from {s}.{t} x where x.batch_id = {b} and x.{col} is not null "
            "and not exists (select 1 from {s}.{rt} r where r.{k} = x.{col} and r.batch_id in {visible})"
        ).format(s=sql.Identifier(RAW), t=sql.Identifier(entity.name), b=_lit(batch_id),
                 visible=_visible(as_of, run_id),
                 col=sql.Identifier(ref.column), rt=sql.Identifier(ref.entity), k=sql.Identifier(ref.key))
        misses[ref.column] = conn.execute(query).fetchone()[0]
    return misses


def load_date(warehouse_url: str, manifest: dict, as_of: date, run_id: str, business_tz: str,
              progress=None) -> list[FileLoad]:
    """Load the manifest's files into a new pending batch of ``as_of`` for ``run_id``.

    Nothing loaded becomes visible to other runs until the run publishes (:mod:`tierline.batches`);
    a retry of the same run replaces its earlier pending batch.
    """
    with warehouse.connect(warehouse_url) as conn:
        _session_settings(conn, business_tz)
        with conn.transaction():
            ensure_raw_schema(conn)
            batch_id = batches.open_batch(conn, as_of, run_id)
        results = []
        for entity in contract.ENTITIES:
            entry = manifest["files"].get(entity.file_name)
            if entry is None:
                continue
            with conn.transaction():
                result = load_file(conn, entity, Path(entry["path"]), entry["sha256"], as_of, run_id, batch_id)
                if result.rows_read != entry["rows"]:
                    raise ExtractError(
                        f"{entity.file_name}: COPY read {result.rows_read} rows but the landed file has "
                        f"{entry['rows']} lines; a field probably contains a line break or a NUL byte"
                    )
            log.info("loaded %s", asdict(result))
            if progress:
                progress(result)
            results.append(result)
    return results


def _session_settings(conn, business_tz: str) -> None:
    """Settings of the loader's own sessions (autocommit: they outlive each file's transaction)."""
    conn.autocommit = True
    conn.execute(sql.SQL("set timezone = {}").format(_lit(business_tz)))
    # the per-file checks hash and materialise whole files; spilling them to disk costs more
    # than the memory (one backend, well under the 2 GiB budget)
    conn.execute("set work_mem = '256MB'")
    conn.execute("set temp_buffers = '512MB'")
    conn.execute("set datestyle = 'ISO, YMD'")


def _visible(as_of: date, run_id: str) -> sql.Composable:
    """The batches a run sees (one rule, :mod:`tierline.batches`), as an ``in`` list."""
    return sql.SQL("(select raw.visible_batches({}, {}))").format(_lit(as_of), _lit(run_id))
