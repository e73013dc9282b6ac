with

source as (
    {{ latest_version(source('crm', 'tier_overrides')) }}
),

final as (
    select
        customer_id,
        {{ clean_code('tier') }} as tier,
        {{ clean_text('reason') }} as reason,
        valid_from,
        valid_to,
        {{ clean_text('set_by') }} as set_by,
        updated_at,
        {{ staging_lineage_columns() }}
    from source
)

select * from final
