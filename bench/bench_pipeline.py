"""Benchmark a full refresh and daily incremental runs at one scale, against the floor and the peers.

    python bench/bench_pipeline.py --customers 100000 [--seed 1] [--verify full|none] [--skip-peers]

What it does, on one database created for the run (dropped at the end):

1. data: the generator's full snapshot (clean, one date) plus four delta days this script writes
   from it: 0.1%, 1% and 10% new orders (with their items) each with 0.5% changed customers, then
   a "handful" day (10 orders, 5 customers) for the fixed cost of a run;
2. the pipeline: every day runs every stage (land .. report) in a worker process of its own, as
   the DAG's tasks call them; heavy imports (dbt, Great Expectations) happen before the stages
   are timed and are reported apart (a task process pays them once, Airflow's own start-up is
   not a stage), and the peak memory of every stage is read from VmHWM, reset before each one;
3. the floor: COPY of the same snapshot files + one SQL computing an RFM percentile tier;
4. the peers: the same core logic in pandas and in DuckDB, each in its own process (time, peak);
5. the check that the incremental chain equals a full rebuild: a second database replays every
   day with ``full_refresh`` and every published table is compared row for row (as a multiset).

Prints a table and writes bench/results/pipeline_<customers>.json. The largest PostgreSQL
backend is polled during the pipeline runs (RSS, and RSS minus shared memory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from tierline import contract, settings, stages, warehouse  # noqa: E402

START = date(2026, 11, 1)
# (label, share of the snapshot's orders added as new orders, customers changed); None = a handful
DAYS = [
    ("orders_0.1pct", 0.001, 0.005),
    ("orders_1pct", 0.01, 0.005),
    ("orders_10pct", 0.10, 0.005),
    ("handful", None, None),
]
HANDFUL_ORDERS, HANDFUL_CUSTOMERS = 10, 5
STAGES = stages.RUN
TRANSFORM = ("dbt_staging", "dbt_marts")
GIB = 2**30

# The core logic every contender computes: completed orders -> per customer last order date,
# distinct order days and revenue -> percentile score -> tier.
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

PEER_PRELUDE = r"""
import re, sys, time
def peak():
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
"""

PANDAS_PEER = PEER_PRELUDE + r"""
import pandas as pd
started = time.perf_counter()
orders = pd.read_csv(sys.argv[1], usecols=["customer_id", "order_ts", "status", "net_amount"],
                     dtype={"customer_id": "string", "status": "category"})
orders = orders[orders["status"] == "completed"]
orders["order_date"] = pd.to_datetime(orders["order_ts"], format="mixed", utc=True).dt.tz_convert(
    "Asia/Shanghai").dt.date
agg = orders.groupby("customer_id").agg(last=("order_date", "max"), frequency=("order_date", "nunique"),
                                        monetary=("net_amount", "sum"))
n = max(len(agg) - 1, 1)
score = ((agg["monetary"].rank(method="min") - 1) / n + (agg["frequency"].rank(method="min") - 1) / n) / 2
agg["tier"] = pd.cut(score, [-1, 0.8, 0.95, 0.99, 2], labels=["regular", "key", "vip", "strategic"], right=False)
print(time.perf_counter() - started, peak(), len(agg))
"""

DUCKDB_PEER = PEER_PRELUDE + r"""
import duckdb
started = time.perf_counter()
con = duckdb.connect()
con.execute("set threads = 2")
con.execute("set TimeZone = 'Asia/Shanghai'")
rows = con.execute('''
with orders as (
    select customer_id, cast(cast(order_ts as timestamptz) as date) as order_date, cast(net_amount as decimal(18, 2)) as amount
    from read_csv(?, header = true, all_varchar = true) where status = 'completed'
), agg as (
    select customer_id, max(order_date) as last_date, count(distinct order_date) as frequency, sum(amount) as monetary
    from orders group by customer_id
), scored as (
    select *, (percent_rank() over (order by monetary) + percent_rank() over (order by frequency)) / 2 as score
    from agg
)
select count(*) from (
    select customer_id, case when score >= 0.99 then 'strategic' when score >= 0.95 then 'vip'
                             when score >= 0.8 then 'key' else 'regular' end as tier
    from scored)
''', [sys.argv[1]]).fetchone()[0]
print(time.perf_counter() - started, peak(), rows)
"""


# ---------------------------------------------------------------------------------------------
# Data


def _header(path: Path) -> str:
    with path.open(encoding="utf-8-sig") as handle:
        return handle.readline()


def write_delta(base: Path, out: Path, day: date, number: int, new_orders: float | None,
                changed_customers: float | None) -> dict[str, int]:
    """One day's extract folder derived from the snapshot: new orders (copies of random snapshot
    orders with new ids, placed on ``day``), their items, and customers whose account manager
    changed; every other file holds its header only. Deterministic for a given snapshot."""
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("set threads = 2")
    files = {e.file_name: base / e.file_name for e in contract.ENTITIES}
    csv = "read_csv({}, header = true, all_varchar = true, quote = '\"', escape = '\"')"
    orders_src = csv.format(repr(str(files["sales_orders.csv"])))
    items_src = csv.format(repr(str(files["sales_order_items.csv"])))
    customers_src = csv.format(repr(str(files["crm_customers.csv"])))
    total_orders = con.execute(f"select count(*) from {orders_src}").fetchone()[0]
    total_customers = con.execute(f"select count(*) from {customers_src}").fetchone()[0]
    n_orders = HANDFUL_ORDERS if new_orders is None else max(1, round(total_orders * new_orders))
    n_customers = HANDFUL_CUSTOMERS if changed_customers is None else max(1, round(total_customers * changed_customers))
    stamp = f"{day.isoformat()}T"
    # new ids far above the generator's (O + 9 digits), distinct per day
    con.execute(f"""
        create table picked as
        select *, 'O' || lpad(cast(900000000 + {number} * 10000000 + row_number() over (order by order_id) as varchar), 9, '0')
                   as new_id,
               row_number() over (order by order_id) as n
        from (select * from {orders_src} order by hash(order_id || '{day}') limit {n_orders})
    """)
    order_columns = [c[0] for c in con.execute(f"describe select * from {orders_src}").fetchall()]
    # spread over 08:00..20:00 local time of the day; updated a minute after the order
    seconds = "(8 * 3600 + (n * 7919) % (12 * 3600))"
    hhmmss = ("lpad(cast(({s}) // 3600 as varchar), 2, '0') || ':' || lpad(cast((({s}) % 3600) // 60 as varchar), 2, '0')"
              " || ':' || lpad(cast(({s}) % 60 as varchar), 2, '0')")
    replaced = {
        "order_id": "new_id",
        "order_ts": f"'{stamp}' || {hhmmss.format(s=seconds)} || '+08:00'",
        "updated_at": f"'{stamp}' || {hhmmss.format(s=seconds + ' + 60')} || '+08:00'",
    }
    select = ", ".join(f"{replaced.get(c, c)} as {c}" for c in order_columns)
    con.execute(f"copy (select {select} from picked order by n) to '{out / 'sales_orders.csv'}' (header, quote '\"')")
    item_columns = [c[0] for c in con.execute(f"describe select * from {items_src}").fetchall()]
    select = ", ".join("picked.new_id as order_id" if c == "order_id" else f"items.{c}" for c in item_columns)
    items = con.execute(f"""
        copy (select {select} from {items_src} as items join picked on items.order_id = picked.order_id
              order by picked.n, items.line_no) to '{out / 'sales_order_items.csv'}' (header, quote '\"')
    """).fetchone()[0]
    customer_columns = [c[0] for c in con.execute(f"describe select * from {customers_src}").fetchall()]
    managers = [r[0] for r in con.execute(
        f"select distinct account_manager_id from {customers_src} where account_manager_id is not null "
        "order by 1").fetchall()]
    manager_list = "[" + ", ".join(f"'{m}'" for m in managers) + "]"
    replaced = {
        "account_manager_id": f"{manager_list}[cast(1 + hash(customer_id || '{day}') % {len(managers)} as bigint)]",
        "updated_at": f"'{stamp}12:00:00+08:00'",
    }
    select = ", ".join(f"{replaced.get(c, c)} as {c}" for c in customer_columns)
    con.execute(f"""
        copy (select {select} from {customers_src} order by hash(customer_id || '{day}') limit {n_customers})
        to '{out / 'crm_customers.csv'}' (header, quote '\"')
    """)
    for name, path in files.items():
        if name not in ("sales_orders.csv", "sales_order_items.csv", "crm_customers.csv") and path.exists():
            (out / name).write_text(_header(path), encoding="utf-8")
    return {"orders": n_orders, "order_items": items, "customers": n_customers}


def prepare_data(customers: int, seed: int) -> tuple[Path, dict]:
    from tierline_dev import generate

    data = settings.home() / "bench" / f"incremental_{customers}_{seed}"
    info_path = data / "_bench.json"
    if info_path.exists():
        return data, json.loads(info_path.read_text())
    print(f"generating {customers:,} customers -> {data}", flush=True)
    started = time.perf_counter()
    generate.generate(data, customers=customers, days=1, seed=seed, start_date=START, dirty=False)
    info: dict = {"generate_seconds": time.perf_counter() - started, "days": {}}
    for number, (label, orders, changed) in enumerate(DAYS, start=1):
        day = START + timedelta(days=number)
        info["days"][day.isoformat()] = {"label": label, **write_delta(
            data / START.isoformat(), data / day.isoformat(), day, number, orders, changed)}
        print(f"  {day} {label}: {info['days'][day.isoformat()]}", flush=True)
    info_path.write_text(json.dumps(info, indent=2))
    return data, info


# ---------------------------------------------------------------------------------------------
# One day of the pipeline, in a worker process


def _peak() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _reset_peak() -> None:
    # "5" resets the peak resident set size of this process to its current one (proc(5))
    Path("/proc/self/clear_refs").write_text("5")


def worker(as_of: date, run_id: str, landing: Path, full_refresh: bool) -> dict:
    started = time.perf_counter()
    import dbt.cli.main  # noqa: F401
    import great_expectations  # noqa: F401

    from tierline import pipeline

    imports = time.perf_counter() - started
    ctx = pipeline.context(as_of, run_id, landing)
    if full_refresh:
        ctx.full_refresh = True
    seconds, peaks = {}, {}
    for name in STAGES:
        _reset_peak()
        t0 = time.perf_counter()
        pipeline.run(name, ctx)
        seconds[name] = time.perf_counter() - t0
        peaks[name] = _peak()
    return {"imports_seconds": imports, "seconds": seconds, "peak_rss_bytes": peaks,
            "dbt_nodes": _dbt_node_seconds(ctx.run_dir)}


def _dbt_node_seconds(run_dir: Path) -> dict:
    """The slowest dbt nodes of each layer and the layer's time outside its nodes (parse, start-up)."""
    found = {}
    for layer in TRANSFORM:
        path = run_dir / "dbt" / layer.removeprefix("dbt_") / "run_results.json"
        stage = run_dir / f"stage_{layer}.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        nodes = sorted(((r["execution_time"], r["unique_id"]) for r in results["results"]), reverse=True)
        found[layer] = {"elapsed": results.get("elapsed_time"),
                        "stage": json.loads(stage.read_text())["seconds"] if stage.exists() else None,
                        "slowest": [[round(t, 2), u] for t, u in nodes[:6]]}
    return found


def run_day(as_of: date, run_id: str, landing: Path, *, full_refresh: bool, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", as_of.isoformat(), run_id, str(landing)]
        + (["--full-refresh"] if full_refresh else []),
        env=env, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-6000:])
        raise SystemExit(f"the {as_of} run failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Floor, peers, backend memory, verification


class PeakBackendMemory:
    """Polls the benchmarked server's processes and keeps the largest single one (RSS, and RSS
    without shared memory: a backend's RSS counts the shared buffers it touched). The server is
    the one ``url`` reaches: its postmaster is the parent of this script's own backend. A server
    on another host is not measured (None)."""

    def __init__(self, url: str):
        self.rss = None
        self.private = None
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _postmaster(self) -> int | None:
        import psutil

        with warehouse.connect(self._url) as conn:
            backend = conn.execute("select pg_backend_pid()").fetchone()[0]
            try:
                return psutil.Process(backend).ppid()
            except psutil.Error:  # not a process of this machine
                return None

    def _poll(self):
        import psutil

        postmaster = self._postmaster()
        if postmaster is None:
            return
        self.rss = self.private = 0
        while not self._stop.is_set():
            for proc in psutil.process_iter(["memory_info", "ppid"]):
                info = proc.info["memory_info"]
                if proc.info["ppid"] == postmaster and info:
                    self.rss = max(self.rss, info.rss)
                    self.private = max(self.private, info.rss - getattr(info, "shared", 0))
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def floor(url: str, snapshot: Path) -> float:
    """COPY every snapshot file into text columns + one SQL for an RFM tier table."""
    started = time.perf_counter()
    with warehouse.connect(url) as conn:
        conn.execute("drop schema if exists floor cascade")
        conn.execute("create schema floor")
        for entity in contract.ENTITIES:
            path = snapshot / entity.file_name
            if not path.exists():
                continue
            cols = ", ".join(f'"{h.strip().lower()}" text' for h in _header(path).strip().split(","))
            conn.execute(f"create table floor.{entity.name} ({cols})")
            with conn.cursor().copy(f"copy floor.{entity.name} from stdin with (format csv, header true)") as copy, \
                    path.open("rb") as handle:
                while chunk := handle.read(4 << 20):
                    copy.write(chunk)
        conn.execute(FLOOR_SQL)
        conn.commit()
    seconds = time.perf_counter() - started
    with warehouse.connect(url) as conn:
        conn.execute("drop schema floor cascade")
        conn.commit()
    return seconds


def peer(code: str, orders_csv: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(orders_csv)], capture_output=True, text=True, check=True)
    seconds, peak, rows = out.stdout.strip().splitlines()[-1].split()
    return {"seconds": float(seconds), "peak_rss_bytes": int(peak), "customers": int(rows)}


def table_fingerprints(url: str) -> dict[str, dict]:
    """Row count and an order-independent digest of every published table (each row as text)."""
    from psycopg import sql

    from tierline.assets import PUBLISHED_TABLES

    found = {}
    with warehouse.connect(url) as conn:
        schema = conn.execute("select coalesce(max(nspname), 'analytics') from pg_namespace "
                              "where nspname = 'analytics'").fetchone()[0]
        for table in PUBLISHED_TABLES:
            count, digest = conn.execute(sql.SQL(
                "select count(*), coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text "
                "from {}.{} as t").format(sql.Identifier(schema), sql.Identifier(table))).fetchone()
            found[table] = {"rows": count, "digest": digest}
    return found


# ---------------------------------------------------------------------------------------------


def _chain_env(url: str, name: str) -> dict:
    env = dict(os.environ)
    env[warehouse.ENV_URL] = url
    # a home of its own per chain: landing area, run folders and dbt target are not shared
    env["TIERLINE_HOME"] = str(settings.home() / "bench" / f"home_{name}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "plugins"), env.get("PYTHONPATH")]))
    return env


RESULTS = ROOT / "bench" / "results"


def run_chain(url: str, name: str, data: Path, dates: list[date], *, full_refresh: bool,
              partial: Path | None = None) -> dict:
    """Every date in order; with ``partial``, the days so far are written there after each one
    (a run stopped at 1M customers keeps what it measured)."""
    env = _chain_env(url, name)
    days = {}
    for as_of in dates:
        kind = "full refresh" if full_refresh or as_of == START else "incremental"
        print(f"  {name} {as_of} ({kind}):", flush=True)
        days[as_of.isoformat()] = result = run_day(as_of, f"bench-{name}-{as_of}", data,
                                                   full_refresh=full_refresh, env=env)
        result["total_seconds"] = sum(result["seconds"].values())
        print("    " + "  ".join(f"{s} {v:.2f}" for s, v in result["seconds"].items())
              + f"  | total {result['total_seconds']:.2f} s, imports {result['imports_seconds']:.2f} s", flush=True)
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"chain": name, "days": days}, indent=2, default=str))
    return days


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def print_table(results: dict) -> None:
    chain = results["pipeline"]
    dates = list(chain)
    labels = ["full"] + [results["data"]["days"][d]["label"] for d in dates[1:]]
    print("\nstage seconds (" + f"{results['customers']:,} customers, {results['orders']:,} orders)")
    print(f"  {'stage':<14}" + "".join(f"{label:>15}" for label in labels))
    for stage in [*STAGES, "total"]:
        values = [chain[d]["total_seconds"] if stage == "total" else chain[d]["seconds"][stage] for d in dates]
        print(f"  {stage:<14}" + "".join(f"{v:15.2f}" for v in values))
    full = chain[dates[0]]["total_seconds"]
    print(f"  {'share of full':<14}" + "".join(f"{chain[d]['total_seconds'] / full:15.1%}" for d in dates))
    print(f"  {'peak MiB':<14}" + "".join(f"{max(chain[d]['peak_rss_bytes'].values()) / 2**20:15.0f}" for d in dates))
    print(f"\nfloor (COPY + one SQL): {results['floor_seconds']:.2f} s; full refresh {full:.2f} s = "
          f"{results['full_vs_floor']:.1f}x the floor; transform (dbt) {results['transform_seconds']:.2f} s")
    print(f"imports of a task process (dbt + GX, paid once per process): {chain[dates[0]]['imports_seconds']:.2f} s")
    print(f"change beyond the handful day, share of full: {json.dumps(results['change_cost_share_of_full'])}")
    for name in ("pandas", "duckdb"):
        if results.get(name):
            p = results[name]
            print(f"{name:<7} {p['seconds']:8.2f} s, peak {_fmt_bytes(p['peak_rss_bytes'])}")
    print(f"transform  {results['transform_seconds']:8.2f} s, peak {_fmt_bytes(results['transform_peak_rss_bytes'])} "
          f"(pipeline process)")
    print(f"largest pipeline process: {_fmt_bytes(results['peak_rss_pipeline_bytes'])}; largest PostgreSQL "
          f"backend: {_fmt_bytes(results['peak_rss_postgres_backend_bytes'])} RSS, "
          f"{_fmt_bytes(results['peak_private_postgres_backend_bytes'])} without shared memory")
    if results.get("verification"):
        print(f"incremental chain equals a full rebuild: {results['verification']['equal']} "
              f"({results['verification']['tables']} tables)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-peers", action="store_true", help="skip the pandas and DuckDB peers")
    parser.add_argument("--verify", choices=["full", "none"], default="full",
                        help="full: replay every day with full refresh in a second database and compare")
    parser.add_argument("--worker", nargs=3, metavar=("AS_OF", "RUN_ID", "LANDING"), help=argparse.SUPPRESS)
    parser.add_argument("--full-refresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        as_of, run_id, landing = args.worker
        result = worker(date.fromisoformat(as_of), run_id, Path(landing), args.full_refresh)
        print(json.dumps(result))
        return 0

    data, info = prepare_data(args.customers, args.seed)
    snapshot = data / START.isoformat()
    with (snapshot / "sales_orders.csv").open("rb") as handle:
        orders = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b"")) - 1
    dates = [START + timedelta(days=k) for k in range(len(DAYS) + 1)]
    base = warehouse.url()
    tag = uuid.uuid4().hex[:6]
    url = warehouse.with_database(base, f"tierline_bench_{tag}")
    verify_url = warehouse.with_database(base, f"tierline_bench_{tag}_rebuild")
    results: dict = {"customers": args.customers, "orders": orders, "cores": os.cpu_count(),
                     "bytes": sum(p.stat().st_size for p in snapshot.glob("*.csv")), "data": info}
    try:
        warehouse.ensure_database(url)
        print("pipeline (each day in its own worker process):", flush=True)
        with PeakBackendMemory(url) as backend:
            results["pipeline"] = run_chain(url, f"{tag}_incremental", data, dates, full_refresh=False,
                                            partial=RESULTS / f"pipeline_{args.customers}.partial.json")
        results["peak_rss_postgres_backend_bytes"] = backend.rss
        results["peak_private_postgres_backend_bytes"] = backend.private
        print("floor (COPY + one SQL):", flush=True)
        results["floor_seconds"] = floor(url, snapshot)
        if args.verify == "full":
            print("verification: every day again with full refresh, in a second database:", flush=True)
            warehouse.ensure_database(verify_url)
            results["rebuild"] = run_chain(verify_url, f"{tag}_rebuild", data, dates, full_refresh=True)
            incremental, rebuilt = table_fingerprints(url), table_fingerprints(verify_url)
            differ = sorted(t for t in incremental if incremental[t] != rebuilt.get(t))
            results["verification"] = {"equal": not differ, "tables": len(incremental), "differ": differ,
                                       "incremental": incremental, "rebuild": rebuilt}
    finally:
        warehouse.drop_database(url)
        warehouse.drop_database(verify_url)

    if not args.skip_peers:
        print("peers (core logic, own process each):", flush=True)
        results["pandas"] = peer(PANDAS_PEER, snapshot / "sales_orders.csv")
        results["duckdb"] = peer(DUCKDB_PEER, snapshot / "sales_orders.csv")

    chain = results["pipeline"]
    full = chain[dates[0].isoformat()]
    handful = chain[dates[-1].isoformat()]["total_seconds"]
    results["full_refresh_seconds"] = full["total_seconds"]
    results["full_vs_floor"] = full["total_seconds"] / results["floor_seconds"]
    results["transform_seconds"] = sum(full["seconds"][s] for s in TRANSFORM)
    results["transform_peak_rss_bytes"] = max(full["peak_rss_bytes"][s] for s in TRANSFORM)
    results["peak_rss_pipeline_bytes"] = max(max(d["peak_rss_bytes"].values()) for d in chain.values())
    results["fixed_cost_seconds"] = handful
    results["change_cost_share_of_full"] = {
        info["days"][d]["label"]: round((chain[d]["total_seconds"] - handful) / full["total_seconds"], 4)
        for d in list(chain)[1:-1]}
    results["targets"] = {
        "full_within_2x_floor": results["full_vs_floor"] <= 2,
        "pipeline_processes_under_1GiB": results["peak_rss_pipeline_bytes"] < GIB,
        "handful_day_under_10s": handful <= 10,
        "change_1pct_within_10pct_of_full": results["change_cost_share_of_full"].get("orders_1pct", 1) <= 0.10,
    }
    if results.get("pandas"):
        results["targets"]["transform_faster_than_pandas"] = results["transform_seconds"] < results["pandas"]["seconds"]
        results["targets"]["transform_peak_quarter_of_pandas"] = (
            results["transform_peak_rss_bytes"] <= results["pandas"]["peak_rss_bytes"] / 4)

    out_dir = RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"pipeline_{args.customers}.json").write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    print(f"targets: {json.dumps(results['targets'])}")
    print(f"results: {out_dir / f'pipeline_{args.customers}.json'}")
    return 0 if results.get("verification", {}).get("equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
