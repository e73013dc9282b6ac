"""No secrets or personal data where they do not belong (issue 12, item 6).

The warehouse password, in either form a PostgreSQL URL takes it, is masked wherever tierline
prints or stores the URL; the state folders are their owner's only.
"""

from __future__ import annotations

import os
import stat
from datetime import date
from pathlib import Path

import pytest

from tierline import cli, land, settings, warehouse

DAY = date(2026, 11, 1)
CUSTOMERS = "customer_id,customer_name,customer_type,created_at,updated_at\nC1,张三,individual,2025-01-01,2025-01-01\n"


@pytest.mark.parametrize("url, shown", [
    ("postgresql://tl:s3cret@db:5432/wh", "postgresql://tl:***@db:5432/wh"),
    ("postgresql://tl@db:5432/wh?password=s3cret", "postgresql://tl@db:5432/wh?password=***"),
    ("postgresql://tl@db/wh?sslmode=require&PASSWORD=s%2Fcr%40t&sslpassword=k", "postgresql://tl@db/wh?sslmode=require&PASSWORD=***&sslpassword=***"),
    ("postgresql://tl:p%40ss@db/wh?options=-c%20search_path%3Draw", "postgresql://tl:***@db/wh?options=-c%20search_path%3Draw"),
    ("postgresql:///tierline?host=/tmp/pg", "postgresql:///tierline?host=/tmp/pg"),
])
def test_the_one_redaction_masks_the_password_in_either_form(url, shown):
    assert warehouse.redacted(url) == shown


def test_the_demos_closing_words_never_show_the_password(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(warehouse.ENV_URL, "postgresql://tl@db:5432/wh?password=s3cret")
    text = cli.where_results_are("crm: none")
    assert "s3cret" not in text
    assert "postgresql://tl@db:5432/wh?password=***" in text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_folders_and_landing_copies_are_their_owners_only(monkeypatch, tmp_path):
    old = os.umask(0o022)
    try:
        monkeypatch.setenv("TIERLINE_HOME", str(tmp_path / "home"))
        inbox = tmp_path / "inbox"
        (inbox / DAY.isoformat()).mkdir(parents=True)
        (inbox / DAY.isoformat() / "crm_customers.csv").write_text(CUSTOMERS, encoding="utf-8")
        manifest = land.land_extracts(inbox, DAY, settings.landing_area())
        run_folder = settings.runs_dir() / DAY.isoformat() / "a_run"
        run_folder.mkdir(parents=True)
        (run_folder / "summary.json").write_text("{}")
    finally:
        os.umask(old)
    landed = Path(manifest["files"]["crm_customers.csv"]["path"])
    assert mode(landed) == 0o400
    assert mode(landed.parent / "manifest.json") == 0o600
    assert mode(run_folder / "summary.json") == 0o600
    home = tmp_path / "home"
    for folder in [home, *(p for p in home.rglob("*") if p.is_dir())]:
        assert mode(folder) == 0o700, folder
