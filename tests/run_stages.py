"""Run one tierline run's stages in this process, as the DAG's tasks would, for the concurrency
tests: ``python tests/run_stages.py --as-of D --run-id R --landing DIR [--ready F --go F]``.

With ``--ready``/``--go`` the run stops after ``gate_marts``: it writes ``--ready`` and publishes
only once ``--go`` exists (the issue's "a run waits before publish"). Exit 0 when published; a
tierline error is printed on stderr with exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--landing", required=True)
    parser.add_argument("--ready")
    parser.add_argument("--go")
    args = parser.parse_args()

    from tierline import pipeline, stages

    ctx = pipeline.context(args.as_of, args.run_id, args.landing)
    for stage in stages.THROUGH_PUBLISH:
        if stage == "publish" and args.go:
            Path(args.ready).write_text("ready")
            while not Path(args.go).exists():
                time.sleep(0.1)
        print(f"stage {stage}", file=sys.stderr, flush=True)
        try:
            pipeline.run(stage, ctx)
        except Exception as exc:
            print(f"FAILED {stage}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return 1
    print("published", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
