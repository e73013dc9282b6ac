-- KPIs per as_of_date, for all customers ('all') and per tier: tier mix, churn rate, repeat rate,
-- complaint rate, satisfaction (CSAT, NPS), the revenue share of the top tiers and the revenue
-- concentration on the top customers. Definitions are in kpi_daily.yml.
{%- set ladder = var('tier_spec')['ladder'] %}
{%- set kpi = actions_config()['kpi'] %}
{%- set period = kpi['churn_period_days'] %}
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
        frequency,
        monetary,
        complaints_365d,
        csat,
        nps_score
    from {{ ref('customer_value') }}
),

stages as (
    select
        customer_id,
        lifecycle_stage
    from {{ ref('customer_lifecycle') }}
),

surveys as (
    select
        customer_id,
        nps
    from {{ ref('stg_crm__surveys') }}
    where answered_date > {{ as_of() }} - 365 and answered_date <= {{ as_of() }} and nps is not null
),

period_start as (
    -- each customer's latest published evaluation on or before the start of the churn period;
    -- customer_tier and customer_lifecycle are published together, so both have that date
    select distinct on (customer_id)
        customer_id,
        as_of_date,
        lifecycle_stage as start_stage
    from {{ ref('int_published__customer_lifecycle_snapshots') }}
    where as_of_date <= {{ as_of() }} - {{ period }}
    order by customer_id asc, as_of_date desc
),

start_tiers as (
    select
        period_start.customer_id,
        -- still a customer then: bought and not yet churned (dormant ones included)
        period_start.start_stage not in ('prospect', 'churned') as was_customer,
        published_tiers.tier as start_tier
    from period_start
    left join {{ ref('int_published__customer_tier_snapshots') }} as published_tiers
        on period_start.customer_id = published_tiers.customer_id and period_start.as_of_date = published_tiers.as_of_date
),

ladder as (
    select *
    from (
        values
        ('all', null::integer),
        {%- for tier in ladder %}
            ({{ sql_literal(tier["code"]) }}, {{ loop.index }}){% if not loop.last %},{% endif %}
        {%- endfor %}
    ) as ladder_tiers (tier, tier_rank)
),

customer_level as (
    select
        tiers.customer_id,
        tiers.tier,
        coalesce(value.frequency, 0) as frequency,
        coalesce(value.monetary, 0) as monetary,
        coalesce(value.complaints_365d, 0) as complaints_365d,
        value.csat,
        value.nps_score,
        tiers.tier in ({% for code in kpi['top_tiers'] %}{{ sql_literal(code) }}{% if not loop.last %}, {% endif %}{% endfor %})
            as is_top_tier,
        coalesce(start_tiers.was_customer, false) as was_customer,
        stages.lifecycle_stage = 'churned' as has_churned,
        start_tiers.start_tier,
        row_number() over (partition by tiers.tier order by coalesce(value.monetary, 0) desc, tiers.customer_id)
            as monetary_rank_in_tier,
        row_number() over (order by coalesce(value.monetary, 0) desc, tiers.customer_id) as monetary_rank,
        count(*) filter (where value.monetary > 0) over (partition by tiers.tier) as revenue_customers_in_tier,
        count(*) filter (where value.monetary > 0) over () as revenue_customers
    from tiers
    left join value on tiers.customer_id = value.customer_id
    left join stages on tiers.customer_id = stages.customer_id
    left join start_tiers on tiers.customer_id = start_tiers.customer_id
),

stacked as (
    -- every customer once under its tier and once under 'all'; the top customers by revenue are
    -- the first ceil(top_customer_share x customers with revenue) of the group
    select
        tier as kpi_tier,
        frequency,
        monetary,
        complaints_365d,
        csat,
        nps_score,
        is_top_tier,
        monetary > 0 and monetary_rank_in_tier <= ceil({{ sql_number(kpi['top_customer_share']) }} * revenue_customers_in_tier)
            as is_top_customer
    from customer_level
    union all
    select
        'all' as kpi_tier,
        frequency,
        monetary,
        complaints_365d,
        csat,
        nps_score,
        is_top_tier,
        monetary > 0 and monetary_rank <= ceil({{ sql_number(kpi['top_customer_share']) }} * revenue_customers) as is_top_customer
    from customer_level
),

churn_base as (
    -- per tier by the tier at the start of the period
    select
        start_tier as kpi_tier,
        has_churned
    from customer_level
    where was_customer and start_tier is not null
    union all
    select
        'all' as kpi_tier,
        has_churned
    from customer_level
    where was_customer
),

nps_answers as (
    select
        tiers.tier as kpi_tier,
        surveys.nps
    from surveys
    inner join tiers on surveys.customer_id = tiers.customer_id
    union all
    select
        'all' as kpi_tier,
        surveys.nps
    from surveys
    inner join tiers on surveys.customer_id = tiers.customer_id
),

by_tier as (
    select
        kpi_tier,
        count(*) as customers,
        count(*) filter (where frequency > 0) as buyers,
        count(*) filter (where frequency >= 2) as repeat_buyers,
        sum(monetary) as monetary,
        sum(monetary) filter (where is_top_tier) as top_tiers_monetary,
        sum(monetary) filter (where is_top_customer) as top_customers_monetary,
        count(*) filter (where complaints_365d > 0) as customers_with_complaints,
        sum(complaints_365d) as complaints_365d,
        avg(csat) as average_csat,
        avg(nps_score) as average_nps_answer
    from stacked
    group by kpi_tier
),

churn as (
    select
        kpi_tier,
        count(*) as churn_base_customers,
        count(*) filter (where has_churned) as churned_customers
    from churn_base
    group by kpi_tier
),

nps as (
    select
        kpi_tier,
        count(*) as nps_responses,
        100.0 * (count(*) filter (where nps >= 9) - count(*) filter (where nps <= 6)) / count(*) as nps
    from nps_answers
    group by kpi_tier
),

final as (
    select
        {{ as_of() }} as as_of_date,
        ladder.tier,
        ladder.tier_rank,
        coalesce(by_tier.customers, 0)::bigint as customers,
        round(
            coalesce(by_tier.customers, 0)::numeric
            / nullif(sum(by_tier.customers) filter (where ladder.tier = 'all') over (), 0), 4
        ) as customer_share,
        coalesce(by_tier.buyers, 0)::bigint as buyers,
        coalesce(by_tier.monetary, 0)::numeric(18, 2) as monetary,
        round(
            coalesce(by_tier.monetary, 0) / nullif(sum(by_tier.monetary) filter (where ladder.tier = 'all') over (), 0), 4
        ) as monetary_share,
        {{ as_of() }} - {{ period }} as churn_period_start,
        coalesce(churn.churn_base_customers, 0)::bigint as churn_base_customers,
        coalesce(churn.churned_customers, 0)::bigint as churned_customers,
        round(churn.churned_customers::numeric / nullif(churn.churn_base_customers, 0), 4) as churn_rate,
        round(by_tier.repeat_buyers::numeric / nullif(by_tier.buyers, 0), 4) as repeat_rate,
        round(by_tier.customers_with_complaints::numeric / nullif(by_tier.customers, 0), 4) as complaint_rate,
        coalesce(by_tier.complaints_365d, 0)::bigint as complaints_365d,
        round(by_tier.average_csat, 2)::numeric(4, 2) as average_csat,
        round(by_tier.average_nps_answer, 2)::numeric(4, 2) as average_nps_answer,
        round(nps.nps, 1)::numeric(4, 1) as nps,
        coalesce(nps.nps_responses, 0)::bigint as nps_responses,
        case
            when ladder.tier = 'all'
                then round(coalesce(by_tier.top_tiers_monetary, 0) / nullif(by_tier.monetary, 0), 4)
        end as top_tiers_monetary_share,
        round(coalesce(by_tier.top_customers_monetary, 0) / nullif(by_tier.monetary, 0), 4) as top_customers_monetary_share
    from ladder
    left join by_tier on ladder.tier = by_tier.kpi_tier
    left join churn on ladder.tier = churn.kpi_tier
    left join nps on ladder.tier = nps.kpi_tier
)

select * from final
