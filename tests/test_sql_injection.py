"""Configuration reaches SQL only validated or quoted (issue 8, item 8).

`tier_spec.yml` is owned by CRM admins, not engineers: a label is free text and must be published
as that text; codes, branch keys and the version are checked by pattern before anything runs.
"""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import yaml

from tierline import config, pipeline, settings, warehouse
from tierline.errors import ConfigError
from tierline_dev import generate

DAY = date(2026, 11, 1)
# the payload, and one that reads a server file (with a backslash, for the E'' path)
CURRENT_USER = "VIP' || (select current_user || '@' || version()) || '"
READ_FILE = "战略\\' || pg_read_file('PG_VERSION') || '"


def _config_dir(tmp_path, change) -> str:
    target = tmp_path / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", target)
    spec = yaml.safe_load((target / "tier_spec.yml").read_text())
    change(spec)
    (target / "tier_spec.yml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    return str(target / "tierline.yml")


@pytest.mark.parametrize("change, key", [
    (lambda s: s.update(version="2026' || version() || '"), "version"),
    (lambda s: s["branches"].update({"BJ01' or 1=1 --": {"vip": {"min_monetary": 1}}}), "branches"),
    (lambda s: s["ladder"][0].update(code="vip'--"), "ladder.0.code"),
    (lambda s: s["ladder"][0].update(label_en="line\nbreak"), "ladder.0.label_en"),
])
def test_codes_keys_and_version_are_checked_by_pattern(tmp_path, change, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(_config_dir(tmp_path, change))


def test_hostile_labels_are_published_as_their_text(warehouse_url, tmp_path, monkeypatch):
    def hostile(spec):
        for tier in spec["ladder"]:
            tier["label_zh"], tier["label_en"] = READ_FILE, CURRENT_USER

    monkeypatch.setenv("TIERLINE_CONFIG", _config_dir(tmp_path, hostile))
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    landing = tmp_path / "landing"
    generate.generate(landing, customers=120, days=1, seed=3, start_date=DAY, progress=False)
    ctx = pipeline.context(DAY, "injection", landing)
    pipeline.land_extracts(ctx)
    pipeline.load_raw(ctx)
    pipeline.build(ctx, "staging")
    pipeline.fit_clv(ctx)
    pipeline.build(ctx, "marts")
    pipeline.gate(ctx, "marts")
    pipeline.publish(ctx)
    with warehouse.connect(warehouse_url) as conn:
        labels = conn.execute(
            "select tier, tier_label_zh, tier_label_en from analytics.customer_tier_latest").fetchall()
        server_text = conn.execute("select current_user || '@' || version()").fetchone()[0]
    assert labels
    assert {en for _, _, en in labels} == {CURRENT_USER}
    assert {zh for _, zh, _ in labels} == {READ_FILE}
    assert not any(server_text in en for _, _, en in labels)
