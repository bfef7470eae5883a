"""The in-project Quota consumer of plan.changed.v1: sets the user's limits from the event.

At-least-once delivery means duplicates; `ProcessedQuotaEvent` (unique event_id) makes applying an
event idempotent, and an older event never overwrites a newer one."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from profiles.models import ProcessedQuotaEvent, QuotaGrant


@transaction.atomic
def handle_plan_changed(payload: dict) -> bool:
    """Apply one plan.changed.v1 event. Returns False for a duplicate."""
    event_id = uuid.UUID(str(payload["event_id"]))
    user_id = int(payload["user_id"])
    try:
        with transaction.atomic():
            ProcessedQuotaEvent.objects.create(event_id=event_id, user_id=user_id)
    except IntegrityError:
        return False
    occurred_at = parse_datetime(payload["occurred_at"]) if payload.get("occurred_at") else None
    period_end = parse_datetime(payload["period_end"]) if payload.get("period_end") else None
    grant, _ = QuotaGrant.objects.select_for_update().get_or_create(user_id=user_id)
    if grant.last_event_at and occurred_at and occurred_at < grant.last_event_at:
        return True  # stale: a newer event already set the limits
    grant.plan_slug = payload.get("plan") or ""
    grant.limits = payload.get("limits") or {}
    grant.period_end = period_end
    grant.last_event_id = event_id
    grant.last_event_at = occurred_at or grant.last_event_at
    grant.save()
    return True


def quota_for(user_id: int) -> dict:
    grant = QuotaGrant.objects.filter(user_id=user_id).first()
    if grant is None:
        return {"plan": None, "limits": {}, "period_end": None}
    period_end: datetime | None = grant.period_end
    return {"plan": grant.plan_slug or None, "limits": grant.limits, "period_end": period_end}
