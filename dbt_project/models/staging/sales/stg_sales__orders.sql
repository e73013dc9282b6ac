with

source as (
    {{ latest_version(source('sales', 'orders')) }}
),

final as (
    select
        order_id,
        customer_id,
        order_ts as ordered_at,
        {{ local_date('order_ts') }} as order_date,
        {{ clean_code('channel') }} as channel,
        upper({{ clean_code('branch_code') }}) as branch_code,
        status,
        coalesce(upper({{ clean_code('currency') }}), {{ sql_literal(var("currency")) }}) as currency,
        gross_amount::numeric(18, 2) as gross_amount,
        coalesce(discount_amount, 0)::numeric(18, 2) as discount_amount,
        net_amount::numeric(18, 2) as net_amount,
        updated_at,
        {{ staging_lineage_columns() }}
    from source
)

select * from final
