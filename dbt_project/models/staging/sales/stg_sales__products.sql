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
        {{ staging_lineage_columns() }}
    from source
)

select * from final
