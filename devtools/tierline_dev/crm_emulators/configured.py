"""An emulator set up the way a CRM admin would set up the CRM for a given ``config/crm.yml``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tierline import contract, csvfile
from tierline.crm.config import RECORD_ID, Settings
from tierline_dev.crm_emulators import fxiaoke, zoho
from tierline_dev.crm_emulators.base import CrmEmulatorBase, FieldSpec, ModuleSpec


def zoho_module(settings: Settings) -> ModuleSpec:
    """The CRM module with the fields the configuration maps (picklists with its labels)."""
    return _module(settings, zoho.DEFAULT_MODULES, zoho.SYSTEM_FIELDS)


def fxiaoke_module(settings: Settings) -> ModuleSpec:
    """The object with the custom fields the configuration maps (single-choice fields with its labels
    as their option values)."""
    return _module(settings, fxiaoke.DEFAULT_MODULES, fxiaoke.SYSTEM_FIELDS)


def _module(settings: Settings, defaults: dict[str, ModuleSpec], system_fields: tuple[str, ...]) -> ModuleSpec:
    base = defaults.get(settings.module) or ModuleSpec({})
    fields = dict(base.fields)
    if settings.match_field != RECORD_ID:
        # Zoho upserts only on a unique field; update mode may match on any (an e-mail, a phone).
        fields[settings.match_field] = FieldSpec(max_length=64, unique=settings.mode == "upsert")
    for mapping in settings.fields:
        values = tuple(dict.fromkeys(mapping.value_map.values())) if mapping.type == "picklist" else ()
        fields[mapping.crm_field] = FieldSpec(mapping.type, max_length=mapping.max_length, values=values)
    for pull in settings.pulls:
        if pull.module == settings.module:
            for name in pull.crm_fields:
                if name not in system_fields and name != RECORD_ID:
                    fields.setdefault(name, FieldSpec())
    return ModuleSpec(fields, base.system_duplicate_check)


def module_for(settings: Settings) -> ModuleSpec:
    return fxiaoke_module(settings) if settings.provider == "fxiaoke" else zoho_module(settings)


def emulator_for(settings: Settings, **options: Any) -> CrmEmulatorBase:
    """An emulator of ``settings.provider`` (not started) whose module has the configured fields."""
    emulator = (fxiaoke.FxiaokeEmulator if settings.provider == "fxiaoke" else zoho.CrmEmulator)(**options)
    emulator.define_module(settings.module, module_for(settings))
    return emulator


def name_field(settings: Settings) -> str:
    """The field holding an account's name (what seeded records are called by)."""
    return {"Accounts": "Account_Name", "Contacts": "Last_Name", "AccountObj": "name"}.get(settings.module,
                                                                                             "Account_Name")


def accounts_from_extract(settings: Settings, landing: Path) -> list[dict[str, Any]]:
    """The accounts the CRM held when it exported ``<landing>/<date>/crm_customers.csv``: one per
    ``crm_record_id`` (its latest row), with the fields the pull maps back to the extract's columns."""
    pull = next((p for p in settings.pulls if p.file == "crm_customers.csv"), None)
    columns = {} if pull is None else {name: c for name, c in pull.columns.items()
                                       if c.field and "." not in c.field
                                       and c.field not in (*zoho.SYSTEM_FIELDS, *fxiaoke.SYSTEM_FIELDS)}
    entity = contract.BY_FILE["crm_customers.csv"]
    accounts: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(landing).glob("*/crm_customers.csv")):
        shape = csvfile.inspect(path, entity)
        with path.open(encoding=shape.encoding, errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            for fields in reader:
                if len(fields) != len(shape.header):
                    continue  # a broken row the loader quarantines
                row = {name: fields[position - 1].strip() for name, position in shape.positions.items()}
                if not row.get("crm_record_id") or not row.get("customer_id"):
                    continue
                account = {"id": row["crm_record_id"]}
                for name, column in columns.items():
                    value = row.get(name) or None
                    if value is not None and column.value_map:
                        value = next((label for label, code in column.value_map.items() if code == value.lower()), None)
                    if value is not None:
                        account[column.field] = value
                accounts[row["crm_record_id"]] = account
    return list(accounts.values())
