"""Tariffs: plan cards with filters, a full-screen plan editor (General, Limits, Features, History, Preview)
and a limits matrix across plans.

Reads through billing.selectors; writes through the admin API's PlanSerializer (catalog.plan_update) and,
for the matrix, catalog.plans_limits_update (one transaction, one audit entry per plan changed), inside
`acting_user` so the audit log names the operator. The KPI per plan and per experiment variant is a lazy
part served by the overview app (`admin:console-overview-plans`), reversed by name so billing never
imports overview. State (filters, editor tab) is in the URL; support reads everything and its POSTs are 403.
"""

from __future__ import annotations

import ast
import json
import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError as DrfValidationError

from billing import selectors
from billing.api.serializers import AuditEntrySerializer, PlanSerializer
from billing.fields import to_display
from billing.models import Interval, Plan, Token
from billing.services import catalog
from billing.services.operator import acting_user
from billing_project.admin_site import format_amount
from billing_project.console import console_view, query_url, render_console

EDITOR_TABS = (
    ("general", "General", "tune"),
    ("limits", "Limits", "data_usage"),
    ("features", "Features", "checklist"),
    ("history", "History", "history"),
    ("preview", "Preview", "visibility"),
)
GENERAL_FIELDS = (
    ("title", "Title", "text"),
    ("description", "Description", "textarea"),
    ("is_active", "Sold (active)", "checkbox"),
    ("interval", "Interval", "interval"),
    ("price_amount", "Price (smallest unit)", "text"),
    ("price_usd_estimate", "Price in USD (estimate)", "text"),
    ("tier", "Tier (higher is an upgrade)", "text"),
    ("grace_period_days", "Grace period (days)", "text"),
    ("sort_order", "Sort order", "text"),
    ("experiment", "Experiment", "text"),
    ("variant", "Variant", "text"),
)
HISTORY_SKIP = {"id", "created_at", "updated_at", "transactions", "subscriptions"}  # bookkeeping, not a change
KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
UNLIMITED = ("", "∞", "unlimited", "null")


def tariffs_url(**params) -> str:
    return query_url(reverse("admin:console-tariffs"), QueryDict(), **params)


def editor_url(plan: Plan, tab: str = "general") -> str:
    return reverse("admin:console-tariffs-plan", args=[plan.slug]) + (f"?tab={tab}" if tab != "general" else "")


def _overview_part(name: str, query: str = "") -> str:
    try:
        return reverse(f"admin:console-overview-{name}") + (f"?{query}" if query else "")
    except NoReverseMatch:  # the overview app is not installed: no KPI part
        return ""


def _token(plan: Plan) -> Token | None:
    try:
        return plan.price_token
    except Token.DoesNotExist:  # no token set yet
        return None


def price_text(plan: Plan) -> str:
    token = _token(plan)
    if token is None or plan.price_amount is None:
        return "—"
    return f"{format_amount(to_display(plan.price_amount, token.decimals), token.symbol)} / {plan.interval}"


def limit_text(value) -> str:
    return "unlimited" if value is None else f"{value:,}"


def plan_card(plan: Plan) -> dict:
    return {
        "obj": plan,
        "price": price_text(plan),
        "token": f"{token.symbol}@{token.network.slug}" if (token := _token(plan)) else "",
        "limits": [(k, limit_text(v)) for k, v in sorted((plan.limits or {}).items())],
        "url": editor_url(plan),
    }


# --- the page --------------------------------------------------------------------------------------------


@console_view
def tariffs_page(request: HttpRequest) -> HttpResponse:
    get = request.GET
    filters = {key: get.get(key, "").strip() for key in ("status", "interval", "token", "experiment", "q")}
    plans = [plan_card(p) for p in selectors.plan_console_list(**filters)]
    experiments = sorted({e for e in Plan.objects.exclude(experiment="").values_list("experiment", flat=True)})
    context = {
        "title": "Tariffs",
        "console_page": "tariffs",
        "plans": plans,
        "filters": filters,
        "intervals": Interval.choices,
        "tokens": sorted(set(Token.objects.values_list("symbol", flat=True))),
        "experiments": experiments,
        "kpi_url": _overview_part("plans", request.GET.urlencode()),
        "matrix_url": reverse("admin:console-tariffs-matrix"),
        "reset_url": reverse("admin:console-tariffs"),
    }
    return render_console(
        request,
        page="console/tariffs/page.html",
        fragment="console/tariffs/cards.html",
        target="plan-cards",
        context=context,
    )


# --- the editor ------------------------------------------------------------------------------------------


def _history(plan: Plan) -> list[dict]:
    """Audit entries with each change as a readable diff; limits and features per key/item."""
    out = []
    for entry in AuditEntrySerializer(selectors.plan_audit_entries(plan=plan), many=True).data:
        diffs = []
        for field, change in sorted((entry["changes"] or {}).items()):
            if field in HISTORY_SKIP:
                continue
            if not isinstance(change, list) or len(change) != 2:
                diffs.append({"field": field, "old": "", "new": json.dumps(change)})
                continue
            old, new = change
            if field in ("limits", "features"):
                diffs.extend(_json_diff(field, old, new))
            else:
                diffs.append({"field": field, "old": "" if old == "None" else old, "new": "" if new == "None" else new})
        diffs = [d for d in diffs if d["old"] not in ("", None) or d["new"] not in ("", None)]
        out.append({**entry, "diffs": diffs, "when": str(entry["timestamp"]).replace("T", " ")[:19]})
    return out


def _loads(value):
    """auditlog keeps a JSON field's old and new values as text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        try:
            return ast.literal_eval(value)  # older entries: the Python repr
        except (ValueError, SyntaxError):
            return value


def _json_diff(field: str, old, new) -> list[dict]:
    old, new = _loads(old), _loads(new)
    if isinstance(old, dict) or isinstance(new, dict):
        old, new = old if isinstance(old, dict) else {}, new if isinstance(new, dict) else {}
        return [
            {
                "field": f"{field}.{key}",
                "old": "—" if key not in old else limit_text(old[key]),
                "new": "—" if key not in new else limit_text(new[key]),
            }
            for key in sorted(set(old) | set(new))
            if old.get(key, "missing") != new.get(key, "missing")
        ]
    if isinstance(old, list) or isinstance(new, list):
        old, new = old if isinstance(old, list) else [], new if isinstance(new, list) else []
        return [{"field": field, "old": "", "new": f"+ {f}"} for f in new if f not in old] + [
            {"field": field, "old": f"− {f}", "new": ""} for f in old if f not in new
        ]
    return [{"field": field, "old": old, "new": new}]


def _general_values(plan: Plan, data: QueryDict | None = None) -> list[dict]:
    api = PlanSerializer(plan).data
    rows = []
    for name, label, kind in GENERAL_FIELDS:
        value = api.get(name) if data is None else data.get(name, "")
        if kind == "checkbox" and data is not None:
            value = data.get(name) == "on"
        rows.append({"name": name, "label": label, "kind": kind, "value": value})
    return rows


def _limits_rows(limits: dict) -> list[dict]:
    return [{"key": k, "value": "" if v is None else str(v)} for k, v in sorted(limits.items())]


def _editor_context(request, plan: Plan, tab: str, **extra) -> dict:
    context = {
        "title": f"Plan {plan.title}",
        "console_page": "tariffs-editor",
        "plan": plan,
        "card": plan_card(plan),
        "tab": tab,
        "tabs": [
            {"key": key, "title": title, "icon": icon, "url": editor_url(plan, key)} for key, title, icon in EDITOR_TABS
        ],
        "tab_template": f"console/tariffs/editor_{tab}.html",
        "back_url": reverse("admin:console-tariffs"),
        "save_url": reverse("admin:console-tariffs-plan", args=[plan.slug]) + f"?tab={tab}",
        "intervals": Interval.choices,
    }
    if tab == "general":
        context["fields"] = _general_values(plan)
    elif tab == "limits":
        context["limits"] = _limits_rows(plan.limits or {})
    elif tab == "features":
        context["features_text"] = "\n".join(plan.features or [])
    elif tab == "history":
        context["history"] = _history(plan)
    elif tab == "preview":
        context["preview"] = {
            "price": price_text(plan),
            "usd": plan.price_usd_estimate,
            "features": plan.features or [],
            "limits": [(k.replace("_", " "), limit_text(v)) for k, v in sorted((plan.limits or {}).items())],
        }
    context.update(extra)
    return context


def _parse_limits(data: QueryDict) -> tuple[dict, dict[str, str]]:
    """The Limits tab's rows (key[i], value[i]; an empty value is unlimited, an empty key drops the row)."""
    limits: dict = {}
    errors: dict[str, str] = {}
    for key, value in zip(data.getlist("key"), data.getlist("value"), strict=False):
        key, value = key.strip(), value.strip()
        if not key:
            continue
        if not KEY_RE.match(key):
            errors[key] = "A quota key: letters, digits, _ . : - (at most 64)."
            continue
        parsed = _cell_value(value)
        if isinstance(parsed, str):
            errors[key] = parsed
        else:
            limits[key] = parsed
    return limits, errors


def _cell_value(raw: str) -> int | None | str:
    """A limit as typed: a whole number >= 0, or empty/∞/unlimited (None). A string is the error."""
    text = raw.strip().replace(",", "").replace("_", "")
    if text.lower() in UNLIMITED:
        return None
    if not text.isdigit():
        return "A whole number ≥ 0, or empty for unlimited."
    return int(text)


@console_view
def plan_editor(request: HttpRequest, slug: str) -> HttpResponse:
    plan = get_object_or_404(selectors.plan_queryset(), slug=slug)
    tab = request.GET.get("tab", "general")
    if tab not in {key for key, _, _ in EDITOR_TABS}:
        tab = "general"
    if request.method == "POST":
        return _plan_save(request, plan, tab)
    return _render_editor(request, plan, tab, _editor_context(request, plan, tab))


def _render_editor(request, plan: Plan, tab: str, context: dict, status: int = 200) -> HttpResponse:
    return render_console(
        request,
        page="console/tariffs/editor.html",
        fragment="console/tariffs/editor_body.html",
        target="plan-editor",
        context=context,
        status=status,
    )


def _plan_save(request: HttpRequest, plan: Plan, tab: str) -> HttpResponse:
    data = request.POST
    errors: dict[str, list[str]] = {}
    if tab == "general":
        payload: dict = {}
        for name, _, kind in GENERAL_FIELDS:
            payload[name] = data.get(name) == "on" if kind == "checkbox" else data.get(name, "").strip()
    elif tab == "limits":
        limits, cell_errors = _parse_limits(data)
        errors.update({f"limits.{k}": [v] for k, v in cell_errors.items()})
        payload = {"limits": limits}
    elif tab == "features":
        payload = {"features": [line.strip() for line in data.get("features", "").splitlines() if line.strip()]}
    else:
        return HttpResponse("Nothing to save on this tab.", status=405)
    if not errors:
        serializer = PlanSerializer(plan, data=payload, partial=True)
        if serializer.is_valid():
            try:
                with acting_user(request.user):
                    serializer.save()
            except DrfValidationError as exc:  # the catalog service's refusal, as the API's field errors
                errors.update({k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in exc.detail.items()})
            else:
                return redirect(editor_url(plan, tab) + ("&" if tab != "general" else "?") + "saved=1")
        else:
            errors.update(
                {k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in serializer.errors.items()}
            )
    plan.refresh_from_db()
    context = _editor_context(request, plan, tab, errors=errors)
    if tab == "general":
        context["fields"] = _general_values(plan, data)
    elif tab == "limits":
        context["limits"] = [
            {"key": k.strip(), "value": v.strip()}
            for k, v in zip(data.getlist("key"), data.getlist("value"), strict=False)
            if k.strip()
        ]
    elif tab == "features":
        context["features_text"] = data.get("features", "")
    return _render_editor(request, plan, tab, context, status=422)


# --- the limits matrix -----------------------------------------------------------------------------------


def _matrix(plans: list[Plan], submitted: QueryDict | None = None, errors: dict | None = None) -> dict:
    keys = sorted({k for p in plans for k in (p.limits or {})} | set(_new_keys(submitted)))
    rows = []
    for key in keys:
        cells = []
        for plan in plans:
            limits = plan.limits or {}
            original = "" if key not in limits else ("∞" if limits[key] is None else str(limits[key]))
            name = f"cell:{plan.slug}:{key}"
            value = submitted.get(name, original) if submitted is not None else original
            cells.append(
                {
                    "name": name,
                    "plan": plan.slug,
                    "original": original,
                    "value": value,
                    "changed": value.strip() != original,
                    "error": (errors or {}).get(name, ""),
                }
            )
        rows.append({"key": key, "cells": cells})
    return {"plans": plans, "rows": rows}


def _new_keys(submitted: QueryDict | None) -> list[str]:
    if submitted is None:
        return []
    return [k.split(":", 2)[2] for k in submitted if k.startswith("cell:") and k.count(":") >= 2]


@console_view
def limits_matrix(request: HttpRequest) -> HttpResponse:
    """Limits of every plan (columns) per quota key (rows). A cell: a whole number, ∞ (unlimited) or empty
    (the plan lacks the key). Saving sends every cell; only the changed ones are applied, in one transaction."""
    plans = list(selectors.plan_console_list(status=request.GET.get("status", "")))
    status = 200
    errors: dict[str, str] = {}
    submitted = None
    if request.method == "POST":
        submitted = request.POST
        changes, errors = _matrix_changes(plans, submitted)
        add_key = submitted.get("add_key", "").strip()
        if add_key and not KEY_RE.match(add_key):
            errors["add_key"] = "A quota key: letters, digits, _ . : - (at most 64)."
        adding = submitted.get("add") == "1"  # "Add row": show the new key with the edits kept, save nothing
        if not errors and changes and not adding:
            expected = {p.slug: parse_datetime(submitted.get(f"version:{p.slug}", "")) for p in plans}
            try:
                with acting_user(request.user):
                    saved = catalog.plans_limits_update(
                        changes=changes, expected_updated_at={s: expected.get(s) for s in changes}
                    )
            except DjangoValidationError as exc:
                for slug, messages in exc.message_dict.items():
                    errors[f"plan:{slug}"] = " ".join(messages)
            else:
                return redirect(query_url(request.path, request.GET, saved=str(len(saved))))
        elif not errors and not adding:
            return redirect(query_url(request.path, request.GET, saved="0"))
        status = 422 if errors else 200
        if add_key and not errors:
            submitted = submitted.copy()
            for plan in plans:
                submitted.setdefault(f"cell:{plan.slug}:{add_key}", "")
    context = {
        "title": "Limits matrix",
        "console_page": "tariffs-matrix",
        "matrix": _matrix(plans, submitted, errors),
        "errors": errors,
        "plan_errors": {k.split(":", 1)[1]: v for k, v in errors.items() if k.startswith("plan:")},
        "saved": request.GET.get("saved"),
        "back_url": reverse("admin:console-tariffs"),
        "status_filter": request.GET.get("status", ""),
        "versions": {p.slug: p.updated_at.isoformat() for p in plans},
    }
    return render_console(request, page="console/tariffs/matrix.html", context=context, status=status)


def _matrix_changes(plans: list[Plan], data: QueryDict) -> tuple[dict, dict[str, str]]:
    """Changed cells only (as typed vs. as stored), parsed; errors keyed by cell name."""
    changes: dict[str, dict] = {}
    errors: dict[str, str] = {}
    by_slug = {p.slug: p for p in plans}
    for name, raw in data.items():
        if not name.startswith("cell:"):
            continue
        _, slug, key = name.split(":", 2)
        plan = by_slug.get(slug)
        if plan is None:
            errors[name] = f"No plan {slug} in this matrix."
            continue
        if not KEY_RE.match(key):
            errors[name] = "A quota key: letters, digits, _ . : - (at most 64)."
            continue
        limits = plan.limits or {}
        raw = raw.strip()
        if raw == "":
            if key in limits:
                changes.setdefault(slug, {})[key] = catalog.REMOVE_LIMIT
            continue
        parsed = None if raw in ("∞", "unlimited") else _cell_value(raw)
        if isinstance(parsed, str):
            errors[name] = parsed
            continue
        if key not in limits or limits[key] != parsed:
            changes.setdefault(slug, {})[key] = parsed
    return changes, errors
