{#- Where dbt builds: schema names as configured. -#}

{% macro generate_schema_name(custom_schema_name, node) -%}
    {#- Schemas are named exactly as configured (staging, intermediate, the build schema), not
        prefixed with the target schema, so the publish step and the gates know where to look. -#}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
