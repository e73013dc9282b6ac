"""Erasure and secrets on a real run (issue 12, items 4 and 6).

One published day through the real DAG (`make run`'s CLI, Airflow included), against a database
owned by a login role with a password given as `?password=`, with CRM credentials set, a CRM sync
to the emulator and a dry-run plan; then `tierline forget` for one customer, and the next day's
extract, which still carries them, loaded by the pipeline's stages.
"""

from __future__ import annotations

import csv
import json
import re
import stat
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tierline import cli, pipeline, settings, warehouse
from tierline.crm import config as crm_config
from tierline_dev import generate
from tierline_dev.crm_emulators.configured import zoho_module
from tierline_dev.crm_emulators.zoho import CrmEmulator

from .crm.sync_support import MODULE, UPSERT, settings_with

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
# an identifier inside a longer word is someone else's (C00012 in C000120, 王伟 in 王伟明)
WORD = "[0-9A-Za-z_\u0080-\uffff]"


def whole_words(values) -> str:
    return f"(?<!{WORD})(?:" + "|".join(re.escape(v) for v in values) + f")(?!{WORD})"


def encoding(path: Path) -> str:
    try:
        path.read_bytes().decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "gb18030"  # the generator writes some files as a Chinese Excel would


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """The header as written and the rows by contract column name (headers vary in case and spaces)."""
    with path.open(encoding=encoding(path), newline="") as handle:
        header, *rows = list(csv.reader(handle))
    names = [h.strip().lower() for h in header]
    return header, [dict(zip(names, row, strict=False)) for row in rows]


def append_row(path: Path, row: dict) -> None:
    header, _ = read_rows(path)
    with path.open("a", encoding=encoding(path).removesuffix("-sig"), newline="") as handle:
        csv.writer(handle).writerow([row.get(h.strip().lower(), "") for h in header])


def warehouse_hits(url: str, pattern: str) -> dict[str, int]:
    """Rows of every table of every schema whose text (every column, as PostgreSQL writes a row) matches."""
    hits = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') "
            "and n.nspname not like 'pg\\_%'").fetchall()
        for schema, table in tables:
            found = conn.execute(sql.SQL("select count(*) from {}.{} t where t::text ~ %s").format(
                sql.Identifier(schema), sql.Identifier(table)), (pattern,)).fetchone()[0]
            if found:
                hits[f"{schema}.{table}"] = found
    return hits


def file_hits(folders: list[Path], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return sorted(str(p) for folder in folders for p in folder.rglob("*")
                  if p.is_file() and regex.search(p.read_bytes().decode(encoding(p).removesuffix("-sig"), "replace")))


@pytest.fixture(scope="module")
def world(server_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("erasure")
    tag = uuid.uuid4().hex[:8]
    role, password, database = f"tl_erasure_{tag}", f"pw-{uuid.uuid4().hex}", f"tierline_erasure_{tag}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        # CREATEROLE: the pipeline creates the access groups on first publish (docs/production.md)
        conn.execute(sql.SQL("create role {} login createrole password {}").format(sql.Identifier(role),
                                                                                   sql.Literal(password)))
        conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(database), sql.Identifier(role)))
    # the server's own address (a host and port, or the embedded server's socket in `?host=`), this
    # role and database, and the password given the way the issue found it leaking: `?password=`
    server = urlsplit(server_url)
    address = f"{server.hostname}:{server.port or 5432}" if server.hostname else ""
    query = [(k, v) for k, v in parse_qsl(server.query) if k not in ("user", "password")]
    url = urlunsplit(("postgresql", f"{role}@{address}", f"/{database}",
                      urlencode([*query, ("password", password)], safe="/"), ""))
    admin = warehouse.with_database(server_url, database)  # the scans read as the superuser: nothing hidden
    patch = pytest.MonkeyPatch()
    emulator = None
    try:  # a setup that fails must not leave its environment (the warehouse URL, the CRM config) to later modules
        patch.setenv(warehouse.ENV_URL, url)
        patch.setenv("TIERLINE_HOME", str(root / "home"))
        patch.setenv("TIERLINE_RETRY_DELAY_SECONDS", "1")
        crm_secrets = {"client_secret": f"cs-{uuid.uuid4().hex}", "refresh_token": f"rt-{uuid.uuid4().hex}"}
        emulator = CrmEmulator(**crm_secrets)
        emulator.__enter__()
        cfg = settings_with(root, push=UPSERT)
        emulator.define_module(MODULE, zoho_module(cfg))
        for name, value in {**emulator.env(), crm_config.ENV_CONFIG: str(cfg.path)}.items():
            patch.setenv(name, value)

        landing = root / "landing"
        generate.generate(landing, customers=120, days=2, seed=5, start_date=DAY1, progress=False)
        day1, day2 = landing / DAY1.isoformat(), landing / DAY2.isoformat()
        _, customers = read_rows(day1 / "crm_customers.csv")
        _, orders = read_rows(day1 / "sales_orders.csv")
        buyers = {o["customer_id"] for o in orders}
        victim = next(c for c in customers if c["customer_id"] in buyers and c["phone"] and c["email"]
                      and c["customer_name"].strip())
        vid = victim["customer_id"]
        # a bad line about them (quarantined with its raw text), and the next day's extract carrying them again
        append_row(day1 / "crm_interactions.csv", {"interaction_id": f"I-BAD-{tag}", "customer_id": vid,
                                                   "channel": "phone", "occurred_at": "not a time"})
        append_row(day2 / "crm_customers.csv", {**victim, "updated_at": f"{DAY2} 09:00:00"})
        append_row(day2 / "crm_interactions.csv", {"interaction_id": f"I-NEW-{tag}", "customer_id": vid,
                                                   "channel": "wechat", "occurred_at": f"{DAY2} 08:00:00"})
        needles = [vid, victim["customer_name"].strip(), victim["phone"].strip(), victim["email"].strip(),
                   re.sub(r"\D", "", victim["phone"])[-11:]]
        pattern = whole_words(needles)
        world = {"url": url, "admin": admin, "root": root, "landing": landing, "victim": victim, "pattern": pattern,
                 "secrets": [password, *crm_secrets.values()], "password": password}

        world["day1"] = cli.run(landing, DAY1, quiet=True)
        world["dry_run"] = cli.main(["crm-sync", "--dry-run"])
        world["crm_sync"] = cli.main(["crm-sync"])
        folders = [settings.landing_area(), settings.runs_dir(), settings.home() / "crm"]
        world["before"] = {"warehouse": warehouse_hits(admin, pattern), "files": file_hits(folders, pattern)}
        world["forget"] = cli.main(["forget", "--customer-id", vid, "--reason",
                                    f"PIPL request by {victim['customer_name'].strip()}, ticket 42"])
        world["after"] = {"warehouse": warehouse_hits(admin, pattern), "files": file_hits(folders, pattern)}

        ctx = pipeline.context(DAY2, "day2 after forget", landing)
        pipeline.run_through(ctx, "load_raw")  # the next day's extract lands and loads
        world["day2_ctx"] = ctx
        yield world
    finally:
        if emulator is not None:
            emulator.__exit__(None, None, None)
        patch.undo()
        warehouse.drop_database(admin)
        with psycopg.connect(server_url, autocommit=True) as conn:
            # the role created the shared access groups' memberships when it published first; from
            # PostgreSQL 16 on they are recorded as its grants and must outlive it: granted again by
            # the superuser, then its own dropped with it
            memberships = conn.execute(
                "select roleid::regrole::text, member::regrole::text, admin_option from pg_auth_members "
                "where grantor = (select oid from pg_roles where rolname = %s) and member <> grantor", (role,)
            ).fetchall()
            for group, member, with_admin in memberships:
                conn.execute(sql.SQL("grant {} to {}" + (" with admin option" if with_admin else "")).format(
                    sql.Identifier(group), sql.Identifier(member)))
            if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def test_the_run_published_and_the_person_was_everywhere_before(world):
    assert world["day1"] == 0 and world["dry_run"] == 0 and world["crm_sync"] == 0 and world["forget"] == 0
    [retention] = settings.runs_dir().glob(f"{DAY1}/*/stage_apply_retention.json")
    assert json.loads(retention.read_text())["status"] == "ok"  # the DAG's retention task ran after publish
    before = world["before"]
    assert {"raw.crm_customers", "raw.sales_orders", "raw.quarantine", "analytics.customer_tier",
            "crm_sync.record_state"} <= before["warehouse"].keys()
    assert any("/landing/" in f for f in before["files"]) and any("/crm/dry_run_" in f for f in before["files"])


def test_after_forget_no_table_landing_copy_or_run_folder_names_the_person(world):
    assert world["after"] == {"warehouse": {}, "files": []}


def test_the_audit_row_says_who_when_why_and_what_but_not_whom(world):
    with psycopg.connect(world["admin"]) as conn:
        [(actor, reason, key_hash, touched, row)] = conn.execute(
            "select actor, reason, key_hash, touched, l::text from tierline.erasure_log l").fetchall()
        suppressed = conn.execute("select key_hash from tierline.erased_customers").fetchall()
    assert actor and reason == "PIPL request by [erased], ticket 42"
    assert suppressed == [(key_hash,)] and len(key_hash) == 64
    assert not re.search(world["pattern"], row)
    assert touched["rows_deleted"]["raw.crm_customers"] >= 1 and touched["rows_deleted"]["raw.quarantine"] >= 1
    assert touched["rows_deleted"]["crm_sync.record_state"] == 1
    assert touched["landing_files_rewritten"] >= 3 and touched["run_manifests_updated"] >= 1


def test_the_next_days_extract_with_the_person_is_quarantined_as_erased(world):
    ctx, vid = world["day2_ctx"], world["victim"]["customer_id"]
    with psycopg.connect(world["admin"]) as conn:
        erased = conn.execute(
            "select file, raw_text from raw.quarantine q join raw.load_batch b using (batch_id) "
            "where b.run_id = %s and q.reason = 'erased' order by file", (ctx.run_id,)).fetchall()
        loaded = conn.execute("select count(*) from raw.crm_customers where customer_id = %s", (vid,)).fetchone()[0]
    assert erased == [("crm_customers.csv", None), ("crm_interactions.csv", None)]
    assert loaded == 0
    assert warehouse_hits(world["admin"], world["pattern"]) == {}


def test_landing_copies_lose_only_the_persons_lines_and_their_records_follow(world):
    vid = world["victim"]["customer_id"]
    source = (world["landing"] / DAY1.isoformat() / "crm_customers.csv").read_bytes().splitlines(keepends=True)
    [manifest_path] = settings.landing_area().glob(f"*/{DAY1.isoformat()}/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["files"]["crm_customers.csv"]
    landed = Path(entry["path"]).read_bytes()
    assert landed == b"".join(line for line in source if not line.startswith(f"{vid},".encode()))
    assert entry["erased_rows"] == 1 and entry["sha256_as_landed"] != entry["sha256"]
    with psycopg.connect(world["admin"]) as conn:
        logged = dict(conn.execute("select file, file_sha256 from raw.load_log l join raw.load_batch b "
                                   "using (batch_id) where b.extract_date = %s and b.status = 'published'",
                                   (DAY1,)).fetchall())
    import hashlib

    for name, file in manifest["files"].items():
        data = Path(file["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == file["sha256"] == logged[name], name
    run_manifests = [json.loads(p.read_text()) for p in settings.runs_dir().glob(f"{DAY1}/*/manifest.json")]
    assert run_manifests and all(m["files"] == manifest["files"] for m in run_manifests)


def test_no_file_the_run_leaves_holds_the_password_or_a_crm_secret(world):
    home = settings.home()
    leaks = {str(p) for p in home.rglob("*") if p.is_file()
             for secret in world["secrets"] if secret.encode() in p.read_bytes()}
    assert leaks == set()
    [summary] = settings.runs_dir().glob(f"{DAY1}/*/summary.json")
    assert json.loads(summary.read_text())["warehouse"].endswith("password=***")


def test_the_state_the_run_leaves_is_its_owners_only(world):
    home = settings.home()
    loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in [home, *home.rglob("*")]
             if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}
    landed = [p for p in settings.landing_area().rglob("*.csv")]
    assert landed and {stat.S_IMODE(p.stat().st_mode) for p in landed} == {0o400}
