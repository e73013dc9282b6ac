"""Retention periods (issue 12, item 5): what is older than its period goes, what runs read stays.

Two extract dates landed and loaded by the pipeline's own stages and published as batches
(tierline.batches), on a real PostgreSQL; retention applied as of a date that puts the first
date, but not the second, beyond every period.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import pytest
import yaml

from tierline import batches, cli, pipeline, settings, warehouse
from tierline_dev import generate

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
PERIOD = 30
AS_OF = DAY2 + timedelta(days=PERIOD)  # DAY1 is older than the periods, DAY2 is not (but raw history's)


def latest_versions(url: str) -> list[tuple]:
    """What staging reads of the customers: the winning version per key (latest_version)."""
    with warehouse.connect(url) as conn:
        return conn.execute(
            "select distinct on (customer_id) customer_id, updated_at, customer_name from raw.crm_customers "
            "where batch_id in (select batch_id from raw.load_batch where status = 'published') "
            "order by customer_id, updated_at desc, _extract_date desc, _line_no desc").fetchall()


def counts(url: str) -> dict:
    with warehouse.connect(url) as conn:
        return dict(zip(("customers", "quarantined", "texts"), conn.execute(
            "select (select count(*) from raw.crm_customers), (select count(*) from raw.quarantine), "
            "(select count(*) from raw.quarantine where raw_text is not null)").fetchone(), strict=True))


@pytest.fixture
def loaded(warehouse_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    config_dir = tmp_path / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", config_dir)
    cfg = yaml.safe_load((config_dir / "tierline.yml").read_text())
    cfg["runs"]["lock_grace_seconds"] = 0.01  # these runs never publish (batches are promoted below): let go at once
    cfg["retention"] = {k: PERIOD for k in ("landing_days", "quarantine_text_days", "run_folder_days")}
    # both dates beyond it: a version replaced on DAY2 goes, the version that replaced it stays
    cfg["retention"]["raw_history_days"] = PERIOD - 1
    (config_dir / "tierline.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    monkeypatch.setenv("TIERLINE_CONFIG", str(config_dir / "tierline.yml"))
    landing = tmp_path / "landing"
    generate.generate(landing, customers=80, days=2, seed=3, start_date=DAY1, progress=False)
    for day in (DAY1, DAY2):
        ctx = pipeline.context(day, f"run of {day}", landing)
        pipeline.land_extracts(ctx)
        pipeline.load_raw(ctx)
        with warehouse.connect(warehouse_url) as conn, conn.transaction():
            batches.promote(conn, run_id=ctx.run_id, as_of=day)
    plan = settings.home() / "crm" / "dry_run_20261101T000000000000Z.jsonl"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text("{}\n")
    return warehouse_url


def test_retention_removes_what_is_older_than_its_period_and_nothing_a_run_reads(loaded, capsys):
    url = loaded
    versions, before = latest_versions(url), counts(url)
    with warehouse.connect(url) as conn:
        old_texts = conn.execute("select count(*) from raw.quarantine where extract_date = %s and raw_text is not null",
                                 (DAY1,)).fetchone()[0]
    assert old_texts > 0  # the generator's broken rows

    assert cli.main(["retention", "--as-of", AS_OF.isoformat()]) == 0

    result = json.loads(capsys.readouterr().out)
    removed = result["removed"]
    # what `make run` prints when the DAG's apply_retention task ends
    assert f"{removed['landing_dates']:,} landing_dates" in pipeline._outcome(result)
    assert removed["quarantine_texts"] == old_texts
    assert removed["raw_replaced_versions"] > 0
    assert removed["landing_dates"] == 1 and removed["run_folders"] == 1 and removed["crm_plans"] == 1
    after = counts(url)
    assert after["customers"] < before["customers"]
    assert after["quarantined"] == before["quarantined"] and after["texts"] == before["texts"] - old_texts
    assert latest_versions(url) == versions  # every key keeps the version staging reads
    assert not list(settings.landing_area().glob(f"*/{DAY1}")) and list(settings.landing_area().glob(f"*/{DAY2}"))
    assert not (settings.runs_dir() / DAY1.isoformat()).exists() and (settings.runs_dir() / DAY2.isoformat()).exists()
    assert not list((settings.home() / "crm").glob("dry_run_*.jsonl"))

    assert cli.main(["retention", "--as-of", AS_OF.isoformat()]) == 0  # again: nothing more to remove
    again = json.loads(capsys.readouterr().out)
    assert not any(again["removed"].values()), again
    assert pipeline._outcome(again) == "removed nothing"


@pytest.mark.parametrize("command", [["retention"], ["forget", "--customer-id", "C00001", "--reason", "test"]])
def test_forget_and_retention_never_interleave_with_a_run(warehouse_url, tmp_path, monkeypatch, capsys, command):
    """Both take the warehouse like a run: while a run holds it they wait, and refuse when it keeps it."""
    from tierline import config, runs

    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    config_dir = tmp_path / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", config_dir)
    cfg = yaml.safe_load((config_dir / "tierline.yml").read_text())
    cfg["runs"].update(lock_wait_seconds=1, lock_poll_seconds=0.2)
    (config_dir / "tierline.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    monkeypatch.setenv("TIERLINE_CONFIG", str(config_dir / "tierline.yml"))
    held = config.load().runs
    run = runs.RunLock(warehouse_url, run_id="a run", as_of=DAY1, stage="load_raw", wait_seconds=0,
                       grace_seconds=held.lock_grace_seconds).acquire()
    try:
        assert cli.main(command) == 2
    finally:
        run.release()
        run._close()
    err = capsys.readouterr().err
    assert "refused after waiting" in err and "run a run of 2026-11-01" in err
    assert cli.main(command) == 0  # the run is over
