"""The dbt project compiles and documents itself with its own defaults (issue 13, item 3).

Each run's docs site and the comments on published columns are asserted on the e2e runs'
artifacts (test_pipeline_e2e); this module checks the project on its own.
"""

from __future__ import annotations

import json
import os

from tierline import dbt, settings, warehouse


def test_the_projects_default_vars_are_the_shipped_configuration():
    # dbt_project.yml's vars block is generated; a changed config/*.yml needs it re-generated
    text = (settings.DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8")
    assert text.endswith(dbt.default_vars_block()), (
        "dbt_project.yml's vars differ from config/tierline.yml + tier_spec.yml: "
        "run `python -m tierline.dbt default-vars`")


def test_dbt_compiles_and_generates_docs_without_any_vars(warehouse_url, tmp_path, monkeypatch):
    """`dbt compile` / `dbt docs generate` used to fail: Required var 'lifecycle' not found."""
    from dbt.cli.main import dbtRunner

    for key, value in warehouse.dbt_env(warehouse_url).items():
        monkeypatch.setitem(os.environ, key, value)
    common = ["--project-dir", str(settings.DBT_PROJECT_DIR), "--profiles-dir", str(settings.DBT_PROJECT_DIR),
              "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")]
    compiled = dbtRunner().invoke(["compile", *common])
    assert compiled.success, compiled.exception
    docs = dbtRunner().invoke(["docs", "generate", "--static", "--no-compile", *common])
    assert docs.success, docs.exception
    assert (tmp_path / "target" / "static_index.html").stat().st_size > 100_000
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    readers = {e["name"]: e["depends_on"]["nodes"] for e in manifest["exposures"].values()}
    assert set(readers) >= {"tier_dashboard", "crm_sync"}
    assert "model.tierline.customer_tier" in readers["crm_sync"]
