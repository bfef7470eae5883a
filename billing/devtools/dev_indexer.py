"""A development indexer: watches the local chain and sends signed webhooks to the API the way a
hosted indexer would, so chain -> webhook -> ledger runs on one machine. It reports at the head (no
depth): like a real indexer it is a fast hint, and the backend waits for the depth itself."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import requests
import structlog
from eth_utils import to_checksum_address

from billing import signing
from billing.chain.abi import decode_call
from billing.chain.logs import observed_from_raw
from billing.models import PaymentContract
from billing.retry import backoff_seconds

log = structlog.get_logger(__name__)
EVENT_TYPES = {"Paid": "payment.confirmed", "Refunded": "payment.refunded"}


@dataclass
class Delivery:
    contract_slug: str
    secret: str
    body: dict
    attempts: int = 0
    next_at: float = 0.0


@dataclass
class DevIndexer:
    api_url: str
    network_slug: str
    client: object
    session: requests.Session = field(default_factory=requests.Session)
    next_block: dict[int, int] = field(default_factory=dict)  # contract pk -> next block to read
    queue: list[Delivery] = field(default_factory=list)
    sent: int = 0

    def contracts(self) -> list[PaymentContract]:
        return list(
            PaymentContract.objects.select_related("network")
            .filter(network__slug=self.network_slug, enabled=True)
            .exclude(address="")
        )

    def scan(self) -> int:
        head = self.client.block_number()
        found = 0
        for contract in self.contracts():
            start = self.next_block.get(contract.pk, contract.deployment_block)
            if start > head:
                continue
            found += self._scan_contract(contract, start, head)
            self.next_block[contract.pk] = head + 1
        return found

    def _scan_contract(self, contract: PaymentContract, start: int, end: int) -> int:
        chain_id = contract.network.chain_id
        found = 0
        for raw in self.client.get_logs(address=contract.address, from_block=start, to_block=end):
            observed = observed_from_raw(chain_id, contract.abi, raw)
            if observed is None or observed.name not in EVENT_TYPES:
                continue
            method = contract.mint_method if observed.name == "Paid" else contract.burn_method
            self._enqueue(
                contract,
                {
                    "id": f"{chain_id}:{observed.tx_hash}:{observed.log_index}",
                    "type": EVENT_TYPES[observed.name],
                    "chain_id": chain_id,
                    "contract_address": contract.address,
                    "method": method,
                    "tx_hash": observed.tx_hash,
                    "log_index": observed.log_index,
                    "block_number": observed.block_number,
                    "block_hash": observed.block_hash,
                    "order_id": observed.args["orderId"],
                    "payer": observed.args["payer"],
                    "token": None if int(observed.args["token"], 16) == 0 else observed.args["token"],
                    "amount": str(observed.args["amount"]),
                },
            )
            found += 1
        found += self._scan_reverts(contract, start, end)
        return found

    def _scan_reverts(self, contract: PaymentContract, start: int, end: int) -> int:
        """Reverted calls of the mint method emit nothing: find them in the blocks' receipts."""
        found = 0
        address = contract.address.lower()
        for number in range(start, end + 1):
            block = self.client.get_block(number, full_transactions=True)
            txs = [t for t in (block or {}).get("transactions", []) if (t.get("to") or "").lower() == address]
            if not txs:
                continue
            receipts = {r["transactionHash"].lower(): r for r in self.client.get_block_receipts(number)}
            for tx in txs:
                receipt = receipts.get(tx["hash"].lower())
                if receipt is None or int(receipt["status"], 16) == 1:
                    continue
                try:
                    name, args = decode_call(contract.abi, tx["input"])
                except (ValueError, KeyError):  # not a call of this ABI: nothing to report
                    continue
                if name != contract.mint_method:
                    continue
                quote = args.get("quote") or {}
                self._enqueue(
                    contract,
                    {
                        "id": f"{contract.network.chain_id}:{tx['hash'].lower()}:failed",
                        "type": "payment.failed",
                        "chain_id": contract.network.chain_id,
                        "contract_address": contract.address,
                        "method": name,
                        "tx_hash": tx["hash"].lower(),
                        "log_index": None,
                        "block_number": number,
                        "block_hash": block["hash"],
                        "order_id": quote.get("orderId"),
                        "payer": to_checksum_address(tx["from"]),
                        "token": quote.get("token"),
                        "amount": str(quote.get("amount", "0")),
                        "failure_reason": "reverted",
                    },
                )
                found += 1
        return found

    def _enqueue(self, contract: PaymentContract, body: dict) -> None:
        self.queue.append(Delivery(contract.slug, contract.webhook_secret, body))

    def flush(self) -> None:
        now = time.monotonic()
        pending: list[Delivery] = []
        for delivery in self.queue:
            if delivery.next_at > now:
                pending.append(delivery)
                continue
            raw = json.dumps(delivery.body, separators=(",", ":")).encode()
            url = f"{self.api_url.rstrip('/')}/v1/billing/webhooks/contracts/{delivery.contract_slug}"
            try:
                response = self.session.post(
                    url,
                    data=raw,
                    headers={
                        "Content-Type": "application/json",
                        signing.SIGNATURE_HEADER: signing.sign(raw, [delivery.secret]),
                    },
                    timeout=10,
                )
                ok = response.status_code < 300 or response.status_code in (400, 404, 422)
                status = response.status_code
            except requests.RequestException as exc:
                ok, status = False, type(exc).__name__
            log.info(
                "dev_indexer.delivery",
                tx_hash=delivery.body["tx_hash"],
                type=delivery.body["type"],
                contract_slug=delivery.contract_slug,
                status=status,
                attempt=delivery.attempts + 1,
            )
            if ok:
                self.sent += 1
                continue
            delivery.attempts += 1
            if delivery.attempts < 20:
                delivery.next_at = now + backoff_seconds(delivery.attempts, base=2, cap=60)
                pending.append(delivery)
        self.queue = pending
