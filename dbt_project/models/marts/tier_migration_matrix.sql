-- Tier migration matrix (客户迁移矩阵) of this run: customers and their revenue by tier at the
-- previous published evaluation (or 'new') and tier now. Every combination of the ladder is a
-- row, zeros included, so the cells of one as_of_date sum to the customer count.
{%- set ladder = var('tier_spec')['ladder'] %}
with

tiers as (
    select
        customer_id,
        tier
    from {{ ref('customer_tier') }}
),

value as (
    select
        customer_id,
        monetary
    from {{ ref('customer_value') }}
),

previous_tiers as (
    select distinct on (customer_id)
        customer_id,
        tier as previous_tier
    from {{ ref('int_published__customer_tier_snapshots') }}
    where as_of_date < {{ as_of() }}
    order by customer_id asc, as_of_date desc
),

ladder as (
    select *
    from (
        values
        {%- for tier in ladder %}
            ({{ sql_literal(tier["code"]) }}, {{ loop.index }}){% if not loop.last %},{% endif %}
        {%- endfor %}
    ) as ladder_tiers (tier, tier_rank)
),

grid as (
    select
        from_states.tier as from_tier,
        to_states.tier as to_tier
    from (
        select tier from ladder
        union all
        select 'new' as tier
    ) as from_states
    cross join ladder as to_states
),

moves as (
    select
        coalesce(previous_tiers.previous_tier, 'new') as from_tier,
        tiers.tier as to_tier,
        coalesce(value.monetary, 0) as monetary
    from tiers
    left join previous_tiers on tiers.customer_id = previous_tiers.customer_id
    left join value on tiers.customer_id = value.customer_id
),

counted as (
    select
        from_tier,
        to_tier,
        count(*) as customers,
        sum(monetary) as monetary
    from moves
    group by from_tier, to_tier
),

cells as (
    -- a previous tier no longer in the ladder still gets its row
    select
        coalesce(grid.from_tier, counted.from_tier) as from_tier,
        coalesce(grid.to_tier, counted.to_tier) as to_tier,
        coalesce(counted.customers, 0) as customers,
        coalesce(counted.monetary, 0) as monetary
    from grid
    full outer join counted on grid.from_tier = counted.from_tier and grid.to_tier = counted.to_tier
),

final as (
    select
        {{ as_of() }} as as_of_date,
        cells.from_tier,
        cells.to_tier,
        from_ladder.tier_rank as from_tier_rank,
        to_ladder.tier_rank as to_tier_rank,
        case
            when cells.from_tier = 'new' then 'new'
            when from_ladder.tier_rank is null then 'lateral'
            when to_ladder.tier_rank < from_ladder.tier_rank then 'up'
            when to_ladder.tier_rank > from_ladder.tier_rank then 'down'
            else 'same'
        end as direction,
        cells.customers::bigint as customers,
        round(
            cells.customers::numeric / nullif(sum(cells.customers) over (partition by cells.from_tier), 0), 4
        ) as share_of_from_tier,
        cells.monetary::numeric(18, 2) as monetary
    from cells
    left join ladder as from_ladder on cells.from_tier = from_ladder.tier
    left join ladder as to_ladder on cells.to_tier = to_ladder.tier
)

select * from final
