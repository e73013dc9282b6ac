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
