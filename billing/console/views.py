"""The Payments workspace: one page, tabs Providers, Contracts, Transactions, Crypto, Operations.

Every tab is a URL (/admin/payments/<tab>/) that renders the whole page on a normal request and only the
workspace on an htmx tab switch; filters, the keyset cursor, the sort and the open drawer (`open=`,
`edit=`) are query parameters, so reload and back show the same state. Reads go through billing.selectors,
writes through the admin API serializers (catalog services) and billing.services.operator, inside
`acting_user`. Support sees every page with no write control; its POSTs are 403 (console_view).
"""

from __future__ import annotations

import base64
import json

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError as DrfValidationError

from billing import selectors
from billing.api.serializers import (
    AuditEntrySerializer,
    CryptoConfigSerializer,
    NetworkSerializer,
    ProviderSerializer,
    TransactionDetailSerializer,
)
from billing.console.forms import SORTS, CryptoConfigForm, NetworkRpcForm, ProviderForm, TransactionFilterForm
from billing.models import (
    InboundEvent,
    OutboxDelivery,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    RefundStatus,
    Token,
    TxStatus,
    can_transition,
)
from billing.services import operator
from billing_project.admin_site import format_amount, mask_secret_url
from billing_project.console import can_write, console_view, query_url, render_console
from billing_project.logging import mask_url

TABS = (
    ("providers", "Providers", "storefront"),
    ("contracts", "Contracts", "description"),
    ("transactions", "Transactions", "receipt_long"),
    ("crypto", "Crypto", "tune"),
    ("operations", "Operations", "build"),
)
PAGE_SIZE = 50
COUNT_CAP = 1000
LIVE_STATUSES = (TxStatus.PENDING, TxStatus.SUBMITTED)


def tab_url(key: str) -> str:
    return reverse(f"admin:console-payments-{key}")


def _pretty(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _workspace(
    request: HttpRequest, tab: str, context: dict, *, status: int = 200, retarget: bool = False
) -> HttpResponse:
    """The page, or (htmx, target #workspace) the workspace: tabs plus the tab's content, and the drawer
    out of band so a tab switch closes the previous tab's drawer."""
    context = {
        "title": "Payments",
        "console_page": "payments",
        "tab": tab,
        "tabs": [{"key": k, "title": t, "icon": i, "url": tab_url(k)} for k, t, i in TABS],
        "tab_template": f"console/payments/{tab}.html",
        **context,
    }
    return render_console(
        request,
        page="console/payments/page.html",
        fragment="console/payments/workspace.html",
        target=None if retarget else "workspace",
        context=context,
        status=status,
    )


def _fragment(request: HttpRequest, template: str, context: dict, *, status: int = 200) -> HttpResponse:
    return render(request, template, {**context, "can_write": can_write(request)}, status=status)


def _action_error(message: str, status: int = 409) -> HttpResponse:
    response = HttpResponse(status=status)
    response["X-Console-Error"] = message[:300]
    return response


# --- Providers --------------------------------------------------------------------------------------


def _provider_rows() -> list[dict]:
    rows = []
    for provider in selectors.provider_queryset():
        rows.append(
            {
                "obj": provider,
                "networks": [n.slug for n in provider.networks.all()],
                "tokens": [f"{t.symbol}@{t.network.slug}" for t in provider.supported_tokens.all()],
            }
        )
    return rows


def _provider_detail_context(provider: PaymentProvider) -> dict:
    data = ProviderSerializer(provider).data
    return {
        "provider": provider,
        "api": data,
        "config_json": _pretty(data["config"]),
        "api_json": _pretty({k: v for k, v in data.items() if k != "config"}),
        "plans": list(provider.plans.order_by("sort_order", "slug").values("slug", "title", "is_active")),
    }


def _provider_form_context(request, provider: PaymentProvider | None, form: ProviderForm) -> dict:
    return {
        "provider": provider,
        "form": form,
        "form_url": (
            reverse("admin:console-payments-provider-save", args=[provider.slug])
            if provider
            else reverse("admin:console-payments-provider-create")
        ),
        "preview_url": reverse("admin:console-payments-provider-preview")
        + (f"?slug={provider.slug}" if provider else ""),
    }


@console_view
def providers_tab(request: HttpRequest) -> HttpResponse:
    context: dict = {"rows": _provider_rows()}
    open_slug, edit_slug = request.GET.get("open", ""), request.GET.get("edit", "")
    if open_slug:
        provider = selectors.provider_queryset().filter(slug=open_slug).first()
        if provider is not None:
            context.update(_provider_detail_context(provider), drawer_template="console/payments/provider_drawer.html")
    elif edit_slug and can_write(request):
        provider = None if edit_slug == "new" else selectors.provider_queryset().filter(slug=edit_slug).first()
        if provider is not None or edit_slug == "new":
            form = ProviderForm(initial=ProviderForm.initial_for(provider))
            context.update(
                _provider_form_context(request, provider, form), drawer_template="console/payments/provider_form.html"
            )
    return _workspace(request, "providers", context)


@console_view
def provider_drawer(request: HttpRequest, slug: str) -> HttpResponse:
    provider = get_object_or_404(selectors.provider_queryset(), slug=slug)
    return _fragment(request, "console/payments/provider_drawer.html", _provider_detail_context(provider))


@console_view
def provider_form(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    if not can_write(request):
        return _action_error("Support may read but not change providers.", status=403)
    provider = get_object_or_404(selectors.provider_queryset(), slug=slug) if slug else None
    form = ProviderForm(initial=ProviderForm.initial_for(provider))
    return _fragment(request, "console/payments/provider_form.html", _provider_form_context(request, provider, form))


def _provider_serializer(provider: PaymentProvider | None, form: ProviderForm) -> ProviderSerializer:
    return ProviderSerializer(provider, data=form.payload()) if provider else ProviderSerializer(data=form.payload())


def _put_errors(form, errors: dict) -> None:
    for field, messages in errors.items():
        messages = messages if isinstance(messages, list) else [messages]
        flat = [str(m) if not isinstance(m, dict) else json.dumps(m) for m in messages]
        form.add_error(field if field in form.fields else None, flat)


class _Rollback(Exception):
    pass


def _provider_dry_run(provider: PaymentProvider | None, form: ProviderForm) -> tuple[dict | None, dict]:
    """Validate and save through the serializer (and so the catalog service) in a transaction that is always
    rolled back: what would be stored, or the field errors. Nothing is kept, no audit entry survives."""
    serializer = _provider_serializer(provider, form)
    if not serializer.is_valid():
        return None, dict(serializer.errors)
    try:
        with transaction.atomic():
            saved = serializer.save()
            result = ProviderSerializer(selectors.provider_queryset().get(pk=saved.pk)).data
            raise _Rollback(result)
    except _Rollback as done:
        return done.args[0], {}
    except DrfValidationError as exc:
        return None, dict(exc.detail)


@console_view
def provider_preview(request: HttpRequest) -> HttpResponse:
    """The payload the form will send and the record it would produce (config built by the backend)."""
    slug = request.GET.get("slug", "")
    provider = get_object_or_404(selectors.provider_queryset(), slug=slug) if slug else None
    form = ProviderForm(request.POST)
    form.is_valid()
    result, errors = _provider_dry_run(provider, form)
    return _fragment(
        request,
        "console/payments/provider_preview.html",
        {
            "payload_json": _pretty(form.payload()),
            "result_json": _pretty(result["config"]) if result else "",
            "errors": {k: v if isinstance(v, list) else [v] for k, v in errors.items()},
            "form_errors": {k: list(v) for k, v in form.errors.items()},
        },
    )


@console_view
@require_POST
def provider_save(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    provider = get_object_or_404(selectors.provider_queryset(), slug=slug) if slug else None
    form = ProviderForm(request.POST)
    if form.is_valid():
        serializer = _provider_serializer(provider, form)
        if serializer.is_valid():
            try:
                with operator.acting_user(request.user):
                    saved = serializer.save()
            except DrfValidationError as exc:
                _put_errors(form, dict(exc.detail))
            else:
                # Back to the table (refreshed) with the saved provider's drawer open.
                fresh = selectors.provider_queryset().get(pk=saved.pk)
                context = {
                    "rows": _provider_rows(),
                    **_provider_detail_context(fresh),
                    "drawer_template": "console/payments/provider_drawer.html",
                    "saved_message": f"Provider {fresh.slug} saved.",
                }
                response = _workspace(request, "providers", context, retarget=True)
                response["HX-Retarget"] = "#workspace"
                response["HX-Reswap"] = "innerHTML"
                response["HX-Push-Url"] = query_url(tab_url("providers"), {}, open=fresh.slug)
                return response
        else:
            _put_errors(form, dict(serializer.errors))
    context = _provider_form_context(request, provider, form)
    return _fragment(request, "console/payments/provider_form.html", context, status=422)


# --- Contracts --------------------------------------------------------------------------------------


@console_view
def contracts_tab(request: HttpRequest) -> HttpResponse:
    cards = []
    for contract in selectors.contract_cards():
        cursor = getattr(contract, "cursor", None)
        cards.append(
            {
                "obj": contract,
                "explorer": contract.network.address_url(contract.address),
                "cursor": cursor,
                "cursor_error": mask_url(cursor.last_error)[:200] if cursor and cursor.last_error else "",
                "fallback": mask_secret_url(contract.fallback_rpc),
            }
        )
    return _workspace(request, "contracts", {"cards": cards, "selected": request.GET.get("events", "")})


@console_view
def contract_chain(request: HttpRequest, slug: str) -> HttpResponse:
    """Lazy part of a contract card: live head, lag, balances and signer check (reads the chain)."""
    from billing.chain.inspect import contract_chain_state

    contract = get_object_or_404(selectors.contract_queryset(), slug=slug)
    cursor = getattr(contract, "cursor", None) if hasattr(contract, "cursor") else None
    tokens = Token.objects.filter(network=contract.network, enabled=True).order_by("symbol")
    state = contract_chain_state(contract, tokens=tokens, cursor_block=cursor.last_block if cursor else None)
    balances = [
        {**b, "display": format_amount(Token(decimals=b["decimals"]).display(b["amount"]), b["symbol"])}
        for b in state.balances
        if b["amount"] is not None
    ]
    signer_events = _signer_set(contract)
    return _fragment(
        request,
        "console/payments/contract_chain.html",
        {"contract": contract, "state": state, "balances": balances, "signers": signer_events},
    )


def _signer_set(contract: PaymentContract) -> list[str]:
    """Signers as the stored SignerUpdated events leave them (the follower mirrors the contract's logs)."""
    allowed: dict[str, bool] = {}
    for event in selectors.contract_events(contract=contract).filter(name="SignerUpdated").order_by("block_number"):
        signer = (event.args or {}).get("signer")
        if signer:
            allowed[signer] = bool((event.args or {}).get("allowed"))
    return sorted(s for s, ok in allowed.items() if ok)


def _encode_cursor(values: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> dict | None:
    """None for the first page; a cursor that is not one of ours is a 404, not a silent first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, json.JSONDecodeError):
        raise Http404("Bad cursor.")
    if not isinstance(value, dict):
        raise Http404("Bad cursor.")
    return value


@console_view
def contract_events(request: HttpRequest, slug: str) -> HttpResponse:
    """The contract's event timeline, newest block first, 25 at a time (keyset on block, log index, id like
    GET /v1/billing/admin/contracts/{slug}/events); "Load more" appends the next page."""
    contract = get_object_or_404(selectors.contract_queryset(), slug=slug)
    qs = selectors.contract_events(contract=contract).order_by("-block_number", "-log_index", "-id")
    cursor = _decode_cursor(request.GET.get("cursor", ""))
    if cursor:
        try:
            b, li, pk = int(cursor["b"]), int(cursor["l"]), int(cursor["i"])
        except (KeyError, TypeError, ValueError):
            raise Http404("Bad cursor.")
        from django.db.models import Q

        qs = qs.filter(
            Q(block_number__lt=b) | Q(block_number=b, log_index__lt=li) | Q(block_number=b, log_index=li, id__lt=pk)
        )
    page = list(qs[:26])
    more = len(page) > 25
    page = page[:25]
    next_url = ""
    if more:
        last = page[-1]
        next_url = query_url(
            reverse("admin:console-payments-contract-events", args=[slug]),
            {},
            cursor=_encode_cursor({"b": last.block_number, "l": last.log_index, "i": last.pk}),
        )
    events = [
        {
            "obj": e,
            "tx_url": contract.network.tx_url(e.tx_hash),
            "block_url": contract.network.explorer_block_url.format(block=e.block_number)
            if contract.network.explorer_block_url
            else "",
            "amount": e.amount,
        }
        for e in page
    ]
    return _fragment(
        request,
        "console/payments/contract_events.html",
        {"contract": contract, "events": events, "next_url": next_url, "first_page": cursor is None},
    )


# --- Transactions -----------------------------------------------------------------------------------


def _tx_row(tx: PaymentTransaction, params: QueryDict | None = None) -> dict:
    """A table row; `params` is the page's query string (filters, cursor, sort) that opening the drawer
    keeps in the URL."""
    # One reverse() per row: the action URLs hang off the drawer's (50 rows x 5 reverses showed in profiles).
    base = reverse("admin:console-payments-transaction", args=[tx.public_id])
    return {
        "obj": tx,
        "open_url": query_url(tab_url("transactions"), params or QueryDict(""), open=str(tx.public_id)),
        "url": base,
        "row_url": base + "row/",
        "refund_url": base + "refund/",
        "reprocess_url": base + "reprocess/",
        "retry_refund_url": base + "retry-refund/",
        "amount": format_amount(tx.amount_display, tx.token.symbol),
        "explorer": tx.explorer_url,
        # Polled until settled: a pending/submitted payment, or a refund on its way (sent, or mined and not yet
        # seen by the ledger).
        "live": tx.status in LIVE_STATUSES
        or (tx.refund_status in (RefundStatus.IN_FLIGHT, RefundStatus.MINED) and tx.status != TxStatus.REFUNDED),
        "can_refund": _can_refund(tx),
        "can_retry_refund": _can_retry_refund(tx),
    }


def _can_refund(tx: PaymentTransaction) -> bool:
    """A first refund: none sent yet (a failed one offers Retry refund instead)."""
    return can_transition(tx.status, TxStatus.REFUNDED) and not tx.refund_outstanding and not tx.refund_status


def _can_retry_refund(tx: PaymentTransaction) -> bool:
    """The last refund failed (reverted, stuck at the gas cap, never sent) and the payment can still be refunded."""
    return tx.refund_status == RefundStatus.FAILED and can_transition(tx.status, TxStatus.REFUNDED)


def _keyset(qs, sort: str, cursor: dict | None):
    from django.db.models import Q

    newest = sort != "oldest"
    qs = qs.order_by("-created_at", "-id") if newest else qs.order_by("created_at", "id")
    if cursor:
        at = parse_datetime(str(cursor.get("t", "")))
        try:
            pk = int(cursor.get("i"))
        except (TypeError, ValueError):
            at = None
        if at is None:
            raise Http404("Bad cursor.")
        if newest:
            qs = qs.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=pk))
        else:
            qs = qs.filter(Q(created_at__gt=at) | Q(created_at=at, id__gt=pk))
    return qs


@console_view
def transactions_tab(request: HttpRequest) -> HttpResponse:
    # Always bound (an empty query string is "no filter"): one form, its choices queried once.
    form = TransactionFilterForm(request.GET.copy())
    rows: list[dict] = []
    next_url = ""
    count_text = ""
    kwargs = form.search_kwargs() if form.is_valid() else None
    if kwargs is not None and not form.errors:
        sort = form.cleaned_data.get("sort") or "newest"
        base = selectors.transaction_search(**kwargs)
        cursor = _decode_cursor(request.GET.get("cursor", ""))
        page = selectors.transaction_page(_keyset(base, sort, cursor), PAGE_SIZE + 1)
        if len(page) > PAGE_SIZE:
            page = page[:PAGE_SIZE]
            last = page[-1]
            next_url = query_url(
                tab_url("transactions"),
                request.GET,
                cursor=_encode_cursor({"t": last.created_at.isoformat(), "i": last.pk}),
                open=None,
            )
        rows = [_tx_row(tx, request.GET) for tx in page]
        # A capped count: never a full COUNT(*) over the ledger.
        counted = base.order_by()[: COUNT_CAP + 1].count()
        count_text = f"{COUNT_CAP:,}+" if counted > COUNT_CAP else f"{counted:,}"
    context = {
        "form": form,
        "rows": rows,
        "next_url": next_url,
        "first_url": query_url(tab_url("transactions"), request.GET, cursor=None, open=None),
        "paged": bool(request.GET.get("cursor")),
        "count_text": count_text,
        "sorts": SORTS,
    }
    open_id = request.GET.get("open", "")
    if open_id:
        detail = _tx_detail_context(open_id)
        if detail:
            context.update(detail, drawer_template="console/payments/transaction_drawer.html")
    return _workspace(request, "transactions", context)


def _tx_detail_context(public_id: str) -> dict | None:
    try:
        tx = selectors.transaction_detail(public_id=public_id)
    except DjangoValidationError:
        return None
    if tx is None:
        return None
    data = TransactionDetailSerializer(tx).data
    fee = None
    if tx.gas_used is not None and tx.effective_gas_price is not None:
        fee = {
            "gas_used": tx.gas_used,
            "gas_price": tx.effective_gas_price,
            "gas_price_gwei": format_amount(Token(decimals=9).display(tx.effective_gas_price), "gwei"),
            "fee": tx.fee,
            "fee_display": format_amount(tx.fee_display, tx.network.native_symbol),
        }
    events = [{"obj": e, "tx_url": tx.network.tx_url(e.tx_hash)} for e in selectors.transaction_chain_events(tx=tx)]
    return {
        "tx": tx,
        "row": _tx_row(tx),
        "api": data,
        "history": list(tx.status_history.all()),
        "fee": fee,
        "events": events,
        "operator_txs": list(tx.operator_transactions.all()),
    }


@console_view
def transaction_drawer(request: HttpRequest, public_id: str) -> HttpResponse:
    context = _tx_detail_context(public_id)
    if context is None:
        raise Http404("No such transaction.")
    return _fragment(request, "console/payments/transaction_drawer.html", context)


@console_view
def transaction_row(request: HttpRequest, public_id: str) -> HttpResponse:
    """One table row, polled while the payment is pending or submitted (htmx `every 5s`)."""
    try:
        tx = selectors.transaction_queryset().filter(public_id=public_id).first()
    except DjangoValidationError:
        tx = None
    if tx is None:
        raise Http404("No such transaction.")
    params = QueryDict("")
    current = getattr(getattr(request, "htmx", None), "current_url", None) or ""
    if "?" in current:
        params = QueryDict(current.split("?", 1)[1])
    return _fragment(request, "console/payments/transaction_row.html", {"row": _tx_row(tx, params)})


def _run_tx_action(request: HttpRequest, public_id: str, action) -> HttpResponse:
    tx = selectors.transaction_queryset().filter(public_id=public_id).first()
    if tx is None:
        raise Http404("No such transaction.")
    reason = (request.POST.get("reason") or request.headers.get("HX-Prompt") or "").strip()
    if not reason:
        return _action_error("A reason is required (it is kept in the status history and the audit log).", 400)
    try:
        result = action(tx=tx, actor=request.user, reason=reason[:500])
    except operator.OperatorActionError as exc:
        return _action_error(exc.message)
    context = _tx_detail_context(str(tx.public_id)) or {}
    context["action_message"] = result.detail
    context["action_result"] = result.result
    return _fragment(request, "console/payments/transaction_drawer.html", context)


@console_view
@require_POST
def transaction_refund(request: HttpRequest, public_id: str) -> HttpResponse:
    return _run_tx_action(request, public_id, operator.transaction_refund)


@console_view
@require_POST
def transaction_reprocess(request: HttpRequest, public_id: str) -> HttpResponse:
    return _run_tx_action(request, public_id, operator.transaction_reprocess)


@console_view
@require_POST
def transaction_retry_refund(request: HttpRequest, public_id: str) -> HttpResponse:
    """A new attempt for a refund that failed (reverted, stuck at the gas cap, never sent)."""
    return _run_tx_action(request, public_id, operator.transaction_refund_retry)


# --- Crypto -----------------------------------------------------------------------------------------


def _crypto_context(request, *, config_form=None, network_forms=None) -> dict:
    config = selectors.crypto_config_get()
    api = CryptoConfigSerializer(config).data
    if config_form is None:
        config_form = CryptoConfigForm(
            initial={
                **{k: api[k] for k in CryptoConfigForm.NUMBER_FIELDS},
                "fallback_networks": ", ".join(api["fallback_networks"]),
            }
        )
    networks = []
    for network in selectors.network_queryset().order_by("slug"):
        form = (network_forms or {}).get(network.slug) or NetworkRpcForm(
            initial={"confirmation_depth": network.confirmation_depth}, prefix=network.slug
        )
        networks.append(
            {
                "obj": network,
                "endpoints": [
                    {"obj": e, "masked": mask_secret_url(e.url), "error": mask_url(e.last_error or "")[:200]}
                    for e in network.rpc_endpoints.all()
                ],
                "form": form,
                "save_url": reverse("admin:console-payments-network-save", args=[network.slug]),
            }
        )
    return {
        "config": config,
        "config_api": api,
        "config_form": config_form,
        "gas_cap_gwei": format_amount(Token(decimals=9).display(config.gas_cap_wei), "gwei"),
        "networks": networks,
    }


@console_view
def crypto_tab(request: HttpRequest) -> HttpResponse:
    return _workspace(request, "crypto", _crypto_context(request))


@console_view
@require_POST
def crypto_config_save(request: HttpRequest) -> HttpResponse:
    form = CryptoConfigForm(request.POST)
    form.is_valid()
    serializer = CryptoConfigSerializer(selectors.crypto_config_get(), data=form.payload(), partial=True)
    status = 200
    message = ""
    if serializer.is_valid():
        try:
            with operator.acting_user(request.user):
                serializer.save()
            message = "Crypto configuration saved."
            form = None
        except DrfValidationError as exc:
            _put_errors(form, dict(exc.detail))
            status = 422
    else:
        _put_errors(form, dict(serializer.errors))
        status = 422
    context = _crypto_context(request, config_form=form)
    context["config_message"] = message
    return _fragment(request, "console/payments/crypto_config.html", context, status=status)


@console_view
@require_POST
def network_save(request: HttpRequest, slug: str) -> HttpResponse:
    """Endpoint list and confirmation depth of one network, through NetworkSerializer (the API's)."""
    network = get_object_or_404(selectors.network_queryset(), slug=slug)
    form = NetworkRpcForm(request.POST, prefix=slug)
    form.is_valid()
    keep = {int(v) for v in request.POST.getlist(f"{slug}-keep") if v.isdigit()}
    endpoints = [
        {"id": e.pk, "enabled": f"{slug}-enabled-{e.pk}" in request.POST}
        for e in network.rpc_endpoints.all()
        if e.pk in keep
    ]
    for url in (form.cleaned_data.get("new_urls") or "").splitlines():
        if url.strip():
            endpoints.append({"url": url.strip()})
    payload: dict = {"rpc_endpoints": endpoints}
    depth = (form.cleaned_data.get("confirmation_depth") or "").strip()
    if depth:
        payload["confirmation_depth"] = depth
    serializer = NetworkSerializer(network, data=payload, partial=True)
    status, message = 200, ""
    if serializer.is_valid():
        try:
            with operator.acting_user(request.user):
                serializer.save()
            message = f"{network.slug} saved."
            form = None
        except DrfValidationError as exc:
            _put_errors(form, _network_errors(dict(exc.detail)))
            status = 422
    else:
        _put_errors(form, _network_errors(dict(serializer.errors)))
        status = 422
    context = _crypto_context(request, network_forms={slug: form} if form is not None else None)
    entry = next(n for n in context["networks"] if n["obj"].slug == slug)
    return _fragment(
        request, "console/payments/crypto_network.html", {"n": entry, "network_message": message}, status=status
    )


def _network_errors(errors: dict) -> dict:
    """The endpoint list's errors belong to the 'Add endpoints' box; never echo a URL back."""
    out = {}
    for key, value in errors.items():
        target = "new_urls" if key == "rpc_endpoints" else key
        messages = value if isinstance(value, list) else [value]
        out[target] = [mask_url(json.dumps(m) if isinstance(m, dict) else str(m)) for m in messages]
    return out


@console_view
@require_POST
def test_connection(request: HttpRequest) -> HttpResponse:
    """Probe every RPC endpoint of every enabled network for real (billing.chain.probe), audited."""
    results = operator.test_connection(actor=request.user)
    # The probe recorded each endpoint's health: the network cards come back refreshed (out of band).
    networks = _crypto_context(request)["networks"]
    return _fragment(request, "console/payments/crypto_probe.html", {"results": results, "networks": networks})


@console_view
def crypto_changelog(request: HttpRequest) -> HttpResponse:
    """Who changed the crypto configuration, networks and endpoints, when, and what (secrets masked)."""
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    models = ("cryptoconfig", "networkfallback", "network", "rpcendpoint")
    types = ContentType.objects.filter(app_label="billing", model__in=models)
    entries = LogEntry.objects.filter(content_type__in=types).select_related("content_type", "actor")
    entries = entries.order_by("-timestamp", "-id")[:30]
    data = AuditEntrySerializer(entries, many=True).data
    return _fragment(request, "console/payments/crypto_changelog.html", {"entries": data})


# --- Operations -------------------------------------------------------------------------------------


@console_view
def operations_tab(request: HttpRequest) -> HttpResponse:
    context = {
        "dead": selectors.outbox_dead_letters(),
        "inbound": selectors.inbound_events_unprocessed(),
        "withdrawals": selectors.operator_transactions_recent(kind="withdraw"),
        "contracts": list(selectors.contract_cards().filter(enabled=True)),
    }
    return _workspace(request, "operations", context)


@console_view
@require_POST
def outbox_replay(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(OutboxDelivery, pk=pk)
    try:
        with transaction.atomic():
            delivery = operator.outbox_replay(delivery=delivery, actor=request.user)
    except operator.OperatorActionError as exc:
        return _action_error(exc.message)
    delivery = selectors.outbox_deliveries().get(pk=delivery.pk)
    return _fragment(
        request, "console/payments/dead_letter_row.html", {"d": delivery, "message": "Queued for delivery again."}
    )


@console_view
@require_POST
def inbound_reprocess(request: HttpRequest, pk: int) -> HttpResponse:
    event = get_object_or_404(InboundEvent.objects.select_related("contract"), pk=pk)
    reason = (request.POST.get("reason") or request.headers.get("HX-Prompt") or "").strip()
    try:
        outcome = operator.inbound_event_reprocess(event=event, actor=request.user, reason=reason[:500])
    except operator.OperatorActionError as exc:
        return _action_error(exc.message)
    event.refresh_from_db()
    return _fragment(request, "console/payments/inbound_row.html", {"e": event, "message": f"Reprocessed: {outcome}."})


@console_view
@require_POST
def contract_withdraw(request: HttpRequest, slug: str) -> HttpResponse:
    """Withdraw to the treasury (operator.contract_withdraw): the form's token (empty: the native coin),
    amount (empty: the whole available balance) and reason."""
    contract = get_object_or_404(selectors.contract_queryset(), slug=slug)
    raw_amount = (request.POST.get("amount") or "").strip()
    if raw_amount and not raw_amount.isdigit():
        return _action_error("The amount is an integer in the token's smallest unit (empty: the whole balance).", 400)
    try:
        result = operator.contract_withdraw(
            contract=contract,
            actor=request.user,
            token=(request.POST.get("token") or "").strip() or contract.network.native_symbol,
            amount=int(raw_amount) if raw_amount else None,
            reason=(request.POST.get("reason") or "").strip()[:500],
        )
    except operator.OperatorActionError as exc:
        return _action_error(exc.message, exc.status)
    return _fragment(request, "console/components/notice.html", {"message": result.detail})


@console_view
def payments_index(request: HttpRequest) -> HttpResponse:
    return providers_tab(request)
