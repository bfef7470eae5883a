"""Consumers of billing's outbox events: each event becomes notification rows (one per cause and
audience, deduplicated by key), delivered by `notifications.tasks`. A re-delivered event (a retried
task, a restarted worker, an operator's replay) finds its row already there and sends nothing again.

User notices: payment received, payment failed (with what to do about it), refunded (payment.status.v1);
plan changes, expired (plan.changed.v1); past due (subscription.past_due.v1); renewal due in N days
(`services.renewal_due_notify`, a beat task). Ops notices: every ops.notice.v1 (billing.services.notices)."""

from __future__ import annotations

from decimal import Decimal

from django.db import IntegrityError, transaction

from notifications.models import Notification

TITLES = {
    "payment_confirmed": "Your payment is confirmed",
    "refunded": "Your payment was refunded",
    "expired": "Your subscription has expired",
    "canceled": "Your subscription was canceled",
    "downgraded": "Your plan changed",
    "upgraded": "Your plan was upgraded",
    "suspended": "A payment is under review",
    "restored": "Your payment is confirmed again",
}


def notify(
    *, audience: str, user_id: int | None, kind: str, title: str, body: str, data: dict, dedupe_key: str
) -> bool:
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                audience=audience, user_id=user_id, kind=kind, title=title, body=body, data=data, dedupe_key=dedupe_key
            )
    except IntegrityError:
        return False

    def kick() -> None:
        from notifications.tasks import notification_deliver_task

        notification_deliver_task.delay(notification.pk)

    transaction.on_commit(kick)
    return True


def _refund_key(transaction_id) -> str:
    """One refund notice per refunded payment, whichever event (payment.status or plan.changed) comes first."""
    return f"refund:tx:{transaction_id}:user"


def handle_plan_changed(payload: dict) -> None:
    reason = payload.get("reason", "")
    plan = payload.get("plan") or "no plan"
    user_key = f"plan.changed.v1:{payload['event_id']}:user"
    if reason == "refunded" and payload.get("transaction_id"):
        user_key = _refund_key(payload["transaction_id"])
    notify(
        audience=Notification.Audience.USER,
        user_id=int(payload["user_id"]),
        kind=reason or "plan_changed",
        title=TITLES.get(reason, "Your plan changed"),
        body=(
            f"Plan: {plan}. Period end: {payload.get('period_end') or '-'}."
            f" Paid until: {payload.get('paid_until') or '-'}."
        ),
        data={
            k: payload.get(k) for k in ("plan", "previous_plan", "reason", "transaction_id", "period_end", "paid_until")
        },
        dedupe_key=user_key,
    )
    if reason in ("refunded", "expired"):
        notify(
            audience=Notification.Audience.OPS,
            user_id=None,
            kind=f"ops_{reason}",
            title=f"Subscription {reason}: user {payload['user_id']}",
            body=f"Plan {payload.get('previous_plan')} -> {plan}; transaction {payload.get('transaction_id')}.",
            data={k: payload.get(k) for k in ("user_id", "plan", "previous_plan", "reason", "transaction_id")},
            dedupe_key=f"plan.changed.v1:{payload['event_id']}:ops",
        )


def handle_past_due(payload: dict) -> None:
    user_id = int(payload["user_id"])
    data = {k: payload.get(k) for k in ("plan", "grace_until", "debt_amount", "debt_token")}
    notify(
        audience=Notification.Audience.USER,
        user_id=user_id,
        kind="renewal_overdue",
        title="Your renewal is overdue",
        body=f"Pay {payload.get('debt_amount')} {payload.get('debt_token')} before {payload.get('grace_until')}.",
        data=data,
        dedupe_key=f"{payload['event_id']}:user",
    )
    notify(
        audience=Notification.Audience.OPS,
        user_id=None,
        kind="ops_renewal_overdue",
        title=f"Renewal overdue: user {user_id}",
        body=f"Plan {payload.get('plan')}, grace until {payload.get('grace_until')}.",
        data={"user_id": user_id, **data},
        dedupe_key=f"{payload['event_id']}:ops",
    )


def handle_ops_notice(payload: dict) -> None:
    """billing.services.notices.ops_notice: one ops notification per key, however often it is raised."""
    notify(
        audience=Notification.Audience.OPS,
        user_id=None,
        kind=payload["kind"],
        title=payload["title"],
        body=payload.get("body", ""),
        data={"key": payload["key"], **(payload.get("data") or {})},
        dedupe_key=f"ops:{payload['key']}"[:200],
    )


# --- payments: received, failed, refunded -------------------------------------------------------------------

# What a payer can do about a failed payment, by what the chain or the checkout said (first match wins).
FAILURE_ADVICE = (
    (
        ("expired", "deadline", "not mined"),
        "The payment was not mined before the quote expired. Start a new checkout; nothing was taken from your wallet.",
    ),
    (("allowance", "approve"), "The token allowance was too low. Approve the amount in your wallet, then pay again."),
    (
        ("insufficient", "balance", "exceeds balance"),
        "Your wallet did not hold enough funds (amount plus network fee). Top it up, then start a new checkout.",
    ),
    (("signature", "signer"), "The payment quote was not accepted. Start a new checkout to get a fresh quote."),
    (("paused",), "Payments are paused for maintenance. Please try again later."),
    (("paid no order",), "The transaction did not pay this checkout. Use the payment steps of a new checkout."),
)
DEFAULT_ADVICE = "The transaction was reverted on chain; no plan was changed. Start a new checkout to try again."


def failure_advice(reason: str) -> str:
    low = (reason or "").lower()
    for needles, advice in FAILURE_ADVICE:
        if any(n in low for n in needles):
            return advice
    return DEFAULT_ADVICE


def display_amount(payload: dict) -> str:
    try:
        value = Decimal(int(payload.get("amount") or 0)).scaleb(-int(payload.get("decimals") or 0))
    except (ValueError, ArithmeticError):
        return f"{payload.get('amount')} {payload.get('token', '')}".strip()
    return f"{value.normalize():f} {payload.get('token', '')}".strip()


def handle_payment_status(payload: dict) -> None:
    """payment.status.v1 (one per ledger status change): confirmed -> payment received, failed -> payment
    failed with advice, refunded -> refunded (shared key with plan.changed's refund notice)."""
    status = payload.get("status")
    user_id = payload.get("user_id")
    if not user_id or status not in ("confirmed", "failed", "refunded"):
        return
    data = {k: payload.get(k) for k in ("transaction_id", "public_id", "status", "amount", "token", "plan", "tx_hash")}
    amount = display_amount(payload)
    if status == "confirmed":
        kind, title = "payment_received", "Payment received"
        body = f"We received your payment of {amount}" + (f" for {payload['plan']}." if payload.get("plan") else ".")
        key = f"payment.status.v1:{payload['change_id']}:user"
    elif status == "failed":
        advice = failure_advice(payload.get("failure_reason", ""))
        kind, title = "payment_failed", "Your payment did not go through"
        body = f"Your payment of {amount} failed: {payload.get('failure_reason') or 'reverted'}. {advice}"
        data = {**data, "reason": payload.get("failure_reason", ""), "advice": advice}
        key = f"payment.status.v1:{payload['change_id']}:user"
    else:
        kind, title = "refunded", TITLES["refunded"]
        body = f"Your payment of {amount} was refunded to the wallet it came from."
        key = _refund_key(payload.get("transaction_id"))
    notify(
        audience=Notification.Audience.USER,
        user_id=int(user_id),
        kind=kind,
        title=title,
        body=body,
        data=data,
        dedupe_key=key,
    )
