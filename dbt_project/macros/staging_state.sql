{#- Incremental staging (docs/decisions.md, "Staging"). Every staging model is an incremental
    table in the persistent schema `state` (runs.state_schema) holding, per key, the winning
    version over a set of raw batches, with the winner's _batch_id, _extract_date and _line_no.
    `<state>.staging_state` records, per model, which batches that set is and the fingerprint of
    the model that built it. A run makes the table stand for the batches it sees
    (raw.visible_batches): rows of batches not folded in yet compete with the kept winners of
    their keys; keys whose kept winner came from a batch the run does not see (a run that failed a
    gate, a replaced load, a re-run of an earlier date) are decided again from every visible raw
    row of those keys; nothing else is read. A missing ledger, a changed model or a full refresh
    rebuilds the table from every visible batch. The as-of filters are applied by the readers. -#}

{% macro staging_state_version() -%}
    {#- Bump when a cleaning macro changes what staging writes: every staging table is rebuilt. -#}
    {{- return('1') -}}
{%- endmacro %}

{% macro staging_state_schema() -%}
    {#- where the staging models build (dbt_project.yml) -#}
    {{- return(var('schemas', {}).get('state', var('schemas', {}).get('staging', 'staging'))) -}}
{%- endmacro %}

{% macro staging_state_ledger() -%}
    {{- return(adapter.quote(staging_state_schema()) ~ '.staging_state') -}}
{%- endmacro %}

{% macro staging_state_create_ledger() -%}
    {#- on-run-start: once per invocation, before the staging models run in parallel -#}
    create schema if not exists {{ adapter.quote(staging_state_schema()) }};
    create table if not exists {{ staging_state_ledger() }} (
        model text primary key,
        version text not null,
        batches bigint [] not null,
        as_of_date date not null,
        run_id text not null,
        updated_at timestamptz not null default now()
    )
{%- endmacro %}

{% macro staging_state_fingerprint(identifier=none) -%}
    {#- of this model, or of the model `identifier`: its code and its key (set in its properties;
        a node without one reads it as null or undefined depending on where it is read from) -#}
    {%- set node = model if identifier is none else
        (graph.nodes.values() | selectattr('name', 'equalto', identifier) | first) %}
    {#- and the vars a per-customer state model declares it is computed with (its config's
        meta.state_vars: the windows of int_customers__order_totals): a changed window rebuilds it -#}
    {%- set declared = [] %}
    {%- for name in ((node.config.meta or {}).get('state_vars') or []) %}{% do declared.append(var(name)) %}{% endfor %}
    {{- return(local_md5(staging_state_version() ~ '|' ~ node.raw_code ~ '|' ~ (node.config.unique_key or '')
        ~ '|' ~ var('business_timezone') ~ '|' ~ var('currency', 'CNY') ~ '|' ~ tojson(declared, sort_keys=true))) -}}
{%- endmacro %}

{% macro staging_visible_batches() -%}
    select b from raw.visible_batches({{ as_of() }}, {{ sql_literal(var("run_id")) }}) as v (b)
{%- endmacro %}

{% macro staging_state_plan(identifier=none) -%}
    {#- For this model (or the state model `identifier`): {'incremental': bool, 'new': [batch ids
        not folded in yet], 'gone': [folded batches the run does not see], 'batches': the folded
        batches as text, 'as_of': the run date it was last advanced for}; incremental only when
        the table and its ledger row are current. -#}
    {%- set full = {'incremental': false, 'new': [], 'gone': [], 'batches': none, 'as_of': none} %}
    {%- if not execute %}
        {{- return(full) }}
    {%- endif %}
    {%- if identifier is none %}
        {%- if not is_incremental() %}
            {{- return(full) }}
        {%- endif %}
        {%- set identifier = this.identifier %}
    {%- elif adapter.get_relation(database=target.database, schema=staging_state_schema(), identifier=identifier) is none %}
        {{- return(full) }}
    {%- endif %}
    {%- set ledger = adapter.get_relation(database=target.database, schema=staging_state_schema(), identifier='staging_state') %}
    {%- if ledger is none %}
        {{- return(full) }}
    {%- endif %}
    {%- set query %}
        with visible as ({{ staging_visible_batches() }})
        select
            s.version,
            coalesce((select string_agg(b::text, ',' order by b) from visible where b <> all(s.batches)), ''),
            coalesce((select string_agg(g::text, ',' order by g) from unnest(s.batches) as g
                      where g not in (select b from visible)), ''),
            array_to_string(s.batches, ','),
            s.as_of_date::text
        from {{ staging_state_ledger() }} as s
        where s.model = {{ sql_literal(identifier) }}
    {%- endset %}
    {%- set rows = run_query(query).rows %}
    {%- if rows | length == 0 or rows[0][0] != staging_state_fingerprint(identifier if identifier != this.identifier else none) %}
        {{- return(full) }}
    {%- endif %}
    {%- set new = rows[0][1].split(',') | reject('equalto', '') | map('int') | list %}
    {%- set gone = rows[0][2].split(',') | reject('equalto', '') | map('int') | list %}
    {{- return({'incremental': true, 'new': new, 'gone': gone, 'batches': rows[0][3], 'as_of': rows[0][4]}) }}
{%- endmacro %}

{% macro staging_key() -%}
    {%- set key = config.get('unique_key') %}
    {{- return([key] if key is string else key) }}
{%- endmacro %}

{% macro id_list(ids) -%}
    {#- for `x in (...)`: an empty list matches nothing -#}
    {%- if ids | length == 0 %}null::bigint{% else %}{{ ids | join(', ') }}{% endif %}
{%- endmacro %}

{% macro id_array(ids) -%}
    {#- for `x <> all(...)`: an empty array excludes nothing -#}
    {%- if ids | length == 0 %}'{}'::bigint []{% else %}array[{{ ids | join(', ') }}]::bigint []{% endif %}
{%- endmacro %}

{% macro staging_lineage_columns() -%}
    {#- the raw row each staging row comes from: its batch, extract and line -#}
    _extract_date, _line_no, batch_id as _batch_id
{%- endmacro %}

{% macro latest_version(relation, order_by='updated_at desc') -%}
    {#- Upsert semantics of the extract contract: per key (the model's unique_key), the row with
        the newest `order_by` wins; ties go to the latest extract and the last line. -#}
    {%- set key = staging_key() | join(', ') %}
    {%- set order = key ~ ', ' ~ order_by ~ ', _extract_date desc, _line_no desc' %}
    {%- set plan = staging_state_plan() %}
    {%- if not plan.incremental %}
    select distinct on ({{ key }}) *
    from ({{ visible_raw(relation) }}) as visible
    order by {{ order }}
    {%- else %}
    {%- set order_column = order_by.split()[0] %}
    {%- set contest_columns = key ~ (', ' ~ order_column if order_column != '_extract_date' else '') ~ ', _extract_date, _line_no' %}
    -- incremental: new batches {{ plan.new }}, batches no longer visible {{ plan.gone }}
    with _candidates as (
        select * from {{ relation }} where batch_id in ({{ id_list(plan.new) }})
        {%- if plan.gone %}
        union all
        -- keys whose kept version came from a batch this run does not see: every visible row again
        select * from ({{ visible_raw(relation) }}) as visible
        where batch_id <> all({{ id_array(plan.new) }})
            and ({{ key }}) in (select {{ key }} from {{ this }} where _batch_id in ({{ id_list(plan.gone) }}))
        {%- endif %}
    ),

    _contest as (
        select {{ contest_columns }}, batch_id from _candidates
        union all
        -- the kept (still visible) winners of the keys in question compete with them
        select {{ contest_columns }}, _batch_id from {{ this }}
        where ({{ key }}) in (select {{ key }} from _candidates)
        {%- if plan.gone %}
            and _batch_id not in ({{ id_list(plan.gone) }})
        {%- endif %}
    )

    select _candidates.*
    from _candidates
    inner join (
        select distinct on ({{ key }}) batch_id, _line_no
        from _contest
        order by {{ order }}
    ) as _winners
        on _candidates.batch_id = _winners.batch_id and _candidates._line_no = _winners._line_no
    {%- endif %}
{%- endmacro %}

{% macro staging_state_prepare() -%}
    {#- pre-hook: a table built by another model version or from an unknown set of batches is
        emptied (the model then selects every visible row). -#}
    {%- if execute and is_incremental() and not staging_state_plan().incremental %}
    truncate {{ this }}
    {%- endif %}
{%- endmacro %}

{% macro staging_state_index(kind) -%}
    {#- the name of a state table's index (made by staging_state_record, dropped with a rebuild's
        truncate by customer_state_prepare): `key` (a staging model's key; a per-customer model's
        customer_id) or `unique_key` (a per-customer model's own key when it is another) -#}
    {{- return(adapter.quote(this.identifier ~ '__' ~ kind)) }}
{%- endmacro %}

{% macro staging_state_record(unique=true) -%}
    {#- post-hook, in the model's transaction: drop the kept rows of batches the run does not see
        (their keys have no visible row left, or were decided again above), index the key, and
        record the batches the table now stands for. Per-customer models (unique=false) are never
        advanced past a batch that is gone: they are rebuilt instead; they are indexed by
        customer_id, and a unique_key in their config is held by a unique index (not a `unique`
        test, which would read the whole table every run). -#}
    {%- set plan = staging_state_plan() %}
    {%- if plan.gone and unique %}
    delete from {{ this }} where _batch_id in ({{ id_list(plan.gone) }});
    {%- endif %}
    {%- set key = staging_key() or [] %}
    create {{ 'unique ' if unique or key == ['customer_id'] }}index if not exists {{ staging_state_index('key') }}
        on {{ this }} ({{ (key if unique else ['customer_id']) | join(', ') }});
    {%- if not unique and key and key != ['customer_id'] %}
    create unique index if not exists {{ staging_state_index('unique_key') }}
        on {{ this }} ({{ key | join(', ') }});
    {%- endif %}
    {%- if not unique %}
    -- a rebuilt table's row count is unknown to the planner (a truncate forgets it) until it is
    -- analyzed, and customer_state_over_half measures how much a run touches against it
    do $$ begin
        if (select c.reltuples < 0 from pg_class as c
            where c.oid = {{ sql_literal(adapter.quote(this.schema) ~ '.' ~ adapter.quote(this.identifier)) }}::regclass) then
            analyze {{ this }};
        end if;
    end $$;
    {%- endif %}
    insert into {{ staging_state_ledger() }} (model, version, batches, as_of_date, run_id)
    values (
        {{ sql_literal(this.identifier) }}, {{ sql_literal(staging_state_fingerprint()) }},
        array(select b from ({{ staging_visible_batches() }}) as visible order by b),
        {{ as_of() }}, {{ sql_literal(var("run_id")) }}
    )
    on conflict (model) do update set
        version = excluded.version, batches = excluded.batches, as_of_date = excluded.as_of_date,
        run_id = excluded.run_id, updated_at = now()
{%- endmacro %}

{#- Per-customer state (the models in models/intermediate/state, in the state schema): a run
    deletes the rows it must compute again and inserts them, computed from staging: the orders
    int_orders__touched names (an order's value depends on that order alone) in
    int_orders__valued, their customers (int_customers__touched) in the models keyed by
    customer (in the purchase days, only their days from the first one a touched order
    changes: customer_state_from), with the customers who have a purchase day that the start of a counting window
    passed since the last run (customer_state_windows). Only when the model stood for the same
    batches and run date as int_orders__valued did when the touched rows were found (and its code
    and declared vars are unchanged, nothing it folded in is gone): else it is rebuilt whole. -#}

{% macro customer_state_windows() -%}
    {#- The lengths in days of every window ending at the run date that the per-customer state
        counts purchase days in (vars windows, lifecycle, clv; int_customers__order_totals and
        __btyd_totals). A window's start moves with the run date: a customer with a purchase day
        it passed is computed again. Listed here, not derived from the models' meta.state_vars:
        those name whole vars (mappings), of which only these keys are window lengths. -#}
    {%- set w, lc, clv = var('windows'), var('lifecycle'), var('clv') %}
    {%- set days = [w.frequency_days, w.monetary_days, w.trend_days, 2 * w.trend_days, lc.reactivated_window_days] %}
    {%- if clv.calibration_days %}{% do days.append(clv.calibration_days) %}{% endif %}
    {{- return(days | map('int') | unique | sort | list) }}
{%- endmacro %}

{% macro customer_state_stood_for(plan) -%}
    {#- what a per-customer state model stands for: its batches and its run date -#}
    {{- return(plan.batches ~ '@' ~ plan.as_of) }}
{%- endmacro %}

{#- Per grain of a per-customer state model (its unique_key; by customer when it has none): the
    touched set naming the keys a run computes again, and the state table whose rows measure
    how much of the state that is. -#}
{% macro customer_state_grains() -%}
    {{- return({
        'order_id': {'touched': 'int_orders__touched', 'measured_in': 'int_orders__valued'},
        'customer_id': {'touched': 'int_customers__touched', 'measured_in': 'int_customers__purchase_days'},
    }) -}}
{%- endmacro %}

{% macro customer_state_grain() -%}
    {%- set key = staging_key() or [] %}
    {{- return(key[0] if key | length == 1 and key[0] in customer_state_grains() else 'customer_id') }}
{%- endmacro %}

{% macro customer_state_counts_in_windows() -%}
    {#- A state model keyed by customer that declares the vars it is computed with (meta.state_vars:
        the windows of int_customers__order_totals and __btyd_totals) counts in windows ending at
        the run date: it computes again the customers a window's start passed too. -#}
    {{- return(customer_state_grain() == 'customer_id' and ((config.get('meta') or {}).get('state_vars') or []) | length > 0) }}
{%- endmacro %}

{% macro customer_state_measured(grain) -%}
    {#- the grain's measured table in the state schema (customer_state_grains), none before its
        first build -#}
    {{- return(adapter.get_relation(database=target.database, schema=staging_state_schema(), identifier=customer_state_grains()[grain].measured_in)) }}
{%- endmacro %}

{% macro customer_state_over_half_column(grain, in_windows) -%}
    {#- the column of int_customers__touched's marker row that holds the rebuild rule's answer for
        a grain, with or without the customers a window's start passed -#}
    {{- return('over_half_' ~ grain ~ ('_in_windows' if in_windows else '')) }}
{%- endmacro %}

{% macro customer_state_over_half(touched, grain) -%}
    {#- SQL: are the `touched` rows (a count) more than half of the grain's measured table (its
        planner row count)? A run that touches most of the state rebuilds it: deleting and
        inserting again more than half of a table's rows costs more than writing all of them (the
        100k bench's 10% day: purchase days 8.7-8.9 s by customer, 7.75 s rebuilt; its 1% day
        touched a third, 2.8 s). A table not built yet, or never analyzed, is kept up. -#}
    {%- set measured = customer_state_measured(grain) %}
    {%- if measured is none %}
    false
    {%- else %}
    (
        select c.reltuples > 0 and {{ touched }} > ceil(c.reltuples / 2)
        from pg_class as c where c.oid = {{ sql_literal(measured.include(database=false) | string) }}::regclass
    )
    {%- endif %}
{%- endmacro %}

{% macro customer_state_incremental() -%}
    {#- Is this state model kept up (rows of touched keys deleted and computed again) rather than
        rebuilt? Only when it stood for what int_orders__valued stood for when int_customers__touched
        found the touched keys, and those are at most half of the state (decided there, once per
        grain for every model: its over_half_* columns). -#}
    {%- set plan = staging_state_plan() %}
    {%- if not plan.incremental or plan.gone %}
        {{- return(false) }}
    {%- endif %}
    {%- set over_half = customer_state_over_half_column(customer_state_grain(), customer_state_counts_in_windows()) %}
    {%- set found = run_query("select from_batches, " ~ over_half ~ " from " ~ ref('int_customers__touched') ~ " where customer_id is null").rows %}
    {{- return(found | length == 1 and found[0][0] == customer_state_stood_for(plan) and not found[0][1]) }}
{%- endmacro %}

{% macro customer_state_from() -%}
    {#- A per-customer model whose rows are a customer's days (meta.state_from: the date column,
        int_customers__purchase_days) keeps a touched customer's rows before the earliest date a
        touched order of it has (int_customers__touched.from_date): only the later ones change. -#}
    {{- return((config.get('meta') or {}).get('state_from')) }}
{%- endmacro %}

{% macro customer_state_touched(relation=none) -%}
    {#- the condition on this state model's rows (of `relation`, an alias, when the condition
        names the table's own columns) that the run computes again: the touched set of the
        model's grain (int_orders__valued, keyed by order_id: an order's value depends on that
        order alone), by customer otherwise, with the customers a window's start passed only for
        a model that counts in windows (their purchase days did not change), and only from the
        customer's from_date on for a model of days (customer_state_from) -#}
    {%- set column = customer_state_grain() %}
    {%- set windowed = column != 'customer_id' or customer_state_counts_in_windows() %}
    {%- set touched = ref(customer_state_grains()[column].touched) %}
    {%- if customer_state_from() and not windowed %}
        {%- set own = (relation ~ '.') if relation else '' %}
        {{- 'exists (select from ' ~ touched ~ ' as touched where not touched.by_window and touched.customer_id = ' ~ own ~ 'customer_id and ' ~ own ~ adapter.quote(customer_state_from()) ~ ' >= touched.from_date)' }}
    {%- else %}
        {{- column ~ ' in (select ' ~ column ~ ' from ' ~ touched ~ ('' if windowed else ' where not by_window') ~ ')' }}
    {%- endif %}
{%- endmacro %}

{% macro customer_state_only_touched(only_touched, keyword='where') -%}
    {#- `keyword` and the touched condition when the model is kept up (customer_state_incremental),
        nothing when it is rebuilt -#}
    {%- if only_touched %}{{ keyword }} {{ customer_state_touched() }}{% endif %}
{%- endmacro %}

{% macro customer_state_prepare() -%}
    {#- pre-hook: take out the rows computed again, or everything when the model is rebuilt -#}
    {%- if execute and is_incremental() %}
        {%- if customer_state_incremental() %}
    delete from {{ this }} as kept where {{ customer_state_touched('kept') }}
        {%- else %}
    truncate {{ this }};
    -- rebuilt rows are loaded first and indexed after (staging_state_record): an index kept up
    -- row by row made the 100k 10% day's rebuild of the purchase days as slow as by customer
    drop index if exists {{ adapter.quote(this.schema) }}.{{ staging_state_index('key') }};
    drop index if exists {{ adapter.quote(this.schema) }}.{{ staging_state_index('unique_key') }}
        {%- endif %}
    {%- endif %}
{%- endmacro %}
