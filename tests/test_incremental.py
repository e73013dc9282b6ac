"""An incremental chain equals a rebuild from scratch, row for row, in every published table.

Two warehouses get the same generated extracts (dirty, so quarantine and upserts take part):
one runs days 1, 2 and 3 the way a daily schedule does (every incremental path taken), the other
runs the same days with ``full_refresh`` (every model and history table rebuilt from raw and from
all published snapshots). The daily chain also has a day-2 run that built staging and then failed
its gate (its batch is in the staging state but never visible), and ends by running day 2 again
after day 3 (the staging state then holds batches the re-run must not see). Every stage is the
function the DAG's task calls; real PostgreSQL, dbt and Great Expectations.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import date, timedelta

import pytest
from psycopg import sql

from tierline import dbt, pipeline, warehouse
from tierline.assets import HISTORY_TABLES, PUBLISHED_TABLES
from tierline.errors import QualityGateFailed
from tierline_dev import generate

DAY1 = date(2026, 11, 1)
DAYS = [DAY1 + timedelta(days=k) for k in range(3)]


def run_day(as_of: date, landing, *, full_refresh: bool, attempt: str = "",
            fail_after_staging: bool = False) -> pipeline.RunContext:
    ctx = pipeline.context(as_of, f"incremental-test-{as_of}-{'full' if full_refresh else 'inc'}{attempt}", landing)
    if full_refresh:
        ctx.full_refresh = True  # the daily chain keeps what the DAG's context says
    if fail_after_staging:
        pipeline.run_through(ctx, "dbt_staging")

        def refuse():
            raise QualityGateFailed("the staging gate refused this run (test)")

        with pytest.raises(QualityGateFailed):
            pipeline.run_stage(ctx, "gate_staging", refuse)
        return ctx
    pipeline.run_through(ctx)
    return ctx


def published_rows(url: str) -> dict[str, list[str]]:
    """Every published table as the sorted list of its rows' text."""
    with warehouse.connect(url) as conn:
        return {table: [r[0] for r in conn.execute(sql.SQL(
            "select t::text from analytics.{} as t order by 1").format(sql.Identifier(table))).fetchall()]
                for table in PUBLISHED_TABLES}


def row_versions(conn, schema: str, table: str, key: tuple[str, ...]) -> dict[tuple, tuple[str, str]]:
    """Every row of a table by its key: (the transaction that wrote its version, its text)."""
    return {tuple(r[:-2]): (r[-2], r[-1]) for r in conn.execute(sql.SQL("select {}, xmin::text, t::text from {} as t").format(
        sql.SQL(", ").join(map(sql.Identifier, key)), sql.Identifier(schema, table)))}


def history_rows(url: str) -> dict[str, dict]:
    """Every published history row by key."""
    with warehouse.connect(url) as conn:
        return {table: row_versions(conn, "analytics", table, ("customer_id", "valid_from")) for table in HISTORY_TABLES}


def compiled(ctx: pipeline.RunContext, layer: str, model: str) -> str:
    results = json.loads((ctx.run_dir / "dbt" / layer / "run_results.json").read_text())
    return next(r["compiled_code"] for r in results["results"] if r["unique_id"] == f"model.tierline.{model}")


def estimated_rows(url: str, day) -> dict[str, tuple[int, int]]:
    """What the planner expects a filter on the newest published date to return, and what it does."""
    with warehouse.connect(url) as conn:
        found = {}
        for table in ("customer_tier", "customer_value"):
            query = sql.SQL("select * from analytics.{} where as_of_date = %s").format(sql.Identifier(table))
            plan = conn.execute(sql.SQL("explain (format json) ") + query, (day,)).fetchone()[0]
            actual = conn.execute(sql.SQL("select count(*) from ({}) as slice").format(query), (day,)).fetchone()[0]
            found[table] = (round(plan[0]["Plan"]["Plan Rows"]), actual)
        return found


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
                if full_refresh:
                    contexts = [run_day(day, landing, full_refresh=True) for day in DAYS]
                else:
                    contexts = [run_day(DAYS[0], landing, full_refresh=False),
                                run_day(DAYS[1], landing, full_refresh=False, attempt="-failed",
                                        fail_after_staging=True),
                                run_day(DAYS[1], landing, full_refresh=False)]
                    before = history_rows(url)
                    contexts.append(run_day(DAYS[2], landing, full_refresh=False))
                    found["history"] = (before, history_rows(url))
                    # a seed the ledger holds at another version (a release that changed it)
                    state = contexts[0].schemas["state"]
                    with warehouse.connect(url) as conn:
                        conn.execute(sql.SQL("update {} set version = 'an older file' where model = %s").format(
                            sql.Identifier(state, dbt.STAGING_LEDGER)), [dbt.SEED_LEDGER_PREFIX + "order_statuses"])
                    contexts.append(run_day(DAYS[1], landing, full_refresh=False, attempt="-again"))
                # "last": the last run of day 3, the date every path has been taken by
                with warehouse.connect(url) as conn:
                    found[f"{name}_history_changes"] = [
                        conn.execute("select to_jsonb(b) -> 'history_changes' from tierline.build_runs as b "
                                     "where run_id = %s and as_of_date = %s", (c.run_id, c.as_of)).fetchone()[0]
                        for c in contexts]
                found[name] = {"rows": published_rows(url), "last": contexts[-1 if full_refresh else 3],
                               "contexts": contexts, "estimates": estimated_rows(url, DAYS[-1])}
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


def test_a_day_publishes_the_change_of_the_history_tables_not_all_of_it(chains):
    """tier_history and lifecycle_history grow with time; a run dated after every publication
    builds and publishes their change (the rows it adds or alters), so the stretches that ended
    before it are neither copied into the build nor written again (they were, whole, every day);
    a re-run of an earlier date and a full refresh rebuild them whole."""
    before, after = chains["history"]
    for table in before:
        kept = [k for k in before[table] if k in after[table] and before[table][k][1] == after[table][k][1]]
        assert kept, f"{table}: no row stayed the same, the comparison would prove nothing"
        rewritten = [k for k in kept if before[table][k][0] != after[table][k][0]]
        assert not rewritten, f"{table}: {len(rewritten)} of {len(kept)} unchanged rows were written again"
        assert len(kept) < len(after[table])  # and the day did change some
    # day 1 (nothing published), day 2 (failed, then published), day 3, day 2 again (an earlier date)
    assert sorted(chains["incremental_history_changes"][3]) == sorted(HISTORY_TABLES)
    assert not chains["incremental_history_changes"][0] and not chains["incremental_history_changes"][4]
    assert not any(chains["rebuild_history_changes"])


@pytest.mark.parametrize("layer, model, marker", [
    ("marts", "tier_history", "open_stretches"),
    ("marts", "lifecycle_history", "open_stretches"),
    *[("staging", model, "incremental: new batches") for model in (
        "stg_crm__customers", "stg_sales__orders", "stg_sales__order_items", "stg_crm__interactions")],
    # per-customer state: orders valued again by order, purchase days and totals by customer
    ("staging", "int_orders__valued", "and order_id in (select order_id from"),
    ("staging", "int_customers__purchase_days", "where not touched.by_window"),
    ("staging", "int_customers__order_totals", "where customer_id in (select customer_id from"),
    ("staging", "int_customers__btyd_totals", "and customer_id in (select customer_id from"),
])
def test_the_incremental_chain_took_the_incremental_paths(chains, layer, model, marker):
    # otherwise the equality above would compare two rebuilds
    assert marker in compiled(chains["incremental"]["last"], layer, model)
    assert marker not in compiled(chains["rebuild"]["last"], layer, model)


def test_the_chain_decided_again_what_it_must_not_see(chains):
    # the day-2 run after the failed one, and day 2 run again after day 3, each found batches in
    # the staging state that they do not see, and decided the keys they held again
    contexts = chains["incremental"]["contexts"]
    for ctx in (contexts[2], contexts[4]):
        code = compiled(ctx, "staging", "stg_sales__orders")
        assert "incremental: new batches" in code and "batches no longer visible []" not in code


def seeds_loaded(ctx: pipeline.RunContext) -> list[str]:
    results = json.loads((ctx.run_dir / "dbt" / "staging" / "run_results.json").read_text())
    return sorted(r["unique_id"].split(".")[-1] for r in results["results"] if r["unique_id"].startswith("seed."))


def test_seeds_are_loaded_again_only_when_one_changed(chains):
    every = sorted(path.stem for path in (dbt.settings.DBT_PROJECT_DIR / "seeds").glob("*.csv"))
    first, *later, again = chains["incremental"]["contexts"]
    assert seeds_loaded(first) == every
    assert [seeds_loaded(ctx) for ctx in later] == [[]] * len(later)
    assert seeds_loaded(again) == every  # one seed's version changed: loaded again, recorded again
    assert all(seeds_loaded(ctx) == every for ctx in chains["rebuild"]["contexts"])  # full refresh


def test_a_run_context_is_incremental_unless_asked(tmp_path):
    # pipeline.context() gave its try number (1) to full_refresh: every DAG and CLI run rebuilt
    # staging and the history tables from scratch, and the benchmark's "incremental" days too
    ctx = pipeline.context(DAY1, "context-test", tmp_path, try_number=2)
    assert ctx.full_refresh is False and ctx.try_number == 2


def test_the_planner_knows_the_date_a_run_published(chains):
    """A date is new to the statistics when it is published: without an ANALYZE the planner takes
    its slice for about one row (a nested loop of two 100,000-row slices in the run report)."""
    for table, (estimated, actual) in chains["rebuild"]["estimates"].items():
        assert actual > 300 and estimated >= actual / 2, (table, estimated, actual)


def test_a_changed_counting_window_rebuilds_the_per_customer_totals(warehouse_url, tmp_path, monkeypatch):
    """The totals kept per customer count purchase days in the configured windows: a run with
    another window rebuilds them (the window is part of the state's fingerprint) instead of
    keeping counts made with the old one; what does not count in it is kept."""
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    landing = tmp_path / "landing"
    generate.generate(landing, customers=150, days=1, seed=5, start_date=DAY1, progress=False)
    ctx = pipeline.context(DAY1, "windows-test", landing)
    pipeline.run_through(ctx, "dbt_staging")
    touched_only = "where customer_id in (select customer_id from"
    pipeline.run("dbt_staging", ctx)  # nothing new: the totals are kept, nobody computed again
    assert touched_only in compiled(ctx, "staging", "int_customers__order_totals")
    windows = ctx.config.windows.model_copy(update={"frequency_days": 180})
    ctx.config = ctx.config.model_copy(update={"windows": windows})
    pipeline.run("dbt_staging", ctx)
    assert touched_only not in compiled(ctx, "staging", "int_customers__order_totals")
    assert "and customer_id in (select customer_id from" in compiled(ctx, "staging", "int_customers__btyd_totals")
    with warehouse.connect(warehouse_url) as conn:
        counted, expected = conn.execute(
            f"select (select sum(frequency) from {ctx.schemas['intermediate']}.int_customers__order_summary), "
            f"(select count(*) from {ctx.schemas['state']}.int_customers__purchase_days "
            "where purchase_date > %s::date - 180)", [DAY1]).fetchone()
    assert counted == expected > 0


def test_a_run_that_touches_most_of_the_state_rebuilds_it(warehouse_url, tmp_path, monkeypatch):
    """Deleting and computing again most of a per-customer state table costs more than building
    it whole (the 100k bench's 10% day: purchase days 8.7 s by customer, 4.9 s rebuilt): a run
    that touches more than half of it rebuilds it."""
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    landing = tmp_path / "landing"
    generate.generate(landing, customers=150, days=1, seed=7, start_date=DAY1, progress=False)
    pipeline.run_through(pipeline.context(DAY1, "most-of-it-1", landing))
    # the whole snapshot sent again the next day: every order's current version is in its batch
    shutil.copytree(landing / DAY1.isoformat(), landing / DAYS[1].isoformat())
    ctx = pipeline.context(DAYS[1], "most-of-it-2", landing)
    pipeline.run_through(ctx, "dbt_staging")
    for model, touched_only in (("int_orders__valued", "and order_id in (select order_id from"),
                                ("int_customers__purchase_days", "where not touched.by_window"),
                                ("int_customers__order_totals", "where customer_id in (select customer_id from")):
        assert touched_only not in compiled(ctx, "staging", model), f"{model} was computed again by key"
    assert "incremental: new batches" in compiled(ctx, "staging", "stg_sales__orders")  # staging itself was not


def test_a_run_writes_a_touched_customers_purchase_days_from_its_first_changed_day_on(warehouse_url, tmp_path,
                                                                                        monkeypatch):
    """A customer's new order changes its purchase days from that order's date on (a day's
    totals and the next day's days_since_previous): the run computes those again and keeps the
    customer's earlier days as they are, unwritten (at 1M customers the 1% day wrote 3.26M purchase
    days again for 124k customers); the state equals the days computed from scratch."""
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    landing = tmp_path / "landing"
    generate.generate(landing, customers=150, days=2, seed=11, start_date=DAY1, progress=False)
    pipeline.run_through(pipeline.context(DAY1, "days-1", landing))
    ctx = pipeline.context(DAYS[1], "days-2", landing)
    state = ctx.schemas["state"]
    days = (state, "int_customers__purchase_days", ("customer_id", "purchase_date"))
    with warehouse.connect(warehouse_url) as conn:
        before = row_versions(conn, *days)
    pipeline.run_through(ctx, "dbt_staging")
    with warehouse.connect(warehouse_url) as conn:
        after = row_versions(conn, *days)
        scratch = {(r[0], r[1]): r[2] for r in conn.execute(
            f"select customer_id, purchase_date, f::text from (select customer_id, order_date as purchase_date, "
            "count(*) as orders, sum(net_revenue) as net_revenue, sum(margin) as margin, order_date - lag(order_date) "
            "over (partition by customer_id order by order_date) as days_since_previous "
            f"from {state}.int_orders__valued where is_purchase group by customer_id, order_date) as f")}
    assert {k: r for k, (_x, r) in after.items()} == scratch
    # each customer's first day whose row is new, gone or different
    first_changed: dict = {}
    for key in set(before) | set(after):
        if before.get(key, (None, None))[1] != after.get(key, (None, None))[1]:
            first_changed[key[0]] = min(key[1], first_changed.get(key[0], key[1]))
    earlier = [k for k in after if k[0] in first_changed and k[1] < first_changed[k[0]]]
    assert earlier, "the day must change customers with earlier purchase days, or this proves nothing"
    rewritten = [k for k in earlier if after[k][0] != before[k][0]]
    assert not rewritten, f"{len(rewritten)} of {len(earlier)} unchanged earlier days were written again"
    assert "where not touched.by_window" in compiled(ctx, "staging", "int_customers__purchase_days")
