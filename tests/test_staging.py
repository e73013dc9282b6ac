"""dbt staging against real PostgreSQL: cleaning and upsert semantics of the extract contract."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from tierline import batches, config, dbt, warehouse
from tierline.pipeline import RunContext, run_folder

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
HEADER = "customer_id,customer_name,customer_type,phone,email,created_at,updated_at\n"


def build_staging(url: str, as_of: date, tmp_path, run_id: str) -> str:
    """Build the staging layer for ``as_of``; returns the staging (state) schema."""
    cfg = config.load()
    # the run that loaded the date (land_and_load's) sees its own pending batch
    ctx = RunContext(as_of, run_id, tmp_path, url, cfg, run_folder(as_of, f"staging-{tmp_path.name}"))
    dbt.build("staging", warehouse_url=url, dbt_vars=ctx.dbt_vars(), run_dir=ctx.run_dir)
    return ctx.schemas["state"]


def test_staging_cleans_phones_names_and_emails_and_keeps_the_newest_version(tmp_path, warehouse_url, land_and_load):
    land_and_load({"crm_customers.csv": HEADER + (
        "C1, ZHANG\u3000San ,individual,+86 138-0013-8000, Foo@Bar.COM ,2025-01-01,2025-01-01\n"
        "C2,李四,individual,８６１３８００１３８００１,NULL,2025-01-01,2025-01-01\n"
        "C3,Ｗａｎｇ  Wu,enterprise,010-12345678,,2025-01-01,2025-01-01\n"
        "C4,赵六,individual,0086 139 0000 0000,a@b.cn,2025-01-01,2025-06-01\n"
    )}, DAY1)
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        batches.promote(conn, run_id=land_and_load.run_id, as_of=DAY1)  # as the run's publish step does
    land_and_load({"crm_customers.csv": HEADER + (
        # a newer version of C1 wins; an older version of C4 re-sent later does not
        "C1,Zhang San,enterprise,13800138000,zhang@example.com,2025-01-01,2026-11-02 09:00:00\n"
        "C4,赵六 (old),individual,,,2025-01-01,2025-03-01\n"
    )}, DAY2)

    staging = build_staging(warehouse_url, DAY1, tmp_path, land_and_load.run_id)
    with warehouse.connect(warehouse_url) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "select customer_id, customer_name, customer_type, phone_e164, has_unparsed_phone, email "
            f"from {staging}.stg_crm__customers")}
    assert rows == {
        "C1": ("ZHANG San", "individual", "+8613800138000", False, "foo@bar.com"),
        "C2": ("李四", "individual", "+8613800138001", False, None),
        "C3": ("Wang Wu", "enterprise", None, True, None),
        "C4": ("赵六", "individual", "+8613900000000", False, "a@b.cn"),
    }

    staging = build_staging(warehouse_url, DAY2, tmp_path, land_and_load.run_id)
    with warehouse.connect(warehouse_url) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            f"select customer_id, customer_name, customer_type, email from {staging}.stg_crm__customers")}
    assert rows["C1"] == ("Zhang San", "enterprise", "zhang@example.com")
    assert rows["C4"] == ("赵六", "individual", "a@b.cn")


def test_every_staging_table_enforces_its_key_with_a_unique_index(tmp_path, warehouse_url, land_and_load,
                                                                   staging_keys):
    """The `unique` tests of staging keys are gone (they scanned whole tables every run): the
    state table's unique index on the model's unique_key is what holds the key."""
    land_and_load({"crm_customers.csv": HEADER + "C1,Zhang San,individual,,,2025-01-01,2025-01-01\n"}, DAY1)
    staging = build_staging(warehouse_url, DAY1, tmp_path, land_and_load.run_id)
    with warehouse.connect(warehouse_url) as conn:
        indexed = {table: columns for table, columns in conn.execute(
            "select t.relname, array_agg(a.attname order by k.n) from pg_index i "
            "join pg_class t on t.oid = i.indrelid join pg_namespace s on s.oid = t.relnamespace "
            "cross join lateral unnest(i.indkey) with ordinality as k (attnum, n) "
            "join pg_attribute a on a.attrelid = t.oid and a.attnum = k.attnum "
            "where s.nspname = %s and i.indisunique group by t.relname, i.indexrelid", [staging])}
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"insert into {staging}.stg_crm__customers select * from {staging}.stg_crm__customers")
    assert len(staging_keys) == 10 and {table: indexed.get(table) for table in staging_keys} == staging_keys
    # the per-customer state's order key too (its `unique` test read every valued order each run)
    assert indexed.get("int_orders__valued") == ["order_id"]
