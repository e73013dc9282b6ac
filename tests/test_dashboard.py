"""The Superset dashboard shipped in dashboard/ agrees with itself and with what dbt says reads the
published schema (no warehouse needed). The dashboard itself, provisioned on a published warehouse
and opened in headless Chromium, is tested in test_pipeline_e2e."""

from __future__ import annotations

import re

import yaml

from tierline.settings import DBT_PROJECT_DIR
from tierline_dev import dashboard


def spec() -> dict:
    return yaml.safe_load(dashboard.SPEC.read_text(encoding="utf-8"))


def test_the_dbt_exposure_lists_exactly_the_tables_the_dashboard_reads():
    exposures = yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "_exposures.yml").read_text())["exposures"]
    exposure = next(e for e in exposures if e["name"] == "tier_dashboard")
    models = {re.fullmatch(r"ref\('(\w+)'\)", ref).group(1) for ref in exposure["depends_on"]}
    assert models == {table.removesuffix("_latest") for table in spec()["datasets"]}


def test_every_chart_reads_a_dataset_of_the_dashboard_and_is_placed_once():
    charts, layout = spec()["charts"], spec()["layout"]
    placed = [key for row in layout for key, _width in row]
    assert sorted(placed) == sorted(charts)
    assert all(sum(width for _key, width in row) <= 12 for row in layout)  # Superset's grid is 12 wide
    assert {chart["dataset"] for chart in charts.values()} <= set(spec()["datasets"])


def test_the_superset_venv_is_fully_pinned():
    pins = [line for line in dashboard.REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", line) for line in pins), pins
    assert "apache_superset==6.1.0" in pins or "apache-superset==6.1.0" in pins
