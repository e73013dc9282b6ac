-- Account-manager scorecard (客户经理考核) per as_of_date: for every manager the CRM knows, every
-- manager id customers point at that the CRM does not know, and the customers without one, the
-- customers and revenue by tier ('all' = the manager's whole book), overdue follow-ups, customers
-- at risk, complaints, satisfaction, and the share of the book that moved tier this evaluation.
with

tiers as (
    select
        customer_id,
        as_of_date,
        tier,
        account_manager_id
    from {{ ref('customer_tier') }}
),

value as (
    select
        customer_id,
        monetary,
        complaints_365d,
        csat
    from {{ ref('customer_value') }}
),

managers as (
    select
        manager_id,
        branch_code
    from {{ ref('stg_crm__account_managers') }}
),

follow_ups as (
    select customer_id
    from {{ ref('customer_actions') }}
    where action_type = 'follow_up_due'
),

warnings as (
    select
        customer_id,
        bool_or(warning_type = 'churn') as is_churn_risk,
        bool_or(warning_type = 'demotion') as is_demotion_risk
    from {{ ref('early_warning') }}
    group by customer_id
),

moves as (
    select
        customer_id,
        direction
    from {{ ref('customer_events') }}
    where event_type = 'tier_change' and direction in ('up', 'down')
),

book as (
    select
        coalesce(tiers.account_manager_id, '(unassigned)') as account_manager_id,
        case
            when tiers.account_manager_id is null then 'unassigned'
            when managers.manager_id is null then 'unknown'
            else 'active'
        end as manager_status,
        managers.branch_code as manager_branch_code,
        tiers.tier,
        coalesce(value.monetary, 0) as monetary,
        coalesce(value.complaints_365d, 0) as complaints_365d,
        value.csat,
        follow_ups.customer_id is not null as is_follow_up_overdue,
        coalesce(warnings.is_churn_risk, false) as is_churn_risk,
        coalesce(warnings.is_demotion_risk, false) as is_demotion_risk,
        moves.direction as moved
    from tiers
    left join value on tiers.customer_id = value.customer_id
    left join managers on tiers.account_manager_id = managers.manager_id
    left join follow_ups on tiers.customer_id = follow_ups.customer_id
    left join warnings on tiers.customer_id = warnings.customer_id
    left join moves on tiers.customer_id = moves.customer_id
),

aggregated as (
    select
        account_manager_id,
        manager_status,
        manager_branch_code,
        case when grouping(tier) = 1 then 'all' else tier end as tier,
        count(*) as customers,
        sum(monetary) as monetary,
        count(*) filter (where is_follow_up_overdue) as follow_ups_overdue,
        count(*) filter (where is_churn_risk) as churn_risk_customers,
        count(*) filter (where is_demotion_risk) as demotion_risk_customers,
        sum(complaints_365d) as complaints_365d,
        count(*) filter (where complaints_365d > 0) as customers_with_complaints,
        avg(csat) as average_csat,
        count(*) filter (where moved = 'up') as moved_up_customers,
        count(*) filter (where moved = 'down') as moved_down_customers
    from book
    group by grouping sets (
        (account_manager_id, manager_status, manager_branch_code, tier),
        (account_manager_id, manager_status, manager_branch_code)
    )
),

idle_managers as (
    -- managers without customers still get their scorecard
    select
        managers.manager_id as account_manager_id,
        'active' as manager_status,
        managers.branch_code as manager_branch_code,
        'all' as tier,
        0 as customers,
        0 as monetary,
        0 as follow_ups_overdue,
        0 as churn_risk_customers,
        0 as demotion_risk_customers,
        0 as complaints_365d,
        0 as customers_with_complaints,
        null::numeric as average_csat,
        0 as moved_up_customers,
        0 as moved_down_customers
    from managers
    where not exists (select 1 from book where book.account_manager_id = managers.manager_id)
),

unioned as (
    select * from aggregated
    union all
    select * from idle_managers
),

final as (
    select
        {{ as_of() }} as as_of_date,
        account_manager_id,
        manager_status,
        manager_branch_code,
        tier,
        customers::bigint as customers,
        round(customers::numeric / nullif(sum(customers) filter (where tier <> 'all') over (partition by account_manager_id), 0), 4)
            as share_of_book,
        monetary::numeric(18, 2) as monetary,
        follow_ups_overdue::bigint as follow_ups_overdue,
        churn_risk_customers::bigint as churn_risk_customers,
        demotion_risk_customers::bigint as demotion_risk_customers,
        complaints_365d::bigint as complaints_365d,
        customers_with_complaints::bigint as customers_with_complaints,
        round(average_csat, 2)::numeric(4, 2) as average_csat,
        moved_up_customers::bigint as moved_up_customers,
        moved_down_customers::bigint as moved_down_customers,
        round(moved_up_customers::numeric / nullif(customers, 0), 4) as moved_up_share,
        round(moved_down_customers::numeric / nullif(customers, 0), 4) as moved_down_share
    from unioned
)

select * from final
