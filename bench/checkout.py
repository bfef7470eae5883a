#!/usr/bin/env python
"""Checkout over HTTP at machine speed: POST /v1/billing/checkout (with an Idempotency-Key, as a wallet page
sends it) against its own gunicorn started as `make run` starts it (2x4 gthread), next to a bare baseline
under the same gunicorn and middleware: a view that looks the API token up, parses the JSON, signs the same
EIP-712 digest with coincurve and INSERTs one row (bench/_site_urls.py). Interleaved in one run: sequential
(1 connection) and 8 clients, project then baseline for each.

    .venv/bin/python bench/checkout.py [--seconds 20] [--clients 8]

Uses its own database (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/billing_bench_checkout),
recreated from a migrated template at each run. Load client: wrk when installed (`make bench` installs it),
else a threaded Python client (BENCH_CLIENT=python forces it). Targets (issue 9): sequential p95 <= 30 ms,
8 clients >= 110 checkouts/s. Exits 0 whether the targets are met or not (the figures are the result), 1 when
a request fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _hotpath as hp  # noqa: E402

TARGET_SEQ_P95_MS = 30.0
TARGET_CLIENTS_RPS = 110.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per path, not measured")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_checkout")
    started = time.monotonic()
    hp.prepare_database(url)
    hp.setup_django(url)
    setup_db = time.monotonic() - started
    world = hp.seed_world(rpc_url="http://127.0.0.1:9")  # checkout never calls the chain; health is recorded

    from billing.chain.quote import ecc_backend_name

    headers = {"Authorization": f"Token {world.token_key}", "Content-Type": "application/json"}
    body = hp.dumps({"plan": world.plan_slug, "wallet": hp.PAYER})
    runs = {}
    started = time.monotonic()
    web = hp.Web(url)
    setup_web = time.monotonic() - started
    try:
        for name, connections in (("sequential", 1), (f"{args.clients} clients", args.clients)):
            key = f"{name.split()[0]}-{{n}}"  # a fresh Idempotency-Key per request
            project = [hp.Req("/v1/billing/checkout", body, {**headers, "Idempotency-Key": key})]
            bare = [hp.Req("/bench/bare/checkout", body, headers)]
            if not runs:  # warm both paths (imports, caches, connections) before measuring
                hp.run_load(web, project, label="warm-up", connections=2, seconds=args.warmup, ok=(201,))
                hp.run_load(web, bare, label="warm-up", connections=2, seconds=args.warmup, ok=(201,))
            runs[name] = (
                hp.run_load(
                    web, project, label=f"checkout, {name}", connections=connections, seconds=args.seconds, ok=(201,)
                ),  # fmt: skip
                hp.run_load(
                    web, bare, label=f"bare baseline, {name}", connections=connections, seconds=args.seconds, ok=(201,)
                ),  # fmt: skip
            )
    finally:
        web.stop()

    from billing.models import IdempotencyKey, PaymentTransaction

    client = runs["sequential"][0].client
    print(f"checkout bench: {hp.gunicorn_shape()}, load client {client}, ECDSA backend {ecc_backend_name()}, "
          f"{os.cpu_count()} cores, {args.seconds:g} s per run")  # fmt: skip
    print(f"setup: database and seed {setup_db:.1f} s, gunicorn up {setup_web:.1f} s")
    print(hp.HEADER)
    failed = 0
    for project_result, baseline in runs.values():
        print(hp.row(project_result))
        print(hp.row(baseline))
        print(hp.ratio_line(project_result.label, project_result, baseline))
        hp.report("checkout", project_result, baseline)
        failed += project_result.errors + baseline.errors
    print(
        f"ledger rows: {PaymentTransaction.objects.count()}, idempotency rows: {IdempotencyKey.objects.count()} "
        "(warm-up included; one of each per checkout answered 201)"
    )
    seq = runs["sequential"][0]
    many = runs[f"{args.clients} clients"][0]
    verdict_seq = "PASS" if seq.p95 <= TARGET_SEQ_P95_MS else "OVER"
    verdict_many = "PASS" if many.rps >= TARGET_CLIENTS_RPS else "UNDER"
    print(f"target sequential p95 <= {TARGET_SEQ_P95_MS:.0f} ms: {seq.p95:.2f} ms {verdict_seq}")
    print(f"target {args.clients} clients >= {TARGET_CLIENTS_RPS:.0f}/s: {many.rps:.1f}/s {verdict_many}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
