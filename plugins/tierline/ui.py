"""``make airflow``: the Airflow UI on this checkout's local state and warehouse.

Starts ``api-server`` (127.0.0.1 only), ``scheduler`` and ``dag-processor`` with the environment
``make run`` uses (``cli.airflow_environ``: the SQLite metadata under ``$TIERLINE_HOME/airflow``,
this checkout's DAGs, the warehouse connection), so every run made with ``make run`` or ``make
demo`` is there with its task logs and XComs (``dbt_nodes`` of the dbt tasks: which model or test
failed). Prints the URL and the login, and stops the three components on Ctrl-C or SIGTERM.
Their output goes to ``$TIERLINE_HOME/airflow/ui/<component>.log``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tierline import cli

COMPONENTS = ("api-server", "scheduler", "dag-processor")
USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"  # written by Airflow's SimpleAuthManager


def environ(port: int) -> dict[str, str]:
    env = cli.airflow_environ()
    home = Path(env["AIRFLOW_HOME"])
    secret_file = home / "ui_jwt_secret"  # kept, so that a restart does not sign everybody out
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(32))
        secret_file.chmod(0o600)
    return {
        **env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text().strip(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def password(env: dict[str, str]) -> str | None:
    path = Path(env["AIRFLOW_HOME"]) / PASSWORDS_FILE
    return json.loads(path.read_text()).get(USER) if path.exists() else None


def serve(port: int = 8080, start_timeout: float = 300) -> int:
    env = environ(port)
    cli.ensure_airflow_db(env)
    logs = Path(env["AIRFLOW_HOME"]) / "ui"
    logs.mkdir(parents=True, exist_ok=True)
    binary = str(Path(sys.executable).with_name("airflow"))
    procs: dict[str, subprocess.Popen] = {}

    def stop(*_args) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for name in COMPONENTS:
            with (logs / f"{name}.log").open("w") as log:
                procs[name] = subprocess.Popen([binary, name], env={**os.environ, **env}, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + start_timeout
        while not _healthy(port):
            dead = [name for name, proc in procs.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"no answer within {start_timeout:.0f} s"
                print(f"tierline: the local Airflow did not start ({why}); see {logs}/*.log", file=sys.stderr)
                return 1
            time.sleep(1)
        print(f"Airflow UI: http://127.0.0.1:{port}/  login: {USER} / {password(env) or '(see ' + PASSWORDS_FILE + ')'}",
              flush=True)
        print(f"  DAG runs of make run/demo, task logs, XCom dbt_nodes per dbt task; logs in {logs}; "
              "Ctrl-C stops it", flush=True)
        while all(proc.poll() is None for proc in procs.values()):
            time.sleep(1)
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        print(f"tierline: {', '.join(dead)} stopped; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


def graph(out: Path, dag_id: str = "customer_tiering") -> int:
    """``airflow dags show`` of the DAG into ``out`` (``.dot``: the DOT text; other suffixes are
    rendered by graphviz's ``dot`` program, Debian's ``graphviz``). Airflow 3 draws the DAG from its metadata, so the DAG files are
    serialized into the local metadata first."""
    env = {**os.environ, **cli.airflow_environ()}
    cli.ensure_airflow_db(env)
    binary = str(Path(sys.executable).with_name("airflow"))
    # `--save x.dot` also calls graphviz's dot program; the DOT text is what `dags show` prints
    show = ["dags", "show", dag_id] + ([] if out.suffix == ".dot" else ["--save", str(out)])
    for args in (["dags", "reserialize"], show):
        done = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"tierline: airflow {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
                  file=sys.stderr)
            return done.returncode
    if out.suffix == ".dot":
        out.write_text(done.stdout[done.stdout.index("digraph"):] if "digraph" in done.stdout else done.stdout)
    print(f"{dag_id}: {out}")
    return 0
