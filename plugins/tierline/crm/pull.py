"""Pull: the CRM API as an extract source, written in the EXTRACTS.md layout so nothing downstream changes.

For every file of ``pull.files`` in ``config/crm.yml`` (``crm_customers.csv`` from ``Accounts`` by
default) the records modified since the module's watermark (``crm_sync.pull_watermarks``) are read
with ``iter_modified``, mapped to the contract's columns and written to
``<landing>/<YYYY-MM-DD>/<file>``. The read steps back one second from the watermark because
Zoho's ``If-Modified-Since`` is strictly-after to the second; what it reads again is skipped:
records older than the watermark (the newest time the last pull read) and, at the watermark
itself, the ids that pull wrote (timestamps are seconds in Zoho, milliseconds in 纷享销客). The watermark moves only after the file is in place, so a
pull killed at any point re-reads what it had not recorded (the contract makes a re-sent row a
no-op). A second pull for the same date merges into that date's file, newest ``updated_at`` wins.
The first pull of a module (or one after its field mapping changed) reads every record: a full
snapshot, as the contract expects of the first folder.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from tierline import warehouse
from tierline.crm import CrmConnector, parse_crm_time, state
from tierline.crm import config as crm_config
from tierline.crm.config import PullColumn, PullMapping, Settings
from tierline.crm.state import SCHEMA, dumps

log = logging.getLogger(__name__)

ONE_SECOND = timedelta(seconds=1)


@dataclass
class PulledFile:
    file: str
    module: str
    path: str
    records_read: int = 0
    rows_written: int = 0
    skipped_without_key: int = 0
    already_pulled: int = 0
    full_read: bool = False
    watermark: str | None = None


@dataclass
class PullResult:
    extract_date: str
    files: list[PulledFile] = field(default_factory=list)


def _value(record: dict[str, Any], column: PullColumn) -> Any:
    if column.constant is not None:
        return column.constant
    value: Any = record
    for part in column.field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, list):  # a lookup held as a list of ids (纷享销客's owner): one id, or none
        value = value[0] if len(value) == 1 else None
    if value is not None and column.value_map is not None:
        value = column.value_map.get(str(value), column.default)
    return column.default if value in (None, "") else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def map_record(mapping: PullMapping, record: dict[str, Any]) -> dict[str, str]:
    return {name: _cell(_value(record, column)) for name, column in mapping.columns.items()}


def _fields_hash(mapping: PullMapping) -> str:
    text = dumps({name: column.model_dump() for name, column in sorted(mapping.columns.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _merge(path: Path, header: list[str], rows: dict[str, dict[str, str]], key: str) -> int:
    """Write ``rows`` into ``path``, keeping rows of an earlier pull that these do not supersede."""
    merged: dict[str, dict[str, str]] = {}
    if path.exists():
        with path.open(encoding="utf-8", newline="") as handle:
            merged = {row[key]: row for row in csv.DictReader(handle)}
    for row_key, row in rows.items():
        old = merged.get(row_key)
        if old is None or _newer_or_same(row.get("updated_at"), old.get("updated_at")):
            merged[row_key] = row
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(merged[k] for k in sorted(merged))
    tmp.replace(path)
    return len(merged)


def _newer_or_same(new: str | None, old: str | None) -> bool:
    if not new or not old:
        return True
    return parse_crm_time(new) >= parse_crm_time(old)


def pull_file(conn, connector: CrmConnector, mapping: PullMapping, landing: Path, extract_date: date) -> PulledFile:
    fields_hash = _fields_hash(mapping)
    mark = conn.execute(f"select watermark, ids_at_watermark, fields_hash from {SCHEMA}.pull_watermarks "
                        "where module = %s", (mapping.module,)).fetchone()
    full = mark is None or mark[2] != fields_hash
    since, done_ids = (None, set()) if full else (mark[0] - ONE_SECOND, set(mark[1]))
    folder = Path(landing) / extract_date.isoformat()
    result = PulledFile(mapping.file, mapping.module, str(folder / mapping.file), full_read=full)
    key = mapping.entity.key[0]
    newest: dict[str, dict[str, Any]] = {}
    for record in connector.iter_modified(mapping.module, since, mapping.crm_fields):
        result.records_read += 1
        record["_time"] = parse_crm_time(record["Modified_Time"])
        # The step back re-reads: older records were pulled already (the watermark is the newest time the
        # last pull read), and so were those at the watermark that it names.
        if not full and (record["_time"] < mark[0] or (record["_time"] == mark[0] and record["id"] in done_ids)):
            result.already_pulled += 1
            continue
        current = newest.get(record["id"])
        if current is None or record["_time"] >= current["_time"]:
            newest[record["id"]] = record
    rows: dict[str, dict[str, str]] = {}
    for record in newest.values():
        row = map_record(mapping, record)
        if not row.get(key):
            result.skipped_without_key += 1
            continue
        rows[row[key]] = row
    if rows:
        folder.mkdir(parents=True, exist_ok=True)
        header = [c.name for c in mapping.entity.columns if c.name in mapping.columns]
        _merge(folder / mapping.file, header, rows, key)
    result.rows_written = len(rows)
    if newest:
        top = max(r["_time"] for r in newest.values())
        at_top = {r["id"] for r in newest.values() if r["_time"] == top}
        if not full and mark[0] == top:
            at_top |= done_ids
        with conn.transaction():
            conn.execute(
                f"insert into {SCHEMA}.pull_watermarks (module, watermark, ids_at_watermark, fields_hash) "
                "values (%s, %s, %s::jsonb, %s) on conflict (module) do update set watermark = excluded.watermark, "
                "ids_at_watermark = excluded.ids_at_watermark, fields_hash = excluded.fields_hash, updated_at = now()",
                (mapping.module, top, dumps(sorted(at_top)), fields_hash))
        result.watermark = top.isoformat()
    log.info("crm pull %s: %d records read, %d rows written to %s", mapping.module, result.records_read,
             result.rows_written, result.path)
    return result


def pull(landing: Path, extract_date: date, *, warehouse_url: str | None = None,
         connector: CrmConnector | None = None, cfg: Settings | None = None) -> PullResult:
    """Pull every configured module into ``<landing>/<extract_date>/``; the function the CLI and a DAG call."""
    cfg = cfg or crm_config.load()
    own = connector is None
    connector = connector or crm_config.connector_from_env(cfg)
    result = PullResult(extract_date.isoformat())
    try:
        with warehouse.connect(warehouse_url, autocommit=True) as conn:
            state.ensure(conn, cfg.provider)
            for mapping in cfg.pulls:
                result.files.append(pull_file(conn, connector, mapping, landing, extract_date))
    finally:
        if own:
            connector.close()
    return result


def today(business_timezone: str) -> date:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(business_timezone)).date()
