"""schemathesis against the live OpenAPI schema, through the WSGI app, as each role (anonymous, user, support,
billing_admin, with real tokens): a bounded number of examples per operation and role, no shrinking, a time
cap per operation. No 5xx, and every answer with a documented status matches its documented schema and
content type. Bench: `bench/api_schemathesis.py` runs it with SCHEMATHESIS_EXAMPLES=1000 in two xdist workers,
each operation given SCHEMATHESIS_OP_BUDGET seconds (once spent, the operation stops there and is reported
skipped with the number of examples it sent), and reads the counts this test appends to SCHEMATHESIS_STATS
(one JSON line per operation)."""

from __future__ import annotations

import json
import os
import time

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
    response_headers_conformance,
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
# Bench: seconds of requests per operation (all roles); 0 = no budget (every generated example is sent).
OP_BUDGET = float(os.environ.get("SCHEMATHESIS_OP_BUDGET", "0"))
STATS = os.environ.get("SCHEMATHESIS_STATS", "")
# `make test`: schemathesis' explicit and coverage cases (boundary values, a few hundred per operation) and
# EXAMPLES random ones. The bench runs the random generation only (SCHEMATHESIS_PHASES=generate): the
# coverage cases are the same on every run, and `make test` runs them.
PHASES = [Phase[name] for name in os.environ.get("SCHEMATHESIS_PHASES", "explicit,generate").split(",")]
# No 5xx, every status documented, and each answer matches its documented schema, content type and headers.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]

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


@pytest.fixture
def op_stats(request):
    """This operation's counts: examples sent (each as all roles), requests, failures, seconds, whether its time
    budget ran out; appended to SCHEMATHESIS_STATS as one JSON line when the operation is done."""
    stats = {"test": request.node.name, "sent": 0, "requests": 0, "failed": 0, "seconds": 0.0, "budget_spent": False}
    started = time.monotonic()
    yield stats
    stats["seconds"] = round(time.monotonic() - started, 3)
    stats.pop("t0", None)
    if STATS:
        with open(STATS, "a") as out:
            out.write(json.dumps(stats) + "\n")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=PHASES,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case, seeded, role_headers, op_stats):
    op_stats.setdefault("t0", time.monotonic())
    if OP_BUDGET and time.monotonic() - op_stats["t0"] > OP_BUDGET:
        # This operation's share of the bench's time is spent: stop here (hypothesis passes a skip straight
        # through, so no further examples are generated); the examples sent so far all passed every check.
        op_stats["budget_spent"] = True
        pytest.skip(f"time budget of {OP_BUDGET:g} s spent after {op_stats['sent']} examples")
    op_stats["sent"] += 1
    for role in ROLES:
        cache.clear()  # throttles would otherwise turn later examples into 429s
        op_stats["requests"] += 1
        try:
            case.call_and_validate(headers=role_headers[role], checks=CHECKS)
        except BaseException:
            op_stats["failed"] += 1
            raise
