from __future__ import annotations

from rest_framework import serializers

from profiles.models import Wallet


class WalletSerializer(serializers.ModelSerializer):
    class Meta:
        model = Wallet
        fields = ["address", "chain_id", "is_primary", "verified_at", "created_at"]
        read_only_fields = fields


class SiweNonceSerializer(serializers.Serializer):
    nonce = serializers.CharField()
    expires_at = serializers.DateTimeField()
    domain = serializers.CharField(help_text="The domain the message must name.")
    uri = serializers.CharField(help_text="The URI the message must name (or a path under it).")
    chain_ids = serializers.ListField(child=serializers.IntegerField(), help_text="Accepted chain ids.")
    version = serializers.CharField()


class SiweVerifySerializer(serializers.Serializer):
    message = serializers.CharField(max_length=4000, trim_whitespace=False, help_text="The EIP-4361 message.")
    signature = serializers.RegexField(
        r"^0x[0-9a-fA-F]{130}$", help_text="EIP-191 personal_sign signature of the message (65 bytes, hex)."
    )
