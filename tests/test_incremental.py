"""An incremental chain equals a rebuild from scratch, row for row, in every published table.

Two warehouses get the same generated extracts (dirty, so quarantine and upserts take part):
one runs days 1, 2 and 3 the way a daily schedule does (every incremental path taken), the other
runs the same days with ``full_refresh`` (every model and history table rebuilt from raw and from
all published snapshots). Every stage is the function the DAG's task calls; real PostgreSQL, dbt
and Great Expectations.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import date, timedelta

import pytest
from psycopg import sql

from tierline import pipeline, warehouse
from tierline.assets import PUBLISHED_TABLES
from tierline_dev import generate

DAY1 = date(2026, 11, 1)
DAYS = [DAY1 + timedelta(days=k) for k in range(3)]


def run_day(as_of: date, landing, *, full_refresh: bool) -> pipeline.RunContext:
    ctx = pipeline.context(as_of, f"incremental-test-{as_of}-{'full' if full_refresh else 'inc'}", landing)
    ctx.full_refresh = full_refresh
    pipeline.run_through(ctx)
    return ctx


def published_rows(url: str) -> dict[str, list[str]]:
    """Every published table as the sorted list of its rows' text."""
    with warehouse.connect(url) as conn:
        return {table: [r[0] for r in conn.execute(sql.SQL(
            "select t::text from analytics.{} as t order by 1").format(sql.Identifier(table))).fetchall()]
                for table in PUBLISHED_TABLES}


def compiled(ctx: pipeline.RunContext, layer: str, model: str) -> str:
    results = json.loads((ctx.run_dir / "dbt" / layer / "run_results.json").read_text())
    return next(r["compiled_code"] for r in results["results"] if r["unique_id"] == f"model.tierline.{model}")


@pytest.fixture(scope="module")
def chains(server_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    landing = root / "landing"
    generate.generate(landing, customers=600, days=len(DAYS), seed=23, start_date=DAY1, progress=False)
    patch = pytest.MonkeyPatch()
    found = {}
    try:
        for name, full_refresh in (("incremental", False), ("rebuild", True)):
            url = warehouse.with_database(server_url, f"tierline_inc_{name}_{uuid.uuid4().hex[:8]}")
            warehouse.ensure_database(url)
            patch.setenv(warehouse.ENV_URL, url)
            patch.setenv("TIERLINE_HOME", str(root / f"home_{name}"))
            try:
                contexts = [run_day(day, landing, full_refresh=full_refresh) for day in DAYS]
                found[name] = {"rows": published_rows(url), "last": contexts[-1]}
            finally:
                warehouse.drop_database(url)
        yield found
    finally:
        patch.undo()
        shutil.rmtree(root, ignore_errors=True)


def test_every_published_table_equals_a_rebuild_from_scratch(chains):
    incremental, rebuild = chains["incremental"]["rows"], chains["rebuild"]["rows"]
    assert set(incremental) == set(PUBLISHED_TABLES)
    for table in PUBLISHED_TABLES:
        assert incremental[table], f"{table} published nothing: the comparison would prove nothing"
        only_incremental = sorted(set(incremental[table]) - set(rebuild[table]))[:3]
        only_rebuild = sorted(set(rebuild[table]) - set(incremental[table]))[:3]
        assert incremental[table] == rebuild[table], (
            f"analytics.{table}: incremental chain has {len(incremental[table])} rows, rebuild "
            f"{len(rebuild[table])}; only incremental e.g. {only_incremental}; only rebuild e.g. {only_rebuild}")


@pytest.mark.parametrize("model", ["tier_history", "lifecycle_history"])
def test_the_incremental_chain_took_the_incremental_paths(chains, model):
    # otherwise the equality above would compare two rebuilds
    assert "open_stretches" in compiled(chains["incremental"]["last"], "marts", model)
    assert "open_stretches" not in compiled(chains["rebuild"]["last"], "marts", model)
