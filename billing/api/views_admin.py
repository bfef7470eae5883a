"""/v1/billing/admin/...: catalog CRUD, transactions and operator actions, events, audit, outbox.

billing_admin may do everything here; support may read (every write is a 403 for support). Writes run
inside `acting_user(request.user)` so django-auditlog attributes them to the token's user.
"""

from __future__ import annotations

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import ProtectedError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.api.pagination import AuditCursorPagination, ChainEventCursorPagination, NewestFirstCursorPagination
from billing.api.permissions import IsBillingAdmin, IsBillingAdminOrSupportReadOnly, IsSupport
from billing.api.serializers import (
    AuditEntrySerializer,
    ChainEventSerializer,
    ContractSerializer,
    CryptoConfigSerializer,
    NetworkSerializer,
    OperatorActionResultSerializer,
    OperatorActionSerializer,
    OperatorTransactionSerializer,
    OutboxDeliverySerializer,
    PlanSerializer,
    ProviderSerializer,
    TestConnectionResultSerializer,
    TokenSerializer,
    TransactionDetailSerializer,
    TransactionSerializer,
    WithdrawResultSerializer,
    WithdrawSerializer,
)
from billing.filters import OutboxDeliveryFilter, TransactionFilter
from billing.models import OutboxDelivery
from billing.services import catalog, operator
from billing_project.api_errors import ApiError
from billing_project.logging import mask_url

SLUG_RE = r"[-a-zA-Z0-9_]+"
UUID_RE = r"[0-9a-fA-F-]{36}"


class AuditedWriteMixin:
    """Catalog writes: attributed to the caller in the audit log; a delete of a referenced row is a 409."""

    def perform_create(self, serializer):
        with operator.acting_user(self.request.user):
            serializer.save()

    def perform_update(self, serializer):
        with operator.acting_user(self.request.user):
            serializer.save()

    def perform_destroy(self, instance):
        try:
            with operator.acting_user(self.request.user):
                catalog.catalog_delete(instance=instance)
        except ProtectedError:
            raise ApiError(
                "in_use",
                f"{instance} is referenced by other rows (plans, transactions, ...); disable it instead.",
                status_code=409,
            )


class CatalogViewSet(AuditedWriteMixin, viewsets.ModelViewSet):
    permission_classes = [IsBillingAdminOrSupportReadOnly]
    lookup_field = "slug"
    lookup_value_regex = SLUG_RE
    pagination_class = None
    filter_backends: list = []
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]


@extend_schema_view(
    list=extend_schema(tags=["admin: plans"]),
    retrieve=extend_schema(tags=["admin: plans"]),
    create=extend_schema(tags=["admin: plans"]),
    update=extend_schema(tags=["admin: plans"]),
    partial_update=extend_schema(tags=["admin: plans"]),
    destroy=extend_schema(tags=["admin: plans"]),
)
class PlanAdminViewSet(CatalogViewSet):
    serializer_class = PlanSerializer

    def get_queryset(self):
        return selectors.plan_queryset()


@extend_schema_view(
    list=extend_schema(tags=["admin: providers"]),
    retrieve=extend_schema(tags=["admin: providers"]),
    create=extend_schema(tags=["admin: providers"]),
    update=extend_schema(tags=["admin: providers"]),
    partial_update=extend_schema(tags=["admin: providers"]),
    destroy=extend_schema(tags=["admin: providers"]),
)
class ProviderAdminViewSet(CatalogViewSet):
    serializer_class = ProviderSerializer

    def get_queryset(self):
        return selectors.provider_queryset()


@extend_schema_view(
    list=extend_schema(tags=["admin: contracts"]),
    retrieve=extend_schema(tags=["admin: contracts"]),
    create=extend_schema(tags=["admin: contracts"]),
    update=extend_schema(tags=["admin: contracts"]),
    partial_update=extend_schema(tags=["admin: contracts"]),
    destroy=extend_schema(tags=["admin: contracts"]),
)
class ContractAdminViewSet(CatalogViewSet):
    serializer_class = ContractSerializer

    def get_queryset(self):
        return selectors.contract_queryset()

    @extend_schema(
        tags=["admin: contracts"],
        summary="The contract's on-chain event timeline, newest block first (cursor-paginated)",
        responses=ChainEventSerializer(many=True),
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="events",
        permission_classes=[IsSupport],
        serializer_class=ChainEventSerializer,
        pagination_class=ChainEventCursorPagination,
    )
    def events(self, request: Request, slug: str) -> Response:
        contract = self.get_object()
        queryset = selectors.contract_events(contract=contract)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(ChainEventSerializer(page, many=True).data)

    @extend_schema(
        tags=["admin: contracts"],
        summary="Withdraw the contract's balance of a token to the treasury (operator transaction, audited)",
        request=WithdrawSerializer,
        responses={200: WithdrawResultSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="withdraw",
        permission_classes=[IsBillingAdmin],
        serializer_class=WithdrawSerializer,
    )
    def withdraw(self, request: Request, slug: str) -> Response:
        body = WithdrawSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        contract = self.get_object()
        result = operator.contract_withdraw(  # ServiceError (400/409) becomes the error body in the handler
            contract=contract,
            actor=request.user,
            token=body.validated_data["token"],
            amount=body.validated_data.get("amount"),
            reason=body.validated_data["reason"],
        )
        return Response(
            {
                "result": result.result,
                "detail": result.detail,
                "withdrawal": result.plan.as_dict(),
                "operator_transaction": OperatorTransactionSerializer(result.operator_transaction).data,
            }
        )


@extend_schema_view(
    list=extend_schema(tags=["admin: networks"]),
    retrieve=extend_schema(tags=["admin: networks"]),
    create=extend_schema(tags=["admin: networks"]),
    update=extend_schema(tags=["admin: networks"]),
    partial_update=extend_schema(tags=["admin: networks"]),
    destroy=extend_schema(tags=["admin: networks"]),
)
class NetworkAdminViewSet(CatalogViewSet):
    serializer_class = NetworkSerializer

    def get_queryset(self):
        return selectors.network_queryset()


@extend_schema_view(
    list=extend_schema(tags=["admin: tokens"]),
    retrieve=extend_schema(tags=["admin: tokens"]),
    create=extend_schema(tags=["admin: tokens"]),
    update=extend_schema(tags=["admin: tokens"]),
    partial_update=extend_schema(tags=["admin: tokens"]),
    destroy=extend_schema(tags=["admin: tokens"]),
)
class TokenAdminViewSet(CatalogViewSet):
    """Tokens have no slug: they are addressed by id; `key` (SYMBOL@network) names them elsewhere."""

    serializer_class = TokenSerializer
    lookup_field = "pk"
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return selectors.token_queryset()


class CryptoConfigView(APIView):
    """The singleton retry/backoff/gas/fallback policy."""

    permission_classes = [IsBillingAdminOrSupportReadOnly]

    @extend_schema(tags=["admin: crypto config"], responses=CryptoConfigSerializer)
    def get(self, request: Request) -> Response:
        return Response(CryptoConfigSerializer(selectors.crypto_config_get()).data)

    def _write(self, request: Request, partial: bool) -> Response:
        serializer = CryptoConfigSerializer(selectors.crypto_config_get(), data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        with operator.acting_user(request.user):
            config = serializer.save()
        return Response(CryptoConfigSerializer(config).data)

    @extend_schema(tags=["admin: crypto config"], request=CryptoConfigSerializer, responses=CryptoConfigSerializer)
    def put(self, request: Request) -> Response:
        return self._write(request, partial=False)

    @extend_schema(tags=["admin: crypto config"], request=CryptoConfigSerializer, responses=CryptoConfigSerializer)
    def patch(self, request: Request) -> Response:
        return self._write(request, partial=True)


class TestConnectionView(APIView):
    """Probe every RPC endpoint of every enabled network for real: chain id, head block, latency."""

    permission_classes = [IsBillingAdmin]

    @extend_schema(
        tags=["admin: crypto config"],
        request=None,
        responses={200: TestConnectionResultSerializer},
        summary="Probe each RPC endpoint (chain id, head block, latency); URLs masked in the answer",
    )
    def post(self, request: Request) -> Response:
        networks = []
        for item in operator.test_connection(actor=request.user):  # audited with the token's user
            entry = {"network": item["network"].slug, "results": _mask_probe(item["reports"])}
            if item["error"]:
                entry["error"] = item["error"]
            networks.append(entry)
        return Response({"networks": networks})


def _mask_probe(results) -> list[dict]:
    out = []
    for item in results or []:
        entry = item if isinstance(item, dict) else getattr(item, "__dict__", {"result": str(item)})
        out.append({k: mask_url(v) if isinstance(v, str) else v for k, v in dict(entry).items()})
    return out


@extend_schema_view(
    list=extend_schema(tags=["admin: transactions"], summary="Ledger rows, newest first (cursor, no count)"),
    retrieve=extend_schema(tags=["admin: transactions"], summary="One ledger row with its status history"),
)
class TransactionAdminViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsBillingAdminOrSupportReadOnly]
    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    lookup_value_regex = UUID_RE
    pagination_class = NewestFirstCursorPagination
    filterset_class = TransactionFilter

    def get_queryset(self):
        qs = selectors.transaction_queryset()
        if self.action == "retrieve" or self.action in ("refund", "reprocess"):
            qs = qs.prefetch_related("status_history")
        return qs

    def get_object(self):
        try:
            return super().get_object()
        except Exception as exc:  # a malformed UUID is a 404, not a 500
            from django.core.exceptions import ValidationError

            if isinstance(exc, ValidationError):
                raise ApiError("not_found", "No such transaction.", status_code=404)
            raise

    def get_serializer_class(self):
        return TransactionDetailSerializer if self.action == "retrieve" else TransactionSerializer

    def _run(self, request: Request, fn) -> Response:
        body = OperatorActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tx = self.get_object()
        result = fn(tx=tx, actor=request.user, reason=body.validated_data["reason"])
        fresh = self.get_queryset().get(pk=tx.pk)
        code = status.HTTP_202_ACCEPTED if result.result.endswith("_requested") else status.HTTP_200_OK
        return Response(
            {"result": result.result, "detail": result.detail, "transaction": TransactionDetailSerializer(fresh).data},
            status=code,
        )

    @extend_schema(
        tags=["admin: transactions"],
        summary="Refund on chain (contract burn method); 202 when no operator key is configured (recorded, not sent)",
        request=OperatorActionSerializer,
        responses={200: OperatorActionResultSerializer, 202: OperatorActionResultSerializer},
    )
    @action(detail=True, methods=["post"], permission_classes=[IsBillingAdmin], filterset_class=None)
    def refund(self, request: Request, id: str) -> Response:
        return self._run(request, operator.transaction_refund)

    @extend_schema(
        tags=["admin: transactions"],
        summary="Re-run the stored webhook deliveries of this transaction (verified on chain again)",
        request=OperatorActionSerializer,
        responses={200: OperatorActionResultSerializer},
    )
    @action(detail=True, methods=["post"], permission_classes=[IsBillingAdmin], filterset_class=None)
    def reprocess(self, request: Request, id: str) -> Response:
        return self._run(request, operator.transaction_reprocess)


class AuditTimelineView(generics.ListAPIView):
    """django-auditlog entries, newest first, with field diffs; secret fields are never shown."""

    permission_classes = [IsSupport]
    serializer_class = AuditEntrySerializer
    pagination_class = AuditCursorPagination
    filter_backends: list = []

    @extend_schema(
        tags=["admin: audit"],
        parameters=[
            OpenApiParameter("model", OpenApiTypes.STR, description="model name, e.g. plan or billing.plan"),
            OpenApiParameter("object_id", OpenApiTypes.STR, description="the object's id (primary key)"),
        ],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = LogEntry.objects.select_related("content_type", "actor")
        model = self.request.query_params.get("model", "").strip().lower()
        object_id = self.request.query_params.get("object_id", "").strip()
        if "\x00" in model or "\x00" in object_id:
            raise ApiError("validation_error", "Query parameters may not contain NUL characters.")
        if model:
            app_label, _, name = model.rpartition(".")
            types = ContentType.objects.filter(model=name)
            if app_label:
                types = types.filter(app_label=app_label)
            qs = qs.filter(content_type__in=types)
        if object_id:
            qs = qs.filter(object_pk=object_id)
        return qs


@extend_schema_view(
    get=extend_schema(tags=["admin: outbox"], summary="Outgoing event deliveries; ?status=dead for dead letters")
)
class OutboxListView(generics.ListAPIView):
    permission_classes = [IsSupport]
    serializer_class = OutboxDeliverySerializer
    pagination_class = NewestFirstCursorPagination
    filterset_class = OutboxDeliveryFilter

    def get_queryset(self):
        return selectors.outbox_deliveries()


class OutboxReplayView(generics.GenericAPIView):
    permission_classes = [IsBillingAdmin]
    serializer_class = OutboxDeliverySerializer
    filter_backends: list = []

    @extend_schema(
        tags=["admin: outbox"],
        summary="Replay a dead or failing delivery: pending again, due now",
        request=None,
        responses=OutboxDeliverySerializer,
    )
    def post(self, request: Request, id: int) -> Response:
        delivery = get_object_or_404(OutboxDelivery, pk=id)
        delivery = operator.outbox_replay(delivery=delivery, actor=request.user)
        return Response(OutboxDeliverySerializer(selectors.outbox_deliveries().get(pk=delivery.pk)).data)
