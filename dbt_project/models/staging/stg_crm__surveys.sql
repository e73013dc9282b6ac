with

source as (
    {{ latest_version(source('raw', 'crm_surveys'), 'survey_id', 'answered_at desc') }}
),

final as (
    select
        survey_id,
        customer_id,
        answered_at,
        {{ local_date('answered_at') }} as answered_date,
        nps::integer as nps,
        csat::integer as csat
    from source
    where {{ local_date('answered_at') }} <= {{ as_of() }}
)

select * from final
