"""The signed-in user's own billing: settings bundle, history, subscription."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.api.pagination import NewestFirstCursorPagination
from billing.api.serializers import (
    HistoryItemSerializer,
    MeSettingsSerializer,
    SubscriptionSerializer,
    debt_of,
)
from billing.services.subscriptions import subscription_cancel
from billing_project.api_errors import ApiError
from profiles.selectors import wallet_primary_for_user

NO_SUBSCRIPTION = ("no_subscription", "You have no active subscription.")


class MeSettingsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=["me"], summary="Billing settings bundle", responses=MeSettingsSerializer)
    def get(self, request: Request) -> Response:
        user = request.user
        sub = selectors.subscription_current(user=user)
        wallet = wallet_primary_for_user(user=user)
        last = selectors.transaction_last_for_user(user=user)
        body = {
            "plan": (
                {
                    "slug": sub.plan.slug,
                    "title": sub.plan.title,
                    "interval": sub.plan.interval,
                    "limits": sub.plan.limits,
                    "features": sub.plan.features,
                }
                if sub
                else None
            ),
            "subscription_status": sub.status if sub else None,
            "current_period_end": sub.current_period_end if sub else None,
            "paid_until": selectors.subscription_paid_until(sub) if sub else None,
            "queued_periods": selectors.subscription_queued(sub) if sub else [],
            "cancel_at_period_end": bool(sub and sub.cancel_at_period_end),
            "wallet": (
                {"address": wallet.address, "chain_id": wallet.chain_id, "verified_at": wallet.verified_at}
                if wallet
                else None
            ),
            "debt": debt_of(sub),
            "last_payment": (
                {
                    "id": last.public_id,
                    "status": last.status,
                    "tx_hash": last.tx_hash,
                    "failure_reason": last.failure_reason,
                    "created_at": last.created_at,
                    "confirmed_at": last.confirmed_at,
                }
                if last
                else None
            ),
        }
        return Response(MeSettingsSerializer(body).data)


@extend_schema(tags=["me"], summary="Own payment transactions, newest first (cursor-paginated)")
class MeHistoryView(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = HistoryItemSerializer
    pagination_class = NewestFirstCursorPagination
    filter_backends: list = []

    def get_queryset(self):
        return selectors.transaction_history_for_user(user=self.request.user)


class MeSubscriptionView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["me"],
        summary="Current (active or past due) subscription; 404 no_subscription when there is none",
        responses=SubscriptionSerializer,
    )
    def get(self, request: Request) -> Response:
        sub = selectors.subscription_current(user=request.user)
        if sub is None:
            raise ApiError(*NO_SUBSCRIPTION, status_code=404)
        return Response(SubscriptionSerializer(sub).data)


class MeSubscriptionCancelView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["me"],
        summary="Cancel at the end of all paid time (idempotent); access stays until paid_until",
        request=None,
        responses=SubscriptionSerializer,
    )
    def post(self, request: Request) -> Response:
        sub = selectors.subscription_current(user=request.user)
        if sub is None:
            raise ApiError(*NO_SUBSCRIPTION, status_code=404)
        try:
            sub = subscription_cancel(subscription=sub, actor=f"user:{request.user.pk}")
        except ValueError as exc:
            raise ApiError("cancel_not_allowed", str(exc), status_code=409)
        return Response(SubscriptionSerializer(selectors.subscription_current(user=request.user) or sub).data)
