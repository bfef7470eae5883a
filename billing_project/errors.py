"""The one error type services raise for a request they refuse: a stable code, a message for people, the
HTTP status the API answers with, and the request field it is about (if one; or several in `fields`).

The API maps it to its error body in exactly one place (`billing_project.api_errors.service_error_response`,
used by the DRF exception handler); the console shows `message`. Any app may raise it (billing, profiles):
it lives in the project package, which imports no app. Subclasses only name a domain and set defaults.
"""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(
        self, code: str, message: str, *, field: str | None = None, status: int = 400, fields: dict | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.fields = fields  # field errors as the body shows them; default: {field: [message]} when a field
