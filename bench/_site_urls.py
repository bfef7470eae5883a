"""The project's URLs plus the bare baselines the hot-path benches compare with, served by the same gunicorn and
Django middleware stack:

- POST /bench/bare/webhook/<slug>: check the HMAC of api.md's signature header, parse the JSON, one
  `INSERT ... ON CONFLICT DO NOTHING` of (id, body); 202 new, 200 repeated.
- POST /bench/bare/checkout: look the API token up (one SELECT), parse the JSON, sign the same EIP-712 Quote
  digest with coincurve, one INSERT of (user, order id, signature); 201 with the signature.
"""

from __future__ import annotations

import json
import secrets

import coincurve
from _hotpath import CONTRACT_ADDRESS, SIGNER_KEY, WEBHOOK_SECRET  # bench/ is on the path
from django.db import connection
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from eth_utils import keccak

from billing import signing
from billing_project.urls import urlpatterns as project_urlpatterns

_KEY = coincurve.PrivateKey(bytes.fromhex(SIGNER_KEY[2:]))
_TYPEHASH = keccak(
    text="Quote(bytes32 orderId,address payer,uint256 planId,address token,uint256 amount,uint64 periods,"
    "uint64 deadline)"
)
_DOMAIN = keccak(
    keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    + keccak(text="SubscriptionPass")
    + keccak(text="1")
    + (31337).to_bytes(32, "big")
    + bytes(12)
    + bytes.fromhex(CONTRACT_ADDRESS[2:])
)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


@csrf_exempt
def bare_webhook(request, slug: str):
    raw = request.body
    ok, reason, _ = signing.check(raw, request.headers.get("X-Billing-Signature", ""), [WEBHOOK_SECRET])
    if not ok:
        return JsonResponse({"error": reason}, status=401)
    body = json.loads(raw)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_bare_delivery (id, body) VALUES (%s, %s::jsonb) ON CONFLICT DO NOTHING RETURNING 1",
            [f"{slug}:{body['id']}", raw.decode()],
        )
        inserted = cursor.fetchone() is not None
    return JsonResponse({"status": "accepted" if inserted else "duplicate"}, status=202 if inserted else 200)


@csrf_exempt
def bare_checkout(request):
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    with connection.cursor() as cursor:
        cursor.execute("SELECT user_id FROM authtoken_token WHERE key = %s", [key])
        found = cursor.fetchone()
        if scheme != "Token" or found is None:
            return JsonResponse({"error": "unauthenticated"}, status=401)
        body = json.loads(request.body)
        order_id = secrets.token_bytes(32)
        payer = bytes(12) + bytes.fromhex(body["wallet"][2:])
        struct = keccak(
            _TYPEHASH + order_id + payer + _word(1) + bytes(32) + _word(15 * 10**6) + _word(1) + _word(2_000_000_000)
        )
        signature = _KEY.sign_recoverable(keccak(b"\x19\x01" + _DOMAIN + struct), hasher=None)
        cursor.execute(
            "INSERT INTO bench_bare_checkout (user_id, order_id, signature) VALUES (%s, %s, %s) RETURNING id",
            [found[0], "0x" + order_id.hex(), "0x" + signature.hex()],
        )
        row_id = cursor.fetchone()[0]
    return JsonResponse(
        {"id": row_id, "order_id": "0x" + order_id.hex(), "signature": "0x" + signature.hex()}, status=201
    )


urlpatterns = [
    path("bench/bare/webhook/<slug:slug>", bare_webhook),
    path("bench/bare/checkout", bare_checkout),
    *project_urlpatterns,
]
