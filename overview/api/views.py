"""/v1/billing/overview/*: read-only analytics for support and billing_admin (definitions: docs/overview.md).

Thin views: parameters are validated by overview.api.serializers (400 with field errors), figures come from
overview.selectors, answers are the selectors' dicts as they are.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from overview import selectors
from overview.api import serializers as s
from overview.api.permissions import CanReadOverview
from overview.api.renderers import CSVRenderer

PERIOD_PARAMETERS = [
    OpenApiParameter(
        "period",
        OpenApiTypes.STR,
        enum=["7d", "30d", "90d", "mtd", "custom"],
        description="Window ending now (7d, 30d, 90d), month to date (UTC), or custom (from/to). Default 30d, "
        "or custom when from/to are given.",
    ),
    OpenApiParameter(
        "from", OpenApiTypes.STR, description="period=custom: ISO date or datetime, inclusive (naive = UTC)."
    ),
    OpenApiParameter(
        "to", OpenApiTypes.STR, description="period=custom: ISO datetime (exclusive) or date (that day included)."
    ),
    OpenApiParameter(
        "include_testnets", OpenApiTypes.BOOL, description="Add test networks to money figures (default: left out)."
    ),
]
ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="Bad parameters: field errors in error.fields"),
    401: OpenApiResponse(s.ErrorSerializer, description="Not signed in"),
    403: OpenApiResponse(s.ErrorSerializer, description="Needs the support or billing_admin role"),
}


class OverviewView(APIView):
    permission_classes = [CanReadOverview]
    params_class: type[s.PeriodParams] = s.PeriodParams
    renderer_classes = [JSONRenderer]

    def params(self, request: Request) -> dict:
        params = self.params_class(data=request.query_params)
        params.is_valid(raise_exception=True)
        return params.validated_data

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force)
        except (Http404, exceptions.NotFound):  # ?format= names no renderer here: a bad parameter, not a 404
            formats = ", ".join(r.format for r in self.renderer_classes)
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
            raise exceptions.ValidationError({"format": [f"One of: {formats}."]})

    def handle_exception(self, exc):
        # Errors are JSON whatever format was asked for (a CSV client still gets a readable reason).
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return super().handle_exception(exc)


class DashboardView(OverviewView):
    @extend_schema(
        tags=["overview"],
        summary="KPIs with the previous window and signed deltas: MRR, ARPU, subscriptions, revenue, debt, failures",
        parameters=PERIOD_PARAMETERS,
        responses={200: s.DashboardSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        p = self.params(request)
        return Response(selectors.dashboard(period=p["window"], include_testnets=p["include_testnets"]))


class RevenueView(OverviewView):
    params_class = s.RevenueParams
    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        tags=["overview"],
        summary="Revenue series (UTC buckets) per token, network or plan, gross or net; ?format=csv",
        parameters=[
            *PERIOD_PARAMETERS,
            OpenApiParameter("granularity", OpenApiTypes.STR, enum=list(selectors.GRANULARITIES)),
            OpenApiParameter("basis", OpenApiTypes.STR, enum=["gross", "net"]),
            OpenApiParameter(
                "split", OpenApiTypes.STR, enum=list(selectors.SPLITS), description="One series per token/network/plan"
            ),
            OpenApiParameter("token", OpenApiTypes.STR, description="Only this token: SYMBOL@network-slug"),
            OpenApiParameter("network", OpenApiTypes.STR, description="Only this network (slug)"),
            OpenApiParameter("plan", OpenApiTypes.STR, description="Only this plan (slug)"),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
        ],
        responses={
            (200, "application/json"): s.RevenueSerializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="bucket_start,bucket_end,series,basis,token,amount,amount_display,usd: one row per "
                "bucket, series and token",
            ),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        p = self.params(request)
        report = selectors.revenue(
            period=p["window"],
            include_testnets=p["include_testnets"],
            granularity=p["granularity"],
            basis=p["basis"],
            split=p["split"],
            filters=p["filters"],
            catalog=p["catalog"],
        )
        if request.accepted_renderer.format == "csv":
            window = p["window"]
            name = f"revenue-{p['basis']}-{window.start:%Y%m%dT%H%M}-{window.end:%Y%m%dT%H%M}.csv"
            return Response(
                selectors.revenue_csv_rows(report), headers={"Content-Disposition": f'attachment; filename="{name}"'}
            )
        return Response(report)


class NetworksView(OverviewView):
    @extend_schema(
        tags=["overview"],
        summary="Per network: volume, transactions, failure rate, confirmation latency, follower lag, RPC health",
        parameters=PERIOD_PARAMETERS,
        responses={200: s.NetworksSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        p = self.params(request)
        return Response(selectors.networks(period=p["window"], include_testnets=p["include_testnets"]))


class PayoutsView(OverviewView):
    params_class = s.ListParams

    @extend_schema(
        tags=["overview"],
        summary="Withdrawals per contract (Withdrawn logs) and each contract's balance per token, read from the chain",
        parameters=[
            *PERIOD_PARAMETERS,
            OpenApiParameter("limit", OpenApiTypes.INT, description="Withdrawals listed (1-500, default 100)"),
        ],
        responses={200: s.PayoutsSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        p = self.params(request)
        return Response(selectors.payouts(period=p["window"], include_testnets=p["include_testnets"], limit=p["limit"]))


class IncidentsView(OverviewView):
    params_class = s.ListParams

    @extend_schema(
        tags=["overview"],
        summary="Incident feed, newest first: failure spikes, RPC degradation, reorgs, reviews, dead letters, "
        "unmatched transfers",
        parameters=[
            *PERIOD_PARAMETERS,
            OpenApiParameter("limit", OpenApiTypes.INT, description="Incidents listed (1-500, default 100)"),
        ],
        responses={200: s.IncidentsSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        p = self.params(request)
        return Response(selectors.incidents(period=p["window"], limit=p["limit"]))


class ExperimentsView(OverviewView):
    @extend_schema(
        tags=["overview"],
        summary="Per experiment and variant: checkouts, paid, conversion with confidence intervals, revenue, ARPU",
        parameters=PERIOD_PARAMETERS,
        responses={200: s.ExperimentsSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        p = self.params(request)
        return Response(selectors.experiments(period=p["window"], include_testnets=p["include_testnets"]))
