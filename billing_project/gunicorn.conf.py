"""gunicorn settings: `gunicorn -c billing_project/gunicorn.conf.py billing_project.wsgi` (what `make run` does).

Environment: PORT (8000), BIND_HOST (127.0.0.1), WEB_CONCURRENCY (2 worker processes), WEB_THREADS (4 threads per
worker), LOG_LEVEL, PROMETHEUS_MULTIPROC_DIR, BILLING_METRICS_DIR_SHARED.

Workers are gthread: a process per core (2 on the 2-core machine the project is measured on) with 4 threads each.
A request spends much of its time waiting on PostgreSQL (a checkout makes 4 round trips); with sync workers a
process sits idle during each wait and answers one connection at a time without keep-alive, so 2 sync workers left
the cores idle under load, and 4 or 8 sync workers cost more CPU per request than they won back (more processes
fighting for 2 cores). Measured interleaved on the 2-core machine (bench/_gunicorn_shapes.py), 8 clients, load
average 8.7-12: checkout median 52.7/s with 2 sync workers, 66.8/s with 4, 110.0/s with 2 x 4 threads; the bare
baseline 172, 147 and 319/s (docs/performance.md, Checkout). Django is thread-safe (one database connection
per thread: 8 here); the per-process caches of the request path are plain dicts and lru_caches.
"""

import os
from pathlib import Path

_base_dir = Path(__file__).resolve().parent.parent

bind = [f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 60
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "billing-web"
# gunicorn 27 opens a control socket at one fixed path per user: two servers on one machine would fight over it.
control_socket_disable = True

# Each worker is a process with its own counters: prometheus_client adds them up from files in one folder,
# which it must know before any metric exists, so the variable is set here, in the master, before forking.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_base_dir / ".data" / "prometheus"))


def on_starting(server):
    # Files left by the previous run would be summed into this run's counters: start from an empty folder.
    # Only the *.db files prometheus_client writes are removed, whatever folder the variable names. A folder
    # shared with Celery workers (BILLING_METRICS_DIR_SHARED=1, set by devstack, which empties it before it
    # starts anything) is left alone: the workers may already have written there.
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get("BILLING_METRICS_DIR_SHARED") == "1":
        return
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server, worker):
    # A dead worker's live gauges must stop counting (gauges with multiprocess_mode "live*").
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
