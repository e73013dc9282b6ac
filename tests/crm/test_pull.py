"""Pulling CRM modules into the extract layout: the files load through land + load like any export."""

from __future__ import annotations

import csv
from datetime import date, datetime

import pytest

from tierline import land, load
from tierline.crm import config as crm_config
from tierline.crm import parse_crm_time, pull
from tierline.errors import ConfigError
from tierline_dev.crm_emulators.zoho import DEFAULT_MODULES, FieldSpec, ModuleSpec

from .sync_support import ID_FIELD, MODULE, query

DAY_1, DAY_2, DAY_3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)


@pytest.fixture
def crm(crm):
    base = DEFAULT_MODULES[MODULE]
    crm.define_module(MODULE, ModuleSpec({
        **base.fields,
        "Account_Type": FieldSpec("picklist", values=("Individual", "Enterprise")),
        "Billing_State": FieldSpec(), "Billing_City": FieldSpec(), "Industry": FieldSpec(),
        "Tierline_Branch_Code": FieldSpec(max_length=16), "Employees": FieldSpec("integer"),
    }, base.system_duplicate_check))
    return crm


@pytest.fixture
def accounts(connector):
    connector.upsert(MODULE, [
        {ID_FIELD: "C1", "Account_Name": "张三", "Account_Type": "Individual", "Phone": "+86 138-0013-8000",
         "Billing_State": "浙江", "Billing_City": "杭州", "Tierline_Branch_Code": "HZ01"},
        {ID_FIELD: "C2", "Account_Name": "Acme, Ltd.", "Account_Type": "Enterprise", "Industry": "Retail",
         "Employees": 250},
        {ID_FIELD: "C3", "Account_Name": "No type yet"},
    ], ID_FIELD)
    # An account nobody linked to a tierline customer yet: not a customer row.
    connector.upsert(MODULE, [{"Account_Name": "Unlinked prospect"}], "Account_Name")


def rows(path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def land_and_load(inbox, tmp_path, url, day):
    manifest = land.land_extracts(inbox, day, tmp_path / "landing")
    return load.load_date(url, manifest, day, f"pull-{day}", "Asia/Shanghai")


def test_a_pull_writes_the_contract_file_and_it_loads_without_quarantine(crm, accounts, connector, warehouse_url,
                                                                         tmp_path):
    inbox = tmp_path / "inbox"

    result = pull.pull(inbox, DAY_1, warehouse_url=warehouse_url, connector=connector)

    [pulled] = result.files
    assert (pulled.full_read, pulled.records_read, pulled.rows_written, pulled.skipped_without_key) == (True, 4, 3, 1)
    path = inbox / DAY_1.isoformat() / "crm_customers.csv"
    written = rows(path)
    assert written["C1"]["customer_type"] == "individual" and written["C1"]["city"] == "杭州"
    assert written["C2"]["customer_type"] == "enterprise" and written["C2"]["employee_count"] == "250"
    assert written["C3"]["customer_type"] == "enterprise"  # the configured default
    assert written["C1"]["account_manager_id"] == crm.records(MODULE)[0]["Owner"]["id"]
    [loaded] = land_and_load(inbox, tmp_path, warehouse_url, DAY_1)
    assert (loaded.file, loaded.rows_read, loaded.rows_loaded, loaded.rows_quarantined) == ("crm_customers.csv", 3, 3, 0)
    raw = query(warehouse_url, "select customer_id, customer_name, customer_type, employee_count, updated_at "
                               "from raw.crm_customers order by customer_id")
    modified = {r[ID_FIELD]: parse_crm_time(r["Modified_Time"]) for r in crm.records(MODULE) if r.get(ID_FIELD)}
    assert raw == [("C1", "张三", "individual", None, modified["C1"]),
                   ("C2", "Acme, Ltd.", "enterprise", 250, modified["C2"]),
                   ("C3", "No type yet", "enterprise", None, modified["C3"])]


def test_the_next_pull_brings_only_what_changed_since_the_watermark(crm, accounts, connector, warehouse_url,
                                                                   tmp_path):
    inbox = tmp_path / "inbox"
    pull.pull(inbox, DAY_1, warehouse_url=warehouse_url, connector=connector)
    crm.advance_clock(5)
    crm.person_edits(MODULE, "C2", {"Employees": 300})

    second = pull.pull(inbox, DAY_2, warehouse_url=warehouse_url, connector=connector)

    [pulled] = second.files
    assert (pulled.full_read, pulled.rows_written) == (False, 1)
    changed = rows(inbox / DAY_2.isoformat() / "crm_customers.csv")
    assert list(changed) == ["C2"] and changed["C2"]["employee_count"] == "300"
    [loaded] = land_and_load(inbox, tmp_path, warehouse_url, DAY_2)
    assert (loaded.rows_loaded, loaded.rows_quarantined) == (1, 0)
    [(watermark,)] = query(warehouse_url, "select watermark from crm_sync.pull_watermarks where module = %s", MODULE)
    assert watermark == datetime.fromisoformat(pulled.watermark) == parse_crm_time(crm.record(MODULE, "C2")["Modified_Time"])

    third = pull.pull(inbox, DAY_3, warehouse_url=warehouse_url, connector=connector)

    # The step back re-reads the last second; records already pulled there are dropped, no file is written.
    assert (third.files[0].already_pulled, third.files[0].rows_written) == (1, 0)
    assert not (inbox / DAY_3.isoformat()).exists()


def test_a_second_pull_on_the_same_date_merges_into_its_file(crm, accounts, connector, warehouse_url, tmp_path):
    inbox = tmp_path / "inbox"
    pull.pull(inbox, DAY_1, warehouse_url=warehouse_url, connector=connector)
    crm.advance_clock(5)
    crm.person_edits(MODULE, "C1", {"Billing_City": "宁波"})

    pull.pull(inbox, DAY_1, warehouse_url=warehouse_url, connector=connector)

    merged = rows(inbox / DAY_1.isoformat() / "crm_customers.csv")
    assert sorted(merged) == ["C1", "C2", "C3"] and merged["C1"]["city"] == "宁波"


def test_a_pull_mapping_to_a_column_outside_the_contract_is_refused_with_its_key(tmp_path):
    text = crm_config.config_path().read_text(encoding="utf-8").replace("city: Billing_City", "town: Billing_City")
    path = tmp_path / "crm.yml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=r"pull\.files\.crm_customers\.csv\.columns\.town"):
        crm_config.load(path)
