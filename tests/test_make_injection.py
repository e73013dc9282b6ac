"""Make variables reach the CLI as data, never as shell or make code (issue 8, item 9)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target, variable", [("run", "AS_OF"), ("run", "LANDING"), ("simulate", "SPEC"),
                                              ("forget", "CUSTOMER"), ("forget", "REASON")])
@pytest.mark.parametrize("payload", [
    '2026-11-01"; id > {marker}; echo "',  # the payload: closes the shell's quotes
    "2026-11-01'; id > {marker}; echo '",
    "$$(id > {marker})`id > {marker}`",  # shell command substitution, as make passes "$$" on
    "$(shell id > {marker})",  # make's own function call
])
def test_make_variables_are_not_interpreted(tmp_path, target, variable, payload):
    marker = tmp_path / "pwned"
    # the other arguments are invalid too, so that the CLI stops before starting anything
    values = {"LANDING": str(tmp_path), "AS_OF": "not-a-date", "SPEC": str(tmp_path / "missing.yml"),
              "CUSTOMER": "C00001", "REASON": "a test"}
    values[variable] = payload.format(marker=marker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env["TIERLINE_HOME"] = str(tmp_path / "home")
    env["TIERLINE_CONFIG"] = str(tmp_path / "missing.yml")  # forget stops at its configuration
    out = subprocess.run(["make", "-C", str(ROOT), target, *(f"{k}={v}" for k, v in values.items())],
                         env=env, capture_output=True, text=True, timeout=300)
    assert not marker.exists(), f"make {target} ran a command from {variable}: {out.stdout}{out.stderr}"
    assert out.returncode != 0
    # the CLI received the text itself and refused it
    if variable == "AS_OF":
        assert "invalid fromisoformat value" in out.stderr and "id >" in out.stderr
    if target == "forget":
        assert "forget: configuration file" in out.stderr
