"""Real processes for tests: gunicorn with the `make run` configuration, Celery workers and beat, each a child
process talking to the test database over TCP, so a test can load them through HTTP or kill one with SIGKILL.

They see only committed rows: use them from `transactional_db` tests (or `django_db(transaction=True)`).
Output goes to a log file per process, printed when a test fails so a dead process explains itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.anvil import free_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "billing_project" / "gunicorn.conf.py"


def current_database_url() -> str:
    """The URL of the database this test runs against (pytest-django's test database, xdist suffix included)."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] or "postgres"
    if s.get("PASSWORD"):
        auth += ":" + s["PASSWORD"]
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(
        DATABASE_URL=current_database_url(),
        DJANGO_SETTINGS_MODULE="billing_project.settings",
        LOG_JSON="false",
        LOG_LEVEL="WARNING",
        DB_CONN_MAX_AGE="0",
        PYTHONUNBUFFERED="1",
        # Messages are only triggers: a process without a worker of its own drops them (tests that start Celery
        # workers pass their broker).
        CELERY_BROKER_URL="memory://",
    )
    env.update(extra)
    return env


class Process:
    """One child process (its own session, so a kill reaches its children too) with its output in a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (gunicorn's and Celery's own children included)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(timeout=5)
        else:
            self.kill(signal.SIGKILL)  # the leader is gone; its children may not be

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if exc[0] is not None:
            sys.stderr.write(f"--- {self.name} output ---\n{self.output()[-6000:]}\n")
        self.log.unlink(missing_ok=True)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool] | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise AssertionError(f"process died while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback only)
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Gunicorn(Process):
    """gunicorn with billing_project/gunicorn.conf.py (gthread workers, as `make run` starts it) on a free port."""

    def __init__(self, *, workers: int = 2, env: dict[str, str] | None = None, metrics_dir: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = {"PORT": str(self.port), "WEB_CONCURRENCY": str(workers)}
        extra["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir or tempfile.mkdtemp(prefix="prom-")
        super().__init__(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "billing_project.wsgi"],
            child_env(**extra, **(env or {})),
        )
        wait_until(lambda: _http_ok(f"{self.url}/healthz"), timeout=60, what="gunicorn /healthz", alive=self.alive)


class CeleryWorker(Process):
    """`celery worker` (prefork, `concurrency` children) on the given broker."""

    def __init__(self, name: str, *, broker: str, concurrency: int = 1, env: dict[str, str] | None = None):
        super().__init__(
            f"celery-{name}",
            [
                sys.executable, "-m", "celery", "-A", "billing_project", "worker", "-l", "warning",
                "--concurrency", str(concurrency), "-n", f"{name}-{os.getpid()}@%h", "--without-gossip",
                "--without-mingle", "--without-heartbeat",
            ],
            child_env(CELERY_BROKER_URL=broker, **(env or {})),
        )  # fmt: skip


class CeleryBeat(Process):
    def __init__(self, *, broker: str, env: dict[str, str] | None = None):
        schedule = tempfile.mkdtemp(prefix="beat-") + "/schedule"
        super().__init__(
            "celery-beat",
            [sys.executable, "-m", "celery", "-A", "billing_project", "beat", "-l", "warning", "-s", schedule],
            child_env(CELERY_BROKER_URL=broker, **(env or {})),
        )


def redis_broker(db: int) -> str:
    """A Redis database of its own for one test's broker, emptied first (the machine's Redis keeps nothing)."""
    import redis

    url = f"redis://127.0.0.1:6379/{db}"
    redis.Redis.from_url(url).flushdb()
    return url
