"""schemathesis against the live OpenAPI schema, through the WSGI app, authenticated as billing_admin:
at most 25 examples per operation, no shrinking, a time limit per operation. No 5xx, and every answer
with a documented status matches its documented schema."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import token_client
from tests.integration.test_api_catalog import build_catalog

RAW_SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.app = get_wsgi_application()

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def admin_headers(billing_admin_user):
    client = token_client(billing_admin_user)
    return {"Authorization": client._credentials["HTTP_AUTHORIZATION"]}


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
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case, seeded, admin_headers):
    cache.clear()  # throttles would otherwise turn later examples into 429s
    case.call_and_validate(headers=admin_headers, checks=[not_a_server_error, response_schema_conformance])
