"""Erase one person everywhere tierline keeps them: ``tierline forget`` (PIPL Art. 47, GDPR Art. 17).

The person is named by their customer id; their other identifiers (names, phones, emails, CRM
record ids, as every loaded version of their CRM row had them, plus the normalised forms staging
makes of them) are read from ``raw.crm_customers`` first. Then, holding the warehouse like a run
(:func:`tierline.runs.exclusive`), so that no run interleaves:

- **Landing copies** are rewritten without the person's records (their own rows, the lines and
  refunds of their orders, bad lines that name them); every other line stays byte for byte, a
  line of someone else that names them (``referred_by``) loses that field. The copy is stored
  under its new checksum; the landing manifest and every run folder's ``manifest.json`` point to
  it, keep ``sha256_as_landed`` and count ``erased_rows``; ``raw.load_log`` is re-recorded the
  same way (new ``file_sha256``, ``erased_rows``).
- **The warehouse**, every schema (raw, the build schemas kept from failed runs, the published
  schema, ``crm_sync``, anything later): every row whose ``customer_id`` is theirs is deleted,
  raw order lines and refunds of their orders too, quarantined lines naming them are deleted;
  then any text or JSON value left that names them is rewritten (a value that is only their
  identifier becomes null, a longer text gets ``[erased]`` in its place).
- **Run folders, CRM plans and tierline's logs**: a JSON-lines record naming them is dropped,
  other text gets ``[erased]`` in place of their identifiers.
- **A suppression entry**, a keyed hash of the id (SHA-256 over a random key kept in
  ``tierline.erasure_key``): the loader quarantines a later extract row about the person with
  reason ``erased`` and without its raw text, in the same set-based checks as every other reason.
- **An audit row** in ``tierline.erasure_log``: who, when, why (with any identifier of theirs
  replaced), counts per place, the keyed hash; never the id.

Identifiers are matched as whole words (``C00012`` does not match ``C000120``), in SQL and in
Python alike. Published aggregates (``kpi_daily``, ``tier_migration_matrix``,
``account_manager_scorecard``) of dates before the erasure keep the person in their counts and
sums: they hold no personal data, and re-deriving them would need the rows just deleted; every
later run computes them without the person (docs/decisions.md, "Privacy").
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import io
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from tierline import config as config_module
from tierline import contract, csvfile, runs, settings, warehouse
from tierline.errors import ConfigError, ExtractError

ERASED = "erased"  # the quarantine reason of a row about an erased person
MARK = "[erased]"
CUSTOMERS = "crm_customers"
# identifiers shorter than this would match inside unrelated text (two characters: a Chinese name)
MIN_NEEDLE = 2
# A word character on either side of an identifier means it is part of something longer: ASCII
# letters, digits and _, and any non-ASCII character (王伟 is not erased from 王伟明). The same
# text is a regular expression in Python and in PostgreSQL.
WORD = "[0-9A-Za-z_\\u0080-\\uffff]"
TEXT_TYPES = ("text", "character varying", "character")
JSON_TYPES = ("json", "jsonb")
OWN_TABLES = ("erasure_key", "erased_customers", "erasure_log")

DDL = """
create schema if not exists tierline;
create table if not exists tierline.erasure_key (
    singleton boolean primary key default true check (singleton), key text not null);
create table if not exists tierline.erased_customers (
    key_hash text primary key, erased_at timestamptz not null default now());
create table if not exists tierline.erasure_log (
    erasure_id bigint generated always as identity primary key, erased_at timestamptz not null default now(),
    actor text not null, reason text not null, key_hash text not null, touched jsonb not null);
"""


def ensure_schema(conn) -> None:
    """The suppression list, the audit log and the hash key (created once, inside the caller's transaction)."""
    conn.execute("select pg_advisory_xact_lock(hashtext('tierline.erasure.ddl'))")
    conn.execute(DDL)
    conn.execute("insert into tierline.erasure_key (key) values (%s) on conflict do nothing", (secrets.token_hex(32),))


def key_hash(value: sql.Composable) -> sql.Composable:
    """The keyed hash of a customer id, in SQL: the one definition forget and the loader share."""
    return sql.SQL("encode(sha256(convert_to((select key from tierline.erasure_key) || ':' || {}, 'UTF8')), 'hex')"
                   ).format(value)


def is_erased(value: sql.Composable) -> sql.Composable:
    """True when the customer id ``value`` is on the suppression list (a hashed lookup, set-based)."""
    return sql.SQL("({v} is not null and {h} in (select key_hash from tierline.erased_customers))").format(
        v=value, h=key_hash(value))


def any_erased(conn) -> bool:
    return conn.execute("select to_regclass('tierline.erased_customers') is not null and "
                        "exists (select from tierline.erased_customers)").fetchone()[0]


def subject_columns(entity: contract.Entity) -> tuple[str, ...]:
    """The columns of an extract that say which customer a row is about."""
    if entity.name == CUSTOMERS:
        return entity.key
    return tuple(r.column for r in entity.references if r.entity == CUSTOMERS and r.hard)


def mention_columns(entity: contract.Entity) -> tuple[str, ...]:
    """Columns that name another customer (``referred_by``): nulled, not quarantined, when erased."""
    return tuple(r.column for r in entity.references if r.entity == CUSTOMERS and not r.hard)


# -- who the person is ------------------------------------------------------------------------------


@dataclass
class Person:
    customer_id: str
    needles: list[str]  # every identifier, longest first
    order_ids: list[str] = field(default_factory=list)

    @property
    def pattern(self) -> str:
        """A regular expression matching any identifier as a whole word (Python and PostgreSQL alike)."""
        return _whole_words(re.escape(n) for n in self.needles)

    @property
    def json_pattern(self) -> str:
        """The same inside JSON text, where a value is written escaped."""
        return _whole_words(re.escape(json.dumps(n, ensure_ascii=False)[1:-1]) for n in self.needles)

    def regex(self) -> re.Pattern:
        return re.compile(f"{self.pattern}|{self.json_pattern}")

    def scrub(self, text: str) -> str:
        return self.regex().sub(MARK, text)


def _whole_words(alternatives) -> str:
    return f"(?<!{WORD})(?:" + "|".join(alternatives) + f")(?!{WORD})"


def _normalised(value: str) -> set[str]:
    """The forms staging makes of an identifier: trimmed, lower-case email, phone digits and E.164."""
    forms = {value, value.strip(), " ".join(value.split()), value.strip().lower()}
    digits = re.sub(r"\D", "", value.translate({c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)}))
    if len(digits) >= 7:
        forms |= {digits, digits.removeprefix("86"), "+" + digits, "+86" + digits.removeprefix("86")}
    return {f for f in forms if len(f) >= MIN_NEEDLE}


def _columns_of(conn, schema: str, table: str) -> set[str]:
    return {r[0] for r in conn.execute("select column_name from information_schema.columns "
                                       "where table_schema = %s and table_name = %s", (schema, table))}


def find_person(conn, customer_id: str) -> Person:
    needles = {customer_id}
    orders: list[str] = []
    present = _columns_of(conn, "raw", CUSTOMERS)
    wanted = [c for c in ("customer_name", "phone", "email", "crm_record_id") if c in present]
    if wanted:
        rows = conn.execute(sql.SQL("select distinct v from raw.crm_customers, unnest(array[{}]::text[]) v "
                                    "where customer_id = %s and v is not null").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in wanted)), (customer_id,)).fetchall()
        for (value,) in rows:
            needles |= _normalised(value)
    if _columns_of(conn, "raw", "sales_orders"):
        orders = [r[0] for r in conn.execute(
            "select distinct order_id from raw.sales_orders where customer_id = %s", (customer_id,))]
    return Person(customer_id, sorted(needles, key=lambda n: (-len(n), n)), orders)


# -- landing copies ---------------------------------------------------------------------------------


@dataclass
class Rewritten:
    file: str  # contract file name
    old_path: Path
    new_path: Path
    old_sha256: str
    sha256: str
    bytes: int
    rows: int
    erased_rows: int


def _decide(record: csvfile.Record, shape: csvfile.FileShape, entity: contract.Entity, person: Person,
            regex: re.Pattern, text: str) -> list[str] | None | bool:
    """False: keep the lines as they are; None: drop the record; a list: write these fields instead."""
    if record.fields is None:
        return None if regex.search(text) else False
    fields = record.fields

    def value(column: str) -> str | None:
        position = shape.positions.get(column)
        return fields[position - 1].strip() if position else None

    if any(value(c) == person.customer_id for c in subject_columns(entity)):
        return None
    if not subject_columns(entity) and value("order_id") in person.order_ids:
        return None
    if not regex.search(text):
        return False
    changed = list(fields)
    for column in mention_columns(entity):
        if value(column) == person.customer_id:
            changed[shape.positions[column] - 1] = ""
    return [regex.sub(MARK, f) for f in changed]


def _rewrite_file(path: Path, entity: contract.Entity, person: Person, old_sha: str) -> Rewritten | None:
    """Write the file again without the person's records; None when it holds nothing of theirs."""
    regex = person.regex()
    try:
        shape = csvfile.inspect(path, entity)
    except ExtractError:
        shape = None  # a file the loader refused: its lines are judged as text
    codec = shape.codec if shape else "utf-8"
    out = io.BytesIO()
    dropped = changed = 0
    with path.open("rb") as handle:
        lines = iter(handle)
        out.write(next(lines, b""))
        if shape is None:
            for raw in lines:
                if regex.search(raw.decode(codec, "replace")):
                    dropped += 1
                else:
                    out.write(raw)
        else:
            for record in csvfile.records(path, shape):
                raw = b"".join(next(lines) for _ in range(record.span))
                text = raw.decode(codec, "replace")
                decision = _decide(record, shape, entity, person, regex, text)
                if decision is False:
                    out.write(raw)
                elif decision is None:
                    dropped += 1
                else:
                    ending = "\r\n" if raw.endswith(b"\r\n") else "\n" if raw.endswith(b"\n") else ""
                    buffer = io.StringIO()
                    csv.writer(buffer, lineterminator=ending).writerow(decision)
                    out.write(buffer.getvalue().encode(codec))
                    changed += 1
            out.writelines(lines)
    if not dropped and not changed:
        return None
    data = out.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    stem = path.name.split(".", 1)[0]
    target = path.with_name(f"{stem}.{sha[:16]}.csv")
    tmp = path.with_name(f".{stem}.{os.getpid()}.erasing")
    tmp.write_bytes(data)
    tmp.chmod(0o400)
    tmp.replace(target)
    if target != path:
        path.unlink()
    rows = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0) - 1
    return Rewritten(entity.file_name, path, target, old_sha, sha, len(data), max(rows, 0), dropped)


def rewrite_landing(area: Path, person: Person) -> list[Rewritten]:
    """Every landing copy (in a manifest or not: a corrected file lands beside the old one)."""
    done = []
    for path in sorted(area.glob("*/*/*.csv")):
        entity = contract.BY_FILE.get(path.name.split(".", 1)[0] + ".csv")
        if entity is None:
            continue
        result = _rewrite_file(path, entity, person, hashlib.sha256(path.read_bytes()).hexdigest())
        if result:
            done.append(result)
    return done


def _update_manifest(path: Path, rewritten: dict[str, Rewritten]) -> bool:
    manifest = json.loads(path.read_text())
    touched = False
    for entry in manifest.get("files", {}).values():
        result = rewritten.get(entry.get("path"))
        if result is None:
            continue
        entry.setdefault("sha256_as_landed", entry["sha256"])
        entry.update(path=str(result.new_path), sha256=result.sha256, bytes=result.bytes, rows=result.rows,
                     erased_rows=entry.get("erased_rows", 0) + result.erased_rows)
        touched = True
    if touched:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.erasing")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        tmp.replace(path)
    return touched


# -- run folders, plans, logs -----------------------------------------------------------------------


def state_folders() -> list[Path]:
    """Where tierline writes files that may name a customer, besides the landing copies."""
    home = settings.home()
    return [settings.runs_dir(), home / "crm", home / "logs", home / "airflow" / "logs"]


def scrub_files(folders: list[Path], person: Person) -> int:
    """Drop the JSON-lines records naming the person and mask them in every other text file."""
    regex = person.regex()
    changed = 0
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if not path.is_file() or path.is_symlink():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # not text tierline wrote
            if not regex.search(text):
                continue
            if path.suffix == ".jsonl":
                text = "".join(line for line in text.splitlines(keepends=True) if not regex.search(line))
            else:
                text = regex.sub(MARK, text)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.erasing")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            changed += 1
    return changed


# -- the warehouse ----------------------------------------------------------------------------------


def _tables(conn) -> dict[tuple[str, str], dict[str, tuple[str, bool]]]:
    """Every ordinary table of every schema but the system's and erasure's own: column -> (type, not null)."""
    rows = conn.execute(
        """
        select n.nspname, c.relname, a.attname, t.typname, format_type(a.atttypid, null), a.attnotnull
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        join pg_type t on t.oid = a.atttypid
        where c.relkind in ('r', 'p') and not c.relispartition
          and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%%'
          and not (n.nspname = 'tierline' and c.relname = any(%s))
        order by 1, 2, a.attnum
        """, (list(OWN_TABLES),)).fetchall()
    tables: dict[tuple[str, str], dict[str, tuple[str, bool]]] = {}
    for schema, table, column, _typname, data_type, not_null in rows:
        tables.setdefault((schema, table), {})[column] = (data_type, not_null)
    return tables


def _name(schema: str, table: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def erase_rows(conn, person: Person) -> dict[str, dict[str, int]]:
    """Delete the person's rows everywhere, then rewrite every value that still names them."""
    tables = _tables(conn)
    deleted: dict[str, int] = {}
    rewritten: dict[str, int] = {}

    def count(into: dict[str, int], schema: str, table: str, rows: int) -> None:
        if rows:
            into[f"{schema}.{table}"] = into.get(f"{schema}.{table}", 0) + rows

    if person.order_ids:
        for (schema, table), columns in tables.items():
            if "order_id" in columns and "customer_id" not in columns:
                count(deleted, schema, table, conn.execute(sql.SQL("delete from {} where order_id::text = any(%s)")
                                                           .format(_name(schema, table)), (person.order_ids,)).rowcount)
    for (schema, table), columns in tables.items():
        if "customer_id" in columns:
            count(deleted, schema, table, conn.execute(sql.SQL("delete from {} where customer_id::text = %s").format(
                _name(schema, table)), (person.customer_id,)).rowcount)
    quarantined = {}
    if ("raw", "quarantine") in tables:
        for batch_id, file in conn.execute(
                "delete from raw.quarantine where raw_text ~ %(p)s or reason ~ %(p)s returning batch_id, file",
                {"p": person.pattern}):
            quarantined[(batch_id, file)] = quarantined.get((batch_id, file), 0) + 1
        count(deleted, "raw", "quarantine", sum(quarantined.values()))
    whole = f"^{person.pattern}$"
    for (schema, table), columns in tables.items():
        texts = [c for c, (t, _) in columns.items() if t in TEXT_TYPES or t.startswith("character")]
        jsons = [c for c, (t, _) in columns.items() if t in JSON_TYPES]
        if not texts and not jsons:
            continue
        sets, wheres = [], []
        for column in texts:
            c = sql.Identifier(column)
            nullable = not columns[column][1]
            sets.append(sql.SQL("{c} = case when {null} and {c} ~ %(whole)s then null "
                                "else regexp_replace({c}, %(p)s, %(mark)s, 'g') end").format(
                c=c, null=sql.SQL("true" if nullable else "false")))
            wheres.append(sql.SQL("{} ~ %(p)s").format(c))
        for column in jsons:
            c = sql.Identifier(column)
            data_type = sql.SQL(columns[column][0])
            sets.append(sql.SQL("{c} = regexp_replace({c}::text, %(jp)s, %(mark)s, 'g')::{t}").format(c=c, t=data_type))
            wheres.append(sql.SQL("{}::text ~ %(jp)s").format(c))
        statement = sql.SQL("update {} set {} where {}").format(
            _name(schema, table), sql.SQL(", ").join(sets), sql.SQL(" or ").join(wheres))
        count(rewritten, schema, table, conn.execute(statement, {
            "p": person.pattern, "jp": person.json_pattern, "whole": whole, "mark": MARK}).rowcount)
    return {"rows_deleted": deleted, "values_rewritten": rewritten}


def rerecord_load_log(conn, rewritten: list[Rewritten]) -> int:
    """The load log names the landing copy as it is now: its checksum, and how many rows were erased from it."""
    updated = 0
    for r in rewritten:
        updated += conn.execute(
            "update raw.load_log set file_sha256 = %s, erased_rows = erased_rows + %s "
            "where file = %s and file_sha256 = %s", (r.sha256, r.erased_rows, r.file, r.old_sha256)).rowcount
    return updated


# -- forget -----------------------------------------------------------------------------------------


def default_actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def forget(customer_id: str, reason: str, *, actor: str | None = None, warehouse_url: str | None = None) -> dict:
    """Erase the person (see the module docstring); returns the audit record (no personal data)."""
    customer_id = (customer_id or "").strip()
    if not customer_id or csvfile.CONTROL_CHARS.search(customer_id):
        raise ConfigError("forget: --customer-id must be a customer id as the extracts carry it")
    if not (reason or "").strip():
        raise ConfigError("forget: --reason is required (the request it fulfils, e.g. a ticket number)")
    cfg = config_module.load()
    url = warehouse_url or warehouse.url()
    with runs.exclusive(url, cfg.runs, "forget"), warehouse.connect(url) as conn:
        with conn.transaction():
            from tierline.load import ensure_raw_schema

            ensure_raw_schema(conn)  # the raw tables, the load log's erased_rows and erasure's own tables
            person = find_person(conn, customer_id)
        area = settings.landing_area()
        rewritten = rewrite_landing(area, person)
        by_path = {str(r.old_path): r for r in rewritten}
        manifests = [p for p in area.glob("*/*/manifest.json") if _update_manifest(p, by_path)]
        run_manifests = [p for p in settings.runs_dir().glob("*/*/manifest.json") if _update_manifest(p, by_path)]
        scrubbed = scrub_files(state_folders(), person)
        with conn.transaction():
            touched = erase_rows(conn, person)
            load_log = rerecord_load_log(conn, rewritten)
            conn.execute(sql.SQL("insert into tierline.erased_customers (key_hash) select {} on conflict do nothing")
                         .format(key_hash(sql.Literal(customer_id))))
            touched.update(
                load_log_rows_rerecorded=load_log, landing_files_rewritten=len(rewritten),
                landing_rows_erased=sum(r.erased_rows for r in rewritten),
                landing_manifests_updated=len(manifests), run_manifests_updated=len(run_manifests),
                state_files_scrubbed=scrubbed, identifiers_matched=len(person.needles),
                orders=len(person.order_ids))
            erasure_id, erased_at, hashed = conn.execute(sql.SQL(
                "insert into tierline.erasure_log (actor, reason, key_hash, touched) values (%s, %s, {}, %s::jsonb) "
                "returning erasure_id, erased_at, key_hash").format(key_hash(sql.Literal(customer_id))),
                (actor or default_actor(), person.scrub(reason.strip()), json.dumps(touched))).fetchone()
    return {"erasure_id": erasure_id, "erased_at": erased_at.isoformat(), "key_hash": hashed, "touched": touched}
