with

source as (
    {{ latest_version(source('crm', 'surveys'), 'answered_at desc') }}
),

final as (
    select
        survey_id,
        customer_id,
        answered_at,
        {{ local_date('answered_at') }} as answered_date,
        nps::integer as nps,
        csat::integer as csat,
        {{ staging_lineage_columns() }}
    from source
)

select * from final
