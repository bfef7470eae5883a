"""JSON log lines carry the request id; settings mistakes fail loudly as system checks."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from django.core.checks import run_checks

from billing_project.logging import mask_url


@pytest.fixture
def log_stream():
    """The project's JSON handler, pointed at a buffer for the test."""
    handler = next(
        h for h in logging.getLogger().handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    )
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    yield buffer
    handler.setStream(old)


@pytest.mark.django_db
def test_request_log_lines_are_json_with_the_request_id(client, log_stream):
    response = client.post(
        "/v1/billing/webhooks/contracts/no-such-contract",
        b"{}",
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-abcdef123456",
    )
    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-abcdef123456"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert lines, "no JSON log line was written"
    assert all(line["request_id"] == "req-abcdef123456" for line in lines if "request_id" in line)
    assert any(line.get("request_id") == "req-abcdef123456" for line in lines)


def test_a_bad_request_id_header_is_replaced(client, db):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")
    assert response.status_code == 200
    assert response["X-Request-ID"] != "bad id with spaces" and len(response["X-Request-ID"]) == 32


def test_secrets_in_log_fields_and_urls_are_masked(log_stream):
    structlog.get_logger("test").warning(
        "rpc.failed https://rpc.example/KEY123", webhook_secret="canary-secret", url="https://u:pw@host/p?key=KEY9"
    )
    err = log_stream.getvalue()
    assert "rpc.failed https://rpc.example/****" in err and "https://host/****" in err
    assert "canary-secret" not in err and "KEY123" not in err and "KEY9" not in err and "pw@" not in err
    assert mask_url("https://rpc.example/abc") == "https://rpc.example/****"


def test_system_checks_refuse_broken_billing_settings(settings):
    settings.BILLING_PROVIDERS = {"evm": "billing.adapters.nope.Missing"}
    settings.BILLING_IDEMPOTENCY_TTL = settings.BILLING_CHECKOUT_TTL
    ids = {message.id for message in run_checks()}
    assert {"billing.E002", "billing.E004"} <= ids
    settings.BILLING_PROVIDERS = {}
    assert "billing.E001" in {message.id for message in run_checks()}
