"""The CRM step of ``make demo``: sync the published tiers to a local CRM emulator over real HTTP.

``tierline.cli demo`` runs this as ``python -m tierline_dev.crm_emulators.demo --store FILE
--landing DIR [--config crm.yml]`` (the pipeline does not import development tools). The emulator
first holds the accounts the CRM had when it exported the demo's ``crm_customers.csv`` (the
customers came from that CRM), so the default ``update`` mode finds them and creates nothing. It
prints the sync's result, and as its last line one sentence on what the emulator now holds.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from tierline import warehouse
from tierline.crm import config as crm_config
from tierline.crm import sync
from tierline.crm.state import SCHEMA
from tierline_dev.crm_emulators.configured import accounts_from_extract, emulator_for

TITLES = {"zoho": "a local Zoho CRM emulator", "fxiaoke": "a local 纷享销客 emulator"}
UNPACED = (10**9, 1.0)


def forget_other_provider(provider: str) -> str | None:
    """The demo may switch CRMs between runs; a real deployment is refused instead (state.ensure)."""
    with warehouse.connect(autocommit=True) as conn:
        exists = conn.execute("select to_regclass(%s)", (f"{SCHEMA}.provider",)).fetchone()[0]
        owner = conn.execute(f"select provider from {SCHEMA}.provider").fetchone() if exists else None
        if owner is None or owner[0] == provider:
            return None
        conn.execute(f"drop schema {SCHEMA} cascade")
        return owner[0]


def describe(result: dict) -> list[str]:
    """One whole line per step of the sync (plan, push, reconcile): its counts, and how many items
    each of its lists holds (the lists themselves are in crm_sync.runs)."""
    lines = []
    for step in ("plan", "push", "reconcile"):
        values = result.get(step)
        if not isinstance(values, dict):
            continue
        parts = [f"{key} {len(value):,}" if isinstance(value, list | dict)
                 else f"{key} {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                 else f"{key} {value}" for key, value in values.items()]
        lines.append(f"  {step}: " + ", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierline_dev.crm_emulators.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="the emulator's SQLite file (kept between demos)")
    parser.add_argument("--landing", type=Path, required=True, help="the demo's extracts (the CRM's accounts)")
    parser.add_argument("--config", type=Path, default=crm_config.config_path(), help="crm.yml (the provider)")
    args = parser.parse_args(argv)
    settings = crm_config.load(args.config)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    replaced = forget_other_provider(settings.provider)
    with emulator_for(settings, db_path=str(args.store)) as emulator:
        seeded = emulator.seed(settings.module, accounts_from_extract(settings, args.landing))
        os.environ.update({**emulator.env(), crm_config.ENV_CONFIG: str(settings.path)})
        # The local emulator enforces no rate limit, so the demo does not pace itself to one (a real
        # 纷享销客 org gets the documented 100 calls per 20 s: docs/crm.md).
        with crm_config.connector_from_env(settings, rate_limit=UNPACED) as connector:
            result = sync.sync(cfg=settings, connector=connector)
        records = emulator.records(settings.module)
    tier_field = next((f.crm_field for f in settings.fields if f.column == "tier"), None)
    mix = Counter(record.get(tier_field) for record in records)
    print(f"\n== CRM sync (reverse ETL, mode {settings.mode}) to {TITLES[settings.provider]}: {result['status']} ==")
    if replaced:
        print(f"(the last demo synced to {replaced}: its sync state in {SCHEMA} was dropped)")
    for line in describe(result):
        print(line)
    plan, push = result["plan"], result.get("push", {})
    print(f"{settings.provider} emulator ({args.store}): {len(records):,} {settings.module} records "
          f"({seeded:,} seeded from the extract this time); this sync matched {plan['matched']:,}, "
          f"updated {push.get('updated', 0):,}, created {push.get('created', 0):,}, skipped "
          f"{plan['skipped_unmatched']:,} customers without a CRM record; tiers "
          + ", ".join(f"{k} {v:,}" for k, v in mix.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
