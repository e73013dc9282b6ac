"""Buy-till-you-die models: BG/NBD (purchase counts, P(alive)) and Gamma-Gamma (spend), fitted by
plain scipy maximum likelihood.

References: Fader, Hardie and Lee, "Counting Your Customers the Easy Way" (Marketing Science, 2005)
for BG/NBD; Fader, Hardie and Lee, "RFM and CLV: Using Iso-Value Curves" (JMR, 2005) and Fader and
Hardie's note "The Gamma-Gamma Model of Monetary Value" (2013) for Gamma-Gamma.

Inputs are the per-customer calibration summary in one time unit (weeks by default):

- ``frequency`` (x): number of repeat purchase days, i.e. distinct purchase days minus one;
- ``recency`` (t_x): time from the first to the last purchase day (0 when x = 0);
- ``T``: time from the first purchase day to the end of the calibration period;
- ``monetary_value``: mean spend of the repeat purchase days (the first purchase is excluded).

``tierline_dev.holdout.calibration_summary`` is the reference implementation of that convention
(the pipeline's is the SQL model ``int_customers__btyd_summary``).

Every prediction function returns finite numpy arrays: inputs are validated (a ``ValueError``
names the offending rows) and results are clipped to their theoretical range, see each function.
Whether a fit is usable is the caller's decision through :func:`check_fit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special

# Log-parameter search box: wide enough for any time unit from hours to years, narrow enough that
# exp() stays finite. A parameter ending on this box means the likelihood has no interior maximum.
_LOG_LOWER = math.log(1e-8)
_LOG_UPPER = math.log(1e8)

# Half-width of the band around the removable singularities of the conditional-expectation closed
# form (a = 1, and a + b + x - 1 = 0); inside it the value is interpolated linearly between the two
# band edges, which is accurate to ~1e-8 relative while the cancellation error at the edges is ~1e-12.
_SINGULAR_BAND = 1e-4

# L-BFGS-B works on the mean log-likelihood per customer (order 1), so these are absolute tolerances
# tight enough to pin the CDNOW estimates to 4 significant digits.
_FTOL = 1e-14
_GTOL = 1e-9
# A projected gradient this small still counts as converged when the line search gives up: that
# happens when the optimum is reached to machine precision.
_CONVERGED_GRADIENT = 1e-5


@dataclass(frozen=True)
class BgNbdFit:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    converged: bool
    n_customers: int
    n_repeaters: int
    message: str
    iterations: int

    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class GammaGammaFit:
    p: float
    q: float
    v: float
    log_likelihood: float
    converged: bool
    n_customers: int
    message: str
    iterations: int

    def params(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "v": self.v}

    @property
    def population_mean(self) -> float:
        """Mean spend per transaction across customers, p*v/(q-1); infinite when q <= 1."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else math.inf


# ---------------------------------------------------------------------------------------------
# Input handling


def _vector(name: str, values, n: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} values, expected {n}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s), first at position {int(np.argmax(bad))}")
    return array


def _fail_where(mask: np.ndarray, what: str) -> None:
    if mask.any():
        raise ValueError(f"{int(mask.sum())} row(s) {what}, first at position {int(np.argmax(mask))}")


def _rfm_arrays(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = _vector("frequency", frequency)
    t_x = _vector("recency", recency, x.shape[0])
    age = _vector("T", T, x.shape[0])
    _fail_where((x < 0) | (x != np.floor(x)), "with frequency not a non-negative integer")
    _fail_where((t_x < 0) | (age < 0), "with negative recency or T")
    _fail_where(t_x > age, "with recency greater than T")
    _fail_where((x == 0) & (t_x != 0), "with frequency 0 but recency not 0")
    return x, t_x, age


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = _vector("weights", weights, n)
    _fail_where(w < 0, "with negative weight")
    return w


def _unique_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of two or more equal-length columns (in order of first appearance) and,
    per input row, the index of its distinct row. Hash-based: 4x faster than a lexsort at 1M rows."""
    keys = list(range(len(columns)))
    grouped = pd.DataFrame(dict(zip(keys, columns, strict=True))).groupby(keys, sort=False)
    distinct = grouped.size().index
    return [distinct.get_level_values(k).to_numpy() for k in keys], grouped.ngroup().to_numpy()


def summarise_unique(frequency, recency, T, weights=None):
    """Collapse identical (frequency, recency, T) rows into one row each with the summed weight.

    Day-granular summaries repeat a lot (every one-time buyer of the same day is the same row), so
    fitting on the collapsed rows gives the same likelihood for less work.
    Returns ``(frequency, recency, T, weights)`` as numpy arrays, in order of first appearance.
    """
    x, t_x, age = _rfm_arrays(frequency, recency, T)
    w = _weights(weights, x.shape[0])
    (x, t_x, age), inverse = _unique_rows(x, t_x, age)
    return x, t_x, age, np.bincount(inverse, weights=w, minlength=x.shape[0])


# ---------------------------------------------------------------------------------------------
# Fitting


def _factorise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(values, return_inverse=True)


class _BgNbdData:
    """The (weighted) rows rearranged so that each likelihood evaluation costs O(unique values).

    Terms that depend on x alone are evaluated once per distinct x and weighted by how many
    customers have it; customers without repeat purchases contribute -r ln(alpha+T), summed per
    distinct T; only repeaters need per-row work (the log-sum-exp).
    """

    def __init__(self, x: np.ndarray, t_x: np.ndarray, age: np.ndarray, w: np.ndarray):
        self.total_weight = float(w.sum())
        self.x_values, x_index = _factorise(x)
        self.x_weight = np.bincount(x_index, weights=w, minlength=self.x_values.shape[0])
        self.age_values, age_index = _factorise(age)
        once = x == 0
        self.once_age_weight = np.bincount(age_index[once], weights=w[once], minlength=self.age_values.shape[0])
        repeat = ~once
        self.repeat_weight = w[repeat]
        self.repeat_x = x[repeat]
        self.repeat_x_index = x_index[repeat]
        self.repeat_age_index = age_index[repeat]
        self.recency_values, self.repeat_recency_index = _factorise(t_x[repeat])


def _bgnbd_objective(theta: np.ndarray, data: _BgNbdData):
    """Negative mean BG/NBD log-likelihood and its gradient with respect to the log-parameters.

    ln L = ln G(r+x) - ln G(r) + r ln(alpha) + ln B(a, b+x) - ln B(a, b)
           + ln[ (alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x) ]
    The bracket is written as (alpha+T)^-(r+x) (1 + e^gap), gap = ln(dead term / alive term), with
    log1p(e^gap) and the posterior share of the dead term expit(gap): nothing under- or overflows
    for large x.
    """
    r, alpha, a, b = np.exp(theta)
    n, xv, xw = data.total_weight, data.x_values, data.x_weight
    log_age_values = np.log(alpha + data.age_values)
    inv_age_values = 1.0 / (alpha + data.age_values)
    log_recency_values = np.log(alpha + data.recency_values)
    # b+x-1 only matters for repeaters (x >= 1, so it is >= b > 0); x = 0 gets a harmless placeholder.
    bx1 = np.where(xv > 0, b + xv - 1.0, 1.0)

    rw, rx = data.repeat_weight, r + data.repeat_x
    log_age = log_age_values[data.repeat_age_index]
    log_gap_age = log_recency_values[data.repeat_recency_index] - log_age
    gap = (math.log(a) - np.log(bx1))[data.repeat_x_index] - rx * log_gap_age
    share_dead = special.expit(gap)

    ll = (xw @ (special.gammaln(r + xv) + special.gammaln(b + xv) - special.gammaln(a + b + xv))
          + n * (-special.gammaln(r) + r * math.log(alpha) + special.gammaln(a + b) - special.gammaln(b))
          - r * (data.once_age_weight @ log_age_values)
          + rw @ (np.logaddexp(0.0, gap) - rx * log_age))
    psi_abx = xw @ special.digamma(a + b + xv)
    psi_ab = special.digamma(a + b)
    d_r = (xw @ special.digamma(r + xv) + n * (math.log(alpha) - special.digamma(r))
           - data.once_age_weight @ log_age_values
           - rw @ (log_age + share_dead * log_gap_age))
    inv_age = inv_age_values[data.repeat_age_index]
    inv_recency = 1.0 / (alpha + data.recency_values)[data.repeat_recency_index]
    d_alpha = (n * r / alpha - r * (data.once_age_weight @ inv_age_values)
               - rw @ (rx * (inv_age + share_dead * (inv_recency - inv_age))))
    d_a = n * psi_ab - psi_abx + (rw @ share_dead) / a
    d_b = (n * (psi_ab - special.digamma(b)) + xw @ special.digamma(b + xv) - psi_abx
           - (rw * share_dead) @ (1.0 / bx1)[data.repeat_x_index])
    gradient = np.array([r * d_r, alpha * d_alpha, a * d_a, b * d_b])
    return -ll / n, -gradient / n


class _GammaGammaData:
    """Repeat customers' (x, m) with the sums the likelihood needs precomputed; see _BgNbdData."""

    def __init__(self, x: np.ndarray, m: np.ndarray, w: np.ndarray):
        self.total_weight = float(w.sum())
        self.x_values, x_index = _factorise(x)
        self.x_weight = np.bincount(x_index, weights=w, minlength=self.x_values.shape[0])
        self.w = w
        self.wx = w * x
        self.spend = x * m
        log_m = np.log(m)
        self.sum_log_m = float(w @ log_m)
        self.sum_x_log_mx = float(self.wx @ (log_m + np.log(x)))


def _gamma_gamma_objective(theta: np.ndarray, data: _GammaGammaData):
    """Negative mean Gamma-Gamma log-likelihood of the mean repeat spend m (x purchases), with gradient.

    ln f(m | x) = ln G(px+q) - ln G(px) - ln G(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(v + x m)
    """
    p, q, v = np.exp(theta)
    n, xv, xw = data.total_weight, data.x_values, data.x_weight
    log_total = np.log(v + data.spend)
    inv_total = 1.0 / (v + data.spend)
    wx_log, w_log = data.wx @ log_total, data.w @ log_total
    psi = special.digamma(p * xv + q)
    ll = (xw @ (special.gammaln(p * xv + q) - special.gammaln(p * xv))
          + n * (q * math.log(v) - special.gammaln(q))
          + p * data.sum_x_log_mx - data.sum_log_m - p * wx_log - q * w_log)
    d_p = xw @ (xv * (psi - special.digamma(p * xv))) + data.sum_x_log_mx - wx_log
    d_q = xw @ psi + n * (math.log(v) - special.digamma(q)) - w_log
    d_v = n * q / v - p * (data.wx @ inv_total) - q * (data.w @ inv_total)
    gradient = np.array([p * d_p, q * d_q, v * d_v])
    return -ll / n, -gradient / n


@dataclass(frozen=True)
class _Optimum:
    params: np.ndarray
    log_likelihood: float
    converged: bool
    message: str
    iterations: int


def _maximise(objective, start: np.ndarray, data, names: Sequence[str]) -> _Optimum:
    bounds = [(_LOG_LOWER, _LOG_UPPER)] * len(start)
    with np.errstate(all="ignore"):
        result = optimize.minimize(objective, start, args=(data,), jac=True, method="L-BFGS-B", bounds=bounds,
                                   options={"ftol": _FTOL, "gtol": _GTOL, "maxiter": 1000})
    params = np.exp(result.x)
    log_likelihood = -float(result.fun) * data.total_weight
    message = str(result.message)
    converged = bool(result.success) or bool(np.max(np.abs(result.jac)) < _CONVERGED_GRADIENT)
    on_edge = [name for name, value in zip(names, result.x, strict=True)
               if min(value - _LOG_LOWER, _LOG_UPPER - value) < 1e-6]
    if on_edge:
        converged = False
        message = f"{', '.join(on_edge)} ran to the search limit (no interior maximum); {message}"
    if not (np.all(np.isfinite(params)) and math.isfinite(log_likelihood)):
        converged = False
        message = f"non-finite estimate; {message}"
    return _Optimum(params, log_likelihood, converged, message, int(result.nit))


def fit_bgnbd(frequency, recency, T, *, weights=None, collapse: bool = True) -> BgNbdFit:
    """Maximum-likelihood BG/NBD fit (Fader, Hardie and Lee 2005).

    ``weights`` counts how many customers each row stands for. With ``collapse`` (default) identical
    rows are merged by :func:`summarise_unique` first, which leaves the estimate unchanged.
    A fit that did not converge or ran into the search limits comes back with ``converged=False``
    and the reason in ``message``; nothing is raised for bad data, :func:`check_fit` judges it.
    """
    if collapse:
        x, t_x, age, w = summarise_unique(frequency, recency, T, weights)
    else:
        x, t_x, age = _rfm_arrays(frequency, recency, T)
        w = _weights(weights, x.shape[0])
    total_weight = float(w.sum())
    n_customers = int(round(total_weight))
    n_repeaters = int(round(float(w[x > 0].sum())))
    if total_weight <= 0:
        return BgNbdFit(math.nan, math.nan, math.nan, math.nan, math.nan, False, 0, 0, "no customers", 0)

    # Start from a Poisson rate matching the observed repeat rate; the other parameters at 1.
    rate = max(float(w @ x), 1.0) / max(float(w @ age), 1e-6)
    start = np.log([1.0, 1.0 / rate, 1.0, 1.0])
    best = _maximise(_bgnbd_objective, start, _BgNbdData(x, t_x, age, w), ("r", "alpha", "a", "b"))
    r, alpha, a, b = (float(value) for value in best.params)
    converged, message = best.converged, best.message
    if n_repeaters == 0:
        # Without a single repeat purchase the likelihood does not depend on a and b at all.
        converged, message = False, f"no repeat purchases: a and b are not identified; {message}"
    return BgNbdFit(r, alpha, a, b, best.log_likelihood, converged, n_customers, n_repeaters, message,
                    best.iterations)


def fit_gamma_gamma(frequency, monetary_value, *, weights=None) -> GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma fit on the customers with frequency > 0 and monetary_value > 0.

    Customers without repeat purchases carry no information on spend per repeat purchase; a
    non-positive mean spend (refunds netted in) has zero density under the model and is left out too.
    ``n_customers`` counts the customers actually used.
    """
    x = _vector("frequency", frequency)
    m = _vector("monetary_value", monetary_value, x.shape[0])
    w = _weights(weights, x.shape[0])
    _fail_where((x < 0) | (x != np.floor(x)), "with frequency not a non-negative integer")
    used = (x > 0) & (m > 0) & (w > 0)
    x, m, w = x[used], m[used], w[used]
    total_weight = float(w.sum())
    if total_weight <= 0:
        return GammaGammaFit(math.nan, math.nan, math.nan, math.nan, False, 0, "no repeat customers", 0)

    # Start at p=1, q=2, where the model's population mean spend p*v/(q-1) is v: the observed mean.
    start = np.log([1.0, 2.0, float(w @ m) / total_weight])
    best = _maximise(_gamma_gamma_objective, start, _GammaGammaData(x, m, w), ("p", "q", "v"))
    p, q, v = (float(value) for value in best.params)
    return GammaGammaFit(p, q, v, best.log_likelihood, best.converged, int(round(total_weight)), best.message,
                         best.iterations)


def check_fit(fit: BgNbdFit | GammaGammaFit, *, min_customers: int, min_repeaters: int,
              bounds: Mapping[str, tuple[float, float]]) -> list[str]:
    """Problems that make ``fit`` unfit for use, as sentences; an empty list means usable.

    ``bounds`` maps parameter names (r, alpha, a, b / p, q, v) to inclusive (low, high) ranges; names
    not given are not range-checked. For Gamma-Gamma every customer used is a repeater, so both
    minimums apply to ``n_customers``.
    """
    params = fit.params()
    unknown = sorted(set(bounds) - set(params))
    if unknown:
        raise ValueError(f"bounds name unknown parameter(s) {unknown}; {type(fit).__name__} has {sorted(params)}")
    repeaters = fit.n_repeaters if isinstance(fit, BgNbdFit) else fit.n_customers
    problems = []
    if fit.n_customers < min_customers:
        problems.append(f"only {fit.n_customers} customers, at least {min_customers} needed")
    if repeaters < min_repeaters:
        problems.append(f"only {repeaters} repeat customers, at least {min_repeaters} needed")
    if not fit.converged:
        problems.append(f"the fit did not converge: {fit.message}")
    if not math.isfinite(fit.log_likelihood):
        problems.append(f"log-likelihood is not finite ({fit.log_likelihood})")
    for name, value in params.items():
        if not math.isfinite(value) or value <= 0:
            problems.append(f"{name} = {value} is not a positive finite number")
        elif name in bounds and not bounds[name][0] <= value <= bounds[name][1]:
            low, high = bounds[name]
            problems.append(f"{name} = {value:.6g} is outside the configured range [{low:g}, {high:g}]")
    if isinstance(fit, GammaGammaFit) and math.isfinite(fit.q) and fit.q <= 1:
        problems.append(f"q = {fit.q:.6g} <= 1: the model's mean spend per transaction is infinite")
    return problems


# ---------------------------------------------------------------------------------------------
# Predictions


def _usable_params(fit) -> tuple[float, ...]:
    values = tuple(fit.params().values())
    if not all(math.isfinite(value) and value > 0 for value in values):
        raise ValueError(f"cannot predict from a {type(fit).__name__} with parameters {fit.params()}")
    return values


def _log_dead_odds(r, alpha, a, b, x, t_x, age):
    """ln of P(dropped out after the last purchase) / P(alive), given the history; -inf when x = 0."""
    repeat = x > 0
    bx1 = np.where(repeat, b + x - 1.0, 1.0)
    odds = math.log(a) - np.log(bx1) + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
    return np.where(repeat, odds, -np.inf)


def p_alive(fit: BgNbdFit, frequency, recency, T) -> np.ndarray:
    """P(the customer is still active at T | x, t_x, T); 1 for customers without repeat purchases
    (under BG/NBD a customer can only drop out right after a repeat purchase)."""
    r, alpha, a, b = _usable_params(fit)
    x, t_x, age = _rfm_arrays(frequency, recency, T)
    return special.expit(-_log_dead_odds(r, alpha, a, b, x, t_x, age))


def _expected_if_alive(r, alpha, a, b, t, x, age):
    """E[purchases in (T, T+t] | alive at T, x, T].

    This is E_p[(1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p] with p ~ Beta(a, b+x). The FHL closed form
    (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)], z = t/(alpha+T+t),
    multiplies an overflowing 2F1 by an underflowing power for large x (NaN for x in the hundreds once
    t is long compared with T).
    Euler's transformation 2F1(A,B;C;z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) turns it into
    (a+b+x-1)/(a-1) [1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)], whose 2F1 tends to 1 as x grows.
    """
    z = t / (alpha + age + t)

    def closed_form(a_value):
        c = a_value + b + x - 1.0
        hyper = special.hyp2f1(c - r - x, a_value - 1.0, c, z)
        return c / (a_value - 1.0) * (1.0 - np.exp((a_value - 1.0) * np.log1p(-z)) * hyper)

    def interpolated(low, high):
        at_low, at_high = closed_form(low), closed_form(high)
        return at_low + (a - low) / (high - low) * (at_high - at_low)

    if abs(a - 1.0) < _SINGULAR_BAND:
        return interpolated(1.0 - _SINGULAR_BAND, 1.0 + _SINGULAR_BAND)
    value = closed_form(a)
    near_pole = np.abs(a + b + x - 1.0) < _SINGULAR_BAND
    if np.any(near_pole):
        value = np.where(near_pole, interpolated(a - _SINGULAR_BAND, a + _SINGULAR_BAND), value)
    return value


def _horizon(t) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t) & (t >= 0)):
        raise ValueError("t must be finite and non-negative")
    return t


def _conditional_purchases(params, t, x, age, alive, pairs):
    """expected_purchases on validated arrays; ``pairs`` = _unique_rows(x, age), used for scalar t
    because the 2F1 (the expensive part) depends on the customer only through (x, T)."""
    r, alpha, a, b = params
    with np.errstate(all="ignore"):
        if t.ndim == 0:
            (unique_x, unique_age), inverse = pairs
            if_alive = _expected_if_alive(r, alpha, a, b, t, unique_x, unique_age)[inverse]
        else:
            if_alive = _expected_if_alive(r, alpha, a, b, t, x, age)
        expected = alive * if_alive
    ceiling = alive * t * (r + x) / (alpha + age)
    return np.clip(np.where(np.isfinite(expected), expected, ceiling), 0.0, ceiling)


def expected_purchases(fit: BgNbdFit, t, frequency, recency, T) -> np.ndarray:
    """Conditional expected number of purchases in (T, T+t] given (x, t_x, T).

    ``t`` is a scalar or an array broadcastable against the customers. The result is clipped to
    its theoretical range [0, P(alive) * t * (r+x)/(alpha+T)] (the upper end is the expected
    Poisson count of an alive customer, who can only buy less if he drops out on the way); should
    the closed form ever still produce a non-finite value (no such input is known), that row gets the
    upper end.
    """
    params = _usable_params(fit)
    x, t_x, age = _rfm_arrays(frequency, recency, T)
    t = _horizon(t)
    alive = special.expit(-_log_dead_odds(*params, x, t_x, age))
    pairs = _unique_rows(x, age) if t.ndim == 0 else None
    return _conditional_purchases(params, t, x, age, alive, pairs)


def expected_average_value(gg_fit: GammaGammaFit, frequency, monetary_value) -> np.ndarray:
    """Conditional expected spend per transaction, p (v + x m) / (p x + q - 1).

    That is a credibility-weighted mix of the population mean p v/(q-1) and the customer's own mean
    m, so customers with x = 0 get the population mean whatever their monetary_value. Requires
    q > 1 (otherwise the population mean is infinite: :func:`check_fit` reports it).
    """
    p, q, v = _usable_params(gg_fit)
    if q <= 1:
        raise ValueError(f"Gamma-Gamma q = {q:.6g} <= 1 has no finite expected spend")
    x = _vector("frequency", frequency)
    m = _vector("monetary_value", monetary_value, x.shape[0])
    _fail_where((x < 0) | (x != np.floor(x)), "with frequency not a non-negative integer")
    _fail_where((x > 0) & (m < 0), "with a negative monetary_value")
    own = np.where(x > 0, m, 0.0)
    return p * (v + x * own) / (p * x + q - 1.0)


def clv(bg: BgNbdFit, gg: GammaGammaFit, frequency, recency, T, monetary_value, *, horizon_periods: int,
        discount_rate_per_period: float, step: float = 1.0) -> np.ndarray:
    """Discounted customer lifetime value over ``horizon_periods`` periods of ``step`` model time units.

    For period k the expected purchases in ((k-1) step, k step] after T, times the expected spend per
    purchase, are discounted by (1 + rate)^k, as lifetimes' ``customer_lifetime_value`` does (there,
    step = 4.345 weeks for monthly periods with a weekly model).
    """
    if horizon_periods < 0 or not (discount_rate_per_period > -1 and math.isfinite(discount_rate_per_period)):
        raise ValueError("horizon_periods must be >= 0 and discount_rate_per_period finite and > -1")
    if not (step > 0 and math.isfinite(step)):
        raise ValueError("step must be positive and finite")
    value = expected_average_value(gg, frequency, monetary_value)
    params = _usable_params(bg)
    x, t_x, age = _rfm_arrays(frequency, recency, T)
    alive = special.expit(-_log_dead_odds(*params, x, t_x, age))
    pairs = _unique_rows(x, age)
    total = np.zeros_like(value)
    previous = np.zeros_like(value)
    for period in range(1, horizon_periods + 1):
        cumulative = _conditional_purchases(params, _horizon(period * step), x, age, alive, pairs)
        # Each horizon is clipped on its own, so rounding could make an increment slightly negative.
        total += value * np.maximum(cumulative - previous, 0.0) / (1.0 + discount_rate_per_period) ** period
        previous = cumulative
    return total
