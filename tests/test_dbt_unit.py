"""dbt unit tests (given/expect rows) of the tier and lifecycle logic, run against real PostgreSQL.

The models' parents must exist for dbt to type the given rows, so the project is built once on a
tiny extract first; the unit tests bring their own rules and do not depend on that data.
"""

from __future__ import annotations

import json
from datetime import date

from tierline import clv, config, dbt, warehouse
from tierline.pipeline import RunContext, run_folder

AS_OF = date(2026, 11, 1)
CUSTOMERS = "customer_id,customer_name,customer_type,created_at,updated_at\nC1,张三,individual,2025-01-01,2025-01-01\n"


def test_tier_and_lifecycle_logic_pass_their_unit_tests(tmp_path, warehouse_url, land_and_load):
    land_and_load({"crm_customers.csv": CUSTOMERS}, AS_OF)
    cfg = config.load()
    ctx = RunContext(AS_OF, "unit", tmp_path, warehouse_url, cfg, run_folder(AS_OF, f"unit-{tmp_path.name}"))
    kwargs = {"warehouse_url": warehouse_url, "dbt_vars": ctx.dbt_vars(), "run_dir": ctx.run_dir}
    dbt.build("staging", **kwargs)
    with warehouse.connect(warehouse_url) as conn:
        clv.fit_and_predict(conn, as_of=AS_OF, cfg=cfg.clv, schema=ctx.schemas["intermediate"])
    dbt.build("marts", **kwargs)
    result = dbt.unit_tests(**kwargs)
    results = json.loads((result.artifacts / "run_results.json").read_text())["results"]
    # the invocation also runs the project's on-run-start hooks (status "success"): judge the unit tests
    statuses = {r["unique_id"].split(".")[-1]: r["status"] for r in results if r["unique_id"].startswith("unit_test.")}
    assert len(statuses) >= 10, statuses
    pinned = ("tier_thresholds_are_inclusive_and_per_branch", "tier_hysteresis_up_at_once_down_after_n",
              "tier_override_applies_only_while_valid", "lifecycle_stage_boundaries_and_cadence")
    assert {name: statuses.get(name) for name in pinned} == dict.fromkeys(pinned, "pass")
    assert set(statuses.values()) == {"pass"}
