"""The tierline dashboard in Apache Superset: ``python -m tierline_dev.dashboard`` (``make dashboard``).

Superset pins versions that conflict with Airflow's, so it lives in a venv of its own, installed
once from ``dashboard/requirements.txt`` (fully pinned) under ``.tierline/superset/<hash>/`` and
reused while the requirements' hash is the same; a migrated metadata database is kept beside it as
the template every instance copies. An instance (a folder with its SQLite metadata, secret key and
admin login) is provisioned from ``dashboard/tierline.yml``: the bundle it describes (Superset's
import format) connects through a login role that holds only the read-only BI role on
``analytics``, and is imported with ``superset import-dashboards``. The server (gunicorn, one
worker) listens on 127.0.0.1 only and is stopped by its pid.

    python -m tierline_dev.dashboard [--port 8088]          start on the warehouse, print URL + login
    python -m tierline_dev.dashboard bundle --out x.zip     the import bundle, for another Superset
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import yaml
from psycopg import sql

from tierline import access, config, settings, warehouse

DASHBOARD_DIR = settings.PROJECT_ROOT / "dashboard"
REQUIREMENTS = DASHBOARD_DIR / "requirements.txt"
SPEC = DASHBOARD_DIR / "tierline.yml"
SUPERSET_CONFIG = DASHBOARD_DIR / "superset_config.py"
LOGIN_ROLE = "tierline_dashboard"  # the dashboard's login, a member of the BI group role (access.roles.bi)
ADMIN_USER = "admin"
INSTALL_TIMEOUT = 900
COMMAND_TIMEOUT = 300
START_TIMEOUT = 180
NAMESPACE = uuid.UUID("5d0c8f2e-8a57-4a0b-9a43-2f1d2c6b7a10")  # stable uuids for the bundle's objects


class DashboardError(RuntimeError):
    pass


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


# ---------------------------------------------------------------------------------------------
# the Superset venv, installed once per requirements hash


def cache_dir() -> Path:
    """Where the venv and the migrated metadata template live: outside ``TIERLINE_HOME`` (tests give
    every scenario a home of its own) so that one install serves every run of the checkout."""
    root = Path(os.environ.get("TIERLINE_SUPERSET_CACHE") or settings.PROJECT_ROOT / ".tierline" / "superset")
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return root / digest


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], *, env: dict | None = None, timeout: int = COMMAND_TIMEOUT, what: str) -> str:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise DashboardError(f"{what} did not finish within {timeout} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise DashboardError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def superset_bin() -> Path:
    """The ``superset`` command of the dashboard's venv, installing the venv on first use."""
    root = cache_dir()
    venv, stamp = root / "venv", root / "venv" / ".installed"
    with _locked(root / ".install.lock"):
        if not stamp.exists():
            shutil.rmtree(venv, ignore_errors=True)
            started = time.monotonic()
            print(f"installing Apache Superset into {venv} (once per dashboard/requirements.txt) ...", flush=True)
            _run([sys.executable, "-m", "venv", str(venv)], what="creating the Superset venv")
            _run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", "-r", str(REQUIREMENTS)],
                 timeout=INSTALL_TIMEOUT, what="pip install -r dashboard/requirements.txt")
            stamp.write_text(f"{time.monotonic() - started:.0f} s\n")
            print(f"installed in {time.monotonic() - started:.0f} s", flush=True)
    return venv / "bin" / "superset"


def _superset_env(instance: Instance) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH", "SUPERSET_"))}
    env.update(SUPERSET_CONFIG_PATH=str(SUPERSET_CONFIG), FLASK_APP="superset",
               TIERLINE_SUPERSET_SECRET_KEY=instance.secret_key, TIERLINE_SUPERSET_METADATA=str(instance.metadata),
               SUPERSET_HOME=str(instance.root))
    return env


def metadata_template() -> Path:
    """A migrated and initialised (roles and permissions) metadata database, made once: ``superset
    db upgrade`` and ``superset init`` take a minute or two, copying the file a moment."""
    superset = superset_bin()
    template = cache_dir() / "metadata-template.db"
    with _locked(cache_dir() / ".template.lock"):
        if not template.exists():
            started = time.monotonic()
            print("preparing Superset's metadata database (once) ...", flush=True)
            scratch = Instance(cache_dir() / "template-build")
            shutil.rmtree(scratch.root, ignore_errors=True)
            scratch.root.mkdir(parents=True)
            env = _superset_env(scratch)
            _run([str(superset), "db", "upgrade"], env=env, what="superset db upgrade")
            _run([str(superset), "init"], env=env, what="superset init")
            shutil.move(scratch.metadata, template)
            shutil.rmtree(scratch.root, ignore_errors=True)
            print(f"prepared in {time.monotonic() - started:.0f} s", flush=True)
    return template


def prepare_in_background() -> Future:
    """Install the venv and the metadata template in a thread (both are subprocesses): a caller with
    other slow work, such as the e2e tests' pipeline runs, overlaps the first install with it."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="superset-install")
    future = executor.submit(metadata_template)
    executor.shutdown(wait=False)
    return future


# ---------------------------------------------------------------------------------------------
# the read-only login on the published schema


def reader_url(admin_url: str) -> str:
    """The URL of the dashboard's own login, a member of the read-only BI group role and nothing else.

    What a DBA does for any BI service account (README "Roles and row-level security"), done here because
    the demo's pipeline role may create roles: create the login (a new password each time), then
    the pipeline's own ``tierline.access.apply`` with the login added to ``access.members.bi`` and
    ``access.rows.everyone`` (row-level security: the dashboard shows every customer). A later
    publish applies the configuration alone: list the login there to keep it (README)."""
    cfg = config.load()
    password = secrets.token_urlsafe(24)
    members = {**cfg.access.members, "bi": [*cfg.access.members.get("bi", []), LOGIN_ROLE]}
    rows = cfg.access.rows.model_copy(update={"everyone": [*cfg.access.rows.everyone, LOGIN_ROLE]})
    with warehouse.connect(admin_url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(LOGIN_ROLE)))
        except psycopg.errors.DuplicateObject:
            pass  # roles are server-wide: made for another database of this server, or before
        conn.execute(sql.SQL("alter role {} login nosuperuser nocreatedb nocreaterole noreplication "
                             "nobypassrls password {}").format(sql.Identifier(LOGIN_ROLE), sql.Literal(password)))
        access.apply(conn, cfg.access.model_copy(update={"members": members, "rows": rows}), cfg.publish.schema_)
    parts = urlsplit(admin_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{LOGIN_ROLE}:{quote(password, safe='')}@{host}"))


# ---------------------------------------------------------------------------------------------
# the import bundle built from dashboard/tierline.yml


def _tier_labels(spec) -> dict[str, str]:
    labels = {"new": "0 新客户"}  # the from-state of first-time tiers in the migration matrix
    for rank, tier in enumerate(spec.ladder, start=1):
        labels[tier.code] = f"{rank} {tier.label_zh}"
    labels["all"] = "合计"  # the total row of kpi_daily and the scorecards
    return labels


def _label_expression(column: str, labels: dict[str, str]) -> str:
    quoted = lambda text: "'" + text.replace("'", "''") + "'"  # noqa: E731 (labels come from the tier spec)
    whens = " ".join(f"when {quoted(code)} then {quoted(label)}" for code, label in labels.items())
    return f'case "{column}" {whens} else "{column}" end'


def _metric(entry) -> dict:
    if isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry.values())), str):
        (label, expression), = entry.items()
        return {"expressionType": "SQL", "sqlExpression": expression, "label": label, "hasCustomLabel": True,
                "optionName": "metric_" + hashlib.sha1(f"{label}:{expression}".encode()).hexdigest()[:12]}
    return entry


def _expand_params(params: dict) -> dict:
    out = dict(params)
    for key in ("metric", "timeseries_limit_metric", "x", "y", "size"):
        if key in out:
            out[key] = _metric(out[key])
    for key in ("metrics", "percent_metrics"):
        if key in out:
            out[key] = [_metric(m) for m in out[key]]
    return out


_TEMPORAL = ("date", "timestamp")


def _columns(conn, schema: str, table: str) -> list[dict]:
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
        "from pg_attribute a where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped "
        "order by a.attnum", (f'"{schema}"."{table}"',)).fetchall()
    if not rows:
        raise DashboardError(f"{schema}.{table} is not readable through the dashboard's login: has a run "
                             f"published (make demo)?")
    return [{"column_name": name, "type": kind.upper(), "is_dttm": kind.startswith(_TEMPORAL), "filterable": True,
             "groupby": True, "is_active": True, "description": comment, "expression": None, "verbose_name": None}
            for name, kind, comment in rows]


def bundle(database_url: str, spec_path: Path = SPEC) -> bytes:
    """The Superset import bundle (a zip of YAML files) for the dashboard described in ``spec_path``;
    datasets take their columns from the published tables, read through ``database_url``."""
    spec, cfg = yaml.safe_load(spec_path.read_text(encoding="utf-8")), config.load()
    schema, labels = cfg.publish.schema_, _tier_labels(cfg.tier_spec)
    database_uuid = _uuid("database", spec["database"])
    files: dict[str, dict] = {
        "metadata.yaml": {"version": "1.0.0", "type": "Dashboard", "timestamp": "2026-11-30T00:00:00+00:00"},
        "databases/tierline_warehouse.yaml": {
            "database_name": spec["database"], "sqlalchemy_uri": warehouse.sqlalchemy_url(database_url),
            "expose_in_sqllab": True, "allow_dml": False, "allow_ctas": False, "allow_cvas": False,
            "allow_csv_upload": False, "allow_run_async": False, "cache_timeout": None,
            "extra": {"allows_virtual_table_explore": True}, "uuid": database_uuid, "version": "1.0.0"}}
    dataset_uuids = {}
    with warehouse.connect(database_url) as conn:
        for table, options in spec["datasets"].items():
            columns = _columns(conn, schema, table)
            for column in (options or {}).get("tier_labels", []):
                columns.append({"column_name": f"{column}_label", "type": "TEXT", "is_dttm": False,
                                "filterable": True, "groupby": True, "is_active": True,
                                "expression": _label_expression(column, labels),
                                "description": f"{column}: its rank on the ladder and Chinese label (config/tier_spec.yml)",
                                "verbose_name": None})
            dataset_uuids[table] = _uuid("dataset", schema, table)
            files[f"datasets/tierline_warehouse/{table}.yaml"] = {
                "table_name": table, "schema": schema, "main_dttm_col": "as_of_date" if any(
                    c["column_name"] == "as_of_date" for c in columns) else None,
                "database_uuid": database_uuid, "uuid": dataset_uuids[table], "columns": columns,
                "metrics": [{"metric_name": "count", "expression": "COUNT(*)", "metric_type": "count",
                             "verbose_name": "COUNT(*)"}],
                "filter_select_enabled": True, "sql": None, "params": None, "template_params": None,
                "cache_timeout": None, "offset": 0, "extra": None, "version": "1.0.0"}
    position = {"DASHBOARD_VERSION_KEY": "v2", "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
                "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
                "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": spec["title"]}}}
    charts = spec["charts"]
    for number, row in enumerate(spec["layout"]):
        row_id = f"ROW-{number}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {"type": "ROW", "id": row_id, "children": [], "parents": ["ROOT_ID", "GRID_ID"],
                            "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for key, width in row:
            chart = charts[key]
            chart_id = f"CHART-{key}"
            position[row_id]["children"].append(chart_id)
            position[chart_id] = {"type": "CHART", "id": chart_id, "children": [],
                                  "parents": ["ROOT_ID", "GRID_ID", row_id],
                                  # chartId: a placeholder the importer replaces with the chart's new id
                                  "meta": {"chartId": len(position), "width": width, "height": chart.get("height", 50),
                                           "sliceName": chart["title"], "uuid": _uuid("chart", key)}}
    unplaced = set(charts) - {key for row in spec["layout"] for key, _w in row}
    if unplaced:
        raise DashboardError(f"dashboard/tierline.yml: charts not in the layout: {sorted(unplaced)}")
    for key, chart in charts.items():
        where = [{"expressionType": "SQL", "clause": "WHERE", "sqlExpression": chart["where"]}] if "where" in chart else []
        params = {"viz_type": chart["viz_type"], "adhoc_filters": where, **_expand_params(chart.get("params") or {})}
        files[f"charts/{key}.yaml"] = {
            "slice_name": chart["title"], "viz_type": chart["viz_type"], "params": params, "query_context": None,
            "cache_timeout": None, "description": chart.get("description"),
            "dataset_uuid": dataset_uuids[chart["dataset"]], "uuid": _uuid("chart", key), "version": "1.0.0"}
    files["dashboards/tierline.yaml"] = {
        "dashboard_title": spec["title"], "slug": spec["slug"], "description": None, "css": "",
        "certified_by": "", "certification_details": "", "published": True, "uuid": _uuid("dashboard", spec["slug"]),
        "position": position, "version": "1.0.0",
        "metadata": {"color_scheme": "supersetColors", "refresh_frequency": 0, "expanded_slices": {},
                     "timed_refresh_immune_slices": [], "cross_filters_enabled": True,
                     "native_filter_configuration": [], "default_filters": "{}", "label_colors": {}}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(f"tierline_dashboard/{name}", yaml.safe_dump(content, allow_unicode=True, sort_keys=False))
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# an instance: its folder, metadata, login, and the server


@dataclass
class Instance:
    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "superset.db"

    def _secret(self, name: str, size: int) -> str:
        path = self.root / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(size))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def secret_key(self) -> str:
        return self._secret("secret_key", 42)

    @property
    def password(self) -> str:
        return self._secret("admin_password", 12)


def provision(instance: Instance, database_url: str) -> Instance:
    """A fresh metadata database for ``instance`` with the admin login and the tierline dashboard
    imported, connecting to the warehouse through the read-only login of ``database_url``."""
    superset = superset_bin()
    template = metadata_template()
    instance.root.mkdir(parents=True, exist_ok=True)
    instance.root.chmod(0o700)
    shutil.copyfile(template, instance.metadata)
    env = _superset_env(instance)
    _run([str(superset), "fab", "create-admin", "--username", ADMIN_USER, "--firstname", "tierline",
          "--lastname", "analyst", "--email", "analyst@tierline.invalid", "--password", instance.password],
         env=env, what="superset fab create-admin")
    archive = instance.root / "tierline_dashboard.zip"  # holds the reader's password: private, removed
    archive.write_bytes(bundle(database_url))
    archive.chmod(0o600)
    try:
        _run([str(superset), "import-dashboards", "--path", str(archive), "--username", ADMIN_USER], env=env,
             what="superset import-dashboards")
    finally:
        archive.unlink(missing_ok=True)
    return instance


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """Superset under gunicorn on 127.0.0.1, started and stopped by its own pid."""

    def __init__(self, instance: Instance, port: int):
        self.instance, self.port = instance, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.log_path = instance.root / "superset.log"
        self.started_in: float | None = None

    def start(self, timeout: float = START_TIMEOUT) -> Server:
        gunicorn = superset_bin().parent / "gunicorn"
        started = time.monotonic()
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [str(gunicorn), "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "8",
                 "--timeout", "120", "--graceful-timeout", "5", "superset.app:create_app()"],
                env=_superset_env(self.instance), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise DashboardError(f"Superset exited with {self.process.returncode} while starting; "
                                     f"log {self.log_path}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        self.started_in = time.monotonic() - started
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise DashboardError(f"Superset did not answer on {self.url}/health within {timeout:.0f} s; "
                             f"log {self.log_path}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        """SIGTERM to gunicorn's master (its own pid: it stops its worker), then SIGKILL to its group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def dashboard_path(spec_path: Path = SPEC) -> str:
    return f"/superset/dashboard/{yaml.safe_load(spec_path.read_text(encoding='utf-8'))['slug']}/"


# ---------------------------------------------------------------------------------------------
# command line


def _published(admin_url: str) -> bool:
    with warehouse.connect(admin_url) as conn:
        return bool(conn.execute("select to_regclass('analytics.publication_log') is not null and exists "
                                 "(select 1 from analytics.publication_log)").fetchone()[0])


def serve(port: int) -> int:
    admin_url = warehouse.url()
    if not _published(admin_url):
        print(f"nothing is published in {warehouse.redacted(admin_url)} yet: run `make demo` (or a run) first",
              file=sys.stderr)
        return 2
    instance = provision(Instance(settings.home() / "dashboard"), reader_url(admin_url))
    server = Server(instance, port).start()
    stop = {"now": False}

    def _stop(_signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"""
tierline dashboard (Apache Superset) on {warehouse.redacted(admin_url)}, schema analytics as {LOGIN_ROLE}
  open:   {server.url}{dashboard_path()}
  login:  {ADMIN_USER} / {instance.password}      (also in {instance.root / 'admin_password'})
  log:    {server.log_path}
  started in {server.started_in:.0f} s; Ctrl-C stops it (pid {server.process.pid})
""", flush=True)
    try:
        while not stop["now"] and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierline_dev.dashboard", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    bundle_p = sub.add_parser("bundle", help="write the Superset import bundle for this warehouse")
    bundle_p.add_argument("--out", required=True, type=Path)
    bundle_p.add_argument("--database-url", help="the URL Superset will connect with (default: a read-only login "
                                                 "created on the configured warehouse)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("TIERLINE_DASHBOARD_PORT") or 8088))
    args = parser.parse_args(argv)
    try:
        if args.command == "bundle":
            args.out.write_bytes(bundle(args.database_url or reader_url(warehouse.url())))
            args.out.chmod(0o600)
            print(f"{args.out}: import it with `superset import-dashboards --path {args.out} --username <you>`")
            return 0
        return serve(args.port)
    except DashboardError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
