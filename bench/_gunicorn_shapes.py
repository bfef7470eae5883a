#!/usr/bin/env python
"""Which gunicorn worker setup serves checkouts best on this machine: several gunicorns side by side on one bench
database (bench/_hotpath.py's Web, each with its own WEB_CONCURRENCY and worker class), then rounds of short
wrk runs alternating between them, checkout then the bare baseline, so that each setup sees the same load.
Not part of `make bench` (a helper, underscore name); it chose gunicorn.conf.py's 2 gthread workers x 4 threads.

    .venv/bin/python bench/_gunicorn_shapes.py [--shapes 2:0,4:0,2:4,4:2] [--rounds 4] [--seconds 5] [--clients 8]

A shape is workers:threads; threads 0 = sync workers, else gthread with that many threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _hotpath as hp  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2:0,4:0,2:4,4:2")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_shapes")
    hp.prepare_database(url)
    hp.setup_django(url)
    world = hp.seed_world(rpc_url="http://127.0.0.1:9")
    headers = {"Authorization": f"Token {world.token_key}", "Content-Type": "application/json"}
    body = hp.dumps({"plan": world.plan_slug, "wallet": hp.PAYER})
    shapes = [tuple(s.split(":")) for s in args.shapes.split(",")]
    webs = {}
    results: dict[tuple, dict[str, list]] = {s: {"checkout": [], "bare": []} for s in shapes}
    try:
        for workers, threads in shapes:
            env = {"WEB_CONCURRENCY": workers, "WEB_THREADS": threads if threads != "0" else "1"}
            if threads == "0":
                env["GUNICORN_CMD_ARGS"] = "--worker-class sync"
            webs[(workers, threads)] = hp.Web(url, extra_env=env)
        paths = {"checkout": "/v1/billing/checkout", "bare": "/bench/bare/checkout"}
        for r in range(-1, args.rounds):  # round -1 warms every server up, not counted
            for shape, web in webs.items():
                for name, path in paths.items():
                    key = f"{'-'.join(shape)}-{r}-{{n}}"
                    req = [hp.Req(path, body, {**headers, "Idempotency-Key": key})]
                    if r < 0:
                        hp.run_load(web, req, label="warm-up", connections=2, seconds=2, ok=(201,))
                        continue
                    res = hp.run_load(web, req, label=name, connections=args.clients, seconds=args.seconds, ok=(201,))
                    results[shape][name].append(res)
                    print(f"{shape} {name}: {res.rps:.1f}/s p95 {res.p95:.1f} ms CPU {res.cpu_ms:.2f} ms/req "
                          f"errors {res.errors} load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    finally:
        for web in webs.values():
            web.stop()
    for (workers, threads), runs in results.items():
        label = f"{workers} sync workers" if threads == "0" else f"{workers} gthread workers x {threads} threads"
        ck = [x.rps for x in runs["checkout"]]
        bare = [x.rps for x in runs["bare"]]
        cpu = statistics.median(x.cpu_ms for x in runs["checkout"])
        print(f"{label}: checkout median {statistics.median(ck):.1f}/s (min {min(ck):.1f}, max {max(ck):.1f}), "
              f"CPU {cpu:.2f} ms/req; bare baseline median {statistics.median(bare):.1f}/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
