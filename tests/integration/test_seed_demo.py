"""`seed_demo` on PostgreSQL: idempotent across every table, demo logins that work, a catalog that passes
the model's own validation, and a history whose every row respects the ledger's rules."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from eth_utils import is_checksum_address
from rest_framework.authtoken.models import Token as ApiToken

from billing.chain import artifacts
from billing.demo import seed as demo
from billing.demo.seed import DEMO_WALLET
from billing.fields import UINT256_MAX
from billing.models import (
    ChainEvent,
    CryptoConfig,
    Network,
    OperatorTransaction,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    Plan,
    RpcEndpoint,
    Subscription,
    SubscriptionStatus,
    Token,
    TransactionStatusChange,
    TxStatus,
    can_transition,
)
from billing.roles import BILLING_ADMIN, SUPPORT
from profiles.selectors import wallet_is_verified_for_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_hasher(settings):
    # PBKDF2 at full strength costs ~1 s per demo user; the test is about which password, not the hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def seed(*args) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def table_counts() -> dict[str, int]:
    """Every table Django knows about, including m2m tables and auditlog's entries."""
    return {
        model._meta.db_table: model._base_manager.count()
        for model in apps.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    }


def test_seed_twice_creates_nothing_new_anywhere():
    before = table_counts()
    first = seed()
    after_first = table_counts()
    second = seed()
    after_second = table_counts()

    grown = {t for t in after_first if after_first[t] > before[t]}
    for table in (
        "auth_user",
        "authtoken_token",
        "billing_network",
        "billing_rpcendpoint",
        "billing_token",
        "billing_cryptoconfig",
        "billing_networkfallback",
        "billing_paymentcontract",
        "billing_paymentprovider",
        "billing_paymentprovider_networks",
        "billing_paymentprovider_supported_tokens",
        "billing_plan",
    ):
        assert table in grown, f"the first seed created nothing in {table}"
    assert after_second == after_first
    assert "created nothing new" in second
    assert "created nothing new" not in first


def test_demo_users_have_roles_tokens_and_working_passwords():
    seed()
    user_model = get_user_model()
    expected = {
        "admin": ("admin-demo", True, {BILLING_ADMIN}),
        "support": ("support-demo", True, {SUPPORT}),
        "demo": ("demo-demo", False, set()),
    }
    for username, (password, staff, groups) in expected.items():
        user = user_model.objects.get(username=username)
        assert user.is_staff is staff
        assert user.is_superuser is False
        assert set(user.groups.values_list("name", flat=True)) == groups
        assert authenticate(username=username, password=password) == user
        assert authenticate(username=username, password=password + "x") is None
        assert ApiToken.objects.filter(user=user).count() == 1
    # The demo customer pays from a SIWE-verified wallet (checkout refuses others).
    assert wallet_is_verified_for_user(user=user_model.objects.get(username="demo"), address=DEMO_WALLET)
    # The roles come with their permissions, from billing.roles.
    admin = user_model.objects.get(username="admin")
    support = user_model.objects.get(username="support")
    assert admin.has_perm("billing.change_plan")
    assert support.has_perm("billing.view_plan")
    assert not support.has_perm("billing.change_plan")


def test_reseed_keeps_tokens_and_does_not_reset_changed_passwords():
    seed()
    demo_user = get_user_model().objects.get(username="demo")
    key = ApiToken.objects.get(user=demo_user).key
    demo_user.set_password("changed-by-user")
    demo_user.save()

    seed()
    assert ApiToken.objects.get(user=demo_user).key == key
    assert authenticate(username="demo", password="changed-by-user") == demo_user


def test_catalog(settings):
    settings.BILLING_LOCAL_CHAIN_RPC = "http://127.0.0.1:18545"
    seed()

    nets = {n.slug: n for n in Network.objects.all()}
    assert {s: (n.chain_id, n.is_testnet, n.confirmation_depth) for s, n in nets.items()} == {
        "anvil-local": (31337, False, 2),  # the local chain plays production in the demo
        "base-sepolia": (84532, True, 5),
        "ethereum": (1, False, 12),
    }
    assert nets["anvil-local"].block_time_seconds == 1
    assert nets["base-sepolia"].tx_url("0xab") == "https://sepolia.basescan.org/tx/0xab"
    assert nets["ethereum"].tx_url("0xab") == "https://etherscan.io/tx/0xab"
    assert RpcEndpoint.objects.get(network=nets["anvil-local"]).url == "http://127.0.0.1:18545"
    for slug in ("base-sepolia", "ethereum"):
        assert RpcEndpoint.objects.get(network=nets[slug]).url.startswith("https://")
    assert [n.slug for n in CryptoConfig.load().fallback_order()] == ["anvil-local", "base-sepolia"]

    tokens = {(t.network.slug, t.symbol): t for t in Token.objects.select_related("network")}
    assert set(tokens) == {
        ("anvil-local", "ETH"),
        ("anvil-local", "dUSD"),
        ("base-sepolia", "ETH"),
        ("base-sepolia", "USDC"),
        ("ethereum", "ETH"),
        ("ethereum", "USDC"),
    }
    for (_, symbol), token in tokens.items():
        if symbol == "ETH":
            assert token.is_native and token.decimals == 18
        else:
            assert is_checksum_address(token.address) and token.decimals == 6
        token.full_clean()

    contracts = {c.slug: c for c in PaymentContract.objects.select_related("network")}
    assert set(contracts) == {"pass-anvil-local", "pass-base-sepolia", "pass-ethereum"}
    secrets_seen = set()
    for slug, contract in contracts.items():
        contract.full_clean()
        assert contract.network.slug == slug.removeprefix("pass-")
        assert (contract.mint_method, contract.burn_method, contract.withdraw_method) == ("pay", "refund", "withdraw")
        assert len(contract.webhook_secret) >= 32
        secrets_seen.add(contract.webhook_secret)
        assert [i["type"] for i in contract.abi_function("withdraw")["inputs"]] == ["address", "address", "uint256"]
    assert len(secrets_seen) == 3

    providers = {p.slug: p for p in PaymentProvider.objects.all()}
    assert set(providers) == {"evm-local", "evm-public"}
    assert {n.slug for n in providers["evm-local"].networks.all()} == {"anvil-local"}
    assert {n.slug for n in providers["evm-public"].networks.all()} == {"base-sepolia", "ethereum"}
    assert providers["evm-local"].contract.slug == "pass-anvil-local"
    assert providers["evm-local"].default_network.slug == "anvil-local"
    for provider in providers.values():
        assert provider.config == provider.build_config()
        assert provider.config["networks"]

    plans = {p.slug: p for p in Plan.objects.select_related("price_token__network")}
    assert {"starter", "pro", "business", "pro-yearly"} <= set(plans)
    assert plans["starter"].price_amount == 5_000_000
    assert plans["pro"].price_amount == 15_000_000
    assert plans["business"].price_amount == 49_000_000
    assert plans["pro-yearly"].interval == "year"
    for slug in ("starter", "pro", "business", "pro-yearly"):
        assert (plans[slug].price_token.symbol, plans[slug].price_token.network.slug) == ("dUSD", "anvil-local")
        assert set(plans[slug].limits) == {"api_calls", "seats", "projects"}
        assert plans[slug].features
    assert [plans[s].tier for s in ("starter", "pro", "business")] == [1, 2, 3]
    assert any(p.price_token.is_native and p.is_active for p in plans.values())
    variants = {p.variant: p.slug for p in plans.values() if p.experiment == "pricing-2026q4"}
    assert set(variants) == {"a", "b"}
    for plan in plans.values():
        plan.full_clean()


def test_reseed_keeps_what_deploy_contracts_wrote():
    seed()
    contract = PaymentContract.objects.get(slug="pass-anvil-local")
    secret = contract.webhook_secret
    deployed = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    PaymentContract.objects.filter(pk=contract.pk).update(address=deployed, abi=demo.MINIMAL_PASS_ABI[:2])
    dusd = Token.objects.get(symbol="dUSD")
    Token.objects.filter(pk=dusd.pk).update(address="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512")

    seed()
    contract.refresh_from_db()
    assert contract.address == deployed
    assert contract.abi == demo.MINIMAL_PASS_ABI[:2]
    assert contract.webhook_secret == secret
    assert Token.objects.get(pk=dusd.pk).address == "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def test_abi_comes_from_the_build_file_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "BUILD_DIR", tmp_path)  # no SubscriptionPass.json there yet
    assert demo.load_pass_abi() == demo.MINIMAL_PASS_ABI

    built = [*demo.MINIMAL_PASS_ABI, {"type": "function", "name": "extra", "inputs": [], "outputs": []}]
    build = tmp_path / "SubscriptionPass.json"
    build.write_text(json.dumps({"abi": built, "bytecode": "0x00"}))
    seed()
    assert PaymentContract.objects.get(slug="pass-anvil-local").has_method("extra")


def _demo_rows():
    return PaymentTransaction.objects.filter(checkout_payload__has_key="demo_index")


def test_history_respects_the_ledger_rules_and_is_idempotent():
    seed("--transactions", "300")
    counts = table_counts()
    now = timezone.now()

    txs = list(_demo_rows().select_related("network", "token", "plan").prefetch_related("status_history"))
    assert len(txs) == 300
    # every customer's payer is one of its verified wallets, as checkout requires (unmatched rows have no user)
    paid_by_customers = [t for t in txs if t.user_id and t.payer_address]
    assert paid_by_customers and all(
        wallet_is_verified_for_user(user=t.user, address=t.payer_address) for t in paid_by_customers
    )
    assert sorted(t.checkout_payload["demo_index"] for t in txs) == list(range(300))

    statuses = Counter(t.status for t in txs)
    assert statuses[TxStatus.CONFIRMED] > 150
    assert {"failed", "expired", "refunded", "pending", "needs_review", "unmatched"} <= set(statuses)

    customers = {t.user_id for t in txs if t.user_id}
    assert 60 <= len(customers) <= 150  # about N/3
    assert get_user_model().objects.filter(username__startswith="customer-").count() == len(customers)
    assert {t.network.slug for t in txs} == {"anvil-local", "base-sepolia", "ethereum"}
    assert len({t.token_id for t in txs}) >= 4
    assert len({t.plan_id for t in txs}) >= 5
    # A year of history, nothing in the future.
    oldest, newest = min(t.created_at for t in txs), max(t.created_at for t in txs)
    assert oldest >= now - timedelta(days=366)
    assert oldest <= now - timedelta(days=240)
    assert newest <= now

    for tx in txs:
        assert type(tx.amount) is int and 0 < tx.amount <= UINT256_MAX
        assert tx.chain_id == tx.network.chain_id
        assert tx.token.network_id == tx.network_id
        history = list(tx.status_history.all())
        assert history, f"tx {tx.pk} has no status history"
        assert history[0].from_status == ""
        assert history[-1].to_status == tx.status
        for prev, row in zip(history, history[1:], strict=False):
            assert row.from_status == prev.to_status
            assert can_transition(row.from_status, row.to_status), (row.from_status, row.to_status)
            assert row.created_at >= prev.created_at
        assert history[0].created_at == tx.created_at
        if tx.status == TxStatus.UNMATCHED:
            assert tx.user_id is None and tx.plan_id is None and tx.order_id is None and tx.tx_hash
        else:
            assert tx.plan_id and tx.user_id and tx.order_id and tx.expires_at
        if tx.status in (TxStatus.CONFIRMED, TxStatus.REFUNDED, TxStatus.NEEDS_REVIEW):
            assert tx.tx_hash and tx.block_number and tx.log_index is not None and tx.confirmed_at
            assert tx.gas_used and tx.effective_gas_price
            assert tx.fee == tx.gas_used * tx.effective_gas_price
            assert tx.usd_rate_at_checkout and tx.usd_rate_at_confirmation
            assert tx.submitted_at < tx.confirmed_at <= now
        if tx.status == TxStatus.REFUNDED:
            assert tx.confirmed_at < tx.refunded_at <= now
        if tx.status == TxStatus.FAILED:
            assert tx.failure_reason
        if tx.status in (TxStatus.PENDING, TxStatus.SUBMITTED):
            assert tx.expires_at > tx.created_at >= now - timedelta(minutes=30)
    # The model's own validation agrees with every kind of generated row.
    for tx in {t.status: t for t in txs}.values():
        tx.full_clean()

    # Subscriptions: exactly the customers whose latest attempt is a confirmed payment.
    latest: dict[int, PaymentTransaction] = {}
    for tx in sorted((t for t in txs if t.user_id), key=lambda t: (t.created_at, t.pk)):
        latest[tx.user_id] = tx
    expected = {uid for uid, tx in latest.items() if tx.status == TxStatus.CONFIRMED}
    subs = list(Subscription.objects.filter(user_id__in=customers).select_related("plan"))
    assert {s.user_id for s in subs} == expected
    for sub in subs:
        assert sub.last_transaction_id == latest[sub.user_id].pk
        assert sub.plan_id == latest[sub.user_id].plan_id
        assert (sub.status == SubscriptionStatus.ACTIVE) == (sub.current_period_end > now)
    assert {s.status for s in subs} >= {SubscriptionStatus.ACTIVE, SubscriptionStatus.EXPIRED}

    out = seed("--transactions", "300")
    assert table_counts() == counts
    assert "300 history rows already present" in out


def test_history_grows_by_index_and_keeps_what_exists():
    seed("--transactions", "120")
    first = dict(_demo_rows().values_list("checkout_payload__demo_index", "pk"))
    history_before = TransactionStatusChange.objects.count()

    seed("--transactions", "200")
    after = dict(_demo_rows().values_list("checkout_payload__demo_index", "pk"))
    assert sorted(after) == list(range(200))
    assert {i: after[i] for i in first} == first
    assert TransactionStatusChange.objects.count() > history_before
    assert Subscription.objects.filter(status__in=["active", "past_due"]).values("user").distinct().count() == (
        Subscription.objects.filter(status__in=["active", "past_due"]).count()
    )


def test_history_days_builds_a_consistent_business_once():
    """`--history 60`: customers over time, every kind of payment outcome and subscription story, two
    experiments, several networks and tokens, payouts; every row follows the ledger's rules; a re-run adds
    nothing."""
    out = seed("--history", "60")
    counts = table_counts()
    now = timezone.now()
    txs = list(
        PaymentTransaction.objects.filter(checkout_payload__has_key="demo_history")
        .select_related("network", "token", "plan")
        .prefetch_related("status_history")
    )
    assert len(txs) > 200, out
    customers = [t for t in txs if t.user_id]
    assert customers and all(wallet_is_verified_for_user(user=t.user, address=t.payer_address) for t in customers)
    statuses = Counter(t.status for t in txs)
    assert {"confirmed", "failed", "expired", "refunded", "needs_review", "unmatched"} <= set(statuses), statuses
    assert {t.network.slug for t in txs} == {"anvil-local", "base-sepolia", "ethereum"}
    assert {t.token.symbol for t in txs} >= {"dUSD", "ETH", "USDC"}
    assert min(t.created_at for t in txs) >= now - timedelta(days=60, minutes=1)
    assert max(t.created_at for t in txs) <= now
    for tx in txs:
        history = list(tx.status_history.all())
        assert history and history[-1].to_status == tx.status
        for prev, row in zip(history, history[1:], strict=False):
            assert can_transition(row.from_status, row.to_status), (row.from_status, row.to_status)
            assert row.created_at >= prev.created_at
        if tx.status in ("confirmed", "refunded", "needs_review"):
            assert tx.tx_hash and tx.confirmed_at and tx.fee == tx.gas_used * tx.effective_gas_price
            assert tx.submitted_at < tx.confirmed_at <= now
            assert tx.usd_rate_at_confirmation
        if tx.status == "refunded":
            assert tx.confirmed_at < tx.refunded_at <= now
    for tx in {t.status: t for t in txs}.values():
        tx.full_clean()

    subs = list(
        Subscription.objects.filter(user__username__startswith="client-").select_related("plan", "last_transaction")
    )
    by_status = Counter(s.status for s in subs)
    assert {"active", "canceled", "expired"} <= set(by_status), by_status
    assert all(s.current_period_end > s.current_period_start for s in subs)
    assert all(s.last_transaction.user_id == s.user_id for s in subs)
    # Stories: an upgrade changed the plan inside a subscription; a downgrade is queued or took effect.
    first_plan = {}
    for tx in sorted((t for t in txs if t.status == "confirmed" and t.user_id), key=lambda t: t.confirmed_at):
        first_plan.setdefault(tx.user_id, tx.plan.slug)
    assert any(first_plan.get(s.user_id) not in (None, s.plan.slug) for s in subs), "no plan change"
    assert any(s.ended_at and s.debt_amount > 0 for s in subs), "no lapsed renewal"
    experiments = {(p.experiment, p.variant) for p in Plan.objects.exclude(experiment="")}
    assert {e for e, _ in experiments} == {"pricing-2026q4", "yearly-2026"}
    assert {t.plan.experiment for t in txs if t.plan and t.plan.experiment} == {"pricing-2026q4", "yearly-2026"}
    assert OperatorTransaction.objects.filter(kind="refund", fee__gt=0).exists()
    assert ChainEvent.objects.filter(name="Withdrawn", amount__gt=0).exists()

    again = seed("--history", "60")
    assert "history already present" in again
    assert table_counts() == counts


def test_history_refuses_a_silly_number_of_days():
    with pytest.raises(CommandError):
        seed("--history", "-1")
