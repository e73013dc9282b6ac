"""A local stand-in for the 纷享销客 (Fxiaoke) open platform's CRM object API, over real HTTP.

It serves, on one loopback port, the calls ``tierline.crm.fxiaoke`` uses, in the shapes the
published docs give (sources in docs/crm.md):

- ``POST /cgi/corpAccessToken/get/V2`` with ``appId``, ``appSecret``, ``permanentCode``: a
  ``corpAccessToken`` valid 7200 s (the same one is returned during its first 6600 s, a new one
  after), the ``corpId`` and ``expiresIn``;
- ``POST /cgi/crm/v2/data/query`` (``search_query_info``: ``limit`` ≤ 100, ``offset`` a multiple
  of it and ≤ 10000, ``filters`` with EQ N GT GTE LT LTE IN NIN IS ISN, ``orders``,
  ``fieldProjection``), ``/data/get``, ``/data/create`` and ``/data/update`` (one record each:
  ``data.object_data`` with ``dataObjectApiName``; ``_id`` for an update); objects whose api
  name ends in ``__c`` under ``/cgi/crm/custom/v2/data/*`` instead;
- every call carries ``corpAccessToken``, ``corpId`` and ``currentOpenUserId`` in its body;
- answers are HTTP 200 with ``errorCode`` (0 = success), ``errorMessage``, ``traceId``; an expired
  or unknown token is 20016, a missing one 20017, the per-interface frequency limit 30004, the
  daily allowance 30002; injected 5xx faults are plain gateway errors;
- numbers travel as strings, dates and times as epoch milliseconds; a record carries ``_id``,
  ``owner``, ``create_time``, ``last_modified_time``, ``last_modified_by`` (a list of user ids)
  and ``last_modified_by__r`` (``{"id", "name"}``).

Deliberate choices where the docs say nothing: a field the object does not describe, a value
outside a picklist's options, a malformed number and a record id that does not exist are all
refused with errorCode 32000 (参数错误) and a message naming the field; ``reject_records`` uses
the same shape. Every accepted write moves ``last_modified_time`` and sets the caller as
``last_modified_by``, even when no value changed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any

from tierline_dev.crm_emulators.base import (
    Abort,
    CrmEmulatorBase,
    Fault,
    FieldSpec,
    ModuleSpec,
    Reply,
    json_or_none,
)

TOKEN_PATH = "/cgi/corpAccessToken/get/V2"
PRESET_PREFIX = "/cgi/crm/v2/data/"
CUSTOM_PREFIX = "/cgi/crm/custom/v2/data/"
MAX_LIMIT = 100
MAX_OFFSET = 10_000
TOKEN_LIFETIME = 7200
TOKEN_REUSED_FOR = 6600
CHINA = timezone(timedelta(hours=8))
SYSTEM_FIELDS = ("_id", "owner", "created_by", "create_time", "last_modified_by", "last_modified_by__r",
                 "last_modified_time", "life_status", "is_deleted", "object_describe_api_name", "record_type",
                 "version")
OPERATORS = {"EQ": "=", "N": "<>", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "IN": "IN", "NIN": "NOT IN",
             "IS": "IS NULL", "ISN": "IS NOT NULL"}
TIME_COLUMNS = {"_id": "id", "create_time": "created", "last_modified_time": "modified"}

INTEGRATION_USER = {"id": "FSUID_TIERLINE0000000000000000001", "name": "tierline 集成"}
DEFAULT_PERSON = {"id": "FSUID_5F3A3DE57C604A00017DC5EE0001", "name": "王晓明"}
DEFAULT_APP_ID = "FSAID_1318604"
DEFAULT_APP_SECRET = "emulator-app-secret"
DEFAULT_PERMANENT_CODE = "EMULATOR0PERMANENT0CODE0000000001"
DEFAULT_CORP_ID = "FSCID_EMULATOR0000000000000000001"

ERRORS = {
    20016: "the cropId,cropAccessToken or authorization is error",
    20017: "corpAccessToken为必填项，不能为空",
    20006: "appId或appSecret错误",
    20015: "永久授权码错误",
    30002: "当天访问频次超限",
    30004: "秒频次超限",
    32000: "参数错误",
}

DEFAULT_MODULES: dict[str, ModuleSpec] = {
    "AccountObj": ModuleSpec({
        "name": FieldSpec(max_length=200, mandatory=True),
        "tel": FieldSpec(max_length=30),
        "tierline_customer_id__c": FieldSpec(max_length=64),
    }),
}


def _error(code: int, message: str | None = None) -> dict[str, Any]:
    return {"errorCode": code, "errorMessage": message or ERRORS.get(code, "error"),
            "errorDescription": ERRORS.get(code, "error"), "traceId": f"E-O.emulator.{secrets.token_hex(8)}"}


def _abort(code: int, message: str | None = None) -> Abort:
    return Abort(Reply(200, _error(code, message)))


def _ok(**fields: Any) -> dict[str, Any]:
    return {"errorCode": 0, "errorMessage": "OK", "errorDescription": "success",
            "traceId": f"E-O.emulator.{secrets.token_hex(8)}", **fields}


class FxiaokeEmulator(CrmEmulatorBase):
    """纷享销客: ``with FxiaokeEmulator() as crm:``, then ``FxiaokeConnector(**crm.connector_kwargs())``."""

    server_version = "FxiaokeOpenApiEmulator/1.0"
    provider = "fxiaoke"
    time_unit = 1000
    default_person = DEFAULT_PERSON
    default_rejection_code = "32000"
    default_rejection_message = "数据校验失败"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        db_path: str = ":memory:",
        modules: Mapping[str, ModuleSpec] | None = None,
        app_id: str = DEFAULT_APP_ID,
        app_secret: str = DEFAULT_APP_SECRET,
        permanent_code: str = DEFAULT_PERMANENT_CODE,
        corp_id: str = DEFAULT_CORP_ID,
        integration_user: Mapping[str, str] = INTEGRATION_USER,
        max_offset: int = MAX_OFFSET,
    ):
        self.app_id = app_id
        self.app_secret = app_secret
        self.permanent_code = permanent_code
        self.corp_id = corp_id
        self.max_offset = max_offset
        self._users = {integration_user["id"]: dict(integration_user), DEFAULT_PERSON["id"]: dict(DEFAULT_PERSON)}
        self._integration_user = dict(integration_user)
        super().__init__(host, port, db_path=db_path, modules=DEFAULT_MODULES if modules is None else modules,
                         org_tz=CHINA, token_ttl=TOKEN_LIFETIME)

    def _reset_state(self) -> None:
        super()._reset_state()
        self._current_token: tuple[str, float] | None = None

    def connector_kwargs(self) -> dict[str, str]:
        """The connection settings of ``FxiaokeConnector`` for this emulator."""
        return {"api_base": self.api_base, "app_id": self.app_id, "app_secret": self.app_secret,
                "permanent_code": self.permanent_code, "open_user_id": self._integration_user["id"]}

    def expire_tokens(self) -> None:
        with self._lock:
            super().expire_tokens()
            self._current_token = None

    def add_user(self, user: Mapping[str, str]) -> None:
        """A CRM user (``id`` an openUserId ``FSUID_...``, ``name``) who may call the API or edit records."""
        with self._lock:
            self._users[user["id"]] = dict(user)

    # -- base hooks -------------------------------------------------------------------------------

    def _is_api(self, path: str) -> bool:
        return path.startswith((PRESET_PREFIX, CUSTOM_PREFIX))

    def _is_write(self, method: str, path: str) -> bool:
        return self._is_api(path) and path.rsplit("/", 1)[-1] in ("create", "update")

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.status == 429:
            return Reply(200, _error(30004))
        return Reply(fault.status, "<html><body><h1>502 Bad Gateway</h1></body></html>"
                     if fault.status == 502 else {"status": fault.status, "error": "Internal Server Error"})

    def _rate_limited_reply(self, wait_seconds: float, with_retry_after: bool) -> Reply:
        return Reply(200, _error(30004))

    def _quota_reply(self) -> Reply:
        return Reply(200, _error(30002))

    def _error_code(self, reply: Reply) -> str | None:
        body = reply.body
        if isinstance(body, dict) and body.get("errorCode"):
            return str(body["errorCode"])
        return None

    def _module_spec(self, module: str) -> ModuleSpec:
        spec = self._modules.get(module)
        if spec is None:
            raise _abort(32000, f"对象[{module}]不存在")
        return spec

    def _store_new(self, module: str, spec: ModuleSpec, record_id: str, values: dict[str, Any],
                   user: dict[str, str]) -> None:
        clean = self._validated(spec, values)
        now = self._stamp()
        record = {**clean, "_id": record_id, "owner": [user["id"]], "created_by": [user["id"]], "create_time": now,
                  "life_status": "normal", "is_deleted": False, "object_describe_api_name": module,
                  "record_type": "default__c", "version": "1"}
        self._touch(record, user, now)
        self._store.put(module, record, now, now, spec.unique_fields, key="_id")

    def _store_edit(self, module: str, spec: ModuleSpec, record_id: str, changes: dict[str, Any],
                    user: dict[str, str]) -> dict[str, Any]:
        record = self._store.get(module, record_id)
        record.update(self._validated(spec, changes))
        now = self._stamp()
        self._touch(record, user, now)
        self._store.put(module, record, record["create_time"], now, spec.unique_fields, key="_id")
        return record

    def _validated(self, spec: ModuleSpec, values: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return _validate(spec, values)
        except _Refused as refused:
            raise ValueError(str(refused)) from None

    def _touch(self, record: dict[str, Any], user: Mapping[str, str], now: int) -> None:
        record["last_modified_time"] = now
        record["last_modified_by"] = [user["id"]]
        record["last_modified_by__r"] = {"id": user["id"], "name": user.get("name", user["id"])}
        record["version"] = str(int(record.get("version", "0")) + 1)

    def _new_id(self, module: str) -> str:
        # 24 hex digits like the platform's ids (a time part, then a counter).
        while True:
            candidate = f"{int(self._now()):08x}{self._store.next_number():016x}"
            if self._store.get(module, candidate) is None:
                return candidate

    # -- request handling -------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes,
               label: str) -> Reply:
        if method != "POST":
            return Reply(405, {"error": "method not allowed"})
        payload = json_or_none(body)
        if not isinstance(payload, dict):
            raise _abort(32000, "请求体不是合法的JSON")
        if path == TOKEN_PATH:
            return self._token(payload)
        if not self._is_api(path):
            return Reply(404, {"error": f"no such interface {path}"})
        user = self._authenticate(payload)
        self._admit(label)
        custom = path.startswith(CUSTOM_PREFIX)
        action = path.rsplit("/", 1)[-1]
        data = payload.get("data")
        if not isinstance(data, dict):
            raise _abort(32000, "data为必填项")
        handlers = {"query": self._query, "get": self._get, "create": self._create, "update": self._update}
        if action not in handlers:
            return Reply(404, {"error": f"no such interface {path}"})
        module = (data.get("object_data") or {}).get("dataObjectApiName") if action in ("create", "update") \
            else data.get("dataObjectApiName")
        if not module:
            raise _abort(32000, "dataObjectApiName为必填项")
        if module.endswith("__c") != custom:
            raise _abort(32000, f"对象[{module}]请使用{'自定义' if module.endswith('__c') else '预置'}对象接口")
        return handlers[action](module, data, user)

    def _token(self, payload: dict[str, Any]) -> Reply:
        self._counters.token_requests += 1
        if payload.get("appId") != self.app_id or payload.get("appSecret") != self.app_secret:
            return Reply(200, _error(20006))
        if payload.get("permanentCode") != self.permanent_code:
            return Reply(200, _error(20015))
        now = self._now()
        if self._current_token is None or now - self._current_token[1] >= TOKEN_REUSED_FOR \
                or not self._token_valid(self._current_token[0]):
            token = secrets.token_hex(16).upper()
            self._tokens[token] = now + TOKEN_LIFETIME
            self._current_token = (token, now)
        token, issued = self._current_token
        return Reply(200, _ok(corpAccessToken=token, corpId=self.corp_id,
                              expiresIn=int(TOKEN_LIFETIME - (now - issued))))

    def _authenticate(self, payload: dict[str, Any]) -> dict[str, str]:
        token = payload.get("corpAccessToken")
        if not token:
            raise _abort(20017)
        if payload.get("corpId") != self.corp_id or not self._token_valid(token):
            raise _abort(20016)
        user = self._users.get(payload.get("currentOpenUserId") or "")
        if user is None:
            raise _abort(32000, "currentOpenUserId不合法")
        return user

    def _query(self, module: str, data: dict[str, Any], user: dict[str, str]) -> Reply:
        spec = self._module_spec(module)
        info = data.get("search_query_info")
        if not isinstance(info, dict):
            raise _abort(32000, "search_query_info为必填项")
        limit, offset = info.get("limit"), info.get("offset")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise _abort(32000, f"limit必须在1到{MAX_LIMIT}之间")
        if not isinstance(offset, int) or offset < 0 or offset % limit:
            raise _abort(32000, "offset必须是limit的整数倍")
        if offset > self.max_offset:
            raise _abort(10013, f"offset out of range {self.max_offset}")
        known = set(spec.fields) | set(SYSTEM_FIELDS)
        where, args = ["module = ?"], [module]
        for item in info.get("filters") or []:
            clause, values = self._filter(item, known)
            where.append(clause)
            args.extend(values)
        order = []
        for item in info.get("orders") or []:
            name = item.get("fieldName")
            if name not in known:
                raise _abort(32000, f"排序字段[{name}]不存在")
            order.append(f"{_column(name)} {'ASC' if item.get('isAsc', True) else 'DESC'}")
        projection = info.get("fieldProjection")
        if projection is not None:
            unknown = [name for name in projection if name not in known]
            if unknown:
                raise _abort(32000, f"字段[{unknown[0]}]不存在")
        rows = self._store.select(" AND ".join(where), args, ", ".join(order or ["id ASC"]), limit, offset)
        records = [_project(r, projection) for r in rows]
        total = self._store.count(" AND ".join(where), args) if data.get("find_explicit_total_num", True) else 0
        return Reply(200, _ok(data={"dataList": records, "offset": offset, "limit": limit, "total": total}))

    def _filter(self, item: Any, known: set[str]) -> tuple[str, list[Any]]:
        if not isinstance(item, dict):
            raise _abort(32000, "filters格式不正确")
        name, operator, values = item.get("field_name"), item.get("operator"), item.get("field_values")
        if name not in known:
            raise _abort(32000, f"过滤字段[{name}]不存在")
        if operator not in OPERATORS:
            raise _abort(32000, f"operator[{operator}]不支持")
        if not isinstance(values, list):
            raise _abort(32000, "field_values必须是列表")
        column = _column(name)
        if operator in ("IS", "ISN"):
            return f"{column} {OPERATORS[operator]}", []
        cast = (lambda v: int(v)) if name in ("create_time", "last_modified_time") else str
        try:
            values = [cast(v) for v in values]
        except (TypeError, ValueError):
            raise _abort(32000, f"过滤字段[{name}]的值不合法") from None
        if operator in ("IN", "NIN"):
            return f"{column} {OPERATORS[operator]} ({', '.join('?' * len(values)) or 'NULL'})", values
        if len(values) != 1:
            raise _abort(32000, f"过滤字段[{name}]需要一个值")
        return f"{column} {OPERATORS[operator]} ?", values

    def _get(self, module: str, data: dict[str, Any], user: dict[str, str]) -> Reply:
        self._module_spec(module)
        record = self._store.get(module, str(data.get("objectDataId") or ""))
        if record is None:
            raise _abort(32000, "数据不存在或已作废")
        return Reply(200, _ok(data=record))

    def _create(self, module: str, data: dict[str, Any], user: dict[str, str]) -> Reply:
        spec = self._module_spec(module)
        values = {k: v for k, v in data["object_data"].items() if k != "dataObjectApiName"}
        refused = self._refusal(values, module)
        if refused is not None:
            return refused
        try:
            clean = _validate(spec, values)
        except _Refused as problem:
            return Reply(200, _error(32000, str(problem)))
        missing = [name for name, field in spec.fields.items() if field.mandatory and clean.get(name) in (None, "")]
        if missing:
            return Reply(200, _error(32000, f"字段[{missing[0]}]为必填项"))
        duplicate = self._duplicate(module, spec, clean, None)
        if duplicate is not None:
            return duplicate
        record_id = self._new_id(module)
        self._store_new_from_api(module, spec, record_id, clean, user)
        self._counters.records_written += 1
        return Reply(200, _ok(dataId=record_id))

    def _update(self, module: str, data: dict[str, Any], user: dict[str, str]) -> Reply:
        spec = self._module_spec(module)
        values = {k: v for k, v in data["object_data"].items() if k not in ("dataObjectApiName", "_id")}
        record_id = str(data["object_data"].get("_id") or "")
        if not record_id:
            return Reply(200, _error(32000, "_id为必填项"))
        refused = self._refusal({**values, "_id": record_id}, module)
        if refused is not None:
            return refused
        if self._store.get(module, record_id) is None:
            return Reply(200, _error(32000, f"数据[{record_id}]不存在或已作废"))
        try:
            clean = _validate(spec, values)
        except _Refused as problem:
            return Reply(200, _error(32000, str(problem)))
        duplicate = self._duplicate(module, spec, clean, record_id)
        if duplicate is not None:
            return duplicate
        with self._store.transaction():
            self._store_edit(module, spec, record_id, clean, user)
        self._counters.records_written += 1
        return Reply(200, _ok(dataId=record_id))

    def _store_new_from_api(self, module: str, spec: ModuleSpec, record_id: str, clean: dict[str, Any],
                            user: dict[str, str]) -> None:
        with self._store.transaction():
            self._store_new(module, spec, record_id, clean, user)

    def _refusal(self, values: Mapping[str, Any], module: str) -> Reply | None:
        spec = self._modules[module]
        keys = [values.get("_id"), *(values.get(f) for f in spec.unique_fields)]
        rejection = self._rejection_for(k for k in keys if k not in (None, ""))
        if rejection is None:
            return None
        field = f"字段[{rejection.field}]" if rejection.field else "数据"
        return Reply(200, _error(int(rejection.code), f"{field}{rejection.message}"))

    def _duplicate(self, module: str, spec: ModuleSpec, clean: Mapping[str, Any], record_id: str | None) -> Reply | None:
        for name in spec.unique_fields:
            if clean.get(name) in (None, ""):
                continue
            holder = self._store.find(module, name, clean[name], indexed=True)
            if holder is not None and holder != record_id:
                return Reply(200, _error(32000, f"字段[{name}]的值[{clean[name]}]与已有数据[{holder}]重复"))
        return None


class _Refused(ValueError):
    pass


def _column(name: str) -> str:
    if name in TIME_COLUMNS:
        return TIME_COLUMNS[name]
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        raise _abort(32000, f"字段[{name}]不存在")
    return f"json_extract(data, '$.\"{name}\"')"


def _project(record: dict[str, Any], projection: list[str] | None) -> dict[str, Any]:
    if not projection:
        return record
    wanted = {"_id", *projection}
    if "last_modified_by" in wanted:
        wanted.add("last_modified_by__r")
    return {k: v for k, v in record.items() if k in wanted}


def _validate(spec: ModuleSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values as the platform stores them; ``_Refused`` names the first bad field."""
    clean: dict[str, Any] = {}
    for name, value in values.items():
        field = spec.fields.get(name)
        if field is None:
            raise _Refused(f"字段[{name}]不存在")
        if value is None or value == "":
            clean[name] = None
            continue
        clean[name] = _typed(name, field, value)
    return clean


def _typed(name: str, field: FieldSpec, value: Any) -> Any:
    if field.type in ("double", "integer"):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise _Refused(f"字段[{name}]的值[{value}]不是数字") from None
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _Refused(f"字段[{name}]的值[{value}]不是数字")
        if field.type == "integer" and float(number) != int(number):
            raise _Refused(f"字段[{name}]的值[{value}]不是整数")
        return str(value)  # numbers are kept and answered as strings
    if field.type == "boolean":
        if not isinstance(value, bool):
            raise _Refused(f"字段[{name}]的值[{value}]不是布尔值")
        return value
    if field.type in ("date", "datetime"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Refused(f"字段[{name}]的值[{value}]不是毫秒时间戳")
        return value
    if not isinstance(value, str):
        raise _Refused(f"字段[{name}]的值[{value}]不是文本")
    if len(value) > field.max_length:
        raise _Refused(f"字段[{name}]超过最大长度{field.max_length}")
    if field.type == "picklist" and value not in field.values:
        raise _Refused(f"字段[{name}]的值[{value}]不是有效的选项")
    return value


def epoch_ms(day: date) -> int:
    """A date as the platform stores it: midnight in China, epoch milliseconds."""
    return int(datetime(day.year, day.month, day.day, tzinfo=CHINA).timestamp() * 1000)
