"""Who may read what in the warehouse: roles, grants and row-level security, applied by every publish.

The pipeline's own role (the warehouse URL's user) owns every schema and table it creates and is
the only one that writes them. Readers get three ``NOLOGIN`` group roles, named in
``access.roles``, that real users and BI service accounts are granted (``access.members``):

- ``bi``: ``USAGE`` on the published schema and ``SELECT`` on everything in it (tables, the
  ``_latest`` views); nothing in ``raw``, the build schemas, ``tierline``, ``crm_sync``;
- ``pii_reader``: a member of ``bi``, and ``SELECT`` on the unmasked contact schema;
- ``crm_sync``: what the reverse ETL reads (``customer_tier``, ``customer_lifecycle``,
  ``customer_value``, the publication log; the key, branch and manager columns of
  ``dim_customer`` that their row policies look up) and its own state schema ``crm_sync``.

``apply`` runs on every publish (before the data transaction), so a table a new release publishes
is covered the first time it is published; default privileges cover what the pipeline role creates
in between. Roles are cluster-wide while everything else is per database: two databases (or two
runs) may create the same role at the same moment, so each role statement runs in its own
transaction and a concurrent creator's ``duplicate_object``/``unique_violation`` means "done".
Memberships configured once are not revoked when they leave the configuration (another database
on the same server may still configure them): revoke them by hand (README).
"""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql

from tierline.assets import CUSTOMER, ROW_FILTERS, pii_schema, published_schema
from tierline.errors import TierlineError

ident = sql.Identifier
# the published tables the reverse ETL reads (tierline.crm.sync._source_query)
CRM_SYNC_READS = ("customer_tier", "customer_lifecycle", "customer_value", "publication_log")
CRM_SYNC_SCHEMA = "crm_sync"
ROW_POLICY_COLUMNS = ("customer_id", "branch_code", "account_manager_id")  # of dim_customer
MAPPING = "row_access"  # <schema>.row_access: who sees which branches and books, from access.rows
POLICY_PREFIX = "tierline_rows_"


class AccessError(TierlineError):
    """A configured login user does not exist, or the pipeline's role may not manage roles."""


def _cluster_wide(conn, statement: sql.Composable) -> None:
    """Run one role statement in a transaction of its own; a concurrent creator of the same role
    or membership (another database, another run) shows up as duplicate_object/unique_violation."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        pass


def _exists(conn, role: str) -> bool:
    return conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is not None


def _member(conn, role: str, member: str) -> bool:
    return conn.execute(
        "select 1 from pg_auth_members m join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member "
        "where r.rolname = %s and u.rolname = %s", (role, member)).fetchone() is not None


def ensure_roles(conn, access) -> None:
    """Create the three group roles (NOLOGIN) and grant them to the configured login users."""
    roles = access.roles
    for role in roles.values():
        if not _exists(conn, role):
            _cluster_wide(conn, sql.SQL("create role {} nologin").format(ident(role)))
    memberships = [(roles["bi"], roles["pii_reader"])]
    missing = []
    for kind, users in access.members.items():
        for user in users:
            if _exists(conn, user):
                memberships.append((roles[kind], user))
            else:
                missing.append(f"{user} (access.members.{kind})")
    if missing:
        raise AccessError(
            f"login user(s) {', '.join(missing)} do not exist on the warehouse server; create each with "
            "`create role <name> login password '...'` (the pipeline grants the groups, it creates no passwords)")
    for role, member in memberships:
        if not _member(conn, role, member):
            _cluster_wide(conn, sql.SQL("grant {} to {}").format(ident(role), ident(member)))


def grant(conn, access, schema: str) -> None:
    """Grant the published schema to the roles, in one transaction (idempotent: GRANT of a held
    privilege changes nothing). Nobody but the owner may create in or write to it."""
    bi, pii, crm = (ident(access.roles[k]) for k in ("bi", "pii_reader", "crm_sync"))
    private = pii_schema(schema)
    database, may_grant_connect = conn.execute(
        "select current_database(), has_database_privilege(current_database(), 'CONNECT WITH GRANT OPTION')").fetchone()
    statements = [sql.SQL("create schema if not exists {}").format(ident(private))]
    if may_grant_connect:  # PUBLIC has CONNECT unless the DBA hardened the database
        statements.append(sql.SQL("grant connect on database {} to {}, {}, {}").format(ident(database), bi, pii, crm))
    for target in (schema, private):
        statements.append(sql.SQL("revoke all on schema {} from public").format(ident(target)))
        statements.append(sql.SQL("revoke all on all tables in schema {} from public").format(ident(target)))
    statements += [
        sql.SQL("grant usage on schema {} to {}, {}").format(ident(schema), bi, crm),
        sql.SQL("grant select on all tables in schema {} to {}").format(ident(schema), bi),
        sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(ident(schema), bi),
        sql.SQL("grant usage on schema {} to {}").format(ident(private), pii),
        sql.SQL("grant select on all tables in schema {} to {}").format(ident(private), pii),
        sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(ident(private), pii),
    ]
    published = {r[0] for r in conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s",
        (schema,))}
    for table in (*CRM_SYNC_READS, MAPPING):
        if table in published:
            statements.append(sql.SQL("grant select on {}.{} to {}").format(ident(schema), ident(table), crm))
    if "dim_customer" in published:
        # what the row policies of the tables it reads look up (columns customer_tier has anyway);
        # not the customer's name or contact fields
        statements.append(sql.SQL("grant select ({}) on {}.dim_customer to {}").format(
            sql.SQL(", ").join(map(ident, ROW_POLICY_COLUMNS)), ident(schema), crm))
    if conn.execute("select 1 from pg_namespace where nspname = %s", (CRM_SYNC_SCHEMA,)).fetchone():
        # the sync's own state: it reads and writes its rows; the tables are the pipeline role's
        state = ident(CRM_SYNC_SCHEMA)
        statements += [
            sql.SQL("grant usage on schema {} to {}").format(state, crm),
            sql.SQL("grant select, insert, update, delete on all tables in schema {} to {}").format(state, crm),
            sql.SQL("grant usage, select on all sequences in schema {} to {}").format(state, crm),
            sql.SQL("alter default privileges in schema {} grant select, insert, update, delete on tables to {}")
            .format(state, crm),
            sql.SQL("alter default privileges in schema {} grant usage, select on sequences to {}").format(state, crm),
        ]
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)


# -- row-level security ------------------------------------------------------------------------------

def mapping_rows(access) -> list[tuple[str, str | None, str | None, bool]]:
    """(grantee, branch code, account manager id, sees every customer) from ``access.rows``; the
    CRM sync's group always sees every customer (it syncs them all)."""
    rows = [(grantee, branch, None, False) for grantee, branches in access.rows.branches.items() for branch in branches]
    rows += [(grantee, None, manager, False) for grantee, managers in access.rows.managers.items() for manager in managers]
    rows += [(grantee, None, None, True) for grantee in {*access.rows.everyone, access.roles["crm_sync"]}]
    return sorted(set(rows), key=lambda r: (r[0], r[1] or "", r[2] or "", r[3]))


def _mapping_ddl(schema: str) -> list[sql.Composable]:
    """The mapping table; a reader sees only the rows of the roles it is a member of (itself included)."""
    table = sql.SQL("{}.{}").format(ident(schema), ident(MAPPING))
    return [
        sql.SQL("create table {} (grantee text not null, branch_code text, account_manager_id text, "
                "all_rows boolean not null default false)").format(table),
        sql.SQL("comment on table {} is {}").format(table, sql.Literal(
            "Row-level security mapping from config access.rows (loaded by every publish): which branches "
            "and account managers' books a user or role sees. You see only your own entries.")),
        sql.SQL("alter table {} enable row level security").format(table),
        sql.SQL("create policy tierline_own_mapping on {} for select using "
                "(grantee in (select rolname::text from pg_roles where pg_has_role(current_user, oid, 'MEMBER')))")
        .format(table),
    ]


def _policy_expression(schema: str, table: str) -> sql.Composable | None:
    spec = ROW_FILTERS[table]
    if spec is None:
        return None
    if spec == CUSTOMER:
        # the customers the reader sees in dim_customer, whose own policy applies inside this one
        return sql.SQL("exists (select 1 from {}.dim_customer as visible where visible.customer_id = {}.customer_id)").format(
            ident(schema), ident(table))
    branch, manager = spec
    return sql.SQL(
        "exists (select 1 from {}.{} as mapped where mapped.all_rows or mapped.branch_code = {}.{} "
        "or mapped.account_manager_id = {}.{})").format(
        ident(schema), ident(MAPPING), ident(table), ident(branch), ident(table), ident(manager))


def policy_statements(conn, schema: str) -> list[list[sql.Composable]]:
    """What row-level security still needs, one transaction per table: the mapping table, then per
    published table RLS enabled and one policy named after its expression (a release that changes
    the expression replaces the policy). Empty when everything is in place, so a publish takes no
    lock for it (``ENABLE ROW LEVEL SECURITY`` and ``CREATE POLICY`` take ACCESS EXCLUSIVE)."""
    batches = []
    if not conn.execute("select to_regclass(%s)", (f'"{schema}"."{MAPPING}"',)).fetchone()[0]:
        batches.append(_mapping_ddl(schema))
    for table in ROW_FILTERS:
        target = published_schema(table, schema)
        found = conn.execute(
            "select c.relrowsecurity, coalesce(array_agg(p.polname::text) filter (where p.polname is not null), '{}') "
            "from pg_class c left join pg_policy p on p.polrelid = c.oid where c.oid = to_regclass(%s) "
            "group by c.relrowsecurity", (f'"{target}"."{table}"',)).fetchone()
        if found is None:
            continue  # not published yet: prepare creates it before the next apply
        enabled, policies = found
        expression = _policy_expression(schema, table)
        relation = sql.SQL("{}.{}").format(ident(target), ident(table))
        statements = []
        if expression is None:
            statements += [sql.SQL("drop policy {} on {}").format(ident(p), relation) for p in policies
                           if p.startswith(POLICY_PREFIX)]
        else:
            name = POLICY_PREFIX + hashlib.sha1(expression.as_string(conn).encode()).hexdigest()[:8]
            if not enabled:
                statements.append(sql.SQL("alter table {} enable row level security").format(relation))
            statements += [sql.SQL("drop policy {} on {}").format(ident(p), relation) for p in policies
                           if p.startswith(POLICY_PREFIX) and p != name]
            if name not in policies:
                statements.append(sql.SQL("create policy {} on {} for select using ({})").format(
                    ident(name), relation, expression))
        if statements:
            batches.append(statements)
    return batches


def load_mapping(conn, access, schema: str) -> None:
    """Replace the mapping with the configuration's (deletes and inserts: readers never wait)."""
    wanted = mapping_rows(access)
    table = sql.SQL("{}.{}").format(ident(schema), ident(MAPPING))
    with conn.transaction():
        current = conn.execute(sql.SQL("select grantee, branch_code, account_manager_id, all_rows from {} "
                                       "order by 1, 2 nulls first, 3 nulls first, 4").format(table)).fetchall()
        if sorted(current, key=lambda r: (r[0], r[1] or "", r[2] or "", r[3])) == wanted:
            return
        conn.execute(sql.SQL("delete from {}").format(table))
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("insert into {} (grantee, branch_code, account_manager_id, all_rows) "
                                    "values (%s, %s, %s, %s)").format(table), wanted)


def apply(conn, access, schema: str, ddl=None) -> None:
    """Everything above, for the published schema ``schema`` (called by publish, every run).
    ``ddl(statements)`` runs one transaction of schema changes (publish's, with its lock timeout)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    ensure_roles(conn, access)
    for statements in policy_statements(conn, schema):
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()
        if ddl is not None:
            ddl(statements)
        else:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
    load_mapping(conn, access, schema)
    grant(conn, access, schema)
