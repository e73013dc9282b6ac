-- Every published customer_tier evaluation except the run date's own slice: the memory the
-- events, the migration matrix and the KPIs compare this run with. Ephemeral, so dbt unit tests
-- can stand in for the published table; empty on the first run.
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
    ]) }}
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
