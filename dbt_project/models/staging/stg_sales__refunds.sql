with

source as (
    {{ latest_version(source('raw', 'sales_refunds'), 'refund_id', 'refunded_at desc') }}
),

final as (
    select
        refund_id,
        order_id,
        refunded_at,
        {{ local_date('refunded_at') }} as refunded_date,
        amount::numeric(18, 2) as amount
    from source
    where {{ local_date('refunded_at') }} <= {{ as_of() }}
)

select * from final
