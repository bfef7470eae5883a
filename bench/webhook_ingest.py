#!/usr/bin/env python
"""Webhook ingest at machine speed: signed indexer deliveries (20 % of them repeated ids) POSTed to
/v1/billing/webhooks/contracts/<slug> on its own gunicorn started as `make run` starts it (2 sync workers), with
the workers paused (no Celery worker or beat runs: pure ingest), next to a bare baseline under the same gunicorn
and middleware: a Django view that checks the HMAC, parses the JSON and does one INSERT ... ON CONFLICT DO
NOTHING (bench/_site_urls.py). Twice: with the chain up (anvil, when installed) and with the chain frozen (the
network's RPC endpoint is a socket that accepts and never answers), project then baseline each time.

    .venv/bin/python bench/webhook_ingest.py [--seconds 20] [--connections 16]

Uses its own database (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/billing_bench_webhook),
recreated from a migrated template at each run. Load client: wrk when installed (`make bench` installs it),
else a threaded Python client (BENCH_CLIENT=python). Targets (issue 9): >= 50 % of the baseline's deliveries/s,
p99 <= 3x the baseline's, the frozen-chain figures within 20 % of the chain-up ones. Exits 0 whether the targets
are met or not (the figures are the result), 1 when a request fails.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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


def verify_stored(chain_url: str, *, seconds: float):
    """What the paused workers would do next: claim the stored deliveries in batches and check them on chain,
    for `seconds` at most. Returns (claimed, elapsed, outcomes, still due)."""
    import time as _time

    from django.utils import timezone

    from billing.models import InboundEvent, RpcEndpoint
    from billing.services.webhooks import inbound_events_process_due

    RpcEndpoint.objects.update(url=chain_url, healthy=True)
    started = _time.monotonic()
    report = inbound_events_process_due(budget_seconds=seconds)
    elapsed = _time.monotonic() - started
    due = InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED, next_attempt_at__lte=timezone.now())
    return report.claimed, elapsed, report.outcomes, due.count()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per path, not measured")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate-cap", type=int, default=2500, help="deliveries generated per second of run")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_webhook")
    started = time.monotonic()
    hp.prepare_database(url)
    hp.setup_django(url)
    setup_db = time.monotonic() - started
    anvil, chain_url = start_chain()
    frozen = FrozenChain()
    world = hp.seed_world(rpc_url=chain_url or frozen.url)

    from billing.models import InboundEvent, RpcEndpoint

    count = int(args.seconds * args.rate_cap) + 1000
    runs = {}
    started = time.monotonic()
    web = hp.Web(url)
    setup_web = time.monotonic() - started
    try:
        modes = [("chain up", chain_url), ("chain frozen", frozen.url)] if chain_url else [("chain frozen", frozen.url)]
        for n, (mode, rpc) in enumerate(modes):
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
                label=f"webhook, {mode}",
                connections=args.connections,
                seconds=args.seconds,
            )
            stored = InboundEvent.objects.count() - stored_before
            baseline = hp.run_load(
                web,
                deliveries(world, count=count, tag=f"b{n}", path=bare_path),
                label=f"bare baseline, {mode}",
                connections=args.connections,
                seconds=args.seconds,
            )
            runs[mode] = (project, baseline, stored)
        worker = None
        if chain_url:
            worker = verify_stored(chain_url, seconds=args.seconds)
    finally:
        web.stop()
        frozen.close()
        if anvil is not None:
            from billing_project import devstack

            devstack.stop_children([anvil], timeout=10)

    client = next(iter(runs.values()))[0].client
    print(f"webhook ingest bench: gunicorn 2 sync workers, workers paused (no Celery), load client {client}, "
          f"{args.connections} connections, {os.cpu_count()} cores, {args.seconds:g} s per run, "
          f"{100 // REPEAT_EVERY} % repeated ids")  # fmt: skip
    print(f"setup: database and seed {setup_db:.1f} s, gunicorn up {setup_web:.1f} s")
    print(hp.HEADER)
    failed = 0
    for project, baseline, stored in runs.values():
        print(hp.row(project))
        print(hp.row(baseline))
        print(hp.ratio_line(project.label, project, baseline))
        hp.report("webhook_ingest", project, baseline)
        print(f"  stored {stored} new deliveries of {project.requests} answered (the rest: repeats, 200 duplicate)")
        failed += project.errors + baseline.errors
    for mode, (project, baseline, _) in runs.items():
        share = project.rps / baseline.rps if baseline.rps else 0.0
        p99 = project.p99 / baseline.p99 if baseline.p99 else float("inf")
        verdict = "PASS" if share >= TARGET_SHARE and p99 <= TARGET_P99_RATIO else "MISS"
        print(f"target {mode}: >= {TARGET_SHARE:.0%} of the baseline's deliveries/s and p99 <= "
              f"{TARGET_P99_RATIO:g}x: {share:.0%}, {p99:.2f}x {verdict}")  # fmt: skip
    if worker is not None:
        claimed, elapsed, outcomes, left = worker
        print(
            f"workers' verification, chain up (inbound_events_process_due in this process: one worker, batches of "
            f"50): {claimed} stored deliveries claimed and checked against the chain in {elapsed:.1f} s = "
            f"{claimed / elapsed:.1f}/s, outcomes {dict(sorted(outcomes.items()))}, {left} still due "
            "(the bench's deliveries name transactions that are not on the chain: each check is a receipt lookup "
            "that finds none, and the delivery waits for its retry)"
        )
    if "chain up" in runs:
        up, frozen_run = runs["chain up"][0], runs["chain frozen"][0]
        drift = abs(frozen_run.rps - up.rps) / up.rps if up.rps else 1.0
        verdict = "PASS" if drift <= TARGET_CHAIN_DRIFT else "MISS"
        print(f"target chain frozen within {TARGET_CHAIN_DRIFT:.0%} of chain up: {drift:.0%} {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
