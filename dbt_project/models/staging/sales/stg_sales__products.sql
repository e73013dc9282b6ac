{{ config(unique_key='product_id') }}
with

source as (
    {{ latest_version(source('sales', 'products')) }}
),

final as (
    select
        product_id,
        {{ clean_text('product_name') }} as product_name,
        {{ clean_text('category') }} as category,
        list_price::numeric(18, 2) as list_price,
        unit_cost::numeric(18, 2) as unit_cost,
        updated_at,
        _extract_date,
        _line_no,
        batch_id as _batch_id
    from source
)

select * from final
