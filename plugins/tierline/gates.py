"""Quality gates: the committed Great Expectations suites of a gate, validated inside PostgreSQL.

A gate (``raw``, ``staging``, ``marts``) is the folder ``expectations/<gate>/``; every
``<suite>.json`` in it is a GX 1.x ExpectationSuite whose ``meta.table`` names the table and
whose ``meta.schema`` is a logical schema key that the caller maps to the schema of this run.
``expectations/README.md`` describes the format.

Great Expectations runs in an ephemeral context: nothing is written into the project, and the
connection string only reaches GX as a runtime variable, so no password is ever serialised.
GX takes seconds to import, so it is imported inside the functions that need it.

With an ``out_dir`` (the run folder) a gate also keeps GX's own suites and validation results
there (``gx_results/``); ``build_data_docs`` renders the run's GX Data Docs site
(``gx_docs/index.html``) from them, listing every gate the run has validated so far. The
pipeline renders it once a run: after its last gate, or after the gate that failed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierline import settings, warehouse
from tierline.errors import TransientError

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning")
DOCS_DIR = "gx_docs"  # the run's GX Data Docs site, in the run folder
RESULTS_DIR = "gx_results"  # GX's own suites and validation results the site is built from
DOCS_SITE = "run"
UNEXPECTED_ROWS = "unexpected_rows_expectation"
PARTIAL_UNEXPECTED_COUNT = 5

# BASIC yields unexpected and element counts. Its sample of unexpected values costs one more
# query per row-level check, as expensive as the check itself for uniqueness, and is empty when
# the check passes; so gates first run without a sample (PostgreSQL answers LIMIT 0 without
# reading) and then fetch samples for the failed checks only.
_COUNTS_ONLY = {"result_format": "BASIC", "partial_unexpected_count": 0}
_WITH_SAMPLE = {"result_format": "BASIC", "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT}
_ROWS_SAMPLE = {"result_format": "COMPLETE"}
_ROW_FIELDS = 6  # leading columns of a failed query's row shown in a failure message

# Names that end up in SQL or file paths are restricted to plain lower-case identifiers, so they
# never need quoting rules of their own.
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PLACEHOLDER = re.compile(r"\{(schema|param):([^{}]*)\}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# GX wraps {batch} as "(...) AS subselect" unless the query contains JOIN, in which case the
# query must alias it; an explicit alias in a query without JOIN only fails once it runs.
_BATCH_ALIAS = re.compile(r"\{batch\}\s+as\s", re.IGNORECASE)
_JOIN = re.compile(r"\bjoin\b", re.IGNORECASE)

# Keys of an expectation as GX 1.x serialises it; anything else is most likely a GX 0.x suite
# (``expectation_type``) or a typo, either of which would otherwise be dropped silently.
_EXPECTATION_KEYS = {"type", "kwargs", "meta", "id", "severity", "notes", "description", "rendered_content"}
_GX_SEVERITY = {"error": "critical", "warning": "warning"}


class GateConfigError(ValueError):
    """A suite file or the gate call is wrong; the message names the file and the fix."""


class GateFailed(Exception):
    """At least one error-severity check of a gate failed."""

    def __init__(self, result: GateResult):
        self.result = result
        lines = [f"gate {result.gate!r} failed: {len(result.errors)} blocking check(s) failed"]
        for check in result.errors:
            lines.append(f"  - {check.description}{_sample(check)}; look at table {check.relation}")
        if result.report_path:
            lines.append(f"  every check of this gate: {result.report_path}")
        super().__init__("\n".join(lines))


@dataclass
class CheckResult:
    suite: str
    table: str  # logical, as written in the suite: "raw.sales_orders"
    relation: str  # the table this run validated: "<schema>.sales_orders"
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    observed_value: Any = None
    partial_unexpected: list = field(default_factory=list)
    description: str = ""


@dataclass
class GateResult:
    gate: str
    checks: list[CheckResult]
    seconds: float
    report_path: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "warning"]

    def summary(self) -> str:
        status = "passed" if self.passed else "FAILED"
        lines = [
            f"gate {self.gate}: {status} - {len(self.checks)} checks, {len(self.errors)} failed, "
            f"{len(self.warnings)} warnings, {self.seconds:.2f} s"
        ]
        lines += [f"  error:   {c.description}{_sample(c)}" for c in self.errors]
        lines += [f"  warning: {c.description}{_sample(c)}" for c in self.warnings]
        return "\n".join(lines)

    def to_json(self) -> str:
        document = {
            "gate": self.gate,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "checks": [asdict(c) for c in self.checks],
        }
        # Sampled values may be dates or decimals; their text form is what a reader wants.
        return json.dumps(document, indent=2, ensure_ascii=False, default=str)


def raise_for_result(result: GateResult) -> GateResult:
    if not result.passed:
        raise GateFailed(result)
    return result


@dataclass
class _Expectation:
    number: int  # position in the suite file, counting from 1
    config: dict  # keyword arguments for GX's ExpectationConfiguration
    severity: str


@dataclass
class _Suite:
    name: str
    path: Path
    schema_key: str
    schema: str
    table: str
    expectations: list[_Expectation]

    @property
    def logical_table(self) -> str:
        return f"{self.schema_key}.{self.table}"

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"


def run_gate(
    gate: str,
    warehouse_url: str,
    schemas: dict[str, str],
    *,
    out_dir: Path | None = None,
    expectations_dir: Path = settings.EXPECTATIONS_DIR,
    params: dict | None = None,
) -> GateResult:
    """Validate every suite of ``gate`` in the warehouse and return what each check found.

    ``schemas`` maps the suites' logical schema keys to this run's schemas; ``params`` fill
    ``{param:<name>}`` placeholders in queries. A failing check does not raise: pass the result
    to ``raise_for_result`` for that. Bad suites or arguments raise ``GateConfigError``.
    """
    started = time.perf_counter()
    literals = {name: _sql_literal(name, value) for name, value in (params or {}).items()}
    for key, schema in schemas.items():
        if not (_NAME.fullmatch(key) and _NAME.fullmatch(schema)):
            raise GateConfigError(
                f"schemas[{key!r}] = {schema!r}: keys and schemas must be lower-case identifiers ([a-z_][a-z0-9_]*)"
            )
    suites = _load_suites(gate, Path(expectations_dir), schemas, literals)

    # GX logs every import-time registration and config substitution at INFO, which would bury
    # the gate's own lines in task logs; a level set explicitly by the caller is left alone.
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)
    for suite in suites:
        _build(suite, suite.expectations)

    checks: list[CheckResult] = []
    out_dir = Path(out_dir) if out_dir is not None else None
    context, datasources = _gx_context(warehouse_url, schemas, {s.schema_key for s in suites}, out_dir)
    try:
        for suite in suites:
            suite_started = time.perf_counter()
            checks += _validate_suite(context, datasources[suite.schema_key], suite, gate)
            log.info(
                "gate %s: %s checked in %.2f s", gate, suite.relation, time.perf_counter() - suite_started
            )
    finally:
        for datasource in datasources.values():
            datasource.get_engine().dispose()

    result = GateResult(gate=gate, checks=checks, seconds=time.perf_counter() - started)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.report_path = out_dir / f"gate_{gate}.json"
        result.report_path.write_text(result.to_json() + "\n", encoding="utf-8")
    return result


def build_data_docs(out_dir: Path) -> dict:
    """Render the run's GX Data Docs site from the suites and results the gates kept in the run
    folder ``out_dir`` (every gate so far; 1-2 s, no warehouse needed). A rendering failure is
    reported in the result, never raised: the site is for reading the run."""
    started = time.perf_counter()
    site = Path(out_dir) / DOCS_DIR
    try:
        _ephemeral_context(Path(out_dir), {}).build_data_docs(site_names=[DOCS_SITE])
    except Exception as exc:
        log.warning("GX Data Docs were not built: %s", exc)
        return {"path": str(site), "seconds": round(time.perf_counter() - started, 2), "error": str(exc)}
    return {"path": str(site / "index.html"), "seconds": round(time.perf_counter() - started, 2)}


def _sql_literal(name: str, value: Any) -> str:
    """Render a query parameter as SQL text; only dates and finite numbers can get through."""
    if not _NAME.fullmatch(name):
        raise GateConfigError(f"parameter name {name!r} must be a lower-case identifier")
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            pass
    if isinstance(value, datetime):
        kind = "timestamptz" if value.tzinfo else "timestamp"
        return f"{kind} '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"date '{value.isoformat()}'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    raise GateConfigError(
        f"parameter {name!r} = {value!r} is not allowed: gate parameters are pasted into SQL, so "
        "only dates (date, datetime or 'YYYY-MM-DD') and finite numbers are accepted"
    )


def _load_suites(
    gate: str, expectations_dir: Path, schemas: dict[str, str], literals: dict[str, str]
) -> list[_Suite]:
    if not _NAME.fullmatch(gate):
        raise GateConfigError(f"gate name {gate!r} must be a lower-case identifier, e.g. 'raw'")
    paths = sorted((expectations_dir / gate).glob("*.json"))
    if not paths:
        raise GateConfigError(f"gate {gate!r} has no suites: expected {expectations_dir / gate}/<suite>.json")
    return [_load_suite(path, schemas, literals) for path in paths]


def _load_suite(path: Path, schemas: dict[str, str], literals: dict[str, str]) -> _Suite:
    def fail(message: str) -> GateConfigError:
        return GateConfigError(f"{path}: {message}")

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise fail("expected a JSON object with name, expectations and meta")
    if document.get("name") != path.stem:
        raise fail(
            f'"name" must be the file name without .json ({path.stem!r}), got {document.get("name")!r}'
        )
    meta = document.get("meta")
    if not isinstance(meta, dict):
        raise fail('"meta" must be an object with "table" and "schema"')
    table, schema_key = meta.get("table"), meta.get("schema")
    if not (isinstance(table, str) and _NAME.fullmatch(table)):
        raise fail(f"meta.table must be a lower-case table name, got {table!r}")
    if schema_key not in schemas:
        raise fail(f"meta.schema is {schema_key!r}; this run maps only {sorted(schemas)}")
    raw_expectations = document.get("expectations")
    if not isinstance(raw_expectations, list) or not raw_expectations:
        raise fail('"expectations" must be a non-empty list')

    expectations = []
    for number, raw in enumerate(raw_expectations, start=1):
        where = f"expectation #{number}"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise fail(f'{where} must be an object with "type" and "kwargs"')
        if unknown := set(raw) - _EXPECTATION_KEYS:
            raise fail(
                f"{where} ({raw['type']}) has unknown keys {sorted(unknown)}; GX 1.x uses type/kwargs/meta"
            )
        exp_meta, kwargs = raw.get("meta") or {}, raw.get("kwargs") or {}
        if not (isinstance(exp_meta, dict) and isinstance(kwargs, dict)):
            raise fail(f'{where} ({raw["type"]}): "meta" and "kwargs" must be objects')
        exp_meta, kwargs = dict(exp_meta), dict(kwargs)
        severity = exp_meta.get("severity", "error")
        if severity not in SEVERITIES:
            raise fail(f"{where} ({raw['type']}): meta.severity is {severity!r}; use one of {SEVERITIES}")
        if raw.get("severity") not in (None, _GX_SEVERITY[severity]):
            raise fail(
                f"{where} ({raw['type']}): GX severity {raw['severity']!r} contradicts meta.severity "
                f"{severity!r}; set only meta.severity"
            )
        if raw["type"] == UNEXPECTED_ROWS:
            kwargs["unexpected_rows_query"] = _fill_query(
                kwargs.get("unexpected_rows_query"), schemas, literals, fail, where
            )
        config = {"type": raw["type"], "kwargs": kwargs, "meta": exp_meta, "severity": _GX_SEVERITY[severity]}
        config.update({k: raw[k] for k in ("notes", "description") if raw.get(k)})
        expectations.append(_Expectation(number=number, config=config, severity=severity))

    return _Suite(path.stem, path, schema_key, schemas[schema_key], table, expectations)


def _fill_query(query, schemas: dict[str, str], literals: dict[str, str], fail, where: str) -> str:
    if not isinstance(query, str) or "{batch}" not in query:
        raise fail(f"{where}: unexpected_rows_query must be SQL text that selects from {{batch}}")

    if _BATCH_ALIAS.search(query) and not _JOIN.search(query):
        raise fail(
            f"{where}: without a JOIN, GX itself aliases {{batch}} as subselect, so 'as ...' after it "
            "is a syntax error; drop the alias and qualify columns as subselect.<column> if needed"
        )

    def substitute(match: re.Match) -> str:
        kind, name = match.groups()
        if kind == "schema":
            if name not in schemas:
                raise fail(f"{where}: {match.group()} is not a schema of this run ({sorted(schemas)})")
            return f'"{schemas[name]}"'
        if name not in literals:
            raise fail(f"{where}: {match.group()} needs params={{{name!r}: ...}} in the run_gate call")
        return literals[name]

    filled = _PLACEHOLDER.sub(substitute, query)
    # GX fills {batch} with str.format, which fails on any other brace only once the check runs.
    try:
        filled.format(batch="")
    except (KeyError, IndexError, ValueError) as exc:
        raise fail(
            f"{where}: unexpected_rows_query has a brace GX cannot fill ({exc!r}); placeholders are "
            "{batch}, {schema:<key>} and {param:<name>}, and a literal brace is written {{ or }}"
        ) from exc
    return filled


def datasource_url(warehouse_url: str, schema: str) -> str:
    """The SQLAlchemy URL of a GX datasource reading ``schema``: a pipeline session
    (``warehouse.session_options``) whose search_path is that schema."""
    from sqlalchemy.engine import make_url

    url = make_url(warehouse.sqlalchemy_url(warehouse_url))
    options = f"{warehouse.session_options(warehouse_url)} -csearch_path={schema}"
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def _gx_context(warehouse_url: str, schemas: dict[str, str], schema_keys: set[str], out_dir: Path | None = None):
    """One ephemeral context with one PostgreSQL datasource per logical schema the gate reads;
    with ``out_dir``, its suites and validation results are kept there and it has the Data Docs
    site (``_docs_stores``)."""
    from great_expectations.datasource.fluent.interfaces import TestConnectionError

    # GX deprecated TableAsset.schema_name in favour of the datasource's connection, which for
    # PostgreSQL means its search_path; unqualified names in a suite's queries then resolve in the
    # suite's own schema as well.
    variables = {_url_variable(key): datasource_url(warehouse_url, schemas[key]) for key in sorted(schema_keys)}
    context = _ephemeral_context(out_dir, variables)
    datasources = {}
    for key in sorted(schema_keys):
        # Adding a datasource connects to it. An unreachable warehouse is an operational error
        # to retry, not a failed gate.
        try:
            datasources[key] = context.data_sources.add_postgres(
                f"warehouse_{key}", connection_string="${" + _url_variable(key) + "}"
            )
        except TestConnectionError as exc:
            raise TransientError(
                f"quality gate cannot connect to {warehouse.redacted(warehouse_url)}: {_root_cause(exc)}"
            ) from exc
    return context, datasources


def _ephemeral_context(out_dir: Path | None, variables: dict[str, str]):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # The default ephemeral config reserves a temporary data-docs folder and logs it at INFO, and
    # draws tqdm bars on stderr: neither is wanted in task logs.
    defaults = InMemoryStoreBackendDefaults()
    config = DataContextConfig(
        store_backend_defaults=defaults,
        progress_bars=ProgressBarsConfig(globally=False),
        **(_docs_stores(defaults, out_dir) if out_dir is not None else {}),
    )
    return gx.get_context(mode="ephemeral", project_config=config, runtime_environment=variables)


def _docs_stores(defaults, out_dir: Path) -> dict:
    """Suites and validation results on the file system of the run folder, so that every gate
    task (a process of its own) adds to one Data Docs site: GX builds a site's index from its
    stores and drops the pages whose results are gone. Validation definitions and checkpoints
    stay in memory; datasources are never serialised (ephemeral context)."""
    def on_disk(store: str, folder: str) -> dict:
        return {**defaults.stores[store], "store_backend": {
            "class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir / RESULTS_DIR / folder)}}

    return {
        "stores": {**defaults.stores,
                   defaults.expectations_store_name: on_disk(defaults.expectations_store_name, "expectations"),
                   defaults.validation_results_store_name: on_disk(defaults.validation_results_store_name,
                                                                   "validations")},
        "data_docs_sites": {DOCS_SITE: {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir / DOCS_DIR)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }},
    }


def _url_variable(schema_key: str) -> str:
    return f"TIERLINE_GX_URL_{schema_key.upper()}"


def _validate_suite(context, datasource, suite: _Suite, gate: str) -> list[CheckResult]:
    from great_expectations.datasource.fluent.interfaces import TestConnectionError

    try:
        asset = datasource.add_table_asset(suite.name, table_name=suite.table)
    except TestConnectionError as exc:
        return [_missing_table(suite, exc)]
    batch = asset.add_batch_definition_whole_table("whole_table")

    results = _run(context, batch, suite, suite.expectations, _COUNTS_ONLY, gate)
    checks = [_check(suite, spec, result) for spec, result in zip(suite.expectations, results, strict=True)]
    # Only row-level checks have values to show, and only failed ones are worth a second query.
    to_sample = [n for n, c in enumerate(checks) if not c.success and c.unexpected_count and c.element_count]
    if to_sample:
        specs = [suite.expectations[n] for n in to_sample]
        for n, result in zip(to_sample, _run(context, batch, suite, specs, _WITH_SAMPLE, gate, "failed_sample"),
                             strict=True):
            sample = (result.result or {}).get("partial_unexpected_list") or []
            checks[n].partial_unexpected = list(sample)[:PARTIAL_UNEXPECTED_COUNT]
    # A failed query check shows its first rows, so the failure names the file or key to look at;
    # GX returns the rows only with the COMPLETE result format.
    failed_queries = [n for n, c in enumerate(checks) if not c.success and c.expectation == UNEXPECTED_ROWS
                      and c.unexpected_count]
    if failed_queries:
        # only the rows shown: GX would fetch up to 200, and storing their numeric values costs
        # ~3 ms each (GX inspects the call stack per Decimal): 2.4 s for one warning's page
        specs = [_first_rows(suite.expectations[n]) for n in failed_queries]
        for n, result in zip(failed_queries, _run(context, batch, suite, specs, _ROWS_SAMPLE, gate, "failed_rows"),
                             strict=True):
            rows = ((result.result or {}).get("details") or {}).get("unexpected_rows") or []
            checks[n].partial_unexpected = [_row_text(row) for row in rows[:PARTIAL_UNEXPECTED_COUNT]]
    return checks


def _first_rows(spec: _Expectation) -> _Expectation:
    query = spec.config["kwargs"]["unexpected_rows_query"].strip().rstrip(";")
    limited = f"select * from ({query}) as failed limit {PARTIAL_UNEXPECTED_COUNT}"
    return replace(spec, config={**spec.config, "kwargs": {**spec.config["kwargs"], "unexpected_rows_query": limited}})


def _row_text(row) -> str:
    items = row.items() if hasattr(row, "items") else enumerate(row)
    return ", ".join(f"{key}={value}" for key, value in list(items)[:_ROW_FIELDS])


def _run(context, batch, suite: _Suite, specs: list[_Expectation], result_format: dict, gate: str,
         purpose: str = "") -> list:
    """Validate ``specs`` against the batch; GX's results, in the order of ``specs``. The GX suite
    is named ``<gate>__<suite>`` (plus what a second pass is for) in the Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    name = "__".join(filter(None, (gate, suite.name, purpose)))
    stored = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=_build(suite, specs)))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=stored)
    )
    outcome = definition.run(result_format=result_format, run_id=RunIdentifier(run_name=f"gate_{gate}"))
    # GX groups results by how it computed them, not in the suite's order.
    position = {e.id: n for n, e in enumerate(stored.expectations)}
    return sorted(outcome.results, key=lambda r: position[r.expectation_config.id])


def _build(suite: _Suite, specs: list[_Expectation]) -> list:
    """GX expectation objects; GX's own suite loader would log and drop an invalid one."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for spec in specs:
        try:
            built.append(ExpectationConfiguration(**spec.config).to_domain_obj())
        except Exception as exc:
            raise GateConfigError(
                f"{suite.path}: expectation #{spec.number} ({spec.config['type']}): {exc}"
            ) from exc
    return built


def _check(suite: _Suite, spec: _Expectation, validation) -> CheckResult:
    config = validation.expectation_config
    kwargs = config.kwargs
    result = validation.result or {}
    column = kwargs.get("column") or ", ".join(
        kwargs.get("column_list") or [c for c in (kwargs.get("column_A"), kwargs.get("column_B")) if c]
    )
    check = CheckResult(
        suite=suite.name,
        table=suite.logical_table,
        relation=suite.relation,
        expectation=config.type,
        column=column or None,
        severity=spec.severity,
        success=bool(validation.success),
        unexpected_count=result.get("unexpected_count"),
        element_count=result.get("element_count"),
        observed_value=result.get("observed_value"),
    )
    if config.type == UNEXPECTED_ROWS:
        check.unexpected_count = check.observed_value
    check.description = _describe(check, config, validation.exception_info or {})
    return check


def _describe(check: CheckResult, config, exception_info: dict) -> str:
    if check.column:
        subject = check.column
    elif config.type == UNEXPECTED_ROWS:
        subject = config.description or "query"
    else:
        subject = ", ".join(
            f"{k}={v}" for k, v in config.kwargs.items() if k != "batch_id" and not isinstance(v, dict | list)
        )
    head = f"{check.table}: {config.type}({subject})"
    error = _exception_message(exception_info)
    if error:
        return f"{head} could not be evaluated: {error}"
    if check.success:
        return f"{head} passed"
    if check.unexpected_count is not None and check.element_count is not None:
        return f"{head} failed: {check.unexpected_count:,} of {check.element_count:,} rows"
    if config.type == UNEXPECTED_ROWS:
        return f"{head} failed: {check.unexpected_count:,} row{'' if check.unexpected_count == 1 else 's'}"
    return f"{head} failed: observed {check.observed_value}"


def _exception_message(exception_info: dict) -> str | None:
    """GX reports errors either flat or keyed by the metric that raised them."""
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    messages = [
        i.get("exception_message") for i in infos if isinstance(i, dict) and i.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(m.strip().splitlines()[0] for m in messages if m)) or None


def _missing_table(suite: _Suite, exc: Exception) -> CheckResult:
    return CheckResult(
        suite=suite.name,
        table=suite.logical_table,
        relation=suite.relation,
        expectation="table_exists",
        column=None,
        severity="error",
        success=False,
        description=(
            f"{suite.logical_table}: table {suite.relation} could not be read ({_root_cause(exc)}); "
            f"none of the {len(suite.expectations)} checks in {suite.path.name} ran"
        ),
    )


def _root_cause(exc: BaseException) -> str:
    """The database's own first line, without GX's and SQLAlchemy's wrapping."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _sample(check: CheckResult) -> str:
    values = [v for v in check.partial_unexpected if v is not None]
    if not values:
        return ""
    return " (e.g. " + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values) + ")"
