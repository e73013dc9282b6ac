with

source as (
    {{ latest_version(source('crm', 'customers')) }}
),

phones as (
    select
        *,
        {{ phone_digits('phone') }} as phone_digits
    from source
),

final as (
    select
        customer_id,
        {{ clean_text('customer_name') }} as customer_name,
        customer_type,
        {{ e164_phone('phone_digits') }} as phone_e164,
        (phone is not null and {{ e164_phone('phone_digits') }} is null) as has_unparsed_phone,
        nullif(lower({{ clean_text('email') }}), '') as email,
        {{ clean_code('gender') }} as gender,
        birth_date,
        {{ clean_text('province') }} as province,
        {{ clean_text('city') }} as city,
        upper({{ clean_code('branch_code') }}) as branch_code,
        {{ clean_text('industry') }} as industry,
        employee_count,
        {{ clean_text('account_manager_id') }} as account_manager_id,
        {{ clean_code('acquisition_channel') }} as acquisition_channel,
        {{ clean_text('referred_by') }} as referred_by,
        nullif(btrim({{ halfwidth('crm_record_id') }}), '') as crm_record_id,
        created_at,
        {{ local_date('created_at') }} as created_date,
        updated_at,
        _extract_date as extract_date,
        {{ staging_lineage_columns() }}
    from phones
)

select * from final
