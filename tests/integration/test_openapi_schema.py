"""The OpenAPI schema generates with no warning and validates, and Swagger UI is served offline."""

from __future__ import annotations

import pytest
from django.core.management import call_command


def test_schema_generates_without_warnings_and_validates(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in (
        "/v1/billing/checkout:",
        "/v1/billing/webhooks/contracts/{contract_slug}:",
        "/v1/billing/plans:",
        "/v1/billing/admin/transactions/{id}/refund:",
        "/v1/profile/wallets/siwe/verify:",
    ):
        assert path in text, path


@pytest.mark.django_db
def test_swagger_ui_is_served_from_the_sidecar(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"swagger-ui" in page.content and b"cdn.jsdelivr" not in page.content
