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
        {{ staging_lineage_columns() }}
    from source
)

select * from final
