"""Each run owns its relations and runs on one warehouse take turns (issue 8, item 1).

Real concurrent runs on one real warehouse: runs in separate processes (tests/run_stages.py, the
pipeline's stages in order) and through Airflow (`make run`'s CLI), compared table by table with
a clean sequential run of the same dates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg
import pytest
import yaml

from tierline import pipeline, runs, settings, warehouse
from tierline.assets import PUBLISHED_TABLES
from tierline.errors import PublishRefused
from tierline_dev import generate

ROOT = Path(__file__).resolve().parents[1]
DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)


def published(url: str) -> dict[str, str]:
    """An md5 of every published table's content, and the published dates (run ids differ)."""
    with warehouse.connect(url) as conn:
        tables = {table: conn.execute(
            f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from analytics.{table} t"
        ).fetchone()[0] for table in PUBLISHED_TABLES}
        tables["publication_log"] = [d for (d,) in conn.execute(
            "select as_of_date from analytics.publication_log order by as_of_date")]
    return tables


@pytest.fixture(scope="module")
def world(server_url, tmp_path_factory):
    """Generated extracts for two days, a config with short lock timings, and the reference: the
    published tables after a clean run of day 1 and then of day 2, on a database of their own."""
    root = tmp_path_factory.mktemp("isolation")
    landing = root / "landing"
    generate.generate(landing, customers=150, days=2, seed=21, start_date=DAY1, progress=False)
    config_dir = root / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", config_dir)
    cfg = yaml.safe_load((config_dir / "tierline.yml").read_text())
    cfg["runs"].update(lock_wait_seconds=600, lock_grace_seconds=600, lock_poll_seconds=0.5)
    (config_dir / "tierline.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    databases = []

    def database(name: str) -> str:
        url = warehouse.with_database(server_url, f"tierline_iso_{name}_{uuid.uuid4().hex[:6]}")
        warehouse.ensure_database(url)
        databases.append(url)
        return url

    patch = pytest.MonkeyPatch()
    patch.setenv("TIERLINE_CONFIG", str(config_dir / "tierline.yml"))
    patch.setenv("TIERLINE_HOME", str(root / "home"))
    reference_url = database("reference")
    patch.setenv(warehouse.ENV_URL, reference_url)
    reference = {}
    for day in (DAY1, DAY2):
        run_in_process(day, f"reference-{day}", landing)
        reference[day] = published(reference_url)
    processes = []
    yield {"root": root, "landing": landing, "config": config_dir / "tierline.yml", "database": database,
           "reference": reference, "patch": patch, "processes": processes}
    for process in processes:  # a failed test may leave a paused run behind
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    patch.undo()
    for url in databases:
        warehouse.drop_database(url)


def run_in_process(day: date, run_id: str, landing: Path, until_publish: bool = True):
    ctx = pipeline.context(day, run_id, landing)
    pipeline.run_through(ctx, "publish" if until_publish else "gate_marts")
    return ctx


def start_run(world, url: str, day: date, run_id: str, *, pause: bool = False, config: Path | None = None):
    """A run in a process of its own; ``pause``: it stops before publish until released."""
    env = {**os.environ, warehouse.ENV_URL: url, "TIERLINE_CONFIG": str(config or world["config"]),
           "TIERLINE_HOME": str(world["root"] / "home"), "PYTHONPATH": str(ROOT / "plugins")}
    flags = world["root"] / f"{run_id}"
    command = [sys.executable, str(ROOT / "tests" / "run_stages.py"), "--as-of", day.isoformat(),
               "--run-id", run_id, "--landing", str(world["landing"])]
    if pause:
        command += ["--ready", f"{flags}.ready", "--go", f"{flags}.go"]
    log = open(f"{flags}.log", "w")  # noqa: SIM115 - closed when the process is collected
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path, process.flags = Path(f"{flags}.log"), flags
    world["processes"].append(process)
    return process


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finish(process, timeout: float = 600) -> str:
    process.wait(timeout=timeout)
    return process.log_path.read_text()


def test_a_second_run_waits_for_the_first_and_both_publish_what_a_clean_run_does(world):
    """The issue's forced interleaving: run A (day 1) waits before publish after gate_marts while
    run B (day 2) starts its build. B must wait for A (saying so), a run that may wait only 2 s
    refuses, and the published tables equal those of a clean run of day 1 then day 2."""
    url = world["database"]("forced")
    a = start_run(world, url, DAY1, "run-a", pause=True)
    wait_for(lambda: Path(f"{a.flags}.ready").exists() or a.poll() is not None, 600, "run A to pass gate_marts")
    assert a.poll() is None, a.log_path.read_text()

    impatient = world["root"] / "impatient" / "tierline.yml"
    shutil.copytree(world["config"].parent, impatient.parent)
    cfg = yaml.safe_load(world["config"].read_text())
    cfg["runs"]["lock_wait_seconds"] = 2
    impatient.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    c = start_run(world, url, DAY2, "run-c", config=impatient)
    refused = finish(c, 120)
    assert c.returncode == 1
    assert "RunLockRefused" in refused and "run run-a of 2026-11-01" in refused and "waiting 2 s" in refused

    b = start_run(world, url, DAY2, "run-b")
    wait_for(lambda: "waits for run run-a of 2026-11-01" in b.log_path.read_text(), 120, "run B to say it waits")
    time.sleep(2)
    assert "stage load_raw" not in b.log_path.read_text(), "run B went on while run A held the warehouse"
    Path(f"{a.flags}.go").write_text("go")
    assert "published" in finish(a) and a.returncode == 0
    assert "published" in finish(b) and b.returncode == 0, b.log_path.read_text()
    assert published(url) == world["reference"][DAY2]


def test_publish_copies_only_what_the_gate_audited(world):
    """A build table written after gate_marts (even back to what it held), or a publication that
    happened after the run started building, makes publish refuse; once the table is audited
    again and the publication undone it publishes."""
    url = world["database"]("audited")
    world["patch"].setenv(warehouse.ENV_URL, url)
    ctx = run_in_process(DAY1, "audited", world["landing"], until_publish=False)
    marts = ctx.schemas["marts"]
    with warehouse.connect(url) as conn:
        customer = conn.execute(f"select customer_id, tier from {marts}.customer_tier limit 1").fetchone()
        conn.execute(f"update {marts}.customer_tier set tier = 'vip' where customer_id = %s", (customer[0],))
    with pytest.raises(PublishRefused, match="customer_tier is not what gate_marts audited"):
        pipeline.publish(ctx)
    with warehouse.connect(url) as conn:
        conn.execute(f"update {marts}.customer_tier set tier = %s where customer_id = %s", (customer[1], customer[0]))
    # the same content, written after the audit: what is published is what was audited, not what
    # happens to look like it
    with pytest.raises(PublishRefused, match="customer_tier is not what gate_marts audited"):
        pipeline.publish(ctx)
    with warehouse.connect(url) as conn:
        conn.execute(f"alter table {marts}.customer_events add column note text default 'x'")
    pipeline.gate(ctx, "marts")
    with warehouse.connect(url) as conn:
        conn.execute(f"alter table {marts}.customer_events drop column note")
    with pytest.raises(PublishRefused, match="customer_events is not what gate_marts audited"):
        pipeline.publish(ctx)
    pipeline.gate(ctx, "marts")
    with warehouse.connect(url) as conn:
        conn.execute("insert into analytics.publication_log (run_id, as_of_date, row_counts) "
                     "values ('someone-else', '2026-10-31', '{}')")
    with pytest.raises(PublishRefused, match="changed after this run started building"):
        pipeline.publish(ctx)
    with warehouse.connect(url) as conn:
        assert conn.execute("select count(*) from analytics.customer_tier").fetchone()[0] == 0
        conn.execute("delete from analytics.publication_log where run_id = 'someone-else'")
    pipeline.publish(ctx)
    assert published(url) == world["reference"][DAY1]
    with warehouse.connect(url) as conn:
        left = conn.execute("select count(*) from pg_namespace where nspname = any(%s)",
                            (list(ctx.schemas.values()),)).fetchone()[0]
    # raw, the staging state and analytics: the run's build schemas are dropped once it published
    assert left == 3


def test_an_audit_table_of_the_checksum_era_takes_versions(warehouse_url):
    """A warehouse whose audits held a checksum of every row's text gets the version column; the
    audit of a run that straddled the upgrade matches nothing (that run audits again)."""
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("create schema tierline")
        conn.execute("create table tierline.audits (run_id text not null, as_of_date date not null, relation text not null, "
                     "relation_oid oid not null, row_count bigint not null, checksum numeric not null, "
                     "audited_at timestamptz not null default now(), primary key (run_id, as_of_date, relation))")
        conn.execute("insert into tierline.audits values ('old', '2026-11-01', 'customer_tier', 1, 3, 42)")
        runs.ensure_control(conn)
        runs.ensure_control(conn)
        columns = [r[0] for r in conn.execute("select column_name from information_schema.columns where "
                                              "table_schema = 'tierline' and table_name = 'audits' order by ordinal_position")]
        assert "checksum" not in columns and "version" in columns
        assert conn.execute("select version from tierline.audits where run_id = 'old'").fetchone()[0] == ""


def test_a_killed_run_frees_the_warehouse_and_a_rerun_converges(world):
    url = world["database"]("killed")
    world["patch"].setenv(warehouse.ENV_URL, url)
    run_in_process(DAY1, "killed-day1", world["landing"])
    victim = start_run(world, url, DAY2, "victim")

    def building_marts():
        with psycopg.connect(url) as conn:
            return conn.execute("select stage = 'dbt_marts' from tierline.run_lock").fetchone()[0]

    wait_for(lambda: victim.poll() is not None or building_marts(), 600, "the victim to build its marts")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    started = time.monotonic()
    ctx = run_in_process(DAY2, "rerun", world["landing"])
    land = json.loads((ctx.run_dir / "stage_land_extracts.json").read_text())
    assert land["waited_for_lock_seconds"] < 5, "the killed run's lock was not freed at once"
    assert time.monotonic() - started < 600
    assert published(url) == world["reference"][DAY2]
    with warehouse.connect(url) as conn:
        kept = dict(conn.execute("select run_id, status from tierline.build_runs").fetchall())
    assert kept["victim"] == "building" and kept["rerun"] == "published"  # the killed run's build is kept


def test_two_make_runs_at_once_on_one_warehouse(world, tmp_path):
    """Two `make run`s (the CLI, real Airflow `dags test`) for two dates started together: the
    second waits for the first, both publish, the tables equal a clean run's."""
    url = world["database"]("airflow")
    env = {**os.environ, warehouse.ENV_URL: url, "TIERLINE_CONFIG": str(world["config"]),
           "PYTHONPATH": str(ROOT / "plugins"), "TIERLINE_RETRY_DELAY_SECONDS": "1"}
    runs = {}
    for day in (DAY1, DAY2):
        home = tmp_path / f"home-{day}"  # each its own Airflow metadata, as on two machines
        log = open(tmp_path / f"{day}.log", "w")  # noqa: SIM115
        runs[day] = subprocess.Popen(
            [sys.executable, "-m", "tierline.cli", "run", "--landing", str(world["landing"]), "--as-of", day.isoformat()],
            env={**env, "TIERLINE_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        world["processes"].append(runs[day])
        if day == DAY1:
            def first_holds():
                try:
                    with psycopg.connect(url) as conn:
                        return conn.execute("select run_id is not null from tierline.run_lock").fetchone()[0]
                except psycopg.Error:
                    return False
            wait_for(first_holds, 300, "the first run to hold the warehouse")
    for day, process in runs.items():
        assert process.wait(timeout=900) == 0, (tmp_path / f"{day}.log").read_text()[-3000:]
    waited = next((tmp_path / f"home-{DAY2}" / "runs" / DAY2.isoformat()).iterdir())
    land = json.loads((waited / "stage_land_extracts.json").read_text())
    assert land["waited_for_lock_seconds"] > 1
    assert published(url) == world["reference"][DAY2]
