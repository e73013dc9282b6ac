"""The production Airflow topology, natively: CeleryExecutor, metadata in PostgreSQL, Redis broker.

``docker-compose.yml`` runs the same components in containers; ``celery_environ`` is the same
environment for processes started on a host (tests/test_docker_compose.py checks that every
setting agrees, with the compose service names replaced by real addresses). docs/production.md
shows how to start each component with it; tests/test_production_topology.py starts them all.
"""

from __future__ import annotations

from pathlib import Path

from tierline import cli, settings

# The production Airflow settings beyond the local ones (cli.airflow_environ), the same values as
# docker-compose.yml's x-airflow-common environment.
CELERY_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
    # The DAG runs one task at a time and a dbt or gate task can use up to 2 GiB: few slots.
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
}

# Settings that say where the other components are (compose: service names; here: arguments).
ADDRESSED = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
             "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY")


def celery_environ(*, metadata_url: str, broker_url: str, api_port: int, jwt_secret: str,
                   fernet_key: str = "", landing: Path | None = None) -> dict[str, str]:
    """Environment for every component of a native CeleryExecutor deployment on this host.

    ``metadata_url``: Airflow's own PostgreSQL database (``postgresql://user:pw@host:port/db``),
    never the warehouse; it is also the Celery result backend. ``broker_url``: ``redis://...``.
    The API server listens on 127.0.0.1:``api_port`` and the workers reach its execution API there.
    ``landing``: where extracts arrive (default ``inbox/`` in the checkout, as compose mounts it).
    """
    base = metadata_url.split("://", 1)[1]
    return {
        **cli.airflow_environ(),
        **CELERY_SETTINGS,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{base}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{base}",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "TIERLINE_LANDING": str(landing or settings.PROJECT_ROOT / "inbox"),
    }
