"""How fast the reverse ETL syncs: a first sync, a 1% change and a no-op, under each provider's rate limit.

Run from the checkout root and read the JSON it prints:

    PYTHONPATH=plugins:devtools .venv/bin/python bench/bench_crm_sync.py [--provider zoho|fxiaoke]
        [--customers N] [--change-share 0.01]

Everything is real: the published tables in a fresh database on the project's warehouse (the
embedded PostgreSQL unless TIERLINE_WAREHOUSE_URL is set), ``tierline.crm.sync.sync`` with the
provider's shipped configuration (``config/crm.yml``, ``config/crm.fxiaoke.yml``: update mode,
matched on the CRM record id), HTTP to the provider's emulator running as a separate process (its
CLI), set up with the fields the configuration maps and holding every customer's account already
(the customers came from the CRM), so the first sync updates them all.

The rate limits. Zoho meters API credits per rolling 24 hours; an Enterprise org with 100 user
licences has 50,000 + 100 x 1,000 = 150,000 a day, about 104 a minute spent evenly, so the sync
is given 100 requests a minute (the choice of bench/bench_crm.py). 纷享销客 documents 100 calls per
20 s per interface (queries and updates count apart) and writes one record per call; the
connector paces itself to it. To keep the run to a few minutes, time is compressed by
``--time-scale`` (default 6): Zoho's emulator allows 100 requests per 10 s, 纷享销客's 100 per 3.3 s
per interface, and the connector's backoff and pacing shrink by the same factor.
``estimated_real_seconds`` is the run's CRM calls at the real allowed rate (or the measured time,
when that is longer: a small run is bound by local work, not by the limit).

Every request counts against the limit, reads included: a Zoho first sync costs one read page
per 200 records (the full read), one update per 100 customers and one read-back page per 200
records (reconciliation); a 1% change about one update per 100 changed customers plus a few
reads. A 纷享销客 first sync costs a query per 100 records, one update per customer and a
read-back query per 100 records.
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

from tierline import vocabulary, warehouse
from tierline.crm import config as crm_config
from tierline.crm import sync
from tierline.settings import PROJECT_ROOT
from tierline_dev.crm_emulators.configured import name_field
from tierline_dev.crm_emulators.process import spawn

AS_OF = date(2026, 11, 1)
TABLES = ("customer_tier", "customer_lifecycle", "customer_value")


CONFIGS = {"zoho": PROJECT_ROOT / "config" / "crm.yml", "fxiaoke": PROJECT_ROOT / "config" / "crm.fxiaoke.yml"}
LIMITS = {"zoho": (100, 60.0), "fxiaoke": (100, 20.0)}  # requests per window (纷享销客: per interface)


def start_emulator(cfg: crm_config.Settings, time_scale: float) -> tuple[subprocess.Popen, dict]:
    requests_, window = LIMITS[cfg.provider]
    process, settings = spawn(cfg.provider, "--rate-limit", str(requests_), "--rate-window", str(window / time_scale),
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
                   (%(stages)s::text[])[1 + (n * 104729) %% cardinality(%(stages)s::text[])],
                   ((n * 37) %% 1000) / 1000.0
            from generate_series(1::bigint, %(n)s) as n""", {"d": as_of, "n": customers,
                                                             "stages": list(vocabulary.lifecycle_stages())})
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
    name = name_field(cfg)
    for first in range(1, customers + 1, 5000):
        records = [{"id": crm_record_id(n), name: f"Customer {n}"}
                   for n in range(first, min(first + 5000, customers + 1))]
        requests.post(f"{api_base}/__emulator/seed", json={"module": cfg.module, "records": records},
                      timeout=120).raise_for_status()


def measure(name: str, records: int, result: dict, counters: dict, rate: float, sleep: TimedSleep) -> dict:
    """``rate``: requests per real-time second the provider allows (per interface for 纷享销客, whose
    sync reads, writes and reads back one after the other, so one interface is busy at a time)."""
    seconds = result["seconds"]
    # Every step may wait for the CRM (the first plan reads the whole module), so the real time is
    # at least the calls at the allowed rate; the local work (mapping, state) is what was measured.
    real = max(result["crm_calls"] / rate, seconds)
    return {
        "scenario": name,
        "records_changed": records,
        "status": result["status"],
        "seconds": seconds,
        "step_seconds": result["step_seconds"],
        "records_per_second": round(records / seconds, 1) if records else None,
        "crm_calls": result["crm_calls"],
        "estimated_real_seconds": round(real, 1),
        "records_per_second_real_estimate": round(records / real, 1) if records else None,
        "write_calls": counters["write_calls"],
        "records_written": counters["records_written"],
        "responses": counters["statuses"],
        "refusals": counters["errors"],
        "reconciled_records": result["reconcile"]["checked"],
        "mismatches": result["reconcile"]["mismatch_count"],
        "connector_sleep_seconds": round(sleep.total, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=sorted(CONFIGS), default="zoho")
    parser.add_argument("--customers", type=int, help="default 100,000 (Zoho), 3,000 (纷享销客: one write per call)")
    parser.add_argument("--change-share", type=float, default=0.01)
    parser.add_argument("--time-scale", type=float, default=6.0, help="how much faster than real time to run")
    args = parser.parse_args()
    customers = args.customers or (100_000 if args.provider == "zoho" else 3_000)

    cfg = crm_config.load(CONFIGS[args.provider])
    url = warehouse.with_database(warehouse.url(), f"tierline_bench_crm_{os.getpid()}")
    warehouse.ensure_database(url)
    process, settings = start_emulator(cfg, args.time_scale)
    sleep = TimedSleep()
    results = []
    requests_, window = LIMITS[args.provider]
    try:
        create_tables(url)
        seed_accounts(settings["api_base"], cfg, customers)
        publish(url, customers, AS_OF)
        pacing = {"rate_limit": (requests_, window / args.time_scale)} if args.provider == "fxiaoke" else {}
        connector = crm_config.make_connector(cfg, settings, timeout=30.0, max_retries=8, sleep=sleep,
                                              backoff_base=1.0 / args.time_scale,
                                              backoff_max=60.0 / args.time_scale, **pacing)
        counters_url = f"{settings['api_base']}/__emulator/counters"

        def run(name: str, records: int) -> None:
            requests.post(f"{counters_url}/reset", timeout=30)
            sleep.total = 0.0
            result = sync.sync(warehouse_url=url, connector=connector, cfg=cfg)
            counters = requests.get(counters_url, timeout=30).json()
            results.append(measure(name, records, result, counters, requests_ / window, sleep))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)

        run("first_sync_updates_every_account", customers)
        every = round(1 / args.change_share)
        publish(url, customers, AS_OF + timedelta(days=1), changed_every=every)
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
        "provider": args.provider,
        "customers": customers,
        "rate_limit": f"{requests_} requests per {window:.0f} s" + (" per interface" if args.provider == "fxiaoke"
                                                                     else ""),
        "time_scale": args.time_scale,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
