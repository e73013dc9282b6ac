with

source as (
    {{ latest_version(source('crm', 'tickets')) }}
),

final as (
    select
        ticket_id,
        customer_id,
        {{ clean_code('category') }} as category,
        {{ clean_code('severity') }} as severity,
        opened_at,
        {{ local_date('opened_at') }} as opened_date,
        resolved_at,
        csat::integer as csat,
        coalesce(
            lower({{ clean_text('category') }}) like '%complaint%'
            or {{ clean_text('category') }} like '%投诉%', false
        ) as is_complaint,
        updated_at,
        {{ staging_lineage_columns() }}
    from source
)

select * from final
