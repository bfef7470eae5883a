"""The whole subscription lifecycle against a running stack (`make run`):
a fresh payer wallet linked by SIWE -> checkout -> the payer funded from an anvil account and paying on
chain -> webhook/follower confirmation -> subscription and quota -> operator refund -> downgrade. Prints each
step and its time; exits non-zero on failure.

The payer is a new key each run: checkout only takes the user's SIWE-verified wallets
(BILLING_REQUIRE_VERIFIED_PAYER) and a wallet belongs to one user, so a fixed anvil account could be linked
only once per database."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta

import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.authtoken.models import Token as ApiToken
from siwe import SiweMessage
from web3 import Web3

from billing.roles import BILLING_ADMIN
from profiles.selectors import quota_grant_for_user

ERC20_TRANSFER_ABI = [
    {
        "type": "function",
        "name": "transfer",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    }
]
GAS_ALLOWANCE_WEI = 5 * 10**16  # 0.05 ETH for the payer's approve and pay on the local chain

# anvil's public development mnemonic: every anvil funds these accounts.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


class StepFailed(Exception):
    pass


class Command(BaseCommand):
    help = "End-to-end check of the subscription lifecycle against a running stack."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
        parser.add_argument("--plan", default="pro")
        parser.add_argument(
            "--payer-index", type=int, default=2, help="anvil account index that funds the fresh payer wallet"
        )
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each async step")
        parser.add_argument("--skip-refund", action="store_true")

    def handle(self, *args, **opts):
        self.opts = opts
        self.base = opts["base_url"].rstrip("/")
        self.http = requests.Session()
        self.started = time.monotonic()
        try:
            self.run()
        except StepFailed as exc:
            raise CommandError(f"FAILED: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"e2e passed in {time.monotonic() - self.started:.1f}s"))

    # -- helpers -----------------------------------------------------------------------------------

    def step(self, name: str, fn):
        t0 = time.monotonic()
        try:
            result = fn()
        except StepFailed:
            self.stdout.write(f"  x {name} ({time.monotonic() - t0:.2f}s)")
            raise
        self.stdout.write(f"  ok {name} ({time.monotonic() - t0:.2f}s)")
        return result

    def api(self, method: str, path: str, token: str, expect: tuple[int, ...] = (200,), **kwargs):
        headers = {"Authorization": f"Token {token}", **kwargs.pop("headers", {})}
        response = self.http.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)
        if response.status_code not in expect:
            raise StepFailed(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else {}

    def wait(self, what: str, probe):
        deadline = time.monotonic() + self.opts["timeout"]
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(1)
        raise StepFailed(f"timed out waiting for {what}")

    # -- the scenario ------------------------------------------------------------------------------

    def run(self):
        user, token, admin_token, payer = self._sign_up()
        checkout = self._pay_and_confirm(user, token, payer)
        if not self.opts["skip_refund"]:
            self._refund(user, token, admin_token, checkout)

    def _sign_up(self):
        """A customer with an API token and a SIWE-linked wallet, and an operator. -> (user, token, operator
        token, payer account)"""
        User = get_user_model()
        suffix = secrets.token_hex(4)
        password = secrets.token_urlsafe(16)

        def create_users():
            user = User.objects.create_user(username=f"e2e-{suffix}", password=password)
            admin = User.objects.create_user(
                username=f"e2e-admin-{suffix}", password=secrets.token_urlsafe(16), is_staff=True
            )
            admin.groups.add(Group.objects.get(name=BILLING_ADMIN))
            return user, ApiToken.objects.create(user=admin).key

        user, admin_token = self.step("create user and operator", create_users)
        token = self.step(
            "issue API token (POST /v1/auth/token)",
            lambda: self._token(user.username, password),
        )
        payer = Account.create()
        self.step(
            f"link the payer wallet {payer.address} by SIWE (POST /v1/profile/wallets/siwe/{{nonce,verify}})",
            lambda: self._link_by_siwe(token, payer),
        )
        return user, token, admin_token, payer

    def _pay_and_confirm(self, user, token: str, payer) -> dict:
        """Checkout, fund the payer, pay on chain, report the hash; then the ledger, the subscription and the
        quota follow. -> the checkout"""
        Account.enable_unaudited_hdwallet_features()
        funder = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{self.opts['payer_index']}")
        checkout = self.step(
            f"checkout plan {self.opts['plan']} (POST /v1/billing/checkout)",
            lambda: self.api(
                "POST",
                "/v1/billing/checkout",
                token,
                expect=(201,),
                json={"plan": self.opts["plan"], "wallet": payer.address},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            ),
        )
        w3 = Web3(Web3.HTTPProvider(self.opts["rpc_url"], request_kwargs={"timeout": 30}))
        self.step(
            f"fund the payer from anvil account #{self.opts['payer_index']}",
            lambda: self._fund(w3, funder, payer.address, checkout),
        )
        tx_hash = self.step(
            f"pay on chain with {len(checkout['payment']['steps'])} wallet step(s)",
            lambda: self._pay(w3, payer, checkout["payment"]["steps"]),
        )
        self.step(
            "report the transaction hash (POST .../tx)",
            lambda: self.api("POST", f"/v1/billing/checkout/{checkout['id']}/tx", token, json={"tx_hash": tx_hash}),
        )
        confirmed = self.step(
            "ledger confirms at depth (webhook or follower)",
            lambda: self.wait("confirmation", lambda: self._status(checkout["id"], token, "confirmed")),
        )
        sub = self.step(
            "subscription active (GET /v1/billing/me/subscription)",
            lambda: self.wait("subscription", lambda: self._subscription(token, self.opts["plan"])),
        )
        self.step(
            "quota updated by plan.changed.v1",
            lambda: self.wait("quota", lambda: self._quota(user.pk, self.opts["plan"])),
        )
        self.stdout.write(
            f"     tx {confirmed.get('tx_hash')} block {confirmed.get('block_number')}, "
            f"period end {sub.get('current_period_end')}"
        )
        return checkout

    def _refund(self, user, token: str, admin_token: str, checkout: dict) -> None:
        """The operator refunds the payment; the ledger and the quota follow."""
        self.step(
            "operator refund (POST /v1/billing/admin/transactions/{id}/refund)",
            lambda: self.api(
                "POST",
                f"/v1/billing/admin/transactions/{checkout['id']}/refund",
                admin_token,
                expect=(200, 202),
                json={"reason": "e2e"},
            ),
        )
        self.step(
            "ledger shows refunded",
            lambda: self.wait("refund", lambda: self._status(checkout["id"], token, "refunded")),
        )
        self.step(
            "quota downgraded (no plan)",
            lambda: self.wait("downgrade", lambda: self._quota(user.pk, "")),
        )

    def _token(self, username: str, password: str) -> str:
        response = self.http.post(
            f"{self.base}/v1/auth/token", json={"username": username, "password": password}, timeout=30
        )
        if response.status_code != 200:
            raise StepFailed(f"token: {response.status_code} {response.text[:300]}")
        return response.json()["token"]

    def _link_by_siwe(self, token: str, wallet) -> dict:
        """EIP-4361 as a wallet does it: ask for a nonce, sign the message, send both."""
        issued = self.api("POST", "/v1/profile/wallets/siwe/nonce", token, expect=(201,))
        now = datetime.now(UTC)
        message = SiweMessage(
            domain=issued["domain"],
            address=wallet.address,
            statement="Link this wallet to my billing account.",
            uri=issued["uri"],
            version=issued["version"],
            chain_id=issued["chain_ids"][0],
            nonce=issued["nonce"],
            issued_at=now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            expiration_time=(now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        ).prepare_message()
        signature = Account.sign_message(encode_defunct(text=message), private_key=wallet.key).signature.to_0x_hex()
        return self.api(
            "POST", "/v1/profile/wallets/siwe/verify", token, json={"message": message, "signature": signature}
        )

    def _fund(self, w3: Web3, funder, to: str, checkout: dict) -> None:
        """Gas money (plus the price when it is native), and the token amount when it is an ERC-20."""
        native = checkout.get("token_address") is None
        value = GAS_ALLOWANCE_WEI + (int(checkout["amount"]) if native else 0)
        self._send(w3, funder, {"to": to, "value": value})
        if not native:
            token = w3.eth.contract(address=Web3.to_checksum_address(checkout["token_address"]), abi=ERC20_TRANSFER_ABI)
            data = token.functions.transfer(to, int(checkout["amount"]))._encode_transaction_data()
            self._send(w3, funder, {"to": token.address, "data": data, "value": 0})

    def _send(self, w3: Web3, account, tx: dict) -> None:
        tx = {**tx, "from": account.address, "chainId": w3.eth.chain_id}
        tx["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
        tx["gas"] = int(w3.eth.estimate_gas(tx) * 1.3)
        base = w3.eth.get_block("latest").get("baseFeePerGas") or 0
        tx["maxPriorityFeePerGas"] = w3.eth.max_priority_fee
        tx["maxFeePerGas"] = 2 * base + tx["maxPriorityFeePerGas"]
        sent = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        if w3.eth.wait_for_transaction_receipt(sent, timeout=self.opts["timeout"])["status"] != 1:
            raise StepFailed(f"funding transaction reverted: {sent.to_0x_hex()}")

    def _pay(self, w3: Web3, payer, steps: list[dict]) -> str:
        tx_hash = ""
        nonce = w3.eth.get_transaction_count(payer.address, "pending")
        for step in steps:
            tx = {
                "to": Web3.to_checksum_address(step["to"]),
                "data": step["data"],
                "value": int(step["value"]),
                "chainId": int(step["chain_id"]),
                "nonce": nonce,
                "from": payer.address,
            }
            tx["gas"] = int(w3.eth.estimate_gas(tx) * 1.3)
            base = w3.eth.get_block("latest").get("baseFeePerGas") or 0
            tx["maxPriorityFeePerGas"] = w3.eth.max_priority_fee
            tx["maxFeePerGas"] = 2 * base + tx["maxPriorityFeePerGas"]
            signed = payer.sign_transaction(tx)
            sent = w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=self.opts["timeout"])
            if receipt["status"] != 1:
                raise StepFailed(f"step {step['kind']} reverted: {sent.to_0x_hex()}")
            tx_hash = sent.to_0x_hex()
            nonce += 1
        return tx_hash

    def _status(self, checkout_id: str, token: str, wanted: str):
        body = self.api("GET", f"/v1/billing/checkout/{checkout_id}", token)
        if body["status"] in ("failed", "expired", "needs_review") and wanted != body["status"]:
            raise StepFailed(f"checkout ended {body['status']}: {body.get('failure_reason')}")
        return body if body["status"] == wanted else None

    def _subscription(self, token: str, plan: str):
        body = self.api("GET", "/v1/billing/me/subscription", token, expect=(200, 404))
        sub = body.get("subscription", body) if isinstance(body, dict) else None
        if (
            sub
            and sub.get("status") == "active"
            and (sub.get("plan") == plan or (sub.get("plan") or {}).get("slug") == plan)
        ):
            return sub
        return None

    def _quota(self, user_id: int, plan: str):
        grant = quota_grant_for_user(user_id=user_id)
        return grant is not None and grant.plan_slug == plan
