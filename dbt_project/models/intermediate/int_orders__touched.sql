-- The orders a run must value again (macros/staging_state.sql, per-customer state): orders,
-- lines or refunds in the raw batches int_orders__valued has not folded in yet, lines of products
-- that changed, refunds and orders whose date the run date now passes or no longer passes. An
-- order's value depends on that order alone, so int_orders__valued recomputes these and keeps the
-- rest; their customers (int_customers__touched) get their purchase days again. Empty when the
-- per-customer state models are rebuilt whole.
-- depends_on: {{ ref('stg_sales__orders') }}
-- depends_on: {{ ref('stg_sales__order_items') }}
-- depends_on: {{ ref('stg_sales__products') }}
-- depends_on: {{ ref('stg_sales__refunds') }}
{%- set plan = staging_state_plan('int_orders__valued') %}
{%- if plan.incremental and not plan.gone %}
    {%- set new = id_list(plan.new) %}
    {%- set since = sql_literal(plan.as_of) ~ '::date' %}
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
{%- else %}
    select null::text as order_id
    where false
{%- endif %}
