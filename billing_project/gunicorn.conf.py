"""gunicorn settings: `gunicorn -c billing_project/gunicorn.conf.py billing_project.wsgi` (what `make run` does).

Environment: PORT (8000), BIND_HOST (127.0.0.1), WEB_CONCURRENCY (2 workers), LOG_LEVEL, PROMETHEUS_MULTIPROC_DIR,
BILLING_METRICS_DIR_SHARED.
"""

import os
from pathlib import Path

_base_dir = Path(__file__).resolve().parent.parent

bind = [f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
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
