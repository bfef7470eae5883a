"""POST /v1/billing/checkout (Idempotency-Key), GET /v1/billing/checkout/{id}, POST .../{id}/tx."""

from __future__ import annotations

import functools

import structlog
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.fields import SkipField
from rest_framework.permissions import IsAuthenticated
from rest_framework.relations import PKOnlyObject
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from billing.models import PaymentTransaction
from billing.services.checkout import checkout_payer_check_sql, checkout_prepare, checkout_write
from billing.services.idempotency import idempotent_run, request_fingerprint
from billing.services.receipts import transaction_submit
from billing_project.api_errors import ApiError, error_body, service_error_response
from billing_project.errors import ServiceError

log = structlog.get_logger(__name__)

# Refusals the user is expected to fix and then retry with the same Idempotency-Key (link the wallet by
# SIWE): not kept as the key's answer.
RETRYABLE_REFUSALS = frozenset({"payer_not_verified"})


class CheckoutRequestSerializer(serializers.Serializer):
    plan = serializers.SlugField(max_length=64, help_text="Plan slug.")
    wallet = serializers.CharField(max_length=64, help_text="Payer's EVM address (0x...).")
    network = serializers.SlugField(max_length=64, required=False, help_text="Network slug; default: the plan's.")
    token = serializers.CharField(max_length=16, required=False, help_text="Token symbol; default: the plan's.")
    periods = serializers.IntegerField(min_value=1, max_value=36, required=False, default=1)


class TxReportSerializer(serializers.Serializer):
    tx_hash = serializers.CharField(max_length=66, help_text="Hash of the transaction the wallet sent.")


class StatusChangeSerializer(serializers.Serializer):
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    actor = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class WalletStepSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    to = serializers.CharField()
    data = serializers.CharField()
    value = serializers.CharField(help_text="wei, integer string")
    chain_id = serializers.IntegerField()
    function = serializers.CharField()
    args = serializers.DictField()


class PaymentPayloadSerializer(serializers.Serializer):
    chain_id = serializers.IntegerField()
    contract_address = serializers.CharField()
    steps = WalletStepSerializer(many=True)
    eip681 = serializers.CharField()
    quote = serializers.DictField()
    signature = serializers.CharField()
    signer = serializers.CharField()
    expires_at = serializers.CharField()
    network_fallback = serializers.DictField(required=False)


class CheckoutSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    plan = serializers.CharField(source="plan.slug", default=None)
    network = serializers.CharField(source="network.slug")
    contract = serializers.CharField(source="contract.slug")
    contract_address = serializers.CharField(source="contract.address")
    token = serializers.CharField(source="token.symbol")
    token_address = serializers.SerializerMethodField()
    token_decimals = serializers.IntegerField(source="token.decimals")
    amount = serializers.CharField(help_text="Smallest unit, integer string.")
    amount_display = serializers.DecimalField(max_digits=90, decimal_places=18, coerce_to_string=True)
    usd_rate_at_checkout = serializers.DecimalField(max_digits=24, decimal_places=8, allow_null=True)
    explorer_url = serializers.CharField()
    payment = serializers.SerializerMethodField()
    status_history = StatusChangeSerializer(many=True)

    class Meta:
        model = PaymentTransaction
        fields = [
            "id", "status", "plan", "network", "chain_id", "contract", "contract_address", "token", "token_address",
            "token_decimals", "amount", "amount_display", "periods", "order_id", "payer_address", "expires_at",
            "usd_rate_at_checkout", "tx_hash", "block_number", "confirmed_at", "failure_reason", "explorer_url",
            "created_at", "payment", "status_history",
        ]  # fmt: skip

    def get_token_address(self, obj) -> str | None:
        return obj.token.address or None

    @extend_schema_field(PaymentPayloadSerializer)
    def get_payment(self, obj) -> dict:
        return obj.checkout_payload


class NewCheckoutSerializer(CheckoutSerializer):
    """CheckoutSerializer of a checkout not written yet (rendered to be stored with it): the same fields, its
    history from the context (a related manager needs a saved row)."""

    status_history = serializers.SerializerMethodField()

    @extend_schema_field(StatusChangeSerializer(many=True))
    def get_status_history(self, obj) -> list:
        return StatusChangeSerializer(self.context["history"], many=True).data


@functools.cache
def _fields_of(serializer_class, *, without: tuple[str, ...] = ()) -> tuple:
    """The readable fields of one instance of `serializer_class`, built once per process (a serializer builds and
    deep-copies its fields at every instantiation, most of a checkout answer's cost); see `render_new_checkout`."""
    built = serializer_class().fields.values()
    return tuple(f for f in built if not f.write_only and f.field_name not in without)


def _represent(fields, instance) -> dict:
    """DRF's Serializer.to_representation over prebuilt fields: each field's own get_attribute and
    to_representation, None as None."""
    ret = {}
    for field in fields:
        try:
            attribute = field.get_attribute(instance)
        except SkipField:
            continue
        check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
        ret[field.field_name] = None if check_for_none is None else field.to_representation(attribute)
    return ret


def render_new_checkout(tx: PaymentTransaction, history: list) -> dict:
    """What `NewCheckoutSerializer(tx, context={"history": history}).data` gives, through the same DRF fields
    (built once per process instead of per request): the answer of a checkout not written yet."""
    data = _represent(_fields_of(CheckoutSerializer, without=("status_history",)), tx)
    data["status_history"] = [_represent(_fields_of(StatusChangeSerializer), change) for change in history]
    return data


def _load(user, public_id) -> PaymentTransaction:
    tx = (
        PaymentTransaction.objects.select_related("plan", "network", "contract", "token")
        .prefetch_related("status_history")
        .filter(public_id=public_id)
        .first()
    )
    if tx is None or tx.user_id != user.pk:
        # Someone else's checkout is indistinguishable from a missing one.
        raise ApiError("not_found", "No such checkout.", status_code=404)
    return tx


class CheckoutCreateView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "checkout"

    @extend_schema(
        operation_id="checkout_create",
        request=CheckoutRequestSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description="1-255 printable characters; same key and body replay the first answer.",
            ),
        ],
        responses={
            201: CheckoutSerializer,
            400: OpenApiResponse(description="Invalid request"),
            404: OpenApiResponse(description="Unknown plan"),
            409: OpenApiResponse(
                description="idempotency_in_progress / idempotency_mismatch / payer_not_verified (the wallet is "
                "not one of the user's SIWE-verified wallets)"
            ),
            503: OpenApiResponse(description="No network or signer available"),
        },
        tags=["checkout"],
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        if key is not None and (not 1 <= len(key) <= 255 or not key.isprintable()):
            raise ApiError(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 printable characters.",
                fields={"Idempotency-Key": ["1-255 printable characters (no control characters)."]},
            )
        body = request.data if isinstance(request.data, dict) else {}
        wallet = body.get("wallet")
        outcome = idempotent_run(
            user=request.user,
            key=key,
            fingerprint=request_fingerprint(method="POST", path=request.path, body=body) if key else "",
            # The payer check is read by the key's lookup (one round trip fewer).
            work=lambda read=None: self._checkout(request, body, None if read is None else (wallet, read)),
            retryable_codes=RETRYABLE_REFUSALS,
            also_read=checkout_payer_check_sql(user=request.user, wallet=wallet) if key else None,
        )
        if outcome.refusal == "in_progress":
            raise ApiError(
                "idempotency_in_progress",
                "A request with this Idempotency-Key is still being processed.",
                status_code=409,
            )
        if outcome.refusal == "mismatch":
            raise ApiError(
                "idempotency_mismatch",
                "This Idempotency-Key was used with a different request body.",
                status_code=409,
            )
        response = Response(outcome.body, status=outcome.status)
        if outcome.replayed:
            log.info("checkout.idempotent_replay", user_id=request.user.pk, transaction_id=outcome.transaction_id)
            response["Idempotent-Replayed"] = "true"
        return response

    def _checkout(self, request, body, payer_verified=None):
        """(status, body, write): the answer, and what writes the checkout (None for a refusal)."""
        serializer = CheckoutRequestSerializer(data=body)
        if not serializer.is_valid():
            fields = {k: [str(e) for e in v] for k, v in serializer.errors.items()}
            return 400, error_body("validation_error", "The request is not valid.", fields), None
        data = serializer.validated_data
        try:
            prepared = checkout_prepare(
                user=request.user,
                plan_slug=data["plan"],
                payer_address=data["wallet"],
                network_slug=data.get("network"),
                token_symbol=data.get("token"),
                periods=data.get("periods", 1),
                payer_verified=payer_verified,
            )
        except ServiceError as exc:  # the idempotency record stores the same answer the handler would give
            status_code, body = service_error_response(exc)
            return status_code, body, None
        # Rendered from the rows in memory before they are written (with the idempotency key's row, one statement).
        answer = render_new_checkout(prepared.tx, [prepared.history])
        return 201, answer, lambda **key_row: checkout_write(prepared, **key_row)


class CheckoutDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="checkout_retrieve", responses={200: CheckoutSerializer}, tags=["checkout"])
    def get(self, request, public_id):
        return Response(CheckoutSerializer(_load(request.user, public_id)).data)


class CheckoutTxView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "checkout_tx"

    @extend_schema(
        operation_id="checkout_report_tx",
        request=TxReportSerializer,
        responses={
            200: CheckoutSerializer,
            400: OpenApiResponse(description="invalid_tx_hash"),
            409: OpenApiResponse(description="invalid_state / checkout_expired / too_many_tx_hashes"),
            429: OpenApiResponse(description="throttled (scope checkout_tx)"),
        },
        tags=["checkout"],
    )
    def post(self, request, public_id):
        tx = _load(request.user, public_id)
        serializer = TxReportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        transaction_submit(tx=tx, tx_hash=serializer.validated_data["tx_hash"], actor=f"user:{request.user.pk}")
        return Response(CheckoutSerializer(_load(request.user, public_id)).data, status=status.HTTP_200_OK)
