"""The stages of a tierline run, one function each, called by the DAG's tasks and by the CLI.

Every stage reads what it needs from the run folder (``$TIERLINE_HOME/runs/<date>/<run id>``)
and the warehouse, records what it did (``stage_<name>.json``, with timing) and, when it fails,
why (``failure.json``), so the run report and ``make run`` can say which task failed and how.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date
from pathlib import Path

from tierline import config as config_module
from tierline import errors, settings, warehouse
from tierline.errors import QualityGateFailed


@dataclass
class RunContext:
    as_of: date
    run_id: str
    landing: Path
    warehouse_url: str
    config: config_module.Config
    run_dir: Path
    # rebuild every incremental model and history table from scratch instead of updating it
    full_refresh: bool = False
    try_number: int = 1  # Airflow's attempt of the current task (1 = first try)

    @property
    def schemas(self) -> dict[str, str]:
        return {"raw": "raw", "staging": "staging", "intermediate": "intermediate",
                "marts": self.config.publish.build_schema, "analytics": self.config.publish.schema_}

    def dbt_vars(self) -> dict:
        return {**self.config.dbt_vars(), "as_of_date": self.as_of.isoformat(), "run_id": self.run_id}


def run_folder(as_of: date, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    path = settings.runs_dir() / as_of.isoformat() / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def context(as_of: date | str, run_id: str, landing: str | Path, try_number: int = 1) -> RunContext:
    as_of = date.fromisoformat(str(as_of)[:10])
    return RunContext(as_of, run_id, Path(landing), warehouse.url(), config_module.load(),
                      run_folder(as_of, run_id), try_number)


def _jsonable(value):
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_stage(ctx: RunContext, name: str, func):
    """Run one stage, recording its timing and result, or its failure, in the run folder."""
    started = time.perf_counter()
    record = {"stage": name, "as_of_date": ctx.as_of.isoformat(), "run_id": ctx.run_id, "try_number": ctx.try_number}
    try:
        result = func()
    except Exception as exc:
        record.update(status="failed", seconds=round(time.perf_counter() - started, 2),
                      error=str(exc), error_type=type(exc).__name__, retryable=errors.is_transient(exc))
        (ctx.run_dir / "failure.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
        (ctx.run_dir / f"stage_{name}.json").write_text(
            json.dumps({**record, "traceback": traceback.format_exc()}, indent=2, ensure_ascii=False))
        raise
    record.update(status="ok", seconds=round(time.perf_counter() - started, 2), result=_jsonable(result))
    (ctx.run_dir / f"stage_{name}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    return result


def land_extracts(ctx: RunContext) -> dict:
    from tierline.land import land_extracts as land

    (ctx.run_dir / "failure.json").unlink(missing_ok=True)

    def run():
        manifest = land(ctx.landing, ctx.as_of, settings.landing_area())
        (ctx.run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        return {"files": len(manifest["files"]), "rows": sum(f["rows"] for f in manifest["files"].values()),
                "ignored_files": manifest["ignored_files"]}

    return run_stage(ctx, "land_extracts", run)


def load_raw(ctx: RunContext) -> list:
    from tierline.load import load_date

    def run():
        manifest = json.loads((ctx.run_dir / "manifest.json").read_text())
        return load_date(ctx.warehouse_url, manifest, ctx.as_of, ctx.run_id, ctx.config.business_timezone)

    return run_stage(ctx, "load_raw", run)


def gate(ctx: RunContext, gate_name: str) -> dict:
    from tierline import gates

    def run():
        from tierline import publish as publish_module

        if gate_name == "marts":
            # the drift checks compare with the last publication, which must exist (if empty)
            with warehouse.connect(ctx.warehouse_url) as conn:
                publish_module.prepare(conn, build_schema=ctx.config.publish.build_schema,
                                       schema=ctx.config.publish.schema_)
        params = {"as_of_date": ctx.as_of.isoformat(), **ctx.config.gates.model_dump()}
        if gate_name == "raw":
            from tierline import batches

            with warehouse.connect(ctx.warehouse_url) as conn:
                params["batch_id"] = batches.run_batch(conn, run_id=ctx.run_id, as_of=ctx.as_of)
        try:
            result = gates.raise_for_result(
                gates.run_gate(gate_name, ctx.warehouse_url, ctx.schemas, out_dir=ctx.run_dir, params=params))
        except (gates.GateFailed, gates.GateConfigError) as exc:
            raise QualityGateFailed(str(exc)) from exc
        return {"gate": gate_name, "passed": result.passed, "seconds": result.seconds,
                "warnings": [c.description for c in result.warnings]}

    return run_stage(ctx, f"gate_{gate_name}", run)


def build(ctx: RunContext, layer: str):
    from tierline import dbt

    return run_stage(ctx, f"dbt_{layer}", lambda: dbt.build(
        layer, warehouse_url=ctx.warehouse_url, dbt_vars=ctx.dbt_vars(),
        build_schema=ctx.config.publish.build_schema, run_dir=ctx.run_dir, full_refresh=ctx.full_refresh))


def fit_clv(ctx: RunContext):
    from tierline import clv

    def run():
        with warehouse.connect(ctx.warehouse_url) as conn:
            return clv.fit_and_predict(conn, as_of=ctx.as_of, cfg=ctx.config.clv)

    return run_stage(ctx, "fit_clv", run)


def publish(ctx: RunContext):
    from tierline import publish as publish_module

    def run():
        with warehouse.connect(ctx.warehouse_url) as conn:
            return publish_module.publish(
                conn, build_schema=ctx.config.publish.build_schema, schema=ctx.config.publish.schema_,
                as_of=ctx.as_of, run_id=ctx.run_id, tier_spec_version=ctx.config.tier_spec.version,
                tier_spec_hash=ctx.config.tier_spec_hash)

    return run_stage(ctx, "publish", run)


def report(ctx: RunContext) -> dict:
    from tierline import report as report_module

    return run_stage(ctx, "report", lambda: report_module.write(ctx))
