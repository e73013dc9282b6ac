"""Names of the published tables and their Airflow Asset URIs (no heavy imports: DAG files use it)."""

# Snapshot tables keep one slice per as_of_date (their key); history tables are replaced whole.
SNAPSHOT_KEYS = {
    "customer_value": ("customer_id", "as_of_date"),
    "customer_tier": ("customer_id", "as_of_date"),
    "customer_lifecycle": ("customer_id", "as_of_date"),
    "clv_model_fit": ("model", "as_of_date"),
    "customer_events": ("customer_id", "as_of_date", "event_type"),
    "tier_migration_matrix": ("as_of_date", "from_tier", "to_tier"),
    "early_warning": ("customer_id", "as_of_date", "warning_type"),
    "customer_actions": ("customer_id", "as_of_date", "action_type"),
    "account_manager_scorecard": ("account_manager_id", "as_of_date", "tier"),
    "kpi_daily": ("as_of_date", "tier"),
}
SNAPSHOT_TABLES = tuple(SNAPSHOT_KEYS)
HISTORY_TABLES = ("tier_history", "lifecycle_history")
PUBLISHED_TABLES = SNAPSHOT_TABLES + HISTORY_TABLES


def asset_uri(table: str, schema: str = "analytics") -> str:
    # The postgres provider's URI shape (host/database/schema/table); the host is a logical name.
    return f"postgres://warehouse:5432/tierline/{schema}/{table}"
