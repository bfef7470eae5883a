"""POST /v1/billing/webhooks/contracts/{contract_slug}: signed on-chain events from an indexer. The request
only checks and stores the delivery (billing.services.webhooks); workers verify it on chain."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.services.webhooks import webhook_receive


class RawBodyParser(BaseParser):
    """The signature covers the raw bytes: never let a parser touch them first."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream else b""


_status = inline_serializer("WebhookStatus", {"status": serializers.CharField()})


class ContractWebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [RawBodyParser]

    @extend_schema(
        operation_id="contract_webhook",
        request={
            "application/json": inline_serializer(
                "ContractWebhook",
                {
                    "id": serializers.CharField(),
                    "type": serializers.CharField(),
                    "chain_id": serializers.IntegerField(),
                    "contract_address": serializers.CharField(),
                    "method": serializers.CharField(),
                    "tx_hash": serializers.CharField(),
                    "log_index": serializers.IntegerField(),
                    "block_number": serializers.IntegerField(),
                    "block_hash": serializers.CharField(),
                    "order_id": serializers.CharField(),
                    "payer": serializers.CharField(),
                    "token": serializers.CharField(allow_null=True),
                    "amount": serializers.CharField(),
                    "failure_reason": serializers.CharField(required=False),
                },
            )
        },
        responses={
            200: OpenApiResponse(_status, description='`{"status": "duplicate"}`: this delivery was stored before'),
            202: OpenApiResponse(
                _status,
                description='`{"status": "accepted"}`: stored; a worker verifies it on chain and applies it',
            ),
            400: OpenApiResponse(description="Malformed"),
            401: OpenApiResponse(description="Bad, missing or stale signature"),
            404: OpenApiResponse(description="Unknown contract"),
            422: OpenApiResponse(description="Method not in the contract's ABI"),
        },
        tags=["webhooks"],
    )
    def post(self, request, contract_slug):
        result = webhook_receive(
            contract_slug=contract_slug,
            raw_body=request.body,
            signature_header=request.headers.get("X-Billing-Signature", ""),
        )
        return Response(result.body, status=result.status_code)
