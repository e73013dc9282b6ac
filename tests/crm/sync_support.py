"""Helpers for the sync and pull tests: published tables in their contract shape, rows, CRM reads."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import yaml

from tierline import warehouse
from tierline.crm import config as crm_config

MODULE = "Accounts"
ID_FIELD = "Tierline_Customer_Id"
AS_OF = date(2026, 11, 1)
SOURCE_TABLES = ("customer_tier", "customer_lifecycle", "customer_value")


def create_published_tables(url: str, schema: str = "analytics") -> None:
    """The three published tables with every column and type of ``_marts.yml`` (the dbt contract)."""
    models = {m["name"]: m for m in yaml.safe_load(crm_config.MARTS_YML.read_text(encoding="utf-8"))["models"]}
    with warehouse.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema if not exists {schema}")
        for table in SOURCE_TABLES:
            columns = ", ".join(f"{c['name']} {c['data_type']}" for c in models[table]["columns"])
            conn.execute(f"create table {schema}.{table} ({columns}, primary key (customer_id, as_of_date))")


def customer(number: int, **values) -> dict:
    """One customer's published values; the defaults are a regular, mature customer."""
    return {
        "customer_id": f"C{number:05d}",
        "tier": "regular",
        "tier_reason": f"regular: 3 orders in 365 days (customer {number})",
        "lifecycle_stage": "mature",
        "churn_risk": 0.1234,
        "predicted_clv": 1520.49,
        "account_manager_id": "M01",
        "tier_spec_version": "2026.11.1",
        "crm_record_id": f"5725767{number:012d}",  # the CRM's own id of the account the customer came from
        **values,
    }


def publish(url: str, rows: list[dict], as_of: date = AS_OF) -> None:
    """Replace the ``as_of`` slice of the published tables with ``rows``, as publish.py would."""
    with warehouse.connect(url) as conn, conn.transaction():
        for table in SOURCE_TABLES:
            conn.execute(f"delete from analytics.{table} where as_of_date = %s", (as_of,))
        for r in rows:
            conn.execute(
                "insert into analytics.customer_tier (customer_id, as_of_date, tier, tier_reason, account_manager_id, "
                "tier_spec_version) values (%s, %s, %s, %s, %s, %s)",
                (r["customer_id"], as_of, r["tier"], r["tier_reason"], r["account_manager_id"],
                 r["tier_spec_version"]))
            conn.execute(
                "insert into analytics.customer_lifecycle (customer_id, as_of_date, lifecycle_stage, churn_risk) "
                "values (%s, %s, %s, %s)", (r["customer_id"], as_of, r["lifecycle_stage"], r["churn_risk"]))
            conn.execute(
                "insert into analytics.customer_value (customer_id, as_of_date, predicted_clv, account_manager_id, "
                "crm_record_id) values (%s, %s, %s, %s, %s)",
                (r["customer_id"], as_of, r["predicted_clv"], r["account_manager_id"], r.get("crm_record_id")))


UPSERT = {"mode": "upsert", "match": {"crm_field": ID_FIELD, "column": "customer_id"},
          "create_fields": {"Account_Name": "Tierline customer {customer_id}"}}


def settings_with(tmp_path: Path, fields: dict | None = None, push: dict | None = None, base: Path | None = None,
                  **top) -> crm_config.Settings:
    """config/crm.yml (or ``base``) with some push fields changed (merged per field), push keys or top-level
    keys replaced."""
    data = yaml.safe_load((base or crm_config.config_path()).read_text(encoding="utf-8"))
    for name, changes in (fields or {}).items():
        data["push"]["fields"][name] = {**data["push"]["fields"].get(name, {}), **changes}
    data["push"].update(push or {})
    data.update(top)
    path = tmp_path / "crm.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return crm_config.load(path)


def crm_by_id(crm) -> dict[str, dict]:
    return {r[ID_FIELD]: r for r in crm.records(MODULE) if r.get(ID_FIELD)}


def query(url: str, statement: str, *params) -> list[tuple]:
    with warehouse.connect(url) as conn:
        return conn.execute(statement, params).fetchall()


def wait_for_lock_release(url: str, timeout: float = 10.0) -> None:
    """The killed process's database session (and its advisory lock) ends when the server notices.
    Only this database's locks count: other tests' runs on the shared server hold their own."""
    deadline = time.monotonic() + timeout
    while query(url, "select count(*) from pg_locks where locktype = 'advisory' and database = "
                     "(select oid from pg_database where datname = current_database())") != [(0,)]:
        assert time.monotonic() < deadline, "the killed sync's advisory lock was never released"
        time.sleep(0.05)

