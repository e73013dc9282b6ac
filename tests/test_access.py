"""Roles, grants and row-level security on a published warehouse (issue 12, items 1-3).

One small generated scenario goes through the pipeline's own stages (no Airflow) for two dates;
every check logs in as a login user granted a role, as a BI tool or an account manager would
(never ``SET ROLE`` from the superuser). Group roles are cluster-wide and shared with every other
test database on the server; the login users are this module's own and are dropped at the end.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from datetime import date

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tierline import access, config, pipeline, settings, warehouse
from tierline.assets import PUBLISHED_TABLES
from tierline_dev import generate

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
SUFFIX = uuid.uuid4().hex[:8]
USERS = {name: f"tl_{name}_{SUFFIX}" for name in ("bi", "pii", "crm", "branch", "manager", "nobody")}
PASSWORD = uuid.uuid4().hex


def _run(day: date, landing) -> None:
    pipeline.run_through(pipeline.context(day, f"access-{day}", landing))


def login(url: str, user: str) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(url, user=user, password=PASSWORD), autocommit=True)


def refused(url: str, user: str, statement: str) -> bool:
    with login(url, user) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


@pytest.fixture(scope="module")
def published(server_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("access")
    url = warehouse.with_database(server_url, f"tierline_access_{SUFFIX}")
    warehouse.ensure_database(url)
    with psycopg.connect(warehouse.with_database(server_url, "postgres"), autocommit=True) as admin:
        for user in USERS.values():
            admin.execute(sql.SQL("create role {} login password {}").format(sql.Identifier(user), sql.Literal(PASSWORD)))
    target = root / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", target)
    cfg = yaml.safe_load((target / "tierline.yml").read_text())
    cfg["access"] = {"members": {"bi": [USERS["bi"], USERS["branch"], USERS["manager"], USERS["nobody"]],
                                 "pii_reader": [USERS["pii"]], "crm_sync": [USERS["crm"]]}}
    (target / "tierline.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    patch = pytest.MonkeyPatch()
    patch.setenv(warehouse.ENV_URL, url)
    patch.setenv("TIERLINE_CONFIG", str(target / "tierline.yml"))
    patch.setenv("TIERLINE_HOME", str(root / "home"))
    landing = root / "landing"
    generate.generate(landing, customers=150, days=2, seed=5, start_date=DAY1, progress=False)
    _run(DAY1, landing)
    yield {"url": url, "landing": landing, "config": config.load()}
    patch.undo()
    warehouse.drop_database(url)
    with psycopg.connect(warehouse.with_database(server_url, "postgres"), autocommit=True) as admin:
        for user in USERS.values():
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(user)))


def test_bi_reads_the_published_tables_and_views(published):
    with login(published["url"], USERS["bi"]) as conn:
        for table in PUBLISHED_TABLES:
            conn.execute(f"select count(*) from analytics.{table}").fetchone()
        assert conn.execute("select count(*) from analytics.customer_tier_latest").fetchone()[0] >= 0
        assert conn.execute("select count(*) from analytics.publication_log").fetchone()[0] == 1


@pytest.mark.parametrize("user", ["bi", "pii", "crm"])
def test_readers_are_refused_on_raw_build_control_and_crm_state(published, user):
    url = published["url"]
    with warehouse.connect(url) as conn:
        schemas = [r[0] for r in conn.execute(
            "select nspname from pg_namespace where nspname in ('raw', 'tierline') or nspname like 'tierline_build%'")]
        build = conn.execute("select schemas from tierline.build_runs where status = 'failed' limit 1").fetchone()
    assert {"raw", "tierline"} <= set(schemas)
    for statement in ["select count(*) from raw.crm_customers", "select count(*) from raw.quarantine",
                      "select count(*) from tierline.run_lock", "select count(*) from tierline.build_runs"]:
        assert refused(url, USERS[user], statement), (user, statement)
    for schema in (build[0] if build else []):
        assert refused(url, USERS[user], f'create table "{schema}".x (i int)')


def test_nobody_but_the_pipeline_can_write_analytics(published):
    url = published["url"]
    for user in ("bi", "pii", "crm"):
        assert refused(url, USERS[user], "delete from analytics.customer_tier")
        assert refused(url, USERS[user], "insert into analytics.publication_log (run_id, as_of_date, row_counts) "
                                         "values ('x', '2026-01-01', '{}')")
        assert refused(url, USERS[user], "truncate analytics.kpi_daily")
        assert refused(url, USERS[user], "create table analytics.mine (i int)")
    with warehouse.connect(url) as conn:
        owner = conn.execute("select current_user").fetchone()[0]
        # every role of the server but the owner, superusers and PostgreSQL's predefined pg_* roles
        # (pg_write_all_data: only a superuser grants it, and its members are among the roles here)
        writers = conn.execute(
            "select distinct r.rolname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "cross join pg_roles r where n.nspname = 'analytics' and c.relkind in ('r', 'p') "
            "and r.rolname <> %s and not r.rolsuper and r.rolname not like 'pg\\_%%' and pg_get_userbyid(c.relowner) <> r.rolname "
            "and (has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') "
            "     or has_schema_privilege(r.oid, n.oid, 'CREATE'))", (owner,)).fetchall()
    assert writers == []


def test_roles_are_nologin_groups_and_created_again_without_error(published):
    cfg = published["config"]
    with warehouse.connect(published["url"]) as conn:
        rows = conn.execute("select rolname, rolcanlogin from pg_roles where rolname = any(%s)",
                            (list(cfg.access.roles.values()),)).fetchall()
        assert sorted(rows) == sorted((r, False) for r in cfg.access.roles.values())
        access.apply(conn, cfg.access, "analytics")  # idempotent: a second time changes nothing


def test_two_databases_creating_the_same_roles_at_once_both_succeed(warehouse_url, server_url):
    """Roles are server-wide: runs on two databases create and grant them at the same moment."""
    names = {kind: f"tl_{kind}_race_{uuid.uuid4().hex[:6]}" for kind in ("bi", "pii_reader", "crm_sync")}
    user = f"tl_race_user_{uuid.uuid4().hex[:6]}"
    cfg = config.Access.model_validate({"roles": names, "members": {"bi": [user]}})
    admin_url = warehouse.with_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login").format(sql.Identifier(user)))
    barrier, failures = threading.Barrier(6), []

    def create(url):
        try:
            with warehouse.connect(url, autocommit=True) as conn:
                barrier.wait()
                access.ensure_roles(conn, cfg)
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            failures.append(repr(exc))

    threads = [threading.Thread(target=create, args=(url,)) for url in [warehouse_url, admin_url] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        with psycopg.connect(admin_url, autocommit=True) as admin:
            assert admin.execute("select pg_has_role(%s, %s, 'member')", (user, names["bi"])).fetchone()[0]
            assert admin.execute("select pg_has_role(%s, %s, 'member')",
                                 (names["pii_reader"], names["bi"])).fetchone()[0]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for role in [user, *names.values()]:
                admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
