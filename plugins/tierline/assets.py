"""Names of the published tables and their Airflow Asset URIs (no heavy imports: DAG files use it)."""

# Snapshot tables keep one slice per as_of_date; history tables are replaced whole. A table's key
# is its model's primary_key constraint (dbt_project/models/marts/*.yml), which publish reads.
SNAPSHOT_TABLES = ("customer_value", "customer_tier", "customer_lifecycle", "clv_model_fit", "customer_events",
                   "tier_migration_matrix", "early_warning", "customer_actions", "account_manager_scorecard",
                   "kpi_daily")
HISTORY_TABLES = ("tier_history", "lifecycle_history")
PUBLISHED_TABLES = SNAPSHOT_TABLES + HISTORY_TABLES


def asset_uri(table: str, schema: str) -> str:
    """``schema`` is the configured ``publish.schema`` (``config.published_schema()``)."""
    # The postgres provider's URI shape (host/database/schema/table); the host is a logical name.
    return f"postgres://warehouse:5432/tierline/{schema}/{table}"


def published_event(as_of_date, run_id: str) -> dict:
    """The ``extra`` of a published table's Asset event: which date (and run) it published."""
    return {"as_of_date": as_of_date.isoformat(), "run_id": run_id}


def published_date(events) -> str | None:
    """The date the newest of the triggering Asset events published (``None`` without events:
    a manual run)."""
    newest = max(events, key=lambda event: event.timestamp, default=None)
    return (newest.extra or {}).get("as_of_date") if newest is not None else None

