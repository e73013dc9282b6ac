-- depends_on: {{ source('published', 'customer_lifecycle') }}
-- The published customer_lifecycle evaluations the events and the KPIs compare this run with:
-- the latest publication before the run's date and the latest on or before the start of the KPI
-- churn period (two slices, not every snapshot so far). Ephemeral, so dbt unit tests can stand
-- in for the published table; empty on the first run.
{{ config(materialized='ephemeral') }}
with

published as (
    {{ published_snapshots('customer_lifecycle', published_lifecycle_columns(), compared_only=true) }}
),

final as (
    select * from published
)

select * from final
