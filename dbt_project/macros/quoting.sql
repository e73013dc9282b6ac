{#- How configuration values reach SQL (issue 8, item 8): text is always a quoted literal made
    here, numbers are checked to be numbers, and a code that becomes part of a column name is
    checked against the pattern the config loader enforces. Never paste a var() into SQL by hand. -#}

{% macro sql_literal(value) -%}
    {#- A SQL string literal holding exactly `value` (null for none). Quotes are doubled; a value
        with a backslash is written as an escape string (E'...') with the backslash doubled, so the
        literal means the same whatever standard_conforming_strings is. -#}
    {%- if value is none -%}
        null
    {%- else -%}
        {%- set text = value | string -%}
        {%- if '\x00' in text -%}
            {{ exceptions.raise_compiler_error("a configuration value contains a NUL character: " ~ text[:40]) }}
        {%- endif -%}
        {%- if '\\' in text -%}
            E'{{ text | replace('\\', '\\\\') | replace("'", "''") }}'
        {%- else -%}
            '{{ text | replace("'", "''") }}'
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{% macro sql_number(value) -%}
    {#- A configured number as SQL (null for none); anything else is a compile error. -#}
    {%- if value is none -%}
        null
    {%- elif value is number and value is not boolean and value == value -%}
        {{ value }}
    {%- else -%}
        {{ exceptions.raise_compiler_error("expected a number in the configuration, got " ~ (value | string)[:40]) }}
    {%- endif -%}
{%- endmacro %}

{% macro sql_code(value) -%}
    {#- A code (tier code) that is also part of SQL column names: a-z, 0-9 and _, starting with a letter. -#}
    {%- if value is string and modules.re.fullmatch('[a-z][a-z0-9_]{0,39}', value) -%}
        {{ value }}
    {%- else -%}
        {{ exceptions.raise_compiler_error("not a code (a-z, 0-9 and _, starting with a letter): " ~ (value | string)[:40]) }}
    {%- endif -%}
{%- endmacro %}
