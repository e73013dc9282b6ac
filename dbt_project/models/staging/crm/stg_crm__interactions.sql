with

source as (
    {{ latest_version(source('crm', 'interactions'), 'occurred_at desc') }}
),

coded as (
    select
        *,
        {{ clean_code('channel') }} as channel_code
    from source
),

final as (
    select
        interaction_id,
        customer_id,
        case
            when channel_code in ({% for channel in interaction_channels() %}{{ sql_literal(channel) }}{% if not loop.last %}, {% endif %}{% endfor %}) then channel_code
            else 'other'
        end as channel,
        channel_code as channel_raw,
        {{ clean_code('interaction_type') }} as interaction_type,
        occurred_at,
        {{ local_date('occurred_at') }} as occurred_date,
        {{ staging_lineage_columns() }}
    from coded
)

select * from final
