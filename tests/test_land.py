"""Landing (issue #8, item 7): a date's manifest is its folder as it is now, and nothing else."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from tierline import land
from tierline.errors import ExtractError

DAY = date(2026, 11, 1)
CUSTOMERS = "customer_id,customer_name,customer_type,created_at,updated_at\nC1,张三,individual,2025-01-01,2025-01-01\n"
INTERACTIONS = "interaction_id,customer_id,channel,occurred_at\nI1,C1,phone,2026-10-01\n"


def folder(root: Path, files: dict[str, str]) -> Path:
    day = root / DAY.isoformat()
    day.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (day / name).write_text(content, encoding="utf-8")
    return root


def test_two_names_for_one_file_in_different_case_are_refused_naming_both(tmp_path):
    root = folder(tmp_path / "inbox", {"crm_customers.csv": CUSTOMERS, "CRM_CUSTOMERS.csv": CUSTOMERS})
    with pytest.raises(ExtractError, match="CRM_CUSTOMERS.csv and crm_customers.csv are the same contract file"):
        land.land_extracts(root, DAY, tmp_path / "area")


def test_a_file_removed_from_the_folder_is_not_in_the_next_manifest(tmp_path):
    root = folder(tmp_path / "inbox", {"crm_customers.csv": CUSTOMERS, "crm_interactions.csv": INTERACTIONS})
    assert set(land.land_extracts(root, DAY, tmp_path / "area")["files"]) == {
        "crm_customers.csv", "crm_interactions.csv"}
    (root / DAY.isoformat() / "crm_interactions.csv").unlink()
    assert set(land.land_extracts(root, DAY, tmp_path / "area")["files"]) == {"crm_customers.csv"}


def test_two_landing_folders_sharing_a_landing_area_do_not_see_each_others_files(tmp_path):
    area = tmp_path / "home" / "landing"
    first = folder(tmp_path / "warehouse_a" / "inbox", {"crm_customers.csv": CUSTOMERS,
                                                        "crm_interactions.csv": INTERACTIONS})
    second = folder(tmp_path / "warehouse_b" / "inbox", {"crm_customers.csv": CUSTOMERS.replace("张三", "李四")})
    one = land.land_extracts(first, DAY, area)
    two = land.land_extracts(second, DAY, area)
    assert set(two["files"]) == {"crm_customers.csv"}
    assert Path(one["files"]["crm_customers.csv"]["path"]).parent != Path(two["files"]["crm_customers.csv"]["path"]).parent
    assert "李四" in Path(two["files"]["crm_customers.csv"]["path"]).read_text(encoding="utf-8")


def test_a_link_out_of_the_landing_folder_is_refused_and_one_inside_it_is_followed(tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text(CUSTOMERS, encoding="utf-8")
    root = folder(tmp_path / "inbox", {})
    os.symlink(outside, root / DAY.isoformat() / "crm_customers.csv")
    with pytest.raises(ExtractError, match="outside the landing folder"):
        land.land_extracts(root, DAY, tmp_path / "area")

    (root / DAY.isoformat() / "crm_customers.csv").unlink()
    (root / "shared").mkdir()
    (root / "shared" / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    os.symlink(root / "shared" / "customers.csv", root / DAY.isoformat() / "crm_customers.csv")
    assert set(land.land_extracts(root, DAY, tmp_path / "area")["files"]) == {"crm_customers.csv"}


def test_a_date_folder_that_links_out_of_the_landing_folder_is_refused(tmp_path):
    elsewhere = folder(tmp_path / "elsewhere", {"crm_customers.csv": CUSTOMERS})
    root = tmp_path / "inbox"
    root.mkdir()
    os.symlink(elsewhere / DAY.isoformat(), root / DAY.isoformat())
    with pytest.raises(ExtractError, match="outside the landing folder"):
        land.land_extracts(root, DAY, tmp_path / "area")


def test_a_contract_name_that_is_not_a_regular_file_is_refused(tmp_path):
    root = folder(tmp_path / "inbox", {})
    (root / DAY.isoformat() / "crm_customers.csv").mkdir()
    with pytest.raises(ExtractError, match="crm_customers.csv: is not a regular file"):
        land.land_extracts(root, DAY, tmp_path / "area")


def test_unknown_files_are_listed_whatever_their_case(tmp_path):
    root = folder(tmp_path / "inbox", {"crm_customers.csv": CUSTOMERS, "NOTES.CSV": "x\n", "readme.txt": "x"})
    assert land.land_extracts(root, DAY, tmp_path / "area")["ignored_files"] == ["NOTES.CSV", "readme.txt"]
