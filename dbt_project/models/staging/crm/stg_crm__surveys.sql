{{ config(unique_key='survey_id') }}
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
        _extract_date,
        _line_no,
        batch_id as _batch_id
    from source
)

select * from final
