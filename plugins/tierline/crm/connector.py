"""CRM connectors: the interface the sync code talks to, and its Zoho CRM v8 implementation.

The sync never speaks HTTP itself. It reads changed records with ``iter_modified``, writes
existing records with ``update`` (by the CRM's record id) and, only in ``upsert`` mode, creates
with ``upsert`` (matched on a unique field, so a retried call never creates twice), in batches no
larger than ``max_batch_size``, and looks at ``credits_used`` / ``calls_made`` to stay inside the
CRM's API budget. Another CRM means one new ``CrmConnector`` subclass (``FxiaokeConnector`` is
the second); the sync and its tests stay as they are.

Records are plain dicts in the CRM's own field names. Every connector returns, on each record,
``id`` (the CRM's record id), ``Modified_Time`` (ISO 8601 with offset, see ``parse_crm_time``)
and ``Modified_By`` (``{"id": ..., "name": ...}``) so the sync can tell its own writes from a
person's edits.
"""

from __future__ import annotations

import abc
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

log = logging.getLogger(__name__)

ZOHO_API_VERSION = "v8"
ZOHO_MAX_UPSERT_BATCH = 100
ZOHO_MAX_PAGE_SIZE = 200
ZOHO_MAX_FIELDS = 50
# Zoho's search API accepts at most 10 criteria in one expression.
ZOHO_MAX_SEARCH_CRITERIA = 10
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class CrmError(RuntimeError):
    """Base of every connector failure; carries the HTTP status and the decoded body when there was one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body


class CrmAuthError(CrmError):
    """The credentials were refused, or a freshly issued token was refused again."""


class CrmRateLimited(CrmError):
    """Still rate limited (HTTP 429) after the connector's retries."""


class CrmUnavailable(CrmError):
    """5xx, connection failures or timeouts persisted through the connector's retries."""


class CrmBudgetExceeded(CrmError):
    """The next call would go over the configured credit budget, or over what the CRM says is left."""


class CrmRequestError(CrmError):
    """A non-retryable client error (4xx other than 401/429)."""


class CrmBatchRejected(CrmRequestError):
    """The CRM refused a whole write batch; ``record_index`` names the offending record when it said which.

    Nothing in the batch was written. Split the batch and resend the halves to isolate the bad record.
    """

    def __init__(self, message: str, *, record_index: int | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.record_index = record_index


class CrmBatchTooLarge(CrmError, ValueError):
    """Raised before sending: the batch is larger than the connector's ``max_batch_size``."""


class CrmProtocolError(CrmError):
    """The CRM answered with something this connector does not understand."""


@dataclass(frozen=True)
class RecordResult:
    """The outcome for one record of a write, in the order the records were sent.

    ``key`` is what the record was sent with: its ``id`` for an update, the value of the
    duplicate check field for an upsert.
    """

    key: str
    ok: bool
    crm_id: str | None = None
    code: str | None = None
    message: str | None = None
    field: str | None = None
    action: str | None = None  # "insert" or "update" when ok


class Pacer:
    """At most ``requests`` sends per sliding ``window`` seconds per key: waits rather than be refused."""

    def __init__(self, requests_: int, window: float, clock: Callable[[], float], sleep: Callable[[float], None]):
        self._limit, self._window, self._clock, self._sleep = requests_, window, clock, sleep
        self._sent: dict[str, deque[float]] = {}

    def wait(self, key: str) -> None:
        sent = self._sent.setdefault(key, deque())
        now = self._clock()
        while sent and sent[0] <= now - self._window:
            sent.popleft()
        at = now
        if len(sent) >= self._limit:
            at = sent.popleft() + self._window
            self._sleep(at - now)
        sent.append(max(at, now))


def parse_crm_time(value: str) -> datetime:
    """A CRM timestamp as an aware datetime. Compare these, never the strings: the offset is the org's."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"CRM timestamp without an offset: {value!r}")
    return parsed


class CrmConnector(abc.ABC):
    """What the sync needs from a CRM."""

    provider: str
    max_batch_size: int

    @abc.abstractmethod
    def iter_modified(
        self, module: str, since: datetime | None, fields: Sequence[str]
    ) -> Iterator[dict[str, Any]]:
        """Every record of ``module`` modified after ``since`` (all records when ``None``), page by page.

        Each record carries ``id``, ``Modified_Time`` and ``Modified_By`` besides ``fields``.
        """

    @abc.abstractmethod
    def update(self, module: str, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Write ``records`` (each with the CRM's ``id``) to existing records; one result per record.

        Never creates: an id the CRM does not know is a failed result. Raises ``CrmBatchTooLarge``
        before sending more than ``max_batch_size`` records, and ``CrmBatchRejected`` when the CRM
        refuses the batch as a whole.
        """

    @abc.abstractmethod
    def upsert(
        self, module: str, records: Sequence[Mapping[str, Any]], duplicate_check_field: str
    ) -> list[RecordResult]:
        """Create or update ``records`` matched on ``duplicate_check_field``; one result per record.

        Idempotent: sending the same records twice (a retry after a timeout) leaves one record each.
        Raises like ``update``.
        """

    @abc.abstractmethod
    def current_user(self) -> dict[str, Any]:
        """The CRM user the connector writes as (``id``): the ``Modified_By`` of every record it writes."""

    @property
    @abc.abstractmethod
    def calls_made(self) -> int:
        """HTTP requests sent to the CRM API, retries included (token requests excluded)."""

    @property
    @abc.abstractmethod
    def credits_used(self) -> int:
        """API credits (or calls, where the CRM counts calls) this connector has spent, by its own count."""

    @property
    def credits_remaining(self) -> int | None:
        """What the CRM last said is left of its own budget, when it says so."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release network resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class HttpCrmConnector(CrmConnector):
    """What the HTTP connectors share: retry and backoff settings, pacing, the call count, the session."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        credit_budget: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._credit_budget = credit_budget
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._pacer = Pacer(*rate_limit, clock, sleep) if rate_limit else None
        self._calls_made = 0
        self.token_refreshes = 0

    @property
    def calls_made(self) -> int:
        return self._calls_made

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform between zero and the capped exponential step."""
        return self._rng.uniform(0.0, min(self._backoff_max, self._backoff_base * (2**attempt)))


class ZohoCrmConnector(HttpCrmConnector):
    """Zoho CRM REST API v8 over OAuth 2 (self-client refresh token).

    ``api_base`` is the data centre's API domain (``https://www.zohoapis.eu``) and ``accounts_base``
    its accounts server (``https://accounts.zoho.eu``). Not thread-safe: use one per worker.

    Every API attempt is charged one credit against ``credit_budget`` before it is sent, retries
    included, because a retried call may well have been billed by Zoho.
    """

    provider = "zoho"
    max_batch_size = ZOHO_MAX_UPSERT_BATCH

    def __init__(
        self,
        api_base: str,
        accounts_base: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        trigger: Sequence[str] | None = None,
        **options: Any,
    ):
        """``options``: ``HttpCrmConnector``'s (timeout, retries, backoff, budget, pacing, session, clock)."""
        # Zoho meters credits per day, not calls per window: no pacing unless configured.
        super().__init__(**options)
        self._api_root = f"{api_base.rstrip('/')}/crm/{ZOHO_API_VERSION}"
        self._token_url = f"{accounts_base.rstrip('/')}/oauth/v2/token"
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        # None leaves Zoho's default (workflows, approvals and blueprints run); [] runs none of them.
        self._trigger = None if trigger is None else list(trigger)
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        self._credits_used = 0
        self._credits_remaining: int | None = None

    @property
    def credits_used(self) -> int:
        return self._credits_used

    @property
    def credits_remaining(self) -> int | None:
        return self._credits_remaining

    def iter_modified(
        self,
        module: str,
        since: datetime | None,
        fields: Sequence[str],
        *,
        per_page: int = ZOHO_MAX_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        wanted = list(dict.fromkeys([*fields, "Modified_Time", "Modified_By"]))
        if len(wanted) > ZOHO_MAX_FIELDS:
            raise ValueError(
                f"Zoho returns at most {ZOHO_MAX_FIELDS} fields per request, asked for {len(wanted)}"
            )
        if not 1 <= per_page <= ZOHO_MAX_PAGE_SIZE:
            raise ValueError(f"per_page must be within 1..{ZOHO_MAX_PAGE_SIZE}")
        headers = {}
        if since is not None:
            if since.tzinfo is None:
                raise ValueError("since must be timezone-aware")
            headers["If-Modified-Since"] = since.isoformat(timespec="seconds")
        base = {
            "fields": ",".join(wanted),
            "per_page": per_page,
            "sort_by": "Modified_Time",
            "sort_order": "asc",
        }
        params: dict[str, Any] = {**base, "page": 1}
        while True:
            response = self._api("GET", f"/{module}", params=params, headers=headers)
            if response.status_code in (204, 304):
                return
            payload = self._expect_json(response)
            yield from payload.get("data") or []
            info = payload.get("info") or {}
            if not info.get("more_records"):
                return
            # `page` stops at 2000 records; the token goes all the way and must be sent without it.
            next_token = info.get("next_page_token")
            if next_token:
                params = {**base, "page_token": next_token}
            else:
                params = {**base, "page": int(info.get("page") or params.get("page", 1)) + 1}

    def upsert(
        self, module: str, records: Sequence[Mapping[str, Any]], duplicate_check_field: str
    ) -> list[RecordResult]:
        keys = self._batch_keys(records, duplicate_check_field)
        if not keys:
            return []
        body: dict[str, Any] = {
            "data": [dict(r) for r in records],
            "duplicate_check_fields": [duplicate_check_field],
        }
        return self._write("POST", f"/{module}/upsert", module, keys, body)

    def update(self, module: str, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        keys = self._batch_keys(records, "id")
        if not keys:
            return []
        return self._write("PUT", f"/{module}", module, keys, {"data": [dict(r) for r in records]})

    def _batch_keys(self, records: Sequence[Mapping[str, Any]], key_field: str) -> list[str]:
        if len(records) > self.max_batch_size:
            raise CrmBatchTooLarge(
                f"{len(records)} records in one write; Zoho accepts at most {self.max_batch_size}"
            )
        keys = []
        for index, record in enumerate(records):
            value = record.get(key_field)
            if value is None or value == "":
                raise ValueError(f"record {index} has no {key_field}")
            keys.append(str(value))
        if len(set(keys)) != len(keys):
            raise ValueError(f"the batch repeats a {key_field}; Zoho would apply both writes to one record")
        return keys

    def _write(self, method: str, path: str, module: str, keys: list[str], body: dict[str, Any]) -> list[RecordResult]:
        if self._trigger is not None:
            body["trigger"] = self._trigger
        response = self._api(method, path, json_body=body, per_record_400=True)
        payload = _decode(response)
        items = payload.get("data") if isinstance(payload, dict) else None
        per_record = (
            isinstance(items, list)
            and len(items) == len(keys)
            and all(isinstance(item, dict) and "status" in item for item in items)
        )
        # Zoho answers 200/201 when all records were written, 207 when some were, and 400 with one
        # entry per record when none were; any other 400 is about the request as a whole.
        if per_record and response.status_code in (200, 201, 202, 207, 400):
            return [_record_result(key, item, method) for key, item in zip(keys, items, strict=True)]
        if response.status_code == 400:
            code, message, details = _error_parts(payload)
            raise CrmBatchRejected(
                f"Zoho rejected the whole write batch of {len(keys)} into {module}: {code} {message} {details}",
                status=400,
                code=code,
                body=payload,
                record_index=_record_index(details),
            )
        if 200 <= response.status_code < 300:
            raise CrmProtocolError(
                f"write of {len(keys)} records returned {len(items) if isinstance(items, list) else 'no'} results",
                status=response.status_code,
                body=payload,
            )
        raise self._request_error(response, payload)

    def get_records(
        self,
        module: str,
        fields: Sequence[str],
        external_ids: Iterable[str] | None = None,
        *,
        id_field: str | None = None,
    ) -> list[dict[str, Any]]:
        if external_ids is None:
            return list(self.iter_modified(module, None, fields))
        if not id_field:
            raise ValueError("id_field is required when external_ids are given")
        wanted = list(dict.fromkeys(str(v) for v in external_ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), ZOHO_MAX_SEARCH_CRITERIA):
            chunk = wanted[start : start + ZOHO_MAX_SEARCH_CRITERIA]
            criteria = "or".join(f"({id_field}:equals:{_escape_criteria(v)})" for v in chunk)
            params = {
                "criteria": f"({criteria})" if len(chunk) > 1 else criteria,
                "fields": ",".join(dict.fromkeys([*fields, id_field, "Modified_Time", "Modified_By"])),
                "per_page": ZOHO_MAX_PAGE_SIZE,
            }
            response = self._api("GET", f"/{module}/search", params=params)
            if response.status_code == 204:
                continue
            found.extend(self._expect_json(response).get("data") or [])
        return found

    def get_record(self, module: str, crm_id: str) -> dict[str, Any] | None:
        """One record by its CRM id, all fields; ``None`` when there is no such record."""
        response = self._api("GET", f"/{module}/{crm_id}")
        if response.status_code == 204:
            return None
        data = self._expect_json(response).get("data") or []
        return data[0] if data else None

    def current_user(self) -> dict[str, Any]:
        """The CRM user the refresh token belongs to: the ``Modified_By`` of every record the sync writes."""
        response = self._api("GET", "/users", params={"type": "CurrentUser"})
        users = self._expect_json(response).get("users") or []
        if not users:
            raise CrmProtocolError("Zoho returned no current user", status=response.status_code)
        return users[0]

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        per_record_400: bool = False,
    ) -> requests.Response:
        url = self._api_root + path
        response = self._send(method, url, params=params, headers=headers, json_body=json_body, api=True)
        if response.status_code == 401:
            code, message, _ = _error_parts(_decode(response))
            # A scope mismatch is a configuration problem that a new token from the same grant won't fix.
            if code != "OAUTH_SCOPE_MISMATCH":
                log.debug("crm token refused (%s); refreshing once", code)
                self._access_token = None
                response = self._send(
                    method, url, params=params, headers=headers, json_body=json_body, api=True
                )
        if response.status_code == 401:
            payload = _decode(response)
            code, message, _ = _error_parts(payload)
            raise CrmAuthError(
                f"Zoho refused the access token: {code} {message}", status=401, code=code, body=payload
            )
        if response.status_code >= 400 and not (per_record_400 and response.status_code == 400):
            raise self._request_error(response, _decode(response))
        return response

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        api: bool,
    ) -> requests.Response:
        """One logical request: retries 429, 5xx, connection errors and timeouts with backoff."""
        attempt = 0
        while True:
            request_headers = dict(headers or {})
            if api:
                if self._pacer is not None:
                    self._pacer.wait("api")
                self._check_budget()
                request_headers["Authorization"] = f"Zoho-oauthtoken {self._token()}"
                self._credits_used += 1
                self._calls_made += 1
            started = time.perf_counter()
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    headers=request_headers,
                    json=json_body,
                    data=form,
                    timeout=self._timeout,
                )
            except _TRANSPORT_ERRORS as exc:
                log.debug(
                    "crm %s %s failed after %.0f ms (attempt %d): %s",
                    method,
                    url,
                    _ms(started),
                    attempt + 1,
                    type(exc).__name__,
                )
                if attempt >= self._max_retries:
                    raise CrmUnavailable(
                        f"{method} {url} failed {attempt + 1} times; last error: {type(exc).__name__}: {exc}"
                    ) from exc
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            log.debug(
                "crm %s %s -> %d in %.0f ms (attempt %d)",
                method,
                response.url,
                response.status_code,
                _ms(started),
                attempt + 1,
            )
            if api:
                self._note_credits(response)
            status = response.status_code
            if status != 429 and status not in _RETRYABLE_STATUS:
                return response
            if attempt >= self._max_retries:
                payload = _decode(response)
                code, message, _ = _error_parts(payload)
                error = CrmRateLimited if status == 429 else CrmUnavailable
                raise error(
                    f"{method} {url} still answered {status} after {attempt + 1} attempts: {code} {message}",
                    status=status,
                    code=code,
                    body=payload,
                )
            delay = _retry_after(response) if status == 429 else None
            self._sleep(self._backoff(attempt) if delay is None else delay)
            attempt += 1

    def _token(self) -> str:
        if self._access_token is None or self._clock() >= self._token_expires_at:
            self._refresh()
        return self._access_token

    def _refresh(self) -> None:
        # Credentials go in the form body, not the query string, so they never reach a URL log line.
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        response = self._send("POST", self._token_url, form=form, api=False)
        payload = _decode(response)
        # Zoho's accounts server reports a bad grant with HTTP 200 and an "error" key.
        if not isinstance(payload, dict) or "access_token" not in payload:
            error = payload.get("error") if isinstance(payload, dict) else None
            raise CrmAuthError(
                f"Zoho accounts refused the refresh token: HTTP {response.status_code} {error or 'no access_token'}",
                status=response.status_code,
                code=error,
            )
        expires_in = float(payload.get("expires_in") or 3600)
        # Renew a little early so a token does not lapse between the check and the request.
        self._token_expires_at = self._clock() + expires_in - min(60.0, expires_in * 0.1)
        self._access_token = payload["access_token"]
        self.token_refreshes += 1
        log.debug("crm access token refreshed; valid for %.0f s", expires_in)

    def _check_budget(self, cost: int = 1) -> None:
        if self._credit_budget is not None and self._credits_used + cost > self._credit_budget:
            raise CrmBudgetExceeded(
                f"credit budget of {self._credit_budget} reached ({self._credits_used} used); not sending"
            )
        if self._credits_remaining is not None and self._credits_remaining < cost:
            raise CrmBudgetExceeded(f"Zoho reports {self._credits_remaining} API credits left; not sending")

    def _note_credits(self, response: requests.Response) -> None:
        # Zoho sends this only once half of the 24-hour allowance is spent.
        remaining = response.headers.get("X-API-CREDITS-REMAINING")
        if remaining is not None:
            try:
                self._credits_remaining = int(remaining)
            except ValueError:
                log.debug("crm ignoring unparsable X-API-CREDITS-REMAINING %r", remaining)

    def _request_error(self, response: requests.Response, payload: Any) -> CrmRequestError:
        code, message, details = _error_parts(payload)
        return CrmRequestError(
            f"{response.request.method} {response.url} -> {response.status_code}: {code} {message} {details}",
            status=response.status_code,
            code=code,
            body=payload,
        )

    def _expect_json(self, response: requests.Response) -> dict[str, Any]:
        payload = _decode(response)
        if not isinstance(payload, dict):
            raise CrmProtocolError(
                f"expected a JSON object from {response.url}, got {str(payload)[:200]!r}",
                status=response.status_code,
                body=payload,
            )
        return payload


def _record_result(key: str, item: Mapping[str, Any], method: str) -> RecordResult:
    details = item.get("details") or {}
    ok = item.get("status") == "success"
    # An update by id answers no "action"; it can only have updated.
    action = item.get("action") or ("update" if method == "PUT" else None)
    return RecordResult(
        key=key,
        ok=ok,
        crm_id=details.get("id") if ok else None,
        code=item.get("code"),
        message=item.get("message"),
        field=None if ok else details.get("api_name"),
        action=action if ok else None,
    )


def _decode(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_parts(payload: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    if isinstance(payload, dict):
        if isinstance(payload.get("data"), list) and payload["data"] and isinstance(payload["data"][0], dict):
            payload = payload["data"][0]
        details = payload.get("details")
        return payload.get("code"), payload.get("message"), details if isinstance(details, dict) else {}
    return None, None if payload is None else str(payload)[:200], {}


def _record_index(details: Mapping[str, Any]) -> int | None:
    match = re.match(r"\$\.data\[(\d+)\]", str(details.get("json_path") or ""))
    return int(match.group(1)) if match else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _escape_criteria(value: str) -> str:
    return re.sub(r"([(),\\])", r"\\\1", value)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
