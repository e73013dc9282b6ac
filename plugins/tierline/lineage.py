"""OpenLineage events for the dbt models of a run, beside the ones Airflow sends for its tasks.

Airflow's OpenLineage provider emits START/COMPLETE/FAIL for every task of the DAG (and the DAG
run) once a transport is configured — ``AIRFLOW__OPENLINEAGE__TRANSPORT`` (JSON: ``file``,
``console``, ``http`` to Marquez or any OpenLineage endpoint) or ``OPENLINEAGE_URL`` — and does
nothing otherwise. A ``dbt build`` is one task to Airflow, so after each build this module turns
the layer's ``manifest.json`` + ``run_results.json`` into one START and COMPLETE/FAIL per model,
seed and test (openlineage-integration-common's dbt processor, the one ``dbt-ol`` uses), sent
through the same client and configuration as the provider's, each with the Airflow task as its
parent run. Datasets are in the namespace the published Assets use (``tierline.assets``:
``postgres://host:port`` of the real warehouse); a model's output is the run's build table.

Lineage is for reading a run: it never fails one (a problem is logged and counted).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tierline import settings
from tierline.assets import warehouse_location

log = logging.getLogger(__name__)

# Set by the DAG's dbt tasks to ``lineage_parent_id(ti)`` / ``lineage_root_parent_id(ti)`` (the
# variables ``dbt-ol`` reads too), so the dbt events hang under the Airflow task that ran them.
PARENT_ENV = "OPENLINEAGE_PARENT_ID"
ROOT_PARENT_ENV = "OPENLINEAGE_ROOT_PARENT_ID"


def enabled() -> bool:
    """Whether a transport is configured (the provider's rule). Outside Airflow (the CLI's
    what-if, benchmarks) only the environment can configure one, so without such a variable
    Airflow's configuration is not even imported."""
    import os
    import sys

    if "airflow.configuration" not in sys.modules and not any(
            key.startswith(("AIRFLOW__OPENLINEAGE__", "OPENLINEAGE_")) for key in os.environ):
        return False
    from airflow.providers.openlineage import conf

    return not conf.is_disabled()


def namespace(warehouse_url: str) -> str:
    """The OpenLineage dataset namespace of the warehouse: ``postgres://host:port``."""
    host, port, _database = warehouse_location(warehouse_url)
    return f"postgres://{host}:{port}"


def emit_dbt(artifacts: Path, warehouse_url: str) -> dict:
    """Send the events of the dbt invocation whose artifacts are in ``artifacts``."""
    if not enabled():
        return {"events": 0, "enabled": False}
    started = time.perf_counter()
    try:
        from airflow.providers.openlineage import conf
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
        from openlineage.common.provider.dbt.local import DbtLocalArtifactProcessor
        from openlineage.common.provider.dbt.utils import PRODUCER, get_parent_run_metadata

        class Processor(DbtLocalArtifactProcessor):
            def extract_dataset_namespace(self, profile: dict) -> None:
                super().extract_dataset_namespace(profile)
                # the profile's host is a socket folder for a local server: name the machine
                self.dataset_namespace = namespace(warehouse_url)

        processor = Processor(project_dir=str(settings.DBT_PROJECT_DIR), target_path=str(artifacts),
                              producer=PRODUCER, job_namespace=conf.namespace(), skip_errors=True, logger=log)
        parent = get_parent_run_metadata()
        if parent is not None:
            processor.dbt_run_metadata = parent
        events = processor.parse().events()
        client = OpenLineageAdapter().get_or_create_openlineage_client()
        for event in events:
            client.emit(event)
    except Exception as exc:  # lineage must never fail the run it describes
        log.warning("OpenLineage events for %s were not sent: %s: %s", artifacts, type(exc).__name__, exc)
        return {"events": 0, "enabled": True, "error": f"{type(exc).__name__}: {exc}"}
    return {"events": len(events), "enabled": True, "seconds": round(time.perf_counter() - started, 2)}
