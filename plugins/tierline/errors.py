"""Errors a user sees, and which of them a retry can cure (docs/decisions.md, "Retries").

Two families, decided here and nowhere else:

- **Permanent** — ``TierlineError`` and its subclasses: a bad extract, an invalid configuration,
  a failed quality gate or dbt test, a refused run lock. Retrying cannot help; the run fails at
  once with the message. Any other exception that is not recognised as transient (a bug) is
  treated as permanent too: retrying a ``KeyError`` only delays the report.
- **Transient** — the warehouse connection or server: connection refused or lost, the server
  shutting down or restarting (``57P01``..``57P03``), serialization failures and deadlocks
  (class ``40``), lock timeouts (``55P03``), out of resources (class ``53``). Wherever they
  happen — psycopg, SQLAlchemy under Great Expectations, or dbt (``TransientError``) — they are
  retried.
"""

from __future__ import annotations


class TierlineError(RuntimeError):
    """Base class of the permanent errors; the CLI prints these without a traceback."""


class ExtractError(TierlineError):
    """An extract file cannot be read at all (wrong delimiter, truncated, missing column...)."""


class ConfigError(TierlineError):
    """The business-rule configuration is invalid; the message names the key."""


class QualityGateFailed(TierlineError):
    """A blocking quality check failed; nothing of the run is published."""


class RunLockRefused(TierlineError):
    """Another run kept the warehouse longer than this run was configured to wait."""


class PublishRefused(TierlineError):
    """What publish would copy is not what the marts gate audited for this run and date."""


class TransientError(RuntimeError):
    """A failure of the warehouse connection or server that a retry can cure (e.g. a dbt build
    whose connection the server dropped); deliberately not a ``TierlineError``."""


# SQLSTATE classes and codes of failures that say nothing about the data or the rules.
_TRANSIENT_CLASSES = ("08", "40", "53")
_TRANSIENT_CODES = {"57P01", "57P02", "57P03", "57P04", "57P05", "55P03", "58030"}
# Exception types (by module and name, so that no driver has to be imported) that mean the
# connection itself failed, whatever their SQLSTATE (a refused connection has none).
_TRANSIENT_TYPES = {
    ("psycopg", "OperationalError"),
    ("psycopg", "InterfaceError"),
    ("psycopg2", "OperationalError"),
    ("psycopg2", "InterfaceError"),
    ("sqlalchemy.exc", "OperationalError"),
    ("sqlalchemy.exc", "DisconnectionError"),
    ("dbt.adapters.exceptions.connection", "FailedToConnectError"),
}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the first database error in the exception's chain, if any."""
    for link in _chain(exc):
        code = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def is_transient(exc: BaseException) -> bool:
    """True when a retry can cure the failure: see the module docstring."""
    for link in _chain(exc):
        if isinstance(link, TierlineError):
            return False
        if isinstance(link, (TransientError, ConnectionError)):
            return True
        code = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            # a database error with a code is classified by its code alone
            return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES
        for klass in type(link).__mro__:
            if any(klass.__module__.startswith(module) and klass.__name__ == name
                   for module, name in _TRANSIENT_TYPES):
                return True
    return False
