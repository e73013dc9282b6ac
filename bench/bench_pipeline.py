"""Benchmark a full refresh and a daily incremental run at a given scale; compare with the floor.

    python bench/bench_pipeline.py --customers 100000 [--days 2] [--skip-pandas]

Times every stage of the pipeline (called in-process, as the DAG's tasks call them), then:
- the floor: plain COPY of the raw files + one hand-written SQL computing an RFM tier table;
- the same core logic in pandas (time and peak memory, in its own process);
- one `dbt build` of the whole project against the two per-layer builds the DAG runs;
- peak memory of this process (loader, dbt, GX) and of any single PostgreSQL backend.
Writes bench/results/pipeline_<customers>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from tierline import contract, generate, pipeline, settings, warehouse  # noqa: E402

START = date(2026, 11, 1)

PANDAS_BASELINE = r"""
import re, sys, time
import pandas as pd
started = time.perf_counter()
orders = pd.read_csv(sys.argv[1], usecols=["customer_id", "order_ts", "status", "net_amount"],
                     dtype={"customer_id": "string", "status": "category"})
orders = orders[orders["status"] == "completed"]
orders["order_date"] = pd.to_datetime(orders["order_ts"], format="mixed", utc=True).dt.tz_convert(
    "Asia/Shanghai").dt.date
agg = orders.groupby("customer_id").agg(last=("order_date", "max"), frequency=("order_date", "nunique"),
                                        monetary=("net_amount", "sum"))
score = (agg["monetary"].rank(pct=True) + agg["frequency"].rank(pct=True)) / 2
agg["tier"] = pd.cut(score, [-1, 0.8, 0.95, 0.99, 2], labels=["regular", "key", "vip", "strategic"])
hwm = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
print(time.perf_counter() - started, hwm)
"""


def peak_rss_self() -> int:
    # VmHWM belongs to the address space: unlike ru_maxrss it does not carry over across exec
    text = Path("/proc/self/status").read_text()
    return int(text.split("VmHWM:")[1].split()[0]) * 1024

FLOOR_SQL = """
create table floor.rfm_tier as
with orders as (
    select customer_id, (order_ts::timestamptz at time zone 'Asia/Shanghai')::date as order_date,
           net_amount::numeric as amount
    from floor.sales_orders where status = 'completed'
), agg as (
    select customer_id, max(order_date) as last_date, count(distinct order_date) as frequency,
           sum(amount) as monetary
    from orders group by customer_id
), scored as (
    select *, (percent_rank() over (order by monetary) + percent_rank() over (order by frequency)) / 2 as score
    from agg
)
select customer_id, last_date, frequency, monetary,
       case when score >= 0.99 then 'strategic' when score >= 0.95 then 'vip' when score >= 0.8 then 'key'
            else 'regular' end as tier
from scored
"""


class PeakBackendMemory:
    """Polls the RSS of every PostgreSQL process and keeps the largest single one."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        import psutil

        while not self._stop.is_set():
            for proc in psutil.process_iter(["name", "memory_info"]):
                if proc.info["name"] and proc.info["name"].startswith("postgres") and proc.info["memory_info"]:
                    self.peak = max(self.peak, proc.info["memory_info"].rss)
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(func):
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def run_day(ctx) -> dict[str, float]:
    seconds = {}
    for name, func in [
        ("land", lambda: pipeline.land_extracts(ctx)),
        ("load", lambda: pipeline.load_raw(ctx)),
        ("gate_raw", lambda: pipeline.gate(ctx, "raw")),
        ("dbt_staging", lambda: pipeline.build(ctx, "staging")),
        ("gate_staging", lambda: pipeline.gate(ctx, "staging")),
        ("fit_clv", lambda: pipeline.fit_clv(ctx)),
        ("dbt_marts", lambda: pipeline.build(ctx, "marts")),
        ("gate_marts", lambda: pipeline.gate(ctx, "marts")),
        ("publish", lambda: pipeline.publish(ctx)),
    ]:
        seconds[name], _ = timed(func)
        print(f"    {name:<13} {seconds[name]:8.2f} s", flush=True)
    seconds["total"] = sum(seconds.values())
    return seconds


def floor(url: str, landing: Path) -> float:
    """COPY every raw file as text + one SQL for an RFM tier table."""
    started = time.perf_counter()
    with warehouse.connect(url) as conn:
        conn.execute("drop schema if exists floor cascade")
        conn.execute("create schema floor")
        for entity in contract.ENTITIES:
            path = landing / START.isoformat() / entity.file_name
            if not path.exists():
                continue
            header = path.open(encoding="utf-8-sig").readline().strip().split(",")
            cols = ", ".join(f'"{h.strip().lower()}" text' for h in header)
            conn.execute(f"create table floor.{entity.name} ({cols})")
            with conn.cursor().copy(f"copy floor.{entity.name} from stdin with (format csv, header true)") as copy, \
                    path.open("rb") as handle:
                while chunk := handle.read(4 << 20):
                    copy.write(chunk)
        conn.execute(FLOOR_SQL)
        conn.commit()
    return time.perf_counter() - started


def dbt_single_build(ctx) -> float:
    from dbt.cli.main import dbtRunner

    os.environ.update(warehouse.dbt_env(ctx.warehouse_url))
    started = time.perf_counter()
    dbtRunner().invoke(["build", "--exclude-resource-type", "unit_test", "--vars", json.dumps(ctx.dbt_vars(), ensure_ascii=False),
                        "--project-dir", str(settings.DBT_PROJECT_DIR), "--profiles-dir", str(settings.DBT_PROJECT_DIR),
                        "--target-path", str(settings.home() / "dbt_target"), "--quiet"])
    return time.perf_counter() - started


def predictive(ctx) -> dict[str, float]:
    """The BTYD summary in SQL (rebuilt alone) plus the BG/NBD + Gamma-Gamma fit and predictions."""
    from tierline import clv, dbt

    summary, _ = timed(lambda: dbt.invoke(["run", "--select", "int_customers__btyd_summary"], "bench_summary",
                                          warehouse_url=ctx.warehouse_url, dbt_vars=ctx.dbt_vars(),
                                          build_schema=ctx.config.publish.build_schema, run_dir=ctx.run_dir))
    with warehouse.connect(ctx.warehouse_url) as conn:
        fit, outcome = timed(lambda: clv.fit_and_predict(conn, as_of=ctx.as_of, cfg=ctx.config.clv))
    return {"summary_sql_and_dbt_seconds": summary, "fit_and_predict_seconds": fit, "total": summary + fit,
            "customers": outcome.customers, "method": outcome.method}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--skip-single-build", action="store_true",
                        help="skip the comparison with one dbt build of the whole project (long at 1M)")
    args = parser.parse_args()

    data = settings.home() / "bench" / f"landing_{args.customers}_{args.days}_{args.seed}"
    generation = None
    if not (data / ".complete").exists():
        print(f"generating {args.customers:,} customers -> {data}", flush=True)
        generation, _ = timed(lambda: generate.generate(data, customers=args.customers, days=args.days,
                                                        seed=args.seed, start_date=START, dirty=False))
        (data / ".complete").touch()
    sizes = {p.name: p.stat().st_size for p in (data / START.isoformat()).glob("*.csv")}
    with (data / START.isoformat() / "sales_orders.csv").open("rb") as handle:
        orders = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b"")) - 1

    url = warehouse.with_database(warehouse.url(), f"tierline_bench_{uuid.uuid4().hex[:6]}")
    warehouse.ensure_database(url)
    os.environ[warehouse.ENV_URL] = url
    results: dict = {"customers": args.customers, "orders": orders, "bytes": sum(sizes.values()),
                     "generate_seconds": generation, "cores": os.cpu_count()}
    try:
        with PeakBackendMemory() as backend:
            print("full refresh (first extract date):", flush=True)
            full = run_day(pipeline.context(START, "bench-full", data))
            incremental = {}
            for offset in range(1, args.days):
                day = START + timedelta(days=offset)
                print(f"incremental {day}:", flush=True)
                incremental[day.isoformat()] = run_day(pipeline.context(day, f"bench-{day}", data))
            print("predictive fit (SQL summary + BG/NBD + Gamma-Gamma):", flush=True)
            results["predictive"] = predictive(pipeline.context(START, "bench-predictive", data))
            print(f"    {results['predictive']}", flush=True)
            single = None
            if not args.skip_single_build:
                print("one dbt build of the whole project:", flush=True)
                single = dbt_single_build(pipeline.context(START + timedelta(days=args.days - 1), "bench-single", data))
                print(f"    {single:.2f} s", flush=True)
            print("floor (COPY + one SQL):", flush=True)
            floor_seconds = floor(url, data)
            print(f"    {floor_seconds:.2f} s", flush=True)
        results.update(full_refresh=full, incremental=incremental, floor_seconds=floor_seconds,
                       dbt_single_build_seconds=single,
                       dbt_split_seconds=full["dbt_staging"] + full["dbt_marts"],
                       gates_share_of_full=(full["gate_raw"] + full["gate_staging"] + full["gate_marts"]) / full["total"],
                       peak_rss_pipeline_bytes=peak_rss_self(),
                       peak_rss_postgres_backend_bytes=backend.peak)
        results["full_vs_floor"] = full["total"] / floor_seconds
        if incremental:
            last = list(incremental.values())[-1]
            results["incremental_vs_full"] = last["total"] / full["total"]
        if not args.skip_pandas:
            print("pandas baseline:", flush=True)
            out = subprocess.run([sys.executable, "-c", PANDAS_BASELINE, str(data / START.isoformat() / "sales_orders.csv")],
                                 capture_output=True, text=True, check=True).stdout.split()
            results["pandas_seconds"], results["pandas_peak_rss_bytes"] = float(out[0]), int(out[1])
            results["transform_seconds"] = full["dbt_staging"] + full["dbt_marts"]
            print(f"    {results['pandas_seconds']:.2f} s, peak {int(out[1]) / 2**20:.0f} MiB", flush=True)
    finally:
        warehouse.drop_database(url)

    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"pipeline_{args.customers}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
