-- Every order valued net of cancellations and refunds: what the customer really paid and what
-- it earned. Pending orders carry no value until they complete; a `refunded` order without
-- refund rows counts as fully refunded. Per-customer state: a run values again only the orders it
-- touched (int_orders__touched, macros/staging_state.sql); touched customers are found first.
-- depends_on: {{ ref('int_customers__touched') }}
-- depends_on: {{ ref('int_orders__touched') }}
{%- set only_touched = customer_state_incremental() %}
with

orders as (
    -- staging holds every visible version; the run date bounds what happened
    select * from {{ ref('stg_sales__orders') }}
    where order_date <= {{ as_of() }} {{ customer_state_only_touched(only_touched, 'and') }}
),

items as (
    select
        items.order_id,
        sum(items.quantity * coalesce(items.unit_cost, products.unit_cost, 0)) as cost_amount,
        bool_or(coalesce(items.unit_cost, products.unit_cost) is null) as has_unknown_cost
    from {{ ref('stg_sales__order_items') }} as items
    left join {{ ref('stg_sales__products') }} as products on items.product_id = products.product_id
    {%- if only_touched %}
    where items.order_id in (select order_id from orders)
    {%- endif %}
    group by items.order_id
),

refunds as (
    select
        order_id,
        sum(amount) as refunded_amount
    from {{ ref('stg_sales__refunds') }}
    where refunded_date <= {{ as_of() }}{% if only_touched %} and order_id in (select order_id from orders){% endif %}
    group by order_id
),

valued as (
    select
        orders.order_id,
        orders.customer_id,
        orders.order_date,
        orders.status,
        orders.branch_code,
        orders.net_amount,
        coalesce(refunds.refunded_amount, 0) as refunded_amount,
        case
            when orders.status = 'completed' then greatest(orders.net_amount - coalesce(refunds.refunded_amount, 0), 0)
            when orders.status = 'refunded' and refunds.refunded_amount is not null
                then greatest(orders.net_amount - refunds.refunded_amount, 0)
            else 0
        end as net_revenue,
        coalesce(items.cost_amount, 0) as cost_amount,
        coalesce(items.has_unknown_cost, true) as has_unknown_cost
    from orders
    left join items on orders.order_id = items.order_id
    left join refunds on orders.order_id = refunds.order_id
),

final as (
    select
        order_id,
        customer_id,
        order_date,
        status,
        branch_code,
        net_amount,
        refunded_amount::numeric(18, 2) as refunded_amount,
        net_revenue::numeric(18, 2) as net_revenue,
        -- goods that came back cost nothing: cost scales with the share of the order kept
        (net_revenue - case when net_amount > 0 then cost_amount * net_revenue / net_amount else 0 end)::numeric(18, 2)
            as margin,
        has_unknown_cost,
        -- a purchase is an order the customer kept: completed (a free order counts too) and not
        -- refunded in full
        (status = 'completed' and (net_amount <= 0 or net_revenue > 0))
        or (status = 'refunded' and net_revenue > 0) as is_purchase
    from valued
)

select * from final
