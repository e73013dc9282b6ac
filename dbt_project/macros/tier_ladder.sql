{#- Tier ladder lookups, generated from the tier specification (var tier_spec). -#}
{% macro tier_code(rank_expr) -%}
    case {{ rank_expr }}
        {%- for tier in var('tier_spec')['ladder'] %}
        when {{ loop.index }} then {{ sql_literal(tier["code"]) }}
        {%- endfor %}
    end
{%- endmacro %}

{% macro tier_rank(code_expr) -%}
    case {{ code_expr }}
        {%- for tier in var('tier_spec')['ladder'] %}
        when {{ sql_literal(tier["code"]) }} then {{ loop.index }}
        {%- endfor %}
    end
{%- endmacro %}

{% macro tier_label(code_expr, label) -%}
    case {{ code_expr }}
        {%- for tier in var('tier_spec')['ladder'] %}
        when {{ sql_literal(tier["code"]) }} then {{ sql_literal(tier[label]) }}
        {%- endfor %}
    end
{%- endmacro %}
