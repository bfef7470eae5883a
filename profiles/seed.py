"""Seed data for the demo (`manage.py seed_demo`, which lives in billing): the profile rows a SIWE
verification would leave behind, written in bulk. Nothing on a request path uses this module."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from profiles.models import Wallet


def wallets_link_verified_bulk(*, links: list[tuple[int, str, int]], verified_at: datetime | None = None) -> int:
    """Seed data only (`seed_demo`): (user_id, address, chain_id) rows as a SIWE verification would leave
    them, so the demo customers' checkouts pass BILLING_REQUIRE_VERIFIED_PAYER. A user's first wallet is
    its primary; addresses already linked (to anyone) are left alone. Returns how many were created."""
    verified_at = verified_at or timezone.now()
    taken = set(Wallet.objects.filter(address__in=[a for _, a, _ in links]).values_list("address", flat=True))
    with_primary = set(
        Wallet.objects.filter(user_id__in={u for u, _, _ in links}, is_primary=True).values_list("user_id", flat=True)
    )
    rows = []
    for user_id, address, chain_id in links:
        if address in taken:
            continue
        taken.add(address)
        rows.append(
            Wallet(
                user_id=user_id,
                address=address,
                chain_id=chain_id,
                is_primary=user_id not in with_primary,
                verified_at=verified_at,
            )
        )
        with_primary.add(user_id)
    Wallet.objects.bulk_create(rows, batch_size=5000, ignore_conflicts=True)
    return len(rows)
