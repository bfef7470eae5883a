"""RPC and chain settings are validated where they are saved (issue 8 §6): the admin API (serializers),
the admin/console (catalog services, full_clean) and anything else (database CHECK constraints, e.g. a
management command or a shell). get_logs_max_range >= 1 (0 froze the follower silently), timeouts > 0,
retries >= 0, confirmation depth >= 0; refusals are 400 with the field named and nothing saved."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from billing.models import CryptoConfig, Network, RpcEndpoint
from billing.services.catalog import crypto_config_update, network_update
from tests import factories as f

pytestmark = pytest.mark.django_db
CONFIG = "/v1/billing/admin/crypto-config"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("get_logs_max_range", 0),
        ("get_logs_max_range", -5),
        ("request_timeout_seconds", "0"),
        ("request_timeout_seconds", "-1.5"),
        ("max_retries", -1),
    ],
)
def test_crypto_config_api_refuses_out_of_range_values(admin_api, field, value):
    before = CryptoConfig.load()
    response = admin_api.patch(CONFIG, {field: value}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and list(error["fields"]) == [field]
    after = CryptoConfig.load()
    assert getattr(after, field) == getattr(before, field)


def test_crypto_config_api_accepts_the_edges(admin_api):
    response = admin_api.patch(
        CONFIG, {"get_logs_max_range": 1, "max_retries": 0, "request_timeout_seconds": "0.1"}, format="json"
    )
    assert response.status_code == 200, response.content
    config = CryptoConfig.load()
    assert (config.get_logs_max_range, config.max_retries, config.request_timeout_seconds) == (1, 0, Decimal("0.1"))


def test_network_api_refuses_negative_depth_and_zero_endpoint_timeout(admin_api):
    network = f.NetworkFactory(confirmation_depth=3)
    url = f"/v1/billing/admin/networks/{network.slug}"
    depth = admin_api.patch(url, {"confirmation_depth": -1}, format="json")
    assert depth.status_code == 400 and list(depth.json()["error"]["fields"]) == ["confirmation_depth"]
    endpoint = admin_api.patch(
        url, {"rpc_endpoints": [{"url": "https://rpc.example.test/k", "timeout_seconds": "0"}]}, format="json"
    )
    assert endpoint.status_code == 400 and "rpc_endpoints" in endpoint.json()["error"]["fields"]
    network.refresh_from_db()
    assert network.confirmation_depth == 3 and not RpcEndpoint.objects.filter(network=network).exists()
    assert admin_api.patch(url, {"confirmation_depth": 0}, format="json").status_code == 200


def test_catalog_services_used_by_the_admin_refuse_them_too():
    with pytest.raises(ValidationError) as caught:
        crypto_config_update(data={"get_logs_max_range": 0, "request_timeout_seconds": Decimal("0")})
    assert set(caught.value.message_dict) == {"get_logs_max_range", "request_timeout_seconds"}
    assert "follower" in caught.value.message_dict["get_logs_max_range"][0]
    network = f.NetworkFactory()
    with pytest.raises(ValidationError) as caught:
        network_update(
            network=network, data={}, rpc_endpoints=[{"url": "https://rpc.example.test/", "timeout_seconds": 0}]
        )
    assert CryptoConfig.load().get_logs_max_range == 2000


def test_the_database_refuses_what_skips_validation():
    CryptoConfig.load()
    endpoint = f.RpcEndpointFactory()
    for query, values in (
        (CryptoConfig.objects.all(), {"get_logs_max_range": 0}),
        (CryptoConfig.objects.all(), {"request_timeout_seconds": Decimal("0")}),
        (RpcEndpoint.objects.filter(pk=endpoint.pk), {"timeout_seconds": Decimal("-1")}),
        (Network.objects.filter(pk=endpoint.network_id), {"confirmation_depth": -1}),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            query.update(**values)
