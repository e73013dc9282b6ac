"""The CRM step of ``make demo``: sync the published tiers to a local CRM emulator over real HTTP.

``tierline.cli demo`` runs this as ``python -m tierline_dev.crm_emulators.demo --store FILE`` (the
pipeline does not import development tools). It prints the sync's result, and as its last line
one sentence on what the emulator's store now holds.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

from tierline.crm import config as crm_config
from tierline.crm import sync
from tierline_dev.crm_emulators.configured import zoho_module
from tierline_dev.crm_emulators.zoho import CrmEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierline_dev.crm_emulators.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the emulator's SQLite file (kept between demos)")
    args = parser.parse_args(argv)
    settings = crm_config.load()
    args.store.parent.mkdir(parents=True, exist_ok=True)
    with CrmEmulator(db_path=str(args.store)) as emulator:
        emulator.define_module(settings.module, zoho_module(settings))
        os.environ.update({name: emulator.connector_kwargs()[arg] for arg, name in crm_config.ENV.items()})
        result = sync.sync()
        records = emulator.records(settings.module)
    tier_field = next((f.crm_field for f in settings.fields if f.column == "tier"), None)
    mix = Counter(record.get(tier_field) for record in records)
    print(f"\n== CRM sync (reverse ETL) to a local Zoho-style emulator: {result['status']} ==")
    print(json.dumps({k: v for k, v in result.items() if k in ("status", "plan", "push", "reconcile")},
                     ensure_ascii=False, default=str)[:600])
    print(f"the emulator's store {args.store} holds {len(records):,} {settings.module} records with tiers "
          + ", ".join(f"{k} {v:,}" for k, v in mix.most_common())
          + " (serve it: python -m tierline_dev.crm_emulators zoho --db <store>)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
