"""OpenAPI post-processing: every operation documents the error answers the API gives everywhere.

Each refusal has the one error shape (`billing_project.api_errors`): 400 invalid input, 401 missing or bad
credentials, 403 not allowed for the role, 404 unknown object, 409 a conflict with the current state
(idempotency, in-flight operations), 429 throttled (with `Retry-After`), 503 a dependency (database, chain) not
reachable (with `Retry-After`); operations that read a request body also 415, a body in a media type the
operation does not read. Views that document an answer themselves keep their own description.
"""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable reason."},
                "message": {"type": "string", "description": "For people."},
                "fields": {
                    "type": "object",
                    "description": "Per-field messages of a validation error (nested for nested input).",
                },
                "retry_after": {"type": "integer", "description": "Seconds to wait (429)."},
            },
        }
    },
}

COMMON_ERRORS = {
    "400": "Invalid input (`validation_error` with `fields`, or a domain code).",
    "401": "Missing or invalid credentials.",
    "403": "The role may not do this.",
    "404": "No such object.",
    "409": "Conflicts with the current state (idempotency, an operation in flight).",
    "429": "Throttled; `Retry-After` says when to try again.",
    "503": "A dependency (database, chain) is not reachable; `Retry-After` says when to try again.",
}

# Operations with a request body: DRF refuses a body whose Content-Type none of its parsers reads (found by the
# schemathesis bench: a multipart body without a parsable media type answered an undocumented 415).
BODY_ERRORS = {"415": "The body's media type is not one this operation reads (`unsupported_media_type`)."}

METHODS = ("get", "put", "post", "patch", "delete")


def add_error_responses(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry: the Error component and the common error answers."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ApiError", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/ApiError"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            errors = {**COMMON_ERRORS, **(BODY_ERRORS if "requestBody" in operation else {})}
            for status, description in errors.items():
                answer = responses.setdefault(status, {"description": description})
                answer.setdefault("content", {"application/json": {"schema": ref}})
    return result
