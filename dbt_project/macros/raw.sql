{#- The one way dbt reads the raw layer (tierline.batches): only the rows of the batches this run
    may see. Published batches of earlier extract dates, plus, for the run's date, the run's own
    pending batch (or the date's publication when the run loaded nothing for it). A batch whose
    run failed a gate, or that a later publication replaced, is never visible. -#}

{% macro visible_raw(relation) -%}
    select *
    from {{ relation }}
    where batch_id in (
        select raw.visible_batches({{ as_of() }}, {{ sql_literal(var("run_id")) }})
    )
{%- endmacro %}
