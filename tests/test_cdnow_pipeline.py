"""CDNOW through the pipeline's own path: extracts -> load -> dbt staging -> SQL summary -> fit.

The real CDNOW sample (tests/data/cdnow, see its README) is written as sales extracts per the
contract, loaded with COPY, summarised in SQL as of 1997-09-30 and fitted by the fit_clv step; the
results must reproduce the published estimates (Fader, Hardie and Lee 2005).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from tierline import clv, config, dbt, land, load, warehouse
from tierline.pipeline import RunContext, run_folder

DATA = Path(__file__).parent / "data" / "cdnow"
CALIBRATION_END = date(1997, 9, 30)


def write_extracts(root: Path) -> None:
    raw = pd.read_csv(DATA / "CDNOW_sample.txt", sep=r"\s+", header=None,
                      names=["master_id", "customer", "day", "cds", "dollars"], dtype={"day": str})
    raw["date"] = pd.to_datetime(raw["day"], format="%Y%m%d").dt.date
    folder = root / CALIBRATION_END.isoformat()
    folder.mkdir(parents=True)
    customers = pd.DataFrame({"customer_id": raw["customer"].unique()})
    customers = customers.assign(customer_id=lambda d: "CD" + d["customer_id"].astype(str).str.zfill(4),
                                 customer_name="CDNOW customer", customer_type="individual",
                                 created_at="1997-01-01", updated_at="1997-01-01")
    customers.to_csv(folder / "crm_customers.csv", index=False)
    orders = raw[raw["date"] <= CALIBRATION_END].reset_index(drop=True)
    pd.DataFrame({
        "order_id": "O" + orders.index.astype(str),
        "customer_id": "CD" + orders["customer"].astype(str).str.zfill(4),
        "order_ts": orders["date"].astype(str),
        "status": "completed",
        "gross_amount": orders["dollars"].map("{:.2f}".format),
        "net_amount": orders["dollars"].map("{:.2f}".format),
        "updated_at": orders["date"].astype(str),
    }).to_csv(folder / "sales_orders.csv", index=False)


@pytest.fixture
def fitted(tmp_path, warehouse_url):
    write_extracts(tmp_path / "inbox")
    manifest = land.land_extracts(tmp_path / "inbox", CALIBRATION_END, tmp_path / "landing")
    loads = load.load_date(warehouse_url, manifest, CALIBRATION_END, "cdnow", "Asia/Shanghai")
    cfg = config.load()
    ctx = RunContext(CALIBRATION_END, "cdnow", tmp_path, warehouse_url, cfg, run_folder(CALIBRATION_END, "cdnow"))
    dbt.build("staging", warehouse_url=warehouse_url, dbt_vars=ctx.dbt_vars(), run_dir=ctx.run_dir)
    schema = ctx.schemas["intermediate"]
    with warehouse.connect(warehouse_url) as conn:
        outcome = clv.fit_and_predict(conn, as_of=CALIBRATION_END, cfg=cfg.clv, schema=schema)
        summary = pd.DataFrame(conn.execute(
            f"select customer_id, frequency, recency, t_age from {schema}.int_customers__btyd_summary").fetchall(),
            columns=["customer_id", "frequency", "recency", "T"])
        fits = {row[0]: row[1] for row in conn.execute(f"select model, parameters from {schema}.clv_fits")}
        log_likelihood = conn.execute(
            f"select log_likelihood from {schema}.clv_fits where model = 'bgnbd'").fetchone()[0]
    return {"loads": loads, "outcome": outcome, "summary": summary, "fits": fits, "ll": log_likelihood}


def test_cdnow_loads_without_loss_and_the_sql_summary_matches_the_published_one(fitted):
    assert all(f.rows_quarantined == 0 for f in fitted["loads"])
    expected = pd.read_csv(DATA / "cdnow_customers_summary.csv")
    expected["customer_id"] = "CD" + expected["ID"].astype(str).str.zfill(4)
    merged = expected.merge(fitted["summary"], on="customer_id", suffixes=("_expected", ""), validate="1:1")
    assert len(merged) == len(expected) == 2357
    assert (merged["frequency"] == merged["frequency_expected"]).all()
    assert (merged["recency"].astype(float) - merged["recency_expected"]).abs().max() < 0.005
    assert (merged["T"].astype(float) - merged["T_expected"]).abs().max() < 0.005


def test_cdnow_fit_reproduces_the_published_estimates(fitted):
    assert fitted["outcome"].method == "bgnbd_gamma_gamma"
    bg, gg = fitted["fits"]["bgnbd"], fitted["fits"]["gamma_gamma"]
    assert bg["r"] == pytest.approx(0.243, abs=0.001)
    assert bg["alpha"] == pytest.approx(4.414, abs=0.001)
    assert bg["a"] == pytest.approx(0.793, abs=0.001)
    assert bg["b"] == pytest.approx(2.426, abs=0.001)
    assert fitted["ll"] == pytest.approx(-9582.4, abs=0.1)
    assert gg["p"] == pytest.approx(6.25, abs=0.01)
    assert gg["q"] == pytest.approx(3.74, abs=0.01)
    assert gg["v"] == pytest.approx(15.44, abs=0.01)
