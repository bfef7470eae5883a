"""Shared fixtures: roles, users with API tokens, and a real anvil chain per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token as ApiToken
from rest_framework.test import APIClient

from billing.roles import BILLING_ADMIN, SUPPORT, sync_role_permissions
from tests.anvil import Anvil

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def roles(db):
    """Groups exist after migrate; transactional tests flush them, so make sure they are back."""
    sync_role_permissions()
    return {name: Group.objects.get(name=name) for name in (BILLING_ADMIN, SUPPORT)}


def _user(django_user_model, username: str, group: Group | None = None, **extra):
    user = django_user_model.objects.create_user(username=username, password="pw-" + username, **extra)
    if group is not None:
        user.groups.add(group)
    return user


@pytest.fixture
def billing_admin_user(django_user_model, roles):
    return _user(django_user_model, "ops-admin", roles[BILLING_ADMIN], is_staff=True)


@pytest.fixture
def support_user(django_user_model, roles):
    return _user(django_user_model, "ops-support", roles[SUPPORT], is_staff=True)


@pytest.fixture
def plain_user(django_user_model):
    return _user(django_user_model, "customer")


def link_wallet(user, address: str, *, chain_id: int = 31337, move: bool = False):
    """What a SIWE verification (/v1/profile/wallets/siwe/verify) leaves behind: `address` becomes one of
    `user`'s verified wallets (the primary one if the user has none yet). Checkout refuses payer addresses
    that are not (BILLING_REQUIRE_VERIFIED_PAYER, on in tests as in production), so a test that pays from an
    address links it first. Idempotent; an address linked to another user is refused, as SIWE would, unless
    `move` (a test where several users take turns paying from the same funded key: as if the previous owner
    had unlinked it)."""
    from django.utils import timezone
    from eth_utils import to_checksum_address

    from profiles.models import Wallet

    address = to_checksum_address(address)
    wallet = Wallet.objects.filter(address=address).first()
    if wallet is not None and wallet.user_id != user.pk and move:
        wallet.delete()
        wallet = None
    if wallet is not None:
        assert wallet.user_id == user.pk, f"{address} is linked to another user (wallet_taken)"
        return wallet
    has_primary = Wallet.objects.filter(user=user, is_primary=True).exists()
    return Wallet.objects.create(
        user=user, address=address, chain_id=chain_id, is_primary=not has_primary, verified_at=timezone.now()
    )


def token_client(user) -> APIClient:
    client = APIClient()
    if user is not None:
        key, _ = ApiToken.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {key.key}")
    return client


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def admin_api(billing_admin_user):
    return token_client(billing_admin_user)


@pytest.fixture
def support_api(support_user):
    return token_client(support_user)


@pytest.fixture
def user_api(plain_user):
    return token_client(plain_user)


@pytest.fixture(scope="session")
def anvil():
    """A real anvil on a free port for the whole test session (chain id 31337)."""
    node = Anvil().start()
    yield node
    node.stop()


def pytest_configure(config):
    # Celery messages are only triggers; tests call services directly, so no message needs a broker.
    from django.conf import settings

    from billing_project.celery import app

    app.conf.broker_url = "memory://"
    # PBKDF2 at Django's 1,000,000 iterations costs about a second of CPU per user on this machine, and most
    # tests create two or three users: the suite hashes test passwords with a cheap hasher instead. Processes
    # the tests start (gunicorn, Celery, the embedded stack) keep the real settings.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    # WhiteNoise serves from the finders here (WHITENOISE_USE_FINDERS) and warns when STATIC_ROOT, which
    # collectstatic fills for `make run`, does not exist yet: give it the (git-ignored) folder.
    from django.conf import settings

    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _fresh_throttle_cache():
    """DRF throttles count in the cache: each test starts with a clean count, whatever ran before it."""
    from django.core.cache import cache

    from billing.services.checkout import checkout_caches_forget
    from billing.services.webhooks import webhook_contracts_forget

    cache.clear()
    webhook_contracts_forget()  # per-process contract cache of the webhook request: rows differ per test
    checkout_caches_forget()  # per-process plan and health caches of checkout: same
    yield
