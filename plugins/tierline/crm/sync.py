"""Reverse ETL: the published tiers, lifecycle stages and next actions into the CRM, changed rows only.

A run has three steps, each one a task of the ``crm_sync`` DAG and each safe to repeat:

1. **plan** (``plan`` + ``save_plan``): read the latest published rows, map them to CRM values
   (``config/crm.yml``), read what changed in the CRM since the last run (``iter_modified`` from
   a watermark, stepping back one second), record a person's edits of protected fields as
   conflicts, and put one write per record whose values differ from what the CRM holds for us
   into ``crm_sync.outbox`` (only the fields that differ). One transaction.
2. **push** (``push``): send the outbox in upserts of at most ``push.batch_size`` records keyed on
   the external id field. After each upsert, one transaction updates ``record_state`` for the
   records the CRM confirmed, moves the ones it refused to ``dead_letters`` and removes both from
   the outbox. A batch the CRM refuses as a whole is split in halves until the bad record is
   alone. When the CRM keeps answering 429 or 5xx after the connector's retries (or the credit
   budget is spent), the push stops; what is left stays in the outbox for the next attempt.
3. **reconcile** (``reconcile``): read back the records modified since the run's read point and
   report every field whose CRM value differs from what the run wrote (``crm_sync.reconciliation``).

Guarantees: a run with nothing changed sends no write; a killed run re-run converges (the CRM
upsert is idempotent by external id, state changes only after the CRM confirmed, and a write the
CRM took but the state missed is recognised by the next read and not re-sent); a person's edit of
a protected field is never overwritten silently. See docs/crm.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from tierline import exports, settings, warehouse
from tierline.crm import (
    CrmBatchRejected,
    CrmBudgetExceeded,
    CrmConnector,
    CrmProtocolError,
    CrmRateLimited,
    CrmUnavailable,
    RecordResult,
    parse_crm_time,
    state,
)
from tierline.crm import config as crm_config
from tierline.crm.config import RECORD_ID, Settings, UnmappedValue
from tierline.crm.state import SCHEMA, bulk, dumps

log = logging.getLogger(__name__)

ONE_SECOND = timedelta(seconds=1)
_MISSING = object()
_OUTBOX_PAGE = 1000
_STOPPING_ERRORS = (CrmRateLimited, CrmUnavailable, CrmBudgetExceeded)


# -- values ------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal as CRM values: empty string is null, numbers compare by value (the CRM returns floats)."""
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _empty(value: Any) -> bool:
    return value is _MISSING or value in (None, "")


def _checksum(desired: dict[str, Any], held: Sequence[str], crm_id: str | None) -> str:
    text = dumps([desired, sorted(held), crm_id], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _editor(record: dict[str, Any]) -> tuple[str | None, str | None]:
    by = record.get("Modified_By") or {}
    return (str(by["id"]) if by.get("id") is not None else None), by.get("name")


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class Change:
    customer_id: str
    action: str  # create | update
    crm_id: str | None
    payload: dict[str, Any]  # what the write sends: the record id (update) or the match field (create)
    written: dict[str, Any]  # the mapped fields in the payload
    previous: dict[str, Any]  # what the CRM held for those fields, as far as we know
    confirmed: dict[str, Any]  # synced_values after the CRM confirms: written plus fields already equal
    crm_values: dict[str, Any]  # crm_values after the CRM confirms
    checksum: str


@dataclass
class Plan:
    run_id: str
    module: str
    mode: str
    as_of: date | None
    integration_user_id: str
    fields_hash: str
    full_read: bool
    watermark: datetime | None
    source_rows: int = 0
    matched: int = 0
    changes: list[Change] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)  # state-only updates: nothing to send
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    index_rows: list[dict[str, Any]] = field(default_factory=list)  # CRM records read: id, match value
    unmatched: list[dict[str, Any]] = field(default_factory=list)  # no CRM record (update mode: not written)
    ambiguous: list[dict[str, Any]] = field(default_factory=list)  # the key finds several records: not written
    new_conflicts: list[dict[str, Any]] = field(default_factory=list)
    conflict_updates: list[dict[str, Any]] = field(default_factory=list)
    agreed_conflicts: list[int] = field(default_factory=list)
    mapping_errors: list[dict[str, Any]] = field(default_factory=list)
    held_by_dead_letters: int = 0
    held_fields: int = 0
    held_records: int = 0
    crm_records_read: int = 0

    def summary(self) -> dict[str, Any]:
        creates = sum(1 for c in self.changes if c.action == "create")
        skipped = len(self.unmatched) + len(self.ambiguous) if self.mode == "update" else len(self.ambiguous)
        return {
            "run_id": self.run_id,
            "as_of_date": self.as_of.isoformat() if self.as_of else None,
            "mode": self.mode,
            "source_rows": self.source_rows,
            "matched": self.matched,
            "creates": creates,
            "updates": len(self.changes) - creates,
            "unchanged": (self.source_rows - len(self.changes) - len(self.mapping_errors) - self.held_by_dead_letters
                          - skipped),
            "skipped_unmatched": len(self.unmatched) if self.mode == "update" else 0,
            "skipped_ambiguous": len(self.ambiguous),
            "new_conflicts": len(self.new_conflicts),
            "records_held_by_conflicts": self.held_records,
            "fields_held_by_conflicts": self.held_fields,
            "conflicts_resolved_by_agreement": len(self.agreed_conflicts),
            "mapping_errors": len(self.mapping_errors),
            "held_by_dead_letters": self.held_by_dead_letters,
            "crm_records_read": self.crm_records_read,
            "full_read": self.full_read,
            "integration_user_id": self.integration_user_id,
        }


def _source_query(cfg: Settings) -> sql.Composed:
    ident, literal = sql.Identifier, sql.Literal
    alias = {"customer_tier": "t", "customer_lifecycle": "l", "customer_value": "v"}
    columns = [sql.SQL("t.customer_id, t.as_of_date")]
    columns += [sql.SQL("{}.{}").format(ident(alias[table]), ident(column))
                for column, table in cfg.source_columns.items()]
    whens = []
    for rule in cfg.action_rules:
        conditions = []
        if rule.tier:
            conditions.append(sql.SQL("t.tier = any({}::text[])").format(literal(list(rule.tier))))
        if rule.lifecycle_stage:
            conditions.append(sql.SQL("l.lifecycle_stage = any({}::text[])").format(literal(list(rule.lifecycle_stage))))
        if rule.min_churn_risk is not None:
            conditions.append(sql.SQL("l.churn_risk >= {}").format(literal(rule.min_churn_risk)))
        whens.append(sql.SQL("when {} then {}").format(sql.SQL(" and ").join(conditions), literal(rule.action)))
    default = literal(cfg.raw.push.next_action.default)
    next_action = (sql.SQL("case {} else {}::text end").format(sql.SQL(" ").join(whens), default) if whens
                   else sql.SQL("{}::text").format(default))
    columns.append(sql.SQL("{} as next_action").format(next_action))
    schema = ident(cfg.publish_schema)
    joins = [sql.SQL("left join {}.{} as {} on {}.customer_id = t.customer_id and {}.as_of_date = t.as_of_date").format(
        schema, ident(table), ident(alias[table]), ident(alias[table]), ident(alias[table]))
        for table in ("customer_lifecycle", "customer_value") if table in cfg.source_columns.values()]
    return sql.SQL(
        "select {columns} from {schema}.customer_tier as t {joins} "
        "where t.as_of_date = coalesce(%(as_of)s::date, (select max(as_of_date) from {schema}.customer_tier)) "
        "order by t.customer_id").format(
        columns=sql.SQL(", ").join(columns), schema=schema, joins=sql.SQL(" ").join(joins))


def source_rows(conn, cfg: Settings, as_of: date | None = None) -> list[dict[str, Any]]:
    """The published rows of ``as_of`` (default: the latest published date), with ``next_action``."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_source_query(cfg), {"as_of": as_of}).fetchall()


def read_fields(cfg: Settings) -> list[str]:
    by_field = [] if cfg.match_field == RECORD_ID else [cfg.match_field]
    return [*by_field, *cfg.crm_fields]


def _fields_hash(cfg: Settings) -> str:
    key = ",".join(sorted(read_fields(cfg))) + f"|match={cfg.match_field}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def read_crm_changes(connector: CrmConnector, cfg: Settings, since: datetime | None) -> dict[str, dict[str, Any]]:
    """Records modified after ``since`` (all when None), by CRM record id (the newest read), with ``_time``."""
    seen: dict[str, dict[str, Any]] = {}
    for record in connector.iter_modified(cfg.module, since, read_fields(cfg)):
        record["_time"] = parse_crm_time(record["Modified_Time"])
        crm_id = str(record["id"])
        current = seen.get(crm_id)
        if current is None or record["_time"] >= current["_time"]:
            seen[crm_id] = record
    return seen


def match_value(cfg: Settings, record: dict[str, Any]) -> str | None:
    """What a CRM record is found by: its id, or the value of the match field."""
    value = record.get("id") if cfg.match_field == RECORD_ID else record.get(cfg.match_field)
    return None if value in (None, "") else str(value)


class _Matcher:
    """Finds each published customer's CRM record: by ``push.match`` over every record the sync has read."""

    def __init__(self, conn, cfg: Settings, observed: dict[str, dict[str, Any]], full: bool):
        self.cfg = cfg
        self.by_value: dict[str, set[str]] = defaultdict(set)
        if not full:
            for crm_id, value in conn.execute(f"select crm_id, match_value from {SCHEMA}.crm_records "
                                              "where module = %s", (cfg.module,)):
                if crm_id not in observed and value is not None:
                    self.by_value[value].add(crm_id)
        for crm_id, record in observed.items():
            value = match_value(cfg, record)
            if value is not None:
                self.by_value[value].add(crm_id)

    def key(self, row: dict[str, Any]) -> str | None:
        value = row.get(self.cfg.match_column)
        return None if value in (None, "") else str(value)

    def find(self, key: str | None) -> list[str]:
        return sorted(self.by_value.get(key, ())) if key is not None else []


def plan(conn, connector: CrmConnector, cfg: Settings, *, run_id: str, as_of: date | None = None,
         include_dead_letters: bool = False) -> Plan:
    """What this run would write; reads the warehouse and the CRM, changes nothing."""
    state.ensure(conn, cfg.provider)
    integration_id = cfg.raw.integration_user_id or str(connector.current_user()["id"])
    rows = source_rows(conn, cfg, as_of)
    fields_hash = _fields_hash(cfg)
    mark = conn.execute(f"select crm_time, fields_hash from {SCHEMA}.sync_watermarks where module = %s",
                        (cfg.module,)).fetchone()
    full = mark is None or mark[1] != fields_hash or mark[0] is None
    observed = read_crm_changes(connector, cfg, None if full else mark[0] - ONE_SECOND)
    times = [r["_time"] for r in observed.values()]
    watermark = max(times) if times else (None if full else mark[0])
    result = Plan(run_id, cfg.module, cfg.mode, rows[0]["as_of_date"] if rows else as_of, integration_id,
                  fields_hash, full, watermark, source_rows=len(rows), crm_records_read=len(observed))
    result.index_rows = [{"crm_id": crm_id, "match_value": match_value(cfg, r), "modified_at": r["_time"].isoformat()}
                         for crm_id, r in observed.items()]
    matcher = _Matcher(conn, cfg, observed, full)

    checksums = dict(conn.execute(f"select customer_id, checksum from {SCHEMA}.record_state").fetchall())
    dead = dict(conn.execute(f"select customer_id, checksum from {SCHEMA}.dead_letters").fetchall())
    open_conflicts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    with conn.cursor(row_factory=dict_row) as cur:
        for c in cur.execute(f"select conflict_id, customer_id, field, their_value from {SCHEMA}.conflicts "
                             "where resolved_at is null"):
            open_conflicts[c["customer_id"]][c["field"]] = c
        # An edit whose conflict was resolved must not reopen it when the step-back reads it again.
        settled = {(c["customer_id"], c["field"]): c["edited"] for c in cur.execute(
            f"select customer_id, field, max(their_modified_at) as edited from {SCHEMA}.conflicts "
            "where resolved_at is not null group by 1, 2")}

    # A key several customers share, or that finds several records, is written to none of them.
    keys = Counter(k for k in (matcher.key(r) for r in rows) if k is not None)
    candidates: list[tuple[dict[str, Any], dict[str, Any], str, str | None]] = []
    customer_of: dict[str, str] = {}
    for row in rows:
        customer_id, key = row["customer_id"], matcher.key(row)
        found = matcher.find(key)
        if len(found) > 1 or (key is not None and keys[key] > 1):
            result.ambiguous.append({"customer_id": customer_id, "key": key, "crm_ids": found,
                                     "customers_with_key": keys[key]})
            continue
        crm_id = found[0] if found else None
        if crm_id is None:
            result.unmatched.append({"customer_id": customer_id, "key": key})
            if cfg.mode == "update" or key is None:
                continue
        else:
            result.matched += 1
            customer_of[crm_id] = customer_id
        try:
            desired = {f.crm_field: f.convert(row.get(f.column)) for f in cfg.fields}
        except UnmappedValue as exc:
            result.mapping_errors.append({
                "customer_id": customer_id, "payload": {"source": {k: str(v) for k, v in row.items()}},
                "checksum": None, "error_code": "UNMAPPED_VALUE", "message": str(exc), "field": exc.crm_field})
            continue
        checksum = _checksum(desired, list(open_conflicts.get(customer_id, {})), crm_id)
        if crm_id not in observed and checksums.get(customer_id) == checksum:
            continue
        candidates.append((row, desired, checksum, crm_id))

    with conn.cursor(row_factory=dict_row) as cur:
        states = {s["customer_id"]: s for s in cur.execute(
            f"select customer_id, crm_id, checksum, synced_values, crm_values, person_edits from {SCHEMA}.record_state "
            "where customer_id = any(%s) or crm_id = any(%s)",
            ([r["customer_id"] for r, *_ in candidates], list(observed)))}
    for state_row in states.values():
        if state_row["crm_id"] in observed:
            customer_of.setdefault(state_row["crm_id"], state_row["customer_id"])
    protected = [f.crm_field for f in cfg.fields if f.ownership == "overwrite" and f.protect_human_edits]
    # Every observed edit by a person is kept on the record, whether or not this run writes it, so a
    # later run that does write the record still knows (the watermark will not show the edit again).
    for crm_id, record in observed.items():
        current = states.get(customer_of.get(crm_id, ""))
        if current is not None and current["crm_id"] == crm_id:
            edits = None if _editor(record)[0] == integration_id else _person_edits(record, current, protected)
            result.observations[current["customer_id"]] = {
                "customer_id": current["customer_id"], "crm_id": crm_id, "person_edits": edits,
                "crm_values": {f: record.get(f) for f in cfg.crm_fields}}
            if edits is not None:
                current["person_edits"] = edits
    for row, desired, checksum, crm_id in candidates:
        current = states.get(row["customer_id"])
        if current is not None and current["crm_id"] not in (None, crm_id):
            current = None  # matched to another record now: what we knew was about the old one
        _plan_record(result, cfg, row, desired, checksum, crm_id, matcher.key(row), current,
                     observed.get(crm_id) if crm_id else None, dict(open_conflicts.get(row["customer_id"], {})),
                     protected, dead, include_dead_letters, settled)
    return result


def _person_edits(record: dict[str, Any], current: dict[str, Any], protected: list[str]) -> dict[str, Any]:
    """The protected fields a person left different from what we last wrote: field -> value, editor, time."""
    editor_id, editor_name = _editor(record)
    return {name: {"value": record.get(name), "editor": editor_name, "editor_id": editor_id,
                   "at": record["_time"].isoformat()}
            for name in protected
            if name in current["synced_values"] and not same(record.get(name), current["synced_values"][name])}


def _plan_record(result: Plan, cfg: Settings, row: dict[str, Any], desired: dict[str, Any], checksum: str,
                 crm_id: str | None, key: str | None, current: dict[str, Any] | None, seen: dict[str, Any] | None,
                 held: dict[str, dict[str, Any]], protected: list[str], dead: dict[str, str | None],
                 include_dead_letters: bool, settled: dict[tuple[str, str], datetime]) -> None:
    customer_id = row["customer_id"]
    held_before = set(held)
    for name, edit in (current["person_edits"] if current else {}).items():
        if name not in protected or same(edit["value"], desired[name]):
            continue
        edited_at = datetime.fromisoformat(edit["at"])
        if settled.get((customer_id, name)) and edited_at <= settled[(customer_id, name)]:
            continue
        conflict = {"customer_id": customer_id, "field": name, "our_value": desired[name],
                    "their_value": edit["value"], "their_editor": edit["editor"], "their_editor_id": edit["editor_id"],
                    "their_modified_at": edit["at"]}
        if name not in held:
            result.new_conflicts.append(conflict)
            held[name] = conflict
        elif not same(held[name]["their_value"], edit["value"]):
            result.conflict_updates.append({**conflict, "conflict_id": held[name]["conflict_id"]})
            held[name] = {**held[name], "their_value": edit["value"]}
    for name, conflict in list(held.items()):
        if "conflict_id" in conflict and same(desired[name], conflict["their_value"]):
            result.agreed_conflicts.append(conflict["conflict_id"])
            del held[name]
    result.held_fields += len(held)
    result.held_records += bool(held)
    if set(held) != held_before:
        checksum = _checksum(desired, list(held), crm_id)
    if seen is None and current is not None and current["checksum"] == checksum:
        return
    if not include_dead_letters and dead.get(customer_id) == checksum:
        result.held_by_dead_letters += 1
        return

    known: dict[str, Any] = dict(current["crm_values"]) if current else {}
    if seen is not None:
        known.update({name: seen.get(name) for name in cfg.crm_fields})
    action = "update" if crm_id else "create"
    write: dict[str, Any] = {}
    agreed: dict[str, Any] = {}
    for mapping in cfg.fields:
        name, want = mapping.crm_field, desired[mapping.crm_field]
        if name in held:
            continue
        have = known.get(name, _MISSING)
        if mapping.ownership == "fill_if_empty":
            if _empty(have) and want is not None:
                write[name] = want
            elif not _empty(have) and same(have, want):
                agreed[name] = want
        elif have is not _MISSING and same(have, want):
            agreed[name] = want
        elif not (action == "create" and want is None):
            write[name] = want
    crm_after = {**known, **write}
    if not write:
        result.unchanged.append({"customer_id": customer_id, "crm_id": crm_id, "checksum": checksum,
                                 "confirmed": agreed, "crm_values": crm_after})
        return
    if action == "update":
        payload = {RECORD_ID: crm_id, **write}
    else:
        payload = {cfg.match_field: key, **write, **cfg.create_values(row)}
    previous = {name: (None if known.get(name, _MISSING) is _MISSING else known[name]) for name in write}
    result.changes.append(Change(customer_id, action, crm_id, payload, write, previous, {**agreed, **write},
                                 crm_after, checksum))


_UPSERT_DEAD = f"""
insert into {SCHEMA}.dead_letters as d (customer_id, payload, checksum, error_code, message, field, last_run_id)
select r.customer_id, r.payload, r.checksum, r.error_code, r.message, r.field, %(run_id)s
from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, payload jsonb, checksum text, error_code text,
                                              message text, field text)
on conflict (customer_id) do update set
    payload = excluded.payload, checksum = excluded.checksum, error_code = excluded.error_code,
    message = excluded.message, field = excluded.field, attempts = d.attempts + 1, last_failed_at = now(),
    last_run_id = excluded.last_run_id
"""


_UPSERT_INDEX = f"""
insert into {SCHEMA}.crm_records as i (module, crm_id, match_value, crm_modified_at)
select %(module)s, r.crm_id, r.match_value, r.modified_at
from jsonb_to_recordset(%(rows)s::jsonb) as r(crm_id text, match_value text, modified_at timestamptz)
on conflict (module, crm_id) do update set match_value = excluded.match_value,
    crm_modified_at = excluded.crm_modified_at
"""


def save_plan(conn, result: Plan, *, mode: str = "sync") -> None:
    """Store a plan in one transaction: conflicts, observations, state-only updates, the outbox, the watermark."""
    with conn.transaction():
        bulk(conn, f"""
            insert into {SCHEMA}.conflicts (customer_id, field, our_value, their_value, their_editor,
                                            their_editor_id, their_modified_at, run_id)
            select r.customer_id, r.field, r.our_value, r.their_value, r.their_editor, r.their_editor_id,
                   r.their_modified_at, %(run_id)s
            from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, field text, our_value jsonb,
                 their_value jsonb, their_editor text, their_editor_id text, their_modified_at timestamptz)
            on conflict (customer_id, field) where resolved_at is null do nothing""",
             result.new_conflicts, run_id=result.run_id)
        bulk(conn, f"""
            update {SCHEMA}.conflicts as c set their_value = r.their_value, our_value = r.our_value,
                their_editor = r.their_editor, their_editor_id = r.their_editor_id,
                their_modified_at = r.their_modified_at
            from jsonb_to_recordset(%(rows)s::jsonb) as r(conflict_id bigint, our_value jsonb, their_value jsonb,
                 their_editor text, their_editor_id text, their_modified_at timestamptz)
            where c.conflict_id = r.conflict_id""", result.conflict_updates)
        if result.agreed_conflicts:
            conn.execute(f"update {SCHEMA}.conflicts set resolved_at = now(), resolution = 'agreed' "
                         "where conflict_id = any(%s)", (result.agreed_conflicts,))
        bulk(conn, f"""
            update {SCHEMA}.record_state as s set crm_values = s.crm_values || r.crm_values,
                crm_id = coalesce(r.crm_id, s.crm_id), person_edits = coalesce(r.person_edits, s.person_edits),
                updated_at = now()
            from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, crm_id text, crm_values jsonb,
                 person_edits jsonb)
            where s.customer_id = r.customer_id""", result.observations.values())
        bulk(conn, f"""
            insert into {SCHEMA}.record_state as s (customer_id, crm_id, checksum, synced_values, crm_values)
            select r.customer_id, r.crm_id, r.checksum, r.confirmed, r.crm_values
            from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, crm_id text, checksum text,
                 confirmed jsonb, crm_values jsonb)
            on conflict (customer_id) do update set checksum = excluded.checksum,
                crm_id = coalesce(excluded.crm_id, s.crm_id),
                synced_values = s.synced_values || excluded.synced_values,
                crm_values = excluded.crm_values, updated_at = now()""", result.unchanged)
        conn.execute(f"delete from {SCHEMA}.outbox")
        with conn.cursor().copy(
                f"copy {SCHEMA}.outbox (customer_id, run_id, action, crm_id, payload, written, previous, confirmed, "
                "crm_values, checksum) from stdin") as copy:
            for c in result.changes:
                copy.write_row((c.customer_id, result.run_id, c.action, c.crm_id, dumps(c.payload),
                                dumps(c.written), dumps(c.previous), dumps(c.confirmed), dumps(c.crm_values),
                                c.checksum))
        bulk(conn, _UPSERT_DEAD, result.mapping_errors, run_id=result.run_id)
        if result.full_read:
            conn.execute(f"delete from {SCHEMA}.crm_records where module = %s", (result.module,))
        bulk(conn, _UPSERT_INDEX, result.index_rows, module=result.module)
        conn.execute(
            f"insert into {SCHEMA}.sync_watermarks (module, crm_time, fields_hash) values (%s, %s, %s) "
            "on conflict (module) do update set crm_time = excluded.crm_time, fields_hash = excluded.fields_hash, "
            "updated_at = now()", (result.module, result.watermark, result.fields_hash))
        conn.execute(
            f"insert into {SCHEMA}.runs (run_id, module, mode, status, read_back_since, result) "
            "values (%s, %s, %s, 'planned', %s, %s::jsonb) on conflict (run_id) do update set "
            "mode = excluded.mode, status = excluded.status, read_back_since = excluded.read_back_since, "
            "result = excluded.result, finished_at = null",
            (result.run_id, result.module, mode, result.watermark, dumps({"plan": result.summary()})))


def write_dry_run(result: Plan, out_dir: Path | None = None) -> Path:
    """The plan as a reviewable JSON-lines file: a summary, then one line per write, conflict and error.

    People open it in a spreadsheet: every text value is made safe there (:mod:`tierline.exports`).
    """
    out_dir = Path(out_dir or settings.home() / "crm")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"dry_run_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.jsonl"
    tmp = path.with_suffix(".partial")

    def lines():
        yield {"kind": "summary", "module": result.module, **result.summary()}
        for c in result.changes:
            changes = {name: {"old": c.previous.get(name), "new": value} for name, value in c.written.items()}
            extra = {k: v for k, v in c.payload.items() if k not in c.written}
            yield {"kind": c.action, "customer_id": c.customer_id, "crm_id": c.crm_id, "changes": changes,
                   "also_sent": extra}
        for conflict in result.new_conflicts:
            yield {"kind": "conflict", **conflict}
        for error in result.mapping_errors:
            yield {"kind": "mapping_error", **error}
        if result.mode == "update":
            for unmatched in result.unmatched:
                yield {"kind": "unmatched", **unmatched}
        for ambiguous in result.ambiguous:
            yield {"kind": "ambiguous", **ambiguous}

    with tmp.open("w", encoding="utf-8") as out:
        for line in lines():
            out.write(dumps(exports.cells(line)) + "\n")
    tmp.replace(path)
    return path


# -- the push ----------------------------------------------------------------------------------


@dataclass
class PushResult:
    planned: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    dead_lettered: int = 0
    write_calls: int = 0
    split_batches: int = 0
    unsent: int = 0
    stopped_reason: str | None = None
    seconds: float = 0.0


_CONFIRM = f"""
insert into {SCHEMA}.record_state as s (customer_id, crm_id, checksum, synced_values, crm_values, last_written,
                                        last_run_id, synced_at)
select r.customer_id, r.crm_id, r.checksum, r.confirmed, r.crm_values, r.written, %(run_id)s, now()
from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, crm_id text, checksum text, confirmed jsonb,
                                              crm_values jsonb, written jsonb)
on conflict (customer_id) do update set crm_id = excluded.crm_id, checksum = excluded.checksum,
    synced_values = s.synced_values || excluded.synced_values, crm_values = s.crm_values || excluded.crm_values,
    last_written = excluded.last_written, last_run_id = excluded.last_run_id, synced_at = excluded.synced_at,
    person_edits = s.person_edits - array(select jsonb_object_keys(excluded.last_written)),
    crm_modified_at = null, updated_at = now()
"""


class _Pusher:
    def __init__(self, conn, connector: CrmConnector, cfg: Settings, run_id: str):
        self.conn, self.connector, self.cfg, self.run_id = conn, connector, cfg, run_id
        self.result = PushResult()

    def key(self, row: dict[str, Any]) -> str:
        return row["crm_id"] if row["action"] == "update" else str(row["payload"][self.cfg.match_field])

    def send(self, batch: list[dict[str, Any]]) -> None:
        """One write per action; a whole-batch refusal is split in halves until the bad record is alone."""
        for action in ("update", "create"):
            rows = [r for r in batch if r["action"] == action]
            if rows:
                self._send(rows, action)

    def _send(self, batch: list[dict[str, Any]], action: str) -> None:
        self.result.write_calls += 1
        payloads = [r["payload"] for r in batch]
        try:
            if action == "update":
                results = self.connector.update(self.cfg.module, payloads)
            else:
                results = self.connector.upsert(self.cfg.module, payloads, self.cfg.match_field)
        except CrmBatchRejected as exc:
            if len(batch) == 1:
                details = (exc.body or {}).get("details") if isinstance(exc.body, dict) else None
                field_name = (details or {}).get("api_name") if isinstance(details, dict) else None
                results = [RecordResult(self.key(batch[0]), False, code=exc.code or "BATCH_REJECTED",
                                        message=str(exc), field=field_name)]
            else:
                self.result.split_batches += 1
                middle = len(batch) // 2
                self._send(batch[:middle], action)
                self._send(batch[middle:], action)
                return
        self._commit(batch, results)

    def _commit(self, batch: list[dict[str, Any]], results: list[RecordResult]) -> None:
        confirmed, failed, created = [], [], []
        for row, outcome in zip(batch, results, strict=True):
            if outcome.key != self.key(row):
                raise CrmProtocolError(f"write result for {outcome.key} where {self.key(row)} was sent")
            if outcome.ok:
                crm_id = outcome.crm_id or row["crm_id"]
                confirmed.append({"customer_id": row["customer_id"], "crm_id": crm_id,
                                  "checksum": row["checksum"], "confirmed": row["confirmed"],
                                  "crm_values": row["crm_values"], "written": row["written"]})
                if row["action"] == "create":
                    created.append({"crm_id": crm_id, "match_value": self.key(row), "modified_at": None})
                if outcome.action == "insert":
                    self.result.created += 1
                else:
                    self.result.updated += 1
            else:
                failed.append({"customer_id": row["customer_id"], "payload": row["payload"],
                               "checksum": row["checksum"], "error_code": outcome.code, "message": outcome.message,
                               "field": outcome.field})
        with self.conn.transaction():
            bulk(self.conn, _CONFIRM, confirmed, run_id=self.run_id)
            bulk(self.conn, _UPSERT_INDEX, created, module=self.cfg.module)
            if confirmed:
                self.conn.execute(f"delete from {SCHEMA}.dead_letters where customer_id = any(%s)",
                                  ([r["customer_id"] for r in confirmed],))
            bulk(self.conn, _UPSERT_DEAD, failed, run_id=self.run_id)
            self.conn.execute(f"delete from {SCHEMA}.outbox where customer_id = any(%s)",
                              ([r["customer_id"] for r in batch],))
        self.result.sent += len(batch)
        self.result.dead_lettered += len(failed)
        for row in failed:
            log.warning("crm refused %s: %s %s (field %s)", row["customer_id"], row["error_code"], row["message"],
                        row["field"])


def _outbox_pages(conn) -> Iterator[list[dict[str, Any]]]:
    after = ""
    while True:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"select customer_id, action, crm_id, payload, written, confirmed, crm_values, checksum "
                f"from {SCHEMA}.outbox "
                "where customer_id > %s order by customer_id limit %s", (after, _OUTBOX_PAGE)).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1]["customer_id"]


def push(conn, connector: CrmConnector, cfg: Settings, *, run_id: str,
         progress: Callable[[PushResult], None] | None = None) -> PushResult:
    """Send the outbox; stop cleanly (leaving the rest in the outbox) when the CRM stays unavailable."""
    state.ensure(conn, cfg.provider)
    started = time.perf_counter()
    with state.run_lock(conn, cfg.module):
        pusher = _Pusher(conn, connector, cfg, run_id)
        pusher.result.planned = conn.execute(f"select count(*) from {SCHEMA}.outbox").fetchone()[0]
        size = min(cfg.raw.push.batch_size, connector.max_batch_size)
        next_report = max(pusher.result.planned // 10, size)
        try:
            for page in _outbox_pages(conn):
                for start in range(0, len(page), size):
                    pusher.send(page[start:start + size])
                    if pusher.result.sent >= next_report:
                        log.info("crm push: %d of %d records sent", pusher.result.sent, pusher.result.planned)
                        next_report += max(pusher.result.planned // 10, size)
                        if progress:
                            progress(pusher.result)
        except _STOPPING_ERRORS as exc:
            pusher.result.stopped_reason = f"{type(exc).__name__}: {exc}"
            log.warning("crm push stopped; the rest stays in the outbox for the next attempt: %s", exc)
        result = pusher.result
        result.unsent = conn.execute(f"select count(*) from {SCHEMA}.outbox").fetchone()[0]
        result.seconds = round(time.perf_counter() - started, 3)
        _record(conn, run_id, "push", asdict(result), status="stopped" if result.unsent else "pushed")
    return result


def _record(conn, run_id: str, step: str, data: dict[str, Any], *, status: str, finished: bool = False) -> None:
    with conn.transaction():
        conn.execute(
            f"update {SCHEMA}.runs set status = %s, result = result || jsonb_build_object(%s::text, %s::jsonb)"
            + (", finished_at = now()" if finished else "") + " where run_id = %s",
            (status, step, dumps(data), run_id))


# -- the read-back -----------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    checked: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    crm_records_read: int = 0

    def summary(self, limit: int = 20) -> dict[str, Any]:
        return {"checked": self.checked, "mismatch_count": len(self.mismatches),
                "mismatches": self.mismatches[:limit], "crm_records_read": self.crm_records_read}


def reconcile(conn, connector: CrmConnector, cfg: Settings, *, run_id: str) -> ReconcileResult:
    """Read back what the run wrote; every field the CRM holds differently is a mismatch."""
    state.ensure(conn, cfg.provider)
    result = ReconcileResult()
    with state.run_lock(conn, cfg.module):
        run = conn.execute(f"select read_back_since, result -> 'plan' ->> 'integration_user_id' from {SCHEMA}.runs "
                           "where run_id = %s", (run_id,)).fetchone()
        if run is None:
            raise ValueError(f"no CRM sync run {run_id!r} in {SCHEMA}.runs: plan it first")
        since, integration_id = run
        expected = {customer_id: (crm_id, written) for customer_id, crm_id, written in conn.execute(
            f"select customer_id, crm_id, last_written from {SCHEMA}.record_state where last_run_id = %s",
            (run_id,))}
        result.checked = len(expected)
        if expected:
            seen = read_crm_changes(connector, cfg, since - ONE_SECOND if since else None)
            result.crm_records_read = len(seen)
            ours = _compare(result, expected, seen, integration_id, cfg)
            _save_reconciliation(conn, cfg, run_id, result, seen, ours, integration_id)
        _record(conn, run_id, "reconcile", result.summary(),
                status="mismatches" if result.mismatches else "reconciled", finished=True)
    return result


def _compare(result: ReconcileResult, expected: dict[str, tuple[str, dict[str, Any]]],
             seen: dict[str, dict[str, Any]], integration_id: str, cfg: Settings) -> list[dict[str, Any]]:
    ours = []
    for customer_id, (crm_id, written) in sorted(expected.items()):
        record = seen.get(crm_id)
        if record is None:
            result.mismatches.append({"customer_id": customer_id, "field": "(record)", "expected": written,
                                      "actual": None, "crm_modified_by": None, "crm_modified_at": None})
            continue
        editor_id, editor_name = _editor(record)
        for name, value in written.items():
            if not same(record.get(name), value):
                result.mismatches.append({"customer_id": customer_id, "field": name, "expected": value,
                                          "actual": record.get(name), "crm_modified_by": editor_name,
                                          "crm_modified_at": record["_time"].isoformat()})
        if editor_id == integration_id:
            ours.append({"customer_id": customer_id, "crm_modified_at": record["_time"].isoformat(),
                         "crm_values": {name: record.get(name) for name in cfg.crm_fields}})
    return ours


def _save_reconciliation(conn, cfg: Settings, run_id: str, result: ReconcileResult,
                         seen: dict[str, dict[str, Any]], ours: list[dict[str, Any]], integration_id: str) -> None:
    # The next plan must still see a person's edit: the watermark stops just before the first one.
    people = [r["_time"] for r in seen.values() if _editor(r)[0] != integration_id]
    mine = [r["_time"] for r in seen.values() if _editor(r)[0] == integration_id]
    watermark = max(mine) if mine else None
    if people:
        cap = min(people) - ONE_SECOND
        watermark = cap if watermark is None else min(watermark, cap)
    index_rows = [{"crm_id": crm_id, "match_value": match_value(cfg, r), "modified_at": r["_time"].isoformat()}
                  for crm_id, r in seen.items()]
    with conn.transaction():
        bulk(conn, _UPSERT_INDEX, index_rows, module=cfg.module)
        conn.execute(f"delete from {SCHEMA}.reconciliation where run_id = %s", (run_id,))
        bulk(conn, f"""
            insert into {SCHEMA}.reconciliation (run_id, customer_id, field, expected, actual, crm_modified_by,
                                                 crm_modified_at)
            select %(run_id)s, r.customer_id, r.field, r.expected, r.actual, r.crm_modified_by, r.crm_modified_at
            from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, field text, expected jsonb, actual jsonb,
                 crm_modified_by text, crm_modified_at timestamptz)""", result.mismatches, run_id=run_id)
        bulk(conn, f"""
            update {SCHEMA}.record_state as s set crm_modified_at = r.crm_modified_at,
                crm_values = s.crm_values || r.crm_values, updated_at = now()
            from jsonb_to_recordset(%(rows)s::jsonb) as r(customer_id text, crm_modified_at timestamptz,
                 crm_values jsonb)
            where s.customer_id = r.customer_id""", ours)
        if watermark is not None:
            conn.execute(f"update {SCHEMA}.sync_watermarks set crm_time = %s, updated_at = now() "
                         "where module = %s and (crm_time is null or crm_time < %s)",
                         (watermark, cfg.module, watermark))


# -- alerts ------------------------------------------------------------------------------------

# tierline.alerts kind -> crm.yml alerts key, what is counted, where to look (per run)
ALERTS = {
    "crm_dead_letters": ("dead_letters", "records the CRM refused or the value maps could not translate",
                         "crm_sync.dead_letters where last_run_id = '{run}' (error_code, field, message); "
                         "make crm-retry replays them once fixed"),
    "crm_mismatches": ("reconcile_mismatches", "fields the read-back found different from what was written",
                       "crm_sync.reconciliation where run_id = '{run}'"),
    "crm_conflicts": ("new_conflicts", "people's edits in the CRM newly held back, not overwritten",
                      "crm_sync.conflicts where run_id = '{run}' and resolved_at is null"),
}


def alert_counts(result: dict[str, Any]) -> dict[str, int]:
    """The counts a sync's result (``sync``) alerts on."""
    plan, push_ = result.get("plan") or {}, result.get("push") or {}
    return {"crm_dead_letters": push_.get("dead_lettered", 0) + plan.get("mapping_errors", 0),
            "crm_mismatches": (result.get("reconcile") or {}).get("mismatch_count", 0),
            "crm_conflicts": plan.get("new_conflicts", 0)}


def alert(cfg: Settings, counts: dict[str, int], *, run_id: str, as_of: Any, dag_id: str = "crm_sync",
          task: str = "crm-sync") -> list[str]:
    """Notify through the pipeline's alerts (``tierline.alerts``) for every count at or above its threshold
    (``alerts`` in crm.yml); returns the kinds sent."""
    due = []
    for kind, count in counts.items():
        key, what, where = ALERTS[kind]
        threshold = getattr(cfg.raw.alerts, key)
        if threshold is not None and count >= threshold:
            due.append((kind, key, what, where, count, threshold))
    if due:
        from tierline import alerts

        for kind, key, what, where, count, threshold in due:
            alerts.notify(kind, dag_id=dag_id, as_of_date=as_of or "", task=task,
                          reason=f"CRM sync run {run_id} ({cfg.provider} {cfg.module}): {count} {what}",
                          counts={key: count, "alert_threshold": threshold}, where=where.format(run=run_id))
    return [kind for kind, *_ in due]


# -- entry points (CLI, DAG) -------------------------------------------------------------------


@contextmanager
def _session(warehouse_url: str | None, connector: CrmConnector | None, cfg: Settings | None):
    cfg = cfg or crm_config.load()
    own = connector is None
    connector = connector or crm_config.connector_from_env(cfg)
    try:
        with warehouse.connect(warehouse_url, autocommit=True) as conn:
            yield conn, connector, cfg
    finally:
        if own:
            connector.close()


def new_run_id(mode: str = "sync") -> str:
    return f"{mode}__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"


def sync(*, run_id: str | None = None, as_of: date | None = None, dry_run: bool = False,
         retry_dead_letters: bool = False, warehouse_url: str | None = None, connector: CrmConnector | None = None,
         cfg: Settings | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Plan, push and reconcile in one go (the CLI); ``dry_run`` writes the plan to a file and stops there."""
    mode = "dry_run" if dry_run else "retry" if retry_dead_letters else "sync"
    run_id = run_id or new_run_id(mode)
    started = time.perf_counter()
    with _session(warehouse_url, connector, cfg) as (conn, connector, cfg):
        state.ensure(conn, cfg.provider)
        calls_before = connector.calls_made
        with state.run_lock(conn, cfg.module):
            planned = plan(conn, connector, cfg, run_id=run_id, as_of=as_of, include_dead_letters=retry_dead_letters)
            out: dict[str, Any] = {"run_id": run_id, "mode": mode, "plan": planned.summary()}
            timings = out["step_seconds"] = {}
            if dry_run:
                out.update(status="dry_run", dry_run_file=str(write_dry_run(planned, out_dir)))
            else:
                save_plan(conn, planned, mode=mode)
                timings["plan"] = round(time.perf_counter() - started, 3)
                pushed = push(conn, connector, cfg, run_id=run_id)
                out["push"] = asdict(pushed)
                timings["push"] = pushed.seconds
                reconcile_started = time.perf_counter()
                out["reconcile"] = _reconcile_after(conn, connector, cfg, run_id, pushed)
                timings["reconcile"] = round(time.perf_counter() - reconcile_started, 3)
                out["status"] = _status(pushed, out["reconcile"])
                out["dead_letters"] = conn.execute(f"select count(*) from {SCHEMA}.dead_letters").fetchone()[0]
                out["open_conflicts"] = conn.execute(
                    f"select count(*) from {SCHEMA}.conflicts where resolved_at is null").fetchone()[0]
        out["crm_calls"] = connector.calls_made - calls_before
        out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def _reconcile_after(conn, connector: CrmConnector, cfg: Settings, run_id: str, pushed: PushResult) -> dict[str, Any]:
    # A stopped push means the CRM is refusing calls: the next run's change read covers this one's writes.
    skipped = "push stopped" if pushed.unsent else "nothing written" if not pushed.sent else None
    if skipped is None:
        try:
            return reconcile(conn, connector, cfg, run_id=run_id).summary()
        except _STOPPING_ERRORS as exc:
            skipped = f"{type(exc).__name__}: {exc}"
    summary = {"checked": 0, "mismatch_count": 0, "skipped": skipped}
    _record(conn, run_id, "reconcile", summary, status="stopped" if pushed.unsent else "ok", finished=True)
    return summary


def _status(pushed: PushResult, reconciled: dict[str, Any]) -> str:
    if pushed.unsent:
        return "stopped"
    if reconciled["mismatch_count"]:
        return "mismatches"
    return "ok"


def plan_step(run_id: str, *, as_of: date | str | None = None, **session: Any) -> dict[str, Any]:
    """DAG task ``plan_changes``: plan and store the outbox; alert on new conflicts and unmapped values.

    ``as_of`` is the date the triggering Asset event published. A date a later publication has
    superseded (a backfill publishing older dates) is not pushed over the newer state: the newest
    published date is synced instead, and the summary says so."""
    with _session(session.get("warehouse_url"), session.get("connector"), session.get("cfg")) as (conn, crm, cfg):
        published = date.fromisoformat(str(as_of)) if as_of else None
        newest = conn.execute(sql.SQL("select max(as_of_date) from {}.customer_tier").format(
            sql.Identifier(cfg.publish_schema))).fetchone()[0] if published else None
        as_of = newest if newest and published and newest > published else published
        state.ensure(conn, cfg.provider)
        with state.run_lock(conn, cfg.module):
            planned = plan(conn, crm, cfg, run_id=run_id, as_of=as_of)
            save_plan(conn, planned)
        summary = planned.summary()
    if published and as_of != published:
        summary["superseded_event_date"] = published.isoformat()
    counts = alert_counts({"plan": summary})
    alert(cfg, {k: counts[k] for k in ("crm_conflicts", "crm_dead_letters")}, run_id=run_id,
          as_of=summary["as_of_date"], task="plan_changes")
    return summary


def push_step(run_id: str, **session: Any) -> PushResult:
    """DAG task ``push_changes``: drain the outbox; alert on the records the CRM refused."""
    with _session(session.get("warehouse_url"), session.get("connector"), session.get("cfg")) as (conn, crm, cfg):
        result = push(conn, crm, cfg, run_id=run_id)
        as_of = _run_date(conn, run_id)
    alert(cfg, {"crm_dead_letters": result.dead_lettered}, run_id=run_id, as_of=as_of, task="push_changes")
    return result


def reconcile_step(run_id: str, **session: Any) -> dict[str, Any]:
    """DAG task ``reconcile``: read back what the run wrote; alert on mismatches."""
    with _session(session.get("warehouse_url"), session.get("connector"), session.get("cfg")) as (conn, crm, cfg):
        summary = reconcile(conn, crm, cfg, run_id=run_id).summary()
        as_of = _run_date(conn, run_id)
    alert(cfg, {"crm_mismatches": summary["mismatch_count"]}, run_id=run_id, as_of=as_of, task="reconcile")
    return summary


def _run_date(conn, run_id: str) -> str | None:
    row = conn.execute(f"select result -> 'plan' ->> 'as_of_date' from {SCHEMA}.runs where run_id = %s",
                       (run_id,)).fetchone()
    return row[0] if row else None
