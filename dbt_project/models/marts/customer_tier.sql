-- The VIP tier (客户分级) of every CRM customer as of the run date. The composite score is the
-- weighted sum of the five dimensions of the tier specification, each the mean percentile rank
-- of its metrics among buyers; the ladder is evaluated from the top and the first tier whose
-- rule a customer meets wins (thresholds per branch where the spec gives them). Hysteresis:
-- promotion at once, demotion only after hysteresis.demote_after consecutive evaluations below
-- the line and at most max_steps_down tiers at a time. An active CRM override replaces the result.
{%- set spec = var('tier_spec') %}
{%- set ladder = spec['ladder'] %}
{%- set ruled_tiers = ladder[:-1] %}
{%- set fields = ['min_score_percentile', 'min_monetary', 'min_orders'] %}
{%- set hyst = spec.get('hysteresis') or {'demote_after': 1, 'max_steps_down': 1} %}
{%- set branches = spec.get('branches') or {} %}
{%- set metrics = [] %}
{%- for dim in spec['dimensions'].values() %}{% for m in dim['metrics'] %}{% if m not in metrics %}{% do metrics.append(m) %}{% endif %}{% endfor %}{% endfor %}
with

value as (
    select
        *,
        frequency > 0 as is_buyer
    from {{ ref('customer_value') }}
),

ranked as (
    select
        customer_id,
        {%- for m in metrics %}
            case when is_buyer then percent_rank() over (partition by is_buyer order by coalesce({{ m }}, 0)) end as pr_{{ m }},
        {%- endfor %}
        is_buyer,
        -- what the rules and the result read further on travel with the row: no join back
        branch_code,
        account_manager_id,
        monetary,
        orders_in_window
    from value
),

dimensions as (
    select
        customer_id,
        is_buyer,
        branch_code,
        account_manager_id,
        monetary,
        orders_in_window,
        {%- for name, dim in spec['dimensions'].items() %}
            coalesce(({% for m in dim['metrics'] %}pr_{{ m }}{% if not loop.last %} + {% endif %}{% endfor %}) / {{ dim['metrics'] | length }}.0, 0) as {{ name }}_score,
        {%- endfor %}
        {% for name, dim in spec['dimensions'].items() -%}
            {{ dim['weight'] }} * coalesce(({% for m in dim['metrics'] %}pr_{{ m }}{% if not loop.last %} + {% endif %}{% endfor %}) / {{ dim['metrics'] | length }}.0, 0){% if not loop.last %} + {% endif %}
        {%- endfor %} as composite_score
    from ranked
),

scored as (
    select
        dimensions.*,
        case when dimensions.is_buyer then percent_rank() over (partition by dimensions.is_buyer order by dimensions.composite_score) else 0 end
            as score_percentile
    from dimensions
),

thresholds as (
    -- one column per tier and threshold: the branch's value where the spec gives one
    select
        {%- for tier in ruled_tiers %}{% for field in fields %}
            {%- set overriding = [] %}
            {%- for branch, tiers in branches.items() %}{% if tiers.get(tier['code']) and tiers[tier['code']].get(field) is not none %}{% do overriding.append((branch, tiers[tier['code']][field])) %}{% endif %}{% endfor %}
            {%- if overriding %}
                case scored.branch_code
                    {%- for branch, threshold in overriding %}
                        when {{ sql_literal(branch) }} then {{ sql_number(threshold) }}
                    {%- endfor %}
                    else {{ sql_number(tier[field]) }}
                end::numeric as {{ sql_code(tier['code']) }}__{{ field }},
            {%- else %}
                {{ sql_number(tier[field]) }}::numeric as {{ sql_code(tier['code']) }}__{{ field }},
            {%- endif %}
        {%- endfor %}{% endfor %}
        scored.*
    from scored
),

ruled as (
    select
        thresholds.*,
        case
            {%- for tier in ruled_tiers %}
                when (
                    thresholds.{{ sql_code(tier['code']) }}__min_score_percentile is null
                    or (thresholds.is_buyer and thresholds.score_percentile >= thresholds.{{ sql_code(tier['code']) }}__min_score_percentile)
                )
                and (thresholds.{{ sql_code(tier['code']) }}__min_monetary is null or thresholds.monetary >= thresholds.{{ sql_code(tier['code']) }}__min_monetary)
                and (thresholds.{{ sql_code(tier['code']) }}__min_orders is null or thresholds.orders_in_window >= thresholds.{{ sql_code(tier['code']) }}__min_orders)
                    then {{ loop.index }}
            {%- endfor %}
            else {{ ladder | length }}
        end as rule_rank
    from thresholds
),

overrides as (
    select *
    from {{ ref('stg_crm__tier_overrides') }}
    where
        valid_from <= {{ as_of() }}
        and (valid_to is null or valid_to >= {{ as_of() }})
        and tier in ({% for tier in ladder %}{{ sql_literal(tier["code"]) }}{% if not loop.last %}, {% endif %}{% endfor %})
),

previous as (
    select
        customer_id,
        previous_tier,
        -- by code, not by a stored rank: the ladder may have changed since
        {{ tier_rank('previous_policy_tier') }} as previous_policy_rank,
        previous_evaluations_below
    from {{ ref('int_customers__previous_evaluation') }}
),

held as (
    -- hysteresis: a rule result below the previous tier only counts down the evaluations
    select
        ruled.*,
        previous.previous_tier,
        previous.previous_policy_rank,
        case
            when previous.previous_policy_rank is null or ruled.rule_rank <= previous.previous_policy_rank then 0
            else coalesce(previous.previous_evaluations_below, 0) + 1
        end as below_count
    from ruled
    left join previous on ruled.customer_id = previous.customer_id
),

policed as (
    select
        held.*,
        case
            when held.below_count = 0 then held.rule_rank
            when held.below_count >= {{ sql_number(hyst['demote_after']) }}
                then least(held.rule_rank, held.previous_policy_rank + {{ sql_number(hyst['max_steps_down']) }})
            else held.previous_policy_rank
        end as policy_rank
    from held
),

final as (
    select
        policed.customer_id,
        {{ as_of() }} as as_of_date,
        coalesce(overrides.tier, {{ tier_code('policed.policy_rank') }}) as tier,
        coalesce({{ tier_rank('overrides.tier') }}, policed.policy_rank) as tier_rank,
        {{ tier_label('coalesce(overrides.tier, ' ~ tier_code('policed.policy_rank') ~ ')', 'label_zh') }} as tier_label_zh,
        {{ tier_label('coalesce(overrides.tier, ' ~ tier_code('policed.policy_rank') ~ ')', 'label_en') }} as tier_label_en,
        {{ tier_code('policed.rule_rank') }} as rule_tier,
        {{ tier_code('policed.policy_rank') }} as policy_tier,
        case
            when overrides.customer_id is not null then 'override'
            when policed.policy_rank <> policed.rule_rank then 'hysteresis'
            else 'rule'
        end as decided_by,
        -- a demotion resets the count: the next step down needs its own run of evaluations
        case
            when policed.policy_rank = policed.rule_rank or policed.policy_rank <> coalesce(policed.previous_policy_rank, policed.policy_rank)
                then 0
            else policed.below_count
        end as evaluations_below,
        overrides.customer_id is not null as is_overridden,
        overrides.reason as override_reason,
        overrides.set_by as override_set_by,
        overrides.valid_to as override_valid_to,
        case
            when overrides.customer_id is not null
                then format('override by %s until %s: %s', overrides.set_by, coalesce(overrides.valid_to::text, 'further notice'), overrides.reason)
            when policed.policy_rank <> policed.rule_rank
                then format(
                    'held at %s: below its line for %s of {{ sql_number(hyst["demote_after"]) }} evaluations (rules say %s)',
                    {{ tier_code('policed.policy_rank') }}, policed.below_count, {{ tier_code('policed.rule_rank') }}
                )
            {%- for tier in ruled_tiers %}
                {%- set c = sql_code(tier['code']) | trim %}
                when policed.rule_rank = {{ loop.index }} then
                    {{ sql_literal(c) }} || coalesce(' (branch ' || policed.branch_code || ')', '') || ': '
                    || concat_ws(
                        ' and ',
                        case
                            when policed.{{ c }}__min_score_percentile is not null
                                then format(
                                    'score percentile %s >= %s', round(policed.score_percentile::numeric, 4),
                                    trim_scale(policed.{{ c }}__min_score_percentile)
                                )
                        end,
                        case
                            when policed.{{ c }}__min_monetary is not null
                                then format('monetary %s >= %s', policed.monetary, trim_scale(policed.{{ c }}__min_monetary))
                        end,
                        case
                            when policed.{{ c }}__min_orders is not null
                                then format('orders %s >= %s', policed.orders_in_window, trim_scale(policed.{{ c }}__min_orders))
                        end
                    )
            {%- endfor %}
            else format(
                {{ sql_literal(ladder[-1]["code"] ~ ': no higher rule met (orders in window %s, monetary %s, score percentile %s)') }},
                policed.orders_in_window, policed.monetary, round(policed.score_percentile::numeric, 4)
            )
        end as tier_reason,
        round(policed.composite_score::numeric, 6) as composite_score,
        round(policed.score_percentile::numeric, 6) as score_percentile,
        {%- for name in spec['dimensions'] %}
            round(policed.{{ name }}_score::numeric, 6) as {{ name }}_score,
        {%- endfor %}
        policed.branch_code,
        policed.account_manager_id,
        policed.previous_tier,
        {{ sql_literal(var("tier_spec_version", "unversioned")) }}::text as tier_spec_version,
        {{ sql_literal(var("tier_spec_hash", "none")) }}::text as tier_spec_hash
    from policed
    left join overrides on policed.customer_id = overrides.customer_id
)

select * from final
