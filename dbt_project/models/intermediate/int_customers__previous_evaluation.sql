-- Each customer's latest published evaluation before the run date: the memory that hysteresis,
-- "previous tier/stage" and "stage entered on" need. Empty on the first run (nothing published).
{%- set tiers = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='customer_tier') %}
{%- set stages = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='customer_lifecycle') %}
with

{% if tiers is not none and stages is not none -%}
previous_tier as (
    select distinct on (customer_id)
        customer_id,
        tier,
        policy_tier,
        evaluations_below
    from {{ tiers }}
    where as_of_date < {{ as_of() }}
    order by customer_id asc, as_of_date desc
),

previous_stage as (
    select distinct on (customer_id)
        customer_id,
        lifecycle_stage,
        stage_entered_date
    from {{ stages }}
    where as_of_date < {{ as_of() }}
    order by customer_id asc, as_of_date desc
),

final as (
    select
        coalesce(previous_tier.customer_id, previous_stage.customer_id) as customer_id,
        previous_tier.tier as previous_tier,
        previous_tier.policy_tier as previous_policy_tier,
        previous_tier.evaluations_below as previous_evaluations_below,
        previous_stage.lifecycle_stage as previous_stage,
        previous_stage.stage_entered_date as previous_stage_entered_date
    from previous_tier
    full outer join previous_stage on previous_tier.customer_id = previous_stage.customer_id
)
{%- else -%}
final as (
    select
        null::text as customer_id,
        null::text as previous_tier,
        null::text as previous_policy_tier,
        null::integer as previous_evaluations_below,
        null::text as previous_stage,
        null::date as previous_stage_entered_date
    where false
)
{%- endif %}

select * from final
