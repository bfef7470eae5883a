"""Deploy the reference SubscriptionPass (and optionally the demo dUSD token) to a network and register them.

    manage.py deploy_contracts --network local [--contract-slug pass-local] [--with-demo-token]
                               [--mint-demo-to 0x... ...] [--if-missing]

The owner is the operator key (settings.BILLING_OPERATOR_KEY / _FILE), the first signer the quote signer
(BILLING_QUOTE_SIGNER_KEY / _FILE). Transactions go to the network's first enabled RPC endpoint.
"""

from __future__ import annotations

import secrets

from django.core.management.base import BaseCommand, CommandError
from eth_utils import is_address, to_checksum_address
from web3 import Web3

from billing.chain.artifacts import ArtifactNotBuilt, deploy_artifact, load_artifact, transact
from billing.chain.quote import SignerKeyMissing, get_operator_account, get_quote_signer
from billing.models import Network, PaymentContract, Plan, Token
from billing.services import catalog

# anvil's default accounts 0..4 (public development keys): who gets demo dUSD when nobody is named.
ANVIL_DEFAULT_ACCOUNTS = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f87E8Ff7f5C",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
]
DEMO_SYMBOL = "dUSD"
DEMO_DECIMALS = 6
DEMO_MINT = 1_000_000 * 10**DEMO_DECIMALS


class Command(BaseCommand):
    help = "Deploy SubscriptionPass (and the demo dUSD token) to a network and register the contract row."

    def add_arguments(self, parser):
        parser.add_argument("--network", required=True, help="Network slug.")
        parser.add_argument("--contract-slug", help="PaymentContract slug (default pass-<network>).")
        parser.add_argument("--with-demo-token", action="store_true", help="Also deploy DemoToken (dUSD).")
        parser.add_argument("--mint-demo-to", nargs="+", default=None, metavar="ADDR", help="dUSD receivers.")
        parser.add_argument(
            "--if-missing", action="store_true", help="Skip a deployment when the registered address has code."
        )

    def handle(self, *args, **opts):
        try:
            network = Network.objects.get(slug=opts["network"])
        except Network.DoesNotExist:
            raise CommandError(f"Unknown network '{opts['network']}'.")
        slug = opts["contract_slug"] or f"pass-{network.slug}"
        receivers = opts["mint_demo_to"]
        for address in receivers or []:
            if not is_address(address):
                raise CommandError(f"{address} is not an address.")
        try:
            operator = get_operator_account()
            quote_signer = get_quote_signer()
            pass_artifact = load_artifact("SubscriptionPass")
        except (SignerKeyMissing, ArtifactNotBuilt) as exc:
            raise CommandError(str(exc))

        w3 = self._connect(network)
        row = PaymentContract.objects.filter(slug=slug).first()
        if row and row.network_id != network.pk:
            raise CommandError(f"Contract '{slug}' is registered on another network ({row.network.slug}).")

        if opts["if_missing"] and row and self._has_code(w3, row.address):
            contract = w3.eth.contract(address=row.address, abi=pass_artifact["abi"])
            deployment_block = row.deployment_block
            self.stdout.write(f"SubscriptionPass: {row.address} already deployed, kept")
        else:
            owner, signer = operator.address, quote_signer.address
            contract, receipt = deploy_artifact(w3, operator, "SubscriptionPass", owner, signer)
            deployment_block = receipt["blockNumber"]
            self.stdout.write(f"SubscriptionPass: deployed at {contract.address} (block {deployment_block})")

        # Through the catalog service, like every catalog write: validated, and the providers' config rebuilt.
        data = {
            "network": network,
            "title": (row.title if row and row.title else f"Subscription pass ({network.name})"),
            "address": contract.address,
            "abi": pass_artifact["abi"],
            "mint_method": "pay",
            "burn_method": "refund",
            "withdraw_method": "withdraw",
            "eip712_name": "SubscriptionPass",
            "eip712_version": "1",
            "deployment_block": deployment_block,
        }
        if row is None or not row.webhook_secret:
            data["webhook_secret"] = "whsec_" + secrets.token_hex(32)
        created = row is None
        if created:
            row = catalog.contract_create(data={"slug": slug, **data})
        else:
            row = catalog.contract_update(contract=row, data=data)
        self.stdout.write(f"PaymentContract '{row.slug}' {'created' if created else 'updated'}")

        self._sync_plan_periods(w3, operator, contract, row)

        if opts["with_demo_token"]:
            self._demo_token(w3, operator, network, receivers, opts["if_missing"])

    # ------------------------------------------------------------------ steps

    def _connect(self, network: Network) -> Web3:
        endpoint = network.rpc_endpoints.filter(enabled=True).order_by("position", "id").first()
        if endpoint is None:
            raise CommandError(f"Network '{network.slug}' has no enabled RPC endpoint.")
        w3 = Web3(Web3.HTTPProvider(endpoint.url, request_kwargs={"timeout": float(endpoint.timeout_seconds) * 4}))
        try:
            chain_id = w3.eth.chain_id
        except Exception as exc:  # noqa: BLE001 - any transport error becomes one clear message
            raise CommandError(f"RPC endpoint {endpoint.masked_url} does not answer: {type(exc).__name__}")
        if chain_id != network.chain_id:
            raise CommandError(f"RPC endpoint answers chain id {chain_id}, the network says {network.chain_id}.")
        return w3

    @staticmethod
    def _has_code(w3: Web3, address: str) -> bool:
        return bool(address) and len(w3.eth.get_code(to_checksum_address(address))) > 0

    def _sync_plan_periods(self, w3, operator, contract, row: PaymentContract) -> None:
        """On-chain period per plan = the plan's interval, so a pass lasts as long as what was sold."""
        for plan in Plan.objects.filter(contract=row).order_by("pk"):
            seconds = int(plan.period.total_seconds())
            if contract.functions.periodSeconds(plan.onchain_plan_id).call() == seconds:
                continue
            transact(w3, operator, contract.functions.setPlanPeriod(plan.onchain_plan_id, seconds))
            self.stdout.write(f"plan {plan.slug} (id {plan.onchain_plan_id}): period {seconds} s")

    def _demo_token(self, w3, operator, network: Network, receivers: list[str] | None, if_missing: bool) -> None:
        token_row = Token.objects.filter(network=network, symbol=DEMO_SYMBOL).first()
        artifact = load_artifact("DemoToken")
        fresh = not (if_missing and token_row and self._has_code(w3, token_row.address))
        if fresh:
            token, _ = deploy_artifact(w3, operator, "DemoToken")
            self.stdout.write(f"DemoToken: deployed at {token.address}")
        else:
            token = w3.eth.contract(address=token_row.address, abi=artifact["abi"])
            self.stdout.write(f"DemoToken: {token.address} already deployed, kept")
        data = {"name": "Demo USD", "address": token.address, "decimals": DEMO_DECIMALS, "enabled": True}
        if token_row is None:
            catalog.token_create(data={"network": network, "symbol": DEMO_SYMBOL, **data})
        else:
            catalog.token_update(token=token_row, data=data)
        # A kept token is only minted to again when someone was named: re-running stays idempotent.
        if receivers is None and not fresh:
            return
        for address in receivers or ANVIL_DEFAULT_ACCOUNTS:
            transact(w3, operator, token.functions.mint(to_checksum_address(address), DEMO_MINT))
        self.stdout.write(f"minted 1,000,000 dUSD to {len(receivers or ANVIL_DEFAULT_ACCOUNTS)} address(es)")
