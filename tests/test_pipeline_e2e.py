"""End to end through real Airflow DAG runs (`airflow dags test`), real dbt, GX and PostgreSQL.

One scenario per module, on generated dirty extracts: publish day 1, re-run day 1, publish day 2,
then a day whose raw gate fails. The tests assert on what the scenario left behind.
"""

from __future__ import annotations

import csv
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import requests
import yaml

from tests.receivers import HttpReceiver, chat_connection
from tierline import assets, cli, config, report, settings, simulate, warehouse
from tierline.assets import PUBLISHED_TABLES
from tierline.stages import DAG_TASKS
from tierline_dev import generate

from . import report_browser
from .bi_readers import BiReaders

DAY1, DAY2, DAY3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
ANALYTICS = (*PUBLISHED_TABLES, "publication_log")


def relations(url: str) -> set[tuple]:
    """Every relation of the database with its storage (a rebuilt or rewritten one changes)."""
    with warehouse.connect(url) as conn:
        return set(conn.execute(
            "select n.nspname, c.relname, c.oid, c.relfilenode from pg_class c join pg_namespace n on "
            "n.oid = c.relnamespace where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"))


def fingerprint(url: str) -> dict[str, str]:
    """An md5 of every published table's full content, in a stable order."""
    with warehouse.connect(url) as conn:
        return {
            table: conn.execute(
                f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from analytics.{table} t"
            ).fetchone()[0]
            for table in ANALYTICS
        }


def run_as_a_user(landing: Path, day: date) -> tuple[int, list[tuple[float, str]]]:
    """``python -m tierline.cli run`` (what ``make run`` starts): its exit code, and each line it
    printed with the seconds since the start at which the line arrived."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "tierline.cli", "run", "--landing", str(landing), "--as-of", day.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(settings.PROJECT_ROOT / "plugins")})
    lines = [(time.monotonic() - started, line.rstrip("\n")) for line in process.stdout]
    return process.wait(), lines


@pytest.fixture(scope="module", autouse=True)
def superset_installed():
    """The dashboard's Superset venv (minutes on a fresh clone, once per requirements hash) installs
    while the scenario's runs go; the dashboard test waits for it."""
    from tierline_dev import dashboard

    return dashboard.prepare_in_background()


@pytest.fixture(scope="module")
def scenario(private_warehouse):
    root, url, patch = private_warehouse.root, private_warehouse.url, private_warehouse.patch
    patch.setenv("TIERLINE_RETRY_DELAY_SECONDS", "1")
    # alerts of the real DAG runs go to a local chat webhook (a WeCom-style robot)
    hooks = HttpReceiver().__enter__()
    patch.setenv("AIRFLOW_CONN_TIERLINE_ALERTS_CHAT", chat_connection(hooks.port))
    patch.setenv("TIERLINE_ALERT_CONNECTIONS", "tierline_alerts_chat")
    # OpenLineage from the Airflow tasks and the dbt models, to a file (issue 13, item 6)
    patch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(
        {"type": "file", "log_file_path": str(root / "openlineage.jsonl"), "append": True}))
    patch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "tierline_e2e")

    landing = root / "landing"
    generate.generate(landing, customers=800, days=2, seed=11, start_date=DAY1, progress=False)
    # day 3: an orders file whose every row points at an unknown customer -> the raw gate fails
    (landing / DAY3.isoformat()).mkdir()
    with (landing / DAY3.isoformat() / "sales_orders.csv").open("w") as handle:
        handle.write("order_id,customer_id,order_ts,status,gross_amount,net_amount,updated_at\n")
        for i in range(30):
            handle.write(f"X{i},NOBODY{i},2026-11-03 10:00:00,completed,10,10,2026-11-03 10:00:00\n")

    result = {"url": url, "landing": landing, "codes": {}, "fingerprints": {}, "alerts": {},
              "openlineage": root / "openlineage.jsonl"}
    result["codes"]["day1"] = cli.run(landing, DAY1, quiet=True)
    result["fingerprints"]["day1"] = fingerprint(url)
    result["alerts"]["day1"], hooks.received[:] = hooks.texts(), []
    # BI dashboards read every _latest view throughout the next three publishes (issue 8, item 3)
    readers = BiReaders(url).start()
    result["codes"]["day1_again"] = cli.run(landing, DAY1, quiet=True)
    result["fingerprints"]["day1_again"] = fingerprint(url)
    result["alerts"]["day1_again"], hooks.received[:] = hooks.texts(), []
    result["codes"]["day2"], result["day2_output"] = run_as_a_user(landing, DAY2)
    result["fingerprints"]["day2"] = fingerprint(url)
    result["alerts"]["day2"], hooks.received[:] = hooks.texts(), []
    result["codes"]["day1_after_day2"] = cli.run(landing, DAY1, quiet=True)
    result["fingerprints"]["day1_after_day2"] = fingerprint(url)
    result["alerts"]["day1_after_day2"], hooks.received[:] = hooks.texts(), []
    result["readers"] = readers.stop()
    result["publish_seconds"] = [json.loads(p.read_text())["seconds"]
                                 for p in settings.runs_dir().glob("*/*/stage_publish.json")]
    result["codes"]["day3"] = cli.run(landing, DAY3, quiet=True)
    result["fingerprints"]["day3"] = fingerprint(url)
    result["alerts"]["day3"], hooks.received[:] = hooks.texts(), []
    strict = yaml.safe_load((settings.config_path().parent / "tier_spec.yml").read_text())
    for tier in strict["ladder"][:3]:
        tier["min_score_percentile"] = min(0.999, tier["min_score_percentile"] + 0.1)
    (root / "strict_spec.yml").write_text(yaml.safe_dump(strict, allow_unicode=True))
    result["relations_before_simulation"] = relations(url)
    result["simulation"] = simulate.run(root / "strict_spec.yml")
    result["relations_after_simulation"] = relations(url)
    result["fingerprints"]["simulated"] = fingerprint(url)
    yield result
    hooks.__exit__(None, None, None)


def latest_run_dir(day: date) -> Path:
    return max((settings.runs_dir() / day.isoformat()).iterdir(), key=lambda p: p.stat().st_mtime)


def test_generated_days_publish(scenario):
    assert scenario["codes"]["day1"] == 0
    assert scenario["codes"]["day2"] == 0
    with warehouse.connect(scenario["url"]) as conn:
        published = conn.execute("select distinct as_of_date from analytics.publication_log order by 1").fetchall()
    assert [p[0] for p in published] == [DAY1, DAY2]


def test_every_customer_has_exactly_one_tier_and_stage_per_date(scenario):
    codes = [t.code for t in config.load().tier_spec.ladder]
    with warehouse.connect(scenario["url"]) as conn:
        crm = conn.execute("select count(distinct customer_id) from raw.crm_customers where _extract_date <= %s",
                           (DAY2,)).fetchone()[0]
        for day in (DAY1, DAY2):
            n, distinct, unknown = conn.execute(
                "select count(*), count(distinct customer_id), count(*) filter (where not (tier = any(%s))) "
                "from analytics.customer_tier where as_of_date = %s", (codes, day)).fetchone()
            assert n == distinct and unknown == 0
            stages = conn.execute(
                "select count(*), count(distinct customer_id) from analytics.customer_lifecycle where as_of_date = %s",
                (day,)).fetchone()
            assert stages == (n, n)
        # day 2 is the current state of the CRM: every customer it knows has a tier
        assert n == crm
        missing = conn.execute(
            "select count(distinct c.customer_id) from raw.crm_customers c left join analytics.customer_tier t "
            "on t.customer_id = c.customer_id and t.as_of_date = %s where t.customer_id is null "
            "and c._extract_date <= %s", (DAY2, DAY2)).fetchone()[0]
        assert missing == 0


def test_the_crms_own_record_id_is_published_for_the_crm_sync_to_match_on(scenario):
    with warehouse.connect(scenario["url"]) as conn:
        total, with_id, differing = conn.execute(
            "select count(*), count(v.crm_record_id), "
            "count(*) filter (where v.crm_record_id is distinct from c.crm_record_id) "
            "from analytics.customer_value as v join (select distinct on (customer_id) customer_id, crm_record_id "
            "  from raw.crm_customers where _extract_date <= %s "
            "  order by customer_id, updated_at desc, _extract_date desc, _line_no desc) as c using (customer_id) "
            "where v.as_of_date = %s", (DAY2, DAY2)).fetchone()
    assert differing == 0
    # the generator gives about 1% of customers no CRM record (keyed in the order system)
    assert 0.97 * total < with_id < total


@pytest.mark.parametrize("crm", ["zoho", "fxiaoke"])  # in this order: the second run switches CRM
def test_the_demo_crm_sync_updates_the_crms_own_accounts_and_creates_none(scenario, crm, capsys):
    line = cli.demo_crm_sync(scenario["landing"], crm)
    # every step's counts in whole lines (the result used to be JSON cut at 700 characters)
    printed = capsys.readouterr().out
    assert "\n  reconcile: checked " in printed and ", mismatch_count 0" in printed, printed

    with warehouse.connect(scenario["url"]) as conn:
        published, with_record = conn.execute(
            "select count(*), count(crm_record_id) from analytics.customer_value where as_of_date = %s",
            (DAY2,)).fetchone()
        [(result,)] = conn.execute("select result from crm_sync.runs").fetchall()
        [(provider,)] = conn.execute("select provider from crm_sync.provider").fetchall()
    assert provider == crm
    assert result["push"]["created"] == 0, line
    assert result["plan"]["matched"] == result["push"]["updated"] == with_record
    assert result["plan"]["skipped_unmatched"] == published - with_record > 0
    assert result["reconcile"]["mismatch_count"] == 0


def test_bi_readers_never_wait_fail_or_see_a_half_publication(scenario):
    """Readers with lock_timeout = '2s' across all _latest views (a join of two included) during
    three consecutive publishes, beside a BI session idle in a transaction holding read locks."""
    log = scenario["readers"]
    assert [scenario["codes"][k] for k in ("day1_again", "day2", "day1_after_day2")] == [0, 0, 0]
    assert log.queries > 100
    assert log.errors == [] and log.empty == [] and log.mixed == []
    assert log.dates == {DAY1, DAY2}  # they saw the publication move from day 1 to day 2
    assert log.slowest < 2
    assert len(scenario["publish_seconds"]) == 4 and max(scenario["publish_seconds"]) < 30


def test_rerunning_a_date_changes_nothing(scenario):
    assert scenario["codes"]["day1_again"] == 0
    before, after = scenario["fingerprints"]["day1"], scenario["fingerprints"]["day1_again"]
    # the publication log records the second run; every published table is identical
    assert {k: v for k, v in before.items() if k != "publication_log"} == {
        k: v for k, v in after.items() if k != "publication_log"}


def test_rerunning_an_earlier_date_after_a_later_one_changes_nothing(scenario):
    assert scenario["codes"]["day1_after_day2"] == 0
    before, after = scenario["fingerprints"]["day2"], scenario["fingerprints"]["day1_after_day2"]
    assert {k: v for k, v in before.items() if k != "publication_log"} == {
        k: v for k, v in after.items() if k != "publication_log"}


def test_failed_gate_publishes_nothing_and_names_the_check(scenario):
    assert scenario["codes"]["day3"] != 0
    assert scenario["fingerprints"]["day3"] == scenario["fingerprints"]["day1_after_day2"]
    failure = json.loads((latest_run_dir(DAY3) / "failure.json").read_text())
    assert failure["stage"] == "gate_raw"
    assert "gates.max_quarantine_rate" in failure["error"]
    # the message names the file that broke the rule, with its counts
    assert "file=sales_orders.csv" in failure["error"] and "rows_quarantined=30" in failure["error"]
    assert not (latest_run_dir(DAY3) / "stage_dbt_staging.json").exists()


def test_a_failed_run_sends_one_alert_naming_task_reason_and_run_folder(scenario):
    task_failures = {day: [t for t in texts if "task failed" in t.splitlines()[0]]
                     for day, texts in scenario["alerts"].items()}
    assert {day: len(t) for day, t in task_failures.items()} == {
        "day1": 0, "day1_again": 0, "day2": 0, "day1_after_day2": 0, "day3": 1}
    text = task_failures["day3"][0]
    assert text.splitlines()[0] == "[tierline] customer_tiering 2026-11-03: task failed (gate_raw)"
    assert "\nreason: AirflowFailException: gate 'raw' failed" in text
    assert "gates.max_quarantine_rate" in text and "rows_quarantined=30" in text
    assert "\ncounts: try 1, max_tries 2\n" in text
    assert f"\nwhere to look: run folder {latest_run_dir(DAY3)}" in text


def test_quarantine_holds_exactly_the_broken_rows_the_generator_injected(scenario):
    expected = set()
    with (scenario["landing"] / "_expected_quarantine.csv").open() as handle:
        for row in csv.DictReader(handle):
            expected.add((date.fromisoformat(row["extract_date"]), row["file"], int(row["line_no"])))
    with warehouse.connect(scenario["url"]) as conn:
        found = set(conn.execute(
            "select extract_date, file, line_no from raw.quarantine where extract_date in (%s, %s)",
            (DAY1, DAY2)).fetchall())
        balance = conn.execute(
            "select count(*) from raw.load_log where rows_read <> rows_loaded + rows_quarantined").fetchone()[0]
    assert expected and found == expected
    assert balance == 0


def test_run_keeps_its_artifacts(scenario):
    run_dir = latest_run_dir(DAY2)
    for name in ("manifest.json", "gate_raw.json", "gate_staging.json", "gate_marts.json", "summary.json",
                 "report.html", "dbt/staging/run_results.json", "dbt/staging/manifest.json",
                 "dbt/marts/run_results.json"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows_in"] == summary["rows_loaded"] + summary["rows_quarantined"] > 0
    assert sum(t["customers"] for t in summary["tier_mix"]) == summary["published"]["customer_tier"]


def test_each_run_keeps_a_dbt_docs_site_of_what_it_built(scenario):
    docs = latest_run_dir(DAY2) / "dbt_docs"
    catalog = json.loads((docs / "catalog.json").read_text())
    # generated while the run's build schemas existed: every published model has its columns
    for table in PUBLISHED_TABLES:
        assert catalog["nodes"][f"model.tierline.{table}"]["columns"], table
    assert not catalog.get("errors")
    page = (docs / "index.html").read_text()
    assert "model.tierline.customer_tier" in page and "CATALOG.JSON INLINE DATA" not in page
    stage = json.loads((latest_run_dir(DAY2) / "stage_dbt_marts.json").read_text())
    assert stage["result"]["docs"]["catalog_nodes"] >= len(PUBLISHED_TABLES)


def test_each_run_keeps_gx_data_docs_of_every_gate_it_ran(scenario):
    published_run = latest_run_dir(DAY2) / "gx_docs" / "index.html"
    index = published_run.read_text()
    for gate in ("raw", "staging", "marts"):
        suites = [p.stem for p in (settings.PROJECT_ROOT / "expectations" / gate).glob("*.json")]
        assert all(f"{gate}__{suite}" in index for suite in suites), gate
    # the day whose raw gate failed: its docs show that gate, and the failed check's sample rows
    failed_run = (latest_run_dir(DAY3) / "gx_docs" / "index.html").read_text()
    assert "raw__" in failed_run and "staging__" not in failed_run and "__failed_" in failed_run
    stage = json.loads((latest_run_dir(DAY2) / "stage_gate_marts.json").read_text())
    assert stage["result"]["docs"]["path"] == str(published_run)


def test_every_published_column_carries_its_dbt_description_as_a_comment(scenario):
    manifest = json.loads((latest_run_dir(DAY2) / "dbt_docs" / "manifest.json").read_text())
    with warehouse.connect(scenario["url"]) as conn:
        comments = conn.execute(
            "select c.relname, a.attname, col_description(c.oid, a.attnum) from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid "
            "where n.nspname = 'analytics' and a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'v')"
        ).fetchall()
    by_relation: dict[str, dict] = {}
    for relation, column, comment in comments:
        by_relation.setdefault(relation, {})[column] = comment
    for table in PUBLISHED_TABLES:
        described = {name: column["description"] for name, column in
                     manifest["nodes"][f"model.tierline.{table}"]["columns"].items()}
        for relation in (table, f"{table}_latest") if f"{table}_latest" in by_relation else (table,):
            assert by_relation[relation] == described, relation


def test_openlineage_events_for_every_task_and_dbt_model_name_the_real_warehouse(scenario):
    events = [json.loads(line) for line in scenario["openlineage"].read_text().splitlines()]
    run_id = json.loads((latest_run_dir(DAY2) / "run.json").read_text())["run_id"]
    tasks = [e for e in events if e["job"]["name"].startswith("customer_tiering.")
             and e["run"]["facets"].get("airflow", {}).get("dagRun", {}).get("run_id") == run_id]
    seen = {(e["job"]["name"].split(".", 1)[1], e["eventType"]) for e in tasks}
    for task in ("preflight", "land_extracts", "load_raw", "gate_raw", "dbt_staging", "gate_staging", "fit_clv",
                 "dbt_marts", "gate_marts", "publish", "report"):
        assert {(task, "START"), (task, "COMPLETE")} <= seen, task
    marts_task = next(e["run"]["runId"] for e in tasks if e["job"]["name"] == "customer_tiering.dbt_marts")
    models = [e for e in events if e["job"]["facets"].get("dbt_node", {}).get("unique_id") == "model.tierline.customer_tier"
              and e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == marts_task]
    assert {e["eventType"] for e in models} == {"START", "COMPLETE"}
    host, port, _database = assets.warehouse_location(scenario["url"])
    output = next(e for e in models if e["eventType"] == "COMPLETE")["outputs"][0]
    assert output["namespace"] == f"postgres://{host}:{port}"
    # the task that publishes names the same warehouse in its Assets
    assert all(a.startswith(f"postgres://{host}:{port}/") for a in (assets.asset_uri(t, "analytics") for t in PUBLISHED_TABLES))


def test_the_local_airflow_ui_shows_the_runs_and_what_each_dbt_node_did(scenario, tmp_path):
    """`make airflow` (issue 13, item 5): the runs made by `make run`, and per dbt task the XCom
    `dbt_nodes` from its one build's run_results.json (the UI's XCom tab; no log needed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tierline.cli", "airflow", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, said = time.monotonic() + 400, ""
        while "Airflow UI:" not in said and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 5)[0]:
                said += proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in said, said
        password = said.split("login: admin / ", 1)[1].split()[0]
        api = requests.Session()
        token = api.post(f"http://127.0.0.1:{port}/auth/token", json={"username": "admin", "password": password},
                         timeout=30).json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        base = f"http://127.0.0.1:{port}/api/v2/dags/customer_tiering/dagRuns"
        runs = api.get(base, params={"run_type": "manual"}, timeout=30).json()
        assert runs["total_entries"] == 5  # four published runs and the day whose raw gate failed
        run_id = json.loads((latest_run_dir(DAY2) / "run.json").read_text())["run_id"]
        entry = api.get(f"{base}/{run_id}/taskInstances/dbt_marts/xcomEntries/dbt_nodes", timeout=30).json()
        nodes = entry["value"] if isinstance(entry["value"], dict) else json.loads(entry["value"])
        assert nodes["not_ok"] == [] and nodes["counts"]["success"] >= len(PUBLISHED_TABLES)
        assert nodes["nodes"] == sum(nodes["counts"].values())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0


def test_the_dag_graph_exports(scenario, tmp_path):
    assert cli.main(["dag-graph", "--out", str(tmp_path / "dag.dot")]) == 0
    graph = (tmp_path / "dag.dot").read_text()
    assert "digraph customer_tiering" in graph and "dbt_marts -> gate_marts" in graph.replace('"', "")


def published(scenario, day: date) -> pd.DataFrame:
    with warehouse.connect(scenario["url"]) as conn:
        rows = conn.execute(
            "select t.customer_id, t.tier, t.tier_rank, l.lifecycle_stage from analytics.customer_tier t "
            "join analytics.customer_lifecycle l using (customer_id, as_of_date) where as_of_date = %s", (day,)).fetchall()
    frame = pd.DataFrame(rows, columns=["customer_id", "tier", "tier_rank", "stage"])
    personas = pd.read_csv(scenario["landing"] / "_personas.csv")
    return frame.merge(personas, on="customer_id", validate="1:1")


def share(frame: pd.DataFrame, persona: str, column: str, allowed: set[str]) -> float:
    group = frame[frame["persona"] == persona]
    assert len(group) >= 5, f"too few {persona} customers to judge"
    return group[column].isin(allowed).mean()


def test_personas_land_where_a_domain_expert_would_put_them(scenario):
    frame = published(scenario, DAY2)
    assert share(frame, "prospect", "stage", {"prospect"}) == 1.0
    assert share(frame, "newcomer", "stage", {"new"}) >= 0.9
    assert share(frame, "churned", "stage", {"churned"}) >= 0.9
    assert share(frame, "churned", "tier", {"potential"}) >= 0.9
    assert share(frame, "reactivated", "stage", {"reactivated"}) >= 0.9
    assert share(frame, "loyal_whale", "tier", {"strategic", "vip", "key"}) >= 0.9
    # a whale silent for several of its own purchase cycles is rightly flagged; most are not
    assert share(frame, "loyal_whale", "stage", {"dormant", "churned"}) <= 0.1
    assert share(frame, "declining", "stage", {"new", "growth"}) == 0.0


def test_a_customer_ahead_on_every_input_is_never_in_a_lower_tier(scenario):
    # The ladder's inputs are score percentile, monetary and orders; same branch, same thresholds.
    with warehouse.connect(scenario["url"]) as conn:
        violations = conn.execute(
            """
            with t as (
                select t.customer_id, t.branch_code, t.rule_tier, t.score_percentile, v.monetary, v.orders_in_window,
                       (select r from unnest(%s::text[]) with ordinality u(code, r) where code = t.rule_tier) as rule_rank
                from analytics.customer_tier t join analytics.customer_value v using (customer_id, as_of_date)
                where as_of_date = %s
            )
            select count(*) from t a join t b on a.branch_code is not distinct from b.branch_code
            where a.score_percentile >= b.score_percentile and a.monetary >= b.monetary
              and a.orders_in_window >= b.orders_in_window and a.rule_rank > b.rule_rank
            """, ([t.code for t in config.load().tier_spec.ladder], DAY2)).fetchone()[0]
    assert violations == 0


def test_simulation_reports_moves_and_publishes_nothing(scenario):
    sim = scenario["simulation"]
    assert scenario["fingerprints"]["simulated"] == scenario["fingerprints"]["day3"]
    assert sum(t["simulated_customers"] for t in sim.tiers) == sum(t["published_customers"] for t in sim.tiers)
    assert sum(m["customers"] for m in sim.migration) == sum(t["published_customers"] for t in sim.tiers)
    # stricter percentiles can only move customers down the ladder
    order = [t.code for t in config.load().tier_spec.ladder]
    assert all(order.index(m["to_tier"]) >= order.index(m["from_tier"]) for m in sim.migration)
    assert sim.customers_moved > 0 and sim.movers
    assert "Migration matrix" in sim.report.read_text()


def test_simulation_builds_only_its_own_relations(scenario):
    # nothing outside the what-if's own schemas was created, rebuilt or dropped, and its own are gone
    assert scenario["relations_after_simulation"] == scenario["relations_before_simulation"]


def test_published_runs_leave_no_build_schemas(scenario):
    with warehouse.connect(scenario["url"]) as conn:
        statuses = dict(conn.execute("select status, count(*) from tierline.build_runs group by 1").fetchall())
        left = [s for (s,) in conn.execute("select nspname from pg_namespace where nspname like 'tierline_build%'")]
    # four published runs, one failed (the raw gate of day 3) whose schemas were never built
    assert statuses == {"published": 4, "failed": 1}
    assert left == []


def test_the_run_report_reads_well_in_chromium(scenario):
    """Day 2's report as a person sees it, in headless Chromium; the screenshot stays in the run folder."""
    run_dir = latest_run_dir(DAY2)
    with report_browser.open_page(run_dir / "report.html") as page:
        page.screenshot(path=run_dir / "report.png", full_page=True)
        assert page.title() == "Customer tiers for Monday 2 November 2026 · published"
        drawn = {c["id"]: c for c in report_browser.charts(page)}
        assert {"chart-tier-mix", "chart-lifecycle", "chart-migration", "chart-stage-times"} <= set(drawn)
        assert all(c["width"] > 300 and c["height"] > 150 and c["shapes"] > 20 for c in drawn.values()), drawn
        assert report_browser.overflowing_tables(page) == []
        # the tier labels in Chinese: in the table, drawn with a CJK font; in the charts, as CJK glyph outlines
        cells = page.locator("td.tier-label").all_inner_texts()
        assert cells == [t.label_zh for t in config.load().tier_spec.ladder]
        assert any(report_browser.is_cjk(f) for f in report_browser.fonts_used(page, "td.tier-label"))
        for chart in ("chart-tier-mix", "chart-migration"):
            assert any(report_browser.is_cjk(f) for f in report_browser.glyph_fonts(page, chart)), chart
        # formatted numbers, and nothing fetched from anywhere but the file itself
        assert re.fullmatch(r"\d{1,3}(,\d{3})*", page.locator(".card b").first.inner_text())
        assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", t)
                   for t in page.locator("#tiers table").first.locator("td:nth-child(6)").all_inner_texts())
        assert all(re.fullmatch(r"\d+\.\d%", t)
                   for t in page.locator("#tiers table").first.locator("td:nth-child(4)").all_inner_texts())
        assert page.requests == [(run_dir / "report.html").resolve().as_uri()]
        links = page.eval_on_selector_all("#links a", "links => links.map(a => a.getAttribute('href'))")
    assert (run_dir / "report.png").stat().st_size > 50_000
    assert "dbt/marts/run_results.json" in links and all(not Path(h).is_absolute() for h in links)
    assert {"dbt_docs/index.html", "gx_docs/index.html"} <= set(links)  # the run's docs sites
    assert all((run_dir / h).exists() for h in links)


def test_the_report_shows_what_changed_and_every_gate_check(scenario):
    summary = json.loads((latest_run_dir(DAY2) / "summary.json").read_text())
    assert summary["changes"]["previous"]["as_of_date"] == DAY1.isoformat()
    assert summary["history"]["dates"] == [DAY1.isoformat(), DAY2.isoformat()]
    assert [g["gate"] for g in summary["gates"]] == ["raw", "staging", "marts"]
    page = (latest_run_dir(DAY2) / "report.html").read_text()
    checks = sum(len(g["checks"]) for g in summary["gates"])
    assert page.count("<td class=\"ok\">ok</td>") + page.count(">warning</td>") + page.count(">failed</td>") == checks
    # quarantine by file and reason adds up to the run's quarantined rows (the generator breaks day 1's)
    day1 = json.loads((latest_run_dir(DAY1) / "summary.json").read_text())
    assert sum(q["rows"] for q in day1["quarantine"]) == day1["rows_quarantined"] > 0
    assert {q["file"] for q in day1["quarantine"]} == {f["file"] for f in day1["files"] if f["rows_quarantined"]}


def test_text_from_the_extracts_is_escaped_in_the_report(scenario, tmp_path):
    summary = json.loads((latest_run_dir(DAY2) / "summary.json").read_text())
    hostile = "<script>alert(1)</script>"
    summary["quarantine"].insert(0, {"file": f"{hostile}.csv", "reason": f"unparsable int in employee_count: {hostile}",
                                     "rows": 1, "first_line": 2})
    summary["gates"][0]["checks"][0]["description"] = f"sample: customer_name={hostile}"
    (tmp_path / "report.html").write_text(report.as_html(summary), encoding="utf-8")
    with report_browser.open_page(tmp_path / "report.html") as page:
        assert page.dialogs == []
        assert f"employee_count: {hostile}" in page.locator("#quarantine").inner_text()
        # text_content: a passed gate's checks are collapsed (not rendered as text by inner_text)
        assert f"customer_name={hostile}" in page.locator("#gates").text_content()
        assert page.locator("script").count() == 0


def test_the_demo_summary_names_each_runs_report(scenario):
    reports = [latest_run_dir(day) / "report.html" for day in (DAY1, DAY2)]
    text = cli.where_results_are("crm line", reports)
    # each real path (the line used to print a <date>/<run id> placeholder)
    assert "<" not in text.split("reports:")[1].split("CRM:")[0]
    assert all(f"{path}\n" in text and path.exists() for path in reports)


def test_make_run_prints_each_task_as_it_starts_and_ends(scenario):
    lines = scenario["day2_output"]
    assert scenario["codes"]["day2"] == 0, "\n".join(text for _at, text in lines)
    events = [(at, text.split()[1], text.split()[2]) for at, text in lines
              if re.match(r"  \d\d:\d\d:\d\d  \w+ +(started|ok)", text)]
    assert [(stage, event) for _at, stage, event in events] == [(s, e) for s in DAG_TASKS for e in ("started", "ok")]
    ended = lines[-1][0]
    # live, not replayed at the end: the load was reported long before the run finished
    load_done = next(at for at, stage, event in events if (stage, event) == ("load_raw", "ok"))
    assert ended - load_done > 5, lines
    load_line = next(text for _at, text in lines if re.search(r"load_raw +ok", text))
    assert re.search(r"ok in \d+\.\d s: [\d,]+ rows read, [\d,]+ loaded, [\d,]+ quarantined", load_line)
    assert any("customer_tier" in text for _at, text in lines)  # the summary still closes the output


def test_the_superset_dashboard_shows_the_published_data_through_the_bi_login(scenario, superset_installed, tmp_path):
    """Issue 13 item 8: the dashboard shipped in dashboard/ (Apache Superset), provisioned on the published
    schema through the read-only login, opened in headless Chromium: every chart queried rows and drew them."""
    from tierline_dev import dashboard

    from .dashboard_browser import open_dashboard

    reader = dashboard.reader_url(scenario["url"])
    with warehouse.connect(reader, autocommit=True) as conn:  # it reads analytics, and nothing else
        assert conn.execute("select count(*) from analytics.kpi_daily").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select 1 from raw.crm_customers limit 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create table analytics.scratch (x int)")
    superset_installed.result(timeout=dashboard.INSTALL_TIMEOUT + 2 * dashboard.COMMAND_TIMEOUT)
    instance = dashboard.provision(dashboard.Instance(tmp_path / "superset"), reader)
    charts = yaml.safe_load(dashboard.SPEC.read_text(encoding="utf-8"))["charts"]
    screenshot = tmp_path / "dashboard.png"
    with dashboard.Server(instance, dashboard.free_port()) as server:
        view = open_dashboard(server.url, dashboard.dashboard_path(), dashboard.ADMIN_USER, instance.password,
                              expected_charts=len(charts), screenshot=screenshot)
    shutil.copyfile(screenshot, latest_run_dir(DAY2) / "dashboard.png")  # beside the run's report
    print(f"dashboard screenshot: {screenshot} (Superset up in {server.started_in:.0f} s, "
          f"charts drawn in {view.seconds_to_render:.0f} s)")

    assert sorted(view.charts) == sorted(chart["title"] for chart in charts.values()), view.charts
    assert len(view.queries) == len(charts)
    assert [q for q in view.queries if q["status"] != 200 or q["error"] or q["rows"] == 0] == [], view.queries
    for title, drawn in view.charts.items():
        assert not drawn["error"] and not drawn["empty"], (title, drawn["text"])
        shows = drawn["canvases"] or drawn["table_rows"] or drawn["svg_shapes"] or drawn["big_number"].strip()
        assert shows, (title, drawn)
    assert view.errors == [] and view.outside_requests == []
    # the tier labels come from config/tier_spec.yml, in Chinese and in ladder order
    kpis = next(drawn["text"] for title, drawn in view.charts.items() if title.startswith("分级KPI"))
    labels = [f"{rank} {tier.label_zh}" for rank, tier in enumerate(config.load().tier_spec.ladder, start=1)]
    assert [kpis.index(label) for label in labels] == sorted(kpis.index(label) for label in labels), kpis
    assert screenshot.stat().st_size > 50_000
