{{ config(unique_key=['order_id', 'line_no']) }}
with

source as (
    {{ latest_version(source('sales', 'order_items'), '_extract_date desc') }}
),

final as (
    select
        order_id,
        line_no::integer as line_no,
        product_id,
        quantity,
        unit_price::numeric(18, 2) as unit_price,
        unit_cost::numeric(18, 2) as unit_cost,
        _extract_date,
        _line_no,
        batch_id as _batch_id
    from source
)

select * from final
