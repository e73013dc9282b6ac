-- Every published customer_lifecycle evaluation except the run date's own slice (ephemeral, so
-- dbt unit tests can stand in for the published table; empty on the first run).
{{ config(materialized='ephemeral') }}
with

published as (
    {{ published_snapshots('customer_lifecycle', [
        ('customer_id', 'text'),
        ('as_of_date', 'date'),
        ('lifecycle_stage', 'text'),
        ('churn_risk', 'numeric'),
        ('churn_risk_reason', 'text'),
    ]) }}
),

final as (
    select * from published
)

select * from final
