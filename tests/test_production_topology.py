"""The production topology, run for real: CeleryExecutor on Redis, metadata in PostgreSQL, every
Airflow component as its own process, two Celery workers — no Docker, no `airflow dags test`.

Started natively from ``tierline.topology.celery_environ`` (the environment docker-compose.yml
gives its containers; tests/test_docker_compose.py checks they agree): ``airflow db migrate``,
then ``api-server`` (127.0.0.1), ``scheduler``, ``dag-processor``, ``triggerer`` and two
``celery worker`` processes. Airflow's metadata is a private database on the machine's
PostgreSQL (127.0.0.1:5432); the broker is the machine's Redis (127.0.0.1:6379) with a private
key prefix and queue; the warehouse is a private database of the tests' server; the CRM is the
Zoho emulator over real HTTP; alerts go to a local webhook receiver.

Through the REST API the test unpauses the DAGs and runs ``customer_tiering`` for two dates of
2019, years before the first deploy: the first as a triggered run, the second through Airflow's
own backfill (``POST /backfills``). It asserts both published and that ``crm_sync`` ran from the
Asset event; then it re-runs the second date, SIGKILLs the worker (its whole process tree, as
when a host dies) while it runs a task, and asserts that the task is retried on the other worker
and the publication is intact.
Every process it starts is stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import psutil
import pytest
import requests

from tests.receivers import HttpReceiver, chat_connection, free_port
from tierline import publish, warehouse
from tierline.assets import PUBLISHED_TABLES
from tierline_dev import generate

ROOT = Path(__file__).resolve().parents[1]
METADATA_SERVER = os.environ.get("TIERLINE_TEST_METADATA_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TIERLINE_TEST_REDIS", "redis://127.0.0.1:6379/5")
DAY1, DAY2 = date(2019, 3, 1), date(2019, 3, 2)  # history: before the DAG used to start (2026)
WORKERS = ("worker-a", "worker-b")
KILLED_TASK = "dbt_staging"


def kill_tree(pid: int, sig: int) -> None:
    """Signal a process we started and every descendant it has, parent first (no respawns)."""
    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


class Topology:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.procs = root, env, {}
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen:
        log = (self.root / "logs" / f"{name}.log").open("w")
        proc = subprocess.Popen([self.airflow, *args], env={**os.environ, **self.env, **extra}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            kill_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_tree(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        out = []
        for name in self.procs:
            text = (self.root / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)


class Api:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v2"
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def get(self, path: str):
        return self.call("GET", path)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")["task_instances"]


def wait_for(predicate, timeout: float, what: str, topology: Topology, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{topology.tail()}")


def fingerprint(url: str) -> dict[str, str]:
    with warehouse.connect(url) as conn:
        return {table: conn.execute(f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
                                    f"from analytics.{table} t").fetchone()[0] for table in PUBLISHED_TABLES}


def _run_state(api: Api, dag_id: str, run_id: str):
    state = api.run(dag_id, run_id)["state"]
    return state if state in ("success", "failed") else None


@pytest.fixture(scope="module")
def topology(server_url, tmp_path_factory):
    import redis

    from tierline import topology as topology_module
    from tierline.crm import config as crm_config
    from tierline_dev.crm_emulators.configured import accounts_from_extract, emulator_for

    started = time.monotonic()
    uid = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("topology")
    patch = pytest.MonkeyPatch()
    patch.setenv("TIERLINE_HOME", str(root / "home"))
    warehouse_url = warehouse.with_database(server_url, f"tierline_topology_{uid}")
    warehouse.ensure_database(warehouse_url)
    patch.setenv(warehouse.ENV_URL, warehouse_url)
    metadata_url = warehouse.with_database(METADATA_SERVER, f"tierline_airflow_{uid}")
    warehouse.ensure_database(metadata_url)
    prefix = f"tierline_test_{uid}:"

    landing = root / "landing"
    generate.generate(landing, customers=300, days=2, seed=3, start_date=DAY1, dirty=False, progress=False)

    crm_settings = crm_config.load()
    emulator = emulator_for(crm_settings, db_path=str(root / "crm.sqlite"))
    emulator.__enter__()
    # The customers came from this CRM: it holds their accounts, which the sync (update mode) updates.
    accounts = emulator.seed(crm_settings.module, accounts_from_extract(crm_settings, landing))
    hooks = HttpReceiver().__enter__()

    api_port = free_port()
    env = topology_module.celery_environ(metadata_url=metadata_url, broker_url=REDIS, api_port=api_port,
                                         jwt_secret=uuid.uuid4().hex)
    env.update({
        # Only this test differs from production here: no login (SimpleAuthManager, everyone admin;
        # compose uses FAB), its own queue and Redis key prefix, ports of its own, short timeouts.
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"tierline_test_{uid}",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.worker_hostname.name",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        "TIERLINE_WAREHOUSE_URL": warehouse_url,
        "AIRFLOW_CONN_TIERLINE_WAREHOUSE": warehouse_url,
        "TIERLINE_LANDING": str(landing),
        "TIERLINE_RETRY_DELAY_SECONDS": "1",
        "TIERLINE_CRM_RETRY_DELAY_SECONDS": "1",
        "AIRFLOW_CONN_TIERLINE_ALERTS_CHAT": chat_connection(hooks.port),
        "TIERLINE_ALERT_CONNECTIONS": "tierline_alerts_chat",
        **emulator.env(),
    })
    topo = Topology(root, env)
    try:
        migrate = subprocess.run([topo.airflow, "db", "migrate"], env={**os.environ, **env}, capture_output=True,
                                 text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        topo.start("api-server", ["api-server"], TIERLINE_TEST_WORKER_NAME="api-server")
        topo.start("scheduler", ["scheduler"], TIERLINE_TEST_WORKER_NAME="scheduler")
        topo.start("dag-processor", ["dag-processor"], TIERLINE_TEST_WORKER_NAME="dag-processor")
        topo.start("triggerer", ["triggerer"], TIERLINE_TEST_WORKER_NAME="triggerer")
        for name in WORKERS:
            topo.start(name, ["celery", "worker", "--celery-hostname", f"{name}@%h"], TIERLINE_TEST_WORKER_NAME=name,
                       AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
        api = Api(api_port)

        def dags_parsed():
            try:
                return all(api.session.get(f"{api.base}/dags/{d}", timeout=5).ok for d in ("customer_tiering", "crm_sync"))
            except requests.ConnectionError:
                return False

        wait_for(dags_parsed, 180, "the API server and the parsed DAGs", topo)
        yield {"api": api, "topology": topo, "url": warehouse_url, "landing": landing, "hooks": hooks,
               "started": started, "emulator": emulator, "crm_settings": crm_settings, "accounts": accounts}
    finally:
        topo.stop()
        hooks.__exit__(None, None, None)
        emulator.__exit__(None, None, None)
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
        patch.undo()
        warehouse.drop_database(warehouse_url)
        warehouse.drop_database(metadata_url)
        print(f"\nproduction topology test: {time.monotonic() - started:.0f} s in all")


def test_two_old_dates_publish_through_celery_and_trigger_crm_sync(topology):
    api, topo, url = topology["api"], topology["topology"], topology["url"]
    for dag_id in ("customer_tiering", "crm_sync"):
        assert api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})["is_paused"] is False
    conf = {"landing": str(topology["landing"])}
    created = api.call("POST", "/dags/customer_tiering/dagRuns", json={
        "dag_run_id": f"topology__{DAY1}", "logical_date": f"{DAY1}T00:00:00Z", "conf": conf})
    assert created["state"] == "queued"
    state = wait_for(lambda: _run_state(api, "customer_tiering", f"topology__{DAY1}"), 600, f"the run for {DAY1}", topo)
    assert state == "success", topo.tail()
    # Airflow's own backfill: one scheduled day, midnight Asia/Shanghai after DAY2 (UTC date DAY2)
    api.call("POST", "/backfills", json={
        "dag_id": "customer_tiering", "from_date": f"{DAY2}T00:00:00Z", "to_date": f"{DAY2 + timedelta(days=1)}T00:00:00Z",
        "dag_run_conf": conf, "max_active_runs": 1})

    def backfill_run():
        runs = [r for r in api.get("/dags/customer_tiering/dagRuns")["dag_runs"] if r["run_type"] == "backfill"]
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    backfilled = wait_for(backfill_run, 600, f"the backfill of {DAY2}", topo)
    assert [(r["logical_date"][:10], r["state"]) for r in backfilled] == [(str(DAY2), "success")], topo.tail()
    with warehouse.connect(url) as conn:
        assert sorted(publish.published_dates(conn, "analytics")) == [DAY1, DAY2]

    # Tasks ran on the Celery workers, not in a test process.
    hosts = {t["hostname"] for run_id in (f"topology__{DAY1}", backfilled[0]["dag_run_id"])
             for t in api.get(f"/dags/customer_tiering/dagRuns/{run_id}/taskInstances")["task_instances"]}
    assert hosts and hosts <= set(WORKERS), hosts

    def crm_runs_done():
        runs = api.get("/dags/crm_sync/dagRuns")["dag_runs"]
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    crm_runs = wait_for(crm_runs_done, 300, "crm_sync runs from the Asset event", topo)
    assert {r["run_type"] for r in crm_runs} == {"asset_triggered"}
    assert {r["state"] for r in crm_runs} == {"success"}, topo.tail()
    crm_settings = topology["crm_settings"]
    tier = next(f.crm_field for f in crm_settings.fields if f.column == "tier")
    records = topology["emulator"].records(crm_settings.module)
    assert len(records) == topology["accounts"] > 290  # every account updated, none created
    assert all(record.get(tier) for record in records)

    # The scheduler's own run for the latest scheduled date (unpausing with catchup off creates
    # it) has no extract folder: its preflight fails once, is not retried, and alerts.
    scheduled = [r for r in api.get("/dags/customer_tiering/dagRuns")["dag_runs"] if r["run_type"] == "scheduled"]
    assert scheduled  # one; two if the test spans midnight Asia/Shanghai
    run_id = scheduled[0]["dag_run_id"]
    assert wait_for(lambda: _run_state(api, "customer_tiering", run_id), 300, "the scheduled run", topo) == "failed"
    (only_try,) = api.tries("customer_tiering", run_id, "preflight")
    assert (only_try["try_number"], only_try["state"]) == (1, "failed")
    alert = next(t for t in topology["hooks"].texts() if "task failed (preflight)" in t)
    assert "no folder" in alert and f"{DAY2} (before)" in alert


def test_killed_worker_task_is_retried_on_the_other_worker(topology):
    api, topo, url = topology["api"], topology["topology"], topology["url"]
    before = fingerprint(url)
    run_id = f"topology__{DAY2}_again"
    api.call("POST", "/dags/customer_tiering/dagRuns", json={
        "dag_run_id": run_id, "logical_date": f"{DAY2}T00:00:01Z", "conf": {"landing": str(topology["landing"])}})

    def running_task():
        tries = api.tries("customer_tiering", run_id, KILLED_TASK)
        live = [t for t in tries if t["state"] == "running" and t["hostname"] in WORKERS]
        return live[0] if live else None

    first = wait_for(running_task, 420, f"{KILLED_TASK} running on a worker", topo, every=0.5)
    victim = first["hostname"]
    survivor = next(w for w in WORKERS if w != victim)
    kill_tree(topo.procs[victim].pid, signal.SIGKILL)
    topo.procs[victim].wait(timeout=10)

    state = wait_for(lambda: _run_state(api, "customer_tiering", run_id), 600, "the re-run after the kill", topo)
    assert state == "success", topo.tail()
    tries = sorted(api.tries("customer_tiering", run_id, KILLED_TASK), key=lambda t: t["try_number"])
    assert [(t["try_number"], t["hostname"]) for t in tries] == [(1, victim), (2, survivor)]
    assert tries[0]["state"] != "success" and tries[1]["state"] == "success"

    # The publication is intact: every published table as before, one more publication of DAY2.
    assert fingerprint(url) == before
    with warehouse.connect(url) as conn:
        log = conn.execute("select run_id, as_of_date from analytics.publication_log order by published_at").fetchall()
    assert [row[1] for row in log] == [DAY1, DAY2, DAY2] and log[-1][0] == run_id
    print(f"\n{KILLED_TASK} try 1 on {victim} (SIGKILLed), try 2 on {survivor}; "
          f"{time.monotonic() - topology['started']:.0f} s since the topology test started")
