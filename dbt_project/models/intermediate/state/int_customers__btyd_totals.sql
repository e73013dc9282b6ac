-- The buy-till-you-die summary of each customer for the calibration window ending at the as-of
-- date, in the convention of Fader, Hardie and Lee (and of the `lifetimes` package):
-- frequency = repeat purchase days, recency = last minus first purchase day, T = as-of date
-- minus first purchase day (both in clv.time_unit_days), monetary_value = mean spend of the
-- repeat purchase days. Only customers whose first purchase falls in the window take part.
-- Per-customer state (macros/staging_state.sql): everything but T, which moves with the run date
-- for every customer and is added by the run's own copy, int_customers__btyd_summary; a run
-- computes again only the customers int_customers__touched names.
-- depends_on: {{ ref('int_customers__touched') }}
{%- set clv = var('clv') %}
{%- set only_touched = customer_state_incremental() %}
with

days as (
    select * from {{ ref('int_customers__purchase_days') }}
    where
        purchase_date <= {{ as_of() }}
    {%- if clv.calibration_days %}
        and purchase_date > {{ as_of() }} - {{ clv.calibration_days }}
        {%- endif %}
    {{ customer_state_only_touched(only_touched, 'and') }}
),

ordered as (
    select
        customer_id,
        purchase_date,
        net_revenue,
        min(purchase_date) over (partition by customer_id) as first_purchase_date,
        row_number() over (partition by customer_id order by purchase_date) as day_number
    from days
),

cohort as (
    select ordered.* from ordered
    {%- if clv.calibration_days %}
    -- customers who bought before the window are left out, not given a cut-off history
    inner join {{ ref('int_customers__order_totals') }} as lifetime
        on ordered.customer_id = lifetime.customer_id
        and ordered.first_purchase_date = lifetime.first_purchase_date
    {%- endif %}
),

final as (
    select
        customer_id,
        min(first_purchase_date) as first_purchase_date,
        count(*) - 1 as frequency,
        (max(purchase_date) - min(purchase_date)) / {{ clv.time_unit_days }}::numeric as recency,
        coalesce(sum(net_revenue) filter (where day_number > 1) / nullif(count(*) - 1, 0), 0) as monetary_value
    from cohort
    group by customer_id
)

select * from final
