"""How fast the CRM connector writes: 100,000 records upserted in batches of 100 against the emulator.

Run from the checkout root and read the JSON it prints:

    PYTHONPATH=plugins:devtools .venv/bin/python bench/bench_crm.py [--records 100000] [--scenarios ...]

Scenarios:

- ``unthrottled``: no limit; the cost of the connector, HTTP on loopback and the emulator itself
  (which runs as a separate process through its CLI).
- ``zoho_budget_retry_after`` / ``zoho_budget_no_retry_after``: a per-minute request budget, with
  and without ``Retry-After`` on the 429s (Zoho sends none).

The budget. Zoho meters API credits per rolling 24 hours plus concurrent calls, not requests per
minute; an Enterprise org with 100 user licences has 50,000 + 100 x 1,000 = 150,000 credits a day,
about 104 a minute if spent evenly. So the sync is modelled as allowed 100 requests a minute. To
keep the run short, time is compressed by ``--time-scale`` (default 6): the emulator allows 100
requests per 10 s and the connector's backoff is shrunk by the same factor. ``*_real_scale``
figures divide the measured rates by the scale. Retry-After is whole seconds, so at scale 6 it is
coarser than in real time by up to 6 s per wait; the scaled figures slightly understate it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import requests

from tierline.crm import CrmRateLimited, ZohoCrmConnector
from tierline_dev.crm_emulators.process import spawn

MODULE = "Accounts"
ID_FIELD = "Tierline_Customer_Id"
BATCH = 100
TIERS = ("Strategic", "VIP", "Key", "Regular", "Potential")


def record(number: int) -> dict:
    return {
        ID_FIELD: f"C{number:07d}",
        "Account_Name": f"Customer {number}",
        "Tierline_Tier": TIERS[number % len(TIERS)],
        "Tierline_Lifecycle_Stage": "Mature",
        "Tierline_Customer_Value": round(number * 1.37 % 50_000, 2),
        "Tierline_Tier_Updated_At": "2026-11-23T02:00:00+08:00",
        "Tierline_Spec_Version": "2026.11.1",
    }


class TimedSleep:
    def __init__(self):
        self.total = 0.0
        self.count = 0

    def __call__(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1
        time.sleep(seconds)


def start_emulator(per_minute: int | None, window: float, retry_after: bool) -> tuple[subprocess.Popen, dict]:
    """The emulator in its own process (its CLI), so it does not share the connector's GIL."""
    options = []
    if per_minute is not None:
        options += ["--rate-limit", str(per_minute), "--rate-window", str(window)]
        if not retry_after:
            options.append("--no-retry-after")
    process, settings = spawn("zoho", *options)
    return process, {k: v for k, v in settings.items() if k not in ("provider", "env")}


def run(name: str, records: int, per_minute: int | None, time_scale: float, retry_after: bool) -> dict:
    window = 60.0 / time_scale
    sleep = TimedSleep()
    process, settings = start_emulator(per_minute, window, retry_after)
    try:
        connector = ZohoCrmConnector(
            **settings,
            timeout=30.0,
            max_retries=8,
            backoff_base=1.0 / time_scale,
            backoff_max=60.0 / time_scale,
            sleep=sleep,
        )
        connector.current_user()  # token and connection set up outside the timed part
        gave_up = 0
        failed = 0
        started = time.perf_counter()
        for first in range(0, records, BATCH):
            batch = [record(n) for n in range(first, min(first + BATCH, records))]
            while True:
                try:
                    results = connector.upsert(MODULE, batch, ID_FIELD)
                    break
                except CrmRateLimited:
                    gave_up += 1
            failed += sum(1 for r in results if not r.ok)
        elapsed = time.perf_counter() - started
        connector.close()
        counters = requests.get(f"{settings['api_base']}/__emulator/counters", timeout=30).json()
    finally:
        process.terminate()
        process.wait(timeout=10)

    rate = records / elapsed
    result = {
        "scenario": name,
        "records": records,
        "batch_size": BATCH,
        "records_written": counters["records_written"],
        "failed_records": failed,
        "seconds": round(elapsed, 2),
        "records_per_second": round(rate, 1),
        "write_calls": counters["write_calls"],
        "responses": counters["statuses"],
        "connector_sleeps": sleep.count,
        "connector_sleep_seconds": round(sleep.total, 2),
        "gave_up_after_max_retries": gave_up,
    }
    if per_minute is not None:
        allowed_per_second = per_minute / window
        useful_calls = -(-records // BATCH)
        result.update(
            {
                "budget_requests_per_minute": per_minute,
                "time_scale": time_scale,
                "retry_after_sent": retry_after,
                "budget_used_share": round(useful_calls / elapsed / allowed_per_second, 3),
                "records_per_second_real_scale": round(rate / time_scale, 1),
                "minutes_for_100k_real_scale": round(100_000 / (rate / time_scale) / 60, 1),
            }
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-minute", type=int, default=100, help="request budget per real-time minute")
    parser.add_argument("--time-scale", type=float, default=6.0, help="how much faster than real time to run")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["unthrottled", "zoho_budget_retry_after", "zoho_budget_no_retry_after"],
    )
    args = parser.parse_args()
    settings = {
        "unthrottled": (None, True),
        "zoho_budget_retry_after": (args.per_minute, True),
        "zoho_budget_no_retry_after": (args.per_minute, False),
    }
    results = []
    for name in args.scenarios:
        per_minute, retry_after = settings[name]
        results.append(run(name, args.records, per_minute, args.time_scale, retry_after))
    print(
        json.dumps(
            {"python": platform.python_version(), "machine": platform.machine(), "results": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
