-- One row per customer and day with a net-positive purchase: several orders on one day count
-- as one purchase occasion (the convention of RFM frequency and of BG/NBD). Per-customer state,
-- like int_orders__valued: only the touched customers' days are computed again.
-- depends_on: {{ ref('int_customers__touched') }}
with

orders as (
    select * from {{ ref('int_orders__valued') }}
    where is_purchase {{ customer_state_only_touched(customer_state_incremental(), 'and') }}
),

days as (
    select
        customer_id,
        order_date as purchase_date,
        count(*) as orders,
        sum(net_revenue) as net_revenue,
        sum(margin) as margin
    from orders
    group by customer_id, order_date
),

final as (
    select
        *,
        purchase_date - lag(purchase_date) over (partition by customer_id order by purchase_date) as days_since_previous
    from days
)

select * from final
