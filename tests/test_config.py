"""Configuration is validated at load, and errors name the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tierline import config, settings
from tierline.errors import ConfigError


def write_config(tmp_path: Path, changes: dict | None = None, spec_changes: dict | None = None) -> Path:
    base = yaml.safe_load(settings.config_path().read_text())
    spec = yaml.safe_load((settings.config_path().parent / "tier_spec.yml").read_text())
    for key, value in (changes or {}).items():
        section, _, leaf = key.partition(".")
        if leaf:
            base[section][leaf] = value
        else:
            base[section] = value
    spec.update(spec_changes or {})
    (tmp_path / "tier_spec.yml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    path = tmp_path / "tierline.yml"
    path.write_text(yaml.safe_dump(base, allow_unicode=True))
    return path


def test_the_shipped_configuration_is_valid_and_versioned():
    cfg = config.load()
    assert [t.code for t in cfg.tier_spec.ladder] == ["strategic", "vip", "key", "regular", "potential"]
    assert len(cfg.tier_spec_hash) == 16
    assert cfg.dbt_vars()["tier_spec_version"] == cfg.tier_spec.version


@pytest.mark.parametrize(
    ("changes", "spec_changes", "message"),
    [
        ({"lifecycle.dormant_days": "soon"}, None, "lifecycle.dormant_days"),
        ({"lifecycle.dormant_days": 400}, None, "dormant_days must be smaller than lifecycle.churned_days"),
        ({"business_timezone": "Mars/Olympus"}, None, "business_timezone: Value error, unknown time zone"),
        ({"windows.frequency_days": 0}, None, "windows.frequency_days"),
        ({"gates.unknown_knob": 1}, None, "gates.unknown_knob: Extra inputs are not permitted"),
        ({"actions.early_warning": {"churn_exclude_stages": ["asleep"]}}, None,
         "actions.early_warning.churn_exclude_stages: Value error, unknown lifecycle stage(s) 'asleep'; the "
         "stages are prospect, new, growth, mature, declining, dormant, churned, reactivated"),
        ({"retention.landing_days": 0}, None, "retention.landing_days: Input should be greater than 0"),
        ({"retention.raw_history_days": "a year"}, None, "retention.raw_history_days"),
        (None, {"dimensions": {"contribution": {"weight": 0.5, "metrics": ["monetary"]}}},
         "weights must sum to 1"),
        (None, {"dimensions": {"contribution": {"weight": 1.0, "metrics": ["shoe_size"]}}},
         "dimensions.contribution.metrics.0"),
    ],
)
def test_invalid_configuration_names_the_key(tmp_path, changes, spec_changes, message):
    with pytest.raises(ConfigError) as excinfo:
        config.load(write_config(tmp_path, changes, spec_changes))
    assert message in str(excinfo.value)


def test_every_configured_value_the_models_read_reaches_dbt(tmp_path):
    cfg = config.load(write_config(tmp_path, {"currency": "USD"}))
    assert cfg.dbt_vars()["currency"] == "USD"
    # the models read it without a default of their own: the configuration is its one home
    model = (settings.DBT_PROJECT_DIR / "models" / "staging" / "sales" / "stg_sales__orders.sql").read_text()
    assert "var('currency')" in model.replace('"', "'") and "CNY" not in model


def test_a_changed_specification_changes_the_hash(tmp_path):
    spec = yaml.safe_load((settings.config_path().parent / "tier_spec.yml").read_text())
    spec["ladder"][0]["min_monetary"] = 60000
    path = write_config(tmp_path, spec_changes=spec)
    assert config.load(path).tier_spec_hash != config.load().tier_spec_hash
