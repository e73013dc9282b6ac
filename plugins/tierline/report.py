"""The run report: rows in, quarantined, published, tier and lifecycle mix, time per stage.

Written as ``summary.json``, ``summary.txt`` (what ``make run`` and ``make demo`` print) and
``report.html`` in the run folder: one self-contained page (charts as inline SVG, no scripts,
no network) rendered by a Jinja template with autoescaping, since file names, quarantine reasons
and sampled values come from the extracts.
"""

from __future__ import annotations

import json
import os
import statistics
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path

from psycopg import sql

from tierline import charts, dbt, gates, settings, stages, warehouse

GATES = tuple(s.removeprefix("gate_") for s in stages.RUN if s.startswith("gate_"))  # raw, staging, marts
HISTORY_DATES = 60  # published dates the history charts show, the latest ones up to the run's date
PREVIOUS_RUNS = 10  # earlier published runs the stage times are compared with
QUARANTINE_REASONS = 100  # (file, reason) rows listed; the rest are counted


def _stages(run_dir: Path) -> list[dict]:
    found = []
    for name in stages.THROUGH_PUBLISH:
        path = run_dir / f"stage_{name}.json"
        if path.exists():
            found.append(json.loads(path.read_text()))
    return found


def _gates(run_dir: Path) -> list[dict]:
    found = []
    for name in GATES:
        path = run_dir / f"gate_{name}.json"
        if path.exists():
            document = json.loads(path.read_text())
            found.append({k: document.get(k) for k in ("gate", "passed", "seconds", "errors", "warnings")}
                         | {"checks": [{k: c.get(k) for k in ("suite", "table", "expectation", "column", "severity",
                                                              "success", "observed_value", "unexpected_count",
                                                              "description")}
                                       for c in document.get("checks", [])]})
    return found


def _previous_runs(run_dir: Path) -> list[dict]:
    """Stage times of the latest published runs before this one (their summaries), oldest first."""
    summaries = [p for p in settings.runs_dir().glob("*/*/summary.json") if p.parent != run_dir]
    summaries.sort(key=lambda p: p.stat().st_mtime)
    runs = []
    for path in summaries[-PREVIOUS_RUNS:]:
        summary = json.loads(path.read_text())
        runs.append({"run_id": summary["run_id"], "as_of_date": summary["as_of_date"],
                     "stage_seconds": summary["stage_seconds"]})
    return runs


def _links(run_dir: Path, as_of: date) -> list[dict]:
    """What else the run left, as paths relative to the report (the run folder), where they exist."""
    candidates = [
        ("dbt docs (models, tests, lineage)", run_dir / dbt.DOCS_DIR / "index.html"),
        ("Great Expectations Data Docs", run_dir / gates.DOCS_DIR / "index.html"),
    ]
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    if record.get("logical_date"):
        log = settings.run_log(as_of, datetime.fromisoformat(record["logical_date"]))
        candidates.append(("run log (make run, the CLI)", log))
    base_log = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER", "")
    if record.get("run_id") and base_log:
        # a scheduler's runs log per task there (airflow dags test logs to the run log above)
        candidates.append(("Airflow task logs", Path(base_log) / f"dag_id={record['dag_id']}"
                           / f"run_id={record['run_id']}"))
    candidates += [(f"gate {g} results (JSON)", run_dir / f"gate_{g}.json") for g in GATES]
    candidates += [(f"dbt {layer} run results", run_dir / "dbt" / layer / "run_results.json")
                   for layer in ("staging", "marts")]
    candidates += [("landing manifest", run_dir / "manifest.json"), ("summary (JSON)", run_dir / "summary.json")]
    return [{"label": label, "href": Path(os.path.relpath(path, run_dir)).as_posix()}
            for label, path in candidates if path.exists()]


def collect(ctx) -> dict:
    schema = sql.Identifier(ctx.config.publish.schema_)
    stages = _stages(ctx.run_dir)
    loads = next((s["result"] for s in stages if s["stage"] == "load_raw" and s["status"] == "ok"), [])
    ladder = ctx.config.tier_spec.ladder
    with warehouse.connect(ctx.warehouse_url) as conn:
        def rows(query: str, *params):
            return conn.execute(sql.SQL(query).format(schema=schema), params).fetchall()

        tiers = rows(
            "select tier, tier_label_zh, tier_label_en, count(*), sum(v.monetary) "
            "from {schema}.customer_tier t join {schema}.customer_value v using (customer_id, as_of_date) "
            "where as_of_date = %s group by tier, tier_label_zh, tier_label_en, tier_rank order by tier_rank",
            ctx.as_of)
        stages_mix = rows(
            "select lifecycle_stage, lifecycle_label_zh, count(*) from {schema}.customer_lifecycle "
            "where as_of_date = %s group by 1, 2 order by 3 desc", ctx.as_of)
        publication = rows(
            "select row_counts, published_at, tier_spec_version from {schema}.publication_log "
            "where run_id = %s and as_of_date = %s", ctx.run_id, ctx.as_of)
        # the publication before this run's (or before now, when this run did not publish)
        previous = rows(
            "select run_id, as_of_date, row_counts, published_at, tier_spec_version from {schema}.publication_log "
            "where run_id <> %s and published_at < coalesce(%s, now()) order by published_at desc limit 1",
            ctx.run_id, publication[0][1] if publication else None)
        dates = [d for (d,) in rows(
            "select distinct as_of_date from {schema}.publication_log where as_of_date <= %s "
            "order by as_of_date desc limit %s", ctx.as_of, HISTORY_DATES)][::-1]
        tier_history = rows(
            "select as_of_date, tier, customers, customer_share from {schema}.kpi_daily "
            "where as_of_date = any(%s) and tier <> 'all'", dates)
        lifecycle_history = rows(
            "select as_of_date, lifecycle_stage, lifecycle_label_zh, count(*) from {schema}.customer_lifecycle "
            "where as_of_date = any(%s) group by 1, 2, 3", dates)
        migration = rows(
            "select from_tier, to_tier, customers from {schema}.tier_migration_matrix where as_of_date = %s",
            ctx.as_of)
        events = rows(
            "select event_type, coalesce(direction, ''), reason, count(*) from {schema}.customer_events "
            "where as_of_date = %s group by 1, 2, 3 order by 1, 4 desc", ctx.as_of)
        quarantine = conn.execute(
            "select file, reason, count(*), min(line_no) from raw.quarantine where run_id = %s and extract_date = %s "
            "group by 1, 2 order by 1, 3 desc, 2", (ctx.run_id, ctx.as_of)).fetchall()
    total = sum(t[3] for t in tiers) or 1
    labels = {t.code: t.label_zh for t in ladder}
    previous_mix = {}
    if previous:
        previous_mix = {tier: customers for (day, tier, customers, _share) in tier_history if day == previous[0][1]}
    return {
        "as_of_date": ctx.as_of.isoformat(),
        "run_id": ctx.run_id,
        "warehouse": warehouse.redacted(ctx.warehouse_url),
        "published_at": publication[0][1].isoformat() if publication else None,
        "tier_spec_version": ctx.config.tier_spec.version,
        "rows_in": sum(f["rows_read"] for f in loads),
        "rows_loaded": sum(f["rows_loaded"] for f in loads),
        "rows_quarantined": sum(f["rows_quarantined"] for f in loads),
        "files": [{k: f[k] for k in ("file", "encoding", "rows_read", "rows_loaded", "rows_quarantined")}
                  for f in loads],
        "published": publication[0][0] if publication else {},
        "tier_mix": [{"tier": t[0], "label_zh": t[1], "label_en": t[2], "customers": t[3],
                      "share": round(t[3] / total, 4), "monetary": float(t[4] or 0),
                      "previous_customers": previous_mix.get(t[0])} for t in tiers],
        "lifecycle_mix": [{"stage": s[0], "label_zh": s[1], "customers": s[2]} for s in stages_mix],
        "stage_seconds": {s["stage"]: s["seconds"] for s in stages},
        "gates": _gates(ctx.run_dir),
        "quarantine": [{"file": f, "reason": r, "rows": n, "first_line": line} for f, r, n, line in quarantine],
        "history": {
            "dates": [d.isoformat() for d in dates],
            "tiers": [{"tier": t.code, "label_zh": t.label_zh,
                       "shares": [next((float(s) for (d, c, _n, s) in tier_history if d == day and c == t.code), 0.0)
                                  for day in dates]} for t in reversed(ladder)],
            "lifecycle": _lifecycle_series(dates, lifecycle_history),
        },
        "migration": {"from": _ordered({f for f, _t, _n in migration}, ["new", *labels]),
                      "to": _ordered({t for _f, t, _n in migration}, list(labels)),
                      "cells": {f"{f}|{t}": n for f, t, n in migration}, "labels": labels},
        "changes": {
            "previous": ({"run_id": previous[0][0], "as_of_date": previous[0][1].isoformat(),
                          "published_at": previous[0][3].isoformat(), "tier_spec_version": previous[0][4],
                          "published": previous[0][2]} if previous else None),
            "events": [{"event_type": e, "direction": d, "reason": r, "customers": n} for e, d, r, n in events],
        },
        "previous_runs": _previous_runs(ctx.run_dir),
        "links": _links(ctx.run_dir, ctx.as_of),
        "run_dir": str(ctx.run_dir),
    }


def _ordered(found: set[str], order: list[str]) -> list[str]:
    """The ladder's order first, then anything else found (a tier no longer in the ladder)."""
    return [c for c in order if c in found] + sorted(found - set(order))


def _lifecycle_series(dates: list[date], counts: list[tuple]) -> list[dict]:
    stages: dict[str, str] = {}
    per_day: dict[date, int] = {}
    for day, stage, label, n in counts:
        stages.setdefault(stage, label)
        per_day[day] = per_day.get(day, 0) + n
    from tierline import vocabulary

    order = _ordered(set(stages), list(vocabulary.lifecycle_stages()))  # the seed's order
    return [{"stage": stage, "label_zh": stages[stage],
             "shares": [next((n for (d, s, _l, n) in counts if d == day and s == stage), 0) / (per_day.get(day) or 1)
                        for day in dates]}
            for stage in reversed(order)]  # bottom of the stack first: the last stage (reactivated)


# -- text (what make run and make demo print) ----------------------------------------------------


def display_width(text: str) -> int:
    """Columns a terminal gives ``text``: wide and full-width characters (CJK) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns (``str.ljust`` counts a CJK character as one)."""
    return text + " " * max(0, width - display_width(text))


def as_text(summary: dict) -> str:
    lines = [
        f"tierline run {summary['run_id']} for {summary['as_of_date']} — published",
        f"  rows in {summary['rows_in']:,} · loaded {summary['rows_loaded']:,} · "
        f"quarantined {summary['rows_quarantined']:,}",
        "  published: " + ", ".join(f"{k} {v:,}" for k, v in summary["published"].items()),
        "  tier mix (客户分级):",
    ]
    label_width = max((display_width(t["label_zh"]) for t in summary["tier_mix"]), default=0)
    for t in summary["tier_mix"]:
        lines.append(f"    {t['tier']:<10} {pad(t['label_zh'], label_width)} {t['customers']:>9,}  {t['share']:>6.1%}  "
                     f"revenue {t['monetary']:>16,.2f}")
    lines.append("  lifecycle (生命周期): " + ", ".join(
        f"{s['stage']} {s['label_zh']} {s['customers']:,}" for s in summary["lifecycle_mix"]))
    lines.append("  seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds"].items()))
    lines.append(f"  details: {summary['run_dir']}/report.html")
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------------


def title(summary: dict) -> str:
    """A person's title for the run: its date and whether it published, not the run id."""
    day = date.fromisoformat(summary["as_of_date"])
    state = "published" if summary.get("published_at") else "not published"
    return f"Customer tiers for {day:%A %-d %B %Y} · {state}"


def _charts(summary: dict) -> list[dict]:
    found = []
    history = summary.get("history") or {}
    if history.get("dates"):
        found.append({"id": "tier-mix", "caption": "Tier mix over the published dates (share of customers)",
                      "svg": charts.stacked_shares("Tier mix 客户分级", history["dates"],
                                                   [(f"{t['label_zh']} {t['tier']}", t["shares"])
                                                    for t in history["tiers"]])})
        found.append({"id": "lifecycle", "caption": "Lifecycle stages over the published dates (share of customers)",
                      "svg": charts.stacked_shares("Lifecycle 生命周期", history["dates"],
                                                   [(f"{s['label_zh']} {s['stage']}", s["shares"])
                                                    for s in history["lifecycle"]])})
    migration = summary.get("migration") or {}
    if migration.get("cells"):
        labels = {**migration["labels"], "new": "新客户"}
        found.append({"id": "migration", "caption": "Tier migration since the previous evaluation (customers)",
                      "svg": charts.heatmap("Tier migration 客户迁移矩阵",
                                            [f"{labels.get(f, f)}" for f in migration["from"]],
                                            [f"{labels.get(t, t)}" for t in migration["to"]],
                                            [[migration["cells"].get(f"{f}|{t}", 0) for t in migration["to"]]
                                             for f in migration["from"]])})
    if summary.get("stage_seconds"):
        stages = list(summary["stage_seconds"])
        found.append({"id": "stage-times", "caption": "Seconds per stage: this run (bars) and earlier runs (dots)",
                      "svg": charts.stage_times("Time per stage", stages,
                                                [summary["stage_seconds"][s] for s in stages],
                                                [[r["stage_seconds"][s] for r in summary.get("previous_runs", [])
                                                  if s in r["stage_seconds"]] for s in stages])})
    per_file: dict[str, int] = {}
    for q in summary.get("quarantine", []):
        per_file[q["file"]] = per_file.get(q["file"], 0) + q["rows"]
    if per_file:
        found.append({"id": "quarantine", "caption": "Quarantined rows per file",
                      "svg": charts.bars("Quarantined rows per file", list(per_file), list(per_file.values()))})
    return found


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("tierline", "templates"),
                             autoescape=jinja2.select_autoescape(("html", "html.j2")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        num=lambda v: "–" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.2f}",
        pct=lambda v, digits=1: "–" if v is None else f"{v:.{digits}%}",
        money=lambda v: f"{v:,.2f}",
        signed=lambda v: "–" if v is None else f"{v:+,}",
        observed=_observed,
        when=lambda v: f"{datetime.fromisoformat(v).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
    )
    return env


def _observed(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def as_html(summary: dict) -> str:
    import markupsafe

    charts_found = [{**c, "svg": markupsafe.Markup(c["svg"])} for c in _charts(summary)]  # our own SVG
    previous = (summary.get("changes") or {}).get("previous")
    row_changes = []
    if previous:
        for table, rows in summary["published"].items():
            before = previous["published"].get(table)
            row_changes.append({"table": table, "rows": rows, "before": before,
                                "change": None if before is None else rows - before})
    stage_rows = []
    for stage, seconds in summary["stage_seconds"].items():
        earlier = [r["stage_seconds"][stage] for r in summary.get("previous_runs", []) if stage in r["stage_seconds"]]
        stage_rows.append({"stage": stage, "seconds": seconds, "runs": len(earlier),
                           "median": statistics.median(earlier) if earlier else None,
                           "fastest": min(earlier, default=None), "slowest": max(earlier, default=None)})
    return _environment().get_template("report.html.j2").render(
        s=summary, title=title(summary), charts=charts_found, previous=previous, row_changes=row_changes,
        stage_rows=stage_rows,
        quarantine=summary.get("quarantine", [])[:QUARANTINE_REASONS],
        quarantine_more=max(0, len(summary.get("quarantine", [])) - QUARANTINE_REASONS),
        cjk_font=charts.cjk_family(), fonts=charts.CJK_FONTS)


def write(ctx) -> dict:
    summary = collect(ctx)
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    (ctx.run_dir / "summary.txt").write_text(as_text(summary) + "\n")
    (ctx.run_dir / "report.html").write_text(as_html(summary), encoding="utf-8")
    return summary
