"""CDNOW holdout validation of the BTYD models: the reference calibration summary (transactions ->
frequency, recency, T, monetary value) and a report of predicted vs actual repeat purchases in a
holdout period (``make holdout`` writes it to reports/cdnow/).

A development tool: the pipeline computes its calibration summary in SQL
(``int_customers__btyd_summary``) and never imports this module.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tierline.btyd import BgNbdFit, GammaGammaFit, expected_purchases, fit_bgnbd, fit_gamma_gamma


def _day(value) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def _purchase_days(transactions: pd.DataFrame) -> pd.DataFrame:
    """One row per customer and purchase day, amounts summed: same-day orders are one transaction."""
    missing = {"customer_id", "date", "amount"} - set(transactions.columns)
    if missing:
        raise ValueError(f"transactions lack column(s) {sorted(missing)}")
    frame = pd.DataFrame({
        "customer_id": transactions["customer_id"].to_numpy(),
        "day": pd.to_datetime(transactions["date"]).dt.normalize().to_numpy(),
        "amount": pd.to_numeric(transactions["amount"]).to_numpy(dtype=np.float64),
    })
    return frame.groupby(["customer_id", "day"], as_index=False, sort=True)["amount"].sum()


def _summarise_days(days: pd.DataFrame, calibration_start, calibration_end, time_unit_days: float) -> pd.DataFrame:
    start = None if calibration_start is None else _day(calibration_start)
    end = _day(calibration_end)
    if start is not None and start > end:
        raise ValueError(f"calibration_start {start.date()} is after calibration_end {end.date()}")
    if not time_unit_days > 0:
        raise ValueError("time_unit_days must be positive")
    first = days.groupby("customer_id", sort=True)["day"].min()
    cohort = first[(first <= end) if start is None else (first >= start) & (first <= end)]
    calibration = days[days["customer_id"].isin(cohort.index) & (days["day"] <= end)]
    grouped = calibration.groupby("customer_id", sort=True)
    first_day = grouped["day"].min()
    first_amount = calibration.loc[grouped["day"].idxmin(), ["customer_id", "amount"]].set_index("customer_id")["amount"]
    frequency = grouped.size() - 1
    repeat_spend = grouped["amount"].sum() - first_amount
    summary = pd.DataFrame({
        "frequency": frequency.astype(np.int64),
        "recency": (grouped["day"].max() - first_day).dt.days / time_unit_days,
        "T": (end - first_day).dt.days / time_unit_days,
        "monetary_value": (repeat_spend / frequency.where(frequency > 0)).fillna(0.0),
        "first_purchase": first_day,
    })
    summary.index.name = "customer_id"
    return summary


def calibration_summary(transactions: pd.DataFrame, calibration_start, calibration_end,
                        time_unit_days: float = 7) -> pd.DataFrame:
    """Per-customer (frequency, recency, T, monetary_value) for the BTYD models, plus first_purchase.

    The convention is that of ``lifetimes.utils.summary_data_from_transaction_data`` with daily
    periods and ``observation_period_end = calibration_end``, times divided by ``time_unit_days``
    (the tests check it against lifetimes' CDNOW summary); the SQL summary must follow it too:

    - purchases are counted per calendar day, amounts of the same customer and day summed;
    - the cohort is the customers whose first purchase day in ``transactions`` lies in
      [calibration_start, calibration_end] (``calibration_start=None``: no lower limit); customers
      who bought before calibration_start are left out rather than given a truncated history;
    - only purchase days <= calibration_end count;
    - frequency = number of purchase days - 1;
    - recency = (last purchase day - first purchase day) in days / time_unit_days;
    - T = (calibration_end - first purchase day) in days / time_unit_days (calibration_end itself is
      not counted as an extra day: a first purchase on calibration_end gives T = 0);
    - monetary_value = (total spend - spend of the first day) / frequency; 0 when frequency = 0.
    """
    return _summarise_days(_purchase_days(transactions), calibration_start, calibration_end, time_unit_days)


_GROUP_CAP = 7


@dataclass(frozen=True)
class HoldoutReport:
    """Predicted vs actual repeat purchases in a holdout period, by calibration frequency."""

    table: pd.DataFrame
    customers: pd.DataFrame
    bgnbd: BgNbdFit
    gamma_gamma: GammaGammaFit
    calibration_start: pd.Timestamp | None
    calibration_end: pd.Timestamp
    holdout_end: pd.Timestamp
    time_unit_days: float
    horizon: float

    @property
    def total_actual(self) -> float:
        return float(self.table.loc["total", "actual"])

    @property
    def total_predicted(self) -> float:
        return float(self.table.loc["total", "predicted"])

    def write(self, out_dir) -> list[Path]:
        """Write holdout.csv (the table), holdout.md (fits and table) and holdout.png (the plot)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path, md_path, png_path = out / "holdout.csv", out / "holdout.md", out / "holdout.png"
        self.table.to_csv(csv_path, float_format="%.6g")
        md_path.write_text(self._markdown(), encoding="utf-8")
        self._plot(png_path)
        return [csv_path, md_path, png_path]

    def _markdown(self) -> str:
        unit = f"{self.time_unit_days:g}-day periods"
        start = "the first purchase" if self.calibration_start is None else self.calibration_start.date()
        bg, gg = self.bgnbd, self.gamma_gamma
        error = self.total_predicted / self.total_actual - 1.0 if self.total_actual else math.nan
        lines = [
            "# BTYD holdout validation",
            "",
            f"Calibration {start} .. {self.calibration_end.date()}, holdout to {self.holdout_end.date()} "
            f"({self.horizon:.4g} {unit}).",
            "",
            f"- BG/NBD: r = {bg.r:.4f}, alpha = {bg.alpha:.4f}, a = {bg.a:.4f}, b = {bg.b:.4f}, "
            f"log-likelihood {bg.log_likelihood:.2f}, {bg.n_customers} customers, converged {bg.converged}",
            f"- Gamma-Gamma: p = {gg.p:.4f}, q = {gg.q:.4f}, v = {gg.v:.4f}, "
            f"log-likelihood {gg.log_likelihood:.2f}, {gg.n_customers} repeat customers, converged {gg.converged}",
            f"- Repeat purchases in the holdout: actual {self.total_actual:.0f}, predicted "
            f"{self.total_predicted:.1f} ({error:+.1%})",
            "",
        ]
        formats = {"customers": "{:.0f}", "actual": "{:.0f}", "predicted": "{:.1f}",
                   "actual_mean": "{:.3f}", "predicted_mean": "{:.3f}"}
        lines.append("| group | " + " | ".join(formats) + " |")
        lines.append("|---" * (len(formats) + 1) + "|")
        for group, row in self.table.iterrows():
            cells = [group] + [fmt.format(row[column]) for column, fmt in formats.items()]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        groups = self.table.drop(index="total")
        figure, axis = plt.subplots(figsize=(7, 4.5))
        positions = np.arange(len(groups))
        axis.plot(positions, groups["actual_mean"], marker="o", label="actual")
        axis.plot(positions, groups["predicted_mean"], marker="s", linestyle="--", label="BG/NBD")
        axis.set_xticks(positions, groups.index)
        axis.set_xlabel("repeat purchases in calibration")
        axis.set_ylabel(f"mean repeat purchases in holdout ({self.horizon:.4g} periods)")
        axis.set_title(f"Holdout: actual {self.total_actual:.0f}, predicted {self.total_predicted:.0f}")
        axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)


def holdout_report(transactions: pd.DataFrame, *, calibration_start, calibration_end, holdout_end,
                   time_unit_days: float = 7) -> HoldoutReport:
    """Fit on the calibration period and compare predicted with actual repeat purchase days in
    (calibration_end, holdout_end], in total and by calibration frequency (0..6, 7+)."""
    end, last = _day(calibration_end), _day(holdout_end)
    if last <= end:
        raise ValueError(f"holdout_end {last.date()} must be after calibration_end {end.date()}")
    days = _purchase_days(transactions)
    summary = _summarise_days(days, calibration_start, end, time_unit_days)
    if summary.empty:
        raise ValueError("no customer has a first purchase in the calibration period")
    bg = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    gg = fit_gamma_gamma(summary["frequency"], summary["monetary_value"])
    horizon = (last - end).days / time_unit_days

    in_holdout = days[(days["day"] > end) & (days["day"] <= last)]
    customers = summary[["frequency", "recency", "T"]].copy()
    customers["actual"] = in_holdout.groupby("customer_id").size().reindex(customers.index, fill_value=0)
    customers["predicted"] = expected_purchases(bg, horizon, customers["frequency"], customers["recency"],
                                                customers["T"])
    labels = [str(k) for k in range(_GROUP_CAP)] + [f"{_GROUP_CAP}+"]
    customers["group"] = pd.Categorical(
        np.array(labels)[np.minimum(customers["frequency"].to_numpy(), _GROUP_CAP)], categories=labels)
    grouped = customers.groupby("group", observed=False)
    table = pd.DataFrame({
        "customers": grouped.size(),
        "actual": grouped["actual"].sum().astype(float),
        "predicted": grouped["predicted"].sum(),
    })
    table.loc["total"] = [len(customers), float(customers["actual"].sum()), float(customers["predicted"].sum())]
    table["customers"] = table["customers"].astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["actual_mean"] = table["actual"] / table["customers"]
        table["predicted_mean"] = table["predicted"] / table["customers"]
    table.index = pd.Index([str(label) for label in table.index], name="group")
    start = None if calibration_start is None else _day(calibration_start)
    return HoldoutReport(table, customers, bg, gg, start, end, last, float(time_unit_days), horizon)


def read_cdnow(path) -> pd.DataFrame:
    """Read the CDNOW whitespace format (master id, sample id, yyyymmdd, CDs, dollars) as
    customer_id (the sample id), date, amount."""
    raw = pd.read_csv(path, sep=r"\s+", header=None, names=["master_id", "customer_id", "date", "cds", "amount"],
                      dtype={"master_id": str, "customer_id": np.int64, "date": str, "cds": np.int64,
                             "amount": np.float64})
    return pd.DataFrame({
        "customer_id": raw["customer_id"],
        "date": pd.to_datetime(raw["date"], format="%Y%m%d"),
        "amount": raw["amount"],
    })


def main(argv: Sequence[str] | None = None) -> int:
    holdout = argparse.ArgumentParser(prog="python -m tierline_dev.holdout",
                                      description="validate BG/NBD on a holdout period and write a report")
    holdout.add_argument("--transactions", required=True, type=Path, help="CDNOW-format transaction file")
    holdout.add_argument("--out", required=True, type=Path, help="folder for holdout.csv/.md/.png")
    holdout.add_argument("--calibration-start", default="1997-01-01")
    holdout.add_argument("--calibration-end", default="1997-09-30")
    holdout.add_argument("--holdout-end", default="1998-06-30")
    holdout.add_argument("--time-unit-days", type=float, default=7.0)
    args = holdout.parse_args(argv)

    report = holdout_report(read_cdnow(args.transactions), calibration_start=args.calibration_start,
                            calibration_end=args.calibration_end, holdout_end=args.holdout_end,
                            time_unit_days=args.time_unit_days)
    files = report.write(args.out)
    print(json.dumps({
        "bgnbd": asdict(report.bgnbd),
        "gamma_gamma": asdict(report.gamma_gamma),
        "holdout_actual": report.total_actual,
        "holdout_predicted": round(report.total_predicted, 2),
        "files": [str(path) for path in files],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
