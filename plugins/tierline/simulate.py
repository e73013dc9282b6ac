"""What-if: score a changed tier specification against the current warehouse without publishing.

    make simulate SPEC=path/to/tier_spec.yml      (python -m tierline.simulate --spec ...)

Rebuilds ``customer_value`` and ``customer_tier`` with the candidate specification into the
scratch schema ``tierline_simulate`` (dbt, same models as production, same previous evaluations
for hysteresis) for the latest published date, and compares with what is published: customers and
revenue per tier, the migration matrix from today's tiers, and the biggest movers. Nothing in
``analytics`` changes. By default the candidate's rules are shown without hysteresis (where the
rules put each customer); ``--with-hysteresis`` shows the next run's effect instead, where
demotions wait for their evaluations.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tierline import config, dbt, settings, warehouse
from tierline.errors import TierlineError

SCHEMA = "tierline_simulate"


@dataclass
class Simulation:
    as_of_date: str
    spec_version: str
    tiers: list[dict]  # per tier: customers and revenue, published vs simulated
    migration: list[dict]  # from (published) x to (simulated): customers, revenue
    movers: list[dict]
    report: Path

    @property
    def customers_moved(self) -> int:
        return sum(m["customers"] for m in self.migration if m["from_tier"] != m["to_tier"])


def run(spec_path: Path, *, movers: int = 20, with_hysteresis: bool = False) -> Simulation:
    cfg = config.load(tier_spec_path=spec_path)
    url = warehouse.url()
    schema = cfg.publish.schema_
    with warehouse.connect(url) as conn:
        row = conn.execute(f"select max(as_of_date) from {schema}.publication_log").fetchone()
    if not row or row[0] is None:
        raise TierlineError("nothing is published yet: run the pipeline once before simulating a specification")
    as_of = row[0]
    run_dir = settings.runs_dir() / "simulate" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dbt_vars = {**cfg.dbt_vars(), "as_of_date": as_of.isoformat(), "run_id": "simulation"}
    _align_inputs(url, as_of, {**config.load().dbt_vars(), "as_of_date": as_of.isoformat(), "run_id": "simulation"},
                  cfg, run_dir)
    if not with_hysteresis:
        dbt_vars["tier_spec"] = {**dbt_vars["tier_spec"], "hysteresis": {"demote_after": 1, "max_steps_down": 99}}
    dbt.invoke(["run", "--select", "customer_value", "customer_tier"], "simulate", warehouse_url=url,
                dbt_vars=dbt_vars, build_schema=SCHEMA, run_dir=run_dir)

    joined = (f"from {schema}.customer_tier p join {SCHEMA}.customer_tier s using (customer_id) "
              f"join {SCHEMA}.customer_value v using (customer_id) where p.as_of_date = %(d)s")
    with warehouse.connect(url) as conn:
        tiers = conn.execute(
            f"""
            with published as (select tier, count(*) as customers, sum(v.monetary) as revenue
                               from {schema}.customer_tier t join {schema}.customer_value v using (customer_id, as_of_date)
                               where as_of_date = %(d)s group by tier),
                 simulated as (select tier, tier_rank, count(*) as customers, sum(v.monetary) as revenue
                               from {SCHEMA}.customer_tier t join {SCHEMA}.customer_value v using (customer_id)
                               group by tier, tier_rank)
            select coalesce(s.tier, p.tier), coalesce(p.customers, 0), coalesce(s.customers, 0),
                   coalesce(p.revenue, 0), coalesce(s.revenue, 0)
            from published p full join simulated s using (tier) order by s.tier_rank nulls last
            """, {"d": as_of}).fetchall()
        migration = conn.execute(
            f"select p.tier, s.tier, count(*), sum(v.monetary) {joined} group by 1, 2 order by 1, 2",
            {"d": as_of}).fetchall()
        moved = conn.execute(
            f"select customer_id, p.tier, s.tier, v.monetary, s.tier_reason {joined} and p.tier <> s.tier "
            f"order by abs(p.tier_rank - s.tier_rank) desc, v.monetary desc, customer_id limit %(n)s",
            {"d": as_of, "n": movers}).fetchall()
    result = Simulation(
        as_of.isoformat(), cfg.tier_spec.version,
        [{"tier": t, "published_customers": pc, "simulated_customers": sc, "published_revenue": float(pr),
          "simulated_revenue": float(sr)} for t, pc, sc, pr, sr in tiers],
        [{"from_tier": f, "to_tier": t, "customers": n, "revenue": float(r or 0)} for f, t, n, r in migration],
        [{"customer_id": c, "from_tier": f, "to_tier": t, "monetary": float(m), "reason": why}
         for c, f, t, m, why in moved],
        run_dir / "simulation.md",
    )
    result.report.write_text(as_text(result, spec_path) + "\n")
    return result


def _align_inputs(url: str, as_of, production_vars: dict, cfg, run_dir: Path) -> None:
    """Rebuild the (unpublished) staging layer and the CLV fit for ``as_of`` if they were last
    built for another date, e.g. after an earlier date was re-run."""
    from tierline import clv

    with warehouse.connect(url) as conn:
        built = conn.execute("select to_regclass('intermediate.int_run_context')").fetchone()[0] and conn.execute(
            "select as_of_date from intermediate.int_run_context").fetchone()[0]
    if built == as_of:
        return
    dbt.build("staging", warehouse_url=url, dbt_vars=production_vars, build_schema=SCHEMA, run_dir=run_dir)
    with warehouse.connect(url) as conn:
        clv.fit_and_predict(conn, as_of=as_of, cfg=cfg.clv)


def as_text(sim: Simulation, spec_path: Path) -> str:
    lines = [f"# What-if: {spec_path} (version {sim.spec_version}) against the publication of {sim.as_of_date}",
             "", "Nothing was published. Customers and revenue per tier:", "",
             "| tier | published | simulated | change | revenue published | revenue simulated |",
             "|---|---:|---:|---:|---:|---:|"]
    for t in sim.tiers:
        lines.append(f"| {t['tier']} | {t['published_customers']:,} | {t['simulated_customers']:,} | "
                     f"{t['simulated_customers'] - t['published_customers']:+,} | {t['published_revenue']:,.2f} | "
                     f"{t['simulated_revenue']:,.2f} |")
    codes = [t["tier"] for t in sim.tiers]
    counts = {(m["from_tier"], m["to_tier"]): m["customers"] for m in sim.migration}
    lines += ["", f"Migration matrix (rows: published tier, columns: simulated tier); {sim.customers_moved:,} "
              "customers move:", "", "| from \\ to | " + " | ".join(codes) + " |",
              "|---|" + "---:|" * len(codes)]
    for source in codes:
        lines.append(f"| {source} | " + " | ".join(f"{counts.get((source, target), 0):,}" for target in codes) + " |")
    lines += ["", "Biggest movers:", "", "| customer | from | to | monetary | reason |", "|---|---|---|---:|---|"]
    for m in sim.movers:
        lines.append(f"| {m['customer_id']} | {m['from_tier']} | {m['to_tier']} | {m['monetary']:,.2f} | {m['reason']} |")
    lines += ["", f"Report: {sim.report}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tierline.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path, help="candidate tier specification (YAML)")
    parser.add_argument("--movers", type=int, default=20)
    parser.add_argument("--with-hysteresis", action="store_true",
                        help="show the next run's effect (demotions wait) instead of where the rules put customers")
    args = parser.parse_args(argv)
    try:
        sim = run(args.spec, movers=args.movers, with_hysteresis=args.with_hysteresis)
    except TierlineError as exc:
        print(f"simulation failed: {exc}", file=sys.stderr)
        return 1
    print(as_text(sim, args.spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
