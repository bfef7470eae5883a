"""The webhook signature of docs/reference/api/contract.md, used both ways: checking indexer deliveries and
signing outgoing plan.changed.v1 deliveries.

    X-Billing-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]
    hex = HMAC-SHA256(secret, ascii(t) + b"." + raw_body)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "X-Billing-Signature"
TOLERANCE_SECONDS = 300
MAX_HEADER_LENGTH = 2048  # a few signatures during a rotation fit many times over

# Only ASCII: str.isdigit() and int() also take "²" or Arabic-Indic digits, and hmac.compare_digest refuses
# non-ASCII str with a TypeError; an over-long t would overflow the float comparison. Anything else in the
# header is "malformed" (401), never an exception (500).
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_HEX_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def compute(secret: str, timestamp: int, raw_body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode("ascii") + b"." + raw_body, hashlib.sha256).hexdigest()


def sign(raw_body: bytes, secrets: list[str], *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={compute(s, t, raw_body)}" for s in secrets if s)])


def parse(header: str) -> tuple[int | None, list[str]]:
    """(t, v1 signatures). Parts that are not an ASCII t or a 64-hex-digit v1 are ignored, so a header made
    only of such parts parses as (None, []) and is refused as malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    if not isinstance(header, str) or len(header) > MAX_HEADER_LENGTH:
        return None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        value = value.strip()
        if key == "t" and _TIMESTAMP_RE.fullmatch(value):
            timestamp = int(value)
        elif key == "v1" and _HEX_SHA256_RE.fullmatch(value.lower()):
            signatures.append(value.lower())
    return timestamp, signatures


def check(
    raw_body: bytes, header: str, secrets: list[str], *, now: float | None = None, tolerance: int = TOLERANCE_SECONDS
) -> tuple[bool, str, int]:
    """(ok, reason, index of the secret that matched). Constant-time comparison for every pair."""
    timestamp, signatures = parse(header)
    if timestamp is None or not signatures:
        return False, "missing or malformed signature header", -1
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False, "signature timestamp outside the tolerance window", -1
    matched = -1
    for index, secret in enumerate(secrets):
        if not secret:
            continue
        expected = compute(secret, timestamp, raw_body)
        for candidate in signatures:
            if hmac.compare_digest(expected.encode("ascii"), candidate.encode("ascii")) and matched < 0:
                matched = index
    if matched < 0:
        return False, "signature does not match", -1
    return True, "", matched
