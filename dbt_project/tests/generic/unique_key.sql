{#- A composite primary key: no two rows share the values of `columns` (dbt's own `unique` takes
    one column; dbt packages are not reachable here). -#}
{% test unique_key(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as rows_with_key
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
