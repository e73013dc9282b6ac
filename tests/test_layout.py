"""The pipeline package stands alone: development tools may use it, never the other way round.

It is installable (pyproject.toml) with a ``tierline`` console command, and its runtime
requirements are pinned apart from the development ones, which the production image never gets.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import tomllib

import pytest

from tierline import cli
from tierline.settings import PROJECT_ROOT

PIPELINE = PROJECT_ROOT / "plugins" / "tierline"


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def requirement_names(path) -> set[str]:
    return {re.split(r"[\[<>=;\s]", line, maxsplit=1)[0].lower().replace("-", "_")
            for line in path.read_text().splitlines() if line.strip() and not line.startswith(("#", "-"))}


def pipeline_imports() -> dict[str, set[str]]:
    files = [*PIPELINE.rglob("*.py"), *(PROJECT_ROOT / "dags").glob("*.py")]
    return {str(path.relative_to(PROJECT_ROOT)): imported_modules(path) for path in files}


def test_the_pipeline_never_imports_the_development_tools():
    offenders = sorted(f"{path}: {name}" for path, names in pipeline_imports().items()
                       for name in names if name.split(".")[0] == "tierline_dev")
    assert not offenders, "plugins/tierline imports devtools:\n" + "\n".join(offenders)
    for tool in ("crm_emulators/zoho.py", "generate.py", "holdout.py", "lint.py"):
        assert (PROJECT_ROOT / "devtools" / "tierline_dev" / tool).exists()


def test_the_pipeline_imports_no_development_requirement():
    dev_only = (requirement_names(PROJECT_ROOT / "requirements-dev.in")
                - requirement_names(PROJECT_ROOT / "requirements.in"))
    assert {"pytest", "faker", "playwright", "sqlfluff"} <= dev_only
    offenders = sorted(f"{path}: {name}" for path, names in pipeline_imports().items()
                       for name in names if name.split(".")[0] in dev_only)
    assert not offenders, "the pipeline imports development requirements:\n" + "\n".join(offenders)


def test_runtime_and_development_pins_are_separate_and_complete():
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        pins[name] = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (PROJECT_ROOT / name).read_text(), re.M))
        lines = [line for line in (PROJECT_ROOT / name).read_text().splitlines() if line and line[0] != "#"]
        assert all("==" in line for line in lines if not line.startswith("-r ")), f"{name}: not fully pinned"
    assert "-r requirements.txt" in (PROJECT_ROOT / "requirements-dev.txt").read_text().splitlines()
    assert not pins["requirements.txt"].keys() & pins["requirements-dev.txt"].keys()
    runtime = requirement_names(PROJECT_ROOT / "requirements.in")
    assert runtime <= {name.lower().replace("-", "_") for name in pins["requirements.txt"]}


def test_the_console_command_is_the_cli_with_help_on_every_subcommand(capsys):
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["tierline"].partition(":")
    assert getattr(importlib.import_module(module), function) is cli.main
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "backfill", "demo", "preflight", "crm-sync"} <= commands.keys()
    for argv in (["--help"], *([name, "--help"] for name in commands)):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 0, argv
        assert "usage: tierline" in capsys.readouterr().out


def test_the_demo_runs_the_sample_generator_as_a_separate_tool(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    done = cli.run_devtool("tierline_dev.generate", "--out", str(tmp_path), "--customers", "20", "--days", "1",
                           "--no-progress", capture_output=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "2026-11-01" / "crm_customers.csv").exists()


def test_every_published_snapshot_declares_its_key_in_its_model():
    import yaml

    from tierline.assets import SNAPSHOT_TABLES

    keys = {model["name"]: constraint["columns"]
            for path in (PROJECT_ROOT / "dbt_project" / "models" / "marts").glob("*.yml")
            for model in (yaml.safe_load(path.read_text()) or {}).get("models", [])
            for constraint in model.get("constraints", []) if constraint["type"] == "primary_key"}
    assert all("as_of_date" in keys.get(table, ()) for table in SNAPSHOT_TABLES), keys


def test_no_quality_check_is_both_a_dbt_test_and_a_gx_expectation():
    """Per-model invariants are dbt tests; the GX suites keep what dbt cannot say (balances,
    quarantine rates, drift, distributions, cross-table agreement)."""
    import json

    import yaml

    same = {"expect_column_values_to_not_be_null": {"not_null"}, "expect_column_values_to_be_unique": {"unique"},
            "expect_column_values_to_be_in_set": {"accepted_values", "relationships"}}
    dbt_checks = {}
    for path in (PROJECT_ROOT / "dbt_project" / "models").rglob("*.yml"):
        for model in (yaml.safe_load(path.read_text()) or {}).get("models", []) or []:
            for column in model.get("columns", []) or []:
                tests = {t if isinstance(t, str) else next(iter(t)) for t in column.get("data_tests", []) or []}
                tests |= {c["type"] for c in column.get("constraints", []) or []}
                dbt_checks[model["name"], column["name"]] = tests
    twice = []
    for path in (PROJECT_ROOT / "expectations").glob("*/*.json"):
        suite = json.loads(path.read_text())
        for expectation in suite["expectations"]:
            column = expectation["kwargs"].get("column")
            if same.get(expectation["type"], set()) & dbt_checks.get((suite["meta"]["table"], column), set()):
                twice.append(f"{path.relative_to(PROJECT_ROOT)}: {expectation['type']}({column})")
    assert not twice, "checked by dbt already:\n" + "\n".join(twice)


def test_no_test_module_imports_another():
    """Shared setup lives in conftest.py fixtures or helper modules, never in another test module."""
    offenders = []
    for path in (PROJECT_ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] + [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom)
                     else [])
            if any(name.rsplit(".", 1)[-1].startswith("test_") for name in names):
                offenders.append(str(path.relative_to(PROJECT_ROOT)))
    assert not offenders, "test modules imported by others: " + ", ".join(sorted(set(offenders)))


MODELS = PROJECT_ROOT / "dbt_project" / "models"
SOURCE_CALL = re.compile(r"source\(\s*'([a-z_]+)'\s*,\s*'([a-z_]+)'\s*\)")


def test_staging_is_one_folder_per_source_system_reading_only_its_own_source():
    staged = sorted(MODELS.glob("staging/**/stg_*.sql"))
    assert staged
    for path in staged:
        system = path.name.removeprefix("stg_").split("__")[0]
        assert path.parent.name == system, f"{path.relative_to(MODELS)} belongs in staging/{system}/"
        assert {name for name, _ in SOURCE_CALL.findall(path.read_text())} == {system}, path.name


def test_every_staging_model_keys_its_rows_by_the_extract_contracts_key(staging_keys):
    """A staging model's unique_key (its properties' config: what latest_version and the
    incremental delete+insert use) is the key the contract (tierline.contract) gives its extract."""
    import yaml

    from tierline import contract

    keys = {entity.name: list(entity.key) for entity in contract.ENTITIES}
    identifiers = {(source["name"], table["name"]): table.get("identifier", table["name"])
                   for path in MODELS.glob("staging/*/_*__sources.yml")
                   for source in yaml.safe_load(path.read_text())["sources"] for table in source["tables"]}
    staged = sorted(MODELS.glob("staging/**/stg_*.sql"))
    assert len(staging_keys) == len(staged)
    for path in staged:
        (read,) = set(SOURCE_CALL.findall(path.read_text()))
        assert staging_keys[path.stem] == keys[identifiers[read]], path.name


def test_every_reader_of_the_previous_publication_names_it_for_dbts_lineage():
    """The marts' memory (adapter.get_relation on publish_schema, published_snapshots) shows in
    dbt's lineage through `-- depends_on:` sources of the source `published`."""
    readers = {}
    for path in MODELS.rglob("*.sql"):
        text = path.read_text()
        read = set(re.findall(r"published_snapshots\('([a-z_]+)'", text))
        read |= set(re.findall(r"schema=var\('publish_schema'\), identifier='([a-z_]+)'", text))
        if "history_extends_publication(" in text:
            read.add("publication_log")
        if read:
            named = {table for source, table in SOURCE_CALL.findall(text) if source == "published"}
            readers[path.name] = (read, named)
    assert readers, "no model reads the previous publication"
    missing = {name: sorted(read - named) for name, (read, named) in readers.items() if read - named}
    assert not missing, f"models reading the publication without naming it as a source: {missing}"
