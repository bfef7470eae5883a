"""The development indexer turns chain logs into signed webhooks that the API accepts and applies."""

from __future__ import annotations

import pytest

from billing.chain.rpc import ChainClient
from billing.devtools.dev_indexer import DevIndexer
from billing.models import InboundEvent, PaymentTransaction, TxStatus
from billing.services.webhooks import inbound_event_process
from tests.integration.lifecycle.conftest import PAYERS, send_steps

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


class ClientSession:
    """requests.Session stand-in that posts to the Django test client (same process, same DB)."""

    def __init__(self, client):
        self.client = client

    def post(self, url, data, headers, timeout):
        path = url.split("://", 1)[1].split("/", 1)[1]
        return self.client.post(
            "/" + path,
            data,
            content_type="application/json",
            HTTP_X_BILLING_SIGNATURE=headers["X-Billing-Signature"],
        )


def test_dev_indexer_delivers_signed_payment_webhook(chain, world, user_api, api_client):
    checkout = user_api.post(
        "/v1/billing/checkout", {"plan": "eth-pro", "wallet": PAYERS[2].address}, format="json"
    ).json()
    send_steps(chain, PAYERS[2], checkout["payment"])
    indexer = DevIndexer(
        api_url="http://testserver",
        network_slug=world.network.slug,
        client=ChainClient.for_network(world.network),
        session=ClientSession(api_client),
    )
    indexer.next_block[world.contract.pk] = chain.w3.eth.block_number  # only the new block
    assert indexer.scan() == 1
    indexer.flush()
    assert indexer.sent == 1 and indexer.queue == []
    event = InboundEvent.objects.get(contract=world.contract)
    assert (
        event.event_type == "payment.confirmed" and event.payload["order_id"] == checkout["payment"]["quote"]["orderId"]
    )

    chain.anvil.mine(2)
    assert inbound_event_process(event_id=event.pk) == "processed"
    assert PaymentTransaction.objects.get(public_id=checkout["id"]).status == TxStatus.CONFIRMED
