"""Acceptance of Tariffs in a real browser (Debian's chromium, headless): an operator changes three cells of
the limits matrix (two plans), sees them marked as changed, saves once, and reads each change as a diff in
each plan's History tab."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_operator_changes_three_matrix_cells_and_reads_the_diffs_in_history(
    live_server, as_user, billing_admin_user, shot
):
    f.PlanFactory(slug="basic", title="Basic", limits={"api_calls": 100, "seats": 1}, tier=1)
    f.PlanFactory(slug="pro", title="Pro", limits={"api_calls": 1000, "seats": 5}, tier=2, experiment="px", variant="a")
    f.PlanFactory(slug="team", title="Team", limits={"api_calls": None, "seats": 20}, tier=3)
    page = as_user(billing_admin_user)
    page.goto(f"{live_server.url}/admin/tariffs/")
    expect(page.locator("[data-plan]")).to_have_count(3)
    shot(page, "tariffs")

    page.locator('[data-action="open-matrix"]').click()
    expect(page).to_have_url(re.compile(r"/admin/tariffs/matrix/$"))
    for cell, value in (("basic:api_calls", "250"), ("basic:seats", "2"), ("pro:seats", "10")):
        page.locator(f'[data-cell="{cell}"] input').fill(value)
        expect(page.locator(f'[data-cell="{cell}"]')).to_have_class(re.compile("c-changed"))
    expect(page.locator("td.c-changed")).to_have_count(3)
    expect(page.locator("[data-changed-count]")).to_have_text("3 changed")
    shot(page, "limits-matrix")
    page.locator('[data-action="save-matrix"]').click()
    expect(page.locator("[data-saved]")).to_have_text("Saved: 2 plans changed.")
    expect(page.locator('[data-cell="pro:seats"] input')).to_have_value("10")
    expect(page.locator("td.c-changed")).to_have_count(0)

    for slug, diffs in (
        ("basic", {"limits.api_calls": ("100", "250"), "limits.seats": ("1", "2")}),
        ("pro", {"limits.seats": ("5", "10")}),
    ):
        page.goto(f"{live_server.url}/admin/tariffs/plans/{slug}/")
        page.locator('[data-tab="history"]').click()
        expect(page).to_have_url(re.compile(r"\?tab=history$"))
        entry = page.locator("[data-history] li").first
        expect(entry).to_contain_text("ops-admin")
        for field, (old, new) in diffs.items():
            row = entry.locator(f'[data-diff="{field}"]')
            expect(row.locator(".c-diff-old")).to_have_text(old)
            expect(row.locator(".c-diff-new")).to_have_text(new)
        if slug == "basic":
            shot(page, "plan-history")
            page.locator('[data-tab="preview"]').click()
            expect(page.locator("[data-preview]")).to_contain_text("250")
            shot(page, "plan-preview")
