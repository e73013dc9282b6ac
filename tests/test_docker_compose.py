"""docker-compose.yml, Dockerfile and .dockerignore agree with the project's real configuration.

No Docker engine runs here, so the compose file is checked against what the code itself reads:
Airflow's own CLI parser for every command, ``tierline.settings`` for the mount layout,
``tierline.warehouse`` for the warehouse URL and the dbt variables derived from it,
``tierline.cli.airflow_environ()`` (the local equivalent of the production environment) for the
environment, and a scan of the sources for every environment variable the project reads.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import io
import os
import re
import shlex
import sys
import types
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from tierline import settings, warehouse

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

CORE_AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
# Long-running Airflow components; airflow-init runs once, airflow-cli only on demand.
RUNNING_AIRFLOW_SERVICES = tuple(s for s in CORE_AIRFLOW_SERVICES if s != "airflow-init")
# Keys a service may add to the common environment, and why.
SERVICE_ENV_ADDITIONS = {
    "airflow-worker": {"DUMB_INIT_SETSID"},  # warm shutdown of Celery workers (official file)
    "airflow-init": {"_AIRFLOW_DB_MIGRATE", "_AIRFLOW_WWW_USER_CREATE", "_AIRFLOW_WWW_USER_USERNAME",
                     "_AIRFLOW_WWW_USER_PASSWORD"},
    "airflow-cli": {"CONNECTION_CHECK_MAX_COUNT"},
}
# Bind-mount sources that need not be committed: Docker creates a missing one at `up`, and
# docs/production.md has the operator create it first so that it belongs to them.
CREATED_ON_FIRST_RUN = {"inbox"}


# --- reading the files the way Compose does -----------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>.*))?$", re.S)


def interpolate(value, variables: dict[str, str]):
    """Compose's variable substitution (``${X}``, ``${X:-d}``, ``${X-d}``, ``$X``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            return variables.get(match.group("bare"), "")
        braced = _BRACED.match(match.group("braced"))
        assert braced, f"unsupported interpolation {match.group(0)!r} in docker-compose.yml"
        name, op, default = braced.group("name", "op", "default")
        if op == ":-":
            return variables.get(name) or default
        if op == "-":
            return variables.get(name, default)
        return variables.get(name, "")

    return _INTERPOLATION.sub(substitute, value)


def load_compose(variables: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables or {})


@pytest.fixture(scope="module")
def compose() -> dict:
    """The file as `docker compose up` sees it with no .env and nothing exported."""
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env(compose) -> dict[str, str]:
    """The common Airflow environment, values as strings (as containers receive them)."""
    return {k: str(v) for k, v in compose["x-airflow-common"]["environment"].items()}


def service_env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def parse_volume(spec: str) -> tuple[str, str, str]:
    source, target, *mode = spec.split(":")
    return source, target, mode[0] if mode else "rw"


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


@pytest.fixture(scope="module")
def mounts(compose) -> list[tuple[str, PurePosixPath, str]]:
    return [(s, PurePosixPath(t), m) for s, t, m in map(parse_volume, compose["x-airflow-common"]["volumes"])]


@pytest.fixture(scope="module")
def bind_mounts(mounts) -> list[tuple[Path, PurePosixPath, str]]:
    return [((COMPOSE_FILE.parent / s).resolve(), t, m) for s, t, m in mounts if is_bind(s)]


def to_container(host_path: Path, bind_mounts) -> PurePosixPath:
    """Where a path of this checkout appears inside the Airflow containers."""
    host_path = host_path.resolve()
    for source, target, _ in sorted(bind_mounts, key=lambda m: len(m[0].parts), reverse=True):
        if host_path == source or source in host_path.parents:
            return target.joinpath(*host_path.relative_to(source).parts)
    raise AssertionError(f"{host_path} is not mounted into the Airflow containers")


@pytest.fixture(scope="module")
def container_root(bind_mounts) -> PurePosixPath:
    """settings.PROJECT_ROOT as the containers compute it: parents[2] of settings.py."""
    return to_container(Path(settings.__file__), bind_mounts).parents[2]


def warehouse_url_parts(url: str) -> dict:
    parts = urlsplit(url)
    return {"scheme": parts.scheme, "host": parts.hostname, "port": parts.port, "user": parts.username,
            "password": parts.password, "db": parts.path.lstrip("/")}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """Import Airflow with its home kept out of the user's ~/airflow (as tests/test_dags.py does)."""
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


@pytest.fixture(scope="module")
def airflow_parser(airflow_home):
    """Airflow's own CLI parser."""
    from airflow.cli.cli_parser import get_parser

    return get_parser()


def parse_airflow(parser, args: list[str]):
    """Parse like `airflow <args>`; a failure names the command and Airflow's complaint."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(args)
    except SystemExit:
        complaint = next((line for line in errors.getvalue().splitlines() if "error" in line), "")
        raise AssertionError(f"`airflow {shlex.join(args)}` is not an Airflow command: {complaint}") from None


def airflow_commands(parser) -> set[str]:
    return set(next(a for a in parser._actions if a.dest == "subcommand").choices)


# --- services and the common anchor -------------------------------------------------------------

def test_every_service_exists(services):
    for name in (*CORE_AIRFLOW_SERVICES, "postgres", "redis", "warehouse"):
        assert name in services, f"docker-compose.yml has no service {name!r}"
    assert services["warehouse"]["image"].startswith("postgres:")


def _mapping_get(node: yaml.MappingNode, key: str):
    return next((v for k, v in node.value if k.value == key), None)


def test_every_airflow_service_merges_the_common_anchor(services):
    # Checked on the YAML node graph: a merge of the anchor is the very same node, not a copy.
    root = yaml.compose(COMPOSE_FILE.read_text())
    common = _mapping_get(root, "x-airflow-common")
    common_env = _mapping_get(common, "environment")
    nodes = _mapping_get(root, "services")
    airflow_services = [name for name in services if name.startswith("airflow-") or name == "flower"]
    assert set(CORE_AIRFLOW_SERVICES) <= set(airflow_services)
    for name in airflow_services:
        node = _mapping_get(nodes, name)
        assert _mapping_get(node, "<<") is common, f"{name} does not merge *airflow-common"
        for key in ("image", "build", "volumes", "user"):
            if name == "airflow-init" and key == "user":
                continue  # runs as root to hand the volumes to AIRFLOW_UID, as in the official file
            assert _mapping_get(node, key) is None, f"{name} overrides {key} of the common anchor"
        own_env = _mapping_get(node, "environment")
        if own_env is not None:
            assert _mapping_get(own_env, "<<") is common_env, f"{name}'s environment drops *airflow-common-env"


def test_airflow_services_share_image_environment_and_volumes(compose, services, env):
    common = compose["x-airflow-common"]
    for name in CORE_AIRFLOW_SERVICES:
        service = services[name]
        assert (service["image"], service["build"]) == (common["image"], common["build"]), name
        assert service["volumes"] == common["volumes"], name
        own = service_env(service)
        assert {k: own.get(k) for k in env} == env, f"{name} changes the common environment"
        assert set(own) - set(env) <= SERVICE_ENV_ADDITIONS.get(name, set()), name


def test_commands_are_airflow_cli_commands(services, airflow_parser):
    # `celery worker` and `celery flower` come from the Celery provider, pinned in requirements.txt
    assert "celery" in airflow_commands(airflow_parser)
    for name in RUNNING_AIRFLOW_SERVICES + ("flower",):
        parse_airflow(airflow_parser, argv(services[name]["command"]))


def test_an_unknown_command_would_be_caught(airflow_parser):
    with pytest.raises(AssertionError, match="not an Airflow command"):
        parse_airflow(airflow_parser, ["webserver"])  # Airflow 2's, gone in 3


def test_healthchecks_and_start_order_follow_the_official_file(services, airflow_parser):
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    for name in RUNNING_AIRFLOW_SERVICES:
        depends = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert depends["postgres"] == depends["redis"] == "service_healthy", name
        assert depends["airflow-init"] == "service_completed_successfully", name
        assert "healthcheck" in services[name], name
    worker = {k: v["condition"] for k, v in services["airflow-worker"]["depends_on"].items()}
    assert worker["airflow-apiserver"] == worker["warehouse"] == "service_healthy"
    for name in ("postgres", "redis", "warehouse"):
        assert "healthcheck" in services[name], name

    # `airflow jobs check ...` health checks must be commands this Airflow accepts.
    for name in RUNNING_AIRFLOW_SERVICES:
        test = services[name]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL" and test[1].startswith("airflow "):
            parse_airflow(airflow_parser, shlex.split(test[1])[1:])


def test_scheduler_and_api_server_health_checks_hit_airflows_ports(services, airflow_parser):
    from airflow.configuration import conf

    scheduler = urlsplit(services["airflow-scheduler"]["healthcheck"]["test"][-1])
    assert scheduler.port == conf.getint("scheduler", "scheduler_health_check_server_port")
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    api = parse_airflow(airflow_parser, argv(services["airflow-apiserver"]["command"]))
    health = urlsplit(services["airflow-apiserver"]["healthcheck"]["test"][-1])
    assert health.port == api.port
    assert health.path == "/api/v2/monitor/health"


def test_airflow_init_migrates_the_database_and_creates_the_admin(services, airflow_parser):
    init = services["airflow-init"]
    init_env = service_env(init)
    assert init_env["_AIRFLOW_DB_MIGRATE"] == init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert init_env["_AIRFLOW_WWW_USER_USERNAME"] and init_env["_AIRFLOW_WWW_USER_PASSWORD"]
    # The image's entrypoint migrates and creates the user before running its command.
    script = argv(init["command"])[-1]
    assert init["entrypoint"] == "/bin/bash" and "/entrypoint airflow version" in script
    parse_airflow(airflow_parser, ["version"])
    assert init["user"] == "0:0"


# --- the image ----------------------------------------------------------------------------------

def _requirement_pin(name: str) -> str:
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    return pins[name]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_extends_the_official_image_of_the_pinned_airflow(compose):
    airflow_version = _requirement_pin("apache-airflow")
    assert airflow_version == importlib.metadata.version("apache-airflow")
    bases = [args for instruction, args in _dockerfile_instructions() if instruction == "FROM"]
    assert len(bases) == 1
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[^-\s]+)-python(?P<python>\d+\.\d+)", bases[0])
    assert match, f"base image {bases[0]!r} is not an official apache/airflow:<version>-python<x.y> tag"
    assert match["airflow"] == airflow_version
    assert match["python"] == "{}.{}".format(*sys.version_info[:2])
    # The tag compose gives the built image names the same Airflow.
    assert compose["x-airflow-common"]["build"] == "."
    assert compose["x-airflow-common"]["image"].endswith(f":{airflow_version}")


def test_dockerfile_installs_requirements_txt_as_the_airflow_user():
    instructions = _dockerfile_instructions()
    copies = {}
    for instruction, args in instructions:
        if instruction == "COPY":
            *sources, target = [a for a in shlex.split(args) if not a.startswith("--")]
            copies.update({source: target for source in sources})
    assert "requirements.txt" in copies
    installs = [i for i, (instruction, args) in enumerate(instructions)
                if instruction == "RUN" and re.search(r"pip install --no-cache-dir -r (\S+)", args)]
    assert len(installs) == 1
    install = instructions[installs[0]][1]
    assert re.search(r"-r (\S+)", install)[1] == copies["requirements.txt"]
    users = [args for instruction, args in instructions[:installs[0]] if instruction == "USER"]
    assert users and users[-1] == "airflow"


def test_dockerignore_keeps_state_and_caches_out_but_not_requirements():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".tierline", "dbt_project/target", "dbt_project/logs", "inbox"} <= ignored
    assert {"**/__pycache__", ".pytest_cache", ".ruff_cache"} <= ignored
    assert not {"requirements.txt", "*", "*.txt"} & ignored


# --- the project laid out in the containers as in the repo --------------------------------------

def test_every_bind_mount_source_exists(mounts):
    for source, target, _ in mounts:
        if not is_bind(source):
            continue
        path = (COMPOSE_FILE.parent / source).resolve()
        assert path == ROOT or ROOT in path.parents, f"{source} is outside the checkout"
        if path.relative_to(ROOT).as_posix() in CREATED_ON_FIRST_RUN:
            continue
        assert path.exists(), f"mount source {source} (for {target}) does not exist in the repo"


def test_named_volumes_are_declared(compose):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for source, _, _ in map(parse_volume, service.get("volumes", [])):
            if not is_bind(source):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_project_paths_line_up_under_the_container_project_root(bind_mounts, container_root, env, monkeypatch):
    assert settings.PROJECT_ROOT == ROOT
    # settings.PROJECT_ROOT is the parent of plugins/: in the containers, the parent of its mount.
    assert container_root == to_container(ROOT / "plugins", bind_mounts).parent
    # Compose leaves TIERLINE_CONFIG unset (see LEFT_TO_DEFAULTS), so config_path() is its default.
    assert "TIERLINE_CONFIG" not in env
    monkeypatch.delenv("TIERLINE_CONFIG", raising=False)
    spec = yaml.safe_load(settings.config_path().read_text()).get("tier_spec", "tier_spec.yml")
    project_paths = {
        "dbt project (settings.DBT_PROJECT_DIR)": settings.DBT_PROJECT_DIR,
        "dbt profiles.yml": settings.DBT_PROJECT_DIR / "profiles.yml",
        "expectations (settings.EXPECTATIONS_DIR)": settings.EXPECTATIONS_DIR,
        "business rules (settings.config_path())": settings.config_path(),
        "tier spec (beside the business rules)": settings.config_path().parent / spec,
        "DAG file": ROOT / "dags" / "customer_tiering.py",
        "tierline package": ROOT / "plugins" / "tierline",
    }
    for what, path in project_paths.items():
        assert path.exists(), what
        expected = container_root.joinpath(*path.relative_to(settings.PROJECT_ROOT).parts)
        assert to_container(path, bind_mounts) == expected, what


def test_airflow_finds_dags_and_the_tierline_package(bind_mounts, env):
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(to_container(ROOT / "dags", bind_mounts))
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(to_container(ROOT / "plugins", bind_mounts))
    assert env["PYTHONPATH"].split(":")[0] == str(to_container(ROOT / "plugins", bind_mounts))
    # The plugin loader must not import tierline's modules under their bare names.
    assert "tierline/" in (ROOT / "plugins" / ".airflowignore").read_text().split()


def test_state_and_inbox_live_outside_the_checkout(mounts, container_root, env):
    targets = {target: (source, mode) for source, target, mode in mounts}
    home = PurePosixPath(env["TIERLINE_HOME"])
    assert home in targets and not is_bind(targets[home][0]), "TIERLINE_HOME must be a named volume"
    assert targets[home][1] == "rw"
    assert container_root not in home.parents
    landing = PurePosixPath(env["TIERLINE_LANDING"])
    assert landing in targets and targets[landing][0].endswith("/inbox")
    assert targets[landing][1] == "ro", "the pipeline only reads the drops; it lands its own copy"
    assert PurePosixPath("/opt/airflow/logs") in targets, "Airflow's task logs need a volume"


def test_the_dags_landing_param_reads_the_inbox(env, mounts):
    """The DAG's `landing` default is os.environ.get(<name>, <fallback>): both point at the inbox."""
    tree = ast.parse((ROOT / "dags" / "customer_tiering.py").read_text())
    params = next(kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                  for kw in node.keywords if kw.arg == "params")
    landing = next(v for k, v in zip(params.keys, params.values, strict=True) if k.value == "landing")
    default = landing.args[0]
    assert ast.unparse(default.func) == "os.environ.get", ast.unparse(default)
    name, fallback = (ast.literal_eval(a) for a in default.args)
    inbox = next(str(target) for source, target, _ in mounts if source.endswith("/inbox"))
    assert env[name] == inbox
    assert fallback == inbox


# --- one warehouse, configured once -------------------------------------------------------------

def test_warehouse_url_points_at_the_warehouse_service(services, env):
    url = warehouse_url_parts(env["TIERLINE_WAREHOUSE_URL"])
    db = services["warehouse"]["environment"]
    assert url["scheme"] == "postgresql"
    assert url["host"] == "warehouse" and url["host"] in services
    assert url["port"] == 5432
    assert (url["user"], url["password"], url["db"]) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"],
                                                         db["POSTGRES_DB"])
    health = services["warehouse"]["healthcheck"]["test"]
    assert health[health.index("-U") + 1] == db["POSTGRES_USER"]
    assert health[health.index("-d") + 1] == db["POSTGRES_DB"]


def test_the_airflow_connection_is_the_same_url(env, airflow_home):
    from airflow.sdk import Connection

    assert env["AIRFLOW_CONN_TIERLINE_WAREHOUSE"] == env["TIERLINE_WAREHOUSE_URL"]
    url = warehouse_url_parts(env["TIERLINE_WAREHOUSE_URL"])
    conn = Connection.from_uri(env["AIRFLOW_CONN_TIERLINE_WAREHOUSE"], conn_id="tierline_warehouse")
    assert conn.conn_type == "postgres"  # what the postgres provider's hook expects
    assert (conn.host, conn.port, conn.login, conn.password, conn.schema) == (
        url["host"], url["port"], url["user"], url["password"], url["db"])


def test_published_assets_name_the_warehouse_service(env):
    from tierline.assets import PUBLISHED_TABLES, asset_uri

    url = warehouse_url_parts(env["TIERLINE_WAREHOUSE_URL"])
    for table in PUBLISHED_TABLES:
        asset = urlsplit(asset_uri(table, "analytics", warehouse_url=env["TIERLINE_WAREHOUSE_URL"]))
        assert (asset.hostname, asset.port, asset.path.split("/")[1]) == (url["host"], url["port"], url["db"])


def test_one_variable_moves_loader_dbt_gates_and_connection_together():
    external = "postgresql://etl:secret@db.example.com:6432/crm_dw"
    moved = load_compose({"TIERLINE_WAREHOUSE_URL": external})["x-airflow-common"]["environment"]
    assert moved["TIERLINE_WAREHOUSE_URL"] == moved["AIRFLOW_CONN_TIERLINE_WAREHOUSE"] == external


def test_the_pipeline_takes_the_compose_url_and_never_the_embedded_server(env, monkeypatch, tmp_path):
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))
    monkeypatch.setenv(warehouse.ENV_URL, env["TIERLINE_WAREHOUSE_URL"])
    assert warehouse.url() == env["TIERLINE_WAREHOUSE_URL"]
    assert not (tmp_path / "pgdata").exists()


def test_dbt_gets_its_profile_from_the_warehouse_url(services, env, monkeypatch, tmp_path):
    """profiles.yml's variables are not in compose: tierline.dbt derives them from the URL."""
    db = services["warehouse"]["environment"]
    derived = warehouse.dbt_env(env["TIERLINE_WAREHOUSE_URL"])
    assert derived == {"TIERLINE_DB_HOST": "warehouse", "TIERLINE_DB_PORT": "5432",
                       "TIERLINE_DB_USER": db["POSTGRES_USER"], "TIERLINE_DB_PASSWORD": db["POSTGRES_PASSWORD"],
                       "TIERLINE_DB_NAME": db["POSTGRES_DB"],
                       "PGOPTIONS": warehouse.session_options(env["TIERLINE_WAREHOUSE_URL"])}

    # Run tierline.dbt.build with a stand-in for dbt: what dbt would see when it reads profiles.yml.
    seen = {}

    class Runner:
        def __init__(self, manifest=None):
            self.manifest = manifest

        def invoke(self, args):
            seen.update(args=args, env={k: os.environ.get(k) for k in derived})
            return types.SimpleNamespace(success=True, exception=None, result=None)

    fake = types.ModuleType("dbt.cli.main")
    fake.dbtRunner = Runner
    for name in ("dbt", "dbt.cli"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "dbt.cli.main", fake)
    for key in (*derived, "DBT_SEND_ANONYMOUS_USAGE_STATS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))
    from tierline import dbt as tierline_dbt

    tierline_dbt.build("marts", warehouse_url=env["TIERLINE_WAREHOUSE_URL"], dbt_vars={}, run_dir=tmp_path / "run")
    assert seen["env"] == derived
    assert seen["args"][seen["args"].index("--profiles-dir") + 1] == str(settings.DBT_PROJECT_DIR)


# --- every environment variable the project reads ---------------------------------------------

def _python_sources() -> list[Path]:
    return sorted(p for d in ("plugins", "dags") for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _string_constants(trees) -> dict[str, str]:
    constants = {}
    for tree in trees:
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                constants[node.targets[0].id] = node.value.value
    return constants


def environment_reads() -> dict[str, bool]:
    """Every variable read by plugins/, dags/ and the dbt project -> whether it has a default.

    ``os.environ.get`` / ``os.getenv`` are reads with a default (None at least); ``os.environ[X]``
    read, and dbt's ``env_var('X')`` without a second argument, are reads without one. Writes
    (``os.environ[X] = ...``, ``setdefault``, ``update``) are not reads.
    """
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _python_sources()}
    constants = _string_constants(trees.values())
    reads: dict[str, bool] = {}
    unresolved = []

    def name_of(node, path):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        key = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if key in constants:
            return constants[key]
        unresolved.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
        return None

    def record(name, has_default):
        if name:
            reads[name] = reads.get(name, True) and has_default

    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv"):
                record(name_of(node.args[0], path), True)
            elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                  and ast.unparse(node.value) == "os.environ"):
                record(name_of(node.slice, path), False)
    env_var = re.compile(r"""env_var\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*(,)?""")
    dbt_files = [p for p in (ROOT / "dbt_project").rglob("*") if p.suffix in (".yml", ".sql")
                 and not {"target", "logs", "dbt_packages"} & set(p.relative_to(ROOT / "dbt_project").parts)]
    for path in dbt_files:
        for name, comma in env_var.findall(path.read_text()):
            record(name, bool(comma))
    assert not unresolved, "environment reads the test cannot name:\n" + "\n".join(unresolved)
    return reads


# Project variables deliberately not set in compose, and why.
LEFT_TO_DEFAULTS = {
    "TIERLINE_CONFIG": "defaults to config/tierline.yml under the project root, which is mounted",
    "TIERLINE_CRM_CONFIG": "defaults to config/crm.yml under the project root, which is mounted",
    "TIERLINE_CRM_RETRY_DELAY_SECONDS": "crm_sync retries wait 600 s by default; tests shorten it",
}


def test_every_variable_the_project_reads_is_provided(env):
    reads = environment_reads()
    # The scan sees what it must: a default-less dbt read, the URL, and the DAG's landing param.
    assert reads["TIERLINE_DB_HOST"] is False and "TIERLINE_WAREHOUSE_URL" in reads
    assert "TIERLINE_LANDING" in reads and "TIERLINE_HOME" in reads

    derived = set(warehouse.dbt_env(env["TIERLINE_WAREHOUSE_URL"]))
    without_default = {name for name, has_default in reads.items() if not has_default}
    missing = sorted(without_default - set(env) - derived)
    assert not missing, f"read without a default but not set in docker-compose.yml: {missing}"
    # Every tierline variable, default or not, is either set or left to a default on purpose.
    undecided = sorted(n for n in reads if n.startswith("TIERLINE_")
                       and n not in env and n not in derived and n not in LEFT_TO_DEFAULTS)
    assert not undecided, f"tierline variables neither set in docker-compose.yml nor left to defaults: {undecided}"
    assert set(LEFT_TO_DEFAULTS) <= set(reads) - set(env), "LEFT_TO_DEFAULTS is stale"


# --- the same environment as a local run ------------------------------------------------------

# airflow_environ() keys whose production value differs by design; each is checked below.
PRODUCTION_DIFFERS = {
    "AIRFLOW_HOME": "the image's /opt/airflow, the container project root",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "the postgres service instead of SQLite",
    "AIRFLOW__API__HOST": "all interfaces in the container; the host side is bound to 127.0.0.1",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "the image's /opt/airflow/logs, on a volume",
    "AIRFLOW__CORE__PARALLELISM": "sized with the Celery worker's concurrency",
}


def _same(a: str, b: str) -> bool:
    booleans = {"true", "false"}
    return a.lower() == b.lower() if {a.lower(), b.lower()} <= booleans else a == b


def test_compose_environment_matches_the_local_airflow_environment(env, container_root, monkeypatch, tmp_path):
    from tierline import cli

    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))
    monkeypatch.setenv(warehouse.ENV_URL, env["TIERLINE_WAREHOUSE_URL"])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("TIERLINE_RETRY_DELAY_SECONDS", raising=False)
    local = cli.airflow_environ()
    assert set(PRODUCTION_DIFFERS) <= set(local), "PRODUCTION_DIFFERS names keys airflow_environ() dropped"

    def in_container(value: str) -> str:
        return value.replace(str(settings.home()), env["TIERLINE_HOME"]).replace(
            str(settings.PROJECT_ROOT), str(container_root))

    for key, value in local.items():
        if key in PRODUCTION_DIFFERS:
            continue
        assert key in env, f"{key} is set for a local Airflow but not in docker-compose.yml"
        assert _same(env[key], in_container(value)), f"{key}: compose {env[key]!r}, local {value!r}"

    assert "AIRFLOW_HOME" not in env and str(container_root) == "/opt/airflow"
    assert not [a for i, a in _dockerfile_instructions() if i in ("ENV", "ARG") and "AIRFLOW_HOME" in a]
    assert "AIRFLOW__LOGGING__BASE_LOG_FOLDER" not in env
    assert env.get("AIRFLOW__API__HOST", "0.0.0.0") == "0.0.0.0"
    assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) <= int(env["AIRFLOW__CORE__PARALLELISM"]) <= 8
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


# --- the same environment for the native production topology ----------------------------------

# Keys of compose's common environment that the native topology (tierline.topology) sets
# differently by design, and why.
NATIVE_DIFFERS = {
    "AIRFLOW__CORE__AUTH_MANAGER": "FAB comes with the official image, not requirements.txt: natively Airflow's own "
                                   "SimpleAuthManager (docs/production.md)",
}
# Native-only keys: where the API server listens (compose: the default port in its container).
NATIVE_ONLY = {"AIRFLOW__API__PORT"}


def test_native_celery_topology_has_the_compose_environment(env, container_root, monkeypatch, tmp_path):
    """tests/test_production_topology.py runs what tierline.topology.celery_environ() gives: compose's settings."""
    from tierline import topology

    raw = yaml.safe_load(COMPOSE_FILE.read_text())["x-airflow-common"]["environment"]
    # `${KEY:-default}`: the operator's own variable feeds the container; natively their shell does
    from_operator = {k for k, v in raw.items() if isinstance(v, str) and re.fullmatch(rf"\$\{{{k}(:?-[^}}]*)?\}}", v)}
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path))
    monkeypatch.setenv(warehouse.ENV_URL, env["TIERLINE_WAREHOUSE_URL"])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("TIERLINE_RETRY_DELAY_SECONDS", raising=False)
    metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    # given compose's own addresses, the native environment must be compose's environment
    native = topology.celery_environ(
        metadata_url=f"postgresql://{metadata.netloc}{metadata.path}", broker_url=env["AIRFLOW__CELERY__BROKER_URL"],
        api_port=api.port, jwt_secret=env["AIRFLOW__API_AUTH__JWT_SECRET"], fernet_key=env["AIRFLOW__CORE__FERNET_KEY"])

    def in_container(value: str) -> str:
        return value.replace(str(settings.home()), env["TIERLINE_HOME"]).replace(
            str(settings.PROJECT_ROOT / "inbox"), env["TIERLINE_LANDING"]).replace(
            str(settings.PROJECT_ROOT), str(container_root)).replace(f"127.0.0.1:{api.port}", api.netloc)

    for key, value in env.items():
        if key in NATIVE_DIFFERS or (key in from_operator and key not in native):
            continue
        assert key in native, f"{key} is set in docker-compose.yml but not by tierline.topology.celery_environ()"
        assert _same(value, in_container(native[key])), f"{key}: compose {value!r}, native {native[key]!r}"
    extra = set(native) - set(env) - set(PRODUCTION_DIFFERS) - NATIVE_ONLY
    assert not extra, f"set natively but not in docker-compose.yml: {sorted(extra)}"
    assert set(NATIVE_DIFFERS) <= set(env), "NATIVE_DIFFERS names keys compose dropped"
    assert native["AIRFLOW__API__HOST"] == "127.0.0.1"


# --- Airflow's own services ---------------------------------------------------------------------

def test_airflow_metadata_db_is_not_the_warehouse(services, env):
    metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    results = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    db = services["postgres"]["environment"]
    for url in (metadata, results):
        assert url.hostname == "postgres" != warehouse_url_parts(env["TIERLINE_WAREHOUSE_URL"])["host"]
        assert (url.username, url.password, url.path.lstrip("/")) == (
            db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"])
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    data = {name: parse_volume(services[name]["volumes"][0])[0] for name in ("postgres", "warehouse")}
    assert data["postgres"] != data["warehouse"]


def test_published_ports_are_bound_to_localhost(services, airflow_parser):
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert "airflow-apiserver" in published and "warehouse" in published
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    api = parse_airflow(airflow_parser, argv(services["airflow-apiserver"]["command"]))
    assert api.host == "0.0.0.0"  # inside the container; reachable only through 127.0.0.1 outside
    assert any(str(p).rsplit(":", 1)[1] == str(api.port) for p in published["airflow-apiserver"])


def test_workers_reach_the_execution_api_on_the_api_server(services, env, airflow_parser):
    url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    api = parse_airflow(airflow_parser, argv(services["airflow-apiserver"]["command"]))
    assert (url.hostname, url.port, url.path) == ("airflow-apiserver", api.port, "/execution/")


def test_airflow_never_writes_its_config_into_the_project(env, bind_mounts):
    # The official file keeps airflow.cfg in /opt/airflow/config; here that is tierline's config/.
    airflow_cfg = PurePosixPath(env.get("AIRFLOW_CONFIG", "/opt/airflow/airflow.cfg"))
    assert not any(target == airflow_cfg or target in airflow_cfg.parents for _, target, _ in bind_mounts)


def test_telemetry_is_off(env):
    assert env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    assert env["GX_ANALYTICS_ENABLED"] == "False"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
