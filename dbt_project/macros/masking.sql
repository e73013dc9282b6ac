{#- How contact data is shown outside the PII schema (issue 12, item 1): enough to recognise a
    customer on a call list, not enough to reach them. The unmasked values are published only to
    <publish schema>_pii (model customer_contact), which only the PII role reads. -#}

{% macro mask_phone(e164) -%}
    {#- +8613812341234 -> 138****1234: the first three and last four digits of an 11-digit national
        number (all staging publishes); anything shorter shows its last two digits only. -#}
    {%- set national = "regexp_replace(" ~ e164 ~ ", '^\\+(86)?', '')" %}
    case
        when length({{ national }}) >= 11
            then left({{ national }}, 3) || repeat('*', length({{ national }}) - 7) || right({{ national }}, 4)
        when {{ e164 }} is not null then repeat('*', greatest(length({{ national }}) - 2, 0)) || right({{ national }}, 2)
    end
{%- endmacro %}

{% macro mask_email(email) -%}
    {#- zhang.wei@example.com -> z***@example.com: the first character of the local part and the domain. -#}
    case
        when {{ email }} like '%_@_%' then left({{ email }}, 1) || '***@' || substring({{ email }} from '@([^@]*)$')
        when {{ email }} is not null then '***'
    end
{%- endmacro %}

{% macro birthday_month_day(birth_date) -%}
    {#- the month and day (MM-DD), never the year of birth -#}
    to_char({{ birth_date }}, 'MM-DD')
{%- endmacro %}
