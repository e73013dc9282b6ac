"""Quality gates against a real PostgreSQL database with real Great Expectations."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from tierline import gates, warehouse
from tierline.errors import TransientError, is_transient

SCHEMAS = {"raw": "t_raw", "crm": "t_crm"}

# 1,000 orders: order_id o997 and o998 twice each, 3 without a customer, 2 with an unknown
# status, and order 500 on 2024-03-01 for a customer the CRM does not know.
SETUP_SQL = """
create schema t_raw;
create schema t_crm;
create table t_crm.crm_customers as
select 'c' || g as customer_id from generate_series(1, 50) as g;
create table t_raw.sales_orders as
select
    'o' || case when g > 998 then g - 2 else g end as order_id,
    case when g % 300 = 0 then null when g = 500 then 'c999' else 'c' || (g % 50 + 1) end as customer_id,
    case when g in (10, 20) then 'lost' else 'completed' end as status,
    case when g = 500 then date '2024-03-01' else date '2024-01-01' + g % 30 end as order_date
from generate_series(1, 1000) as g;
"""

ORPHAN_QUERY = (
    "select o.order_id from {batch} as o "
    "left join {schema:crm}.crm_customers as c on c.customer_id = o.customer_id "
    "where o.customer_id is not null and c.customer_id is null and o.order_date <= {param:as_of_date}"
)


def expect(type_: str, *, severity: str | None = None, description: str | None = None, **kwargs) -> dict:
    expectation = {"type": type_, "kwargs": kwargs, "meta": {"severity": severity} if severity else {}}
    if description:
        expectation["description"] = description
    return expectation


@pytest.fixture
def db(warehouse_url):
    with warehouse.connect(warehouse_url, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
    return warehouse_url


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    # Run from an empty folder so that anything GX writes into the working directory shows.
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def suites(workdir):
    root = workdir / "expectations"

    def write(gate: str, table: str, schema: str, *expectations: dict):
        path = root / gate / f"{table}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"name": table, "meta": {"table": table, "schema": schema}, "expectations": expectations}
        path.write_text(json.dumps(document))
        return path

    write.root = root
    return write


def run(db, suites, **kwargs):
    return gates.run_gate("raw", db, SCHEMAS, expectations_dir=suites.root, **kwargs)


def test_passing_gate_passes_and_writes_its_result(db, suites, workdir):
    suites(
        "raw",
        "crm_customers",
        "crm",
        expect("expect_column_values_to_not_be_null", column="customer_id"),
        expect("expect_column_values_to_be_unique", column="customer_id"),
        expect("expect_table_row_count_to_be_between", min_value=1, max_value=100),
    )

    result = run(db, suites, out_dir=workdir / "out")

    assert result.passed and not result.errors and not result.warnings
    assert [c.expectation for c in result.checks] == [
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_unique",
        "expect_table_row_count_to_be_between",
    ]
    assert result.checks[0].description == (
        "crm.crm_customers: expect_column_values_to_not_be_null(customer_id) passed"
    )
    assert gates.raise_for_result(result) is result
    written = json.loads((workdir / "out" / "gate_raw.json").read_text())
    assert written["passed"] is True and len(written["checks"]) == 3
    assert written["checks"][0]["relation"] == "t_crm.crm_customers"
    assert sorted(p.name for p in workdir.iterdir()) == ["expectations", "out"]


def test_row_level_violations_fail_with_counts_samples_and_where_to_look(db, suites, workdir):
    suites(
        "raw",
        "sales_orders",
        "raw",
        expect("expect_column_values_to_not_be_null", column="customer_id"),
        expect("expect_column_values_to_be_unique", column="order_id"),
        expect("expect_column_values_to_be_in_set", column="status", value_set=["completed", "pending"]),
        expect("expect_column_values_to_not_be_null", column="no_such_column"),
    )

    result = run(db, suites, out_dir=workdir / "out")

    assert not result.passed
    not_null, unique, in_set, missing_column = result.checks
    assert (not_null.unexpected_count, not_null.element_count) == (3, 1000)
    assert not_null.description == (
        "raw.sales_orders: expect_column_values_to_not_be_null(customer_id) failed: 3 of 1,000 rows"
    )
    assert unique.unexpected_count == 4
    assert sorted(unique.partial_unexpected) == ["o997", "o997", "o998", "o998"]
    assert in_set.unexpected_count == 2 and in_set.partial_unexpected == ["lost", "lost"]
    assert not missing_column.success
    assert "could not be evaluated" in missing_column.description
    assert "no_such_column" in missing_column.description

    with pytest.raises(gates.GateFailed) as failed:
        gates.raise_for_result(result)
    message = str(failed.value)
    assert failed.value.result is result
    assert "4 blocking check(s) failed" in message
    assert (
        "expect_column_values_to_be_in_set(status) failed: 2 of 1,000 rows (e.g. 'lost', 'lost')" in message
    )
    assert "look at table t_raw.sales_orders" in message
    assert str(workdir / "out" / "gate_raw.json") in message


def test_gates_of_a_run_build_one_gx_data_docs_site_without_the_connection_string(db, suites, workdir):
    """Issue 13, item 4: GX's own Data Docs per run, every gate in one index."""
    suites("raw", "crm_customers", "crm", expect("expect_column_values_to_be_unique", column="customer_id"))
    suites("staging", "sales_orders", "raw", expect("expect_column_values_to_not_be_null", column="customer_id"))
    out = workdir / "out"
    run(db, suites, out_dir=out)
    gates.run_gate("staging", db, SCHEMAS, expectations_dir=suites.root, out_dir=out)
    assert not (out / "gx_docs").exists()  # rendered once a run, not by every gate

    assert gates.build_data_docs(out)["path"] == str(out / "gx_docs" / "index.html")
    index = (out / "gx_docs" / "index.html").read_text()
    # the failed not-null check was validated again for its sample of rows: that pass is a page too
    for suite in ("raw__crm_customers", "staging__sales_orders", "staging__sales_orders__failed_sample"):
        assert suite in index, suite
    pages = [p.read_text() for p in (out / "gx_docs" / "validations").rglob("*.html")]
    assert len(pages) == 3 and sum("gate_staging" in page for page in pages) == 2
    written = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert db.split("@")[-1] not in written  # the warehouse address (and so any password) stays out


def test_warning_is_reported_but_does_not_block(db, suites):
    suites(
        "raw",
        "sales_orders",
        "raw",
        expect("expect_column_values_to_not_be_null", column="order_id"),
        expect("expect_column_values_to_not_be_null", column="customer_id", severity="warning"),
    )

    result = run(db, suites)

    assert result.passed
    assert [w.column for w in result.warnings] == ["customer_id"]
    assert result.warnings[0].unexpected_count == 3
    assert (
        "warning: raw.sales_orders: expect_column_values_to_not_be_null(customer_id) failed"
        in result.summary()
    )


@pytest.mark.parametrize(
    ("as_of_date", "orphans"),
    [("2024-02-01", 0), (date(2024, 3, 31), 1)],
)
def test_unexpected_rows_query_with_schema_and_param_placeholders(db, suites, as_of_date, orphans):
    suites(
        "raw",
        "sales_orders",
        "raw",
        expect(
            "unexpected_rows_expectation",
            description="every order's customer is in the CRM",
            unexpected_rows_query=ORPHAN_QUERY,
        ),
    )

    result = run(db, suites, params={"as_of_date": as_of_date})

    (check,) = result.checks
    assert result.passed is (orphans == 0)
    assert check.unexpected_count == orphans
    if orphans:
        assert check.description == (
            "raw.sales_orders: unexpected_rows_expectation(every order's customer is in the CRM) failed: 1 row"
        )


def test_missing_table_is_a_failed_check_not_a_traceback(db, suites):
    suites("raw", "refunds", "raw", expect("expect_column_values_to_not_be_null", column="refund_id"))
    suites("raw", "crm_customers", "crm", expect("expect_column_values_to_be_unique", column="customer_id"))

    result = run(db, suites)

    missing, present = sorted(result.checks, key=lambda c: c.suite != "refunds")
    assert not result.passed and present.success
    assert missing.expectation == "table_exists" and missing.relation == "t_raw.refunds"
    assert 'relation "refunds" does not exist' in missing.description
    assert "none of the 1 checks in refunds.json ran" in missing.description


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-01'; drop table t_raw.sales_orders; --",
        "1 or 1=1",
        "2024-02-30",
        True,
        None,
        float("nan"),
        Decimal("Infinity"),
        ["2024-01-01"],
    ],
)
def test_unsafe_params_are_rejected_before_any_sql_runs(suites, value):
    suites(
        "raw",
        "sales_orders",
        "raw",
        expect("unexpected_rows_expectation", unexpected_rows_query=ORPHAN_QUERY),
    )

    with pytest.raises(gates.GateConfigError, match="as_of_date"):
        gates.run_gate(
            "raw",
            "postgresql://nobody@/nowhere?host=/nonexistent",
            SCHEMAS,
            expectations_dir=suites.root,
            params={"as_of_date": value},
        )


@pytest.mark.parametrize(
    ("expectation", "error"),
    [
        (
            expect("unexpected_rows_expectation", unexpected_rows_query=ORPHAN_QUERY),
            r"\{param:as_of_date\} needs params",
        ),
        (
            expect(
                "unexpected_rows_expectation", unexpected_rows_query="select * from {schema:marts}.t, {batch}"
            ),
            r"\{schema:marts\} is not a schema of this run",
        ),
        (
            expect(
                "unexpected_rows_expectation", unexpected_rows_query="select * from {batch} as o where o.x"
            ),
            "GX itself aliases",
        ),
        (
            expect(
                "unexpected_rows_expectation",
                unexpected_rows_query="select 1 from {batch} where coalesce(j, '{}'::jsonb) <> '{}'",
            ),
            "a brace GX cannot fill",
        ),
        ({"expectation_type": "expect_column_to_exist", "kwargs": {"column": "a"}}, "must be an object with"),
        (expect("expect_column_values_to_not_be_null", severity="fatal", column="a"), "meta.severity"),
        (
            expect("expect_column_values_to_be_purple", column="a"),
            r"expectation #1 \(expect_column_values_to_be_purple\)",
        ),
    ],
)
def test_bad_suites_name_the_file_and_the_problem(suites, expectation, error):
    path = suites("raw", "sales_orders", "raw", expectation)

    with pytest.raises(gates.GateConfigError, match=error) as raised:
        gates.run_gate(
            "raw", "postgresql://nobody@/nowhere?host=/nonexistent", SCHEMAS, expectations_dir=suites.root
        )
    assert str(path) in str(raised.value)


def test_unreachable_warehouse_is_a_transient_error_not_a_failed_gate(suites):
    suites("raw", "sales_orders", "raw", expect("expect_column_values_to_not_be_null", column="order_id"))

    with pytest.raises(TransientError, match="cannot connect") as raised:
        gates.run_gate(
            "raw",
            "postgresql://nobody:secret@/nowhere?host=/nonexistent",
            SCHEMAS,
            expectations_dir=suites.root,
        )
    assert "secret" not in str(raised.value)
    assert is_transient(raised.value)


@pytest.mark.parametrize(("max_rate", "passed"), [(Decimal("0.01"), True), (0.001, False)])
def test_numeric_param_sets_a_threshold(db, suites, max_rate, passed):
    rate_query = "select 1 from {batch} having avg((status = 'lost')::int) > {param:max_lost_rate}"
    suites(
        "raw", "sales_orders", "raw", expect("unexpected_rows_expectation", unexpected_rows_query=rate_query)
    )

    assert run(db, suites, params={"max_lost_rate": max_rate}).passed is passed
