-- The customers whose purchase days a run must compute again (macros/staging_state.sql,
-- per-customer state): the customer of each order int_orders__touched names, now and the one it
-- had before. The row with a null customer_id carries the batches int_orders__valued stood for
-- when this was computed; no rows at all means the per-customer state models are rebuilt whole.
-- depends_on: {{ ref('stg_sales__orders') }}
-- depends_on: {{ ref('int_orders__touched') }}
{%- set plan = staging_state_plan('int_orders__valued') %}
{%- if plan.incremental and not plan.gone %}
with

customers as (
    select customer_id from {{ ref('stg_sales__orders') }}
    where order_id in (select order_id from {{ ref('int_orders__touched') }})
    union
    select customer_id from {{ adapter.quote(staging_state_schema()) }}.int_orders__valued
    where order_id in (select order_id from {{ ref('int_orders__touched') }})
)

select
    customer_id,
    null::text as from_batches
from customers
union all
select
    null::text as customer_id,
    {{ sql_literal(plan.batches) }}::text as from_batches
{%- else %}
    select
        null::text as customer_id,
        null::text as from_batches
    where false
{%- endif %}
