-- Every fit of the predictive models (BG/NBD for purchases, Gamma-Gamma for spend) for the run
-- date, with its parameters and whether it was used or rejected (and why).
with

fits as (
    select * from {{ source('clv', 'clv_fits') }}
),

final as (
    select
        model,
        as_of_date,
        calibration_start,
        calibration_end,
        time_unit_days,
        parameters,
        log_likelihood,
        customers_used,
        converged,
        is_used,
        status
    from fits
)

select * from final
