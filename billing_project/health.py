"""Liveness and readiness probes, and the Prometheus scrape endpoint."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

import structlog
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse

log = structlog.get_logger(__name__)


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, ""
    except Exception as exc:  # readiness reports, never raises
        return False, type(exc).__name__


def _check_broker() -> tuple[bool, str]:
    from billing_project.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, ""
    except Exception as exc:
        return False, type(exc).__name__


def _check_networks() -> tuple[bool, bool, dict]:
    """-> (every enabled network has a healthy endpoint, some enabled endpoint is unhealthy, detail).

    Endpoints are named by id and position only: their URLs carry provider keys."""
    from billing.selectors import rpc_endpoints_for_readiness

    detail: dict[str, dict] = {}
    ok = True
    degraded = False
    for network_slug, endpoints in rpc_endpoints_for_readiness().items():
        healthy = [e for e in endpoints if e.healthy]
        down = [e for e in endpoints if not e.healthy]
        detail[network_slug] = {
            "healthy_endpoints": len(healthy),
            "endpoints": len(endpoints),
            "down": [
                {"id": e.pk, "position": e.position, "consecutive_failures": e.consecutive_failures} for e in down
            ],
        }
        ok = ok and bool(healthy)
        degraded = degraded or bool(down)
    return ok, degraded, detail


def readyz(request):
    """ready (200): everything answers. degraded (200): serving, but some RPC endpoint is down (its network
    still has a healthy one; the client fails over). not_ready (503): the database or the broker does not
    answer, or an enabled network has no healthy endpoint at all."""
    db_ok, db_err = _check_database()
    broker_ok, broker_err = _check_broker()
    if db_ok:
        try:
            networks_ok, degraded, networks = _check_networks()
        except Exception as exc:  # a database that fails between the two checks is a database that is down
            db_ok, db_err = False, type(exc).__name__
            networks_ok, degraded, networks = False, False, {}
    else:
        networks_ok, degraded, networks = False, False, {}
    ready = db_ok and broker_ok and networks_ok
    status = ("degraded" if degraded else "ready") if ready else "not_ready"
    body = {
        "status": status,
        "checks": {
            "database": {"ok": db_ok, "error": db_err},
            "broker": {"ok": broker_ok, "error": broker_err, "transport": settings.CELERY_BROKER_URL.split(":")[0]},
            "networks": {"ok": networks_ok, "degraded": degraded, "detail": networks},
        },
    }
    return JsonResponse(body, status=200 if ready else 503)


# --- /metrics ------------------------------------------------------------------------------------------


def _bearer_ok(request) -> bool:
    expected = settings.METRICS_BEARER_TOKEN
    if not expected:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    # Constant time: how many leading characters matched must not show in the answer time.
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def forget_dead_processes(folder: str) -> list[int]:
    """Live gauges of processes that died without saying so (a SIGKILLed Celery pool process sends no
    worker_process_shutdown; gunicorn's child_exit and the Celery signal cover the others) stop counting:
    their `gauge_live*_<pid>.db` files are removed. The folder is this machine's, so its pids are ours.
    Returns the pids forgotten."""
    from prometheus_client import multiprocess

    dead = set()
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            dead.add(int(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(dead)


def metrics(request):
    """Prometheus text format. In multiprocess mode (PROMETHEUS_MULTIPROC_DIR: gunicorn workers and Celery
    workers write their counters there) the files of every process are added up; the gauges read from the
    database are computed now, by billing.metrics.DatabaseCollector."""
    if not _bearer_ok(request):
        response = JsonResponse(
            {"error": {"code": "unauthorized", "message": "Send Authorization: Bearer <METRICS_BEARER_TOKEN>."}},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    import prometheus_client
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    from billing.metrics_db import DatabaseCollector

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        forget_dead_processes(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(prometheus_client.REGISTRY)
    database = CollectorRegistry()
    database.register(DatabaseCollector())
    return HttpResponse(body + generate_latest(database), content_type=CONTENT_TYPE_LATEST)
