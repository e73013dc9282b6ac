{#- The CRM interaction channels tierline knows (EXTRACTS.md crm_interactions.channel), in the
    order the published per-channel columns take. Staging folds any other value to `other`;
    customer_value counts each known channel and `other`. -#}

{% macro interaction_channels(with_other=false) -%}
    {{- return(['phone', 'email', 'wechat', 'visit', 'web', 'social', 'event'] + (['other'] if with_other else [])) -}}
{%- endmacro %}
