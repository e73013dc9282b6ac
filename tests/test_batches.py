"""Raw batches: a loaded date stays invisible until its run publishes (issue #8, item 2).

The scenario runs the pipeline's own stage functions, in the DAG's order, against one real
PostgreSQL database: real loader, GX gates, dbt and publish. The cheaper tests below drive the
loader alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from tierline import batches, land, load, pipeline, settings, stages, warehouse
from tierline.errors import TierlineError
from tierline_dev import generate

D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
ORDERS_HEADER = "order_id,customer_id,order_ts,status,gross_amount,net_amount,updated_at\n"


def run_date(root: Path, day: date, run_id: str) -> str | None:
    """Run every stage for ``day`` as the DAG does; the name of the stage that failed, or None."""
    ctx = pipeline.context(day, run_id, root)
    for name in stages.THROUGH_PUBLISH:
        try:
            pipeline.run(name, ctx)
        except TierlineError:
            return name
    return None


def orders(rows: list[str]) -> str:
    return ORDERS_HEADER + "".join(f"{r}\n" for r in rows)


def order(order_id: str, customer: str, day: date, amount: str = "100.00") -> str:
    return f"{order_id},{customer},{day} 10:00:00,completed,{amount},{amount},{day} 10:00:00"


def write(root: Path, day: date, files: dict[str, str]) -> None:
    folder = root / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")


@pytest.fixture(scope="module")
def scenario(private_warehouse):
    root, url = private_warehouse.root, private_warehouse.url
    landing, rerun = root / "landing", root / "rerun"
    generate.generate(landing, customers=300, days=1, seed=5, start_date=D1, dirty=False, progress=False)

    def lifetime_orders(customer: str, day: date) -> int | None:
        with warehouse.connect(url) as conn:
            row = conn.execute("select orders_lifetime from analytics.customer_value where customer_id = %s "
                               "and as_of_date = %s", (customer, day)).fetchone()
        return row and row[0]

    def batch_rows(day: date) -> list[tuple]:
        with warehouse.connect(url) as conn:
            return conn.execute(
                "select b.batch_id, b.run_id, b.status, (select count(*) from raw.sales_orders o "
                "where o.batch_id = b.batch_id), (select count(*) from raw.quarantine q where q.batch_id = b.batch_id) "
                "from raw.load_batch b where extract_date = %s order by batch_id", (day,)).fetchall()

    out: dict = {"failed": {}}
    out["failed"]["d1"] = run_date(landing, D1, "d1")
    with warehouse.connect(url) as conn:
        customer, n1 = conn.execute(
            "select customer_id, orders_lifetime from analytics.customer_value where as_of_date = %s "
            "order by orders_lifetime desc, customer_id limit 1", (D1,)).fetchone()
    out["customer"], out["n1"] = customer, n1

    # D2: 10 good orders of the customer, 20 of unknown customers (the raw gate rejects the date)
    # and one amount (1e40) numeric(18,2) cannot hold: it broke dbt for this date and every later one
    write(landing, D2, {"sales_orders.csv": orders(
        [order(f"B2-{i}", customer, D2) for i in range(10)]
        + [order(f"U2-{i}", f"NOBODY{i}", D2) for i in range(20)]
        + [order("B2-BIG", customer, D2, "1" + "0" * 40)])})
    out["failed"]["d2_rejected"] = run_date(landing, D2, "d2-first")
    write(landing, D3, {"sales_orders.csv": orders([order("B3-0", customer, D3)])})
    out["failed"]["d3"] = run_date(landing, D3, "d3-first")
    out["d3_orders"] = lifetime_orders(customer, D3)
    out["d2_batches_before_fix"] = batch_rows(D2)

    # D2 again, fixed: only its good orders
    write(landing, D2, {"sales_orders.csv": orders([order(f"B2-{i}", customer, D2) for i in range(10)])})
    out["failed"]["d2_fixed"] = run_date(landing, D2, "d2-fixed")
    out["d2_orders"] = lifetime_orders(customer, D2)
    out["d2_batches_after_fix"] = batch_rows(D2)

    # D1 re-run from a folder whose orders all point at unknown customers: the raw gate rejects it
    shutil.copytree(landing / D1.isoformat(), rerun / D1.isoformat())
    (rerun / D1.isoformat() / "sales_orders.csv").write_text(
        orders([order(f"R1-{i}", f"NOBODY{i}", D1) for i in range(30)]), encoding="utf-8")
    with warehouse.connect(url) as conn:
        before = conn.execute("select md5(string_agg(t::text, '|' order by t::text)) from analytics.customer_tier t "
                              "where as_of_date = %s", (D1,)).fetchone()[0]
    out["failed"]["d1_rerun"] = run_date(rerun, D1, "d1-rerun")
    with warehouse.connect(url) as conn:
        out["d1_tier_unchanged"] = before == conn.execute(
            "select md5(string_agg(t::text, '|' order by t::text)) from analytics.customer_tier t "
            "where as_of_date = %s", (D1,)).fetchone()[0]
    out["d1_batches"] = batch_rows(D1)
    # a later date still sees D1's published rows, and D2's fixed ones
    out["failed"]["d3_again"] = run_date(landing, D3, "d3-again")
    out["d3_orders_again"] = lifetime_orders(customer, D3)
    return out


def test_a_date_rejected_by_the_raw_gate_is_invisible_to_the_next_publication(scenario):
    assert scenario["failed"]["d1"] is None
    assert scenario["failed"]["d2_rejected"] == "gate_raw"
    assert scenario["failed"]["d3"] is None
    # the rejected date's 10 loaded orders (and its 1e40 amount) reached neither staging nor the marts
    assert scenario["d3_orders"] == scenario["n1"] + 1
    [(_, run_id, status, loaded, quarantined)] = scenario["d2_batches_before_fix"]
    assert (run_id, status) == ("d2-first", "pending")
    assert loaded >= 10 and quarantined >= 20  # kept as evidence while pending


def test_rerunning_a_rejected_date_after_fixing_the_file_publishes_it(scenario):
    assert scenario["failed"]["d2_fixed"] is None
    assert scenario["d2_orders"] == scenario["n1"] + 10
    rejected, published = scenario["d2_batches_after_fix"]
    # the rejected load's rows are gone from raw; its batch row stays for audit
    assert rejected[1:] == ("d2-first", "rejected", 0, 0)
    assert published[1:] == ("d2-fixed", "published", 10, 0)


def test_a_failed_rerun_of_a_published_date_keeps_the_old_publication_and_raw_rows(scenario):
    assert scenario["failed"]["d1_rerun"] == "gate_raw"
    assert scenario["d1_tier_unchanged"]
    first, rerun = scenario["d1_batches"]
    assert first[1:3] == ("d1", "published") and first[3] > 0
    assert rerun[1:3] == ("d1-rerun", "pending")
    assert scenario["failed"]["d3_again"] is None
    assert scenario["d3_orders_again"] == scenario["n1"] + 10 + 1


def test_an_amount_numeric_18_2_cannot_hold_does_not_poison_later_dates(scenario):
    # D2's first file carried net_amount 1e40; every later date published, without it
    assert scenario["failed"]["d3"] is None and scenario["failed"]["d3_again"] is None


# ---------------------------------------------------------------------------------------------
# The loader alone


def land_and_load(inbox: Path, tmp_path: Path, url: str, day: date, run_id: str, files: dict[str, str]):
    write(inbox, day, files)
    manifest = land.land_extracts(inbox, day, tmp_path / "landing")
    return load.load_date(url, manifest, day, run_id, "Asia/Shanghai")


CUSTOMERS = ("customer_id,customer_name,customer_type,created_at,updated_at\n"
             "C1,张三,individual,2025-01-01,2025-01-01\n")


def test_a_reference_is_satisfied_only_by_published_rows_or_the_batch_itself(tmp_path, warehouse_url):
    land_and_load(tmp_path / "a", tmp_path, warehouse_url, D1, "run-a", {"crm_customers.csv": CUSTOMERS})
    [result] = land_and_load(tmp_path / "b", tmp_path, warehouse_url, D2, "run-b",
                             {"sales_orders.csv": orders([order("O1", "C1", D2)])})
    # D1 is still pending: its customer does not exist for another run
    assert (result.rows_loaded, result.rows_quarantined) == (0, 1)
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        batches.promote(conn, run_id="run-a", as_of=D1)
    [result] = land_and_load(tmp_path / "b", tmp_path, warehouse_url, D2, "run-b",
                             {"sales_orders.csv": orders([order("O1", "C1", D2)])})
    assert (result.rows_loaded, result.rows_quarantined) == (1, 0)
    with warehouse.connect(warehouse_url) as conn:
        # the retry replaced run-b's first pending batch
        assert conn.execute("select status, count(*) from raw.load_batch where extract_date = %s group by 1 "
                            "order by 1", (D2,)).fetchall() == [("pending", 1), ("rejected", 1)]
        assert conn.execute("select count(*) from raw.quarantine").fetchone()[0] == 0


def test_promote_supersedes_the_dates_earlier_publication(tmp_path, warehouse_url):
    for run_id, name in (("first", "张三"), ("second", "张三丰")):
        land_and_load(tmp_path / run_id, tmp_path, warehouse_url, D1, run_id,
                      {"crm_customers.csv": CUSTOMERS.replace("张三", name)})
        with warehouse.connect(warehouse_url) as conn, conn.transaction():
            batches.promote(conn, run_id=run_id, as_of=D1)
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select run_id, status from raw.load_batch order by batch_id").fetchall() == [
            ("first", "superseded"), ("second", "published")]
        assert conn.execute("select customer_name from raw.crm_customers").fetchall() == [("张三丰",)]
        # a retried publish of the same run is a no-op; a run that loaded nothing cannot publish
        with conn.transaction():
            batches.promote(conn, run_id="second", as_of=D1)
        with pytest.raises(TierlineError, match="no pending raw batch"), conn.transaction():
            batches.promote(conn, run_id="never-loaded", as_of=D1)


OLD_LAYOUT = """
create schema raw;
create table raw.crm_customers (customer_id text, customer_name text, customer_type text, phone text, email text,
    gender text, birth_date date, province text, city text, branch_code text, industry text, employee_count bigint,
    account_manager_id text, acquisition_channel text, referred_by text, created_at timestamptz,
    updated_at timestamptz, _extract_date date not null, _line_no bigint not null, _file_sha256 text not null);
create index crm_customers__extract_date on raw.crm_customers (_extract_date);
create table raw.quarantine (extract_date date not null, file text not null, line_no bigint not null, raw_text text,
    reason text not null, run_id text, quarantined_at timestamptz default now(),
    primary key (extract_date, file, line_no));
create table raw.load_log (extract_date date not null, file text not null, file_sha256 text not null, encoding text,
    rows_read bigint not null, rows_loaded bigint not null, rows_quarantined bigint not null,
    ignored_columns text[], soft_reference_misses jsonb, run_id text, loaded_at timestamptz default now(),
    primary key (extract_date, file));
insert into raw.crm_customers (customer_id, customer_name, customer_type, created_at, updated_at, _extract_date,
    _line_no, _file_sha256) values ('C1', '张三', 'individual', '2025-01-01', '2025-01-01', '2026-11-01', 2, 'x');
insert into raw.quarantine (extract_date, file, line_no, raw_text, reason, run_id)
    values ('2026-11-01', 'crm_customers.csv', 3, ',x', 'missing primary key customer_id', 'old-run');
insert into raw.load_log (extract_date, file, file_sha256, rows_read, rows_loaded, rows_quarantined, run_id)
    values ('2026-11-01', 'crm_customers.csv', 'x', 2, 1, 1, 'old-run');
"""


def test_a_warehouse_loaded_before_batches_upgrades_in_place(tmp_path, warehouse_url):
    with warehouse.connect(warehouse_url) as conn:
        conn.execute(OLD_LAYOUT)
    [result] = land_and_load(tmp_path / "inbox", tmp_path, warehouse_url, D2, "new-run",
                             {"sales_orders.csv": orders([order("O1", "C1", D2)])})
    # the customer loaded before the upgrade is published: the new order may point at it
    assert (result.rows_loaded, result.rows_quarantined) == (1, 0)
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select extract_date, run_id, status from raw.load_batch order by batch_id").fetchall() == [
            (D1, "loaded before batches", "published"), (D2, "new-run", "pending")]
        old = conn.execute("select batch_id from raw.load_batch where extract_date = %s", (D1,)).fetchone()[0]
        for table, column in (("crm_customers", "_extract_date"), ("quarantine", "extract_date"),
                              ("load_log", "extract_date")):
            assert conn.execute(f"select array_agg(distinct batch_id) from raw.{table} where {column} = %s",
                                (D1,)).fetchone()[0] == [old]


KILL_SCRIPT = """
import json, sys
from datetime import date
from tierline import load
manifest = json.loads(open(sys.argv[1]).read())
load.load_date(sys.argv[2], manifest, date.fromisoformat(sys.argv[3]), sys.argv[4], "Asia/Shanghai")
"""


def test_kill_9_during_a_load_then_a_rerun_converges(tmp_path, warehouse_url):
    customers = "".join(f"C{i},客户{i},individual,2025-01-01,2025-01-01\n" for i in range(2000))
    many = [order(f"O{i}", f"C{i % 2000}", D1, f"{i % 500}.25") for i in range(300_000)]
    write(tmp_path / "inbox", D1, {"crm_customers.csv": CUSTOMERS.splitlines(keepends=True)[0] + customers,
                                   "sales_orders.csv": orders(many)})
    manifest = land.land_extracts(tmp_path / "inbox", D1, tmp_path / "landing")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "PYTHONPATH": str(settings.PROJECT_ROOT / "plugins")}
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "manifest.json"), warehouse_url,
                              D1.isoformat(), "run-k"], env=env)
    files_done = 0
    try:
        deadline = time.monotonic() + 60
        with warehouse.connect(warehouse_url, autocommit=True) as conn:
            while files_done == 0 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.02)
                if conn.execute("select to_regclass('raw.load_log')").fetchone()[0]:
                    files_done = conn.execute("select count(*) from raw.load_log").fetchone()[0]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the load ended before it could be killed"
    with warehouse.connect(warehouse_url) as conn:
        # killed after the customers file and before the orders file committed
        assert conn.execute("select file from raw.load_log").fetchall() == [("crm_customers.csv",)]
        assert conn.execute("select status from raw.load_batch").fetchall() == [("pending",)]

    # another run of the date loads everything and, once published, is all that raw holds
    results = load.load_date(warehouse_url, manifest, D1, "run-after-kill", "Asia/Shanghai")
    assert {r.file: r.rows_loaded for r in results} == {"crm_customers.csv": 2000, "sales_orders.csv": 300_000}
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        batches.promote(conn, run_id="run-after-kill", as_of=D1)
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select run_id, status from raw.load_batch order by batch_id").fetchall() == [
            ("run-k", "rejected"), ("run-after-kill", "published")]
        assert conn.execute("select count(*), count(distinct order_id) from raw.sales_orders").fetchone() == (
            300_000, 300_000)
        assert conn.execute("select count(*) from raw.crm_customers").fetchone()[0] == 2000
