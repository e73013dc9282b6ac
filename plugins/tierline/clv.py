"""Predicted customer value: fit BG/NBD and Gamma-Gamma on the warehouse's summary, predict per customer.

The per-customer summary is computed in SQL (``int_customers__btyd_summary``); this step reads
it with one COPY, fits both models (:mod:`tierline.btyd`), and writes two tables next to it that
the marts read as sources, in the run's intermediate schema: ``clv_predictions`` (per customer) and
``clv_fits`` (per model; the ``clv_model_fit`` mart publishes it). When history is
too thin or a fit does not converge or leaves its configured bounds, the models are not used: a
warning says why, and rule-based values (the customer's own historical rate and spend) take
their place, marked in ``clv_method``.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from psycopg import sql

from tierline import btyd
from tierline.config import Clv

log = logging.getLogger(__name__)

SUMMARY = "int_customers__btyd_summary"


@dataclass
class ClvOutcome:
    method: str
    customers: int
    problems: list[str]
    fits: dict[str, dict]


def _read_summary(conn, schema: str) -> pd.DataFrame:
    """The summary in one order (by customer): the fit's sums then add the same numbers in the
    same order whatever order the table's rows are stored in, and the same data gives the same
    parameters to the last digit (the per-customer state rewrites the rows a run touched, so an
    incremental chain stores them in another order than a rebuild)."""
    buffer = io.BytesIO()
    query = sql.SQL("copy (select customer_id, frequency, recency, t_age, monetary_value from {}.{} "
                    "order by customer_id) to stdout with (format csv, header true)").format(sql.Identifier(schema), sql.Identifier(SUMMARY))
    with conn.cursor().copy(query) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    return pd.read_csv(buffer, dtype={"customer_id": "string"})


def _fit_row(model: str, fit, as_of: date, cfg: Clv, used: bool, problems: list[str]) -> dict:
    return {
        "model": model,
        "as_of_date": as_of.isoformat(),
        "calibration_start": (as_of - timedelta(days=cfg.calibration_days)).isoformat() if cfg.calibration_days else None,
        "calibration_end": as_of.isoformat(),
        "time_unit_days": cfg.time_unit_days,
        "parameters": json.dumps({k: float(v) if np.isfinite(v) else None for k, v in fit.params().items()}),
        "log_likelihood": fit.log_likelihood if np.isfinite(fit.log_likelihood) else None,
        "customers_used": fit.n_customers,
        "converged": fit.converged,
        "is_used": used,
        "status": "used" if used else "rejected: " + "; ".join(problems),
    }


def _rule_based(summary: pd.DataFrame, cfg: Clv) -> pd.DataFrame:
    """Each customer's own history projected forward: purchase rate times spend, discounted."""
    frequency = summary["frequency"].to_numpy(float)
    age = summary["t_age"].to_numpy(float)
    rate = np.divide(frequency, age, out=np.zeros_like(frequency), where=age > 0)
    expected = rate * cfg.horizon_periods
    value = summary["monetary_value"].to_numpy(float)
    discount = np.mean(1 / (1 + cfg.discount_rate_per_period) ** np.arange(1, cfg.horizon_periods + 1))
    return pd.DataFrame({"customer_id": summary["customer_id"], "p_alive": np.nan,
                         "expected_purchases": expected, "expected_average_order_value": value,
                         "predicted_clv": expected * value * discount, "clv_method": "rule_based"})


def fit_and_predict(conn, *, as_of: date, cfg: Clv, schema: str) -> ClvOutcome:
    """Fit on the run's summary in ``schema`` (the run's intermediate schema) and write the
    predictions and fits beside it."""
    summary = _read_summary(conn, schema)
    args = (summary["frequency"], summary["recency"], summary["t_age"])
    bg = btyd.fit_bgnbd(*args)
    gg = btyd.fit_gamma_gamma(summary["frequency"], summary["monetary_value"])
    problems = [f"BG/NBD: {p}" for p in btyd.check_fit(
        bg, min_customers=cfg.min_customers, min_repeaters=cfg.min_repeaters,
        bounds={k: v for k, v in cfg.bounds.items() if k in ("r", "alpha", "a", "b")})]
    problems += [f"Gamma-Gamma: {p}" for p in btyd.check_fit(
        gg, min_customers=cfg.min_repeaters, min_repeaters=cfg.min_repeaters,
        bounds={k: v for k, v in cfg.bounds.items() if k in ("p", "q", "v")})]
    if not cfg.enabled:
        problems = ["clv.enabled is false"]

    if problems:
        log.warning("predictive models not used for %s, falling back to rule-based values: %s",
                    as_of, "; ".join(problems))
        predictions = _rule_based(summary, cfg)
        method = "rule_based"
    else:
        monetary = summary["monetary_value"]
        predictions = pd.DataFrame({
            "customer_id": summary["customer_id"],
            "p_alive": btyd.p_alive(bg, *args),
            "expected_purchases": btyd.expected_purchases(bg, cfg.horizon_periods, *args),
            "expected_average_order_value": btyd.expected_average_value(gg, summary["frequency"], monetary),
            "predicted_clv": btyd.clv(bg, gg, *args, monetary, horizon_periods=cfg.horizon_periods,
                                      discount_rate_per_period=cfg.discount_rate_per_period),
            "clv_method": "bgnbd_gamma_gamma",
        })
        method = "bgnbd_gamma_gamma"

    fits = [_fit_row("bgnbd", bg, as_of, cfg, not problems, problems),
            _fit_row("gamma_gamma", gg, as_of, cfg, not problems, problems)]
    _write(conn, schema, predictions, fits)
    return ClvOutcome(method, len(predictions), problems, {f["model"]: f for f in fits})


def _write(conn, schema: str, predictions: pd.DataFrame, fits: list[dict]) -> None:
    ident = sql.Identifier
    with conn.transaction():
        conn.execute(sql.SQL("create schema if not exists {}").format(ident(schema)))
        conn.execute(sql.SQL("drop table if exists {}.clv_predictions, {}.clv_fits").format(
            ident(schema), ident(schema)))
        conn.execute(sql.SQL(
            "create table {}.clv_predictions (customer_id text primary key, p_alive double precision, "
            "expected_purchases double precision, expected_average_order_value double precision, "
            "predicted_clv double precision, clv_method text not null)").format(ident(schema)))
        buffer = io.StringIO()
        predictions.round(6).to_csv(buffer, index=False, header=False, na_rep="")
        buffer.seek(0)
        with conn.cursor().copy(sql.SQL("copy {}.clv_predictions from stdin with (format csv)").format(
                ident(schema))) as copy:
            while chunk := buffer.read(1 << 22):
                copy.write(chunk)
        conn.execute(sql.SQL(
            "create table {}.clv_fits (model text not null, as_of_date date not null, calibration_start date, "
            "calibration_end date not null, time_unit_days double precision not null, parameters jsonb not null, "
            "log_likelihood double precision, customers_used bigint not null, converged boolean not null, "
            "is_used boolean not null, status text not null)").format(ident(schema)))
        for fit in fits:
            conn.execute(sql.SQL(
                "insert into {}.clv_fits values (%(model)s, %(as_of_date)s, %(calibration_start)s, "
                "%(calibration_end)s, %(time_unit_days)s, %(parameters)s, %(log_likelihood)s, %(customers_used)s, "
                "%(converged)s, %(is_used)s, %(status)s)").format(ident(schema)), fit)
