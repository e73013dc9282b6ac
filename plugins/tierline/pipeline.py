"""The stages of a tierline run, one function each (``STAGES``, in the order of ``tierline.stages``),
called by the DAG's tasks and by the CLI through :func:`run`.

Every stage reads what it needs from the run folder (``$TIERLINE_HOME/runs/<date>/<run id>``)
and the warehouse, records what it did (``stage_<name>.json``, with timing) and, when it fails,
why (``failure.json``), so the run report and ``make run`` can say which task failed and how.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from tierline import config as config_module
from tierline import errors, runs, settings, stages, warehouse
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
        """The one place that says which schema each layer of this run reads or writes: raw, the
        staging state and the published schema are shared, every build layer is the run's own
        (tierline.runs)."""
        return {"raw": "raw", "state": self.config.runs.state_schema,
                **runs.build_schemas(self.config.runs.build_prefix, self.as_of, self.run_id),
                "analytics": self.config.publish.schema_}

    def dbt_vars(self) -> dict:
        build = {k: v for k, v in self.schemas.items() if k in (*runs.LAYERS, "state")}
        return {**self.config.dbt_vars(), "as_of_date": self.as_of.isoformat(), "run_id": self.run_id,
                "schemas": build}


def run_folder(as_of: date, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    path = settings.runs_dir() / as_of.isoformat() / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def context(as_of: date | str, run_id: str, landing: str | Path, try_number: int = 1) -> RunContext:
    as_of = date.fromisoformat(str(as_of)[:10])
    return RunContext(as_of, run_id, Path(landing), warehouse.url(), config_module.load(),
                      run_folder(as_of, run_id), try_number=try_number)


def _jsonable(value):
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_stage(ctx: RunContext, name: str, func, *, lock: bool = True, final: bool = False):
    """Run one stage, recording its timing and result, or its failure, in the run folder.

    A stage that reads or writes the warehouse for the run holds the run lock (tierline.runs)
    while it runs; ``final`` (publish) releases it for the next run when it succeeds.
    """
    started = time.perf_counter()
    record = {"stage": name, "as_of_date": ctx.as_of.isoformat(), "run_id": ctx.run_id, "try_number": ctx.try_number}
    progress(ctx.run_dir, name, "started", try_number=ctx.try_number)
    try:
        if lock:
            with runs.hold(ctx, name, final=final) as held:
                record["waited_for_lock_seconds"] = round(held.waited_seconds, 2)
                result = func()
        else:
            result = func()
    except Exception as exc:
        record.update(status="failed", seconds=round(time.perf_counter() - started, 2),
                      error=str(exc), error_type=type(exc).__name__, retryable=errors.is_transient(exc))
        (ctx.run_dir / "failure.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
        (ctx.run_dir / f"stage_{name}.json").write_text(
            json.dumps({**record, "traceback": traceback.format_exc()}, indent=2, ensure_ascii=False))
        progress(ctx.run_dir, name, "failed", try_number=ctx.try_number, seconds=record["seconds"],
                 detail=type(exc).__name__)
        raise
    record.update(status="ok", seconds=round(time.perf_counter() - started, 2), result=_jsonable(result))
    (ctx.run_dir / f"stage_{name}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    progress(ctx.run_dir, name, "ok", try_number=ctx.try_number, seconds=record["seconds"],
             detail=_outcome(record["result"]))
    return result


PROGRESS_FILE = "progress.jsonl"


def progress(run_dir: Path, stage: str, event: str, *, try_number: int = 1, seconds: float | None = None,
             detail: str = "") -> None:
    """Append a stage's start or end to the run's progress file, which ``make run`` follows live."""
    line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "stage": stage, "event": event,
            "try_number": try_number, "seconds": seconds, "detail": detail}
    with (run_dir / PROGRESS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def _outcome(result) -> str:
    """What a finished stage did, in a few words: rows in, rows out, checks (its stage_*.json has all)."""
    if isinstance(result, list) and result and isinstance(result[0], dict) and "rows_read" in result[0]:
        return (f"{sum(f['rows_read'] for f in result):,} rows read, {sum(f['rows_loaded'] for f in result):,} "
                f"loaded, {sum(f['rows_quarantined'] for f in result):,} quarantined")
    if not isinstance(result, dict):
        return ""
    if "gate" in result:
        return f"{'passed' if result['passed'] else 'FAILED'}, {len(result.get('warnings', [])):,} warnings"
    if "nodes" in result:
        return f"{result['nodes']:,} dbt models, seeds and tests"
    if "rows" in result and isinstance(result["rows"], dict):
        return f"{sum(result['rows'].values()):,} rows published to {len(result['rows'])} tables"
    if "files" in result and "rows" in result:
        return f"{result['rows']:,} rows in {result['files']} files"
    if "method" in result:
        return f"{result['method']} on {result.get('customers', 0):,} customers"
    if "rows_in" in result:
        return f"report: {result['run_dir']}/report.html"
    if "removed" in result:  # retention
        return "removed " + (", ".join(f"{n:,} {kind}" for kind, n in result["removed"].items() if n) or "nothing")
    return ""


def land_extracts(ctx: RunContext) -> dict:
    from tierline.land import land_extracts as land

    (ctx.run_dir / "failure.json").unlink(missing_ok=True)

    def run():
        manifest = land(ctx.landing, ctx.as_of, settings.landing_area())
        (ctx.run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        with warehouse.connect(ctx.warehouse_url, autocommit=True) as conn:
            # the run's own build schemas: registered before anything is built in them; earlier
            # failed runs' schemas beyond the ones kept for debugging are dropped
            runs.register(conn, ctx)
            reaped = runs.reap(conn, ctx, ctx.config.runs.keep_failed_builds)
        return {"files": len(manifest["files"]), "rows": sum(f["rows"] for f in manifest["files"].values()),
                "ignored_files": manifest["ignored_files"], "build_schemas": ctx.schemas,
                "dropped_old_build_schemas": reaped}

    return run_stage(ctx, "land_extracts", run)


def load_raw(ctx: RunContext) -> list:
    from tierline.load import load_date

    def run():
        manifest = json.loads((ctx.run_dir / "manifest.json").read_text())
        return load_date(ctx.warehouse_url, manifest, ctx.as_of, ctx.run_id, ctx.config.business_timezone)

    return run_stage(ctx, "load_raw", run)


def gate(ctx: RunContext, gate_name: str) -> dict:
    from tierline import gates

    def validate():
        params = {"as_of_date": ctx.as_of.isoformat(), **ctx.config.gates.model_dump()}
        if gate_name == "raw":
            from tierline import batches

            with warehouse.connect(ctx.warehouse_url) as conn:
                params["batch_id"] = batches.run_batch(conn, run_id=ctx.run_id, as_of=ctx.as_of)
        try:
            result = gates.raise_for_result(
                gates.run_gate(gate_name, ctx.warehouse_url, ctx.schemas, out_dir=ctx.run_dir, params=params))
        except gates.GateFailed as exc:
            gates.build_data_docs(ctx.run_dir)  # the run ends here: its site shows the failed checks
            raise QualityGateFailed(str(exc)) from exc
        except gates.GateConfigError as exc:
            raise QualityGateFailed(str(exc)) from exc
        return {"gate": gate_name, "passed": result.passed, "seconds": result.seconds,
                "warnings": [c.description for c in result.warnings]}

    def with_docs(outcome: dict) -> dict:
        # the GX Data Docs site is rendered once a run, after its last gate (or the one that failed)
        if f"gate_{gate_name}" == stages.LAST_GATE:
            outcome["docs"] = gates.build_data_docs(ctx.run_dir)
        return outcome

    def run():
        if gate_name != "marts":
            return with_docs(validate())
        from tierline import publish as publish_module

        # The marts gate audits the run's build tables and records what it audited (relation,
        # rows, version) while it holds them read-only: publish copies only what matches.
        with warehouse.connect(ctx.warehouse_url) as conn:
            with conn.transaction():
                audited = publish_module.audit(conn, ctx.schemas["marts"], ctx.as_of)
                outcome = validate()
                publish_module.record_audit(conn, ctx.run_id, ctx.as_of, audited)
        return with_docs({**outcome, "audited": {name: rows for name, (_oid, rows, _version) in audited.items()}})

    return run_stage(ctx, f"gate_{gate_name}", run)


def build(ctx: RunContext, layer: str):
    from tierline import dbt

    def run():
        if layer == "staging":
            from tierline import publish as publish_module

            # what the build reads of the publication (previous evaluations, published batches):
            # publish refuses if another publication happened after this point
            with warehouse.connect(ctx.warehouse_url, autocommit=True) as conn:
                runs.register(conn, ctx, publish_module.publication_state(conn, ctx.schemas["analytics"]))
        built = dbt.build(layer, warehouse_url=ctx.warehouse_url, dbt_vars=ctx.dbt_vars(), run_dir=ctx.run_dir,
                          full_refresh=ctx.full_refresh)
        if layer == "marts":
            from tierline import publish as publish_module

            # the publication's tables take the build's shape (created empty the first time, new
            # columns added) before the marts gate compares the build with them: the gate only reads
            with warehouse.connect(ctx.warehouse_url) as conn:
                publish_module.prepare(conn, build_schema=ctx.schemas["marts"], schema=ctx.schemas["analytics"],
                                       lock_timeout=ctx.config.publish.lock_timeout_seconds)
        return built

    return run_stage(ctx, f"dbt_{layer}", run)


def fit_clv(ctx: RunContext):
    from tierline import clv

    def run():
        with warehouse.connect(ctx.warehouse_url) as conn:
            return clv.fit_and_predict(conn, as_of=ctx.as_of, cfg=ctx.config.clv, schema=ctx.schemas["intermediate"])

    return run_stage(ctx, "fit_clv", run)


def publish(ctx: RunContext):
    from tierline import publish as publish_module

    def run():
        with warehouse.connect(ctx.warehouse_url) as conn:
            if runs.status(conn, ctx) == "published":
                # a retry after this run's publish committed (the connection dropped while it
                # cleaned up): what it audited is published; finish the clean-up only
                with conn.transaction():
                    runs.finish_published(conn, ctx)
                return publish_module.Publication(ctx.run_id, ctx.as_of, publish_module.published_rows(
                    conn, ctx.schemas["analytics"], ctx.run_id, ctx.as_of) or {})
            publication = publish_module.publish(
                conn, build_schema=ctx.schemas["marts"], schema=ctx.schemas["analytics"],
                as_of=ctx.as_of, run_id=ctx.run_id, tier_spec_version=ctx.config.tier_spec.version,
                tier_spec_hash=ctx.config.tier_spec_hash, lock_timeout=ctx.config.publish.lock_timeout_seconds,
                expected_state=runs.recorded_publication_state(conn, ctx),
                in_transaction=lambda: runs.mark_published(conn, ctx), access=ctx.config.access,
                history_changes=runs.recorded_history_changes(conn, ctx))
            conn.commit()
            publish_module.analyze(conn, publication, ctx.schemas["analytics"],
                                   ctx.config.publish.lock_timeout_seconds)
            with conn.transaction():
                runs.finish_published(conn, ctx)
        return publication

    return run_stage(ctx, "publish", run, final=True)


def apply_retention(ctx: RunContext) -> dict:
    """After publish: remove what the configured retention periods no longer keep (tierline.retention).
    The publication is already committed; a failure here is reported, it does not unpublish."""
    from tierline import retention

    return run_stage(ctx, "apply_retention", lambda: retention.apply(
        ctx.as_of, warehouse_url=ctx.warehouse_url, cfg=ctx.config), lock=False)


def report(ctx: RunContext) -> dict:
    from tierline import report as report_module

    return run_stage(ctx, "report", lambda: report_module.write(ctx), lock=False)


STAGES: dict[str, Callable[[RunContext], object]] = {
    "land_extracts": land_extracts,
    "load_raw": load_raw,
    "gate_raw": lambda ctx: gate(ctx, "raw"),
    "dbt_staging": lambda ctx: build(ctx, "staging"),
    "gate_staging": lambda ctx: gate(ctx, "staging"),
    "fit_clv": fit_clv,
    "dbt_marts": lambda ctx: build(ctx, "marts"),
    "gate_marts": lambda ctx: gate(ctx, "marts"),
    "publish": publish,
    "report": report,
    "apply_retention": apply_retention,
}


def run(name: str, ctx: RunContext):
    """Run the stage ``name`` (a task of the DAG) for ``ctx``."""
    return STAGES[name](ctx)


def run_through(ctx: RunContext, last: str = "publish") -> None:
    """Run the stages in order up to and including ``last``, as the DAG's tasks would."""
    for name in stages.RUN[: stages.RUN.index(last) + 1]:
        run(name, ctx)

