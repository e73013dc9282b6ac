"""The pipeline package stands alone: development tools may use it, never the other way round."""

from __future__ import annotations

import ast

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


def test_the_pipeline_never_imports_the_development_tools():
    offenders = sorted(f"{path.relative_to(PROJECT_ROOT)}: {name}"
                       for path in PIPELINE.rglob("*.py")
                       for name in imported_modules(path) if name.split(".")[0] == "tierline_dev")
    assert not offenders, "plugins/tierline imports devtools:\n" + "\n".join(offenders)
    assert (PROJECT_ROOT / "devtools" / "tierline_dev" / "crm_emulators" / "zoho.py").exists()
