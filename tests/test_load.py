"""Landing and loading against real PostgreSQL: every bad-input rule of EXTRACTS.md, one test each."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tierline import land, load, warehouse
from tierline.errors import ExtractError

AS_OF = date(2026, 11, 1)
RUN_ID = "test-run"
CUSTOMERS = (
    "customer_id,customer_name,customer_type,phone,created_at,updated_at\n"
    "C1,张三,individual,+86 138-0013-8000,2025-01-01 10:00:00,2025-01-01 10:00:00\n"
    "C2,Li Si,enterprise,13800138001,2025-02-01,2025-02-01T08:00:00+08:00\n"
)
ORDERS_HEADER = "order_id,customer_id,order_ts,status,gross_amount,discount_amount,net_amount,updated_at\n"
PRODUCTS = "product_id,product_name,unit_cost,updated_at\nP1,茶叶,10.00,2025-01-01\n"


def write(root: Path, files: dict[str, str | bytes], day: date = AS_OF) -> Path:
    folder = root / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return root


def run_load(tmp_path: Path, url: str, files: dict, day: date = AS_OF):
    root = write(tmp_path / "inbox", files, day)
    manifest = land.land_extracts(root, day, tmp_path / "landing")
    return load.load_date(url, manifest, day, RUN_ID, "Asia/Shanghai")


def quarantine(url: str) -> list[tuple]:
    with warehouse.connect(url) as conn:
        return conn.execute("select file, line_no, reason, raw_text from raw.quarantine order by file, line_no").fetchall()


def counts(results) -> dict[str, tuple[int, int, int]]:
    return {r.file: (r.rows_read, r.rows_loaded, r.rows_quarantined) for r in results}


def test_clean_files_load_completely_with_typed_values(tmp_path, warehouse_url):
    orders = ORDERS_HEADER + 'O1,C1,2026-10-01 12:00:00,completed,"1,234.50",34.50,1200.00,2026-10-01\n'
    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert counts(results) == {"crm_customers.csv": (2, 2, 0), "sales_orders.csv": (1, 1, 0)}
    with warehouse.connect(warehouse_url) as conn:
        gross, ts = conn.execute("select gross_amount, order_ts at time zone 'UTC' from raw.sales_orders").fetchone()
        assert str(gross) == "1234.50"
        # no offset in the file: the time is in the business time zone (UTC+8)
        assert ts.isoformat() == "2026-10-01T04:00:00"
    assert quarantine(warehouse_url) == []


def test_unparsable_number_is_quarantined(tmp_path, warehouse_url):
    orders = ORDERS_HEADER + "O1,C1,2026-10-01,completed,12.3.4,0,12,2026-10-01\nO2,C1,2026-10-01,completed,5,0,5,2026-10-01\n"
    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert counts(results)["sales_orders.csv"] == (2, 1, 1)
    [(file, line, reason, raw)] = quarantine(warehouse_url)
    assert (file, line) == ("sales_orders.csv", 2)
    assert reason == "unparsable numeric in gross_amount: 12.3.4"
    assert raw == "O1,C1,2026-10-01,completed,12.3.4,0,12,2026-10-01"


def test_unparsable_timestamp_is_quarantined(tmp_path, warehouse_url):
    customers = CUSTOMERS + "C3,王五,individual,,2025-02-30 10:00:00,2025-03-01\n"
    run_load(tmp_path, warehouse_url, {"crm_customers.csv": customers})
    [(_, line, reason, _)] = quarantine(warehouse_url)
    assert line == 4
    assert reason == "unparsable timestamp in created_at: 2025-02-30 10:00:00"


def test_missing_key_is_quarantined(tmp_path, warehouse_url):
    customers = CUSTOMERS + ",无名,individual,,2025-01-01,2025-01-01\n"
    run_load(tmp_path, warehouse_url, {"crm_customers.csv": customers})
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [(4, "missing primary key customer_id")]


def test_unknown_foreign_key_is_quarantined(tmp_path, warehouse_url):
    orders = ORDERS_HEADER + "O1,C404,2026-10-01,completed,5,0,5,2026-10-01\n"
    run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert [q[2] for q in quarantine(warehouse_url)] == ["unknown customer_id C404 (not in crm_customers)"]


def test_negative_quantity_is_quarantined(tmp_path, warehouse_url):
    orders = ORDERS_HEADER + "O1,C1,2026-10-01,completed,5,0,5,2026-10-01\n"
    items = "order_id,line_no,product_id,quantity,unit_price\nO1,1,P1,1,5\nO1,2,P1,-2,5\n"
    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders,
                                                 "sales_products.csv": PRODUCTS, "sales_order_items.csv": items})
    assert counts(results)["sales_order_items.csv"] == (2, 1, 1)
    assert [q[2] for q in quarantine(warehouse_url)] == ["quantity -2 is below the minimum 0"]


def test_order_dated_in_the_future_is_quarantined(tmp_path, warehouse_url):
    # 00:30 on the next day in Shanghai is still the extract date in UTC: the business zone decides
    orders = ORDERS_HEADER + (
        "O1,C1,2026-11-01 23:59:59,completed,5,0,5,2026-11-01\n"
        "O2,C1,2026-11-02 00:30:00,completed,5,0,5,2026-11-01\n"
    )
    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert counts(results)["sales_orders.csv"] == (2, 1, 1)
    assert [q[2] for q in quarantine(warehouse_url)] == [
        "order_ts 2026-11-02 00:30:00 is after the extract date 2026-11-01"]


def test_duplicate_key_with_different_content_is_quarantined_but_identical_resend_is_not(tmp_path, warehouse_url):
    customers = CUSTOMERS + (
        "C3,甲,individual,,2025-01-01,2025-01-01\n"
        "C3,乙,individual,,2025-01-01,2025-01-01\n"
        "C2,Li Si,enterprise,13800138001,2025-02-01,2025-02-01T08:00:00+08:00\n"
    )
    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": customers})
    assert counts(results)["crm_customers.csv"] == (5, 3, 2)
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [
        (4, "duplicate key with different content in this file"),
        (5, "duplicate key with different content in this file"),
    ]


def test_wrong_number_of_fields_and_broken_quoting_are_quarantined(tmp_path, warehouse_url):
    customers = CUSTOMERS + 'C3,short,individual\nC4,"unclosed,individual,,2025-01-01,2025-01-01\n'
    run_load(tmp_path, warehouse_url, {"crm_customers.csv": customers})
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [
        (4, "expected 6 fields, found 3"), (5, "malformed CSV quoting")]


def test_code_outside_the_contract_and_out_of_range_score_are_quarantined(tmp_path, warehouse_url):
    orders = ORDERS_HEADER + "O1,C1,2026-10-01,shipped,5,0,5,2026-10-01\n"
    surveys = "survey_id,customer_id,answered_at,nps,csat\nS1,C1,2026-10-01,11,3\nS2,C1,2026-10-01,9,5\n"
    run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders,
                                       "crm_surveys.csv": surveys})
    assert sorted(q[2] for q in quarantine(warehouse_url)) == [
        "nps 11 is above the maximum 10", "status shipped is not one of completed, pending, cancelled, refunded"]


def test_gbk_and_bom_files_keep_chinese_text(tmp_path, warehouse_url):
    managers = "\ufeffmanager_id,manager_name,updated_at\nM1,赵经理,2025-01-01\n"
    results = run_load(tmp_path, warehouse_url, {
        "crm_customers.csv": CUSTOMERS.encode("gb18030"),
        "crm_account_managers.csv": managers.encode("utf-8"),
    })
    assert {r.file: r.encoding for r in results} == {"crm_account_managers.csv": "utf-8-sig",
                                                    "crm_customers.csv": "gb18030"}
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select customer_name from raw.crm_customers where customer_id = 'C1'").fetchone()[0] == "张三"
        assert conn.execute("select manager_name from raw.crm_account_managers").fetchone()[0] == "赵经理"


def test_headers_match_case_insensitively_in_any_order_with_extra_columns(tmp_path, warehouse_url):
    customers = (" UPDATED_AT ,Customer_Type,customer_id,CUSTOMER_NAME,created_at,crm_internal_flag\n"
                 "2025-01-01,individual,C1,张三,2025-01-01,x\n")
    [result] = run_load(tmp_path, warehouse_url, {"crm_customers.csv": customers})
    assert (result.rows_loaded, result.ignored_columns) == (1, ["crm_internal_flag"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("customer_id;customer_name;customer_type;created_at;updated_at\nC1;a;individual;2025-01-01;2025-01-01\n",
         "crm_customers.csv: the header is delimited by ';', the contract requires ','"),
        ("customer_id,customer_name,created_at,updated_at\nC1,a,2025-01-01,2025-01-01\n",
         "crm_customers.csv: missing required column(s) customer_type"),
        (CUSTOMERS + 'C3,"half a row', "crm_customers.csv: the file is truncated"),
        ("", "crm_customers.csv: the file is empty"),
        (b"customer_id,customer_name\n\xff\xfe\xfa\n", "crm_customers.csv: cannot decode as utf-8 or gb18030"),
    ],
    ids=["wrong-delimiter", "missing-column", "truncated", "empty", "undecodable"],
)
def test_unreadable_file_fails_with_the_file_and_the_problem(tmp_path, warehouse_url, content, message):
    with pytest.raises(ExtractError) as excinfo:
        run_load(tmp_path, warehouse_url, {"crm_customers.csv": content})
    assert str(excinfo.value).startswith(message)
    with warehouse.connect(warehouse_url) as conn:
        # the failed date left nothing behind
        exists = conn.execute("select to_regclass('raw.crm_customers')").fetchone()[0]
        assert exists is None or conn.execute("select count(*) from raw.crm_customers").fetchone()[0] == 0


def test_reloading_a_date_is_idempotent_and_landing_is_content_addressed(tmp_path, warehouse_url):
    files = {"crm_customers.csv": CUSTOMERS + ",x,individual,,2025-01-01,2025-01-01\n"}
    first = run_load(tmp_path, warehouse_url, files)
    second = run_load(tmp_path, warehouse_url, files)
    assert counts(first) == counts(second) == {"crm_customers.csv": (3, 2, 1)}
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select count(*) from raw.crm_customers").fetchone()[0] == 2
        assert conn.execute("select count(*) from raw.quarantine").fetchone()[0] == 1
    landed = list((tmp_path / "landing" / AS_OF.isoformat()).glob("crm_customers.*.csv"))
    assert len(landed) == 1 and not landed[0].stat().st_mode & 0o222


def test_every_file_balances_read_against_loaded_plus_quarantined(tmp_path, warehouse_url):
    orders = ORDERS_HEADER + "".join(
        f"O{i},C{1 + i % 3},2026-10-0{1 + i % 9},completed,{i}.5,0,{i}.5,2026-10-01\n" for i in range(40))
    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    for result in results:
        assert result.rows_read == result.rows_loaded + result.rows_quarantined
    # C3 does not exist: every third order is quarantined, none is lost
    assert counts(results)["sales_orders.csv"] == (40, 27, 13)


def test_the_crm_record_id_is_optional_and_reaches_raw_tables_created_before_it(tmp_path, warehouse_url):
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        load.ensure_raw_schema(conn)
        conn.execute("alter table raw.crm_customers drop column crm_record_id")  # a warehouse from before
    with_ids = CUSTOMERS.replace("updated_at\n", "updated_at,crm_record_id\n", 1).replace(
        "10:00:00\n", "10:00:00,5725767000000000001\n").replace("+08:00\n", "+08:00,\n")

    results = run_load(tmp_path, warehouse_url, {"crm_customers.csv": with_ids})
    later = run_load(tmp_path / "later", warehouse_url, {"crm_customers.csv": CUSTOMERS}, date(2026, 11, 2))

    assert counts(results) == {"crm_customers.csv": (2, 2, 0)}
    assert counts(later) == {"crm_customers.csv": (2, 2, 0)}
    with warehouse.connect(warehouse_url) as conn:
        rows = conn.execute("select customer_id, _extract_date, crm_record_id from raw.crm_customers "
                            "order by 2, 1").fetchall()
    assert [(r[0], r[2]) for r in rows] == [("C1", "5725767000000000001"), ("C2", None), ("C1", None), ("C2", None)]
