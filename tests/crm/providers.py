"""One harness per CRM provider, so that one scenario suite runs against every emulator over real HTTP.

A scenario speaks of published columns (``tier``, ``next_action``) and customers; the harness knows
the provider's configuration (``config/crm.yml``, ``config/crm.fxiaoke.yml``), its CRM field names
and labels, and how to seed its emulator with the accounts a CRM already holds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierline.crm import config as crm_config
from tierline.crm.config import Settings
from tierline.settings import PROJECT_ROOT
from tierline_dev.crm_emulators.base import CrmEmulatorBase
from tierline_dev.crm_emulators.configured import emulator_for, module_for, name_field

from .support import FakeSleep
from .sync_support import settings_with

PROVIDERS = ("zoho", "fxiaoke")
CONFIGS = {"zoho": PROJECT_ROOT / "config" / "crm.yml", "fxiaoke": PROJECT_ROOT / "config" / "crm.fxiaoke.yml"}
# The custom field where each CRM keeps tierline's customer number (what pull maps to customer_id).
CUSTOMER_ID_FIELDS = {"zoho": "Tierline_Customer_Id", "fxiaoke": "tierline_customer_id__c"}


@dataclass
class Harness:
    name: str
    crm: CrmEmulatorBase
    cfg: Settings
    sleeps: FakeSleep = field(default_factory=FakeSleep)
    made: list = field(default_factory=list)

    @property
    def module(self) -> str:
        return self.cfg.module

    def connector(self, **overrides: Any):
        options = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.5, "backoff_max": 8.0,
                   "sleep": self.sleeps, "rng": random.Random(7), **overrides}
        connector = crm_config.make_connector(self.cfg, self.crm.connector_kwargs(), **options)
        self.made.append(connector)
        return connector

    def field(self, column: str) -> str:
        """The CRM field the configuration maps ``column`` to."""
        return next(f.crm_field for f in self.cfg.fields if f.column == column)

    def label(self, column: str, code: str) -> Any:
        """What the CRM holds for the published ``code`` of ``column``."""
        return next(f for f in self.cfg.fields if f.column == column).convert(code)

    def seed(self, rows: list[dict[str, Any]]) -> None:
        """The CRM holds these customers' accounts already (made by a CRM user), under their crm_record_id."""
        self.crm.seed(self.module, [{"id": r["crm_record_id"], name_field(self.cfg): f"客户 {r['customer_id']}"}
                                    for r in rows])

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record in the CRM by its id."""
        return {str(r.get("id") or r.get("_id")): r for r in self.crm.records(self.module)}

    def record(self, row: dict[str, Any]) -> dict[str, Any] | None:
        return self.crm.record_by_id(self.module, row["crm_record_id"])

    def value(self, row: dict[str, Any], column: str) -> Any:
        return (self.record(row) or {}).get(self.field(column))

    def edit(self, row: dict[str, Any], column: str, value: Any) -> None:
        """A person changes ``column``'s field of the customer's record in the CRM."""
        self.crm.edit_record(self.module, row["crm_record_id"], {self.field(column): value})

    @property
    def customer_id_field(self) -> str:
        return CUSTOMER_ID_FIELDS[self.name]

    def with_config(self, tmp_path: Path, **changes: Any) -> Harness:
        """The same emulator under this provider's configuration changed as ``settings_with`` does; the
        module is redefined for it."""
        cfg = settings_with(tmp_path, base=CONFIGS[self.name], **changes)
        self.crm.define_module(cfg.module, module_for(cfg))
        return Harness(self.name, self.crm, cfg, self.sleeps, self.made)

    def close(self) -> None:
        for connector in self.made:
            connector.close()


def start(name: str) -> Harness:
    cfg = crm_config.load(CONFIGS[name])
    crm = emulator_for(cfg).start()
    return Harness(name, crm, cfg)
