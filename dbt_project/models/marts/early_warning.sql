-- Early-warning list (预警): customers at risk, ranked within each warning type so that the most
-- urgent come first. 'demotion': the rules put the customer below the current tier and only
-- hysteresis holds it; 'churn': churn risk at or above actions.early_warning.churn_risk_threshold,
-- ranked by the value at risk so that the valuable customers come first.
{%- set spec = var('tier_spec') %}
{%- set ladder = spec['ladder'] %}
{%- set branches = spec.get('branches') or {} %}
{%- set demote_after = (spec.get('hysteresis') or {}).get('demote_after', 1) %}
{%- set warning = actions_config()['early_warning'] %}
{%- set fields = ['min_score_percentile', 'min_monetary', 'min_orders'] %}
{%- set by_code = {} %}
{%- for tier in ladder %}{% do by_code.update({tier['code']: tier}) %}{% endfor %}
{%- set lines = [] %}
{%- for tier in ladder[:-1] %}{% do lines.append({'branch': none, 'code': tier['code'], 'values': tier}) %}{% endfor %}
{%- for branch, codes in branches.items() %}{% for code, given in codes.items() %}
    {%- set merged = {} %}
    {%- for field in fields %}{% do merged.update({field: given[field] if given.get(field) is not none else by_code[code][field]}) %}{% endfor %}
    {%- do lines.append({'branch': branch, 'code': code, 'values': merged}) %}
{%- endfor %}{% endfor %}
with

tiers as (
    select
        customer_id,
        {{ as_of() }} as as_of_date,
        tier,
        tier_rank,
        rule_tier,
        {{ tier_rank('rule_tier') }} as rule_tier_rank,
        decided_by,
        evaluations_below,
        score_percentile,
        branch_code,
        account_manager_id
    from {{ ref('customer_tier') }}
),

stages as (
    select
        customer_id,
        lifecycle_stage,
        churn_risk,
        churn_risk_reason
    from {{ ref('customer_lifecycle') }}
),

value as (
    select
        customer_id,
        monetary,
        predicted_clv
    from {{ ref('customer_value') }}
),

thresholds as (
    -- the line of every ruled tier: the ladder's (branch_code null) and each branch's own
    select *
    from (
        values
        {%- for line in lines %}
            (
                {{ sql_literal(line['branch'] or none) }}::text, {{ sql_literal(line["code"]) }}
                {%- for field in fields %}, {{ sql_number(line['values'][field]) }}::numeric{% endfor %}
            )
            {%- if not loop.last %},{% endif %}
        {%- endfor %}
    ) as lines (branch_code, tier, min_score_percentile, min_monetary, min_orders)
),

held as (
    select
        tiers.*,
        coalesce(branch_lines.min_score_percentile, ladder_lines.min_score_percentile) as line_score_percentile,
        coalesce(branch_lines.min_monetary, ladder_lines.min_monetary) as line_monetary
    from tiers
    left join thresholds as branch_lines
        on tiers.branch_code = branch_lines.branch_code and tiers.tier = branch_lines.tier
    left join thresholds as ladder_lines
        on ladder_lines.branch_code is null and tiers.tier = ladder_lines.tier
    where tiers.decided_by = 'hysteresis' and tiers.rule_tier_rank > tiers.tier_rank
),

demotions as (
    select
        held.customer_id,
        held.as_of_date,
        'demotion' as warning_type,
        held.tier,
        held.rule_tier,
        stages.lifecycle_stage,
        held.evaluations_below,
        greatest({{ sql_number(demote_after) }} - held.evaluations_below, 1) as evaluations_until_demotion,
        held.score_percentile,
        -- how far below the current tier's line (0 = meets it; null = the tier has no such line)
        case
            when held.line_score_percentile is not null
                then greatest(held.line_score_percentile - held.score_percentile, 0)
        end as score_gap,
        case
            when held.line_monetary is not null
                then greatest(held.line_monetary - value.monetary, 0)
        end as monetary_gap,
        stages.churn_risk,
        value.monetary,
        value.predicted_clv,
        null::numeric as value_at_risk,
        format(
            'rules say %s, held at %s by hysteresis (%s of {{ sql_number(demote_after) }} evaluations below); short of the %s line by %s',
            held.rule_tier, held.tier, held.evaluations_below, held.tier,
            concat_ws(
                ', ',
                case
                    when held.line_score_percentile > held.score_percentile
                        then format(
                            'score percentile %s (%s < %s)', round(held.line_score_percentile - held.score_percentile, 4),
                            round(held.score_percentile, 4), held.line_score_percentile
                        )
                end,
                case
                    when held.line_monetary > value.monetary
                        then format('monetary %s (%s < %s)', held.line_monetary - value.monetary, value.monetary, held.line_monetary)
                end
            )
        ) as reason,
        held.branch_code,
        held.account_manager_id
    from held
    left join stages on held.customer_id = stages.customer_id
    left join value on held.customer_id = value.customer_id
),

churn as (
    select
        tiers.customer_id,
        tiers.as_of_date,
        'churn' as warning_type,
        tiers.tier,
        tiers.rule_tier,
        stages.lifecycle_stage,
        tiers.evaluations_below,
        null::integer as evaluations_until_demotion,
        tiers.score_percentile,
        null::numeric as score_gap,
        null::numeric as monetary_gap,
        stages.churn_risk,
        value.monetary,
        value.predicted_clv,
        -- predicted CLV already discounts by P(alive), so a big customer slipping away has a small
        -- one; the larger of it and the past window's revenue keeps such customers on top
        round(stages.churn_risk * greatest(coalesce(value.predicted_clv, 0), coalesce(value.monetary, 0)), 2)
            as value_at_risk,
        format(
            'churn risk %s >= {{ sql_number(warning["churn_risk_threshold"]) }} (%s): %s',
            stages.churn_risk, stages.lifecycle_stage, stages.churn_risk_reason
        ) as reason,
        tiers.branch_code,
        tiers.account_manager_id
    from tiers
    inner join stages on tiers.customer_id = stages.customer_id
    left join value on tiers.customer_id = value.customer_id
    where
        stages.churn_risk >= {{ sql_number(warning['churn_risk_threshold']) }}
        {%- if warning['churn_exclude_stages'] %}
            and stages.lifecycle_stage not in ({% for stage in warning['churn_exclude_stages'] %}{{ sql_literal(stage) }}{% if not loop.last %}, {% endif %}{% endfor %})
        {%- endif %}
),

ranked as (
    select
        *,
        row_number() over (
            partition by warning_type
            order by
                evaluations_until_demotion asc nulls last, score_gap desc nulls last,
                value_at_risk desc nulls last, churn_risk desc nulls last, monetary desc nulls last, customer_id asc
        ) as rank_in_type
    from (
        select * from demotions
        union all
        select * from churn
    ) as warnings
),

final as (
    select
        customer_id,
        as_of_date,
        warning_type,
        rank_in_type::integer as rank_in_type,
        tier,
        rule_tier,
        lifecycle_stage,
        evaluations_below,
        evaluations_until_demotion::integer as evaluations_until_demotion,
        score_percentile,
        score_gap,
        monetary_gap::numeric(18, 2) as monetary_gap,
        churn_risk,
        monetary,
        predicted_clv,
        value_at_risk::numeric(18, 2) as value_at_risk,
        reason,
        branch_code,
        account_manager_id
    from ranked
)

select * from final
