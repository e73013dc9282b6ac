-- Actions due per tier policy (config/tierline.yml actions.tier_policies), one row per customer and
-- action type: 'follow_up_due' (no CRM interaction within the tier's contact cadence),
-- 'manager_missing' (the tier needs a dedicated account manager, 客户经理制度, and has none the CRM
-- knows), 'birthday' (individual customers whose birthday falls in the care window: due_date is
-- the day to greet them; the birthday itself is dim_customer.birthday_md, under row-level security).
{%- set actions = actions_config() %}
{%- set policies = actions['tier_policies'] %}
with

tiers as (
    select
        customer_id,
        {{ as_of() }} as as_of_date,
        tier,
        branch_code,
        account_manager_id
    from {{ ref('customer_tier') }}
),

customers as (
    select
        customer_id,
        customer_type,
        birth_date,
        created_date
    from {{ ref('stg_crm__customers') }}
),

managers as (
    select manager_id from {{ ref('stg_crm__account_managers') }}
),

interactions as (
    -- any interaction up to the run date, not only the last 365 days of customer_value
    select
        customer_id,
        max(occurred_date) as last_interaction_date
    from {{ ref('stg_crm__interactions') }}
    where occurred_date <= {{ as_of() }}
    group by customer_id
),

policies as (
    select *
    from (
        values
        {%- for code, policy in policies.items() %}
            (
                {{ sql_literal(code) }}, {{ sql_number(policy['contact_every_days']) }}::integer,
                {{ 'true' if policy['dedicated_manager'] else 'false' }}, {{ 'true' if policy['birthday_care'] else 'false' }},
                {{ sql_number(policy['priority']) }}
            )
            {%- if not loop.last %},{% endif %}
        {%- endfor %}
        {%- if not policies %}
        (null::text, null::integer, false, false, null::integer)
        {%- endif %}
    ) as tier_policies (tier, contact_every_days, dedicated_manager, birthday_care, priority)
    where tier is not null
),

base as (
    select
        tiers.customer_id,
        tiers.as_of_date,
        tiers.tier,
        tiers.branch_code,
        tiers.account_manager_id,
        managers.manager_id is not null as is_known_manager,
        customers.customer_type,
        customers.birth_date,
        customers.created_date,
        interactions.last_interaction_date,
        policies.contact_every_days,
        policies.dedicated_manager,
        policies.birthday_care,
        policies.priority
    from tiers
    inner join policies on tiers.tier = policies.tier
    left join customers on tiers.customer_id = customers.customer_id
    left join managers on tiers.account_manager_id = managers.manager_id
    left join interactions on tiers.customer_id = interactions.customer_id
),

follow_ups as (
    -- the cadence runs from the last interaction, or from the day the customer was created
    select
        *,
        coalesce(last_interaction_date, created_date) + contact_every_days as due_date
    from base
    where contact_every_days is not null
),

follow_up_actions as (
    select
        customer_id,
        as_of_date,
        'follow_up_due' as action_type,
        due_date,
        priority,
        tier,
        last_interaction_date,
        case
            when last_interaction_date is null
                then format(
                    'no interaction since the customer was created on %s; %s tier: contact every %s days',
                    created_date, tier, contact_every_days
                )
            else format(
                'last interaction %s (%s days ago); %s tier: contact every %s days',
                last_interaction_date, as_of_date - last_interaction_date, tier, contact_every_days
            )
        end as detail,
        branch_code,
        account_manager_id
    from follow_ups
    where due_date <= as_of_date
),

manager_actions as (
    select
        customer_id,
        as_of_date,
        'manager_missing' as action_type,
        as_of_date as due_date,
        priority,
        tier,
        last_interaction_date,
        case
            when account_manager_id is null then format('%s tier needs a dedicated account manager; none is assigned', tier)
            else format(
                '%s tier needs a dedicated account manager; %s is not in the CRM manager list', tier, account_manager_id
            )
        end as detail,
        branch_code,
        account_manager_id
    from base
    where dedicated_manager and not is_known_manager
),

birthdays as (
    select
        *,
        case
            when {{ birthday_in_year('birth_date', 'extract(year from as_of_date)') }} >= as_of_date
                then {{ birthday_in_year('birth_date', 'extract(year from as_of_date)') }}
            else {{ birthday_in_year('birth_date', 'extract(year from as_of_date) + 1') }}
        end as next_birthday
    from base
    where birthday_care and customer_type = 'individual' and birth_date is not null
),

birthday_actions as (
    select
        customer_id,
        as_of_date,
        'birthday' as action_type,
        next_birthday as due_date,
        priority,
        tier,
        last_interaction_date,
        format('birthday in %s day(s): birthday greeting (生日关怀)', next_birthday - as_of_date) as detail,
        branch_code,
        account_manager_id
    from birthdays
    where next_birthday - as_of_date < {{ actions['care_window_days'] }}
),

unioned as (
    select * from follow_up_actions
    union all
    select * from manager_actions
    union all
    select * from birthday_actions
),

final as (
    select
        customer_id,
        as_of_date,
        action_type,
        due_date,
        (as_of_date - due_date)::integer as days_overdue,
        priority::integer as priority,
        tier,
        last_interaction_date,
        detail,
        branch_code,
        account_manager_id
    from unioned
)

select * from final
