-- depends_on: {{ source('published', 'lifecycle_history') }}, {{ source('published', 'publication_log') }}
-- Lifecycle stage history as a type-2 slowly changing dimension: one row per customer and
-- uninterrupted stretch of one stage (the same gaps-and-islands as tier_history). A run dated
-- after every publication builds the published history's change with this run's stages: the
-- open stretches it evaluated (extended, or closed when the stage changed) and the new ones
-- (publish applies it by key); otherwise (first run, re-run of a published date, full refresh)
-- the whole history, rebuilt from every published lifecycle snapshot plus this run's stages.
-- Both publish the same rows.
{{ config(post_hook="{{ history_record_build('lifecycle_history') }}") }}
{%- set extend = history_extends_publication('lifecycle_history') %}
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

stages as (
    select * from {{ ref('lifecycle_stages') }}
),
{%- if extend %}

    history as (
        select * from {{ adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='lifecycle_history') }}
    ),

    open_stretches as (
        select
            history.*,
            current_run.customer_id is not null as evaluated_today,
            current_run.customer_id is not null
            and not coalesce(current_run.lifecycle_stage = history.lifecycle_stage, false) as ends_today
        from history
        left join current_run on history.customer_id = current_run.customer_id
        where history.is_current
    ),

    stretches as (
        -- an open stretch not evaluated today (its customer is not in this run) does not change
        select
            customer_id,
            lifecycle_stage,
            valid_from,
            case when ends_today then {{ as_of() }} end as valid_to,
            not ends_today as is_current,
            previous_stage,
            case when not ends_today then {{ as_of() }} else last_evaluated_date end as last_evaluated_date,
            evaluations + case when not ends_today then 1 else 0 end as evaluations,
            churn_risk_at_entry,
            stage_reason
        from open_stretches
        where evaluated_today
        union all
        select
            current_run.customer_id,
            current_run.lifecycle_stage,
            current_run.as_of_date as valid_from,
            null::date as valid_to,
            true as is_current,
            open_stretches.lifecycle_stage as previous_stage,
            current_run.as_of_date as last_evaluated_date,
            1 as evaluations,
            current_run.churn_risk as churn_risk_at_entry,
            current_run.churn_risk_reason as stage_reason
        from current_run
        left join open_stretches on current_run.customer_id = open_stretches.customer_id
        where open_stretches.customer_id is null or open_stretches.ends_today
    ),

    final as (
        select
            stretches.customer_id,
            stretches.lifecycle_stage,
            stages.label_zh as lifecycle_label_zh,
            stretches.valid_from,
            stretches.valid_to,
            stretches.is_current,
            stretches.previous_stage,
            stretches.last_evaluated_date,
            stretches.evaluations::integer as evaluations,
            stretches.churn_risk_at_entry,
            stretches.stage_reason
        from stretches
        left join stages on stretches.lifecycle_stage = stages.lifecycle_stage
    )
{%- else %}

    published as (
        select
            customer_id,
            as_of_date,
            lifecycle_stage,
            churn_risk,
            churn_risk_reason
        from {{ ref('int_published__customer_lifecycle_history') }}
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
{%- endif %}

select * from final
