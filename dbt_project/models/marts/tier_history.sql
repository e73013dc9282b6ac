-- Tier history as a type-2 slowly changing dimension: one row per customer and uninterrupted
-- stretch of one tier, rebuilt from every published tier snapshot plus this run's tiers.
{%- set published = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='customer_tier') %}
with

snapshots as (
    select
        customer_id,
        as_of_date,
        tier,
        tier_reason,
        is_overridden,
        tier_spec_version
    from {{ ref('customer_tier') }}
    {%- if published is not none %}
        union all
        select
            customer_id,
            as_of_date,
            tier,
            tier_reason,
            is_overridden,
            tier_spec_version
        from {{ published }}
        where as_of_date <> {{ as_of() }}
    {%- endif %}
),

islands as (
    {{ scd2_islands('snapshots', 'tier') }}
),

stretches as (
    select
        customer_id,
        island,
        tier,
        min(as_of_date) as valid_from,
        (array_agg(tier_reason order by as_of_date))[1] as tier_reason,
        (array_agg(is_overridden order by as_of_date))[1] as is_overridden,
        (array_agg(tier_spec_version order by as_of_date))[1] as tier_spec_version
    from islands
    group by customer_id, island, tier
),

final as (
    select
        customer_id,
        tier,
        valid_from,
        lead(valid_from) over (partition by customer_id order by valid_from) as valid_to,
        lead(valid_from) over (partition by customer_id order by valid_from) is null as is_current,
        lag(tier) over (partition by customer_id order by valid_from) as previous_tier,
        tier_reason,
        is_overridden,
        tier_spec_version
    from stretches
)

select * from final
