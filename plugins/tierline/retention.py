"""Retention: personal data is kept for the periods in ``retention`` (config/tierline.yml), no longer.

Periods count back from a date, the run's date in the DAG (task ``apply_retention``, after
``publish``) or today in the business time zone (``tierline retention``), and compare with the
extract or run date a thing belongs to, never with file times: re-running it for a date removes
the same things, and a backfill of old dates judges them by their own dates.

- ``landing_days``: landing copies (and manifests) of extract dates before the cut-off. Such a date
  can no longer be re-run from its landing copy (put its files in the inbox again).
- ``raw_history_days``: raw row versions that a newer version of the same key replaced, both
  loaded before the cut-off, by the rule staging reads them with (newest ``updated_at``, then
  extract date, then line: ``latest_version``), so no run after the cut-off sees a difference;
  and the rows of loads before the cut-off that never published (invisible to every run).
  Entities without ``updated_at`` (interactions, surveys, order lines, refunds) are one version
  per key and are left alone.
- ``quarantine_text_days``: the raw text of quarantined lines (file, line and reason stay).
- ``run_folder_days``: run folders, the CLI's run logs and CRM dry-run plans.

It holds the warehouse like a run (:func:`tierline.runs.exclusive`) while it works.
"""

from __future__ import annotations

import re
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from psycopg import sql

from tierline import batches, config, contract, runs, settings, warehouse

DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PLAN_FILE = re.compile(r"^dry_run_(\d{8})T.*\.jsonl$")


def _cutoff(days: int | None, as_of: date) -> date | None:
    return as_of - timedelta(days=days) if days else None


def _date_folders(parent: Path, cutoff: date) -> list[Path]:
    return sorted(p for p in parent.glob("*") if p.is_dir() and DATE_FOLDER.match(p.name)
                  and date.fromisoformat(p.name) < cutoff) if parent.is_dir() else []


def _remove(folders: list[Path]) -> int:
    files = 0
    for folder in folders:
        files += sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder)
    return files


def remove_files(cfg: config.Retention, as_of: date) -> dict[str, int]:
    removed: dict[str, int] = {}
    if cutoff := _cutoff(cfg.landing_days, as_of):
        dates = [d for source in settings.landing_area().glob("*") for d in _date_folders(source, cutoff)]
        removed["landing_dates"] = len(dates)
        removed["landing_files"] = _remove(dates)
    if cutoff := _cutoff(cfg.run_folder_days, as_of):
        run_dates = _date_folders(settings.runs_dir(), cutoff)
        removed["run_folders"] = sum(1 for d in run_dates for p in d.glob("*") if p.is_dir())
        removed["run_folder_files"] = _remove(run_dates)
        removed["run_log_files"] = _remove(_date_folders(settings.home() / "logs", cutoff))
        plans = [p for p in (settings.home() / "crm").glob("dry_run_*.jsonl")
                 if (m := PLAN_FILE.match(p.name)) and datetime.strptime(m[1], "%Y%m%d").date() < cutoff]
        for plan in plans:
            plan.unlink()
        removed["crm_plans"] = len(plans)
    return removed


def _superseded_versions(entity: contract.Entity) -> sql.Composable:
    """Delete the versions of a key that a newer version, published before the cut-off, replaced."""
    ident = sql.Identifier
    table = sql.SQL("{}.{}").format(ident(batches.RAW), ident(entity.name))
    same_key = sql.SQL(" and ").join(sql.SQL("n.{k} = r.{k}").format(k=ident(k)) for k in entity.key)
    return sql.SQL(
        """
        delete from {t} r
        where r._extract_date < %(cutoff)s
          and r.batch_id in (select batch_id from raw.load_batch where status = 'published')
          and exists (
              select from {t} n join raw.load_batch b on b.batch_id = n.batch_id and b.status = 'published'
              where {same_key} and n._extract_date < %(cutoff)s
                and (n.updated_at, n._extract_date, n._line_no) > (r.updated_at, r._extract_date, r._line_no))
        """).format(t=table, same_key=same_key)


def remove_rows(conn, cfg: config.Retention, as_of: date) -> dict[str, int]:
    removed: dict[str, int] = {}
    if not conn.execute("select to_regclass('raw.load_batch') is not null").fetchone()[0]:
        return removed
    if cutoff := _cutoff(cfg.quarantine_text_days, as_of):
        removed["quarantine_texts"] = conn.execute(
            "update raw.quarantine set raw_text = null where extract_date < %s and raw_text is not null",
            (cutoff,)).rowcount
    if cutoff := _cutoff(cfg.raw_history_days, as_of):
        stale = [r[0] for r in conn.execute(
            "update raw.load_batch set status = 'rejected', decided_at = now() "
            "where status = 'pending' and extract_date < %s returning batch_id", (cutoff,))]
        batches.discard_rows(conn, stale)
        removed["unpublished_loads"] = len(stale)
        versions = 0
        for entity in contract.ENTITIES:
            if any(c.name == "updated_at" for c in entity.columns):
                versions += conn.execute(_superseded_versions(entity), {"cutoff": cutoff}).rowcount
        removed["raw_replaced_versions"] = versions
    return removed


def apply(as_of: date, *, warehouse_url: str | None = None, cfg: config.Config | None = None) -> dict:
    """Apply every configured period for ``as_of``; returns what was removed, by kind."""
    cfg = cfg or config.load()
    url = warehouse_url or warehouse.url()
    periods = cfg.retention
    with runs.exclusive(url, cfg.runs, "retention"), warehouse.connect(url) as conn:
        with conn.transaction():
            removed = remove_rows(conn, periods, as_of)
        removed.update(remove_files(periods, as_of))
    return {"as_of_date": as_of.isoformat(), "periods_days": periods.model_dump(), "removed": removed}


def today(business_timezone: str) -> date:
    return datetime.now(ZoneInfo(business_timezone)).date()
