"""Let `manage.py` reach the stack `make run` started, with no DATABASE_URL to copy by hand.

In embedded mode the database listens on a Unix socket inside the data folder and the Celery broker is a
folder there too, so the settings' defaults (PostgreSQL on 127.0.0.1:5432) point elsewhere. The devstack
supervisor writes what it chose into `<data dir>/devstack.env.json` and removes it when it stops; when
DATABASE_URL is unset, `manage.py` reads that file, checks that the supervisor that wrote it still runs, and
takes its values (never over a value the environment or `.env` already sets)."""

from __future__ import annotations

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
JOIN_FILE = "devstack.env.json"


def _supervisor_alive(pid: int, started: float) -> bool:
    try:
        import psutil

        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 1 and proc.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def join_running_stack(environ: os._Environ | dict = os.environ) -> dict[str, str]:
    """Copy the running stack's settings into `environ` when DATABASE_URL is unset. Returns what it set."""
    if environ.get("DATABASE_URL"):
        return {}
    data_dir = Path(environ.get("BILLING_DEVSTACK_DATA_DIR") or BASE_DIR / ".data")
    try:
        record = json.loads((data_dir / JOIN_FILE).read_text())
        pid, started, values = int(record["pid"]), float(record["started"]), dict(record["env"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not _supervisor_alive(pid, started):
        return {}
    taken = {k: str(v) for k, v in values.items() if not environ.get(k)}
    environ.update(taken)
    return taken
