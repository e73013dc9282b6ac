{{ config(unique_key='manager_id') }}
with

source as (
    {{ latest_version(source('crm', 'account_managers')) }}
),

final as (
    select
        manager_id,
        {{ clean_text('manager_name') }} as manager_name,
        upper({{ clean_code('branch_code') }}) as branch_code,
        nullif(lower({{ clean_text('email') }}), '') as email,
        updated_at,
        _extract_date,
        _line_no,
        batch_id as _batch_id
    from source
)

select * from final
