"""One error shape for the whole API: {"error": {"code", "message", "fields"}} with a 4xx status."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from billing_project.errors import ServiceError


class ApiError(exceptions.APIException):
    """A domain error with a stable code, raised by views (services raise their own exceptions)."""

    def __init__(self, code: str, message: str, *, status_code: int = 400, fields: dict | None = None):
        self.status_code = status_code
        self.code = code
        self.fields = fields or {}
        super().__init__(detail=message, code=code)


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        return {k: _flatten_list(v) for k, v in detail.items()}
    return {"non_field_errors": _flatten_list(detail)}


def _flatten_list(value):
    if isinstance(value, dict):
        return {k: _flatten_list(v) for k, v in value.items()}
    if isinstance(value, list):
        return [str(v) if not isinstance(v, (dict, list)) else _flatten_list(v) for v in value]
    return [str(value)]


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def service_error_response(exc: ServiceError) -> tuple[int, dict]:
    """The HTTP status and the error body of a refused request: the one mapping of ServiceError."""
    fields = exc.fields
    if fields is None:
        fields = {exc.field: [exc.message]} if exc.field else {}
    return exc.status, error_body(exc.code, exc.message, fields)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        status_code, body = service_error_response(exc)
        return Response(body, status=status_code)
    if isinstance(exc, RequestDataTooBig):
        # Django would answer its HTML 400 page; the API answers its own shape, with the limit as the reason.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            error_body("request_too_large", f"The request body is larger than {limit} bytes."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(fields)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, ApiError):
        return Response(error_body(exc.code, str(exc.detail), exc.fields), status=exc.status_code)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request is not valid.", _flatten(exc.detail))
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException):
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) else code
        body = error_body(code, str(detail))
    if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS and getattr(exc, "wait", None):
        body["error"]["retry_after"] = int(exc.wait)
    response.data = body
    return response
