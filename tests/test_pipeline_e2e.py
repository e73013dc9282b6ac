"""End to end through real Airflow DAG runs (`airflow dags test`), real dbt, GX and PostgreSQL.

One scenario per module, on generated dirty extracts: publish day 1, re-run day 1, publish day 2,
then a day whose raw gate fails. The tests assert on what the scenario left behind.
"""

from __future__ import annotations

import csv
import json
import shutil
import uuid
from datetime import date
from pathlib import Path

import pytest

from tierline import cli, config, generate, warehouse

DAY1, DAY2, DAY3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
ANALYTICS = ("customer_value", "customer_tier", "customer_lifecycle", "tier_history", "publication_log")


def fingerprint(url: str) -> dict[str, str]:
    """An md5 of every published table's full content, in a stable order."""
    with warehouse.connect(url) as conn:
        return {
            table: conn.execute(
                f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from analytics.{table} t"
            ).fetchone()[0]
            for table in ANALYTICS
        }


@pytest.fixture(scope="module")
def scenario(server_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    url = warehouse.with_database(server_url, f"tierline_e2e_{uuid.uuid4().hex[:8]}")
    warehouse.ensure_database(url)
    patch = pytest.MonkeyPatch()
    patch.setenv(warehouse.ENV_URL, url)
    patch.setenv("TIERLINE_HOME", str(root / "home"))
    patch.setenv("TIERLINE_RETRY_DELAY_SECONDS", "1")

    landing = root / "landing"
    generate.generate(landing, customers=400, days=2, seed=11, start_date=DAY1, progress=False)
    # day 3: an orders file whose every row points at an unknown customer -> the raw gate fails
    (landing / DAY3.isoformat()).mkdir()
    with (landing / DAY3.isoformat() / "sales_orders.csv").open("w") as handle:
        handle.write("order_id,customer_id,order_ts,status,gross_amount,net_amount,updated_at\n")
        for i in range(30):
            handle.write(f"X{i},NOBODY{i},2026-11-03 10:00:00,completed,10,10,2026-11-03 10:00:00\n")

    result = {"url": url, "landing": landing, "codes": {}, "fingerprints": {}}
    result["codes"]["day1"] = cli.run(landing, DAY1, quiet=True)
    result["fingerprints"]["day1"] = fingerprint(url)
    result["codes"]["day1_again"] = cli.run(landing, DAY1, quiet=True)
    result["fingerprints"]["day1_again"] = fingerprint(url)
    result["codes"]["day2"] = cli.run(landing, DAY2, quiet=True)
    result["fingerprints"]["day2"] = fingerprint(url)
    result["codes"]["day3"] = cli.run(landing, DAY3, quiet=True)
    result["fingerprints"]["day3"] = fingerprint(url)
    yield result
    patch.undo()
    warehouse.drop_database(url)
    shutil.rmtree(root, ignore_errors=True)


def latest_run_dir(day: date) -> Path:
    from tierline import settings

    return max((settings.runs_dir() / day.isoformat()).iterdir(), key=lambda p: p.stat().st_mtime)


def test_generated_days_publish(scenario):
    assert scenario["codes"]["day1"] == 0
    assert scenario["codes"]["day2"] == 0
    with warehouse.connect(scenario["url"]) as conn:
        published = conn.execute("select as_of_date from analytics.publication_log order by 1").fetchall()
    assert [p[0] for p in published] == [DAY1, DAY2]


def test_every_customer_has_exactly_one_tier_and_stage_per_date(scenario):
    codes = [t.code for t in config.load().tier_spec.ladder]
    with warehouse.connect(scenario["url"]) as conn:
        crm = conn.execute("select count(*) from staging.stg_crm__customers").fetchone()[0]
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
            "select count(*) from staging.stg_crm__customers c left join analytics.customer_tier t "
            "on t.customer_id = c.customer_id and t.as_of_date = %s where t.customer_id is null", (DAY2,)).fetchone()[0]
        assert missing == 0


def test_rerunning_a_date_changes_nothing(scenario):
    assert scenario["codes"]["day1_again"] == 0
    before, after = scenario["fingerprints"]["day1"], scenario["fingerprints"]["day1_again"]
    # the publication log records the second run; every published table is identical
    assert {k: v for k, v in before.items() if k != "publication_log"} == {
        k: v for k, v in after.items() if k != "publication_log"}


def test_failed_gate_publishes_nothing_and_names_the_check(scenario):
    assert scenario["codes"]["day3"] != 0
    assert scenario["fingerprints"]["day3"] == scenario["fingerprints"]["day2"]
    failure = json.loads((latest_run_dir(DAY3) / "failure.json").read_text())
    assert failure["stage"] == "gate_raw"
    assert "gates.max_quarantine_rate" in failure["error"]
    assert "sales_orders.csv" in json.dumps(json.loads((latest_run_dir(DAY3) / "gate_raw.json").read_text()))
    assert not (latest_run_dir(DAY3) / "stage_dbt_staging.json").exists()


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
