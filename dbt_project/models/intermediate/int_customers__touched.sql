-- The customers whose per-customer state a run must compute again (macros/staging_state.sql):
-- the customer of each order int_orders__touched names, now and the one it had before, and every
-- customer with an order on a day that the start of a counting window (customer_state_windows)
-- passed between the state's run date and this one (their windowed counts change though none of
-- their orders did: by_window, for the models that count in windows only). from_date is the
-- earliest date a touched order of the customer has, now or before (the purchase days keep the
-- days before it: customer_state_touched). The row with a null
-- customer_id carries the batches and run date int_orders__valued stood for when this was
-- computed, and, once for every state model, whether the run touches more than half of the state
-- (customer_state_over_half; by the model's grain and whether it counts in windows): such a
-- model is rebuilt instead. No rows at all means the per-customer state models are rebuilt whole.
-- depends_on: {{ ref('stg_sales__orders') }}
-- depends_on: {{ ref('int_orders__touched') }}
{%- set plan = staging_state_plan('int_orders__valued') %}
{#- the rebuild rule's measures: (grain, counts in windows, the touched rows' count) -#}
{%- set measures = [
    ('order_id', false, '(select count(*) from ' ~ ref('int_orders__touched') ~ ')'),
    ('customer_id', false, '(select by_orders from touched_days)'),
    ('customer_id', true, '(select in_windows from touched_days)'),
] %}
{%- if plan.incremental and not plan.gone %}
    {%- set since = sql_literal(plan.as_of) ~ '::date' %}
with

orders as (
    select
        customer_id,
        false as by_window,
        order_date
    from {{ ref('stg_sales__orders') }}
    where order_id in (select order_id from {{ ref('int_orders__touched') }})
    union all
    select
        customer_id,
        false as by_window,
        order_date
    from {{ adapter.quote(staging_state_schema()) }}.int_orders__valued
    where order_id in (select order_id from {{ ref('int_orders__touched') }})
    union all
    select distinct
        customer_id,
        true as by_window,
        null::date as order_date
    from {{ ref('stg_sales__orders') }}
    where
    {%- for days in customer_state_windows() %}
        (
            order_date > least({{ since }}, {{ as_of() }}) - {{ days }}
            and order_date <= greatest({{ since }}, {{ as_of() }}) - {{ days }}
        ){% if not loop.last %} or{% endif %}
    {%- endfor %}
),

customers as (
    select
        customer_id,
        by_window,
        min(order_date) as from_date
    from orders
    group by customer_id, by_window
),

touched_days as (
    -- how much of the customer-keyed state the run would compute again: the purchase days from
    -- each touched customer's from_date on, and (for the models that count in windows, which
    -- are computed again by customer) every purchase day of the touched customers
    {%- set measured = customer_state_measured('customer_id') %}
    {%- if measured is none %}
    select
        0 as by_orders,
        0 as in_windows
    {%- else %}
    select
        count(*) filter (where days.purchase_date >= touched.from_date) as by_orders,
        count(*) as in_windows
    from {{ measured.include(database=false) }} as days
    inner join (
        select
            customer_id,
            min(from_date) as from_date
        from customers
        group by customer_id
    ) as touched on days.customer_id = touched.customer_id
    {%- endif %}
)

select
    customer_id,
    by_window,
    from_date,
    null::text as from_batches
    {%- for grain, in_windows, _ in measures %},
    null::boolean as {{ customer_state_over_half_column(grain, in_windows) }}
    {%- endfor %}
from customers
union all
select
    null::text as customer_id,
    null::boolean as by_window,
    null::date as from_date,
    {{ sql_literal(customer_state_stood_for(plan)) }}::text as from_batches
    {%- for grain, in_windows, touched in measures %},
    {{ customer_state_over_half(touched, grain) }} as {{ customer_state_over_half_column(grain, in_windows) }}
    {%- endfor %}
{%- else %}
    select
        null::text as customer_id,
        null::boolean as by_window,
        null::date as from_date,
        null::text as from_batches,
        {%- for grain, in_windows, _ in measures %}
            null::boolean as {{ customer_state_over_half_column(grain, in_windows) }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    where false
{%- endif %}
