-- Per customer, everything the value, tier and lifecycle marts need from the order history,
-- over the configured windows ending at the state's run date. Per-customer state
-- (macros/staging_state.sql): a run computes again only the customers int_customers__touched
-- names (their orders changed, or a window's start passed one of their purchase days); the run's
-- own copy is int_customers__order_summary.
-- depends_on: {{ ref('int_customers__touched') }}
{%- set w = var('windows') %}
{%- set lc = var('lifecycle') %}
{%- set only_touched = customer_state_incremental() %}
with

days as (
    select * from {{ ref('int_customers__purchase_days') }}
    {{ customer_state_only_touched(only_touched) }}
),

orders as (
    select * from {{ ref('int_orders__valued') }}
    {{ customer_state_only_touched(only_touched) }}
),

by_day as (
    select
        customer_id,
        min(purchase_date) as first_purchase_date,
        max(purchase_date) as last_purchase_date,
        count(*) as purchase_days_lifetime,
        sum(orders) as orders_lifetime,
        sum(net_revenue) as revenue_lifetime,
        sum(margin) as margin_lifetime,
        count(*) filter (where purchase_date > {{ as_of() }} - {{ w.frequency_days }}) as frequency,
        sum(orders) filter (where purchase_date > {{ as_of() }} - {{ w.frequency_days }}) as orders_in_window,
        coalesce(sum(net_revenue) filter (where purchase_date > {{ as_of() }} - {{ w.monetary_days }}), 0) as monetary,
        coalesce(sum(net_revenue) filter (where purchase_date > {{ as_of() }} - {{ w.trend_days }}), 0) as revenue_last_period,
        coalesce(sum(net_revenue) filter (
            where purchase_date > {{ as_of() }} - {{ 2 * w.trend_days }}
            and purchase_date <= {{ as_of() }} - {{ w.trend_days }}
        ), 0) as revenue_previous_period,
        avg(days_since_previous) as mean_interval_days,
        stddev_samp(days_since_previous) as sd_interval_days,
        max(days_since_previous) filter (
            where purchase_date > {{ as_of() }} - {{ lc.reactivated_window_days }}
        ) as longest_recent_gap_days
    from days
    group by customer_id
),

by_order as (
    select
        customer_id,
        count(*) filter (where status = 'cancelled') as cancelled_orders_lifetime,
        sum(refunded_amount) as refunded_amount_lifetime
    from orders
    group by customer_id
),

final as (
    select
        coalesce(by_day.customer_id, by_order.customer_id) as customer_id,
        by_day.first_purchase_date,
        by_day.last_purchase_date,
        coalesce(by_day.purchase_days_lifetime, 0) as purchase_days_lifetime,
        coalesce(by_day.orders_lifetime, 0) as orders_lifetime,
        coalesce(by_day.revenue_lifetime, 0) as revenue_lifetime,
        coalesce(by_day.margin_lifetime, 0) as margin_lifetime,
        coalesce(by_day.frequency, 0) as frequency,
        coalesce(by_day.orders_in_window, 0) as orders_in_window,
        coalesce(by_day.monetary, 0) as monetary,
        coalesce(by_day.revenue_last_period, 0) as revenue_last_period,
        coalesce(by_day.revenue_previous_period, 0) as revenue_previous_period,
        by_day.mean_interval_days,
        by_day.sd_interval_days,
        by_day.longest_recent_gap_days,
        coalesce(by_order.cancelled_orders_lifetime, 0) as cancelled_orders_lifetime,
        coalesce(by_order.refunded_amount_lifetime, 0) as refunded_amount_lifetime
    from by_day
    full outer join by_order on by_day.customer_id = by_order.customer_id
)

select * from final
