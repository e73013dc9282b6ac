"""Landing and loading against real PostgreSQL: every bad-input rule of EXTRACTS.md, one test each."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta

import pytest
from psycopg import sql

from tierline import batches, contract, land, load, warehouse
from tierline.errors import ExtractError

AS_OF = date(2026, 11, 1)  # land_and_load's default date

CUSTOMERS = (
    "customer_id,customer_name,customer_type,phone,created_at,updated_at\n"
    "C1,张三,individual,+86 138-0013-8000,2025-01-01 10:00:00,2025-01-01 10:00:00\n"
    "C2,Li Si,enterprise,13800138001,2025-02-01,2025-02-01T08:00:00+08:00\n"
)
ORDERS_HEADER = "order_id,customer_id,order_ts,status,gross_amount,discount_amount,net_amount,updated_at\n"
PRODUCTS = "product_id,product_name,unit_cost,updated_at\nP1,茶叶,10.00,2025-01-01\n"


def quarantine(url: str) -> list[tuple]:
    with warehouse.connect(url) as conn:
        return conn.execute("select file, line_no, reason, raw_text from raw.quarantine order by file, line_no").fetchall()


def counts(results) -> dict[str, tuple[int, int, int]]:
    return {r.file: (r.rows_read, r.rows_loaded, r.rows_quarantined) for r in results}


def test_clean_files_load_completely_with_typed_values(tmp_path, warehouse_url, land_and_load):
    orders = ORDERS_HEADER + 'O1,C1,2026-10-01 12:00:00,completed,"1,234.50",34.50,1200.00,2026-10-01\n'
    results = land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert counts(results) == {"crm_customers.csv": (2, 2, 0), "sales_orders.csv": (1, 1, 0)}
    with warehouse.connect(warehouse_url) as conn:
        gross, ts = conn.execute("select gross_amount, order_ts at time zone 'UTC' from raw.sales_orders").fetchone()
        assert str(gross) == "1234.50"
        # no offset in the file: the time is in the business time zone (UTC+8)
        assert ts.isoformat() == "2026-10-01T04:00:00"
    assert quarantine(warehouse_url) == []


def test_unparsable_number_is_quarantined(tmp_path, warehouse_url, land_and_load):
    orders = ORDERS_HEADER + "O1,C1,2026-10-01,completed,12.3.4,0,12,2026-10-01\nO2,C1,2026-10-01,completed,5,0,5,2026-10-01\n"
    results = land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert counts(results)["sales_orders.csv"] == (2, 1, 1)
    [(file, line, reason, raw)] = quarantine(warehouse_url)
    assert (file, line) == ("sales_orders.csv", 2)
    assert reason == "unparsable numeric in gross_amount: 12.3.4"
    assert raw == "O1,C1,2026-10-01,completed,12.3.4,0,12,2026-10-01"


def test_unparsable_timestamp_is_quarantined(tmp_path, warehouse_url, land_and_load):
    customers = CUSTOMERS + "C3,王五,individual,,2025-02-30 10:00:00,2025-03-01\n"
    land_and_load({"crm_customers.csv": customers})
    [(_, line, reason, _)] = quarantine(warehouse_url)
    assert line == 4
    assert reason == "unparsable timestamp in created_at: 2025-02-30 10:00:00"


def test_missing_key_is_quarantined(tmp_path, warehouse_url, land_and_load):
    customers = CUSTOMERS + ",无名,individual,,2025-01-01,2025-01-01\n"
    land_and_load({"crm_customers.csv": customers})
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [(4, "missing primary key customer_id")]


def test_unknown_foreign_key_is_quarantined(tmp_path, warehouse_url, land_and_load):
    orders = ORDERS_HEADER + "O1,C404,2026-10-01,completed,5,0,5,2026-10-01\n"
    land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert [q[2] for q in quarantine(warehouse_url)] == ["unknown customer_id C404 (not in crm_customers)"]


def test_a_small_delta_looks_up_only_the_keys_it_names_and_still_quarantines_unknown_ones(
        tmp_path, warehouse_url, land_and_load):
    """A daily file far smaller than the table it references reads only its own keys from it (not
    every key the table ever held); the verdicts are the same as the whole-table check's."""
    header = "customer_id,customer_name,customer_type,created_at,updated_at\n"
    land_and_load({"crm_customers.csv": header + "".join(
        f"C{n:03d},name {n},individual,2025-01-01,2025-01-01\n" for n in range(200))})
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        batches.promote(conn, run_id=land_and_load.run_id, as_of=AS_OF)
        orders = next(e for e in contract.ENTITIES if e.name == "sales_orders")
        assert load._lookups(conn, orders, 3) == {"crm_customers"}
        assert load._lookups(conn, orders, 50) == frozenset()  # as large as a fifth: the whole table
    day2 = AS_OF + timedelta(days=1)
    results = land_and_load({"sales_orders.csv": ORDERS_HEADER + (
        "O1,C007,2026-11-01,completed,5,0,5,2026-11-01\n"
        "O2,C404,2026-11-01,completed,5,0,5,2026-11-01\n"
        "O3,C199,2026-11-01,completed,5,0,5,2026-11-01\n")}, day2)
    assert counts(results) == {"sales_orders.csv": (3, 2, 1)}
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [(3, "unknown customer_id C404 (not in crm_customers)")]


def test_the_soft_reference_check_of_a_batch_without_statistics_is_not_a_nested_loop(warehouse_url, land_and_load):
    """The loader counts a batch's dangling referred_by right after inserting it, before its
    statistics exist: estimated at one row, it ran as a nested loop over the whole customer table
    per row (27.6 s for 5,000 changed customers at 1M customers)."""
    header = "customer_id,customer_name,customer_type,referred_by,created_at,updated_at\n"
    land_and_load({"crm_customers.csv": header + "".join(
        f"C{n:04d},name {n},individual,{f'C{n - 1:04d}' if n else ''},2025-01-01,2025-01-01\n" for n in range(2000))})
    customers = next(e for e in contract.ENTITIES if e.name == "crm_customers")
    referred_by = next(r for r in customers.references if r.column == "referred_by")
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'raw' "
            "and table_name = 'crm_customers' and column_name <> 'batch_id'")]
        listed = ", ".join(f'"{c}"' for c in columns)
        # a new batch as the loader has it when it counts: inserted in this transaction, never analyzed
        conn.execute(f"insert into raw.crm_customers ({listed}, batch_id) "
                     f"select {listed}, 9999 from raw.crm_customers where referred_by is not null limit 500")
        conn.execute("update raw.crm_customers set referred_by = 'C-NOWHERE' "
                     "where batch_id = 9999 and customer_id = 'C0100'")
        target = load._Target(AS_OF, land_and_load.run_id, 9999)
        assert load._soft_reference_misses(conn, customers, target)["referred_by"] == 1
        plan = conn.execute(sql.SQL("explain (format json) ") + load._soft_reference_query(
            customers, target, referred_by)).fetchone()[0]
    assert "Nested Loop" not in json.dumps(plan), plan


def test_a_batch_is_found_without_reading_the_batches_before_it(warehouse_url, land_and_load):
    """Staging reads a day's rows by batch through a BRIN index, which summarizes nothing added
    after its creation until a VACUUM: every range matched, and each read of a day's batch read
    the whole table (history). The loader summarizes what it added."""
    header = "customer_id,customer_name,customer_type,created_at,updated_at\n"
    for day, first, count in ((AS_OF, 0, 20000), (AS_OF + timedelta(days=1), 20000, 50)):
        land_and_load({"crm_customers.csv": header + "".join(
            f"C{n:06d},name {n},individual,2025-01-01,2025-01-01\n" for n in range(first, first + count))}, day)
    with warehouse.connect(warehouse_url) as conn:
        batch = conn.execute("select max(batch_id) from raw.crm_customers").fetchone()[0]
        conn.execute("set enable_seqscan = off")  # the index path, whatever the planner prefers
        plan = conn.execute("explain (analyze, format json) select * from raw.crm_customers where batch_id = %s",
                            [batch]).fetchone()[0][0]["Plan"]
    scan = plan if plan["Node Type"] == "Bitmap Heap Scan" else plan["Plans"][0]
    assert scan["Node Type"] == "Bitmap Heap Scan" and scan["Actual Rows"] == 50
    # the earlier batch's 20,000 rows are skipped by the index, not read and rechecked (a range
    # shared by both batches is: 800 rows here; 10,400 without the summary, where an autovacuum
    # had summarized part of the table)
    assert scan.get("Rows Removed by Index Recheck", 0) < 2000, scan


def test_negative_quantity_is_quarantined(tmp_path, warehouse_url, land_and_load):
    orders = ORDERS_HEADER + "O1,C1,2026-10-01,completed,5,0,5,2026-10-01\n"
    items = "order_id,line_no,product_id,quantity,unit_price\nO1,1,P1,1,5\nO1,2,P1,-2,5\n"
    results = land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders,
                                                 "sales_products.csv": PRODUCTS, "sales_order_items.csv": items})
    assert counts(results)["sales_order_items.csv"] == (2, 1, 1)
    assert [q[2] for q in quarantine(warehouse_url)] == ["quantity -2 is below the minimum 0"]


def test_order_dated_in_the_future_is_quarantined(tmp_path, warehouse_url, land_and_load):
    # 00:30 on the next day in Shanghai is still the extract date in UTC: the business zone decides
    orders = ORDERS_HEADER + (
        "O1,C1,2026-11-01 23:59:59,completed,5,0,5,2026-11-01\n"
        "O2,C1,2026-11-02 00:30:00,completed,5,0,5,2026-11-01\n"
    )
    results = land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    assert counts(results)["sales_orders.csv"] == (2, 1, 1)
    assert [q[2] for q in quarantine(warehouse_url)] == [
        "order_ts 2026-11-02 00:30:00 is after the extract date 2026-11-01"]


def test_duplicate_key_with_different_content_is_quarantined_but_identical_resend_is_not(tmp_path, warehouse_url, land_and_load):
    customers = CUSTOMERS + (
        "C3,甲,individual,,2025-01-01,2025-01-01\n"
        "C3,乙,individual,,2025-01-01,2025-01-01\n"
        "C2,Li Si,enterprise,13800138001,2025-02-01,2025-02-01T08:00:00+08:00\n"
    )
    results = land_and_load({"crm_customers.csv": customers})
    assert counts(results)["crm_customers.csv"] == (5, 3, 2)
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [
        (4, "duplicate key with different content in this file"),
        (5, "duplicate key with different content in this file"),
    ]


def test_wrong_number_of_fields_and_broken_quoting_are_quarantined(tmp_path, warehouse_url, land_and_load):
    customers = CUSTOMERS + 'C3,short,individual\nC4,"unclosed,individual,,2025-01-01,2025-01-01\n'
    land_and_load({"crm_customers.csv": customers})
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [
        (4, "expected 6 fields, found 3"), (5, "malformed CSV quoting (a quote is never closed)")]


def test_code_outside_the_contract_and_out_of_range_score_are_quarantined(tmp_path, warehouse_url, land_and_load):
    orders = ORDERS_HEADER + "O1,C1,2026-10-01,shipped,5,0,5,2026-10-01\n"
    surveys = "survey_id,customer_id,answered_at,nps,csat\nS1,C1,2026-10-01,11,3\nS2,C1,2026-10-01,9,5\n"
    land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders,
                                       "crm_surveys.csv": surveys})
    assert sorted(q[2] for q in quarantine(warehouse_url)) == [
        "nps 11 is above the maximum 10", "status shipped is not one of completed, pending, cancelled, refunded"]


def test_gbk_and_bom_files_keep_chinese_text(tmp_path, warehouse_url, land_and_load):
    managers = "\ufeffmanager_id,manager_name,updated_at\nM1,赵经理,2025-01-01\n"
    results = land_and_load({
        "crm_customers.csv": CUSTOMERS.encode("gb18030"),
        "crm_account_managers.csv": managers.encode("utf-8"),
    })
    assert {r.file: r.encoding for r in results} == {"crm_account_managers.csv": "utf-8-sig",
                                                    "crm_customers.csv": "gb18030"}
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select customer_name from raw.crm_customers where customer_id = 'C1'").fetchone()[0] == "张三"
        assert conn.execute("select manager_name from raw.crm_account_managers").fetchone()[0] == "赵经理"


def test_headers_match_case_insensitively_in_any_order_with_extra_columns(tmp_path, warehouse_url, land_and_load):
    customers = (" UPDATED_AT ,Customer_Type,customer_id,CUSTOMER_NAME,created_at,crm_internal_flag\n"
                 "2025-01-01,individual,C1,张三,2025-01-01,x\n")
    [result] = land_and_load({"crm_customers.csv": customers})
    assert (result.rows_loaded, result.ignored_columns) == (1, ["crm_internal_flag"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("customer_id;customer_name;customer_type;created_at;updated_at\nC1;a;individual;2025-01-01;2025-01-01\n",
         "crm_customers.csv: the header is delimited by ';', the contract requires ','"),
        ("customer_id,customer_name,created_at,updated_at\nC1,a,2025-01-01,2025-01-01\n",
         "crm_customers.csv: missing required column(s) customer_type"),
        (CUSTOMERS + 'C3,"half a row', "crm_customers.csv, line 4: the file is truncated"),
        ("", "crm_customers.csv: the file is empty"),
        (b"customer_id,customer_n\xe9me\nC1,x\n", "crm_customers.csv, line 1 (the header): bytes that are not UTF-8"),
    ],
    ids=["wrong-delimiter", "missing-column", "truncated", "empty", "undecodable"],
)
def test_unreadable_file_fails_with_the_file_and_the_problem(tmp_path, warehouse_url, content, message, land_and_load):
    with pytest.raises(ExtractError) as excinfo:
        land_and_load({"crm_customers.csv": content})
    assert str(excinfo.value).startswith(message)
    with warehouse.connect(warehouse_url) as conn:
        # the failed date left nothing behind
        exists = conn.execute("select to_regclass('raw.crm_customers')").fetchone()[0]
        assert exists is None or conn.execute("select count(*) from raw.crm_customers").fetchone()[0] == 0


def test_reloading_a_date_is_idempotent_and_landing_is_content_addressed(tmp_path, warehouse_url, land_and_load):
    files = {"crm_customers.csv": CUSTOMERS + ",x,individual,,2025-01-01,2025-01-01\n"}
    first = land_and_load(files)
    second = land_and_load(files)
    assert counts(first) == counts(second) == {"crm_customers.csv": (3, 2, 1)}
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select count(*) from raw.crm_customers").fetchone()[0] == 2
        assert conn.execute("select count(*) from raw.quarantine").fetchone()[0] == 1
    area = tmp_path / "landing" / land.source_key(tmp_path / "inbox") / AS_OF.isoformat()
    landed = list(area.glob("crm_customers.*.csv"))
    assert len(landed) == 1 and not landed[0].stat().st_mode & 0o222


def test_every_file_balances_read_against_loaded_plus_quarantined(tmp_path, warehouse_url, land_and_load):
    orders = ORDERS_HEADER + "".join(
        f"O{i},C{1 + i % 3},2026-10-0{1 + i % 9},completed,{i}.5,0,{i}.5,2026-10-01\n" for i in range(40))
    results = land_and_load({"crm_customers.csv": CUSTOMERS, "sales_orders.csv": orders})
    for result in results:
        assert result.rows_read == result.rows_loaded + result.rows_quarantined
    # C3 does not exist: every third order is quarantined, none is lost
    assert counts(results)["sales_orders.csv"] == (40, 27, 13)


def test_the_crm_record_id_is_optional_and_reaches_raw_tables_created_before_it(tmp_path, warehouse_url, land_and_load):
    with warehouse.connect(warehouse_url) as conn, conn.transaction():
        load.ensure_raw_schema(conn)
        conn.execute("alter table raw.crm_customers drop column crm_record_id")  # a warehouse from before
    with_ids = CUSTOMERS.replace("updated_at\n", "updated_at,crm_record_id\n", 1).replace(
        "10:00:00\n", "10:00:00,5725767000000000001\n").replace("+08:00\n", "+08:00,\n")

    results = land_and_load({"crm_customers.csv": with_ids})
    later = land_and_load({"crm_customers.csv": CUSTOMERS}, date(2026, 11, 2), root=tmp_path / "later")

    assert counts(results) == {"crm_customers.csv": (2, 2, 0)}
    assert counts(later) == {"crm_customers.csv": (2, 2, 0)}
    with warehouse.connect(warehouse_url) as conn:
        rows = conn.execute("select customer_id, _extract_date, crm_record_id from raw.crm_customers "
                            "order by 2, 1").fetchall()
    assert [(r[0], r[2]) for r in rows] == [("C1", "5725767000000000001"), ("C2", None), ("C1", None), ("C2", None)]


# ---------------------------------------------------------------------------------------------
# Encodings (issue #8, item 4)


def loaded_names(url: str) -> dict[str, str]:
    with warehouse.connect(url) as conn:
        return dict(conn.execute("select customer_id, customer_name from raw.crm_customers").fetchall())


CUSTOMER_HEADER = "customer_id,customer_name,customer_type,created_at,updated_at\n"


def customer(customer_id: str, name: str) -> str:
    return f"{customer_id},{name},individual,2025-01-01,2025-01-01\n"


def test_a_mostly_utf8_file_with_a_latin1_byte_is_utf8_and_only_that_line_is_quarantined(tmp_path, warehouse_url, land_and_load):
    content = (CUSTOMER_HEADER + customer("C1", "李四") + customer("C2", "北京客户")).encode()
    content += customer("C3", "Renée").encode("latin-1") + customer("C4", "王五").encode()
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.encoding, result.rows_loaded, result.rows_quarantined) == ("utf-8", 3, 1)
    assert loaded_names(warehouse_url) == {"C1": "李四", "C2": "北京客户", "C4": "王五"}
    [(_, line, reason, raw)] = quarantine(warehouse_url)
    assert line == 4 and reason.startswith("bytes that are not UTF-8: e9 65") and "Ren\\xe9e" in raw


def test_a_gbk_line_inside_a_utf8_file_is_quarantined_at_its_own_line(tmp_path, warehouse_url, land_and_load):
    rows = [customer(f"C{i}", f"客户{i}").encode() for i in range(1, 9)]
    rows[5] = customer("C6", "赵六").encode("gbk")  # line 7
    land_and_load({"crm_customers.csv": CUSTOMER_HEADER.encode() + b"".join(rows)})
    assert [(q[1], q[2][:26]) for q in quarantine(warehouse_url)] == [(7, "bytes that are not UTF-8: ")]
    assert len(loaded_names(warehouse_url)) == 7


def test_an_ascii_file_with_one_latin1_byte_is_not_read_as_gb18030(tmp_path, warehouse_url, land_and_load):
    content = (CUSTOMER_HEADER + customer("C1", "Li Si")).encode() + customer("C2", "Renée").encode("latin-1")
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.encoding, result.rows_loaded, result.rows_quarantined) == ("utf-8", 1, 1)
    assert [q[1] for q in quarantine(warehouse_url)] == [3]


def test_a_gbk_file_with_rare_characters_is_still_gb18030(tmp_path, warehouse_url, land_and_load):
    names = ["张三", "李喆", "王珺", "北京市朝阳区客户", "欧阳娜娜"]
    content = (CUSTOMER_HEADER + "".join(customer(f"C{i}", n) for i, n in enumerate(names))).encode("gb18030")
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.encoding, result.path, result.rows_quarantined) == ("gb18030", "copy", 0)
    assert sorted(loaded_names(warehouse_url).values()) == sorted(names)


# ---------------------------------------------------------------------------------------------
# Bytes COPY cannot carry, line ends, line breaks in fields (issue #8, item 5; issue #9)


@pytest.mark.parametrize(("byte", "code"), [(b"\x00", "U+0000"), (b"\x01", "U+0001"), (b"\x02", "U+0002")])
def test_control_bytes_quarantine_their_record_naming_line_and_column(tmp_path, warehouse_url, byte, code, land_and_load):
    content = (CUSTOMER_HEADER + customer("C1", "张三")).encode() + customer("C2", "Li\x00Si").encode().replace(
        b"\x00", byte) + customer("C3", "王五").encode()
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.path) == (3, 2, 1, "parsed")
    [(_, line, reason, raw)] = quarantine(warehouse_url)
    assert (line, reason) == (3, f"control character {code} in customer_name")
    assert raw.startswith("C2,Li") and raw.endswith(",individual,2025-01-01,2025-01-01")


def test_mixed_crlf_and_lf_line_ends_load(tmp_path, warehouse_url, land_and_load):
    content = (CUSTOMER_HEADER.replace("\n", "\r\n") + customer("C1", "张三").replace("\n", "\r\n")
               + customer("C2", "李四") + customer("C3", "王五").replace("\n", "\r\n") + "C4,,individual,x,y\n")
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.rows_loaded, result.rows_quarantined, result.path) == (3, 1, "parsed")
    assert loaded_names(warehouse_url) == {"C1": "张三", "C2": "李四", "C3": "王五"}
    [(_, line, reason, raw)] = quarantine(warehouse_url)
    assert (line, reason, raw) == (5, "missing required value in customer_name", "C4,,individual,x,y")


def test_a_crlf_file_with_line_breaks_inside_quoted_fields_loads_with_exact_line_numbers(tmp_path, warehouse_url, land_and_load):
    handle = io.StringIO()
    writer = csv.writer(handle)  # as crm-pull writes: CRLF line ends, quoted fields as needed
    writer.writerow(["customer_id", "customer_name", "customer_type", "city", "created_at", "updated_at"])
    writer.writerow(["C1", "张三", "individual", "北京\n朝阳区\n三里屯", "2025-01-01", "2025-01-01"])
    writer.writerow(["C2", "李四", "individual", "上海\r\n浦东", "2025-01-01", "2025-01-01"])
    writer.writerow(["C3", "", "individual", "杭州", "2025-01-01", "2025-01-01"])
    writer.writerow(["C4", "王五", "individual", "深圳", "2025-01-01", "2025-01-01"])
    [result] = land_and_load({"crm_customers.csv": handle.getvalue()})
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.path) == (4, 3, 1, "copy")
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select customer_id, city, _line_no from raw.crm_customers order by 1").fetchall() == [
            ("C1", "北京\n朝阳区\n三里屯", 2), ("C2", "上海\r\n浦东", 5), ("C4", "深圳", 8)]
    # lines 2-4 are C1, 5-6 are C2: C3 is line 7, its raw text without the line end
    assert [(q[1], q[3]) for q in quarantine(warehouse_url)] == [(7, "C3,,individual,杭州,2025-01-01,2025-01-01")]


def test_a_file_copy_refuses_is_parsed_record_by_record_with_the_same_result(tmp_path, warehouse_url, land_and_load):
    good = [customer(f"C{i}", f"客户{i}") for i in range(1, 6)]
    city_break = 'C6,"多行\n名字",individual,2025-01-01,2025-01-01\n'
    content = CUSTOMER_HEADER + "".join(good[:2]) + city_break + "C9,short\n" + "".join(good[2:]) + "\n"
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.path) == (8, 6, 2, "parsed")
    assert loaded_names(warehouse_url)["C6"] == "多行\n名字"
    assert [(q[1], q[2], q[3]) for q in quarantine(warehouse_url)] == [
        (6, "expected 5 fields, found 2", "C9,short"), (10, "blank line", "")]
    with warehouse.connect(warehouse_url) as conn:
        assert conn.execute("select _line_no from raw.crm_customers where customer_id = 'C3'").fetchone() == (7,)


def test_an_unclosed_quote_quarantines_its_line_only(tmp_path, warehouse_url, land_and_load):
    content = CUSTOMER_HEADER + customer("C1", "张三") + 'C2,"broken,individual,2025-01-01,2025-01-01\n' + "".join(
        customer(f"C{i}", f"客户{i}") for i in range(3, 6))
    [result] = land_and_load({"crm_customers.csv": content})
    assert (result.rows_loaded, result.rows_quarantined) == (4, 1)
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [(3, "malformed CSV quoting (a quote is never closed)")]


def test_raw_text_of_a_row_quarantined_by_the_sql_checks_is_the_exact_line(tmp_path, warehouse_url, land_and_load):
    content = CUSTOMER_HEADER.replace("\n", "\r\n") + (
        'C1,"Zhang, San",individual,2025-01-01,2025-01-01\r\n'
        'C2,"Li ""Si""",individual,2025-13-01,2025-01-01\r\n')
    [result] = land_and_load({"crm_customers.csv": content})
    assert result.path == "copy"
    assert [(q[1], q[3]) for q in quarantine(warehouse_url)] == [
        (3, 'C2,"Li ""Si""",individual,2025-13-01,2025-01-01')]
    assert loaded_names(warehouse_url) == {"C1": "Zhang, San"}


# ---------------------------------------------------------------------------------------------
# Rules the contract implies (issue #8, item 6)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,-5,0,-5,2026-10-01\n"},
         "gross_amount -5 is below the minimum 0"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,5,0,-5,2026-10-01\n"},
         "net_amount -5 is below the minimum 0"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,5,-1,5,2026-10-01\n"},
         "discount_amount -1 is below the minimum 0"),
        ({"sales_orders.csv": ORDERS_HEADER + f"O1,C1,2026-10-01,completed,5,0,1{'0' * 40},2026-10-01\n"},
         f"net_amount 1{'0' * 40} does not fit numeric(18, 2)"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,\"12,345,678,901,234,567.00\",0,5,2026-10-01\n"},
         "gross_amount 12,345,678,901,234,567.00 does not fit numeric(18, 2)"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,5,0,5,2099-01-01\n"},
         "updated_at 2099-01-01 is in the future"),
        ({"crm_customers.csv": CUSTOMER_HEADER + "C9,新客,individual,2030-01-01,2026-10-01\n"},
         "created_at 2030-01-01 is in the future"),
        ({"crm_customers.csv": "customer_id,customer_name,customer_type,birth_date,created_at,updated_at\n"
                               "C9,新客,individual,2090-05-01,2025-01-01,2025-01-01\n"},
         "birth_date 2090-05-01 is in the future"),
        ({"sales_products.csv": "product_id,product_name,list_price,updated_at\nP9,x,-1,2025-01-01\n"},
         "list_price -1 is below the minimum 0"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,NaN,0,5,2026-10-01\n"},
         "unparsable numeric in gross_amount: NaN"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,5,0,Infinity,2026-10-01\n"},
         "unparsable numeric in net_amount: Infinity"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,now,completed,5,0,5,2026-10-01\n"},
         "unparsable timestamp in order_ts: now"),
        ({"sales_orders.csv": ORDERS_HEADER + "O1,C1,2026-10-01,completed,\"1,2,3\",0,5,2026-10-01\n"},
         "unparsable numeric in gross_amount: 1,2,3"),
    ],
    ids=["negative-gross", "negative-net", "negative-discount", "net-1e40", "gross-beyond-18-2", "updated-2099",
         "created-2030", "birth-2090", "negative-list-price", "nan", "infinity", "now", "misplaced-separators"],
)
def test_values_the_contract_implies_are_impossible_are_quarantined(tmp_path, warehouse_url, files, reason, land_and_load):
    results = land_and_load({"crm_customers.csv": CUSTOMERS, **files})
    assert sum(r.rows_quarantined for r in results) == 1
    assert [q[2] for q in quarantine(warehouse_url)] == [reason]


def test_a_late_extract_may_hold_changes_made_after_its_date_but_nothing_in_the_future(tmp_path, warehouse_url, land_and_load):
    # a backfill's CRM pull for a date a month ago holds the changes made up to the pull
    day = date.today() - timedelta(days=30)
    in_three_days = datetime.now() + timedelta(days=3)
    customers = ("customer_id,customer_name,customer_type,birth_date,created_at,updated_at\n"
                 f"C1,甲,individual,,2025-01-01,{date.today() - timedelta(days=1)} 10:00:00\n"
                 f"C2,乙,individual,,2025-01-01,{in_three_days:%Y-%m-%d %H:%M:%S}\n"
                 f"C3,丙,individual,{in_three_days:%Y-%m-%d},2025-01-01,2025-01-01\n")
    orders = ORDERS_HEADER + f"O1,C1,{day + timedelta(days=1)} 10:00:00,completed,5,0,5,{day}\n"
    land_and_load({"crm_customers.csv": customers, "sales_orders.csv": orders}, day)
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [
        (3, f"updated_at {in_three_days:%Y-%m-%d %H:%M:%S} is in the future"),
        (4, f"birth_date {in_three_days:%Y-%m-%d} is in the future"),
        (2, f"order_ts {day + timedelta(days=1)} 10:00:00 is after the extract date {day}"),
    ]


def test_the_parser_fallback_loads_exactly_what_copy_loads(tmp_path, warehouse_url, land_and_load):
    rows = [
        'C1,"Zhang, San",individual,北京,2025-01-01,2025-01-01 08:00:00',
        'C2,"Li ""Si""",enterprise,"上海\n浦东",2025-01-01,2025-06-01T08:00:00+08:00',
        "C3,  王五  ,individual,NULL,2025-01-01,2025-01-01",
        "C4,赵六,INDIVIDUAL,,2025-01-01,2025-01-01",
        "C5,,individual,杭州,2025-01-01,2025-01-01",
    ]
    header = "customer_id,customer_name,customer_type,city,created_at,updated_at\n"
    clean = header + "".join(f"{r}\n" for r in rows)

    def loaded(day: date, content: str) -> tuple[str, list[tuple]]:
        [result] = land_and_load({"crm_customers.csv": content}, day, root=tmp_path / day.isoformat())
        with warehouse.connect(warehouse_url) as conn:
            return result.path, conn.execute(
                "select customer_id, customer_name, customer_type, city, created_at, updated_at, _line_no "
                "from raw.crm_customers where _extract_date = %s order by customer_id", (day,)).fetchall()

    fast = loaded(date(2026, 11, 1), clean)
    # one more record with a control character: COPY could carry it, so the parser takes the file
    slow = loaded(date(2026, 11, 2), clean + "C6,bad\x01name,individual,,2025-01-01,2025-01-01\n")
    assert (fast[0], slow[0]) == ("copy", "parsed")
    assert fast[1] == slow[1] and len(fast[1]) == 4
    assert [(q[1], q[2]) for q in quarantine(warehouse_url)] == [
        (7, "missing required value in customer_name"), (7, "missing required value in customer_name"),
        (8, "control character U+0001 in customer_name")]


def test_the_planner_knows_the_batch_a_load_added(land_and_load, warehouse_url):
    """Staging reads a day's new rows by batch; without fresh statistics a new batch is estimated at
    a handful of rows (at 100k customers, the 10% day's incremental staging ran for minutes)."""
    header = "customer_id,customer_name,customer_type,created_at,updated_at\n"
    for day, first in ((date(2026, 11, 1), 0), (date(2026, 11, 2), 2000)):
        rows = "".join(f"C{n:06d},name {n},individual,2025-01-01,2025-01-01\n" for n in range(first, first + 2000))
        land_and_load({"crm_customers.csv": header + rows}, day)
    with warehouse.connect(warehouse_url) as conn:
        batch = conn.execute("select max(batch_id) from raw.crm_customers").fetchone()[0]
        query = "select * from raw.crm_customers where batch_id in (%s)"
        estimated = conn.execute("explain (format json) " + query, (batch,)).fetchone()[0][0]["Plan"]["Plan Rows"]
        actual = conn.execute(f"select count(*) from ({query}) as batch", (batch,)).fetchone()[0]
        # the load refreshes batch_id's statistics alone, but a table's first ANALYZE is whole:
        # a key nobody analyzed is guessed (a 100k-customer publish ran for minutes so)
        keys = conn.execute("select n_distinct from pg_stats where schemaname = 'raw' "
                            "and tablename = 'crm_customers' and attname = 'customer_id'").fetchall()
    assert actual == 2000 and estimated >= actual / 2, (estimated, actual)
    assert keys and keys[0][0] == -1, keys  # every value distinct
