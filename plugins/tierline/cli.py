"""Command line for operators: ``tierline run|backfill|demo|...`` (also ``python -m tierline.cli``).

``run`` executes the real ``customer_tiering`` DAG for one date with ``airflow dags test`` (no
scheduler needed) against the configured or embedded warehouse, and exits 0 only when the run
published; otherwise it prints the failing task's reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tierline import settings, warehouse
from tierline.assets import PUBLISHED_TABLES

DAG_ID = "customer_tiering"


def airflow_environ() -> dict[str, str]:
    """Environment for a local Airflow: its state under $TIERLINE_HOME, this checkout's DAGs."""
    home = settings.home()
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    url = warehouse.url()
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "AIRFLOW_CONN_TIERLINE_WAREHOUSE": url,
        "TIERLINE_HOME": str(home),
        "TIERLINE_RETRY_DELAY_SECONDS": os.environ.get("TIERLINE_RETRY_DELAY_SECONDS", "120"),
        "GX_ANALYTICS_ENABLED": "False",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(settings.PROJECT_ROOT / "plugins"),
                                                    os.environ.get("PYTHONPATH")])),
    }
    if os.environ.get(settings.WAREHOUSE_ENV):
        env[settings.WAREHOUSE_ENV] = os.environ[settings.WAREHOUSE_ENV]
    return env


def _airflow(args: list[str], env: dict[str, str], log_path: Path | None = None) -> int:
    binary = str(Path(sys.executable).with_name("airflow"))
    full_env = {**os.environ, **env}
    if log_path is None:
        return subprocess.run([binary, *args], env=full_env).returncode
    with log_path.open("w") as log:
        return subprocess.run([binary, *args], env=full_env, stdout=log, stderr=subprocess.STDOUT).returncode


def _airflow_following(args: list[str], env: dict[str, str], log_path: Path, follower=None) -> int:
    """``_airflow`` with its output in ``log_path``, calling ``follower`` twice a second while it runs."""
    binary = str(Path(sys.executable).with_name("airflow"))
    with log_path.open("w") as log:
        process = subprocess.Popen([binary, *args], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        while True:
            finished = process.poll() is not None
            if follower:
                follower()
            if finished:
                return process.returncode
            time.sleep(0.5)


class ProgressPrinter:
    """Prints each task of a run as it starts and ends, from the run's progress file (tierline.pipeline)."""

    def __init__(self, as_of: date, logical_date: datetime):
        self.as_of, self.logical_date = as_of, logical_date
        self.run_dir: Path | None = None
        self.offset = 0

    def __call__(self) -> None:
        from tierline.pipeline import PROGRESS_FILE

        self.run_dir = self.run_dir or _run_dir_of(self.as_of, self.logical_date)
        path = self.run_dir / PROGRESS_FILE if self.run_dir else None
        if path is None or not path.exists():
            return
        with path.open(encoding="utf-8") as handle:
            handle.seek(self.offset)
            while (line := handle.readline()).endswith("\n"):  # a line still being written waits
                self.offset = handle.tell()
                print(self.describe(json.loads(line)), flush=True)

    @staticmethod
    def describe(event: dict) -> str:
        at = datetime.fromisoformat(event["at"]).astimezone().strftime("%H:%M:%S")
        retry = f" (try {event['try_number']})" if event.get("try_number", 1) > 1 else ""
        if event["event"] == "started":
            return f"  {at}  {event['stage']:<13} started{retry}"
        took = f" in {event['seconds']:.1f} s" if event.get("seconds") is not None else ""
        detail = f": {event['detail']}" if event.get("detail") else ""
        return f"  {at}  {event['stage']:<13} {event['event']}{took}{detail}"


def ensure_airflow_db(env: dict[str, str]) -> None:
    import airflow

    stamp = Path(env["AIRFLOW_HOME"]) / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return
    log = Path(env["AIRFLOW_HOME"]) / "db-migrate.log"
    if _airflow(["db", "migrate"], env, log) != 0:
        raise SystemExit(f"airflow db migrate failed; see {log}")
    stamp.touch()


def _run_dir_of(as_of: date, logical_date: datetime) -> Path | None:
    """The run folder of the DAG run created for ``logical_date`` (its preflight task writes run.json)."""
    day = settings.runs_dir() / as_of.isoformat()
    for record_file in day.glob("*/run.json") if day.exists() else []:
        record = json.loads(record_file.read_text())
        if record.get("logical_date") and datetime.fromisoformat(record["logical_date"]) == logical_date:
            return record_file.parent
    return None


def preflight(landing: Path | None, as_of: date | None, *, quiet: bool = False) -> bool:
    """Run the preflight checks and print them (always when one fails); True when all passed."""
    from tierline import preflight as checks

    started = time.perf_counter()
    results = checks.check(landing, as_of)
    passed = all(c.ok for c in results)
    if not passed or not quiet:
        print(checks.report(results, time.perf_counter() - started, as_of), file=sys.stdout if passed else sys.stderr)
    return passed


@dataclass
class RunOutcome:
    code: int  # 0 only when the run published
    run_dir: Path | None
    log_path: Path | None


def _say_who_holds_the_warehouse(as_of: date) -> None:
    """Runs on one warehouse take turns (tierline.runs): say so before this one starts waiting."""
    import psycopg

    from tierline import config, runs

    try:
        holder = runs.current_holder(warehouse.url())
    except psycopg.Error:
        return  # an unreachable warehouse is reported by the run itself
    if holder is not None:
        wait = config.load().runs.lock_wait_seconds
        print(f"tierline: the warehouse is busy with {holder.describe()}; the run for {as_of} waits for it "
              f"(up to {wait:g} s, runs.lock_wait_seconds), then refuses", file=sys.stderr, flush=True)


def run(landing: Path, as_of: date, *, quiet: bool = False) -> int:
    """Run the DAG for one date; return 0 only when the run published."""
    return run_once(landing, as_of, quiet=quiet).code


def run_once(landing: Path, as_of: date, *, quiet: bool = False) -> RunOutcome:
    """Preflight, then one new DAG run for ``as_of`` with a record of its own.

    Its logical date is ``as_of`` at the current UTC time of day (the run still processes
    ``as_of``: the DAG reads the logical date's UTC date), so a re-run never replaces an earlier
    run of the date, in Airflow or in the logs; the run's folder is the one whose ``run.json``
    names that logical date.
    """
    if not preflight(landing, as_of, quiet=quiet):
        print(f"tierline run for {as_of}: nothing was run (fix the preflight failure above; "
              "docs/production.md#failure-messages)", file=sys.stderr)
        return RunOutcome(2, None, None)
    env = airflow_environ()
    ensure_airflow_db(env)
    logical_date = datetime.combine(as_of, datetime.now(UTC).time(), tzinfo=UTC)
    log_path = settings.run_log(as_of, logical_date)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _say_who_holds_the_warehouse(as_of)
    conf = json.dumps({"landing": str(Path(landing).resolve())})
    if not quiet:
        print(f"running {DAG_ID} for {as_of}; Airflow log: {log_path}")
    code = _airflow_following(["dags", "test", DAG_ID, logical_date.isoformat(), "-c", conf], env, log_path,
                              None if quiet else ProgressPrinter(as_of, logical_date))
    run_dir = _run_dir_of(as_of, logical_date)
    summary = run_dir / "summary.txt" if run_dir else None
    failure = run_dir / "failure.json" if run_dir else None
    record = json.loads(failure.read_text()) if failure and failure.exists() else None
    # retention runs after publish: its failure is reported, the publication stands
    published = summary and summary.exists() and (code == 0 or (record or {}).get("stage") == "apply_retention")
    if published:
        if not quiet:
            print(summary.read_text().rstrip())
            print(f"  run folder: {run_dir}\n  Airflow log: {log_path}")
        if code != 0:
            print(f"tierline run for {as_of} published, but retention failed: {record['error']} (the next run "
                  f"applies it again; python -m tierline.cli retention)", file=sys.stderr)
        return RunOutcome(0, run_dir, log_path)
    print(f"tierline run for {as_of} did NOT publish (airflow exit code {code}).", file=sys.stderr)
    if record:
        print(f"  failed task: {record['stage']}\n  reason: {record['error']}", file=sys.stderr)
    else:
        print("  the DAG did not get to run a stage; see the Airflow log below", file=sys.stderr)
    print(f"  Airflow log: {log_path}", file=sys.stderr)
    if run_dir:
        print(f"  run folder: {run_dir}", file=sys.stderr)
    return RunOutcome(1 if code == 0 else code, run_dir, log_path)


def backfill(landing: Path, start: date, end: date, *, force: bool = False) -> int:
    """Run every date folder of ``landing`` in [start, end], oldest first; skip published dates.

    It stops at the first date that does not publish; the same command resumes there, since the
    dates published before it are skipped (``--force`` re-runs them).
    """
    from tierline import config as config_module
    from tierline import preflight as checks
    from tierline import publish

    if end < start:
        print(f"backfill: --to {end} is before --from {start}", file=sys.stderr)
        return 2
    if not preflight(landing, None, quiet=True):
        print("backfill: nothing was run (fix the preflight failure above)", file=sys.stderr)
        return 2
    dates = [d for d in checks.date_folders(landing) if start <= d <= end]
    if not dates:
        print(f"backfill: no date folders between {start} and {end} in {landing}", file=sys.stderr)
        return 2
    with warehouse.connect() as conn:
        published = publish.published_dates(conn, config_module.load().publish.schema_)
    todo = [d for d in dates if force or d not in published]
    print(f"backfill {start} .. {end}: {len(dates)} date folders in {landing}, {len(dates) - len(todo)} already "
          f"published{' (re-run: --force)' if force and published else ''}, {len(todo)} to run", flush=True)
    started = time.perf_counter()
    for number, day in enumerate(dates, 1):
        prefix = f"[{number}/{len(dates)}] {day}"
        if day not in todo:
            print(f"{prefix} skipped: published by run {published[day]} (--force re-runs it)", flush=True)
            continue
        print(f"{prefix} running ...", flush=True)
        began = time.perf_counter()
        outcome = run_once(landing, day, quiet=True)
        took = time.perf_counter() - began
        if outcome.code != 0:
            print(f"{prefix} FAILED after {took:.0f} s; stopped. Fix it, then run the same command again: it "
                  f"resumes at {day}", file=sys.stderr, flush=True)
            return outcome.code
        print(f"{prefix} published in {took:.0f} s; run folder {outcome.run_dir}; log {outcome.log_path}", flush=True)
    print(f"backfill done: {len(todo)} run, {len(dates) - len(todo)} skipped, {time.perf_counter() - started:.0f} s")
    return 0


def demo(customers: int, days: int, seed: int, crm: str = "zoho") -> int:
    landing = settings.home() / "demo" / "landing"
    start = date(2026, 11, 1)
    marker = landing / f".generated-{customers}-{days}-{seed}"
    if not marker.exists():
        print(f"generating sample extracts: {customers:,} customers, {days} extract days -> {landing}", flush=True)
        done = run_devtool("tierline_dev.generate", "--out", str(landing), "--customers", str(customers),
                           "--days", str(days), "--seed", str(seed), "--start-date", start.isoformat())
        if done.returncode != 0:
            return done.returncode
        marker.touch()
    reports = []
    for offset in range(days):
        as_of = start + timedelta(days=offset)
        print(f"\n== running {DAG_ID} for {as_of} ==")
        outcome = run_once(landing, as_of)
        if outcome.code != 0:
            return outcome.code
        reports.append(outcome.run_dir / "report.html")
    print(where_results_are(demo_crm_sync(landing, crm), reports))
    return 0


def where_results_are(crm_line: str, reports: list[Path] = ()) -> str:
    """The demo's closing words, with the path of each run's report. The URL is printed with its
    password masked (``?password=`` too); the query reads the real one through ``make warehouse-url``
    instead of showing it."""
    report_lines = ("\n" + " " * 14).join(str(path) for path in reports) or "(no run published)"
    return f"""
Where the results are
  warehouse:  {warehouse.redacted(warehouse.url())}
  tables:     analytics: {textwrap.fill(", ".join(PUBLISHED_TABLES), 88, subsequent_indent=" " * 14)}
              (snapshot tables have a *_latest view; analytics.publication_log lists runs)
  quarantine: raw.quarantine (file, line, raw text, reason)
  reports:    {report_lines}
              (open one in a browser: a self-contained page per run)
  CRM:        {crm_line}
  query:      psql "$(make -s warehouse-url)" -c 'select tier, count(*) from analytics.customer_tier_latest group by 1'
"""


# -- CRM integration (docs/crm.md) ---------------------------------------------------------------


def crm_sync(*, dry_run: bool = False, retry: bool = False, as_of: date | None = None) -> int:
    """Plan, push and reconcile (or only plan, into a file); exit 0 ok, 1 mismatches, 3 stopped early."""
    from tierline.crm import config as crm_config
    from tierline.crm import sync as crm_sync_module
    from tierline.errors import TierlineError

    try:
        cfg = crm_config.load()
        result = crm_sync_module.sync(dry_run=dry_run, retry_dead_letters=retry, as_of=as_of, cfg=cfg)
    except TierlineError as exc:
        print(f"crm sync: {exc}", file=sys.stderr)
        return 2
    if not dry_run:
        result["alerts"] = crm_sync_module.alert(cfg, crm_sync_module.alert_counts(result), run_id=result["run_id"],
                                                 as_of=result["plan"]["as_of_date"],
                                                 task="crm-retry" if retry else "crm-sync")
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    if result["status"] == "dry_run":
        print(f"dry run: nothing was written; planned changes in {result['dry_run_file']}", file=sys.stderr)
    elif result["status"] == "stopped":
        print(f"crm sync stopped early ({result['push']['stopped_reason']}); {result['push']['unsent']} records "
              "stay in crm_sync.outbox for the next run", file=sys.stderr)
    return {"ok": 0, "dry_run": 0, "mismatches": 1, "stopped": 3}[result["status"]]


def crm_pull(landing: Path, extract_date: date | None) -> int:
    from dataclasses import asdict

    from tierline import config as config_module
    from tierline.crm import pull as crm_pull_module
    from tierline.errors import TierlineError

    try:
        day = extract_date or crm_pull_module.today(config_module.load().business_timezone)
        result = crm_pull_module.pull(landing, day)
    except TierlineError as exc:
        print(f"crm pull: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result), indent=2, ensure_ascii=False))
    return 0


def _add_crm_commands(sub) -> None:
    sync_p = sub.add_parser("crm-sync", help="push changed tiers to the CRM (docs/crm.md)")
    sync_p.add_argument("--dry-run", action="store_true", help="write the planned changes to a file, change nothing")
    sync_p.add_argument("--as-of", type=date.fromisoformat, help="published date to sync (default: the latest)")
    retry_p = sub.add_parser("crm-retry", help="replay the CRM dead letters (with any other pending change)")
    retry_p.add_argument("--as-of", type=date.fromisoformat, help="published date to sync (default: the latest)")
    pull_p = sub.add_parser("crm-pull", help="extract CRM modules into <landing>/<date>/ per EXTRACTS.md")
    pull_p.add_argument("--landing", required=True, type=Path)
    pull_p.add_argument("--date", type=date.fromisoformat, help="extract date folder (default: today)")


def _run_crm_command(args) -> int | None:
    if args.command == "crm-sync":
        return crm_sync(dry_run=args.dry_run, as_of=args.as_of)
    if args.command == "crm-retry":
        return crm_sync(retry=True, as_of=args.as_of)
    if args.command == "crm-pull":
        return crm_pull(args.landing, args.date)
    return None


def run_devtool(module: str, *args: str, capture_output: bool = False) -> subprocess.CompletedProcess:
    """Run a development tool (``devtools/tierline_dev``: sample generator, CRM emulators) in a process
    of its own: the pipeline never imports them, so an installation without them still runs."""
    path = os.pathsep.join(p for p in (str(settings.PROJECT_ROOT / "plugins"), str(settings.PROJECT_ROOT / "devtools"),
                                       os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", module, *args], env={**os.environ, "PYTHONPATH": path},
                          capture_output=capture_output, text=True)


def demo_crm_sync(landing: Path, provider: str) -> str:
    """Push the published tiers to a local CRM emulator (real HTTP) and say what it now holds.

    ``provider`` picks the emulator (``CRM=fxiaoke make demo``) and the shipped configuration for it.
    """
    config = settings.PROJECT_ROOT / "config" / ("crm.yml" if provider == "zoho" else f"crm.{provider}.yml")
    store = settings.home() / "crm" / f"{provider}.sqlite"
    done = run_devtool("tierline_dev.crm_emulators.demo", "--store", str(store), "--landing", str(landing),
                       "--config", str(config), capture_output=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        return f"the CRM step failed (exit {done.returncode}); see the output above"
    *lines, summary = done.stdout.rstrip("\n").split("\n")
    print("\n".join(lines))
    return summary


def forget(customer_id: str, reason: str, actor: str | None) -> int:
    """Erase one person (tierline.erasure); print what was touched, never who."""
    from tierline import erasure
    from tierline.errors import TierlineError

    try:
        record = erasure.forget(customer_id, reason, actor=actor)
    except TierlineError as exc:
        print(f"forget: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2, ensure_ascii=False))
    print(f"forget: erasure {record['erasure_id']} recorded in tierline.erasure_log; later extracts of this "
          "customer are quarantined as 'erased'. Delete them in the source CRM and the extract inbox too.",
          file=sys.stderr)
    return 0


def retention(as_of: date | None) -> int:
    from tierline import config as config_module
    from tierline import retention as retention_module
    from tierline.errors import TierlineError

    try:
        cfg = config_module.load()
        result = retention_module.apply(as_of or retention_module.today(cfg.business_timezone), cfg=cfg)
    except TierlineError as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierline", description="the tierline pipeline's command line (README.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the DAG for one date")
    run_p.add_argument("--landing", required=True, type=Path)
    run_p.add_argument("--as-of", required=True, type=date.fromisoformat)
    back_p = sub.add_parser("backfill", help="run every date folder in a range, oldest first, resumable")
    back_p.add_argument("--landing", required=True, type=Path)
    back_p.add_argument("--from", dest="start", required=True, type=date.fromisoformat)
    back_p.add_argument("--to", dest="end", required=True, type=date.fromisoformat)
    back_p.add_argument("--force", action="store_true", help="re-run dates that are already published")
    demo_p = sub.add_parser("demo", help="generate sample extracts and run every date")
    demo_p.add_argument("--customers", type=int, default=5000)
    demo_p.add_argument("--days", type=int, default=3)
    demo_p.add_argument("--seed", type=int, default=7)
    demo_p.add_argument("--crm", choices=["zoho", "fxiaoke"], default="zoho", help="the CRM emulator the demo syncs to")
    pre_p = sub.add_parser("preflight", help="check config, warehouse, landing and date folder (seconds)")
    pre_p.add_argument("--landing", type=Path)
    pre_p.add_argument("--as-of", type=date.fromisoformat)
    sub.add_parser("airflow-env", help="print the environment of the local Airflow as shell exports")
    ui_p = sub.add_parser("airflow", help="start the Airflow UI on the local state and warehouse (tierline.ui)")
    ui_p.add_argument("--port", type=int, default=8080)
    graph_p = sub.add_parser("dag-graph", help="write the customer_tiering DAG's graph (.dot; .svg/.png need graphviz's dot)")
    graph_p.add_argument("--out", type=Path, default=Path("customer_tiering.dot"))
    sub.add_parser("warehouse-url", help="print the warehouse URL (starting the embedded one if needed)")
    sub.add_parser("dbt-env", help="print the dbt profile variables for the warehouse as shell exports")
    sub.add_parser("stop", help="stop the embedded PostgreSQL")
    forget_p = sub.add_parser("forget", help="erase one person everywhere tierline keeps them (PIPL Art. 47, "
                                             "GDPR Art. 17)")
    forget_p.add_argument("--customer-id", required=True, help="the customer id the extracts carry")
    forget_p.add_argument("--reason", required=True, help="why (the request it fulfils); stored in the audit log")
    forget_p.add_argument("--actor", help="who asked (default: this login and host)")
    retention_p = sub.add_parser("retention", help="remove what the retention periods (config: retention) no "
                                                   "longer keep; also a DAG task after every publish")
    retention_p.add_argument("--as-of", type=date.fromisoformat, help="count the periods back from this date "
                                                                     "(default: today in the business time zone)")
    _add_crm_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``tierline`` console command (pyproject.toml), also ``python -m tierline.cli``."""
    args = build_parser().parse_args(argv)

    if args.command == "run":
        return run(args.landing, args.as_of)
    if args.command == "backfill":
        return backfill(args.landing, args.start, args.end, force=args.force)
    if args.command == "preflight":
        return 0 if preflight(args.landing, args.as_of) else 2
    if args.command == "demo":
        return demo(args.customers, args.days, args.seed, args.crm)
    if args.command in ("airflow", "dag-graph"):
        from tierline import ui

        return ui.serve(args.port) if args.command == "airflow" else ui.graph(args.out)
    if args.command == "airflow-env":
        for key, value in airflow_environ().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.command == "stop":
        print("embedded PostgreSQL stopped" if warehouse.stop_embedded() else "no embedded PostgreSQL running")
        return 0
    if args.command == "dbt-env":
        for key, value in warehouse.dbt_env(warehouse.url()).items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.command == "warehouse-url":
        print(warehouse.url())
        return 0
    if args.command == "forget":
        return forget(args.customer_id, args.reason, args.actor)
    if args.command == "retention":
        return retention(args.as_of)
    crm_code = _run_crm_command(args)
    return 2 if crm_code is None else crm_code


if __name__ == "__main__":
    sys.exit(main())
