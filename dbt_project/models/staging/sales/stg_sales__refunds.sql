{{ config(unique_key='refund_id') }}
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
        _extract_date,
        _line_no,
        batch_id as _batch_id
    from source
)

select * from final
