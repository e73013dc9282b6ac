{#- Helpers of the history and actions marts (config/tierline.yml `actions`). -#}

{% macro published_snapshots(identifier, columns, compared_only=false) -%}
    {#- Every published row of a snapshot table in the publish schema except the run date's own
        slice (a re-run replaces it), with a fixed column list so that a model reading it compiles
        the same way on the first run (nothing published yet: no rows) and after a release that
        adds a column (rows published before it read null there). `columns` is a list of
        (name, type) pairs. With `compared_only`, only the publications a run compares itself
        with: the latest before the run's date and the latest on or before the start of the KPI
        churn period, each one slice read by the as_of_date index, so that a run does not read
        every snapshot published so far. -#}
    {%- set relation = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier=identifier) %}
    {%- if relation is none %}
    select
        {%- for name, type in columns %}
        null::{{ type }} as {{ name }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    where false
    {%- else %}
    {%- set existing = adapter.get_columns_in_relation(relation) | map(attribute='name') | list %}
    select
        {%- for name, type in columns %}
        {% if name in existing %}{{ name }}::{{ type }}{% else %}null::{{ type }}{% endif %} as {{ name }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    from {{ relation }}
    where as_of_date <> {{ as_of() }}
    {%- if compared_only %}
        and as_of_date in (
            (select max(as_of_date) from {{ relation }} where as_of_date < {{ as_of() }}),
            (select max(as_of_date) from {{ relation }}
                where as_of_date <= {{ as_of() }} - {{ actions_config()['kpi']['churn_period_days'] }})
        )
    {%- endif %}
    {%- endif %}
{%- endmacro %}

{% macro published_lifecycle_columns() -%}
    {#- The customer_lifecycle columns that later runs read back from the publication. -#}
    {{- return([('customer_id', 'text'), ('as_of_date', 'date'), ('lifecycle_stage', 'text'),
                ('churn_risk', 'numeric'), ('churn_risk_reason', 'text')]) }}
{%- endmacro %}

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

{% macro history_extends_publication(identifier) -%}
    {#- True when a history table can be extended from its published version instead of rebuilt
        from every published snapshot: the published table exists with every column this model
        builds, the run is not a full refresh nor a unit test, and its date comes after every
        published date (a re-run of a published or earlier date rebuilds, since later snapshots
        are part of the history). Published history tables are replaced whole in the same
        transaction as the snapshots, so they always stand for every published snapshot. -#}
    {%- if not execute or flags.FULL_REFRESH or model.resource_type == 'unit_test' %}
        {{- return(false) }}
    {%- endif %}
    {%- set relation = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier=identifier) %}
    {%- set log = adapter.get_relation(database=target.database, schema=var('publish_schema'), identifier='publication_log') %}
    {%- if relation is none or log is none %}
        {{- return(false) }}
    {%- endif %}
    {%- set published_columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | list %}
    {%- for column in model.columns %}
        {%- if column not in published_columns %}
            {{- return(false) }}
        {%- endif %}
    {%- endfor %}
    {%- set latest = run_query("select max(as_of_date) < " ~ as_of() ~ " as later from " ~ log) %}
    {{- return(latest.columns[0].values()[0] == true) }}
{%- endmacro %}
