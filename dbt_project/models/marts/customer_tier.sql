-- The VIP tier (客户分级) of every CRM customer as of the run date. The composite score is the
-- weighted sum of the five dimensions of the tier specification, each the mean percentile rank
-- of its metrics among buyers; the ladder is evaluated from the top and the first tier whose
-- rule a customer meets wins. An active manual override from the CRM replaces the result.
{%- set spec = var('tier_spec') %}
{%- set ladder = spec['ladder'] %}
{%- set metrics = [] %}
{%- for dim in spec['dimensions'].values() %}{% for m in dim['metrics'] %}{% if m not in metrics %}{% do metrics.append(m) %}{% endif %}{% endfor %}{% endfor %}
{%- set previous = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='customer_tier') %}
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
        is_buyer
    from value
),

dimensions as (
    select
        customer_id,
        is_buyer,
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
        case when is_buyer then percent_rank() over (partition by is_buyer order by composite_score) else 0 end
            as score_percentile
    from dimensions
),

ruled as (
    select
        scored.*,
        value.monetary,
        value.orders_in_window,
        value.branch_code,
        value.account_manager_id,
        case
            {%- for tier in ladder[:-1] %}
            {%- set conditions = [] %}
            {%- if tier['min_score_percentile'] is not none %}{% do conditions.append('scored.is_buyer and scored.score_percentile >= ' ~ tier['min_score_percentile']) %}{% endif %}
            {%- if tier['min_monetary'] is not none %}{% do conditions.append('value.monetary >= ' ~ tier['min_monetary']) %}{% endif %}
            {%- if tier['min_orders'] is not none %}{% do conditions.append('value.orders_in_window >= ' ~ tier['min_orders']) %}{% endif %}
            when {{ conditions | join(' and ') }} then '{{ tier["code"] }}'
            {%- endfor %}
            else '{{ ladder[-1]["code"] }}'
        end as rule_tier
    from scored
    inner join value on scored.customer_id = value.customer_id
),

overrides as (
    select *
    from {{ ref('stg_crm__tier_overrides') }}
    where valid_from <= {{ as_of() }}
      and (valid_to is null or valid_to >= {{ as_of() }})
      and tier in ({% for tier in ladder %}'{{ tier["code"] }}'{% if not loop.last %}, {% endif %}{% endfor %})
),

previous as (
    {%- if previous is not none %}
    select distinct on (customer_id)
        customer_id,
        tier as previous_tier,
        as_of_date as previous_as_of_date
    from {{ previous }}
    where as_of_date < {{ as_of() }}
    order by customer_id, as_of_date desc
    {%- else %}
    select null::text as customer_id, null::text as previous_tier, null::date as previous_as_of_date
    where false
    {%- endif %}
),

final as (
    select
        ruled.customer_id,
        {{ as_of() }} as as_of_date,
        coalesce(overrides.tier, ruled.rule_tier) as tier,
        case coalesce(overrides.tier, ruled.rule_tier)
            {%- for tier in ladder %}
            when '{{ tier["code"] }}' then {{ loop.index }}
            {%- endfor %}
        end as tier_rank,
        case coalesce(overrides.tier, ruled.rule_tier)
            {%- for tier in ladder %}
            when '{{ tier["code"] }}' then '{{ tier["label_zh"] }}'
            {%- endfor %}
        end as tier_label_zh,
        case coalesce(overrides.tier, ruled.rule_tier)
            {%- for tier in ladder %}
            when '{{ tier["code"] }}' then '{{ tier["label_en"] }}'
            {%- endfor %}
        end as tier_label_en,
        ruled.rule_tier,
        overrides.customer_id is not null as is_overridden,
        overrides.reason as override_reason,
        overrides.set_by as override_set_by,
        overrides.valid_to as override_valid_to,
        case
            when overrides.customer_id is not null
                then format('override by %s until %s: %s', overrides.set_by, coalesce(overrides.valid_to::text, 'further notice'), overrides.reason)
            {%- for tier in ladder[:-1] %}
            when ruled.rule_tier = '{{ tier["code"] }}' then format(
                '{{ tier["code"] }}:{% if tier["min_score_percentile"] is not none %} score percentile %s >= {{ tier["min_score_percentile"] }}{% endif %}{% if tier["min_monetary"] is not none %} monetary %s >= {{ tier["min_monetary"] }}{% endif %}{% if tier["min_orders"] is not none %} orders %s >= {{ tier["min_orders"] }}{% endif %}'
                {%- if tier["min_score_percentile"] is not none %}, round(ruled.score_percentile::numeric, 4){% endif %}
                {%- if tier["min_monetary"] is not none %}, ruled.monetary{% endif %}
                {%- if tier["min_orders"] is not none %}, ruled.orders_in_window{% endif %})
            {%- endfor %}
            else format('{{ ladder[-1]["code"] }}: no higher rule met (orders in window %s, monetary %s)', ruled.orders_in_window, ruled.monetary)
        end as tier_reason,
        round(ruled.composite_score::numeric, 6) as composite_score,
        round(ruled.score_percentile::numeric, 6) as score_percentile,
        {%- for name in spec['dimensions'] %}
        round(ruled.{{ name }}_score::numeric, 6) as {{ name }}_score,
        {%- endfor %}
        ruled.branch_code,
        ruled.account_manager_id,
        previous.previous_tier,
        '{{ var("tier_spec_version", "unversioned") }}'::text as tier_spec_version,
        '{{ var("tier_spec_hash", "none") }}'::text as tier_spec_hash
    from ruled
    left join overrides on ruled.customer_id = overrides.customer_id
    left join previous on ruled.customer_id = previous.customer_id
)

select * from final
