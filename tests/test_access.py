"""Roles, grants and row-level security on a published warehouse (issue 12, items 1-3).

One small generated scenario goes through the pipeline's own stages (no Airflow) for two dates;
every check logs in as a login user granted a role, as a BI tool or an account manager would
(never ``SET ROLE`` from the superuser). Group roles are cluster-wide and shared with every other
test database on the server; the login users are this module's own and are dropped at the end.
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from datetime import date
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tierline import access, config, pipeline, preflight, settings, warehouse
from tierline.assets import CUSTOMER, PUBLISHED_TABLES, ROW_FILTERS, published_schema
from tierline.crm import state
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


def _configure(target, access_config: dict) -> None:
    cfg = yaml.safe_load((target / "tierline.yml").read_text())
    cfg["access"] = access_config
    (target / "tierline.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True))


@pytest.fixture(scope="module")
def published(server_url, tmp_path_factory):
    """Day 1 published with the roles and no row mapping; then what an earlier release, or a DBA,
    may have left (a revoked grant, RLS off, a view that runs as its owner) and a CRM sync state;
    then day 2 published with the mapping: a branch user, a manager, a PII reader of that branch."""
    root = tmp_path_factory.mktemp("access")
    url = warehouse.with_database(server_url, f"tierline_access_{SUFFIX}")
    warehouse.ensure_database(url)
    with psycopg.connect(warehouse.with_database(server_url, "postgres"), autocommit=True) as admin:
        for user in USERS.values():
            admin.execute(sql.SQL("create role {} login password {}").format(sql.Identifier(user), sql.Literal(PASSWORD)))
    target = root / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", target)
    members = {"bi": [USERS["bi"], USERS["branch"], USERS["manager"], USERS["nobody"]],
               "pii_reader": [USERS["pii"]], "crm_sync": [USERS["crm"]]}
    _configure(target, {"members": members})
    patch = pytest.MonkeyPatch()
    # a setup that fails must not leave its environment (warehouse, config) to later modules
    try:
        patch.setenv(warehouse.ENV_URL, url)
        patch.setenv("TIERLINE_CONFIG", str(target / "tierline.yml"))
        patch.setenv("TIERLINE_HOME", str(root / "home"))
        landing = root / "landing"
        generate.generate(landing, customers=150, days=2, seed=5, start_date=DAY1, progress=False)
        _run(DAY1, landing)
        with warehouse.connect(url, autocommit=True) as conn:
            branch, manager = (conn.execute(
                f"select {column} from analytics.dim_customer where {column} is not null "
                "group by 1 order by count(*) desc, 1 limit 1").fetchone()[0] for column in ("branch_code", "account_manager_id"))
            conn.execute("revoke select on analytics.kpi_daily from tierline_bi")
            conn.execute("alter table analytics.customer_tier disable row level security")
            conn.execute("alter view analytics.customer_tier_latest reset (security_invoker)")
            state.ensure(conn, "zoho")
        rows = {"branches": {USERS["branch"]: [branch], USERS["pii"]: [branch]}, "managers": {USERS["manager"]: [manager]}}
        _configure(target, {"members": members, "rows": rows})
        ctx = pipeline.context(DAY2, f"access-{DAY2}", landing)
        pipeline.run_through(ctx, "gate_marts")
        # the run's build schemas exist until it publishes, staging's state (and the seeds) always:
        # every reader is refused on each of them
        build_reads = {}
        with warehouse.connect(url) as conn:
            for layer in ("state", "intermediate", "marts"):
                (table,) = conn.execute("select table_name from information_schema.tables where table_schema = %s "
                                        "order by 1 limit 1", (ctx.schemas[layer],)).fetchone()
                build_reads[layer] = sql.SQL("select count(*) from {}.{}").format(
                    sql.Identifier(ctx.schemas[layer]), sql.Identifier(table)).as_string(conn)
        build_refused = {(user, layer): refused(url, USERS[user], statement)
                         for user in ("bi", "pii", "crm") for layer, statement in build_reads.items()}
        pipeline.run("publish", ctx)
        yield {"url": url, "config": config.load(), "branch": branch, "manager": manager,
               "build_refused": build_refused}
    finally:
        patch.undo()
        warehouse.drop_database(url)
        with psycopg.connect(warehouse.with_database(server_url, "postgres"), autocommit=True) as admin:
            for user in USERS.values():
                admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(user)))


def owner_rows(url: str, statement: str, *params) -> list[tuple]:
    with warehouse.connect(url) as conn:
        return conn.execute(statement, params).fetchall()


def test_bi_reads_the_published_tables_and_views(published):
    with login(published["url"], USERS["bi"]) as conn:
        for table in PUBLISHED_TABLES:
            conn.execute(f"select count(*) from analytics.{table}").fetchone()
        assert conn.execute("select count(*) from analytics.customer_tier_latest").fetchone()[0] >= 0
        assert conn.execute("select count(*) from analytics.publication_log").fetchone()[0] == 2


@pytest.mark.parametrize("user", ["bi", "pii", "crm"])
def test_readers_are_refused_on_raw_build_control_and_crm_state(published, user):
    url = published["url"]
    statements = ["select count(*) from raw.crm_customers", "select count(*) from raw.quarantine",
                  "select count(*) from tierline.run_lock", "select count(*) from tierline.build_runs"]
    if user != "crm":
        statements.append("select count(*) from crm_sync.record_state")
    for statement in statements:
        assert refused(url, USERS[user], statement), (user, statement)
    building = {layer: ok for (who, layer), ok in published["build_refused"].items() if who == user}
    assert building == {"state": True, "intermediate": True, "marts": True}


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


# -- dim_customer and masking (item 1) --------------------------------------------------------------


def test_dim_customer_names_each_customer_with_contact_fields_masked(published):
    url = published["url"]
    [(customers, dims, masked_phones, phones, masked_emails, emails, birthdays)] = owner_rows(url, """
        select (select count(*) from analytics.customer_tier where as_of_date = %s), count(*),
               count(*) filter (where phone_masked ~ '^1[0-9]{2}[*]{4}[0-9]{4}$'), count(*) filter (where has_phone),
               count(*) filter (where email_masked ~ '^.[*]{3}@[^@]+$'), count(*) filter (where has_email),
               count(*) filter (where birthday_md ~ '^[0-9]{2}-[0-9]{2}$')
        from analytics.dim_customer""", DAY2)
    assert dims == customers > 0
    assert masked_phones == phones > 0 and masked_emails == emails > 0 and birthdays > 0
    with login(url, USERS["bi"]) as conn:
        assert conn.execute("select count(customer_name), count(tier), count(lifecycle_stage) "
                            "from analytics.dim_customer").fetchone() == (0, 0, 0)  # unmapped: no rows
    # the unmasked values exist only in the PII schema, and never beside a published customer id
    [(contacts, unmasked)] = owner_rows(url, "select count(*), count(phone_e164) from analytics_pii.customer_contact")
    assert contacts == customers and unmasked == phones
    columns = {r[0] for r in owner_rows(url, "select column_name from information_schema.columns "
                                              "where table_schema = 'analytics'")}
    assert not columns & {"phone", "phone_e164", "email", "birth_date"}
    leaked = owner_rows(url, """
        select d.customer_id from analytics.dim_customer d join analytics_pii.customer_contact c using (customer_id)
        where d.phone_masked = c.phone_e164 or d.email_masked = c.email""")
    assert leaked == []


def test_customer_actions_no_longer_publish_the_birthday(published):
    columns = {r[0] for r in owner_rows(published["url"], "select column_name from information_schema.columns "
                                                          "where table_schema = 'analytics' and table_name = 'customer_actions'")}
    assert columns and "birthday_md" not in columns
    details = owner_rows(published["url"], "select detail from analytics.customer_actions where action_type = 'birthday'")
    assert not any(re.search(r"[0-9]{2}-[0-9]{2}", d) for (d,) in details)


def test_the_pii_reader_reads_the_unmasked_contact_data_bi_is_refused(published):
    url = published["url"]
    with login(url, USERS["pii"]) as conn:
        seen = conn.execute("select count(*), count(distinct branch_code), min(branch_code) "
                            "from analytics_pii.customer_contact").fetchone()
    [(expected,)] = owner_rows(url, "select count(*) from analytics_pii.customer_contact where branch_code = %s",
                               published["branch"])
    assert seen == (expected, 1, published["branch"]) and expected > 0
    for user in ("bi", "branch", "manager", "crm"):
        assert refused(url, USERS[user], "select count(*) from analytics_pii.customer_contact"), user


# -- row-level security (item 3) ---------------------------------------------------------------------


def _visible(url: str, user: str, table: str) -> int:
    with login(url, user) as conn:
        return conn.execute(sql.SQL("select count(*) from {}.{}").format(
            sql.Identifier(published_schema(table, "analytics")), sql.Identifier(table))).fetchone()[0]


def _expected(url: str, table: str, column: str, value: str) -> int:
    """What a user mapped to ``column = value`` should see of ``table``, counted as the owner."""
    spec = ROW_FILTERS[table]
    relation = sql.Identifier(published_schema(table, "analytics"), table)
    if spec == CUSTOMER:
        query = sql.SQL("select count(*) from {} where customer_id in "
                        "(select customer_id from analytics.dim_customer where {} = %s)").format(
            relation, sql.Identifier(column))
    else:
        query = sql.SQL("select count(*) from {} where {} = %s").format(
            relation, sql.Identifier(spec[0] if column == "branch_code" else spec[1]))
    return owner_rows(url, query.as_string(None), value)[0][0]


def test_every_published_table_has_a_row_filter_and_customer_tables_are_filtered():
    assert set(ROW_FILTERS) == set(PUBLISHED_TABLES) | {"customer_contact"}
    assert {t for t, spec in ROW_FILTERS.items() if spec is None} == {"clv_model_fit", "tier_migration_matrix", "kpi_daily"}


@pytest.mark.parametrize("user, column, key", [("branch", "branch_code", "branch"),
                                               ("manager", "account_manager_id", "manager")])
def test_a_mapped_user_sees_only_its_customers_in_every_customer_level_table(published, user, column, key):
    url, value = published["url"], published[key]
    tables = [t for t, spec in ROW_FILTERS.items() if spec is not None and t != "customer_contact"]
    seen = {t: _visible(url, USERS[user], t) for t in tables}
    expected = {t: _expected(url, t, column, value) for t in tables}
    assert seen == expected
    totals = {t: owner_rows(url, f"select count(*) from analytics.{t}")[0][0] for t in ("dim_customer", "customer_tier")}
    assert 0 < seen["dim_customer"] < totals["dim_customer"] and 0 < seen["customer_tier"] < totals["customer_tier"]
    with login(url, USERS[user]) as conn:  # through the _latest views too (security_invoker)
        latest = conn.execute("select count(*) from analytics.customer_tier_latest").fetchone()[0]
    assert latest == _expected(url, "dim_customer", column, value)


def test_an_unmapped_user_sees_no_customer_rows_but_every_aggregate(published):
    url = published["url"]
    for table, spec in ROW_FILTERS.items():
        if table == "customer_contact":
            continue
        owner_count = owner_rows(url, f"select count(*) from analytics.{table}")[0][0]
        assert _visible(url, USERS["nobody"], table) == (owner_count if spec is None else 0), table
    assert _visible(url, USERS["nobody"], "kpi_daily") > 0


def test_the_crm_sync_role_reads_every_customer_it_syncs_and_writes_only_its_state(published):
    url = published["url"]
    with login(url, USERS["crm"]) as conn:
        state.ensure(conn, "zoho")  # no DDL for a role that may not create: the pipeline's tables
        seen = conn.execute("select count(*) from analytics.customer_tier").fetchone()[0]
        conn.execute("insert into crm_sync.sync_watermarks (module, crm_time, fields_hash) values ('Accounts', now(), 'x')")
        conn.execute("delete from crm_sync.sync_watermarks")
    assert seen == owner_rows(url, "select count(*) from analytics.customer_tier")[0][0]
    for statement in ("select customer_name from analytics.dim_customer", "select * from analytics.dim_customer",
                      "select count(*) from analytics.customer_actions",
                      "create table crm_sync.mine (i int)", "update analytics.customer_tier set tier = 'vip'"):
        assert refused(url, USERS["crm"], statement), statement


def test_grants_and_policies_survive_a_re_publish_and_cover_a_new_table(published):
    """Day 2's publish restored what the fixture broke after day 1 (a revoked grant, RLS turned
    off, a view running as its owner); a table the pipeline's role creates later is readable."""
    url = published["url"]
    assert _visible(url, USERS["bi"], "kpi_daily") > 0
    assert _visible(url, USERS["nobody"], "customer_tier") == 0
    with login(url, USERS["nobody"]) as conn:
        assert conn.execute("select count(*) from analytics.customer_tier_latest").fetchone()[0] == 0
    with warehouse.connect(url, autocommit=True) as conn:
        conn.execute("create table analytics.next_release_mart as select 1 as i")
    try:
        with login(url, USERS["bi"]) as conn:
            assert conn.execute("select i from analytics.next_release_mart").fetchone() == (1,)
    finally:
        with warehouse.connect(url, autocommit=True) as conn:
            conn.execute("drop table analytics.next_release_mart")


def test_preflight_names_missing_reader_roles_and_login_users(warehouse_url, tmp_path, monkeypatch):
    """A pipeline role that may not create the reader roles, or a configured login user that does
    not exist, is reported before a run starts, not at its publish."""
    role, ghost = f"tl_etl_{uuid.uuid4().hex[:6]}", f"tl_ghost_{uuid.uuid4().hex[:6]}"
    target = tmp_path / "config"
    shutil.copytree(settings.PROJECT_ROOT / "config", target)
    _configure(target, {"roles": {"bi": f"{role}_bi"}, "members": {"bi": [ghost]}})
    monkeypatch.setenv("TIERLINE_CONFIG", str(target / "tierline.yml"))
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(role)))
    parts = urlsplit(warehouse_url)
    monkeypatch.setenv(warehouse.ENV_URL, urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[-1]}")))
    try:
        (failed,) = [c for c in preflight.check(None, None) if not c.ok]
        assert f"CREATEROLE (to create the reader roles {role}_bi; or the DBA creates them)" in failed.line
        assert f"the login users {ghost} of access.members, which do not exist" in failed.line
    finally:
        with warehouse.connect(warehouse_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
