"""Writing to the CRM: upsert semantics, batch limits, per-record and whole-batch failures."""

from __future__ import annotations

import pytest

from tierline.crm import CrmBatchRejected, CrmBatchTooLarge
from tierline_dev.crm_emulators.zoho import FieldSpec, ModuleSpec

from .support import ID_FIELD, MODULE, customer, load


def test_upsert_creates_then_updates_by_external_id_without_duplicates(crm, connector):
    created = connector.upsert(MODULE, [customer(n) for n in range(3)], ID_FIELD)
    updated = connector.upsert(MODULE, [customer(n, Tierline_Tier="VIP") for n in range(3)], ID_FIELD)

    assert [r.action for r in created] == ["insert"] * 3
    assert [r.action for r in updated] == ["update"] * 3
    assert [r.crm_id for r in updated] == [r.crm_id for r in created]
    stored = crm.records(MODULE)
    assert len(stored) == 3
    assert {r["Tierline_Tier"] for r in stored} == {"VIP"}


def test_results_follow_the_order_of_the_records_sent(connector):
    load(connector, 2)

    results = connector.upsert(MODULE, [customer(5), customer(1), customer(6)], ID_FIELD)

    assert [r.key for r in results] == ["C00005", "C00001", "C00006"]
    assert [r.action for r in results] == ["insert", "update", "insert"]


def test_a_batch_over_100_is_refused_before_anything_is_sent(crm, connector):
    with pytest.raises(CrmBatchTooLarge):
        connector.upsert(MODULE, [customer(n) for n in range(101)], ID_FIELD)

    assert connector.calls_made == 0
    assert crm.counters()["write_calls"] == 0


def test_a_batch_of_exactly_100_goes_through(connector):
    results = connector.upsert(MODULE, [customer(n) for n in range(100)], ID_FIELD)

    assert len(results) == 100 and all(r.ok for r in results)


def test_records_without_the_external_id_or_repeating_one_are_refused_before_sending(crm, connector):
    with pytest.raises(ValueError, match=ID_FIELD):
        connector.upsert(MODULE, [customer(1), {"Account_Name": "No id"}], ID_FIELD)
    with pytest.raises(ValueError, match="repeats"):
        connector.upsert(MODULE, [customer(1), customer(1)], ID_FIELD)

    assert crm.counters()["write_calls"] == 0


def test_partial_batch_failure_returns_per_record_errors(crm, connector):
    crm.reject_records(["C00003"], field="Tierline_Customer_Value", message="value fails a validation rule")
    batch = [customer(n) for n in range(5)]
    batch[1]["Tierline_Tier"] = "Diamond"
    batch[4].pop("Account_Name")

    results = connector.upsert(MODULE, batch, ID_FIELD)

    assert [r.ok for r in results] == [True, False, True, False, False]
    failed = {r.key: (r.code, r.field) for r in results if not r.ok}
    assert failed == {
        "C00001": ("INVALID_DATA", "Tierline_Tier"),
        "C00003": ("INVALID_DATA", "Tierline_Customer_Value"),
        "C00004": ("MANDATORY_NOT_FOUND", "Account_Name"),
    }
    assert all(r.crm_id is None for r in results if not r.ok)
    assert sorted(r[ID_FIELD] for r in crm.records(MODULE)) == ["C00000", "C00002"]
    assert crm.counters()["statuses"] == {"200": 1, "207": 1}


def test_a_batch_where_every_record_fails_still_returns_results(crm, connector):
    results = connector.upsert(MODULE, [customer(n, Tierline_Tier="Diamond") for n in range(3)], ID_FIELD)

    assert [(r.ok, r.code, r.field) for r in results] == [(False, "INVALID_DATA", "Tierline_Tier")] * 3
    assert crm.counters()["statuses"]["400"] == 1


def test_a_unique_value_held_by_another_record_is_a_per_record_duplicate_error(crm, connector):
    crm.define_module(
        "Leads",
        ModuleSpec(
            {
                ID_FIELD: FieldSpec(unique=True),
                "Last_Name": FieldSpec(mandatory=True),
                "Email": FieldSpec("email", unique=True),
            },
            system_duplicate_check=("Email",),
        ),
    )
    connector.upsert(
        "Leads",
        [
            {ID_FIELD: "L1", "Last_Name": "A", "Email": "a@example.com"},
            {ID_FIELD: "L2", "Last_Name": "B", "Email": "b@example.com"},
        ],
        ID_FIELD,
    )

    (result,) = connector.upsert("Leads", [{ID_FIELD: "L2", "Email": "a@example.com"}], ID_FIELD)

    assert (result.ok, result.code, result.field) == (False, "DUPLICATE_DATA", "Email")
    assert crm.record("Leads", "L2")["Email"] == "b@example.com"


def test_other_unique_fields_take_part_in_matching(crm, connector):
    # As in Zoho: after the named duplicate-check field, every user-defined unique field is tried.
    crm.define_module(
        "Leads",
        ModuleSpec(
            {
                ID_FIELD: FieldSpec(unique=True),
                "Last_Name": FieldSpec(),
                "Email": FieldSpec("email", unique=True),
            }
        ),
    )
    (first,) = connector.upsert("Leads", [{ID_FIELD: "L1", "Email": "a@example.com"}], ID_FIELD)

    (second,) = connector.upsert("Leads", [{ID_FIELD: "L2", "Email": "a@example.com"}], ID_FIELD)

    assert (second.action, second.crm_id) == ("update", first.crm_id)
    assert [r[ID_FIELD] for r in crm.records("Leads")] == ["L2"]


def test_unknown_fields_are_dropped_like_zoho_does(crm, connector):
    (result,) = connector.upsert(MODULE, [customer(1, Vip_Tier="VIP")], ID_FIELD)

    assert result.ok
    assert "Vip_Tier" not in crm.record(MODULE, "C00001")
    assert crm.record(MODULE, "C00001")["Tierline_Tier"] == "Regular"


def test_a_whole_batch_400_raises_with_the_body_and_writes_nothing(crm, connector):
    crm.reject_batches(containing=["C00007"])
    batch = [customer(n) for n in range(10)]

    with pytest.raises(CrmBatchRejected) as raised:
        connector.upsert(MODULE, batch, ID_FIELD)

    assert raised.value.status == 400
    assert raised.value.code == "INVALID_DATA"
    assert raised.value.body["details"]["json_path"] == "$.data[7]"
    assert raised.value.record_index == 7
    assert crm.records(MODULE) == []


def test_splitting_a_rejected_batch_isolates_the_bad_record(crm, connector):
    crm.reject_batches(containing=["C00007"])
    batch = [customer(n) for n in range(10)]

    assert all(r.ok for r in connector.upsert(MODULE, batch[:5], ID_FIELD))
    with pytest.raises(CrmBatchRejected) as raised:
        connector.upsert(MODULE, batch[5:], ID_FIELD)

    assert raised.value.record_index == 2
    assert len(crm.records(MODULE)) == 5


def test_a_one_off_batch_rejection_is_not_retried_by_the_connector(crm, connector, sleeps):
    crm.reject_batches(count=1)
    batch = [customer(n) for n in range(3)]

    with pytest.raises(CrmBatchRejected) as raised:
        connector.upsert(MODULE, batch, ID_FIELD)
    assert raised.value.record_index is None
    assert sleeps.waits == []

    assert all(r.ok for r in connector.upsert(MODULE, batch, ID_FIELD))


def test_update_writes_existing_records_by_id_and_never_creates(crm, connector):
    created = load(connector, 2)
    unknown = "5725767999999999999"

    results = connector.update(MODULE, [{"id": created[0].crm_id, "Tierline_Tier": "VIP"},
                                        {"id": unknown, "Tierline_Tier": "VIP"}])

    assert [(r.key, r.ok, r.action) for r in results] == [(created[0].crm_id, True, "update"), (unknown, False, None)]
    assert (results[1].code, results[1].field) == ("INVALID_DATA", "id")
    assert len(crm.records(MODULE)) == 2
    assert crm.record(MODULE, "C00000")["Tierline_Tier"] == "VIP"
    assert crm.counters()["calls"][f"PUT /crm/v8/{MODULE}"] == 1
