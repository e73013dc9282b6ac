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
        {{ staging_lineage_columns() }}
    from source
)

select * from final
