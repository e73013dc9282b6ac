"""Where tierline keeps its state and finds its configuration.

Everything a run needs is derived from a handful of environment variables so that Airflow,
dbt, the quality gates and the CLI agree without being configured separately:

- ``TIERLINE_WAREHOUSE_URL``: a ``postgresql://`` URL; unset means the embedded PostgreSQL.
- ``TIERLINE_HOME``: local state (embedded database, landing area, run artifacts, Airflow
  metadata); defaults to ``.tierline/`` in the checkout.
- ``TIERLINE_CONFIG``: the business-rule file; defaults to ``config/tierline.yml``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"


def home() -> Path:
    path = Path(os.environ.get("TIERLINE_HOME") or PROJECT_ROOT / ".tierline").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_path() -> Path:
    return Path(os.environ.get("TIERLINE_CONFIG") or PROJECT_ROOT / "config" / "tierline.yml")


def landing_area() -> Path:
    """The immutable copy of every extract the pipeline has seen."""
    return home() / "landing"


def runs_dir() -> Path:
    """Per-run artifacts: dbt manifests and run results, gate results, the run report."""
    return home() / "runs"


# The first logical date the DAGs accept (their start_date): history as old as this can be run and
# backfilled, and with catchup off the scheduler does not create runs for the years in between.
EARLIEST_AS_OF = "2000-01-01"
