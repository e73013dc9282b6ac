"""Business-rule configuration: typed, validated at load, with errors that name the key."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tierline import settings, vocabulary
from tierline.errors import ConfigError

METRICS = ("monetary", "lifetime_margin", "frequency", "referrals", "trend_ratio", "tenure_days",
           "regularity", "employee_count", "predicted_clv", "p_alive")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Windows(_Strict):
    frequency_days: int = Field(365, gt=0)
    monetary_days: int = Field(365, gt=0)
    trend_days: int = Field(90, gt=0)


class Rfm(_Strict):
    bins: int = Field(5, ge=2, le=10)


class Lifecycle(_Strict):
    new_days: int = Field(90, gt=0)
    growth_max_tenure_days: int = Field(365, gt=0)
    declining_trend_ratio: float = Field(0.5, gt=0, lt=1)
    dormant_days: int = Field(180, gt=0)
    churned_days: int = Field(365, gt=0)
    reactivated_window_days: int = Field(90, gt=0)
    reactivated_min_gap_days: int = Field(90, gt=0)
    cadence_min_purchase_days: int = Field(3, ge=2)
    dormant_cadence_multiple: float = Field(3, gt=0)
    dormant_min_days: int = Field(30, gt=0)
    dormant_max_days: int = Field(365, gt=0)
    churned_cadence_multiple: float = Field(6, gt=0)
    churned_min_days: int = Field(90, gt=0)
    churned_max_days: int = Field(730, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        pairs = [("dormant_days", "churned_days"), ("dormant_min_days", "dormant_max_days"),
                 ("churned_min_days", "churned_max_days"), ("dormant_min_days", "churned_min_days"),
                 ("dormant_max_days", "churned_max_days"), ("dormant_cadence_multiple", "churned_cadence_multiple")]
        for low, high in pairs:
            if not getattr(self, low) < getattr(self, high):
                raise ValueError(f"lifecycle.{low} must be smaller than lifecycle.{high}")
        return self


class Clv(_Strict):
    enabled: bool = True
    calibration_days: int | None = Field(None, gt=0)
    time_unit_days: float = Field(7, gt=0)
    horizon_periods: int = Field(52, gt=0)
    discount_rate_per_period: float = Field(0.0019, ge=0, lt=1)
    min_customers: int = Field(200, ge=2)
    min_repeaters: int = Field(50, ge=1)
    bounds: dict[Literal["r", "alpha", "a", "b", "p", "q", "v"], tuple[float, float]] = {}
    churn_risk_from_p_alive: bool = True

    @model_validator(mode="after")
    def _ranges(self):
        for name, (low, high) in self.bounds.items():
            if not 0 < low < high:
                raise ValueError(f"clv.bounds.{name}: expected [low, high] with 0 < low < high, got [{low}, {high}]")
        return self


class Gates(_Strict):
    max_quarantine_rate: float = Field(0.01, ge=0, le=1)
    min_quarantine_rows: int = Field(10, ge=0)
    max_tier_share_shift: float = Field(0.25, gt=0, le=1)


class Publish(_Strict):
    schema_: str = Field("analytics", alias="schema", pattern=r"^[a-z_][a-z0-9_]*$")
    lock_timeout_seconds: float = Field(5, gt=0, le=60)  # publish waits this long for a table lock, then retries


class Runs(_Strict):
    """How runs share one warehouse (docs/decisions.md, "Run isolation")."""

    build_prefix: str = Field("tierline_build", pattern=r"^[a-z_][a-z0-9_]{0,19}$")  # <prefix>_<date>_<run hash>_<layer>
    # the staging layer, kept and updated incrementally across runs (macros/staging_state.sql)
    state_schema: str = Field("tierline_state", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    lock_wait_seconds: float = Field(1800, ge=0)  # wait this long for another run on the warehouse, then refuse
    lock_grace_seconds: float = Field(600, gt=0)  # a run keeps the warehouse this long between its tasks (retry delays)
    lock_poll_seconds: float = Field(2, gt=0, le=60)
    keep_failed_builds: int = Field(3, ge=0)  # build schemas of the most recent failed runs, kept for debugging


class Retention(_Strict):
    """How long personal data is kept, in days before the run's date (null: for ever); applied
    after every publish and by ``tierline retention`` (tierline.retention, docs/production.md)."""

    landing_days: int | None = Field(None, gt=0)  # landing copies of extract dates older than this
    raw_history_days: int | None = Field(None, gt=0)  # raw row versions replaced by a newer one older than this
    quarantine_text_days: int | None = Field(None, gt=0)  # raw text of quarantined lines older than this
    run_folder_days: int | None = Field(None, gt=0)  # run folders, run logs and CRM plans older than this


# Config values that reach SQL: codes and keys are checked by pattern here (a code also names
# SQL columns), free text (labels) is quoted by the dbt macro sql_literal (macros/quoting.sql).
CODE_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
BRANCH_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
BranchCode = Annotated[str, StringConstraints(pattern=BRANCH_PATTERN)]


class Tier(_Strict):
    code: str = Field(pattern=CODE_PATTERN)
    label_zh: Label
    label_en: Label
    min_score_percentile: float | None = Field(None, ge=0, le=1)
    min_monetary: float | None = Field(None, ge=0)
    min_orders: int | None = Field(None, ge=1)


class Thresholds(_Strict):
    min_score_percentile: float | None = Field(None, ge=0, le=1)
    min_monetary: float | None = Field(None, ge=0)
    min_orders: int | None = Field(None, ge=1)


class Hysteresis(_Strict):
    demote_after: int = Field(1, ge=1)  # 1 = demote at the first evaluation below the line
    max_steps_down: int = Field(1, ge=1)


class Dimension(_Strict):
    weight: float = Field(ge=0, le=1)
    metrics: list[Literal[METRICS]] = Field(min_length=1)  # type: ignore[valid-type]


class TierSpec(_Strict):
    version: str = Field(pattern=VERSION_PATTERN)
    ladder: list[Tier] = Field(min_length=2)
    dimensions: dict[Literal["contribution", "loyalty", "potential", "stability", "influence"], Dimension]
    hysteresis: Hysteresis = Hysteresis()
    branches: dict[BranchCode, dict[str, Thresholds]] = {}

    @model_validator(mode="after")
    def _consistent(self):
        codes = [t.code for t in self.ladder]
        if len(set(codes)) != len(codes):
            raise ValueError(f"ladder: tier codes must be unique, got {codes}")
        last = self.ladder[-1]
        if any(v is not None for v in (last.min_score_percentile, last.min_monetary, last.min_orders)):
            raise ValueError(f"ladder: the last tier ({last.code}) is the fallback and takes no thresholds")
        for tier in self.ladder[:-1]:
            if all(v is None for v in (tier.min_score_percentile, tier.min_monetary, tier.min_orders)):
                raise ValueError(f"ladder.{tier.code}: give min_score_percentile, min_monetary or min_orders")
        ruled = {t.code for t in self.ladder[:-1]}
        for branch, tiers in self.branches.items():
            for code in tiers:
                if code not in ruled:
                    raise ValueError(f"branches.{branch}.{code}: not a tier with thresholds; use one of {sorted(ruled)}")
        total = sum(d.weight for d in self.dimensions.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"dimensions: weights must sum to 1, they sum to {total:g}")
        return self


class Actions(_Strict):
    """History and actions layer (``actions``): contact cadence, manager and care rules per tier,
    early-warning thresholds and KPI definitions. Tier codes are checked against the ladder when
    the dbt models compile (this class does not see the tier specification)."""

    class TierPolicy(_Strict):
        contact_every_days: int | None = Field(None, gt=0)  # follow-up due after this long without an interaction
        dedicated_manager: bool = False  # the tier needs an assigned account manager known to the CRM
        birthday_care: bool = True  # birthday actions for the tier's individual customers
        priority: int = Field(3, ge=1, le=9)  # 1 = most urgent

    class EarlyWarning(_Strict):
        churn_risk_threshold: float = Field(0.6, gt=0, le=1)
        churn_exclude_stages: list[str] = ["prospect", "churned"]

        @field_validator("churn_exclude_stages")
        @classmethod
        def _stages(cls, value):
            known = vocabulary.lifecycle_stages()
            unknown = [stage for stage in value if stage not in known]
            if unknown:
                raise ValueError(f"unknown lifecycle stage(s) {', '.join(map(repr, unknown))}; the stages are "
                                 f"{', '.join(known)} (dbt_project/seeds/lifecycle_stages.csv)")
            return value

    class Kpi(_Strict):
        churn_period_days: int = Field(30, gt=0)
        top_tiers: list[str] = Field(["strategic", "vip"], min_length=1)
        top_customer_share: float = Field(0.1, gt=0, lt=1)

    care_window_days: int = Field(7, ge=1, le=366)
    tier_policies: dict[str, TierPolicy] = {}
    early_warning: EarlyWarning = EarlyWarning()
    kpi: Kpi = Kpi()

    @model_validator(mode="after")
    def _codes(self):
        # tier codes end up in SQL and column values: the shape of a ladder code
        for where, codes in (("tier_policies", list(self.tier_policies)), ("kpi.top_tiers", self.kpi.top_tiers)):
            for code in codes:
                if not re.fullmatch(CODE_PATTERN, code):
                    raise ValueError(f"actions.{where}: {code!r} is not a tier code (a-z, 0-9 and _, starting with a letter)")
        return self


# Database role names from config reach SQL only through psycopg.sql.Identifier (tierline.access);
# the pattern keeps them to names a DBA can type unquoted-looking and away from PostgreSQL's
# reserved pg_ prefix and pseudo-roles.
ROLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$"
RESERVED_ROLES = {"public", "none", "current_user", "current_role", "session_user", "user", "all"}
RoleName = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]
ManagerId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]
ROLE_KINDS = ("bi", "pii_reader", "crm_sync")
DEFAULT_ROLES = {"bi": "tierline_bi", "pii_reader": "tierline_pii_reader", "crm_sync": "tierline_crm_sync"}


class Access(_Strict):
    """Who reads what (``access``; README "Roles and row-level security"). Every publish creates
    the roles, grants them and loads the row mapping (tierline.access)."""

    class Rows(_Strict):
        branches: dict[RoleName, list[BranchCode]] = {}  # user or role -> the branches (网点) whose customers it sees
        managers: dict[RoleName, list[ManagerId]] = {}  # user or role -> account manager ids whose book it sees
        everyone: list[RoleName] = []  # users or roles that see every customer (head office)

    roles: dict[Literal[ROLE_KINDS], RoleName] = DEFAULT_ROLES  # type: ignore[valid-type]
    members: dict[Literal[ROLE_KINDS], list[RoleName]] = {}  # type: ignore[valid-type]  # login users granted each role
    rows: Rows = Rows()

    @field_validator("roles")
    @classmethod
    def _all_roles(cls, value):
        return {**DEFAULT_ROLES, **value}

    @model_validator(mode="after")
    def _names(self):
        roles = self.roles
        if len(set(roles.values())) != len(roles):
            raise ValueError(f"access.roles: the three roles need three different names, got {roles}")
        named = [("access.roles", n) for n in roles.values()]
        named += [(f"access.members.{k}", n) for k, users in self.members.items() for n in users]
        named += [("access.rows.branches", n) for n in self.rows.branches]
        named += [("access.rows.managers", n) for n in self.rows.managers]
        named += [("access.rows.everyone", n) for n in self.rows.everyone]
        for where, name in named:
            if name.lower() in RESERVED_ROLES or name.lower().startswith("pg_"):
                raise ValueError(f"{where}: {name!r} is a reserved role name (PUBLIC, pg_*, CURRENT_USER, ...)")
        for kind, users in self.members.items():
            clash = set(users) & set(roles.values())
            if clash:
                raise ValueError(f"access.members.{kind}: {sorted(clash)} are the group roles themselves; "
                                 "list login users here")
        return self


class Config(_Strict):
    business_timezone: str = "Asia/Shanghai"
    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    windows: Windows = Windows()
    rfm: Rfm = Rfm()
    lifecycle: Lifecycle = Lifecycle()
    clv: Clv = Clv()
    tier_spec: TierSpec
    tier_spec_hash: str
    gates: Gates = Gates()
    publish: Publish = Publish()
    runs: Runs = Runs()
    actions: Actions = Actions()
    access: Access = Access()
    retention: Retention = Retention()

    @field_validator("business_timezone")
    @classmethod
    def _zone(cls, value):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)") from exc
        return value

    def dbt_vars(self) -> dict:
        """What the dbt models read through ``var()``."""
        return {
            "business_timezone": self.business_timezone,
            "currency": self.currency,
            "windows": self.windows.model_dump(),
            "rfm_bins": self.rfm.bins,
            "lifecycle": self.lifecycle.model_dump(),
            "clv": self.clv.model_dump(),
            "tier_spec": self.tier_spec.model_dump(),
            "tier_spec_version": self.tier_spec.version,
            "tier_spec_hash": self.tier_spec_hash,
            "publish_schema": self.publish.schema_,
            "actions": self.actions.model_dump(),
        }


def read_yaml(path: Path, *, missing_hint: str = "") -> dict:
    """A YAML mapping, or a ConfigError that names the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist{missing_hint}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def explain(path: Path, exc: ValidationError, what: str = "configuration") -> ConfigError:
    """A ConfigError listing every invalid key of a file with what is wrong with it."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {key}: {error['msg']}")
    return ConfigError(f"{path}: invalid {what}\n" + "\n".join(lines))


def published_schema(path: Path | None = None) -> str:
    """The schema the pipeline publishes to, for DAG files at parse time (their Asset URIs): the
    configuration's ``publish`` section alone, validated by the same model. An unreadable or invalid
    file gives the default: the run's first task reports the error by its key."""
    try:
        section = read_yaml(path or settings.config_path()).get("publish") or {}
        return Publish.model_validate(section).schema_
    except (ConfigError, ValidationError, AttributeError):
        return Publish().schema_


def load_tier_spec(path: Path) -> tuple[TierSpec, str]:
    data = read_yaml(path)
    try:
        spec = TierSpec.model_validate(data)
    except ValidationError as exc:
        raise explain(path, exc) from None
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return spec, digest


def load(path: Path | None = None, tier_spec_path: Path | None = None) -> Config:
    path = Path(path or settings.config_path())
    data = read_yaml(path)
    spec_file = tier_spec_path or path.parent / data.pop("tier_spec", "tier_spec.yml")
    spec, digest = load_tier_spec(Path(spec_file))
    try:
        return Config.model_validate({**data, "tier_spec": spec, "tier_spec_hash": digest})
    except ValidationError as exc:
        raise explain(path, exc) from None
