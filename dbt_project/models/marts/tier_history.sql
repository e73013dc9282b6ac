-- depends_on: {{ source('published', 'customer_tier') }}, {{ source('published', 'tier_history') }}, {{ source('published', 'publication_log') }}
-- Tier history as a type-2 slowly changing dimension: one row per customer and uninterrupted
-- stretch of one tier. A run dated after every publication builds the published history's
-- change with this run's tiers: each stretch that ends today, closed, and each new one (a day
-- costs the customers that changed, not the history so far; publish applies it by key);
-- otherwise (first run, re-run of a published date, full refresh) the whole history, rebuilt
-- from every published tier snapshot plus this run's tiers. Both publish the same rows.
{{ config(post_hook="{{ history_record_build('tier_history') }}") }}
{%- set extend = history_extends_publication('tier_history') %}
with

current_run as (
    select
        customer_id,
        as_of_date,
        tier,
        tier_reason,
        is_overridden,
        tier_spec_version
    from {{ ref('customer_tier') }}
),
{%- if extend %}

    history as (
        select * from {{ adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='tier_history') }}
    ),

    open_stretches as (
        select
            history.*,
            current_run.customer_id is not null and not coalesce(current_run.tier = history.tier, false) as ends_today
        from history
        left join current_run on history.customer_id = current_run.customer_id
        where history.is_current
    ),

    final as (
        select
            customer_id,
            tier,
            valid_from,
            {{ as_of() }} as valid_to,
            false as is_current,
            previous_tier,
            tier_reason,
            is_overridden,
            tier_spec_version
        from open_stretches
        where ends_today
        union all
        select
            current_run.customer_id,
            current_run.tier,
            current_run.as_of_date as valid_from,
            null::date as valid_to,
            true as is_current,
            open_stretches.tier as previous_tier,
            current_run.tier_reason,
            current_run.is_overridden,
            current_run.tier_spec_version
        from current_run
        left join open_stretches on current_run.customer_id = open_stretches.customer_id
        where open_stretches.customer_id is null or open_stretches.ends_today
    )
{%- else %}

    snapshots as (
        select * from current_run
        union all
        {{ published_snapshots('customer_tier', [
            ('customer_id', 'text'), ('as_of_date', 'date'), ('tier', 'text'), ('tier_reason', 'text'),
            ('is_overridden', 'boolean'), ('tier_spec_version', 'text')]) }}
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
{%- endif %}

select * from final
