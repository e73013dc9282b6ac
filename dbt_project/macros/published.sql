{#- Reading the previous publication (the marts' memory: previous evaluations, history,
    baselines). The published tables are declared as the dbt source `published`. -#}

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

{% macro history_extends_publication(identifier) -%}
    {#- True when a history table can be extended from its published version instead of rebuilt
        from every published snapshot: the published table exists with every column this model
        builds, the run is not a full refresh nor a unit test, and its date comes after every
        published date (a re-run of a published or earlier date rebuilds, since later snapshots
        are part of the history). Extended, the model builds only the history's change: the
        rows it adds or alters (each ending stretch closed, each new one; for lifecycle_history
        also the open stretches evaluated again), and publish applies it by key; rebuilt, the
        whole history, which publish puts in place of the published one. Either way in the same
        transaction as the snapshots, so a published history always stands for every published
        snapshot. -#}
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

{% macro history_record_build(identifier) -%}
    {#- post-hook of a history model, in the transaction that writes its table: record in the
        run's row of tierline.build_runs (tierline.runs) whether the table holds the history's
        change or the whole history, which publish reads to apply it (runs.recorded_history_changes).
        The table and the record are committed together, so whatever builds the table again
        records again, and a table built again after the marts gate audited it is refused by
        publish anyway. No record outside a pipeline run (a bare `dbt build`: no
        tierline.build_runs, or no row for the run): publish then replaces the table whole. -#}
    {%- set runs = adapter.get_relation(database=target.database, schema='tierline', identifier='build_runs') %}
    {%- if execute and runs is not none %}
    update {{ runs }}
    set history_changes = array_remove(coalesce(history_changes, '{}'::text[]), {{ sql_literal(identifier) }})
    {%- if history_extends_publication(identifier) %} || array[{{ sql_literal(identifier) }}]::text[]{% endif %}
    where run_id = {{ sql_literal(var('run_id')) }} and as_of_date = {{ as_of() }}
    {%- endif %}
{%- endmacro %}
