"""Time the load stage against its floor: PostgreSQL's COPY of the same files and nothing else.

    python bench/bench_load.py --customers 100000 [--repeat 1]

Generates (or reuses) bench_pipeline.py's clean snapshot extracts, then in a fresh database: the
floor (each file COPYed as CSV into a table of text columns, one after the other, nothing else)
and the load stage (land + tierline.load.load_date, as the DAG's load_raw runs it). Prints both,
per file, and writes bench/results/load_<customers>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from bench_pipeline import START, prepare_data  # noqa: E402
from psycopg import sql  # noqa: E402

from tierline import contract, land, load, settings, warehouse  # noqa: E402


def floor(url: str, folder: Path) -> dict[str, float]:
    """Seconds per file of a plain CSV COPY into text columns."""
    seconds = {}
    with warehouse.connect(url, autocommit=True) as conn:
        conn.execute("create schema floor")
        for entity in contract.ENTITIES:
            path = folder / entity.file_name
            if path.exists():
                started = time.perf_counter()
                names = path.open(encoding="utf-8-sig").readline().strip().split(",")
                table = sql.Identifier("floor", entity.name)
                conn.execute(sql.SQL("create table {} ({})").format(table, sql.SQL(", ").join(
                    sql.SQL("{} text").format(sql.Identifier(n.strip().lower())) for n in names)))
                statement = sql.SQL("copy {} from stdin (format csv, header true)").format(table)
                with conn.cursor().copy(statement) as copy, path.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 22), b""):
                        copy.write(chunk)
                seconds[entity.file_name] = time.perf_counter() - started
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    data, _ = prepare_data(args.customers, args.seed)
    folder = data / START.isoformat()
    rows = {p.name: sum(1 for _ in p.open("rb")) - 1 for p in sorted(folder.glob("*.csv"))}
    print(json.dumps(rows), flush=True)
    runs = []
    for attempt in range(args.repeat):
        url = warehouse.with_database(warehouse.url(), f"tierline_bench_load_{uuid.uuid4().hex[:6]}")
        warehouse.ensure_database(url)
        try:
            floor_files = floor(url, folder)
            started = time.perf_counter()
            manifest = land.land_extracts(data, START, settings.home() / "bench" / "landing_area")
            landed = time.perf_counter() - started
            loads = load.load_date(url, manifest, START, f"bench-load-{attempt}", "Asia/Shanghai")
            total = time.perf_counter() - started
        finally:
            warehouse.drop_database(url)
        run = {"floor_seconds": sum(floor_files.values()), "load_stage_seconds": total, "land_seconds": landed,
               "ratio": total / sum(floor_files.values()), "floor_files": floor_files,
               "load_files": {f.file: f.seconds for f in loads},
               "quarantined": sum(f.rows_quarantined for f in loads)}
        print(json.dumps(run, indent=2), flush=True)
        runs.append(run)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"load_{args.customers}.json").write_text(json.dumps({"customers": args.customers, "rows": rows,
                                                                 "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
