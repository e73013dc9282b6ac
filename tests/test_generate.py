"""The sample extract generator: contract shape, integrity, personas, dirt and determinism.

The checks re-implement the contract's row rules (EXTRACTS.md) in plain Python, independent of the
SQL loader, so that "the broken rows are exactly the listed ones" is tested on its own terms.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tierline import contract
from tierline_dev.generate import PERSONAS, generate, main

START = date(2026, 11, 1)
DAYS = 4
SHANGHAI = timezone(timedelta(hours=8))
NUMBER = re.compile(r"^[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)?(\.[0-9]+)?$")
INTEGER = re.compile(r"^[+-]?[0-9]+$")
TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)? ?(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
CJK = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------------------------------------
# Reading extracts the way the contract describes them


def decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030")


def read_lines(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Normalised header and (physical line number, fields) for every data line."""
    lines = decode(path.read_bytes()).split("\n")
    assert lines[-1] == "", f"{path} does not end with a newline"
    header = [h.strip(" \u3000").lower() for h in next(csv.reader([lines[0]]))]
    return header, [(i, next(csv.reader([line]))) for i, line in enumerate(lines[1:-1], start=2)]


def null(value: str) -> bool:
    return value.strip().upper() in ("", "NULL")


def number(value: str) -> Decimal:
    value = value.strip()
    if not NUMBER.match(value) or not re.search("[0-9]", value):
        raise ValueError(value)
    return Decimal(value.replace(",", ""))


def integer(value: str) -> int:
    if not INTEGER.match(value.strip()):
        raise ValueError(value)
    return int(value)


def timestamp(value: str) -> datetime:
    value = value.strip()
    if not TIMESTAMP.match(value):
        raise ValueError(value)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHANGHAI)


def day(value: str) -> date:
    if not re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", value.strip()):
        raise ValueError(value)
    return date.fromisoformat(value.strip())


PARSERS = {"int": integer, "numeric": number, "amount": number, "timestamp": timestamp, "date": day}


def local_date(value: str) -> date:
    return timestamp(value).astimezone(SHANGHAI).date()


@dataclass
class Extracts:
    root: Path
    dates: list[str]
    quarantined: dict[tuple[str, str, int], str] = field(default_factory=dict)
    # extract date -> entity -> rows that pass every check (column -> raw value)
    loaded: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    headers: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def rows(self, entity: str, folder: str | None = None) -> list[dict[str, str]]:
        folders = [folder] if folder else self.dates
        return [r for d in folders for r in self.loaded[d][entity]]

    def latest(self, entity: str) -> dict[str, dict[str, str]]:
        """The newest version of each row over all folders (later folders win)."""
        key = contract.BY_NAME[entity].key[0]
        return {r[key].strip(): r for r in self.rows(entity)}


def check_extracts(root: Path) -> Extracts:
    """Apply the contract's row rules to every file, folder by folder, as a loader would."""
    dates = sorted(p.name for p in root.iterdir() if p.is_dir())
    result = Extracts(root, dates)
    keys_so_far: dict[str, set[str]] = defaultdict(set)
    for extract_date in dates:
        as_of = date.fromisoformat(extract_date)
        result.loaded[extract_date] = {}
        for entity in contract.ENTITIES:
            header, lines = read_lines(root / extract_date / entity.file_name)
            result.headers[(extract_date, entity.name)] = header
            reasons: dict[int, str] = {}
            values: dict[int, dict[str, str]] = {}
            for line_no, fields in lines:
                if len(fields) != len(header):
                    reasons[line_no] = "field_count"
                    continue
                row = {name: fields[header.index(name)] for name in (c.name for c in entity.columns)}
                values[line_no] = row
                reasons_here = [why for why in (row_problem(entity, row, as_of),) if why]
                if reasons_here:
                    reasons[line_no] = reasons_here[0]
            by_key = defaultdict(list)
            for line_no, row in values.items():
                if line_no not in reasons:
                    by_key[tuple(row[k].strip() for k in entity.key)].append(line_no)
            for lines_with_key in by_key.values():
                contents = {tuple(None if null(v) else v.strip() for v in values[n].values()) for n in lines_with_key}
                if len(contents) > 1:
                    reasons.update(dict.fromkeys(lines_with_key, "duplicate_key"))
            for line_no, row in values.items():
                if line_no in reasons:
                    continue
                for ref in (r for r in entity.references if r.hard):
                    if not null(row[ref.column]) and row[ref.column].strip() not in keys_so_far[ref.entity]:
                        reasons[line_no] = "unknown_fk"
                        break
            loaded = [row for line_no, row in values.items() if line_no not in reasons]
            result.loaded[extract_date][entity.name] = loaded
            keys_so_far[entity.name].update(row[entity.key[0]].strip() for row in loaded)
            for line_no, why in reasons.items():
                result.quarantined[(extract_date, entity.file_name, line_no)] = why
    return result


def row_problem(entity: contract.Entity, row: dict[str, str], as_of: date) -> str | None:
    if any(null(row[k]) for k in entity.key):
        return "missing_key"
    for column in entity.columns:
        value = row[column.name]
        if null(value):
            if not column.nullable:
                return f"missing required {column.name}"
            continue
        parser = PARSERS.get(column.type)
        if parser:
            try:
                parsed = parser(value)
            except ValueError:
                return "bad_number" if column.type in ("int", "numeric", "amount") else "bad_timestamp"
            if column.type == "amount" and abs(parsed) >= 10 ** (contract.AMOUNT_PRECISION - contract.AMOUNT_SCALE):
                return f"{column.name} beyond numeric(18, 2)"
            if column.min is not None and parsed < column.min:
                return "negative_quantity" if column.name == "quantity" else f"{column.name} below minimum"
            if column.max is not None and parsed > column.max:
                return f"{column.name} above maximum"
        if column.choices and value.strip().lower() not in column.choices:
            return f"{column.name} not a known code"
        if column.not_after == "extract_date" and local_date(value) > as_of:
            return "future_order"
        if column.not_after == "load":
            moment = parsed if isinstance(parsed, datetime) else datetime.combine(parsed, time(), SHANGHAI)
            end_of_date = datetime.combine(as_of + timedelta(days=1), time(), SHANGHAI)
            if moment >= max(end_of_date, datetime.now(SHANGHAI)) + timedelta(days=contract.EVENT_GRACE_DAYS):
                return f"{column.name} in the future"
    return None


def read_sidecar(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# Fixtures: one clean and one dirty data set, generated once per module


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    generate(out, customers=1500, days=DAYS, seed=7, start_date=START, dirty=False, progress=False)
    return out


@pytest.fixture(scope="module")
def dirty_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dirty")
    generate(out, customers=1500, days=DAYS, seed=11, start_date=START, dirty=True, progress=False)
    return out


@pytest.fixture(scope="module")
def clean(clean_dir) -> Extracts:
    return check_extracts(clean_dir)


@pytest.fixture(scope="module")
def dirty(dirty_dir) -> Extracts:
    return check_extracts(dirty_dir)


def orders_by_customer(extracts: Extracts) -> dict[str, list[datetime]]:
    out = defaultdict(list)
    for row in extracts.latest("sales_orders").values():
        out[row["customer_id"].strip()].append(timestamp(row["order_ts"]))
    return {c: sorted(ts) for c, ts in out.items()}


def personas(root: Path) -> dict[str, str]:
    return {r["customer_id"]: r["persona"] for r in read_sidecar(root / "_personas.csv")}


# ---------------------------------------------------------------------------------------------
# Shape


@pytest.mark.parametrize("which", ["clean", "dirty"])
def test_every_file_of_every_folder_has_the_contract_columns(which, request):
    extracts = request.getfixturevalue(which)
    assert extracts.dates == [(START + timedelta(days=k)).isoformat() for k in range(DAYS)]
    for extract_date in extracts.dates:
        for entity in contract.ENTITIES:
            header = extracts.headers[(extract_date, entity.name)]
            assert sorted(header) == sorted(c.name for c in entity.columns), (extract_date, entity.name)


def test_snapshot_and_increments_have_rows_for_the_busy_files(clean):
    for entity in ("crm_customers", "crm_interactions", "sales_orders", "sales_order_items"):
        assert len(clean.rows(entity, clean.dates[0])) > 1000
        assert all(clean.rows(entity, d) for d in clean.dates[1:]), entity


def test_clean_data_is_fully_valid_utf8_without_dirt(clean, clean_dir):
    assert clean.quarantined == {}
    assert (clean_dir / "_expected_quarantine.csv").read_text().splitlines() == ["extract_date,file,line_no,kind"]
    for path in clean_dir.glob("*/*.csv"):
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        assert not raw.startswith(b"\xef\xbb\xbf")
        assert "NULL" not in text and "\u3000" not in text, path
        header = text.split("\n", 1)[0]
        assert header == ",".join(c.name for c in contract.BY_FILE[path.name].columns)
    for row in clean.rows("sales_orders"):
        assert row["order_ts"].endswith("+08:00") and "," not in row["net_amount"]


# ---------------------------------------------------------------------------------------------
# Integrity


def test_soft_references_point_to_existing_rows(clean):
    customers = set(clean.latest("crm_customers"))
    managers = set(clean.latest("crm_account_managers"))
    rows = clean.rows("crm_customers")
    referred = [r["referred_by"] for r in rows if r["referred_by"]]
    managed = [r["account_manager_id"] for r in rows if r["account_manager_id"]]
    assert referred and managed
    assert set(referred) <= customers
    assert set(managed) <= managers


def test_referrers_and_orders_come_after_the_customer_was_created(clean):
    customers = clean.latest("crm_customers")
    for row in customers.values():
        if row["referred_by"]:
            referrer = customers[row["referred_by"]]
            assert timestamp(referrer["created_at"]) <= timestamp(row["created_at"])
    for customer, times in orders_by_customer(clean).items():
        assert timestamp(customers[customer]["created_at"]) <= times[0]


def test_amounts_are_consistent(clean):
    orders = clean.latest("sales_orders")
    lines = defaultdict(Decimal)
    for item in clean.rows("sales_order_items"):
        lines[item["order_id"]] += number(item["quantity"]) * number(item["unit_price"])
    refunds = defaultdict(list)
    for refund in clean.rows("sales_refunds"):
        refunds[refund["order_id"]].append(number(refund["amount"]))
    assert set(lines) == set(orders), "every order has items and every item an order"
    for order_id, order in orders.items():
        gross, discount, net = (number(order[c]) for c in ("gross_amount", "discount_amount", "net_amount"))
        assert net == gross - discount and 0 <= discount <= gross / 2, order_id
        assert gross == lines[order_id], order_id
        assert sum(refunds.get(order_id, [])) <= net, order_id
        if order["status"] == "refunded":
            assert refunds[order_id] == [net], order_id
    statuses = [o["status"] for o in orders.values()]
    share = {s: statuses.count(s) / len(statuses) for s in set(statuses)}
    assert share["completed"] > 0.9
    assert 0.015 < share["cancelled"] < 0.05
    assert 0.005 < share["refunded"] < 0.025
    partial = [o for o, r in refunds.items() if orders[o]["status"] == "completed"]
    assert partial, "partial refunds keep the order completed"


def test_incremental_folders_hold_only_that_days_changes(clean):
    stamp = {"crm_account_managers": "updated_at", "crm_customers": "updated_at", "sales_products": "updated_at",
             "crm_interactions": "occurred_at", "crm_tickets": "updated_at", "crm_surveys": "answered_at",
             "crm_tier_overrides": "updated_at", "sales_orders": "updated_at", "sales_refunds": "refunded_at"}
    for extract_date in clean.dates:
        as_of = date.fromisoformat(extract_date)
        for entity, column in stamp.items():
            for row in clean.rows(entity, extract_date):
                when = local_date(row[column])
                if extract_date == clean.dates[0]:
                    assert when <= as_of, (entity, row)
                else:
                    assert when == as_of, (extract_date, entity, row)
        if extract_date != clean.dates[0]:
            orders = {r["order_id"]: r for r in clean.rows("sales_orders", extract_date)}
            for item in clean.rows("sales_order_items", extract_date):
                assert local_date(orders[item["order_id"]]["order_ts"]) == as_of


def test_status_changes_are_resent_with_a_newer_updated_at(clean):
    first = {r["order_id"]: r for r in clean.rows("sales_orders", clean.dates[0])}
    resent = [r for d in clean.dates[1:] for r in clean.rows("sales_orders", d) if r["order_id"] in first]
    assert resent, "pending orders complete, and completed ones get refunded, after the snapshot"
    for row in resent:
        before = first[row["order_id"]]
        assert timestamp(row["updated_at"]) > timestamp(before["updated_at"])
        assert row["status"] != before["status"]
    assert {r["status"] for r in first.values()} >= {"pending", "completed", "cancelled", "refunded"}


# ---------------------------------------------------------------------------------------------
# Personas and heterogeneity


def test_persona_mix_matches_the_configured_shares(clean, clean_dir):
    snapshot = {r["customer_id"] for r in clean.rows("crm_customers", clean.dates[0])}
    by_persona = personas(clean_dir)
    assert snapshot <= set(by_persona)
    assert set(by_persona) == set(clean.latest("crm_customers"))
    counts = defaultdict(int)
    for customer in snapshot:
        counts[by_persona[customer]] += 1
    for persona in PERSONAS:
        assert abs(counts[persona.name] - persona.share * len(snapshot)) <= 1, persona.name


def test_personas_behave_as_named(clean, clean_dir):
    by_persona = defaultdict(list)
    for customer, persona in personas(clean_dir).items():
        by_persona[persona].append(customer)
    orders = orders_by_customer(clean)
    as_of = datetime(START.year, START.month, START.day, tzinfo=SHANGHAI) + timedelta(days=1)

    def days_before(t: datetime) -> float:
        return (as_of - t).total_seconds() / 86400

    assert not any(c in orders for c in by_persona["prospect"])
    contacted = {r["customer_id"] for r in clean.rows("crm_interactions")}
    assert set(by_persona["prospect"]) <= contacted, "a prospect has interactions but no orders"
    for customer in by_persona["newcomer"]:
        assert days_before(orders[customer][0]) <= 30, customer
    for customer in by_persona["churned"]:
        assert days_before(orders[customer][-1]) > 365, customer
    for customer in by_persona["dormant"]:
        assert 180 < days_before(orders[customer][-1]) <= 365, customer
    for customer in by_persona["reactivated"]:
        times = orders[customer]
        assert days_before(times[-1]) <= 60, customer
        assert max(b - a for a, b in zip(times, times[1:], strict=False)) > timedelta(days=365), customer
    recent = earlier = 0
    for customer in by_persona["declining"]:
        assert customer in orders, customer
        recent += sum(days_before(t) <= 180 for t in orders[customer])
        earlier += sum(180 < days_before(t) <= 400 for t in orders[customer])
    assert recent / 180 < 0.4 * earlier / 220, "declining customers buy far less in the last 180 days"
    for customer in by_persona["loyal_whale"]:
        assert days_before(orders[customer][-1]) <= 90, customer


def test_spend_is_heavy_tailed_and_whales_spend_most(clean, clean_dir):
    persona = personas(clean_dir)
    spend = defaultdict(Decimal)
    for order in clean.latest("sales_orders").values():
        if order["status"] != "cancelled":
            spend[order["customer_id"]] += number(order["net_amount"])
    ranked = sorted(spend.values(), reverse=True)
    assert sum(ranked[: len(ranked) // 10]) > Decimal("0.5") * sum(ranked), "top 10% of buyers bring half the revenue"

    def median(name):
        values = sorted(v for c, v in spend.items() if persona[c] == name)
        return values[len(values) // 2]

    assert median("loyal_whale") > 3 * median("loyal") > 3 * median("occasional")


def test_enterprises_and_individuals_differ(clean):
    customers = clean.latest("crm_customers")
    enterprises = [c for c in customers.values() if c["customer_type"] == "enterprise"]
    individuals = [c for c in customers.values() if c["customer_type"] == "individual"]
    assert 0.05 < len(enterprises) / len(customers) < 0.2
    assert all(c["industry"] and not c["birth_date"] and not c["gender"] for c in enterprises)
    assert sum(bool(c["employee_count"]) for c in enterprises) > 0.9 * len(enterprises)
    assert all(not c["industry"] and not c["employee_count"] for c in individuals)
    assert sum(bool(c["birth_date"]) for c in individuals) > 0.9 * len(individuals)
    assert sum(bool(CJK.search(c["customer_name"])) for c in customers.values()) > 0.7 * len(customers)
    assert any(c["customer_name"].isascii() for c in customers.values()), "English names too"
    kind = {c["customer_id"]: c["customer_type"] for c in customers.values()}
    value = defaultdict(list)
    for order in clean.latest("sales_orders").values():
        value[kind[order["customer_id"]]].append(number(order["net_amount"]))
    assert sum(value["enterprise"]) / len(value["enterprise"]) > 3 * sum(value["individual"]) / len(value["individual"])


def test_branches_managers_and_overrides_are_realistic(clean):
    managers = clean.latest("crm_account_managers")
    customers = clean.latest("crm_customers")
    assert len(managers) == max(5, round(1500 / 500))
    branches = {c["branch_code"] for c in customers.values() if c["branch_code"]}
    assert branches == {"BJ01", "SH01", "GZ01", "SZ01", "CD01", "HZ01", "WH01", "XA01"}
    overrides = clean.rows("crm_tier_overrides", clean.dates[0])
    assert len(overrides) >= 8
    assert any(o["valid_to"] and day(o["valid_to"]) < START for o in overrides), "some overrides have expired"
    assert any(not o["valid_to"] for o in overrides), "some overrides never expire"
    assert {o["tier"] for o in overrides} <= {"strategic", "vip", "key", "regular", "potential"}
    channels = {r["channel"] for r in clean.rows("crm_interactions")}
    assert {"phone", "email", "wechat", "visit", "web", "social", "event"} <= channels
    assert all(1 <= integer(t["csat"]) <= 5 for t in clean.rows("crm_tickets") if t["csat"])


# ---------------------------------------------------------------------------------------------
# Dirt and broken rows


def test_expected_quarantine_lists_exactly_the_broken_rows(dirty, dirty_dir):
    expected = {(r["extract_date"], r["file"], int(r["line_no"])): r["kind"]
                for r in read_sidecar(dirty_dir / "_expected_quarantine.csv")}
    assert dirty.quarantined == expected
    kinds_by_file = defaultdict(set)
    for (extract_date, file, _), kind in expected.items():
        if extract_date == dirty.dates[0]:
            kinds_by_file[file].add(kind)
    assert kinds_by_file["sales_orders.csv"] == {"bad_number", "bad_timestamp", "missing_key", "unknown_fk",
                                                 "future_order", "duplicate_key", "field_count"}
    assert "negative_quantity" in kinds_by_file["sales_order_items.csv"]
    assert len(kinds_by_file) == len(contract.ENTITIES), "the snapshot has broken rows in every file"
    duplicates = [k for k, kind in expected.items() if kind == "duplicate_key"]
    assert len(duplicates) % 2 == 0, "both lines of a duplicated key are listed"


def test_dirty_data_minus_broken_rows_keeps_orders_whole(dirty):
    orders = dirty.latest("sales_orders")
    lines = defaultdict(Decimal)
    for item in dirty.rows("sales_order_items"):
        lines[item["order_id"].strip()] += number(item["quantity"]) * number(item["unit_price"])
    assert set(lines) == set(orders)
    for order_id, order in orders.items():
        discount = Decimal(0) if null(order["discount_amount"]) else number(order["discount_amount"])
        assert number(order["net_amount"]) == number(order["gross_amount"]) - discount == lines[order_id] - discount


def test_snapshot_customers_file_is_gb18030(dirty_dir):
    raw = (dirty_dir / START.isoformat() / "crm_customers.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert len(CJK.findall(raw.decode("gb18030"))) > 1000
    later = (dirty_dir / (START + timedelta(days=1)).isoformat() / "crm_customers.csv").read_bytes()
    later.decode("utf-8")


def test_managers_file_has_a_bom(dirty_dir):
    for folder in sorted(p for p in dirty_dir.iterdir() if p.is_dir()):
        assert (folder / "crm_account_managers.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_dirty_spellings_are_all_present(dirty, dirty_dir):
    customers = dirty.rows("crm_customers")
    phones = [c["phone"] for c in customers if not null(c["phone"])]
    assert any(re.fullmatch(r"\+86 1\d\d-\d{4}-\d{4}", p) for p in phones)
    assert any(re.fullmatch(r"1\d{10}", p) for p in phones)
    assert any(re.fullmatch(r"861\d{10}", p) for p in phones)
    assert any(re.fullmatch(r"[０-９]{11,13}", p) for p in phones)
    emails = [c["email"] for c in customers if not null(c["email"])]
    assert any(e != e.lower() for e in emails) and any(e != e.strip() for e in emails)
    names = [c["customer_name"] for c in customers]
    assert any("\u3000" in n for n in names) and any(n != n.strip(" ") for n in names)
    stamps = [o[c] for o in dirty.rows("sales_orders") for c in ("order_ts", "updated_at")]
    assert any(s.endswith("+08:00") for s in stamps)
    assert any(s.endswith("Z") for s in stamps)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", s) for s in stamps)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", s) for s in stamps)
    assert any("," in o["net_amount"] for o in dirty.rows("sales_orders"))
    assert any(c["industry"] == "NULL" for c in customers) and any(c["industry"] == "" for c in customers)
    raw_headers = [(dirty_dir / START.isoformat() / e.file_name).read_bytes().split(b"\n", 1)[0]
                   for e in contract.ENTITIES]
    assert any(h != h.lower() for h in raw_headers) and any(b" ," in h or b", " in h for h in raw_headers)
    ticket_header = dirty.headers[(START.isoformat(), "crm_tickets")]
    assert ticket_header != [c.name for c in contract.BY_NAME["crm_tickets"].columns]


def test_dirty_and_clean_broken_row_kinds_are_known(dirty_dir):
    kinds = {r["kind"] for r in read_sidecar(dirty_dir / "_expected_quarantine.csv")}
    assert kinds == {"bad_number", "bad_timestamp", "missing_key", "unknown_fk", "negative_quantity",
                     "future_order", "duplicate_key", "field_count"}


# ---------------------------------------------------------------------------------------------
# Determinism and the command line


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.csv"))}


def test_same_arguments_give_identical_bytes_and_another_seed_does_not(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path / name, customers=300, days=2, seed=seed, progress=False)
        runs[name] = digest(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert len(runs["a"]) == 2 * len(contract.ENTITIES) + 2
    assert runs["a"].keys() == runs["c"].keys()
    assert all(runs["a"][f] != runs["c"][f] for f in runs["a"] if f.startswith(START.isoformat()))


def test_cli_writes_and_summarises(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--customers", "200", "--days", "2", "--seed", "5",
                 "--start-date", "2026-06-30", "--history-days", "500", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sales_orders.csv" in out and "broken rows injected" in out and "MB in" in out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["2026-06-30", "2026-07-01"]


def test_cli_clean_and_argument_errors(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--customers", "100", "--days", "1", "--clean", "--no-progress"]) == 0
    assert "broken rows" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--customers", "100", "--history-days", "100", "--no-progress"])
    assert "history_days must be at least" in capsys.readouterr().err


def test_refuses_to_mix_with_other_extract_dates_but_reruns_in_place(tmp_path):
    generate(tmp_path, customers=100, days=2, progress=False)
    before = digest(tmp_path)
    generate(tmp_path, customers=100, days=2, progress=False)
    assert digest(tmp_path) == before
    with pytest.raises(ValueError, match="already holds extract folders"):
        generate(tmp_path, customers=100, days=1, progress=False)


def test_the_generator_writes_the_contracts_codes():
    from tierline import contract
    from tierline_dev import generate as module

    assert set(module.STATUSES) == set(contract.ORDER_STATUSES)
    assert set(module.CUSTOMER_TYPES) == set(contract.CUSTOMER_TYPES)
