"""The import contracts of `.importlinter` (layers, no cycles, who may import whom) hold, and every task a
service enqueues by name through `billing.dispatch` exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept():
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_every_dispatched_task_name_is_a_registered_task():
    from billing_project.celery import app

    names = set()
    for path in (ROOT / "billing").rglob("*.py"):
        names |= set(re.findall(r'enqueue_on_commit\(\s*"([^"]+)"', path.read_text()))
    assert names, "no service enqueues through billing.dispatch"
    app.loader.import_default_modules()
    assert sorted(n for n in names if n not in app.tasks) == []
