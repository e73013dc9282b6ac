{#- The run's dates: the business time zone and the as-of date (vars). -#}

{% macro local_date(ts) -%}
    ({{ ts }} at time zone {{ sql_literal(var("business_timezone")) }})::date
{%- endmacro %}

{% macro as_of() -%}
    {{ sql_literal(var("as_of_date")) }}::date
{%- endmacro %}
