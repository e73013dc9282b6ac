"""The CRM integration's configuration (``config/crm.yml``): typed, validated at load, errors name the key.

What goes to the CRM and how is configuration, not code: the module and external id field, the
field mapping (published column -> CRM field, CRM field type, picklist value maps, per-field
ownership), the next-action rules, the batch size and retry policy, and for the pull the mapping
of CRM fields to the extract contract's columns. Endpoints and secrets come from the environment
(``TIERLINE_CRM_*``, see ``ENV``), never from this file.
"""

from __future__ import annotations

import csv
import os
import re
import string
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierline import config as tierline_config
from tierline import contract, settings
from tierline.errors import ConfigError

ENV_CONFIG = "TIERLINE_CRM_CONFIG"
# Per provider: connector argument -> environment variable.
ENV = {
    "zoho": {
        "api_base": "TIERLINE_CRM_API_BASE",
        "accounts_base": "TIERLINE_CRM_ACCOUNTS_BASE",
        "client_id": "TIERLINE_CRM_CLIENT_ID",
        "client_secret": "TIERLINE_CRM_CLIENT_SECRET",
        "refresh_token": "TIERLINE_CRM_REFRESH_TOKEN",
    },
    "fxiaoke": {
        "api_base": "TIERLINE_CRM_API_BASE",
        "app_id": "TIERLINE_CRM_APP_ID",
        "app_secret": "TIERLINE_CRM_APP_SECRET",
        "permanent_code": "TIERLINE_CRM_PERMANENT_CODE",
        "open_user_id": "TIERLINE_CRM_OPEN_USER_ID",
    },
}
# Fields each CRM requires when a record is created (push.create_fields must set them in upsert mode).
CREATE_REQUIRED = {
    "zoho": {"Accounts": ("Account_Name",), "Contacts": ("Last_Name",), "Leads": ("Last_Name",)},
    "fxiaoke": {"AccountObj": ("name",)},
}
RECORD_ID = "id"  # push.match.crm_field naming the CRM's own record id
# The published tables a pushed field may come from, in the order a column name is looked up.
SOURCE_TABLES = ("customer_tier", "customer_lifecycle", "customer_value")
DERIVED_COLUMNS = ("next_action",)
NAMED_VALUE_MAPS = ("tier_spec.label_en", "tier_spec.label_zh", "lifecycle_stages.label_en",
                    "lifecycle_stages.label_zh")
CRM_FIELD = r"^[A-Za-z_][A-Za-z0-9_]*$"
MARTS_YML = settings.DBT_PROJECT_DIR / "models" / "marts" / "_marts.yml"
LIFECYCLE_SEED = settings.DBT_PROJECT_DIR / "seeds" / "lifecycle_stages.csv"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    requests: int = Field(gt=0)
    window_seconds: float = Field(gt=0)


class Connection(_Strict):
    timeout_seconds: float = Field(30, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base_seconds: float = Field(1.0, ge=0)
    backoff_max_seconds: float = Field(60, gt=0)
    credit_budget_per_run: int | None = Field(None, gt=0)
    trigger: list[Literal["workflow", "approval", "blueprint"]] = []
    # Calls the connector allows itself per interface and window (纷享销客 documents 100 per 20 s);
    # null = the provider's documented limit (none for Zoho, which meters credits per day).
    rate_limit: RateLimit | None = None


class PushField(_Strict):
    column: str
    type: Literal["text", "picklist", "double", "integer", "boolean", "date"] = "text"
    value_map: dict[str, str] | str | None = None
    decimals: int | None = Field(None, ge=0, le=9)
    max_length: int = Field(255, ge=1, le=32000)
    ownership: Literal["overwrite", "fill_if_empty"] = "overwrite"
    protect_human_edits: bool = True


class ActionRule(_Strict):
    tier: list[str] | None = None
    lifecycle_stage: list[str] | None = None
    min_churn_risk: float | None = Field(None, ge=0, le=1)
    action: str = Field(min_length=1)


class NextAction(_Strict):
    rules: list[ActionRule] = []
    default: str | None = None


class Match(_Strict):
    crm_field: str = Field(RECORD_ID, pattern=CRM_FIELD)
    column: str = "crm_record_id"


class Push(_Strict):
    mode: Literal["update", "upsert"] = "update"
    match: Match = Match()
    batch_size: int = Field(100, ge=1, le=100)
    create_fields: dict[str, str] = {}
    fields: dict[str, PushField] = Field(min_length=1)
    next_action: NextAction = NextAction()


class PullColumn(_Strict):
    field: str | None = None
    constant: str | None = None
    value_map: dict[str, str] | None = None
    default: str | None = None


class PullFile(_Strict):
    module: str = Field(pattern=CRM_FIELD)
    columns: dict[str, str | PullColumn] = Field(min_length=1)


class Pull(_Strict):
    files: dict[str, PullFile] = {}


class Alerts(_Strict):
    """Counts of one sync run at which it notifies through ``tierline.alerts``; null never notifies."""

    dead_letters: int | None = Field(1, ge=1)
    reconcile_mismatches: int | None = Field(1, ge=1)
    new_conflicts: int | None = Field(1, ge=1)


class CrmConfig(_Strict):
    provider: Literal["zoho", "fxiaoke"] = "zoho"
    module: str = Field("Accounts", pattern=CRM_FIELD)
    integration_user_id: str | None = None
    connection: Connection = Connection()
    push: Push
    pull: Pull = Pull()
    alerts: Alerts = Alerts()


# -- resolved, ready-to-use form ---------------------------------------------------------------


@dataclass(frozen=True)
class FieldMapping:
    crm_field: str
    column: str
    type: str
    value_map: dict[str, str] | None
    decimals: int | None
    max_length: int
    ownership: str
    protect_human_edits: bool

    def convert(self, value: Any) -> Any:
        """The warehouse value as the CRM field holds it; raises ``UnmappedValue`` for a picklist miss."""
        if value is None:
            return None
        if self.value_map is not None:
            key = str(value)
            if key not in self.value_map:
                raise UnmappedValue(self.crm_field, key)
            return self.value_map[key]
        if self.type == "double":
            number = value if isinstance(value, Decimal) else Decimal(str(value))
            if self.decimals is not None:
                number = round(number, self.decimals)
            return float(number)
        if self.type == "integer":
            return int(value)
        if self.type == "boolean":
            return bool(value)
        if self.type == "date":
            return value.isoformat() if isinstance(value, date) else str(value)[:10]
        text = str(value)
        return text if len(text) <= self.max_length else text[: self.max_length - 1] + "…"


class UnmappedValue(ValueError):
    def __init__(self, crm_field: str, value: str):
        super().__init__(f"no value_map entry for {value!r} (field {crm_field})")
        self.crm_field = crm_field
        self.value = value


@dataclass(frozen=True)
class PullMapping:
    file: str
    module: str
    entity: contract.Entity
    columns: dict[str, PullColumn]

    @property
    def crm_fields(self) -> list[str]:
        return list(dict.fromkeys(c.field.split(".")[0] for c in self.columns.values() if c.field))


@dataclass(frozen=True)
class Settings:
    """``config/crm.yml`` validated and resolved against the tier spec and the published columns."""

    raw: CrmConfig
    path: Path
    publish_schema: str
    fields: tuple[FieldMapping, ...]
    source_columns: dict[str, str]  # column -> published table it is read from
    action_rules: tuple[ActionRule, ...]
    pulls: tuple[PullMapping, ...]

    @property
    def provider(self) -> str:
        return self.raw.provider

    @property
    def module(self) -> str:
        return self.raw.module

    @property
    def mode(self) -> str:
        return self.raw.push.mode

    @property
    def match_field(self) -> str:
        """The CRM field a customer's record is found by: ``id`` (the CRM's record id) or a field."""
        return self.raw.push.match.crm_field

    @property
    def match_column(self) -> str:
        """The published column (or ``customer_id``) whose value the match field holds."""
        return self.raw.push.match.column

    @property
    def crm_fields(self) -> list[str]:
        return [f.crm_field for f in self.fields]

    def create_values(self, row: dict[str, Any]) -> dict[str, str]:
        return {name: template.format_map(row) for name, template in self.raw.push.create_fields.items()}


# -- loading -----------------------------------------------------------------------------------


def config_path() -> Path:
    return Path(os.environ.get(ENV_CONFIG) or settings.PROJECT_ROOT / "config" / "crm.yml")


@cache
def published_columns() -> dict[str, tuple[str, ...]]:
    """Column names of the published tables a field may be read from, per ``_marts.yml`` (the contract)."""
    models = yaml.safe_load(MARTS_YML.read_text(encoding="utf-8"))["models"]
    return {m["name"]: tuple(c["name"] for c in m["columns"]) for m in models if m["name"] in SOURCE_TABLES}


@cache
def lifecycle_stages() -> dict[str, dict[str, str]]:
    with LIFECYCLE_SEED.open(encoding="utf-8") as handle:
        return {row["lifecycle_stage"]: row for row in csv.DictReader(handle)}


def load(path: Path | None = None, tierline: tierline_config.Config | None = None) -> Settings:
    path = Path(path or config_path())
    data = tierline_config.read_yaml(path, missing_hint=f" (set {ENV_CONFIG} or create it)")
    try:
        raw = CrmConfig.model_validate(data)
    except ValidationError as exc:
        raise tierline_config.explain(path, exc, "CRM configuration") from None
    tierline = tierline or tierline_config.load()
    problems: list[str] = []
    fields = tuple(_resolve_field(name, spec, tierline, problems) for name, spec in raw.push.fields.items())
    source_columns = _source_columns(raw, problems)
    _check_push(raw, tierline, source_columns, problems)
    pulls = tuple(_resolve_pull(name, spec, raw, problems) for name, spec in raw.pull.files.items())
    if problems:
        raise ConfigError(f"{path}: invalid CRM configuration\n" + "\n".join(f"  {p}" for p in problems))
    return Settings(raw, path, tierline.publish.schema_, fields, source_columns, tuple(raw.push.next_action.rules),
                    pulls)


def _value_map(name: str, tierline: tierline_config.Config) -> dict[str, str]:
    source, label = name.split(".")
    if source == "tier_spec":
        return {t.code: getattr(t, label) for t in tierline.tier_spec.ladder}
    return {code: row[label] for code, row in lifecycle_stages().items()}


def _codes_for(column: str, tierline: tierline_config.Config) -> list[str] | None:
    """The codes a picklist column can hold, when the project defines them."""
    if column in ("tier", "rule_tier", "previous_tier"):
        return [t.code for t in tierline.tier_spec.ladder]
    if column in ("lifecycle_stage", "previous_stage"):
        return list(lifecycle_stages())
    return None


def _resolve_field(crm_field: str, spec: PushField, tierline, problems: list[str]) -> FieldMapping:
    key = f"push.fields.{crm_field}"
    if not re.match(CRM_FIELD, crm_field):
        problems.append(f"{key}: not a CRM field API name (letters, digits and _)")
    value_map = spec.value_map
    if isinstance(value_map, str):
        if value_map not in NAMED_VALUE_MAPS:
            problems.append(f"{key}.value_map: {value_map!r} is not one of {', '.join(NAMED_VALUE_MAPS)} "
                            "(or give a mapping code: label)")
            value_map = None
        else:
            value_map = _value_map(value_map, tierline)
    if spec.type == "picklist" and value_map is None:
        problems.append(f"{key}.value_map: a picklist field needs a value_map (code: picklist label)")
    if value_map is not None:
        codes = _codes_for(spec.column, tierline)
        missing = [c for c in codes or () if c not in value_map]
        if missing:
            problems.append(f"{key}.value_map: no label for {', '.join(missing)} (codes: {', '.join(codes)})")
    if spec.decimals is not None and spec.type != "double":
        problems.append(f"{key}.decimals: only for type double")
    return FieldMapping(crm_field, spec.column, spec.type, value_map, spec.decimals, spec.max_length, spec.ownership,
                        spec.protect_human_edits)


def _source_columns(raw: CrmConfig, problems: list[str]) -> dict[str, str]:
    tables = published_columns()
    wanted = {spec.column: f"push.fields.{name}.column" for name, spec in raw.push.fields.items()}
    for name, template in raw.push.create_fields.items():
        try:
            names = [part[1] for part in string.Formatter().parse(template) if part[1]]
        except ValueError as exc:
            problems.append(f"push.create_fields.{name}: {exc}")
            continue
        wanted.update({column: f"push.create_fields.{name}" for column in names})
    wanted.update({"tier": "push.next_action", "lifecycle_stage": "push.next_action", "churn_risk": "push.next_action"})
    wanted[raw.push.match.column] = "push.match.column"
    resolved = {}
    for column, key in wanted.items():
        if column in DERIVED_COLUMNS or column == "customer_id":
            continue
        table = next((t for t in SOURCE_TABLES if column in tables.get(t, ())), None)
        if table is None:
            known = sorted({c for cols in tables.values() for c in cols} | set(DERIVED_COLUMNS))
            problems.append(f"{key}: unknown column {column!r}; published columns of "
                            f"{', '.join(SOURCE_TABLES)}: {', '.join(known)}")
        else:
            resolved[column] = table
    return resolved


def _check_push(raw: CrmConfig, tierline, source_columns: dict[str, str], problems: list[str]) -> None:
    push, match = raw.push, raw.push.match
    if match.crm_field in push.fields or match.crm_field in push.create_fields:
        problems.append(f"push.fields: {match.crm_field} is the match field (push.match.crm_field); the sync "
                        "never writes it on an existing record")
    overlap = sorted(set(push.fields) & set(push.create_fields))
    if overlap:
        problems.append(f"push.create_fields: {', '.join(overlap)} also in push.fields")
    if push.mode == "update" and push.create_fields:
        problems.append("push.create_fields: only used when push.mode is upsert (update mode never creates); "
                        "remove them or set push.mode: upsert")
    if push.mode == "upsert":
        if match.crm_field == RECORD_ID:
            problems.append("push.match.crm_field: upsert mode creates records, so it matches on a unique field "
                            "the sync can set (e.g. Tierline_Customer_Id with column customer_id), not on "
                            f"the CRM's own {RECORD_ID}")
        required = CREATE_REQUIRED.get(raw.provider, {}).get(raw.module, ())
        missing = [name for name in required if name not in push.create_fields]
        if missing:
            problems.append(f"push.create_fields: upsert mode creates {raw.module} records, which "
                            f"{raw.provider} requires {', '.join(missing)} for; give a template for each")
    tiers = [t.code for t in tierline.tier_spec.ladder]
    stages = list(lifecycle_stages())
    for index, rule in enumerate(raw.push.next_action.rules):
        for name, allowed in (("tier", tiers), ("lifecycle_stage", stages)):
            unknown = [v for v in getattr(rule, name) or () if v not in allowed]
            if unknown:
                problems.append(f"push.next_action.rules.{index}.{name}: unknown {', '.join(unknown)} "
                                f"(allowed: {', '.join(allowed)})")
        if rule.tier is None and rule.lifecycle_stage is None and rule.min_churn_risk is None:
            problems.append(f"push.next_action.rules.{index}: give tier, lifecycle_stage or min_churn_risk")


def _resolve_pull(file_name: str, spec: PullFile, raw: CrmConfig, problems: list[str]) -> PullMapping | None:
    key = f"pull.files.{file_name}"
    entity = contract.BY_FILE.get(file_name)
    if entity is None:
        problems.append(f"{key}: not a file of the extract contract ({', '.join(contract.BY_FILE)})")
        return None
    columns: dict[str, PullColumn] = {}
    for name, value in spec.columns.items():
        column = PullColumn(field=value) if isinstance(value, str) else value
        if name not in {c.name for c in entity.columns}:
            problems.append(f"{key}.columns.{name}: not a column of {file_name} "
                            f"({', '.join(c.name for c in entity.columns)})")
        elif (column.field is None) == (column.constant is None):
            problems.append(f"{key}.columns.{name}: give exactly one of field or constant")
        columns[name] = column
    missing = [c for c in entity.required if c not in columns]
    if missing:
        problems.append(f"{key}.columns: required contract column(s) not mapped: {', '.join(missing)}")
    modules = [f.module for f in raw.pull.files.values()]
    if modules.count(spec.module) > 1:
        problems.append(f"{key}.module: {spec.module} is pulled into two files; the watermark is per module")
    return PullMapping(file_name, spec.module, entity, columns)


def connector_from_env(settings_: Settings, **overrides: Any):
    """The configured provider's connector, from ``TIERLINE_CRM_*`` and the connection section of the config."""
    # read by literal name so that tooling (and the compose agreement test) can see every variable
    if settings_.provider == "fxiaoke":
        values = {
            "api_base": os.environ.get("TIERLINE_CRM_API_BASE", ""),
            "app_id": os.environ.get("TIERLINE_CRM_APP_ID", ""),
            "app_secret": os.environ.get("TIERLINE_CRM_APP_SECRET", ""),
            "permanent_code": os.environ.get("TIERLINE_CRM_PERMANENT_CODE", ""),
            "open_user_id": os.environ.get("TIERLINE_CRM_OPEN_USER_ID", ""),
        }
    else:
        values = {
            "api_base": os.environ.get("TIERLINE_CRM_API_BASE", ""),
            "accounts_base": os.environ.get("TIERLINE_CRM_ACCOUNTS_BASE", ""),
            "client_id": os.environ.get("TIERLINE_CRM_CLIENT_ID", ""),
            "client_secret": os.environ.get("TIERLINE_CRM_CLIENT_SECRET", ""),
            "refresh_token": os.environ.get("TIERLINE_CRM_REFRESH_TOKEN", ""),
        }
    names = ENV[settings_.provider]
    missing = [names[arg] for arg, value in values.items() if not value]
    if missing:
        raise ConfigError(f"the {settings_.provider} CRM connection is not configured: set {', '.join(missing)} "
                          "(see docs/crm.md)")
    return make_connector(settings_, values, **overrides)


def make_connector(settings_: Settings, connection: dict[str, str], **overrides: Any):
    """The configured provider's connector for ``connection`` (its ``ENV`` arguments) and the config's settings."""
    conn = settings_.raw.connection
    kwargs: dict[str, Any] = dict(connection)
    kwargs.update(timeout=conn.timeout_seconds, max_retries=conn.max_retries, backoff_base=conn.backoff_base_seconds,
                  backoff_max=conn.backoff_max_seconds, credit_budget=conn.credit_budget_per_run)
    if conn.rate_limit is not None:
        kwargs["rate_limit"] = (conn.rate_limit.requests, conn.rate_limit.window_seconds)
    if settings_.provider == "fxiaoke":
        from tierline.crm import FxiaokeConnector

        kwargs["field_types"] = {f.crm_field: f.type for f in settings_.fields}
        kwargs.update(overrides)
        return FxiaokeConnector(**kwargs)
    from tierline.crm import ZohoCrmConnector

    kwargs["trigger"] = conn.trigger
    kwargs.update(overrides)
    return ZohoCrmConnector(**kwargs)
