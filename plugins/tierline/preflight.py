"""Preflight: what a run needs, checked in seconds before any task does work.

The CLI runs it before it starts Airflow, and the DAG's first task runs it on the worker. Each
check gives one line: the configuration files, the warehouse (the URL, reachable, the server
version, the privileges the pipeline needs), the landing folder and the date's folder (or the
nearest dates that do have one).

A problem that no retry can fix (a typo, a wrong URL, a missing folder or privilege) raises
``PreflightFailed`` — a ``TierlineError``, never retried. An unreachable warehouse is a
connection error: the DAG's task raises it as such and Airflow retries it; the CLI, which has
nobody waiting to retry, reports it and stops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tierline.errors import TierlineError

# Oldest PostgreSQL major version the pipeline is tested on (the machine's 15; the embedded 16/18).
MIN_SERVER_VERSION = 15
CONNECT_TIMEOUT_SECONDS = 5
NEAREST = 3


class PreflightFailed(TierlineError):
    """At least one preflight check failed; the message has one line per failed check."""

    def __init__(self, checks: list[Check]):
        self.checks = checks
        super().__init__("preflight failed:\n" + "\n".join(c.line for c in checks if not c.ok))


class WarehouseUnreachable(ConnectionError):
    """The warehouse did not answer: transient, so Airflow retries it (connection errors always are)."""


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    transient: bool = False

    @property
    def line(self) -> str:
        message = self.message.replace("\n", "\n" + " " * 8)  # a multi-line message stays under its check
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.name}: {message}"


def _config():
    from tierline import config as config_module
    from tierline import settings

    try:
        cfg = config_module.load()
    except TierlineError as exc:
        return None, Check("config", False, str(exc))
    except OSError as exc:
        return None, Check("config", False, f"{settings.config_path()}: cannot be read ({exc.strerror or exc})")
    return cfg, Check("config", True, f"{settings.config_path()} (tier spec {cfg.tier_spec.version})")


def _warehouse(cfg, as_of: date | None) -> list[Check]:
    import psycopg

    from tierline import warehouse

    try:
        url = warehouse.url()
    except warehouse.WarehouseError as exc:
        return [Check("warehouse", False, f"{exc}; see docs/production.md#using-an-existing-warehouse")]
    except psycopg.Error as exc:  # the embedded server could not be started or reached
        return [Check("warehouse", False, f"the embedded PostgreSQL did not answer: {_first_line(exc)}",
                      transient=True)]
    shown = warehouse.redacted(url)
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)
    except psycopg.OperationalError as exc:
        return [Check("warehouse", False, f"cannot reach {shown}: {_first_line(exc)}. Is the server running, "
                                          "and are host, port, user, password and database right?", transient=True)]
    with conn:
        version = conn.info.server_version
        checks = [Check("warehouse", True, f"{shown}, PostgreSQL {version // 10000}.{version % 10000}")]
        if version // 10000 < MIN_SERVER_VERSION:
            checks.append(Check("warehouse version", False,
                                f"PostgreSQL {version // 10000} is older than the {MIN_SERVER_VERSION} the "
                                "pipeline needs; upgrade the server or point TIERLINE_WAREHOUSE_URL at a newer one"))
        if cfg is not None:
            checks.append(_privileges(conn, cfg, as_of))
    return checks


def _privileges(conn, cfg, as_of: date | None) -> Check:
    from tierline.pipeline import RunContext

    user, database = conn.execute("select current_user, current_database()").fetchone()
    missing = [f"{p} on database {database}" for p in ("CREATE", "TEMP")
               if not conn.execute("select has_database_privilege(current_database(), %s)", (p,)).fetchone()[0]]
    schemas = sorted(set(RunContext(as_of or date.today(), "preflight", Path("."), "", cfg, Path(".")).schemas.values()))
    for schema in schemas:
        exists = conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone()
        if exists and not conn.execute("select has_schema_privilege(%s, 'USAGE') and has_schema_privilege(%s, 'CREATE')",
                                       (schema, schema)).fetchone()[0]:
            missing.append(f"USAGE, CREATE on schema {schema}")
    groups = list(cfg.access.roles.values())
    absent = [name for name in groups if not conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()]
    if absent and not conn.execute("select rolcreaterole or rolsuper from pg_roles where rolname = current_user").fetchone()[0]:
        missing.append(f"CREATEROLE (to create the reader roles {', '.join(absent)}; or the DBA creates them)")
    users = [u for members in cfg.access.members.values() for u in members]
    unknown = [u for u in users if not conn.execute("select 1 from pg_roles where rolname = %s", (u,)).fetchone()]
    if unknown:
        missing.append(f"the login users {', '.join(unknown)} of access.members, which do not exist "
                       "(create role <name> login password '...')")
    if missing:
        return Check("privileges", False, f"role {user} lacks {'; '.join(missing)}. Grant them (docs/production.md"
                                          "#using-an-existing-warehouse) or use a role that has them")
    return Check("privileges", True, f"role {user} may create and use {', '.join(schemas)}")


def _landing(landing: Path, as_of: date | None) -> list[Check]:
    from tierline.settings import EARLIEST_AS_OF

    landing = Path(landing)
    if not landing.is_dir():
        what = "is not a folder" if landing.exists() else "does not exist"
        return [Check("landing", False, f"{landing} {what}; give the folder that holds the <YYYY-MM-DD> date folders")]
    checks = [Check("landing", True, str(landing))]
    if as_of is None:
        return checks
    if as_of < date.fromisoformat(EARLIEST_AS_OF):
        checks.append(Check("date", False, f"{as_of} is before {EARLIEST_AS_OF}, the earliest date the DAG runs "
                                           "(tierline.settings.EARLIEST_AS_OF)"))
        return checks
    folder = landing / as_of.isoformat()
    if folder.is_dir():
        files = sorted(p.name for p in folder.glob("*.csv"))
        checks.append(Check("date folder", True, f"{folder} ({len(files)} csv files)"))
        return checks
    present = date_folders(landing)
    before = [d for d in present if d < as_of][-NEAREST:]
    after = [d for d in present if d > as_of][:NEAREST]
    nearest = ", ".join([*(f"{d} (before)" for d in before), *(f"{d} (after)" for d in after)])
    checks.append(Check("date folder", False, f"no folder {folder}; "
                        + (f"nearest dates present: {nearest}" if nearest else "the landing folder has no date folders")))
    return checks


def date_folders(landing: Path) -> list[date]:
    """The ``YYYY-MM-DD`` folders under ``landing``, in date order."""
    found = []
    for child in Path(landing).iterdir():
        try:
            day = date.fromisoformat(child.name)
        except ValueError:
            continue
        if child.is_dir() and child.name == day.isoformat():
            found.append(day)
    return sorted(found)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check(landing: Path | None, as_of: date | None) -> list[Check]:
    """Every check, in order; never raises for what it checks."""
    cfg, config_check = _config()
    checks = [config_check, *_warehouse(cfg, as_of)]
    if landing is not None:
        checks += _landing(landing, as_of)
    return checks


def report(checks: list[Check], seconds: float, as_of: date | None) -> str:
    head = f"preflight{f' for {as_of}' if as_of else ''} ({seconds:.1f} s)"
    return "\n".join([head, *(c.line for c in checks)])


def run(landing: Path | None, as_of: date | None) -> list[Check]:
    """For the DAG's first task: raise when something fails (transient: a connection error)."""
    started = time.perf_counter()
    checks = check(landing, as_of)
    print(report(checks, time.perf_counter() - started, as_of))
    failed = [c for c in checks if not c.ok]
    if any(not c.transient for c in failed):
        raise PreflightFailed(checks)
    if failed:
        raise WarehouseUnreachable("; ".join(c.message for c in failed))
    return checks


def run_for_dag(landing, ds: str, run_id: str, logical_date) -> list[Check]:
    """The DAG's first task: record the run's identity in its run folder, then ``run``."""
    import json

    from tierline import pipeline, stages

    as_of = date.fromisoformat(str(ds)[:10])
    record = {"dag_id": "customer_tiering", "run_id": run_id, "as_of_date": as_of.isoformat(),
              "logical_date": logical_date.isoformat() if logical_date else None, "landing": str(landing)}
    run_dir = pipeline.run_folder(as_of, run_id)
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    pipeline.progress(run_dir, stages.PREFLIGHT, "started")
    started = time.perf_counter()
    try:
        checks = run(Path(landing), as_of)
    except Exception as exc:
        pipeline.progress(run_dir, stages.PREFLIGHT, "failed", seconds=round(time.perf_counter() - started, 2),
                          detail=type(exc).__name__)
        raise
    pipeline.progress(run_dir, stages.PREFLIGHT, "ok", seconds=round(time.perf_counter() - started, 2),
                      detail=f"{len(checks)} checks passed")
    return checks
