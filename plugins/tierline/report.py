"""The run report: rows in, quarantined, published, tier and lifecycle mix, time per stage.

Written as ``summary.json``, ``summary.txt`` (what ``make run`` and ``make demo`` print) and
``report.html`` in the run folder.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tierline import warehouse

STAGE_ORDER = ("land_extracts", "load_raw", "gate_raw", "dbt_staging", "gate_staging", "fit_clv", "dbt_marts",
               "gate_marts", "publish")


def _stages(run_dir: Path) -> list[dict]:
    found = []
    for name in STAGE_ORDER:
        path = run_dir / f"stage_{name}.json"
        if path.exists():
            found.append(json.loads(path.read_text()))
    return found


def collect(ctx) -> dict:
    schema = ctx.config.publish.schema_
    stages = _stages(ctx.run_dir)
    loads = next((s["result"] for s in stages if s["stage"] == "load_raw" and s["status"] == "ok"), [])
    with warehouse.connect(ctx.warehouse_url) as conn:
        tiers = conn.execute(
            f"select tier, tier_label_zh, tier_label_en, count(*), sum(v.monetary) "
            f"from {schema}.customer_tier t join {schema}.customer_value v using (customer_id, as_of_date) "
            f"where as_of_date = %s group by tier, tier_label_zh, tier_label_en, tier_rank order by tier_rank",
            (ctx.as_of,)).fetchall()
        stages_mix = conn.execute(
            f"select lifecycle_stage, lifecycle_label_zh, count(*) from {schema}.customer_lifecycle "
            f"where as_of_date = %s group by 1, 2 order by 3 desc", (ctx.as_of,)).fetchall()
        published = conn.execute(
            f"select row_counts from {schema}.publication_log where run_id = %s and as_of_date = %s",
            (ctx.run_id, ctx.as_of)).fetchone()
    total = sum(t[3] for t in tiers) or 1
    return {
        "as_of_date": ctx.as_of.isoformat(),
        "run_id": ctx.run_id,
        "warehouse": warehouse.redacted(ctx.warehouse_url),
        "rows_in": sum(f["rows_read"] for f in loads),
        "rows_loaded": sum(f["rows_loaded"] for f in loads),
        "rows_quarantined": sum(f["rows_quarantined"] for f in loads),
        "files": [{k: f[k] for k in ("file", "encoding", "rows_read", "rows_loaded", "rows_quarantined")}
                  for f in loads],
        "published": published[0] if published else {},
        "tier_mix": [{"tier": t[0], "label_zh": t[1], "label_en": t[2], "customers": t[3],
                      "share": round(t[3] / total, 4), "monetary": float(t[4] or 0)} for t in tiers],
        "lifecycle_mix": [{"stage": s[0], "label_zh": s[1], "customers": s[2]} for s in stages_mix],
        "stage_seconds": {s["stage"]: s["seconds"] for s in stages},
        "run_dir": str(ctx.run_dir),
    }


def as_text(summary: dict) -> str:
    lines = [
        f"tierline run {summary['run_id']} for {summary['as_of_date']} — published",
        f"  rows in {summary['rows_in']:,} · loaded {summary['rows_loaded']:,} · "
        f"quarantined {summary['rows_quarantined']:,}",
        "  published: " + ", ".join(f"{k} {v:,}" for k, v in summary["published"].items()),
        "  tier mix (客户分级):",
    ]
    for t in summary["tier_mix"]:
        lines.append(f"    {t['tier']:<10} {t['label_zh']:<6} {t['customers']:>9,}  {t['share']:>6.1%}  "
                     f"revenue {t['monetary']:>16,.2f}")
    lines.append("  lifecycle (生命周期): " + ", ".join(
        f"{s['stage']} {s['label_zh']} {s['customers']:,}" for s in summary["lifecycle_mix"]))
    lines.append("  seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds"].items()))
    lines.append(f"  details: {summary['run_dir']}/report.html")
    return "\n".join(lines)


def as_html(summary: dict) -> str:
    def table(rows: list[dict]) -> str:
        if not rows:
            return "<p>none</p>"
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>"
                       for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    return f"""<!doctype html><html lang="zh"><meta charset="utf-8">
<title>tierline {html.escape(summary['as_of_date'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}</style>
<h1>tierline run {html.escape(summary['run_id'])} — {html.escape(summary['as_of_date'])}</h1>
<p>Rows in {summary['rows_in']:,}; loaded {summary['rows_loaded']:,}; quarantined {summary['rows_quarantined']:,}
(see <code>raw.quarantine</code>).</p>
<h2>Tier mix 客户分级</h2>{table(summary['tier_mix'])}
<h2>Lifecycle 生命周期</h2>{table(summary['lifecycle_mix'])}
<h2>Files</h2>{table(summary['files'])}
<h2>Published rows</h2>{table([summary['published']])}
<h2>Seconds per stage</h2>{table([summary['stage_seconds']])}
</html>"""


def write(ctx) -> dict:
    summary = collect(ctx)
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (ctx.run_dir / "summary.txt").write_text(as_text(summary) + "\n")
    (ctx.run_dir / "report.html").write_text(as_html(summary))
    return summary
