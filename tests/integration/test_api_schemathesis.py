"""schemathesis against the live OpenAPI schema, through the WSGI app, as each role (anonymous, user, support,
billing_admin, with real tokens): a bounded number of examples per operation and role, no shrinking, a time
cap per operation. No 5xx, and every answer with a documented status matches its documented schema and
content type. Bench-only: `SCHEMATHESIS_EXAMPLES=1000 .venv/bin/python -m pytest
tests/integration/test_api_schemathesis.py` (each operation and role capped at SCHEMATHESIS_TIME_CAP s)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import token_client
from tests.integration.test_api_catalog import build_catalog

RAW_SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.app = get_wsgi_application()

ROLES = ("anonymous", "user", "support", "billing_admin")
# `make test`: a few examples per operation and role. Bench-only: SCHEMATHESIS_EXAMPLES=1000, each operation
# and role capped at SCHEMATHESIS_TIME_CAP seconds (pytest-timeout; a capped one fails, it is not skipped).
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "2"))
TIME_CAP = int(os.environ.get("SCHEMATHESIS_TIME_CAP", "600"))
# No 5xx, every status documented, and each answer matches its documented schema and content type.
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TIME_CAP)]


@pytest.fixture
def role_headers(plain_user, support_user, billing_admin_user) -> dict[str, dict[str, str]]:
    """Each role's headers (one fixture for all four: the per-test setup is most of this test's time)."""
    users = {"user": plain_user, "support": support_user, "billing_admin": billing_admin_user}
    headers = {"anonymous": {}}
    for role, user in users.items():
        headers[role] = {"Authorization": token_client(user)._credentials["HTTP_AUTHORIZATION"]}
    return headers


@pytest.fixture
def seeded(db):
    # The raw WSGI app closes "old" DB connections at each request's end; in a test that is the test's own
    # transaction. Django's test client unhooks this the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    cache.clear()
    objects = build_catalog()
    # Probes must fail fast and locally (test-connection), never wait on DNS.
    objects["network"].rpc_endpoints.update(url="http://127.0.0.1:9/")
    objects["contract"].fallback_rpc = ""
    objects["contract"].save()
    yield objects
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case, seeded, role_headers):
    for role in ROLES:
        cache.clear()  # throttles would otherwise turn later examples into 429s
        case.call_and_validate(headers=role_headers[role], checks=CHECKS)
