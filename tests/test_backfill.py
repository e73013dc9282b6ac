"""Backfill over years of sparse date folders: in order, stops at a failure, resumes, skips, --force.

Generated extracts (a few customers) land on two dates almost three years apart, both older
than the DAG's old hard-coded start date: a full snapshot on 2023-03-14, then a day of changes
on 2025-12-31. The first date is broken at first (an orders file whose every row points at an
unknown customer: the raw gate fails), so the first backfill stops there and never starts the
second; once the file is fixed, the same command resumes at that date.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from tierline import cli, publish, settings, warehouse
from tierline_dev import generate

DATES = (date(2023, 3, 14), date(2025, 12, 31))


@pytest.fixture(scope="module")
def history(private_warehouse):
    root, url, patch = private_warehouse.root, private_warehouse.url, private_warehouse.patch
    patch.setenv("TIERLINE_RETRY_DELAY_SECONDS", "1")
    patch.setenv("TIERLINE_ALERT_CONNECTIONS", "")
    # Years pass between the folders, so tier shares move far more than a day's drift check allows.
    config = root / "config"
    shutil.copytree(settings.config_path().parent, config)
    rules = yaml.safe_load((config / "tierline.yml").read_text())
    rules["gates"]["max_tier_share_shift"] = 1.0
    # ...and the later date would remove the earlier one's run folders, which these tests inspect
    rules["retention"] = {}
    (config / "tierline.yml").write_text(yaml.safe_dump(rules, allow_unicode=True))
    patch.setenv("TIERLINE_CONFIG", str(config / "tierline.yml"))

    landing = root / "landing"
    generate.generate(landing, customers=120, days=2, seed=5, start_date=DATES[0], dirty=False, progress=False)
    generated = sorted(p for p in landing.iterdir() if p.is_dir())
    for folder, day in zip(generated[1:], DATES[1:], strict=True):
        folder.rename(landing / day.isoformat())
    broken = landing / DATES[0].isoformat() / "sales_orders.csv"
    good = broken.read_bytes()
    with broken.open("w") as handle:
        handle.write("order_id,customer_id,order_ts,status,gross_amount,net_amount,updated_at\n")
        for i in range(30):
            handle.write(f"X{i},NOBODY{i},2023-03-14 10:00:00,completed,10,10,2023-03-14 10:00:00\n")
    return {"url": url, "landing": landing, "broken": broken, "good": good}


def published(url: str) -> dict:
    with warehouse.connect(url) as conn:
        return publish.published_dates(conn, "analytics")


def test_backfill_runs_in_order_stops_resumes_and_forces(history, capsys):
    landing, url = history["landing"], history["url"]

    first = cli.backfill(landing, date(2020, 1, 1), date(2026, 12, 31))
    out, err = capsys.readouterr()
    assert first != 0
    assert published(url) == {}
    assert "backfill 2020-01-01 .. 2026-12-31: 2 date folders" in out and "0 already published, 2 to run" in out
    assert "[1/2] 2023-03-14 running" in out
    assert "[1/2] 2023-03-14 FAILED" in err and "it resumes at 2023-03-14" in err
    assert "2025-12-31" not in out + err  # stopped: the later date never started

    history["broken"].write_bytes(history["good"])
    second = cli.backfill(landing, date(2020, 1, 1), date(2026, 12, 31))
    out, _ = capsys.readouterr()
    assert second == 0
    assert re.search(r"^\[1/2\] 2023-03-14 published in \d+ s; run folder .+; log .+\.log$", out, re.M)
    assert re.search(r"^\[2/2\] 2025-12-31 published in \d+ s; run folder .+; log .+\.log$", out, re.M)
    assert out.index("[1/2] 2023-03-14 published") < out.index("[2/2] 2025-12-31 running")
    assert "backfill done: 2 run, 0 skipped" in out
    assert list(published(url)) == list(DATES)

    again = cli.backfill(landing, date(2020, 1, 1), date(2026, 12, 31))
    out, _ = capsys.readouterr()
    first_runs = published(url)
    assert again == 0
    assert f"[1/2] 2023-03-14 skipped: published by run {first_runs[DATES[0]]}" in out
    assert f"[2/2] 2025-12-31 skipped: published by run {first_runs[DATES[1]]}" in out
    assert "backfill done: 0 run, 2 skipped" in out

    forced = cli.backfill(landing, date(2023, 1, 1), date(2023, 12, 31), force=True)
    out, _ = capsys.readouterr()
    assert forced == 0
    assert "[1/1] 2023-03-14 published in" in out
    assert published(url)[DATES[0]] != first_runs[DATES[0]]  # a new run published the date again...
    with warehouse.connect(url) as conn:
        runs = conn.execute("select count(*) from analytics.publication_log where as_of_date = %s",
                            (DATES[0],)).fetchone()[0]
    assert runs == 2  # ...and the earlier run's publication record is still there


def test_every_run_keeps_its_own_record(history):
    """Each run of a date, re-runs included, has its own Airflow run, run folder and log file."""
    day = settings.runs_dir() / DATES[0].isoformat()
    run_dirs = [p for p in day.iterdir() if (p / "run.json").exists()]
    logs = list((settings.home() / "logs" / DATES[0].isoformat()).glob("*.log"))
    # the failed run, the published one and the forced re-run
    assert len(run_dirs) == 3 and len(logs) == 3
    assert sorted((p / "summary.txt").exists() for p in run_dirs) == [False, True, True]
    env = cli.airflow_environ()
    listed = subprocess.run([str(Path(sys.executable).with_name("airflow")), "dags", "list-runs", "customer_tiering",
                             "-o", "json"], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    runs = [r for r in json.loads(listed.stdout.strip().splitlines()[-1]) if r["logical_date"].startswith("2023-03-14")]
    assert len(runs) == 3 and len({r["run_id"] for r in runs}) == 3
    assert sorted(r["state"] for r in runs) == ["failed", "success", "success"]
    assert {p.name for p in run_dirs} == {re.sub(r"[^A-Za-z0-9_.-]+", "_", r["run_id"]) for r in runs}


def test_backfill_refuses_an_empty_range(history, capsys):
    assert cli.backfill(history["landing"], date(2022, 1, 1), date(2022, 12, 31)) == 2
    assert "no date folders between 2022-01-01 and 2022-12-31" in capsys.readouterr().err

