"""Overview API: query parameters (validated here, 400 with field errors) and the shapes of the answers
(documentation for the OpenAPI schema; the views return the selectors' dicts as they are)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from overview import selectors
from overview.periods import PERIOD_CHOICES, PeriodError, resolve_period

# --- parameters ----------------------------------------------------------------------------------------


class PeriodParams(serializers.Serializer):
    period = serializers.ChoiceField(choices=PERIOD_CHOICES, required=False)
    include_testnets = serializers.BooleanField(required=False, default=False)

    def get_fields(self):
        fields = super().get_fields()
        # `from` is a Python keyword: declared here so the query parameter keeps its name.
        fields["from"] = serializers.CharField(required=False, allow_blank=True, max_length=40)
        fields["to"] = serializers.CharField(required=False, allow_blank=True, max_length=40)
        return fields

    def validate(self, attrs):
        try:
            attrs["window"] = resolve_period(
                name=attrs.get("period"),
                start=attrs.get("from") or None,
                end=attrs.get("to") or None,
                now=timezone.now(),
            )
        except PeriodError as exc:
            raise serializers.ValidationError(exc.fields)
        return attrs


class RevenueParams(PeriodParams):
    granularity = serializers.ChoiceField(choices=selectors.GRANULARITIES, required=False, default="day")
    basis = serializers.ChoiceField(choices=("gross", "net"), required=False, default="gross")
    split = serializers.ChoiceField(choices=selectors.SPLITS, required=False, default="none")
    token = serializers.CharField(required=False, allow_blank=True, max_length=100)
    network = serializers.CharField(required=False, allow_blank=True, max_length=64)
    plan = serializers.CharField(required=False, allow_blank=True, max_length=64)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        catalog = selectors.Catalog()
        errors: dict[str, list[str]] = {}
        token = network = plan = None
        if attrs.get("token"):
            token = catalog.by_key.get(attrs["token"])
            if token is None or token.id is None:
                errors["token"] = ["Unknown token: SYMBOL@network-slug, e.g. USDC@ethereum."]
        if attrs.get("network"):
            found = catalog.network_by_slug.get(attrs["network"])
            network = found.pk if found else None
            if found is None:
                errors["network"] = ["Unknown network slug."]
        if attrs.get("plan"):
            found_plan = catalog.plan_by_slug.get(attrs["plan"])
            plan = found_plan.id if found_plan else None
            if found_plan is None:
                errors["plan"] = ["Unknown plan slug."]
        if selectors.count_buckets(attrs["window"], attrs["granularity"]) > selectors.MAX_SERIES_POINTS:
            errors["granularity"] = [
                f"More than {selectors.MAX_SERIES_POINTS} points: choose a coarser granularity or a shorter window."
            ]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["filters"] = selectors.SeriesFilter(token=token, network_id=network, plan_id=plan)
        attrs["catalog"] = catalog
        return attrs


class ListParams(PeriodParams):
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=500)


# --- answers (documentation) ---------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()

    def get_fields(self):
        fields = super().get_fields()
        # `fields` would shadow Serializer.fields as an attribute.
        fields["fields"] = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), help_text="Messages per query parameter."
        )
        return fields


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class PeriodSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=PERIOD_CHOICES)
    previous_from = serializers.DateTimeField()
    previous_to = serializers.DateTimeField()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(help_text="Start of the window (inclusive, UTC).")
        fields["to"] = serializers.DateTimeField(help_text="End of the window (exclusive, UTC).")
        return fields


class TokenAmountSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="SYMBOL@network-slug")
    symbol = serializers.CharField()
    network = serializers.CharField()
    decimals = serializers.IntegerField()
    amount = serializers.CharField(help_text="Integer in the token's smallest unit (signed for deltas).")
    display = serializers.CharField(help_text="The same amount in whole tokens, exact.")
    usd = serializers.CharField(help_text="USD estimate of this token's part, to the cent.")


class MoneySerializer(serializers.Serializer):
    usd = serializers.CharField(help_text="USD estimate, to the cent (from the rate stored on each payment).")
    by_token = TokenAmountSerializer(many=True)


class MoneyKpiSerializer(serializers.Serializer):
    current = MoneySerializer()
    previous = MoneySerializer()
    delta = MoneySerializer(help_text="current - previous, signed.")
    delta_percent = serializers.CharField(allow_null=True, help_text="USD change in percent; null when previous is 0.")


class CountKpiSerializer(serializers.Serializer):
    current = serializers.IntegerField()
    previous = serializers.IntegerField()
    delta = serializers.IntegerField()
    delta_percent = serializers.CharField(allow_null=True)


class RatioKpiSerializer(serializers.Serializer):
    current = serializers.CharField(allow_null=True, help_text="Decimal string; null when undefined (0 of 0).")
    previous = serializers.CharField(allow_null=True)
    delta = serializers.CharField(allow_null=True)
    delta_percent = serializers.CharField(allow_null=True)


class KpisSerializer(serializers.Serializer):
    mrr = MoneyKpiSerializer()
    arpu_usd = RatioKpiSerializer()
    active_subscriptions = CountKpiSerializer()
    new_subscriptions = CountKpiSerializer()
    churned_subscriptions = CountKpiSerializer()
    churn_rate = RatioKpiSerializer()
    past_due_subscriptions = CountKpiSerializer()
    revenue_gross = MoneyKpiSerializer()
    refunds = MoneyKpiSerializer()
    network_fees = MoneyKpiSerializer()
    revenue_net = MoneyKpiSerializer()
    debt = MoneyKpiSerializer()
    debt_past_due = MoneyKpiSerializer()
    debt_lapsed = MoneyKpiSerializer()
    lapsed_subscriptions = CountKpiSerializer()
    checkouts = CountKpiSerializer()
    conversion = RatioKpiSerializer()
    failure_rate = RatioKpiSerializer()


class SegmentSerializer(serializers.Serializer):
    plan = serializers.CharField()
    plan_title = serializers.CharField()
    interval = serializers.CharField()
    experiment = serializers.CharField(allow_blank=True)
    variant = serializers.CharField(allow_blank=True)
    token = serializers.CharField()
    network = serializers.CharField()
    active_subscriptions = serializers.IntegerField()
    mrr = MoneySerializer()


class DashboardSerializer(serializers.Serializer):
    period = PeriodSerializer()
    include_testnets = serializers.BooleanField()
    kpis = KpisSerializer()
    segments = SegmentSerializer(many=True)


class RevenuePointSerializer(MoneySerializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class RevenueSeriesSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="'all', or the token / network / plan of the split.")
    points = RevenuePointSerializer(many=True)


class RevenueFiltersSerializer(serializers.Serializer):
    token = serializers.CharField(allow_null=True)
    network = serializers.CharField(allow_null=True)
    plan = serializers.CharField(allow_null=True)


class RevenueTotalsSerializer(serializers.Serializer):
    gross = MoneyKpiSerializer()
    refunds = MoneyKpiSerializer()
    fees = MoneyKpiSerializer()
    net = MoneyKpiSerializer()


class RevenueSerializer(serializers.Serializer):
    period = PeriodSerializer()
    include_testnets = serializers.BooleanField()
    granularity = serializers.ChoiceField(choices=selectors.GRANULARITIES)
    basis = serializers.ChoiceField(choices=("gross", "net"))
    split = serializers.ChoiceField(choices=selectors.SPLITS)
    filters = RevenueFiltersSerializer()
    totals = RevenueTotalsSerializer()
    series = RevenueSeriesSerializer(many=True)


class LatencySerializer(serializers.Serializer):
    p50 = serializers.CharField(allow_null=True, help_text="Seconds from submitted to confirmed (median).")
    p95 = serializers.CharField(allow_null=True)
    samples = serializers.IntegerField()


class FollowerSerializer(serializers.Serializer):
    contract = serializers.CharField()
    enabled = serializers.BooleanField()
    last_block = serializers.IntegerField(allow_null=True)
    head_block = serializers.IntegerField(allow_null=True)
    lag_blocks = serializers.IntegerField(allow_null=True)
    behind_depth_blocks = serializers.IntegerField(allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)


class EndpointHealthSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    url = serializers.CharField(help_text="Masked: keys never leave the server.")
    enabled = serializers.BooleanField()
    healthy = serializers.BooleanField()
    last_checked_at = serializers.DateTimeField(allow_null=True)
    last_ok_at = serializers.DateTimeField(allow_null=True)
    last_latency_ms = serializers.IntegerField(allow_null=True)
    last_head_block = serializers.IntegerField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    last_error = serializers.CharField(allow_blank=True)


class NetworkFiguresSerializer(serializers.Serializer):
    network = serializers.CharField()
    name = serializers.CharField()
    chain_id = serializers.IntegerField()
    is_testnet = serializers.BooleanField()
    enabled = serializers.BooleanField()
    confirmation_depth = serializers.IntegerField()
    volume = MoneyKpiSerializer()
    transactions = CountKpiSerializer()
    checkouts = CountKpiSerializer()
    failed = CountKpiSerializer()
    failure_rate = RatioKpiSerializer()
    confirmation_latency_seconds = LatencySerializer()
    head_block = serializers.IntegerField(allow_null=True)
    followers = FollowerSerializer(many=True)
    rpc_endpoints = EndpointHealthSerializer(many=True)
    rpc_healthy = serializers.IntegerField()
    rpc_enabled = serializers.IntegerField()


class NetworksSerializer(serializers.Serializer):
    period = PeriodSerializer()
    include_testnets = serializers.BooleanField()
    networks = NetworkFiguresSerializer(many=True)


class BalanceSerializer(serializers.Serializer):
    token = serializers.CharField()
    symbol = serializers.CharField()
    decimals = serializers.IntegerField()
    amount = serializers.CharField(allow_null=True, help_text="Smallest unit; null when never read.")
    display = serializers.CharField(allow_null=True)
    usd = serializers.CharField(allow_null=True)
    read_at = serializers.DateTimeField(allow_null=True, help_text="When the chain answered this amount.")
    stale = serializers.BooleanField(help_text="Older than a minute, or the last read failed.")
    error = serializers.CharField(allow_blank=True)


class ContractPayoutsSerializer(serializers.Serializer):
    contract = serializers.CharField()
    network = serializers.CharField()
    address = serializers.CharField()
    explorer_url = serializers.CharField(allow_blank=True)
    enabled = serializers.BooleanField()
    withdrawn = MoneyKpiSerializer()
    balances = BalanceSerializer(many=True)


class WithdrawalSerializer(serializers.Serializer):
    contract = serializers.CharField()
    network = serializers.CharField()
    token = serializers.CharField()
    amount = serializers.CharField()
    display = serializers.CharField()
    usd = serializers.CharField()
    to = serializers.CharField(allow_blank=True)
    tx_hash = serializers.CharField()
    block_number = serializers.IntegerField()
    explorer_url = serializers.CharField(allow_blank=True)
    at = serializers.DateTimeField()


class PayoutsSerializer(serializers.Serializer):
    period = PeriodSerializer()
    include_testnets = serializers.BooleanField()
    withdrawn = MoneyKpiSerializer()
    held = MoneySerializer()
    contracts = ContractPayoutsSerializer(many=True)
    withdrawals = WithdrawalSerializer(many=True)


class IncidentSerializer(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.ChoiceField(choices=selectors.INCIDENT_KINDS)
    severity = serializers.ChoiceField(choices=("info", "warning", "critical"))
    at = serializers.DateTimeField()
    title = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)
    network = serializers.CharField(allow_null=True)
    count = serializers.IntegerField()
    link = serializers.CharField(help_text="API path of what the incident is about.")
    admin_url = serializers.CharField(help_text="Console (admin) page of it.")


class IncidentCountsSerializer(serializers.Serializer):
    failed_payment_spike = serializers.IntegerField()
    rpc_degraded = serializers.IntegerField()
    follower_behind = serializers.IntegerField()
    reorg = serializers.IntegerField()
    needs_review = serializers.IntegerField()
    unmatched_transfer = serializers.IntegerField()
    dead_letter = serializers.IntegerField()


class IncidentsSerializer(serializers.Serializer):
    period = PeriodSerializer()
    counts = IncidentCountsSerializer()
    incidents = IncidentSerializer(many=True)


class IntervalSerializer(serializers.Serializer):
    low = serializers.CharField()
    high = serializers.CharField()


class VariantSerializer(serializers.Serializer):
    variant = serializers.CharField()
    plans = serializers.ListField(child=serializers.CharField())
    checkouts = serializers.IntegerField()
    confirmed = serializers.IntegerField()
    conversion = serializers.CharField(allow_null=True)
    conversion_ci = IntervalSerializer(allow_null=True)
    revenue = MoneySerializer()
    paying_customers = serializers.IntegerField()
    arpu_usd = serializers.CharField(allow_null=True)


class ComparisonSerializer(serializers.Serializer):
    variant = serializers.CharField()
    control = serializers.CharField()
    difference = serializers.CharField(allow_null=True, help_text="Conversion of the variant minus the control's.")
    ci_low = serializers.CharField(allow_null=True)
    ci_high = serializers.CharField(allow_null=True)
    significant = serializers.BooleanField(allow_null=True, help_text="The interval excludes 0.")


class ExperimentSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    control = serializers.CharField()
    variants = VariantSerializer(many=True)
    comparisons = ComparisonSerializer(many=True)


class ExperimentsSerializer(serializers.Serializer):
    period = PeriodSerializer()
    include_testnets = serializers.BooleanField()
    confidence = serializers.CharField()
    method = serializers.CharField()
    experiments = ExperimentSerializer(many=True)
