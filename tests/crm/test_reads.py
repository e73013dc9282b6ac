"""Reading from the CRM: pagination, incremental fetches, lookups by external id, people's edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tierline.crm import parse_crm_time
from tierline_dev.crm_emulators.zoho import DEFAULT_PERSON

from .support import ID_FIELD, MODULE, load


def test_iter_modified_walks_every_page(crm, connector):
    load(connector, 450)

    records = list(connector.iter_modified(MODULE, None, [ID_FIELD], per_page=200))

    assert len(records) == 450
    assert len({r[ID_FIELD] for r in records}) == 450
    assert crm.counters()["calls"][f"GET /crm/v8/{MODULE}"] == 3


def test_iter_modified_goes_past_the_2000_record_page_limit_with_page_tokens(crm, connector):
    load(connector, 2150)

    ids = [r["id"] for r in connector.iter_modified(MODULE, None, [ID_FIELD])]

    assert len(ids) == len(set(ids)) == 2150
    assert crm.counters()["calls"][f"GET /crm/v8/{MODULE}"] == 11
    assert "400" not in crm.counters()["statuses"]


def test_records_come_with_modification_metadata(crm, connector):
    load(connector, 1)

    (record,) = connector.iter_modified(MODULE, None, ["Tierline_Tier"])

    assert set(record) == {"id", "Tierline_Tier", "Modified_Time", "Modified_By"}
    assert record["Modified_By"]["id"] == connector.current_user()["id"]
    assert parse_crm_time(record["Modified_Time"]).utcoffset() is not None


def test_if_modified_since_returns_only_what_changed_after_it(crm, connector):
    load(connector, 10)
    since = crm.now()
    crm.advance_clock(5)
    connector.upsert(
        MODULE,
        [{ID_FIELD: "C00001", "Tierline_Tier": "VIP"}, {ID_FIELD: "C00002", "Tierline_Tier": "Strategic"}],
        ID_FIELD,
    )
    crm.person_edits(MODULE, "C00003", {"Phone": "+86 10 5555 0100"})

    changed = list(connector.iter_modified(MODULE, since, [ID_FIELD, "Tierline_Tier"]))

    assert sorted(r[ID_FIELD] for r in changed) == ["C00001", "C00002", "C00003"]
    assert all(parse_crm_time(r["Modified_Time"]) > since for r in changed)


def test_if_modified_since_with_nothing_changed_yields_nothing_from_a_304(crm, connector):
    load(connector, 5)
    crm.advance_clock(2)

    assert list(connector.iter_modified(MODULE, crm.now(), [ID_FIELD])) == []
    assert crm.counters()["statuses"]["304"] == 1


def test_since_must_carry_a_timezone(connector):
    with pytest.raises(ValueError, match="timezone"):
        list(connector.iter_modified(MODULE, datetime(2024, 1, 1), [ID_FIELD]))


def test_an_empty_module_yields_nothing(connector):
    assert list(connector.iter_modified(MODULE, None, [ID_FIELD])) == []
    assert list(connector.iter_modified(MODULE, datetime(2024, 1, 1, tzinfo=UTC), [ID_FIELD])) == []


def test_get_records_by_external_id_chunks_the_search(crm, connector):
    load(connector, 30)
    wanted = [f"C{n:05d}" for n in range(3, 28)] + ["C99999"]

    records = connector.get_records(MODULE, ["Tierline_Tier"], wanted, id_field=ID_FIELD)

    assert sorted(r[ID_FIELD] for r in records) == wanted[:-1]
    assert crm.counters()["calls"][f"GET /crm/v8/{MODULE}/search"] == 3


def test_get_records_without_ids_returns_everything(connector):
    load(connector, 7)

    assert len(connector.get_records(MODULE, [ID_FIELD])) == 7


def test_get_record_by_crm_id(connector):
    (result,) = load(connector, 1)

    record = connector.get_record(MODULE, result.crm_id)

    assert record[ID_FIELD] == "C00000"
    assert connector.get_record(MODULE, "5725767999999999999") is None


def test_a_persons_edit_is_visible_with_their_modified_by(crm, connector):
    load(connector, 3)
    since = crm.now()
    crm.advance_clock(2)

    crm.person_edits(MODULE, "C00001", {"Tierline_Tier": "Strategic"})

    (edited,) = connector.iter_modified(MODULE, since, [ID_FIELD, "Tierline_Tier"])
    assert edited[ID_FIELD] == "C00001"
    assert edited["Tierline_Tier"] == "Strategic"
    assert edited["Modified_By"]["id"] == DEFAULT_PERSON["id"]
    assert edited["Modified_By"]["id"] != connector.current_user()["id"]


def test_if_modified_since_is_strictly_after_the_given_second(connector):
    # A watermark equal to a record's Modified_Time does not return it again, so a sync that keeps
    # max(Modified_Time) as its watermark must step it back to catch writes later in that second.
    load(connector, 1)
    (record,) = connector.iter_modified(MODULE, None, [ID_FIELD])
    watermark = parse_crm_time(record["Modified_Time"])

    assert list(connector.iter_modified(MODULE, watermark, [ID_FIELD])) == []
    assert len(list(connector.iter_modified(MODULE, watermark - timedelta(seconds=1), [ID_FIELD]))) == 1
