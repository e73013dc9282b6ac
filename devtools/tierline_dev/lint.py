"""``make lint`` for SQL: sqlfluff with the dbt templater, given the pipeline's own dbt vars.

The dbt templater compiles each model; models that read the tier specification or the lifecycle
thresholds need them as vars, which a ``.sqlfluff`` file cannot express (they are nested), so
they are passed here from the validated configuration.
"""

from __future__ import annotations

import os
import sys

from tierline import config, settings, warehouse


def main(argv: list[str] | None = None) -> int:
    from sqlfluff.core import FluffConfig, Linter

    fix = "--fix" in (sys.argv[1:] if argv is None else argv)
    os.environ.update(warehouse.dbt_env(warehouse.url()))
    dbt_vars = {**config.load().dbt_vars(), "as_of_date": "2026-11-01", "run_id": "lint"}
    fluff = FluffConfig.from_path(
        str(settings.PROJECT_ROOT),
        overrides={"templater": "dbt"},
    )
    fluff._configs["templater"]["dbt"]["context"] = dbt_vars
    result = Linter(config=fluff).lint_paths((str(settings.DBT_PROJECT_DIR / "models"),), fix=fix,
                                             apply_fixes=fix)
    violations = 0
    for record in result.as_records():
        for v in record["violations"]:
            violations += 1
            print(f"{record['filepath']}:{v['start_line_no']}:{v['start_line_pos']}: {v['code']} {v['description']}")
    files = len(result.as_records())
    print(f"sqlfluff: {files} files, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
