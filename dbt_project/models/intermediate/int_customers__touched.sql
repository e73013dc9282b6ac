-- The customers whose per-customer state a run must compute again (macros/staging_state.sql):
-- the customer of each order int_orders__touched names, now and the one it had before, and every
-- customer with an order on a day that the start of a counting window (customer_state_windows)
-- passed between the state's run date and this one (their windowed counts change though none of
-- their orders did: by_window, for the models that count in windows only). The row with a null customer_id carries the batches and run date
-- int_orders__valued stood for when this was computed; no rows at all means the per-customer
-- state models are rebuilt whole.
-- depends_on: {{ ref('stg_sales__orders') }}
-- depends_on: {{ ref('int_orders__touched') }}
{%- set plan = staging_state_plan('int_orders__valued') %}
{%- if plan.incremental and not plan.gone %}
    {%- set since = sql_literal(plan.as_of) ~ '::date' %}
with

customers as (
    select
        customer_id,
        false as by_window
    from {{ ref('stg_sales__orders') }}
    where order_id in (select order_id from {{ ref('int_orders__touched') }})
    union
    select
        customer_id,
        false as by_window
    from {{ adapter.quote(staging_state_schema()) }}.int_orders__valued
    where order_id in (select order_id from {{ ref('int_orders__touched') }})
    union
    select
        customer_id,
        true as by_window
    from {{ ref('stg_sales__orders') }}
    where
    {%- for days in customer_state_windows() %}
        (
            order_date > least({{ since }}, {{ as_of() }}) - {{ days }}
            and order_date <= greatest({{ since }}, {{ as_of() }}) - {{ days }}
        ){% if not loop.last %} or{% endif %}
    {%- endfor %}
)

select
    customer_id,
    by_window,
    null::text as from_batches
from customers
union all
select
    null::text as customer_id,
    null::boolean as by_window,
    {{ sql_literal(customer_state_stood_for(plan)) }}::text as from_batches
{%- else %}
    select
        null::text as customer_id,
        null::boolean as by_window,
        null::text as from_batches
    where false
{%- endif %}
