{#- Helpers of the history and actions marts (config/tierline.yml `actions`). -#}

{% macro actions_config() -%}
    {#- The validated `actions` section, cross-checked against the tier ladder (which the config
        loader validates separately): a policy or KPI tier that is not a tier is an error that
        names the key, not a silently empty result. -#}
    {%- if not execute %}
        {#- parsing only collects refs; the project may be parsed without the pipeline's vars (lint) -#}
        {{- return({'care_window_days': 1, 'tier_policies': {}, 'early_warning': {'churn_risk_threshold': 1, 'churn_exclude_stages': []},
                    'kpi': {'churn_period_days': 1, 'top_tiers': [], 'top_customer_share': 0.1}}) }}
    {%- endif %}
    {%- set actions = var('actions') %}
    {%- set codes = var('tier_spec')['ladder'] | map(attribute='code') | list %}
    {%- for code in actions['tier_policies'] %}
        {%- if code not in codes %}
            {{ exceptions.raise_compiler_error("config/tierline.yml actions.tier_policies." ~ code ~ ": not a tier of the ladder; use one of " ~ codes | join(', ')) }}
        {%- endif %}
    {%- endfor %}
    {%- for code in actions['kpi']['top_tiers'] %}
        {%- if code not in codes %}
            {{ exceptions.raise_compiler_error("config/tierline.yml actions.kpi.top_tiers: " ~ code ~ " is not a tier of the ladder; use " ~ codes | join(', ')) }}
        {%- endif %}
    {%- endfor %}
    {{- return(actions) }}
{%- endmacro %}

{% macro birthday_in_year(birth_date, year) -%}
    {#- The birthday of `birth_date` in `year`; 29 February falls on 28 February in other years. -#}
    (make_date(({{ year }})::integer, extract(month from {{ birth_date }})::integer, 1)
        + least(
            extract(day from {{ birth_date }})::integer,
            extract(day from make_date(({{ year }})::integer, extract(month from {{ birth_date }})::integer, 1)
                + interval '1 month' - interval '1 day')::integer
        ) - 1)
{%- endmacro %}

{% macro stage_health(stage_expr) -%}
    {#- The health of a lifecycle stage (seed lifecycle_stages): a move to a higher value is up. -#}
    (select stage_codes.stage_health from {{ ref('lifecycle_stages') }} as stage_codes where stage_codes.lifecycle_stage = {{ stage_expr }})
{%- endmacro %}
