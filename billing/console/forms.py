"""Console forms. They only parse what the browser sends into the admin API's payload shape; validation
is the admin API serializers' and the catalog services' (their errors are put back on these fields)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from django import forms
from django.conf import settings
from django.utils import timezone
from eth_utils import is_address, to_checksum_address

from billing.fields import from_display
from billing.models import Network, PaymentContract, PaymentProvider, Token, TxStatus


def _network_choices() -> list[tuple[str, str]]:
    return [(n.slug, f"{n.name} ({n.slug})") for n in Network.objects.order_by("slug")]


class ProviderForm(forms.Form):
    """The admin API's provider fields: `networks`, `supported_tokens` (SYMBOL@network) and
    `default_network` are sent as fields; the backend builds `config` from them."""

    slug = forms.CharField(required=False, max_length=200)
    title = forms.CharField(required=False, max_length=300)
    type = forms.ChoiceField(required=False)
    enabled = forms.BooleanField(required=False, initial=True)
    priority = forms.CharField(required=False, max_length=10, help_text="Lower is preferred at checkout.")
    networks = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="Networks this provider takes payments on."
    )
    supported_tokens = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="Tokens, each on one of its networks."
    )
    default_network = forms.ChoiceField(required=False)
    contract_slug = forms.ChoiceField(required=False, label="Contract")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["type"].choices = [(t, t) for t in sorted(settings.BILLING_PROVIDERS)]
        networks = _network_choices()
        self.fields["networks"].choices = networks
        self.fields["default_network"].choices = [("", "—")] + networks
        self.fields["supported_tokens"].choices = [
            (f"{t.symbol}@{t.network.slug}", f"{t.symbol}@{t.network.slug}")
            for t in Token.objects.select_related("network").order_by("network__slug", "symbol")
        ]
        self.fields["contract_slug"].choices = [("", "—")] + [
            (c.slug, f"{c.slug} ({c.network.slug})")
            for c in PaymentContract.objects.select_related("network").only("slug", "network__slug")
        ]

    @classmethod
    def initial_for(cls, provider: PaymentProvider | None) -> dict:
        if provider is None:
            return {"type": "evm", "enabled": True, "priority": "100"}
        return {
            "slug": provider.slug,
            "title": provider.title,
            "type": provider.type,
            "enabled": provider.enabled,
            "priority": str(provider.priority),
            "networks": [n.slug for n in provider.networks.all()],
            "supported_tokens": [f"{t.symbol}@{t.network.slug}" for t in provider.supported_tokens.all()],
            "default_network": provider.default_network.slug if provider.default_network_id else "",
            "contract_slug": provider.contract.slug if provider.contract_id else "",
        }

    def payload(self) -> dict:
        """The JSON body the admin API would receive for this form: what the serializer validates."""
        data = self.cleaned_data if self.is_bound and hasattr(self, "cleaned_data") else {}
        priority = (data.get("priority") or "").strip()
        return {
            "slug": (data.get("slug") or "").strip(),
            "title": (data.get("title") or "").strip(),
            "type": data.get("type") or "",
            "enabled": bool(data.get("enabled")),
            "priority": int(priority) if priority.isdigit() else priority,
            "networks": list(data.get("networks") or []),
            "supported_tokens": list(data.get("supported_tokens") or []),
            "default_network": data.get("default_network") or None,
            "contract_slug": data.get("contract_slug") or None,
        }


SORTS = {"newest": "Newest first", "oldest": "Oldest first"}


class TransactionFilterForm(forms.Form):
    """Every filter of the transactions tab; all optional, all kept in the URL."""

    status = forms.ChoiceField(required=False, choices=[("", "any status")] + list(TxStatus.choices))
    provider = forms.ChoiceField(required=False)
    contract = forms.ChoiceField(required=False)
    network = forms.ChoiceField(required=False)
    token = forms.ChoiceField(required=False)
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    amount_min = forms.CharField(required=False, label="Amount ≥")
    amount_max = forms.CharField(required=False, label="Amount ≤")
    wallet = forms.CharField(required=False, label="Wallet (payer)")
    tx_hash = forms.CharField(required=False, label="Tx hash")
    sort = forms.ChoiceField(required=False, choices=list(SORTS.items()))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = [("", "any provider")] + [
            (s, s) for s in PaymentProvider.objects.order_by("slug").values_list("slug", flat=True)
        ]
        self.fields["contract"].choices = [("", "any contract")] + [
            (s, s) for s in PaymentContract.objects.order_by("slug").values_list("slug", flat=True)
        ]
        self.fields["network"].choices = [("", "any network")] + [
            (s, s) for s in Network.objects.order_by("slug").values_list("slug", flat=True)
        ]
        self.fields["token"].choices = [("", "any token")] + [
            (s, s) for s in Token.objects.order_by("symbol").values_list("symbol", flat=True).distinct()
        ]
        token_hint = "in token units when a token is chosen, else in the smallest unit"
        self.fields["amount_min"].help_text = token_hint

    def _amount(self, name: str) -> int | None:
        raw = (self.cleaned_data.get(name) or "").strip().replace(",", "")
        if not raw:
            return None
        symbol = self.cleaned_data.get("token")
        decimals = set(Token.objects.filter(symbol=symbol).values_list("decimals", flat=True)) if symbol else set()
        try:
            if len(decimals) == 1:
                value = from_display(Decimal(raw), decimals.pop())
            elif raw.isdigit():
                value = int(raw)
            else:
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            self.add_error(name, "A number (token units when a token is chosen, else an integer).")
            return None
        if value < 0:
            self.add_error(name, "Must not be negative.")
            return None
        return value

    def clean_wallet(self) -> str:
        value = (self.cleaned_data.get("wallet") or "").strip()
        if value and not is_address(value):
            raise forms.ValidationError("An EVM address (0x + 40 hex digits).")
        return to_checksum_address(value) if value else ""

    def clean_tx_hash(self) -> str:
        value = (self.cleaned_data.get("tx_hash") or "").strip()
        if value and not (value.startswith("0x") and len(value) == 66):
            raise forms.ValidationError("A transaction hash (0x + 64 hex digits).")
        return value

    def search_kwargs(self) -> dict:
        """Arguments of billing.selectors.transaction_search (call after is_valid())."""
        data = self.cleaned_data
        tz = timezone.get_current_timezone()
        created_from = created_to = None
        if data.get("date_from"):
            created_from = timezone.make_aware(datetime.combine(data["date_from"], time.min), tz)
        if data.get("date_to"):
            created_to = timezone.make_aware(datetime.combine(data["date_to"] + timedelta(days=1), time.min), tz)
        return {
            "status": data.get("status") or "",
            "provider": data.get("provider") or "",
            "contract": data.get("contract") or "",
            "network": data.get("network") or "",
            "token": data.get("token") or "",
            "created_from": created_from,
            "created_to": created_to,
            "amount_min": self._amount("amount_min"),
            "amount_max": self._amount("amount_max"),
            "wallet": data.get("wallet") or "",
            "tx_hash": data.get("tx_hash") or "",
        }


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Why; kept in the status history and the audit log.")


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value back (RPC URLs carry keys), not even after a refused POST."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


class NetworkRpcForm(forms.Form):
    """A network's RPC endpoint list as the admin API takes it: existing endpoints by id (their URL kept
    unless a new one is typed: reads are masked, only writes set them), new ones by URL."""

    confirmation_depth = forms.CharField(required=False, label="Confirmation depth")
    new_urls = forms.CharField(
        required=False,
        label="Add endpoints",
        widget=WriteOnlyTextarea(attrs={"rows": 2, "autocomplete": "off"}),
        help_text="One URL per line, appended after the current ones. Write-only: never shown again.",
    )


class CryptoConfigForm(forms.Form):
    """The admin API's crypto-config fields (CryptoConfigSerializer)."""

    max_retries = forms.CharField(required=False, label="Retries per endpoint")
    backoff_base_ms = forms.CharField(required=False, label="Backoff base (ms)")
    backoff_max_ms = forms.CharField(required=False, label="Backoff max (ms)")
    request_timeout_seconds = forms.CharField(required=False, label="Request timeout (s)")
    gas_cap_wei = forms.CharField(required=False, label="Gas cap (wei per gas)")
    stuck_tx_seconds = forms.CharField(required=False, label="Replace a stuck tx after (s)")
    fee_bump_percent = forms.CharField(required=False, label="Fee bump (%)")
    get_logs_max_range = forms.CharField(required=False, label="eth_getLogs max range (blocks)")
    fallback_networks = forms.CharField(
        required=False,
        label="Fallback networks",
        help_text="Network slugs in checkout's fallback order, comma separated.",
    )

    NUMBER_FIELDS = (
        "max_retries",
        "backoff_base_ms",
        "backoff_max_ms",
        "request_timeout_seconds",
        "gas_cap_wei",
        "stuck_tx_seconds",
        "fee_bump_percent",
        "get_logs_max_range",
    )

    def payload(self) -> dict:
        """A partial update: the fields left empty are not sent (the stored values stay)."""
        values = {name: (self.cleaned_data.get(name) or "").strip() for name in self.NUMBER_FIELDS}
        data: dict = {name: value for name, value in values.items() if value}
        data["fallback_networks"] = [
            s.strip() for s in (self.cleaned_data.get("fallback_networks") or "").split(",") if s.strip()
        ]
        return data
