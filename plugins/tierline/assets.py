"""Names of the published tables and their Airflow Asset URIs (no heavy imports: DAG files use it)."""

from __future__ import annotations

import socket
from urllib.parse import parse_qs, unquote, urlsplit

from tierline import settings

# Snapshot tables keep one slice per as_of_date; history tables are replaced whole. A table's key
# is its model's primary_key constraint (dbt_project/models/marts/*.yml), which publish reads.
SNAPSHOT_TABLES = ("customer_value", "customer_tier", "customer_lifecycle", "clv_model_fit", "customer_events",
                   "tier_migration_matrix", "early_warning", "customer_actions", "account_manager_scorecard",
                   "kpi_daily")
HISTORY_TABLES = ("tier_history", "lifecycle_history")
# Current tables hold the latest published date's state, one row per customer: replaced whole by a
# run of that date or a later one, left as they are by a re-run of an earlier date.
CURRENT_TABLES = ("dim_customer", "customer_contact")
# Published to the PII schema beside the published one (pii_schema), which only the PII role reads.
PII_TABLES = ("customer_contact",)
PUBLISHED_TABLES = SNAPSHOT_TABLES + HISTORY_TABLES + tuple(t for t in CURRENT_TABLES if t not in PII_TABLES)
ALL_PUBLISHED_TABLES = PUBLISHED_TABLES + PII_TABLES  # everything publish copies from the build
# Row-level security of each table publish copies (tierline.access): filtered on the table's own
# (branch column, account manager column); on its customer_id, to the customers the reader sees in
# dim_customer; or None, readable as a whole (aggregates). A new published table must be listed.
CUSTOMER = "customer_id"
ROW_FILTERS = {
    "dim_customer": ("branch_code", "account_manager_id"),
    "customer_contact": ("branch_code", "account_manager_id"),
    "account_manager_scorecard": ("manager_branch_code", "account_manager_id"),
    "customer_value": CUSTOMER, "customer_tier": CUSTOMER, "customer_lifecycle": CUSTOMER,
    "customer_events": CUSTOMER, "early_warning": CUSTOMER, "customer_actions": CUSTOMER,
    "tier_history": CUSTOMER, "lifecycle_history": CUSTOMER,
    "clv_model_fit": None, "tier_migration_matrix": None, "kpi_daily": None,
}
# Columns a release removed from a published table on purpose: publish drops them (a migration),
# where any other column missing from a build is refused.
RETIRED_COLUMNS = {"customer_actions": ("birthday_md",)}  # issue 12: the birthday is dim_customer's


def pii_schema(schema: str) -> str:
    """The schema of the unmasked contact data, beside the published schema ``schema``."""
    return f"{schema}_pii"


def published_schema(table: str, schema: str) -> str:
    """Where ``table`` is published when the published schema is ``schema``."""
    return pii_schema(schema) if table in PII_TABLES else schema


def warehouse_location(warehouse_url: str | None = None) -> tuple[str, int, str]:
    """(host, port, database) of the warehouse as lineage names it: the URL's host, or this
    machine's name for a unix socket (the embedded server, a local socket). Parses the URL only;
    the configured one (``settings.configured_warehouse_url``) when none is given."""
    url = warehouse_url or settings.configured_warehouse_url()
    if url is None:
        return socket.gethostname(), 5432, settings.EMBEDDED_DATABASE
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", [""])[0]
    if not host or host.startswith("/"):
        host = socket.gethostname()
    port = parts.port or int(query.get("port", ["5432"])[0])
    database = parts.path.lstrip("/") or query.get("dbname", [""])[0] or parts.username or "postgres"
    return host, port, unquote(database)


def asset_uri(table: str, schema: str, warehouse_url: str | None = None) -> str:
    """The postgres provider's Asset URI shape, ``postgres://host:port/database/schema/table``,
    naming the real warehouse; ``schema`` is the configured ``publish.schema``
    (``config.published_schema()``). OpenLineage turns it into the dataset ``postgres://host:port``
    / ``database.schema.table``, the namespace the dbt events use (tierline.lineage)."""
    host, port, database = warehouse_location(warehouse_url)
    return f"postgres://{host}:{port}/{database}/{schema}/{table}"


def published_event(as_of_date, run_id: str) -> dict:
    """The ``extra`` of a published table's Asset event: which date (and run) it published."""
    return {"as_of_date": as_of_date.isoformat(), "run_id": run_id}


def published_date(events) -> str | None:
    """The date the newest of the triggering Asset events published (``None`` without events:
    a manual run)."""
    newest = max(events, key=lambda event: event.timestamp, default=None)
    return (newest.extra or {}).get("as_of_date") if newest is not None else None

