"""Wallet linking by Sign-In with Ethereum. Any signed-in user; throttled (scope "siwe")."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from profiles import selectors, services
from profiles.api.serializers import SiweNonceSerializer, SiweVerifySerializer, WalletSerializer


@extend_schema(tags=["profile"], summary="Own linked wallets, primary first")
class WalletListView(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = WalletSerializer
    pagination_class = None
    filter_backends: list = []

    def get_queryset(self):
        return selectors.wallets_for_user(user=self.request.user)


class SiweNonceView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "siwe"

    @extend_schema(
        tags=["profile"],
        summary="A single-use nonce (10 minutes) and the domain, URI and chain ids the message must carry",
        request=None,
        responses={201: SiweNonceSerializer},
    )
    def post(self, request: Request) -> Response:
        nonce = services.siwe_nonce_issue(user=request.user)
        params = services.siwe_parameters()
        body = {
            "nonce": nonce.nonce,
            "expires_at": nonce.expires_at,
            "domain": params.domain,
            "uri": params.uri,
            "chain_ids": list(params.chain_ids),
            "version": "1",
        }
        return Response(SiweNonceSerializer(body).data, status=status.HTTP_201_CREATED)


class SiweVerifyView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "siwe"

    @extend_schema(
        tags=["profile"],
        summary="Verify a signed EIP-4361 message and link its wallet to the caller",
        request=SiweVerifySerializer,
        responses={200: WalletSerializer},
    )
    def post(self, request: Request) -> Response:
        body = SiweVerifySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wallet = services.wallet_link_by_siwe(
            user=request.user, message=body.validated_data["message"], signature=body.validated_data["signature"]
        )
        return Response(WalletSerializer(wallet).data)
