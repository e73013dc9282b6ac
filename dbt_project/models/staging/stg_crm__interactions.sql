with

source as (
    {{ latest_version(source('raw', 'crm_interactions'), 'interaction_id', 'occurred_at desc') }}
),

final as (
    select
        interaction_id,
        customer_id,
        case
            when lower({{ clean_text('channel') }}) in ('phone', 'email', 'wechat', 'visit', 'web', 'social', 'event')
                then lower({{ clean_text('channel') }})
            else 'other'
        end as channel,
        lower({{ clean_text('channel') }}) as channel_raw,
        lower({{ clean_text('interaction_type') }}) as interaction_type,
        occurred_at,
        {{ local_date('occurred_at') }} as occurred_date
    from source
    where {{ local_date('occurred_at') }} <= {{ as_of() }}
)

select * from final
