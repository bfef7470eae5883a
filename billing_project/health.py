"""Liveness and readiness probes."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse


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


def _check_networks() -> tuple[bool, dict]:
    from billing.models import Network

    detail = {}
    ok = True
    for network in Network.objects.filter(enabled=True).prefetch_related("rpc_endpoints"):
        healthy = [e for e in network.rpc_endpoints.all() if e.enabled and e.healthy]
        detail[network.slug] = {"healthy_endpoints": len(healthy)}
        ok = ok and bool(healthy)
    return ok, detail


def readyz(request):
    db_ok, db_err = _check_database()
    broker_ok, broker_err = _check_broker()
    networks_ok, networks = _check_networks() if db_ok else (False, {})
    ready = db_ok and broker_ok and networks_ok
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {
            "database": {"ok": db_ok, "error": db_err},
            "broker": {"ok": broker_ok, "error": broker_err, "transport": settings.CELERY_BROKER_URL.split(":")[0]},
            "networks": {"ok": networks_ok, "detail": networks},
        },
    }
    return JsonResponse(body, status=200 if ready else 503)
