-- depends_on: {{ source('published', 'customer_tier') }}
-- The published customer_tier evaluations the events, the migration matrix and the KPIs compare
-- this run with: the latest publication before the run's date and the latest on or before the
-- start of the KPI churn period (two slices, not every snapshot so far). Ephemeral, so dbt unit
-- tests can stand in for the published table; empty on the first run.
{{ config(materialized='ephemeral') }}
with

published as (
    {{ published_snapshots('customer_tier', [
        ('customer_id', 'text'),
        ('as_of_date', 'date'),
        ('tier', 'text'),
        ('rule_tier', 'text'),
        ('decided_by', 'text'),
        ('evaluations_below', 'integer'),
        ('is_overridden', 'boolean'),
        ('score_percentile', 'numeric'),
        ('tier_spec_version', 'text'),
        ('tier_spec_hash', 'text'),
    ], compared_only=true) }}
),

final as (
    select
        customer_id,
        as_of_date,
        tier,
        rule_tier,
        -- rows published before hysteresis existed were decided by the rules or an override
        coalesce(decided_by, case when is_overridden then 'override' else 'rule' end) as decided_by,
        coalesce(evaluations_below, 0) as evaluations_below,
        is_overridden,
        score_percentile,
        tier_spec_version,
        tier_spec_hash
    from published
)

select * from final
