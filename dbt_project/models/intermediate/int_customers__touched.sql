-- The customers whose orders the run must value again (macros/staging_state.sql, per-customer
-- state): orders, lines or refunds in the raw batches int_orders__valued has not folded in yet,
-- lines of products that changed, refunds and orders whose date the run date now passes or no
-- longer passes, each order's customer now and the one it had before. The row with a null
-- customer_id carries the batches int_orders__valued stood for when this was computed; no rows
-- at all means the per-customer state models are rebuilt whole.
-- depends_on: {{ ref('stg_sales__orders') }}
-- depends_on: {{ ref('stg_sales__order_items') }}
-- depends_on: {{ ref('stg_sales__products') }}
-- depends_on: {{ ref('stg_sales__refunds') }}
{%- set plan = staging_state_plan('int_orders__valued') %}
{%- if plan.incremental and not plan.gone %}
    {%- set new = id_list(plan.new) %}
    {%- set since = sql_literal(plan.as_of) ~ '::date' %}
with

changed_orders as (
    select order_id from {{ ref('stg_sales__orders') }}
    where _batch_id in ({{ new }})
    union
    select order_id from {{ ref('stg_sales__orders') }}
    where
        order_date > least({{ since }}, {{ as_of() }})
        and order_date <= greatest({{ since }}, {{ as_of() }})
    union
    select order_id from {{ ref('stg_sales__order_items') }}
    where _batch_id in ({{ new }})
    union
    select order_id from {{ ref('stg_sales__order_items') }}
    where product_id in (select product_id from {{ ref('stg_sales__products') }} where _batch_id in ({{ new }}))
    union
    select order_id from {{ ref('stg_sales__refunds') }}
    where
        _batch_id in ({{ new }})
        or (
            refunded_date > least({{ since }}, {{ as_of() }})
            and refunded_date <= greatest({{ since }}, {{ as_of() }})
        )
),

customers as (
    select customer_id from {{ ref('stg_sales__orders') }}
    where order_id in (select order_id from changed_orders)
    union
    select customer_id from {{ adapter.quote(staging_state_schema()) }}.int_orders__valued
    where order_id in (select order_id from changed_orders)
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
