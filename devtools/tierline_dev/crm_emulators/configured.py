"""An emulator set up the way a CRM admin would set up the CRM for a given ``config/crm.yml``."""

from __future__ import annotations

from tierline.crm.config import Settings
from tierline_dev.crm_emulators.zoho import DEFAULT_MODULES, SYSTEM_FIELDS, FieldSpec, ModuleSpec


def zoho_module(settings: Settings) -> ModuleSpec:
    """The CRM module with the fields the configuration maps (picklists with its labels)."""
    base = DEFAULT_MODULES.get(settings.module) or ModuleSpec({})
    fields = dict(base.fields)
    fields[settings.external_id_field] = FieldSpec(max_length=64, unique=True)
    for mapping in settings.fields:
        values = tuple(dict.fromkeys(mapping.value_map.values())) if mapping.type == "picklist" else ()
        fields[mapping.crm_field] = FieldSpec(mapping.type, max_length=mapping.max_length, values=values)
    for pull in settings.pulls:
        if pull.module == settings.module:
            for name in pull.crm_fields:
                if name not in SYSTEM_FIELDS:
                    fields.setdefault(name, FieldSpec())
    return ModuleSpec(fields, base.system_duplicate_check)
