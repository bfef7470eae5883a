"""Every catalog write from the admin goes through billing.services.catalog: each admin that can write a
billing row saves and deletes through the services (ServiceAdminMixin), its inlines through a catalog service
too, and the RPC endpoint and fallback admins (pages and inlines) call their services, which validate."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.exceptions import ValidationError

from billing import models as m
from billing.admin import ServiceAdminMixin
from billing.services import catalog
from billing_project.admin_site import ReadOnlyAdminMixin, ReadOnlyTabularInline
from tests import factories as f
from tests.integration.test_admin import change_url, form_data, login, url

pytestmark = pytest.mark.django_db


def test_every_writable_billing_admin_writes_through_the_catalog_services():
    writable = {
        model: model_admin
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label == "billing" and not isinstance(model_admin, ReadOnlyAdminMixin)
    }
    assert m.RpcEndpoint in writable and m.NetworkFallback in writable
    for model, model_admin in writable.items():
        assert isinstance(model_admin, ServiceAdminMixin), f"{model.__name__} admin writes the model directly"
        for inline in model_admin.inlines:
            if not issubclass(inline, ReadOnlyTabularInline):
                assert hasattr(inline, "service_row_write"), f"{inline.__name__} saves its rows directly"


@pytest.fixture
def calls(monkeypatch):
    """Record the catalog services the admin calls (they still run)."""
    seen: list[str] = []
    for name in (
        "rpc_endpoint_create",
        "rpc_endpoint_update",
        "network_fallback_create",
        "network_fallback_update",
        "catalog_delete",
    ):
        real = getattr(catalog, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(catalog, name, spy)
    return seen


def test_rpc_endpoint_pages_and_inline_write_through_the_service(billing_admin_user, calls):
    network = f.NetworkFactory()
    client = login(billing_admin_user)
    response = client.post(
        url(m.RpcEndpoint, "add"),
        {"network": network.pk, "position": 0, "new_url": "https://rpc.example/KEY1", "timeout_seconds": "2"},
    )
    assert response.status_code == 302
    endpoint = network.rpc_endpoints.get()
    assert endpoint.url == "https://rpc.example/KEY1"
    assert calls == ["rpc_endpoint_create"] * 2  # the form's dry run (rolled back), then the save

    data = form_data(client.get(change_url(network)))
    data["rpc_endpoints-0-timeout_seconds"] = "3"
    data["rpc_endpoints-TOTAL_FORMS"] = "2"
    data.update({"rpc_endpoints-1-position": "1", "rpc_endpoints-1-new_url": "wss://rpc.example/KEY2"})
    data["rpc_endpoints-1-timeout_seconds"] = "4"
    assert client.post(change_url(network), data).status_code == 302
    assert [(e.url, str(e.timeout_seconds)) for e in network.rpc_endpoints.order_by("position")] == [
        ("https://rpc.example/KEY1", "3.00"),
        ("wss://rpc.example/KEY2", "4.00"),
    ]
    assert calls[2:] == ["rpc_endpoint_update", "rpc_endpoint_create"]  # the inline's changed and new rows

    response = client.post(url(m.RpcEndpoint, "delete", endpoint.pk), {"post": "yes"})
    assert response.status_code == 302
    assert calls[-1] == "catalog_delete"
    assert list(network.rpc_endpoints.values_list("url", flat=True)) == ["wss://rpc.example/KEY2"]


def test_network_fallback_page_writes_through_the_service(billing_admin_user, calls):
    config, network = f.CryptoConfigFactory(), f.NetworkFactory()
    client = login(billing_admin_user)
    response = client.post(url(m.NetworkFallback, "add"), {"config": config.pk, "network": network.pk, "position": 0})
    assert response.status_code == 302
    fallback = m.NetworkFallback.objects.get()
    assert calls == ["network_fallback_create"] * 2  # the form's dry run (rolled back), then the save

    response = client.post(change_url(fallback), {"config": config.pk, "network": network.pk, "position": 3})
    assert response.status_code == 302
    fallback.refresh_from_db()
    assert fallback.position == 3 and calls[-1] == "network_fallback_update"

    assert client.post(url(m.NetworkFallback, "delete", fallback.pk), {"post": "yes"}).status_code == 302
    assert calls[-1] == "catalog_delete" and not m.NetworkFallback.objects.exists()


def test_the_services_validate():
    network = f.NetworkFactory()
    with pytest.raises(ValidationError) as refused:
        catalog.rpc_endpoint_create(data={"network": network, "position": 0, "url": "ftp://rpc.example/x"})
    assert "url" in refused.value.message_dict
    endpoint = catalog.rpc_endpoint_create(data={"network": network, "position": 0, "url": "https://rpc.example/"})
    with pytest.raises(ValidationError):
        catalog.rpc_endpoint_create(data={"network": network, "position": 0, "url": "https://rpc.example/2"})
    with pytest.raises(ValidationError):
        catalog.rpc_endpoint_update(endpoint=endpoint, data={"timeout_seconds": 0})

    config = f.CryptoConfigFactory()
    catalog.network_fallback_create(data={"config": config, "network": network, "position": 0})
    with pytest.raises(ValidationError):
        catalog.network_fallback_create(data={"config": config, "network": network, "position": 1})
    assert m.RpcEndpoint.objects.count() == 1 and m.NetworkFallback.objects.count() == 1
