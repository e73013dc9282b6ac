"""How fast the reverse ETL syncs: a 100,000-customer first sync, a 1% change and a no-op, under a rate limit.

Run from the checkout root and read the JSON it prints:

    PYTHONPATH=plugins:devtools .venv/bin/python bench/bench_crm_sync.py [--customers 100000] [--change-share 0.01]

Everything is real: the published tables in a fresh database on the project's warehouse (the
embedded PostgreSQL unless TIERLINE_WAREHOUSE_URL is set), ``tierline.crm.sync.sync`` with the
project's ``config/crm.yml``, HTTP to the CRM emulator running as a separate process (its CLI),
set up with the fields crm.yml maps.

The rate limit. Zoho meters API credits per rolling 24 hours; an Enterprise org with 100 user
licences has 50,000 + 100 x 1,000 = 150,000 a day, about 104 a minute spent evenly, so the sync
is given 100 requests a minute (the choice of bench/bench_crm.py). To keep the run to a few
minutes, time is compressed by ``--time-scale`` (default 6): the emulator allows 100 requests per
10 s and the connector's backoff shrinks by the same factor. ``estimated_real_seconds`` stretches
the steps that talk to the CRM (push, reconcile) by the scale and keeps the local plan step as
measured; for a run too small to meet the limit it is an upper bound. The emulator sends
Retry-After in whole seconds, up to a second longer than needed, which on the compressed clock
weighs 6x: the estimates slightly understate the real rate.

Every request counts against the limit, reads included: a first sync costs one upsert per 100
customers plus one read-back page per 200 records (reconciliation), a 1% change about one
upsert per 100 changed customers plus a few reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date, timedelta

import requests
import yaml
from bench_crm import TimedSleep  # the script's folder is on sys.path when run as bench/<script>.py

from tierline import warehouse
from tierline.crm import ZohoCrmConnector, sync
from tierline.crm import config as crm_config
from tierline_dev.crm_emulators.process import spawn

AS_OF = date(2026, 11, 1)
TABLES = ("customer_tier", "customer_lifecycle", "customer_value")


def start_emulator(per_window: int, window: float, cfg: crm_config.Settings) -> tuple[subprocess.Popen, dict]:
    process, settings = spawn("zoho", "--rate-limit", str(per_window), "--rate-window", str(window),
                              "--config", str(cfg.path))
    return process, {k: v for k, v in settings.items() if k not in ("provider", "env")}


def create_tables(url: str) -> None:
    models = {m["name"]: m for m in yaml.safe_load(crm_config.MARTS_YML.read_text(encoding="utf-8"))["models"]}
    with warehouse.connect(url, autocommit=True) as conn:
        conn.execute("create schema if not exists analytics")
        for table in TABLES:
            columns = ", ".join(f"{c['name']} {c['data_type']}" for c in models[table]["columns"])
            conn.execute(f"create table analytics.{table} ({columns}, primary key (customer_id, as_of_date))")


def publish(url: str, customers: int, as_of: date, changed_every: int | None = None) -> None:
    """One published date; with ``changed_every`` every n-th customer moves up to vip."""
    changed = f"n %% {changed_every} = 0" if changed_every else "false"
    with warehouse.connect(url) as conn, conn.transaction():
        conn.execute(f"""
            insert into analytics.customer_tier (customer_id, as_of_date, tier, tier_reason, account_manager_id,
                                                 tier_spec_version)
            select 'C' || lpad(n::text, 7, '0'), %(d)s,
                   case when {changed} then 'vip' else (array['strategic','vip','key','regular','potential'])[
                       1 + (n * 7919) %% 5] end,
                   'score percentile ' || ((n * 31) %% 100) || ', monetary ' || (n * 13) %% 50000,
                   'M' || lpad(((n * 17) %% 200)::text, 3, '0'), '2026.11.1'
            from generate_series(1::bigint, %(n)s) as n""", {"d": as_of, "n": customers})
        conn.execute("""
            insert into analytics.customer_lifecycle (customer_id, as_of_date, lifecycle_stage, churn_risk)
            select 'C' || lpad(n::text, 7, '0'), %(d)s,
                   (array['prospect','new','growth','mature','declining','dormant','churned','reactivated'])[
                       1 + (n * 104729) %% 8], ((n * 37) %% 1000) / 1000.0
            from generate_series(1::bigint, %(n)s) as n""", {"d": as_of, "n": customers})
        conn.execute("""
            insert into analytics.customer_value (customer_id, as_of_date, predicted_clv, account_manager_id,
                                                  crm_record_id)
            select 'C' || lpad(n::text, 7, '0'), %(d)s, round(((n * 7.77) %% 90000)::numeric, 2),
                   'M' || lpad(((n * 17) %% 200)::text, 3, '0'), '5725767' || lpad(n::text, 12, '0')
            from generate_series(1::bigint, %(n)s) as n""", {"d": as_of, "n": customers})


def crm_record_id(n: int) -> str:
    return f"5725767{n:012d}"  # as publish() writes it


def seed_accounts(api_base: str, cfg: crm_config.Settings, customers: int) -> None:
    """The CRM holds every customer's account already (the customers came from it): update mode finds them."""
    for first in range(1, customers + 1, 5000):
        records = [{"id": crm_record_id(n), "Account_Name": f"Customer {n}"}
                   for n in range(first, min(first + 5000, customers + 1))]
        requests.post(f"{api_base}/__emulator/seed", json={"module": cfg.module, "records": records},
                      timeout=120).raise_for_status()


def measure(name: str, records: int, result: dict, counters: dict, time_scale: float, sleep: TimedSleep) -> dict:
    seconds = result["seconds"]
    steps = result["step_seconds"]
    # Only the steps that talk to the CRM run on the compressed clock; the plan is local work.
    real = steps["plan"] + (steps["push"] + steps["reconcile"]) * time_scale
    return {
        "scenario": name,
        "records_changed": records,
        "status": result["status"],
        "seconds": seconds,
        "step_seconds": steps,
        "records_per_second": round(records / seconds, 1) if records else None,
        "estimated_real_seconds": round(real, 1),
        "records_per_second_real_estimate": round(records / real, 1) if records else None,
        "crm_calls": result["crm_calls"],
        "write_calls": counters["write_calls"],
        "records_written": counters["records_written"],
        "responses": counters["statuses"],
        "reconciled_records": result["reconcile"]["checked"],
        "mismatches": result["reconcile"]["mismatch_count"],
        "connector_sleep_seconds": round(sleep.total, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--change-share", type=float, default=0.01)
    parser.add_argument("--per-minute", type=int, default=100, help="request budget per real-time minute")
    parser.add_argument("--time-scale", type=float, default=6.0, help="how much faster than real time to run")
    args = parser.parse_args()

    cfg = crm_config.load()
    url = warehouse.with_database(warehouse.url(), f"tierline_bench_crm_{os.getpid()}")
    warehouse.ensure_database(url)
    window = 60.0 / args.time_scale
    process, settings = start_emulator(args.per_minute, window, cfg)
    sleep = TimedSleep()
    results = []
    try:
        create_tables(url)
        seed_accounts(settings["api_base"], cfg, args.customers)
        publish(url, args.customers, AS_OF)
        connector = ZohoCrmConnector(**settings, timeout=30.0, max_retries=8, backoff_base=1.0 / args.time_scale,
                                     backoff_max=60.0 / args.time_scale, sleep=sleep)
        counters_url = f"{settings['api_base']}/__emulator/counters"

        def run(name: str, records: int) -> None:
            requests.post(f"{counters_url}/reset", timeout=30)
            sleep.total = 0.0
            result = sync.sync(warehouse_url=url, connector=connector, cfg=cfg)
            counters = requests.get(counters_url, timeout=30).json()
            results.append(measure(name, records, result, counters, args.time_scale, sleep))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)

        run("first_sync_updates_every_account", args.customers)
        every = round(1 / args.change_share)
        publish(url, args.customers, AS_OF + timedelta(days=1), changed_every=every)
        with warehouse.connect(url) as conn:
            # Only customers whose tier actually moves count as changed (some already were vip).
            changed = conn.execute(
                "select count(*) from analytics.customer_tier a join analytics.customer_tier b using (customer_id) "
                "where a.as_of_date = %s and b.as_of_date = %s and a.tier <> b.tier",
                (AS_OF, AS_OF + timedelta(days=1))).fetchone()[0]
        run("one_percent_change", changed)
        run("no_change", 0)
        connector.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
        warehouse.drop_database(url)
    print(json.dumps({
        "python": platform.python_version(),
        "machine": platform.machine(),
        "customers": args.customers,
        "budget_requests_per_minute": args.per_minute,
        "time_scale": args.time_scale,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
