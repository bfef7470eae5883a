"""Tariffs through Django's test client: plan cards and filters, the plan editor's tabs and saves (through
PlanSerializer, errors at the fields), the audit history with diffs, the limits matrix (only changed cells,
one transaction, one audit entry per plan changed, all or nothing), the KPI part per plan and variant, and
support's read-only view (no inputs, forged POSTs 403)."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.test import Client

from billing.models import Plan
from billing.services import catalog
from tests import factories as f

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def entries(plan: Plan) -> int:
    return LogEntry.objects.get_for_object(plan).count()


@pytest.fixture
def plans(db):
    basic = f.PlanFactory(slug="basic", title="Basic", limits={"api_calls": 100, "seats": 1}, tier=1)
    pro = f.PlanFactory(
        slug="pro", title="Pro", limits={"api_calls": 1000, "seats": 5}, tier=2, experiment="px", variant="a"
    )
    team = f.PlanFactory(slug="team", title="Team", limits={"api_calls": None}, tier=3, is_active=False)
    return {"basic": basic, "pro": pro, "team": team}


def matrix_post(plans: dict, **cells) -> dict:
    """Every cell as the page sends it (stored values), with `cells` ("slug__key": value) changed."""
    data = {}
    for plan in Plan.objects.all():
        data[f"version:{plan.slug}"] = plan.updated_at.isoformat()
        for key in ("api_calls", "seats"):
            value = (plan.limits or {}).get(key, "missing")
            data[f"cell:{plan.slug}:{key}"] = "" if value == "missing" else ("∞" if value is None else str(value))
    for name, value in cells.items():
        slug, key = name.split("__")
        data[f"cell:{slug}:{key}"] = value
    return data


def test_cards_and_filters(billing_admin_user, plans):
    client = login(billing_admin_user)
    html = client.get("/admin/tariffs/").content.decode()
    for slug in ("basic", "pro", "team"):
        assert f'data-plan="{slug}"' in html
    assert 'data-action="new-plan"' in html and "/admin/overview/plans/" in html
    active = client.get("/admin/tariffs/?status=active").content.decode()
    assert 'data-plan="team"' not in active and 'data-plan="basic"' in active
    experiment = client.get("/admin/tariffs/?experiment=px", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="plan-cards")
    body = experiment.content.decode()
    assert 'data-plan="pro"' in body and 'data-plan="basic"' not in body and "<html" not in body


def test_matrix_saves_changed_cells_in_one_transaction_one_audit_entry_per_plan(billing_admin_user, plans):
    client = login(billing_admin_user)
    before = {slug: entries(plan) for slug, plan in plans.items()}
    response = client.post(
        "/admin/tariffs/matrix/", matrix_post(plans, basic__api_calls="250", basic__seats="2", pro__seats="")
    )
    assert response.status_code == 302 and "saved=2" in response["Location"]
    for plan in plans.values():
        plan.refresh_from_db()
    assert plans["basic"].limits == {"api_calls": 250, "seats": 2}
    assert plans["pro"].limits == {"api_calls": 1000}  # emptied cell: the key is gone
    assert plans["team"].limits == {"api_calls": None}
    assert entries(plans["basic"]) == before["basic"] + 1  # two cells, one entry
    assert entries(plans["pro"]) == before["pro"] + 1
    assert entries(plans["team"]) == before["team"]
    entry = LogEntry.objects.get_for_object(plans["basic"]).latest("timestamp")
    assert entry.actor == billing_admin_user and "limits" in entry.changes_dict

    history = client.get("/admin/tariffs/plans/basic/?tab=history").content.decode()
    assert 'data-diff="limits.api_calls"' in history and "100" in history and "250" in history
    assert 'data-diff="limits.seats"' in history


def test_matrix_refuses_everything_when_one_cell_is_bad(billing_admin_user, plans):
    client = login(billing_admin_user)
    response = client.post("/admin/tariffs/matrix/", matrix_post(plans, basic__api_calls="300", pro__seats="-4"))
    assert response.status_code == 422
    html = response.content.decode()
    assert "Nothing was saved." in html and "A whole number" in html
    assert 'value="300"' in html  # the operator's edits are kept, marked as changed
    plans["basic"].refresh_from_db()
    assert plans["basic"].limits["api_calls"] == 100


def test_matrix_refuses_a_plan_changed_meanwhile(billing_admin_user, plans):
    client = login(billing_admin_user)
    data = matrix_post(plans, basic__api_calls="300", pro__api_calls="2000")
    catalog.plan_update(plan=plans["pro"], data={"title": "Pro (renamed)"})  # someone else saves in between
    response = client.post("/admin/tariffs/matrix/", data)
    assert response.status_code == 422 and "Changed by someone else" in response.content.decode()
    plans["basic"].refresh_from_db()
    assert plans["basic"].limits["api_calls"] == 100  # not even the other plan's cell


def test_service_rolls_back_every_plan_when_one_is_invalid(plans):
    with pytest.raises(ValidationError) as exc:
        catalog.plans_limits_update(changes={"basic": {"seats": 3}, "pro": {"seats": -1}})
    assert "pro" in exc.value.message_dict
    plans["basic"].refresh_from_db()
    assert plans["basic"].limits["seats"] == 1
    saved = catalog.plans_limits_update(changes={"basic": {"seats": 1}, "pro": {"seats": 5}})
    assert saved == []  # the same values: nothing saved, no audit entry


def test_editor_tabs_save_through_the_serializer_with_field_errors(billing_admin_user, plans):
    client = login(billing_admin_user)
    for tab in ("general", "limits", "features", "history", "preview"):
        html = client.get(f"/admin/tariffs/plans/pro/?tab={tab}").content.decode()
        assert f'data-tab-panel="{tab}"' in html, tab
    general = client.get("/admin/tariffs/plans/basic/").content.decode()
    assert 'name="title" value="Basic"' in general

    data = {
        "title": "Basic",
        "interval": "month",
        "price_amount": str(plans["basic"].price_amount),
        "variant": "b",
        "experiment": "",
        "tier": "1",
        "grace_period_days": "3",
        "sort_order": "0",
        "price_usd_estimate": "10",
        "description": "",
        "is_active": "on",
    }
    response = client.post("/admin/tariffs/plans/basic/", data)
    assert response.status_code == 422
    assert 'data-field-errors="variant"' in response.content.decode()
    assert "A variant needs an experiment." in response.content.decode()

    response = client.post("/admin/tariffs/plans/basic/?tab=features", {"features": "Priority support\nSSO\n"})
    assert response.status_code == 302
    plans["basic"].refresh_from_db()
    assert plans["basic"].features == ["Priority support", "SSO"]
    response = client.post(
        "/admin/tariffs/plans/basic/?tab=limits", {"key": ["api_calls", "exports"], "value": ["", "7"]}
    )
    assert response.status_code == 302
    plans["basic"].refresh_from_db()
    assert plans["basic"].limits == {"api_calls": None, "exports": 7}
    preview = client.get("/admin/tariffs/plans/basic/?tab=preview").content.decode()
    assert "Priority support" in preview and "unlimited" in preview


def test_support_reads_without_inputs_and_forged_posts_are_403(support_user, plans):
    client = login(support_user)
    features = list(plans["basic"].features)
    matrix = client.get("/admin/tariffs/matrix/").content.decode()
    assert 'data-testid="read-only"' in matrix and "c-cell" not in matrix and 'data-action="save-matrix"' not in matrix
    editor = client.get("/admin/tariffs/plans/basic/").content.decode()
    assert 'data-action="save"' not in editor and "disabled" in editor
    assert 'data-action="new-plan"' not in client.get("/admin/tariffs/").content.decode()
    assert client.post("/admin/tariffs/matrix/", matrix_post(plans, basic__api_calls="1")).status_code == 403
    assert client.post("/admin/tariffs/plans/basic/?tab=features", {"features": "x"}).status_code == 403
    plans["basic"].refresh_from_db()
    assert plans["basic"].limits["api_calls"] == 100 and plans["basic"].features == features


def test_plan_and_variant_kpis_over_the_hand_computed_world(billing_admin_user):
    from tests.fixtures.overview_world import EXPECTED, build_overview_world

    build_overview_world()
    html = (
        login(billing_admin_user)
        .get("/admin/overview/plans/?period=custom&from=2026-03-01&to=2026-03-30", HTTP_HX_REQUEST="true")
        .content.decode()
    )
    assert 'data-plan-kpi="ow-basic"' in html
    assert 'data-experiment="ow-price-test"' in html
    a, b = EXPECTED["experiment"]["a"], EXPECTED["experiment"]["b"]
    assert f"${a['revenue_usd']}" in html and f"${b['arpu_usd']}" in html
    assert "66.67%" in html and "33.33%" in html  # conversions 2/3 and 1/3
