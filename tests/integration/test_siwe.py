"""Wallet linking by SIWE: real EIP-4361 messages (siwe.SiweMessage) signed with eth_account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from eth_account import Account
from eth_account.messages import encode_defunct
from siwe import SiweMessage

from profiles.models import SiweNonce, Wallet
from tests.anvil import ANVIL_KEYS
from tests.conftest import token_client

pytestmark = pytest.mark.django_db


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def build_message(address: str, nonce: str, **overrides) -> str:
    now = datetime.now(UTC)
    fields = {
        "domain": settings.SIWE_DOMAIN,
        "address": address,
        "statement": "Link this wallet to my billing account.",
        "uri": settings.SIWE_URI + "/wallets",
        "version": "1",
        "chain_id": settings.SIWE_ALLOWED_CHAIN_IDS[0],
        "nonce": nonce,
        "issued_at": _iso(now),
        "expiration_time": _iso(now + timedelta(minutes=5)),
    }
    fields.update(overrides)
    return SiweMessage(**fields).prepare_message()


def sign(message: str, key: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=message), private_key=key).signature.hex().removeprefix("0x")


def fresh_nonce(client) -> str:
    response = client.post("/v1/profile/wallets/siwe/nonce")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["domain"] == settings.SIWE_DOMAIN and body["chain_ids"] == settings.SIWE_ALLOWED_CHAIN_IDS
    return body["nonce"]


KEY = ANVIL_KEYS[3]
ADDRESS = Account.from_key(KEY).address


def verify(client, message: str, signature: str):
    return client.post("/v1/profile/wallets/siwe/verify", {"message": message, "signature": signature}, format="json")


def test_good_message_links_wallet_and_shows_in_settings(user_api, plain_user):
    message = build_message(ADDRESS, fresh_nonce(user_api))
    response = verify(user_api, message, sign(message, KEY))
    assert response.status_code == 200, response.json()
    assert response.json()["address"] == ADDRESS and response.json()["is_primary"] is True
    assert Wallet.objects.get(address=ADDRESS).user == plain_user
    assert SiweNonce.objects.get(user=plain_user).used_at is not None
    assert [w["address"] for w in user_api.get("/v1/profile/wallets").json()] == [ADDRESS]
    settings_bundle = user_api.get("/v1/billing/me/settings").json()
    assert settings_bundle["wallet"]["address"] == ADDRESS


def _refused(response, code: str, status: int = 400):
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code, response.json()
    assert response.json()["error"]["message"]


def test_reused_nonce_is_refused(user_api):
    message = build_message(ADDRESS, fresh_nonce(user_api))
    signature = sign(message, KEY)
    assert verify(user_api, message, signature).status_code == 200
    _refused(verify(user_api, message, signature), "siwe_nonce_used")


def test_other_domain_is_refused(user_api):
    message = build_message(ADDRESS, fresh_nonce(user_api), domain="evil.example")
    _refused(verify(user_api, message, sign(message, KEY)), "siwe_domain_mismatch")


def test_other_uri_is_refused(user_api):
    message = build_message(ADDRESS, fresh_nonce(user_api), uri="https://evil.example/login")
    _refused(verify(user_api, message, sign(message, KEY)), "siwe_uri_mismatch")


def test_expired_message_is_refused(user_api):
    past = datetime.now(UTC) - timedelta(minutes=10)
    message = build_message(
        ADDRESS, fresh_nonce(user_api), issued_at=_iso(past), expiration_time=_iso(past + timedelta(minutes=1))
    )
    _refused(verify(user_api, message, sign(message, KEY)), "siwe_expired")


def test_issued_in_the_future_is_refused(user_api):
    future = datetime.now(UTC) + timedelta(hours=1)
    message = build_message(
        ADDRESS, fresh_nonce(user_api), issued_at=_iso(future), expiration_time=_iso(future + timedelta(hours=1))
    )
    _refused(verify(user_api, message, sign(message, KEY)), "siwe_issued_in_future")


def test_other_chain_id_is_refused(user_api):
    message = build_message(ADDRESS, fresh_nonce(user_api), chain_id=1)
    _refused(verify(user_api, message, sign(message, KEY)), "siwe_chain_not_allowed")


def test_bad_signature_is_refused(user_api):
    message = build_message(ADDRESS, fresh_nonce(user_api))
    _refused(verify(user_api, message, sign(message, ANVIL_KEYS[4])), "siwe_bad_signature")
    assert not Wallet.objects.exists()


def test_expired_or_foreign_nonce_is_refused(user_api, support_api):
    nonce = fresh_nonce(user_api)
    message = build_message(ADDRESS, nonce)
    _refused(verify(support_api, message, sign(message, KEY)), "siwe_nonce_unknown")
    SiweNonce.objects.filter(nonce=nonce).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    _refused(verify(user_api, message, sign(message, KEY)), "siwe_nonce_expired")


def test_wallet_belongs_to_one_user(user_api, django_user_model):
    other = django_user_model.objects.create_user(username="someone-else", password="x" * 12)
    Wallet.objects.create(user=other, address=ADDRESS, chain_id=31337, verified_at=datetime.now(UTC))
    message = build_message(ADDRESS, fresh_nonce(user_api))
    _refused(verify(user_api, message, sign(message, KEY)), "wallet_taken", status=409)


def test_malformed_message_and_anonymous(api_client, user_api):
    _refused(verify(user_api, "hello", "0x" + "11" * 65), "siwe_malformed")
    assert api_client.post("/v1/profile/wallets/siwe/nonce").status_code == 401
    assert token_client(None).get("/v1/profile/wallets").status_code == 401
