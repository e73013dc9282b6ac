-- Lifecycle stage history as a type-2 slowly changing dimension: one row per customer and
-- uninterrupted stretch of one stage, rebuilt from every published lifecycle snapshot plus this
-- run's stages (the same gaps-and-islands as tier_history).
with

current_run as (
    select
        customer_id,
        as_of_date,
        lifecycle_stage,
        churn_risk,
        churn_risk_reason
    from {{ ref('customer_lifecycle') }}
),

published as (
    select
        customer_id,
        as_of_date,
        lifecycle_stage,
        churn_risk,
        churn_risk_reason
    from {{ ref('int_published__customer_lifecycle_snapshots') }}
),

stages as (
    select * from {{ ref('lifecycle_stages') }}
),

snapshots as (
    select * from current_run
    union all
    select * from published
),

islands as (
    {{ scd2_islands('snapshots', 'lifecycle_stage') }}
),

stretches as (
    select
        customer_id,
        island,
        lifecycle_stage,
        min(as_of_date) as valid_from,
        max(as_of_date) as last_evaluated_date,
        count(*) as evaluations,
        (array_agg(churn_risk order by as_of_date))[1] as churn_risk_at_entry,
        (array_agg(churn_risk_reason order by as_of_date))[1] as stage_reason
    from islands
    group by customer_id, island, lifecycle_stage
),

final as (
    select
        stretches.customer_id,
        stretches.lifecycle_stage,
        stages.label_zh as lifecycle_label_zh,
        stretches.valid_from,
        lead(stretches.valid_from) over (partition by stretches.customer_id order by stretches.valid_from) as valid_to,
        lead(stretches.valid_from) over (partition by stretches.customer_id order by stretches.valid_from) is null
            as is_current,
        lag(stretches.lifecycle_stage) over (partition by stretches.customer_id order by stretches.valid_from)
            as previous_stage,
        stretches.last_evaluated_date,
        stretches.evaluations::integer as evaluations,
        stretches.churn_risk_at_entry,
        stretches.stage_reason
    from stretches
    left join stages on stretches.lifecycle_stage = stages.lifecycle_stage
)

select * from final
