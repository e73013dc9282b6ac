"""Asset URIs and OpenLineage dataset names point at the real warehouse (issue 13, item 6).

The events themselves (Airflow tasks and dbt models, through a file transport) are asserted on
the e2e runs (test_pipeline_e2e)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from tierline import assets, lineage, settings


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://etl:secret@db.example.com:6432/crm_dw", "postgres://db.example.com:6432/crm_dw/analytics/customer_tier"),
    ("postgresql://postgres@127.0.0.1/postgres", "postgres://127.0.0.1:5432/postgres/analytics/customer_tier"),
    # a local socket (the embedded server's kind of URL): the machine it is on
    ("postgresql://postgres:@/tierline?host=/srv/pg/run&port=5433",
     f"postgres://{socket.gethostname()}:5433/tierline/analytics/customer_tier"),
])
def test_asset_uris_name_the_configured_warehouse(url, expected, monkeypatch):
    monkeypatch.setenv(settings.WAREHOUSE_ENV, url)
    assert assets.asset_uri("customer_tier", "analytics") == expected
    assert "secret" not in assets.asset_uri("customer_tier", "analytics")


def test_without_a_configured_warehouse_the_embedded_one_on_this_machine(monkeypatch):
    monkeypatch.delenv(settings.WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv(settings.AIRFLOW_WAREHOUSE_ENV, raising=False)
    assert assets.asset_uri("kpi_daily", "analytics") == f"postgres://{socket.gethostname()}:5432/tierline/analytics/kpi_daily"


def test_airflow_and_dbt_lineage_name_the_same_dataset(monkeypatch):
    from airflow.providers.postgres.assets.postgres import sanitize_uri
    from airflow.sdk import Asset

    url = "postgresql://etl@wh.internal:6432/dw"
    monkeypatch.setenv(settings.WAREHOUSE_ENV, url)
    uri = assets.asset_uri("customer_tier", "analytics")
    assert sanitize_uri(urlsplit(uri)).geturl() == uri  # the postgres provider accepts it unchanged
    from airflow.providers.postgres.assets.postgres import convert_asset_to_openlineage

    dataset = convert_asset_to_openlineage(Asset(uri), None)
    assert (dataset.namespace, dataset.name) == (lineage.namespace(url), "dw.analytics.customer_tier")
