"""Run a CRM emulator until interrupted: ``python -m tierline_dev.crm_emulators zoho [--config crm.yml]``.

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
from tierline_dev.crm_emulators.configured import zoho_module
from tierline_dev.crm_emulators.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    CrmEmulator,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tierline_dev.crm_emulators", description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=["zoho"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8710, help="0 picks a free port")
    parser.add_argument("--db", default=":memory:", help="SQLite file to keep records across restarts")
    parser.add_argument("--config", type=Path, help="a crm.yml whose mapped fields the module gets")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--refresh-token", default=DEFAULT_REFRESH_TOKEN)
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds")
    parser.add_argument("--rate-limit", type=int, help="CRM API requests allowed per --rate-window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--no-retry-after", action="store_true", help="send 429s without Retry-After, like Zoho")
    parser.add_argument("--credit-limit", type=int, help="API credits per 24 hours")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    emulator = CrmEmulator(args.host, args.port, db_path=args.db, client_id=args.client_id,
                           client_secret=args.client_secret, refresh_token=args.refresh_token,
                           token_ttl=args.token_ttl)
    if args.config:
        settings = crm_config.load(args.config)
        emulator.define_module(settings.module, zoho_module(settings))
    if args.rate_limit:
        emulator.set_rate_limit(args.rate_limit, args.rate_window, retry_after=not args.no_retry_after)
    if args.credit_limit:
        emulator.set_credit_limit(args.credit_limit)
    emulator.start()
    kwargs = emulator.connector_kwargs()
    print(json.dumps({"provider": args.provider, **kwargs, "env": emulator.env()}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
