"""What-if: score a changed tier specification against the current warehouse without publishing.

    make simulate SPEC=path/to/tier_spec.yml      (python -m tierline.simulate --spec ...)

Builds the staging layer, the CLV fit, ``customer_value`` and ``customer_tier`` with the candidate
specification for the latest published date into schemas of its own (named like a run's,
``RunContext.schemas`` of a ``simulate-...`` run id; dropped afterwards), with the same models
and the same previous evaluations for hysteresis as production, and compares with what is
published: customers and revenue per tier, the migration matrix from today's tiers, and the
biggest movers. It writes no relation but its own: nothing in ``analytics``, no run's build. By default the candidate's rules are shown without hysteresis (where the
rules put each customer); ``--with-hysteresis`` shows the next run's effect instead, where
demotions wait for their evaluations.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tierline import config, dbt, runs, settings, warehouse
from tierline.errors import TierlineError


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
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_id = f"simulate-{stamp}-{os.getpid()}"
    run_dir = settings.runs_dir() / "simulate" / stamp
    schemas = runs.build_schemas(cfg.runs.build_prefix, as_of, run_id)
    try:
        return _simulate(url, cfg, spec_path, as_of, run_id, run_dir, schemas, movers, with_hysteresis)
    finally:
        with warehouse.connect(url, autocommit=True) as conn:
            runs.drop_schemas(conn, schemas.values())


def _simulate(url, cfg, spec_path, as_of, run_id, run_dir, schemas, movers, with_hysteresis) -> Simulation:
    from tierline import clv

    schema = cfg.publish.schema_
    production_vars = {**config.load().dbt_vars(), "as_of_date": as_of.isoformat(), "run_id": run_id,
                       "schemas": schemas}
    dbt_vars = {**cfg.dbt_vars(), "as_of_date": as_of.isoformat(), "run_id": run_id, "schemas": schemas}
    # the inputs as production built them for that date (production's rules), in our own schemas
    target = run_dir / "dbt_target"  # not the runs' shared one: a what-if takes no run lock
    dbt.build("staging", warehouse_url=url, dbt_vars=production_vars, run_dir=run_dir, target=target)
    with warehouse.connect(url) as conn:
        clv.fit_and_predict(conn, as_of=as_of, cfg=cfg.clv, schema=schemas["intermediate"])
    if not with_hysteresis:
        dbt_vars["tier_spec"] = {**dbt_vars["tier_spec"], "hysteresis": {"demote_after": 1, "max_steps_down": 99}}
    dbt.invoke(["run", "--select", "customer_value", "customer_tier"], "simulate", warehouse_url=url,
               dbt_vars=dbt_vars, run_dir=run_dir, target=target)
    sim = schemas["marts"]  # the simulated marts

    joined = (f"from {schema}.customer_tier p join {sim}.customer_tier s using (customer_id) "
              f"join {sim}.customer_value v using (customer_id) where p.as_of_date = %(d)s")
    with warehouse.connect(url) as conn:
        tiers = conn.execute(
            f"""
            with published as (select tier, count(*) as customers, sum(v.monetary) as revenue
                               from {schema}.customer_tier t join {schema}.customer_value v using (customer_id, as_of_date)
                               where as_of_date = %(d)s group by tier),
                 simulated as (select tier, tier_rank, count(*) as customers, sum(v.monetary) as revenue
                               from {sim}.customer_tier t join {sim}.customer_value v using (customer_id)
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
