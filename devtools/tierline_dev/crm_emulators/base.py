"""What every CRM emulator shares: the HTTP server, the record store, faults, limits, the clock, counters.

A provider (``zoho``, ``fxiaoke``) subclasses ``CrmEmulatorBase`` with its routes, its error
shapes and its token flow; the control methods below (and their HTTP mirror under
``/__emulator/``) are the same for every provider, so one test suite drives them all:

- faults: ``fail_next`` (5xx, or the provider's rate-limit answer), ``delay_next`` (a response
  held after the request was processed, so a client that times out and retries has already
  written once), ``reject_records`` (a record refused with a field named), ``set_rate_limit``
  (a sliding window, over the whole API or per interface), ``set_daily_limit``,
  ``expire_tokens``;
- a person at work: ``edit_record`` (new values, a new modified time, their user), ``seed``
  (records that were in the CRM before tierline);
- ``advance_clock``, ``records``, ``record``, ``counters``, ``reset_counters``, ``reset``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/__emulator"


@dataclass(frozen=True)
class FieldSpec:
    """One CRM field: ``type`` is text, email, picklist, integer, double, boolean, date or datetime.

    ``unique``: the CRM refuses a second record with the same value (and Zoho can upsert on it).
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


def field_spec(raw: Mapping[str, Any]) -> FieldSpec:
    return FieldSpec(
        type=raw.get("type", "text"),
        max_length=raw.get("max_length", 255),
        values=tuple(raw.get("values", ())),
        unique=bool(raw.get("unique", False)),
        mandatory=bool(raw.get("mandatory", False)),
    )


class Reply:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class Abort(Exception):
    """Stops request handling with a reply in the provider's error shape."""

    def __init__(self, reply: Reply):
        super().__init__(str(reply.body))
        self.reply = reply


@dataclass
class Fault:
    status: int  # an HTTP status, or 429 for "the provider's rate-limit answer"
    remaining: int
    match: str | None
    retry_after: int | None = None


@dataclass
class Delay:
    seconds: float
    remaining: int
    match: str | None


@dataclass
class Rejection:
    code: str
    field: str | None
    message: str


@dataclass
class Counters:
    calls: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    write_calls: int = 0
    records_written: int = 0
    token_requests: int = 0


class Store:
    """Records in SQLite (in memory by default); callers hold the emulator's lock.

    ``created`` and ``modified`` are integers in the provider's time unit (seconds for Zoho,
    milliseconds for 纷享销客).
    """

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
            CREATE TABLE IF NOT EXISTS sequence (next INTEGER NOT NULL);
            """
        )
        row = self._db.execute("SELECT next FROM sequence").fetchone()
        if row is None:
            self._db.execute("INSERT INTO sequence (next) VALUES (1)")
        self._next = row[0] if row else 1

    def transaction(self):
        return _Transaction(self._db)

    def next_number(self) -> int:
        """A number never handed out before by this store, across restarts."""
        number = self._next
        self._next += 1
        self._db.execute("UPDATE sequence SET next = ?", (self._next,))
        return number

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
        self, module: str, record: dict[str, Any], created: int, modified: int, unique: Iterable[str],
        *, key: str = "id",
    ) -> None:
        record_id = record[key]
        self._db.execute(
            "INSERT OR REPLACE INTO records (module, id, created, modified, data) VALUES (?, ?, ?, ?, ?)",
            (module, record_id, created, modified, json.dumps(record, separators=(",", ":"))),
        )
        self._db.execute("DELETE FROM unique_values WHERE module = ? AND id = ?", (module, record_id))
        self._db.executemany(
            "INSERT INTO unique_values (module, field, value, id) VALUES (?, ?, ?, ?)",
            [(module, f, str(record[f]), record_id) for f in unique if record.get(f) not in (None, "")],
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

    def select(self, where: str, args: list[Any], order: str, limit: int, offset: int) -> list[dict[str, Any]]:
        """Records matching ``where`` (SQL over ``id``, ``created``, ``modified`` and ``json_extract(data,
        ...)``, built by the provider from validated names), in ``order``."""
        rows = self._db.execute(
            f"SELECT data FROM records WHERE {where} ORDER BY {order}, id LIMIT ? OFFSET ?", (*args, limit, offset)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def count(self, where: str, args: list[Any]) -> int:
        return self._db.execute(f"SELECT count(*) FROM records WHERE {where}", args).fetchone()[0]

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


class CrmEmulatorBase:
    """``start()``/``stop()`` or ``with Emulator() as crm:``; then ``crm.api_base``.

    Subclasses set ``server_version`` and implement ``_route``, ``_fault_reply``,
    ``_rate_limited_reply``, ``_is_api``, ``_is_write`` and the record hooks used by ``seed``
    and ``edit_record``.
    """

    server_version = "CrmEmulator/1.0"
    time_unit = 1  # store timestamps per second; 1000 for milliseconds

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db_path: str,
        modules: Mapping[str, ModuleSpec],
        org_tz: timezone,
        token_ttl: int,
    ):
        self._host = host
        self._port = port
        self._modules: dict[str, ModuleSpec] = dict(modules)
        self._token_ttl = token_ttl
        self._tz = org_tz
        self._store = Store(db_path)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._clock_offset = 0.0
        self._tokens: dict[str, float] = {}
        self._faults: list[Fault] = []
        self._delays: list[Delay] = []
        self._rejected_records: dict[str, Rejection] = {}
        self._rate_limit: tuple[int, float, bool, bool] | None = None
        self._windows: dict[str, deque[float]] = {}
        self._daily_limit: int | None = None
        self._daily_used = 0
        self._expire_after_writes: int | None = None
        self._counters = Counters()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self):
        if self._server is not None:
            return self
        self._stopping.clear()
        handler = type("Handler", (_Handler,), {"server_version": self.server_version})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.emulator = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="crm-emulator", daemon=True
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        return f"http://{self._host}:{self._port}"

    provider = ""

    def connector_kwargs(self) -> dict[str, str]:
        """The connection settings of this provider's connector for this emulator."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The ``TIERLINE_CRM_*`` variables that point ``tierline.crm`` at this emulator."""
        from tierline.crm.config import ENV

        kwargs = self.connector_kwargs()
        return {name: kwargs[arg] for arg, name in ENV[self.provider].items()}

    # -- control API (also reachable over HTTP under /__emulator/) --------------------------------

    def define_module(self, name: str, spec: ModuleSpec) -> None:
        with self._lock:
            self._modules[name] = spec

    def fail_next(
        self, count: int = 1, status: int = 500, *, retry_after: int | None = None, match: str | None = None
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (500, 502, 503, 504) or the
        provider's rate-limit answer (429).

        ``match`` is a substring of ``"METHOD /path"``; by default every CRM API request matches
        (token requests only when ``match`` says so).
        """
        with self._lock:
            self._faults.append(Fault(status, count, match, retry_after))

    def rate_limit_next(self, count: int = 1, *, retry_after: int | None = None, match: str | None = None) -> None:
        self.fail_next(count, 429, retry_after=retry_after, match=match)

    def delay_next(self, seconds: float, count: int = 1, *, match: str | None = None) -> None:
        """Hold the response of the next ``count`` matching requests for ``seconds`` after processing them."""
        with self._lock:
            self._delays.append(Delay(seconds, count, match))

    def reject_records(
        self, keys: Iterable[str], *, code: str | None = None, field: str | None = None, message: str | None = None
    ) -> None:
        """Refuse these records in every write until reset: ``keys`` are record ids or values of the
        module's unique fields; ``field`` names the field refused."""
        with self._lock:
            for key in keys:
                self._rejected_records[str(key)] = Rejection(
                    code or self.default_rejection_code, field, message or self.default_rejection_message)

    default_rejection_code = "INVALID_DATA"
    default_rejection_message = "invalid data"

    def clear_rejections(self) -> None:
        """The CRM admins fixed what made ``reject_records`` refuse: accept those records again."""
        with self._lock:
            self._rejected_records.clear()

    def set_rate_limit(
        self, requests: int | None, window_seconds: float = 60.0, *, retry_after: bool = True,
        per_interface: bool = False,
    ) -> None:
        """Allow ``requests`` API requests per sliding ``window_seconds`` (over the whole API, or per
        interface); the provider's rate-limit answer beyond. ``None`` lifts it."""
        with self._lock:
            self._rate_limit = None if requests is None else (requests, window_seconds, retry_after, per_interface)
            self._windows.clear()

    def set_daily_limit(self, requests: int | None) -> None:
        """The allowance of API requests per day; the provider's quota answer once spent. ``None`` lifts it."""
        with self._lock:
            self._daily_limit = requests
            self._daily_used = 0

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far, as if they had all lapsed."""
        with self._lock:
            self._tokens.clear()

    def expire_tokens_after_writes(self, writes: int) -> None:
        """Tokens lapse right after the next ``writes`` write calls: a token expiring in the middle of a push."""
        with self._lock:
            self._expire_after_writes = writes

    def advance_clock(self, seconds: float) -> None:
        """Move the CRM's clock forward: timestamps of later writes, and token expiry, follow it."""
        with self._lock:
            self._clock_offset += seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(int(self._now()), self._tz)

    def records(self, module: str) -> list[dict[str, Any]]:
        """Every stored record of ``module`` with all its fields, oldest id first."""
        with self._lock:
            return self._store.all(module)

    def record_by_id(self, module: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._store.get(module, record_id)

    def seed(self, module: str, records: Iterable[Mapping[str, Any]], *, user: Mapping[str, str] | None = None) -> int:
        """Records that were in the CRM before tierline, with the ids given (``id``), made by ``user``
        (a CRM user, not the integration). An id already stored is left as it is. Returns how many were added."""
        with self._lock:
            added = 0
            with self._store.transaction():
                for values in records:
                    values = dict(values)
                    record_id = str(values.pop("id"))
                    if self._store.get(module, record_id) is not None:
                        continue
                    spec = self._module_spec(module)
                    unknown = sorted(set(values) - set(spec.fields))
                    if unknown:
                        raise ValueError(f"{module} has no fields {unknown}")
                    self._store_new(module, spec, record_id, values, dict(user or self.default_person))
                    added += 1
            return added

    def edit_record(
        self, module: str, record_id: str, changes: Mapping[str, Any], *, user: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """A person changes a record in the CRM's UI: new values, a new modified time, their user."""
        with self._lock:
            spec = self._module_spec(module)
            if self._store.get(module, record_id) is None:
                raise KeyError(f"no {module} record {record_id!r}")
            unknown = sorted(set(changes) - set(spec.fields))
            if unknown:
                raise ValueError(f"{module} has no fields {unknown}")
            with self._store.transaction():
                return self._store_edit(module, spec, record_id, dict(changes), dict(user or self.default_person))

    def counters(self) -> dict[str, Any]:
        """Requests by ``"METHOD /path"``, HTTP statuses, provider error codes, writes and records written."""
        with self._lock:
            c = self._counters
            return {
                "calls": dict(c.calls),
                "statuses": {str(k): v for k, v in c.statuses.items()},
                "errors": {str(k): v for k, v in c.errors.items()},
                "write_calls": c.write_calls,
                "records_written": c.records_written,
                "token_requests": c.token_requests,
                "daily_used": self._daily_used,
            }

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = Counters()

    def reset(self) -> None:
        """Back to an empty CRM: records, tokens, faults, limits, clock and counters."""
        with self._lock:
            self._store.clear()
            self._reset_state()

    # -- provider hooks -------------------------------------------------------------------------

    default_person: Mapping[str, str] = {}

    def _route(self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes,
               label: str) -> Reply:
        raise NotImplementedError

    def _is_api(self, path: str) -> bool:
        """A request that counts against limits and that faults apply to by default."""
        raise NotImplementedError

    def _is_write(self, method: str, path: str) -> bool:
        raise NotImplementedError

    def _fault_reply(self, fault: Fault) -> Reply:
        raise NotImplementedError

    def _rate_limited_reply(self, wait_seconds: float, with_retry_after: bool) -> Reply:
        raise NotImplementedError

    def _quota_reply(self) -> Reply:
        raise NotImplementedError

    def _error_code(self, reply: Reply) -> str | None:
        """The provider's error code in ``reply``, for the counters."""
        raise NotImplementedError

    def _store_new(self, module: str, spec: ModuleSpec, record_id: str, values: dict[str, Any],
                   user: dict[str, str]) -> None:
        raise NotImplementedError

    def _store_edit(self, module: str, spec: ModuleSpec, record_id: str, changes: dict[str, Any],
                    user: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    def _module_spec(self, module: str) -> ModuleSpec:
        raise NotImplementedError

    def _extra_control(self) -> dict[str, Any]:
        """Provider-specific control endpoints: path -> function(body)."""
        return {}

    # -- request handling -----------------------------------------------------------------------

    def _handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> tuple[Reply, float]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith(CONTROL_PREFIX):
            try:
                return self._control(method, path[len(CONTROL_PREFIX):], json_or_none(body) or {}), 0.0
            except (KeyError, ValueError, TypeError) as exc:
                return Reply(400, {"error": str(exc)}), 0.0
        label = f"{method} {path_label(path)}"
        with self._lock:
            self._counters.calls[label] += 1
            if self._is_write(method, path):
                self._counters.write_calls += 1
            delay = self._take_delay(label, path)
            try:
                reply = self._take_fault(label, path)
                if reply is None:
                    reply = self._route(method, path, query, headers, body, label)
            except Abort as abort:
                reply = abort.reply
            self._counters.statuses[reply.status] += 1
            code = self._error_code(reply)
            if code is not None:
                self._counters.errors[code] += 1
            if self._expire_after_writes is not None and self._is_write(method, path) and reply.status == 200:
                self._expire_after_writes -= 1
                if self._expire_after_writes <= 0:
                    self._expire_after_writes = None
                    self.expire_tokens()
            self._after(reply, path)
        return reply, delay

    def _after(self, reply: Reply, path: str) -> None:
        """A hook on every API reply (Zoho's remaining-credits header)."""

    def _take_fault(self, label: str, path: str) -> Reply | None:
        for fault in self._faults:
            if fault.remaining > 0 and self._matches(fault.match, label, path):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                return self._fault_reply(fault)
        return None

    def _take_delay(self, label: str, path: str) -> float:
        for delay in self._delays:
            if delay.remaining > 0 and self._matches(delay.match, label, path):
                delay.remaining -= 1
                self._delays = [d for d in self._delays if d.remaining > 0]
                return delay.seconds
        return 0.0

    def _matches(self, pattern: str | None, label: str, path: str) -> bool:
        return self._is_api(path) if pattern is None else pattern in label

    def _admit(self, label: str) -> None:
        """Count an authenticated API request against the limits; the provider's answer beyond them."""
        if self._rate_limit is not None:
            limit, window, with_retry_after, per_interface = self._rate_limit
            queue = self._windows.setdefault(label if per_interface else "*", deque())
            now = time.monotonic()
            while queue and queue[0] <= now - window:
                queue.popleft()
            if len(queue) >= limit:
                raise Abort(self._rate_limited_reply(queue[0] + window - now, with_retry_after))
            queue.append(now)
        if self._daily_limit is not None and self._daily_used >= self._daily_limit:
            raise Abort(self._quota_reply())
        self._daily_used += 1

    def _rejection_for(self, keys: Iterable[Any]) -> Rejection | None:
        return next((self._rejected_records[str(k)] for k in keys if str(k) in self._rejected_records), None)

    def _now(self) -> float:
        return time.time() + self._clock_offset

    def _stamp(self) -> int:
        """Now, in the store's time unit."""
        return int(self._now() * self.time_unit)

    def _new_token(self, token: str) -> None:
        self._tokens[token] = self._now() + self._token_ttl

    def _token_valid(self, token: str | None) -> bool:
        expires_at = self._tokens.get(token or "")
        return expires_at is not None and expires_at > self._now()

    def _control(self, method: str, path: str, body: dict[str, Any]) -> Reply:
        if method == "GET" and path == "/counters":
            return Reply(200, self.counters())
        if method == "GET" and path.startswith("/records/"):
            return Reply(200, {"data": self.records(path[len("/records/"):])})
        if method == "PUT" and path.startswith("/modules/"):
            fields = {name: field_spec(raw) for name, raw in body["fields"].items()}
            self.define_module(path[len("/modules/"):],
                               ModuleSpec(fields, tuple(body.get("system_duplicate_check", ()))))
            return Reply(200, {"ok": True})
        if method != "POST":
            return Reply(404, {"error": f"no control endpoint {method} {path}"})
        actions = {
            "/reset": lambda: self.reset(),
            "/counters/reset": lambda: self.reset_counters(),
            "/faults/fail": lambda: self.fail_next(body.get("count", 1), body.get("status", 500),
                                                   retry_after=body.get("retry_after"), match=body.get("match")),
            "/faults/delay": lambda: self.delay_next(body["seconds"], body.get("count", 1), match=body.get("match")),
            "/faults/reject-records": lambda: self.reject_records(
                body["keys"], code=body.get("code"), field=body.get("field"), message=body.get("message")),
            "/rate-limit": lambda: self.set_rate_limit(
                body.get("requests"), body.get("window_seconds", 60.0), retry_after=body.get("retry_after", True),
                per_interface=body.get("per_interface", False)),
            "/daily-limit": lambda: self.set_daily_limit(body.get("requests")),
            "/tokens/expire": lambda: self.expire_tokens(),
            "/tokens/expire-after-writes": lambda: self.expire_tokens_after_writes(body["writes"]),
            "/faults/clear-rejections": lambda: self.clear_rejections(),
            "/clock/advance": lambda: self.advance_clock(body["seconds"]),
            "/seed": lambda: {"added": self.seed(body["module"], body["records"], user=body.get("user"))},
            "/edit-record": lambda: self.edit_record(body["module"], body["id"], body["changes"], user=body.get("user")),
            **{p: (lambda f=f: f(body)) for p, f in self._extra_control().items()},
        }
        action = actions.get(path)
        if action is None:
            return Reply(404, {"error": f"no control endpoint {method} {path}"})
        result = action()
        return Reply(200, result if isinstance(result, dict) else {"ok": True})


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, so a client's session reuses its connection as it would against the real CRM.
    protocol_version = "HTTP/1.1"
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
        emulator: CrmEmulatorBase = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply, delay = emulator._handle(method, self.path, self.headers, body)
        if delay and emulator._stopping.wait(delay):
            self.close_connection = True
            return
        payload = (b"" if reply.body is None or reply.status in (204, 304)
                   else json.dumps(reply.body, ensure_ascii=False).encode())
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


def json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def path_label(path: str) -> str:
    """The path with record ids replaced, so counters group calls by endpoint."""
    return re.sub(r"/\d{6,}(?=/|$)", "/{id}", path)


def retry_after_seconds(wait: float) -> str:
    return str(max(1, math.ceil(wait)))

