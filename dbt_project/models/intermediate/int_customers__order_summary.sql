-- Per customer, everything the value, tier and lifecycle marts need from the order history,
-- over the configured windows ending at the as-of date: this run's copy of the per-customer state
-- int_customers__order_totals (the marts read the run's own tables; the state moves on with
-- the next run).
select * from {{ ref('int_customers__order_totals') }}
