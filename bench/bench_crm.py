"""How fast each CRM connector writes, against its emulator (a separate process), under each provider's limit.

Run from the checkout root and read the JSON it prints:

    PYTHONPATH=plugins:devtools .venv/bin/python bench/bench_crm.py [--records 100000] [--fxiaoke-records 3000]

Scenarios:

- ``zoho_unthrottled``: Zoho upserts of 100 records, no limit: the cost of the connector, HTTP on
  loopback and the emulator itself.
- ``zoho_budget_retry_after`` / ``zoho_budget_no_retry_after``: a per-minute request budget, with
  and without ``Retry-After`` on the 429s (Zoho sends none). Zoho meters API credits per rolling
  24 hours, not requests per minute; an Enterprise org with 100 user licences has 50,000 + 100 x
  1,000 = 150,000 credits a day, about 104 a minute spent evenly, so the sync is modelled as
  allowed 100 requests a minute.
- ``fxiaoke_unthrottled``: 纷享销客 updates of existing 客户 records, one per call (the platform
  has no batch write for preset objects), no limit.
- ``fxiaoke_documented_limit``: the documented 100 calls per 20 s per interface, enforced by the
  emulator (errorCode 30004 beyond), with the connector pacing itself to it.

To keep runs short, time is compressed by ``--time-scale`` (default 6): a 60 s window becomes
10 s, 20 s becomes 3.3 s, and the connector's backoff and pacing shrink by the same factor.
``*_real_scale`` figures divide the measured rates by the scale. Zoho's Retry-After is whole
seconds, so at scale 6 it is coarser than in real time by up to 6 s per wait; the scaled figures
slightly understate that scenario.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import requests

from tierline.crm import CrmRateLimited, FxiaokeConnector, ZohoCrmConnector
from tierline_dev.crm_emulators.process import spawn

ZOHO_MODULE = "Accounts"
ID_FIELD = "Tierline_Customer_Id"
BATCH = 100
TIERS = ("Strategic", "VIP", "Key", "Regular", "Potential")
FXIAOKE_MODULE = "AccountObj"
FXIAOKE_LIMIT = (100, 20.0)  # calls per interface per window, documented


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


def connection(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in ("provider", "env")}


def counters(settings: dict) -> dict:
    return requests.get(f"{settings['api_base']}/__emulator/counters", timeout=30).json()


def run_zoho(name: str, records: int, per_minute: int | None, time_scale: float, retry_after: bool) -> dict:
    window = 60.0 / time_scale
    options = []
    if per_minute is not None:
        options += ["--rate-limit", str(per_minute), "--rate-window", str(window)]
        if not retry_after:
            options.append("--no-retry-after")
    sleep = TimedSleep()
    process, settings = spawn("zoho", *options)
    try:
        connector = ZohoCrmConnector(**connection(settings), timeout=30.0, max_retries=8,
                                     backoff_base=1.0 / time_scale, backoff_max=60.0 / time_scale, sleep=sleep)
        connector.current_user()  # token and connection set up outside the timed part
        gave_up = failed = 0
        started = time.perf_counter()
        for first in range(0, records, BATCH):
            batch = [record(n) for n in range(first, min(first + BATCH, records))]
            while True:
                try:
                    results = connector.upsert(ZOHO_MODULE, batch, ID_FIELD)
                    break
                except CrmRateLimited:
                    gave_up += 1
            failed += sum(1 for r in results if not r.ok)
        elapsed = time.perf_counter() - started
        connector.close()
        seen = counters(settings)
    finally:
        process.terminate()
        process.wait(timeout=10)
    result = summary(name, records, BATCH, elapsed, failed, seen, sleep, gave_up)
    if per_minute is not None:
        useful_calls = -(-records // BATCH)
        result.update(limit(f"{per_minute} requests per minute", time_scale, elapsed, records,
                            useful_calls / elapsed / (per_minute / window)))
        result["retry_after_sent"] = retry_after
    return result


def run_fxiaoke(name: str, records: int, limited: bool, time_scale: float) -> dict:
    calls, window = FXIAOKE_LIMIT
    options = ["--rate-limit", str(calls), "--rate-window", str(window / time_scale)] if limited else []
    sleep = TimedSleep()
    process, settings = spawn("fxiaoke", *options)
    try:
        base = settings["api_base"]
        requests.put(f"{base}/__emulator/modules/{FXIAOKE_MODULE}", json={"fields": {
            "name": {"max_length": 200, "mandatory": True},
            "tierline_tier__c": {"type": "picklist", "values": ["战略客户", "VIP客户", "重要客户", "普通客户", "潜在客户"]},
            "tierline_churn_risk__c": {"type": "double"}}}, timeout=30).raise_for_status()
        ids = [f"{n:024x}" for n in range(records)]
        for first in range(0, records, 5000):
            requests.post(f"{base}/__emulator/seed", json={"module": FXIAOKE_MODULE, "records": [
                {"id": i, "name": f"客户 {i}"} for i in ids[first:first + 5000]]}, timeout=120).raise_for_status()
        connector = FxiaokeConnector(**connection(settings), timeout=30.0, max_retries=8,
                                     backoff_base=1.0 / time_scale, backoff_max=60.0 / time_scale, sleep=sleep,
                                     rate_limit=(calls, window / time_scale) if limited else (10**9, 1.0),
                                     field_types={"tierline_churn_risk__c": "double"})
        list(connector.iter_modified(FXIAOKE_MODULE, None, ["name"]))  # token and connection outside the timing
        tiers = ("战略客户", "VIP客户", "重要客户", "普通客户", "潜在客户")
        gave_up = failed = 0
        started = time.perf_counter()
        for n, crm_id in enumerate(ids):
            while True:
                try:
                    [result] = connector.update(FXIAOKE_MODULE, [{"id": crm_id, "tierline_tier__c": tiers[n % 5],
                                                                  "tierline_churn_risk__c": round(n % 997 / 997, 3)}])
                    break
                except CrmRateLimited:
                    gave_up += 1
            failed += not result.ok
        elapsed = time.perf_counter() - started
        connector.close()
        seen = counters(settings)
    finally:
        process.terminate()
        process.wait(timeout=10)
    result = summary(name, records, 1, elapsed, failed, seen, sleep, gave_up)
    if limited:
        result.update(limit(f"{calls} calls per {window:.0f} s per interface", time_scale, elapsed, records,
                            records / elapsed / (calls / (window / time_scale))))
    return result


def summary(name: str, records: int, batch: int, elapsed: float, failed: int, seen: dict, sleep: TimedSleep,
            gave_up: int) -> dict:
    return {
        "scenario": name,
        "records": records,
        "records_per_call": batch,
        "records_written": seen["records_written"],
        "failed_records": failed,
        "seconds": round(elapsed, 2),
        "records_per_second": round(records / elapsed, 1),
        "write_calls": seen["write_calls"],
        "responses": seen["statuses"],
        "refusals": seen["errors"],
        "connector_sleeps": sleep.count,
        "connector_sleep_seconds": round(sleep.total, 2),
        "gave_up_after_max_retries": gave_up,
    }


def limit(described: str, time_scale: float, elapsed: float, records: int, used_share: float) -> dict:
    rate = records / elapsed / time_scale
    return {
        "documented_limit": described,
        "time_scale": time_scale,
        "limit_used_share": round(used_share, 3),
        "records_per_second_real_scale": round(rate, 2),
        "hours_for_100k_real_scale": round(100_000 / rate / 3600, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="Zoho records (100 per call)")
    parser.add_argument("--fxiaoke-records", type=int, default=3_000, help="纷享销客 records (one per call)")
    parser.add_argument("--per-minute", type=int, default=100, help="Zoho's request budget per real-time minute")
    parser.add_argument("--time-scale", type=float, default=6.0, help="how much faster than real time to run")
    scenarios = ["zoho_unthrottled", "zoho_budget_retry_after", "zoho_budget_no_retry_after",
                 "fxiaoke_unthrottled", "fxiaoke_documented_limit"]
    parser.add_argument("--scenarios", nargs="+", default=scenarios, choices=scenarios)
    args = parser.parse_args()
    runs = {
        "zoho_unthrottled": lambda: run_zoho("zoho_unthrottled", args.records, None, args.time_scale, True),
        "zoho_budget_retry_after": lambda: run_zoho("zoho_budget_retry_after", args.records, args.per_minute,
                                                    args.time_scale, True),
        "zoho_budget_no_retry_after": lambda: run_zoho("zoho_budget_no_retry_after", args.records, args.per_minute,
                                                       args.time_scale, False),
        "fxiaoke_unthrottled": lambda: run_fxiaoke("fxiaoke_unthrottled", args.fxiaoke_records, False,
                                                   args.time_scale),
        "fxiaoke_documented_limit": lambda: run_fxiaoke("fxiaoke_documented_limit", args.fxiaoke_records, True,
                                                        args.time_scale),
    }
    results = [runs[name]() for name in args.scenarios]
    print(json.dumps({"python": platform.python_version(), "machine": platform.machine(), "results": results},
                     indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
