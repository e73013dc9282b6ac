-- The lifecycle stage (生命周期) of every CRM customer as of the run date, the date the stage
-- was entered, the previous stage, and a rule-based churn risk with its reason. Rules are
-- evaluated in order; thresholds come from config/tierline.yml (lifecycle) and, where a
-- customer has enough history, are scaled to the customer's own purchase cadence.
{%- set lc = var('lifecycle') %}
{%- set use_p_alive = var('clv', {}).get('churn_risk_from_p_alive', false) %}
with

value as (
    select * from {{ ref('customer_value') }}
),

cadence as (
    select
        value.*,
        value.purchase_days_lifetime >= {{ lc.cadence_min_purchase_days }} and value.mean_interval_days > 0 as has_cadence,
        case
            when value.purchase_days_lifetime >= {{ lc.cadence_min_purchase_days }} and value.mean_interval_days > 0
                then least({{ lc.dormant_max_days }}, greatest(
                    {{ lc.dormant_min_days }},
                    round(value.mean_interval_days * {{ lc.dormant_cadence_multiple }})
                ))
            else {{ lc.dormant_days }}
        end::integer as dormant_after_days,
        case
            when value.purchase_days_lifetime >= {{ lc.cadence_min_purchase_days }} and value.mean_interval_days > 0
                then least({{ lc.churned_max_days }}, greatest(
                    {{ lc.churned_min_days }},
                    round(value.mean_interval_days * {{ lc.churned_cadence_multiple }})
                ))
            else {{ lc.churned_days }}
        end::integer as churned_after_days
    from value
),

staged as (
    select
        customer_id,
        recency_days,
        first_purchase_date,
        dormant_after_days,
        churned_after_days,
        has_cadence,
        case
            when purchase_days_lifetime = 0 then 'prospect'
            when recency_days > churned_after_days then 'churned'
            when recency_days > dormant_after_days then 'dormant'
            when longest_recent_gap_days > greatest(dormant_after_days, {{ lc.reactivated_min_gap_days }}) then 'reactivated'
            when {{ as_of() }} - first_purchase_date < {{ lc.new_days }} then 'new'
            when
                revenue_previous_period > 0
                and revenue_last_period < {{ lc.declining_trend_ratio }} * revenue_previous_period then 'declining'
            when tenure_days < {{ lc.growth_max_tenure_days }} then 'growth'
            else 'mature'
        end as lifecycle_stage,
        trend_ratio,
        longest_recent_gap_days,
        p_alive
    from cadence
),

previous as (
    select
        customer_id,
        previous_stage,
        previous_stage_entered_date
    from {{ ref('int_customers__previous_evaluation') }}
),

final as (
    select
        staged.customer_id,
        {{ as_of() }} as as_of_date,
        staged.lifecycle_stage,
        stages.label_zh as lifecycle_label_zh,
        stages.label_en as lifecycle_label_en,
        case
            when previous.previous_stage = staged.lifecycle_stage then previous.previous_stage_entered_date
            else {{ as_of() }}
        end as stage_entered_date,
        previous.previous_stage,
        staged.dormant_after_days,
        staged.churned_after_days,
        case
            when staged.lifecycle_stage = 'prospect' then null
            {%- if use_p_alive %}
                when staged.p_alive is not null then round(1 - staged.p_alive, 4)
            {%- endif %}
            else round(least(1.0, greatest(0.0, staged.recency_days::numeric / staged.churned_after_days)), 4)
        end as churn_risk,
        case
            when staged.lifecycle_stage = 'prospect' then 'no purchase yet'
            when staged.lifecycle_stage = 'churned'
                then format(
                    'no purchase for %s days (> %s%s)', staged.recency_days,
                    staged.churned_after_days, case when staged.has_cadence then ' by own cadence' else '' end
                )
            when staged.lifecycle_stage = 'dormant'
                then format(
                    'no purchase for %s days (> %s%s)', staged.recency_days,
                    staged.dormant_after_days, case when staged.has_cadence then ' by own cadence' else '' end
                )
            when staged.lifecycle_stage = 'reactivated' then format('bought again after a %s-day gap', staged.longest_recent_gap_days)
            when staged.lifecycle_stage = 'declining' then format('last-period spend is %s of the previous period', coalesce(round(staged.trend_ratio, 2)::text, '0'))
            else format('last purchase %s days ago', staged.recency_days)
        end
        {%- if use_p_alive %}
            || case
                when staged.p_alive is not null and staged.lifecycle_stage <> 'prospect'
                    then format('; P(alive) %s (BG/NBD)', round(staged.p_alive, 3))
                else ''
            end
        {%- endif %} as churn_risk_reason
    from staged
    inner join {{ ref('lifecycle_stages') }} as stages on staged.lifecycle_stage = stages.lifecycle_stage
    left join previous on staged.customer_id = previous.customer_id
)

select * from final
