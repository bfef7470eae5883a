"""Demo data for `manage.py seed_demo`: users, a catalog `make run` can sell from, and optionally a year of
synthetic payment history for the overview pages.

Idempotent by construction. Catalog rows are looked up by their natural key and created only when missing,
so an operator's edits, and the address/ABI that `deploy_contracts` writes over the placeholders, survive a
re-run. Every generated history row carries its generation index in `checkout_payload["demo_index"]`; a
re-run skips the indexes already stored, so the same `--transactions N` creates nothing new.

History rows are written with `bulk_create`: no model signals, so no audit entries (fine for demo data).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import secrets
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.utils import timezone
from eth_utils import keccak, to_checksum_address
from rest_framework.authtoken.models import Token as ApiToken

from billing.chain.artifacts import ArtifactNotBuilt, load_artifact
from billing.chain.quote import QUOTE_TYPE
from billing.models import (
    CryptoConfig,
    Interval,
    Network,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    PeriodKind,
    Plan,
    RefundStatus,
    Subscription,
    SubscriptionPeriod,
    SubscriptionStatus,
    Token,
    TransactionStatusChange,
    TxStatus,
)
from billing.roles import BILLING_ADMIN, SUPPORT, sync_role_permissions
from billing.services import catalog
from profiles.seed import wallets_link_verified_bulk

# Used only when contracts/build/SubscriptionPass.json has not been compiled yet; the same function
# signatures as contracts/SubscriptionPass.sol (the Quote struct is chain/quote's), so checkout and refunds
# encode the same calls.
MINIMAL_PASS_ABI: list[dict] = [
    {
        "type": "function",
        "name": "pay",
        "stateMutability": "payable",
        "inputs": [
            {
                "name": "quote",
                "type": "tuple",
                "internalType": "struct SubscriptionPass.Quote",
                "components": [dict(field) for field in QUOTE_TYPE],
            },
            {"name": "signature", "type": "bytes"},
        ],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "refund",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "orderId", "type": "bytes32"}],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "withdraw",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "token", "type": "address"},
            {"name": "to", "type": "address"},
            {"name": "amount", "type": "uint256"},
        ],
        "outputs": [],
    },
]

DEMO_USERS: dict[str, dict] = {
    "admin": {"password": "admin-demo", "is_staff": True, "group": BILLING_ADMIN},
    "support": {"password": "support-demo", "is_staff": True, "group": SUPPORT},
    "demo": {"password": "demo-demo", "is_staff": False, "group": None},
}

# The demo login's verified wallet: anvil's default-mnemonic account #2 (a public dev key, funded by every
# anvil; #0 and #1 are the operator and the quote signer).
DEMO_WALLET = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
USD = 10**6  # the stable tokens have 6 decimals
ETH = 10**18
HISTORY_SEED = 20261126
HISTORY_DAYS = 365
CUSTOMER_PREFIX = "customer-"


def placeholder_address(label: str) -> str:
    """A stable, checksummed, obviously-not-deployed address; `deploy_contracts` replaces local ones."""
    return to_checksum_address(keccak(text=f"seed_demo:{label}")[-20:])


# --- catalog -----------------------------------------------------------------------------------------

NETWORKS: list[dict] = [
    {
        # The local chain plays the production network in the demo: not a testnet, so the overview's money
        # figures (which leave test networks out by default) show the demo's history and its live payments.
        "slug": "anvil-local",
        "name": "Anvil (local)",
        "chain_id": 31337,
        "is_testnet": False,
        "confirmation_depth": 2,
        "block_time_seconds": 1,
    },
    {
        "slug": "base-sepolia",
        "name": "Base Sepolia",
        "chain_id": 84532,
        "is_testnet": True,
        "confirmation_depth": 5,
        "block_time_seconds": 2,
        "explorer_tx_url": "https://sepolia.basescan.org/tx/{tx_hash}",
        "explorer_address_url": "https://sepolia.basescan.org/address/{address}",
        "explorer_block_url": "https://sepolia.basescan.org/block/{block}",
        # No internet on a demo machine: enabled, its contract would be polled and /readyz would fail.
        "enabled": False,
    },
    {
        "slug": "ethereum",
        "name": "Ethereum",
        "chain_id": 1,
        "is_testnet": False,
        "confirmation_depth": 12,
        "block_time_seconds": 12,
        "explorer_tx_url": "https://etherscan.io/tx/{tx_hash}",
        "explorer_address_url": "https://etherscan.io/address/{address}",
        "explorer_block_url": "https://etherscan.io/block/{block}",
        "enabled": False,
    },
]
PUBLIC_RPC = {"base-sepolia": "https://sepolia.base.org", "ethereum": "https://ethereum-rpc.publicnode.com"}
FALLBACK_ORDER = ["anvil-local", "base-sepolia"]

# (network, symbol, name, decimals, address or None for native, usd estimate)
TOKENS: list[tuple[str, str, str, int, str | None, Decimal]] = [
    ("anvil-local", "ETH", "Ether", 18, None, Decimal("3000")),
    ("anvil-local", "dUSD", "Demo USD", 6, placeholder_address("dUSD@anvil-local"), Decimal("1")),
    ("base-sepolia", "ETH", "Ether", 18, None, Decimal("3000")),
    ("base-sepolia", "USDC", "USD Coin", 6, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", Decimal("1")),
    ("ethereum", "ETH", "Ether", 18, None, Decimal("3000")),
    ("ethereum", "USDC", "USD Coin", 6, "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", Decimal("1")),
]

PROVIDERS: list[dict] = [
    {
        "slug": "evm-local",
        "title": "EVM (local anvil)",
        "priority": 10,
        "networks": ["anvil-local"],
        "contract": "pass-anvil-local",
        "enabled": True,
    },
    {
        "slug": "evm-public",
        "title": "EVM (public networks)",
        "priority": 20,
        "networks": ["base-sepolia", "ethereum"],
        "contract": "pass-base-sepolia",
        "enabled": False,
    },
]

_BASE_FEATURES = ["dashboard", "api_access"]
PLANS: list[dict] = [
    {
        "slug": "starter",
        "title": "Starter",
        "description": "For a single developer trying things out.",
        "interval": Interval.MONTH,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 5 * USD,
        "price_usd_estimate": Decimal("5.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 10_000, "seats": 1, "projects": 3},
        "features": _BASE_FEATURES,
        "tier": 1,
        "sort_order": 10,
    },
    {
        "slug": "pro",
        "title": "Pro",
        "description": "For small teams shipping to production.",
        "interval": Interval.MONTH,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 15 * USD,
        "price_usd_estimate": Decimal("15.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 100_000, "seats": 5, "projects": 20},
        "features": [*_BASE_FEATURES, "exports", "webhooks"],
        "tier": 2,
        "experiment": "pricing-2026q4",
        "variant": "a",
        "sort_order": 20,
    },
    {
        "slug": "pro-b",
        "title": "Pro (priority support)",
        "description": "Pro with priority support: the pricing-2026q4 test's variant b.",
        "interval": Interval.MONTH,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 19 * USD,
        "price_usd_estimate": Decimal("19.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 100_000, "seats": 5, "projects": 20},
        "features": [*_BASE_FEATURES, "exports", "webhooks", "priority_support"],
        "tier": 2,
        "experiment": "pricing-2026q4",
        "variant": "b",
        "sort_order": 21,
    },
    {
        "slug": "business",
        "title": "Business",
        "description": "For organisations with many teams.",
        "interval": Interval.MONTH,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 49 * USD,
        "price_usd_estimate": Decimal("49.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 1_000_000, "seats": 25, "projects": None},
        "features": [*_BASE_FEATURES, "exports", "webhooks", "priority_support", "sso", "audit_log"],
        "tier": 3,
        "sort_order": 30,
    },
    {
        "slug": "pro-yearly",
        "title": "Pro (yearly)",
        "description": "Pro, paid once a year: two months free.",
        "interval": Interval.YEAR,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 150 * USD,
        "price_usd_estimate": Decimal("150.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 100_000, "seats": 5, "projects": 20},
        "features": [*_BASE_FEATURES, "exports", "webhooks"],
        "tier": 2,
        "experiment": "yearly-2026",
        "variant": "a",
        "sort_order": 40,
    },
    {
        "slug": "pro-yearly-b",
        "title": "Pro (yearly, launch price)",
        "description": "Pro, paid once a year at a launch price: the yearly-2026 test's variant b.",
        "interval": Interval.YEAR,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 135 * USD,
        "price_usd_estimate": Decimal("135.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 100_000, "seats": 5, "projects": 20},
        "features": [*_BASE_FEATURES, "exports", "webhooks"],
        "tier": 2,
        "experiment": "yearly-2026",
        "variant": "b",
        "sort_order": 41,
    },
    {
        "slug": "sprint-weekly",
        "title": "Sprint (weekly)",
        "description": "Starter limits with webhooks, a week at a time: for a hackathon or a launch.",
        "interval": Interval.WEEK,
        "token": ("anvil-local", "dUSD"),
        "price_amount": 2 * USD,
        "price_usd_estimate": Decimal("2.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 10_000, "seats": 2, "projects": 3},
        "features": [*_BASE_FEATURES, "webhooks"],
        "tier": 1,
        "sort_order": 15,
    },
    {
        "slug": "pro-eth",
        "title": "Pro (paid in ETH)",
        "description": "Pro, priced in the native coin.",
        "interval": Interval.MONTH,
        "token": ("anvil-local", "ETH"),
        "price_amount": 5 * ETH // 1000,  # 0.005 ETH
        "price_usd_estimate": Decimal("15.00"),
        "provider": "evm-local",
        "limits": {"api_calls": 100_000, "seats": 5, "projects": 20},
        "features": [*_BASE_FEATURES, "exports", "webhooks"],
        "tier": 2,
        "sort_order": 50,
    },
    {
        # Retired: it carries the history on the public networks, and is not sold any more.
        "slug": "legacy-pro-usdc",
        "title": "Pro (legacy, USDC)",
        "description": "The Pro plan as sold on public networks before the move to the local demo chain.",
        "interval": Interval.MONTH,
        "token": ("base-sepolia", "USDC"),
        "price_amount": 15 * USD,
        "price_usd_estimate": Decimal("15.00"),
        "provider": "evm-public",
        "limits": {"api_calls": 100_000, "seats": 5, "projects": 20},
        "features": [*_BASE_FEATURES, "exports"],
        "tier": 2,
        "is_active": False,
        "sort_order": 90,
    },
]


@dataclass
class SeedReport:
    """What one run created, by kind; a re-run reports all zeros."""

    created: Counter = field(default_factory=Counter)
    skipped_history: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, n: int = 1) -> None:
        if n:
            self.created[kind] += n

    def add_note(self, text: str) -> None:
        self.notes.append(text)

    def summary(self) -> str:
        if not self.created:
            return "nothing new"
        return ", ".join(f"{kind}={n}" for kind, n in sorted(self.created.items()))


@dataclass
class DemoCatalog:
    networks: dict[str, Network]
    tokens: dict[tuple[str, str], Token]
    contracts: dict[str, PaymentContract]
    providers: dict[str, PaymentProvider]
    plans: dict[str, Plan]


def _create_if_missing(model, create, report: SeedReport, kind: str, lookup: dict, defaults: dict):
    """Create through the catalog service `create` (validated like an admin write, providers' config kept
    in step), so the demo never holds a row the admin would refuse; never update."""
    obj = model.objects.filter(**lookup).first()
    if obj is not None:
        return obj
    obj = create(data={**lookup, **defaults})
    report.add(kind)
    return obj


def load_pass_abi() -> list[dict]:
    try:
        return load_artifact("SubscriptionPass")["abi"]
    except ArtifactNotBuilt:
        return MINIMAL_PASS_ABI


@transaction.atomic
def demo_users_seed(*, report: SeedReport) -> dict[str, models.Model]:
    """The three demo logins, in their role groups, each with an API token."""
    sync_role_permissions()
    user_model = get_user_model()
    users = {}
    for username, spec in DEMO_USERS.items():
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model(username=username, email=f"{username}@demo.test", is_staff=spec["is_staff"])
            user.set_password(spec["password"])
            user.save()
            report.add("users")
        elif spec["is_staff"] and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        if spec["group"] and not user.groups.filter(name=spec["group"]).exists():
            user.groups.add(Group.objects.get(name=spec["group"]))
        _, created = ApiToken.objects.get_or_create(user=user)
        report.add("api_tokens", int(created))
        users[username] = user
    # Checkout takes only SIWE-verified payers: the demo customer pays from a linked wallet.
    report.add("wallets", wallets_link_verified_bulk(links=[(users["demo"].pk, DEMO_WALLET, 31337)]))
    return users


@transaction.atomic
def demo_catalog_seed(*, report: SeedReport) -> DemoCatalog:
    """The demo catalog through the catalog services: what is missing is created, what exists is kept."""
    networks = _seed_networks(report)
    tokens = _seed_tokens(networks, report)
    contracts = _seed_contracts(networks, report)
    providers = _seed_providers(networks, tokens, contracts, report)
    plans = _seed_plans(tokens, providers, report)
    return DemoCatalog(networks=networks, tokens=tokens, contracts=contracts, providers=providers, plans=plans)


def _seed_networks(report: SeedReport) -> dict[str, Network]:
    """The networks, their RPC endpoints and the checkout's fallback order."""
    networks: dict[str, Network] = {}
    for spec in NETWORKS:
        spec = dict(spec)
        slug = spec.pop("slug")
        networks[slug] = _create_if_missing(Network, catalog.network_create, report, "networks", {"slug": slug}, spec)

    _seed_rpc_endpoints(networks, report)
    local = networks["anvil-local"]
    if local.is_testnet:  # databases seeded before the local chain played production
        networks["anvil-local"] = local = catalog.network_update(network=local, data={"is_testnet": False})

    if not CryptoConfig.objects.filter(pk=1).exists():
        report.add("crypto_config")
    current = CryptoConfig.load().fallback_order()
    missing = [networks[slug] for slug in FALLBACK_ORDER if networks[slug] not in current]
    if missing:  # appended after what an operator ordered
        catalog.crypto_config_update(data={}, fallback_networks=[*current, *missing])
        report.add("network_fallbacks", len(missing))
    return networks


def _seed_tokens(networks: dict[str, Network], report: SeedReport) -> dict[tuple[str, str], Token]:
    tokens: dict[tuple[str, str], Token] = {}
    for net, symbol, name, decimals, address, usd in TOKENS:
        tokens[(net, symbol)] = _create_if_missing(
            Token,
            catalog.token_create,
            report,
            "tokens",
            {"network": networks[net], "symbol": symbol},
            {"name": name, "decimals": decimals, "address": address or "", "usd_estimate": usd},
        )
    return tokens


def _seed_contracts(networks: dict[str, Network], report: SeedReport) -> dict[str, PaymentContract]:
    """One SubscriptionPass per network, at a placeholder address until `deploy_contracts` writes the real one."""
    abi = load_pass_abi()
    contracts: dict[str, PaymentContract] = {}
    for slug, network in networks.items():
        contract_slug = f"pass-{slug}"
        contracts[contract_slug] = _create_if_missing(
            PaymentContract,
            catalog.contract_create,
            report,
            "contracts",
            {"slug": contract_slug},
            {
                "title": f"SubscriptionPass on {network.name}",
                "network": network,
                "address": placeholder_address(contract_slug),
                "abi": abi,
                "mint_method": "pay",
                "burn_method": "refund",
                "withdraw_method": "withdraw",
                # Generated once: a re-run must not invalidate what an indexer already signs with.
                "webhook_secret": _new_webhook_secret(),
                "enabled": network.enabled,
            },
        )
    return contracts


def _seed_providers(
    networks: dict[str, Network],
    tokens: dict[tuple[str, str], Token],
    contracts: dict[str, PaymentContract],
    report: SeedReport,
) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = {}
    for spec in PROVIDERS:
        provider = PaymentProvider.objects.filter(slug=spec["slug"]).first()
        if provider is None:
            provider = catalog.provider_create(
                data={
                    "slug": spec["slug"],
                    "title": spec["title"],
                    "type": "evm",
                    "priority": spec["priority"],
                    "enabled": spec["enabled"],
                    "default_network": networks[spec["networks"][0]],
                    "contract": contracts[spec["contract"]],
                },
                networks=[networks[s] for s in spec["networks"]],
                supported_tokens=[t for (net, _), t in tokens.items() if net in spec["networks"]],
            )
            report.add("providers")
        providers[spec["slug"]] = provider
    return providers


def _seed_plans(
    tokens: dict[tuple[str, str], Token], providers: dict[str, PaymentProvider], report: SeedReport
) -> dict[str, Plan]:
    plans: dict[str, Plan] = {}
    for spec in PLANS:
        spec = dict(spec)
        slug = spec.pop("slug")
        provider = providers[spec.pop("provider")]
        spec["price_token"] = tokens[spec.pop("token")]
        spec["contract"] = provider.contract
        spec["provider"] = provider
        plans[slug] = _create_if_missing(Plan, catalog.plan_create, report, "plans", {"slug": slug}, spec)
    return plans


def _new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def _seed_rpc_endpoints(networks: dict[str, Network], report: SeedReport) -> None:
    """The local endpoint follows settings (the port may differ per machine); public ones are placeholders."""
    urls = {"anvil-local": settings.BILLING_LOCAL_CHAIN_RPC, **PUBLIC_RPC}
    for slug, url in urls.items():
        network = networks[slug]
        kept = list(network.rpc_endpoints.order_by("position"))
        first = kept[0] if kept and kept[0].position == 0 else None
        if first is None:
            new = {"url": url, "timeout_seconds": Decimal("2")}
            catalog.network_update(network=network, data={}, rpc_endpoints=[new, *({"id": e.pk} for e in kept)])
            report.add("rpc_endpoints")
        elif slug == "anvil-local" and first.url != url:
            endpoints = [{"id": e.pk, **({"url": url} if e is first else {})} for e in kept]
            catalog.network_update(network=network, data={}, rpc_endpoints=endpoints)


# --- history -----------------------------------------------------------------------------------------

# Draw weights per payment attempt. pending/submitted only stand as a customer's latest attempt (an old
# checkout has expired or failed by now), so they are drawn more often than they end up stored.
STATUS_WEIGHTS: list[tuple[str, float]] = [
    (TxStatus.CONFIRMED, 80.0),
    (TxStatus.FAILED, 6.0),
    (TxStatus.EXPIRED, 4.0),
    (TxStatus.REFUNDED, 3.0),
    (TxStatus.NEEDS_REVIEW, 1.5),
    (TxStatus.PENDING, 4.0),
    (TxStatus.SUBMITTED, 2.0),
]
_STATUSES, _STATUS_CUM = zip(*STATUS_WEIGHTS, strict=True)
_STATUS_CUM = list(itertools.accumulate(_STATUS_CUM))
UNMATCHED_RATE = 0.015
RETRY_RATE = 0.08  # confirmed after a failed first attempt

PLAN_WEIGHTS = [
    ("starter", 30),
    ("pro", 18),
    ("pro-b", 10),
    ("business", 9),
    ("pro-yearly", 6),
    ("pro-eth", 9),
    ("legacy-pro-usdc", 18),
]
UPGRADES = {"starter": "pro", "pro": "business", "pro-b": "business"}
FAILURE_REASONS = [
    "execution reverted: QuoteExpired()",
    "execution reverted: InvalidSigner()",
    "execution reverted: ERC20: transfer amount exceeds balance",
    "transaction dropped from the mempool",
    "out of gas",
]
REFUND_REASONS = ["customer asked for a refund", "duplicate payment", "charged for the wrong plan"]
GAS_PRICE_WEI = {
    "anvil-local": (1 * 10**9, 2 * 10**9),
    "base-sepolia": (10**6, 5 * 10**7),
    "ethereum": (4 * 10**9, 60 * 10**9),
}
# Block height at the start of the history window, so block numbers look like each network's.
BLOCK_BASE = {"anvil-local": 1, "base-sepolia": 12_000_000, "ethereum": 20_500_000}


def _hex32(*parts) -> str:
    return "0x" + hashlib.sha256(":".join(map(str, (HISTORY_SEED, *parts))).encode()).hexdigest()


def _mine(
    tx: PaymentTransaction,
    rng: random.Random,
    network: Network,
    at: datetime,
    *,
    since: datetime,
    tx_hash: str,
    with_log: bool,
) -> None:
    """The transaction mined at `at` on `network`: its hash, its block (counted from BLOCK_BASE at `since`), a
    log index when it emitted one (a payment that went through), and its gas and fee."""
    tx.tx_hash = tx_hash
    seconds = (at - since).total_seconds()
    tx.block_number = BLOCK_BASE[network.slug] + int(seconds // network.block_time_seconds)
    tx.block_hash = _hex32("block", network.slug, tx.block_number)
    tx.log_index = rng.randint(0, 120) if with_log else None
    low, high = GAS_PRICE_WEI[network.slug]
    tx.gas_used = rng.randint(95_000, 180_000) if with_log else rng.randint(30_000, 90_000)
    tx.effective_gas_price = rng.randint(low, high)
    tx.fee = tx.gas_used * tx.effective_gas_price


def _eth_usd(t: datetime, origin: datetime) -> Decimal:
    """A deterministic, wandering ETH price between roughly 2300 and 3700 USD."""
    days = (t - origin).total_seconds() / 86400
    rate = 3000 + 550 * math.sin(days / 58.0) + 150 * math.sin(days / 9.0)
    return Decimal(f"{rate:.8f}")


@dataclass
class _Attempt:
    index: int
    customer: int
    plan: str | None
    network: str
    token: tuple[str, str]
    amount: int
    periods: int
    status: str
    created: datetime
    retry: bool = False
    payer: str = ""


@dataclass
class _Ctx:
    catalog: DemoCatalog
    now: datetime
    origin: datetime
    admin_actor: str


def _draw_status(rng: random.Random) -> str:
    return rng.choices(_STATUSES, cum_weights=_STATUS_CUM)[0]


def _customer_story(customer: int, ctx: _Ctx) -> list[_Attempt]:
    """One customer's payment attempts, in time order; depends only on the customer number."""
    rng = random.Random(HISTORY_SEED * 1_000_003 + customer)
    plans = ctx.catalog.plans
    plan_slug = rng.choices([p for p, _ in PLAN_WEIGHTS], weights=[w for _, w in PLAN_WEIGHTS])[0]
    wanted = rng.randint(1, 7)
    # More customers joined recently: the age of the first payment is skewed towards now.
    age = timedelta(days=HISTORY_DAYS * rng.random() ** 1.6, seconds=rng.randint(3600, 86400))
    start = ctx.now - age
    payer = to_checksum_address(bytes.fromhex(_hex32("payer", customer)[2:42]))
    network = "anvil-local"
    if plans[plan_slug].provider.slug == "evm-public":
        network = "base-sepolia" if rng.random() < 0.6 else "ethereum"
    attempts: list[_Attempt] = []
    t = start
    while len(attempts) < wanted and t < ctx.now - timedelta(hours=1):
        plan = plans[plan_slug]
        periods = 3 if plan.interval == Interval.MONTH and rng.random() < 0.08 else 1
        token = (plan.price_token.network.slug, plan.price_token.symbol)
        amount = plan.price_amount * periods
        if network != "anvil-local":
            token = (network, "USDC")
            if rng.random() < 0.25:
                token = (network, "ETH")
                usd = Decimal(plan.price_amount * periods) / USD
                amount = int(usd / _eth_usd(t, ctx.origin) * 10**6) * 10**12  # quoted to 6 decimals
        status = _draw_status(rng)
        attempts.append(
            _Attempt(
                index=0,
                customer=customer,
                plan=plan_slug,
                network=network,
                token=token,
                amount=amount,
                periods=periods,
                status=status,
                created=t,
                retry=status == TxStatus.CONFIRMED and rng.random() < RETRY_RATE,
                payer=payer,
            )
        )
        if rng.random() < UNMATCHED_RATE:
            # Someone sent a plain token transfer to the contract: no checkout, no user, kept for review.
            stable = (network, "USDC" if network != "anvil-local" else "dUSD")
            attempts.append(
                _Attempt(
                    index=0,
                    customer=customer,
                    plan=None,
                    network=network,
                    token=stable,
                    amount=rng.randint(1, 500) * USD // 10,
                    periods=1,
                    status=TxStatus.UNMATCHED,
                    created=t + timedelta(minutes=rng.randint(5, 600)),
                    payer=payer,
                )
            )
        if status in (TxStatus.CONFIRMED, TxStatus.NEEDS_REVIEW):
            if plan_slug in UPGRADES and rng.random() < 0.12:
                plan_slug = UPGRADES[plan_slug]
            t = t + plans[plan_slug].period * periods - timedelta(hours=rng.randint(0, 48))
        else:
            t = t + timedelta(hours=rng.randint(1, 72))  # tries again soon
    attempts = [a for a in attempts if a.created < ctx.now - timedelta(minutes=30)]
    # An open checkout is possible only as the latest attempt, and only a recent one.
    for a in attempts[:-1]:
        if a.status == TxStatus.PENDING:
            a.status = TxStatus.EXPIRED
        elif a.status == TxStatus.SUBMITTED:
            a.status = TxStatus.FAILED
    if attempts and attempts[-1].status in (TxStatus.PENDING, TxStatus.SUBMITTED):
        attempts[-1].created = ctx.now - timedelta(minutes=rng.randint(2, 25))
    return attempts


def _history_plan(total: int, ctx: _Ctx) -> list[_Attempt]:
    """Customers 1, 2, 3... each with their story, until `total` attempts; attempt i is always the same."""
    out: list[_Attempt] = []
    customer = 0
    while len(out) < total:
        customer += 1
        for attempt in _customer_story(customer, ctx):
            if len(out) == total:
                break
            attempt.index = len(out)
            out.append(attempt)
    return out


_History = list[tuple[str, str, str, str, datetime]]


def _build_rows(
    a: _Attempt, ctx: _Ctx, user_id: int | None
) -> tuple[PaymentTransaction, list[TransactionStatusChange]]:
    """The attempt's ledger row and its status history, as the services would have written them."""
    rng = random.Random(HISTORY_SEED * 7 + a.index)
    actor_user = f"user:{user_id}" if user_id else "chain"
    tx = _attempt_row(a, ctx, rng, user_id)
    history: _History = []
    if tx.plan is not None:
        tx.expires_at = a.created + timedelta(minutes=30)
        history.append(("", TxStatus.PENDING, actor_user, "checkout created", a.created))
    if a.status == TxStatus.UNMATCHED:
        _mine_attempt(a, ctx, tx, rng, a.created, with_log=True)
        history.append(("", TxStatus.UNMATCHED, "chain", "value reached the contract without a checkout", a.created))
    elif a.status == TxStatus.EXPIRED:
        history.append((TxStatus.PENDING, TxStatus.EXPIRED, "system:expiry", "checkout deadline passed", tx.expires_at))
    elif a.status != TxStatus.PENDING:
        history += _chain_history(a, ctx, tx, rng, actor_user)
    tx.updated_at = history[-1][4]
    rows = [
        TransactionStatusChange(from_status=f, to_status=t, actor=actor, reason=reason, created_at=at)
        for f, t, actor, reason, at in history
    ]
    return tx, rows


def _attempt_row(a: _Attempt, ctx: _Ctx, rng: random.Random, user_id: int | None) -> PaymentTransaction:
    """The row as the checkout created it (or, without a plan, as the follower recorded a plain transfer)."""
    cat = ctx.catalog
    network = cat.networks[a.network]
    token = cat.tokens[a.token]
    plan = cat.plans[a.plan] if a.plan else None
    provider = plan.provider if plan else cat.providers["evm-local" if a.network == "anvil-local" else "evm-public"]
    rate = _eth_usd(a.created, ctx.origin) if token.is_native else Decimal(1 + rng.uniform(-0.0005, 0.0005))
    rate = rate.quantize(Decimal("0.00000001"))
    return PaymentTransaction(
        public_id=uuid.UUID(int=rng.getrandbits(128), version=4),
        user_id=user_id if plan else None,
        product_id=plan.pk if plan else None,
        plan=plan,
        provider=provider,
        contract=cat.contracts[f"pass-{a.network}"],
        network=network,
        chain_id=network.chain_id,
        token=token,
        amount=a.amount,
        periods=a.periods,
        status=a.status,
        order_id=_hex32("order", a.index) if plan else None,
        payer_address=a.payer,
        usd_rate_at_checkout=rate if plan else None,
        checkout_payload={"demo_index": a.index, "demo_anchor": ctx.now.isoformat(), "source": "seed_demo"},
        created_at=a.created,
    )


def _mine_attempt(a: _Attempt, ctx: _Ctx, tx: PaymentTransaction, rng: random.Random, at: datetime, *, with_log: bool):
    since = ctx.now - timedelta(days=HISTORY_DAYS + 2)
    tx_hash = _hex32("tx", a.index, at.timestamp())
    _mine(tx, rng, ctx.catalog.networks[a.network], at, since=since, tx_hash=tx_hash, with_log=with_log)


def _chain_history(a: _Attempt, ctx: _Ctx, tx: PaymentTransaction, rng: random.Random, actor_user: str) -> _History:
    """From the reported hash on: a failed first try the wallet retried, then failed, still submitted, or
    confirmed (and then maybe refunded or flagged by a reorg)."""
    history: _History = []
    submitted = a.created + timedelta(seconds=rng.randint(20, 240))
    tx.submitted_at = submitted
    history.append((TxStatus.PENDING, TxStatus.SUBMITTED, actor_user, "transaction hash reported", submitted))
    if a.retry:
        failed_at = submitted + timedelta(seconds=rng.randint(5, 60))
        reason = rng.choice(FAILURE_REASONS)
        history.append((TxStatus.SUBMITTED, TxStatus.FAILED, "chain", reason, failed_at))
        submitted = failed_at + timedelta(seconds=rng.randint(30, 600))
        history.append((TxStatus.FAILED, TxStatus.SUBMITTED, actor_user, "wallet retried", submitted))
    if a.status == TxStatus.FAILED:
        tx.failure_reason = rng.choice(FAILURE_REASONS)
        failed_at = submitted + timedelta(seconds=rng.randint(5, 60))
        if "reverted" in tx.failure_reason or tx.failure_reason == "out of gas":
            _mine_attempt(a, ctx, tx, rng, failed_at, with_log=False)
        history.append((TxStatus.SUBMITTED, TxStatus.FAILED, "chain", tx.failure_reason, failed_at))
    elif a.status != TxStatus.SUBMITTED:
        history += _confirmed_history(a, ctx, tx, rng, submitted)
    return history


def _confirmed_history(
    a: _Attempt, ctx: _Ctx, tx: PaymentTransaction, rng: random.Random, submitted: datetime
) -> _History:
    network = ctx.catalog.networks[a.network]
    depth = network.confirmation_depth * network.block_time_seconds
    confirmed = submitted + timedelta(seconds=depth + rng.randint(1, 30))
    _mine_attempt(a, ctx, tx, rng, confirmed - timedelta(seconds=depth), with_log=True)
    tx.confirmed_at = confirmed
    tx.external_id = f"dlv-{tx.tx_hash[2:18]}"
    tx.usd_rate_at_confirmation = (
        _eth_usd(confirmed, ctx.origin).quantize(Decimal("0.00000001"))
        if tx.token.is_native
        else tx.usd_rate_at_checkout
    )
    history: _History = [
        (TxStatus.SUBMITTED, TxStatus.CONFIRMED, "chain", f"{network.confirmation_depth} confirmations", confirmed)
    ]
    if a.status == TxStatus.REFUNDED:
        refunded = min(confirmed + timedelta(hours=rng.randint(1, 240)), ctx.now - timedelta(minutes=1))
        refunded = max(refunded, confirmed + timedelta(seconds=1))
        tx.refunded_at = refunded
        tx.refund_tx_hash = _hex32("refund", a.index)
        tx.refund_status = RefundStatus.MINED
        reason = rng.choice(REFUND_REASONS)
        history.append((TxStatus.CONFIRMED, TxStatus.REFUNDED, ctx.admin_actor, reason, refunded))
    elif a.status == TxStatus.NEEDS_REVIEW:
        flagged = confirmed + timedelta(minutes=rng.randint(1, 30))
        tx.failure_reason = "log removed by a reorg deeper than the confirmation depth"
        history.append((TxStatus.CONFIRMED, TxStatus.NEEDS_REVIEW, "system:reorg-check", tx.failure_reason, flagged))
    return history


@contextmanager
def _explicit_timestamps(*model_classes) -> Iterator[None]:
    """bulk_create would stamp auto_now(_add) fields with the current time; history needs its own."""
    saved = []
    for model in model_classes:
        for f in model._meta.concrete_fields:
            if isinstance(f, models.DateTimeField) and (f.auto_now or f.auto_now_add):
                saved.append((f, f.auto_now, f.auto_now_add))
                f.auto_now = f.auto_now_add = False
    try:
        yield
    finally:
        for f, auto_now, auto_now_add in saved:
            f.auto_now, f.auto_now_add = auto_now, auto_now_add


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="tx", mininterval=0.5)


def demo_history_seed(*, transactions: int, report: SeedReport, progress: bool = False, batch_size: int = 5000) -> None:
    """A year of payment attempts by about transactions/3 customers, with status history and subscriptions."""
    if transactions <= 0:
        return
    now = _history_anchor()
    catalog = _catalog_for_history()
    admin = get_user_model().objects.filter(username="admin").first()
    ctx = _Ctx(
        catalog=catalog,
        now=now,
        origin=now - timedelta(days=HISTORY_DAYS),
        admin_actor=f"user:{admin.pk}" if admin else "system:seed",
    )
    attempts = _history_plan(transactions, ctx)

    user_ids = _ensure_customers(attempts, report)
    # Each customer's payer address is one of its verified wallets, as checkout requires.
    chain_ids = {slug: n.chain_id for slug, n in ctx.catalog.networks.items()}
    links = {(user_ids[a.customer], a.payer, chain_ids.get(a.network, 31337)) for a in attempts if a.payer}
    report.add("wallets", wallets_link_verified_bulk(links=sorted(links)))

    existing = set(
        PaymentTransaction.objects.filter(checkout_payload__has_key="demo_index").values_list(
            "checkout_payload__demo_index", flat=True
        )
    )
    todo = [a for a in attempts if a.index not in existing]
    report.skipped_history += len(attempts) - len(todo)

    with (
        _explicit_timestamps(PaymentTransaction, TransactionStatusChange),
        _progress(len(todo), progress, "transactions") as bar,
    ):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            with transaction.atomic():
                built = [_build_rows(a, ctx, user_ids[a.customer]) for a in batch]
                txs = PaymentTransaction.objects.bulk_create([tx for tx, _ in built], batch_size=batch_size)
                changes = []
                for tx, (_, rows) in zip(txs, built, strict=True):
                    for row in rows:
                        row.transaction_id = tx.pk
                        changes.append(row)
                TransactionStatusChange.objects.bulk_create(changes, batch_size=batch_size)
            report.add("transactions", len(txs))
            report.add("status_changes", len(changes))
            bar.update(len(batch))

    _ensure_subscriptions(list(user_ids.values()), now, report, batch_size)


def _history_anchor() -> datetime:
    """The 'now' of the first history run. Reusing it keeps attempt i the same attempt on every re-run (the
    stories are cut at 'now'), so a later run skips exactly what exists and invents no extra customers."""
    stored = (
        PaymentTransaction.objects.filter(checkout_payload__has_key="demo_anchor")
        .values_list("checkout_payload__demo_anchor", flat=True)
        .first()
    )
    return datetime.fromisoformat(stored) if stored else timezone.now().replace(microsecond=0)


def _catalog_for_history() -> DemoCatalog:
    """The seeded catalog, re-read so plans carry their provider, token and network without extra queries."""
    networks = {n.slug: n for n in Network.objects.filter(slug__in=[s["slug"] for s in NETWORKS])}
    tokens = {(t.network.slug, t.symbol): t for t in Token.objects.select_related("network")}
    contracts = {c.slug: c for c in PaymentContract.objects.filter(slug__startswith="pass-")}
    providers = {p.slug: p for p in PaymentProvider.objects.filter(slug__in=[s["slug"] for s in PROVIDERS])}
    plans = {
        p.slug: p
        for p in Plan.objects.filter(slug__in=[s["slug"] for s in PLANS]).select_related(
            "provider", "price_token__network", "contract"
        )
    }
    return DemoCatalog(networks=networks, tokens=tokens, contracts=contracts, providers=providers, plans=plans)


def _ensure_customers(attempts: list[_Attempt], report: SeedReport) -> dict[int, int]:
    first_seen: dict[int, datetime] = {}
    for a in attempts:
        first_seen.setdefault(a.customer, a.created)
    return customer_users(first_seen, prefix=CUSTOMER_PREFIX, report=report)


def customer_users(first_seen: dict[int, datetime], *, prefix: str, report: SeedReport) -> dict[int, int]:
    """A user per demo customer number (named prefix + number, joined just before `first_seen`), created in
    bulk where missing. -> customer number -> user id."""
    user_model = get_user_model()
    names = {c: f"{prefix}{c:05d}" for c in first_seen}
    have = dict(user_model.objects.filter(username__in=list(names.values())).values_list("username", "pk"))
    missing = [
        user_model(
            username=name,
            email=f"{name}@demo.test",
            password="!seed-demo",  # unusable: demo customers never log in
            date_joined=first_seen[c] - timedelta(minutes=10),
        )
        for c, name in names.items()
        if name not in have
    ]
    for user in user_model.objects.bulk_create(missing, batch_size=5000):
        have[user.username] = user.pk
    report.add("users", len(missing))
    return {c: have[name] for c, name in names.items()}


def _ensure_subscriptions(user_ids: list[int], now: datetime, report: SeedReport, batch_size: int) -> None:
    """One subscription for each demo customer whose latest payment attempt is confirmed."""
    with_sub = set(Subscription.objects.filter(user_id__in=user_ids).values_list("user_id", flat=True))
    latest = (
        PaymentTransaction.objects.filter(user_id__in=user_ids, plan__isnull=False)
        .order_by("user_id", "-created_at", "-id")
        .distinct("user_id")
        .values_list("user_id", "pk", "status", "plan_id", "periods", "confirmed_at")
    )
    plans = {p.pk: p for p in Plan.objects.all()}
    subs = []
    for user_id, tx_id, status, plan_id, periods, confirmed_at in latest:
        if status != TxStatus.CONFIRMED or user_id in with_sub:
            continue
        plan = plans[plan_id]
        end = confirmed_at + plan.period * periods
        sub = Subscription(
            user_id=user_id,
            plan=plan,
            current_period_start=confirmed_at,
            current_period_end=end,
            last_transaction_id=tx_id,
            created_at=confirmed_at,
            updated_at=min(end, now),
            status=SubscriptionStatus.ACTIVE,
        )
        if end <= now:
            grace_end = end + timedelta(days=plan.grace_period_days)
            if grace_end > now:
                sub.status, sub.grace_until = SubscriptionStatus.PAST_DUE, grace_end
            else:
                sub.status, sub.ended_at, sub.updated_at = SubscriptionStatus.EXPIRED, grace_end, grace_end
        subs.append(sub)
    with _explicit_timestamps(Subscription):
        Subscription.objects.bulk_create(subs, batch_size=batch_size)
    # The paid period each subscription is derived from (docs/subscriptions.md).
    SubscriptionPeriod.objects.bulk_create(
        [
            SubscriptionPeriod(
                subscription=sub,
                plan=sub.plan,
                starts_at=sub.current_period_start,
                ends_at=sub.current_period_end,
                transaction_id=sub.last_transaction_id,
                kind=PeriodKind.PAYMENT,
            )
            for sub in subs
        ],
        batch_size=batch_size,
    )
    report.add("subscriptions", len(subs))
