"""Names of the published tables and their Airflow Asset URIs (no heavy imports: DAG files use it)."""

SNAPSHOT_TABLES = ("customer_value", "customer_tier", "customer_lifecycle")
HISTORY_TABLES = ("tier_history",)
PUBLISHED_TABLES = SNAPSHOT_TABLES + HISTORY_TABLES


def asset_uri(table: str, schema: str = "analytics") -> str:
    # The postgres provider's URI shape (host/database/schema/table); the host is a logical name.
    return f"postgres://warehouse:5432/tierline/{schema}/{table}"
