-- One row per customer and day with a net-positive purchase: several orders on one day count
-- as one purchase occasion (the convention of RFM frequency and of BG/NBD). Per-customer state,
-- like int_orders__valued: a run computes again only the touched customers' days from the
-- earliest date a touched order of theirs has (from_date) on; their earlier days are kept, and
-- the last of them is read back for the first recomputed day's days_since_previous.
-- depends_on: {{ ref('int_customers__touched') }}
{%- set only_touched = customer_state_incremental() %}
with
{%- if only_touched %}

    touched as (
        -- a join and a group, not a subquery per customer: inlined into the join below, that ran
        -- once per order of a touched customer (348k times on the 100k bench's 1% day, 4.9 s)
        select
            touched.customer_id,
            touched.from_date,
            max(kept.purchase_date) as previous_date
        from {{ ref('int_customers__touched') }} as touched
        left join {{ this }} as kept
            on touched.customer_id = kept.customer_id and kept.purchase_date < touched.from_date
        where not touched.by_window
        group by touched.customer_id, touched.from_date
    ),
{%- endif %}

orders as (
    select orders.*
    from {{ ref('int_orders__valued') }} as orders
    {%- if only_touched %}
        inner join touched
            on
                orders.customer_id = touched.customer_id
                and orders.order_date >= coalesce(touched.previous_date, touched.from_date)
    {%- endif %}
    where orders.is_purchase
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
{%- if only_touched %}
    where {{ customer_state_touched('final') }}
{%- endif %}
