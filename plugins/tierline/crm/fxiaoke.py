"""纷享销客 (Fxiaoke) open platform: the CRM object API behind the ``CrmConnector`` interface.

Calls (sources in docs/crm.md), all ``POST`` with a JSON body and a fresh ``thirdTraceId``:

- ``/cgi/corpAccessToken/get/V2`` with the app's ``appId``, ``appSecret`` and ``permanentCode``:
  ``corpAccessToken`` and ``corpId``, valid ``expiresIn`` seconds (7200; the same token comes back
  during its first 6600 s, a new one after). The connector renews it once less than 600 s are
  left, and once more when a call answers 20016 (expired or unknown). Every call carries
  ``corpAccessToken``, ``corpId`` and ``currentOpenUserId`` (the integration user, whose writes the
  CRM records as ``last_modified_by``) in its body.
- ``/cgi/crm/v2/data/query`` (``__c`` objects: ``/cgi/crm/custom/v2/data/query``): changed records
  by ``last_modified_time GT <ms>``, ordered by it and ``_id``, 100 per page; ``offset`` may not
  pass 10000, so the walk restarts from the last time seen (``GTE``) skipping the ids already read
  at that millisecond.
- ``/cgi/crm/v2/data/update`` and ``/data/create``: one record per call (the platform has no batch
  write for preset objects), ``triggerWorkFlow`` and ``triggerApprovalFlow`` false.

Answers are HTTP 200 with ``errorCode``: 0 success; 20016 renew the token and resend once; 30004
and 14001 (frequency limits), -1, -2 and 50009 (busy, system error, service exception) and HTTP
5xx or a broken connection are retried with full-jitter backoff; 30002 (the day's allowance is
spent) stops the run cleanly; credential and authorisation codes (10006, 20006, 20014, 20015,
20017, 20020-20022, 30003) fail at once; any other code on a write refuses that record (a dead
letter, with the field its message names). The connector paces itself to the documented 100
calls per 20 s per interface (and the token call to 10 a minute) instead of being refused.

Values travel as the platform keeps them: numbers as strings, dates as epoch milliseconds. The
connector converts both ways using the mapped fields' types, and returns records with the
interface's ``id``, ``Modified_Time`` (ISO 8601, +08:00) and ``Modified_By``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import requests

from tierline.crm.connector import (
    CrmAuthError,
    CrmBatchTooLarge,
    CrmBudgetExceeded,
    CrmProtocolError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
    HttpCrmConnector,
    Pacer,
    RecordResult,
    _decode,
    _ms,
)

log = logging.getLogger(__name__)

TOKEN_PATH = "/cgi/corpAccessToken/get/V2"
PAGE_LIMIT = 100
MAX_OFFSET = 10_000
RATE_LIMIT = (100, 20.0)  # calls per interface per window
TOKEN_RATE_LIMIT = (10, 60.0)
TOKEN_RENEW_SECONDS = 600
CHINA = timezone(timedelta(hours=8))
RATE_LIMITED = frozenset({30004, 14001})
TRANSIENT = frozenset({-1, -2, 50009})
TOKEN_EXPIRED = 20016
DAILY_LIMIT = 30002
AUTH = frozenset({10006, 20006, 20014, 20015, 20017, 20020, 20021, 20022, 30003})
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class _Sent(Exception):
    """A write may have reached the CRM (no answer, or a 5xx): resending it blindly could create twice."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


class FxiaokeConnector(HttpCrmConnector):
    """纷享销客 open platform, legacy parameter passing (``corpAccessToken`` + ``corpId`` in the body).

    ``api_base`` is the cloud's API domain (``https://open.fxiaoke.com``). Not thread-safe: use one
    per worker. ``credits_used`` counts API calls (the platform's daily allowance counts calls).
    """

    provider = "fxiaoke"
    max_batch_size = 1

    def __init__(
        self,
        api_base: str,
        app_id: str,
        app_secret: str,
        permanent_code: str,
        open_user_id: str,
        *,
        field_types: Mapping[str, str] | None = None,
        max_offset: int = MAX_OFFSET,
        **options: Any,
    ):
        """``options``: ``HttpCrmConnector``'s; ``rate_limit`` defaults to the documented 100 calls per 20 s."""
        options.setdefault("rate_limit", RATE_LIMIT)
        super().__init__(**options)
        self._api_base = api_base.rstrip("/")
        self._app_id = app_id
        self._app_secret = app_secret
        self._permanent_code = permanent_code
        self._open_user_id = open_user_id
        self._field_types = dict(field_types or {})
        self._max_offset = max_offset
        self._token_pacer = Pacer(*TOKEN_RATE_LIMIT, self._clock, self._sleep)
        self._token: str | None = None
        self._corp_id: str | None = None
        self._token_expires_at = 0.0

    @property
    def credits_used(self) -> int:
        return self._calls_made

    def current_user(self) -> dict[str, Any]:
        """The integration user is the ``currentOpenUserId`` every call carries; no call needed."""
        return {"id": self._open_user_id}

    # -- reads ------------------------------------------------------------------------------------

    def iter_modified(
        self, module: str, since: datetime | None, fields: Sequence[str]
    ) -> Iterator[dict[str, Any]]:
        projection = list(dict.fromkeys(["_id", "last_modified_time", "last_modified_by", *fields]))
        orders = [{"fieldName": "last_modified_time", "isAsc": True}, {"fieldName": "_id", "isAsc": True}]
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        time_filter = [] if since is None else [_filter("last_modified_time", "GT", _epoch_ms(since))]
        offset, latest, ids_at_latest, restarted_at = 0, None, set(), None
        while True:
            page = self._query(module, time_filter, orders, offset, projection)
            for record in page:
                if record["last_modified_time"] == latest and record["_id"] in ids_at_latest:
                    continue  # read before the walk restarted at this millisecond
                if record["last_modified_time"] != latest:
                    latest, ids_at_latest = record["last_modified_time"], set()
                ids_at_latest.add(record["_id"])
                yield self._from_crm(record)
            if len(page) < PAGE_LIMIT:
                return
            offset += PAGE_LIMIT
            if offset > self._max_offset:
                # offset may not pass the platform's limit: go on from the last millisecond read
                if latest == restarted_at:
                    raise CrmProtocolError(f"more than {self._max_offset} {module} records share one modified "
                                           "time; the query cannot page past them")
                time_filter, offset, restarted_at = [_filter("last_modified_time", "GTE", latest)], 0, latest

    def find(self, module: str, field: str, value: str) -> list[dict[str, Any]]:
        """The records whose ``field`` equals ``value`` (at most one page)."""
        projection = ["_id", "last_modified_time", "last_modified_by", field]
        return [self._from_crm(r) for r in self._query(module, [_filter(field, "EQ", value)], [], 0, projection)]

    def _query(self, module: str, filters: list[dict[str, Any]], orders: list[dict[str, Any]], offset: int,
               projection: list[str]) -> list[dict[str, Any]]:
        data = {
            "dataObjectApiName": module,
            "find_explicit_total_num": False,
            "search_query_info": {"limit": PAGE_LIMIT, "offset": offset, "filters": filters, "orders": orders,
                                  "fieldProjection": projection},
        }
        payload = self._call(module, "query", data, idempotent=True)
        found = payload.get("data")
        rows = found.get("dataList") if isinstance(found, dict) else None
        if not isinstance(rows, list):
            raise CrmProtocolError(f"query of {module} answered without data.dataList", body=payload)
        return rows

    # -- writes -----------------------------------------------------------------------------------

    def update(self, module: str, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        self._check_batch(records)
        results = []
        for record in records:
            crm_id = str(record.get("id") or "")
            if not crm_id:
                raise ValueError("a record to update has no id")
            values = {k: v for k, v in record.items() if k != "id"}
            results.append(self._write(module, "update", crm_id, values, crm_id))
        return results

    def upsert(
        self, module: str, records: Sequence[Mapping[str, Any]], duplicate_check_field: str
    ) -> list[RecordResult]:
        """No upsert call exists: look the record up by ``duplicate_check_field``, then update or create.

        A create that may have reached the CRM unanswered is not resent before looking again, so a
        retry never creates twice.
        """
        self._check_batch(records)
        results = []
        for record in records:
            key = str(record.get(duplicate_check_field) or "")
            if not key:
                raise ValueError(f"a record to upsert has no {duplicate_check_field}")
            attempt = 0
            while True:
                found = self.find(module, duplicate_check_field, key)
                if len(found) > 1:
                    results.append(RecordResult(key, False, code="DUPLICATE_DATA", field=duplicate_check_field,
                                                message=f"{len(found)} {module} records have {duplicate_check_field}"
                                                        f" = {key}"))
                    break
                try:
                    if found:
                        result = self._write(module, "update", found[0]["id"], dict(record), key)
                    else:
                        result = self._write(module, "create", None, dict(record), key, resend=False)
                    results.append(result)
                    break
                except _Sent as sent:
                    if attempt >= self._max_retries:
                        raise CrmUnavailable(f"create in {module} unanswered {attempt + 1} times: {sent}") from sent
                    self._sleep(self._backoff(attempt))
                    attempt += 1
        return results

    def _check_batch(self, records: Sequence[Mapping[str, Any]]) -> None:
        if len(records) > self.max_batch_size:
            raise CrmBatchTooLarge(
                f"{len(records)} records in one write; the open platform writes one record per call")

    def _write(self, module: str, action: str, crm_id: str | None, values: dict[str, Any], key: str,
               *, resend: bool = True) -> RecordResult:
        object_data = {"dataObjectApiName": module, **self._to_crm(values)}
        if crm_id is not None:
            object_data["_id"] = crm_id
        body = {"triggerWorkFlow": False, "triggerApprovalFlow": False}
        payload = self._call(module, action, {"object_data": object_data}, idempotent=resend, top=body,
                             per_record=True)
        code = payload.get("errorCode")
        if code == 0:
            return RecordResult(key, True, crm_id=str(payload.get("dataId") or crm_id), code="0",
                                action="update" if action == "update" else "insert")
        message = str(payload.get("errorMessage") or "")
        field = next((name for name in values if re.search(rf"\b{re.escape(name)}\b", message)), None)
        return RecordResult(key, False, code=str(code), message=message, field=field)

    # -- the wire ---------------------------------------------------------------------------------

    def _path(self, module: str, action: str) -> str:
        kind = "custom/v2" if module.endswith("__c") else "v2"
        return f"/cgi/crm/{kind}/data/{action}"

    def _call(self, module: str, action: str, data: dict[str, Any], *, idempotent: bool,
              top: Mapping[str, Any] | None = None, per_record: bool = False) -> dict[str, Any]:
        """One logical call with its retries; returns the answer (errorCode 0, or a record's refusal)."""
        path = self._path(module, action)
        attempt, renewed = 0, False
        while True:
            body = {**(top or {}), **self._credentials(), "data": data}
            try:
                payload = self._send(path, body, api=True)
            except _Sent as sent:
                if not idempotent:
                    raise  # the caller looks before it resends
                if attempt >= self._max_retries:
                    raise sent.cause from sent
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            code = payload.get("errorCode")
            if code == 0:
                return payload
            if code == TOKEN_EXPIRED and not renewed:
                log.debug("crm token refused (%s); renewing once", code)
                self._token, renewed = None, True
                continue
            if code in RATE_LIMITED or code in TRANSIENT:
                if attempt >= self._max_retries:
                    error = CrmRateLimited if code in RATE_LIMITED else CrmUnavailable
                    raise error(f"{path} still answered errorCode {code} after {attempt + 1} attempts: "
                                f"{payload.get('errorMessage')}", code=str(code), body=payload)
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            raise_for_code(path, payload)
            if per_record:
                return payload
            raise CrmRequestError(f"{path} -> errorCode {code}: {payload.get('errorMessage')} "
                                  f"(traceId {payload.get('traceId')})", code=str(code), body=payload)

    def _credentials(self) -> dict[str, str]:
        if self._token is None or self._clock() >= self._token_expires_at:
            self._renew()
        return {"corpAccessToken": self._token, "corpId": self._corp_id, "currentOpenUserId": self._open_user_id}

    def _renew(self) -> None:
        # Credentials go in the body, never the URL, so they do not reach a URL log line.
        body = {"appId": self._app_id, "appSecret": self._app_secret, "permanentCode": self._permanent_code}
        attempt = 0
        while True:
            try:
                payload = self._send(TOKEN_PATH, body, api=False)
            except _Sent as sent:
                if attempt >= self._max_retries:
                    raise CrmUnavailable(f"{TOKEN_PATH} failed {attempt + 1} times: {sent}") from sent
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            code = payload.get("errorCode")
            if code in TRANSIENT and attempt < self._max_retries:
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            break
        if code != 0 or not payload.get("corpAccessToken"):
            raise CrmAuthError(f"纷享销客 refused the app credentials: errorCode {code} {payload.get('errorMessage')}",
                               code=str(code), body={k: v for k, v in payload.items() if k != "corpAccessToken"})
        expires_in = float(payload.get("expiresIn") or 7200)
        # From 6600 s on the platform hands out a new token: renew then, not at the last second.
        self._token_expires_at = self._clock() + max(0.0, expires_in - TOKEN_RENEW_SECONDS)
        self._token, self._corp_id = payload["corpAccessToken"], payload.get("corpId")
        self.token_refreshes += 1
        log.debug("crm corp access token renewed; valid for %.0f s", expires_in)

    def _send(self, path: str, body: dict[str, Any], *, api: bool) -> dict[str, Any]:
        """One HTTP request; ``_Sent`` when it may have been processed without an answer."""
        pacer = self._pacer if api else self._token_pacer
        if pacer is not None:
            pacer.wait(path)
        if api:
            if self._credit_budget is not None and self._calls_made + 1 > self._credit_budget:
                raise CrmBudgetExceeded(f"call budget of {self._credit_budget} reached; not sending")
            self._calls_made += 1
        started = time.perf_counter()
        url = f"{self._api_base}{path}"
        try:
            response = self._session.post(url, params={"thirdTraceId": str(uuid.uuid4())}, json=body,
                                          timeout=self._timeout)
        except _TRANSPORT_ERRORS as exc:
            log.debug("crm POST %s failed after %.0f ms: %s", path, _ms(started), type(exc).__name__)
            raise _Sent(CrmUnavailable(f"POST {url}: {type(exc).__name__}: {exc}")) from exc
        log.debug("crm POST %s -> %d in %.0f ms", path, response.status_code, _ms(started))
        if response.status_code in _RETRYABLE_STATUS:
            raise _Sent(CrmUnavailable(f"POST {url} answered HTTP {response.status_code}",
                                       status=response.status_code))
        payload = _decode(response)
        if response.status_code != 200 or not isinstance(payload, dict) or "errorCode" not in payload:
            raise CrmProtocolError(f"POST {url} answered HTTP {response.status_code}: {str(payload)[:200]!r}",
                                   status=response.status_code, body=payload)
        return payload

    # -- values -----------------------------------------------------------------------------------

    def _to_crm(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in values.items():
            kind = self._field_types.get(name)
            if value is None:
                out[name] = None
            elif kind in ("double", "integer") and not isinstance(value, bool):
                out[name] = str(int(value)) if float(value).is_integer() else repr(float(value))
            elif kind == "date":
                out[name] = _epoch_ms(datetime.combine(date.fromisoformat(str(value)[:10]), datetime.min.time(),
                                                       CHINA))
            else:
                out[name] = value
        return out

    def _from_crm(self, record: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(record)
        out["id"] = str(record["_id"])
        out["Modified_Time"] = _iso(record["last_modified_time"])
        editors = record.get("last_modified_by") or []
        named = record.get("last_modified_by__r") or {}
        out["Modified_By"] = {"id": editors[0] if editors else None, "name": named.get("name")}
        for name in ("create_time", "last_modified_time"):
            if isinstance(record.get(name), int):
                out[name] = _iso(record[name])
        for name, kind in self._field_types.items():
            value = record.get(name)
            if value in (None, ""):
                continue
            try:
                if kind == "double":
                    out[name] = float(value)
                elif kind == "integer":
                    out[name] = int(float(value))
                elif kind == "date" and isinstance(value, int):
                    out[name] = datetime.fromtimestamp(value / 1000, CHINA).date().isoformat()
            except (TypeError, ValueError):
                log.debug("crm field %s holds %r, not a %s", name, value, kind)
        return out


def raise_for_code(path: str, payload: Mapping[str, Any]) -> None:
    """Codes that no retry and no other record will get past: the run stops, or fails at once."""
    code = payload.get("errorCode")
    message = f"{path} -> errorCode {code}: {payload.get('errorMessage')} (traceId {payload.get('traceId')})"
    if code == DAILY_LIMIT:
        raise CrmBudgetExceeded(message + "; the day's API allowance is spent, the rest waits", code=str(code),
                                body=dict(payload))
    if code in AUTH:
        raise CrmAuthError(message, code=str(code), body=dict(payload))


def _filter(field: str, operator: str, value: Any) -> dict[str, Any]:
    return {"field_name": field, "operator": operator, "field_values": [str(value)]}


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(CHINA).isoformat(timespec="milliseconds")
