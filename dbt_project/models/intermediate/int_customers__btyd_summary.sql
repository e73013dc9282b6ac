-- The buy-till-you-die summary of each customer for the calibration window ending at the as-of
-- date (int_customers__btyd_totals, per-customer state), with T = as-of date minus first
-- purchase day in clv.time_unit_days, which moves with the run date for every customer.
{%- set clv = var('clv') %}
select
    customer_id,
    first_purchase_date,
    frequency,
    recency,
    ({{ as_of() }} - first_purchase_date) / {{ clv.time_unit_days }}::numeric as t_age,
    monetary_value
from {{ ref('int_customers__btyd_totals') }}
