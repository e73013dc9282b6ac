-- The unmasked contact data of every CRM customer (published to <publish schema>_pii, which only
-- the PII role reads): what dim_customer shows masked. Branch and account manager are here so
-- that row-level security applies to it as to dim_customer.
with

customers as (
    select * from {{ ref('stg_crm__customers') }}
),

final as (
    select
        customer_id,
        {{ as_of() }} as as_of_date,
        customer_name,
        phone_e164,
        email,
        birth_date,
        branch_code,
        account_manager_id
    from customers
)

select * from final
