{#- Slowly changing history (type 2) from per-date evaluations. -#}

{% macro scd2_islands(snapshots, value) -%}
    {#- Gaps and islands over per-date evaluations: numbers each customer's uninterrupted
        stretches of one value; the first evaluation (no previous value) starts a stretch. -#}
    select
        *,
        sum(is_change) over (partition by customer_id order by as_of_date) as island
    from (
        select
            *,
            case when lag({{ value }}) over (partition by customer_id order by as_of_date) = {{ value }} then 0 else 1 end
                as is_change
        from {{ snapshots }}
    ) as changes
{%- endmacro %}
