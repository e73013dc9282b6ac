-- One row per change of tier or lifecycle stage at this run's as_of_date against the customer's
-- previous published evaluation, with its direction and the reason it happened. A customer seen
-- for the first time gets a 'new' event of each type.
with

tiers as (
    select
        customer_id,
        {{ as_of() }} as as_of_date,
        tier,
        tier_rank,
        decided_by,
        tier_reason,
        score_percentile,
        tier_spec_version,
        tier_spec_hash,
        branch_code,
        account_manager_id
    from {{ ref('customer_tier') }}
),

stages as (
    select
        customer_id,
        {{ as_of() }} as as_of_date,
        lifecycle_stage,
        churn_risk_reason
    from {{ ref('customer_lifecycle') }}
),

previous_tiers as (
    select distinct on (customer_id)
        customer_id,
        as_of_date as previous_as_of_date,
        tier as previous_tier,
        -- by code, not by a stored rank: the ladder may have changed since
        {{ tier_rank('tier') }} as previous_tier_rank,
        decided_by as previous_decided_by,
        evaluations_below as previous_evaluations_below,
        score_percentile as previous_score_percentile,
        tier_spec_version as previous_tier_spec_version,
        tier_spec_hash as previous_tier_spec_hash
    from {{ ref('int_published__customer_tier_snapshots') }}
    where as_of_date < {{ as_of() }}
    order by customer_id asc, as_of_date desc
),

previous_stages as (
    select distinct on (customer_id)
        customer_id,
        as_of_date as previous_as_of_date,
        lifecycle_stage as previous_stage
    from {{ ref('int_published__customer_lifecycle_snapshots') }}
    where as_of_date < {{ as_of() }}
    order by customer_id asc, as_of_date desc
),

tier_changes as (
    select
        tiers.customer_id,
        tiers.as_of_date,
        'tier_change' as event_type,
        previous_tiers.previous_tier as from_value,
        tiers.tier as to_value,
        case
            when previous_tiers.customer_id is null then 'new'
            -- a tier code no longer in the ladder has no rank to compare
            when previous_tiers.previous_tier_rank is null then 'lateral'
            when tiers.tier_rank < previous_tiers.previous_tier_rank then 'up'
            when tiers.tier_rank > previous_tiers.previous_tier_rank then 'down'
            else 'lateral'
        end as direction,
        case
            when previous_tiers.customer_id is null then 'new_customer'
            when tiers.decided_by = 'override' then 'override'
            when previous_tiers.previous_decided_by = 'override' then 'override_expired'
            when
                tiers.tier_rank > previous_tiers.previous_tier_rank
                and 'hysteresis' in (tiers.decided_by, previous_tiers.previous_decided_by) then 'decay'
            when previous_tiers.previous_tier_spec_hash <> tiers.tier_spec_hash then 'rule'
            else 'score'
        end as reason,
        tiers.tier_reason,
        tiers.score_percentile,
        tiers.tier_spec_version,
        tiers.branch_code,
        tiers.account_manager_id,
        previous_tiers.previous_as_of_date,
        previous_tiers.previous_evaluations_below,
        previous_tiers.previous_score_percentile,
        previous_tiers.previous_tier_spec_version
    from tiers
    left join previous_tiers on tiers.customer_id = previous_tiers.customer_id
    where previous_tiers.customer_id is null or previous_tiers.previous_tier <> tiers.tier
),

tier_events as (
    select
        customer_id,
        as_of_date,
        event_type,
        from_value,
        to_value,
        direction,
        reason,
        case reason
            when 'new_customer' then format('first evaluation: %s', tier_reason)
            when 'override' then tier_reason
            when 'override_expired' then format('override to %s no longer applies; %s', from_value, tier_reason)
            when 'decay'
                then format(
                    'below the %s line for %s consecutive evaluations (hysteresis); %s',
                    from_value, previous_evaluations_below + 1, tier_reason
                )
            when 'rule'
                then format(
                    'tier rules changed (%s -> %s); %s', previous_tier_spec_version, tier_spec_version, tier_reason
                )
            else format(
                'score percentile %s -> %s; %s', previous_score_percentile, score_percentile, tier_reason
            )
        end as detail,
        previous_as_of_date,
        branch_code,
        account_manager_id
    from tier_changes
),

stage_events as (
    select
        stages.customer_id,
        stages.as_of_date,
        'stage_change' as event_type,
        previous_stages.previous_stage as from_value,
        stages.lifecycle_stage as to_value,
        case
            when previous_stages.customer_id is null then 'new'
            when {{ stage_health('stages.lifecycle_stage') }} > {{ stage_health('previous_stages.previous_stage') }} then 'up'
            when {{ stage_health('stages.lifecycle_stage') }} < {{ stage_health('previous_stages.previous_stage') }} then 'down'
            else 'lateral'
        end as direction,
        case when previous_stages.customer_id is null then 'new_customer' else 'rule' end as reason,
        case
            when previous_stages.customer_id is null then format('first evaluation: %s', stages.churn_risk_reason)
            else format('%s -> %s: %s', previous_stages.previous_stage, stages.lifecycle_stage, stages.churn_risk_reason)
        end as detail,
        previous_stages.previous_as_of_date,
        tiers.branch_code,
        tiers.account_manager_id
    from stages
    left join previous_stages on stages.customer_id = previous_stages.customer_id
    left join tiers on stages.customer_id = tiers.customer_id
    where previous_stages.customer_id is null or previous_stages.previous_stage <> stages.lifecycle_stage
),

final as (
    select * from tier_events
    union all
    select * from stage_events
)

select * from final
