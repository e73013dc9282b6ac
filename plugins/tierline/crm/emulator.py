"""A local stand-in for Zoho CRM v8 that speaks real HTTP, for tests, benchmarks and local runs.

It serves, on one loopback port:

- ``{accounts_base}/oauth/v2/token`` (``accounts_base`` is ``{api_base}/accounts``, so a client that
  sends token requests to the API host gets a 404 here as it would from Zoho);
- ``GET {api_base}/crm/v8/{module}`` with ``fields``, ``page``, ``per_page``, ``page_token``,
  ``sort_by``/``sort_order`` and ``If-Modified-Since``; ``GET .../{module}/{id}``;
  ``GET .../{module}/search?criteria=...``; ``POST .../{module}/upsert``;
  ``GET .../users?type=CurrentUser``;
- a control API under ``/__emulator/`` mirroring the Python methods below, for fault injection,
  "a person edits a record", the clock, counters and reset.

Where Zoho documents a behaviour the emulator follows it: ``Zoho-oauthtoken`` auth, 401
``INVALID_TOKEN``, per-record upsert results (200 all written, 207 some, 400 none), whole-request
400s, 204 for an empty list, 304 when nothing changed since ``If-Modified-Since``, the 2000-record
limit of ``page`` (``page_token`` beyond), 429 ``TOO_MANY_REQUESTS`` and ``X-API-CREDITS-REMAINING``
once half the credit allowance is spent. Deliberate choices where it does not:

- ``If-Modified-Since`` returns records modified strictly after the given second, and timestamps
  have one-second resolution in the org's UTC offset (+05:30 by default, so string comparison of
  timestamps is wrong).
- Every accepted update bumps ``Modified_Time`` and sets ``Modified_By`` to the integration user,
  even when no value changed.
- Unknown field names in an upsert are dropped silently, as Zoho does; read back to catch typos.
- A delayed response (``delay_next``) is delayed *after* the request was processed, so a client
  that times out and retries an upsert has already written once.

Run it standalone with ``PYTHONPATH=plugins python -m tierline.crm.emulator --port 8710``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

API_PREFIX = "/crm/v8"
ACCOUNTS_PREFIX = "/accounts"
CONTROL_PREFIX = "/__emulator"
MAX_UPSERT_BATCH = 100
MAX_PER_PAGE = 200
MAX_FIELDS = 50
DISCRETE_PAGE_LIMIT = 2000
PAGE_TOKEN_TTL = 24 * 3600
MAX_SEARCH_CRITERIA = 10
SYSTEM_FIELDS = ("id", "Owner", "Created_Time", "Created_By", "Modified_Time", "Modified_By")

INTEGRATION_USER = {
    "name": "Tierline Integration",
    "id": "5725767000000411001",
    "email": "tierline-integration@example.com",
}
DEFAULT_PERSON = {
    "name": "Patricia Boyle",
    "id": "5725767000000411005",
    "email": "patricia.boyle@example.com",
}
DEFAULT_CLIENT_ID = "1000.TIERLINEEMULATOR"
DEFAULT_CLIENT_SECRET = "emulator-client-secret"
DEFAULT_REFRESH_TOKEN = "1000.emulator.refresh-token"

# The English labels of config/tier_spec.yml's ladder and dbt's lifecycle_stages seed, as the CRM
# admins would set up the picklists; redefine the module if theirs differ.
TIERS = ("Strategic", "VIP", "Key", "Regular", "Potential")
LIFECYCLE_STAGES = ("Prospect", "New", "Growth", "Mature", "Declining", "Dormant", "Churned", "Reactivated")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class FieldSpec:
    """One CRM field: ``type`` is text, email, picklist, integer, double, boolean, date or datetime.

    ``unique`` is Zoho's "do not allow duplicate values": enforced, and usable in duplicate_check_fields.
    """

    type: str = "text"
    max_length: int = 255
    values: tuple[str, ...] = ()
    unique: bool = False
    mandatory: bool = False


@dataclass(frozen=True)
class ModuleSpec:
    fields: Mapping[str, FieldSpec]
    # Zoho's system-defined duplicate check fields (Email for Contacts, Account_Name for Accounts):
    # used to match upserts, but not enforced as unique.
    system_duplicate_check: tuple[str, ...] = ()

    @property
    def unique_fields(self) -> tuple[str, ...]:
        return tuple(name for name, spec in self.fields.items() if spec.unique)


def _tierline_fields() -> dict[str, FieldSpec]:
    return {
        "Tierline_Customer_Id": FieldSpec(max_length=64, unique=True),
        "Tierline_Tier": FieldSpec("picklist", values=TIERS),
        "Tierline_Lifecycle_Stage": FieldSpec("picklist", values=LIFECYCLE_STAGES),
        "Tierline_Customer_Value": FieldSpec("double"),
        "Tierline_Tier_Updated_At": FieldSpec("datetime"),
        "Tierline_Spec_Version": FieldSpec(max_length=32),
    }


DEFAULT_MODULES: dict[str, ModuleSpec] = {
    "Contacts": ModuleSpec(
        {
            "Last_Name": FieldSpec(max_length=80, mandatory=True),
            "First_Name": FieldSpec(max_length=40),
            "Email": FieldSpec("email", max_length=100),
            "Phone": FieldSpec(max_length=30),
            **_tierline_fields(),
        },
        system_duplicate_check=("Email",),
    ),
    "Accounts": ModuleSpec(
        {
            "Account_Name": FieldSpec(max_length=200, mandatory=True),
            "Phone": FieldSpec(max_length=30),
            **_tierline_fields(),
        },
        system_duplicate_check=("Account_Name",),
    ),
}


class _Reply:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class _Abort(Exception):
    """Stops request handling with a Zoho-shaped error reply."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.reply = _Reply(status, _error(code, message, details), headers)


def _error(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "details": dict(details or {}), "message": message, "status": "error"}


@dataclass
class _Fault:
    status: int
    remaining: int
    match: str | None
    retry_after: int | None = None


@dataclass
class _Delay:
    seconds: float
    remaining: int
    match: str | None


@dataclass
class _Rejection:
    code: str
    field: str | None
    message: str


@dataclass
class _Counters:
    calls: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    write_calls: int = 0
    records_written: int = 0
    token_requests: int = 0


class _Store:
    """Records in SQLite (in memory by default); callers hold the emulator's lock."""

    def __init__(self, path: str):
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS records (
                module TEXT NOT NULL, id TEXT NOT NULL, created INTEGER NOT NULL,
                modified INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (module, id));
            CREATE INDEX IF NOT EXISTS records_by_modified ON records (module, modified, id);
            CREATE TABLE IF NOT EXISTS unique_values (
                module TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL,
                PRIMARY KEY (module, field, value));
            CREATE INDEX IF NOT EXISTS unique_values_by_record ON unique_values (module, id);
            """
        )
        last = self._db.execute("SELECT max(id) FROM records").fetchone()[0]
        start = int(last) - 5725767000000000000 + 1 if last else 3000001
        self._ids = itertools.count(start)

    def transaction(self):
        return _Transaction(self._db)

    def new_id(self) -> str:
        # 19 digits like Zoho's; fixed width, so string order is numeric order.
        return f"5725767{next(self._ids):012d}"

    def find(self, module: str, field_name: str, value: Any, *, indexed: bool) -> str | None:
        if indexed:
            row = self._db.execute(
                "SELECT id FROM unique_values WHERE module = ? AND field = ? AND value = ?",
                (module, field_name, str(value)),
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT id FROM records WHERE module = ? AND json_extract(data, ?) = ? ORDER BY id LIMIT 1",
                (module, f'$."{field_name}"', value),
            ).fetchone()
        return row[0] if row else None

    def get(self, module: str, record_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM records WHERE module = ? AND id = ?", (module, record_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(
        self, module: str, record: dict[str, Any], created: int, modified: int, unique: Iterable[str]
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO records (module, id, created, modified, data) VALUES (?, ?, ?, ?, ?)",
            (module, record["id"], created, modified, json.dumps(record, separators=(",", ":"))),
        )
        self._db.execute("DELETE FROM unique_values WHERE module = ? AND id = ?", (module, record["id"]))
        self._db.executemany(
            "INSERT INTO unique_values (module, field, value, id) VALUES (?, ?, ?, ?)",
            [(module, f, str(record[f]), record["id"]) for f in unique if record.get(f) is not None],
        )

    def created_of(self, module: str, record_id: str) -> int:
        return self._db.execute(
            "SELECT created FROM records WHERE module = ? AND id = ?", (module, record_id)
        ).fetchone()[0]

    def page(
        self, module: str, since: float | None, sort_column: str, descending: bool, offset: int, limit: int
    ) -> list[dict[str, Any]]:
        direction = "DESC" if descending else "ASC"
        where, args = "module = ?", [module]
        if since is not None:
            where += " AND modified > ?"
            args.append(since)
        rows = self._db.execute(
            f"SELECT data FROM records WHERE {where} ORDER BY {sort_column} {direction}, id {direction} "
            "LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def all(self, module: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT data FROM records WHERE module = ? ORDER BY id", (module,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def clear(self) -> None:
        self._db.execute("DELETE FROM records")
        self._db.execute("DELETE FROM unique_values")


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN")

    def __exit__(self, exc_type, *_):
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


class CrmEmulator:
    """The emulator: ``start()``/``stop()`` or ``with CrmEmulator() as crm:``; then ``crm.api_base``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        db_path: str = ":memory:",
        modules: Mapping[str, ModuleSpec] | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        refresh_token: str = DEFAULT_REFRESH_TOKEN,
        token_ttl: int = 3600,
        org_utc_offset: timedelta = timedelta(hours=5, minutes=30),
        integration_user: Mapping[str, str] = INTEGRATION_USER,
    ):
        self._host = host
        self._port = port
        self._modules: dict[str, ModuleSpec] = dict(DEFAULT_MODULES if modules is None else modules)
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self._token_ttl = token_ttl
        self._tz = timezone(org_utc_offset)
        self._integration_user = dict(integration_user)
        self._store = _Store(db_path)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._clock_offset = 0.0
        self._tokens: dict[str, float] = {}
        self._page_tokens: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._rejected_records: dict[str, _Rejection] = {}
        self._poison_ids: set[str] = set()
        self._reject_batches_remaining = 0
        self._rate_limit: tuple[int, float, bool] | None = None
        self._window: deque[float] = deque()
        self._credit_limit: int | None = None
        self._credits_used = 0
        self._counters = _Counters()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> CrmEmulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = ThreadingHTTPServer((self._host, self._port), _Handler)
        self._server.emulator = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="crm-emulator",
            daemon=True,
        )
        self._thread.start()
        log.info("CRM emulator listening on %s", self.api_base)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        # Wake handlers sleeping on an injected delay so shutdown does not wait for them.
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> CrmEmulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def accounts_base(self) -> str:
        return f"{self.api_base}{ACCOUNTS_PREFIX}"

    def connector_kwargs(self) -> dict[str, str]:
        """The positional settings of ``ZohoCrmConnector`` for this emulator."""
        return {
            "api_base": self.api_base,
            "accounts_base": self.accounts_base,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }

    # -- control API (also reachable over HTTP under /__emulator/) --------------------------------

    def define_module(self, name: str, spec: ModuleSpec) -> None:
        with self._lock:
            self._modules[name] = spec

    def fail_next(
        self, count: int = 1, status: int = 500, *, retry_after: int | None = None, match: str | None = None
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (500, 502, 503, 504 or 429).

        ``match`` is a substring of ``"METHOD /path"``; by default every CRM API request matches
        (token requests only when ``match`` says so).
        """
        with self._lock:
            self._faults.append(_Fault(status, count, match, retry_after))

    def rate_limit_next(
        self, count: int = 1, *, retry_after: int | None = None, match: str | None = None
    ) -> None:
        self.fail_next(count, 429, retry_after=retry_after, match=match)

    def delay_next(self, seconds: float, count: int = 1, *, match: str | None = None) -> None:
        """Hold the response of the next ``count`` matching requests for ``seconds`` after processing them."""
        with self._lock:
            self._delays.append(_Delay(seconds, count, match))

    def reject_records(
        self,
        external_ids: Iterable[str],
        *,
        code: str = "INVALID_DATA",
        field: str | None = None,
        message: str = "invalid data",
    ) -> None:
        """Fail these records (matched on any duplicate-check field value) in every upsert until reset."""
        with self._lock:
            for external_id in external_ids:
                self._rejected_records[str(external_id)] = _Rejection(code, field, message)

    def reject_batches(self, *, containing: Iterable[str] = (), count: int = 0) -> None:
        """Refuse whole upsert requests with a 400: those containing one of ``containing`` (until reset),
        and the next ``count`` ones whatever they hold."""
        with self._lock:
            self._poison_ids.update(str(v) for v in containing)
            self._reject_batches_remaining += count

    def set_rate_limit(
        self, requests: int | None, window_seconds: float = 60.0, *, retry_after: bool = True
    ) -> None:
        """Allow ``requests`` CRM API requests per sliding ``window_seconds``; 429 beyond. ``None`` lifts it.

        Zoho itself sends no ``Retry-After``; ``retry_after=False`` reproduces that.
        """
        with self._lock:
            self._rate_limit = None if requests is None else (requests, window_seconds, retry_after)
            self._window.clear()

    def set_credit_limit(self, credits: int | None) -> None:
        """The 24-hour API credit allowance (one credit per request); 429 once spent. ``None`` lifts it."""
        with self._lock:
            self._credit_limit = credits
            self._credits_used = 0

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far, as if they had all lapsed."""
        with self._lock:
            self._tokens.clear()

    def advance_clock(self, seconds: float) -> None:
        """Move the CRM's clock forward: timestamps of later writes, and token expiry, follow it."""
        with self._lock:
            self._clock_offset += seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(int(self._now()), self._tz)

    def person_edits(
        self,
        module: str,
        external_id: str,
        changes: Mapping[str, Any],
        *,
        user: Mapping[str, str] | None = None,
        id_field: str = "Tierline_Customer_Id",
    ) -> dict[str, Any]:
        """A person changes a record in the CRM UI: new values, a new ``Modified_Time``, their ``Modified_By``."""
        with self._lock:
            spec = self._module_spec(module)
            record_id = self._store.find(module, id_field, external_id, indexed=spec.fields[id_field].unique)
            if record_id is None:
                raise KeyError(f"no {module} record with {id_field}={external_id!r}")
            unknown = sorted(set(changes) - set(spec.fields))
            if unknown:
                raise ValueError(f"{module} has no fields {unknown}")
            clean, problem = _validate(spec, changes, 0)
            if problem is not None:
                raise ValueError(f"invalid edit: {problem}")
            with self._store.transaction():
                record = self._store.get(module, record_id)
                record.update(clean)
                now = int(self._now())
                record["Modified_Time"] = self._format_time(now)
                record["Modified_By"] = dict(user or DEFAULT_PERSON)
                self._store.put(
                    module, record, self._store.created_of(module, record_id), now, spec.unique_fields
                )
            return record

    def records(self, module: str) -> list[dict[str, Any]]:
        """Every stored record of ``module`` with all its fields, oldest id first."""
        with self._lock:
            return self._store.all(module)

    def record(
        self, module: str, external_id: str, *, id_field: str = "Tierline_Customer_Id"
    ) -> dict[str, Any] | None:
        with self._lock:
            spec = self._module_spec(module)
            record_id = self._store.find(module, id_field, external_id, indexed=spec.fields[id_field].unique)
            return None if record_id is None else self._store.get(module, record_id)

    def counters(self) -> dict[str, Any]:
        """Requests by ``"METHOD /path"``, response statuses, upsert requests and records written."""
        with self._lock:
            c = self._counters
            return {
                "calls": dict(c.calls),
                "statuses": {str(k): v for k, v in c.statuses.items()},
                "write_calls": c.write_calls,
                "records_written": c.records_written,
                "token_requests": c.token_requests,
                "credits_used": self._credits_used,
            }

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = _Counters()

    def reset(self) -> None:
        """Back to an empty CRM: records, tokens, faults, limits, clock and counters."""
        with self._lock:
            self._store.clear()
            self._reset_state()

    # -- request handling -----------------------------------------------------------------------

    def _handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[_Reply, float]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith(CONTROL_PREFIX):
            try:
                return self._control(method, path[len(CONTROL_PREFIX) :], _json_or_none(body) or {}), 0.0
            except (KeyError, ValueError, TypeError) as exc:
                return _Reply(400, {"error": str(exc)}), 0.0
        label = f"{method} {_path_label(path)}"
        with self._lock:
            self._counters.calls[label] += 1
            if method == "POST" and path.endswith("/upsert"):
                self._counters.write_calls += 1
            delay = self._take_delay(label, path)
            try:
                reply = self._route(method, path, query, headers, body, label)
            except _Abort as abort:
                reply = abort.reply
            self._counters.statuses[reply.status] += 1
            if self._credit_limit is not None and path.startswith(API_PREFIX):
                used_share = self._credits_used / self._credit_limit if self._credit_limit else 1.0
                if used_share >= 0.5:
                    reply.headers["X-API-CREDITS-REMAINING"] = str(
                        max(0, self._credit_limit - self._credits_used)
                    )
        return reply, delay

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
        label: str,
    ) -> _Reply:
        fault = self._take_fault(label, path)
        if fault is not None:
            return fault
        if path == f"{ACCOUNTS_PREFIX}/oauth/v2/token":
            if method != "POST":
                raise _Abort(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")
            return self._token_endpoint(query, body)
        if not path.startswith(API_PREFIX + "/"):
            raise _Abort(
                404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one"
            )
        self._authenticate(headers)
        self._admit()
        segments = path[len(API_PREFIX) + 1 :].split("/")
        if segments == ["users"] and method == "GET":
            return self._current_user(query)
        module = segments[0]
        if len(segments) == 1 and method == "GET":
            return self._list(module, query, headers)
        if len(segments) == 2 and segments[1] == "upsert" and method == "POST":
            return self._upsert(module, body)
        if len(segments) == 2 and segments[1] == "search" and method == "GET":
            return self._search(module, query)
        if len(segments) == 2 and segments[1].isdigit() and method == "GET":
            return self._get_one(module, segments[1])
        if len(segments) <= 2:
            raise _Abort(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")
        raise _Abort(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    def _take_fault(self, label: str, path: str) -> _Reply | None:
        for fault in self._faults:
            if fault.remaining > 0 and _matches(fault.match, label, path):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                if fault.status == 429:
                    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                    return _Reply(429, _error("TOO_MANY_REQUESTS", "too many requests continuously"), headers)
                return _Reply(fault.status, _error("INTERNAL_ERROR", "Internal Server Error"))
        return None

    def _take_delay(self, label: str, path: str) -> float:
        for delay in self._delays:
            if delay.remaining > 0 and _matches(delay.match, label, path):
                delay.remaining -= 1
                self._delays = [d for d in self._delays if d.remaining > 0]
                return delay.seconds
        return 0.0

    def _token_endpoint(self, query: dict[str, str], body: bytes) -> _Reply:
        self._counters.token_requests += 1
        params = dict(query)
        params.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()})
        # Zoho's accounts server answers a bad grant with HTTP 200 and an "error" key.
        if params.get("grant_type") != "refresh_token":
            return _Reply(200, {"error": "unsupported_grant_type"})
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return _Reply(200, {"error": "invalid_client"})
        if params.get("refresh_token") != self.refresh_token:
            return _Reply(200, {"error": "invalid_code"})
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self._tokens[token] = self._now() + self._token_ttl
        return _Reply(
            200,
            {
                "access_token": token,
                "scope": "ZohoCRM.modules.ALL ZohoCRM.users.READ",
                "api_domain": self.api_base,
                "token_type": "Bearer",
                "expires_in": self._token_ttl,
            },
        )

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme != "Zoho-oauthtoken" or not token:
            raise _Abort(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        expires_at = self._tokens.get(token.strip())
        if expires_at is None or expires_at <= self._now():
            raise _Abort(401, "INVALID_TOKEN", "invalid oauth token")

    def _admit(self) -> None:
        if self._rate_limit is not None:
            limit, window, with_retry_after = self._rate_limit
            now = time.monotonic()
            while self._window and self._window[0] <= now - window:
                self._window.popleft()
            if len(self._window) >= limit:
                wait = self._window[0] + window - now
                headers = {"Retry-After": str(max(1, math.ceil(wait)))} if with_retry_after else {}
                raise _Abort(429, "TOO_MANY_REQUESTS", "too many requests continuously", headers=headers)
            self._window.append(now)
        if self._credit_limit is not None and self._credits_used >= self._credit_limit:
            raise _Abort(429, "TOO_MANY_REQUESTS", "API credits for the 24 hour period are exhausted")
        self._credits_used += 1

    def _current_user(self, query: dict[str, str]) -> _Reply:
        if query.get("type") != "CurrentUser":
            raise _Abort(400, "INVALID_DATA", "only type=CurrentUser is emulated", {"param": "type"})
        user = self._integration_user
        return _Reply(
            200,
            {
                "users": [
                    {"id": user["id"], "full_name": user["name"], "email": user["email"], "status": "active"}
                ],
                "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False},
            },
        )

    def _list(self, module: str, query: dict[str, str], headers: Mapping[str, str]) -> _Reply:
        spec = self._module_spec(module)
        if "page_token" in query:
            state = self._page_tokens.get(query["page_token"])
            if state is None or state["expires"] <= time.monotonic():
                raise _Abort(400, "INVALID_DATA", "invalid page token", {"param": "page_token"})
        else:
            fields = self._requested_fields(spec, query.get("fields"), required=True)
            per_page = _int_param(query, "per_page", 200, 1, MAX_PER_PAGE)
            page = _int_param(query, "page", 1, 1, None)
            if page * per_page > DISCRETE_PAGE_LIMIT:
                raise _Abort(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    f"cannot fetch more than {DISCRETE_PAGE_LIMIT} records using page; use page_token",
                    {"limit": DISCRETE_PAGE_LIMIT},
                )
            sort_by = query.get("sort_by", "id")
            columns = {"id": "id", "Created_Time": "created", "Modified_Time": "modified"}
            if sort_by not in columns:
                raise _Abort(
                    400, "INVALID_DATA", "invalid sort_by", {"param": "sort_by", "supported": list(columns)}
                )
            sort_order = query.get("sort_order", "desc")
            if sort_order not in ("asc", "desc"):
                raise _Abort(400, "INVALID_DATA", "invalid sort_order", {"param": "sort_order"})
            state = {
                "fields": fields,
                "per_page": per_page,
                "offset": (page - 1) * per_page,
                "since": _parse_since(headers.get("If-Modified-Since")),
                "sort_by": sort_by,
                "column": columns[sort_by],
                "sort_order": sort_order,
            }
        rows = self._store.page(
            module,
            state["since"],
            state["column"],
            state["sort_order"] == "desc",
            state["offset"],
            state["per_page"] + 1,
        )
        if not rows:
            return _Reply(304 if state["since"] is not None and state["offset"] == 0 else 204)
        more = len(rows) > state["per_page"]
        rows = rows[: state["per_page"]]
        next_token = None
        if more:
            next_token = secrets.token_hex(16)
            self._page_tokens[next_token] = {
                **state,
                "offset": state["offset"] + state["per_page"],
                "expires": time.monotonic() + PAGE_TOKEN_TTL,
            }
        return _Reply(
            200,
            {
                "data": [_project(r, state["fields"]) for r in rows],
                "info": {
                    "per_page": state["per_page"],
                    "next_page_token": next_token,
                    "count": len(rows),
                    "sort_by": state["sort_by"],
                    "page": state["offset"] // state["per_page"] + 1,
                    "previous_page_token": None,
                    "page_token_expiry": self._format_time(self._now() + PAGE_TOKEN_TTL)
                    if next_token
                    else None,
                    "sort_order": state["sort_order"],
                    "more_records": more,
                },
            },
        )

    def _get_one(self, module: str, record_id: str) -> _Reply:
        self._module_spec(module)
        record = self._store.get(module, record_id)
        return _Reply(204) if record is None else _Reply(200, {"data": [record]})

    def _search(self, module: str, query: dict[str, str]) -> _Reply:
        spec = self._module_spec(module)
        if not query.get("criteria"):
            raise _Abort(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param": "criteria"},
            )
        try:
            tree = _parse_criteria(query["criteria"])
        except ValueError as exc:
            raise _Abort(400, "INVALID_QUERY", str(exc), {"param": "criteria"}) from exc
        if _count_leaves(tree) > MAX_SEARCH_CRITERIA:
            raise _Abort(
                400,
                "LIMIT_EXCEEDED",
                "the criteria has more than 10 conditions",
                {"limit": MAX_SEARCH_CRITERIA},
            )
        for leaf in _leaves(tree):
            if leaf[1] not in spec.fields and leaf[1] not in SYSTEM_FIELDS:
                raise _Abort(400, "INVALID_QUERY", "invalid field in criteria", {"api_name": leaf[1]})
        fields = self._requested_fields(spec, query.get("fields"), required=False)
        per_page = _int_param(query, "per_page", 200, 1, MAX_PER_PAGE)
        page = _int_param(query, "page", 1, 1, None)
        matched = self._search_candidates(module, spec, tree)
        matched = [r for r in matched if _evaluate(tree, r)]
        start = (page - 1) * per_page
        chunk = matched[start : start + per_page]
        if not chunk:
            return _Reply(204)
        return _Reply(
            200,
            {
                "data": [_project(r, fields) if fields else r for r in chunk],
                "info": {
                    "per_page": per_page,
                    "count": len(chunk),
                    "page": page,
                    "more_records": start + per_page < len(matched),
                },
            },
        )

    def _search_candidates(self, module: str, spec: ModuleSpec, tree: tuple) -> list[dict[str, Any]]:
        leaves = list(_leaves(tree))
        indexed = all(
            op == "equals" and spec.fields.get(name, FieldSpec()).unique for _, name, op, _ in leaves
        )
        if not (indexed and _only_or(tree)):
            return self._store.all(module)
        ids = {self._store.find(module, name, value, indexed=True) for _, name, _, value in leaves}
        return [self._store.get(module, i) for i in sorted(i for i in ids if i)]

    def _upsert(self, module: str, body: bytes) -> _Reply:
        spec = self._module_spec(module)
        payload = _json_or_none(body)
        if not isinstance(payload, dict):
            raise _Abort(400, "INVALID_DATA", "body", {"expected_data_type": "jsonobject"})
        data = payload.get("data")
        if data is None:
            raise _Abort(
                400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "data"}
            )
        if not isinstance(data, list) or not data:
            raise _Abort(
                400,
                "INVALID_DATA",
                "invalid data",
                {"json_path": "$.data", "expected_data_type": "jsonarray"},
            )
        if len(data) > MAX_UPSERT_BATCH:
            raise _Abort(400, "LIMIT_EXCEEDED", "the limit has been exceeded", {"limit": MAX_UPSERT_BATCH})
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise _Abort(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    {"json_path": f"$.data[{index}]", "expected_data_type": "jsonobject"},
                )
        order = self._duplicate_check_order(spec, payload.get("duplicate_check_fields"))
        self._reject_whole_batch(data, order)
        results = []
        with self._store.transaction():
            for index, item in enumerate(data):
                results.append(self._upsert_one(module, spec, order, index, item))
        written = sum(1 for r in results if r["status"] == "success")
        self._counters.records_written += written
        status = 200 if written == len(results) else 207 if written else 400
        return _Reply(status, {"data": results})

    def _duplicate_check_order(self, spec: ModuleSpec, requested: Any) -> list[str]:
        allowed = set(spec.system_duplicate_check) | set(spec.unique_fields)
        if requested is None:
            return list(dict.fromkeys([*spec.system_duplicate_check, *spec.unique_fields]))
        if not isinstance(requested, list):
            raise _Abort(400, "INVALID_DATA", "invalid data", {"json_path": "$.duplicate_check_fields"})
        for index, name in enumerate(requested):
            if name not in allowed:
                raise _Abort(
                    400,
                    "INVALID_DATA",
                    "the field is not a unique or duplicate check field",
                    {"api_name": name, "json_path": f"$.duplicate_check_fields[{index}]"},
                )
        # Fields not named are ignored if system-defined, and checked after the named ones if unique.
        return list(dict.fromkeys([*requested, *spec.unique_fields]))

    def _reject_whole_batch(self, data: list[dict[str, Any]], order: list[str]) -> None:
        if self._reject_batches_remaining > 0:
            self._reject_batches_remaining -= 1
            raise _Abort(400, "INVALID_DATA", "invalid data")
        for index, item in enumerate(data):
            hit = next(
                (f for f in order if item.get(f) is not None and str(item[f]) in self._poison_ids), None
            )
            if hit is not None:
                raise _Abort(
                    400, "INVALID_DATA", "invalid data", {"api_name": hit, "json_path": f"$.data[{index}]"}
                )

    def _upsert_one(
        self, module: str, spec: ModuleSpec, order: list[str], index: int, item: dict[str, Any]
    ) -> dict[str, Any]:
        clean, problem = _validate(spec, item, index)
        if problem is None:
            rejection = next(
                (
                    self._rejected_records[str(item[f])]
                    for f in order
                    if str(item.get(f)) in self._rejected_records
                ),
                None,
            )
            if rejection is not None:
                details = {"json_path": f"$.data[{index}]"}
                if rejection.field:
                    details = {"api_name": rejection.field, "json_path": f"$.data[{index}].{rejection.field}"}
                problem = _error(rejection.code, rejection.message, details)
        if problem is not None:
            return problem

        existing_id, matched_on = None, None
        if item.get("id") and self._store.get(module, str(item["id"])) is not None:
            existing_id = str(item["id"])
        for name in order:
            if existing_id is None and clean.get(name) is not None:
                indexed = spec.fields.get(name, FieldSpec()).unique
                existing_id = self._store.find(module, name, clean[name], indexed=indexed)
                matched_on = name if existing_id else None

        record = self._store.get(module, existing_id) if existing_id else {}
        record.update(clean)
        for name, field_spec in spec.fields.items():
            if field_spec.mandatory and record.get(name) in (None, ""):
                return _error(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    {"api_name": name, "json_path": f"$.data[{index}].{name}"},
                )
        for name in spec.unique_fields:
            if clean.get(name) is None:
                continue
            holder = self._store.find(module, name, clean[name], indexed=True)
            if holder is not None and holder != existing_id:
                return _error(
                    "DUPLICATE_DATA",
                    "duplicate data",
                    {
                        "api_name": name,
                        "json_path": f"$.data[{index}].{name}",
                        "duplicate_record": {"id": holder},
                    },
                )

        now = int(self._now())
        stamp = self._format_time(now)
        if existing_id is None:
            record.update(
                id=self._store.new_id(),
                Owner=dict(self._integration_user),
                Created_Time=stamp,
                Created_By=dict(self._integration_user),
            )
            created = now
        else:
            created = self._store.created_of(module, existing_id)
        record["Modified_Time"] = stamp
        record["Modified_By"] = dict(self._integration_user)
        self._store.put(module, record, created, now, spec.unique_fields)
        return {
            "code": "SUCCESS",
            "duplicate_field": matched_on,
            "action": "update" if existing_id else "insert",
            "details": {
                "Modified_Time": stamp,
                "Modified_By": {k: record["Modified_By"][k] for k in ("name", "id")},
                "Created_Time": record["Created_Time"],
                "id": record["id"],
                "Created_By": {k: record["Created_By"][k] for k in ("name", "id")},
                "$approval_state": "approved",
            },
            "message": "record updated" if existing_id else "record added",
            "status": "success",
        }

    def _requested_fields(self, spec: ModuleSpec, raw: str | None, *, required: bool) -> list[str]:
        if not raw:
            if required:
                raise _Abort(
                    400,
                    "REQUIRED_PARAM_MISSING",
                    "One of the expected parameter is missing",
                    {"param": "fields"},
                )
            return []
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if len(names) > MAX_FIELDS:
            raise _Abort(
                400, "LIMIT_EXCEEDED", "the limit has been exceeded", {"param": "fields", "limit": MAX_FIELDS}
            )
        for name in names:
            if name not in spec.fields and name not in SYSTEM_FIELDS:
                raise _Abort(400, "INVALID_DATA", "invalid data", {"param": "fields", "api_name": name})
        return names

    def _module_spec(self, module: str) -> ModuleSpec:
        spec = self._modules.get(module)
        if spec is None:
            raise _Abort(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"module": module}
            )
        return spec

    def _now(self) -> float:
        return time.time() + self._clock_offset

    def _format_time(self, epoch: float) -> str:
        return datetime.fromtimestamp(int(epoch), self._tz).isoformat()

    def _control(self, method: str, path: str, body: dict[str, Any]) -> _Reply:
        if method == "GET" and path == "/counters":
            return _Reply(200, self.counters())
        if method == "GET" and path.startswith("/records/"):
            return _Reply(200, {"data": self.records(path[len("/records/") :])})
        if method == "PUT" and path.startswith("/modules/"):
            fields = {name: _field_spec(raw) for name, raw in body["fields"].items()}
            self.define_module(
                path[len("/modules/") :], ModuleSpec(fields, tuple(body.get("system_duplicate_check", ())))
            )
            return _Reply(200, {"ok": True})
        if method != "POST":
            return _Reply(404, {"error": f"no control endpoint {method} {path}"})
        actions = {
            "/reset": lambda: self.reset(),
            "/counters/reset": lambda: self.reset_counters(),
            "/faults/fail": lambda: self.fail_next(
                body.get("count", 1),
                body.get("status", 500),
                retry_after=body.get("retry_after"),
                match=body.get("match"),
            ),
            "/faults/delay": lambda: self.delay_next(
                body["seconds"], body.get("count", 1), match=body.get("match")
            ),
            "/faults/reject-records": lambda: self.reject_records(
                body["external_ids"],
                code=body.get("code", "INVALID_DATA"),
                field=body.get("field"),
                message=body.get("message", "invalid data"),
            ),
            "/faults/reject-batches": lambda: self.reject_batches(
                containing=body.get("containing", ()), count=body.get("count", 0)
            ),
            "/rate-limit": lambda: self.set_rate_limit(
                body.get("requests"),
                body.get("window_seconds", 60.0),
                retry_after=body.get("retry_after", True),
            ),
            "/credits": lambda: self.set_credit_limit(body.get("daily_limit")),
            "/tokens/expire": lambda: self.expire_tokens(),
            "/clock/advance": lambda: self.advance_clock(body["seconds"]),
            "/person-edit": lambda: self.person_edits(
                body["module"],
                body["external_id"],
                body["changes"],
                user=body.get("user"),
                id_field=body.get("id_field", "Tierline_Customer_Id"),
            ),
        }
        action = actions.get(path)
        if action is None:
            return _Reply(404, {"error": f"no control endpoint {method} {path}"})
        result = action()
        return _Reply(200, result if isinstance(result, dict) else {"ok": True})


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, so a client's session reuses its connection as it would against Zoho.
    protocol_version = "HTTP/1.1"
    server_version = "ZohoCRMEmulator/1.0"
    # Headers and body leave in one segment; otherwise Nagle plus delayed ACKs add ~40 ms per call.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        emulator: CrmEmulator = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply, delay = emulator._handle(method, self.path, self.headers, body)
        if delay and emulator._stopping.wait(delay):
            self.close_connection = True
            return
        payload = b"" if reply.body is None or reply.status in (204, 304) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            if payload:
                self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up waiting (an injected delay past its timeout).
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator %s %s", self.address_string(), format % args)


def _validate(
    spec: ModuleSpec, item: Mapping[str, Any], index: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The known, writable fields of ``item``, or the first problem as a Zoho per-record error."""
    clean: dict[str, Any] = {}
    for name, value in item.items():
        field_spec = spec.fields.get(name)
        if field_spec is None:
            continue
        if value is not None:
            problem = _type_problem(field_spec, value)
            if problem is not None:
                return {}, _error(
                    "INVALID_DATA",
                    "invalid data",
                    {"api_name": name, "json_path": f"$.data[{index}].{name}", **problem},
                )
        clean[name] = value
    return clean, None


def _type_problem(spec: FieldSpec, value: Any) -> dict[str, Any] | None:
    expected = {"expected_data_type": spec.type}
    if spec.type in ("text", "email", "picklist"):
        if not isinstance(value, str):
            return expected
        if len(value) > spec.max_length:
            return {**expected, "maximum_length": spec.max_length}
        if spec.type == "email" and not _EMAIL.match(value):
            return expected
        if spec.type == "picklist" and value not in spec.values:
            return expected
        return None
    if spec.type == "integer":
        return None if isinstance(value, int) and not isinstance(value, bool) else expected
    if spec.type == "double":
        return None if isinstance(value, int | float) and not isinstance(value, bool) else expected
    if spec.type == "boolean":
        return None if isinstance(value, bool) else expected
    if spec.type == "date":
        return None if isinstance(value, str) and _DATE.match(value) else expected
    if spec.type == "datetime":
        try:
            return None if datetime.fromisoformat(value).tzinfo is not None else expected
        except (TypeError, ValueError):
            return expected
    raise ValueError(f"unknown field type {spec.type!r}")


def _project(record: Mapping[str, Any], fields: list[str]) -> dict[str, Any]:
    return {"id": record["id"], **{name: record.get(name) for name in fields}}


def _parse_since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise _Abort(
                400, "INVALID_DATA", "invalid If-Modified-Since", {"header": "If-Modified-Since"}
            ) from None
    if moment.tzinfo is None:
        raise _Abort(
            400, "INVALID_DATA", "If-Modified-Since needs a UTC offset", {"header": "If-Modified-Since"}
        )
    return moment.timestamp()


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        details = {"param": name, "minimum": low} | ({"maximum": high} if high is not None else {})
        raise _Abort(400, "INVALID_DATA", "invalid data", details)
    return value


def _path_label(path: str) -> str:
    """The path with record ids replaced, so counters group calls by endpoint."""
    return re.sub(r"/\d{6,}(?=/|$)", "/{id}", path)


def _matches(pattern: str | None, label: str, path: str) -> bool:
    return path.startswith(API_PREFIX) if pattern is None else pattern in label


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _field_spec(raw: Mapping[str, Any]) -> FieldSpec:
    return FieldSpec(
        type=raw.get("type", "text"),
        max_length=raw.get("max_length", 255),
        values=tuple(raw.get("values", ())),
        unique=bool(raw.get("unique", False)),
        mandatory=bool(raw.get("mandatory", False)),
    )


def _parse_criteria(text: str) -> tuple:
    """Zoho search criteria, e.g. ``((A:equals:1)or(B:starts_with:x\\,y))``, as a tree."""
    pos = 0

    def expect(char: str) -> None:
        nonlocal pos
        if pos >= len(text) or text[pos] != char:
            raise ValueError(f"expected {char!r} at {pos} in criteria")
        pos += 1

    def read_until(stops: str) -> str:
        nonlocal pos
        out = []
        while pos < len(text) and text[pos] not in stops:
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            out.append(text[pos])
            pos += 1
        return "".join(out)

    def expression() -> tuple:
        nonlocal pos
        expect("(")
        if text.startswith("(", pos):
            node = expression()
            while text.startswith(("and", "or"), pos):
                joiner = "and" if text.startswith("and", pos) else "or"
                pos += len(joiner)
                node = (joiner, node, expression())
        else:
            name = read_until(":")
            expect(":")
            operator = read_until(":")
            expect(":")
            value = read_until(")")
            if operator not in ("equals", "not_equal", "starts_with", "in"):
                raise ValueError(f"unsupported operator {operator!r}")
            node = ("leaf", name, operator, value)
        expect(")")
        return node

    tree = expression()
    if pos != len(text):
        raise ValueError(f"unexpected text after position {pos} in criteria")
    return tree


def _leaves(tree: tuple):
    if tree[0] == "leaf":
        yield tree
    else:
        yield from _leaves(tree[1])
        yield from _leaves(tree[2])


def _count_leaves(tree: tuple) -> int:
    return sum(1 for _ in _leaves(tree))


def _only_or(tree: tuple) -> bool:
    return tree[0] == "leaf" or (tree[0] == "or" and _only_or(tree[1]) and _only_or(tree[2]))


def _evaluate(tree: tuple, record: Mapping[str, Any]) -> bool:
    kind = tree[0]
    if kind == "and":
        return _evaluate(tree[1], record) and _evaluate(tree[2], record)
    if kind == "or":
        return _evaluate(tree[1], record) or _evaluate(tree[2], record)
    _, name, operator, value = tree
    actual = record.get(name)
    text = "" if actual is None else str(actual)
    if operator == "equals":
        return text == value
    if operator == "not_equal":
        return text != value
    if operator == "starts_with":
        return text.startswith(value)
    return text in value.split(",")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tierline.crm.emulator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--db", default=":memory:", help="SQLite file to keep records across restarts")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--refresh-token", default=DEFAULT_REFRESH_TOKEN)
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds")
    parser.add_argument("--rate-limit", type=int, help="CRM API requests allowed per --rate-window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    parser.add_argument(
        "--no-retry-after", action="store_true", help="send 429s without Retry-After, like Zoho"
    )
    parser.add_argument("--credit-limit", type=int, help="API credits per 24 hours")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    emulator = CrmEmulator(
        args.host,
        args.port,
        db_path=args.db,
        client_id=args.client_id,
        client_secret=args.client_secret,
        refresh_token=args.refresh_token,
        token_ttl=args.token_ttl,
    )
    if args.rate_limit:
        emulator.set_rate_limit(args.rate_limit, args.rate_window, retry_after=not args.no_retry_after)
    if args.credit_limit:
        emulator.set_credit_limit(args.credit_limit)
    emulator.start()
    print(
        json.dumps({**emulator.connector_kwargs(), "started_at": datetime.now(UTC).isoformat()}, indent=2),
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
