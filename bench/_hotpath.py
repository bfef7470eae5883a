"""Shared machinery of the hot-path benches (bench/checkout.py, bench/webhook_ingest.py): a bench database cloned
from a migrated template, a minimal catalog, a gunicorn started the way `make run` starts it (the project's
gunicorn.conf.py: 2 gthread workers x 4 threads unless WEB_CONCURRENCY / WEB_THREADS say otherwise, on a free
port) with the bare baseline views mounted beside the project's URLs (bench/_site_urls.py), and a load client:
wrk when it is installed (`make bench` installs it), else a threaded Python client. CPU per request is the
gunicorn master and workers' CPU time over the run divided by the requests; the load client's CPU share is its
CPU time over the run's wall time x the machine's cores."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
GUNICORN_CONF = ROOT / "billing_project" / "gunicorn.conf.py"
CONTRACT_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # where anvil puts the first deployment
SIGNER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil account 1 (public)
WEBHOOK_SECRET = "whsec_bench_" + "x" * 24
PAYER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


# --- database -----------------------------------------------------------------------------------------------


def _migrations_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/0*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True)


def prepare_database(url: str) -> None:
    """(Re)create the bench database as a copy of a migrated template (`billing_bench_tpl_<migrations hash>`,
    built once by `migrate`, about 30 s, and kept), so a bench starts from empty tables in a second."""
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    template = f"billing_bench_tpl_{_migrations_hash()}"
    with _admin() as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (template,)).fetchone():
            building = f"{template}_building_{os.getpid()}"
            conn.execute(f'CREATE DATABASE "{building}"')
            env = {**os.environ, "DATABASE_URL": url.rsplit("/", 1)[0] + "/" + building}
            started = time.monotonic()
            subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{template}"')
            except Exception:  # another bench built it meanwhile
                conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            print(f"migrated the bench template {template} in {time.monotonic() - started:.1f}s", flush=True)
            # Templates of earlier migrations are of no further use: drop them (not a bench's own database).
            stale = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'billing\\_bench\\_tpl\\_%%' AND datname <> %s"
                " AND datname NOT LIKE '%%\\_building\\_%%'",
                (template,),
            ).fetchall()
            for (old,) in stale:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{old}"')
                except Exception:  # noqa: BLE001 - in use by a bench cloning it right now: next time
                    pass
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("BILLING_QUOTE_SIGNER_KEY", SIGNER_KEY)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


@dataclass
class World:
    token_key: str
    contract_slug: str
    plan_slug: str
    chain_id: int


def seed_world(*, rpc_url: str) -> World:
    """One network (its RPC endpoint at `rpc_url`), dUSD, the SubscriptionPass row (ABI from the build), an EVM
    provider, a plan and a customer with an API token: what a checkout and a webhook need."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token as ApiToken

    from billing.chain.artifacts import load_artifact
    from billing.models import Network, PaymentContract, PaymentProvider, Plan, RpcEndpoint, Token
    from profiles.seed import wallets_link_verified_bulk

    network = Network.objects.create(slug="bench", name="Bench", chain_id=31337, confirmation_depth=2)
    RpcEndpoint.objects.create(network=network, position=0, url=rpc_url, timeout_seconds=Decimal("2"))
    dusd = Token.objects.create(
        network=network,
        symbol="dUSD",
        address="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
        decimals=6,
        usd_estimate=Decimal("1"),
    )
    contract = PaymentContract.objects.create(
        slug="pass-bench",
        network=network,
        address=CONTRACT_ADDRESS,
        abi=load_artifact("SubscriptionPass")["abi"],
        mint_method="pay",
        burn_method="refund",
        withdraw_method="withdraw",
        webhook_secret=WEBHOOK_SECRET,
    )
    provider = PaymentProvider.objects.create(slug="evm-bench", type="evm", default_network=network, contract=contract)
    provider.networks.set([network])
    provider.supported_tokens.set([dusd])
    Plan.objects.create(
        slug="pro",
        title="Pro",
        price_token=dusd,
        price_amount=15 * 10**6,
        price_usd_estimate=Decimal("15"),
        provider=provider,
        contract=contract,
        limits={"api_calls": 10000},
        tier=2,
    )
    from django.utils import timezone

    from profiles.models import Wallet

    user = get_user_model().objects.create_user(username="bench-customer", password="x")
    key = ApiToken.objects.create(user=user).key
    # The payer is one of the customer's SIWE-verified wallets (BILLING_REQUIRE_VERIFIED_PAYER).
    Wallet.objects.create(user=user, address=PAYER, chain_id=31337, is_primary=True, verified_at=timezone.now())
    # Checkout takes only SIWE-verified payers (BILLING_REQUIRE_VERIFIED_PAYER): the bench pays from a linked one.
    wallets_link_verified_bulk(links=[(user.pk, PAYER, 31337)])
    with _db_cursor() as cursor:  # the bare webhook baseline's table
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_bare_delivery (id text PRIMARY KEY, body jsonb NOT NULL)")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_bare_checkout (id bigserial PRIMARY KEY, user_id int NOT NULL, "
            "order_id text NOT NULL UNIQUE, signature text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
    return World(token_key=key, contract_slug=contract.slug, plan_slug="pro", chain_id=31337)


def _db_cursor():
    from django.db import connection

    return connection.cursor()


# --- gunicorn -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_shape() -> str:
    """What gunicorn.conf.py starts with this environment, for the benches' headers."""
    workers = os.environ.get("WEB_CONCURRENCY", "2")
    threads = os.environ.get("WEB_THREADS", "4")
    return f"gunicorn {workers} gthread workers x {threads} threads"


class Web:
    """gunicorn as `make run` starts it (billing_project/gunicorn.conf.py and its defaults: 2 gthread workers x 4
    threads; WEB_CONCURRENCY and WEB_THREADS from the environment as under make run), with
    bench/_site_settings.py (the project's settings plus the bare baseline URLs)."""

    def __init__(self, database_url: str, *, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.prom_dir = tempfile.mkdtemp(prefix="bench-prom-")
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "DJANGO_SETTINGS_MODULE": "_site_settings",
            "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PROMETHEUS_MULTIPROC_DIR": self.prom_dir,
            "BILLING_QUOTE_SIGNER_KEY": SIGNER_KEY,
            "THROTTLE_CHECKOUT": "1000000/min",
            "LOG_LEVEL": os.environ.get("BENCH_WEB_LOG_LEVEL", "INFO"),  # what make run logs
            "PYTHONWARNINGS": "ignore",
            **(extra_env or {}),
        }
        # The access log and JSON logs are written as under make run; kept only while starting (for errors).
        self.log_path = Path(self.prom_dir) / "gunicorn.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "billing_project.wsgi"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_bytes()[-3000:].decode(errors="replace")
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer /healthz within 90 s")
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU of the gunicorn master and its workers so far."""
        import psutil

        total = 0.0
        master = psutil.Process(self.proc.pid)
        for proc in [master, *master.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.prom_dir, ignore_errors=True)


# --- load ---------------------------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    requests: int
    wall: float
    p50: float  # ms
    p95: float
    p99: float
    errors: int  # socket errors and answers other than the expected statuses
    server_cpu: float  # seconds
    client_cpu: float  # seconds
    client: str

    @property
    def rps(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.server_cpu / self.requests if self.requests else 0.0

    @property
    def client_share(self) -> float:
        return self.client_cpu / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0


@dataclass(frozen=True)
class Req:
    path: str
    body: bytes
    headers: dict[str, str]


def have_wrk() -> bool:
    return os.environ.get("BENCH_CLIENT", "wrk") == "wrk" and shutil.which("wrk") is not None


_WRK_LUA = """
local path_file = "%(file)s"
local threads_n = %(threads)d
local ok_status = {%(ok)s}
local counter = 1
local thread_list = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(thread_list, thread)
end
function init(args)
  reqs = {}
  for line in io.lines(path_file) do
    local fields = {}
    for f in string.gmatch(line, "[^\\t]+") do table.insert(fields, f) end
    local headers = {}
    for i = 3, #fields do
      local k, v = string.match(fields[i], "^([^:]+): (.*)$")
      headers[k] = v
    end
    table.insert(reqs, {fields[1], fields[2], headers})
  end
  index = 0
  bad = 0
end
function request()
  local i = (index * threads_n + tid - 1) %% #reqs + 1
  index = index + 1
  local r = reqs[i]
  local headers = {}
  for k, v in pairs(r[3]) do headers[k] = string.gsub(v, "{n}", tid .. "-" .. index) end
  return wrk.format("POST", r[1], headers, r[2])
end
function response(status, headers, body)
  if not ok_status[status] then bad = bad + 1 end
end
function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(thread_list) do bad_total = bad_total + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format("RESULT requests=%%d duration_us=%%d p50=%%d p95=%%d p99=%%d bad=%%d socket=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    bad_total, e.connect + e.read + e.write + e.timeout))
end
"""


def run_load(
    web: Web,
    reqs: list[Req],
    *,
    label: str,
    connections: int,
    seconds: float,
    threads: int = 2,
    ok: tuple[int, ...] = (200, 201, 202),
) -> Result:
    """Send `reqs` in order (cycled; `{n}` in a header value becomes a per-request counter) over `connections`
    keep-alive connections for `seconds`."""
    spies = _start_py_spy(web, label, seconds)
    cpu0 = web.cpu_seconds()
    if have_wrk():
        result = _run_wrk(web, reqs, label=label, connections=connections, threads=threads, seconds=seconds, ok=ok)
    else:
        result = _run_python(web, reqs, label=label, connections=connections, seconds=seconds, ok=ok)
    result.server_cpu = web.cpu_seconds() - cpu0
    for spy in spies:
        spy.wait(60)
    return result


def _start_py_spy(web: Web, label: str, seconds: float) -> list[subprocess.Popen]:
    """With BENCH_PYSPY_DIR set (and py-spy installed), sample each gunicorn worker during the run into
    <dir>/<label>-<pid>.txt (collapsed stacks; `py-spy record --format raw`)."""
    folder = os.environ.get("BENCH_PYSPY_DIR")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not folder or label == "warm-up" or not Path(spy).exists():
        return []
    import psutil

    Path(folder).mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in label)
    procs = []
    for worker in psutil.Process(web.proc.pid).children():
        out = Path(folder) / f"{slug}-{worker.pid}.txt"
        args = [spy, "record", "--pid", str(worker.pid), "--format", "raw", "--rate", "250", "--nonblocking"]
        args += ["--duration", str(max(1, int(seconds))), "-o", str(out)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def _run_wrk(web, reqs, *, label, connections, threads, seconds, ok) -> Result:
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as data:
        for r in reqs:
            parts = [r.path, r.body.decode(), *(f"{k}: {v}" for k, v in r.headers.items())]
            if any("\t" in p or "\n" in p for p in parts):
                raise ValueError("a request field holds a tab or a newline")
            data.write("\t".join(parts) + "\n")
    script = _WRK_LUA % {"file": data.name, "threads": threads, "ok": ",".join(f"[{s}]=true" for s in ok)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    args = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        fh.name,
    ]
    try:
        started = time.monotonic()
        proc = subprocess.Popen([*args, web.base], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
    finally:
        os.unlink(fh.name)
        os.unlink(data.name)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]}")
    fields = dict(part.split("=") for part in line.split()[1:])
    return Result(
        label=label,
        requests=int(fields["requests"]),
        wall=int(fields["duration_us"]) / 1e6 or wall,
        p50=int(fields["p50"]) / 1000,
        p95=int(fields["p95"]) / 1000,
        p99=int(fields["p99"]) / 1000,
        errors=int(fields["bad"]) + int(fields["socket"]),
        server_cpu=0.0,
        client_cpu=usage.ru_utime + usage.ru_stime,
        client="wrk",
    )


def _run_python(web, reqs, *, label, connections, seconds, ok) -> Result:
    """The fallback client: one thread per connection, http.client keep-alive."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = [0]
    deadline = time.monotonic() + seconds

    def next_index() -> int | None:
        with lock:
            if time.monotonic() >= deadline:
                return None
            counter[0] += 1
            return counter[0] - 1

    def worker() -> None:
        conn = HTTPConnection("127.0.0.1", web.port, timeout=30)
        mine: list[float] = []
        bad = 0
        while (i := next_index()) is not None:
            r = reqs[i % len(reqs)]
            headers = {k: v.replace("{n}", str(i)) for k, v in r.headers.items()}
            t0 = time.perf_counter()
            try:
                conn.request("POST", r.path, body=r.body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status not in ok:
                    bad += 1
            except OSError:
                bad += 1
                conn.close()
                conn = HTTPConnection("127.0.0.1", web.port, timeout=30)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(connections)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    wall = time.monotonic() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    return Result(
        label=label,
        requests=len(latencies),
        wall=wall,
        p50=statistics.median(latencies) if latencies else 0.0,
        p95=pct(0.95),
        p99=pct(0.99),
        errors=errors[0],
        server_cpu=0.0,
        client_cpu=(usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime),
        client="python",
    )


# --- output -------------------------------------------------------------------------------------------------

HEADER = (
    f"{'run':40} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} "
    f"{'client CPU':>10} {'errors':>6} {'requests':>8}"
)


def row(r: Result) -> str:
    return (
        f"{r.label:40} {r.rps:8.1f} {r.p50:8.2f} {r.p95:8.2f} {r.p99:8.2f} {r.cpu_ms:10.2f} "
        f"{100 * r.client_share:9.1f}% {r.errors:6d} {r.requests:8d}"
    )


def ratio_line(label: str, project: Result, baseline: Result) -> str:
    def x(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a (baseline 0)"

    return (
        f"ratio {label}: throughput {x(project.rps, baseline.rps)} of the baseline, "
        f"p50 {x(project.p50, baseline.p50)}, p95 {x(project.p95, baseline.p95)}, "
        f"p99 {x(project.p99, baseline.p99)}, CPU/req {x(project.cpu_ms, baseline.cpu_ms)}"
    )


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def report(bench: str, project: Result, baseline: Result) -> None:
    """The run's headline figures for make bench's table (bench/_report.py): throughput, p95, p99."""
    from _report import result

    result(bench, f"{project.label}: throughput", project.rps, unit="req/s", baseline=baseline.rps,
           baseline_label=baseline.label, better="higher")  # fmt: skip
    result(bench, f"{project.label}: p95", project.p95, unit="ms", baseline=baseline.p95, baseline_label=baseline.label)
    result(bench, f"{project.label}: p99", project.p99, unit="ms", baseline=baseline.p99, baseline_label=baseline.label)
    result(bench, f"{project.label}: CPU per request", project.cpu_ms, unit="ms", baseline=baseline.cpu_ms,
           baseline_label=baseline.label)  # fmt: skip
