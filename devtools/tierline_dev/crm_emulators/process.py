"""A CRM emulator in its own process (its CLI), so that it does not share a GIL with the code it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def spawn(provider: str, *options: str) -> tuple[subprocess.Popen, dict]:
    """Start ``python -m tierline_dev.crm_emulators <provider> --port 0 <options>``; its settings line.

    The caller stops it: ``process.terminate(); process.wait()``.
    """
    path = os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "devtools")])
    command = [sys.executable, "-m", "tierline_dev.crm_emulators", provider, "--port", "0",
               "--log-level", "WARNING", *options]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": path})
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the {provider} emulator exited with {process.wait()} before it was ready")
    return process, json.loads(line)
