"""Run a CRM emulator until interrupted: ``python -m tierline_dev.crm_emulators zoho|fxiaoke [--config crm.yml]``.

It prints one JSON line first: the connector settings, and under ``env`` the ``TIERLINE_CRM_*``
variables that point ``tierline.crm`` at it (``export`` them, or let a script read the line).
With ``--config`` the module is set up with the fields that configuration maps.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from pathlib import Path

from tierline.crm import config as crm_config
from tierline_dev.crm_emulators.configured import module_for
from tierline_dev.crm_emulators.fxiaoke import FxiaokeEmulator
from tierline_dev.crm_emulators.zoho import CrmEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tierline_dev.crm_emulators", description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=["zoho", "fxiaoke"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8710, help="0 picks a free port")
    parser.add_argument("--db", default=":memory:", help="SQLite file to keep records across restarts")
    parser.add_argument("--config", type=Path, help="a crm.yml whose mapped fields the module gets")
    parser.add_argument("--rate-limit", type=int,
                        help="API requests allowed per --rate-window (纷享销客: per interface)")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--no-retry-after", action="store_true", help="send 429s without Retry-After, like Zoho")
    parser.add_argument("--daily-limit", type=int, help="API requests (Zoho: credits) per day")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    emulator = (FxiaokeEmulator if args.provider == "fxiaoke" else CrmEmulator)(args.host, args.port, db_path=args.db)
    if args.config:
        settings = crm_config.load(args.config)
        if settings.provider != args.provider:
            parser.error(f"{args.config} is a {settings.provider} configuration")
        emulator.define_module(settings.module, module_for(settings))
    if args.rate_limit:
        emulator.set_rate_limit(args.rate_limit, args.rate_window, retry_after=not args.no_retry_after,
                                per_interface=args.provider == "fxiaoke")
    if args.daily_limit:
        emulator.set_daily_limit(args.daily_limit)
    emulator.start()
    print(json.dumps({"provider": args.provider, **emulator.connector_kwargs(), "env": emulator.env()},
                     ensure_ascii=False), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
