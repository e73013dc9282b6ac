with

source as (
    {{ latest_version(source('sales', 'refunds'), 'refunded_at desc') }}
),

final as (
    select
        refund_id,
        order_id,
        refunded_at,
        {{ local_date('refunded_at') }} as refunded_date,
        amount::numeric(18, 2) as amount,
        {{ staging_lineage_columns() }}
    from source
)

select * from final
