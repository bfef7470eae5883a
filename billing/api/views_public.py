"""Anonymous reads: the plans catalog."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.permissions import AllowAny

from billing import selectors
from billing.api.serializers import PublicPlanSerializer


@extend_schema(
    tags=["plans"],
    summary="Active plans with the networks and tokens each can be paid in",
)
class PlanCatalogView(generics.ListAPIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []  # a bad or stale token must not turn a public read into a 401
    serializer_class = PublicPlanSerializer
    pagination_class = None
    filter_backends: list = []

    def get_queryset(self):
        return selectors.plan_list_active()
