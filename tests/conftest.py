"""Shared fixtures: every test that touches the warehouse gets its own real PostgreSQL database.

- ``warehouse_url``: a database of the test's own (``TIERLINE_WAREHOUSE_URL`` points at it).
- ``private_warehouse``: a database and a ``TIERLINE_HOME`` of the test module's own, for the
  scenario fixtures that run the pipeline once per module (``.patch`` sets more of the environment).
- ``land_and_load``: land extract files of a date and load them into the test's database.
- ``staging_keys``: each staging model's unique_key, as its yml properties declare it.

The server is the one the project would use: ``TIERLINE_WAREHOUSE_URL`` when set, otherwise the
embedded PostgreSQL under ``$TIERLINE_HOME``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from tierline import land, load, settings, warehouse

AS_OF = date(2026, 11, 1)
RUN_ID = "test-run"  # the run that loads in land_and_load (its batch is that run's own)


@pytest.fixture(scope="session")
def server_url() -> str:
    return warehouse.url()


@pytest.fixture
def warehouse_url(server_url, monkeypatch) -> str:
    database = f"tierline_test_{uuid.uuid4().hex[:10]}"
    target = warehouse.with_database(server_url, database)
    warehouse.ensure_database(target)
    monkeypatch.setenv(warehouse.ENV_URL, target)
    yield target
    warehouse.drop_database(target)


@dataclass
class PrivateWarehouse:
    url: str
    root: Path  # the module's temporary folder; TIERLINE_HOME is root / "home"
    patch: pytest.MonkeyPatch  # the module's environment, undone after its last test


@pytest.fixture(scope="module")
def private_warehouse(server_url, tmp_path_factory, request):
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    root = tmp_path_factory.mktemp(name)
    url = warehouse.with_database(server_url, f"tierline_{name[:30]}_{uuid.uuid4().hex[:8]}")
    warehouse.ensure_database(url)
    patch = pytest.MonkeyPatch()
    patch.setenv(warehouse.ENV_URL, url)
    patch.setenv("TIERLINE_HOME", str(root / "home"))
    yield PrivateWarehouse(url, root, patch)
    patch.undo()
    warehouse.drop_database(url)


def write_extracts(root: Path, files: dict[str, str | bytes], day: date = AS_OF) -> Path:
    """``files`` (name -> text or bytes) as the extract folder ``root/<day>/``; returns ``root``."""
    folder = root / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return root


@pytest.fixture
def land_and_load(tmp_path, warehouse_url):
    """``land_and_load(files, day)``: land ``files`` for ``day`` and load them as run ``RUN_ID``; the
    load results. ``root`` keeps a second landing apart from the first."""

    def run(files: dict, day: date = AS_OF, *, root: Path | None = None):
        root = root or tmp_path
        manifest = land.land_extracts(write_extracts(root / "inbox", files, day), day, root / "landing")
        return load.load_date(warehouse_url, manifest, day, RUN_ID, "Asia/Shanghai")

    run.run_id = RUN_ID
    return run



@pytest.fixture(scope="session")
def staging_keys() -> dict[str, list[str]]:
    import yaml

    keys = {}
    for path in (settings.DBT_PROJECT_DIR / "models" / "staging").glob("*/_*__models.yml"):
        for model in yaml.safe_load(path.read_text())["models"]:
            key = model.get("config", {}).get("unique_key")
            keys[model["name"]] = [key] if isinstance(key, str) else key
    return keys
