"""Run one dbt layer in-process and keep its artifacts with the run.

Each layer (``staging`` = seeds + staging + intermediate, ``marts``) is one ``dbt build`` so that
an engineer sees it as its own Airflow task with its own retries and log, while dbt still runs
every model's tests right after the model. ``manifest.json`` and ``run_results.json`` are copied
into the run's folder afterwards.

Parsing is paid once per version of the project, not once per run: the vars that change with
every run (``EXECUTION_VARS``: the as-of date and the run id) are read only when a model is
compiled, so the project is parsed with the other vars alone (dbt's partial parse then finds
nothing changed and takes about a second instead of a full parse) and the parsed manifest is
handed to the invocation that runs with the run's vars.

Where the layers build comes from the var ``schemas`` (``RunContext.schemas``: the run's own
schemas, tierline.runs). Schema names are part of parsing, so a run's first invocation re-parses
the project (dbt's partial parse does not survive changed vars) and its second layer reuses that
parse. Pipeline runs share ``$TIERLINE_HOME/dbt_target`` (they take turns under the run lock); a
what-if, which takes no lock, passes a target folder of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tierline import settings, warehouse
from tierline.errors import TierlineError, TransientError, is_transient

# Read at execution only (never in a config(), a ref or a schema name), so they stay out of parsing.
EXECUTION_VARS = ("as_of_date", "run_id")

LAYERS = {
    "staging": ["path:seeds", "path:models/staging", "path:models/intermediate"],
    "marts": ["path:models/marts"],
}


class DbtFailed(TierlineError):
    pass


@dataclass
class DbtResult:
    layer: str
    seconds: float
    nodes: int
    artifacts: Path


def _summarise_failures(run_results: dict) -> list[str]:
    lines = []
    for result in run_results.get("results", []):
        if result.get("status") in ("error", "fail", "runtime error"):
            node = result.get("unique_id", "?")
            message = [line for line in (result.get("message") or "").strip().splitlines() if line.strip()]
            failures = result.get("failures")
            detail = f"{failures} failing rows" if failures else "\n      ".join(message[:12])
            lines.append(f"  {node}: {result.get('status')} - {detail}")
    return lines


def _vars_json(dbt_vars: dict) -> str:
    return json.dumps(dbt_vars, ensure_ascii=False, default=str, sort_keys=True)


def _lost_connection(outcome, run_results: dict, before: dict | None, warehouse_url: str) -> str | None:
    """Why a failed dbt invocation is the warehouse's fault (retry it), or None (the data's).

    dbt reports a dropped connection as a failed node with a message, so the node results are not
    read for it: an exception dbt raised is classified by its type (``errors.is_transient``), and
    a node that errored is blamed on the warehouse only when the server itself says so: it cannot
    be reached now, it restarted during the build, or it counted sessions killed, lost or ended by
    a fatal error in this database meanwhile (``pg_stat_database``). Failed data tests are never
    the warehouse's fault.
    """
    if outcome.exception is not None and is_transient(outcome.exception):
        return f"dbt could not use the warehouse ({type(outcome.exception).__name__})"
    errored = [r for r in run_results.get("results", []) if r.get("status") in ("error", "runtime error")]
    if outcome.exception is None and not errored:
        return None
    after = warehouse.server_state(warehouse_url)
    if after is None:
        return "the warehouse cannot be reached after the build failed"
    if before is None:
        return None
    if after["started_at"] != before["started_at"]:
        return f"the warehouse restarted during the build (up since {after['started_at']})"
    if after["sessions_lost"] > before["sessions_lost"]:
        return "the warehouse ended sessions of this database during the build (killed, lost or fatal)"
    return None


def invoke(command: list[str], name: str, *, warehouse_url: str, dbt_vars: dict, run_dir: Path,
           target: Path | None = None) -> DbtResult:
    from dbt.cli.main import dbtRunner

    os.environ.update(warehouse.dbt_env(warehouse_url))
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    target = target or settings.home() / "dbt_target"
    artifacts = run_dir / "dbt" / name
    common = [
        "--project-dir", str(settings.DBT_PROJECT_DIR),
        "--profiles-dir", str(settings.DBT_PROJECT_DIR),
        "--target-path", str(target),
        "--log-path", str(artifacts),
        "--no-use-colors",
    ]
    before = warehouse.server_state(warehouse_url)
    started = time.perf_counter()
    parse_vars = {k: v for k, v in dbt_vars.items() if k not in EXECUTION_VARS}
    parsed = dbtRunner().invoke(["parse", "--vars", _vars_json(parse_vars), *common])
    if parsed.success:
        runner = dbtRunner(manifest=parsed.result)
    else:  # let the real invocation parse and report the error in its own words
        runner = dbtRunner()
    outcome = runner.invoke([*command, "--vars", _vars_json(dbt_vars), *common])
    seconds = round(time.perf_counter() - started, 2)

    artifacts.mkdir(parents=True, exist_ok=True)
    for artifact in ("manifest.json", "run_results.json"):
        if (target / artifact).exists():
            shutil.copy2(target / artifact, artifacts / artifact)
    run_results = json.loads((artifacts / "run_results.json").read_text()) if (
        artifacts / "run_results.json").exists() else {}
    if not outcome.success:
        detail = _summarise_failures(run_results) or [f"  {outcome.exception}"]
        message = (f"dbt {command[0]} of {name} failed:\n" + "\n".join(detail)
                   + f"\nLogs and run_results.json: {artifacts}")
        lost = _lost_connection(outcome, run_results, before, warehouse_url)
        if lost:
            raise TransientError(f"{message}\nRetryable: {lost}") from outcome.exception
        raise DbtFailed(message) from outcome.exception
    return DbtResult(name, seconds, len(run_results.get("results", [])), artifacts)


def build(layer: str, *, warehouse_url: str, dbt_vars: dict, run_dir: Path, full_refresh: bool = False,
          target: Path | None = None) -> DbtResult:
    """Build one layer with its data tests; unit tests are for `make test`, not for every run."""
    command = ["build", "--select", *LAYERS[layer], "--exclude-resource-type", "unit_test"]
    return invoke(command + (["--full-refresh"] if full_refresh else []), layer,
                  warehouse_url=warehouse_url, dbt_vars=dbt_vars, run_dir=run_dir, target=target)


def unit_tests(*, warehouse_url: str, dbt_vars: dict, run_dir: Path) -> DbtResult:
    """Run the project's dbt unit tests (given/expect rows); the models' parents must exist."""
    return invoke(["test", "--select", "test_type:unit"], "unit_tests",
                  warehouse_url=warehouse_url, dbt_vars=dbt_vars, run_dir=run_dir)
