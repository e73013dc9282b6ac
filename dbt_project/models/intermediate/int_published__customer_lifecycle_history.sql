-- depends_on: {{ source('published', 'customer_lifecycle') }}
-- Every published customer_lifecycle evaluation except the run date's own slice: what
-- lifecycle_history is rebuilt from when it cannot extend its publication (ephemeral, so dbt
-- unit tests can stand in for the published table; empty on the first run).
{{ config(materialized='ephemeral') }}
with

published as (
    {{ published_snapshots('customer_lifecycle', published_lifecycle_columns()) }}
),

final as (
    select * from published
)

select * from final
