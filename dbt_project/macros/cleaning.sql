{#- Cleaning helpers shared by the staging models. -#}

{% macro halfwidth(expr) -%}
    {#- Full-width ASCII variants (U+FF01..U+FF5E) and the ideographic space, as exports from
        Chinese input methods carry them, mapped to their ASCII forms. -#}
    translate({{ expr }}, '！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～　', '!"#$%&''()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~ ')
{%- endmacro %}

{% macro clean_text(expr) -%}
    nullif(btrim(regexp_replace({{ halfwidth(expr) }}, '\s+', ' ', 'g')), '')
{%- endmacro %}

{% macro clean_code(expr) -%}
    {#- Codes and short identifiers (channels, branch codes, currencies): folded and trimmed,
        lower-case; no regular expression, which would cost several times more per row. -#}
    nullif(lower(btrim({{ halfwidth(expr) }})), '')
{%- endmacro %}

{% macro phone_digits(expr) -%}
    regexp_replace({{ halfwidth(expr) }}, '[^0-9]', '', 'g')
{%- endmacro %}

{% macro e164_phone(digits) -%}
    {#- Mainland mobile numbers from their digits (phone_digits), in any of the shapes exports
        send, to E.164; anything else is null and flagged by has_unparsed_phone in the model. -#}
    case
        when {{ digits }} ~ '^1[3-9][0-9]{9}$' then '+86' || {{ digits }}
        when {{ digits }} ~ '^(00)?861[3-9][0-9]{9}$' then '+' || right({{ digits }}, 13)
    end
{%- endmacro %}

{% macro local_date(ts) -%}
    ({{ ts }} at time zone {{ sql_literal(var("business_timezone")) }})::date
{%- endmacro %}

{% macro as_of() -%}
    {{ sql_literal(var("as_of_date")) }}::date
{%- endmacro %}

{% macro generate_schema_name(custom_schema_name, node) -%}
    {#- Schemas are named exactly as configured (staging, intermediate, the build schema), not
        prefixed with the target schema, so the publish step and the gates know where to look. -#}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}

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
