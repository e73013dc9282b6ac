-- Customer value as of the run date: recency, frequency and monetary over the configured
-- windows (net of cancellations and refunds), lifetime revenue and margin, regularity, trend,
-- engagement, satisfaction, complaints, referrals, and RFM scores with a named segment.
{%- set bins = var('rfm_bins', 5) %}
with

customers as (
    select * from {{ ref('stg_crm__customers') }}
),

orders as (
    select * from {{ ref('int_customers__order_summary') }}
),

interactions as (
    select
        customer_id,
        count(*) as interactions_365d,
        {%- for channel in interaction_channels(with_other=true) %}
            count(*) filter (where channel = {{ sql_literal(channel) }}) as interactions_{{ channel }}_365d,
        {%- endfor %}
        max(occurred_date) as last_interaction_date
    from {{ ref('stg_crm__interactions') }}
    where occurred_date > {{ as_of() }} - 365 and occurred_date <= {{ as_of() }}
    group by customer_id
),

tickets as (
    select
        customer_id,
        count(*) as tickets_365d,
        count(*) filter (where is_complaint) as complaints_365d,
        avg(csat) as ticket_csat
    from {{ ref('stg_crm__tickets') }}
    where opened_date > {{ as_of() }} - 365 and opened_date <= {{ as_of() }}
    group by customer_id
),

surveys as (
    select
        customer_id,
        avg(csat) as survey_csat,
        avg(nps) as nps_score,
        count(*) as surveys_365d
    from {{ ref('stg_crm__surveys') }}
    where answered_date > {{ as_of() }} - 365 and answered_date <= {{ as_of() }}
    group by customer_id
),

referrals as (
    select
        referred_by as customer_id,
        count(*) as referrals_made
    from customers
    where referred_by is not null
    group by referred_by
),

joined as (
    select
        customers.customer_id,
        customers.customer_type,
        customers.branch_code,
        customers.account_manager_id,
        customers.employee_count,
        customers.crm_record_id,
        customers.created_date,
        orders.first_purchase_date,
        orders.last_purchase_date,
        {{ as_of() }} - orders.last_purchase_date as recency_days,
        coalesce(orders.frequency, 0) as frequency,
        coalesce(orders.orders_in_window, 0)::bigint as orders_in_window,
        coalesce(orders.monetary, 0)::numeric(18, 2) as monetary,
        coalesce(orders.purchase_days_lifetime, 0) as purchase_days_lifetime,
        coalesce(orders.orders_lifetime, 0)::bigint as orders_lifetime,
        coalesce(orders.revenue_lifetime, 0)::numeric(18, 2) as lifetime_revenue,
        coalesce(orders.margin_lifetime, 0)::numeric(18, 2) as lifetime_margin,
        case
            when orders.orders_lifetime > 0
                then orders.revenue_lifetime / orders.orders_lifetime
        end::numeric(18, 2
        ) as average_order_value,
        {{ as_of() }} - least(customers.created_date, coalesce(orders.first_purchase_date, customers.created_date))
            as tenure_days,
        orders.mean_interval_days::numeric(10, 2) as mean_interval_days,
        orders.sd_interval_days::numeric(10, 2) as sd_interval_days,
        -- 1 for a perfectly regular buyer, towards 0 as intervals scatter (1 / (1 + coefficient of variation))
        case
            when orders.mean_interval_days > 0
                then 1 / (1 + coalesce(orders.sd_interval_days, 0) / orders.mean_interval_days)
        end::numeric(6, 4
        )
            as regularity,
        coalesce(orders.revenue_last_period, 0)::numeric(18, 2) as revenue_last_period,
        coalesce(orders.revenue_previous_period, 0)::numeric(18, 2) as revenue_previous_period,
        case
            when orders.revenue_previous_period > 0
                then orders.revenue_last_period / orders.revenue_previous_period
        end::numeric(12, 4
        ) as trend_ratio,
        orders.longest_recent_gap_days,
        coalesce(orders.cancelled_orders_lifetime, 0) as cancelled_orders_lifetime,
        coalesce(orders.refunded_amount_lifetime, 0)::numeric(18, 2) as refunded_amount_lifetime,
        coalesce(interactions.interactions_365d, 0) as interactions_365d,
        {%- for channel in interaction_channels(with_other=true) %}
            coalesce(interactions.interactions_{{ channel }}_365d, 0) as interactions_{{ channel }}_365d,
        {%- endfor %}
        interactions.last_interaction_date,
        coalesce(tickets.tickets_365d, 0) as tickets_365d,
        coalesce(tickets.complaints_365d, 0) as complaints_365d,
        (coalesce(tickets.ticket_csat * tickets.tickets_365d, 0) + coalesce(surveys.survey_csat * surveys.surveys_365d, 0))
        / nullif(
            case when tickets.ticket_csat is not null then tickets.tickets_365d else 0 end
            + case when surveys.survey_csat is not null then surveys.surveys_365d else 0 end, 0
        ) as csat_raw,
        surveys.nps_score::numeric(4, 2) as nps_score,
        coalesce(referrals.referrals_made, 0) as referrals,
        predictions.p_alive,
        predictions.expected_purchases,
        predictions.expected_average_order_value,
        predictions.predicted_clv,
        coalesce(predictions.clv_method, 'no_purchase') as clv_method
    from customers
    left join orders on customers.customer_id = orders.customer_id
    left join interactions on customers.customer_id = interactions.customer_id
    left join tickets on customers.customer_id = tickets.customer_id
    left join surveys on customers.customer_id = surveys.customer_id
    left join referrals on customers.customer_id = referrals.customer_id
    left join {{ source('clv', 'clv_predictions') }} as predictions on customers.customer_id = predictions.customer_id
),

scored as (
    select
        *,
        case
            when purchase_days_lifetime > 0 then
                least({{ bins }}, floor(percent_rank() over (
                    partition by purchase_days_lifetime > 0 order by recency_days desc
                ) * {{ bins }}) + 1)
        end::integer as r_score,
        case
            when purchase_days_lifetime > 0 then
                least({{ bins }}, floor(percent_rank() over (
                    partition by purchase_days_lifetime > 0 order by frequency
                ) * {{ bins }}) + 1)
        end::integer as f_score,
        case
            when purchase_days_lifetime > 0 then
                least({{ bins }}, floor(percent_rank() over (
                    partition by purchase_days_lifetime > 0 order by monetary
                ) * {{ bins }}) + 1)
        end::integer as m_score
    from joined
),

final as (
    select
        scored.customer_id,
        {{ as_of() }} as as_of_date,
        scored.customer_type,
        scored.branch_code,
        scored.account_manager_id,
        scored.first_purchase_date,
        scored.last_purchase_date,
        scored.recency_days,
        scored.frequency,
        scored.orders_in_window,
        scored.monetary,
        scored.purchase_days_lifetime,
        scored.orders_lifetime,
        scored.lifetime_revenue,
        scored.lifetime_margin,
        scored.average_order_value,
        scored.tenure_days,
        scored.mean_interval_days,
        scored.sd_interval_days,
        scored.regularity,
        scored.revenue_last_period,
        scored.revenue_previous_period,
        scored.trend_ratio,
        scored.longest_recent_gap_days,
        scored.cancelled_orders_lifetime,
        scored.refunded_amount_lifetime,
        scored.interactions_365d,
        {%- for channel in interaction_channels(with_other=true) %}
            scored.interactions_{{ channel }}_365d,
        {%- endfor %}
        scored.last_interaction_date,
        scored.tickets_365d,
        scored.complaints_365d,
        scored.csat_raw::numeric(4, 2) as csat,
        scored.nps_score,
        scored.referrals,
        scored.p_alive::numeric(6, 4) as p_alive,
        scored.expected_purchases::numeric(12, 4) as expected_purchases,
        scored.expected_average_order_value::numeric(18, 2) as expected_average_order_value,
        scored.predicted_clv::numeric(18, 2) as predicted_clv,
        scored.clv_method,
        scored.employee_count,
        scored.crm_record_id,
        scored.r_score,
        scored.f_score,
        scored.m_score,
        case
            when scored.r_score is not null
                then scored.r_score::text || scored.f_score::text || scored.m_score::text
        end as rfm_cell,
        coalesce(segments.rfm_segment, 'no_purchase') as rfm_segment,
        coalesce(segments.rfm_segment_label_zh, '未购买') as rfm_segment_label_zh
    from scored
    left join {{ ref('rfm_segments') }} as segments
        on
            scored.r_score = segments.r_score
            and round((scored.f_score + scored.m_score) / 2.0) = segments.fm_score
)

select * from final
