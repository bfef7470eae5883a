"""The project's 404 and 500 handlers: API paths (/v1/) always answer in the API's error shape, never an HTML page.

404: a path no route matches (an unknown resource, a malformed slug) answers `not_found` under /v1/.

500: requests that failed because the database is unreachable (a restart, a failover, a network cut).

Django's handler500 runs inside the `except` block of the request that failed, so it can see the exception:
a database connection error becomes 503 with `Retry-After` (the API's error shape under /v1/, a short page
elsewhere), any other error stays a 500. Nothing is half-written: each write runs in one transaction, which the
lost connection rolled back, so the client may simply retry (webhook deliveries and checkouts are idempotent).
Connections left broken by a restart are replaced at the next request (CONN_HEALTH_CHECKS).
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error

from billing_project.api_errors import error_body

RETRY_AFTER_SECONDS = 5


def _database_unreachable(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return JsonResponse(error_body("not_found", "No such resource."), status=404)
    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if not _database_unreachable(sys.exc_info()[1]):
        if request.path.startswith("/v1/"):
            return JsonResponse(error_body("server_error", "Internal error; it has been logged."), status=500)
        return server_error(request)
    message = "The database is not reachable right now; retry shortly."
    if request.path.startswith("/v1/"):
        response: HttpResponse = JsonResponse(error_body("unavailable", message), status=503)
    else:
        response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
