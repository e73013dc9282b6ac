-- depends_on: {{ source('published', 'customer_tier') }}, {{ source('published', 'customer_lifecycle') }}
-- Each customer's latest published evaluation before the run date: the memory that hysteresis,
-- "previous tier/stage" and "stage entered on" need. Read from the latest publication before the
-- run date (one slice, not every snapshot so far: every customer known then is in it). Empty on
-- the first run; a column that an older publication lacks reads as null (published_snapshots),
-- so upgrades do not break.
with

published_tiers as (
    {{ published_snapshots('customer_tier', [
        ('customer_id', 'text'), ('as_of_date', 'date'), ('tier', 'text'),
        ('policy_tier', 'text'), ('evaluations_below', 'integer')], compared_only=true) }}
),

published_stages as (
    {{ published_snapshots('customer_lifecycle', [
        ('customer_id', 'text'), ('as_of_date', 'date'), ('lifecycle_stage', 'text'),
        ('stage_entered_date', 'date')], compared_only=true) }}
),

previous_tier as (
    select distinct on (customer_id)
        customer_id,
        tier,
        coalesce(policy_tier, tier) as policy_tier,
        evaluations_below
    from published_tiers
    where as_of_date < {{ as_of() }}
    order by customer_id asc, as_of_date desc
),

previous_stage as (
    select distinct on (customer_id)
        customer_id,
        lifecycle_stage,
        stage_entered_date
    from published_stages
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

select * from final
