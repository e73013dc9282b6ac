"""A local stand-in for Zoho CRM v8 that speaks real HTTP, for tests, benchmarks and local runs.

It serves, on one loopback port:

- ``{accounts_base}/oauth/v2/token`` (``accounts_base`` is ``{api_base}/accounts``, so a client that
  sends token requests to the API host gets a 404 here as it would from Zoho);
- ``GET {api_base}/crm/v8/{module}`` with ``fields``, ``page``, ``per_page``, ``page_token``,
  ``sort_by``/``sort_order`` and ``If-Modified-Since``; ``GET .../{module}/{id}``;
  ``GET .../{module}/search?criteria=...``; ``POST .../{module}/upsert``; ``PUT .../{module}``
  (update by id); ``GET .../users?type=CurrentUser``;
- the control API of ``base`` under ``/__emulator/``, plus ``/person-edit`` (by external id),
  ``/faults/reject-batches`` and ``/credits``.

Where Zoho documents a behaviour the emulator follows it: ``Zoho-oauthtoken`` auth, 401
``INVALID_TOKEN``, per-record write results (200 all written, 207 some, 400 none), whole-request
400s, 204 for an empty list, 304 when nothing changed since ``If-Modified-Since``, the 2000-record
limit of ``page`` (``page_token`` beyond), 429 ``TOO_MANY_REQUESTS`` and ``X-API-CREDITS-REMAINING``
once half the credit allowance is spent. Deliberate choices where it does not:

- ``If-Modified-Since`` returns records modified strictly after the given second, and timestamps
  have one-second resolution in the org's UTC offset (+05:30 by default, so string comparison of
  timestamps is wrong).
- Every accepted write bumps ``Modified_Time`` and sets ``Modified_By`` to the integration user,
  even when no value changed.
- Unknown field names in a write are dropped silently, as Zoho does; read back to catch typos.
- A delayed response (``delay_next``) is delayed *after* the request was processed, so a client
  that times out and retries an upsert has already written once.

Run it standalone with ``python -m tierline_dev.crm_emulators zoho`` (see ``__main__``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs

from tierline_dev.crm_emulators.base import (
    Abort,
    CrmEmulatorBase,
    Fault,
    FieldSpec,
    ModuleSpec,
    Reply,
    json_or_none,
    retry_after_seconds,
)

API_PREFIX = "/crm/v8"
ACCOUNTS_PREFIX = "/accounts"
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
# Ids of records the emulator creates; records seeded with other ids keep theirs.
_NEW_ID_BASE = 5725767000000000000 + 3_000_000

# The English labels of config/tier_spec.yml's ladder and dbt's lifecycle_stages seed, as the CRM
# admins would set up the picklists; redefine the module if theirs differ.
TIERS = ("Strategic", "VIP", "Key", "Regular", "Potential")
LIFECYCLE_STAGES = ("Prospect", "New", "Growth", "Mature", "Declining", "Dormant", "Churned", "Reactivated")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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


def _error(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "details": dict(details or {}), "message": message, "status": "error"}


def _abort(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None, *,
    headers: Mapping[str, str] | None = None,
) -> Abort:
    return Abort(Reply(status, _error(code, message, details), headers))


class CrmEmulator(CrmEmulatorBase):
    """Zoho CRM v8: ``with CrmEmulator() as crm:``, then ``ZohoCrmConnector(**crm.connector_kwargs())``."""

    server_version = "ZohoCRMEmulator/1.0"
    provider = "zoho"
    default_person = DEFAULT_PERSON

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
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self._integration_user = dict(integration_user)
        super().__init__(host, port, db_path=db_path, modules=DEFAULT_MODULES if modules is None else modules,
                         org_tz=timezone(org_utc_offset), token_ttl=token_ttl)

    def _reset_state(self) -> None:
        super()._reset_state()
        self._page_tokens: dict[str, dict[str, Any]] = {}
        self._poison_ids: set[str] = set()
        self._reject_batches_remaining = 0

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

    # -- Zoho's own controls ----------------------------------------------------------------------

    def reject_batches(self, *, containing: Iterable[str] = (), count: int = 0) -> None:
        """Refuse whole write requests with a 400: those containing one of ``containing`` (until reset),
        and the next ``count`` ones whatever they hold."""
        with self._lock:
            self._poison_ids.update(str(v) for v in containing)
            self._reject_batches_remaining += count

    def set_credit_limit(self, credits: int | None) -> None:
        """The 24-hour API credit allowance (one credit per request); 429 once spent. ``None`` lifts it."""
        self.set_daily_limit(credits)

    def person_edits(
        self, module: str, external_id: str, changes: Mapping[str, Any], *, user: Mapping[str, str] | None = None,
        id_field: str = "Tierline_Customer_Id",
    ) -> dict[str, Any]:
        """A person changes the record whose ``id_field`` is ``external_id`` (see ``edit_record``)."""
        with self._lock:
            record_id = self._find(module, id_field, external_id)
            if record_id is None:
                raise KeyError(f"no {module} record with {id_field}={external_id!r}")
            return self.edit_record(module, record_id, changes, user=user)

    def record(self, module: str, external_id: str, *, id_field: str = "Tierline_Customer_Id") -> dict[str, Any] | None:
        with self._lock:
            record_id = self._find(module, id_field, external_id)
            return None if record_id is None else self._store.get(module, record_id)

    def _find(self, module: str, id_field: str, value: Any) -> str | None:
        spec = self._module_spec(module)
        return self._store.find(module, id_field, value, indexed=spec.fields[id_field].unique)

    def counters(self) -> dict[str, Any]:
        counters = super().counters()
        counters["credits_used"] = counters["daily_used"]
        return counters

    def _extra_control(self) -> dict[str, Any]:
        return {
            "/person-edit": lambda body: self.person_edits(
                body["module"], body["external_id"], body["changes"], user=body.get("user"),
                id_field=body.get("id_field", "Tierline_Customer_Id")),
            "/faults/reject-batches": lambda body: self.reject_batches(
                containing=body.get("containing", ()), count=body.get("count", 0)),
            "/credits": lambda body: self.set_credit_limit(body.get("daily_limit")),
        }

    # -- base hooks -------------------------------------------------------------------------------

    def _is_api(self, path: str) -> bool:
        return path.startswith(API_PREFIX)

    def _is_write(self, method: str, path: str) -> bool:
        return self._is_api(path) and ((method == "POST" and path.endswith("/upsert")) or method == "PUT")

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.status == 429:
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return Reply(429, _error("TOO_MANY_REQUESTS", "too many requests continuously"), headers)
        return Reply(fault.status, _error("INTERNAL_ERROR", "Internal Server Error"))

    def _rate_limited_reply(self, wait_seconds: float, with_retry_after: bool) -> Reply:
        headers = {"Retry-After": retry_after_seconds(wait_seconds)} if with_retry_after else {}
        return Reply(429, _error("TOO_MANY_REQUESTS", "too many requests continuously"), headers)

    def _quota_reply(self) -> Reply:
        return Reply(429, _error("TOO_MANY_REQUESTS", "API credits for the 24 hour period are exhausted"))

    def _error_code(self, reply: Reply) -> str | None:
        body = reply.body
        if reply.status >= 400 and isinstance(body, dict):
            return body.get("code")
        return None

    def _after(self, reply: Reply, path: str) -> None:
        limit = self._daily_limit
        if limit is not None and self._is_api(path) and (not limit or self._daily_used / limit >= 0.5):
            reply.headers["X-API-CREDITS-REMAINING"] = str(max(0, limit - self._daily_used))

    def _module_spec(self, module: str) -> ModuleSpec:
        spec = self._modules.get(module)
        if spec is None:
            raise _abort(400, "INVALID_MODULE", "the module name given seems to be invalid", {"module": module})
        return spec

    def _store_new(self, module: str, spec: ModuleSpec, record_id: str, values: dict[str, Any],
                   user: dict[str, str]) -> None:
        clean, problem = _validate(spec, values, 0)
        if problem is not None:
            raise ValueError(f"invalid record {record_id}: {problem}")
        now = self._stamp()
        stamp = self._format_time(now)
        record = {**clean, "id": record_id, "Owner": dict(user), "Created_Time": stamp, "Created_By": dict(user),
                  "Modified_Time": stamp, "Modified_By": dict(user)}
        self._store.put(module, record, now, now, spec.unique_fields)

    def _store_edit(self, module: str, spec: ModuleSpec, record_id: str, changes: dict[str, Any],
                    user: dict[str, str]) -> dict[str, Any]:
        clean, problem = _validate(spec, changes, 0)
        if problem is not None:
            raise ValueError(f"invalid edit: {problem}")
        record = self._store.get(module, record_id)
        record.update(clean)
        now = self._stamp()
        record["Modified_Time"] = self._format_time(now)
        record["Modified_By"] = dict(user)
        self._store.put(module, record, self._store.created_of(module, record_id), now, spec.unique_fields)
        return record

    def _new_id(self, module: str) -> str:
        while True:
            candidate = str(_NEW_ID_BASE + self._store.next_number())
            if self._store.get(module, candidate) is None:
                return candidate

    def _format_time(self, epoch: float) -> str:
        return datetime.fromtimestamp(int(epoch), self._tz).isoformat()

    # -- request handling -------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes,
               label: str) -> Reply:
        if path == f"{ACCOUNTS_PREFIX}/oauth/v2/token":
            if method != "POST":
                raise _abort(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")
            return self._token_endpoint(query, body)
        if not path.startswith(API_PREFIX + "/"):
            raise _abort(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")
        self._authenticate(headers)
        self._admit(label)
        segments = path[len(API_PREFIX) + 1:].split("/")
        if segments == ["users"] and method == "GET":
            return self._current_user(query)
        module = segments[0]
        if len(segments) == 1 and method == "GET":
            return self._list(module, query, headers)
        if len(segments) == 1 and method == "PUT":
            return self._write(module, body, update_only=True)
        if len(segments) == 2 and segments[1] == "upsert" and method == "POST":
            return self._write(module, body, update_only=False)
        if len(segments) == 2 and segments[1] == "search" and method == "GET":
            return self._search(module, query)
        if len(segments) == 2 and segments[1].isdigit() and method == "GET":
            return self._get_one(module, segments[1])
        if len(segments) <= 2:
            raise _abort(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")
        raise _abort(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    def _token_endpoint(self, query: dict[str, str], body: bytes) -> Reply:
        self._counters.token_requests += 1
        params = dict(query)
        params.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()})
        # Zoho's accounts server answers a bad grant with HTTP 200 and an "error" key.
        if params.get("grant_type") != "refresh_token":
            return Reply(200, {"error": "unsupported_grant_type"})
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return Reply(200, {"error": "invalid_client"})
        if params.get("refresh_token") != self.refresh_token:
            return Reply(200, {"error": "invalid_code"})
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self._new_token(token)
        return Reply(200, {"access_token": token, "scope": "ZohoCRM.modules.ALL ZohoCRM.users.READ",
                           "api_domain": self.api_base, "token_type": "Bearer", "expires_in": self._token_ttl})

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme != "Zoho-oauthtoken" or not token:
            raise _abort(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        if not self._token_valid(token.strip()):
            raise _abort(401, "INVALID_TOKEN", "invalid oauth token")

    def _current_user(self, query: dict[str, str]) -> Reply:
        if query.get("type") != "CurrentUser":
            raise _abort(400, "INVALID_DATA", "only type=CurrentUser is emulated", {"param": "type"})
        user = self._integration_user
        return Reply(200, {
            "users": [{"id": user["id"], "full_name": user["name"], "email": user["email"], "status": "active"}],
            "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False},
        })

    def _write(self, module: str, body: bytes, *, update_only: bool) -> Reply:
        """``POST /{module}/upsert`` (create or update, matched on duplicate check fields) and ``PUT
        /{module}`` (update by ``id`` only: an unknown id is a per-record error, never a create)."""
        spec = self._module_spec(module)
        payload = json_or_none(body)
        if not isinstance(payload, dict):
            raise _abort(400, "INVALID_DATA", "body", {"expected_data_type": "jsonobject"})
        data = payload.get("data")
        if data is None:
            raise _abort(400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "data"})
        if not isinstance(data, list) or not data:
            raise _abort(400, "INVALID_DATA", "invalid data", {"json_path": "$.data", "expected_data_type": "jsonarray"})
        if len(data) > MAX_UPSERT_BATCH:
            raise _abort(400, "LIMIT_EXCEEDED", "the limit has been exceeded", {"limit": MAX_UPSERT_BATCH})
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise _abort(400, "INVALID_DATA", "invalid data",
                             {"json_path": f"$.data[{index}]", "expected_data_type": "jsonobject"})
        order = [] if update_only else self._duplicate_check_order(spec, payload.get("duplicate_check_fields"))
        self._reject_whole_batch(data, ["id", *order])
        results = []
        with self._store.transaction():
            for index, item in enumerate(data):
                results.append(self._write_one(module, spec, order, index, item, update_only=update_only))
        written = sum(1 for r in results if r["status"] == "success")
        self._counters.records_written += written
        status = 200 if written == len(results) else 207 if written else 400
        return Reply(status, {"data": results})

    def _write_one(
        self, module: str, spec: ModuleSpec, order: list[str], index: int, item: dict[str, Any], *, update_only: bool
    ) -> dict[str, Any]:
        clean, problem = _validate(spec, item, index)
        if problem is None:
            rejection = self._rejection_for(item[f] for f in ["id", *order] if item.get(f) is not None)
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
        elif update_only:
            return _error("INVALID_DATA", "the related id given seems to be invalid",
                          {"api_name": "id", "json_path": f"$.data[{index}].id"})
        for name in order:
            if existing_id is None and clean.get(name) is not None:
                indexed = spec.fields.get(name, FieldSpec()).unique
                existing_id = self._store.find(module, name, clean[name], indexed=indexed)
                matched_on = name if existing_id else None

        record = self._store.get(module, existing_id) if existing_id else {}
        record.update(clean)
        for name, field in spec.fields.items():
            if field.mandatory and record.get(name) in (None, ""):
                return _error("MANDATORY_NOT_FOUND", "required field not found",
                              {"api_name": name, "json_path": f"$.data[{index}].{name}"})
        for name in spec.unique_fields:
            if clean.get(name) is None:
                continue
            holder = self._store.find(module, name, clean[name], indexed=True)
            if holder is not None and holder != existing_id:
                return _error("DUPLICATE_DATA", "duplicate data", {
                    "api_name": name, "json_path": f"$.data[{index}].{name}", "duplicate_record": {"id": holder}})

        now = self._stamp()
        stamp = self._format_time(now)
        user = dict(self._integration_user)
        if existing_id is None:
            record.update(id=self._new_id(module), Owner=user, Created_Time=stamp, Created_By=user)
            created = now
        else:
            created = self._store.created_of(module, existing_id)
        record["Modified_Time"] = stamp
        record["Modified_By"] = user
        self._store.put(module, record, created, now, spec.unique_fields)
        return {
            "code": "SUCCESS",
            **({} if update_only else {"duplicate_field": matched_on, "action": "update" if existing_id else "insert"}),
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

    def _list(self, module: str, query: dict[str, str], headers: Mapping[str, str]) -> Reply:
        spec = self._module_spec(module)
        if "page_token" in query:
            state = self._page_tokens.get(query["page_token"])
            if state is None or state["expires"] <= time.monotonic():
                raise _abort(400, "INVALID_DATA", "invalid page token", {"param": "page_token"})
        else:
            fields = self._requested_fields(spec, query.get("fields"), required=True)
            per_page = _int_param(query, "per_page", 200, 1, MAX_PER_PAGE)
            page = _int_param(query, "page", 1, 1, None)
            if page * per_page > DISCRETE_PAGE_LIMIT:
                raise _abort(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    f"cannot fetch more than {DISCRETE_PAGE_LIMIT} records using page; use page_token",
                    {"limit": DISCRETE_PAGE_LIMIT},
                )
            sort_by = query.get("sort_by", "id")
            columns = {"id": "id", "Created_Time": "created", "Modified_Time": "modified"}
            if sort_by not in columns:
                raise _abort(
                    400, "INVALID_DATA", "invalid sort_by", {"param": "sort_by", "supported": list(columns)}
                )
            sort_order = query.get("sort_order", "desc")
            if sort_order not in ("asc", "desc"):
                raise _abort(400, "INVALID_DATA", "invalid sort_order", {"param": "sort_order"})
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
            return Reply(304 if state["since"] is not None and state["offset"] == 0 else 204)
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
        return Reply(
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

    def _get_one(self, module: str, record_id: str) -> Reply:
        self._module_spec(module)
        record = self._store.get(module, record_id)
        return Reply(204) if record is None else Reply(200, {"data": [record]})

    def _search(self, module: str, query: dict[str, str]) -> Reply:
        spec = self._module_spec(module)
        if not query.get("criteria"):
            raise _abort(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param": "criteria"},
            )
        try:
            tree = _parse_criteria(query["criteria"])
        except ValueError as exc:
            raise _abort(400, "INVALID_QUERY", str(exc), {"param": "criteria"}) from exc
        if _count_leaves(tree) > MAX_SEARCH_CRITERIA:
            raise _abort(
                400,
                "LIMIT_EXCEEDED",
                "the criteria has more than 10 conditions",
                {"limit": MAX_SEARCH_CRITERIA},
            )
        for leaf in _leaves(tree):
            if leaf[1] not in spec.fields and leaf[1] not in SYSTEM_FIELDS:
                raise _abort(400, "INVALID_QUERY", "invalid field in criteria", {"api_name": leaf[1]})
        fields = self._requested_fields(spec, query.get("fields"), required=False)
        per_page = _int_param(query, "per_page", 200, 1, MAX_PER_PAGE)
        page = _int_param(query, "page", 1, 1, None)
        matched = self._search_candidates(module, spec, tree)
        matched = [r for r in matched if _evaluate(tree, r)]
        start = (page - 1) * per_page
        chunk = matched[start : start + per_page]
        if not chunk:
            return Reply(204)
        return Reply(
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

    def _duplicate_check_order(self, spec: ModuleSpec, requested: Any) -> list[str]:
        allowed = set(spec.system_duplicate_check) | set(spec.unique_fields)
        if requested is None:
            return list(dict.fromkeys([*spec.system_duplicate_check, *spec.unique_fields]))
        if not isinstance(requested, list):
            raise _abort(400, "INVALID_DATA", "invalid data", {"json_path": "$.duplicate_check_fields"})
        for index, name in enumerate(requested):
            if name not in allowed:
                raise _abort(
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
            raise _abort(400, "INVALID_DATA", "invalid data")
        for index, item in enumerate(data):
            hit = next(
                (f for f in order if item.get(f) is not None and str(item[f]) in self._poison_ids), None
            )
            if hit is not None:
                raise _abort(
                    400, "INVALID_DATA", "invalid data", {"api_name": hit, "json_path": f"$.data[{index}]"}
                )

    def _requested_fields(self, spec: ModuleSpec, raw: str | None, *, required: bool) -> list[str]:
        if not raw:
            if required:
                raise _abort(
                    400,
                    "REQUIRED_PARAM_MISSING",
                    "One of the expected parameter is missing",
                    {"param": "fields"},
                )
            return []
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if len(names) > MAX_FIELDS:
            raise _abort(
                400, "LIMIT_EXCEEDED", "the limit has been exceeded", {"param": "fields", "limit": MAX_FIELDS}
            )
        for name in names:
            if name not in spec.fields and name not in SYSTEM_FIELDS:
                raise _abort(400, "INVALID_DATA", "invalid data", {"param": "fields", "api_name": name})
        return names



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
            raise _abort(
                400, "INVALID_DATA", "invalid If-Modified-Since", {"header": "If-Modified-Since"}
            ) from None
    if moment.tzinfo is None:
        raise _abort(
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
        raise _abort(400, "INVALID_DATA", "invalid data", details)
    return value


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

