"""Who may read what in the warehouse: roles, grants and row-level security, applied by every publish.

The pipeline's own role (the warehouse URL's user) owns every schema and table it creates and is
the only one that writes them. Readers get three ``NOLOGIN`` group roles, named in
``access.roles``, that real users and BI service accounts are granted (``access.members``):

- ``bi``: ``USAGE`` on the published schema and ``SELECT`` on everything in it (tables, the
  ``_latest`` views); nothing in ``raw``, the build schemas, ``tierline``, ``crm_sync``;
- ``pii_reader``: a member of ``bi``, and ``SELECT`` on the unmasked contact schema;
- ``crm_sync``: what the reverse ETL reads (``customer_tier``, ``customer_lifecycle``,
  ``customer_value``, the publication log) and its own state schema ``crm_sync``.

``apply`` runs on every publish (before the data transaction), so a table a new release publishes
is covered the first time it is published; default privileges cover what the pipeline role creates
in between. Roles are cluster-wide while everything else is per database: two databases (or two
runs) may create the same role at the same moment, so each role statement runs in its own
transaction and a concurrent creator's ``duplicate_object``/``unique_violation`` means "done".
Memberships configured once are not revoked when they leave the configuration (another database
on the same server may still configure them): revoke them by hand (README).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tierline.errors import TierlineError

ident = sql.Identifier
# the published tables the reverse ETL reads (tierline.crm.sync._source_query)
CRM_SYNC_READS = ("customer_tier", "customer_lifecycle", "customer_value", "publication_log")
CRM_SYNC_SCHEMA = "crm_sync"


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


def pii_schema(schema: str) -> str:
    """The schema of the unmasked contact data, beside the published one: only ``pii_reader`` reads it."""
    return f"{schema}_pii"


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
    for table in CRM_SYNC_READS:
        if table in published:
            statements.append(sql.SQL("grant select on {}.{} to {}").format(ident(schema), ident(table), crm))
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


def apply(conn, access, schema: str) -> None:
    """Everything above, for the published schema ``schema`` (called by publish, every run)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    ensure_roles(conn, access)
    grant(conn, access, schema)
