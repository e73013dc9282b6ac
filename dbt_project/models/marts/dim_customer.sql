-- One row per CRM customer, as of the run date: who the customer is (name, type, branch, account
-- manager, where they are), the segments BI filters on (tier, lifecycle stage, RFM segment) and
-- contact fields masked (phone 138****1234, email z***@example.com, birthday month-day only).
-- The unmasked contact data is customer_contact, published to the PII schema only.
with

customers as (
    select * from {{ ref('stg_crm__customers') }}
),

managers as (
    select
        manager_id,
        manager_name
    from {{ ref('stg_crm__account_managers') }}
),

tiers as (
    select
        customer_id,
        tier,
        tier_label_zh,
        tier_label_en,
        is_overridden
    from {{ ref('customer_tier') }}
),

lifecycle as (
    select
        customer_id,
        lifecycle_stage,
        churn_risk
    from {{ ref('customer_lifecycle') }}
),

value as (
    select
        customer_id,
        rfm_segment,
        last_purchase_date
    from {{ ref('customer_value') }}
),

final as (
    select
        customers.customer_id,
        {{ as_of() }} as as_of_date,
        customers.customer_name,
        customers.customer_type,
        customers.branch_code,
        customers.account_manager_id,
        managers.manager_name as account_manager_name,
        customers.province,
        customers.city,
        customers.industry,
        customers.acquisition_channel,
        customers.created_date,
        tiers.tier,
        tiers.tier_label_zh,
        tiers.tier_label_en,
        tiers.is_overridden as is_tier_overridden,
        lifecycle.lifecycle_stage,
        lifecycle.churn_risk,
        value.rfm_segment,
        value.last_purchase_date,
        {{ mask_phone('customers.phone_e164') }} as phone_masked,
        {{ mask_email('customers.email') }} as email_masked,
        {{ birthday_month_day('customers.birth_date') }} as birthday_md,
        customers.phone_e164 is not null as has_phone,
        customers.email is not null as has_email
    from customers
    left join managers on customers.account_manager_id = managers.manager_id
    left join tiers on customers.customer_id = tiers.customer_id
    left join lifecycle on customers.customer_id = lifecycle.customer_id
    left join value on customers.customer_id = value.customer_id
)

select * from final
